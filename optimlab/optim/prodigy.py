r"""Prodigy (Mishchenko & Defazio, "Prodigy: An Expeditiously Adaptive Parameter-Free Learner", ICML 2024).

Reference: ``prodigyopt`` 1.1.2, the authors' package (names, defaults, state layout, results).

Prodigy is Adam whose step size :math:`d_t` is estimated from the distance travelled.  With
:math:`x_0` each tensor's starting point, :math:`\gamma` the ``lr`` (1 by default: a multiplier of
the estimate, not a step size), :math:`k` the number of steps taken and
:math:`\beta_3 = \sqrt{\beta_2}` unless given:

.. math::

    g &\leftarrow g + \lambda x && \text{(coupled decay only: } \texttt{decouple=False}) \\
    \delta_k &= d_k \gamma \sqrt{1-\beta_2^{k+1}}/(1-\beta_1^{k+1})
        && \text{(the bias correction only with } \texttt{use\_bias\_correction}) \\
    m &= \beta_1 m + (1-\beta_1)\, d_k\, g, \qquad v = \beta_2 v + (1-\beta_2)\, d_k^2\, g^2 \\
    r_{k+1} &= \beta_3 r_k + \frac{d_k}{d_0}\,\delta_k \sum \langle g, x_0 - x\rangle, \qquad
    s = \beta_3 s + \frac{d_k}{d_0}\,\delta_k\, g
        && \text{(} \texttt{safeguard\_warmup} \text{: } d_k \text{ in place of } \delta_k \text{ in } s) \\
    \hat d &= c\, r_{k+1} / \textstyle\sum \lvert s\rvert, \qquad
    d_{k+1} = \min\bigl(d^{\max}, \rho\, d_k\bigr), \quad d^{\max} = \max(d^{\max}, \hat d)
        && \text{(the first time, } d = \max(d_0, \hat d)) \\
    x &\leftarrow x - \delta_k\, \frac{m}{\sqrt{v} + d_{k+1}\epsilon}
        && \text{(decoupled decay first: } x \leftarrow x - \lambda \delta_k x)

(:math:`c` is ``d_coef``, :math:`\rho` ``growth_rate``; with ``betas[0] = 0`` the step is
:math:`\delta_k d_{k+1}\, g/(\sqrt v + d_{k+1}\epsilon)`.)  The sums run over *every* tensor of
every param group: :math:`d` is one number for the whole optimizer.

**How the class steps.** Each tensor's equations are one function, :func:`prodigy`, given the
estimate :math:`d_k`, the new one :math:`d_{k+1}` and :math:`\delta_k`; it returns the tensor's
new value and state and its two terms of the sums.  :math:`d_{k+1}` needs every tensor's terms
first, which no rule of one tensor can see, so :meth:`Prodigy.step` calls it twice per tensor:
once for the terms (discarding the rest), then, with :math:`d_{k+1}` known, for the update.  The
step therefore takes the reference path only (no native or multi-tensor path; ``fast``,
``fused`` and ``foreach`` are accepted and change nothing), reads each tensor twice, and cannot be
swept.

As in the authors' code, the estimate's numbers live in every param group (``d``, ``d_max``,
``d_numerator``, ``d_denom``, ``d_hat``, ``k``) and the global options (``betas``, ``beta3``,
``d_coef``, ``growth_rate``, ``use_bias_correction``, ``decouple``) are read from the first
group; ``weight_decay``, ``eps``, ``d0``, ``safeguard_warmup`` and ``slice_p`` (the sums use
every ``slice_p``-th element of each tensor, to save memory) are each group's (the test "the
first time" compares :math:`d` with the last group's ``d0``, as theirs does).  A group may have
``lr=0`` (its parameters add nothing to the estimate and take only the decoupled decay with the
others' :math:`\delta_k`, as in the authors' code); any other ``lr`` must be the same in every
group.  Until some gradient is nonzero, nothing moves and ``k`` stays.

Where this class departs from the authors' code: ``p.grad`` is left as it is (theirs adds the
coupled decay into it in place); ``maximize`` is supported; ``fsdp_in_use=True`` (sums across
processes) is refused; a float16 parameter is refused with an error before anything changes (the
second moment :math:`d^2 g^2` underflows in float16, and their first step makes the parameter infinite;
bfloat16 holds it).
"""

from __future__ import annotations

from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import Tensor

from ._base import RuleOptimizer, State, _values
from ._math import is_zero
from ._validate import check_betas, check_int, check_range


def prodigy(
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
    weight_decay: Any,
    decouple: bool,
    safeguard_warmup: bool,
    slice_p: int,
    d0: Any,
    d: Any,
    d_next: Any,
    dlr: Any,
) -> tuple[Tensor, State, tuple[Tensor, Tensor]]:
    """One Prodigy step of one tensor (the module docstring has the equations).

    ``d`` is :math:`d_k`, ``d_next`` :math:`d_{k+1}` and ``dlr`` :math:`\\delta_k`.  Returns the new
    param, the new state and the tensor's terms of the estimate's sums, :math:`\\langle g, x_0 - x\\rangle`
    (not yet weighted) and :math:`\\sum\\lvert s\\rvert` (0 in a group with ``lr=0``, whose moments stay).
    """
    decay = not is_zero(weight_decay)
    if decay and not decouple:
        grad = grad + weight_decay * param
    new_state = dict(state)
    dot = sum_s = torch.zeros((), dtype=param.dtype)
    if not is_zero(lr):
        sliced = grad.flatten()[::slice_p]
        dot = torch.dot(sliced, state["p0"] - param.flatten()[::slice_p])
        if beta1 > 0:
            new_state["exp_avg"] = beta1 * state["exp_avg"] + (d * (1 - beta1)) * grad
        new_state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (d * d * (1 - beta2)) * (grad * grad)
        new_state["s"] = beta3 * state["s"] + ((d / d0) * (d if safeguard_warmup else dlr)) * sliced
        sum_s = new_state["s"].abs().sum()
    denom = new_state["exp_avg_sq"].sqrt() + d_next * eps
    if decay and decouple:
        param = param - (weight_decay * dlr) * param
    if beta1 > 0:
        param = param - dlr * (new_state["exp_avg"] / denom)
    else:
        param = param - (dlr * d_next) * (grad / denom)
    return param, new_state, (dot, sum_s)


class Prodigy(RuleOptimizer):
    """Prodigy: Adam with a step size estimated from the distance travelled (``lr`` scales the estimate).

    Same constructor, defaults and state as the authors' ``prodigyopt.Prodigy`` (per parameter
    ``step``, ``s``, ``p0``, ``exp_avg`` (not with ``betas[0] = 0``), ``exp_avg_sq``; the estimate in
    every param group), so its checkpoints load as they are.  See :func:`prodigy` and the module
    docstring for the equations, and for why and how the step calls the rule twice.
    """

    rule = staticmethod(prodigy)
    elementwise = False
    # lr multiplies the estimate d and the authors recommend 1.0 for every network: the lab's default
    # [1e-5, 1] would put that value on its edge.  One decade on either side of it (log-uniform): the authors
    # suggest moving d_coef rather than lr, so the optimum should lie well inside.
    tune_lr_range = (0.1, 10.0)

    def __init__(
        self,
        params: Iterable[Any],
        lr: float = 1.0,
        betas: tuple[float, float] = (0.9, 0.999),
        beta3: float | None = None,
        eps: float = 1e-8,
        weight_decay: float = 0.0,
        decouple: bool = True,
        use_bias_correction: bool = False,
        safeguard_warmup: bool = False,
        d0: float = 1e-6,
        d_coef: float = 1.0,
        growth_rate: float = float("inf"),
        fsdp_in_use: bool = False,
        slice_p: int = 1,
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
            beta3=beta3,
            eps=eps,
            weight_decay=weight_decay,
            d=d0,
            d0=d0,
            d_max=d0,
            d_numerator=0.0,
            d_coef=d_coef,
            k=0,
            growth_rate=growth_rate,
            use_bias_correction=use_bias_correction,
            decouple=decouple,
            safeguard_warmup=safeguard_warmup,
            fsdp_in_use=fsdp_in_use,
            slice_p=slice_p,
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
        if group["beta3"] is not None:
            check_range(name, "beta3", group["beta3"], 0.0, 1.0, high_open=True)
        check_range(name, "eps", group["eps"], 0.0, low_open=True)
        check_range(name, "weight_decay", group["weight_decay"], 0.0)
        check_range(name, "d0", group["d0"], 0.0, low_open=True)
        check_range(name, "d_coef", group["d_coef"], 0.0, low_open=True)
        check_range(name, "growth_rate", group["growth_rate"], 1.0)
        check_int(name, "slice_p", group["slice_p"], 1)
        if group["fsdp_in_use"]:
            raise ValueError(
                f"{name}: invalid fsdp_in_use=True: optimlab does not sum the estimate across processes; "
                "use fsdp_in_use=False"
            )

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        state = {"s": torch.zeros_like(param.flatten()[:: group["slice_p"]])}
        # as the authors': an all-zero tensor keeps a 0-dim zero as its start (x0 - x is then -x)
        state["p0"] = param.flatten()[:: group["slice_p"]].clone() if param.any() else param.new_zeros(())
        if self.param_groups[0]["betas"][0] > 0:
            state["exp_avg"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        state["exp_avg_sq"] = torch.zeros_like(param, memory_format=torch.preserve_format)
        return state

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One step of every parameter (two passes: the estimate's sums, then the updates)."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        first = _values(self.param_groups[0])
        beta1, beta2 = first["betas"]
        beta3 = beta2**0.5 if first["beta3"] is None else first["beta3"]
        k, d, d_max = first["k"], first["d"], first["d_max"]
        lr = max(_values(group)["lr"] for group in self.param_groups)
        correction = (1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1)) if first["use_bias_correction"] else 1
        dlr = d * lr * correction
        common = dict(beta1=beta1, beta2=beta2, beta3=beta3, decouple=first["decouple"], d=d, dlr=dlr)

        self._check_step(lr)  # before anything changes
        work = []
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                values = _values(group)
                kwargs = {
                    key: values[key] for key in ("lr", "eps", "weight_decay", "safeguard_warmup", "slice_p", "d0")
                }
                work.append((params, self._prepare(group, params), {**common, **kwargs}))

        delta = denominator = 0.0  # summed in the authors' order, for equal results
        for params, prepared, kwargs in work:
            d0 = kwargs["d0"]
            for p, (grad, tensors, step) in zip(params, prepared):
                _, _, (dot, sum_s) = prodigy(p, grad, tensors, step, d_next=d, **kwargs)
                if not is_zero(kwargs["lr"]):
                    delta += (d / d0) * dlr * dot.item()
                    denominator += sum_s.item()
        if denominator == 0:  # every gradient so far 0 where the sums look: the moments move, nothing else
            for params, prepared, kwargs in work:
                for p, (grad, tensors, step) in zip(params, prepared):
                    _, new_state, _ = prodigy(p, grad, tensors, step, d_next=d, **kwargs)
                    for key, value in new_state.items():
                        tensors[key].copy_(value)
                    self.state[p]["step"] -= 1
            return loss
        numerator = first["d_numerator"] * beta3 + delta

        d_hat = first["d_coef"] * numerator / denominator
        if d == self.param_groups[-1]["d0"]:
            d = max(d, d_hat)
        d_max = max(d_max, d_hat)
        d = min(d_max, d * first["growth_rate"])
        for params, prepared, kwargs in work:
            for p, (grad, tensors, step) in zip(params, prepared):
                new_p, new_state, _ = prodigy(p, grad, tensors, step, d_next=d, **kwargs)
                p.copy_(new_p)
                for key, value in new_state.items():
                    tensors[key].copy_(value)
        for group in self.param_groups:
            group.update(d_numerator=numerator, d_denom=denominator, d=d, d_max=d_max, d_hat=d_hat, k=group["k"] + 1)
        return loss

    def _check_step(self, lr: float) -> None:
        """The errors of a step that cannot be taken: groups whose lr differ, float16 parameters."""
        for i, group in enumerate(self.param_groups):
            if _values(group)["lr"] not in (lr, 0.0):
                raise ValueError(
                    f"Prodigy: invalid lr={group['lr']!r} in param group {i}: every group takes the same lr "
                    f"(here {lr!r}), or 0"
                )
            for p in group["params"]:
                if p.grad is not None and p.dtype == torch.float16:
                    raise ValueError(
                        f"Prodigy: invalid float16 parameter (a tensor of shape {tuple(p.shape)} in param group {i}): "
                        "its second moment holds d^2 g^2 (about 1e-12 g^2 at d0=1e-6), below float16's smallest "
                        "number, so every step would be infinite or NaN (as in the authors' code); use bfloat16 or "
                        "float32"
                    )
