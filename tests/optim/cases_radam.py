from functools import partial

import pytorch_optimizer
import torch

from optimlab.optim.radam import RAdam

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"RAdam: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"RAdam: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, -0.1)), r"RAdam: invalid betas\[1\]=-0.1: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-8), r"RAdam: invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"RAdam: invalid weight_decay=nan: expected 0 <= weight_decay"),
]

# The authors' variant (LiyuanLucasLiu/RAdam): decoupled decay, N_sma >= 5, no step while intractable.
# Its default (degenerated_to_sgd=False) does not move in the first 5 steps.
AUTHORS = dict(decoupled_weight_decay=True, inclusive_threshold=True, degenerated_to_sgd=False)


# The SGD steps of the first iterations take Rosenbrock's gradient (~150) as it is, so lr must be
# small; a large eps lets the quadratic settle instead of circling at a distance ~lr.
SOLVE = dict(weight_decay=0.0, lr=0.01, betas=(0.9, 0.99), eps=0.01)


def _case(id, ref, **kw):
    """``ref`` is built with the reference's own names for the same configuration ``kw``."""
    return Case(
        id,
        make=lambda p, **o: RAdam(p, **{**kw, **o}),
        reference=ref,
        solver=lambda p: RAdam(p, **{**kw, **SOLVE}),
        solve_steps=3000,
        invalid=INVALID,
    )


CASES = [
    _case("RAdam", partial(torch.optim.RAdam, lr=0.01), lr=0.01),
    _case("RAdam-l2", partial(torch.optim.RAdam, lr=0.01, weight_decay=0.1), lr=0.01, weight_decay=0.1),
    _case(
        "RAdam-decoupled",
        partial(torch.optim.RAdam, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
        lr=0.01,
        weight_decay=0.1,
        decoupled_weight_decay=True,
    ),
    # pytorch_optimizer.RAdam computes the authors' radam.py (test_radam.py checks it)
    _case(
        "RAdam-authors-sgd",
        partial(pytorch_optimizer.RAdam, lr=0.01, weight_decay=0.1, degenerated_to_sgd=True),
        lr=0.01,
        weight_decay=0.1,
        **{**AUTHORS, "degenerated_to_sgd": True},
    ),
    _case("RAdam-authors", partial(pytorch_optimizer.RAdam, lr=0.01, weight_decay=0.1), lr=0.01, weight_decay=0.1, **AUTHORS),
]
