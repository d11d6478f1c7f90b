r"""RAdam, Rectified Adam (Liu, Jiang, He, Chen, Liu, Gao & Han, "On the Variance of the Adaptive
Learning Rate and Beyond", ICLR 2020).

Reference: ``torch.optim.RAdam`` (names, defaults, state layout, results); the authors' code
(``LiyuanLucasLiu/RAdam``, ``radam.py``) through ``pytorch_optimizer.RAdam``, which computes what it
computes.

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1}
        && \text{(L2; with decoupled decay } \theta_{t-1} \leftarrow (1-\alpha\lambda)\,\theta_{t-1}) \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t, \qquad
    v_t = \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
    \rho_\infty &= \frac{2}{1-\beta_2} - 1, \qquad
    \rho_t = \rho_\infty - \frac{2 t \beta_2^t}{1-\beta_2^t} \\
    r_t &= \sqrt{\frac{(\rho_t-4)(\rho_t-2)\,\rho_\infty}{(\rho_\infty-4)(\rho_\infty-2)\,\rho_t}} \\
    \theta_t &= \theta_{t-1} - \frac{\alpha}{1-\beta_1^t}\,
        \begin{cases}
            r_t\, m_t \sqrt{1-\beta_2^t} / (\sqrt{v_t} + \epsilon) & \rho_t > 5 \\
            m_t & \text{otherwise (the variance of the adaptive rate is intractable)}
        \end{cases}

:math:`\rho_t` is the length of the simple moving average that the exponential one approximates;
below the threshold the adaptive rate's variance is undefined and RAdam takes an SGD-with-momentum
step instead. (The paper's Algorithm 2 rectifies for :math:`\rho_t > 4`; torch and the authors' code
use 5.)

The authors' code differs from torch in two places; each is an option whose default follows torch:

* ``inclusive_threshold``: torch rectifies when :math:`\rho_t > 5`, the authors' code when
  ``N_sma >= 5`` (``True``). They differ only at a step where :math:`\rho_t` is exactly 5.
* ``degenerated_to_sgd``: torch takes the SGD-with-momentum step while :math:`\rho_t` is below the
  threshold (``True``); the authors' code, by default, takes no step at all (``False``), and then
  skips the decoupled weight decay as well.

The authors' weight decay is the decoupled form, ``decoupled_weight_decay=True``. So the authors'
default RAdam is ``RAdam(..., decoupled_weight_decay=True, inclusive_threshold=True,
degenerated_to_sgd=False)``.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero, where
from ._validate import check_adam_family


def rectification(beta2: Any, step: Any, *, inclusive_threshold: bool = False) -> tuple[Any, Any]:
    r"""``(tractable, r_t)``: whether :math:`\rho_t` passes the threshold 5, and the rectifier.

    Both are Python values for Python ``beta2`` and ``step``, tensors otherwise.  Where the
    variance is intractable ``r_t`` is finite but meaningless (never used): the radicand is
    negative for :math:`2 < \rho_t < 4` and divides by zero for :math:`\rho_\infty = 4`
    (``beta2 = 0.6``), so :math:`\rho_t` and :math:`\rho_\infty \le 5` are replaced by 5 there.
    Each replacement is conditioned on a value of its own kind, so a Python number stays one and a
    tensor keeps its dtype.
    """
    rho_inf = 2 / (1 - beta2) - 1
    beta2_t = beta2**step
    rho_t = rho_inf - 2 * step * beta2_t / (1 - beta2_t)
    tractable = rho_t >= 5 if inclusive_threshold else rho_t > 5
    rho_t = where(tractable, rho_t, 5.0)
    # rho_t <= rho_inf, so rho_inf <= 5 is never tractable
    rho_inf = where(rho_inf > 5, rho_inf, 5.0)
    r = ((rho_t - 4) * (rho_t - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho_t)) ** 0.5
    return tractable, r


def rectified_update(
    m: Tensor,
    denom: Tensor,
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    beta2: Any,
    degenerated_to_sgd: bool,
    inclusive_threshold: bool,
) -> tuple[Tensor, Any]:
    r"""``(update, tractable)``: RAdam's step :math:`\theta_{t-1} - \theta_t` given
    ``denom`` :math:`= \sqrt{v_t} + \epsilon`, and whether the rectified branch was taken.

    Where the variance is intractable the update is the SGD-with-momentum step
    :math:`\alpha\, m_t/(1-\beta_1^t)`, or 0 unless ``degenerated_to_sgd``.  Shared with AdaBelief's
    rectified variant, which the AdaBelief authors forked from this rule.
    """
    tractable, r = rectification(beta2, step, inclusive_threshold=inclusive_threshold)
    bias1 = 1 - beta1**step
    adaptive = (lr * r * (1 - beta2**step) ** 0.5 / bias1) * m / denom
    fallback = (lr / bias1) * m if degenerated_to_sgd else 0.0
    return where(tractable, adaptive, fallback), tractable


def radam(
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
    decoupled_weight_decay: bool = False,
    degenerated_to_sgd: bool = True,
    inclusive_threshold: bool = False,
) -> tuple[Tensor, State]:
    """One RAdam step (the module docstring has the equations); returns the new param and state."""
    decayed = param
    if not is_zero(weight_decay):
        if decoupled_weight_decay:
            decayed = param * (1 - lr * weight_decay)
        else:
            grad = grad + weight_decay * param
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    update, tractable = rectified_update(
        m,
        v.sqrt() + eps,
        step,
        lr=lr,
        beta1=beta1,
        beta2=beta2,
        degenerated_to_sgd=degenerated_to_sgd,
        inclusive_threshold=inclusive_threshold,
    )
    if not degenerated_to_sgd:
        # the authors' code takes no step at all while the variance is intractable: no decay either
        decayed = where(tractable, decayed, param)
    return decayed - update, {"exp_avg": m, "exp_avg_sq": v}


class RAdam(RuleOptimizer):
    """RAdam: Adam whose adaptive rate is rectified, and replaced by SGD with momentum while its
    variance is intractable (the first steps).

    Same constructor, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``) as
    ``torch.optim.RAdam``, so a torch state_dict loads as it is. See :func:`radam` and the module
    docstring for the equations and the two options that give the authors' variant.
    """

    rule = staticmethod(radam)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decoupled_weight_decay: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        degenerated_to_sgd: bool = True,
        inclusive_threshold: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            decoupled_weight_decay=decoupled_weight_decay,
            degenerated_to_sgd=degenerated_to_sgd,
            inclusive_threshold=inclusive_threshold,
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

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in ("exp_avg", "exp_avg_sq")}
