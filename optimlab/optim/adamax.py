r"""Adamax, the infinity-norm variant of Adam (Kingma & Ba, 2015, section 7.1).

Reference: ``torch.optim.Adamax`` (names, defaults, state layout, results).

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    u_t &= \max(\beta_2\, u_{t-1},\ |g_t| + \epsilon) \\
    \theta_t &= \theta_{t-1} - \frac{\gamma}{1-\beta_1^t}\,\frac{m_t}{u_t}

The paper has no :math:`\epsilon`; torch adds it inside the max, which keeps :math:`u_t > 0`.
``eps=0`` gives the paper's algorithm exactly, so no option is needed for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_adam_family


def adamax(
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
) -> tuple[Tensor, State]:
    """One Adamax step (the module docstring has the equations); returns the new param and state."""
    if not is_zero(weight_decay):
        grad = grad + weight_decay * param
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    u = (beta2 * state["exp_inf"]).maximum(grad.abs() + eps)
    # the bias correction divides a tensor, so beta1 = 1 (swept, never accepted) gives inf/nan
    return param - lr * m / ((1 - beta1**step) * u), {"exp_avg": m, "exp_inf": u}


class Adamax(RuleOptimizer):
    """Adamax, with ``torch.optim.Adamax``'s constructor, defaults and state (``step``,
    ``exp_avg``, ``exp_inf``).  See :func:`adamax` and the module docstring."""

    rule = staticmethod(adamax)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 2e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay)
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
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in ("exp_avg", "exp_inf")}
