r"""LAMB (You, Li, Reddi, Hseu, Kumar, Bhojanapalli, Song, Demmel, Keutzer & Hsieh, "Large Batch
Optimization for Deep Learning: Training BERT in 76 minutes", ICLR 2020).

Reference: the paper's Algorithm 2 (the ICLR 2020 version), written out as plain equations in the
tests; ``torch_optimizer.Lamb`` 0.3.0 and ``pytorch_optimizer.Lamb`` 4.1.0 as second opinions for
the options that follow them.  Per parameter tensor :math:`x` (all norms are Euclidean norms of
the whole tensor):

.. math::

    g_t &\leftarrow g_t / \max(1, \lVert G_t\rVert / \texttt{max\_grad\_norm})
        && \text{(only with } \texttt{max\_grad\_norm};\ G_t \text{: every gradient of the optimizer)} \\
    m_t &= \beta_1 m_{t-1} + (1-\beta_1)\, g_t \\
    v_t &= \beta_2 v_{t-1} + (1-\beta_2)\, g_t^2 \\
    r_t &= \frac{m_t/(1-\beta_1^t)}{\sqrt{v_t/(1-\beta_2^t)} + \epsilon} + \lambda\, x_{t-1}
        && \text{(} \texttt{bias\_correction=False} \text{: } m_t/(\sqrt{v_t}+\epsilon) + \lambda x_{t-1}) \\
    \phi &= \min(\lVert x_{t-1}\rVert, \texttt{clamp\_value})
        && \text{(} \phi = \lVert x_{t-1}\rVert \text{ without } \texttt{clamp\_value}) \\
    x_t &= x_{t-1} - \eta\, \frac{\phi}{\lVert r_t\rVert}\, r_t
        && \text{(the trust ratio } \phi/\lVert r_t\rVert \text{ is 1 where } \phi = 0 \text{ or } \lVert r_t\rVert = 0)

The trust ratio makes the step of every tensor :math:`\eta` times its own norm, whatever the scale
of its gradient; the weight decay :math:`\lambda` enters :math:`r_t` (inside the ratio), as in the
paper.  Defaults: the paper's (bias correction, :math:`\phi` the identity, :math:`\epsilon=10^{-6}`
as its TensorFlow code).  The variants people use, as options:

* ``bias_correction=False, clamp_value=10``: the earlier versions of the paper (v3 had no bias
  correction) as ``cybertronai/pytorch-lamb`` implements them, which ``torch_optimizer.Lamb`` and
  ``pytorch_optimizer.Lamb`` follow (the weight norm clamped at 10 is the paper's
  :math:`\phi(z) = \min(z, \gamma_u)`).
* ``max_grad_norm``: NVIDIA's LAMB (apex ``FusedLAMB``, and timm's ``Lamb``, written to behave
  like it: bias correction and a global gradient clip at 1.0) divides every gradient by
  :math:`\max(1, \lVert G_t\rVert / c)`, the norm taken over all gradients of the optimizer (all
  param groups), before the moments.  Each group uses its own ``max_grad_norm``.  Not run against
  those packages here (apex needs CUDA, timm 1.0.31 imports torchvision); read from timm's source,
  its ``Lamb`` also skips the trust ratio where ``weight_decay=0`` unless ``always_adapt=True`` (with
  its defaults but no decay it is Adam with the clip), and its default ``weight_decay`` is 0.01.

Where the ports differ (the tests show each):

* ``torch_optimizer.Lamb(debias=True)`` multiplies the *step* by :math:`\sqrt{1-\beta_2^t}/(1-\beta_1^t)`
  after the trust ratio: the normalised step is then that factor times :math:`\eta\lVert x\rVert`,
  not the paper's bias-corrected direction (``bias_correction=True`` here).
* ``pytorch_optimizer.Lamb`` divides by :math:`\lVert r_t\rVert + \epsilon` in the trust ratio,
  always clamps the weight norm at 10, by default divides the step by :math:`1-\beta_1^t` (its
  first step is 10x the paper's; ``adam_debias=True`` turns that off) and decays the weights
  outside the ratio (``weight_decouple=True``); with ``eps=0``, ``adam_debias=True`` and
  ``weight_decouple=False`` it equals ``bias_correction=False, clamp_value=10``.  Its ``pre_norm`` clip divides by
  :math:`\lVert G_t\rVert + \epsilon` and writes the clipped gradient into ``p.grad``.

The rule reduces over each tensor (its norms), so ``elementwise`` is False: there is no
multi-tensor path, and the native path runs it as a loop nest (:mod:`optimlab.optim._loopnest`),
its norms summed in double precision (equal to the reference path up to rounding, not bit for bit).
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State
from ._math import global_grad_norm, is_zero, where
from ._validate import check_adam_family, check_range


def lamb(
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
    bias_correction: bool = True,
    clamp_value: Any = None,
    grad_scale: Any = 1.0,
) -> tuple[Tensor, State]:
    """One LAMB step of one tensor (the module docstring has the equations); returns the new param and state.

    ``grad_scale`` is the global clip's divisor :math:`\\max(1, \\lVert G_t\\rVert/c)`, computed by
    the class over all gradients.
    """
    grad = grad / grad_scale
    m = beta1 * state["exp_avg"] + (1 - beta1) * grad
    v = beta2 * state["exp_avg_sq"] + (1 - beta2) * (grad * grad)
    if bias_correction:
        r = (m / (1 - beta1**step)) / ((v / (1 - beta2**step)).sqrt() + eps)
    else:
        r = m / (v.sqrt() + eps)
    if not is_zero(weight_decay):
        r = r + weight_decay * param
    phi = (param * param).sum().sqrt()
    if clamp_value is not None:
        phi = phi.clamp(max=clamp_value)
    r_norm = (r * r).sum().sqrt()
    trust = where(phi > 0, where(r_norm > 0, phi / r_norm, 1.0), 1.0)
    return param - (lr * trust) * r, {"exp_avg": m, "exp_avg_sq": v}


class LAMB(RuleOptimizer):
    """LAMB: Adam's direction, scaled per tensor by the trust ratio ``||x|| / ||r||``.

    State per parameter: ``step``, ``exp_avg``, ``exp_avg_sq`` (the names of torch_optimizer's and
    pytorch_optimizer's Lamb, so their moments load).  Defaults are the paper's; see :func:`lamb`
    and the module docstring for the equations, the options and where the ports differ.
    """

    rule = staticmethod(lamb)
    elementwise = False

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1e-3,
        betas: tuple[float, float] = (0.9, 0.999),
        eps: float = 1e-6,
        weight_decay: float = 0.0,
        *,
        bias_correction: bool = True,
        clamp_value: float | None = None,
        max_grad_norm: float | None = None,
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
            bias_correction=bias_correction,
            clamp_value=clamp_value,
            max_grad_norm=max_grad_norm,
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
        if group["clamp_value"] is not None:
            check_range(name, "clamp_value", group["clamp_value"], 0.0, low_open=True)
        if group["max_grad_norm"] is not None:
            check_range(name, "max_grad_norm", group["max_grad_norm"], 0.0, low_open=True)

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        return {k: torch.zeros_like(param, memory_format=torch.preserve_format) for k in ("exp_avg", "exp_avg_sq")}

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        kwargs = super().rule_kwargs(group)
        max_grad_norm = group["max_grad_norm"]
        if max_grad_norm is not None:
            # the clip is global: it needs every gradient of the optimizer, which no single rule call sees
            kwargs["grad_scale"] = max(1.0, global_grad_norm(self, "max_grad_norm=None") / max_grad_norm)
        return kwargs
