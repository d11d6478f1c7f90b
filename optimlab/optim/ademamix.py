r"""AdEMAMix (Pagliardini, Ablin & Grangier, "The AdEMAMix Optimizer: Better, Faster, Older", ICLR 2025).

Reference: the authors' PyTorch code (``apple/ml-ademamix``, ``pytorch/ademamix.py``: names,
defaults, state layout, results), written out as equations in tests/optim/test_ademamix.py;
``pytorch_optimizer.AdEMAMix`` 4.1.0 is checked as a second opinion.

.. math::

    m^{(1)}_t &= \beta_1 m^{(1)}_{t-1} + (1-\beta_1)\, g_t
        && \text{(the fast EMA, Adam's; } m^{(1)}_t = g_t \text{ for } \beta_1 = 0) \\
    m^{(2)}_t &= \beta_{3,t}\, m^{(2)}_{t-1} + (1-\beta_{3,t})\, g_t && \text{(the slow EMA)} \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
    \theta_t &= \theta_{t-1} - \alpha_{lr} \left(
        \frac{m^{(1)}_t/(1-\beta_1^t) + \alpha_t\, m^{(2)}_t}{\sqrt{v_t}/\sqrt{1-\beta_2^t} + \epsilon}
        + \lambda\, \theta_{t-1} \right)

A second, much slower momentum (:math:`\beta_3 = 0.9999`: a half-life of ~7,000 steps) is added
to Adam's, weighted by :math:`\alpha`, so that old gradients keep mattering. The weight decay is
AdamW's (decoupled, scaled by the learning rate only). The slow EMA is not bias-corrected; instead
the authors warm up both of its settings over the first steps (``alpha_warmup``,
``beta3_warmup``, ``None`` for none; the paper sets both to the length of training):

.. math::

    \alpha_t = \alpha \min(1, t/T_\alpha), \qquad
    \beta_{3,t} = f^{-1}\bigl((1-a)\, f(\beta_1) + a\, f(\beta_3)\bigr), \quad a = t/T_{\beta_3}
    \ \ (t < T_{\beta_3}, \text{ else } \beta_3)

with :math:`f(\beta) = \ln 0.5 / \ln(\beta + 10^{-8}) - 1` and :math:`f^{-1}(h) = 0.5^{1/(h+1)}`:
the half-life of :math:`m^{(2)}` grows linearly from :math:`\beta_1`'s to :math:`\beta_3`'s.

``pytorch_optimizer.AdEMAMix`` differs from the authors' code (tests/optim/test_ademamix.py
shows it): its default ``alpha`` is 5.0 (theirs 2.0), its weight decay is L2 by default (added to
the gradient, so divided by :math:`\sqrt{v_t}`; with ``weight_decouple=True`` it decays before the
step, :math:`\theta (1-\alpha_{lr}\lambda)`, as here up to rounding), one ``t_alpha_beta3`` warms
up both settings, and its :math:`\beta_{3,t}` drops the :math:`10^{-8}` inside the logarithms.

With ``beta3_warmup`` the rule takes a logarithm of the betas: once per step, in double precision
(C's ``log``, as Python's ``math.log``), so the native path stays bit for bit the reference path.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero, log, where
from ._validate import check_adam_family, check_int, check_range


def _half_life(beta: Any) -> Any:
    """The authors' :math:`f(\\beta)`: steps for :math:`\\beta^t` to halve, minus one."""
    return math.log(0.5) / log(beta + 1e-8) - 1


def slow_schedule(
    step: Any, *, beta1: Any, beta3: Any, alpha: Any, alpha_warmup: Any, beta3_warmup: Any
) -> tuple[Any, Any]:
    r"""``(alpha_t, beta3_t)`` at ``step``: the authors' linear warm-ups of :math:`\alpha` and of :math:`\beta_3`'s
    half-life."""
    if alpha_warmup is not None and not is_zero(alpha_warmup):
        alpha = where(step < alpha_warmup, step / alpha_warmup * alpha, alpha)
    if beta3_warmup is not None and not is_zero(beta3_warmup):
        a = step / beta3_warmup
        h = (1 - a) * _half_life(beta1) + a * _half_life(beta3)
        beta3 = where(step < beta3_warmup, 0.5 ** (1 / (h + 1)), beta3)
    return alpha, beta3


def ademamix(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    beta2: Any,
    beta3: Any,
    alpha: Any,
    eps: Any,
    weight_decay: Any = 0.0,
    alpha_warmup: Any = None,
    beta3_warmup: Any = None,
) -> tuple[Tensor, State]:
    """One AdEMAMix step (the module docstring has the equations); returns the new param and state.

    ``state`` holds ``exp_avg_fast`` unless ``beta1`` is a literal 0 (the authors keep no buffer then).
    """
    alpha, beta3 = slow_schedule(
        step, beta1=beta1, beta3=beta3, alpha=alpha, alpha_warmup=alpha_warmup, beta3_warmup=beta3_warmup
    )
    new_state = {}
    if is_zero(beta1):
        fast = grad
    else:
        fast = beta1 * state["exp_avg_fast"] + (1 - beta1) * grad
        new_state["exp_avg_fast"] = fast
    slow = beta3 * state["exp_avg_slow"] + (1 - beta3) * grad
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    new_state.update(exp_avg_slow=slow, exp_avg_sq=v)
    denom = v.sqrt() / (1 - beta2**step) ** 0.5 + eps
    update = (fast / (1 - beta1**step) + alpha * slow) / denom
    if not is_zero(weight_decay):
        update = update + weight_decay * param
    return param - lr * update, new_state


class AdEMAMix(RuleOptimizer):
    """AdEMAMix: Adam plus a slow momentum mixed in with weight ``alpha``, with the authors' warm-ups.

    Same constructor, defaults and state (``step``, ``exp_avg_fast``, ``exp_avg_slow``,
    ``exp_avg_sq``) as the authors' ``AdEMAMix`` (``apple/ml-ademamix``), so its state_dict loads
    as it is. See :func:`ademamix` and the module docstring for the equations and how
    ``pytorch_optimizer`` differs.
    """

    rule = staticmethod(ademamix)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.9, 0.999, 0.9999),
        alpha: float = 2.0,
        beta3_warmup: int | None = None,
        alpha_warmup: int | None = None,
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
        defaults = dict(
            lr=lr,
            betas=betas,
            alpha=alpha,
            beta3_warmup=beta3_warmup,
            alpha_warmup=alpha_warmup,
            eps=eps,
            weight_decay=weight_decay,
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
        check_adam_family(name, group, n_betas=3)
        check_range(name, "alpha", group["alpha"], 0.0)
        for key in ("alpha_warmup", "beta3_warmup"):
            if group[key] is not None:
                check_int(name, key, group[key], 0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        keys = (["exp_avg_fast"] if group["betas"][0] != 0 else []) + ["exp_avg_slow", "exp_avg_sq"]
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # the authors keep exp_avg_fast = None for beta1 = 0, and the step as a Python int (the
        # base class turns that into a tensor at the next step)
        for param_state in self.state.values():
            if param_state.get("exp_avg_fast", 0) is None:
                del param_state["exp_avg_fast"]
