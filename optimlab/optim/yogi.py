r"""Yogi (Zaheer, Reddi, Sachan, Kale & Kumar, "Adaptive Methods for Nonconvex Optimization", NeurIPS 2018).

Reference: ``torch_optimizer.Yogi`` (torch-optimizer 0.3.0: names, defaults, state layout, results),
which computes what ``optax.scale_by_yogi`` computes.

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1} \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    v_t &= v_{t-1} - (1-\beta_2)\,\operatorname{sign}(v_{t-1} - g_t^2)\, g_t^2 \\
    \theta_t &= \theta_{t-1} - \frac{\alpha}{1-\beta_1^t}\,
                \frac{m_t}{\sqrt{v_t/(1-\beta_2^t) + \epsilon_{root}} + \epsilon},
    \qquad m_0 = v_0 = v_{init}

Unlike Adam's, the second moment moves additively: by at most :math:`(1-\beta_2) g_t^2` a step,
up when :math:`g_t^2 > v_{t-1}` and down otherwise, so the effective learning rate grows slowly.

The references disagree in four places; each is an option whose default follows torch-optimizer:

* ``zero_exp_avg``: torch-optimizer and optax start both moments at ``initial_accumulator``; the
  paper's Algorithm 2 and the authors' own TensorFlow code (``tfa.optimizers.Yogi``) start the first
  moment at 0 (torch-optimizer's comment cites that code, which fills only ``v`` with the value).
  ``True`` gives :math:`m_0 = 0`.
* ``bias_correction``: both libraries and the authors' code divide by :math:`1-\beta_1^t` and
  :math:`1-\beta_2^t`; the paper's Algorithm 2 has no bias correction (``False``).
* ``eps_before_bias_correction``: the authors' code adds ε to :math:`\sqrt{v_t}` and then scales the
  step by :math:`\sqrt{1-\beta_2^t}/(1-\beta_1^t)`, i.e. divides by
  :math:`(\sqrt{v_t} + \epsilon)/\sqrt{1-\beta_2^t}` (``True``) instead of
  :math:`\sqrt{v_t/(1-\beta_2^t)} + \epsilon`.
* ``eps_root``: optax's ε inside the square root (0 elsewhere).

The paper also suggests starting :math:`v_0` from the squared gradient averaged over a large
mini-batch at the initial point; that needs data, so it is left to the caller (set the state).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_betas, check_range


def yogi(
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
    eps_root: Any = 0.0,
    bias_correction: bool = True,
    eps_before_bias_correction: bool = False,
) -> tuple[Tensor, State]:
    """One Yogi step (the module docstring has the equations); returns the new param and state."""
    if not is_zero(weight_decay):
        grad = grad + weight_decay * param
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    grad_sq = grad * grad
    v = state["exp_avg_sq"] - (1 - beta2) * (state["exp_avg_sq"] - grad_sq).sign() * grad_sq
    bias1, bias2 = (1 - beta1**step, 1 - beta2**step) if bias_correction else (1.0, 1.0)
    if eps_before_bias_correction:
        denom = ((v + eps_root).sqrt() + eps) / bias2**0.5
    else:
        denom = (v / bias2 + eps_root).sqrt() + eps
    return param - (lr / bias1) * m / denom, {"exp_avg": m, "exp_avg_sq": v}


class Yogi(RuleOptimizer):
    """Yogi: Adam whose second moment moves additively, by the sign of :math:`v_{t-1} - g_t^2`.

    Same constructor, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``) as
    ``torch_optimizer.Yogi``. ``weight_decay`` is an L2 penalty added to the gradient. See
    :func:`yogi` and the module docstring for the equations and the four extra options.
    """

    rule = staticmethod(yogi)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-3,
        initial_accumulator: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        zero_exp_avg: bool = False,
        bias_correction: bool = True,
        eps_before_bias_correction: bool = False,
        eps_root: float = 0.0,
    ) -> None:
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            initial_accumulator=initial_accumulator,
            weight_decay=weight_decay,
            zero_exp_avg=zero_exp_avg,
            bias_correction=bias_correction,
            eps_before_bias_correction=eps_before_bias_correction,
            eps_root=eps_root,
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
        check_betas(name, group)
        check_range(name, "eps", group["eps"], 0.0)
        # a negative v_0 has no square root
        check_range(name, "initial_accumulator", group["initial_accumulator"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_range(name, "eps_root", group["eps_root"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        v0 = torch.full_like(param, group["initial_accumulator"], memory_format=torch.preserve_format)
        m0 = torch.zeros_like(param, memory_format=torch.preserve_format) if group["zero_exp_avg"] else v0.clone()
        return {"exp_avg": m0, "exp_avg_sq": v0}
