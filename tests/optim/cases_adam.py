from functools import partial

import torch

from optimlab.optim import Adam, AdamW

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"Adam\w*: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, -0.1)), r"invalid betas\[1\]=-0.1: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-8), r"invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"invalid weight_decay=nan"),
]


def _case(id, ours, ref, solve=None, solve_steps=3000, solve_anneal=False, **kw):
    """``kw`` configures both sides; ``solve`` the convergence run (weight decay off, since it moves the minimiser)."""
    return Case(
        id,
        make=lambda p, **o: ours(p, **{**kw, **o}),
        reference=(lambda p: ref(p, **kw)) if ref else None,
        solver=lambda p: ours(p, **{**kw, "weight_decay": 0.0, "lr": 0.05, **(solve or {})}),
        solve_steps=solve_steps,
        solve_anneal=solve_anneal,
        invalid=INVALID,
    )


CASES = [
    _case("Adam", Adam, torch.optim.Adam, lr=0.01),
    _case("Adam-l2", Adam, torch.optim.Adam, lr=0.01, weight_decay=0.1),
    _case("Adam-amsgrad", Adam, torch.optim.Adam, lr=0.01, amsgrad=True, weight_decay=0.05),
    _case("Adam-decoupled", Adam, partial(torch.optim.Adam, decoupled_weight_decay=True), lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    _case("AdamW", AdamW, torch.optim.AdamW, lr=0.01),
    _case("AdamW-amsgrad", AdamW, torch.optim.AdamW, lr=0.01, amsgrad=True),
    # options with no library reference: checked against the equations in test_adam.py
    _case("Adam-eps-inside-sqrt", Adam, None, lr=0.01, eps_inside_sqrt=True, solve=dict(eps=1e-16), solve_anneal=True),
    # the corrected max keeps the first, huge Rosenbrock gradient for good: a large lr and many steps
    _case("Adam-amsgrad-corrected-max", Adam, None, lr=0.01, amsgrad=True, amsgrad_corrected_max=True, solve=dict(lr=1.0), solve_steps=8000),
]
