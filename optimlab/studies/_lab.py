"""What the real-task studies share, written only with the public API (``optimlab.evaluate``, ``Store``,
``Comparison.table()``): the budgets and seeds, reading a run's curve back from the store, the tables.

The studies prove the API is enough for a user's own study; where it was not, this module says how
it works around it (one place: :func:`curves`).
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from ..store import Store
from ..tasks import Task

BUDGETS = ("smoke", "quick", "full")


def check_budget(study: str, budget: str) -> None:
    if budget not in BUDGETS:
        raise ValueError(f"study {study}: invalid budget={budget!r}: expected one of {', '.join(BUDGETS)}")


def data_dir(value: str | os.PathLike[str] | None) -> str | None:
    return None if value is None else str(value)


def curves(
    store: Store, task: Task, budget: str, optimizer: str, hyperparameters: Mapping[str, Any], seeds: Sequence[int]
) -> dict[int, list[dict[str, Any]]]:
    """``{seed: curve points}`` of the stored runs of ``optimizer`` (a class name: ``"SGD"``) with
    ``hyperparameters`` (those the study set; the rest are the class defaults) on ``task`` at ``budget``.

    A :class:`optimlab.Comparison` keeps each run's final metrics but neither its curve nor its run
    key, so the curve is found in the store by what the run's configuration holds: the task, the
    budget and its every setting, the seed, the optimizer and the values the study gave it.
    """
    settings = task.budgets[budget].settings()
    out: dict[int, list[dict[str, Any]]] = {}
    for run in store.runs(task=task.name, budget=budget, settings=settings):
        config = run["config"]
        name = config["optimizer"]
        if not isinstance(name, str) or name.rpartition(".")[2].rpartition(":")[2] != optimizer:
            continue
        if config["seed"] in seeds and all(
            _same(config["hyperparameters"].get(k), v) for k, v in hyperparameters.items()
        ):
            out[config["seed"]] = store.epochs(run["key"])
    return out


def _same(stored: Any, given: Any) -> bool:
    if isinstance(given, (tuple, list)):
        return isinstance(stored, (tuple, list)) and len(stored) == len(given) and all(map(_same, stored, given))
    return isinstance(stored, (int, float)) and math.isclose(float(stored), float(given), rel_tol=1e-12)


def interval(row: Mapping[str, Any], digits: int = 4) -> str:
    """``mean [low, high]`` of a :meth:`Comparison.table` row, or ``—`` with no finite seed."""
    if not math.isfinite(row["mean"]):
        return "—"
    if not (math.isfinite(row["ci_low"]) and math.isfinite(row["ci_high"])):
        return f"{row['mean']:.{digits}g}"
    return f"{row['mean']:.{digits}g} [{row['ci_low']:.{digits}g}, {row['ci_high']:.{digits}g}]"


def markdown_table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    return lines + ["| " + " | ".join(str(c) for c in row) + " |" for row in rows]


def out_dir(out: str | os.PathLike[str]) -> Path:
    path = Path(out)
    path.mkdir(parents=True, exist_ok=True)
    return path
