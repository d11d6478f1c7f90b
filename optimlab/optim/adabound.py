r"""AdaBound and AMSBound (Luo, Xiong, Liu & Sun, ICLR 2019).

Reference: the authors' package ``adabound`` 0.0.5 (``adabound.AdaBound``: names, defaults, state
layout, results).  Adam whose per-coordinate step size is clipped into a band that closes, as
:math:`t` grows, around a final SGD learning rate :math:`\alpha^*`:

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
    \hat v_t &= \max(\hat v_{t-1}, v_t) \quad\text{(AMSBound; else } \hat v_t = v_t) \\
    \eta_l(t) &= \alpha^* \Bigl(1 - \frac{1}{\gamma t + 1}\Bigr), \qquad
    \eta_u(t) = \alpha^* \Bigl(1 + \frac{1}{\gamma t}\Bigr) \\
    \theta_t &= \theta_{t-1} - \operatorname{clip}\Bigl(
        \frac{\alpha \sqrt{1-\beta_2^t}/(1-\beta_1^t)}{\sqrt{\hat v_t} + \epsilon},\;
        \eta_l(t),\; \eta_u(t)\Bigr)\, m_t

These are the reference code's equations, which the paper's experiments ran; the paper's
Algorithm 2 differs (no bias correction, no ε, the clipped rate divided by :math:`\sqrt t`, and
bounds written with :math:`1-\beta_2` where the code has ``gamma``).  As in the reference, ε is
added to :math:`\sqrt{\hat v_t}` before the bias correction of :math:`v_t` is folded into the
step size, and :math:`\alpha^* =` ``final_lr * lr / base_lr``: an lr scheduler that scales ``lr``
scales the bounds by the same factor.

``base_lr`` (the group's lr when it was added) lives in the param group, so ``state_dict`` saves it
and ``load_state_dict`` restores it, into any freshly built optimizer.  The reference keeps it in an
attribute (``base_lrs``, set in the constructor) that no checkpoint carries: resuming into an
optimizer built with another lr (the scheduled lr reached at the checkpoint, say) silently moves
the bounds, and a group added with ``add_param_group`` is never stepped at all (``zip`` with the
shorter ``base_lrs`` drops it).  A reference checkpoint, which has no ``base_lr``, keeps the
``base_lr`` of the optimizer it is loaded into, as the reference would.

``gamma = 0`` (allowed by the reference, whose first step then divides by zero) gives the bounds
:math:`[0, \infty)`: no clipping.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State, _value
from ._math import is_zero
from ._validate import check_betas, check_range


def adabound(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    final_lr: Any,
    beta1: Any,
    beta2: Any,
    gamma: Any,
    eps: Any,
    weight_decay: Any = 0.0,
    amsbound: bool = False,
) -> tuple[Tensor, State]:
    """One AdaBound step (module docstring); ``final_lr`` is the already lr-scaled :math:`\\alpha^*`."""
    if not is_zero(weight_decay):
        grad = grad + weight_decay * param
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    new_state = {"exp_avg": m, "exp_avg_sq": v}
    if amsbound:
        v = state["max_exp_avg_sq"].maximum(v)
        new_state["max_exp_avg_sq"] = v
    denom = v.sqrt() + eps
    step_size = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
    lower = final_lr * (1 - 1 / (gamma * step + 1))
    upper = final_lr * (1 + _reciprocal(gamma * step))
    return param - (step_size / denom).clamp(lower, upper) * m, new_state


def _reciprocal(x: Any) -> Any:
    # 1/0 is inf for tensors already; Python numbers would raise instead.
    return math.inf if is_zero(x) else 1 / x


class AdaBound(RuleOptimizer):
    """AdaBound; ``amsbound=True`` gives AMSBound.

    Same constructor, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``) as ``adabound.AdaBound``.  Each param group also holds ``base_lr``, its lr
    when it was added (or the value given in the group's dict); the bounds follow
    ``final_lr * lr / base_lr``.  See :func:`adabound` and the module docstring.
    """

    rule = staticmethod(adabound)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        final_lr: float = 0.1,
        gamma: float = 1e-3,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsbound: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, final_lr=final_lr, gamma=gamma, eps=eps, weight_decay=weight_decay, amsbound=amsbound
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

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if "base_lr" not in param_group:
            # the lr's value now: a tensor lr is the same object a scheduler writes into
            base_lr = _value(param_group.get("lr", self.defaults["lr"]))
            param_group = dict(param_group, base_lr=base_lr)
        super().add_param_group(param_group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        # A checkpoint of the reference has no base_lr: keep ours, which is what the reference
        # itself would use after loading (the lr this optimizer was built with).
        base_lrs = [group["base_lr"] for group in self.param_groups]
        super().load_state_dict(state_dict)
        for group, base_lr in zip(self.param_groups, base_lrs):
            group.setdefault("base_lr", base_lr)

    def validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        # lr = 0 would make the base of the bounds' scaling zero (the reference divides by it).
        check_range(name, "lr", group["lr"], 0.0, low_open=True)
        # a group being built (the constructor's arguments) has no base_lr yet: it will be lr
        check_range(name, "base_lr", group.get("base_lr", group["lr"]), 0.0, low_open=True)
        check_betas(name, group)
        check_range(name, "final_lr", group["final_lr"], 0.0)
        check_range(name, "gamma", group["gamma"], 0.0, 1.0, high_open=True)
        check_range(name, "eps", group["eps"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsbound"] else [])
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        beta1, beta2 = group["betas"]
        return dict(
            lr=group["lr"],
            # the reference's order of operations, so that the bounds agree to the last bit
            final_lr=group["final_lr"] * group["lr"] / group["base_lr"],
            beta1=beta1,
            beta2=beta2,
            gamma=group["gamma"],
            eps=group["eps"],
            weight_decay=group["weight_decay"],
            amsbound=group["amsbound"],
        )
