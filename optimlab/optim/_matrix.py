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


def matrix_inverse_root(
    a: Tensor,
    root: Any,
    epsilon: Any = 0.0,
    exponent_multiplier: Any = 1.0,
    *,
    dtype: torch.dtype | None = torch.float64,
) -> Tensor:
    r""":math:`(A + \epsilon I)^{-\eta/r}` of symmetric positive semi-definite matrices, by eigendecomposition.

    Over the last two dimensions of ``a`` (the others are a batch), as Distributed Shampoo's default
    (eigen) root-inverse method computes it, in ``dtype``: float64 by default; ``None``: ``a``'s, as the
    reference, float64 for a 16-bit ``a`` (``eigh`` has no 16-bit kernel).  An ``eigh`` that fails to
    converge in float32 is retried in float64, as the reference's ``retry_double_precision``:

    .. math::

        A = Q\,\operatorname{diag}(\lambda)\,Q^\top, \qquad
        \lambda'_i = \lambda_i - \min(\lambda_{\min}, 0) + \epsilon, \qquad
        X = Q\,\operatorname{diag}(\lambda'^{\,-\eta/r})\,Q^\top

    (:math:`r` = ``root``, :math:`\eta` = ``exponent_multiplier``).  Rounding can leave the
    eigenvalues of a rank-deficient sum of outer products slightly below zero: the shift lifts them
    all by that amount, so that :math:`\epsilon` alone sets the floor.  A 1 x 1 matrix is
    :math:`(a + \epsilon)^{-\eta/r}` (no shift, as the reference).  A matrix with a NaN or an
    infinity yields NaN (``eigh`` would fail on it; the library lets non-finite values propagate).
    The result has ``a``'s dtype.
    """
    alpha = -exponent_multiplier / root
    if dtype is None:
        dtype = a.dtype if a.dtype in (torch.float32, torch.float64) else torch.float64
    x = a.to(dtype)
    if a.size(-1) == 1:
        return ((x + epsilon) ** alpha).to(a.dtype)
    finite = torch.isfinite(x).all(dim=-1).all(dim=-1)[..., None, None]
    # the usual case, every matrix finite, skips the two selections (a pass over each matrix each)
    all_finite = bool(finite.all())
    if not all_finite:
        x = torch.where(finite, x, torch.eye(a.size(-1), dtype=x.dtype, device=x.device))
    try:
        eigenvalues, q = torch.linalg.eigh(x)
    except torch.linalg.LinAlgError:
        if x.dtype == torch.float64:
            raise
        eigenvalues, q = torch.linalg.eigh(x.double())
    eigenvalues = eigenvalues - eigenvalues.amin(dim=-1, keepdim=True).clamp(max=0) + epsilon
    inverse_root = (q * eigenvalues.pow(alpha).unsqueeze(-2)) @ q.mT
    return (inverse_root if all_finite else torch.where(finite, inverse_root, torch.nan)).to(a.dtype)


def matrix_inverse_root_newton(
    a: Tensor, root: int, epsilon: Any = 0.0, max_iterations: int = 1000, tolerance: Any = 1e-6
) -> tuple[Tensor, bool]:
    r""":math:`(A + \epsilon I)^{-1/r}` of one symmetric positive definite matrix by the coupled inverse Newton
    iteration (Guo and Higham 2006), as Distributed Shampoo's ``RootInvMethod.NEWTON``, in float64 whatever
    ``a``'s dtype:

    .. math::

        B &= A + \epsilon I, \qquad z = \frac{r + 1}{2 \lVert B \rVert_F}, \qquad
            X_0 = z^{1/r} I, \qquad M_0 = z B \\
        M' &= (1 + 1/r)\, I - M_k / r, \qquad X_{k+1} = X_k M', \qquad M_{k+1} = M'^{\,r} M_k

    until :math:`\max_{ij} \lvert M_k - I \rvert_{ij} \le` ``tolerance`` or ``max_iterations`` iterations.
    :math:`M_k = X_k^r B` throughout, so :math:`X_k \to B^{-1/r}` as :math:`M_k \to I`; the scaling puts
    every eigenvalue of :math:`M_0` in :math:`(0, (r + 1)/2)`, where the iteration converges.  Unlike the
    eigendecomposition, a matrix whose smallest eigenvalue rounding has pushed below :math:`-\epsilon`
    makes it diverge.  A 1 x 1 matrix is :math:`(a + \epsilon)^{-1/r}`; a matrix with a NaN or an
    infinity yields NaN.  Returns :math:`X` in ``a``'s dtype and whether the iteration converged.
    """
    if a.size(-1) == 1:
        return ((a.double() + epsilon) ** (-1 / root)).to(a.dtype), True
    x = a.double()
    if not torch.isfinite(x).all():
        return torch.full_like(a, torch.nan), True
    identity = torch.eye(a.size(-1), dtype=x.dtype, device=x.device)
    b = x + epsilon * identity
    z = (root + 1) / (2 * torch.linalg.matrix_norm(b))
    inverse_root, m = z ** (1 / root) * identity, z * b
    iterations, error = 0, (m - identity).abs().max()
    while error > tolerance and iterations < max_iterations:
        step = m * (-1 / root) + (1 + 1 / root) * identity
        inverse_root = inverse_root @ step
        m = torch.linalg.matrix_power(step, root) @ m
        iterations, error = iterations + 1, (m - identity).abs().max()
    return inverse_root.to(a.dtype), bool(error <= tolerance)


#: added to the diagonal before ``eigh``, as in the SOAP authors' code (it changes no eigenvalue of float32 size)
EIGH_SHIFT = 1e-30


def gram(x: Tensor, dim: int) -> Tensor:
    r"""The :math:`n \times n` matrix :math:`\sum x_{\dots i \dots}\, x_{\dots j \dots}` over every index but ``dim``.

    For a matrix :math:`G`: :math:`GG^\top` (``dim=0``) and :math:`G^\top G` (``dim=1``); for a
    vector, its outer product with itself.
    """
    others = [d for d in range(x.dim()) if d != dim]
    return torch.tensordot(x, x, dims=(others, others))


def eigenbasis(m: Tensor) -> Tensor:
    r"""The eigenvectors of a symmetric matrix as columns, by descending eigenvalue (``eigh`` of
    :math:`M + 10^{-30} I`).

    16-bit matrices are decomposed in float32 (``eigh`` has no 16-bit kernel) and the result cast
    back; where ``eigh`` fails to converge it is retried in float64.  A matrix with a NaN or an
    infinity yields NaN, as the library lets non-finite values propagate (``eigh`` would fail).
    """
    work = m if m.dtype in (torch.float32, torch.float64) else m.float()
    if not torch.isfinite(work).all():
        return torch.full_like(m, torch.nan)
    shifted = work + EIGH_SHIFT * torch.eye(m.size(-1), dtype=work.dtype, device=m.device)
    try:
        _, q = torch.linalg.eigh(shifted)
    except torch.linalg.LinAlgError:
        _, q = torch.linalg.eigh(shifted.double())
    return q.flip(-1).to(m.dtype)


def refresh_eigenbasis(m: Tensor, q: Tensor) -> tuple[Tensor, Tensor]:
    r"""One power-iteration step towards the eigenvectors of symmetric ``m`` from the basis ``q``.

    The columns of ``q`` are first put in the order of their estimated eigenvalues
    :math:`\operatorname{diag}(Q^\top M Q)`, largest first; then :math:`Q' R = \operatorname{qr}(M Q)`.
    Returns :math:`Q'` and that order (SOAP reorders its second moments with it).  16-bit
    matrices are computed in float32, as in :func:`eigenbasis`.
    """
    dtype = m.dtype
    if m.dtype not in (torch.float32, torch.float64):
        m, q = m.float(), q.float()
    # One product M Q serves both the estimates (column j of Q dotted with column j of M Q) and
    # the power step (its columns reordered): the authors' code makes three n x n x n products, which
    # on a 8640-wide layer took most of SOAP's time.
    mq = m @ q
    order = torch.argsort((q * mq).sum(0), descending=True)
    refreshed, _ = torch.linalg.qr(mq[:, order])
    return refreshed.to(dtype), order


def rotate(x: Tensor, bases: list[Tensor | None], *, back: bool = False) -> Tensor:
    r"""``x`` with dimension ``k`` expressed in basis ``bases[k]`` (``None``: left as it is).

    For a matrix and bases :math:`(Q_L, Q_R)`: :math:`Q_L^\top X Q_R`, or with ``back=True``
    :math:`Q_L X Q_R^\top` (the inverse, for orthogonal bases).  Each dimension is contracted in
    turn and moved last, so the result has ``x``'s order of dimensions.
    """
    for q in bases:
        x = x.movedim(0, -1) if q is None else torch.tensordot(x, q, dims=([0], [1 if back else 0]))
    return x
