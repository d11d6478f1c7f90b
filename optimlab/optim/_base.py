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
from collections import defaultdict
from collections.abc import Callable, Iterable
from typing import Any, ClassVar

import torch
from torch import Tensor

from . import _native
from ._tensorlist import TensorList

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

    def __init__(
        self,
        params: Iterable[Any],
        defaults: dict[str, Any],
        *,
        foreach: bool | None = None,
        maximize: bool = False,
        fast: bool | None = None,
    ) -> None:
        defaults = dict(defaults, foreach=foreach, maximize=maximize, fast=fast)
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
        ``betas=(beta1, beta2)`` split in two; a class whose rule names differ overrides this.
        """
        group = dict(group)
        if "betas" in group:
            group["beta1"], group["beta2"] = group.pop("betas")
        names = _keyword_names(type(self).rule)
        return {k: v for k, v in group.items() if k in names}

    # -- torch.optim.Optimizer ------------------------------------------------------------------
    def add_param_group(self, param_group: dict[str, Any]) -> None:
        super().add_param_group(param_group)
        self.validate(self.param_groups[-1])

    def __setstate__(self, state: dict[str, Any]) -> None:
        # A state_dict saved by the reference (torch.optim.Adam, say) lacks our extra options:
        # they take their defaults, so the reference's checkpoints load unchanged.
        super().__setstate__(state)
        for group in self.param_groups:
            for key, value in self.defaults.items():
                group.setdefault(key, value)

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
            kwargs = self.rule_kwargs(group)
            foreach = group["foreach"]
            if foreach is None:
                foreach = all(p.is_cuda for p in params)
            if _native.wanted(self, group):
                _native.step_group(self, group, params, kwargs)
            elif foreach and self.elementwise:
                self._step_foreach(group, params, kwargs)
            else:
                for p, (grad, tensors, step) in zip(params, self._prepare(group, params)):
                    self._update(p, grad, tensors, step, kwargs)
        return loss

    # -- the paths ------------------------------------------------------------------------
    def _prepare(self, group: dict[str, Any], params: list[Tensor]) -> list[tuple[Tensor, State, float]]:
        """``(grad, state tensors without the step, step)`` per parameter, each step count advanced
        by one (one kernel for all)."""
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
        counts = [state["step"] for _, state in prepared]
        torch._foreach_add_(counts, 1)
        return [
            (grad, {k: v for k, v in state.items() if k != "step"}, count.item())
            for (grad, state), count in zip(prepared, counts)
        ]

    def _update(self, p: Tensor, grad: Tensor, tensors: State, step: float, kwargs: dict[str, Any]) -> None:
        """The reference update of one parameter whose step count is already advanced."""
        if self.elementwise and p.numel() > CHUNK and _chunkable(p, tensors):
            # The rule is elementwise, so piece by piece is the same arithmetic; pieces keep its
            # temporaries small enough for the allocator to reuse, where full-size ones (hundreds
            # of MB) are fresh pages, faulted in on every step.  A 0-dim state (NAdam's
            # mu_product) is the same for every piece: each piece starts from its old value.
            split = [k for k, t in tensors.items() if t.dim()]
            scalars = [k for k, t in tensors.items() if not t.dim()]
            pieces = zip(p.view(-1).split(CHUNK), grad.reshape(-1).split(CHUNK), *(tensors[k].view(-1).split(CHUNK) for k in split))
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


@functools.cache
def _keyword_names(rule: Rule) -> frozenset[str]:
    return frozenset(n for n, p in inspect.signature(rule).parameters.items() if p.kind is p.KEYWORD_ONLY)


def _chunkable(p: Tensor, tensors: State) -> bool:
    """Whether ``p`` and its state can be split into aligned 1-D pieces (0-dim state is shared)."""
    return p.is_contiguous() and all(t.dim() == 0 or (t.shape == p.shape and t.is_contiguous()) for t in tensors.values())
