r"""Lookahead (Zhang, Lucas, Hinton & Ba, NeurIPS 2019) around any ``torch.optim.Optimizer``.

Reference: the paper's Algorithm 1; the authors' code (``michaelrzhang/lookahead``,
``lookahead_pytorch.py``) for the ``pullback_momentum`` option.

The inner optimizer :math:`A` takes :math:`k` fast steps from the slow weights :math:`\phi`, then
the slow weights move a fraction :math:`\alpha` of the way to the fast weights and the fast weights
restart from there:

.. math::

    \theta_{t,0} &= \phi_{t-1} \\
    \theta_{t,i} &= \theta_{t,i-1} + A(L, \theta_{t,i-1}, d_i), \qquad i = 1, \dots, k \\
    \phi_t &= \phi_{t-1} + \alpha\,(\theta_{t,k} - \phi_{t-1})

with :math:`\phi_0 = \theta_0`, the initial parameters.  In step counts: after every inner step
:math:`s` with :math:`s \equiv 0 \pmod k`, :math:`\phi \leftarrow \phi + \alpha(\theta - \phi)`
and :math:`\theta \leftarrow \phi` (:func:`lookahead_sync`).

``pullback_momentum`` (the authors' option) says what happens to the inner optimizer's momentum
:math:`m` (its state's ``"momentum_buffer"``, as in the authors' code, or ``"exp_avg"``, the first
moment of Adam-like optimizers) at each synchronisation: ``"none"`` leaves it, ``"reset"`` sets it
to zero, ``"pullback"`` interpolates it like the weights, :math:`m \leftarrow m_\phi + \alpha(m -
m_\phi)`, :math:`m_\phi \leftarrow m`, with a slow momentum :math:`m_\phi` that starts at zero.

Where the references differ (each difference has a test in ``tests/optim/test_lookahead.py``):

* ``torch_optimizer.Lookahead`` (0.3.0) synchronises one step out of phase: at inner steps
  :math:`1, k+1, 2k+1, \dots`, its first synchronisation taking the slow weights from the
  parameters *after* the first inner step.  Its ``state_dict()`` raises ``AttributeError`` with
  torch 2.13 (it never calls ``Optimizer.__init__``, which makes the hooks torch reads), and
  where it can load a checkpoint, its ``param_groups`` are no longer the inner optimizer's, so an
  lr scheduler stops reaching the inner lr.
* The authors' ``state_dict()`` is the inner optimizer's alone: a resumed run restarts the slow
  weights from the current fast weights and the step counter from zero.  Their ``"pullback"``
  stores the momentum buffer itself as the slow momentum (no copy), so from the second
  synchronisation on the pullback does nothing; only ``"momentum_buffer"`` is handled.
* ``pytorch_optimizer.Lookahead`` (4.1.0) agrees with the paper and resumes exactly, but
  synchronises only the parameters that have a gradient at the synchronisation step, and its
  ``"reset"``/``"pullback"`` write a ``"momentum_buffer"`` that Adam never reads (no effect).

Here every parameter that has slow weights is synchronised, whatever its gradient at that step;
a parameter gets slow weights the first time it has a gradient, before the inner optimizer moves
it (so they are its initial value, as in the paper; parameters that never get a gradient are
never touched and cost no memory).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from typing import Any

import torch
from torch import Tensor

from . import _native
from ._math import where
from ._tensorlist import TensorList
from ._validate import HyperparameterTypeError, check_choice, check_int, check_range, number

PULLBACK_MODES = ("none", "reset", "pullback")
#: the state keys of the inner optimizer's momentum, in the order they are looked for.
MOMENTUM_KEYS = ("momentum_buffer", "exp_avg")


def is_sync_step(step: Any, k: Any) -> Any:
    """Whether the inner step number ``step`` (1-based) ends a cycle of ``k`` fast steps."""
    return step % k == 0


def lookahead_sync(fast: Any, slow: Any, step: Any, *, k: Any, alpha: Any) -> tuple[Any, Any]:
    r"""Lookahead's synchronisation after inner step ``step``; returns ``(new_fast, new_slow)``.

    On a synchronisation step (``step % k == 0``) both become
    :math:`\phi + \alpha(\theta - \phi)`; otherwise both are returned unchanged.  ``step``, ``k``
    and ``alpha`` may be Python numbers or tensors (one value per sweep configuration under
    ``torch.vmap``); ``fast``/``slow`` may be tensors or TensorLists (with Python ``step``/``alpha``).

    The interpolation is evaluated from the nearer end, as ``torch.lerp`` does, so that
    :math:`\alpha = 1` gives :math:`\theta` exactly and :math:`\theta = \phi` gives :math:`\phi`
    exactly (a parameter that has not moved is left bit for bit as it is).
    """
    diff = fast - slow
    new_slow = where(alpha <= 0.5, slow + alpha * diff, fast - (1 - alpha) * diff)
    sync = is_sync_step(step, k)
    return where(sync, new_slow, fast), where(sync, new_slow, slow)


def _sync_rule(param: Any, grad: Any, state: dict[str, Any], step: Any, *, k: Any, alpha: Any) -> tuple[Any, dict[str, Any]]:
    """:func:`lookahead_sync` in the form of an update rule, for the native path (``grad`` is unused)."""
    fast, slow = lookahead_sync(param, state["slow_param"], step, k=k, alpha=alpha)
    return fast, {"slow_param": slow}


def _validate(k: Any, alpha: Any, pullback_momentum: Any) -> None:
    check_int("Lookahead", "k", k, 1)
    check_range("Lookahead", "alpha", alpha, 0.0, 1.0, low_open=True)
    if not isinstance(pullback_momentum, str):
        raise HyperparameterTypeError(
            f"Lookahead: invalid pullback_momentum={pullback_momentum!r}: expected one of "
            f"{', '.join(map(repr, PULLBACK_MODES))}"
        )
    check_choice("Lookahead", "pullback_momentum", pullback_momentum, PULLBACK_MODES)


class Lookahead(torch.optim.Optimizer):
    """Lookahead around ``optimizer`` (any ``torch.optim.Optimizer``); see the module docstring.

    Parameters
    ----------
    optimizer:
        the inner optimizer.  Lookahead shares its ``param_groups`` (an lr scheduler built on the
        Lookahead changes the inner lr) and delegates ``zero_grad`` and ``add_param_group``.
    k:
        inner steps per synchronisation, an integer >= 1.
    alpha:
        slow-weight step size, ``0 < alpha <= 1``; ``k=1, alpha=1`` is the inner optimizer alone.
    pullback_momentum:
        ``"none"``, ``"reset"`` or ``"pullback"``: what a synchronisation does to the inner
        optimizer's ``"momentum_buffer"`` or ``"exp_avg"`` (the module docstring has the
        equations).  The other two modes raise ``RuntimeError`` at the first synchronisation if
        the inner state has neither (``torch.optim.SGD`` with ``momentum=0``, say).

    ``state`` holds Lookahead's own per-parameter state (``"slow_param"``, and ``"slow_momentum"``
    for ``"pullback"``); the inner optimizer's is ``optimizer.state``.  ``state_dict()`` is the
    inner optimizer's with a ``"lookahead"`` entry (hyperparameters, step count, slow state), so a
    run resumed from it, in a fresh process into a fresh Lookahead, continues exactly.  A
    Lookahead may wrap another (``Lookahead(Lookahead(Adam(...)), k=10)``): each keeps its own
    slow weights and step count, the state dict holds both, and the pullback modes act on the
    innermost optimizer's momentum.  Like every optimizer of the library, Lookahead rejects
    sparse gradients (``RuntimeError``).
    """

    def __init__(
        self, optimizer: torch.optim.Optimizer, k: int = 5, alpha: float = 0.5, pullback_momentum: str = "none"
    ) -> None:
        if not isinstance(optimizer, torch.optim.Optimizer):
            raise ValueError(f"Lookahead: invalid optimizer={optimizer!r}: expected a torch.optim.Optimizer instance")
        _validate(k, alpha, pullback_momentum)
        # Optimizer.__init__ would build param groups of its own; the unpickling set-up gives the
        # hooks torch.optim expects while the groups stay the inner optimizer's.
        super().__setstate__(
            dict(
                defaults=dict(k=k, alpha=alpha, pullback_momentum=pullback_momentum),
                state=defaultdict(dict),
                optimizer=optimizer,
                step_count=0,
            )
        )

    @property
    def param_groups(self) -> list[dict[str, Any]]:  # type: ignore[override]
        return self.optimizer.param_groups

    @property
    def elementwise(self) -> bool:
        """Whether the inner optimizer is an elementwise optimlab rule (it then has a foreach path)."""
        return getattr(self.optimizer, "elementwise", False)

    def __getstate__(self) -> dict[str, Any]:
        return dict(defaults=self.defaults, state=self.state, optimizer=self.optimizer, step_count=self.step_count)

    def __repr__(self) -> str:
        options = ", ".join(f"{key}={value!r}" for key, value in self.defaults.items() if key != "differentiable")
        return f"Lookahead({options},\n  {self.optimizer!r})"

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.optimizer.zero_grad(set_to_none)

    def add_param_group(self, param_group: dict[str, Any]) -> None:
        # slow weights come with the parameters' first gradient, as for the others
        self.optimizer.add_param_group(param_group)

    def step(self, closure: Callable[[], Any] | None = None) -> Any:
        """One inner step, then the synchronisation if it ends a cycle of ``k``; returns the loss."""
        self._take_slow_weights()
        if closure is not None:
            closure = self._taking_slow_weights(closure)
        loss = self.optimizer.step(closure)
        self.step_count += 1
        if is_sync_step(self.step_count, self.defaults["k"]):
            self._synchronise()
        return loss

    # -- checkpoints ----------------------------------------------------------------------------
    def state_dict(self) -> dict[str, Any]:
        """The inner optimizer's state dict plus ``"lookahead"``: k, alpha, pullback_momentum, step, state.

        The slow state is keyed by parameter index, numbered as in ``torch.optim`` state dicts.
        Around another Lookahead, that one's entry is kept in this one's, as ``"inner"``.
        """
        index = {p: i for i, p in enumerate(self._params())}
        options = {key: self.defaults[key] for key in ("k", "alpha", "pullback_momentum")}
        lookahead = dict(options, step=self.step_count, state={index[p]: dict(s) for p, s in self.state.items()})
        inner = self.optimizer.state_dict()
        if "lookahead" in inner:
            lookahead["inner"] = inner.pop("lookahead")
        return {**inner, "lookahead": lookahead}

    def load_state_dict(self, state_dict: dict[str, Any]) -> None:
        """Restore the inner optimizer, the slow weights, the step count and the hyperparameters.

        Everything is checked before anything changes: a checkpoint that fails leaves this
        Lookahead and its inner optimizer as they were.
        """
        if "lookahead" not in state_dict:
            raise ValueError(
                "Lookahead: invalid state_dict: it has no 'lookahead' entry (slow weights and step count), so it was "
                "saved by an optimizer alone; load it with lookahead.optimizer.load_state_dict(...) to restart the "
                "slow weights from the current parameters"
            )
        saved = state_dict["lookahead"]
        _validate(saved["k"], saved["alpha"], saved["pullback_momentum"])
        check_int("Lookahead", "step", saved["step"], 0)
        nested = isinstance(self.optimizer, Lookahead)
        if nested != ("inner" in saved):
            saved_by = "a Lookahead around a Lookahead" if "inner" in saved else "a Lookahead around an optimizer"
            raise ValueError(
                f"Lookahead: invalid state_dict: it was saved by {saved_by}, and this Lookahead wraps "
                f"{type(self.optimizer).__name__}"
            )
        params = self._params()
        unknown = sorted(i for i in saved["state"] if not 0 <= i < len(params))
        if unknown:
            raise ValueError(
                f"Lookahead: invalid state_dict: slow state for parameter indices {unknown}, "
                f"expected 0 to {len(params) - 1}"
            )
        state: defaultdict[Tensor, dict[str, Tensor]] = defaultdict(dict)
        for i, tensors in saved["state"].items():
            p = params[i]
            state[p] = {key: t.to(device=p.device, dtype=p.dtype).clone() for key, t in tensors.items()}
        inner = {key: value for key, value in state_dict.items() if key != "lookahead"}
        if nested:
            inner["lookahead"] = saved["inner"]
        self.optimizer.load_state_dict(inner)  # checks its own part before it changes anything
        self.defaults.update(k=saved["k"], alpha=saved["alpha"], pullback_momentum=saved["pullback_momentum"])
        self.step_count = int(saved["step"])
        self.state = state

    # -- internals ------------------------------------------------------------------------------
    def _params(self) -> list[Tensor]:
        return [p for group in self.param_groups for p in group["params"]]

    def _take_slow_weights(self) -> None:
        """Give slow weights to the parameters that have a gradient for the first time."""
        for p in self._params():
            if p.grad is None:
                continue
            if p.grad.is_sparse:
                raise RuntimeError("Lookahead does not support sparse gradients")
            if p not in self.state:
                self.state[p]["slow_param"] = p.detach().clone()
                if self.defaults["pullback_momentum"] == "pullback":
                    self.state[p]["slow_momentum"] = torch.zeros_like(p)

    def _taking_slow_weights(self, closure: Callable[[], Any]) -> Callable[[], Any]:
        # with a closure the gradients appear inside the inner step, before it moves anything
        def wrapped() -> Any:
            loss = closure()
            self._take_slow_weights()
            return loss

        return wrapped

    def _synchronise(self) -> None:
        mode = self.defaults["pullback_momentum"]
        batches: dict[tuple[Any, ...], list[Tensor]] = defaultdict(list)
        for p in self._params():
            if p in self.state:
                batches[(p.device, p.dtype)].append(p)
        for params in batches.values():
            self._sync_pairs(params, [self.state[p]["slow_param"] for p in params])
            if mode == "none":
                continue
            momenta = [self._momentum(p, mode) for p in params]
            if mode == "reset":
                torch._foreach_zero_(momenta)
            else:
                self._sync_pairs(momenta, [self.state[p]["slow_momentum"] for p in params])

    def _sync_pairs(self, fast: list[Tensor], slow: list[Tensor]) -> None:
        # plain numbers (k and alpha may be NumPy scalars or a tensor alpha), as the optimizers' steps use
        k, alpha = int(self.defaults["k"]), number("Lookahead", "alpha", self.defaults["alpha"])
        # natively, unless an inner group turned the native path off (fast=False)
        if all(group.get("fast") is not False for group in self.param_groups):
            states = [{"slow_param": s} for s in slow]
            if _native.run(_sync_rule, fast, fast, states, float(self.step_count), dict(k=k, alpha=alpha)):
                return
        with torch.no_grad():  # in-place writes to leaves that require grad
            fast_list, slow_list = TensorList(fast), TensorList(slow)
            new_fast, new_slow = lookahead_sync(fast_list, slow_list, self.step_count, k=k, alpha=alpha)
            fast_list.copy_(new_fast)
            slow_list.copy_(new_slow)

    def _momentum(self, p: Tensor, mode: str) -> Tensor:
        optimizer = self.optimizer
        while isinstance(optimizer, Lookahead):  # the momentum is the innermost optimizer's
            optimizer = optimizer.optimizer
        inner = optimizer.state.get(p, {})
        for key in MOMENTUM_KEYS:
            if torch.is_tensor(inner.get(key)):
                return inner[key]
        raise RuntimeError(
            f"Lookahead: pullback_momentum={mode!r} needs the inner optimizer's state to hold one of "
            f"{', '.join(map(repr, MOMENTUM_KEYS))}; {type(optimizer).__name__}'s has {sorted(inner)}"
        )
