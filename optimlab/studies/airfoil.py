"""Seeds 001 and 004: d2l's airfoil protocol, full-batch GD to Adam and Yogi, in epochs and in time.

Dive into Deep Learning, chapter 12 ("Minibatch Stochastic Gradient Descent", "Adam", "Yogi"), on the
``airfoil-linreg`` task (1,500 standardised rows, a linear model, squared loss / 2, judged on the
same rows as d2l does), each arm as the book runs it:

=============================  =====  =====  ======  ==============================
arm                            batch  lr     epochs  curve point every
=============================  =====  =====  ======  ==============================
gradient descent               1500   1      10      step (every 1,500 examples)
SGD                            1      0.005  2       200 steps (200 examples)
minibatch SGD, batch 100       100    0.4    2       2 steps
minibatch SGD, batch 10        10     0.05   2       20 steps
Adam (d2l's eps 1e-6)          10     0.01   2       20 steps
Yogi                           10     0.01   2       20 steps
=============================  =====  =====  ======  ==============================

The loss is drawn against epochs and against training time (evaluation excluded, as d2l's timer
does), with the least-squares floor of the same objective.  Budgets: ``full`` is the protocol with
10 seeds, ``quick`` with 5, ``smoke`` one epoch on 300 rows with 2 seeds (the tests).  Every
number of the summary is computed from the runs of the call; the runs are kept in
``<out>/lab.sqlite`` (a rerun trains nothing already there).
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

import optimlab

from .. import tables
from .. import tasks as tasks_mod
from ..store import Store
from ..tasks import Task
from . import _lab
from .adam_saddle import StudyOutput

SEEDS = {"smoke": 2, "quick": 5, "full": 10}
#: Within this of the least-squares floor counts as arrived (d2l's curves flatten about there).
NEAR_FLOOR = 0.01


@dataclass(frozen=True)
class Arm:
    label: str
    optimizer: str
    hyperparameters: dict[str, Any]
    batch_size: int
    epochs: int

    @property
    def spec(self) -> str:
        args = ", ".join(f"{k}={v!r}" for k, v in self.hyperparameters.items())
        return f"{self.optimizer}({args})"


ARMS = (
    Arm("GD", "SGD", {"lr": 1.0}, 1500, 10),
    Arm("SGD, batch 1", "SGD", {"lr": 0.005}, 1, 2),
    Arm("minibatch SGD, batch 100", "SGD", {"lr": 0.4}, 100, 2),
    Arm("minibatch SGD, batch 10", "SGD", {"lr": 0.05}, 10, 2),
    Arm("Adam", "Adam", {"lr": 0.01, "eps": 1e-6}, 10, 2),
    Arm("Yogi", "Yogi", {"lr": 0.01}, 10, 2),
)
#: d2l's printed final losses (one unseeded run each, 3 decimals).
D2L = {"Adam": 0.243, "Yogi": 0.244}


def arm_task(task: Task, arm: Arm, budget: str) -> Task:
    """``task`` with ``arm``'s batch size and epochs, a curve point every 200 examples (every step for GD)."""
    rows = 300 if budget == "smoke" else None
    epochs = 1 if budget == "smoke" and arm.epochs == 2 else arm.epochs
    return task.with_budget(
        batch_size=arm.batch_size, epochs=epochs, train_size=rows, eval_every=max(1, 200 // arm.batch_size)
    )


def run(
    out_dir: str | os.PathLike[str],
    *,
    budget: str = "quick",
    data_dir: str | os.PathLike[str] | None = None,
    task: Task | None = None,
    log: Callable[[str], None] = print,
) -> StudyOutput:
    """Run every arm with the budget's seeds, write ``curves.png`` (+ CSV), ``final.csv`` and ``summary.md``.

    ``task``: another airfoil-like task (``airfoil-linreg.with_data(...)``); default ``airfoil-linreg``.
    """
    _lab.check_budget("airfoil", budget)
    out = _lab.out_dir(out_dir)
    base = tasks_mod.get("airfoil-linreg") if task is None else task
    seeds = SEEDS[budget]
    results: dict[str, dict[str, Any]] = {}
    with Store(out / "lab.sqlite") as store:
        for arm in ARMS:
            log(f"airfoil: {arm.label}: {arm.spec}, batch {arm.batch_size}, {seeds} seeds")
            t = arm_task(base, arm, budget)
            result = optimlab.evaluate(
                t,
                [arm.spec],
                budget=budget,
                seeds=seeds,
                seed=0,
                store=store,
                data_dir=_lab.data_dir(data_dir),
                progress=False,
            )
            row = result.table()[0]
            finals = next(iter(result.finals.values()))
            seed_list = list(range(1, seeds + 1))  # evaluate's seeds: seed + 1, ..., seed + seeds
            runs = _lab.curves(store, t, budget, arm.optimizer, arm.hyperparameters, seed_list)
            results[arm.label] = {"row": row, "finals": finals, "curves": [runs[s] for s in seed_list if s in runs]}
    floor = float(next(iter(results.values()))["finals"][0]["lstsq_floor"])
    files = [*_figure(results, floor, out / "curves.png"), *_tables(results, floor, out)]
    summary = summarize(results, floor, budget, seeds, base.name)
    (out / "summary.md").write_text(summary)
    files.append(out / "summary.md")
    return StudyOutput(out, files, summary)


#: The curve's and the final loss's key (airfoil evaluates the training rows, split "full").
LOSS = "full_loss"


def _arrival(curve: list[dict[str, Any]], target: float) -> tuple[float, float]:
    """(epochs, training seconds) of the first curve point at or below ``target``; NaN if none."""
    for p in curve:
        value = p.get(LOSS, math.nan)
        if value <= target:
            return p["epochs"], p["train_time"]
    return math.nan, math.nan


def _mean_curve(curves: list[list[dict[str, Any]]], x: str) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Mean x, mean loss, min and max loss at each curve point over the seeds (cut to the shortest curve)."""
    n = min(len(c) for c in curves)
    xs = np.array([[c[i][x] for i in range(n)] for c in curves])
    ys = np.array([[c[i].get(LOSS, math.nan) for i in range(n)] for c in curves])
    return xs.mean(0), ys.mean(0), ys.min(0), ys.max(0)


def _figure(results: dict[str, dict[str, Any]], floor: float, path: Path) -> list[Path]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

    fig = Figure(figsize=(12, 4.8), layout="constrained")
    axes = fig.subplots(1, 2)
    rows = []
    for label, r in results.items():
        if not r["curves"]:
            continue
        for ax, x in zip(axes, ("epochs", "train_time")):
            mx, my, lo, hi = _mean_curve(r["curves"], x)
            if x == "train_time":  # step 0 sits at time ~0, off a log axis
                mx, my, lo, hi = mx[1:], my[1:], lo[1:], hi[1:]
            (line,) = ax.plot(mx, my, label=label, lw=1.5)
            ax.fill_between(mx, lo, hi, color=line.get_color(), alpha=0.15, lw=0)
            if x == "epochs":
                rows += [{"arm": label, "epochs": a, "train_time": b, "mean_loss": c, "min_loss": d, "max_loss": e}
                         for a, b, c, d, e in zip(mx, _mean_curve(r["curves"], "train_time")[0], my, lo, hi)]  # fmt: skip
    for ax, xlabel in zip(axes, ("epoch", "training time (s, evaluation excluded)")):
        ax.axhline(floor, color="black", ls="--", lw=1, label=f"least-squares floor {floor:.4f}")
        ax.set_xlabel(xlabel)
        ax.set_ylabel("loss on the 1,500 rows (squared loss / 2)")
        ax.set_ylim(floor - 0.01, 0.5)
        ax.grid(alpha=0.3)
    axes[1].set_xscale("log")
    axes[0].set_title("loss against epochs (mean over seeds, band: min-max)")
    axes[1].set_title("loss against training time")
    axes[0].legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return [path, tables.write_table(rows, path.with_suffix(".csv"))]


def _tables(results: dict[str, dict[str, Any]], floor: float, out: Path) -> list[Path]:
    rows = []
    for arm in ARMS:
        r = results[arm.label]
        for final in r["finals"]:
            rows.append({"arm": arm.label, "optimizer": arm.spec, "batch_size": arm.batch_size, **final})
    return [tables.write_table(rows, out / "final.csv")]


def summarize(results: dict[str, dict[str, Any]], floor: float, budget: str, seeds: int, task: str) -> str:
    """The markdown summary; every number is read from the runs."""
    target = floor + NEAR_FLOOR
    body, times = [], {}
    for arm in ARMS:
        r = results[arm.label]
        row = r["row"]
        arrivals = [_arrival(c, target) for c in r["curves"]]
        reached = [a for a in arrivals if math.isfinite(a[0])]
        t_mean = float(np.median([f["train_time"] for f in r["finals"]]))
        if reached and len(reached) == len(arrivals):
            times[arm.label] = float(np.mean([a[1] for a in reached]))
            when = f"{np.mean([a[0] for a in reached]):.2f} ep, {times[arm.label]:.3g} s"
        else:
            when = f"not reached ({len(arrivals) - len(reached)} of {len(arrivals)} seeds)"
        excess = row["mean"] - floor if math.isfinite(row["mean"]) else math.nan
        body.append([arm.label, arm.spec, arm.batch_size, f"{_lab.interval(row)}", f"{excess:.4f}",
                     f"{row['diverged']} of {row['seeds']}", when, f"{t_mean:.3g}"])  # fmt: skip
    lines = [
        f"# d2l's airfoil protocol, budget {budget} ({seeds} seeds)",
        "",
        (
            f"Task {task}: d2l's linear regression (on the airfoil data: 1,500 standardised rows), squared loss / 2, "
            "judged on the training rows "
            f"(d2l's protocol). Least-squares floor of this objective: **{floor:.4f}**. Final loss: mean [95% CI] "
            f"over seeds; 'near floor': the first curve point within {NEAR_FLOOR} of the floor (mean over seeds, "
            "epochs and training seconds, evaluation excluded; the first run of an optimizer in a fresh kernel cache "
            "includes compiling its native step)."
        ),
        "",
        *_lab.markdown_table(
            [
                "arm",
                "optimizer",
                "batch",
                "final loss",
                "above floor",
                "diverged",
                "near floor at",
                "train s/run (median)",
            ],
            body,
        ),
        "",
        "![loss against epochs and training time](curves.png)",
        "",
        "## Against the seeds' claims",
        "",
    ]
    if budget == "smoke":
        lines.append("* smoke runs one epoch on 300 rows, not d2l's protocol: no comparison with the book's numbers.")
    for name, printed in D2L.items() if budget != "smoke" else ():
        row = results[name]["row"]
        if math.isfinite(row["mean"]):
            inside = row["ci_low"] <= printed <= row["ci_high"]
            lines.append(
                f"* d2l prints {printed} for {name}: here {_lab.interval(row)}; "
                + ("the printed value is inside the interval." if inside else
                   f"the printed value is outside the interval (off by {row['mean'] - printed:+.4f}).")
            )  # fmt: skip
    if times:
        fastest = min(times, key=times.__getitem__)
        order = ", ".join(f"{k} {v:.3g} s" for k, v in sorted(times.items(), key=lambda kv: kv[1]))
        lines.append(
            f"* Time to within {NEAR_FLOOR} of the floor, fastest first: {order}. d2l's point is that "
            f"minibatches beat both full-batch GD and batch-1 SGD in time; here the fastest is {fastest}."
        )
    lines.append("")
    return "\n".join(lines)
