r"""Stochastic gradient descent: plain, with heavy-ball momentum (Polyak, 1964) and with Nesterov
momentum in the form of Sutskever, Martens, Dahl & Hinton (2013).

Reference: ``torch.optim.SGD`` (names, defaults, state layout, results).

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
    b_t &= \begin{cases} g_t & t = 1 \\
                         \mu\, b_{t-1} + (1-\tau)\, g_t & t > 1 \end{cases} \\
    d_t &= \begin{cases} g_t & \mu = 0 \quad\text{(plain SGD, no buffer)} \\
                         b_t & \text{(heavy ball)} \\
                         g_t + \mu\, b_t & \text{(Nesterov)} \end{cases} \\
    \theta_t &= \theta_{t-1} - \gamma\, d_t

Two conventions of torch that other frameworks do not share, both followed here:

* The learning rate multiplies the buffer (:math:`\theta_t = \theta_{t-1} - \gamma b_t`) instead
  of entering it (Sutskever et al.: :math:`v_t = \mu v_{t-1} + \gamma g_t`).  The two agree for a
  constant learning rate and differ under a schedule.
* The buffer starts at the first gradient, undamped (:math:`b_1 = g_1`), not at zero.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero, where
from ._validate import check_range


def sgd(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    momentum: Any = 0.0,
    dampening: Any = 0.0,
    weight_decay: Any = 0.0,
    nesterov: bool = False,
) -> tuple[Tensor, State]:
    """One SGD step (the module docstring has the equations); returns the new param and state.

    ``state`` holds ``momentum_buffer`` unless ``momentum`` is a literal 0.
    """
    if not is_zero(weight_decay):
        grad = grad + weight_decay * param
    if is_zero(momentum):
        return param - lr * grad, {}
    # torch keeps no buffer at all for momentum = 0, so dampening must not touch the gradient
    # there either: a zero momentum given as a tensor (one sweep configuration) takes b_t = g_t.
    fresh = (step == 1) | (momentum == 0)
    buf = where(fresh, grad, momentum * state["momentum_buffer"] + (1 - dampening) * grad)
    direction = grad + momentum * buf if nesterov else buf
    return param - lr * direction, {"momentum_buffer": buf}


class SGD(RuleOptimizer):
    r"""Gradient descent, with heavy-ball or Nesterov momentum.

    Same constructor, defaults and state (``momentum_buffer``, only when ``momentum != 0``) as
    ``torch.optim.SGD``; the base class adds a ``step`` count, which the first momentum step
    needs.  See :func:`sgd` and the module docstring for the equations.  The three classic
    methods are all this class::

        SGD(params, lr=0.1)                                # gradient descent / SGD
        SGD(params, lr=0.1, momentum=0.9)                  # momentum (heavy ball)
        SGD(params, lr=0.1, momentum=0.9, nesterov=True)   # Nesterov accelerated gradient

    Validation is torch's, plus ``0 <= dampening <= 1`` (torch accepts any dampening; outside
    that range the gradient's weight :math:`1-\tau` would be negative or above 1).

    A ``torch.optim.SGD`` state_dict loads as it is: torch counts no steps, so a loaded state
    that has a momentum buffer is given ``step = 1`` (past its first step).
    """

    rule = staticmethod(sgd)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        momentum: float = 0.0,
        dampening: float = 0.0,
        weight_decay: float = 0.0,
        nesterov: bool = False,
        *,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        foreach: bool | None = None,
    ) -> None:
        defaults = dict(lr=lr, momentum=momentum, dampening=dampening, weight_decay=weight_decay, nesterov=nesterov)
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
        check_range(name, "momentum", group["momentum"], 0.0)
        check_range(name, "dampening", group["dampening"], 0.0, 1.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        if group["nesterov"] and (group["momentum"] <= 0 or group["dampening"] != 0):
            raise ValueError(
                f"{name}: invalid nesterov=True with momentum={group['momentum']!r} and "
                f"dampening={group['dampening']!r}: Nesterov momentum requires momentum > 0 and dampening = 0"
            )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        if is_zero(group["momentum"]):
            return {}
        return {"momentum_buffer": torch.zeros_like(param, memory_format=torch.preserve_format)}
