r"""NAdam: Adam with Nesterov momentum (Dozat, 2016), and NAdamW (decoupled weight decay,
Loshchilov & Hutter, 2019).

Reference: ``torch.optim.NAdam`` (names, defaults, state layout, results), which follows
Keras's Nadam: the momentum :math:`\mu_t` warms up on a schedule with decay :math:`\psi`
(``momentum_decay``), and the moments use the constant :math:`\beta_1, \beta_2`.

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1}
        && \text{(L2; NAdamW decays } \theta \text{ instead)}\\
    \mu_t &= \beta_1 \bigl(1 - \tfrac12\, 0.96^{\,t\psi}\bigr), \qquad
        \Pi_t = \Pi_{t-1}\,\mu_t, \quad \Pi_0 = 1 \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
    \theta_t &= \theta_{t-1} - \frac{\gamma}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon}
        \left(\frac{1-\mu_t}{1-\Pi_t}\, g_t + \frac{\mu_{t+1}}{1-\Pi_t\,\mu_{t+1}}\, m_t\right)

The product :math:`\Pi_t` is state (``mu_product``, a scalar tensor per parameter, as in
torch), updated and returned by the rule like the moments.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_adam_family, check_range


def nadam(
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
    momentum_decay: Any = 4e-3,
    decoupled_weight_decay: bool = False,
) -> tuple[Tensor, State]:
    """One NAdam step (the module docstring has the equations); returns the new param and state."""
    if not is_zero(weight_decay):
        if decoupled_weight_decay:
            param = param * (1 - lr * weight_decay)
        else:
            grad = grad + weight_decay * param
    mu = beta1 * (1 - 0.5 * 0.96 ** (step * momentum_decay))
    mu_next = beta1 * (1 - 0.5 * 0.96 ** ((step + 1) * momentum_decay))
    mu_product = state["mu_product"] * mu
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    denom = (v / (1 - beta2**step)).sqrt() + eps
    grad_coef = lr * (1 - mu) / (1 - mu_product)
    m_coef = lr * mu_next / (1 - mu_product * mu_next)
    new_param = param - grad_coef * grad / denom - m_coef * m / denom
    return new_param, {"mu_product": mu_product, "exp_avg": m, "exp_avg_sq": v}


class NAdam(RuleOptimizer):
    """NAdam; ``decoupled_weight_decay=True`` gives NAdamW.

    Same constructor, defaults and state (``step``, ``mu_product``, ``exp_avg``, ``exp_avg_sq``)
    as ``torch.optim.NAdam``, so a torch state_dict loads as it is.  ``mu_product`` has the
    parameter's dtype and device, like every state tensor here: a fresh torch optimizer keeps it
    in the default dtype (float32) on the CPU, and casts it to the parameter's dtype when it loads
    a state_dict.  See :func:`nadam` and the module docstring for the equations.
    """

    rule = staticmethod(nadam)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum_decay: float = 4e-3,
        decoupled_weight_decay: bool = False,
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
            eps=eps,
            weight_decay=weight_decay,
            momentum_decay=momentum_decay,
            decoupled_weight_decay=decoupled_weight_decay,
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
        check_range(name, "momentum_decay", group["momentum_decay"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {
            "mu_product": torch.ones((), dtype=param.dtype, device=param.device),
            "exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
