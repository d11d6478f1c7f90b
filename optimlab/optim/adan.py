r"""Adan (Xie, Zhou, Li, Lin & Yan, "Adan: Adaptive Nesterov Momentum Algorithm for Faster
Optimizing Deep Models", TPAMI 2024).

Reference: the authors' code (``sail-sg/Adan``, ``adan.py``; not on PyPI), written out as plain
equations in the tests (names, defaults, state layout, results); ``pytorch_optimizer.Adan`` 4.1.0
as a second opinion.  With :math:`t` counted from 1 and :math:`g_0 = g_1` (so the first
gradient difference is 0):

.. math::

    g_t &\leftarrow c_t\, g_t, \quad c_t = \min\bigl(1, \texttt{max\_grad\_norm} / (\lVert G_t\rVert + \epsilon)\bigr)
        && \text{(only with } \texttt{max\_grad\_norm} > 0;\ G_t \text{: every gradient of the optimizer)} \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    d_t &= \beta_2 d_{t-1} + (1-\beta_2)\, (g_t - g_{t-1}) \\
    n_t &= \beta_3 n_{t-1} + (1-\beta_3)\, \bigl(g_t + \beta_2 (g_t - g_{t-1})\bigr)^2 \\
    \eta_t &= \alpha \,/\, \bigl(\sqrt{n_t / (1-\beta_3^t)} + \epsilon\bigr) \\
    \theta_t &= \Bigl(\theta_{t-1} - \eta_t \Bigl(\frac{m_t}{1-\beta_1^t} + \beta_2 \frac{d_t}{1-\beta_2^t}\Bigr)\Bigr)
        \,/\, (1 + \alpha\lambda)
        && \text{(} \texttt{no\_prox=True} \text{: } \theta_{t-1}(1-\alpha\lambda) - \dots \text{ instead)}

**The betas are the authors' code's, not the paper's.** The paper writes
:math:`m_k = (1-\beta_1) m_{k-1} + \beta_1 g_k` with :math:`\beta_1 = 0.02, \beta_2 = 0.08, \beta_3 = 0.01`;
the code (and this class, and every port) takes :math:`1-\beta` of those: ``betas=(0.98, 0.92, 0.99)``.
The weight decay is the paper's proximal step (divide by :math:`1+\alpha\lambda`) unless ``no_prox``.
The state keeps :math:`-g_{t-1}` as ``neg_pre_grad``, as the authors' code does.

Where this class departs from the authors' code:

* ``p.grad`` is left as it is: their step multiplies it by :math:`c_t` in place.
* With ``max_grad_norm``, :math:`\lVert G_t\rVert` is computed in double precision and each group
  uses its own ``max_grad_norm`` and ``eps``; theirs sums in float32 whatever the parameters' dtype,
  and uses the constructor's ``max_grad_norm`` and the last group's ``eps`` (the same where no
  group overrides them).
* The step count is per parameter (theirs is per param group: the same when every parameter of a
  group has a gradient at every step); a checkpoint of theirs takes its group's count.

``pytorch_optimizer.Adan`` (4.1.0) agrees with the authors' code (its ``weight_decouple=True`` is
``no_prox=True``; it keeps :math:`-g_{t-1}` as ``previous_grad``), its global clip included (a
float32 norm too), except that its clip fails on a 0-dim parameter (the tests show both).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import global_grad_norm, is_zero, where
from ._validate import check_adam_family, check_range


def adan(
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
    no_prox: bool = False,
    grad_scale: Any = 1.0,
) -> tuple[Tensor, State]:
    """One Adan step (the module docstring has the equations); returns the new param and state.

    ``grad_scale`` is the global clip's factor :math:`c_t`, computed by the class over all gradients.
    """
    grad = grad * grad_scale
    # g_0 = g_1: the authors' code sets neg_pre_grad = -g_1 at the first step (0, or NaN for an infinite g_1)
    diff = grad + where(step == 1, -grad, state["neg_pre_grad"])
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    d = beta2 * state["exp_avg_diff"] + (1 - beta2) * diff
    u = grad + beta2 * diff
    n = beta3 * state["exp_avg_sq"] + (1 - beta3) * (u * u)
    denom = n.sqrt() / (1 - beta3**step) ** 0.5 + eps
    decay = not is_zero(weight_decay)
    if decay and no_prox:
        param = param * (1 - lr * weight_decay)
    param = param - (lr / (1 - beta1**step)) * (m / denom)
    param = param - (lr * beta2 / (1 - beta2**step)) * (d / denom)
    if decay and not no_prox:
        param = param / (1 + lr * weight_decay)
    return param, {"exp_avg": m, "exp_avg_sq": n, "exp_avg_diff": d, "neg_pre_grad": -grad}


class Adan(RuleOptimizer):
    """Adan: Nesterov momentum estimated from gradient differences, with Adam-like normalisation.

    Same constructor, defaults and state (``exp_avg``, ``exp_avg_sq``, ``exp_avg_diff``,
    ``neg_pre_grad``; ``step`` per parameter here) as the authors' ``Adan``; the betas are theirs,
    ``1 - beta`` of the paper's.  See :func:`adan` and the module docstring for the equations and
    where this class departs from their code.
    """

    rule = staticmethod(adan)
    # the authors' checkpoints count steps per param group: each parameter takes its group's count
    group_step = "step"

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float, float] = (0.98, 0.92, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        max_grad_norm: float = 0.0,
        no_prox: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, max_grad_norm=max_grad_norm, no_prox=no_prox
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
        check_range(name, "max_grad_norm", group["max_grad_norm"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        keys = ("exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad")
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().rule_kwargs(group)
        max_grad_norm = group["max_grad_norm"]
        if max_grad_norm > 0:
            # the clip is global: it needs every gradient of the optimizer, which no single rule call sees
            norm = global_grad_norm(self, "max_grad_norm=0")
            kwargs["grad_scale"] = min(1.0, max_grad_norm / (norm + group["eps"]))
        return kwargs
