r"""Muon: MomentUm Orthogonalized by Newton–Schulz (Jordan et al., 2024), with AdamW for the rest.

Reference: Keller Jordan's ``muon-optimizer`` 0.1.0 on PyPI (module ``muon``: ``SingleDeviceMuon``
and ``SingleDeviceMuonWithAuxAdam``; names, defaults, state layout, results), and
``torch.optim.Muon`` (torch 2.13), whose extra options this class takes under torch's names.
For a matrix parameter :math:`W` (rows :math:`A`, columns :math:`B`) with gradient :math:`G_t`:

.. math::

    M_t &= \mu M_{t-1} + (1-\mu)\, G_t \\
    \tilde M_t &= (1-\mu)\, G_t + \mu M_t \quad\text{(nesterov; else } \tilde M_t = M_t) \\
    O_t &= \operatorname{NS}^{(a,b,c)}_k(\tilde M_t)
           \quad\text{(quintic Newton–Schulz, :func:`~optimlab.optim._matrix.newton_schulz`)} \\
    W_t &= (1 - \eta\lambda)\, W_{t-1} - \eta\, s(A, B)\, O_t,
    \qquad s = \sqrt{\max(1, A/B)} \quad\text{(adjust\_lr\_fn="match\_rms\_adamw": }
    s = 0.2\sqrt{\max(A, B)})

:math:`O_t \approx UV^\top` for :math:`\tilde M_t = U\Sigma V^\top` (its singular values end in about
[0.7, 1.2], by design).  :math:`s` is Keller Jordan's scale, which keeps the update's RMS alike
for tall and wide matrices; ``"match_rms_adamw"`` is Moonshot's (Liu et al. 2025, "Muon is Scalable
for LLM Training"; timm's default), which gives the update AdamW's RMS so that AdamW's lr and
weight decay carry over.  The weight decay is decoupled and uses the unscaled :math:`\eta`, in both
references.  A 4-D (convolution) weight is orthogonalised as the matrix ``W.flatten(1)``, as in the
official code; a 3-D one as a batch of matrices (the official code's batched Newton–Schulz).

**Which tensors Muon updates.**  Muon is for the hidden layers' weight matrices; its authors train
embeddings, the output layer, gains and biases with AdamW.  As the official
``SingleDeviceMuonWithAuxAdam``, each param group has a ``use_muon`` entry: ``True`` (Muon; every
tensor must have 2 or more dimensions), ``False`` (AdamW for every tensor of the group), or
``None``, the default, which this class adds: Muon for tensors of 2 or more dimensions and AdamW
for the others, so that ``Muon(model.parameters())`` runs.  Put the embeddings and the output layer
in a group with ``use_muon=False`` to follow the authors' recipe, or pass ``exterior_adamw=True``,
which does that for a model's parameters in ``model.parameters()`` order: the first and the last
tensor of 2 or more dimensions (its input layer, an embedding or the first convolution, and its
output head; the official README: "for a ConvNet, Muon should optimize all the convolutional filters
except the first one") move from their ``use_muon=None`` groups to AdamW groups of their own,
appended after the others.  The AdamW is the official one
(:func:`~optimlab.optim.adam.adam` with decoupled decay), with its hyperparameters in
``adamw_lr``, ``adamw_betas``, ``adamw_eps``, ``adamw_wd`` (the names of ``pytorch_optimizer``'s
Muon; the official class reads them from ``lr``, ``betas``, ``eps``, ``weight_decay`` of its
``use_muon=False`` groups, with these defaults).

The references disagree in these places; each is an option whose default is the official code's:

* ``adjust_lr_fn``: ``None`` / ``"original"`` (Keller Jordan's :math:`s`) or ``"match_rms_adamw"``
  (Moonshot's), as in ``torch.optim.Muon``.  For a 4-D weight the official code takes :math:`A/B`
  from the gradient's last two dimensions, i.e. the kernel's height over its width (1 for square
  kernels), not from the flattened matrix; this class does the same for ``"original"``.
  ``"match_rms_adamw"`` (for which no reference takes a 4-D weight) uses the flattened matrix, as
  ``pytorch_optimizer`` does for both.
* ``clamp_norm``: the official code divides by :math:`\lVert\tilde M_t\rVert_F + \epsilon`,
  ``torch.optim.Muon`` by :math:`\max(\lVert\tilde M_t\rVert_F, \epsilon)`.
* ``ns_dtype`` (a torch.dtype, its name such as ``"bfloat16"``, or None): both references run
  Newton–Schulz in bfloat16 (fast on GPUs; 3 significant digits);
  ``None`` runs it in the parameter's dtype.  The float64 parity tests use ``None`` with the
  references' bfloat16 cast made a no-op.  The iteration is written as ``torch.optim.Muon`` writes
  it (each product and its sum in one ``addmm``; the official code scales and adds separately,
  which costs as much again in bfloat16 on the CPU), so in bfloat16 the two references round
  differently and this class rounds as torch; both are as close to the float64 iteration.
* ``nesterov``, ``ns_coefficients``, ``ns_steps``, ``eps``: ``torch.optim.Muon``'s options; the
  official code fixes them at these defaults.
* defaults: ``lr=0.02``, ``weight_decay=0`` are the official code's; ``torch.optim.Muon`` has
  ``lr=1e-3``, ``weight_decay=0.1``.

Where this class departs from the references:

* the official step overwrites ``p.grad`` with the Nesterov mix (``grad.lerp_``); this class, as
  ``torch.optim.Muon``, leaves ``p.grad`` as it was.
* ``torch.optim.Muon`` refuses tensors that are not 2-D; the official ``SingleDeviceMuon`` fails on
  tensors of fewer than 2 dimensions with an ``AssertionError``.
* ``muon-optimizer`` 0.1.0 adds the flattened update of a 4-D weight to the 4-D weight and fails;
  its repository's later code reshapes it first, as this class does (the tests run 0.1.0's update
  with that reshape).  That later code also steps tensors without a gradient as if it were zero;
  here, as in torch.optim, they are skipped.
* the state also holds ``step`` (every optimizer of this library counts its steps); the official
  AdamW keeps it as a Python int, and its Muon tensors have none (an official checkpoint loads).
* an lr scheduler scales ``lr`` only: the AdamW tensors of a ``use_muon=None`` or ``False`` group
  keep ``adamw_lr`` (the official ``use_muon=False`` groups keep AdamW's lr in ``lr``, which a
  scheduler scales).
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._matrix import NS_COEFFICIENTS, newton_schulz
from ._validate import (
    check_betas,
    check_choice,
    check_dtype,
    check_flag,
    check_int,
    check_range,
    check_tuple,
    number,
)
from .adam import adam

#: the lr scalings of ``adjust_lr_fn`` (``None`` is ``"original"``, as in torch.optim.Muon)
ADJUST_LR_FNS = (None, "original", "match_rms_adamw")


def muon(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    momentum: Any,
    weight_decay: Any = 0.0,
    nesterov: bool = True,
    ns_coefficients: tuple[Any, Any, Any] = NS_COEFFICIENTS,
    ns_steps: int = 5,
    eps: Any = 1e-7,
    adjust_lr_fn: str | None = None,
    ns_dtype: torch.dtype | None = torch.bfloat16,
    clamp_norm: bool = False,
) -> tuple[Tensor, State]:
    """One Muon step of a tensor of 2 or more dimensions (the module docstring has the equations)."""
    buf = state["momentum_buffer"].lerp(grad, 1 - momentum)
    update = grad.lerp(buf, momentum) if nesterov else buf
    matrix = update.flatten(1) if update.dim() == 4 else update
    ortho = newton_schulz(matrix, ns_coefficients, ns_steps, eps, dtype=ns_dtype, clamp_norm=clamp_norm)
    if not is_zero(weight_decay):
        param = param * (1 - lr * weight_decay)
    # the scale joins the lr, as in torch.optim.Muon (the official code scales the bfloat16 update);
    # one add with alpha, as both, reads the update in its dtype: no converted copy, no scaled one
    scaled_lr = lr * _lr_scale(adjust_lr_fn, grad.shape, matrix.shape)
    stepped = torch.add(param, ortho.reshape(param.shape), alpha=-scaled_lr)
    return stepped.to(param.dtype), {"momentum_buffer": buf}  # a wider ns_dtype promotes the sum


def _lr_scale(adjust_lr_fn: str | None, shape: torch.Size, matrix: torch.Size) -> float:
    if adjust_lr_fn == "match_rms_adamw":
        return 0.2 * math.sqrt(max(matrix[-2], matrix[-1]))
    rows, cols = shape[-2], shape[-1]
    return max(1, rows / cols) ** 0.5 if cols else 1.0  # an empty matrix has nothing to scale


def muon_with_adamw(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    use_muon: bool | None,
    adamw_lr: Any,
    adamw_beta1: Any,
    adamw_beta2: Any,
    adamw_eps: Any,
    adamw_wd: Any,
    **muon_options: Any,
) -> tuple[Tensor, State]:
    """Muon for a tensor that :func:`uses_muon`, the official auxiliary AdamW for the others."""
    if uses_muon(param, use_muon):
        return muon(param, grad, state, step, **muon_options)
    return adam(
        param,
        grad,
        state,
        step,
        lr=adamw_lr,
        beta1=adamw_beta1,
        beta2=adamw_beta2,
        eps=adamw_eps,
        weight_decay=adamw_wd,
        decoupled_weight_decay=True,
    )


def uses_muon(param: Tensor, use_muon: bool | None) -> bool:
    """Whether a tensor of a group with this ``use_muon`` takes Muon's step (else AdamW's)."""
    return param.dim() >= 2 if use_muon is None else use_muon


class Muon(RuleOptimizer):
    """Muon for matrices and AdamW for the rest, as in the module docstring.

    The first four arguments are the official ``SingleDeviceMuon``'s, the next five
    ``torch.optim.Muon``'s, in their orders.  State: ``step`` and ``momentum_buffer`` for Muon's
    tensors (the references' name), ``step``, ``exp_avg`` and ``exp_avg_sq`` for AdamW's.  A param
    group's ``use_muon`` (default ``None``) chooses which tensors take Muon; ``exterior_adamw=True``
    gives a model's input layer and output head to AdamW (module docstring).
    """

    rule = staticmethod(muon_with_adamw)
    elementwise = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.02,
        weight_decay: float = 0.0,
        momentum: float = 0.95,
        nesterov: bool = True,
        ns_coefficients: tuple[float, float, float] = NS_COEFFICIENTS,
        eps: float = 1e-7,
        ns_steps: int = 5,
        adjust_lr_fn: str | None = None,
        *,
        ns_dtype: torch.dtype | None = torch.bfloat16,
        clamp_norm: bool = False,
        adamw_lr: float = 3e-4,
        adamw_betas: tuple[float, float] = (0.9, 0.95),
        adamw_eps: float = 1e-10,
        adamw_wd: float = 0.0,
        exterior_adamw: bool = False,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        check_flag(type(self).__name__, "exterior_adamw", exterior_adamw)
        defaults = dict(
            lr=lr,
            weight_decay=weight_decay,
            momentum=momentum,
            nesterov=nesterov,
            ns_coefficients=ns_coefficients,
            eps=eps,
            ns_steps=ns_steps,
            adjust_lr_fn=adjust_lr_fn,
            ns_dtype=ns_dtype,
            clamp_norm=clamp_norm,
            use_muon=None,
            adamw_lr=adamw_lr,
            adamw_betas=adamw_betas,
            adamw_eps=adamw_eps,
            adamw_wd=adamw_wd,
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
        if exterior_adamw:
            self._exterior_to_adamw()

    def _exterior_to_adamw(self) -> None:
        """The first and the last tensor of 2+ dimensions, where their group leaves the choice to the
        shape (``use_muon=None``), into AdamW groups with their group's other settings."""
        matrices = [(g, p) for g in self.param_groups for p in g["params"] if p.dim() >= 2]
        exterior = {id(p) for g, p in matrices[:1] + matrices[-1:] if g["use_muon"] is None}
        for group in list(self.param_groups):
            moved = [p for p in group["params"] if id(p) in exterior]
            if moved:
                group["params"] = [p for p in group["params"] if id(p) not in exterior]
                settings = {k: v for k, v in group.items() if k != "params"}
                self.add_param_group(settings | {"params": moved, "use_muon": False})

    def validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        check_range(name, "lr", group["lr"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_range(name, "momentum", group["momentum"], 0.0, 1.0, high_open=True)
        _check_coefficients(name, group["ns_coefficients"])
        check_range(name, "eps", group["eps"], 0.0)
        check_int(name, "ns_steps", group["ns_steps"], 0)
        check_choice(name, "adjust_lr_fn", group["adjust_lr_fn"], ADJUST_LR_FNS)
        _ns_dtype(name, group["ns_dtype"])
        check_flag(name, "use_muon", group["use_muon"], none=True)
        check_range(name, "adamw_lr", group["adamw_lr"], 0.0)
        check_betas(name, group, "adamw_betas")
        check_range(name, "adamw_eps", group["adamw_eps"], 0.0)
        check_range(name, "adamw_wd", group["adamw_wd"], 0.0)
        if group["use_muon"]:
            for i, p in enumerate(group.get("params", ())):
                if isinstance(p, Tensor) and p.dim() < 2:
                    raise ValueError(
                        f"{name}: invalid use_muon=True for a tensor of shape {tuple(p.shape)} (entry {i} of its "
                        "param group): Muon orthogonalises matrices, tensors of 2 or more dimensions; use "
                        "use_muon=None (AdamW for the tensors of fewer dimensions) or put it in a group with "
                        "use_muon=False"
                    )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        keys = ["momentum_buffer"] if uses_muon(param, group["use_muon"]) else ["exp_avg", "exp_avg_sq"]
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["adamw_betas"]
        names = ("lr", "weight_decay", "momentum", "nesterov", "ns_coefficients", "eps", "ns_steps", "adjust_lr_fn")
        names += ("ns_dtype", "clamp_norm", "use_muon", "adamw_lr", "adamw_eps", "adamw_wd")
        kwargs = {k: group[k] for k in names} | {"adamw_beta1": beta1, "adamw_beta2": beta2}
        return kwargs | {"ns_dtype": _ns_dtype(type(self).__name__, group["ns_dtype"])}


def _ns_dtype(name: str, value: Any) -> torch.dtype | None:
    """``ns_dtype`` as a torch.dtype (given as one or by its name, ``"bfloat16"``: the form a run's JSON
    configuration keeps), or None."""
    return check_dtype(name, "ns_dtype", value, none="the parameter's dtype")


def _check_coefficients(name: str, value: Any) -> None:
    for i, x in enumerate(check_tuple(name, "ns_coefficients", value, "(a, b, c)", 3)):
        number(name, f"ns_coefficients[{i}]", x)
