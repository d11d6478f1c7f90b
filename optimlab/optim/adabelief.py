r"""AdaBelief (Zhuang, Tang, Ding, Tatikonda, Dvornek, Papademetris & Duncan, "AdaBelief Optimizer:
Adapting Stepsizes by the Belief in Observed Gradients", NeurIPS 2020).

Reference: ``adabelief_pytorch.AdaBelief`` 0.2.1, the authors' package (names, defaults, state
layout, results).

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1}
        && \text{(} \texttt{weight\_decouple=False} \text{; else } \theta_{t-1} \leftarrow
           (1-\alpha\lambda)\,\theta_{t-1} \text{, or } (1-\lambda)\,\theta_{t-1}
           \text{ with } \texttt{fixed\_decay} \text{)} \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    s_t &= \beta_2 s_{t-1} + (1-\beta_2)\, (g_t - m_t)^2 + \epsilon \\
    \hat s_t &= \max(\hat s_{t-1}, s_t) \quad\text{(AMSGrad; else } \hat s_t = s_t) \\
    \theta_t &= \theta_{t-1} - \frac{\alpha}{1-\beta_1^t}\,
                \frac{m_t}{\sqrt{\hat s_t / (1-\beta_2^t)} + \epsilon}
    && \text{(} \texttt{rectify=False} \text{)}

AdaBelief is Adam with :math:`s_t`, the spread of the gradient around its running mean (the
"belief" in it), in place of the raw second moment :math:`v_t`.  With ``rectify=True`` (the
package's default) the step is RAdam's, :func:`optimlab.optim.radam.rectified_update`, with
:math:`\hat s_t` for :math:`v_t`: rectified by :math:`r_t` (ε added to :math:`\sqrt{\hat s_t}`
before the bias correction) once :math:`\rho_t \ge 5`, before that the SGD-with-momentum step
:math:`\alpha\, m_t/(1-\beta_1^t)` (``degenerated_to_sgd=True``) or none; weight decay applies in
every step either way.

Where the references are wrong (tests/optim/test_adabelief.py shows each):

* With ``amsgrad=True, rectify=True`` the package divides by :math:`\sqrt{s_t}`, not by the running
  max it keeps: its AMSGrad does nothing there.  We use the max, as ``pytorch_optimizer.AdaBelief``
  (``ams_bound=True, rectify=True``) does.
* ``torch_optimizer.AdaBelief`` (0.3.0) with ``rectify=True`` takes the SGD steps as
  :math:`\alpha\, m_t`, without :math:`1/(1-\beta_1^t)`: its first step is 10 times too small
  (with :math:`\beta_1 = 0.9`); it also rectifies from :math:`\rho_t > 4`.

``print_change_log`` is accepted so that code written for the package runs unchanged; nothing is
ever printed.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_adam_family, check_flag
from .radam import rectified_update


def adabelief(
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
    amsgrad: bool = False,
    weight_decouple: bool = True,
    fixed_decay: bool = False,
    rectify: bool = True,
    degenerated_to_sgd: bool = True,
) -> tuple[Tensor, State]:
    """One AdaBelief step (the module docstring has the equations); returns the new param and state."""
    if not is_zero(weight_decay):
        if weight_decouple:
            param = param * (1 - (weight_decay if fixed_decay else lr * weight_decay))
        else:
            grad = grad + weight_decay * param
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    residual = grad - m
    s = beta2 * state["exp_avg_var"] + (1 - beta2) * (residual * residual) + eps
    new_state = {"exp_avg": m, "exp_avg_var": s}
    if amsgrad:
        s = state["max_exp_avg_var"].maximum(s)
        new_state["max_exp_avg_var"] = s
    if rectify:
        update, _ = rectified_update(
            m,
            s.sqrt() + eps,
            step,
            lr=lr,
            beta1=beta1,
            beta2=beta2,
            degenerated_to_sgd=degenerated_to_sgd,
            inclusive_threshold=True,
        )
    else:
        update = (lr / (1 - beta1**step)) * m / (s.sqrt() / (1 - beta2**step) ** 0.5 + eps)
    return param - update, new_state


class AdaBelief(RuleOptimizer):
    """AdaBelief: Adam that divides by the spread of the gradient around its mean, rectified as in
    RAdam by default.

    Same constructor, defaults and state (``step``, ``exp_avg``, ``exp_avg_var``,
    ``max_exp_avg_var``) as ``adabelief_pytorch.AdaBelief`` 0.2.1. See :func:`adabelief` and the
    module docstring for the equations and the references' deviations.
    """

    rule = staticmethod(adabelief)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-16,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        weight_decouple: bool = True,
        fixed_decay: bool = False,
        rectify: bool = True,
        degenerated_to_sgd: bool = True,
        print_change_log: bool = True,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        # accepted as the reference's, so that its code runs unchanged; this class never prints
        check_flag(type(self).__name__, "print_change_log", print_change_log)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            weight_decouple=weight_decouple,
            fixed_decay=fixed_decay,
            rectify=rectify,
            degenerated_to_sgd=degenerated_to_sgd,
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
        keys = ["exp_avg", "exp_avg_var"] + (["max_exp_avg_var"] if group["amsgrad"] else [])
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}
