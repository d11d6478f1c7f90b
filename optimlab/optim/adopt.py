r"""ADOPT (Taniguchi, Harada, Minegishi, Oshima, Jeong, Nagahara, Iiyama, Suzuki, Iwasawa & Matsuo,
"ADOPT: Modified Adam Can Converge with Any β2 with the Optimal Rate", NeurIPS 2024).

Reference: ``torch-adopt`` 0.1.0 (module ``adopt``), the authors' package (names, defaults, state
layout, results); the first release of their code (``iShohei220/adopt``, before 2024-11-21) for
``original=True``.

.. math::

    g_t &= \nabla f(\theta_{t-1}) + \lambda\,\theta_{t-1}
        && \text{(L2; with } \texttt{decouple=True}\ \theta_{t-1} \leftarrow (1-\alpha\lambda)\,\theta_{t-1}) \\
    v_1 &= g_1^2, \qquad m_1 = 0, \qquad \theta_1 = \theta_0
        && \text{(the first gradient only initialises } v) \\
    n_t &= \operatorname{clip}\Bigl(\frac{g_t}{\max(\sqrt{v_{t-1}}, \epsilon)},\ c_t\Bigr),
        \qquad c_t = (t-1)^{1/4} && (t \ge 2) \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, n_t \\
    \theta_t &= \theta_{t-1} - \alpha\, m_t \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2

Unlike Adam, the gradient is normalised by the second moment of the *previous* gradients
(:math:`v_{t-1}`, which does not contain :math:`g_t`) and before it enters the momentum; that is
what lets ADOPT converge for any :math:`\beta_2` (hence its default 0.9999). :math:`c_t` bounds the
normalised gradient where :math:`v_{t-1}` is near 0 (``clip_lambda``, a function of the number of
updates so far, :math:`t-1`; ``None`` turns clipping off). There is no bias correction.

The authors changed the algorithm on 2024-11-21 (the current package is the second form); the
first form is ``original=True``:

* no clipping (``clip_lambda`` must be ``None`` with it, as the authors advise for reproducing it),
* :math:`m_2 = n_2` (the first normalised gradient, not :math:`(1-\beta_1) n_2`),
* decoupled weight decay also at step 1, where the current code skips it.

(``clip_lambda=None`` alone is the current code without clipping, which the authors' README calls
the original behaviour; it still differs in the first momentum, by the factor
:math:`1-\beta_1`, and in the decoupled decay of step 1.)

``pytorch_optimizer.ADOPT`` (4.1.0) differs from the authors' code in two places (the tests show
both): it evaluates ``clip_lambda`` at :math:`t` instead of :math:`t-1` (its first update clips at
:math:`2^{1/4}`, the authors' at 1), and it applies decoupled weight decay at step 1.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import is_zero, where
from ._validate import check_adam_family, check_flag


def quarter_power(updates: Any) -> Any:
    """The authors' default clipping schedule, :math:`c = (t-1)^{1/4}` (their ``lambda step: step**0.25``)."""
    return updates**0.25


def adopt(
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
    decouple: bool = False,
    clip_lambda: Callable[[Any], Any] | None = quarter_power,
    original: bool = False,
) -> tuple[Tensor, State]:
    """One ADOPT step (the module docstring has the equations); returns the new param and state."""
    first = step == 1
    if not is_zero(weight_decay):
        if decouple:
            # the authors' form: in float32 it rounds far less than param * (1 - lr * weight_decay)
            decayed = param - (lr * weight_decay) * param
            param = decayed if original else where(first, param, decayed)
        else:
            grad = grad + weight_decay * param
    m, v = state["exp_avg"], state["exp_avg_sq"]
    normed = grad / v.sqrt().clamp(min=eps)
    if clip_lambda is not None:
        clip = clip_lambda(step - 1)
        normed = normed.clamp(-clip, clip)
    m_next = beta1 * m + (1 - beta1) * normed
    if original:
        m_next = where(step == 2, normed, m_next)
    return where(first, param, param - lr * m_next), {
        "exp_avg": where(first, m, m_next),
        "exp_avg_sq": where(first, grad * grad, beta2 * v + (1 - beta2) * (grad * grad)),
    }


class ADOPT(RuleOptimizer):
    """ADOPT: Adam that normalises each gradient by the second moment of the ones before it.

    Same constructor, defaults and state (``step``, ``exp_avg``, ``exp_avg_sq``) as the authors'
    ``adopt.ADOPT`` (``torch-adopt`` 0.1.0), so its state_dict loads as it is; ``clip_lambda`` is,
    as there, an attribute of the optimizer and not saved with it. ``original=True`` is the first
    release's algorithm. See :func:`adopt` and the module docstring for the equations.
    """

    rule = staticmethod(adopt)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.9999),
        eps: float = 1e-6,
        clip_lambda: Callable[[Any], Any] | None = quarter_power,
        weight_decay: float = 0.0,
        decouple: bool = False,
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
        original: bool = False,
    ) -> None:
        check_flag("ADOPT", "original", original)  # before it decides what clip_lambda may be
        if clip_lambda is not None and not callable(clip_lambda):
            raise ValueError(
                f"ADOPT: invalid clip_lambda={clip_lambda!r}: expected a function of the number of updates "
                "(e.g. lambda step: step ** 0.25) or None"
            )
        if original and clip_lambda is not None:
            raise ValueError(
                f"ADOPT: invalid clip_lambda={clip_lambda!r} with original=True: the first release does not clip; "
                "pass clip_lambda=None"
            )
        self.clip_lambda = clip_lambda
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decouple=decouple, original=original)
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
        check_adam_family(type(self).__name__, group)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in ("exp_avg", "exp_avg_sq")}

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        return {**super().rule_kwargs(group), "clip_lambda": self.clip_lambda}
