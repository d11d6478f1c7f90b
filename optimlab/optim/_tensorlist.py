"""A list of tensors that does arithmetic with ``torch._foreach_*`` kernels.

The update rules are written once, as plain tensor arithmetic.  Passing a ``TensorList`` in place
of each tensor runs the same rule over many parameters at once (the multi-tensor, ``foreach``
path) without a second copy of the equations.  Only the operations the rules use are provided.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import Tensor


class TensorList:
    """Elementwise arithmetic over a list of tensors; scalars broadcast to every tensor."""

    __slots__ = ("tensors",)

    def __init__(self, tensors: Iterable[Tensor]) -> None:
        self.tensors = list(tensors)

    def __len__(self) -> int:
        return len(self.tensors)

    def __iter__(self) -> Iterator[Tensor]:
        return iter(self.tensors)

    def __repr__(self) -> str:
        return f"TensorList({len(self.tensors)} tensors)"

    def __add__(self, other: Any) -> TensorList:
        return TensorList(torch._foreach_add(self.tensors, _arg(other)))

    __radd__ = __add__

    def __sub__(self, other: Any) -> TensorList:
        return TensorList(torch._foreach_sub(self.tensors, _arg(other)))

    def __rsub__(self, other: Any) -> TensorList:
        return TensorList(torch._foreach_add(torch._foreach_neg(self.tensors), other))

    def __mul__(self, other: Any) -> TensorList:
        return TensorList(torch._foreach_mul(self.tensors, _arg(other)))

    __rmul__ = __mul__

    def __truediv__(self, other: Any) -> TensorList:
        return TensorList(torch._foreach_div(self.tensors, _arg(other)))

    def __rtruediv__(self, other: Any) -> TensorList:
        # torch computes ``scalar / tensor`` as ``reciprocal(tensor) * scalar``; do the same so the
        # foreach path rounds exactly as the per-tensor path does.
        return TensorList(torch._foreach_mul(torch._foreach_reciprocal(self.tensors), other))

    def __neg__(self) -> TensorList:
        return TensorList(torch._foreach_neg(self.tensors))

    def __pow__(self, exponent: Any) -> TensorList:
        return TensorList(torch._foreach_pow(self.tensors, _arg(exponent)))

    def sqrt(self) -> TensorList:
        return TensorList(torch._foreach_sqrt(self.tensors))

    def abs(self) -> TensorList:
        return TensorList(torch._foreach_abs(self.tensors))

    def sum(self) -> TensorList:
        """Each tensor's sum, a 0-dim tensor (one reduction per tensor: torch has no foreach sum)."""
        return TensorList(t.sum() for t in self.tensors)

    def sign(self) -> TensorList:
        return TensorList(torch._foreach_sign(self.tensors))

    def maximum(self, other: TensorList) -> TensorList:
        return TensorList(torch._foreach_maximum(self.tensors, _arg(other)))

    def minimum(self, other: TensorList) -> TensorList:
        return TensorList(torch._foreach_minimum(self.tensors, _arg(other)))

    def clamp(self, min: Any = None, max: Any = None) -> TensorList:
        out = self.tensors
        if min is not None:
            out = torch._foreach_clamp_min(out, _arg(min))
        if max is not None:
            out = torch._foreach_clamp_max(out, _arg(max))
        return TensorList(out)

    def copy_(self, other: TensorList) -> TensorList:
        torch._foreach_copy_(self.tensors, other.tensors)
        return self


def _arg(x: Any) -> Any:
    return x.tensors if isinstance(x, TensorList) else x
