r"""Adafactor (Shazeer & Stern, 2018), as fairseq implements it.

Reference: ``fairseq/optim/adafactor.py`` (names, defaults, state layout, results; the same code is
``transformers.optimization.Adafactor``).  For a parameter :math:`X` with gradient :math:`G` at
step :math:`t`:

.. math::

    \rho_t &= \min(10^{-2}, 1/\sqrt t) \quad\text{(warmup\_init: } \min(10^{-6} t, 1/\sqrt t);
              \text{ relative\_step=False: } \rho_t = \text{lr}) \\
    \alpha_t &= \max(\epsilon_2, \operatorname{RMS}(X_{t-1}))\, \rho_t
              \quad\text{(scale\_parameter=False: } \alpha_t = \rho_t) \\
    \hat\beta_{2t} &= 1 - t^{c} \qquad (c = \text{decay\_rate}) \\
    R_t &= \hat\beta_{2t} R_{t-1} + (1-\hat\beta_{2t})\, \operatorname{mean}_{-1}(G^2 + \epsilon_1) \\
    C_t &= \hat\beta_{2t} C_{t-1} + (1-\hat\beta_{2t})\, \operatorname{mean}_{-2}(G^2 + \epsilon_1) \\
    U_t &= G \,/\, \sqrt{R_t C_t / \operatorname{mean}_{-1}(R_t)}
           \qquad\text{(tensors of 0 or 1 dims: } U_t = G/\sqrt{V_t},\;
           V_t = \hat\beta_{2t} V_{t-1} + (1-\hat\beta_{2t})(G^2+\epsilon_1)) \\
    \hat U_t &= \alpha_t\, U_t / \max(1, \operatorname{RMS}(U_t)/d) \qquad (d = \text{clip\_threshold}) \\
    M_t &= \beta_1 M_{t-1} + (1-\beta_1)\,\hat U_t
           \quad\text{(only when beta1 is not None; then } \hat U_t \leftarrow M_t) \\
    X_t &= (1 - \lambda\alpha_t)\, X_{t-1} - \hat U_t

:math:`R_t` and :math:`C_t` are running means over the last and the next-to-last dimension (the
leading dimensions of a 3-D or larger tensor index independent matrices), so
:math:`R_t C_t/\operatorname{mean}(R_t)` is the paper's :math:`R_t C_t / 1^\top R_t` with row and
column *sums*.  :math:`\operatorname{RMS}(x) = \lVert x\rVert_2/\sqrt{n}`.  The weight decay is
decoupled and scaled by :math:`\alpha_t` (fairseq's docstring calls it an L2 penalty).

Where this class departs from fairseq:

* fairseq writes :math:`\alpha_t` into ``group['lr']``, so with ``relative_step=False`` and
  ``scale_parameter=True`` the learning rate compounds over parameters and steps; transformers
  (and this class) keep it local.
* bfloat16/float16 parameters: the step is computed in float32 as in fairseq, but the state is
  stored in the parameter's dtype (fairseq keeps it in float32), like every optimizer of this
  library.  Computing in float32 matters: in float16, :math:`G^2` of a small gradient and
  :math:`\epsilon_1 = 10^{-30}` round to 0 and :math:`1/\sqrt{V}` would be infinite; here the
  freshly averaged :math:`V_t` is used in float32 before it is stored.
* ``RMS`` is not kept in the state: it is recomputed from the parameter at every step.

``variant="torch"`` is ``torch.optim.Adafactor`` (torch 2.13), another reading of the paper; it
differs from fairseq in three places, and nowhere else:

* the relative step is capped by ``lr``: :math:`\rho_t = \min(\text{lr}, 1/\sqrt t)` (torch's
  default lr is :math:`10^{-2}`, fairseq's fixed cap), so ``lr`` is given with ``relative_step=True``;
* :math:`\epsilon_1` is a floor, not a term: :math:`R_t, C_t, V_t` average :math:`G^2` itself,
  :math:`U_t = G / \sqrt{\max(\epsilon_1^2,\; R_t C_t / \max(\epsilon_1, \operatorname{mean}(R_t)))}`
  (vectors: :math:`G/\sqrt{\max(\epsilon_1^2, V_t)}`), and ``eps=(None, eps2)`` (torch's default)
  takes the machine epsilon of the parameter's dtype;
* the weight decay is scaled by ``lr``, not by :math:`\alpha_t`:
  :math:`X_t = (1 - \text{lr}\,\lambda) X_{t-1} - \hat U_t`.

torch has no ``beta1``, ``scale_parameter=False``, ``relative_step=False`` or ``warmup_init``; with
``variant="torch"`` the first three keep their meaning above and ``warmup_init`` is refused.  The
state keeps fairseq's names and shapes (torch's are ``row_var``, ``col_var``, ``variance`` with
kept dimensions), and 16-bit parameters are computed in float32 (torch computes in their dtype).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero, where
from ._validate import check_choice, check_pair, check_range

_LOW_PRECISION = (torch.float16, torch.bfloat16)
#: whose Adafactor the step is: fairseq's (the default) or torch.optim.Adafactor's (module docstring)
VARIANTS = ("fairseq", "torch")


def adafactor(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    eps1: Any,
    eps2: Any,
    clip_threshold: Any,
    decay_rate: Any,
    beta1: Any,
    weight_decay: Any = 0.0,
    scale_parameter: bool = True,
    relative_step: bool = True,
    warmup_init: bool = False,
    variant: str = "fairseq",
) -> tuple[Tensor, State]:
    """One Adafactor step (module docstring); ``beta1=None`` keeps no first moment.

    Reduces over the dimensions of ``param`` itself, so it runs per tensor and under ``torch.vmap``
    but not on TensorLists.  ``lr`` is ignored when ``relative_step`` is true, except with
    ``variant="torch"``, where it caps the relative step.
    """
    dtype = param.dtype
    torch_form = variant == "torch"
    if torch_form and eps1 is None:
        eps1 = torch.finfo(dtype).eps
    if dtype in _LOW_PRECISION:
        param, grad = param.float(), grad.float()
        state = {k: v.float() for k, v in state.items()}
    if relative_step:
        rho = _min(lr if torch_form else 1e-6 * step if warmup_init else 1e-2, 1 / step**0.5)
    else:
        rho = lr
    alpha = _max(eps2, _rms(param)) * rho if scale_parameter else rho
    beta2 = 1 - step**decay_rate
    sq = grad * grad if torch_form else grad * grad + eps1
    if param.dim() >= 2:
        row = beta2 * state["exp_avg_sq_row"] + (1 - beta2) * sq.mean(dim=-1)
        col = beta2 * state["exp_avg_sq_col"] + (1 - beta2) * sq.mean(dim=-2)
        new_state = {"exp_avg_sq_row": row, "exp_avg_sq_col": col}
        if torch_form:
            v = (row / row.mean(dim=-1, keepdim=True).clamp(min=eps1)).unsqueeze(-1) * col.unsqueeze(-2)
            update = v.clamp(min=eps1 * eps1).rsqrt() * grad
        else:
            r = (row / row.mean(dim=-1, keepdim=True)).rsqrt().unsqueeze(-1)
            update = r * col.unsqueeze(-2).rsqrt() * grad
    else:
        v = beta2 * state["exp_avg_sq"] + (1 - beta2) * sq
        new_state = {"exp_avg_sq": v}
        update = (v.clamp(min=eps1 * eps1) if torch_form else v).rsqrt() * grad
    update = update / (_rms(update) / clip_threshold).clamp(min=1.0) * alpha
    if beta1 is not None:
        update = beta1 * state["exp_avg"] + (1 - beta1) * update
        new_state["exp_avg"] = update
    if not is_zero(weight_decay):
        param = param * (1 - lr * weight_decay) if torch_form else param - (weight_decay * alpha) * param
    new_state = {k: v.to(dtype) for k, v in new_state.items()}
    return (param - update).to(dtype), new_state


def _rms(x: Tensor) -> Tensor:
    # the definition, sqrt(mean(x^2)); fairseq's norm(x) / sqrt(n) is the same number up to
    # rounding, but bakes the tensor's size into a traced graph
    return (x * x).mean().sqrt()


def _min(a: Any, b: Any) -> Any:
    # Python's min(a, b): a unless b < a; a torch.where once either side is a tensor
    return where(b < a, b, a)


def _max(a: Any, b: Any) -> Any:
    return where(b > a, b, a)


class Adafactor(RuleOptimizer):
    """Adafactor with fairseq's constructor, defaults and state.

    State: ``step``, ``exp_avg_sq_row`` and ``exp_avg_sq_col`` for tensors of 2 or more dims (their
    shapes drop the last and the next-to-last dimension), ``exp_avg_sq`` for others, and
    ``exp_avg`` when ``beta1`` is given.  ``lr`` must be given exactly when ``relative_step`` is
    false, or with ``variant="torch"`` (``torch.optim.Adafactor``: ``Adafactor(params, lr=1e-2,
    eps=(None, 1e-3), variant="torch")`` is its default configuration).  See :func:`adafactor` and
    the module docstring.
    """

    rule = staticmethod(adafactor)
    elementwise = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float | None = None,
        eps: tuple[float, float] = (1e-30, 1e-3),
        clip_threshold: float = 1.0,
        decay_rate: float = -0.8,
        beta1: float | None = None,
        weight_decay: float = 0.0,
        scale_parameter: bool = True,
        relative_step: bool = True,
        warmup_init: bool = False,
        *,
        variant: str = "fairseq",
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            eps=eps,
            clip_threshold=clip_threshold,
            decay_rate=decay_rate,
            beta1=beta1,
            weight_decay=weight_decay,
            scale_parameter=scale_parameter,
            relative_step=relative_step,
            warmup_init=warmup_init,
            variant=variant,
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
        lr, relative_step = group["lr"], group["relative_step"]
        check_choice(name, "variant", group["variant"], VARIANTS)
        torch_form = group["variant"] == "torch"
        if relative_step and lr is not None and not torch_form:
            raise ValueError(
                f"{name}: invalid lr={lr!r} with relative_step=True: the step size is relative; "
                "pass lr=None, or relative_step=False (or variant='torch', where lr caps the relative step)"
            )
        if not relative_step and lr is None:
            raise ValueError(f"{name}: invalid lr=None with relative_step=False: give lr >= 0, or relative_step=True")
        if torch_form and lr is None:
            raise ValueError(
                f"{name}: invalid lr=None with variant='torch': lr caps the relative step there; give lr >= 0 "
                "(torch.optim.Adafactor's default is 0.01)"
            )
        if group["warmup_init"] and not relative_step:
            raise ValueError(f"{name}: invalid warmup_init=True with relative_step=False: it needs relative_step=True")
        if group["warmup_init"] and torch_form:
            raise ValueError(f"{name}: invalid warmup_init=True with variant='torch': torch has no warm-up")
        if lr is not None:
            check_range(name, "lr", lr, 0.0)
        eps1, eps2 = check_pair(name, "eps", group["eps"], "(eps1, eps2)")
        if not (eps1 is None and torch_form):  # torch's None: the machine epsilon of the parameter's dtype
            check_range(name, "eps[0]", eps1, 0.0)
        check_range(name, "eps[1]", eps2, 0.0)
        check_range(name, "clip_threshold", group["clip_threshold"], 0.0, low_open=True)
        check_range(name, "decay_rate", group["decay_rate"], None, 0.0)
        if group["beta1"] is not None:
            check_range(name, "beta1", group["beta1"], 0.0, 1.0, high_open=True)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        shape = param.shape
        if len(shape) >= 2:
            state = {
                "exp_avg_sq_row": param.new_zeros(shape[:-1]),
                "exp_avg_sq_col": param.new_zeros(shape[:-2] + shape[-1:]),
            }
        else:
            state = {"exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format)}
        if group["beta1"] is not None:
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        eps1, eps2 = group["eps"]
        return dict(
            lr=group["lr"],
            eps1=eps1,
            eps2=eps2,
            clip_threshold=group["clip_threshold"],
            decay_rate=group["decay_rate"],
            beta1=group["beta1"],
            weight_decay=group["weight_decay"],
            scale_parameter=group["scale_parameter"],
            relative_step=group["relative_step"],
            warmup_init=group["warmup_init"],
            variant=group["variant"],
        )
