r"""AdaMod (Ding, Ren, Luo & Sun, 2019, arXiv:1910.12249).

Reference: the authors' code (github.com/lancopku/AdaMod, ``adamod/adamod.py``; names, defaults,
state layout, results).  ``torch_optimizer.AdaMod`` 0.3.0 has the same arithmetic and is the
library the tests run beside ours.  Adam whose per-coordinate step size is capped by its own
exponential moving average:

.. math::

    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
    \eta_t &= \frac{\alpha \sqrt{1-\beta_2^t}/(1-\beta_1^t)}{\sqrt{v_t} + \epsilon} \\
    s_t &= \beta_3 s_{t-1} + (1-\beta_3)\, \eta_t \qquad (s_0 = 0) \\
    \theta_t &= (1 - \alpha\lambda)\,\theta_{t-1} - \min(\eta_t, s_t)\, m_t

Weight decay is decoupled (AdamW-style, scaled by :math:`\alpha`), as in the reference; its
docstring calls it an "L2 penalty", and both docstrings give ``beta3``'s default as 0.9999 where
the code (and this class) uses 0.999.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_betas, check_range


def adamod(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    beta2: Any,
    beta3: Any,
    eps: Any,
    weight_decay: Any = 0.0,
) -> tuple[Tensor, State]:
    """One AdaMod step (the module docstring has the equations); returns the new param and state."""
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    step_size = lr * (1 - beta2**step) ** 0.5 / (1 - beta1**step)
    eta = step_size / (v.sqrt() + eps)
    s = beta3 * state["exp_avg_lr"] + (1 - beta3) * eta
    if not is_zero(weight_decay):
        param = param - (weight_decay * lr) * param
    return param - eta.minimum(s) * m, {"exp_avg": m, "exp_avg_sq": v, "exp_avg_lr": s}


class AdaMod(RuleOptimizer):
    """AdaMod: Adam with momental (moving-average) upper bounds on the step sizes.

    Same constructor, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``, ``exp_avg_lr``)
    as the authors' ``adamod.AdaMod``.  See :func:`adamod` and the module docstring.
    """

    rule = staticmethod(adamod)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float = 0.999,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(lr=lr, betas=betas, beta3=beta3, eps=eps, weight_decay=weight_decay)
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
        check_range(name, "beta3", group["beta3"], 0.0, 1.0, high_open=True)
        check_range(name, "eps", group["eps"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        keys = ("exp_avg", "exp_avg_sq", "exp_avg_lr")
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}
