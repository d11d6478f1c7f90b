import pytorch_optimizer
import torch_optimizer

from optimlab.optim import LAMB

from .harness import Case
from .test_lamb import PaperLAMB

INVALID = [
    (dict(lr=-1.0), r"LAMB: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"LAMB: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, 1.0)), r"LAMB: invalid betas\[1\]=1.0: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-6), r"LAMB: invalid eps=-1e-06: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"LAMB: invalid weight_decay=nan"),
    (dict(clamp_value=0.0), r"LAMB: invalid clamp_value=0.0: expected 0 < clamp_value"),
    (dict(max_grad_norm=-1.0), r"LAMB: invalid max_grad_norm=-1.0: expected 0 < max_grad_norm"),
    (dict(max_grad_norm="1"), r"LAMB: invalid max_grad_norm='1': expected a number"),
    (dict(bias_correction=1), r"LAMB: invalid bias_correction=1: expected True or False"),
]


def _case(id, ref, ref_kw=None, **kw):
    """``kw`` configures both sides (``ref_kw`` the reference instead, where its names differ).

    No ``solver``: every step is lr * ||x|| long, so at a constant lr LAMB circles the minimum;
    test_lamb.py solves both problems with a decaying lr instead.
    """
    return Case(
        id,
        make=lambda p, **o: LAMB(p, **{**kw, **o}),
        reference=lambda p: ref(p, **(kw if ref_kw is None else ref_kw)),
        invalid=INVALID,
    )


_v3 = dict(lr=0.01, bias_correction=False, clamp_value=10.0)
CASES = [
    _case("LAMB", PaperLAMB, lr=0.01),
    _case("LAMB-wd", PaperLAMB, lr=0.01, weight_decay=0.1, betas=(0.5, 0.99)),
    _case("LAMB-clip", PaperLAMB, lr=0.01, weight_decay=0.01, max_grad_norm=1.0),
    _case("LAMB-clamp", PaperLAMB, lr=0.01, clamp_value=1.5),
    # the earlier paper's form, as the ports implement it
    _case(
        "LAMB-v3-vs-torch-optimizer",
        torch_optimizer.Lamb,
        ref_kw=dict(lr=0.01, weight_decay=0.1),
        **_v3,
        weight_decay=0.1,
    ),
    _case(
        "LAMB-v3-vs-pytorch-optimizer",
        pytorch_optimizer.Lamb,
        ref_kw=dict(lr=0.01, weight_decay=0.1, weight_decouple=False, adam_debias=True, eps=0.0),
        **_v3,
        weight_decay=0.1,
        eps=0.0,
    ),
]
