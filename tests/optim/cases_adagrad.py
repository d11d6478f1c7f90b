import torch

from optimlab.optim.adagrad import Adagrad

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"Adagrad: invalid lr=-1.0: expected 0 <= lr"),
    (dict(lr_decay=-0.1), r"Adagrad: invalid lr_decay=-0.1: expected 0 <= lr_decay"),
    (dict(weight_decay=-0.1), r"Adagrad: invalid weight_decay=-0.1: expected 0 <= weight_decay"),
    (
        dict(initial_accumulator_value=-1.0),
        r"Adagrad: invalid initial_accumulator_value=-1.0: expected 0 <= initial_accumulator_value",
    ),
    (dict(eps=float("nan")), r"Adagrad: invalid eps=nan"),
]


def _case(id, solve, **kw):
    """``kw`` configures both sides; ``solve`` the convergence run (weight decay off: it moves the
    minimiser), ``None`` for none."""
    return Case(
        id,
        make=lambda p, **o: Adagrad(p, **{**kw, **o}),
        reference=lambda p: torch.optim.Adagrad(p, **kw),
        # the quadratic takes ~40 steps; Rosenbrock's valley ~8000 at the largest stable lr
        solver=None if solve is None else lambda p: Adagrad(p, **{**kw, "weight_decay": 0.0, "lr": 1.5, **solve}),
        solve_steps=15000,
        invalid=INVALID,
    )


# Cases whose convergence run would repeat another's exactly (their option is weight decay, which
# the run drops, or a setting the run overrides) have none.
CASES = [
    _case("Adagrad", {}, lr=0.1),
    # a decay of 1e-2 would shrink the lr 100-fold over the convergence run: 1e-5 there
    _case("Adagrad-lr-decay", dict(lr_decay=1e-5), lr=0.1, lr_decay=0.01),
    _case("Adagrad-l2", None, lr=0.1, weight_decay=0.1),
    _case("Adagrad-initial-accumulator", {}, lr=0.1, initial_accumulator_value=0.5),
    _case("Adagrad-all", {}, lr=0.1, lr_decay=1e-5, weight_decay=0.05, initial_accumulator_value=0.1, eps=1e-6),
]
