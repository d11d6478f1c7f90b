"""Muon against Keller Jordan's ``muon-optimizer`` 0.1.0 and against ``torch.optim.Muon``.

Both references run Newton–Schulz in bfloat16 whatever the parameter's dtype, which no float64
comparison survives: the reference runs here make their ``.bfloat16()`` cast a copy in the same
dtype, and ours run with ``ns_dtype=None``.  ``test_muon.py`` compares the bfloat16 defaults.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

import muon as official
import torch

from optimlab.optim import Muon

from .harness import Case

#: tall, wide, square, a 4-D convolution weight, a 3-D batch of matrices (the official code
#: orthogonalises each), and a vector and a scalar for the auxiliary AdamW
SHAPES = ((16, 3), (3, 7), (5, 5), (4, 2, 3, 3), (2, 3, 4), (7,), ())
MATRICES = ((16, 3), (3, 7), (5, 5), (6, 4))


@contextmanager
def in_dtype() -> Iterator[None]:
    """The references' ``.bfloat16()`` cast as a copy in the tensor's own dtype."""
    with mock.patch.object(torch.Tensor, "bfloat16", lambda self: self.clone()):
        yield


def _reshaped_update(grad: torch.Tensor, momentum: torch.Tensor, beta: float = 0.95, **kw: Any) -> torch.Tensor:
    # 0.1.0's step adds the flattened update of a 4-D weight to the 4-D weight and fails; the
    # repository's later step reshapes it to the parameter's shape, as here
    return ORIGINAL_UPDATE(grad, momentum, beta, **kw).reshape(grad.shape)


ORIGINAL_UPDATE = official.muon_update


class Official(official.SingleDeviceMuonWithAuxAdam):
    """The official class as a torch.optim user builds it: tensors of 2 or more dimensions in
    ``use_muon=True`` groups, the others in ``use_muon=False`` groups (the official AdamW).

    ``bfloat16=False`` runs Newton–Schulz in the parameters' dtype (see the module docstring).
    """

    def __init__(self, params: Any, bfloat16: bool = False, adamw: dict[str, Any] | None = None, **muon_kw: Any):
        groups = params if isinstance(params[0], dict) else [{"params": params}]
        split = []
        for group in groups:
            tensors = list(group["params"])
            matrices = [p for p in tensors if p.dim() >= 2]
            others = [p for p in tensors if p.dim() < 2]
            if matrices:
                split.append(dict(params=matrices, use_muon=True, **muon_kw))
            if others:
                split.append(dict(params=others, use_muon=False, **(adamw or {})))
        self.bfloat16 = bfloat16
        super().__init__(split)

    def step(self) -> None:
        with mock.patch.object(official, "muon_update", _reshaped_update):
            if self.bfloat16:
                super().step()
            else:
                with in_dtype():
                    super().step()


class TorchInDtype(torch.optim.Muon):
    """``torch.optim.Muon`` with Newton–Schulz in the parameters' dtype."""

    def step(self, closure: Any = None) -> Any:
        with in_dtype():
            return super().step(closure)


INVALID = [
    (dict(lr=-0.1), r"^Muon: invalid lr=-0\.1: expected 0 <= lr$"),
    (dict(momentum=1.0), r"^Muon: invalid momentum=1\.0: expected 0 <= momentum < 1$"),
    (dict(weight_decay=-1.0), r"^Muon: invalid weight_decay=-1\.0: expected 0 <= weight_decay$"),
    (dict(eps=float("nan")), r"^Muon: invalid eps=nan: expected 0 <= eps$"),
    (dict(ns_steps=-1), r"^Muon: invalid ns_steps=-1: expected an integer >= 0$"),
    (dict(ns_steps=2.0), r"^Muon: invalid ns_steps=2\.0: expected an integer >= 0$"),
    (
        dict(ns_coefficients=(3.4, -4.7)),
        r"^Muon: invalid ns_coefficients=\(3\.4, -4\.7\): expected a triple \(a, b, c\), got 2 values$",
    ),
    (dict(ns_coefficients=(3.4, "b", 2.0)), r"^Muon: invalid ns_coefficients\[1\]='b': expected a number"),
    (dict(adjust_lr_fn="moonshot"), r"^Muon: invalid adjust_lr_fn='moonshot': expected one of None, 'original', "),
    (dict(ns_dtype="bf16"), r"^Muon: invalid ns_dtype='bf16': expected None .* or a floating-point torch"),
    (dict(ns_dtype=torch.int8), r"^Muon: invalid ns_dtype=torch\.int8: expected None"),
    (dict(adamw_lr=-1.0), r"^Muon: invalid adamw_lr=-1\.0: expected 0 <= adamw_lr$"),
    (dict(adamw_betas=(0.9, 1.0)), r"^Muon: invalid adamw_betas\[1\]=1\.0: expected 0 <= adamw_betas\[1\] < 1$"),
    (dict(adamw_eps=-1e-8), r"^Muon: invalid adamw_eps=-1e-08: expected 0 <= adamw_eps$"),
    (dict(adamw_wd=-0.1), r"^Muon: invalid adamw_wd=-0\.1: expected 0 <= adamw_wd$"),
]

#: ours as the float64 comparisons run it (the references' arithmetic in the parameter's dtype)
IN_DTYPE = dict(ns_dtype=None)


def _case(id: str, reference: Any, shapes: tuple[tuple[int, ...], ...] = SHAPES, **kw: Any) -> Case:
    return Case(
        id,
        make=lambda p, **o: Muon(p, **{**kw, **o}),
        reference=reference,
        solver=None,  # the standard problems are vectors (AdamW's part): test_muon.py solves a matrix problem
        shapes=shapes,
        invalid=INVALID,
        # the official AdamW's lr is its group's lr, ours adamw_lr, which schedulers leave alone
        scheduled=all(len(s) >= 2 for s in shapes),
    )


CASES = [
    _case("Muon", Official, **IN_DTYPE),
    _case(
        "Muon-official-decay",
        lambda p: Official(
            p,
            lr=0.05,
            momentum=0.9,
            weight_decay=0.1,
            adamw=dict(lr=1e-3, betas=(0.8, 0.99), eps=1e-8, weight_decay=0.01),
        ),
        lr=0.05,
        momentum=0.9,
        weight_decay=0.1,
        adamw_lr=1e-3,
        adamw_betas=(0.8, 0.99),
        adamw_eps=1e-8,
        adamw_wd=0.01,
        **IN_DTYPE,
    ),
    _case("Muon-matrices", Official, MATRICES, **IN_DTYPE),
    # torch.optim.Muon: its defaults and its clamped norm; 2-D tensors only
    _case("Muon-vs-torch", TorchInDtype, MATRICES, lr=1e-3, weight_decay=0.1, clamp_norm=True, **IN_DTYPE),
    _case(
        "Muon-vs-torch-match-rms-adamw",
        lambda p: TorchInDtype(p, lr=1e-3, adjust_lr_fn="match_rms_adamw"),
        MATRICES,
        lr=1e-3,
        weight_decay=0.1,
        clamp_norm=True,
        adjust_lr_fn="match_rms_adamw",
        **IN_DTYPE,
    ),
    _case(
        "Muon-vs-torch-no-nesterov-ns",
        lambda p: TorchInDtype(
            p, lr=0.01, weight_decay=0.0, nesterov=False, ns_coefficients=(2.0, -1.5, 0.5), ns_steps=8, eps=1e-5
        ),
        MATRICES,
        lr=0.01,
        nesterov=False,
        ns_coefficients=(2.0, -1.5, 0.5),
        ns_steps=8,
        eps=1e-5,
        clamp_norm=True,
        **IN_DTYPE,
    ),
    # the defaults, Newton-Schulz in bfloat16: every check but parity (test_muon.py compares it)
    _case("Muon-bfloat16", None),
]
