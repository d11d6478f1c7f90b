r"""Learning-rate warmup schedules that compose with ``torch.optim.lr_scheduler``.

Each scheduler multiplies the lr of the ``t``-th optimizer step (``t = 1, 2, ...``; torch's
convention: the scheduler is stepped after the optimizer) by a warmup factor :math:`\omega_t`:

.. math::

    \text{linear:}\quad \omega_t &= s + (1 - s)\,\min\!\left(1, \frac{t}{T}\right) \\
    \text{untuned linear (Ma \& Yarats):}\quad \omega_t &= \min\!\left(1, \frac{1-\beta_2}{2}\, t\right)
        \quad (s = 0,\ T = 2/(1-\beta_2)) \\
    \text{untuned exponential (Ma \& Yarats):}\quad \omega_t &= 1 - \exp\!\big(-(1-\beta_2)\, t\big)

Reference for the untuned schedules: J. Ma and D. Yarats, "On the adequacy of untuned warmup for
adaptive optimization", AAAI 2021 (arXiv:1910.04209), Section "rule-of-thumb warmup": the
exponential schedule with time constant :math:`(1-\beta_2)^{-1}` and the linear schedule over
:math:`2(1-\beta_2)^{-1}` iterations, their recommended default for Adam.

The schedulers are chainable, like torch's own: each step multiplies the *current* lr by
:math:`\omega_t / \omega_{t-1}`, so that in a ``ChainedScheduler`` with a multiplicative schedule
(``CosineAnnealingLR`` with ``eta_min=0``, ``ExponentialLR``, ``StepLR``, ...) the lr is the
product :math:`\mathrm{lr}\cdot\omega_t\cdot d_t`; in a ``SequentialLR`` they run first and hand
over at a milestone.  The ratios round, so the lr after the warmup is the base lr to within a few
ulps per warmup step, not bit for bit (as with torch's ``LinearLR``).

``LinearWarmup(opt, T, s)`` equals ``LinearLR(opt, start_factor=s + (1 - s)/T, total_iters=T - 1)``
for an integer ``T >= 2``; ``LinearWarmup`` spells the warmup by its length and starting factor,
and ``T`` need not be an integer (the untuned one rarely is).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch.optim.lr_scheduler import LRScheduler

from .optim._validate import check_choice, check_range

UNTUNED_KINDS = ("linear", "exponential")


def linear_warmup_factor(t: float, warmup_steps: float, start_factor: float = 0.0) -> float:
    r""":math:`\omega_t = s + (1 - s)\min(1, t / T)` for the ``t``-th step (1-based)."""
    return start_factor + (1.0 - start_factor) * min(1.0, t / warmup_steps)


def exponential_warmup_factor(t: float, beta2: float) -> float:
    r""":math:`\omega_t = 1 - \exp(-(1-\beta_2)t)`, evaluated as ``-expm1`` (no cancellation for small t)."""
    return -math.expm1(-(1.0 - beta2) * t)


def untuned_linear_warmup_length(beta2: float) -> float:
    r""":math:`T = 2/(1-\beta_2)`, the length of Ma & Yarats' untuned linear warmup.

    A decimal :math:`\beta_2` such as 0.999 or 0.9 is not exactly representable, and
    ``2 / (1 - beta2)`` lands a few ulps beside the intended length (1999.999999999998,
    20.000000000000004); a length within 1e-12 (relative) of an integer is taken as that integer,
    so the full lr is reached exactly at step 2000 (20).  Other lengths stay as they are
    (666.67 for 0.997).
    """
    length = 2.0 / (1.0 - beta2)
    nearest = round(length)
    return float(nearest) if math.isclose(length, nearest, rel_tol=1e-12) else length


def untuned_warmup_steps(beta2: float) -> int:
    r"""The first step at which the untuned linear warmup reaches the full lr: :math:`\lceil 2/(1-\beta_2) \rceil`.

    2000 for :math:`\beta_2 = 0.999` (see :func:`untuned_linear_warmup_length`; a plain
    ``int(2 / (1 - 0.999))`` is 1999).
    """
    check_range("untuned_warmup_steps", "beta2", beta2, 0.0, 1.0, high_open=True)
    return math.ceil(untuned_linear_warmup_length(beta2))


class _Warmup(LRScheduler):
    """A chainable scheduler that multiplies group ``i``'s lr at step ``t`` by ``self.factor(i, t)``."""

    def factor(self, group: int, t: int) -> float:
        """The warmup factor of param group ``group`` at the ``t``-th optimizer step (1-based)."""
        raise NotImplementedError

    def get_lr(self) -> list[Any]:
        t = self.last_epoch + 1  # the step the lr is being set for
        if t > 1 and self._is_initial:
            # built with last_epoch >= 0 to resume: the groups already hold this step's lr
            return [group["lr"] for group in self.optimizer.param_groups]
        return [
            group["lr"] * (self.factor(i, t) / self.factor(i, t - 1) if t > 1 else self.factor(i, t))
            for i, group in enumerate(self.optimizer.param_groups)
        ]

    def _get_closed_form_lr(self) -> list[Any]:
        # torch uses it for step(epoch) and at SequentialLR milestones
        t = self.last_epoch + 1
        return [base_lr * self.factor(i, t) for i, base_lr in enumerate(self.base_lrs)]


class LinearWarmup(_Warmup):
    r"""Linear warmup over ``warmup_steps`` optimizer steps: :math:`\omega_t = s + (1-s)\min(1, t/T)`.

    Parameters
    ----------
    optimizer:
        the optimizer whose param groups' lr is scaled.
    warmup_steps:
        :math:`T > 0`, the step at which the full lr is reached (need not be an integer).
    start_factor:
        :math:`s \in [0, 1]`, the factor the ramp starts from at :math:`t = 0`; with the default 0
        the first step uses ``lr / T``, not a wasted zero lr.
    last_epoch:
        as in torch's schedulers (``-1`` to start; the last step count to resume).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, warmup_steps: float, start_factor: float = 0.0, last_epoch: int = -1
    ) -> None:
        check_range("LinearWarmup", "warmup_steps", warmup_steps, 0.0, low_open=True)
        check_range("LinearWarmup", "start_factor", start_factor, 0.0, 1.0)
        self.warmup_steps = warmup_steps
        self.start_factor = start_factor
        super().__init__(optimizer, last_epoch)

    def factor(self, group: int, t: int) -> float:
        return linear_warmup_factor(t, self.warmup_steps, self.start_factor)


class UntunedWarmup(_Warmup):
    r"""Ma & Yarats' untuned warmup for Adam-like optimizers, from :math:`\beta_2` alone.

    ``kind="linear"``: :math:`\omega_t = \min(1, \tfrac{1-\beta_2}{2} t)`, i.e. linear over
    :math:`2/(1-\beta_2)` steps (2000 for 0.999; :func:`untuned_warmup_steps`), the paper's
    recommended default.  ``kind="exponential"``: :math:`\omega_t = 1 - \exp(-(1-\beta_2)t)`.

    Parameters
    ----------
    optimizer:
        the optimizer whose param groups' lr is scaled.
    kind:
        ``"linear"`` (default) or ``"exponential"``.
    beta2:
        :math:`\beta_2 \in [0, 1)`; ``None`` reads each param group's ``betas[1]`` (so groups
        with different betas warm up at their own pace).
    last_epoch:
        as in torch's schedulers.
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, kind: str = "linear", beta2: float | None = None, last_epoch: int = -1
    ) -> None:
        check_choice("UntunedWarmup", "kind", kind, UNTUNED_KINDS)
        if beta2 is not None:
            check_range("UntunedWarmup", "beta2", beta2, 0.0, 1.0, high_open=True)
            self.beta2s = [float(beta2)] * len(optimizer.param_groups)
        else:
            self.beta2s = [_group_beta2(group, i) for i, group in enumerate(optimizer.param_groups)]
        self.kind = kind
        super().__init__(optimizer, last_epoch)

    def factor(self, group: int, t: int) -> float:
        beta2 = self.beta2s[group]
        if self.kind == "linear":
            return linear_warmup_factor(t, untuned_linear_warmup_length(beta2))
        return exponential_warmup_factor(t, beta2)


def _group_beta2(group: dict[str, Any], index: int) -> float:
    if "betas" not in group:
        raise ValueError(
            f"UntunedWarmup: invalid beta2=None: param_groups[{index}] has no 'betas' to read it from; "
            "pass beta2 (0 <= beta2 < 1), the optimizer's second-moment decay rate"
        )
    beta2 = group["betas"][1]
    check_range("UntunedWarmup", f"param_groups[{index}]['betas'][1]", beta2, 0.0, 1.0, high_open=True)
    return float(beta2)
