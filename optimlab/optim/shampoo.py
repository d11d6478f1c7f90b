r"""Shampoo: the single-device form of Distributed Shampoo (Shi et al. 2023, "A Distributed Data-Parallel
PyTorch Implementation of the Distributed Shampoo Optimizer for Training Neural Networks At-Scale").

Reference: ``facebookresearch/optimizers``, ``distributed_shampoo/`` at its release v1.0.0 (2024-01-02),
the code of the paper and of the era of the AlgoPerf v0.5 external-tuning winner: its constructor
names and defaults, its default large-dimension method (blocking), its default root-inverse method
(eigendecomposition) and its grafting.  The package is not on PyPI; the tests run its algorithm
written out from that code.

**Blocks.**  A tensor is reshaped by merging adjacent dimensions while their product stays at most
``max_preconditioner_dim`` (``use_merge_dims``; a 0-dim tensor is a 1-element vector), then cut
into blocks of at most ``max_preconditioner_dim`` along every dimension.  Each block :math:`G` of
order :math:`o` with dimensions :math:`d_1, \dots, d_o` has a factor matrix :math:`L^{(k)}`
(:math:`d_k \times d_k`) per dimension.  At step :math:`t`, for every block:

.. math::

    G &\leftarrow G \,/\, \max\bigl(1, \lVert \mathcal G\rVert / c\bigr)
        \quad\text{(max\_grad\_norm } c \text{ not None; } \lVert \mathcal G\rVert
        \text{: the norm of every gradient of the optimizer together)} \\
    G &\leftarrow G + \lambda W \quad\text{(only if not use\_decoupled\_weight\_decay)} \\
    L^{(k)}_t &= \beta_2 L^{(k)}_{t-1} + (1-\beta_2)\, G_{(k)} G_{(k)}^\top
        \quad(\beta_2 = 1:\ L^{(k)}_t = L^{(k)}_{t-1} + G_{(k)} G_{(k)}^\top) \\
    \bar L^{(k)}_t &= \bigl(L^{(k)}_t / (1-\beta_2^t) + \epsilon I\bigr)^{-\eta/r}
        \quad\text{every precondition\_frequency steps from start\_preconditioning\_step on} \\
    M_t &= \beta_1 M_{t-1} + (1-\beta_1) G, \qquad \hat G = M_t / (1-\beta_1^t) \quad(\beta_1 = 0:\ \hat G = G) \\
    P &= \hat G \times_1 \bar L^{(1)} \times_2 \dots \times_o \bar L^{(o)}

where :math:`G_{(k)}` is :math:`G` unfolded along dimension :math:`k` (the outer product contracts
every other dimension), :math:`\times_k` multiplies dimension :math:`k` by a matrix, :math:`r` is
:math:`2o` unless ``exponent_override`` says otherwise (an int, or a list whose :math:`o`-th entry is
the root of order-:math:`o` blocks; 0 or a missing entry keeps :math:`2o`), :math:`\eta` is
``exponent_multiplier``, and the bias corrections are 1 without ``use_bias_correction`` or for
:math:`\beta = 1`.  The inverse roots are computed by :func:`~optimlab.optim._matrix.matrix_inverse_root`
(``root_inv_method="eigen"``: eigendecomposition in ``preconditioner_dtype``, eigenvalues shifted to be
non-negative, :math:`\epsilon` added before the root) or by the coupled inverse Newton iteration of
:func:`~optimlab.optim._matrix.matrix_inverse_root_newton` (``"newton"``: in float64, until
:math:`\max_{ij} |M_k - I|_{ij} \le` ``newton_tolerance`` or ``newton_max_iterations`` iterations, with a
warning then; only for :math:`\eta = 1`), and kept in the state between recomputations.  Both are the
reference's ``matrix_inverse_root`` methods (``RootInvMethod``, its defaults ``max_iterations=1000``,
``tolerance=1e-6``), though its v1.0.0 optimizer always asks for the eigendecomposition; its later
releases offer the Newton iteration as an option (``CoupledNewtonConfig``, 100 iterations by default).

**Grafting** (``grafting_type``) gives each block the norm of another method's step on the same
:math:`\hat G`: with the grafting accumulator :math:`A_t = \beta_g A_{t-1} + (1-\beta_g) G^2`
(:math:`\beta_g = 1`: a sum) and :math:`D = \hat G / (\sqrt{A_t / c_t} + \epsilon_g)`,

.. math::

    P \leftarrow P\, \frac{\lVert D\rVert_F}{\lVert P\rVert_F + 10^{-16}}

``"adagrad"`` (the default: :math:`\beta_g = 1`), ``"rmsprop"`` (:math:`\beta_g` = ``grafting_beta2``,
:math:`c_t = 1`), ``"adam"`` (:math:`\beta_g` = ``grafting_beta2``, :math:`c_t = 1-\beta_g^t`), ``"sgd"``
(:math:`D = \hat G`) or ``None`` (no rescaling); :math:`\epsilon_g` = ``grafting_epsilon``.
Before ``start_preconditioning_step`` (-1: ``precondition_frequency``) the step is the grafting
method's own, :math:`P = D` (:math:`\hat G` without grafting).  Then, for the whole tensor:

.. math::

    P &\leftarrow P + \lambda W_{t-1} \quad\text{(decoupled decay with momentum; without momentum }
        W \leftarrow (1-\eta_t\lambda) W) \\
    B_t &= \mu B_{t-1} + P, \qquad P \leftarrow P + \mu B_t \ \text{(use\_nesterov) or } P \leftarrow B_t
        \quad(\mu = \text{momentum} \ne 0) \\
    W_t &= W_{t-1} - \eta_t P

State: ``step``; ``momentum`` (momentum != 0), ``filtered_grad`` (:math:`M`, :math:`\beta_1 \ne 0`)
and ``grafting_preconditioner`` (:math:`A`; AdaGrad, RMSprop and Adam grafting) shaped like the
parameter; and per block ``i`` and dimension ``k``: ``block_{i}.factor_matrix_{k}`` (:math:`L`) and
``block_{i}.inv_factor_matrix_{k}`` (:math:`\bar L`), the names of the reference's modules.  Blocks
are numbered as the reference splits them (the last dimension fastest).

**Dtypes.**  :math:`L`, :math:`\bar L` and :math:`M` are kept in ``preconditioner_dtype`` (float32 by
default, as the reference: float64 for accuracy, float32 for 16-bit parameters), the other states in
the parameter's dtype, unlike the rest of this library; a checkpoint loads them back in those dtypes.
The outer products and the preconditioning products are computed in the wider of the two dtypes,
:math:`\hat G = M_t / (1-\beta_1^t)` and :math:`P` are rounded to the parameter's dtype.  The
eigendecompositions are taken in ``preconditioner_dtype``, as the reference (float32 or float64; a 16-bit
one in float64, where the reference's 16-bit ``eigh`` fails and its retry takes float64; an ``eigh`` that
fails to converge in float32 is retried in float64, as its ``retry_double_precision``): a float32 factor
matrix carries rounding of ~1e-7 of its entries, which a float64 ``eigh`` of it would not remove.  The
Newton iteration runs in float64.

**Options changed after the first step.**  ``lr``, ``weight_decay``, ``betas``, ``momentum``, ``epsilon``,
the grafting options and the root options are read at every step.  A momentum that was 0 at a
parameter's first step starts its buffer at zero when it becomes non-zero: the reference, which reads
``momentum`` at every step, does the same when built with momentum and given ``momentum=0`` until then.
The reference builds every other state at construction for the options given then, and reads them
there: ``betas[0]`` from 0, an accumulating ``grafting_type`` after ``None`` or ``"sgd"``, and any change
of ``max_preconditioner_dim``, ``use_merge_dims`` or ``preconditioner_dtype`` after a parameter's first
step raise a ``ValueError`` before anything changes (a filtered gradient or an accumulator started late
would be bias-corrected by the wrong step count; other blocks have no factor matrices).

Where this class departs from the reference:

* Distributed Shampoo v1.0.0 fails at its first preconditioned step whenever ``preconditioner_dtype``
  is not the parameter's dtype (``tensordot`` of the gradient with a root of the other dtype; its cast
  back is a no-op), so a float64 ``preconditioner_dtype`` for float32 parameters, or its default for
  bfloat16 ones, only works here.  Its later releases precondition in ``preconditioner_dtype``, here
  the wider dtype (the same but for a ``preconditioner_dtype`` narrower than the parameter's), and form
  the outer products in the gradient's dtype, here the wider one (exact for a wider
  ``preconditioner_dtype``).  Its coupled Newton iteration runs in ``preconditioner_dtype``, here in float64.
* the reference reads ``betas``, ``epsilon`` and the grafting options only at construction, ignoring
  later changes to its param groups; here a scheduler's changes apply (above).
* the reference's ``max_grad_norm`` is one value for all groups; here each group has its own (a group
  with None does not clip), applied to the norm of every gradient of the optimizer, so that one value
  for all groups is the reference's clipping.  The reference asserts the norm is not NaN; here NaN
  propagates (below).
* the reference overwrites ``p.grad`` (weight decay, the filtered gradient); here ``p.grad`` is left
  as it was.
* the reference raises on NaN or infinite factor matrices; here, as everywhere in this library, NaN
  propagates into the parameters (the inverse root of such a matrix is NaN).
* the reference cannot take 0-dim tensors (its dimension merging fails); here they are 1-element
  vectors.  It roots a factor matrix that is still diagonal by its entries instead of by ``eigh``
  or the Newton iteration; the results agree to rounding (to ``newton_tolerance`` for the latter).
* the reference's options for distributed training, its ``LargeDimMethod.ADAGRAD``/``DIAGONAL``,
  and LARS/LAMB and normalised grafting are not implemented.

``pytorch_optimizer``'s ``Shampoo`` (4.1.0) is the original Shampoo (Gupta et al. 2018): factors
summed from :math:`\epsilon I`, no blocking or dimension merging, no grafting, no bias correction,
and a momentum that mixes the previous *preconditioned* step into the next raw gradient; with
momentum 0 it equals this class with ``betas=(0, 1)``, ``grafting_type=None``,
``use_merge_dims=False``, ``epsilon`` its ``matrix_eps`` and no dimension above
``max_preconditioner_dim`` (``test_shampoo.py`` checks both facts).  Its ``ScalableShampoo`` is
Google's (Anil et al. 2020) in another parametrisation.

Speed (``benchmarks/muon.py --shampoo``): no foreach or native path; a step costs its outer products
and preconditioning products (torch's matrix products, a block's transposes passed as views), plus, every
``precondition_frequency`` steps, one ``eigh`` and one product per factor matrix, which dominate on the
CPU (with float64 ``eigh``, about 70% of the mean step on 2 layers of width 256 at frequency 10; float32
takes about 60% of its time): raise ``precondition_frequency`` to amortise them.  Batching the blocks of
equal shape would not help there: the CPU's batched ``eigh`` is one LAPACK call per matrix.
"""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Callable, Iterable, Sequence
from itertools import chain, product
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._matrix import matrix_inverse_root, matrix_inverse_root_newton
from ._validate import HyperparameterTypeError, check_choice, check_dtype, check_int, check_pair, check_range

#: ``grafting_type`` values: the reference's GraftingType NONE, SGD, ADAGRAD, RMSPROP and ADAM
GRAFTING_TYPES = (None, "sgd", "adagrad", "rmsprop", "adam")
#: the grafting methods that keep an accumulator of squared gradients
_ACCUMULATING = ("adagrad", "rmsprop", "adam")
#: ``root_inv_method`` values: the reference's RootInvMethod EIGEN and NEWTON
ROOT_INV_METHODS = ("eigen", "newton")


def shampoo(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    beta2: Any,
    epsilon: Any,
    momentum: Any,
    weight_decay: Any,
    max_preconditioner_dim: int,
    precondition_frequency: int,
    start_preconditioning_step: int,
    exponent_override: int | Sequence[int],
    exponent_multiplier: Any,
    use_nesterov: bool,
    use_bias_correction: bool,
    use_decoupled_weight_decay: bool,
    grafting_type: str | None,
    grafting_epsilon: Any,
    grafting_beta2: Any,
    use_merge_dims: bool,
    preconditioner_dtype: torch.dtype,
    max_grad_norm: Any,
    root_inv_method: str,
    newton_max_iterations: int,
    newton_tolerance: Any,
    grad_norm: float | None,
) -> tuple[Tensor, State]:
    """One Shampoo step of a tensor (the module docstring has the equations).

    ``grad_norm`` is the norm of every gradient of the optimizer (the class computes it when a group
    clips).  Not a traceable rule: which steps recompute the inverse roots is a Python decision on ``step``.
    """
    if param.numel() == 0:
        return param, {}
    new: State = {}
    if max_grad_norm is not None and grad_norm > max_grad_norm:
        grad = grad / (grad_norm / max_grad_norm)
    if not use_decoupled_weight_decay and not is_zero(weight_decay):
        grad = grad + weight_decay * param
    start = precondition_frequency if start_preconditioning_step == -1 else start_preconditioning_step
    merged = merged_shape(param.shape, max_preconditioner_dim, use_merge_dims)
    g = grad.reshape(merged)

    if grafting_type in _ACCUMULATING:
        gbeta2 = 1.0 if grafting_type == "adagrad" else grafting_beta2
        acc = state["grafting_preconditioner"].reshape(merged)
        acc = acc + g * g if gbeta2 == 1 else gbeta2 * acc + (1 - gbeta2) * (g * g)
        new["grafting_preconditioner"] = acc.reshape(param.shape)
        corrected = grafting_type == "adam" and gbeta2 < 1
        graft_denominator = (acc / (1 - gbeta2**step) if corrected else acc).sqrt() + grafting_epsilon

    filtered = g
    if not is_zero(beta1):
        average = state["filtered_grad"].reshape(merged)  # in preconditioner_dtype, as the reference keeps it
        buf = (beta1 * average + (1 - beta1) * g).to(average.dtype)
        new["filtered_grad"] = buf.reshape(param.shape)
        filtered = (buf / (1 - beta1**step) if use_bias_correction else buf).to(g.dtype)
    grafted = filtered / graft_denominator if grafting_type in _ACCUMULATING else filtered

    bias_correction2 = 1 - beta2**step if use_bias_correction and beta2 < 1 else 1.0
    recompute = step % precondition_frequency == 0 and step >= start
    directions = []
    blocks = zip(*(split_blocks(t, max_preconditioner_dim) for t in (g, filtered, grafted)))
    # products in the wider of the two dtypes (no conversion when they are the same)
    wide = torch.promote_types(param.dtype, preconditioner_dtype)
    for i, (block, direction, graft_block) in enumerate(blocks):
        root = _root(exponent_override, block.dim())
        block, direction = block.to(wide), direction.to(wide)
        for k in range(block.dim()):
            # the outer product G_(k) G_(k)^T and the average in one call (a pass over the factor saved)
            left, right = _unfolded(block, k)
            factor = state[f"block_{i}.factor_matrix_{k}"].to(wide)
            factor = torch.addmm(factor, left, right, beta=beta2, alpha=1 if beta2 == 1 else 1 - beta2)
            factor = factor.to(preconditioner_dtype)
            new[f"block_{i}.factor_matrix_{k}"] = factor
            inverse = state[f"block_{i}.inv_factor_matrix_{k}"]
            if recompute:
                inverse = _inverse_root(
                    factor if bias_correction2 == 1 else factor / bias_correction2,
                    root,
                    epsilon,
                    exponent_multiplier,
                    root_inv_method,
                    newton_max_iterations,
                    newton_tolerance,
                )
                new[f"block_{i}.inv_factor_matrix_{k}"] = inverse
            if step >= start:
                # contracting the first dimension each time cycles them back into order; tensordot's
                # contraction, but a matrix's transpose goes to the product as a view, not a copy
                direction = torch.matmul(direction.movedim(0, -1), inverse.to(wide))
        direction = direction.to(param.dtype)
        if step < start:
            direction = graft_block
        elif grafting_type is not None:
            direction = direction * (graft_block.norm() / (direction.norm() + 1e-16))
        directions.append(direction)
    update = _join(directions, merged, max_preconditioner_dim).reshape(param.shape)

    if use_decoupled_weight_decay and not is_zero(weight_decay):
        if is_zero(momentum):
            param = param * (1 - lr * weight_decay)
        else:
            update = update + weight_decay * param
    if not is_zero(momentum):
        buf = momentum * state["momentum"] + update
        new["momentum"] = buf
        update = update + momentum * buf if use_nesterov else buf
    return param - lr * update, new


def merged_shape(shape: Sequence[int], max_preconditioner_dim: int, use_merge_dims: bool) -> tuple[int, ...]:
    """The shape a tensor is preconditioned in: neighbouring dimensions merged while their product is at
    most ``max_preconditioner_dim`` (or a dimension is 1), as the reference's ``merge_small_dims``."""
    if not shape:
        return (1,)
    if not use_merge_dims:
        return tuple(shape)
    merged = [shape[0]]
    for d in shape[1:]:
        if merged[-1] == 1 or d == 1 or merged[-1] * d <= max_preconditioner_dim:
            merged[-1] *= d
        else:
            merged.append(d)
    return tuple(merged)


@functools.lru_cache(maxsize=1024)
def block_shapes(
    shape: tuple[int, ...], max_preconditioner_dim: int, use_merge_dims: bool
) -> tuple[tuple[int, ...], ...]:
    """The shapes of the blocks :func:`split_blocks` cuts a tensor of ``shape`` into, in its order."""
    size = max_preconditioner_dim
    merged = merged_shape(shape, size, use_merge_dims)
    return tuple(product(*([min(size, d - start) for start in range(0, d, size)] for d in merged)))


def split_blocks(t: Tensor, max_preconditioner_dim: int) -> list[Tensor]:
    """The blocks of ``t`` (views), at most ``max_preconditioner_dim`` along every dimension, in the
    reference's order (split along the first dimension, then each piece along the next, ...)."""
    blocks = [t]
    for dim in range(t.dim()):
        blocks = [b for piece in blocks for b in piece.split(max_preconditioner_dim, dim=dim)]
    return blocks


def _join(blocks: list[Tensor], merged: tuple[int, ...], size: int) -> Tensor:
    """The inverse of :func:`split_blocks`."""
    for dim in reversed(range(len(merged))):
        n = math.ceil(merged[dim] / size)
        if n > 1:  # cat copies even a single piece
            blocks = [torch.cat(blocks[i : i + n], dim=dim) for i in range(0, len(blocks), n)]
    return blocks[0]


def _unfolded(block: Tensor, k: int) -> tuple[Tensor, Tensor]:
    r"""The two factors of the outer product :math:`G_{(k)} G_{(k)}^\top`, as views where a matrix product
    takes them without a copy (the first and the last dimension)."""
    if k and k == block.dim() - 1:
        rows = block.reshape(-1, block.size(k))
        return rows.T, rows
    unfolded = block.movedim(k, 0).reshape(block.size(k), -1)
    return unfolded, unfolded.T


def _inverse_root(
    a: Tensor,
    root: int,
    epsilon: Any,
    exponent_multiplier: Any,
    root_inv_method: str,
    newton_max_iterations: int,
    newton_tolerance: Any,
) -> Tensor:
    """The inverse root of a factor matrix by ``root_inv_method`` (exponent_multiplier is 1 for ``"newton"``)."""
    if root_inv_method == "eigen":
        return matrix_inverse_root(a, root, epsilon, exponent_multiplier, dtype=None)
    inverse, converged = matrix_inverse_root_newton(a, root, epsilon, newton_max_iterations, newton_tolerance)
    if not converged:
        warnings.warn(
            f"Shampoo: the coupled Newton iteration did not reach newton_tolerance={newton_tolerance!r} in "
            f"newton_max_iterations={newton_max_iterations!r} for a {a.size(0)} x {a.size(0)} factor matrix; its "
            "last iterate is the root (as in the reference)",
            RuntimeWarning,
            stacklevel=2,
        )
    return inverse


def _root(exponent_override: int | Sequence[int], order: int) -> int:
    """The root r of the inverse root of an order-``order`` block (the reference's rule)."""
    if isinstance(exponent_override, (list, tuple)):
        return (
            exponent_override[order - 1]
            if order <= len(exponent_override) and exponent_override[order - 1]
            else 2 * order
        )
    return exponent_override or 2 * order


class Shampoo(RuleOptimizer):
    """Distributed Shampoo on one device, as in the module docstring.

    Arguments are the reference's (v1.0.0) names, defaults and order, with ``grafting_type`` a string
    (``None``, ``"sgd"``, ``"adagrad"``, ``"rmsprop"``, ``"adam"``) instead of its enum.
    """

    rule = staticmethod(shampoo)
    elementwise = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 1.0),
        epsilon: float = 1e-12,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        max_preconditioner_dim: int = 1024,
        precondition_frequency: int = 1,
        start_preconditioning_step: int = -1,
        exponent_override: int | list[int] = 0,
        exponent_multiplier: float = 1.0,
        use_nesterov: bool = False,
        use_bias_correction: bool = True,
        use_decoupled_weight_decay: bool = True,
        grafting_type: str | None = "adagrad",
        grafting_epsilon: float = 1e-3,
        grafting_beta2: float = 1.0,
        use_merge_dims: bool = True,
        preconditioner_dtype: torch.dtype | str = torch.float32,
        max_grad_norm: float | None = None,
        root_inv_method: str = "eigen",
        newton_max_iterations: int = 1000,
        newton_tolerance: float = 1e-6,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            epsilon=epsilon,
            momentum=momentum,
            weight_decay=weight_decay,
            max_preconditioner_dim=max_preconditioner_dim,
            precondition_frequency=precondition_frequency,
            start_preconditioning_step=start_preconditioning_step,
            exponent_override=exponent_override,
            exponent_multiplier=exponent_multiplier,
            use_nesterov=use_nesterov,
            use_bias_correction=use_bias_correction,
            use_decoupled_weight_decay=use_decoupled_weight_decay,
            grafting_type=grafting_type,
            grafting_epsilon=grafting_epsilon,
            grafting_beta2=grafting_beta2,
            use_merge_dims=use_merge_dims,
            preconditioner_dtype=preconditioner_dtype,
            max_grad_norm=max_grad_norm,
            root_inv_method=root_inv_method,
            newton_max_iterations=newton_max_iterations,
            newton_tolerance=newton_tolerance,
        )
        #: the norm of all the gradients of the step under way, where a group clips (``step`` sets it)
        self._grad_norm: float | None = None
        super().__init__(
            params,
            defaults,
            foreach=foreach,
            maximize=maximize,
            fast=fast,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
        )

    def validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        check_range(name, "lr", group["lr"], 0.0)
        beta1, beta2 = check_pair(name, "betas", group["betas"], "(beta1, beta2)")
        check_range(name, "betas[0]", beta1, 0.0, 1.0, high_open=True)
        check_range(name, "betas[1]", beta2, 0.0, 1.0, low_open=True)
        check_range(name, "epsilon", group["epsilon"], 0.0, low_open=True)
        check_range(name, "momentum", group["momentum"], 0.0, 1.0, high_open=True)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_int(name, "max_preconditioner_dim", group["max_preconditioner_dim"], 1)
        frequency = group["precondition_frequency"]
        check_int(name, "precondition_frequency", frequency, 1)
        start = group["start_preconditioning_step"]
        check_int(name, "start_preconditioning_step", start, -1)
        if start != -1 and start < frequency:
            raise ValueError(
                f"{name}: invalid start_preconditioning_step={start!r}: expected -1 (precondition_frequency) or "
                f"an integer >= precondition_frequency={frequency!r}"
            )
        override = group["exponent_override"]
        if isinstance(override, (list, tuple)):
            for i, root in enumerate(override):
                check_int(name, f"exponent_override[{i}]", root, 0)
        else:
            check_int(name, "exponent_override", override, 0)
        check_range(name, "exponent_multiplier", group["exponent_multiplier"], 0.0, low_open=True)
        if not (group["grafting_type"] is None or isinstance(group["grafting_type"], str)):
            raise HyperparameterTypeError(
                f"{name}: invalid grafting_type={group['grafting_type']!r}: expected one of "
                f"{', '.join(map(repr, GRAFTING_TYPES))}"
            )
        check_choice(name, "grafting_type", group["grafting_type"], GRAFTING_TYPES)
        check_range(name, "grafting_epsilon", group["grafting_epsilon"], 0.0, low_open=True)
        check_range(name, "grafting_beta2", group["grafting_beta2"], 0.0, 1.0, low_open=True)
        check_dtype(name, "preconditioner_dtype", group["preconditioner_dtype"])
        if group["max_grad_norm"] is not None:
            check_range(name, "max_grad_norm", group["max_grad_norm"], 0.0, low_open=True)
        check_choice(name, "root_inv_method", group["root_inv_method"], ROOT_INV_METHODS)
        check_int(name, "newton_max_iterations", group["newton_max_iterations"], 1)
        check_range(name, "newton_tolerance", group["newton_tolerance"], 0.0)
        if group["root_inv_method"] == "newton" and group["exponent_multiplier"] != 1:
            raise ValueError(
                f"{name}: invalid exponent_multiplier={group['exponent_multiplier']!r} with root_inv_method='newton': "
                "the coupled Newton iteration takes only exponent_multiplier=1 (as the reference)"
            )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        state: State = {}
        dtype = check_dtype(type(self).__name__, "preconditioner_dtype", group["preconditioner_dtype"])
        like = lambda dtype: torch.zeros_like(param, dtype=dtype, memory_format=torch.contiguous_format)
        if group["momentum"] != 0:
            state["momentum"] = like(param.dtype)
        if group["betas"][0] != 0:
            state["filtered_grad"] = like(dtype)
        if group["grafting_type"] in _ACCUMULATING:
            state["grafting_preconditioner"] = like(param.dtype)
        if param.numel():
            blocks = block_shapes(tuple(param.shape), group["max_preconditioner_dim"], group["use_merge_dims"])
            for i, block in enumerate(blocks):
                for k, d in enumerate(block):
                    for key in (f"block_{i}.factor_matrix_{k}", f"block_{i}.inv_factor_matrix_{k}"):
                        state[key] = torch.zeros(d, d, dtype=dtype, device=param.device)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss.

        Before anything changes, each parameter's state is checked against its group's options, which
        may have changed since its first step (see the class docstring).
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        live = [(group, p) for group in self.param_groups for p in group["params"] if p.grad is not None]
        for group, p in live:
            if self.state.get(p):  # get: indexing the defaultdict would add an empty state
                self._continue_state(p, group)
        clips = any(group["max_grad_norm"] is not None for group in self.param_groups)
        self._grad_norm = _global_norm([p.grad for _, p in live]) if clips else None
        super().step()
        return loss

    def _continue_state(self, param: Tensor, group: dict[str, Any]) -> None:
        """Make the state of a parameter that has stepped fit its group's options, or raise a ValueError.

        Distributed Shampoo creates its state for the options it is built with; of those an option change
        may call for, it reads only ``momentum`` at every step, so only the momentum buffer can start later:
        at zero, as in the reference run that was built with momentum and had ``momentum=0`` until then.
        """
        name, state = type(self).__name__, self.state[param]
        beta1 = group["betas"][0]
        if beta1 != 0 and "filtered_grad" not in state:
            raise ValueError(
                f"{name}: invalid betas[0]={beta1!r} after a first step with betas[0]=0: the filtered gradient and "
                "its bias correction start at the first step (the reference fixes betas[0] at construction), so it "
                "cannot change from 0 after the first step"
            )
        grafting = group["grafting_type"]
        if grafting in _ACCUMULATING and "grafting_preconditioner" not in state:
            raise ValueError(
                f"{name}: invalid grafting_type={grafting!r} after a first step with grafting_type None or 'sgd': "
                "its accumulator of squared gradients starts at the first step (the reference fixes grafting_type "
                "at construction), so it cannot change to an accumulating type after the first step"
            )
        if param.numel():
            size, merge = group["max_preconditioner_dim"], group["use_merge_dims"]
            if _state_blocks(state) != block_shapes(tuple(param.shape), size, merge):
                raise ValueError(
                    f"{name}: invalid max_preconditioner_dim={size!r} / use_merge_dims={merge!r} after the first "
                    f"step: they cut this {tuple(param.shape)} tensor into other blocks than those whose factor "
                    "matrices its state holds, so they cannot change after the first step"
                )
            dtype = check_dtype(name, "preconditioner_dtype", group["preconditioner_dtype"])
            if state["block_0.factor_matrix_0"].dtype != dtype:
                raise ValueError(
                    f"{name}: invalid preconditioner_dtype={group['preconditioner_dtype']!r} after the first step "
                    f"in {state['block_0.factor_matrix_0'].dtype}: the factor matrices keep their dtype, so it "
                    "cannot change after the first step"
                )
        if group["momentum"] != 0 and "momentum" not in state:
            state["momentum"] = torch.zeros_like(param, memory_format=torch.contiguous_format)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's ``load_state_dict``, the tensors kept in ``preconditioner_dtype`` left in it.

        torch.optim casts every floating-point state to its parameter's dtype; float64 factor matrices
        of float32 parameters would lose their precision.
        """
        super().load_state_dict(state_dict)
        saved_ids = chain.from_iterable(group["params"] for group in state_dict["param_groups"])
        for group in self.param_groups:
            dtype = check_dtype(type(self).__name__, "preconditioner_dtype", group["preconditioner_dtype"])
            for p, i in zip(group["params"], saved_ids):
                for key, value in state_dict["state"].get(i, {}).items():
                    if torch.is_tensor(value) and (key == "filtered_grad" or "factor_matrix" in key):
                        self.state[p][key] = value.to(device=p.device, dtype=dtype, copy=True)

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        names = (
            "lr",
            "epsilon",
            "momentum",
            "weight_decay",
            "max_preconditioner_dim",
            "precondition_frequency",
            "start_preconditioning_step",
            "exponent_override",
            "exponent_multiplier",
            "use_nesterov",
            "use_bias_correction",
            "use_decoupled_weight_decay",
            "grafting_type",
            "grafting_epsilon",
            "grafting_beta2",
            "use_merge_dims",
            "max_grad_norm",
            "root_inv_method",
            "newton_max_iterations",
            "newton_tolerance",
        )
        dtype = check_dtype(type(self).__name__, "preconditioner_dtype", group["preconditioner_dtype"])
        return {k: group[k] for k in names} | {
            "beta1": beta1,
            "beta2": beta2,
            "preconditioner_dtype": dtype,
            "grad_norm": self._grad_norm,
        }


def _global_norm(grads: list[Tensor]) -> float:
    """The norm of all of ``grads`` together, in float64 (a sparse one is left to the step's error)."""
    norms = [torch.linalg.vector_norm(g, dtype=torch.float64) for g in grads if not g.is_sparse]
    return torch.linalg.vector_norm(torch.stack(norms)).item() if norms else 0.0


def _state_blocks(state: State) -> tuple[tuple[int, ...], ...]:
    """The shapes of the blocks whose factor matrices ``state`` holds."""
    blocks: list[tuple[int, ...]] = []
    while f"block_{len(blocks)}.factor_matrix_0" in state:
        dims: list[int] = []
        while (key := f"block_{len(blocks)}.factor_matrix_{len(dims)}") in state:
            dims.append(state[key].size(0))
        blocks.append(tuple(dims))
    return tuple(blocks)
