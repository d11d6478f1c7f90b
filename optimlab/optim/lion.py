r"""Lion, EvoLved Sign Momentum (Chen, Liang, Huang, Real, Wang, Pham, Dong, Luong, Hsieh, Lu & Le,
"Symbolic Discovery of Optimization Algorithms", NeurIPS 2023).

Reference: the authors' PyTorch code (``google/automl``, ``lion/lion_pytorch.py``: names, defaults,
state layout, results), written out as equations in tests/optim/test_lion.py; ``lion-pytorch``
0.2.5 and ``pytorch_optimizer.Lion`` 4.1.0 are checked as second opinions.

.. math::

    \theta_{t-1} &\leftarrow (1 - \alpha\lambda)\,\theta_{t-1}
        && \text{(decoupled weight decay, as AdamW)} \\
    c_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    \theta_t &= \theta_{t-1} - \alpha\, \operatorname{sign}(c_t) \\
    m_t &= \beta_2 m_{t-1} + (1-\beta_2)\, g_t

Every coordinate moves by exactly :math:`\alpha` (or not at all where :math:`c_t = 0`), so Lion
wants a learning rate 3-10 times smaller than AdamW's and a weight decay 3-10 times larger (the
paper's advice). The update interpolates with :math:`\beta_1`; the momentum that is kept uses
:math:`\beta_2`.

Weight decay is decoupled (it multiplies the parameter by :math:`1-\alpha\lambda`, never enters
:math:`g_t`), as in the authors' code and paper.

Where we differ from the authors' code, on purpose (tests/optim/test_lion.py shows it):

* Non-finite gradients. ``torch.sign`` maps NaN to 0, so in the authors' code a NaN gradient
  leaves the parameter where it was and turns its momentum into NaN: that coordinate silently
  never moves again. An infinite gradient gives a finite step, and its infinite momentum then
  moves that coordinate the same way at every later step, whatever its gradient. Here, as in every
  optimizer of the library, a non-finite :math:`c_t` reaches the parameter (as NaN), so the
  failure is seen; for finite values the two are the same arithmetic.

The ports compute the same update: ``lion-pytorch`` (with ``decoupled_weight_decay=False``, its
default) and ``pytorch_optimizer.Lion``. ``lion-pytorch``'s ``decoupled_weight_decay=True``
divides the decay by the *initial* learning rate :math:`\alpha_0` (the parameter shrinks by
:math:`\alpha_t\lambda/\alpha_0`): that is :math:`\lambda/\alpha_0` as ``weight_decay`` here, a change of units,
not of the rule.

The authors' code keeps no step count (Lion needs none); their checkpoints load all the same, and
the count starts from 0 there.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_betas, check_range


def lion(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    beta2: Any,
    weight_decay: Any = 0.0,
) -> tuple[Tensor, State]:
    """One Lion step (the module docstring has the equations); returns the new param and state."""
    del step  # Lion has no bias correction or schedule
    if not is_zero(weight_decay):
        param = param * (1 - lr * weight_decay)
    m = state["exp_avg"]
    c = beta1 * m + (1 - beta1) * grad
    # c - c is 0 for finite c and NaN otherwise: sign() alone would turn NaN into a zero step
    return param - lr * (c.sign() + (c - c)), {"exp_avg": beta2 * m + (1 - beta2) * grad}


class Lion(RuleOptimizer):
    """Lion: the sign of an interpolated momentum, with decoupled weight decay.

    Same constructor, defaults and state (``step``, ``exp_avg``) as the authors' ``Lion``
    (``google/automl``), so its state_dict loads as it is. See :func:`lion` and the module
    docstring for the equations and the one place where we differ (non-finite gradients).
    """

    rule = staticmethod(lion)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-4,
        betas: tuple[float, float] = (0.9, 0.99),
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, weight_decay=weight_decay)
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
        check_betas(name, group)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {"exp_avg": torch.zeros_like(param, memory_format=torch.preserve_format)}
