"""What the HTML report's views compute, apart from drawing them: seed bands of curves, performance
profiles, time and steps to a target, and whether a tuned value sits at the edge of what was searched.

>>> ratios = performance_ratios({"mnist": {"Adam": 0.02, "SGD": 0.04}, "house": {"Adam": 3.0, "SGD": 2.0}})
>>> ratios["mnist"]["SGD"], ratios["house"]["Adam"]
(2.0, 1.5)
>>> performance_profile(ratios, [1.0, 1.5, 2.0])["SGD"]
[0.5, 0.5, 1.0]

**Performance profiles** (Dolan & Moré, 2002, as AlgoPerf uses them: Dahl et al., "Benchmarking Neural
Network Training Algorithms", 2023): on each task every optimizer has a *cost* (lower is better, > 0);
its *ratio* is its cost over the best optimizer's cost on that task, and its profile at ``tau`` is the
fraction of tasks on which its ratio is at most ``tau``.  An optimizer that diverged, never reached the
target, or did not run on a task has ratio ``inf`` there: it never counts as within ``tau``.  A cost
over seeds is the median of the seeds' costs (a diverged seed's cost is ``inf``, so an optimizer that
diverged on most seeds has ``inf``), as AlgoPerf takes the median over its studies.

The cost of a final metric (:func:`metric_cost`) is the metric itself where lower is better (a loss,
an RMSE), and where higher is better the gap to the metric's upper bound (an accuracy's error rate,
``1 - accuracy``), or ``1 / value`` for a metric without one.  With targets the cost is the time
(or steps) to reach the target, AlgoPerf's own measure.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import numpy as np

__all__ = [
    "band",
    "edge",
    "median_cost",
    "metric_cost",
    "performance_profile",
    "performance_ratios",
    "time_to_target",
]


def metric_cost(value: float, higher_is_better: bool, upper: float = math.inf) -> float:
    """The cost of a final metric ``value`` (see the module docstring); ``inf`` for NaN (a diverged run)."""
    if not math.isfinite(value):
        return math.inf
    if not higher_is_better:
        return value
    if math.isfinite(upper):
        return max(0.0, upper - value)  # rounding may put a value a hair past its bound
    return 1.0 / value if value > 0 else math.inf


def median_cost(costs: Iterable[float]) -> float:
    """The median over seeds of ``costs``, a NaN (diverged seed) counted as ``inf``; ``inf`` when empty."""
    values = [math.inf if math.isnan(c) else float(c) for c in costs]
    return float(np.median(values)) if values else math.inf


def performance_ratios(costs: Mapping[str, Mapping[str, float]]) -> dict[str, dict[str, float]]:
    """``costs[task][optimizer]`` (lower is better, >= 0) as ratios to each task's best cost.

    Every optimizer seen on any task gets a ratio on every task (``inf`` where it has no finite cost).
    A best cost of 0 makes the optimizers that reach it 1 and every other ``inf``.

    Raises:
        ValueError: a cost is negative.
    """
    optimizers = list(dict.fromkeys(o for per_task in costs.values() for o in per_task))
    ratios: dict[str, dict[str, float]] = {}
    for task, per_task in costs.items():
        for optimizer, cost in per_task.items():
            if cost < 0:
                raise ValueError(
                    f"performance_ratios: invalid cost={cost!r} of {optimizer!r} on {task!r}: expected >= 0 (lower is better)"
                )
        finite = [c for c in per_task.values() if math.isfinite(c)]
        best = min(finite, default=math.inf)
        row = {}
        for optimizer in optimizers:
            cost = per_task.get(optimizer, math.inf)
            if not math.isfinite(cost):
                row[optimizer] = math.inf
            elif best == 0:
                row[optimizer] = 1.0 if cost == 0 else math.inf
            else:
                row[optimizer] = cost / best
        ratios[task] = row
    return ratios


def performance_profile(ratios: Mapping[str, Mapping[str, float]], taus: Sequence[float]) -> dict[str, list[float]]:
    """For each optimizer, the fraction of tasks on which its ratio is at most each ``tau`` in ``taus``."""
    if not ratios:
        raise ValueError("performance_profile: invalid ratios={}: expected at least one task")
    optimizers = list(dict.fromkeys(o for per_task in ratios.values() for o in per_task))
    n = len(ratios)
    return {
        o: [sum(per_task.get(o, math.inf) <= tau for per_task in ratios.values()) / n for tau in taus]
        for o in optimizers
    }


def time_to_target(
    curve: Sequence[Mapping[str, Any]], key: str, target: float, higher_is_better: bool, x: str = "wall_time"
) -> float:
    """``x`` (``"wall_time"``, ``"train_time"``, ``"step"``, ``"epochs"``) at the first curve point whose
    ``key`` reaches ``target`` (>= it where higher is better, <= where lower); ``inf`` if none does.

    The first point that reaches it, not an interpolation between points: the curve is only known there.
    """
    for point in curve:
        value = point.get(key)
        if value is None or not math.isfinite(value):
            continue
        if (value >= target) if higher_is_better else (value <= target):
            return float(point[x])
    return math.inf


def band(curves: Sequence[Sequence[Mapping[str, Any]]], key: str) -> list[dict[str, float]]:
    """The seeds' curves of one quantity as a band: one row per step at which any seed has a finite ``key``,
    in step order: ``step``, ``epochs``, ``wall_time`` (the mean over those seeds: seeds differ in time),
    ``mean``, ``min``, ``max`` of ``key`` and ``seeds`` (how many seeds have it there)."""
    by_step: dict[int, list[Mapping[str, Any]]] = {}
    for curve in curves:
        for point in curve:
            value = point.get(key)
            if value is not None and math.isfinite(value):
                by_step.setdefault(int(point["step"]), []).append(point)
    rows = []
    for step in sorted(by_step):
        points = by_step[step]
        values = np.array([p[key] for p in points], dtype=float)
        rows.append(
            {
                "step": step,
                "epochs": float(points[0]["epochs"]),
                "wall_time": float(np.mean([p.get("wall_time", math.nan) for p in points])),
                "mean": float(values.mean()),
                "min": float(values.min()),
                "max": float(values.max()),
                "seeds": len(points),
            }
        )
    return rows


def edge(chosen: float, tried: Iterable[float]) -> str | None:
    """``"lowest"`` or ``"highest"`` when ``chosen`` is the smallest or largest of 2 or more distinct values
    ``tried`` (a better value may lie beyond what was searched), else ``None``."""
    values = sorted({float(v) for v in tried})
    if len(values) < 2:
        return None
    if chosen <= values[0]:
        return "lowest"
    if chosen >= values[-1]:
        return "highest"
    return None
