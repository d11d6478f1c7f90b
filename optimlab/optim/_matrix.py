r"""Matrix functions that the matrix-based optimizers share (Muon today; SOAP and Shampoo's eigen and
root solvers belong here too).

Like the rules, they are pure functions of tensors: leading dimensions are a batch of matrices, and
nothing is written in place.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import Tensor

#: Keller Jordan's quintic coefficients (a, b, c): the slope at zero is as large as they could make
#: it, so the singular values land in about [0.7, 1.2] after 5 steps rather than exactly at 1
NS_COEFFICIENTS = (3.4445, -4.7750, 2.0315)


def newton_schulz(
    g: Tensor,
    coefficients: tuple[Any, Any, Any] = NS_COEFFICIENTS,
    steps: int = 5,
    eps: Any = 1e-7,
    *,
    dtype: torch.dtype | None = torch.bfloat16,
    clamp_norm: bool = False,
) -> Tensor:
    r"""The quintic Newton–Schulz approximation of :math:`UV^\top` for :math:`G = U\Sigma V^\top`.

    Over the last two dimensions of ``g`` (the others are a batch), in ``dtype`` (``None``: ``g``'s):

    .. math::

        X_0 = G / (\lVert G\rVert_F + \epsilon), \qquad
        A_k = X_k X_k^\top, \qquad
        X_{k+1} = a X_k + (b A_k + c A_k^2)\, X_k \qquad (k < \text{steps}).

    Dividing by the Frobenius norm puts every singular value in [0, 1]; each step maps a singular
    value :math:`\sigma` to :math:`a\sigma + b\sigma^3 + c\sigma^5`.  A tall matrix is transposed
    first so that :math:`A_k` is the smaller Gram matrix.  ``clamp_norm=True`` divides by
    :math:`\max(\lVert G\rVert_F, \epsilon)` instead (``torch.optim.Muon``; Keller Jordan's code adds
    :math:`\epsilon`).  The result has ``dtype``.
    """
    a, b, c = coefficients
    x = g if dtype is None else g.to(dtype)
    tall = g.size(-2) > g.size(-1)
    if tall:
        x = x.mT
    norm = x.norm(dim=(-2, -1), keepdim=True)
    x = x / (norm.clamp(min=eps) if clamp_norm else norm + eps)
    for _ in range(steps):
        gram = x @ x.mT
        # each product and its sum in one call, as torch.optim.Muon: on the CPU, a bfloat16 product
        # costs about what a separate scaling and sum of its result cost
        x = _addmm(x, _addmm(gram, gram, gram, b, c), x, a)
    return x.mT if tall else x


def _addmm(t: Tensor, m1: Tensor, m2: Tensor, beta: Any, alpha: Any = 1) -> Tensor:
    """``beta * t + alpha * (m1 @ m2)`` over the last two dimensions."""
    if t.dim() == 2:
        return torch.addmm(t, m1, m2, beta=beta, alpha=alpha)
    batch = t.shape[:-2]
    flat = [x.reshape(-1, *x.shape[-2:]) for x in (t, m1, m2)]
    return torch.baddbmm(*flat, beta=beta, alpha=alpha).reshape(*batch, t.size(-2), m2.size(-1))
