r"""Adagrad (Duchi, Hazan & Singer, 2011), with torch's learning-rate decay.

Reference: ``torch.optim.Adagrad`` (names, defaults, state layout, results).

.. math::

    s_0 &= s_{\text{init}} \quad\text{(initial\_accumulator\_value)} \\
    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
    s_t &= s_{t-1} + g_t^2 \\
    \theta_t &= \theta_{t-1} - \frac{\gamma}{1 + (t-1)\,\eta}\,\frac{g_t}{\sqrt{s_t} + \epsilon}

with :math:`\eta` the ``lr_decay`` (torch's addition; the paper has :math:`\eta = 0`).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_range


def adagrad(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    lr_decay: Any = 0.0,
    weight_decay: Any = 0.0,
    eps: Any = 1e-10,
) -> tuple[Tensor, State]:
    """One Adagrad step (the module docstring has the equations); returns the new param and state."""
    if not is_zero(weight_decay):
        grad = grad + weight_decay * param
    total = state["sum"] + grad * grad
    # the decay divides the tensor denominator, never the Python lr: a decay that makes it 0
    # (rejected by the class, swept by the lab) gives inf, not ZeroDivisionError
    denom = (total.sqrt() + eps) * (1 + (step - 1) * lr_decay)
    return param - lr * grad / denom, {"sum": total}


class Adagrad(RuleOptimizer):
    """Adagrad, with ``torch.optim.Adagrad``'s constructor, defaults and state (``step``, ``sum``).

    See :func:`adagrad` and the module docstring for the equations.  Two differences from torch:

    * Sparse gradients raise ``RuntimeError`` (torch supports them); use the dense gradient or
      ``torch.optim.Adagrad``.
    * ``initial_accumulator_value`` is read from each parameter's group.  torch reads the
      constructor's value (``self.defaults``) and silently ignores a value given in a param group.
    """

    rule = staticmethod(adagrad)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        lr_decay: float = 0.0,
        weight_decay: float = 0.0,
        initial_accumulator_value: float = 0.0,
        eps: float = 1e-10,
        foreach: bool | None = None,
        *,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            lr_decay=lr_decay,
            weight_decay=weight_decay,
            initial_accumulator_value=initial_accumulator_value,
            eps=eps,
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
        check_range(name, "lr", group["lr"], 0.0)
        check_range(name, "lr_decay", group["lr_decay"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_range(name, "initial_accumulator_value", group["initial_accumulator_value"], 0.0)
        check_range(name, "eps", group["eps"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {"sum": torch.full_like(param, group["initial_accumulator_value"], memory_format=torch.preserve_format)}
