import torch

from optimlab.optim.rmsprop import RMSprop

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"RMSprop: invalid lr=-1.0: expected 0 <= lr"),
    (dict(alpha=1.5), r"RMSprop: invalid alpha=1.5: expected 0 <= alpha <= 1"),
    (dict(alpha=-0.1), r"RMSprop: invalid alpha=-0.1: expected 0 <= alpha <= 1"),
    (dict(eps=-1e-8), r"RMSprop: invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=-0.1), r"RMSprop: invalid weight_decay=-0.1: expected 0 <= weight_decay"),
    (dict(momentum=float("nan")), r"RMSprop: invalid momentum=nan"),
]


def _case(id, solve, solve_steps, **kw):
    """``kw`` configures both sides; ``solve`` the convergence run (weight decay off: it moves the
    minimiser), ``None`` for none."""
    return Case(
        id,
        make=lambda p, **o: RMSprop(p, **{**kw, **o}),
        reference=lambda p: torch.optim.RMSprop(p, **kw),
        solver=None if solve is None else lambda p: RMSprop(p, **{**kw, "weight_decay": 0.0, **solve}),
        solve_steps=solve_steps,
        solve_anneal=True,
        invalid=INVALID,
    )


CENTERED_MOMENTUM_L2 = dict(lr=0.01, alpha=0.9, momentum=0.9, centered=True, weight_decay=0.1)

# With a constant lr RMSprop ends in a limit cycle of size ~lr around the minimum (its steps are
# ~lr * sign(g)), so the convergence runs use a small lr that falls to 0 at the end.
# Cases whose convergence run would repeat another's exactly (their option is weight decay, which
# the run drops, or a setting the run overrides) have none.
CASES = [
    _case("RMSprop", dict(lr=5e-4), 15000, lr=0.01),
    _case("RMSprop-l2", None, 0, lr=0.01, weight_decay=0.1),
    _case("RMSprop-momentum", dict(lr=3e-4), 4000, lr=0.01, momentum=0.9),
    _case("RMSprop-centered", dict(lr=3e-4, alpha=0.9), 8000, lr=0.01, centered=True),
    _case("RMSprop-centered-momentum-l2", dict(lr=1e-4), 4000, **CENTERED_MOMENTUM_L2),
]
