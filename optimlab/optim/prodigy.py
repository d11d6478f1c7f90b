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

**How the class steps.** :math:`d_{k+1}` needs every tensor's terms of the sums before any
tensor can be updated, so a step is two passes over the tensors, each written once:
:func:`prodigy_sums` (``s`` and each tensor's two sums, from :func:`prodigy_terms`), then the
estimate, then :func:`prodigy_update` (the moments, :func:`prodigy_moments`, with :math:`d_k`, and
the update with :math:`d_{k+1}`).  That split moves the least memory two passes can: the first
reads the parameter, the gradient, ``s`` and ``p0`` and writes ``s``; the second is Adam's one pass.
Each pass takes the library's paths: on the CPU the native path (the first pass a loop nest, its
sums in double precision rounded once to the tensor's dtype; ``slice_p = 1`` only), else
``foreach`` (the same functions on ``TensorList`` s; by default on CUDA, as torch.optim) or one
tensor at a time (the sums by torch, in the tensor's dtype, as the authors').  The paths agree up
to the rounding of those sums (and torch's rounding of ``sqrt``); the torch paths bit for bit; and
the sums are each tensor's, added in order, so a split of the tensors into groups sums alike.  The estimate
(``d``, ``d_max``, ``d_numerator``, ``d_denom``, ``d_hat``, ``k``) is computed and kept as Python floats
on the CPU, as the authors' (a read waits for nothing there, and a float costs a fraction of a 0-dim
tensor's operation), and as float64 tensors on the parameters' device elsewhere, which the passes take
as such, so that on a GPU no step waits to read a number (the authors' code reads two per tensor; that
form is tested on the CPU, no GPU was at hand).  One consequence on a GPU: a step where
every gradient so far was 0 (below) still counts in the per-parameter ``step`` (a CPU tensor, as
torch.optim's, which the equations never read; ``k``, which they do, stays as theirs).  The class
is not swept under ``vmap`` (:mod:`optimlab.sweep` runs it as itself).

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

from . import _native
from ._base import RuleOptimizer, State, _values
from ._math import is_zero, where
from ._tensorlist import TensorList
from ._validate import check_betas, check_int, check_range

#: the entries of a param group the step reads as numbers (the estimate's own entries are tensors)
_OPTIONS = (
    "lr", "betas", "beta3", "eps", "weight_decay", "decouple", "use_bias_correction", "safeguard_warmup", "d0",
    "d_coef", "growth_rate", "slice_p",
)  # fmt: skip


def _coupled(param: Any, grad: Any, weight_decay: Any, decouple: bool) -> Any:
    """The gradient the moments see: with ``decouple=False``, the L2 term added (``p.grad`` itself is left)."""
    return grad + weight_decay * param if not is_zero(weight_decay) and not decouple else grad


def prodigy_moments(grad: Any, state: State, *, beta1: Any, beta2: Any, d: Any) -> State:
    """The moments of one tensor (or a ``TensorList``): ``exp_avg`` (absent with ``betas[0] = 0``), ``exp_avg_sq``."""
    new_state = {}
    if "exp_avg" in state:  # not a branch on beta1: it may be a traced number (the native path)
        new_state["exp_avg"] = beta1 * state["exp_avg"] + (d * (1 - beta1)) * grad
    new_state["exp_avg_sq"] = beta2 * state["exp_avg_sq"] + (d * d * (1 - beta2)) * (grad * grad)
    return new_state


def prodigy_terms(grad: Any, param: Any, p0: Any, s: Any, *, beta3: Any, weight: Any) -> tuple[Any, Any, Any]:
    """The estimate's terms of one (sliced) tensor, elementwise: the new ``s``, :math:`g\\,(x_0 - x)` and
    :math:`\\lvert s\\rvert`, the last two summed over every tensor by the step.

    ``weight`` is :math:`(d_k/d_0)\\,\\delta_k`, or :math:`(d_k/d_0)\\,d_k` with ``safeguard_warmup``.
    """
    new_s = beta3 * s + weight * grad
    return new_s, grad * (p0 - param), new_s.abs()


def prodigy_sums(
    param: Any,
    grad: Any,
    state: State,
    step: Any,
    *,
    beta3: Any,
    weight: Any,
    weight_decay: Any,
    decouple: bool,
) -> tuple[Any, State]:
    r"""The first pass, a rule of the library's form, of one (sliced) tensor: the new ``s`` and the tensor's two
    terms of the estimate's sums, ``dot`` (:math:`\sum g\,(x_0 - x)`) and ``size`` (:math:`\sum \lvert s\rvert`).

    ``param`` is returned as it is; ``dot`` and ``size`` are the caller's buffers, not kept.  On the CPU the
    native path runs it as a loop nest (the sums in double precision, rounded once to the tensor's dtype).
    """
    grad = _coupled(param, grad, weight_decay, decouple)
    new_s, term, abs_s = prodigy_terms(grad, param, state["p0"], state["s"], beta3=beta3, weight=weight)
    return param, {**state, "s": new_s, "dot": term.sum(), "size": abs_s.sum()}


def prodigy_update(
    param: Any,
    grad: Any,
    state: State,
    step: Any,
    *,
    beta1: Any,
    beta2: Any,
    d: Any,
    eps: Any,
    weight_decay: Any,
    decouple: bool,
    dlr: Any,
    d_next: Any,
    moments: bool = True,
) -> tuple[Any, State]:
    """The second pass, a rule of the library's form: the moments (with :math:`d_k`; not with ``moments=False``,
    a group whose lr is 0), then the new param from them and :math:`d_{k+1}`."""
    grad = _coupled(param, grad, weight_decay, decouple)
    if moments:
        state = prodigy_moments(grad, state, beta1=beta1, beta2=beta2, d=d)
    denom = state["exp_avg_sq"].sqrt() + d_next * eps
    if not is_zero(weight_decay) and decouple:
        param = param - (weight_decay * dlr) * param
    if "exp_avg" in state:
        param = param - dlr * (state["exp_avg"] / denom)
    else:
        param = param - (dlr * d_next) * (grad / denom)
    return param, state


class Prodigy(RuleOptimizer):
    """Prodigy: Adam with a step size estimated from the distance travelled (``lr`` scales the estimate).

    Same constructor, defaults and state as the authors' ``prodigyopt.Prodigy`` (per parameter
    ``step``, ``s``, ``p0``, ``exp_avg`` (not with ``betas[0] = 0``), ``exp_avg_sq``; the estimate in
    every param group: floats, or float64 tensors once it has stepped on a GPU), so its checkpoints load as they
    are.  See
    the module docstring for the equations, and for why and how the step makes two passes.
    """

    # the base class's rule form; the step itself is this class's (two passes, module docstring)
    rule = staticmethod(prodigy_update)
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
        """One step of every parameter: the first pass (``s``, the estimate's sums), the estimate, the second (the
        moments, the updates).

        The estimate stays a tensor on the parameters' device throughout: on a GPU nothing is read on the host.
        """
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        options = [_options(group) for group in self.param_groups]
        first = options[0]
        lr = max(o["lr"] for o in options)
        self._check_step(options, lr)  # before anything changes
        work = []
        for group, opts in zip(self.param_groups, options):
            params = [p for p in group["params"] if p.grad is not None]
            if params:
                work.append((group, opts, params, self._advance(group, params)))
        if not work:
            return loss
        head = self.param_groups[0]
        device = work[0][2][0].device
        host = _on_host(device)
        # the estimate's numbers: Python floats on the CPU (as the authors'), float64 tensors on the device elsewhere
        d, d_max, numerator, k = (_number(head[key], device, host) for key in ("d", "d_max", "d_numerator", "k"))
        beta1, beta2 = first["betas"]
        beta3 = beta2**0.5 if first["beta3"] is None else first["beta3"]
        dlr = d * lr
        if first["use_bias_correction"]:
            dlr = dlr * ((1 - beta2 ** (k + 1)) ** 0.5 / (1 - beta1 ** (k + 1)))

        dots, sizes = [], []  # every tensor's terms, in order: a split into groups sums alike
        for group, opts, params, prepared in work:
            if is_zero(opts["lr"]):  # the authors': such a group adds nothing and keeps its moments
                continue
            weight = (d / opts["d0"]) * (d if opts["safeguard_warmup"] else dlr)
            hyper = {"beta3": beta3, "weight": weight, "weight_decay": opts["weight_decay"]}
            pairs = self._first_pass(group, opts["slice_p"], params, prepared, {**hyper, "decouple": first["decouple"]})
            dots.append((d / opts["d0"]) * dlr * pairs[:, 0])
            sizes.append(pairs[:, 1])
        denominator, dot = (_total(parts, device, host) for parts in (sizes, dots))
        # every gradient so far 0 where the sums look: the moments moved, nothing else does (the authors')
        zero = denominator == 0
        numerator_new = numerator * beta3 + dot
        # (divided by 1 where the denominator is 0: that estimate is not kept)
        d_hat = first["d_coef"] * numerator_new / where(zero, 1.0, denominator)
        # Python's max(a, b) and min(a, b) (a unless b is larger, smaller), as the authors' code takes them
        d_new = where((d == options[-1]["d0"]) & (d_hat > d), d_hat, d)
        d_max_new = where(d_hat > d_max, d_hat, d_max)
        grown = d_new * first["growth_rate"]
        d_new = where(grown < d_max_new, grown, d_max_new)
        d_next = where(zero, d, d_new)
        hyper = {"beta1": beta1, "beta2": beta2, "d": d, "dlr": where(zero, 0.0, dlr), "d_next": d_next}
        for group, opts, params, prepared in work:
            own = {"eps": opts["eps"], "weight_decay": opts["weight_decay"], "moments": not is_zero(opts["lr"])}
            self._second_pass(group, params, prepared, {**hyper, **own, "decouple": first["decouple"]})

        def kept(key: str, new: Any) -> Any:
            return where(zero, _number(head.get(key, new), device, host), new)

        estimate = {
            "d_numerator": kept("d_numerator", numerator_new),
            "d_denom": kept("d_denom", denominator),
            "d": d_next,
            "d_max": kept("d_max", d_max_new),
            "d_hat": kept("d_hat", d_hat),
            "k": k + where(zero, 0, 1),
        }
        for group in self.param_groups:
            group.update(estimate)
        if host and zero:  # the step counts stay where nothing moved (a device's estimate is not read: they move)
            torch._foreach_add_([self.state[p]["step"] for _, _, params, _ in work for p in params], -1)
        return loss

    def _first_pass(
        self, group: dict[str, Any], slice_p: int, params: list[Tensor], prepared: list[Any], hyper: dict[str, Any]
    ) -> Tensor:
        """``s`` of ``group``'s tensors written (:func:`prodigy_sums`); returns each tensor's two sums, ``dot`` and
        ``size``, as the rows of a float64 tensor (each taken in its tensor's dtype, as the authors').
        Natively where it can (``slice_p = 1``, float32 or float64 CPU tensors), else by torch."""
        sums = torch.empty(len(params), 2, dtype=torch.float64, device=params[0].device)
        rest = list(range(len(params)))
        if slice_p == 1 and _native.wanted(self, group):
            rest = self._first_pass_native(params, prepared, hyper, sums)
        for batch in _batches(group, params, rest):
            wrap = TensorList if len(batch) > 1 else _single
            p = wrap(_sliced(params[i], slice_p) for i in batch)
            g = wrap(_sliced(prepared[i][0], slice_p) for i in batch)
            state = {k: wrap(prepared[i][1][k] for i in batch) for k in ("s", "p0")}
            _, new_state = prodigy_sums(p, g, state, 0.0, **hyper)
            state["s"].copy_(new_state["s"])
            pairs = [new_state[k] if len(batch) > 1 else [new_state[k]] for k in ("dot", "size")]
            sums[batch] = torch.stack([torch.stack(list(terms)) for terms in pairs], 1).to(torch.float64)
        return sums

    def _first_pass_native(
        self, params: list[Tensor], prepared: list[Any], hyper: dict[str, Any], sums: Tensor
    ) -> list[int]:
        """The native first pass of the tensors it takes, one call per dtype and form of ``p0`` (a 0-dim zero for
        a tensor that started at zero); their sums into ``sums``.  Returns the others."""
        batches: dict[tuple[torch.dtype, bool], list[int]] = {}
        for i, p in enumerate(params):
            batches.setdefault((p.dtype, prepared[i][1]["p0"].dim() == 0), []).append(i)
        rest = []
        for (dtype, _), batch in batches.items():
            pairs = torch.empty(2, len(batch), dtype=dtype)
            states = [{"s": prepared[i][1]["s"], "p0": prepared[i][1]["p0"]} for i in batch]
            ps, gs = [params[i] for i in batch], [prepared[i][0] for i in batch]
            columns = {"dot": pairs[0], "size": pairs[1]}  # not a 0-dim view per tensor: a step of many is overhead
            if params[batch[0]].is_cpu and _native.run(
                prodigy_sums, ps, gs, states, 0.0, hyper, vectors=True, columns=columns
            ):
                sums[batch] = pairs.T.to(torch.float64)
            else:
                rest += batch
        return sorted(rest)

    def _second_pass(
        self, group: dict[str, Any], params: list[Tensor], prepared: list[Any], hyper: dict[str, Any]
    ) -> None:
        """The moments and updates of ``group``'s tensors (:func:`prodigy_update`): natively where it can, else by
        torch."""
        rest = list(range(len(params)))
        keys = [k for k in ("exp_avg", "exp_avg_sq") if k in prepared[0][1]] if prepared else []
        if _native.wanted(self, group):
            by_dtype: dict[torch.dtype, list[int]] = {}
            for i in rest:
                by_dtype.setdefault(params[i].dtype, []).append(i)
            rest = []
            for batch in by_dtype.values():
                # only the moments: p0 and s are not of the param's shape
                states = [{k: prepared[i][1][k] for k in keys} for i in batch]
                ps, gs = [params[i] for i in batch], [prepared[i][0] for i in batch]
                if not (params[batch[0]].is_cpu and _native.run(prodigy_update, ps, gs, states, 0.0, hyper)):
                    rest += batch
            rest.sort()
        for batch in _batches(group, params, rest):
            wrap = TensorList if len(batch) > 1 else _single
            p = wrap(params[i] for i in batch)
            state = {k: wrap(prepared[i][1][k] for i in batch) for k in keys}
            new_p, new_state = prodigy_update(p, wrap(prepared[i][0] for i in batch), state, 0.0, **hyper)
            for k in keys:
                state[k].copy_(new_state[k])
            p.copy_(new_p)

    def _check_step(self, options: list[dict[str, Any]], lr: float) -> None:
        """The errors of a step that cannot be taken: groups whose lr differ, float16 parameters."""
        for i, (group, opts) in enumerate(zip(self.param_groups, options)):
            if opts["lr"] not in (lr, 0.0):
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


def _on_host(device: torch.device) -> bool:
    """Whether the estimate's numbers are Python floats (on the CPU, where reading one waits for nothing and a
    float costs a fraction of a 0-dim tensor's operation) rather than float64 tensors on ``device`` (a GPU's: a
    read there would wait for every kernel queued)."""
    return device.type == "cpu"


def _number(value: Any, device: torch.device, host: bool) -> Any:
    """One of the estimate's numbers (a Python number from a fresh group or the authors' checkpoint, a tensor
    from a device's step) in the form the step computes with (:func:`_on_host`)."""
    return float(value) if host else torch.as_tensor(value, dtype=torch.float64, device=device)


def _total(parts: list[Tensor], device: torch.device, host: bool) -> Any:
    """The sum of the tensors' terms, in order, as one of the estimate's numbers (0 with no terms)."""
    total = torch.cat(parts).sum() if parts else torch.zeros((), dtype=torch.float64, device=device)
    return total.item() if host else total


def _options(group: dict[str, Any]) -> dict[str, Any]:
    return _values({key: group[key] for key in _OPTIONS})


def _batches(group: dict[str, Any], params: list[Tensor], rest: list[int]) -> list[list[int]]:
    """The tensors of ``rest`` (indices into ``params``) by torch: all at once (``foreach``, by default
    on CUDA as torch.optim), else one at a time."""
    foreach = group["foreach"]
    if foreach is None:
        foreach = all(params[i].is_cuda for i in rest)
    if foreach:
        return [rest] if rest else []
    return [[i] for i in rest]


def _single(tensors: Iterable[Tensor]) -> Tensor:
    (tensor,) = tensors
    return tensor


def _sliced(x: Any, slice_p: int) -> Any:
    """Every ``slice_p``-th element of the flattened tensor(s), where the estimate looks."""
    if isinstance(x, TensorList):
        return TensorList(t.flatten()[::slice_p] for t in x)
    return x.flatten()[::slice_p]
