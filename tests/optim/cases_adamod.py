import torch_optimizer

from optimlab.optim.adamod import AdaMod

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"AdaMod: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, -0.1)), r"invalid betas\[1\]=-0.1: expected 0 <= betas\[1\] < 1"),
    (dict(beta3=1.0), r"invalid beta3=1.0: expected 0 <= beta3 < 1"),
    (dict(eps=-1e-8), r"invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=-0.1), r"invalid weight_decay=-0.1: expected 0 <= weight_decay"),
]


def _case(id, solve=None, solve_steps=3000, solve_anneal=False, **kw):
    """``kw`` configures both sides; ``solve`` the convergence run (weight decay off, since it moves the minimiser)."""
    return Case(
        id,
        make=lambda p, **o: AdaMod(p, **{**kw, **o}),
        # torch_optimizer.AdaMod has the authors' arithmetic (lancopku/AdaMod, checked line by line)
        reference=lambda p: torch_optimizer.AdaMod(p, **kw),
        solver=lambda p: AdaMod(p, **{**kw, "weight_decay": 0.0, "lr": 0.05, **(solve or {})}),
        solve_steps=solve_steps,
        solve_anneal=solve_anneal,
        invalid=INVALID,
    )


CASES = [
    # Rosenbrock's valley takes AdaMod 8000 steps at lr 0.05 (at 3000 it was 2.6e-3 from the end)
    _case("AdaMod", lr=0.01, solve_steps=8000),
    # a short beta3 memory lets the steps circle the minimum (1.7e-3 away, or 5e-7: one ulp decided)
    _case("AdaMod-beta3", lr=0.01, betas=(0.8, 0.99), beta3=0.9, solve=dict(lr=0.02), solve_anneal=True),
    _case("AdaMod-decay", lr=0.01, weight_decay=0.1, solve_steps=8000),
]
