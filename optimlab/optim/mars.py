r"""MARS (Yuan, Liu, Wu, Zhou, Gu, "MARS: Unleashing the Power of Variance Reduction for Training
Large Models", ICML 2025), its AdamW-based variant (``mars_type="mars-adamw"``).

Reference: the authors' code (``AGI-Arena/MARS``, ``MARS/optimizers/mars.py``; not on PyPI),
written out as plain equations in the tests (names, defaults, state layout, results);
``pytorch_optimizer.MARS`` 4.1.0 as a second opinion (it differs: see below).  For a 2-D tensor (every tensor with
``optimize_1d=True``), with :math:`\tilde g_{t-1}` the gradient kept from the step before
(``last_grad``, zeros at first):

.. math::

    c_t &= g_t + \gamma\, \frac{\beta_1}{1-\beta_1}\, (g_t - \tilde g_{t-1}), \qquad
        c_t \leftarrow c_t / \lVert c_t\rVert \text{ where } \lVert c_t\rVert > 1 \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, c_t, \qquad v_t = \beta_2 v_{t-1} + (1-\beta_2)\, c_t^2 \\
    \theta_t &= \theta_{t-1} - \eta\, \Bigl(\lambda\, \theta_{t-1} + \frac{m_t}{(\sqrt{v_t/(1-\beta_2^t)} + \epsilon)(1-\beta_1^t)}\Bigr)

(AMSGrad: :math:`v_t` replaced by the running max, as in Adam.)  Every other tensor (vectors,
scalars, and also 3-D and 4-D ones such as convolution kernels: the authors test
``len(grad.shape) == 2``) takes AdamW on the raw gradient with ``betas_1d``,
``weight_decay_1d`` and the step size :math:`\eta \cdot` ``lr_1d`` / ``lr`` (the ratio fixed at
construction, so a scheduler scales both).  With ``optimize_1d=True`` every tensor takes MARS with
``betas`` and ``weight_decay``.

**The gradient correction** (``is_approx``).  MARS-approx (the default) takes
:math:`\tilde g_{t-1}` to be the previous step's gradient.  The exact form needs the gradient of
the *previous* mini-batch at the *current* parameters, which only the training loop can compute;
as in the authors' code, ``is_approx=False`` makes ``step()`` leave ``last_grad`` alone, and two
hooks fill it: ``update_previous_grad()`` (after a backward pass of the previous batch: copies
``p.grad`` into ``previous_grad``) and ``update_last_grad()`` (copies ``previous_grad`` into
``last_grad``), called where the authors' docstring shows.

Where this class departs from the authors' code:

* ``gamma``, ``eps``, ``is_approx``, ``optimize_1d``, ``betas_1d``, ``weight_decay_1d`` and the
  ``lr_1d`` ratio are param-group entries here (saved with the state_dict, per group); theirs are
  attributes of the optimizer (their ``eps`` and ``gamma`` ignore the groups).
* MARS-approx keeps a copy of the gradient; theirs keeps ``p.grad`` itself, so a ``zero_grad``
  that zeroes in place (``set_to_none=False``) erases their :math:`\tilde g_{t-1}`.
* The step count is a float tensor as in torch.optim (theirs a Python int).

``pytorch_optimizer.MARS`` (4.1.0) differs from the authors' code (the tests show it): it takes
MARS for every tensor of two or more dimensions (the authors' only for 2-D ones), and its
denominator is :math:`(\sqrt{v_t + 10^{-15}} + \epsilon)/\sqrt{1-\beta_2^t}` (eps before the bias
correction, and a hidden :math:`10^{-15}`): with ``eps=0`` on tensors of at most 2 dimensions it
stays within 1e-6 of the displacement over 200 steps, not the 1e-9 of an equal implementation.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero, where
from ._validate import check_adam_family, check_betas, check_range


def _adamw(param: Tensor, update: Tensor, state: State, step: Any, lr: Any, beta1: Any, beta2: Any, eps: Any,
           weight_decay: Any, amsgrad: bool) -> tuple[Tensor, State]:  # fmt: skip
    """The authors' AdamW step on ``update`` (the corrected gradient for MARS, the gradient otherwise)."""
    m = beta1 * state["exp_avg"] + (1 - beta1) * update
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (update * update)
    new_state = {"exp_avg": m, "exp_avg_sq": v}
    if amsgrad:
        v = state["max_exp_avg_sq"].maximum(v)
        new_state["max_exp_avg_sq"] = v
    denom = (v.sqrt() * (1 / (1 - beta2**step) ** 0.5) + eps) * (1 - beta1**step)
    step_ = m / denom
    if not is_zero(weight_decay):
        step_ = param * weight_decay + step_
    return param + (-lr) * step_, new_state


def mars(
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
    gamma: Any = 0.025,
    amsgrad: bool = False,
    is_approx: bool = True,
    optimize_1d: bool = False,
    lr_1d_factor: Any = 1.0,
    beta1_1d: Any = 0.9,
    beta2_1d: Any = 0.95,
    weight_decay_1d: Any = 0.1,
) -> tuple[Tensor, State]:
    """One MARS-AdamW step of one tensor (the module docstring has the equations).

    Whether the tensor takes MARS or AdamW is its 0-dim state ``is_2d`` (1 for a 2-D tensor), so
    that the decision is the tensor's, not the shape the rule is traced at.
    """
    last = state["last_grad"]
    c = grad + (gamma * (beta1 / (1 - beta1))) * (grad - last)
    norm = (c * c).sum().sqrt()
    c = where(norm > 1, c / norm, c)
    moments = {k: state[k] for k in ("exp_avg", "exp_avg_sq", "max_exp_avg_sq") if k in state}
    new_p, new_state = _adamw(param, c, moments, step, lr, beta1, beta2, eps, weight_decay, amsgrad)
    if not optimize_1d:
        plain_p, plain_state = _adamw(
            param, grad, moments, step, lr * lr_1d_factor, beta1_1d, beta2_1d, eps, weight_decay_1d, amsgrad
        )
        mask = state["is_2d"] > 0
        new_p = where(mask, new_p, plain_p)
        new_state = {k: where(mask, v, plain_state[k]) for k, v in new_state.items()}
    new_state["last_grad"] = grad if is_approx else last
    new_state["is_2d"] = state["is_2d"]
    return new_p, new_state


class MARS(RuleOptimizer):
    """MARS-AdamW: AdamW on a variance-reduced gradient for 2-D tensors, AdamW for the rest.

    Same constructor, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``, ``last_grad``,
    ``max_exp_avg_sq`` with AMSGrad, ``previous_grad`` in the exact form) as the authors'
    ``MARS``, plus ``is_2d`` (whether the tensor takes MARS; added to a checkpoint of theirs).  Only ``mars_type="mars-adamw"``.
    See :func:`mars` and the module docstring for the equations, the two gradient corrections and
    where this class departs from the authors' code.
    """

    rule = staticmethod(mars)
    elementwise = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.99),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        amsgrad: bool = False,
        gamma: float = 0.025,
        is_approx: bool = True,
        mars_type: str = "mars-adamw",
        optimize_1d: bool = False,
        lr_1d: float = 3e-3,
        betas_1d: tuple[float, float] = (0.9, 0.95),
        weight_decay_1d: float = 0.1,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        if mars_type != "mars-adamw":
            raise ValueError(
                f"MARS: invalid mars_type={mars_type!r}: expected 'mars-adamw' (the authors' 'mars-lion' and "
                "'mars-shampoo' are not implemented)"
            )
        check_range("MARS", "lr", lr, 0.0, low_open=True)  # lr_1d is kept as a multiple of it
        check_range("MARS", "lr_1d", lr_1d, 0.0)
        defaults = dict(
            lr=lr,
            betas=betas,
            eps=eps,
            weight_decay=weight_decay,
            amsgrad=amsgrad,
            gamma=gamma,
            is_approx=is_approx,
            optimize_1d=optimize_1d,
            lr_1d_factor=float(lr_1d) / float(lr),
            betas_1d=betas_1d,
            weight_decay_1d=weight_decay_1d,
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
        check_range(name, "gamma", group["gamma"], 0.0)
        check_range(name, "lr_1d_factor", group["lr_1d_factor"], 0.0)
        check_betas(name, group, "betas_1d")
        check_range(name, "weight_decay_1d", group["weight_decay_1d"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        keys = ["exp_avg", "last_grad", "exp_avg_sq"] + (["max_exp_avg_sq"] if group["amsgrad"] else [])
        state = {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in keys}
        state["is_2d"] = torch.tensor(float(param.dim() == 2), dtype=param.dtype, device=param.device)
        return state

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().rule_kwargs(group)
        kwargs["beta1_1d"], kwargs["beta2_1d"] = group["betas_1d"]
        return kwargs

    def __setstate__(self, state: dict[str, Any]) -> None:
        super().__setstate__(state)
        # the authors' checkpoints have no is_2d: it is the tensor's own shape
        for p, param_state in self.state.items():
            if param_state and "exp_avg" in param_state and "is_2d" not in param_state:
                param_state["is_2d"] = torch.tensor(float(p.dim() == 2), dtype=p.dtype, device=p.device)

    @torch.no_grad()
    def update_previous_grad(self) -> None:
        """The exact form's first hook: keep each ``p.grad`` (of the previous batch, at the current parameters)."""
        for group in self.param_groups:
            if group["is_approx"]:
                continue
            for p in group["params"]:
                if p.grad is not None:
                    state = self.state[p]
                    if not state:  # the state a first step would make, so that the step finds it whole
                        state["step"] = torch.tensor(0.0)
                        state.update(self.init_state(p, group))
                    state["previous_grad"] = p.grad.detach().clone()

    @torch.no_grad()
    def update_last_grad(self) -> None:
        """The exact form's second hook: the kept gradient becomes the one the next step corrects with."""
        for group in self.param_groups:
            if group["is_approx"]:
                continue
            for p in group["params"]:
                state = self.state[p]
                if "previous_grad" in state:
                    state["last_grad"].copy_(state["previous_grad"])
