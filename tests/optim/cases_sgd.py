import torch

from optimlab.optim.sgd import SGD

from .harness import Case

NESTEROV = (
    r"SGD: invalid nesterov=True with momentum={} and dampening={}: "
    r"Nesterov momentum requires momentum > 0 and dampening = 0"
)
INVALID = [
    (dict(lr=-1.0), r"SGD: invalid lr=-1.0: expected 0 <= lr"),
    (dict(momentum=-0.9), r"SGD: invalid momentum=-0.9: expected 0 <= momentum"),
    (dict(dampening=1.5), r"SGD: invalid dampening=1.5: expected 0 <= dampening <= 1"),
    (dict(dampening=-0.1), r"SGD: invalid dampening=-0.1: expected 0 <= dampening <= 1"),
    (dict(weight_decay=float("nan")), r"SGD: invalid weight_decay=nan"),
    (dict(nesterov=True, momentum=0.0, dampening=0.0), NESTEROV.format(r"0\.0", r"0\.0")),
    (dict(nesterov=True, momentum=0.9, dampening=0.1), NESTEROV.format(r"0\.9", r"0\.1")),
]


def _case(id, solve, solve_steps, **kw):
    """``kw`` configures both sides; ``solve`` the convergence run (weight decay off: it moves the
    minimiser), ``None`` for none."""
    return Case(
        id,
        make=lambda p, **o: SGD(p, **{**kw, **o}),
        reference=lambda p: torch.optim.SGD(p, **kw),
        solver=None if solve is None else lambda p: SGD(p, **{**kw, "weight_decay": 0.0, **solve}),
        solve_steps=solve_steps,
        invalid=INVALID,
    )


# Rosenbrock's curvature (~2000 at the start) caps the learning rate at ~1e-3; plain gradient
# descent then needs ~15000 steps along the valley (at 9000 it is still 4.6e-3 away), momentum a
# tenth of that.
PLAIN = dict(lr=1.5e-3)
HEAVY = dict(lr=1e-3, momentum=0.9)
# Cases whose convergence run would repeat another's exactly (their option is weight decay, which
# the run drops, or a setting the run overrides) have none.
CASES = [
    _case("SGD", PLAIN, 16000, lr=0.01),
    _case("SGD-l2", None, 0, lr=0.01, weight_decay=0.1),
    _case("SGD-momentum", HEAVY, 2000, lr=0.01, momentum=0.9),
    _case("SGD-momentum-dampening-l2", HEAVY, 5000, lr=0.01, momentum=0.9, dampening=0.5, weight_decay=0.1),
    _case("SGD-nesterov", HEAVY, 2000, lr=0.01, momentum=0.9, nesterov=True),
    _case("SGD-nesterov-l2", HEAVY, 2000, lr=0.01, momentum=0.5, nesterov=True, weight_decay=0.1),
]
