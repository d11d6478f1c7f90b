import lion_pytorch
import pytorch_optimizer

from optimlab.optim import Lion

from .harness import Case
from .test_lion import AuthorsLion

INVALID = [
    (dict(lr=-1.0), r"Lion: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.99)), r"Lion: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, -0.1)), r"Lion: invalid betas\[1\]=-0.1: expected 0 <= betas\[1\] < 1"),
    (dict(weight_decay=-0.1), r"Lion: invalid weight_decay=-0.1: expected 0 <= weight_decay"),
    (dict(weight_decay=float("nan")), r"Lion: invalid weight_decay=nan"),
]


def _case(id, ref, **kw):
    """``kw`` configures both sides.

    No ``solver``: at a constant lr sign steps circle the minimum at ~2 lr, so the standard
    constant-lr convergence runs cannot reach their tolerances with a 10x margin in a few thousand
    steps; test_lion.py solves both problems with a decaying lr instead.
    """
    return Case(id, make=lambda p, **o: Lion(p, **{**kw, **o}), reference=lambda p: ref(p, **kw), invalid=INVALID)


CASES = [
    _case("Lion", AuthorsLion, lr=0.01),
    _case("Lion-wd", AuthorsLion, lr=0.01, betas=(0.95, 0.98), weight_decay=1.0),
    # the ports, as second opinions
    _case("Lion-wd-vs-lion-pytorch", lion_pytorch.Lion, lr=0.01, weight_decay=1.0),
    _case("Lion-wd-vs-pytorch-optimizer", pytorch_optimizer.Lion, lr=0.01, weight_decay=1.0),
]
