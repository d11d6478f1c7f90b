import warnings

import adabound

from optimlab.optim.adabound import AdaBound

from .harness import Case

INVALID = [
    (dict(lr=0.0), r"AdaBound: invalid lr=0.0: expected 0 < lr"),
    (dict(lr=-1.0), r"AdaBound: invalid lr=-1.0: expected 0 < lr"),
    (dict(betas=(1.0, 0.999)), r"invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, -0.1)), r"invalid betas\[1\]=-0.1: expected 0 <= betas\[1\] < 1"),
    (dict(final_lr=-0.1), r"invalid final_lr=-0.1: expected 0 <= final_lr"),
    (dict(gamma=1.0), r"invalid gamma=1.0: expected 0 <= gamma < 1"),
    (dict(gamma=-1e-3), r"invalid gamma=-0.001: expected 0 <= gamma < 1"),
    (dict(eps=-1e-8), r"invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"invalid weight_decay=nan"),
]


def reference(params, **kw):
    """The authors' class; it calls torch's deprecated ``add_(number, tensor)`` overloads."""
    warnings.filterwarnings("ignore", message=r"This overload of add_? is deprecated", category=UserWarning)
    return adabound.AdaBound(params, **kw)


def _case(id, solve=None, solve_steps=3000, **kw):
    """``kw`` configures both sides; ``solve`` the convergence run (weight decay off, since it moves the minimiser)."""
    return Case(
        id,
        make=lambda p, **o: AdaBound(p, **{**kw, **o}),
        reference=lambda p: reference(p, **kw),
        solver=lambda p: AdaBound(p, **{**kw, "weight_decay": 0.0, "lr": 0.05, **(solve or {})}),
        solve_steps=solve_steps,
        invalid=INVALID,
    )


CASES = [
    # a fast gamma so that 200 steps see the bounds bite (the default 1e-3 barely closes them)
    _case("AdaBound", lr=0.01, final_lr=0.05, gamma=0.05, solve=dict(final_lr=0.02)),
    _case("AdaBound-defaults", solve=dict(final_lr=0.02)),
    _case("AdaBound-l2", lr=0.01, final_lr=0.05, gamma=0.05, weight_decay=0.1, solve=dict(final_lr=0.02)),
    _case("AMSBound", lr=0.01, final_lr=0.05, gamma=0.05, amsbound=True, weight_decay=0.05, solve=dict(final_lr=0.02)),
]
