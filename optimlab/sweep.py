"""The batched sweep engine: many optimizer configurations on a 2-D surface as one computation.

A sweep is the product of a hyperparameter grid and a set of start points for one optimizer.  All
configurations advance together: the optimizer's own update rule (the function its class uses,
e.g. :func:`optimlab.optim.adam.adam`) runs under ``torch.vmap`` with one hyperparameter value per
configuration, so there is no second copy of the equations here.

Each configuration is built as its class builds it: its param group is the one the class makes of
its values (defaults, the fixed ``options``, that configuration's grid values; torch's
``add_param_group``) and its state is the class's ``init_state`` for that group, so an option that decides the state (SGD's or RMSprop's momentum,
RMSprop's ``centered``, Adafactor's ``beta1``) is honoured per configuration; a configuration
whose state lacks a buffer that another one has (momentum 0 in a momentum grid) gets zeros there,
which the rule ignores for that value.  A class whose ``step`` does more than its rule (Schedule-Free
moves a schedule along in its param group; Prodigy estimates one step size over all its tensors) is
run as itself instead: one instance per configuration, on the reference path, each over that
configuration's point alone, so Prodigy's estimate is each configuration's own, as a user training
those two parameters gets.  An optimizer with ``train()``/``eval()`` (Schedule-Free) takes its
gradients at its training point y and is shown, recorded and judged (loss, path, statuses, target)
at its evaluation point x, where ``eval()`` puts it and where its guarantees hold; y is kept exact
(``eval()`` then ``train()`` would round it).  Each group is checked by the class's own ``validate``:

* a value out of its range (``beta1 = 1``, ``eps = 0``, ...) runs anyway: the sweep runs the exact
  equations and reports what they give, as a status per configuration;
* any other rejection, an option the rule would ignore or options that contradict each other
  (Adafactor's ``lr`` with ``relative_step=True``, Nesterov with momentum 0), is refused with the
  class's message before anything runs.

The statuses:

``converged``
    ended within ``x_tol`` of a known minimiser of the surface (surfaces without known minimisers:
    the gradient norm ended below ``grad_tol``).
``escaped``
    only on a surface without a lower bound (``surface.bounded_below`` false, the saddle): the
    point left the plotting box with a finite loss below its start's, going down the unbounded
    direction; ``first_escape_step`` is the first step where it was outside.  On such a surface
    the final loss mostly says how far a configuration travelled, so studies do not rank by it.
``diverged``
    the loss or the position became non-finite, or the point left the divergence radius (before
    it escaped, on an unbounded surface); ``first_bad_step`` is the first step where that happened.
``stuck``
    finite, but the point never moved by more than ``move_tol`` from where it started.
``moving``
    none of the above: still travelling when the steps ran out.
"""

from __future__ import annotations

import functools
import inspect
import itertools
import math
import numbers
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from . import spec
from .optim._base import RuleOptimizer, State
from .optim._validate import check_range
from .optim.lookahead import Lookahead, lookahead_sync

STATUSES = ("converged", "escaped", "diverged", "stuck", "moving")


@dataclass
class SweepResult:
    """What a sweep recorded; every tensor's first dimension is the configuration.

    ``steps`` lists the recorded step numbers (every ``record_every`` steps, the last step
    included); ``path[c, i]`` is configuration c's position after ``steps[i]`` and ``loss[c, i]``
    its loss there; ``start`` and ``start_loss`` are the positions before the first step.
    ``first_bad_step``, ``first_target_step`` and ``first_escape_step`` are -1 where it never happened.
    """

    optimizer: str
    surface: str
    configs: list[dict[str, Any]]
    steps: Tensor
    start: Tensor
    start_loss: Tensor
    path: Tensor
    loss: Tensor
    status: list[str]
    first_bad_step: Tensor
    first_target_step: Tensor
    target: float | None
    first_escape_step: Tensor | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def final_loss(self) -> Tensor:
        return self.loss[:, -1]

    def summary_rows(self) -> list[dict[str, Any]]:
        """One tidy row per configuration: hyperparameters, start, status and final numbers."""
        escape = self.first_escape_step if self.first_escape_step is not None else torch.full((len(self),), -1)
        rows = []
        for c, cfg in enumerate(self.configs):
            rows.append(
                {
                    "optimizer": self.optimizer,
                    "surface": self.surface,
                    **cfg,
                    "status": self.status[c],
                    "final_loss": self.loss[c, -1].item(),
                    "final_w1": self.path[c, -1, 0].item(),
                    "final_w2": self.path[c, -1, 1].item(),
                    "first_bad_step": _none_if_negative(self.first_bad_step[c]),
                    "steps_to_target": _none_if_negative(self.first_target_step[c]),
                    "steps_to_escape": _none_if_negative(escape[c]),
                }
            )
        return rows

    def path_rows(self) -> list[dict[str, Any]]:
        """One tidy row per (configuration, recorded step), the start as step 0."""
        rows = []
        for c, cfg in enumerate(self.configs):
            points = [(0, self.start[c], self.start_loss[c])] + [
                (int(s), self.path[c, i], self.loss[c, i]) for i, s in enumerate(self.steps)
            ]
            for step, w, loss in points:
                rows.append(
                    {"config": c, **cfg, "step": step, "w1": w[0].item(), "w2": w[1].item(), "loss": loss.item()}
                )
        return rows


def sweep(
    surface: Any,
    optimizer: type[RuleOptimizer],
    grid: Mapping[str, Iterable[float]] | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    starts: Sequence[Sequence[float]] | None = None,
    steps: int = 600,
    record_every: int = 10,
    grad_clip: float | None = None,
    lookahead: Mapping[str, Any] | None = None,
    target: float | None = None,
    x_tol: float = 1e-3,
    grad_tol: float = 1e-6,
    move_tol: float = 1e-12,
    divergence_radius: float | None = None,
    dtype: torch.dtype = torch.float64,
) -> SweepResult:
    """Run every configuration of ``grid`` x ``starts`` on ``surface`` for ``steps`` steps.

    Parameters
    ----------
    surface:
        an object with ``value_and_grad(w)`` for ``w`` of shape (C, 2), plus ``name``, ``start``,
        ``bounds`` and ``minima`` (see :mod:`optimlab.surfaces`), and optionally ``bounded_below``
        (default true; false turns on the ``escaped`` status).
    optimizer:
        a class of :mod:`optimlab.optim` (its update rule is what runs).
    grid:
        hyperparameter name -> values, e.g. ``{"beta1": [0.9, 0.5], "beta2": [0.999]}``; the sweep
        runs their full product.  Names are those of the rule function (``beta1``, ``beta2``,
        ``eps``, ``lr`` for Adam; ``eps1``, ``eps2`` for Adafactor) or numeric constructor options
        (``momentum``, ``initial_accumulator_value``); the rest keep ``options`` or the defaults.
    options:
        fixed keyword arguments for the optimizer's constructor (``amsgrad=True``, ``lr=0.005``,
        ``relative_step=False``, ``maximize=True``).
    starts:
        start points; the surface's default start if omitted.
    record_every:
        keep the position every this many steps (and at the last step).
    grad_clip:
        clip each configuration's gradient to this Euclidean norm; ``None`` (default): no clipping.
    lookahead:
        ``{"k": 5, "alpha": 0.5}`` wraps the optimizer in Lookahead: the same synchronisation
        (:func:`optimlab.optim.lookahead.lookahead_sync`) as the :class:`~optimlab.optim.Lookahead`
        class, which checks the settings, slow weights starting at the start point.
    target:
        the loss below which a configuration counts as arrived (for ``first_target_step``).
    x_tol, grad_tol, move_tol, divergence_radius:
        thresholds of the statuses (module docstring).  The divergence radius defaults to 100 times
        the half-diagonal of the surface's plotting box, measured from the box's centre.

    Raises ``ValueError`` naming the optimizer, the setting and what is allowed for a grid name
    the optimizer does not have and for any configuration its class refuses other than by range
    (module docstring), before any step runs.
    """
    _check_positive_int("steps", steps)
    _check_positive_int("record_every", record_every)
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"sweep: invalid grad_clip={grad_clip!r}: expected grad_clip > 0 or None")
    grid = {k: list(v) for k, v in (grid or {}).items()}
    for name, values in grid.items():
        if not values:
            raise ValueError(f"sweep: grid[{name!r}] is empty: give at least one value")
    options = dict(options or {})
    starts = [tuple(surface.start)] if starts is None else [tuple(s) for s in starts]
    check_sweepable(optimizer)
    check_grid_names(optimizer, grid, options)
    by_rule = _steps_by_rule(optimizer)
    if lookahead is not None and not by_rule:
        raise ValueError(
            f"sweep: invalid lookahead={dict(lookahead)!r} for {optimizer.__name__}: its step does more than its "
            "rule, and the sweep wraps rules only in Lookahead"
        )

    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names)))
    opt, groups = _groups(optimizer, options, [dict(zip(names, combo)) for combo in combos], dtype)
    configs = [dict(zip(names, combo), start=list(s)) for s in starts for combo in combos]
    which = [i for _ in starts for i in range(len(combos))]  # configuration -> its combination
    n = len(configs)

    w = torch.tensor([c["start"] for c in configs], dtype=dtype)
    kwargs = [opt.rule_kwargs(group) for group in groups]
    # the class's own step negates a gradient it maximises; the batched rule is handed it negated
    maximize = bool(groups[0]["maximize"]) and by_rule
    if by_rule:
        advance, shown = _batched_rule(opt, groups, kwargs, names, which, w, lookahead, dtype), None
    else:
        advance, shown = _class_instances(optimizer, options, [groups[i] for i in which], w)

    center, radius = _divergence_ball(surface, divergence_radius, dtype)
    unbounded = not getattr(surface, "bounded_below", True)
    (x0, x1), (y0, y1) = surface.bounds
    low, high = torch.tensor([x0, y0], dtype=dtype), torch.tensor([x1, y1], dtype=dtype)
    record_at = sorted(set(range(record_every, steps + 1, record_every)) | {steps})
    path = torch.empty(n, len(record_at), 2, dtype=dtype)
    loss_rec = torch.empty(n, len(record_at), dtype=dtype)
    first_bad = torch.full((n,), -1, dtype=torch.long)
    first_hit = torch.full((n,), -1, dtype=torch.long)
    first_out = torch.full((n,), -1, dtype=torch.long)
    start = w.clone()
    rec = 0
    with torch.no_grad():
        loss, grad = surface.value_and_grad(w)
        start_loss = loss.clone()
        for t in range(1, steps + 1):
            if grad_clip is not None:
                norm = grad.norm(dim=-1, keepdim=True)
                grad = grad * (grad_clip / norm).clamp(max=1.0)
            if maximize:
                grad = -grad
            trained = advance(w, grad, t)
            loss, grad = surface.value_and_grad(trained)
            if shown is not None:
                w = shown()
                loss = surface(w)
            else:
                w = trained
            finite = torch.isfinite(loss) & torch.isfinite(w).all(-1)
            if unbounded:
                # Downhill out of the picture on a surface with no bottom: a result, not a failure.
                outside = ((w < low) | (w > high)).any(-1)
                first_out = torch.where(
                    finite & outside & (loss < start_loss) & (first_out < 0) & (first_bad < 0), t, first_out
                )
            bad = ~finite | ((w - center).norm(dim=-1) > radius)
            first_bad = torch.where(bad & (first_bad < 0) & (first_out < 0), t, first_bad)
            if target is not None:
                first_hit = torch.where((loss <= target) & (first_hit < 0), t, first_hit)
            if rec < len(record_at) and t == record_at[rec]:
                path[:, rec] = w
                loss_rec[:, rec] = loss
                rec += 1
        final_grad = grad if shown is None else surface.grad(w)
        status = _status(surface, start, w, final_grad, first_bad, first_out, x_tol, grad_tol, move_tol)

    defaults = {k: v for k, v in kwargs[0].items() if k not in names}
    return SweepResult(
        optimizer=optimizer.__name__ if lookahead is None else f"Lookahead({optimizer.__name__})",
        surface=surface.name,
        configs=configs,
        steps=torch.tensor(record_at),
        start=start,
        start_loss=start_loss,
        path=path,
        loss=loss_rec,
        status=status,
        first_bad_step=first_bad,
        first_target_step=first_hit,
        first_escape_step=first_out,
        target=target,
        settings=dict(
            options=options,
            lookahead=dict(lookahead) if lookahead is not None else None,
            defaults={k: v for k, v in defaults.items() if _is_number(v) or isinstance(v, (bool, str))},
            steps=steps,
            record_every=record_every,
            grad_clip=grad_clip,
            x_tol=x_tol,
            grad_tol=grad_tol,
            move_tol=move_tol,
            divergence_radius=radius,
            bounded_below=not unbounded,
            dtype=str(dtype),
        ),
    )


def check_sweepable(optimizer: Any) -> None:
    """Raise ``ValueError`` unless ``optimizer`` is a :class:`RuleOptimizer` class (the sweep's grid
    names and param groups are its rule's and its class's)."""
    if not (isinstance(optimizer, type) and issubclass(optimizer, RuleOptimizer)):
        raise ValueError(  # noqa: TRY004 (the commands report ValueError as one clean line)
            f"sweep: invalid optimizer={optimizer!r}: expected a class of optimlab.optim with an update rule"
        )


def _steps_by_rule(optimizer: type[RuleOptimizer]) -> bool:
    """Whether one step of ``optimizer`` is its rule and nothing else (its ``step`` is the base class's),
    so that the rule batched under ``torch.vmap`` reproduces it."""
    return inspect.unwrap(optimizer.step) is inspect.unwrap(RuleOptimizer.step)


def _batched_rule(
    opt: RuleOptimizer,
    groups: list[dict[str, Any]],
    kwargs: list[dict[str, Any]],
    names: list[str],
    which: list[int],
    w: Tensor,
    lookahead: Mapping[str, Any] | None,
    dtype: torch.dtype,
) -> Any:
    """``advance(w, grad, t)``: every configuration's step ``t`` as the class's rule under ``torch.vmap``."""
    fixed, swept = _batched_kwargs(kwargs, names, which, dtype)
    state = _batched_state(opt, [groups[i] for i in which], w)
    rule = type(opt).rule
    if lookahead is not None:
        k, alpha = _check_lookahead(opt, lookahead)
        state = {"inner": state, "slow_param": w.clone()}

    def update(p: Tensor, g: Tensor, st: dict[str, Any], step: float, hp: dict[str, Tensor]) -> Any:
        if lookahead is None:
            return rule(p, g, st, step, **fixed, **hp)
        fast, inner = rule(p, g, st["inner"], step, **fixed, **hp)
        fast, slow = lookahead_sync(fast, st["slow_param"], step, k=k, alpha=alpha)
        return fast, {"inner": inner, "slow_param": slow}

    batched = torch.vmap(update, in_dims=(0, 0, 0, None, 0))

    def advance(w: Tensor, grad: Tensor, t: int) -> Tensor:
        nonlocal state
        w, state = batched(w, grad, state, float(t), swept)
        return w

    return advance


def _class_instances(
    optimizer: type[RuleOptimizer], options: dict[str, Any], groups: list[dict[str, Any]], w: Tensor
) -> tuple[Any, Any]:
    """``(advance, shown)`` for a class whose step does more than its rule: one instance per
    configuration over its own point, its param group the configuration's (already checked), on the
    reference path; ``shown()`` is where an optimizer with ``train()``/``eval()`` is evaluated (module
    docstring), ``None`` for the others (shown where they train)."""
    params = [p.clone() for p in w]
    instances = []
    for p, group in zip(params, groups):
        opt = _unchecked(optimizer)([p], **options)
        opt.param_groups[0].update({k: v for k, v in group.items() if k != "params"}, fast=False)
        instances.append(opt)
    modal = callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None))
    for opt in instances if modal else ():
        opt.train()  # Schedule-Free starts in eval mode, as its package

    def advance(w: Tensor, grad: Tensor, t: int) -> Tensor:
        for p, g, opt in zip(params, grad, instances):
            p.grad = g.clone()
            opt.step()
        return torch.stack(params)

    def evaluation_point() -> Tensor:
        points = []
        for p, opt in zip(params, instances):
            y = p.clone()
            try:
                opt.eval()
            except ZeroDivisionError:  # a momentum of 0 (out of range) leaves x = y + (1 - 1/beta)(z - y) undefined
                points.append(torch.full_like(p, math.nan))
                continue
            points.append(p.clone())
            opt.train()
            p.copy_(y)
        return torch.stack(points)

    return advance, evaluation_point if modal else None


def check_grid_names(
    optimizer: type[RuleOptimizer], grid: Mapping[str, Any], options: Mapping[str, Any] | None = None
) -> None:
    """Raise ``ValueError`` unless every name of ``grid`` is a number the optimizer takes.

    Cheap (no step runs): a command can call it before anything else.
    """
    sweepable = _sweepable(optimizer, dict(options or {}))
    unknown = [k for k in grid if k not in sweepable]
    if unknown:
        raise ValueError(
            f"sweep: {optimizer.__name__} has no swept hyperparameter {', '.join(map(repr, unknown))}: "
            f"expected some of {', '.join(sweepable)}"
        )


def concat(results: Sequence[SweepResult]) -> list[dict[str, Any]]:
    """The summary rows of several sweeps (different optimizers, say) as one table."""
    return [row for r in results for row in r.summary_rows()]


def _sweepable(optimizer: type[RuleOptimizer], options: dict[str, Any]) -> list[str]:
    """The names a grid may vary: numbers the constructor takes, under the rule's names where they
    differ (``beta1`` for ``betas[0]``), the rule's own first."""
    opt = _unchecked(optimizer)([torch.zeros(2)], **options)
    group, rule_kwargs = opt.param_groups[0], opt.rule_kwargs(opt.param_groups[0])
    ctor, components = spec.parameters(optimizer), spec.components(optimizer)
    # None: a number that may also be left out (Adafactor's lr and beta1)
    names = [k for k, v in rule_kwargs.items() if k in components or (k in ctor and (_is_number(v) or v is None))]
    return names + [k for k in ctor if k not in names and _is_number(group.get(k))]


@functools.cache
def _unchecked(optimizer: type[RuleOptimizer]) -> type[RuleOptimizer]:
    """``optimizer`` with its ``validate`` turned off: builds any configuration's param group
    exactly as the class does (its defaults, AdaBound's ``base_lr``), to be checked afterwards."""
    return type(optimizer.__name__, (optimizer,), {"validate": lambda self, group: None})


@functools.cache
def _components(optimizer: type[RuleOptimizer]) -> dict[str, tuple[str, int, Any]]:
    """Rule name -> (constructor pair, index, the pair's default): beta1 is betas[0], Adafactor's eps1 is eps[0]."""
    defaults = spec.defaults(optimizer)
    return {name: (pair, i, defaults[pair]) for name, (pair, i) in spec.components(optimizer).items()}


def _groups(
    optimizer: type[RuleOptimizer], options: dict[str, Any], combos: list[dict[str, Any]], dtype: torch.dtype
) -> tuple[RuleOptimizer, list[dict[str, Any]]]:
    """One instance of the class without checks (its defaults and the fixed ``options``) and, per
    grid combination, the param group its ``add_param_group`` makes of those values: torch's way of
    giving a group values of its own, completed as the class completes every group (defaults,
    AdaBound's ``base_lr``).  Each group is then checked as the module docstring says."""
    opt = _unchecked(optimizer)([torch.zeros(2, dtype=dtype)], **options)
    components = _components(optimizer)
    groups = []
    for values in combos:
        entries: dict[str, Any] = {}
        for name, value in values.items():
            if name in components:
                pair, i, _ = components[name]
                both = list(entries.get(pair, opt.defaults[pair]))
                both[i] = value
                entries[pair] = tuple(both)
            else:
                entries[name] = value
        # torch compares a new group's parameters with every group already there: keep none
        opt.param_groups.clear()
        opt.add_param_group({"params": [torch.zeros(2, dtype=dtype)], **entries})
        group = opt.param_groups[0]
        try:
            optimizer.validate(opt, group)
        except ValueError as exc:
            if not _is_range_error(exc):
                where = f" (grid values {values})" if values else ""
                raise ValueError(f"sweep: {exc}{where}") from None
        groups.append(group)
    return opt, groups


def _is_range_error(exc: ValueError) -> bool:
    """Whether ``exc`` is :func:`check_range` rejecting a number, not a rejected combination of options.

    The classes raise both kinds from ``validate``; only the innermost frame tells them apart
    without reading messages.
    """
    tb = exc.__traceback__
    while tb is not None and tb.tb_next is not None:
        tb = tb.tb_next
    if tb is None or tb.tb_frame.f_code is not check_range.__code__:
        return False
    value = tb.tb_frame.f_locals.get("value")
    return isinstance(value, numbers.Real) and not isinstance(value, bool)


def _batched_kwargs(
    kwargs: list[dict[str, Any]], names: list[str], which: list[int], dtype: torch.dtype
) -> tuple[dict[str, Any], dict[str, Tensor]]:
    """The rule's keywords: Python values where every configuration agrees (as the class passes
    them), one tensor entry per configuration for grid names and for values that differ."""
    fixed, swept = {}, {}
    for k, v in kwargs[0].items():
        column = [kw[k] for kw in kwargs]
        if k in names or any(not _same(u, v) for u in column):
            swept[k] = torch.tensor([float(column[i]) for i in which], dtype=dtype)
        else:
            fixed[k] = v
    return fixed, swept


def _batched_state(opt: RuleOptimizer, groups: list[dict[str, Any]], w: Tensor) -> State:
    """Each configuration's ``init_state`` from its own group, stacked; buffers that only some
    configurations keep are zeros in the others (module docstring)."""
    states = [opt.init_state(p, group) for group, p in zip(groups, w)]
    keys = list(dict.fromkeys(k for st in states for k in st))
    return {k: torch.stack([st[k] if k in st else torch.zeros_like(p) for st, p in zip(states, w)]) for k in keys}


def _check_lookahead(inner: RuleOptimizer, settings: Mapping[str, Any]) -> tuple[int, float]:
    try:
        la = Lookahead(inner, **settings)  # the class checks the settings
    except TypeError:
        raise ValueError(
            f"sweep: invalid lookahead={dict(settings)!r}: expected keys among k, alpha, pullback_momentum"
        ) from None
    k, alpha, pullback = (la.defaults[key] for key in ("k", "alpha", "pullback_momentum"))
    if pullback != "none":
        raise ValueError(f"sweep: invalid lookahead pullback_momentum={pullback!r}: the sweep runs 'none' only")
    return k, alpha


def _status(
    surface: Any,
    start: Tensor,
    w: Tensor,
    grad: Tensor,
    first_bad: Tensor,
    first_out: Tensor,
    x_tol: float,
    grad_tol: float,
    move_tol: float,
) -> list[str]:
    finite = torch.isfinite(w).all(-1)
    minima = getattr(surface, "minima", None) or []
    if minima:
        m = torch.tensor(minima, dtype=w.dtype)
        near = (w[:, None, :] - m[None]).norm(dim=-1).min(dim=1).values <= x_tol
    else:
        near = grad.norm(dim=-1) <= grad_tol
    moved = (w - start).abs().max(dim=-1).values > move_tol
    out = []
    for c in range(len(w)):
        if first_out[c] >= 0:
            out.append("escaped")
        elif first_bad[c] >= 0 or not finite[c]:
            out.append("diverged")
        elif near[c]:
            out.append("converged")
        elif not moved[c]:
            out.append("stuck")
        else:
            out.append("moving")
    return out


def _divergence_ball(surface: Any, radius: float | None, dtype: torch.dtype) -> tuple[Tensor, float]:
    (x0, x1), (y0, y1) = surface.bounds
    center = torch.tensor([(x0 + x1) / 2, (y0 + y1) / 2], dtype=dtype)
    if radius is None:
        radius = 100 * math.hypot(x1 - x0, y1 - y0) / 2
    return center, float(radius)


def _check_positive_int(name: str, value: Any) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise ValueError(f"sweep: invalid {name}={value!r}: expected an integer >= 1")


def _is_number(x: Any) -> bool:
    return isinstance(x, (int, float)) and not isinstance(x, bool)


def _same(a: Any, b: Any) -> bool:
    return a is b or (type(a) is type(b) and a == b)


def _none_if_negative(x: Tensor) -> int | None:
    v = int(x)
    return None if v < 0 else v


@dataclass
class MatrixSweepResult:
    """What :func:`matrix_sweep` recorded: ``loss[c, i]`` is configuration c's loss after ``steps[i]``
    (the start's is ``start_loss``); ``first_bad_step`` and ``first_target_step`` are -1 where it never happened."""

    optimizer: str
    surface: str
    configs: list[dict[str, Any]]
    steps: Tensor
    start_loss: float
    loss: Tensor
    status: list[str]
    first_bad_step: Tensor
    first_target_step: Tensor
    target: float | None
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.configs)

    def summary_rows(self) -> list[dict[str, Any]]:
        """One tidy row per configuration: its values, status and final loss."""
        return [
            {
                "optimizer": self.optimizer,
                "surface": self.surface,
                **cfg,
                "status": self.status[c],
                "final_loss": self.loss[c, -1].item(),
                "first_bad_step": _none_if_negative(self.first_bad_step[c]),
                "steps_to_target": _none_if_negative(self.first_target_step[c]),
            }
            for c, cfg in enumerate(self.configs)
        ]


def matrix_sweep(
    surface: Any,
    optimizer: type[torch.optim.Optimizer],
    grid: Mapping[str, Iterable[Any]] | None = None,
    *,
    options: Mapping[str, Any] | None = None,
    steps: int = 200,
    record_every: int = 1,
    target: float | None = None,
    loss_tol: float = 1e-8,
    divergence_factor: float = 1e6,
    move_tol: float = 1e-12,
    dtype: torch.dtype = torch.float64,
) -> MatrixSweepResult:
    """Every configuration of ``grid`` on a matrix problem (:class:`optimlab.surfaces.MatrixFactorization`),
    each through the optimizer class itself over its two matrices ``[U, V]``.

    ``grid`` and ``options`` are constructor keyword arguments (``{"lr": [...]}``), checked by the
    class as it is built; the sweep runs their full product.  Statuses: ``converged`` (final loss
    within ``loss_tol`` of the known minimum), ``diverged`` (a non-finite loss or parameter, or a
    loss above ``divergence_factor`` times the start's; ``first_bad_step``), ``stuck`` (no entry
    moved by more than ``move_tol``), else ``moving``.  An optimizer with ``train()``/``eval()`` is
    refused: this sweep records where a method trains.
    """
    _check_positive_int("steps", steps)
    _check_positive_int("record_every", record_every)
    if not (isinstance(optimizer, type) and issubclass(optimizer, torch.optim.Optimizer)):
        raise ValueError(  # noqa: TRY004 (the commands report ValueError as one clean line)
            f"matrix sweep: invalid optimizer={optimizer!r}: expected a torch.optim.Optimizer class"
        )
    if callable(getattr(optimizer, "train", None)) and callable(getattr(optimizer, "eval", None)):
        raise ValueError(f"matrix sweep: {optimizer.__name__} has train()/eval(): it records training points only")
    grid = {k: list(v) for k, v in (grid or {}).items()}
    for name, values in grid.items():
        if not values:
            raise ValueError(f"matrix sweep: grid[{name!r}] is empty: give at least one value")
    configs = [dict(zip(grid, combo)) for combo in itertools.product(*grid.values())]
    record_at = sorted(set(range(record_every, steps + 1, record_every)) | {steps})
    n = len(configs)
    u0, v0 = surface.start(dtype)
    params = [[u0.clone(), v0.clone()] for _ in configs]
    instances = [optimizer(p, **dict(options or {}), **cfg) for p, cfg in zip(params, configs)]
    loss_rec = torch.empty(n, len(record_at), dtype=dtype)
    first_bad = torch.full((n,), -1, dtype=torch.long)
    first_hit = torch.full((n,), -1, dtype=torch.long)
    start_loss = surface(u0, v0).item()
    with torch.no_grad():
        loss, grads = surface.value_and_grad(*(torch.stack(t) for t in zip(*params)))
        rec = 0
        for t in range(1, steps + 1):
            for c, (p, opt) in enumerate(zip(params, instances)):
                p[0].grad, p[1].grad = grads[0][c].clone(), grads[1][c].clone()
                opt.step()
            u, v = (torch.stack(m) for m in zip(*params))
            loss, grads = surface.value_and_grad(u, v)
            finite = torch.isfinite(loss) & torch.isfinite(u).flatten(1).all(1) & torch.isfinite(v).flatten(1).all(1)
            bad = ~finite | (loss > divergence_factor * start_loss)
            first_bad = torch.where(bad & (first_bad < 0), t, first_bad)
            if target is not None:
                first_hit = torch.where((loss <= target) & (first_hit < 0), t, first_hit)
            if t == record_at[rec]:
                loss_rec[:, rec] = loss
                rec += 1
    moved = [max((a - b).abs().max().item() for a, b in zip(p, (u0, v0))) > move_tol for p in params]
    status = [
        "diverged"
        if first_bad[c] >= 0
        else "converged"
        if loss[c] <= surface.min_value + loss_tol
        else ("moving" if moved[c] else "stuck")
        for c in range(n)
    ]
    return MatrixSweepResult(
        optimizer=optimizer.__name__,
        surface=surface.name,
        configs=configs,
        steps=torch.tensor(record_at),
        start_loss=start_loss,
        loss=loss_rec,
        status=status,
        first_bad_step=first_bad,
        first_target_step=first_hit,
        target=target,
        settings={"options": dict(options or {}), "steps": steps, "record_every": record_every, "dtype": str(dtype)},
    )
