"""The report as one interactive page: ``index.html``, self-contained (Plotly's offline bundle, the styles
and every number inline), so it opens from disk or from a CI artifact with no network.

>>> from optimlab.html import html_report
>>> html_report(Store("results/lab.sqlite", readonly=True), "results/report")  # -> results/report/index.html

Charts are drawn by plotly.js (the bundle the ``plotly`` Python package ships, one copy per page) from
figures written here as plain JSON.  The page reads the store as :mod:`optimlab.report` does (its
configurations, names and summary rows) and has, per task and budget:

* **summary**: one row per evaluated configuration: the final metric's mean and 95% interval over the
  seeds that did not diverge, diverged seeds, standing and verdict (:mod:`optimlab.stats`), tuned
  hyperparameters, tuning trials, wall time, optimizer-state memory, peak process memory, steps/s;
* **curves**: one chart per quantity (loss, accuracy, ...), training split solid, evaluated split dashed:
  the mean over seeds at each curve point and a band from the minimum to the maximum over seeds; x is
  steps, epochs or wall time (buttons), each seed's own curve can be shown (check boxes), and hovering
  one chart shows the same x in the task's other charts;
* **samples** (GAN tasks): the generator's samples image (:meth:`optimlab.tasks.gan.GanInstance.samples_png`)
  that each optimizer's reported configuration stored with its run at its first evaluation seed, inline as a
  ``data:`` URI (an image over :data:`MAX_SAMPLES_BYTES` is named instead);
* **tuning**: every tuning trial (the runs at the tuning seed) of every optimizer, one chart per tuned
  hyperparameter: its value against the final validation metric; diverged trials in a strip below
  (they have no value to draw), the configuration that was evaluated as a star, and a warning when it
  is the lowest or highest value tried (the best may lie outside what was searched);
* **lr sensitivity**, where configurations differing only in lr were evaluated at 3 or more lrs;
* **resources**: steps per second and memory (optimizer state; peak process RSS where the run recorded
  it) of every run;
* **loss landscape**, where ``optimlab landscape`` wrote its ``landscape.json`` for this store's runs
  in the same folder (:mod:`optimlab.landscape`).

Across tasks: performance profiles of the final metric (:mod:`optimlab.views`) and, with ``targets``,
time and steps to target with their profile.
"""

from __future__ import annotations

import base64
import html
import json
import math
import os
import time
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from . import figures, views
from . import report as report_mod
from .protocol import final_value, metric_key
from .store import Store, canonical_json
from .sweep import STATUSES as SWEEP_STATUSES
from .tasks import Task
from .tasks._base import StoredTask

__all__ = ["html_report"]

# Plotly's default colour sequence: one colour per optimizer, the same in every chart of the page.
_COLOURS = (
    "#636efa",
    "#ef553b",
    "#00cc96",
    "#ab63fa",
    "#ffa15a",
    "#19d3f3",
    "#ff6692",
    "#b6e880",
    "#ff97ff",
    "#fecb52",
)
_X_AXES = {"step": "steps", "epochs": "epochs", "wall_time": "wall time (s)"}
_SPLIT_DASH = {True: "solid", False: "dash"}


def html_report(
    store: Store, out: str | os.PathLike[str], *, tuning_seed: int = 0, targets: Mapping[str, float] | None = None
) -> Path:
    """Write ``out/index.html`` for every task and budget in ``store``; returns its path.

    ``targets`` maps a task name (as stored: ``mnist-cnn``) to a value of its headline metric on the
    evaluated split (``val_accuracy``...): each run's time and steps to first reach it are shown.
    """
    targets = dict(targets or {})
    configurations, trial_counts = report_mod.read_store(store, tuning_seed)
    groups: dict[tuple[str, str], list[report_mod.Configuration]] = {}
    for c in configurations:
        if c.runs:
            groups.setdefault((c.task, c.budget), []).append(c)
    tasks = _tasks(store)
    trials = _trials(store, tuning_seed, tasks)
    sections = sorted(set(groups) | {key[:2] for key in trials})
    unknown = sorted(set(targets) - {task for task, _ in sections})
    if unknown:
        raise ValueError(f"report: invalid targets for {unknown}: the store has no such task")
    page = _Page(store.path.name)
    colours = _colour_map(configurations, trials)
    from .landscape import section as landscape_section, stored_result

    drawn = stored_result(store, out)  # what `optimlab landscape --out` wrote in this folder for this store
    profile_costs: dict[str, dict[str, float]] = {}
    target_costs: dict[str, dict[str, dict[str, float]]] = {"wall_time": {}, "step": {}}
    for task_name, budget in sections:
        task = tasks[task_name]
        members = groups.get((task_name, budget), [])
        title = f"{task_name}, {budget} budget"
        page.open_task(title)
        if members:
            _summary(page, task, members, trial_counts)
            _curves(page, members, colours)
            _samples(page, store, task, members)
        task_trials = {key[2]: rows for key, rows in trials.items() if key[:2] == (task_name, budget)}
        if task_trials:
            _tuning(page, task, task_trials, members, colours)
        if members:
            lr_rows = report_mod._lr_rows(task, members)
            if lr_rows:
                _lr(page, lr_rows, colours)
            _resources(page, members, colours)
            profile_costs[title] = _task_costs(task, members)
            if task_name in targets:
                _targets(page, task, members, targets[task_name], target_costs, title, colours)
        if drawn is not None and (drawn["task"], drawn.get("budget")) == (task_name, budget):
            landscape_section(page, drawn)
        page.close_task()
    if profile_costs:
        _profiles(page, profile_costs, target_costs, colours)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page.render(), encoding="utf-8")
    return path


# ---------------------------------------------------------------------------------------------
# Reading what report.py does not: the tuning trials
# ---------------------------------------------------------------------------------------------


def _tasks(store: Store) -> dict[str, Task]:
    """Each stored task name's task, as its runs' metadata describe it (a task of the user's own reports
    without its code); runs stored before the metadata existed fall back to the registered task."""
    metas: dict[str, Any] = {}
    for record in store.runs(status="finished"):
        meta = record.get("meta") or {}
        if "task" in meta or record["config"]["task"] not in metas:
            metas[record["config"]["task"]] = meta.get("task")
    return {name: StoredTask(meta) if meta else report_mod._base_task(name) for name, meta in metas.items()}


def _trials(
    store: Store, tuning_seed: int, tasks: Mapping[str, Task]
) -> dict[tuple[str, str, str], list[dict[str, Any]]]:
    """The finished runs at ``tuning_seed`` by (task, budget, optimizer as report.py names it):
    ``{"hyperparameters", "value" (final validation metric; NaN if diverged), "diverged"}``."""
    out: dict[tuple[str, str, str], list[dict[str, Any]]] = {}
    for record in store.runs(status="finished"):
        config = record["config"]
        if config["seed"] != tuning_seed:
            continue
        optimizer, hp = report_mod._role_view(config)
        name, _ = report_mod._preset(report_mod._spec(optimizer, hp), optimizer, hp)
        run = {"final": record["final"], "curve": store.epochs(record["key"])}
        value = report_mod._validation_value(tasks[config["task"]], run) if run["curve"] else math.nan
        out.setdefault((config["task"], config["budget"], name), []).append(
            {
                "hyperparameters": hp,
                "value": value,
                "diverged": bool(record["final"].get("diverged")) or math.isnan(value),
            }
        )
    return out


def _numbers(hp: Mapping[str, Any]) -> dict[str, float]:
    """The numeric hyperparameters of a run, pairs split (``betas`` -> ``betas[0]``, ``betas[1]``)."""
    out = {}
    for k, v in hp.items():
        if isinstance(v, (int, float)) and not isinstance(v, bool):
            out[k] = float(v)
        elif isinstance(v, (list, tuple)) and all(isinstance(x, (int, float)) and not isinstance(x, bool) for x in v):
            out.update({f"{k}[{i}]": float(x) for i, x in enumerate(v)})
    return out


def _colour_map(
    configurations: Sequence[report_mod.Configuration], trials: Mapping[tuple[str, str, str], Any]
) -> dict[str, str]:
    names = list(dict.fromkeys([c.optimizer for c in configurations] + [key[2] for key in trials]))
    return {name: _COLOURS[i % len(_COLOURS)] for i, name in enumerate(names)}


def _colour(colours: Mapping[str, str], name: str) -> str:
    """An arm's colour; a tuned arm named with fixed values (``AdamW(weight_decay=0.01)``) falls back to its class's."""
    return colours.get(name) or colours.get(name.split("(")[0], _COLOURS[0])


# ---------------------------------------------------------------------------------------------
# Views
# ---------------------------------------------------------------------------------------------


def _summary(page: _Page, task: Any, members: list[report_mod.Configuration], trial_counts: Mapping[Any, int]) -> None:
    rows, final_key, text = report_mod._summary_rows(task, members, trial_counts)
    resources = {c.name: _resource_rows(c) for c in members}
    body = []
    for r in rows:
        res = resources[r["label"]]
        peak = [x["peak_rss_bytes"] for x in res if x["peak_rss_bytes"] is not None]
        body.append(
            [r["label"], r["hyperparameters"] or "(defaults)", r["trials"], r["search_space"] or "—", r["interval"],
             f"{r['diverged']} of {r['seeds']}", report_mod._standing(r), f"{r['wall_time_s']:.3g} s",
             report_mod._bytes(r["state_bytes"]),
             report_mod._bytes(int(max(peak))) if peak else "not recorded",
             f"{sum(x['steps_per_s'] for x in res) / len(res):.4g}"]
        )  # fmt: skip
    direction = "higher" if task.higher_is_better else "lower"
    page.add(
        "summary",
        f"<p>Final <code>{html.escape(final_key)}</code> ({direction} is better) over evaluation seeds: mean [95% CI] "
        "of the seeds that did not diverge (Student t, kept inside the metric's range); standing against the best "
        "row by Welch's t-test. Tuned values are marked *.</p>"
        + _table(
            [
                "optimizer",
                "tuned hyperparameters",
                "trials",
                "searched",
                "final metric",
                "diverged",
                "standing",
                "wall time / run",
                "optimizer state",
                "peak process memory",
                "steps / s",
            ],
            body,
        )
        + f"<p class='verdict'>{html.escape(text[0].upper() + text[1:])}.</p>",
    )


def _curves(page: _Page, members: list[report_mod.Configuration], colours: Mapping[str, str]) -> None:
    quantities = report_mod._quantities(members)
    seeds = sorted({seed for c in members for seed in c.runs})
    controls = "<div class='controls'><span>x:</span>" + "".join(
        f"<label><input type='radio' name='x-{page.task_id}' value='{axis}'{' checked' if axis == 'step' else ''}"
        f" class='xswitch'> {label}</label>"
        for axis, label in _X_AXES.items()
    )
    controls += (
        "<span class='gap'>seeds:</span>"
        + "".join(f"<label><input type='checkbox' class='seedtoggle' value='{seed}'> {seed}</label>" for seed in seeds)
        + "</div>"
    )
    page.add(
        "curves",
        controls + "<p>Line: mean over seeds at each curve point; band: minimum to maximum over seeds; "
        "solid: training split (mean minibatch loss since the previous point), dashed: the evaluated split.</p>",
    )
    for quantity in quantities:
        data: list[dict[str, Any]] = []
        for c in members:
            colour = _colour(colours, c.optimizer)
            splits = sorted({k.split("_", 1)[0] for run in c.runs.values() for p in run["curve"] for k in p
                             if k not in report_mod._NOT_PLOTTED and k.split("_", 1)[1] == quantity},
                            key=lambda s: s != "train")  # fmt: skip
            for split in splits:
                key = f"{split}_{quantity}"
                rows = views.band([run["curve"] for run in c.runs.values()], key)
                if not rows:
                    continue
                name = f"{c.name} {split}"
                dash = _SPLIT_DASH[split == "train"]
                xs = {axis: [r[axis] for r in rows] for axis in _X_AXES}
                data.append(
                    {"type": "scatter", "x": xs["step"] + xs["step"][::-1], "y": [r["max"] for r in rows] + [r["min"] for r in rows][::-1],
                     "fill": "toself", "fillcolor": _rgba(colour, 0.15), "line": {"width": 0}, "hoverinfo": "skip",
                     "showlegend": False, "legendgroup": name, "mode": "lines",
                     "meta": {"xs": {a: v + v[::-1] for a, v in xs.items()}}}
                )  # fmt: skip
                data.append(
                    {"type": "scatter", "x": xs["step"], "y": [r["mean"] for r in rows], "name": name, "legendgroup": name,
                     "mode": "lines+markers" if len(rows) < 30 else "lines", "marker": {"size": 5},
                     "line": {"color": colour, "dash": dash, "width": 2},
                     "customdata": [[r["min"], r["max"], r["seeds"]] for r in rows],
                     "hovertemplate": f"{html.escape(name)}<br>mean %{{y:.4g}} [%{{customdata[0]:.4g}}, %{{customdata[1]:.4g}}]"
                                      " over %{customdata[2]} seeds<extra></extra>",
                     "meta": {"xs": xs}}
                )  # fmt: skip
                for seed, run in sorted(c.runs.items()):
                    points = [p for p in run["curve"] if key in p and p[key] is not None and math.isfinite(p[key])]
                    data.append(
                        {"type": "scatter", "x": [p["step"] for p in points], "y": [p[key] for p in points],
                         "name": f"{name} seed {seed}", "mode": "lines", "visible": False, "showlegend": False,
                         "line": {"color": colour, "dash": dash, "width": 1}, "opacity": 0.7,
                         "meta": {"seed": seed, "xs": {a: [p.get(a) for p in points] for a in _X_AXES}}}
                    )  # fmt: skip
        values = [y for trace in data if "fill" not in trace for y in trace["y"] if y is not None]
        log = bool(values) and min(values) > 0 and max(values) > 10 * min(values)
        page.chart(
            "curves",
            data,
            {
                "title": {"text": quantity.replace("_", " ")},
                "xaxis": {"title": {"text": "steps"}},
                "yaxis": {"type": "log" if log else "linear", "title": {"text": quantity.replace("_", " ")}},
                "hovermode": "x",
                "legend": {"orientation": "h", "y": -0.25},
                "height": 460,
            },
            linked=True,
        )


#: A samples image larger than this is left out of the page (named instead), so the page stays small.
MAX_SAMPLES_BYTES = 512 * 1024


def _samples(page: _Page, store: Store, task: Any, members: list[report_mod.Configuration]) -> None:
    """The samples image each optimizer's reported configuration stored at its first evaluation seed, inline."""
    found = report_mod.samples(store, report_mod.best_configurations(task, members))
    if not found:
        return
    shown, skipped = [], []
    for s in found:
        caption = f"{s.configuration.name}, seed {s.seed}, step {s.step}"
        if len(s.png) > MAX_SAMPLES_BYTES:
            skipped.append(f"{caption} ({report_mod._bytes(len(s.png))})")
            continue
        uri = "data:image/png;base64," + base64.b64encode(s.png).decode("ascii")
        shown.append(f"<figure><img class='samples' src='{uri}' alt='{html.escape(caption)}'>"
                     f"<figcaption>{html.escape(caption)}</figcaption></figure>")  # fmt: skip
    page.add("samples", "<p>The generator's samples at the end of training, from the same fixed noise (and, for a "
             "conditional GAN, one row per class) in every run: each optimizer's reported configuration (its best "
             "mean final validation metric), at its first evaluation seed.</p>"
             + (f"<div class='samples'>{''.join(shown)}</div>" if shown else "")
             + "".join(f"<p class='warning'>Left out, larger than {MAX_SAMPLES_BYTES // 1024} KiB: {html.escape(k)}</p>"
                       for k in skipped))  # fmt: skip


def _tuning(page: _Page, task: Any, task_trials: Mapping[str, list[dict[str, Any]]], members: Sequence[Any],
            colours: Mapping[str, str]) -> None:  # fmt: skip
    evaluated = {canonical_json(c.hyperparameters) for c in members}
    # per tuned hyperparameter: (optimizer, the trial's numbers, its value, diverged, was it the evaluated one)
    per_hp: dict[str, list[tuple[str, dict[str, float], float, bool, bool]]] = {}
    warnings = []
    for name, rows in task_trials.items():
        numbers = [_numbers(r["hyperparameters"]) for r in rows]
        tuned = [k for k in numbers[0] if k == "lr" or any(n.get(k) != numbers[0][k] for n in numbers)]
        picked = [canonical_json(r["hyperparameters"]) in evaluated for r in rows]
        chosen = [n for n, p in zip(numbers, picked) if p]
        for k in tuned:
            tried = [n[k] for n in numbers if k in n]
            for n, r, p in zip(numbers, rows, picked):
                if k in n:
                    per_hp.setdefault(k, []).append((name, n, r["value"], r["diverged"], p))
            for n in chosen:
                side = views.edge(n[k], tried)
                if side:
                    warnings.append(f"{name}: the evaluated {k}={n[k]:.3g} is the {side} value tried "
                                    f"({min(tried):.3g} to {max(tried):.3g}); a better one may lie outside the range searched")  # fmt: skip
    total = sum(len(rows) for rows in task_trials.values())
    page.add("tuning", f"<p>{total} tuning trials (the runs at the tuning seed): each one's final validation metric "
             "against the hyperparameter tuned; diverged trials in the strip below; a star marks the configuration "
             "that was evaluated.</p>" + "".join(f"<p class='warning'>&#9888; {html.escape(w)}</p>" for w in warnings))  # fmt: skip
    for k, points in per_hp.items():
        data = []
        for name in dict.fromkeys(p[0] for p in points):
            colour = _colour(colours, name)
            mine = [p for p in points if p[0] == name]
            ok = sorted((p for p in mine if not p[3]), key=lambda p: p[1][k])
            bad = [p for p in mine if p[3]]
            chosen = [p for p in ok if p[4]]
            data.append({"type": "scatter", "mode": "markers+lines", "x": [p[1][k] for p in ok], "y": [p[2] for p in ok],
                         "name": name, "legendgroup": name, "line": {"color": colour, "width": 1, "dash": "dot"},
                         "marker": {"size": 8, "color": colour},
                         "text": [_hp_text(p[1]) for p in ok], "hovertemplate": "%{text}<br>%{y:.4g}<extra>" + html.escape(name) + "</extra>"})  # fmt: skip
            if chosen:
                data.append({"type": "scatter", "mode": "markers", "x": [p[1][k] for p in chosen], "y": [p[2] for p in chosen],
                             "name": f"{name} evaluated", "legendgroup": name, "showlegend": False,
                             "marker": {"symbol": "star", "size": 18, "color": colour, "line": {"color": "black", "width": 1}},
                             "hovertemplate": "evaluated: " + k + "=%{x:.3g}<br>%{y:.4g}<extra>" + html.escape(name) + "</extra>"})  # fmt: skip
            if bad:
                data.append({"type": "scatter", "mode": "markers", "x": [p[1][k] for p in bad], "y": [name] * len(bad),
                             "yaxis": "y2", "name": f"{name} diverged", "legendgroup": name, "showlegend": False,
                             "marker": {"symbol": "x", "size": 10, "color": colour},
                             "text": [_hp_text(p[1]) for p in bad], "hovertemplate": "diverged: %{text}<extra></extra>"})  # fmt: skip
        xs = [p[1][k] for p in points]
        log = min(xs) > 0 and (k == "lr" or max(xs) > 10 * min(xs))  # lrs are searched on a log scale
        layout = {"title": {"text": f"tuning: {k}"}, "xaxis": {"type": "log" if log else "linear", "title": {"text": k}},
                  "yaxis": {"title": {"text": f"final validation {task.metric}"}},
                  "legend": {"orientation": "h", "y": -0.2}, "height": 460, "hovermode": "closest"}  # fmt: skip
        page.chart("tuning", data, _with_strip(layout, data))


def _with_strip(layout: dict[str, Any], data: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """``layout`` with a strip below the values for the traces drawn on ``y2`` (diverged runs), if any."""
    if not any(trace.get("yaxis") == "y2" for trace in data):
        return layout
    return {**layout, "yaxis": {**layout["yaxis"], "domain": [0.22, 1]},
            "yaxis2": {"domain": [0, 0.14], "type": "category", "title": {"text": "diverged"}}}  # fmt: skip


def _hp_text(numbers: Mapping[str, float]) -> str:
    return ", ".join(
        f"{k}={v:.3g}" for k, v in numbers.items() if k in ("lr", "eps", "weight_decay", "momentum") or "[" in k
    )


def _lr(page: _Page, rows: Sequence[Mapping[str, Any]], colours: Mapping[str, str]) -> None:
    page.add("lr", "<p>Final validation metric against the learning rate, where configurations that differ only in lr "
             "were evaluated at 3 or more: mean over the seeds that did not diverge, band from their minimum to "
             "maximum; diverged seeds counted in the strip below.</p>")  # fmt: skip
    data = []
    for name in dict.fromkeys(r["optimizer"] for r in rows):
        colour = _colour(colours, name)
        stats = []
        for lr in sorted({r["lr"] for r in rows if r["optimizer"] == name}):
            values = [r["value"] for r in rows if r["optimizer"] == name and r["lr"] == lr]
            finite = [v for v in values if math.isfinite(v)]
            stats.append((lr, finite, len(values)))
        ok = [(lr, f) for lr, f, _ in stats if f]
        data.append({"type": "scatter", "x": [lr for lr, _ in ok] + [lr for lr, _ in ok][::-1],
                     "y": [max(f) for _, f in ok] + [min(f) for _, f in ok][::-1], "fill": "toself",
                     "fillcolor": _rgba(colour, 0.15), "line": {"width": 0}, "hoverinfo": "skip", "showlegend": False,
                     "legendgroup": name, "mode": "lines"})  # fmt: skip
        data.append({"type": "scatter", "x": [lr for lr, _ in ok], "y": [sum(f) / len(f) for _, f in ok], "name": name,
                     "legendgroup": name, "mode": "lines+markers", "line": {"color": colour}})  # fmt: skip
        some = [(lr, n - len(f), n) for lr, f, n in stats if len(f) < n]
        if some:
            data.append({"type": "scatter", "x": [s[0] for s in some], "y": [name] * len(some), "yaxis": "y2",
                         "mode": "markers+text", "text": [f"{d}/{n}" for _, d, n in some], "textposition": "top center",
                         "marker": {"symbol": "x", "size": 10, "color": colour}, "showlegend": False, "legendgroup": name,
                         "hovertemplate": "lr=%{x:.3g}: %{text} seeds diverged<extra></extra>"})  # fmt: skip
    layout = {
        "title": {"text": "lr sensitivity"},
        "xaxis": {"type": "log", "title": {"text": "learning rate"}},
        "yaxis": {"title": {"text": "final validation metric"}},
        "height": 440,
        "legend": {"orientation": "h", "y": -0.2},
    }
    page.chart("lr", data, _with_strip(layout, data))


def _resource_rows(c: report_mod.Configuration) -> list[dict[str, Any]]:
    """Per run of ``c``: steps per second of training time, optimizer state and peak process memory."""
    rows = []
    for seed, run in sorted(c.runs.items()):
        final = run["final"]
        train = final.get("train_time") or math.nan
        rows.append({"seed": seed, "steps": final.get("steps"), "steps_per_s": final.get("steps", math.nan) / train,
                     "wall_time": final.get("wall_time"), "state_bytes": run["state_bytes"] or 0,
                     "peak_rss_bytes": final.get("peak_rss_bytes")})  # fmt: skip
    return rows


def _resources(page: _Page, members: list[report_mod.Configuration], colours: Mapping[str, str]) -> None:
    page.add("resources", "<p>Every evaluation run: steps per second of training time (evaluation excluded), "
             "optimizer-state memory (every tensor in the optimizer's state) and the process's peak resident memory "
             "at the end of the run (where the run recorded it).</p>")  # fmt: skip
    speed, memory = [], []
    for c in members:
        colour = _colour(colours, c.optimizer)
        rows = _resource_rows(c)
        speed.append({"type": "box", "boxpoints": "all", "jitter": 0.3, "pointpos": 0, "name": c.name,
                      "y": [r["steps_per_s"] for r in rows], "marker": {"color": colour}, "line": {"color": colour},
                      "text": [f"seed {r['seed']}" for r in rows]})  # fmt: skip
        memory.append({"type": "bar", "name": c.name, "x": ["optimizer state"], "y": [rows[0]["state_bytes"]],
                       "marker": {"color": colour}, "legendgroup": c.name})  # fmt: skip
        peak = [r["peak_rss_bytes"] for r in rows if r["peak_rss_bytes"] is not None]
        if peak:
            memory.append({"type": "bar", "name": c.name, "x": ["peak process memory"], "y": [max(peak)],
                           "marker": {"color": colour, "pattern": {"shape": "/"}}, "legendgroup": c.name, "showlegend": False})  # fmt: skip
    page.chart("resources", speed, {"title": {"text": "steps per second (each run)"}, "showlegend": False, "height": 420,
                                    "margin": {"l": 60, "r": 20, "t": 40, "b": 110},
                                    "yaxis": {"title": {"text": "steps / s"}, "rangemode": "tozero"}})  # fmt: skip
    # log: a few bytes of optimizer state and a process's hundreds of MiB on one axis
    page.chart("resources", memory, {"title": {"text": "memory (log scale)"}, "barmode": "group", "height": 420,
                                     "yaxis": {"title": {"text": "bytes"}, "type": "log", "tickformat": ".3~s", "ticksuffix": "B"}})  # fmt: skip


def _task_costs(task: Any, members: Sequence[report_mod.Configuration]) -> dict[str, float]:
    """Each optimizer's cost on the task: its best configuration's median cost over seeds (views.metric_cost)."""
    upper = task.metric_bounds[1]
    costs: dict[str, float] = {}
    for c in members:
        cost = views.median_cost(views.metric_cost(final_value(task, run["final"]), task.higher_is_better, upper)
                                 for run in c.runs.values())  # fmt: skip
        costs[c.optimizer] = min(cost, costs.get(c.optimizer, math.inf))
    return costs


def _targets(page: _Page, task: Any, members: Sequence[report_mod.Configuration], target: float,
             target_costs: dict[str, dict[str, dict[str, float]]], title: str, colours: Mapping[str, str]) -> None:  # fmt: skip
    # the headline metric's key on the curve, from a point that was evaluated (a diverged run's last point was not)
    key = next(metric_key(task.metric, p) for c in members for run in c.runs.values() for p in run["curve"]
               if any(k.endswith(f"_{task.metric}") and not k.startswith("train_") for k in p))  # fmt: skip
    body, data = [], []
    for by_task in target_costs.values():
        by_task[title] = {}
    for c in members:
        per_axis = {axis: [views.time_to_target(run["curve"], key, target, task.higher_is_better, axis) for run in c.runs.values()]
                    for axis in target_costs}  # fmt: skip
        for axis, values in per_axis.items():
            median = views.median_cost(values)
            target_costs[axis][title][c.optimizer] = min(median, target_costs[axis][title].get(c.optimizer, math.inf))
        reached = sum(math.isfinite(v) for v in per_axis["step"])
        body.append([c.name, f"{reached} of {len(c.runs)}", _num(views.median_cost(per_axis["wall_time"]), " s"),
                     _num(views.median_cost(per_axis["step"]), "")])  # fmt: skip
        data.append({"type": "box", "boxpoints": "all", "pointpos": 0, "name": c.name,
                     "y": [v for v in per_axis["wall_time"] if math.isfinite(v)], "marker": {"color": _colour(colours, c.optimizer)}})  # fmt: skip
    direction = ">=" if task.higher_is_better else "<="
    page.add("targets", f"<p>Target: <code>{html.escape(key)} {direction} {target:g}</code>; the first curve point "
             "that reaches it (median over seeds; a seed that never does counts as never).</p>"
             + _table(["optimizer", "seeds reaching it", "time to target", "steps to target"], body))  # fmt: skip
    page.chart("targets", data, {"title": {"text": "time to target (each seed that reached it)"}, "showlegend": False,
                                 "height": 360, "yaxis": {"title": {"text": "seconds"}, "rangemode": "tozero"}})  # fmt: skip


def _num(value: float, unit: str) -> str:
    return f"{value:.4g}{unit}" if math.isfinite(value) else "never"


def _profiles(page: _Page, costs: Mapping[str, Mapping[str, float]], target_costs: Mapping[str, Mapping[str, Any]],
              colours: Mapping[str, str]) -> None:  # fmt: skip
    page.open_task("Across tasks")
    page.add("profiles", "<p>Performance profiles (Dolan &amp; Moré; AlgoPerf): for each "
             "optimizer, the fraction of tasks on which its cost is within a factor &tau; of the best optimizer's. "
             "Cost: the final metric where lower is better, the gap to its upper bound (error rate) where higher is "
             "better; the median over seeds, a diverged seed counting as infinite. An optimizer takes its best "
             "configuration on each task.</p>")  # fmt: skip
    profiles = [("final metric", costs)] + [(f"{'time' if axis == 'wall_time' else 'steps'} to target", by_task)
                                            for axis, by_task in target_costs.items() if by_task]  # fmt: skip
    for what, by_task in profiles:
        ratios = views.performance_ratios(by_task)
        finite = sorted({r for per_task in ratios.values() for r in per_task.values() if math.isfinite(r)})
        top = max(2.0, finite[-1] * 1.1) if finite else 2.0
        taus = sorted(set([1.0] + finite + [top]))
        data = [
            {"type": "scatter", "x": taus, "y": fractions, "name": name, "mode": "lines", "line": {"shape": "hv", "color": _colour(colours, name), "width": 2},
             "hovertemplate": "tau=%{x:.3g}: %{y:.0%} of tasks<extra>" + html.escape(name) + "</extra>"}
            for name, fractions in views.performance_profile(ratios, taus).items()
        ]  # fmt: skip
        for i, trace in enumerate(data):  # thinner on top: equal profiles stay visible
            trace["line"]["width"] = 4 - 2.5 * i / max(1, len(data) - 1)
        page.chart("profiles", data, {"title": {"text": f"performance profile: {what} ({len(by_task)} task{'s' * (len(by_task) > 1)})"}, "height": 420,
                                      "xaxis": {"title": {"text": "tau (ratio to the best)"}, "type": "log"},
                                      "yaxis": {"title": {"text": "fraction of tasks"}, "range": [-0.02, 1.02]}})  # fmt: skip
    page.close_task()


# ---------------------------------------------------------------------------------------------
# The page
# ---------------------------------------------------------------------------------------------


def _rgba(colour: str, alpha: float) -> str:
    r, g, b = (int(colour[i : i + 2], 16) for i in (1, 3, 5))
    return f"rgba({r},{g},{b},{alpha})"


def _table(header: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{html.escape(h)}</th>" for h in header)
    body = "".join("<tr>" + "".join(f"<td>{html.escape(str(v))}</td>" for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _plain(value: Any) -> Any:
    """JSON for plotly.js: non-finite numbers as null (a gap), which JSON itself cannot hold."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_VIEW_TITLES = {"statuses": "Statuses", "paths": "Paths and loss", "heatmaps": "Final loss over the swept values",
                "summary": "Summary", "curves": "Curves", "tuning": "Tuning trials", "lr": "Learning-rate sensitivity",
                "resources": "Speed and memory", "samples": "Samples", "targets": "Time to target",
                "profiles": "Performance profiles", "landscape": "Loss landscape"}  # fmt: skip

_STYLE = """
body{font:14px/1.45 system-ui,-apple-system,"Segoe UI",Roboto,sans-serif;margin:0;background:#f6f7f9;color:#1d2330}
header{background:#1d2330;color:#fff;padding:14px 28px}header h1{margin:0;font-size:20px}header p{margin:4px 0 0;opacity:.75}
nav{padding:8px 28px;background:#fff;border-bottom:1px solid #dde}nav a{margin-right:14px;color:#3451b2;text-decoration:none}
main{padding:8px 28px 40px;max-width:1400px}
.task>h2{margin:26px 0 6px;font-size:19px;border-bottom:2px solid #1d2330;padding-bottom:4px}
section.view{background:#fff;border:1px solid #e2e4ea;border-radius:8px;margin:12px 0;padding:10px 16px}
section.view h3{margin:4px 0 6px;font-size:15px}
.charts{display:grid;grid-template-columns:repeat(auto-fit,minmax(520px,1fr));gap:10px}
table{border-collapse:collapse;font-size:13px;margin:6px 0}th,td{padding:4px 9px;border-bottom:1px solid #e6e8ee;text-align:left}
th{background:#f0f2f6}td:nth-child(n+3){font-variant-numeric:tabular-nums}
.verdict{font-weight:600}.warning{color:#9a5b00;background:#fff6e0;padding:4px 8px;border-radius:4px}
.samples{display:flex;flex-wrap:wrap;gap:14px}.samples figure{margin:0}
.samples img{border:1px solid #e2e4ea;max-width:100%}.samples figcaption{font-size:12px;max-width:320px}
.controls label{margin-right:10px}.controls .gap{margin-left:18px}.controls span{font-weight:600;margin-right:6px}
"""

_SCRIPT = """
(function(){
const figures = JSON.parse(document.getElementById('optimlab-figures').textContent);
const config = {displaylogo: false, responsive: true};
for (const f of figures) Plotly.newPlot(f.id, f.data, f.layout, config);
function taskCharts(el){ return Array.from(el.closest('.task').querySelectorAll('.chart[data-linked]')); }
document.querySelectorAll('input.xswitch').forEach(function(input){
  input.addEventListener('change', function(){
    const axis = input.value, label = input.parentElement.textContent.trim();
    for (const div of taskCharts(input)) {
      const x = div.data.map(t => (t.meta && t.meta.xs) ? t.meta.xs[axis] : t.x);
      Plotly.update(div, {x: x}, {'xaxis.title.text': label, 'xaxis.autorange': true});
    }
  });
});
document.querySelectorAll('input.seedtoggle').forEach(function(input){
  input.addEventListener('change', function(){
    const seed = Number(input.value);
    for (const div of taskCharts(input)) {
      const idx = div.data.map((t, i) => (t.meta && t.meta.seed === seed) ? i : -1).filter(i => i >= 0);
      if (idx.length) Plotly.restyle(div, {visible: input.checked}, idx);
    }
  });
});
// Linked hover: the x hovered in one curve chart is shown in the task's other curve charts.
let hovering = false;
document.querySelectorAll('.chart[data-linked]').forEach(function(div){
  div.on('plotly_hover', function(ev){
    if (hovering || !ev.points.length) return;
    hovering = true;
    for (const other of taskCharts(div)) if (other !== div) Plotly.Fx.hover(other, {xval: ev.points[0].x});
    hovering = false;
  });
  div.on('plotly_unhover', function(){ for (const other of taskCharts(div)) if (other !== div) Plotly.Fx.unhover(other); });
});
document.body.dataset.ready = 'true';
})();
"""


class _Page:
    """The page being written: task blocks of view sections, and the figures their charts draw."""

    def __init__(self, store_name: str) -> None:
        self.store_name = store_name
        self.blocks: list[str] = []
        self.figures: list[dict[str, Any]] = []
        self.tasks: list[tuple[str, str]] = []
        self.task_id = ""
        self.views: dict[str, list[str]] = {}

    def open_task(self, title: str) -> None:
        self.task_id = f"t{len(self.tasks)}"
        self.tasks.append((self.task_id, title))
        self.views = {}

    def add(self, view: str, text: str) -> None:
        self.views.setdefault(view, []).append(text)

    def chart(self, view: str, data: list[dict[str, Any]], layout: dict[str, Any], *, linked: bool = False) -> None:
        chart_id = f"c{len(self.figures)}"
        layout = {"margin": {"l": 60, "r": 20, "t": 40, "b": 40}, "template": None, "font": {"size": 12},
                  "plot_bgcolor": "#fbfcfd", **layout}  # fmt: skip
        self.figures.append({"id": chart_id, "data": data, "layout": layout})
        self.views.setdefault(view, []).append(
            f"<div class='chart' id='{chart_id}'{' data-linked' if linked else ''}></div>"
        )

    def close_task(self) -> None:
        title = dict(self.tasks)[self.task_id]
        sections = []
        for view, parts in self.views.items():
            text = "".join(p for p in parts if not p.startswith("<div class='chart'"))
            charts = "".join(p for p in parts if p.startswith("<div class='chart'"))
            sections.append(f"<section class='view' data-view='{view}'><h3>{_VIEW_TITLES[view]}</h3>{text}"
                            f"<div class='charts'>{charts}</div></section>")  # fmt: skip
        self.blocks.append(f"<div class='task' id='{self.task_id}' data-task='{html.escape(title)}'><h2>{html.escape(title)}</h2>"
                           + "".join(sections) + "</div>")  # fmt: skip

    def render(self) -> str:
        import plotly
        from plotly.offline import get_plotlyjs

        figures = json.dumps(_plain(self.figures), separators=(",", ":"), allow_nan=False).replace("</", "<\\/")
        nav = "".join(f"<a href='#{i}'>{html.escape(t)}</a>" for i, t in self.tasks)
        made = time.strftime("%Y-%m-%d %H:%M UTC", time.gmtime())
        return (
            "<!DOCTYPE html><html lang='en'><head><meta charset='utf-8'>"
            f"<title>optimlab report: {html.escape(self.store_name)}</title><style>{_STYLE}</style>"
            f"<script>{get_plotlyjs()}</script></head><body>"
            f"<header><h1>optimlab report: {html.escape(self.store_name)}</h1><p>written {made}; charts by plotly.js "
            f"(the plotly {plotly.__version__} Python package's offline bundle); everything on this page is inline</p></header>"
            f"<nav>{nav}</nav><main>{''.join(self.blocks) or '<p>The store has no finished runs.</p>'}</main>"
            f"<script type='application/json' id='optimlab-figures'>{figures}</script><script>{_SCRIPT}</script>"
            "</body></html>"
        )


# ---------------------------------------------------------------------------------------------
# The 2-D lab's page
# ---------------------------------------------------------------------------------------------


def lab_page(
    results: Sequence[Any] | Mapping[str, Sequence[Any]],
    surface: Any,
    out: str | os.PathLike[str],
    *,
    max_paths: int = 60,
) -> Path:
    """Write ``out/index.html`` for sweep results (:class:`optimlab.sweep.SweepResult`) on ``surface``, in the
    look of the store's report: the paths over the surface's contour (each configuration's line toggled from
    the legend, every recorded point hovered with its step and loss), the loss curves, a heatmap of the final
    loss over every pair of swept hyperparameters (the best over the other swept values, each cell hovered),
    and each optimizer's statuses.  Paths and curves are drawn where there are at most ``max_paths``
    configurations.

    ``results`` may map section titles to results (a study's panels: ``{"defaults": [...], "tuned lr": [...]}``).
    """
    groups = dict(results) if isinstance(results, Mapping) else {f"{surface.name} surface": list(results)}
    optimizers = dict.fromkeys(r.optimizer for group in groups.values() for r in group)
    page = _Page(f"{surface.name}: {', '.join(optimizers)}")
    contour = _contour(surface)
    for title, group in groups.items():
        lines = figures._lines(list(group))
        page.open_task(title)
        counts = [[r.optimizer, len(r)] + [r.status.count(s) for s in SWEEP_STATUSES] for r in group]
        page.add("statuses", _table(["optimizer", "configurations", *SWEEP_STATUSES], counts))
        if len(lines) > max_paths:
            page.add(
                "statuses",
                f"<p>{len(lines)} configurations: too many paths to draw one by one (at most {max_paths}).</p>",
            )
        else:
            _lab_paths(page, surface, contour, lines)
        _lab_heatmaps(page, group)
        page.close_task()
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    path = out / "index.html"
    path.write_text(page.render(), encoding="utf-8")
    return path


def _contour(surface: Any, n: int = 100) -> dict[str, Any]:
    """The surface over its bounds on an ``n`` x ``n`` grid, as a plotly contour trace (log10 where it spans decades)."""
    (x0, x1), (y0, y1) = surface.bounds
    xs, ys = np.linspace(x0, x1, n), np.linspace(y0, y1, n)
    grid = np.stack(np.meshgrid(xs, ys), axis=-1)
    with torch.no_grad():
        z = surface(torch.from_numpy(grid)).double().numpy()
    finite = z[np.isfinite(z)]
    log = finite.size > 0 and finite.min() > 0 and finite.max() > 100 * finite.min()  # Rosenbrock spans decades
    what = "log10 loss" if log else "loss"
    return {
        "type": "contour", "x": xs.tolist(), "y": ys.tolist(), "z": (np.log10(z) if log else z).tolist(),
        "colorscale": "Viridis", "ncontours": 24, "showlegend": False, "name": "surface",
        "colorbar": {"title": {"text": what}}, "hovertemplate": f"w1=%{{x:.3g}}, w2=%{{y:.3g}}<br>{what}=%{{z:.4g}}<extra></extra>",
    }  # fmt: skip


def _lab_paths(page: _Page, surface: Any, contour: dict[str, Any], lines: Sequence[Any]) -> None:
    data: list[dict[str, Any]] = [contour]
    curves = []
    for line in lines:
        r, c = line.result, line.index
        steps = [0] + [int(s) for s in r.steps]
        w = np.concatenate([r.start[c][None].double().numpy(), r.path[c].double().numpy()])
        loss = [float(r.start_loss[c])] + [float(v) for v in r.loss[c]]
        colour = _hex(line.color)
        data.append({"type": "scatter", "mode": "lines+markers", "x": w[:, 0].tolist(), "y": w[:, 1].tolist(),
                     "name": line.label, "legendgroup": str(id(line)), "line": {"color": colour, "width": 2},
                     "marker": {"size": 4, "color": colour}, "customdata": [[s, v] for s, v in zip(steps, loss)],
                     "hovertemplate": "step %{customdata[0]}: loss %{customdata[1]:.4g}<br>w=(%{x:.4g}, %{y:.4g})"
                                      "<extra>" + html.escape(line.label) + "</extra>"})  # fmt: skip
        curves.append({"type": "scatter", "mode": "lines", "x": steps, "y": loss, "name": line.label, "legendgroup": str(id(line)),
                       "line": {"color": colour}, "hovertemplate": "step %{x}: loss %{y:.4g}<extra>" + html.escape(line.label) + "</extra>"})  # fmt: skip
    if surface.minima:
        data.append({"type": "scatter", "mode": "markers", "x": [m[0] for m in surface.minima], "y": [m[1] for m in surface.minima],
                     "name": "known minima", "marker": {"symbol": "star", "size": 14, "color": "white", "line": {"color": "black", "width": 1}}})  # fmt: skip
    (x0, x1), (y0, y1) = surface.bounds
    page.chart("paths", data, {"title": {"text": "paths"}, "height": 620, "xaxis": {"title": {"text": "w1"}, "range": [x0, x1]},
                               "yaxis": {"title": {"text": "w2"}, "range": [y0, y1]}, "legend": {"orientation": "h", "y": -0.15}})  # fmt: skip
    values = [v for t in curves for v in t["y"] if math.isfinite(v)]
    log_loss = bool(values) and min(values) > 0 and max(values) > 10 * min(values)
    page.chart("paths", curves, {"title": {"text": "loss"}, "height": 620, "xaxis": {"title": {"text": "step"}},
                                 "yaxis": {"title": {"text": "loss"}, "type": "log" if log_loss else "linear"},
                                 "legend": {"orientation": "h", "y": -0.15}, "hovermode": "closest"})  # fmt: skip


def _lab_heatmaps(page: _Page, results: Sequence[Any]) -> None:
    for r in results:
        numeric = [k for k in r.configs[0] if k != "start" and isinstance(r.configs[0][k], (int, float))]
        swept = [k for k in numeric if len({cfg[k] for cfg in r.configs}) > 1]
        final = r.final_loss.double().numpy()
        for i, x in enumerate(swept):
            for y in swept[i + 1 :]:
                xs, ys = sorted({cfg[x] for cfg in r.configs}), sorted({cfg[y] for cfg in r.configs})
                best = np.full((len(ys), len(xs)), np.nan)
                for cfg, value in zip(r.configs, final):
                    if math.isfinite(value):
                        cell = (ys.index(cfg[y]), xs.index(cfg[x]))
                        best[cell] = np.fmin(best[cell], value)
                page.chart(
                    "heatmaps",
                    [{"type": "heatmap", "x": [f"{v:.3g}" for v in xs], "y": [f"{v:.3g}" for v in ys], "z": best.tolist(),
                      "colorscale": "Viridis", "colorbar": {"title": {"text": "final loss"}}, "hoverongaps": True,
                      "texttemplate": "%{z:.3g}" if best.size <= 225 else "",
                      "hovertemplate": f"{x}=%{{x}}, {y}=%{{y}}<br>final loss %{{z:.4g}}<extra></extra>"}],
                    {"title": {"text": f"{r.optimizer}: final loss over {x} and {y}" + (" (best over the other swept values)" if len(swept) > 2 else "")},
                     "height": 520, "xaxis": {"title": {"text": x}, "type": "category"},
                     "yaxis": {"title": {"text": y}, "type": "category"}},
                )  # fmt: skip
        if len(swept) >= 2:
            page.add("heatmaps", "<p>Blank cells: every configuration there diverged (no finite loss).</p>")


def _hex(colour: Any) -> str:
    """A matplotlib colour (the lab's palette) as ``#rrggbb``."""
    from matplotlib.colors import to_hex

    return to_hex(colour)
