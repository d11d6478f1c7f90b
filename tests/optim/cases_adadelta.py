import torch

from optimlab.optim.adadelta import Adadelta

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"Adadelta: invalid lr=-1.0: expected 0 <= lr"),
    (dict(rho=1.5), r"Adadelta: invalid rho=1.5: expected 0 <= rho <= 1"),
    (dict(rho=-0.1), r"Adadelta: invalid rho=-0.1: expected 0 <= rho <= 1"),
    (dict(eps=-1e-6), r"Adadelta: invalid eps=-1e-06: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"Adadelta: invalid weight_decay=nan"),
]


# Adadelta crawls along Rosenbrock's valley and then circles the minimum: many steps, and an lr
# that falls to 0 over the last third (12,000 steps at lr 0.03 ended 3.9e-3 away)
SOLVE = dict(lr=0.05, rho=0.5, eps=1e-6)


def _case(id, solves=True, **kw):
    """``kw`` configures both sides; the convergence run (if ``solves``) drops weight decay (it
    moves the minimiser)."""
    return Case(
        id,
        make=lambda p, **o: Adadelta(p, **{**kw, **o}),
        reference=lambda p: torch.optim.Adadelta(p, **kw),
        # Adadelta's first steps are ~lr * sqrt(eps) and grow slowly: Rosenbrock's valley takes
        # ~10000 steps (no lr, rho, eps of a grid around these did it within 8000)
        solver=None if not solves else lambda p: Adadelta(p, **{**kw, "weight_decay": 0.0, **SOLVE}),
        solve_steps=20000,
        solve_anneal=True,
        invalid=INVALID,
    )


# Cases whose convergence run would repeat another's exactly (their option is weight decay, which
# the run drops, or a setting the run overrides) have none.
CASES = [
    _case("Adadelta"),
    _case("Adadelta-l2", False, weight_decay=0.1),
    _case("Adadelta-rho-eps", False, lr=0.5, rho=0.5, eps=1e-4),
]
