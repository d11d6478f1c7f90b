"""The base class that turns one pure update rule into a ``torch.optim.Optimizer``.

Each optimizer module defines its update rule once, as a function

    rule(param, grad, state, step, **hyperparameters) -> (new_param, new_state)

that only does arithmetic on its inputs: no in-place writes, no Python branches on hyperparameter
values.  That single definition then serves every path:

* per parameter: tensors in, tensors out, then copied back into the parameter and its state;
* ``foreach``: the same call with :class:`~optimlab.optim._tensorlist.TensorList` arguments, so a
  whole parameter group is updated by multi-tensor kernels;
* the batched sweep engine: the same call under ``torch.vmap`` with one hyperparameter value per
  configuration;
* the native fast path: the same call traced once and translated into a C loop
  (:mod:`~optimlab.optim._codegen`, :mod:`~optimlab.optim._native`).

Hyperparameters may therefore be Python numbers or tensors that broadcast.  ``step`` is the
1-based step count of the state being updated (a Python float here, a tensor elsewhere).
"""

from __future__ import annotations

import functools
import inspect
import numbers
import warnings
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import _native
from ._tensorlist import TensorList
from ._validate import check_flag

State = dict[str, Tensor]

#: elements per piece when the per-parameter path splits a large tensor (8 MB of float32)
CHUNK = 1 << 21
Rule = Callable[..., tuple[Tensor, State]]


class RuleOptimizer(torch.optim.Optimizer):
    """A ``torch.optim.Optimizer`` whose update is a pure rule (see the module docstring).

    Subclasses set ``rule`` and implement :meth:`validate`, :meth:`init_state` and
    :meth:`rule_kwargs`.  Common options, the same as torch.optim's:

    foreach:
        for tensors the native path does not take: ``None`` (default) uses the multi-tensor path
        on CUDA and the per-parameter path on the CPU, as torch.optim does; ``True``/``False``
        force it.
    maximize:
        maximize the objective (the rule sees ``-grad``; ``p.grad`` itself is never modified).
    fast:
        the native fast path (:mod:`optimlab.optim._native`): the same rule compiled into one
        C loop over all the group's tensors, for float32/float64 CPU tensors.  ``None`` (default)
        takes it when a C compiler is found, ``True`` also warns once when none is, ``False``
        turns it off (the reference paths below).  Like ``foreach``, it is also a param-group
        entry (``group["fast"]``).
    fused, capturable, differentiable:
        torch.optim's flags, accepted so that switching from torch is a one-line change, and kept
        in every param group as torch keeps them.  ``fused=True`` asks for the native path: it
        sets the group's ``fast`` to ``True`` (an error with ``fast=False``, and, as in torch, with
        ``foreach=True``); ``fused=None``/``False`` change nothing.  ``capturable=True`` (CUDA-graph
        capture) and ``differentiable=True`` (autograd through the step) are refused with an
        error saying so; ``False`` is torch's default.

    Hyperparameters are checked wherever they enter: the constructor (its arguments even where
    every group overrides them), :meth:`add_param_group` and :meth:`load_state_dict` (a loaded
    group is checked as a constructed one; nothing changes if it fails).  A number may be a
    Python number, a NumPy scalar or a one-element tensor; the step reads such a tensor's value
    when it runs, so a scheduler may change it in place.  Options whose default is ``True`` or
    ``False`` take only ``True`` or ``False``.  A parameter may appear only once in all groups.

    Policies that hold for every optimizer of the library:

    * Parameters whose ``.grad`` is ``None`` are skipped and their state is left as it was.
    * The state has the parameter's dtype and device (as in torch.optim), except ``step``, a
      float32 scalar tensor.  Arithmetic on bfloat16/float16 parameters is therefore done in that
      precision.
    * Non-finite gradients are not intercepted: NaN and inf propagate into the parameters exactly
      as they do in torch.optim; check ``torch.isfinite`` on the loss or use a GradScaler.
    * Sparse and complex gradients raise ``RuntimeError``.
    """

    rule: ClassVar[Rule]
    #: whether :meth:`rule` only uses elementwise operations, so that it can run on TensorLists.
    elementwise: ClassVar[bool] = True
    #: the param-group entry where the reference counts steps per group instead of per parameter
    #: (Adan's ``step``, Schedule-Free's ``k``): a loaded state without its own count takes it
    group_step: ClassVar[str | None] = None
    #: the learning-rate range ``optimlab tune`` searches (log-uniform) when the user gives none: ``(low, high)``
    #: for a class whose ``lr`` is not a step size (Prodigy's multiplies its own estimate); ``None``, the lab's
    #: default (:data:`optimlab.protocol.LR_RANGE`).  Any optimizer class may set it, ours or not.
    tune_lr_range: ClassVar[tuple[float, float] | None] = None

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
        fused: bool | None = None,
        capturable: bool = False,
        differentiable: bool = False,
    ) -> None:
        defaults = dict(
            defaults,
            foreach=foreach,
            maximize=maximize,
            fast=fast,
            fused=fused,
            capturable=capturable,
            differentiable=differentiable,
        )
        # the arguments themselves, also where every param group overrides them (as torch.optim)
        self._check_group(defaults)
        super().__init__(params, defaults)

    # -- what a subclass defines -------------------------------------------------------------
    def validate(self, group: dict[str, Any]) -> None:
        """Raise ``ValueError`` for any hyperparameter of ``group`` outside its range."""
        raise NotImplementedError

    def init_state(self, param: Tensor, group: dict[str, Any]) -> State:
        """The tensors of a fresh state for ``param`` (``step`` is added by the base class)."""
        raise NotImplementedError

    def rule_kwargs(self, group: dict[str, Any]) -> dict[str, Any]:
        """The keyword arguments of :attr:`rule` for the hyperparameters of ``group``.

        By default the group's entries that the rule takes, under their own names, with torch's
        ``betas=(beta1, beta2)`` split in two (a triple in three); a class whose rule names differ
        overrides this.
        """
        group = dict(group)
        for i, beta in enumerate(group.pop("betas", ()), 1):
            group[f"beta{i}"] = beta
        names = _keyword_names(type(self).rule)
        return {k: v for k, v in group.items() if k in names}

    # -- torch.optim.Optimizer ------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        if isinstance(param_group, dict) and "params" in param_group:
            params = param_group["params"]
            if not isinstance(params, (Tensor, set)):  # torch.optim's errors and conversions for those
                param_group["params"] = params = list(params)  # as torch does: an iterator is read once
                self._check_unique([p[1] if isinstance(p, tuple) else p for p in params])
        super().add_param_group(param_group)
        group = self.param_groups[-1]
        try:
            self._check_group(group)
        except Exception:
            self.param_groups.pop()
            raise
        _settle_flags(group)
        if group["fused"]:
            _warn_unfused(type(self).__name__, group)

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """torch.optim's ``load_state_dict``, after checking every saved group as a constructed one.

        A group that fails leaves the optimizer as it was.  Options a checkpoint lacks (one saved by
        torch.optim, say) take this optimizer's defaults.
        """
        groups = [self._loaded_group(saved) for saved in state_dict["param_groups"]]
        for group in groups:
            self._check_group(group)
        super().load_state_dict({**state_dict, "param_groups": groups})

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A state_dict saved by the reference (torch.optim.Adam, say) lacks our extra options:
        # they take their defaults, so the reference's checkpoints load unchanged.
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)
            _settle_flags(group)
            # Some references keep no step count per parameter (torch.optim.SGD, the authors' Lion),
            # or count per group (group_step), and every state here has one.  Without a group count
            # it is 1: a state exists only after a step, and a rule that starts a buffer at step 1
            # (SGD's momentum) must not restart it; the rules of those references read no other.
            count = float(group.get(self.group_step, 1)) if self.group_step else 1.0
            for p in group["params"]:
                param_state = self.state.get(p)  # get: indexing the defaultdict would add empty states
                if param_state and "step" not in param_state:
                    param_state["step"] = torch.tensor(count)

    @torch.no_grad()
    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """Perform one optimization step; ``closure`` re-evaluates the model and returns the loss."""
        loss = None
        if closure is not None:
            with torch.enable_grad():
                loss = closure()
        for group in self.param_groups:
            params = [p for p in group["params"] if p.grad is not None]
            if not params:
                continue
            kwargs = self.rule_kwargs(_values(group))
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            # the native path takes CPU tensors only: a group with none (CUDA) keeps its foreach path
            if any(p.is_cpu for p in params) and _native.wanted(self, group):
                _native.step_group(self, group, params, kwargs)
            elif foreach and self.elementwise:
                self._step_foreach(group, params, kwargs)
            else:
                for p, (grad, tensors, step) in zip(params, self._prepare(group, params)):
                    self._update(p, grad, tensors, step, kwargs)
        return loss

    # -- checks ---------------------------------------------------------------------------
    def _check_group(self, group: dict[str, Any]) -> None:
        """The checks of every optimizer (option types, torch's flags), then the class's :meth:`validate`."""
        name = type(self).__name__
        for key in _flag_options(type(self)):
            if key in group:
                check_flag(name, key, group[key])
        for key in ("foreach", "fast", "fused"):
            check_flag(name, key, group[key], none=True)
        if group["capturable"]:
            raise ValueError(
                f"{name}: invalid capturable=True: optimlab does not support CUDA-graph capture "
                "(its steps read hyperparameters and step counts on the host); use capturable=False, torch's default"
            )
        if group["differentiable"]:
            raise ValueError(
                f"{name}: invalid differentiable=True: optimlab does not support differentiating through the "
                "optimizer step (it updates in place, without autograd); use differentiable=False, torch's default"
            )
        if group["fused"] and group["fast"] is False:
            raise ValueError(
                f"{name}: invalid fused=True with fast=False: fused=True asks for the native path, which fast=False "
                "turns off; pass one of them"
            )
        if group["fused"] and group["foreach"]:
            raise ValueError(
                f"{name}: invalid fused=True with foreach=True: as in torch.optim, they exclude each other"
            )
        self.validate(group)

    def _loaded_group(self, saved: dict[str, Any]) -> dict[str, Any]:
        group = {**self.defaults, **saved}
        if "fast" not in saved and group["fast"] is False and group["fused"]:
            # a torch.optim checkpoint's fused=True yields to this optimizer's explicit fast=False
            group["fused"] = False
        return group

    def _check_unique(self, params: list[Any]) -> None:
        """Refuse a parameter listed twice, in this group or in another (two updates of it would race)."""
        name = type(self).__name__
        seen: dict[Any, int] = {}
        for i, p in enumerate(params):
            if p in seen:
                raise ValueError(
                    f"{name}: invalid params: some parameters appear more than once in this parameter group "
                    f"(entries {seen[p]} and {i}, {_describe(p)}); list each parameter once"
                )
            seen[p] = i
        for g, group in enumerate(self.param_groups):
            for p in group["params"]:
                if p in seen:
                    raise ValueError(
                        f"{name}: invalid params: some parameters appear more than once, in param group {g} and in "
                        f"the new one (its entry {seen[p]}, {_describe(p)}); list each parameter in one group only"
                    )

    # -- the paths ------------------------------------------------------------------------
    def _prepare(self, group: dict[str, Any], params: list[Tensor]) -> list[tuple[Tensor, State, float]]:
        """``(grad, state tensors without the step, step)`` per parameter, each step count advanced
        by one (one kernel for all)."""
        return [
            (grad, {k: v for k, v in state.items() if k != "step"}, state["step"].item())
            for grad, state in self._advance(group, params)
        ]

    def _advance(self, group: dict[str, Any], params: list[Tensor]) -> list[tuple[Tensor, State]]:
        """``(grad, state)`` per parameter (its own state dict, ``step`` included: for a step that reads the
        state by name), each step count advanced by one."""
        prepared = []
        for p in params:
            grad = p.grad
            if grad.is_sparse:
                raise RuntimeError(f"{type(self).__name__} does not support sparse gradients")
            if p.is_complex():
                raise RuntimeError(f"{type(self).__name__} does not support complex parameters")
            state = self.state[p]
            if not state:
                state["step"] = torch.tensor(0.0)
                state.update(self.init_state(p, group))
            elif not torch.is_tensor(state["step"]):
                # checkpoints of some reference packages (adabound) keep the step as a Python int
                state["step"] = torch.tensor(float(state["step"]))
            prepared.append((-grad if group["maximize"] else grad, state))
        torch._foreach_add_([state["step"] for _, state in prepared], 1)
        return prepared

    def _update(self, p: Tensor, grad: Tensor, tensors: State, step: float, kwargs: dict[str, Any]) -> None:
        """The reference update of one parameter whose step count is already advanced."""
        if self.elementwise and p.numel() > CHUNK and _chunkable(p, tensors):
            # The rule is elementwise, so piece by piece is the same arithmetic; pieces keep its
            # temporaries small enough for the allocator to reuse, where full-size ones (hundreds
            # of MB) are fresh pages, faulted in on every step.  A 0-dim state (NAdam's
            # mu_product) is the same for every piece: each piece starts from its old value.
            split = [k for k, t in tensors.items() if t.dim()]
            scalars = [k for k, t in tensors.items() if not t.dim()]
            pieces = zip(
                p.view(-1).split(CHUNK),
                grad.reshape(-1).split(CHUNK),
                *(tensors[k].view(-1).split(CHUNK) for k in split),
            )
            for piece, g, *parts in pieces:
                part_state = dict(zip(split, parts)) | {k: tensors[k].clone() for k in scalars}
                self._apply(piece, g, part_state, step, kwargs)
            for k in scalars:
                tensors[k].copy_(part_state[k])
        else:
            self._apply(p, grad, tensors, step, kwargs)

    def _apply(self, p: Tensor, grad: Tensor, tensors: State, step: float, kwargs: dict[str, Any]) -> None:
        new_p, new_state = type(self).rule(p, grad, tensors, step, **kwargs)
        p.copy_(new_p)
        for k, v in new_state.items():
            tensors[k].copy_(v)

    def _step_foreach(self, group: dict[str, Any], params: list[Tensor], kwargs: dict[str, Any]) -> None:
        # Tensors are batched by device, dtype and step count, so that the step (and with it
        # every bias correction) is one number per batch, exactly as in the per-parameter path.
        batches: dict[tuple[Any, ...], list[tuple[Tensor, Tensor, State]]] = defaultdict(list)
        for p, (grad, tensors, step) in zip(params, self._prepare(group, params)):
            batches[(p.device, p.dtype, step)].append((p, grad, tensors))
        for (_, _, step), batch in batches.items():
            ps = TensorList(p for p, _, _ in batch)
            grads = TensorList(g for _, g, _ in batch)
            tensors = {k: TensorList(s[k] for _, _, s in batch) for k in batch[0][2]}
            new_p, new_state = type(self).rule(ps, grads, tensors, step, **kwargs)
            ps.copy_(new_p)
            for k, v in new_state.items():
                tensors[k].copy_(v)


_PLAIN = frozenset({float, int, bool, type(None), str, list})


def _values(group: dict[str, Any]) -> dict[str, Any]:
    """``group`` with its one-element tensors and NumPy scalars as Python numbers.

    Every path of the step then computes with the same double-precision value (the native path
    can take nothing else): a float32 tensor lr is its value, 0.009999999776... for 0.01, as in
    torch's fused step, and a scheduler that writes into the tensor is read at each step.
    """
    converted = None
    for k, v in group.items():  # one pass, no call, where nothing needs converting (every step of most runs)
        t = type(v)
        if t in _PLAIN or (t is tuple and all(type(x) in _PLAIN for x in v)):
            continue
        if converted is None:
            converted = dict(group)
        converted[k] = _value(v)
    return group if converted is None else converted


def _value(v: Any) -> Any:
    t = type(v)
    if t is float or t is int or t is bool or v is None:
        return v
    if t is tuple:
        return tuple(map(_value, v))
    if isinstance(v, Tensor):
        return v.item() if v.numel() == 1 else v
    if isinstance(v, numbers.Integral):  # NumPy's bool is not one
        return int(v)
    if isinstance(v, numbers.Real):
        return float(v)
    return v


def _settle_flags(group: dict[str, Any]) -> None:
    # fused=True is torch's way of asking for the fastest step: here that is the native path
    if group.get("fused") and group.get("fast") is None:
        group["fast"] = True


def _warn_unfused(name: str, group: dict[str, Any]) -> None:
    """Say which tensors of a ``fused=True`` group the native path cannot take (torch's fused step would)."""
    taken = _native._DTYPES
    others = sorted({f"{p.dtype} on {p.device.type}" for p in group["params"] if not (p.is_cpu and p.dtype in taken)})
    if others:
        warnings.warn(
            f"{name}: fused=True, but the native path takes only float32 and float64 CPU tensors: this group's "
            f"{', '.join(others)} tensors take the reference path",
            RuntimeWarning,
            stacklevel=3,
        )


@functools.cache
def _flag_options(cls: type) -> tuple[str, ...]:
    """The constructor options of ``cls`` whose default is ``True`` or ``False``: they take nothing else."""
    parameters = inspect.signature(cls.__init__).parameters.values()
    return tuple(p.name for p in parameters if isinstance(p.default, bool))


def _describe(p: Any) -> str:
    return f"a tensor of shape {tuple(p.shape)}" if isinstance(p, Tensor) else repr(p)


@functools.cache
def _keyword_names(rule: Rule) -> frozenset[str]:
    return frozenset(n for n, p in inspect.signature(rule).parameters.items() if p.kind is p.KEYWORD_ONLY)


def _chunkable(p: Tensor, tensors: State) -> bool:
    """Whether ``p`` and its state can be split into aligned 1-D pieces (0-dim state is shared)."""
    return p.is_contiguous() and all(
        t.dim() == 0 or (t.shape == p.shape and t.is_contiguous()) for t in tensors.values()
    )
