r"""Adadelta (Zeiler, 2012), with torch's learning rate and weight decay.

Reference: ``torch.optim.Adadelta`` (names, defaults, state layout, results).

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
    v_t &= \rho\, v_{t-1} + (1-\rho)\, g_t^2 \\
    \Delta_t &= \frac{\sqrt{u_{t-1} + \epsilon}}{\sqrt{v_t + \epsilon}}\, g_t \\
    u_t &= \rho\, u_{t-1} + (1-\rho)\, \Delta_t^2 \\
    \theta_t &= \theta_{t-1} - \gamma\, \Delta_t

The paper has no learning rate (:math:`\gamma = 1`, torch's default).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_range


def adadelta(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    rho: Any,
    eps: Any,
    weight_decay: Any = 0.0,
) -> tuple[Tensor, State]:
    """One Adadelta step (the module docstring has the equations); returns the new param and state."""
    if not is_zero(weight_decay):
        grad = grad + weight_decay * param
    square_avg = rho * state["square_avg"] + (1 - rho) * (grad * grad)
    delta = (state["acc_delta"] + eps).sqrt() / (square_avg + eps).sqrt() * grad
    acc_delta = rho * state["acc_delta"] + (1 - rho) * (delta * delta)
    return param - lr * delta, {"square_avg": square_avg, "acc_delta": acc_delta}


class Adadelta(RuleOptimizer):
    """Adadelta, with ``torch.optim.Adadelta``'s constructor, defaults and state (``step``,
    ``square_avg``, ``acc_delta``).  See :func:`adadelta` and the module docstring."""

    rule = staticmethod(adadelta)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        rho: float = 0.9,
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(lr=lr, rho=rho, eps=eps, weight_decay=weight_decay)
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
        check_range(name, "rho", group["rho"], 0.0, 1.0)
        check_range(name, "eps", group["eps"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in ("square_avg", "acc_delta")}
