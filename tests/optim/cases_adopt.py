from functools import partial

import pytorch_optimizer

from optimlab.optim import ADOPT
from optimlab.optim.adopt import quarter_power

from .harness import Case
from .test_adopt import AuthorsADOPT, OriginalADOPT

INVALID = [
    (dict(lr=-1.0), r"ADOPT: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.9999)), r"ADOPT: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, 1.0)), r"ADOPT: invalid betas\[1\]=1.0: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-6), r"ADOPT: invalid eps=-1e-06: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"ADOPT: invalid weight_decay=nan"),
    (dict(clip_lambda=0.25), r"ADOPT: invalid clip_lambda=0.25: expected a function of the number of updates"),
    (
        dict(clip_lambda=quarter_power, original=True),
        r"ADOPT: invalid clip_lambda=<function quarter_power.*> with original=True: .*clip_lambda=None",
    ),
]


def _case(id, ref, ref_kw=None, **kw):
    """``kw`` configures both sides (``ref_kw`` the reference instead, where its names differ).

    The convergence runs take beta2 = 0.99: with the default 0.9999, v keeps Rosenbrock's first
    gradients (~1e3) for thousands of steps and the normalised steps stall in the valley.
    """
    return Case(
        id,
        make=lambda p, **o: ADOPT(p, **{**kw, **o}),
        reference=lambda p: ref(p, **(kw if ref_kw is None else ref_kw)),
        solver=lambda p: ADOPT(p, **{**kw, "weight_decay": 0.0, "lr": 3e-3, "betas": (0.9, 0.99)}),
        solve_steps=3000,
        invalid=INVALID,
    )


_original = dict(lr=0.05, weight_decay=0.1, decouple=True, clip_lambda=None, original=True)
CASES = [
    _case("ADOPT", AuthorsADOPT, lr=0.05),
    _case("ADOPT-l2", AuthorsADOPT, lr=0.05, weight_decay=0.1, betas=(0.5, 0.99)),
    _case("ADOPT-decouple", AuthorsADOPT, lr=0.05, weight_decay=0.1, decouple=True),
    _case("ADOPT-no-clip", AuthorsADOPT, lr=0.05, clip_lambda=None, eps=1e-3),
    # the first release, against its equations (test_adopt.py)
    _case("ADOPT-original", OriginalADOPT, ref_kw=dict(lr=0.05, weight_decay=0.1, decoupled=True), **_original),
    _case(
        "ADOPT-original-l2", OriginalADOPT, ref_kw=dict(lr=0.05, weight_decay=0.1), **{**_original, "decouple": False}
    ),
    # pytorch_optimizer agrees where its clip schedule and decay timing do not matter (test_adopt.py)
    _case(
        "ADOPT-vs-pytorch-optimizer",
        partial(pytorch_optimizer.ADOPT, clip_lambda=None),
        ref_kw=dict(lr=0.05, weight_decay=0.1),
        lr=0.05,
        weight_decay=0.1,
        clip_lambda=None,
    ),
]
