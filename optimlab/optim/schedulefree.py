r"""Schedule-Free SGD and AdamW (Defazio, Yang, Mehta, Mishchenko, Khaled & Cutkosky, "The Road Less
Scheduled", NeurIPS 2024).

Reference: ``schedulefree`` 1.4.1, the authors' package (``SGDScheduleFree``,
``AdamWScheduleFree``: names, defaults, state layout, results).

Schedule-Free replaces the momentum and the learning-rate schedule with an average. It keeps three
sequences: :math:`z` (the base optimizer's iterates), :math:`x` (their weighted average, the point
to evaluate) and :math:`y` (the point where gradients are taken, between the two):

.. math::

    y_t &= (1-\beta)\, z_t + \beta\, x_t \\
    z_{t+1} &= z_t - \gamma_t\, \hat g_t \\
    x_{t+1} &= (1 - c_{t+1})\, x_t + c_{t+1}\, z_{t+1}

with :math:`\beta` the momentum (``momentum`` for SGD, ``betas[0]`` for AdamW) and :math:`\hat g_t`
the base step at :math:`y_t`, weight decay included (also taken at :math:`y_t`):

.. math::

    \text{SGD:}\quad \hat g_t &= g_t + \lambda y_t \\
    \text{AdamW:}\quad v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2, \qquad
        \hat g_t = \frac{g_t}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} + \lambda y_t

The averaging weights come from the learning rates seen so far (:func:`schedule_free_weights`): a
linear warm-up :math:`\gamma_t = \gamma \min(1, t/T_w)` (``warmup_steps``), its running maximum
:math:`\gamma^{\max}_t`, the weight :math:`w_t = t^r (\gamma^{\max}_t)^p` (``r``,
``weight_lr_power``) and :math:`c_{t+1} = w_t / \sum_{i \le t} w_i`. With the defaults
(:math:`r = 0`, no warm-up) this is the uniform average, :math:`c_{t+1} = 1/t`.

Only :math:`y` and :math:`z` are stored: the parameters hold :math:`y` during training (so the
gradients are taken there) and the state holds :math:`z` (``z``, and AdamW's ``exp_avg_sq``).
Both updates are written for :math:`y` directly, as in the authors' code:
:math:`y_{t+1} = (1-c)\, y_t + c\, z_t + \gamma_t (\beta (1-c) - 1)\, \hat g_t`.

**Evaluating.** Call ``optimizer.eval()`` (next to ``model.eval()``) before evaluating or saving
the model for use: it moves the parameters to :math:`x = (y - (1-\beta) z)/\beta`, the point whose
loss the method minimises. Call ``optimizer.train()`` (next to ``model.train()``) before training
again: it moves them back to :math:`y`. As in the authors' package a new optimizer is in eval mode
(call ``train()`` before the first step), and ``step()`` in eval mode raises an error instead of
taking a step from the wrong point. The mode is saved with the state_dict. A model with BatchNorm
needs its running statistics recomputed at :math:`x` (the authors' README shows how).

The learning rate schedule, warm-up and weights live in each param group as in the authors'
package (``k``, the steps taken; ``lr_max``; ``weight_sum``; ``scheduled_lr``, for logging), in
double precision, so their checkpoints load as they are. A torch lr scheduler may still be used:
it scales ``lr`` as it does for any optimizer.

Where we differ from the authors' code:

* ``p.grad`` is left as it is. Their step overwrites it with the normalised gradient (weight
  decay added), so code that reads gradients after ``step()`` (logging, clipping statistics,
  gradient accumulation) sees something else; tests/optim/test_schedulefree.py shows it.
* The bias correction uses the parameter's own step count (as every optimizer here); theirs uses
  the group's. The two differ only for a parameter that had no gradient at some steps.
* ``maximize`` is supported; they have none.

``pytorch_optimizer``'s ports (``ScheduleFreeAdamW``, ``ScheduleFreeSGD``, 4.1.0) take the same
steps (the tests check them as second opinions) but start in train mode.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero
from ._validate import check_int, check_pair, check_range


def schedule_free_weights(
    k: int, lr: float, lr_max: float, weight_sum: float, *, warmup_steps: int, r: float, weight_lr_power: float
) -> tuple[float, float, float, float]:
    r"""``(scheduled_lr, lr_max, weight_sum, ckp1)`` of step :math:`t = k + 1`, from a group's values after ``k`` steps.

    :math:`\gamma_t = \gamma \cdot t/T_w` during warm-up (:math:`k < T_w`), else :math:`\gamma`;
    :math:`\gamma^{\max}_t = \max(\gamma_t, \gamma^{\max}_{t-1})` (starting from -1);
    :math:`w_t = t^r (\gamma^{\max}_t)^p`; ``weight_sum`` :math:`= \sum_{i \le t} w_i`;
    ``ckp1`` :math:`= w_t / \sum_{i \le t} w_i` (0 while every weight is 0, as in the authors' code).
    """
    scheduled = lr * ((k + 1) / warmup_steps if k < warmup_steps else 1.0)
    lr_max = max(scheduled, lr_max)
    weight = (k + 1) ** r * lr_max**weight_lr_power
    weight_sum = weight_sum + weight
    return scheduled, lr_max, weight_sum, weight / weight_sum if weight_sum != 0 else 0.0


def _average_and_step(y: Tensor, z: Tensor, g_hat: Tensor, *, lr: Any, beta: Any, ckp1: Any) -> tuple[Tensor, Tensor]:
    """``(y, z)`` after one step of direction ``g_hat``: the module docstring's update of y, written with z."""
    return y + ckp1 * (z - y) + (lr * (beta * (1 - ckp1) - 1)) * g_hat, z - lr * g_hat


def schedule_free_sgd(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    momentum: Any,
    ckp1: Any,
    weight_decay: Any = 0.0,
) -> tuple[Tensor, State]:
    """One Schedule-Free SGD step at ``param`` = y with the scheduled ``lr`` and averaging weight ``ckp1``."""
    del step  # no bias correction: the step count enters through ckp1
    if not is_zero(weight_decay):
        grad = grad + weight_decay * param
    y, z = _average_and_step(param, state["z"], grad, lr=lr, beta=momentum, ckp1=ckp1)
    return y, {"z": z}


def schedule_free_adamw(
    param: Tensor,
    grad: Tensor,
    state: State,
    step: Any,
    *,
    lr: Any,
    beta1: Any,
    beta2: Any,
    eps: Any,
    ckp1: Any,
    weight_decay: Any = 0.0,
) -> tuple[Tensor, State]:
    """One Schedule-Free AdamW step at ``param`` = y with the scheduled ``lr`` and averaging weight ``ckp1``."""
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    g_hat = grad / ((v / (1 - beta2**step)).sqrt() + eps)
    if not is_zero(weight_decay):
        g_hat = g_hat + weight_decay * param
    y, z = _average_and_step(param, state["z"], g_hat, lr=lr, beta=beta1, ckp1=ckp1)
    return y, {"z": z, "exp_avg_sq": v}


def _schedule_defaults(warmup_steps: int, r: float, weight_lr_power: float) -> dict[str, Any]:
    # as the authors' package: a new optimizer is in eval mode; lr_max starts below any lr
    return dict(
        warmup_steps=warmup_steps,
        r=r,
        weight_lr_power=weight_lr_power,
        k=0,
        train_mode=False,
        weight_sum=0.0,
        lr_max=-1.0,
        scheduled_lr=0.0,
    )


class _ScheduleFree(RuleOptimizer):
    """train()/eval(), the group's weight schedule and the checks the two Schedule-Free classes share."""

    # the authors' package counts steps per group only: their checkpoints get per-parameter counts
    group_step = "k"

    @staticmethod
    def _beta(group: dict[str, Any]) -> float:
        """The interpolation weight of x in y."""
        raise NotImplementedError

    def _check_schedule(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        check_range(name, "lr", group["lr"], 0.0)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_int(name, "warmup_steps", group["warmup_steps"], 0)
        check_range(name, "r", group["r"], 0.0)
        check_range(name, "weight_lr_power", group["weight_lr_power"], 0.0)

    def _next(self, group: dict[str, Any]) -> tuple[float, float, float, float]:
        # Python numbers (a group may hold one-element tensors): the schedule stays in double
        return schedule_free_weights(
            group["k"],
            float(group["lr"]),
            group["lr_max"],
            group["weight_sum"],
            warmup_steps=int(group["warmup_steps"]),
            r=float(group["r"]),
            weight_lr_power=float(group["weight_lr_power"]),
        )

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        """The rule's arguments for the group's next step: its scheduled lr and averaging weight."""
        scheduled, _, _, ckp1 = self._next(group)
        return {**super().rule_kwargs(group), "lr": scheduled, "ckp1": ckp1}

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One training step at y (raises in eval mode); ``closure`` re-evaluates the model and returns the loss."""
        for group in self.param_groups:
            if not group["train_mode"]:
                raise RuntimeError(
                    f"{type(self).__name__}: step() in eval mode, where the parameters hold the averaged point x: "
                    "call optimizer.train() before training (and optimizer.eval() before evaluating)"
                )
        loss = super().step(closure)
        for group in self.param_groups:
            group["scheduled_lr"], group["lr_max"], group["weight_sum"], _ = self._next(group)
            group["k"] += 1
        return loss

    @torch.no_grad()
    def eval(self) -> None:
        """Move the parameters to x, the averaged point to evaluate (a no-op in eval mode)."""
        for group in self.param_groups:
            if group["train_mode"]:
                self._move(group, 1 - 1 / self._beta(group))
                group["train_mode"] = False

    @torch.no_grad()
    def train(self) -> None:
        """Move the parameters back to y, where training takes its gradients (a no-op in train mode)."""
        for group in self.param_groups:
            if not group["train_mode"]:
                self._move(group, 1 - self._beta(group))
                group["train_mode"] = True

    def _move(self, group: dict[str, Any], weight: float) -> None:
        # y = (1 - beta) z + beta x, so x = y + (1 - 1/beta)(z - y) and y = x + (1 - beta)(z - x);
        # torch's lerp, as the authors' code, so that switching rounds as theirs does
        for p in group["params"]:
            z = self.state.get(p, {}).get("z")  # get: indexing the defaultdict would add empty states
            if z is not None:
                p.lerp_(z, weight)


class ScheduleFreeSGD(_ScheduleFree):
    """Schedule-Free SGD: SGD whose momentum and lr schedule are replaced by an average of its iterates.

    Same constructor, defaults and state (``z``; and a ``step`` count) as the authors'
    ``schedulefree.SGDScheduleFree``; same ``train()``/``eval()``: call ``optimizer.train()``
    before training and ``optimizer.eval()`` before evaluating (the parameters hold the training
    point y, or the averaged point x to evaluate). See the module docstring.
    """

    rule = staticmethod(schedule_free_sgd)
    # the authors' default lr is 1.0, and their README starts SGD "10x-50x larger than classical rates": the lab's
    # default range [1e-5, 1] of classical rates, one decade higher, so that the default lies inside, not on its edge
    tune_lr_range = (1e-4, 10.0)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        momentum: float = 0.9,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(
            lr=lr, momentum=momentum, weight_decay=weight_decay, **_schedule_defaults(warmup_steps, r, weight_lr_power)
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

    @staticmethod
    def _beta(group: dict[str, Any]) -> float:
        return group["momentum"]

    def validate(self, group: dict[str, Any]) -> None:
        self._check_schedule(group)
        # x = (y - (1 - momentum) z) / momentum: 0 has no averaged point, 1 never moves y off x
        check_range(type(self).__name__, "momentum", group["momentum"], 0.0, 1.0, low_open=True, high_open=True)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {"z": param.clone(memory_format=torch.preserve_format)}


class ScheduleFreeAdamW(_ScheduleFree):
    """Schedule-Free AdamW: Adam's normalised steps, averaged instead of scheduled.

    Same constructor, defaults and state (``z``, ``exp_avg_sq``; and a ``step`` count) as the
    authors' ``schedulefree.AdamWScheduleFree``; same ``train()``/``eval()``: call
    ``optimizer.train()`` before training and ``optimizer.eval()`` before evaluating (the
    parameters hold the training point y, or the averaged point x to evaluate). See the module
    docstring.
    """

    rule = staticmethod(schedule_free_adamw)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 0.0025,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        warmup_steps: int = 0,
        r: float = 0.0,
        weight_lr_power: float = 2.0,
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
            eps=eps,
            weight_decay=weight_decay,
            **_schedule_defaults(warmup_steps, r, weight_lr_power),
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

    @staticmethod
    def _beta(group: dict[str, Any]) -> float:
        return group["betas"][0]

    def validate(self, group: dict[str, Any]) -> None:
        name = type(self).__name__
        self._check_schedule(group)
        beta1, beta2 = check_pair(name, "betas", group["betas"], "(beta1, beta2)")
        # x = (y - (1 - beta1) z) / beta1: beta1 = 0 has no averaged point
        check_range(name, "betas[0]", beta1, 0.0, 1.0, low_open=True, high_open=True)
        check_range(name, "betas[1]", beta2, 0.0, 1.0, high_open=True)
        check_range(name, "eps", group["eps"], 0.0)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {
            "z": param.clone(memory_format=torch.preserve_format),
            "exp_avg_sq": torch.zeros_like(param, memory_format=torch.preserve_format),
        }
