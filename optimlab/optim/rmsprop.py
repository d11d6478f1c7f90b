r"""RMSprop (Tieleman & Hinton, 2012, lecture 6.5), centered as in Graves (2013), with momentum.

Reference: ``torch.optim.RMSprop`` (names, defaults, state layout, results).

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
    v_t &= \alpha\, v_{t-1} + (1-\alpha)\, g_t^2 \\
    \bar g_t &= \alpha\, \bar g_{t-1} + (1-\alpha)\, g_t
        \quad\text{(centered; else } \bar g_t = 0) \\
    d_t &= \frac{g_t}{\sqrt{v_t - \bar g_t^2} + \epsilon} \\
    b_t &= \mu\, b_{t-1} + d_t \quad (b_0 = 0;\ \text{without momentum } b_t = d_t) \\
    \theta_t &= \theta_{t-1} - \gamma\, b_t
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_range


def rmsprop(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    alpha: Any,
    eps: Any,
    weight_decay: Any = 0.0,
    momentum: Any = 0.0,
    centered: bool = False,
) -> tuple[Tensor, State]:
    """One RMSprop step (the module docstring has the equations); returns the new param and state.

    ``state`` holds ``square_avg``, ``grad_avg`` if ``centered`` and ``momentum_buffer`` unless
    ``momentum`` is a literal 0.
    """
    if not is_zero(weight_decay):
        grad = grad + weight_decay * param
    square_avg = alpha * state["square_avg"] + (1 - alpha) * (grad * grad)
    new_state = {"square_avg": square_avg}
    if centered:
        grad_avg = alpha * state["grad_avg"] + (1 - alpha) * grad
        new_state["grad_avg"] = grad_avg
        square_avg = square_avg - grad_avg * grad_avg
    direction = grad / (square_avg.sqrt() + eps)
    if not is_zero(momentum):
        direction = momentum * state["momentum_buffer"] + direction
        new_state["momentum_buffer"] = direction
    return param - lr * direction, new_state


class RMSprop(RuleOptimizer):
    """RMSprop, with ``torch.optim.RMSprop``'s constructor, defaults and state (``step``,
    ``square_avg``, ``momentum_buffer`` if ``momentum > 0``, ``grad_avg`` if ``centered``).

    See :func:`rmsprop` and the module docstring for the equations.  Validation is torch's, plus
    ``alpha <= 1`` (torch accepts any ``alpha >= 0``; above 1 the weight of :math:`g_t^2` is
    negative).  The options after ``centered`` are keyword-only here (torch also takes
    ``capturable``, ``foreach`` and ``maximize`` by position).
    """

    rule = staticmethod(rmsprop)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        alpha: float = 0.99,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        momentum: float = 0.0,
        centered: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay, momentum=momentum, centered=centered)
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
        check_range(name, "alpha", group["alpha"], 0.0, 1.0)
        check_range(name, "eps", group["eps"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_range(name, "momentum", group["momentum"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        keys = ["square_avg"]
        keys += [] if is_zero(group["momentum"]) else ["momentum_buffer"]
        keys += ["grad_avg"] if group["centered"] else []
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}
