from optimlab.optim import MARS

from .harness import SHAPES, Case
from .test_mars import AuthorsMARS

INVALID = [
    (dict(lr=0.0), r"MARS: invalid lr=0.0: expected 0 < lr"),
    (dict(betas=(1.0, 0.99)), r"MARS: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(eps=-1e-8), r"MARS: invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"MARS: invalid weight_decay=nan"),
    (dict(gamma=-0.1), r"MARS: invalid gamma=-0.1: expected 0 <= gamma"),
    (dict(lr_1d=-1.0), r"MARS: invalid lr_1d=-1.0: expected 0 <= lr_1d"),
    (dict(betas_1d=(0.9, 1.0)), r"MARS: invalid betas_1d\[1\]=1.0: expected 0 <= betas_1d\[1\] < 1"),
    (dict(weight_decay_1d=-0.1), r"MARS: invalid weight_decay_1d=-0.1: expected 0 <= weight_decay_1d"),
    (dict(mars_type="mars-shampoo"), r"MARS: invalid mars_type='mars-shampoo': expected 'mars-adamw'"),
    (dict(is_approx=0), r"MARS: invalid is_approx=0: expected True or False"),
]


def _case(id, ref, ref_kw=None, shapes=SHAPES, **kw):
    """``kw`` configures both sides (``ref_kw`` the reference instead, where its names differ).

    No ``solver``: the standard problems are vectors, which MARS steps by AdamW; test_mars.py
    solves them as 1 x n matrices, through the MARS branch.
    """
    return Case(
        id,
        make=lambda p, **o: MARS(p, **{**kw, **o}),
        reference=lambda p: ref(p, **(kw if ref_kw is None else ref_kw)),
        shapes=shapes,
        invalid=INVALID,
    )


CASES = [
    _case("MARS", AuthorsMARS, lr=0.01),
    _case("MARS-wd-amsgrad", AuthorsMARS, lr=0.01, weight_decay=0.1, amsgrad=True, gamma=0.1, betas=(0.9, 0.95)),
    _case("MARS-optimize-1d", AuthorsMARS, lr=0.01, optimize_1d=True, weight_decay=0.05, lr_1d=0.02),
]
