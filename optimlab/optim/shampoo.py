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
(eigendecomposition in float64, eigenvalues shifted to be non-negative, :math:`\epsilon` added
before the root) and kept in the state between recomputations.

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

State: ``step``; ``momentum`` (momentum != 0), ``filtered_grad`` (:math:`\beta_1 \ne 0`) and
``grafting_preconditioner`` (:math:`A`; AdaGrad, RMSprop and Adam grafting) shaped like the
parameter; and per block ``i`` and dimension ``k``: ``block_{i}.factor_matrix_{k}`` (:math:`L`) and
``block_{i}.inv_factor_matrix_{k}`` (:math:`\bar L`), the names of the reference's modules.  Blocks
are numbered as the reference splits them (the last dimension fastest).  Every state tensor has the
parameter's dtype.

Where this class departs from the reference:

* the reference keeps factor matrices in ``preconditioner_dtype`` (float32) whatever the
  parameter's dtype, and takes the eigendecomposition in that dtype (float64 only as a retry); here
  the factors have the parameter's dtype (as every state of this library) and the root is always
  taken in float64.  The float64 parity tests run the reference with float64 factors.
* the reference overwrites ``p.grad`` (weight decay, the filtered gradient); here ``p.grad`` is left
  as it was.
* the reference raises on NaN or infinite factor matrices; here, as everywhere in this library, NaN
  propagates into the parameters (the inverse root of such a matrix is NaN).
* the reference cannot take 0-dim tensors (its dimension merging fails); here they are 1-element
  vectors.  It diagonalises a factor matrix that is still diagonal by its entries instead of by
  ``eigh``; the results agree to rounding.
* the reference's options for distributed training, its ``LargeDimMethod.ADAGRAD``/``DIAGONAL``,
  gradient clipping (``max_grad_norm``), the coupled Newton root and LARS/LAMB and normalised
  grafting are not implemented.

``pytorch_optimizer``'s ``Shampoo`` (4.1.0) is the original Shampoo (Gupta et al. 2018): factors
summed from :math:`\epsilon I`, no blocking or dimension merging, no grafting, no bias correction,
and a momentum that mixes the previous *preconditioned* step into the next raw gradient; with
momentum 0 it equals this class with ``betas=(0, 1)``, ``grafting_type=None``,
``use_merge_dims=False``, ``epsilon`` its ``matrix_eps`` and no dimension above
``max_preconditioner_dim`` (``test_shampoo.py`` checks both facts).  Its ``ScalableShampoo`` is
Google's (Anil et al. 2020) in another parametrisation.

Speed (``benchmarks/muon.py --shampoo``): no foreach or native path; a step costs its outer products
and preconditioning products, plus, every ``precondition_frequency`` steps, one float64 ``eigh`` per
factor matrix, which dominates on the CPU: raise ``precondition_frequency`` to amortise it.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._matrix import matrix_inverse_root
from ._validate import HyperparameterTypeError, check_choice, check_int, check_pair, check_range

#: ``grafting_type`` values: the reference's GraftingType NONE, SGD, ADAGRAD, RMSPROP and ADAM
GRAFTING_TYPES = (None, "sgd", "adagrad", "rmsprop", "adam")
#: the grafting methods that keep an accumulator of squared gradients
_ACCUMULATING = ("adagrad", "rmsprop", "adam")


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
) -> tuple[Tensor, State]:
    """One Shampoo step of a tensor (the module docstring has the equations).

    Not a traceable rule: which steps recompute the inverse roots is a Python decision on ``step``.
    """
    if param.numel() == 0:
        return param, {}
    new: State = {}
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
        buf = beta1 * state["filtered_grad"].reshape(merged) + (1 - beta1) * g
        new["filtered_grad"] = buf.reshape(param.shape)
        filtered = buf / (1 - beta1**step) if use_bias_correction else buf
    grafted = filtered / graft_denominator if grafting_type in _ACCUMULATING else filtered

    bias_correction2 = 1 - beta2**step if use_bias_correction and beta2 < 1 else 1.0
    recompute = step % precondition_frequency == 0 and step >= start
    directions = []
    blocks = zip(*(split_blocks(t, max_preconditioner_dim) for t in (g, filtered, grafted)))
    for i, (block, direction, graft_block) in enumerate(blocks):
        root = _root(exponent_override, block.dim())
        for k in range(block.dim()):
            # the outer product G_(k) G_(k)^T and the average in one call (a pass over the factor saved)
            unfolded = block.movedim(k, 0).reshape(block.size(k), -1)
            factor = state[f"block_{i}.factor_matrix_{k}"]
            factor = torch.addmm(factor, unfolded, unfolded.T, beta=beta2, alpha=1 if beta2 == 1 else 1 - beta2)
            new[f"block_{i}.factor_matrix_{k}"] = factor
            inverse = state[f"block_{i}.inv_factor_matrix_{k}"]
            if recompute:
                inverse = matrix_inverse_root(factor / bias_correction2, root, epsilon, exponent_multiplier)
                new[f"block_{i}.inv_factor_matrix_{k}"] = inverse
            if step >= start:
                # contracting the first dimension each time cycles them back into order
                direction = torch.tensordot(direction, inverse, dims=([0], [0]))
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
        blocks = [torch.cat(blocks[i : i + n], dim=dim) for i in range(0, len(blocks), n)]
    return blocks[0]


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
        )
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

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        state: State = {}
        like = lambda: torch.zeros_like(param, memory_format=torch.contiguous_format)
        if group["momentum"] != 0:
            state["momentum"] = like()
        if group["betas"][0] != 0:
            state["filtered_grad"] = like()
        if group["grafting_type"] in _ACCUMULATING:
            state["grafting_preconditioner"] = like()
        size = group["max_preconditioner_dim"]
        merged = merged_shape(param.shape, size, group["use_merge_dims"])
        if param.numel():
            for i, block in enumerate(split_blocks(torch.empty(merged, device="meta"), size)):
                for k, d in enumerate(block.shape):
                    for key in (f"block_{i}.factor_matrix_{k}", f"block_{i}.inv_factor_matrix_{k}"):
                        state[key] = torch.zeros(d, d, dtype=param.dtype, device=param.device)
        return state

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
        )
        return {k: group[k] for k in names} | {"beta1": beta1, "beta2": beta2}
