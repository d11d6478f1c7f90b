r"""SOAP: ShampoO with Adam in the Preconditioner's eigenbasis (Vyas et al., 2024, "SOAP: Improving
and Stabilizing Shampoo using Adam", arXiv 2409.11321).

Reference: the authors' code (github.com/nikhilvyas/SOAP, ``soap.py``, December 2024: the first
moment kept in the eigenbasis), which is not on PyPI; the tests write it out as plain equations.
Its constructor names, defaults and state layout (``step``, ``exp_avg``, ``exp_avg_sq``, ``GG``,
``Q``) are this class's.  For a matrix parameter :math:`W` with gradient :math:`G_t`
(Algorithm 1 of the paper, with the code's order of operations):

.. math::

    G'_t &= Q_L^\top G_t Q_R \qquad\text{(the gradient in the current eigenbases)} \\
    M_t &= \beta_1 M_{t-1} + (1-\beta_1)\, G'_t, \qquad
    V_t = \beta_2 V_{t-1} + (1-\beta_2)\, G'^{\,2}_t \\
    W_t &= W_{t-1} - \eta\,\frac{\sqrt{1-\beta_2^t}}{1-\beta_1^t}\;
           Q_L\,\frac{M_t}{\sqrt{V_t}+\epsilon}\,Q_R^\top,
    \qquad\text{then}\quad W_t \leftarrow (1-\eta\lambda)\, W_t \\
    L_t &= \beta_s L_{t-1} + (1-\beta_s)\, G_t G_t^\top, \qquad
    R_t = \beta_s R_{t-1} + (1-\beta_s)\, G_t^\top G_t \\
    Q_L &\leftarrow \operatorname{qr}(L_t\, \tilde Q_L), \quad
    Q_R \leftarrow \operatorname{qr}(R_t\, \tilde Q_R) \qquad\text{if } t \bmod f = 0

:math:`\beta_s` is ``shampoo_beta`` (:math:`\beta_2` when negative), :math:`f` the
``precondition_frequency``, :math:`\lambda` the ``weight_decay`` (decoupled, applied after the
step, to the stepped weights).  The very first call only starts the preconditioner: :math:`L_1,
R_1` from that gradient and :math:`Q_L, Q_R` their eigenvectors (``eigh``, by descending
eigenvalue); it changes no weight and does not count as a step (``step`` stays 0), so that a
gradient never rotates itself.  A refresh is one power-iteration step and a QR decomposition
(:func:`~optimlab.optim._matrix.refresh_eigenbasis`): :math:`\tilde Q` is :math:`Q` with its columns
sorted by the estimated eigenvalues :math:`\operatorname{diag}(Q^\top L Q)`, and :math:`V`'s
coordinates are sorted the same way; :math:`M` is carried into the new basis
(:math:`M \leftarrow Q_L'^\top Q_L M Q_R^\top Q_R'`).  ``correct_bias=False`` drops the bias
correction.

Tensors of other ranks take one basis per dimension (``GG`` holds one Gram matrix per dimension,
the tensor contracted with itself over the others); a dimension larger than ``max_precond_dim``,
or of size 0, has none (``[]`` in ``Q``, and in ``GG`` for a large one; a size-0 one has an empty
matrix there, as in the authors' code) and stays in its own coordinates.  Vectors are
preconditioned only with ``precondition_1d=True``; otherwise, as scalars, they take Adam's step.
``merge_dims=True`` first merges adjacent dimensions while their product stays within
``max_precond_dim`` (a 4-D ``channels_last`` weight, NHWC, is seen as NCHW first; ``data_format``
matters only there).  ``normalize_grads=True`` divides the update by its RMS (plus 1e-30).

Where this class departs from the authors' code (same results in exact arithmetic unless said):

* the authors' ``GG`` is made in torch's default dtype: their step fails (``lerp_`` dtype error)
  on float64, bfloat16 and float16 parameters, and with float64 as the default dtype it runs
  ``eigh`` and QR in float32.  Here the state has the parameter's dtype and the decompositions run
  in it (in float32 for 16-bit parameters, as theirs).  The tests' reference is their algorithm in
  the parameter's dtype.
* their first moment is rotated back to the weights' coordinates and into the eigenbasis again at
  every step; here only when the basis changes (two tensor rotations fewer per step).
* ``data_format`` is a param-group entry (theirs is an attribute of the optimizer, outside its
  checkpoint); ``precondition_frequency`` and ``shampoo_beta`` are read from the group at every
  step (theirs are copied into each tensor's state at its first step, so that later changes to the
  group are ignored).  Their checkpoints load (those copies are left unused).
* a non-finite Gram matrix gives a NaN basis, so NaN reaches the weights as in every optimizer of
  this library; their ``eigh`` raises.
* their ``step`` is a Python int; here a float32 tensor, as torch.optim keeps it.

``pytorch_optimizer.SOAP`` (4.1.0) follows the authors' earlier code (first moment kept in the
weights' coordinates, the same results in exact arithmetic) and differs in: QR in float32 for every
dtype (float64 runs are float32-accurate after the first refresh), a step count per param group
(a tensor whose first gradient comes late takes its first step with its own gradient's basis and
the group's bias correction), ``normalize_gradient`` dividing by RMS + ``eps``, and the names
``shampoo_beta=None``, ``max_precondition_dim``, ``normalize_gradient``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, _values
from ._math import is_zero
from ._matrix import eigenbasis, gram, refresh_eigenbasis, rotate
from ._validate import check_adam_family, check_choice, check_int, check_range

#: the layouts a 4-D weight may have (``merge_dims`` reads ``channels_last`` weights as NCHW)
DATA_FORMATS = ("channels_first", "channels_last")

#: a state's preconditioner entries: a matrix per dimension, or ``[]`` for a dimension left alone
Matrices = list[Any]


def soap(
    param: Tensor,
    grad: Tensor,
    state: dict[str, Any],
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    beta2: Any,
    shampoo_beta: Any,
    eps: Any,
    weight_decay: Any,
    precondition_frequency: int,
    max_precond_dim: int,
    merge_dims: bool,
    precondition_1d: bool,
    normalize_grads: bool,
    data_format: str,
    correct_bias: bool,
) -> tuple[Tensor, dict[str, Any]]:
    """One SOAP step of a tensor (the module docstring has the equations).

    ``step`` is :math:`t`, the number of steps including this one; 0 on the first call, which
    only starts the preconditioner (``state["Q"]`` is ``None`` until then).
    """
    beta_s = beta2 if shampoo_beta < 0 else shampoo_beta
    view = _View(param.shape, merge_dims, max_precond_dim, data_format)
    g = view.to(grad)
    gg = _accumulate(state["GG"], g, beta_s)
    if state["Q"] is None:
        return param, {"GG": gg, "Q": [eigenbasis(m) if _present(m) else [] for m in gg]}

    bases = _bases(state["Q"])
    g_rotated = rotate(g, bases)
    exp_avg = view.to(state["exp_avg"]) * beta1 + g_rotated * (1 - beta1)
    exp_avg_sq = view.to(state["exp_avg_sq"]) * beta2 + g_rotated * g_rotated * (1 - beta2)
    update = rotate(exp_avg / (exp_avg_sq.sqrt() + eps), bases, back=True)
    if normalize_grads:
        update = update / (1e-30 + (update * update).mean().sqrt())
    step_size = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step) if correct_bias else lr
    param = param - step_size * view.back(update)
    if not is_zero(weight_decay):
        param = param - lr * weight_decay * param

    q = state["Q"]
    if step % precondition_frequency == 0:
        exp_avg = rotate(exp_avg, bases, back=True)
        q = []
        for dim, (m, basis) in enumerate(zip(gg, bases)):
            if basis is None:
                q.append([])
                continue
            basis, order = refresh_eigenbasis(m, basis)
            exp_avg_sq = exp_avg_sq.index_select(dim, order)
            q.append(basis)
        exp_avg = rotate(exp_avg, _bases(q))
    return param, {"exp_avg": view.back(exp_avg), "exp_avg_sq": view.back(exp_avg_sq), "GG": gg, "Q": q}


class _View:
    """How the preconditioner sees a tensor: with ``merge_dims``, adjacent dimensions merged while
    their product stays within ``max_precond_dim`` (a ``channels_last`` 4-D tensor as NCHW first)."""

    def __init__(self, shape: torch.Size, merge_dims: bool, max_precond_dim: int, data_format: str) -> None:
        self.shape = shape
        self.merge = merge_dims
        self.nhwc = merge_dims and data_format == "channels_last" and len(shape) == 4
        nchw = (shape[0], shape[3], shape[1], shape[2]) if self.nhwc else tuple(shape)
        self.nchw = nchw
        self.merged = merged_shape(nchw, max_precond_dim) if merge_dims else tuple(shape)

    def to(self, x: Tensor) -> Tensor:
        if not self.merge:
            return x
        return (x.permute(0, 3, 1, 2) if self.nhwc else x).reshape(self.merged)

    def back(self, x: Tensor) -> Tensor:
        if not self.merge:
            return x
        return x.reshape(self.nchw).permute(0, 2, 3, 1) if self.nhwc else x.reshape(self.shape)


def merged_shape(shape: tuple[int, ...], max_precond_dim: int) -> tuple[int, ...]:
    """``shape`` with runs of adjacent dimensions merged while their product is at most
    ``max_precond_dim`` (as the authors' ``merge_dims``: a dimension above it stays alone)."""
    merged: list[int] = []
    run = 1
    for size in shape:
        if run * size <= max_precond_dim:
            run *= size
        elif run > 1:
            merged.append(run)
            run = size
        else:
            merged.append(size)
    if run > 1 or not merged:
        merged.append(run)
    return tuple(merged)


def _present(m: Any) -> bool:
    """Whether a ``GG`` or ``Q`` entry is a matrix (``[]`` or a 0 x 0 one: a dimension left alone)."""
    return isinstance(m, Tensor) and m.numel() > 0


def _bases(q: Matrices) -> list[Tensor | None]:
    return [m if _present(m) else None for m in q]


def _accumulate(gg: Matrices, g: Tensor, beta_s: Any) -> Matrices:
    """Each Gram matrix of ``gg`` moved towards the gradient's own: :math:`L \\leftarrow \\beta_s L + (1-\\beta_s) GG^\\top`."""
    return [m.lerp(gram(g, dim), 1 - beta_s) if _present(m) else m for dim, m in enumerate(gg)]


class SOAP(RuleOptimizer):
    """SOAP, as in the module docstring: the authors' constructor names and defaults.

    State per tensor: ``step`` (steps taken; the first call, which only starts the
    preconditioner, does not count), ``exp_avg`` (:math:`M`, in the eigenbasis), ``exp_avg_sq``
    (:math:`V`), ``GG`` (the Gram matrices :math:`L, R, \\dots`, one per dimension, ``[]`` for a
    dimension left alone) and ``Q`` (their eigenbases, ``None`` before the first call).  There is
    no foreach or native path (the rule multiplies and decomposes matrices); ``benchmarks/muon.py --soap``
    times a step against ``pytorch_optimizer.SOAP``'s.
    """

    rule = staticmethod(soap)
    elementwise = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float = -1,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        data_format: str = "channels_first",
        correct_bias: bool = True,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "shampoo_beta": shampoo_beta,
            "eps": eps,
            "weight_decay": weight_decay,
            "precondition_frequency": precondition_frequency,
            "max_precond_dim": max_precond_dim,
            "merge_dims": merge_dims,
            "precondition_1d": precondition_1d,
            "normalize_grads": normalize_grads,
            "data_format": data_format,
            "correct_bias": correct_bias,
        }
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
        check_adam_family(name, group)
        check_range(name, "shampoo_beta", group["shampoo_beta"], None, 1.0, high_open=True)
        check_int(name, "precondition_frequency", group["precondition_frequency"], 1)
        check_int(name, "max_precond_dim", group["max_precond_dim"], 1)
        check_choice(name, "data_format", group["data_format"], DATA_FORMATS)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> dict[str, Any]:
        view = _View(param.shape, group["merge_dims"], group["max_precond_dim"], group["data_format"])
        preconditioned = param.dim() != 1 or group["precondition_1d"]
        gg = [param.new_zeros(n, n) if preconditioned and n <= group["max_precond_dim"] else [] for n in view.merged]
        zeros = [torch.zeros_like(param, memory_format=torch.preserve_format) for _ in range(2)]
        return {"exp_avg": zeros[0], "exp_avg_sq": zeros[1], "GG": gg, "Q": None}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of every parameter with a gradient (the first only starts its preconditioner)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            kwargs = self.rule_kwargs(_values(group))
            for p, (grad, tensors, step) in zip(params, self._prepare(group, params)):
                state = self.state[p]
                if tensors["Q"] is None:  # the first call: no step to count
                    state["step"] -= 1
                    step = 0
                new_p, new_state = soap(p, grad, tensors, step, **kwargs)
                p.copy_(new_p)
                state.update(new_state)
        return loss
