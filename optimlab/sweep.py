"""The batched sweep engine: many optimizer configurations on a 2-D surface as one computation.

A sweep is the product of a hyperparameter grid and a set of start points for one optimizer.  All
configurations advance together: the optimizer's own update rule (the function its class uses,
e.g. :func:`optimlab.optim.adam.adam`) runs under ``torch.vmap`` with one hyperparameter value per
configuration, so there is no second copy of the equations here.

The classes reject degenerate values (``beta1 = 1``, ``eps = 0``, ...); the sweep does not
validate them.  It runs the exact equations and reports what they give, as a status per
configuration:

``converged``
    ended within ``x_tol`` of a known minimiser of the surface (surfaces without known minimisers:
    the gradient norm ended below ``grad_tol``).
``diverged``
    the loss or the position became non-finite, or the point left the divergence radius;
    ``first_bad_step`` is the first step where that happened.
``stuck``
    finite, but the point never moved by more than ``move_tol`` from where it started.
``moving``
    none of the above: still travelling when the steps ran out.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

from .optim._base import RuleOptimizer
from .optim.lookahead import lookahead_sync

STATUSES = ("converged", "diverged", "stuck", "moving")


@dataclass
class SweepResult:
    """What a sweep recorded; every tensor's first dimension is the configuration.

    ``steps`` lists the recorded step numbers (every ``record_every`` steps, the last step
    included); ``path[c, i]`` is configuration c's position after ``steps[i]`` and ``loss[c, i]``
    its loss there; ``start`` and ``start_loss`` are the positions before the first step.
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
    settings: dict[str, Any] = field(default_factory=dict)

    def __len__(self) -> int:
        return len(self.configs)

    @property
    def final_loss(self) -> Tensor:
        return self.loss[:, -1]

    def summary_rows(self) -> list[dict[str, Any]]:
        """One tidy row per configuration: hyperparameters, start, status and final numbers."""
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
                rows.append({"config": c, **cfg, "step": step, "w1": w[0].item(), "w2": w[1].item(), "loss": loss.item()})
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
    lookahead: Mapping[str, float] | None = None,
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
        ``bounds`` and ``minima`` (see :mod:`optimlab.surfaces`).
    optimizer:
        a class of :mod:`optimlab.optim` (its update rule is what runs).
    grid:
        rule hyperparameter name -> values, e.g. ``{"beta1": [0.9, 0.5], "beta2": [0.999]}``;
        the sweep runs their full product.  Names are those of the rule function (``beta1``,
        ``beta2``, ``eps``, ``lr`` for Adam); anything not in the grid keeps the class default.
    options:
        fixed keyword arguments for the optimizer's constructor (``amsgrad=True``, ``lr=0.005``).
    starts:
        start points; the surface's default start if omitted.
    record_every:
        keep the position every this many steps (and at the last step).
    grad_clip:
        clip each configuration's gradient to this Euclidean norm; ``None`` (default): no clipping.
    lookahead:
        ``{"k": 5, "alpha": 0.5}`` wraps the optimizer in Lookahead: the same synchronisation
        (:func:`optimlab.optim.lookahead.lookahead_sync`) as the :class:`~optimlab.optim.Lookahead`
        class, slow weights starting at the start point.
    target:
        the loss below which a configuration counts as arrived (for ``first_target_step``).
    x_tol, grad_tol, move_tol, divergence_radius:
        thresholds of the statuses (module docstring).  The divergence radius defaults to 100 times
        the half-diagonal of the surface's plotting box, measured from the box's centre.
    """
    _check_positive_int("steps", steps)
    _check_positive_int("record_every", record_every)
    if grad_clip is not None and not grad_clip > 0:
        raise ValueError(f"sweep: invalid grad_clip={grad_clip!r}: expected grad_clip > 0 or None")
    grid = {k: list(v) for k, v in (grid or {}).items()}
    for name, values in grid.items():
        if not values:
            raise ValueError(f"sweep: grid[{name!r}] is empty: give at least one value")
    starts = [tuple(surface.start)] if starts is None else [tuple(s) for s in starts]

    # The class, built once on a dummy parameter, supplies the defaults and the rule's kwargs.
    probe = optimizer([torch.zeros(2, dtype=dtype)], **(options or {}))
    group = probe.param_groups[0]
    base_kwargs = probe.rule_kwargs(group)
    unknown = sorted(set(grid) - set(base_kwargs))
    if unknown:
        raise ValueError(
            f"sweep: {optimizer.__name__} has no swept hyperparameter {', '.join(map(repr, unknown))}: "
            f"expected some of {', '.join(k for k, v in base_kwargs.items() if _is_number(v))}"
        )
    names = list(grid)
    combos = list(itertools.product(*(grid[n] for n in names)))
    configs = [dict(zip(names, combo), start=list(s)) for s in starts for combo in combos]
    n = len(configs)

    w = torch.tensor([c["start"] for c in configs], dtype=dtype)
    swept = {k: torch.tensor([float(c[k]) for c in configs], dtype=dtype) for k in names}
    fixed = {k: v for k, v in base_kwargs.items() if k not in grid}
    state = torch.vmap(lambda p: probe.init_state(p, group))(w)
    rule = optimizer.rule
    if lookahead is not None:
        k, alpha = int(lookahead.get("k", 5)), float(lookahead.get("alpha", 0.5))
        state = {"inner": state, "slow_param": w.clone()}

    def update(p: Tensor, g: Tensor, st: dict[str, Any], step: float, hp: dict[str, Tensor]) -> Any:
        if lookahead is None:
            return rule(p, g, st, step, **fixed, **hp)
        fast, inner = rule(p, g, st["inner"], step, **fixed, **hp)
        fast, slow = lookahead_sync(fast, st["slow_param"], step, k=k, alpha=alpha)
        return fast, {"inner": inner, "slow_param": slow}

    batched = torch.vmap(update, in_dims=(0, 0, 0, None, 0))

    center, radius = _divergence_ball(surface, divergence_radius, dtype)
    record_at = sorted(set(range(record_every, steps + 1, record_every)) | {steps})
    path = torch.empty(n, len(record_at), 2, dtype=dtype)
    loss_rec = torch.empty(n, len(record_at), dtype=dtype)
    first_bad = torch.full((n,), -1, dtype=torch.long)
    first_hit = torch.full((n,), -1, dtype=torch.long)
    start = w.clone()
    rec = 0
    with torch.no_grad():
        loss, grad = surface.value_and_grad(w)
        start_loss = loss.clone()
        for t in range(1, steps + 1):
            if grad_clip is not None:
                norm = grad.norm(dim=-1, keepdim=True)
                grad = grad * (grad_clip / norm).clamp(max=1.0)
            w, state = batched(w, grad, state, float(t), swept)
            loss, grad = surface.value_and_grad(w)
            bad = ~torch.isfinite(loss) | ~torch.isfinite(w).all(-1) | ((w - center).norm(dim=-1) > radius)
            first_bad = torch.where(bad & (first_bad < 0), t, first_bad)
            if target is not None:
                first_hit = torch.where((loss <= target) & (first_hit < 0), t, first_hit)
            if rec < len(record_at) and t == record_at[rec]:
                path[:, rec] = w
                loss_rec[:, rec] = loss
                rec += 1
        status = _status(surface, start, w, grad, first_bad, x_tol, grad_tol, move_tol)

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
        target=target,
        settings=dict(
            options=dict(options or {}),
            lookahead=dict(lookahead) if lookahead is not None else None,
            defaults={k: v for k, v in fixed.items() if _is_number(v) or isinstance(v, (bool, str))},
            steps=steps,
            record_every=record_every,
            grad_clip=grad_clip,
            x_tol=x_tol,
            grad_tol=grad_tol,
            move_tol=move_tol,
            divergence_radius=radius,
            dtype=str(dtype),
        ),
    )


def concat(results: Sequence[SweepResult]) -> list[dict[str, Any]]:
    """The summary rows of several sweeps (different optimizers, say) as one table."""
    return [row for r in results for row in r.summary_rows()]


def _status(surface: Any, start: Tensor, w: Tensor, grad: Tensor, first_bad: Tensor, x_tol: float, grad_tol: float, move_tol: float) -> list[str]:
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
        if first_bad[c] >= 0 or not finite[c]:
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


def _none_if_negative(x: Tensor) -> int | None:
    v = int(x)
    return None if v < 0 else v
