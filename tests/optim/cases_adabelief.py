from functools import partial

import adabelief_pytorch
import pytorch_optimizer

from optimlab.optim.adabelief import AdaBelief

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"AdaBelief: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"AdaBelief: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, 1.0)), r"AdaBelief: invalid betas\[1\]=1.0: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-16), r"AdaBelief: invalid eps=-1e-16: expected 0 <= eps"),
    (dict(weight_decay=-0.1), r"AdaBelief: invalid weight_decay=-0.1: expected 0 <= weight_decay"),
]

# Rectified runs take SGD steps first, with Rosenbrock's gradient (~150) as it is: lr must be small;
# a large eps lets the quadratic settle instead of circling at a distance ~lr.
RECTIFIED = dict(lr=0.01, betas=(0.9, 0.99), eps=0.01)
# the package prints a change log when built unless told not to
PACKAGE = partial(adabelief_pytorch.AdaBelief, print_change_log=False)


def _case(id, ref, solve=None, solve_steps=2000, **kw):
    """``kw`` configures both sides (``ref`` may add its own names); ``solve`` the convergence run."""
    return Case(
        id,
        make=lambda p, **o: AdaBelief(p, **{**kw, **o}),
        reference=(lambda p: ref(p, **kw)) if ref else None,
        solver=lambda p: AdaBelief(p, **{**kw, "weight_decay": 0.0, "lr": 0.05, **(solve or {})}),
        solve_steps=solve_steps,
        invalid=INVALID,
    )


CASES = [
    _case("AdaBelief", PACKAGE, solve=RECTIFIED, solve_steps=3000, lr=0.01, weight_decay=0.1),
    _case("AdaBelief-adam", PACKAGE, lr=0.01, rectify=False, eps=1e-12),
    _case("AdaBelief-l2", PACKAGE, solve=RECTIFIED, solve_steps=3000, lr=0.01, weight_decay=0.1, weight_decouple=False),
    _case("AdaBelief-fixed-decay", PACKAGE, lr=0.01, weight_decay=0.01, fixed_decay=True, rectify=False),
    _case("AdaBelief-no-sgd", PACKAGE, RECTIFIED, 3000, lr=0.01, weight_decay=0.1, degenerated_to_sgd=False),
    _case("AdaBelief-amsgrad", PACKAGE, lr=0.01, amsgrad=True, rectify=False, weight_decay=0.05, weight_decouple=False),
    # the package ignores its max when rectifying (test_adabelief.py); pytorch_optimizer uses it
    _case(
        "AdaBelief-amsgrad-rectify",
        lambda p, amsgrad, **kw: pytorch_optimizer.AdaBelief(p, ams_bound=amsgrad, rectify=True, **kw),
        # the max keeps the first, huge spread: a large lr, which only steps without SGD warm-up survive
        solve=dict(lr=0.1, degenerated_to_sgd=False),
        solve_steps=3000,
        lr=0.01,
        amsgrad=True,
        weight_decay=0.1,
    ),
]
