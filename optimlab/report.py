"""The lab's report from a results store: training curves, learning-rate sensitivity, summary tables.

>>> from optimlab.report import report
>>> paths = report(Store("results/lab.sqlite"), "results/report")

For every task and budget in the store (finished runs only) it writes into ``out``:

* ``curves-<task>-<budget>.png``: the training curves of each optimizer's evaluated
  configuration, one panel per quantity (loss, accuracy, ...): the training split solid, the
  validation split dashed; the line is the mean over seeds at each curve point and the band spans
  the minimum to the maximum over seeds.  Where an optimizer has several evaluated
  configurations, the one with the best mean final validation metric is drawn.
* ``lr-<task>-<budget>.png`` (when the store holds one): the final validation metric against the
  learning rate for every optimizer evaluated at 3 or more learning rates with otherwise equal
  hyperparameters: mean over the seeds that did not diverge, band from minimum to maximum; the
  divergence in a labelled strip below, apart from the values (:func:`lr_figure`).
* ``samples-<task>-<budget>.png`` (GAN tasks, whose runs store a samples image: the run artifact
  ``"samples"``, :meth:`optimlab.tasks.gan.GanInstance.samples_png`): the image of each optimizer's
  drawn configuration at its first evaluation seed, side by side (:func:`samples_figure`).
* ``summary-<task>-<budget>.csv`` and a section of ``summary.md``: one row per evaluated
  configuration: what ran (:func:`optimlab.spec.label`: the lr, every other hyperparameter that
  differs from its default, tuned values marked ``*``), tuning trials and the ranges they searched,
  the final metric's mean and 95% interval over the seeds that did not diverge, how many of its
  seeds diverged, wall time per run, optimizer-state bytes, its standing against the best-ranked
  row and the verdict (:mod:`optimlab.stats`).  A tuned value at the edge of its range
  (:func:`optimlab.protocol.range_edge`: the optimum may lie beyond it) is flagged beside the
  standing, as ``optimlab tune`` printed it.  The ranges come from the winning trial's run, which
  :func:`optimlab.protocol.tune` stores with its search space; runs stored before it did show none,
  and a trial that two tunings share (the same values give the same run) keeps the first one's.

Every figure is written beside a tidy CSV of the numbers drawn and a JSON of what was drawn.

How runs are read: a run's *optimizer* is its preset name where its class and hyperparameters
match one of :data:`optimlab.optim.PRESETS` (``SGD`` with ``momentum=0.9`` is ``Momentum``, as
:meth:`optimlab.spec.OptimizerSpec.from_config` reads it), then any non-default hyperparameter
that is the same in all its tuning trials (``AdamW(weight_decay=0.01)``).  Runs at the *tuning seed* (0, as
:func:`optimlab.protocol.compare` uses by default) are tuning trials and never enter the
statistics; a configuration run at 2 or more other seeds is *evaluated*.
"""

from __future__ import annotations

import io
import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from . import spec as spec_mod
from . import tasks as tasks_mod
from .figures import _figure, _fmt, _palette
from .optim._validate import check_int
from .protocol import EDGE_FRACTION, edge_notes, final_value, metric_key, read_tuning_meta, space_text
from .runner import json_plain
from .stats import summarize, verdict
from .store import Store, canonical_json
from .tables import write_config, write_table
from .tasks._base import StoredTask
from .tasks.gan import SAMPLES_ARTIFACT

__all__ = [
    "Configuration",
    "Samples",
    "best_configurations",
    "curves_figure",
    "lr_figure",
    "read_store",
    "report",
    "samples",
    "samples_figure",
]

# Curve-point entries that are not plotted quantities.
_NOT_PLOTTED = frozenset({"epoch", "epochs", "step", "train_time", "wall_time"})
# (line style, marker) of the training split (True) and of an evaluated split (False).
_SPLIT_STYLES = {True: ("-", "o"), False: ("--", "s")}


@dataclass
class Configuration:
    """Every run of one (task, budget, optimizer, hyperparameters) in the store, by seed.

    ``optimizer``: the arm as the user fixed it (``AdamW(weight_decay=0.01)``); ``shown``: the
    tuned values; ``name``: what ran, :func:`optimlab.spec.label` (tuned values marked ``*``);
    ``tuning``: ``(search space, values)`` of the tuning trial that ran these hyperparameters, as
    that trial stored them (:func:`optimlab.protocol.read_tuning_meta`), or ``None``.
    """

    task: str
    budget: str
    optimizer: str
    hyperparameters: dict[str, Any]
    shown: dict[str, Any]
    name: str
    runs: dict[int, dict[str, Any]] = field(default_factory=dict)
    tuning: tuple[dict[str, Any], dict[str, Any]] | None = None


# ---------------------------------------------------------------------------------------------
# Reading the store
# ---------------------------------------------------------------------------------------------


# The tasks as the runs last read by read_store describe them (Task.metadata), by task name
_STORED_TASKS: dict[str, StoredTask] = {}


def _base_task(name: str) -> tasks_mod.Task:
    """The task of a stored task name: as its runs' stored metadata describe it (:meth:`optimlab.tasks.Task.metadata`,
    kept by :func:`read_store`), so that any task, built-in or not, reports without its code; for runs stored
    before the metadata existed, the registered task behind the name (``mnist-cnn+warmup=untuned``,
    ``mnist-cnn@synthetic``)."""
    if name in _STORED_TASKS:
        return _STORED_TASKS[name]
    return tasks_mod.get(name.split("+")[0].split("@")[0])


def _role_view(config: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(optimizer, hyperparameters)`` of a run; a GAN's when both networks share them, else joined by role."""
    optimizer, hp = config["optimizer"], config["hyperparameters"]
    if not isinstance(optimizer, Mapping):
        return optimizer, hp
    names, hps = list(optimizer.values()), list(hp.values())
    if all(n == names[0] for n in names) and all(h == hps[0] for h in hps):
        return names[0], hps[0]
    return " / ".join(f"{role}: {name}" for role, name in optimizer.items()), {
        f"{role}.{k}": v for role, h in hp.items() for k, v in h.items()
    }


def _spec(optimizer: str, hp: Mapping[str, Any]) -> spec_mod.OptimizerSpec | None:
    """The spec of a stored run; ``None`` for a GAN whose roles differ or a class this optimlab lacks."""
    try:
        return spec_mod.OptimizerSpec.from_config({"name": optimizer, "hyperparameters": hp})
    except ValueError:
        return None


def _preset(spec: spec_mod.OptimizerSpec | None, optimizer: str, hp: Mapping[str, Any]) -> tuple[str, dict[str, Any]]:
    """``(display name, the hyperparameters that differ from the class's defaults and the preset's options)``."""
    if spec is None:
        return optimizer.removeprefix("optimlab."), dict(hp)
    base = spec_mod.defaults(spec.cls)
    name = spec.name.removeprefix("optimlab.")
    if spec.preset is not None:
        name = spec.preset
        base.update(spec_mod.presets()[spec.preset][1])
    plain = {k: json_plain(v) for k, v in base.items()}
    return name, {k: v for k, v in hp.items() if k not in plain or plain[k] != v}


def _text(value: Any) -> str:
    """A stored hyperparameter as a spec writes it: numbers to 3 digits, pairs as tuples, an inner optimizer by its label."""
    if isinstance(value, Mapping):
        inner = _spec(value.get("name", "?"), value.get("hyperparameters", {}))
        return spec_mod.label(inner) if inner is not None else repr(dict(value))
    if isinstance(value, (list, tuple)):
        return f"({', '.join(_text(v) for v in value)})"
    return _fmt(value) if isinstance(value, (int, float)) and not isinstance(value, bool) else repr(value)


def _label(name: str, values: Mapping[str, Any]) -> str:
    return f"{name}({', '.join(f'{k}={_text(v)}' for k, v in values.items())})" if values else name


def read_store(store: Store, tuning_seed: int = 0) -> tuple[list[Configuration], dict[tuple[str, str, str], int]]:
    """``(configurations, tuning trials per (task, budget, optimizer))`` of the store's finished runs.

    A configuration's ``runs`` map each seed other than ``tuning_seed`` to ``{"key", "config", "final",
    "curve", "state_bytes"}``.  The trial counts are the runs at ``tuning_seed``.
    """
    check_int("report", "tuning_seed", tuning_seed, 0)
    rows = []
    for record in store.runs(status="finished"):
        config = record["config"]
        if record.get("meta") and "task" in record["meta"]:
            _STORED_TASKS[config["task"]] = StoredTask(record["meta"]["task"])
        optimizer, hp = _role_view(config)
        spec = _spec(optimizer, hp)
        name, differ = _preset(spec, optimizer, hp)
        rows.append((config, name, hp, differ, spec, record))
    # Non-default hyperparameters that vary across an optimizer's trials were tuned: shown per row,
    # not in its name; the others were fixed by the user and name the optimizer.
    trial_hps: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for config, name, hp, _, _, _ in rows:
        if config["seed"] == tuning_seed:
            trial_hps.setdefault((config["task"], config["budget"], name), []).append(hp)
    varying = {key: {k for k in hps[0] if any(h.get(k) != hps[0][k] for h in hps)} | {"lr"} for key, hps in trial_hps.items()}
    configurations: dict[tuple[str, ...], Configuration] = {}
    trials: dict[tuple[str, str, str], int] = {}
    searched: dict[tuple[str, ...], tuple[dict[str, Any], dict[str, Any]]] = {}
    for config, name, hp, differ, spec, record in rows:
        tuned = varying.get((config["task"], config["budget"], name), {"lr"})
        fixed = {k: v for k, v in differ.items() if k not in tuned}
        group = (config["task"], config["budget"], _label(name, fixed))
        if config["seed"] == tuning_seed:
            trials[group] = trials.get(group, 0) + 1
            tuning = read_tuning_meta(record.get("meta"))
            if tuning is not None:  # a diverged winner (every trial diverged) is at no edge worth flagging
                space, values = tuning
                searched[(*group, canonical_json(hp))] = (space, {} if record["final"].get("diverged") else values)
            continue
        shown = {k: v for k, v in differ.items() if k not in fixed}
        was_tuned = (config["task"], config["budget"], name) in varying
        marked = [k for k in shown if k in hp and k != "optimizer"] if was_tuned else []
        label = spec_mod.label(spec, tuned=marked) if spec is not None else _label(name, differ)
        c = configurations.setdefault((*group, canonical_json(hp)), Configuration(*group, hp, shown, label))
        c.runs[config["seed"]] = {"key": record["key"], "config": config, "final": record["final"],
                                  "curve": store.epochs(record["key"]), "state_bytes": record["state_bytes"]}  # fmt: skip
    for key, c in configurations.items():
        c.tuning = searched.get(key)  # the trial that won, evaluated at the other seeds
    return list(configurations.values()), trials


def _validation_value(task: tasks_mod.Task, run: Mapping[str, Any]) -> float:
    if run["final"].get("diverged"):
        return math.nan
    last = run["curve"][-1]
    return float(last[metric_key(task.metric, last)])


# ---------------------------------------------------------------------------------------------
# Figures
# ---------------------------------------------------------------------------------------------


def _save(fig: Any, path: Path, rows: list[dict[str, Any]], config: dict[str, Any]) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    write_table(rows, path.with_suffix(".csv"))
    write_config(config, path.with_suffix(".json"))
    return path


def _quantities(configurations: Sequence[Configuration]) -> list[str]:
    """The plotted quantities, in first-seen order: ``loss``, ``accuracy``, ``d_loss``..."""
    names: dict[str, None] = {}
    for c in configurations:
        for run in c.runs.values():
            for point in run["curve"]:
                for k in point:
                    if k not in _NOT_PLOTTED:
                        names[k.split("_", 1)[1]] = None
    return list(names)


def curves_figure(configurations: Sequence[Configuration], path: str | os.PathLike[str]) -> Path:
    """Training curves of ``configurations`` (one task and budget): see the module docstring.

    The CSV has one row per (configuration, quantity, split, curve point): the mean, minimum and
    maximum over the seeds that reached that point, and their number.
    """
    if not configurations:
        raise ValueError("curves_figure: invalid configurations=[]: expected at least one")
    quantities = _quantities(configurations)
    task, budget = configurations[0].task, configurations[0].budget
    fig = _figure((max(7.0, 4.2 * len(quantities)), 4.4 + 0.22 * (len(configurations) + 3) // 2))
    axes = fig.subplots(1, len(quantities), squeeze=False)[0]
    colours = _palette(len(configurations))
    rows = []
    splits_seen: dict[str, str] = {}
    for i, (c, colour) in enumerate(zip(configurations, colours)):
        width = 2.6 - 1.4 * i / max(1, len(configurations) - 1)  # thinner on top: equal curves stay visible
        for ax, quantity in zip(axes, quantities):
            keys = {k for run in c.runs.values() for p in run["curve"] for k in p if k not in _NOT_PLOTTED}
            for split in sorted({k.split("_", 1)[0] for k in keys if k.split("_", 1)[1] == quantity}, key=lambda s: s != "train"):
                key = f"{split}_{quantity}"
                style = _SPLIT_STYLES[split == "train"]
                splits_seen[split] = style
                by_point: dict[float, list[float]] = {}
                for run in c.runs.values():
                    for p in run["curve"]:
                        if key in p and math.isfinite(p[key]):
                            by_point.setdefault(p["epochs"], []).append(p[key])
                if not by_point:
                    continue
                x = np.array(sorted(by_point))
                ys = [np.array(by_point[e]) for e in x]
                mean = np.array([v.mean() for v in ys])
                low = np.array([v.min() for v in ys])
                high = np.array([v.max() for v in ys])
                if len(x) == 1:  # one curve point (a one-epoch budget): the band is an error bar
                    ax.errorbar(x, mean, yerr=[mean - low, high - mean], fmt=style[1], color=colour, capsize=4, ms=3 + width)
                else:
                    ax.plot(x, mean, style[0], color=colour, lw=width, marker=style[1] if len(x) < 4 else None, ms=2 + width)
                    ax.fill_between(x, low, high, color=colour, alpha=0.18, lw=0)
                rows += [
                    {"task": task, "budget": budget, "optimizer": c.name, "quantity": quantity, "split": split,
                     "epochs": float(e), "mean": float(m), "min": float(lo), "max": float(hi), "seeds": len(v)}
                    for e, m, lo, hi, v in zip(x, mean, low, high, ys)
                ]  # fmt: skip
    for ax, quantity in zip(axes, quantities):
        ax.set_title(quantity.replace("_", " "), fontsize=10)
        ax.set_xlabel("epochs")
        if len({r["epochs"] for r in rows if r["quantity"] == quantity}) == 1:  # one point: show it against 0 epochs
            ax.set_xlim(left=0)
        ax.grid(alpha=0.3)
        drawn = [v for r in rows if r["quantity"] == quantity for v in (r["min"], r["max"])]
        if drawn and min(drawn) > 0 and max(drawn) > 10 * min(drawn):  # log only where values span decades
            ax.set_yscale("log")
    from matplotlib.lines import Line2D

    handles = [Line2D([], [], color=colour, lw=2, label=f"{c.name}, {len(c.runs)} seeds") for c, colour in zip(configurations, colours)]
    handles += [
        Line2D([], [], color="black", ls=style[0], marker=style[1], ms=4,
               label="train (mean minibatch loss)" if split == "train" else f"{split} split (evaluated)")  # fmt: skip
        for split, style in splits_seen.items()
    ]
    fig.legend(handles=handles, loc="outside lower center", ncols=2, fontsize=8, frameon=False)
    fig.suptitle(f"{task}, {budget} budget\nline: mean over seeds; band: min to max over seeds", fontsize=10)
    config = {
        "figure": "curves",
        "task": task,
        "budget": budget,
        "band": "min-max over seeds",
        "configurations": [{"optimizer": c.name, "hyperparameters": c.hyperparameters, "seeds": sorted(c.runs)} for c in configurations],
    }
    return _save(fig, Path(path), rows, config)


def lr_figure(rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, task: str, budget: str, metric: str) -> Path:
    """Final validation metric against learning rate: rows of ``optimizer, lr, seed, value, diverged``
    (as :func:`optimlab.protocol.lr_sensitivity` returns).

    The upper panel holds the finite values: the mean over the seeds that did not diverge, band
    from their minimum to maximum.  Divergence is drawn apart, in a labelled strip below it (one
    row per optimizer, the same lr axis): ✕ where every seed diverged (there is no value to draw
    above), the count ``k/n`` where some did.  So a diverged lr never sits at the bottom of the
    value axis, where the best losses are.
    """
    if not rows:
        raise ValueError("lr_figure: invalid rows=[]: expected at least one row")
    optimizers = list(dict.fromkeys(r["optimizer"] for r in rows))
    fig = _figure((6.4, 5.0 + 0.25 * len(optimizers)))
    ax, strip = fig.subplots(2, 1, sharex=True, height_ratios=[5, 0.6 + 0.35 * len(optimizers)])
    table = []
    for i, (name, colour) in enumerate(zip(optimizers, _palette(len(optimizers)))):
        lrs = sorted({r["lr"] for r in rows if r["optimizer"] == name})
        stats = []
        for lr in lrs:
            values = [r["value"] for r in rows if r["optimizer"] == name and r["lr"] == lr]
            finite = [v for v in values if math.isfinite(v)]
            stats.append((lr, finite, len(values)))
            table.append({"task": task, "budget": budget, "optimizer": name, "lr": lr, "seeds": len(values),
                          "diverged": len(values) - len(finite), "mean": float(np.mean(finite)) if finite else math.nan,
                          "min": min(finite, default=math.nan), "max": max(finite, default=math.nan)})  # fmt: skip
        ok = [(lr, f) for lr, f, _ in stats if f]
        if ok:
            x = np.array([lr for lr, _ in ok])
            ax.plot(x, [np.mean(f) for _, f in ok], "-o", color=colour, lw=1.6, ms=4, label=name)
            ax.fill_between(x, [min(f) for _, f in ok], [max(f) for _, f in ok], color=colour, alpha=0.18, lw=0)
        for lr, finite, n in stats:
            if not finite:
                strip.plot([lr], [i], "x", color=colour, ms=9, mew=2)
            elif len(finite) < n:
                strip.annotate(f"{n - len(finite)}/{n}", (lr, i), ha="center", va="center", fontsize=8, color=colour)
    ax.set_xscale("log")
    ax.set_ylabel(f"final {metric.replace('_', ' ')}\n(seeds that did not diverge)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    ax.set_title(f"{task}, {budget} budget: lr sensitivity\nmean over seeds, band = min to max over seeds", fontsize=10)
    strip.set_ylim(-0.6, len(optimizers) - 0.4)
    strip.set_yticks(range(len(optimizers)), [""] * len(optimizers))
    strip.set_ylabel("diverged", rotation=0, ha="right", va="center", fontsize=9)
    strip.set_title("diverged seeds: ✕ all, k/n some (per optimizer, colours as above)", fontsize=8, loc="left")
    strip.grid(alpha=0.3, axis="x", which="both")
    strip.set_xlabel("learning rate")
    config = {"figure": "lr_sensitivity", "task": task, "budget": budget, "metric": metric, "band": "min-max over seeds",
              "diverged": "drawn in the strip below the values: x where every seed diverged, k/n where some did"}  # fmt: skip
    return _save(fig, Path(path), table, config)


def best_configurations(task: tasks_mod.Task, configurations: Sequence[Configuration]) -> list[Configuration]:
    """The configuration of each optimizer with the best mean final validation metric over its seeds (the
    tuned one, where an optimizer was also evaluated at other settings), in first-seen order."""
    shown: dict[str, tuple[float, Configuration]] = {}
    for c in configurations:
        finite = [v for v in (_validation_value(task, r) for r in c.runs.values()) if math.isfinite(v)]
        score = -math.inf if not finite else np.mean(finite) * (1 if task.higher_is_better else -1)
        if c.optimizer not in shown or score > shown[c.optimizer][0]:
            shown[c.optimizer] = (score, c)
    return [c for _, c in shown.values()]


@dataclass(frozen=True)
class Samples:
    """The samples image a run stored (a GAN's, :meth:`optimlab.tasks.gan.GanInstance.samples_png`)."""

    configuration: Configuration
    seed: int
    step: int
    png: bytes


def samples(store: Store, configurations: Sequence[Configuration]) -> list[Samples]:
    """The samples image of each of ``configurations`` that has one, from its first evaluation seed (the same
    seed for every optimizer of a comparison, so the same initial networks; the sample noise is the same in
    every run)."""
    found = []
    for c in configurations:
        seed = min(c.runs)
        images = [a for a in store.artifacts(c.runs[seed]["key"], name=SAMPLES_ARTIFACT) if a["media_type"] == "image/png"]
        if images:
            found.append(Samples(c, seed, images[-1]["step"], images[-1]["data"]))
    return found


def samples_figure(images: Sequence[Samples], path: str | os.PathLike[str], *, task: str, budget: str) -> Path:
    """The samples images of ``images`` side by side (up to 4 a row), each titled with what ran, its seed
    and step; the CSV lists them (optimizer, seed, step, run key, pixels, bytes)."""
    if not images:
        raise ValueError("samples_figure: invalid images=[]: expected at least one")
    from PIL import Image

    pictures = [np.asarray(Image.open(io.BytesIO(s.png)).convert("RGB")) for s in images]
    columns = min(4, len(images))
    rows = math.ceil(len(images) / columns)
    height, width = max(p.shape[0] for p in pictures), max(p.shape[1] for p in pictures)
    panel = 2.6
    # at least wide enough for the two-line title, which one panel alone would cut off
    fig = _figure((max(panel * columns, 5.6), panel * height / width * rows + 0.45 * rows + 0.5))
    axes = fig.subplots(rows, columns, squeeze=False).ravel()
    for ax in axes[len(images) :]:
        ax.set_axis_off()
    table = []
    for ax, s, picture in zip(axes, images, pictures):
        ax.imshow(picture, interpolation="nearest")
        ax.set_axis_off()
        ax.set_title(f"{s.configuration.name}\nseed {s.seed}, step {s.step}", fontsize=8)
        table.append({"task": task, "budget": budget, "optimizer": s.configuration.name, "seed": s.seed, "step": s.step,
                      "key": s.configuration.runs[s.seed]["key"], "width": picture.shape[1], "height": picture.shape[0],
                      "bytes": len(s.png)})  # fmt: skip
    fig.suptitle(f"{task}, {budget} budget: generated samples at the end of training\n"
                 "each optimizer's reported configuration, its first evaluation seed", fontsize=10)  # fmt: skip
    config = {"figure": "samples", "task": task, "budget": budget, "artifact": SAMPLES_ARTIFACT,
              "runs": [{"optimizer": s.configuration.name, "hyperparameters": s.configuration.hyperparameters,
                        "seed": s.seed, "step": s.step} for s in images]}  # fmt: skip
    return _save(fig, Path(path), table, config)


def _lr_rows(task: tasks_mod.Task, configurations: Sequence[Configuration]) -> list[dict[str, Any]]:
    """Sensitivity rows of the families of configurations that differ only in ``lr`` (3 or more lrs)."""
    families: dict[tuple[str, str], list[Configuration]] = {}
    for c in configurations:
        rest = {k: v for k, v in c.hyperparameters.items() if k != "lr"}
        families.setdefault((c.optimizer, canonical_json(rest)), []).append(c)
    rows = []
    for members in families.values():
        if len(members) < 3:
            continue
        label = members[0].optimizer
        for c in members:
            for seed, run in sorted(c.runs.items()):
                value = _validation_value(task, run)
                diverged = int(math.isnan(value))
                rows.append({"optimizer": label, "lr": c.hyperparameters["lr"], "seed": seed, "value": value, "diverged": diverged})
    return rows


# ---------------------------------------------------------------------------------------------
# Tables and the whole report
# ---------------------------------------------------------------------------------------------


def _summary_rows(
    task: tasks_mod.Task, configurations: Sequence[Configuration], trials: Mapping[tuple[str, str, str], int]
) -> tuple[list[dict[str, Any]], str, str]:
    """One row per configuration, the final metric's name, and the verdict."""
    final_key = metric_key(task.metric, next(iter(configurations[0].runs.values()))["final"])
    values = {c.name: [final_value(task, run["final"]) for _, run in sorted(c.runs.items())] for c in configurations}
    summaries = {s.label: s for s in summarize(values, task.higher_is_better, bounds=task.metric_bounds)}
    rows = []
    for c in configurations:
        s = summaries[c.name]
        runs = list(c.runs.values())
        rows.append(
            {
                "optimizer": c.optimizer,
                "label": c.name,
                "hyperparameters": ", ".join(f"{k}={_text(v)}" for k, v in c.shown.items()),
                "trials": trials.get((c.task, c.budget, c.optimizer), 0),
                "search_space": space_text(c.tuning[0]) if c.tuning else "",
                "range_edge": "; ".join(edge_notes(c.tuning[1], c.tuning[0]).values()) if c.tuning else "",
                "metric": final_key,
                "mean": s.mean,
                "ci95_low": s.low,
                "ci95_high": s.high,
                "seeds": len(runs),
                "diverged": s.diverged,
                "wall_time_s": float(np.mean([r["final"]["wall_time"] for r in runs])),
                "state_bytes": int(runs[0]["state_bytes"] or 0),
                "best": s.best,
                "welch_p": s.p_value,
                "status": s.status,
                "interval": s.interval(),
            }
        )
    return rows, final_key, verdict(list(summaries.values()))


def _markdown(task: str, budget: str, rows: Sequence[Mapping[str, Any]], final_key: str, higher: bool, text: str) -> str:
    head = (
        f"## {task}, {budget} budget\n\n"
        f"Final `{final_key}` ({'higher' if higher else 'lower'} is better) over evaluation seeds: mean [95% CI] of "
        "the seeds that did not diverge (Student t, n-1 dof, kept inside the metric's range; see optimlab.stats). "
        "Standing: against the best-ranked row by Welch's t-test (within noise: p >= 0.05); a row with a diverged "
        "seed is never best over one without.\n\n"
        "Each optimizer is named by what ran: every hyperparameter that differs from its default, and the "
        f"learning rate; tuned values are marked *. A tuned value within {EDGE_FRACTION:.0%} of its range from a "
        "bound (in log scale for the lr) is flagged: the optimum may lie beyond what was searched.\n\n"
        "| optimizer | trials | searched | final metric | diverged | wall time / run | optimizer state | standing |\n"
        "|---|---:|---|---:|---:|---:|---:|---|\n"
    )
    lines = []
    for r in rows:
        lines.append(
            f"| {r['label']} | {r['trials']} | {r['search_space'] or '—'} | {r['interval']} | {r['diverged']} of "
            f"{r['seeds']} | {r['wall_time_s']:.3g} s | {_bytes(r['state_bytes'])} | {_standing(r)} |"
        )
    return head + "\n".join(lines) + f"\n\n{text[0].upper()}{text[1:]}.\n"


def _standing(row: Mapping[str, Any]) -> str:
    """A summary row's standing as the tables show it: the status, Welch's p, and a flag where a tuned value
    sits at the edge of its range (as the diverged and not-enough-seeds standings, it qualifies the result)."""
    p = "" if math.isnan(row["welch_p"]) else f" (p={row['welch_p']:.2g})"
    edge = f"; ⚠ {row['range_edge']}" if row["range_edge"] else ""
    return f"{row['status']}{p}{edge}"


def _bytes(n: int) -> str:
    for unit in ("B", "KiB", "MiB", "GiB"):
        if n < 1024 or unit == "GiB":
            return f"{n:.0f} {unit}" if unit == "B" else f"{n:.1f} {unit}"
        n /= 1024
    raise AssertionError


def _packages(configurations: Sequence[Configuration]) -> str:
    """A line naming the versions of the optimizer packages other than optimlab's and torch's that ran
    (:func:`optimlab.runner.optimizer_versions`, part of each run's key); empty when there are none."""
    core = {"optimlab", "torch", "numpy", "python"}
    found = {
        (name, version)
        for c in configurations
        for run in c.runs.values()
        for name, version in run["config"].get("versions", {}).items()
        if name not in core
    }
    if not found:
        return ""
    return "\nOther optimizer packages (in each run's key): " + ", ".join(f"{n} {v}" for n, v in sorted(found)) + ".\n"


def report(store: Store, out: str | os.PathLike[str], *, tuning_seed: int = 0) -> list[Path]:
    """Write the report of every task and budget in ``store`` into ``out``; returns the paths written
    (``summary.md`` last).  See the module docstring."""
    out = Path(out)
    configurations, trials = read_store(store, tuning_seed)
    evaluated = [c for c in configurations if len(c.runs) >= 2]
    groups: dict[tuple[str, str], list[Configuration]] = {}
    for c in evaluated:
        groups.setdefault((c.task, c.budget), []).append(c)
    paths: list[Path] = []
    sections = []
    for (task_name, budget), members in sorted(groups.items()):
        task = _base_task(task_name)
        slug = f"{task_name}-{budget}"
        rows, final_key, text = _summary_rows(task, members, trials)
        paths.append(write_table(rows, out / f"summary-{slug}.csv"))
        sections.append(_markdown(task_name, budget, rows, final_key, task.higher_is_better, text))
        shown = best_configurations(task, members)
        drawn = [curves_figure(shown, out / f"curves-{slug}.png")]
        lr_rows = _lr_rows(task, members)
        if lr_rows:
            val_key = metric_key(task.metric, next(iter(members[0].runs.values()))["curve"][-1])
            drawn.append(lr_figure(lr_rows, out / f"lr-{slug}.png", task=task_name, budget=budget, metric=val_key))
        images = samples(store, shown)
        if images:
            drawn.append(samples_figure(images, out / f"samples-{slug}.png", task=task_name, budget=budget))
        paths += drawn
        sections[-1] += "".join(f"\n![{p.stem}]({p.name})\n" for p in drawn)  # summary.md shows its figures
    out.mkdir(parents=True, exist_ok=True)
    summary = out / "summary.md"
    body = "\n".join(sections) if sections else "No configuration has finished runs at 2 or more evaluation seeds yet.\n"
    summary.write_text(f"# optimlab report: {store.path.name}\n\n{body}{_packages(configurations)}", encoding="utf-8")
    paths.append(summary)
    return paths
