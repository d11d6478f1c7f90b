import torch

from optimlab.optim.adamax import Adamax

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"Adamax: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"Adamax: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, -0.1)), r"Adamax: invalid betas\[1\]=-0.1: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-8), r"Adamax: invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"Adamax: invalid weight_decay=nan"),
]


SOLVE = dict(lr=0.01, betas=(0.9, 0.99))


def _case(id, solves=True, **kw):
    """``kw`` configures both sides; the convergence run (if ``solves``) drops weight decay (it
    moves the minimiser)."""
    return Case(
        id,
        make=lambda p, **o: Adamax(p, **{**kw, **o}),
        reference=lambda p: torch.optim.Adamax(p, **kw),
        solver=None if not solves else lambda p: Adamax(p, **{**kw, "weight_decay": 0.0, **SOLVE}),
        solve_steps=3000,
        solve_anneal=True,  # Adamax's ~lr-long steps circle the minimum at a constant lr
        invalid=INVALID,
    )


# Cases whose convergence run would repeat another's exactly (their option is weight decay, which
# the run drops, or a setting the run overrides) have none.
CASES = [
    _case("Adamax", lr=0.01),
    _case("Adamax-l2", False, lr=0.01, betas=(0.8, 0.99), weight_decay=0.1),
]
