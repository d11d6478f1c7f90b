"""Seed 000 on real tasks: do Adam's beta1 = 0.9, beta2 = 0.999, eps = 1e-8 matter, task by task?

One hyperparameter at a time around the defaults (lr 1e-3), several seeds, on the lab's supervised
tasks; the seed's two GAN questions on MNIST; everything through ``optimlab.evaluate``:

* ``mnist-cnn``, ``fashion-mnist-cnn``, ``house-mlp`` and ``cifar10-cnn`` (when its data is in the data
  directory; otherwise the table says "not run: data absent", and so for any task whose data is
  missing: nothing is downloaded): the defaults, beta1 in {0.5, 0.99}, beta2 = 0.9, eps in
  {1e-3, 0.1, 1};
* ``mnist-dcgan`` (conditional DCGAN): Adam(lr=2e-4) with beta1 0.5 (the DCGAN paper's) vs 0.9;
* ``mnist-wgan`` (weight clipping): RMSprop(lr=5e-5) (the WGAN paper's) vs Adam(lr=5e-5, beta1=0.5),
  the momentum optimizer the WGAN paper found unstable.

The table is the seed's layout: a row per configuration, a column per task, each cell the final
metric's mean [95% CI] over seeds with its standing against the task's best configuration (Welch's
test: ``best``, ``≈`` within noise, ``worse`` beyond noise) and the diverged seeds.  Budgets: each
task's own ``smoke``/``quick``/``full`` with 2, 3 and 5 seeds.  Runs are kept in ``<out>/lab.sqlite``.
"""

from __future__ import annotations

import math
import os
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import optimlab

from .. import data as data_mod
from .. import tables
from .. import tasks as tasks_mod
from ..store import Store
from ..tasks import Task
from . import _lab
from .adam_saddle import StudyOutput

SEEDS = {"smoke": 2, "quick": 3, "full": 5}
#: (row label, spec): the defaults, then one hyperparameter changed at a time.
CONFIGS = (
    ("defaults (0.9, 0.999, 1e-8)", "Adam"),
    ("beta1 = 0.5", "Adam(beta1=0.5)"),
    ("beta1 = 0.99", "Adam(beta1=0.99)"),
    ("beta2 = 0.9", "Adam(beta2=0.9)"),
    ("eps = 1e-3", "Adam(eps=0.001)"),
    ("eps = 0.1", "Adam(eps=0.1)"),
    ("eps = 1", "Adam(eps=1.0)"),
)
SUPERVISED = ("mnist-cnn", "fashion-mnist-cnn", "house-mlp", "cifar10-cnn")
GANS = {
    "mnist-dcgan": (("beta1 = 0.5", "Adam(lr=0.0002, beta1=0.5)"), ("beta1 = 0.9", "Adam(lr=0.0002, beta1=0.9)")),
    "mnist-wgan": (("RMSprop", "RMSprop(lr=5e-05)"), ("Adam, beta1 = 0.5", "Adam(lr=5e-05, beta1=0.5)")),
}
STANDING = {"best": "best", "within noise": "≈", "worse beyond noise": "worse"}


@dataclass
class TaskResult:
    """One task's comparison: its rows (``Comparison.table()`` with the configuration's label), or why it did not run."""

    name: str
    metric: str = ""
    higher_is_better: bool = True
    rows: list[dict[str, Any]] = field(default_factory=list)
    finals: list[dict[str, Any]] = field(default_factory=list)
    skipped: str = ""


def run(
    out_dir: str | os.PathLike[str],
    *,
    budget: str = "quick",
    data_dir: str | os.PathLike[str] | None = None,
    tasks: Mapping[str, Task] | None = None,
    log: Callable[[str], None] = print,
) -> StudyOutput:
    """Run every task's configurations; write ``<task>.png`` (+ CSV), ``final.csv`` and ``summary.md``.

    ``tasks``: tasks to use instead of the registered ones, by their registered name (tests pass
    the same tasks on tiny tensors, ``task.with_data(...)``); every name of :data:`SUPERVISED` and
    :data:`GANS` not given is the registered task.
    """
    _lab.check_budget("adam-tasks", budget)
    given = dict(tasks or {})
    unknown = sorted(set(given) - {*SUPERVISED, *GANS})
    if unknown:
        raise ValueError(
            f"study adam-tasks: invalid tasks name {unknown[0]!r}: expected some of {', '.join([*SUPERVISED, *GANS])}"
        )
    out = _lab.out_dir(out_dir)
    seeds = SEEDS[budget]
    plan = [(name, CONFIGS) for name in SUPERVISED] + list(GANS.items())
    results = []
    with Store(out / "lab.sqlite") as store:
        for name, configs in plan:
            task = given.get(name) or tasks_mod.get(name)
            absent = _data_absent(task, data_dir)
            if absent:
                log(f"adam-tasks: {name}: not run: data absent ({absent})")
                results.append(TaskResult(name, skipped=f"not run: data absent ({absent})"))
                continue
            log(f"adam-tasks: {name}: {len(configs)} configurations x {seeds} seeds")
            comparison = optimlab.evaluate(
                task,
                [spec for _, spec in configs],
                budget=budget,
                seeds=seeds,
                seed=0,
                store=store,
                data_dir=_lab.data_dir(data_dir),
                progress=False,
            )
            rows = [{"configuration": label, **row} for (label, _), row in zip(configs, comparison.table())]
            finals = [
                {"task": name, "configuration": label, **f}
                for (label, _), fs in zip(configs, comparison.finals.values())
                for f in fs
            ]
            results.append(TaskResult(name, comparison.metric, comparison.higher_is_better, rows, finals))
    files = [p for r in results if r.rows for p in _figure(r, out / f"{r.name}.png")]
    finals = [f for r in results for f in r.finals]
    if finals:
        files.append(tables.write_table(finals, out / "final.csv"))
    summary = summarize(results, budget, seeds)
    (out / "summary.md").write_text(summary)
    files.append(out / "summary.md")
    return StudyOutput(out, files, summary)


def _data_absent(task: Task, data_dir: str | os.PathLike[str] | None) -> str:
    """Why ``task``'s data set is not in the data directory ("" when it is, or the task brings its own data)."""
    dataset = getattr(task, "dataset", None)
    if getattr(task, "data", None) is not None or not dataset:
        return ""
    try:
        data_mod.load(dataset, data_dir, download=False, **getattr(task, "load_kwargs", {}))
    except data_mod.DataMissingError:
        return f"{dataset} not in {data_mod.resolve_data_dir(data_dir)}"
    return ""


def _figure(result: TaskResult, path: Path) -> list[Path]:
    from matplotlib.figure import Figure  # no pyplot: no global state, no backend to choose

    rows = result.rows
    fig = Figure(figsize=(8, 0.5 * len(rows) + 1.6), layout="constrained")
    ax = fig.subplots()
    y = list(range(len(rows)))[::-1]
    for yi, r in zip(y, rows):
        if math.isfinite(r["mean"]):
            low = r["ci_low"] if math.isfinite(r["ci_low"]) else r["mean"]
            high = r["ci_high"] if math.isfinite(r["ci_high"]) else r["mean"]
            ax.errorbar(r["mean"], yi, xerr=[[r["mean"] - low], [high - r["mean"]]], fmt="o", capsize=4,
                        color="C3" if r["status"] == "worse beyond noise" else "C0")  # fmt: skip
        if r["diverged"]:
            ax.annotate(
                f"{r['diverged']}/{r['seeds']} diverged",
                (0.99, yi),
                xycoords=("axes fraction", "data"),
                ha="right",
                fontsize=8,
                color="C3",
            )
    ax.set_yticks(y, [r["configuration"] for r in rows])
    ax.set_xlabel(
        f"final {result.metric} ({'higher' if result.higher_is_better else 'lower'} is better): mean and 95% CI"
    )
    ax.set_title(f"{result.name}: one hyperparameter at a time (red: worse beyond noise than the best)", fontsize=10)
    ax.grid(alpha=0.3, axis="x")
    fig.savefig(path, dpi=110)
    return [path, tables.write_table(rows, path.with_suffix(".csv"))]


def _cell(row: Mapping[str, Any]) -> str:
    div = f", {row['diverged']}/{row['seeds']} div." if row["diverged"] else ""
    return f"{_lab.interval(row)} {STANDING.get(row['status'], row['status'])}{div}"


def summarize(results: Sequence[TaskResult], budget: str, seeds: int) -> str:
    """The markdown summary: the seed's table (configurations x tasks) with CIs, the GANs, what each shows."""
    supervised = [r for r in results if r.name in SUPERVISED]
    header = ["configuration", *(f"{r.name} ({r.metric or 'not run'})" for r in supervised)]
    body = []
    for i, (label, _) in enumerate(CONFIGS):
        body.append([label, *(_cell(r.rows[i]) if r.rows else "not run: data absent" for r in supervised)])
    lines = [
        f"# Adam's beta1, beta2 and eps on real tasks, budget {budget} ({seeds} seeds)",
        "",
        (
            "Final metric on each task's test split: mean [95% CI] over seeds; standing against the task's best "
            "configuration by Welch's test (best, ≈ within noise, worse beyond noise); diverged seeds counted. "
            "Adam at lr 1e-3, one hyperparameter changed at a time."
        ),
        "",
        *_lab.markdown_table(header, body),
        "",
        *(f"* {r.name}: {r.skipped}" for r in supervised if not r.rows),
        "",
    ]
    lines += [f"![{r.name}]({r.name}.png)" for r in supervised if r.rows]
    lines += ["", "## GANs", ""]
    for r in results:
        if r.name not in GANS:
            continue
        if not r.rows:
            lines.append(f"* {r.name}: {r.skipped}")
            continue
        cells = "; ".join(f"{row['configuration']} ({row['optimizer']}): {_cell(row)}" for row in r.rows)
        lines.append(f"* {r.name}, final {r.metric}: {cells}. ![{r.name}]({r.name}.png)")
    lines += ["", "## Against the seed's claims", ""]
    for r in supervised:
        if r.rows:
            lines.append(f"* {r.name}: {_finding(r)}")
    return "\n".join([*lines, ""])


def _finding(r: TaskResult) -> str:
    """Which changes from the defaults moved the final metric beyond noise, computed from the rows."""
    default = r.rows[0]
    worse = [row["configuration"] for row in r.rows[1:] if row["status"] in ("worse beyond noise", "diverged")]
    best = next((row["configuration"] for row in r.rows if row["status"] == "best"), "none")
    standing = STANDING.get(default["status"], default["status"])
    return (
        f"the defaults stand '{standing}' ({_lab.interval(default)}); best: {best}; worse beyond noise or diverged: "
        f"{', '.join(worse) or 'none'}."
    )
