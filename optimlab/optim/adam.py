r"""Adam (Kingma & Ba, 2015), with AMSGrad (Reddi et al., 2018) and AdamW (Loshchilov & Hutter, 2019).

Reference: ``torch.optim.Adam`` / ``torch.optim.AdamW`` (names, defaults, state layout, results).

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1}      && \text{(L2; AdamW decays } \theta \text{ instead)}\\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
    \hat v_t &= \max(\hat v_{t-1}, v_t) \quad\text{(AMSGrad; else } \hat v_t = v_t) \\
    \theta_t &= \theta_{t-1} - \frac{\alpha}{1-\beta_1^t}\,
                \frac{m_t}{\sqrt{\hat v_t}/\sqrt{1-\beta_2^t} + \epsilon}

The references disagree in two places; each is an option whose default follows torch:

* ``eps_inside_sqrt``: torch (and the paper) add ε after the square root; some implementations
  (and the seeds' derivations) use :math:`\sqrt{\hat v_t/(1-\beta_2^t) + \epsilon}`.
* ``amsgrad_corrected_max``: torch (and Reddi et al., who have no bias correction) keep the
  running max of the raw :math:`v_t`; the alternative keeps the max of the bias-corrected
  :math:`v_t/(1-\beta_2^t)`, which is never smaller than the current corrected estimate.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_adam_family


def adam(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    beta2: Any,
    eps: Any,
    weight_decay: Any = 0.0,
    decoupled_weight_decay: bool = False,
    amsgrad: bool = False,
    amsgrad_corrected_max: bool = False,
    eps_inside_sqrt: bool = False,
) -> tuple[Tensor, State]:
    """One Adam step (the module docstring has the equations); returns the new param and state."""
    if not is_zero(weight_decay):
        if decoupled_weight_decay:
            param = param * (1 - lr * weight_decay)
        else:
            grad = grad + weight_decay * param
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    new_state = {"exp_avg": m, "exp_avg_sq": v}
    bias1 = 1 - beta1**step
    bias2 = 1 - beta2**step
    v_hat = v / bias2
    if amsgrad:
        if amsgrad_corrected_max:
            v_hat = state["max_exp_avg_sq"].maximum(v_hat)
            new_state["max_exp_avg_sq"] = v_hat
        else:
            v_max = state["max_exp_avg_sq"].maximum(v)
            new_state["max_exp_avg_sq"] = v_max
            v_hat = v_max / bias2
    denom = (v_hat + eps).sqrt() if eps_inside_sqrt else v_hat.sqrt() + eps
    return param - (lr / bias1) * m / denom, new_state


class Adam(RuleOptimizer):
    """Adam; ``amsgrad=True`` gives AMSGrad, ``decoupled_weight_decay=True`` gives AdamW.

    Same constructor, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``,
    ``max_exp_avg_sq``) as ``torch.optim.Adam``, so a torch state_dict loads as it is.
    See :func:`adam` and the module docstring for the equations and the two extra options.
    """

    rule = staticmethod(adam)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        decoupled_weight_decay: bool = False,
        amsgrad_corrected_max: bool = False,
        eps_inside_sqrt: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            decoupled_weight_decay=decoupled_weight_decay,
            amsgrad_corrected_max=amsgrad_corrected_max,
            eps_inside_sqrt=eps_inside_sqrt,
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
        check_adam_family(name, group)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        keys = ["exp_avg", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}


class AdamW(Adam):
    """AdamW: Adam with decoupled weight decay (``torch.optim.AdamW``'s defaults, ``weight_decay=1e-2``)."""

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 1e-2,
        amsgrad: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        amsgrad_corrected_max: bool = False,
        eps_inside_sqrt: bool = False,
    ) -> None:
        super().__init__(
            params,
            lr,
            betas,
            eps,
            weight_decay,
            amsgrad,
            foreach=foreach,
            maximize=maximize,
            fast=fast,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
            decoupled_weight_decay=True,
            amsgrad_corrected_max=amsgrad_corrected_max,
            eps_inside_sqrt=eps_inside_sqrt,
        )
