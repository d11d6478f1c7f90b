"""Seed 002: is RAdam robust over learning rates 0.003-0.1, where Adam needs a warmup?

Liu et al. (RAdam, ICLR 2020) claim that rectifying Adam's adaptive learning rate makes it robust to
the learning rate ("from 0.003 to 0.1" in their image-classification figure); Ma & Yarats (2019)
answer that Adam with an *untuned* linear warmup over :math:`2/(1-\\beta_2)` steps (2,000 for
:math:`\\beta_2 = 0.999`) does as well.  This study runs the three arms on a real task over learning
rates :math:`10^{-4} \\dots 10^{-1}`, several seeds each, and reads the claim off the final test
metric:

* **RAdam** (``RAdam(lr=...)``, torch's defaults), **Adam** (``Adam(lr=...)``) and **Adam with untuned
  warmup** (``optimlab.evaluate(..., warmup="untuned")``), nothing tuned: the learning rate is the axis;
* the task: ``mnist-cnn`` by default (any task object: ``task=``), at the study's budget:
  ``full`` the task's full budget with 5 seeds, ``quick`` its quick budget with 3 seeds, ``smoke``
  its smoke budget with 2 seeds and three learning rates (the tests);
* robust over a range means: no seed diverges there and the worst mean final metric over the range
  stays close to the best of the study; the summary gives each arm's worst mean over the range (a
  spread alone would reward an arm that fails at every learning rate) and, at each learning rate,
  whether RAdam and Adam differ beyond noise (Welch's test).

Runs are kept in ``<out>/lab.sqlite``; a rerun trains nothing already there.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import optimlab

from .. import tables
from .. import tasks as tasks_mod
from ..store import Store
from ..tasks import Task
from . import _lab
from .adam_saddle import StudyOutput

LRS = (1e-4, 3e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1)
SMOKE_LRS = (1e-3, 1e-2, 1e-1)
SEEDS = {"smoke": 2, "quick": 3, "full": 5}
#: The range over which RAdam's paper claims robustness.
CLAIM = (0.003, 0.1)
ARMS = ("RAdam", "Adam", "Adam + untuned warmup")


def run(
    out_dir: str | os.PathLike[str],
    *,
    budget: str = "quick",
    data_dir: str | os.PathLike[str] | None = None,
    task: Task | None = None,
    lrs: Sequence[float] | None = None,
    log: Callable[[str], None] = print,
) -> StudyOutput:
    """Run the three arms at every learning rate; write ``lr.png`` (+ CSV), ``final.csv`` and ``summary.md``."""
    _lab.check_budget("radam-lr", budget)
    grid = tuple(float(lr) for lr in (lrs if lrs is not None else SMOKE_LRS if budget == "smoke" else LRS))
    if not grid or not all(math.isfinite(lr) and lr > 0 for lr in grid):
        raise ValueError(f"study radam-lr: invalid lrs={lrs!r}: expected learning rates > 0")
    out = _lab.out_dir(out_dir)
    the_task = tasks_mod.get("mnist-cnn") if task is None else task
    seeds = SEEDS[budget]
    rows: list[dict[str, Any]] = []  # one per (arm, lr): its Comparison.table() row
    finals: list[dict[str, Any]] = []
    steps = math.nan
    with Store(out / "lab.sqlite") as store:
        for lr in grid:
            log(f"radam-lr: lr {lr:g}: RAdam, Adam, Adam + untuned warmup, {seeds} seeds each")
            plain = optimlab.evaluate(
                the_task, [f"RAdam(lr={lr!r})", f"Adam(lr={lr!r})"], budget=budget, seeds=seeds, seed=0, store=store,
                data_dir=_lab.data_dir(data_dir), progress=False,
            )  # fmt: skip
            warm = optimlab.evaluate(
                the_task, [f"Adam(lr={lr!r})"], budget=budget, seeds=seeds, seed=0, store=store, warmup="untuned",
                data_dir=_lab.data_dir(data_dir), progress=False,
            )  # fmt: skip
            # Welch's test RAdam vs Adam at this lr is the plain comparison's own
            for arm, result in (("RAdam", plain), ("Adam", plain), ("Adam + untuned warmup", warm)):
                label = next(k for k in result.finals if k.startswith(arm.split()[0]))
                rows.append({"arm": arm, "lr": lr, **next(r for r in result.table() if r["optimizer"] == label)})
                finals += [{"arm": arm, "lr": lr, **f} for f in result.finals[label]]
            steps = plain.finals[next(iter(plain.finals))][0]["steps"]
            metric, higher = plain.metric, plain.higher_is_better
    files = [*_figure(rows, metric, higher, out / "lr.png"), tables.write_table(finals, out / "final.csv")]
    summary = summarize(rows, metric, higher, budget, seeds, the_task.name, int(steps))
    (out / "summary.md").write_text(summary)
    files.append(out / "summary.md")
    return StudyOutput(out, files, summary)


def _figure(rows: list[dict[str, Any]], metric: str, higher: bool, path: Path) -> list[Path]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

    fig = Figure(figsize=(8, 5), layout="constrained")
    ax = fig.subplots()
    for arm in ARMS:
        mine = [r for r in rows if r["arm"] == arm]
        lr = [r["lr"] for r in mine]
        mean = [r["mean"] for r in mine]
        err = [[r["mean"] - r["ci_low"] for r in mine], [r["ci_high"] - r["mean"] for r in mine]]
        bars = ax.errorbar(lr, mean, yerr=err, marker="o", capsize=3, label=arm)
        for r in mine:
            if r["diverged"]:
                ax.annotate(f"{r['diverged']}/{r['seeds']} div.", (r["lr"], r["mean"] if math.isfinite(r["mean"]) else 0),
                            color=bars[0].get_color(), fontsize=7, textcoords="offset points", xytext=(4, -10))  # fmt: skip
    ax.axvspan(*CLAIM, color="grey", alpha=0.12, label=f"claimed robust range {CLAIM[0]}-{CLAIM[1]}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel(f"final {metric} ({'higher' if higher else 'lower'} is better), mean and 95% CI")
    ax.set_title("RAdam vs Adam vs Adam with untuned warmup over learning rates")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    fig.savefig(path, dpi=110)
    return [path, tables.write_table(rows, path.with_suffix(".csv"))]


def summarize(
    rows: list[dict[str, Any]], metric: str, higher: bool, budget: str, seeds: int, task: str, steps: int
) -> str:
    """The markdown summary; every number is read from the runs."""
    lrs = sorted({r["lr"] for r in rows})
    cell = {(r["arm"], r["lr"]): r for r in rows}
    body = []
    for lr in lrs:
        radam, adam = cell[("RAdam", lr)], cell[("Adam", lr)]
        p = adam["p_value"] if math.isnan(radam["p_value"]) else radam["p_value"]  # the best arm has none
        differ = "—" if math.isnan(p) else f"{'yes' if p < 0.05 else 'no'} (p={p:.2g})"
        body.append([f"{lr:g}", *(_cell(cell[(arm, lr)]) for arm in ARMS), differ])
    lines = [
        f"# RAdam vs Adam vs Adam with untuned warmup over learning rates: {task}, budget {budget}",
        "",
        f"Final {metric} ({'higher' if higher else 'lower'} is better): mean [95% CI] over {seeds} seeds, "
        "diverged seeds counted. Nothing tuned: every arm at every learning rate. The untuned warmup is linear over "
        f"2/(1 - beta2) = 2,000 steps; a run here has {steps} steps"
        + (" (shorter than the warmup: that arm never reaches its nominal learning rate)." if steps < 2000 else "."),
        "",
        *_lab.markdown_table(["lr", *ARMS, "RAdam and Adam differ beyond noise"], body),
        "",
        "![final metric against the learning rate](lr.png)",
        "",
        f"## The claim: RAdam is robust over learning rates {CLAIM[0]}-{CLAIM[1]}",
        "",
    ]
    inside = [lr for lr in lrs if CLAIM[0] <= lr <= CLAIM[1]]
    if len(inside) < 2:
        lines.append(f"* Fewer than two learning rates of this run lie in [{CLAIM[0]}, {CLAIM[1]}]: nothing to judge.")
        return "\n".join([*lines, ""])
    sign = 1.0 if higher else -1.0  # sign * mean: larger is better
    finite = [r for r in rows if math.isfinite(r["mean"])]
    if not finite:
        lines.append("* No arm has a finite mean at any learning rate: nothing to judge.")
        return "\n".join([*lines, ""])
    top = max(finite, key=lambda r: sign * r["mean"])
    worst = {}
    for arm in ARMS:
        mine = [cell[(arm, lr)] for lr in inside]
        diverged = sum(r["diverged"] for r in mine)
        means = [r["mean"] for r in mine if math.isfinite(r["mean"])]
        # a learning rate with no finite seed is the worst outcome there is
        worst[arm] = min((sign * m for m in means), default=-math.inf) * sign if len(means) == len(mine) else math.nan
        span = f"{min(means):.4g} to {max(means):.4g}" if means else "no finite mean"
        gap = (
            f"{abs(top['mean'] - worst[arm]):.4g} from"
            if math.isfinite(worst[arm])
            else "no finite mean at some lr, far from"
        )
        lines.append(
            f"* {arm}: over lr {inside[0]:g}-{inside[-1]:g} its mean final {metric} runs {span}; {diverged} of "
            f"{sum(r['seeds'] for r in mine)} seeds diverged; its worst there is {gap} the study's best "
            f"({top['arm']} at lr {top['lr']:g}: {top['mean']:.4g})."
        )

    def better(a: float, b: float) -> bool:
        return math.isfinite(a) and (not math.isfinite(b) or sign * a > sign * b)

    verdict = "better" if better(worst["RAdam"], worst["Adam"]) else "not better"
    lines.append(
        f"* Robustness is the worst mean over the claimed range (a spread alone would reward an arm that fails "
        f"everywhere): RAdam's worst is {verdict} than Adam's ({worst['RAdam']:.4g} vs {worst['Adam']:.4g}); "
        f"Adam with untuned warmup: {worst['Adam + untuned warmup']:.4g}. Whether a difference is beyond noise at "
        "each learning rate is in the table's last column."
    )
    return "\n".join([*lines, ""])


def _cell(row: dict[str, Any]) -> str:
    div = f", {row['diverged']}/{row['seeds']} div." if row["diverged"] else ""
    return f"{_lab.interval(row)}{div}"
