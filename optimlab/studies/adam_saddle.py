"""The seed's study: are Adam's beta1 = 0.9, beta2 = 0.999, eps = 1e-8 magic on a saddle?

Adam runs on the saddle (w1-1)^2 - (w2-1)^2 from (-3, 0.8) with lr 0.005 for 600 steps, a point
every 10 steps.  Four panels change one hyperparameter at a time (the others at their defaults);
heatmaps cover the whole beta1 x beta2 x eps grid.  Every number in the summary is computed from
the runs of this call, none is written in advance.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from .. import figures, surfaces, tables
from ..html import lab_page
from ..optim import Adam
from ..sweep import SweepResult, sweep

START = (-3.0, 0.8)
LR = 0.005
STEPS = 600
RECORD_EVERY = 10
DEFAULTS = {"beta1": 0.9, "beta2": 0.999, "eps": 1e-8}
PANELS: list[tuple[str, str, list[float]]] = [
    ("beta1-small-to-large", "beta1", [0.9, 0.1, 0.5, 0.999]),
    ("beta1-edges", "beta1", [0.9, 1.0, 0.5, 0.0]),
    ("beta2", "beta2", [0.999, 0.9, 0.0, 1.0]),
    ("eps", "eps", [1e-8, 0.1, 1.0, 0.0]),
]
GRID = {
    "beta1": [round(x, 2) for x in np.linspace(0.0, 1.0, 21)],
    # beta2 matters near 1 (its memory is 1/(1 - beta2) steps), so its values crowd there
    "beta2": [0.0, 0.5, 0.8, 0.9, 0.95, 0.98, 0.99, 0.995, 0.998, 0.999, 0.9995, 0.9999, 1.0],
    "eps": [0.0] + [float(f"1e{e}") for e in range(-8, 1)],
}

#: (x, y, the slice of the third name) of each heatmap over the whole grid
HEATMAPS = [("beta1", "beta2", {"eps": 1e-8}), ("eps", "beta1", {"beta2": 0.999}), ("eps", "beta2", {"beta1": 0.9})]


@dataclass
class StudyOutput:
    """Where the study wrote its files, and the summary text."""

    directory: Path
    files: list[Path]
    summary: str


def run(out_dir: str | Path, *, heatmaps: bool = True, animate: bool = True, log: Callable[[str], None] = print) -> StudyOutput:
    """Run the study and write its figures, tables, configs and ``summary.md`` into ``out_dir``."""
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    surface = surfaces.get("saddle")
    files: list[Path] = []
    panels: dict[str, SweepResult] = {}
    for name, param, values in PANELS:
        log(f"panel {name}: {param} in {values}")
        result = _sweep(surface, {param: values})
        panels[name] = result
        figures.trajectories(result, surface, out / f"{name}-paths.png")
        figures.loss_curves(result, out / f"{name}-loss.png")
        files += [out / f"{name}-paths.png", out / f"{name}-loss.png"]
    if animate:
        figures.animation(panels["beta1-edges"], surface, out / "beta1-edges.gif")
        files.append(out / "beta1-edges.gif")

    full = None
    if heatmaps:
        n = math.prod(len(v) for v in GRID.values())
        log(f"full grid: {n} configurations x {STEPS} steps")
        full = _sweep(surface, GRID, target=0.0)
        tables.write_table(full.summary_rows(), out / "grid.csv")
        files.append(out / "grid.csv")
        for x, y, fixed in HEATMAPS:
            for value in ("final_loss", "steps_to_target"):
                path = out / figures.heatmap_filename(x, y, value)
                figures.heatmap(full, x, y, value, fixed=fixed, path=path)
                files.append(path)

    files.append(lab_page({**{name: [r] for name, r in panels.items()}, **({"full grid": [full]} if full else {})}, surface, out))
    summary = summarize(panels, full, surface)
    (out / "summary.md").write_text(summary)
    files.append(out / "summary.md")
    return StudyOutput(out, files, summary)


def _sweep(surface: surfaces.Surface, grid: dict[str, list[float]], target: float | None = None) -> SweepResult:
    fixed = {k: [v] for k, v in DEFAULTS.items() if k not in grid}
    return sweep(surface, Adam, {**grid, **fixed}, options=dict(lr=LR), starts=[START], steps=STEPS, record_every=RECORD_EVERY, target=target)


def torch_outcome(beta1: float, beta2: float, eps: float) -> str:
    """What ``torch.optim.Adam`` does with these values for one step from the start (bypassing its checks)."""
    w = torch.tensor(START, dtype=torch.float64)
    opt = torch.optim.Adam([w], lr=LR, foreach=False)
    opt.param_groups[0].update(betas=(beta1, beta2), eps=eps)
    w.grad = surfaces.get("saddle").grad(w)
    try:
        opt.step()
    except ZeroDivisionError as exc:
        return f"raises ZeroDivisionError ({exc})"
    if not torch.isfinite(w).all():
        return "gives NaN"
    return "moves" if not torch.equal(w, torch.tensor(START, dtype=torch.float64)) else "does not move"


def summarize(panels: dict[str, SweepResult], full: SweepResult | None, surface: surfaces.Surface) -> str:
    """The markdown summary; every figure in it is read from the results."""
    lines = [
        "# Adam on the saddle: what beta1, beta2 and eps do",
        "",
        f"Surface: {surface.description}. Start {START}, lr {LR}, {STEPS} steps, a point every {RECORD_EVERY} steps. "
        f"Defaults beta1 = {DEFAULTS['beta1']}, beta2 = {DEFAULTS['beta2']}, eps = {DEFAULTS['eps']:g}. "
        "The loss at the start is "
        f"{float(next(iter(panels.values())).start_loss[0]):.4g}; lower is further down the escape direction w2.",
        "",
    ]
    for name, param, values in PANELS:
        r = panels[name]
        lines += [f"## {param} in {{{', '.join(_fmt(v) for v in values)}}}", "", f"![paths]({name}-paths.png) ![loss]({name}-loss.png)", ""]
        lines += ["| " + param + " | status | final loss | final w | mean abs(w2 step), last 100 steps, in units of lr |", "|---|---|---|---|---|"]
        for c, cfg in enumerate(r.configs):
            lines.append(
                f"| {_fmt(cfg[param])} | {_status(r, c)} | {_num(r.loss[c, -1])} | ({_num(r.path[c, -1, 0])}, {_num(r.path[c, -1, 1])}) "
                f"| {_speed(r, c)} |"
            )
        lines += ["", *_panel_notes(r, param), ""]
    if full is not None:
        lines += _grid_notes(full)
    return "\n".join(lines) + "\n"


def _panel_notes(r: SweepResult, param: str) -> list[str]:
    notes = []
    for c, cfg in enumerate(r.configs):
        b1, b2, eps = cfg["beta1"], cfg["beta2"], cfg["eps"]
        if r.status[c] != "diverged":
            continue
        why = []
        if b1 == 1.0:
            why.append("beta1 = 1 keeps m = 0 and makes the bias correction 1 - beta1^t = 0, so m_hat = 0/0")
        if b2 == 1.0:
            why.append(
                "beta2 = 1 keeps v = 0 and makes 1 - beta2^t = 0, so v_hat = 0/0 (the paper's 'efficient' form "
                "alpha_t = alpha sqrt(1 - beta2^t) / (1 - beta1^t) would instead give a step size of 0: the point would stay at its start)"
            )
        reason = "; ".join(why) or "the update left every finite value"
        notes.append(
            f"- {param} = {_fmt(cfg[param])}: NaN at step {int(r.first_bad_step[c])}: {reason}. "
            f"torch.optim.Adam with the same values {torch_outcome(b1, b2, eps)}."
        )
    moving = [c for c in range(len(r)) if r.status[c] != "diverged"]
    if len(moving) > 1:
        best = min(moving, key=lambda c: r.loss[c, -1].item())
        worst = max(moving, key=lambda c: r.loss[c, -1].item())
        notes.append(
            f"- Lowest final loss: {param} = {_fmt(r.configs[best][param])} ({_num(r.loss[best, -1])}); "
            f"highest: {param} = {_fmt(r.configs[worst][param])} ({_num(r.loss[worst, -1])})."
        )
    return notes


def _grid_notes(full: SweepResult) -> list[str]:
    rows = full.summary_rows()
    n = len(rows)
    diverged = [r for r in rows if r["status"] == "diverged"]
    finite = [r for r in rows if r["status"] != "diverged"]
    default = next(r for r in rows if (r["beta1"], r["beta2"], r["eps"]) == (0.9, 0.999, 1e-8))
    rank = 1 + sum(r["final_loss"] < default["final_loss"] for r in finite)
    best = min(finite, key=lambda r: r["final_loss"])
    at_edges = sum(1 for r in diverged if r["beta1"] == 1.0 or r["beta2"] == 1.0)
    reached = [r for r in finite if r["steps_to_target"] is not None]
    lines = [
        "## The whole grid",
        "",
        f"{n} configurations: beta1 in {_span(full, 'beta1')}, beta2 in {_span(full, 'beta2')}, eps in {_span(full, 'eps')}.",
        "",
        " ".join(
            f"![{x} x {y}]({figures.heatmap_filename(x, y, 'final_loss')})" for x, y, _ in HEATMAPS
        ),
        "",
        f"- Diverged: {len(diverged)} of {n}; {at_edges} of them have beta1 = 1 or beta2 = 1 (the 0/0 bias corrections above).",
        f"- The defaults (0.9, 0.999, 1e-8) end at loss {default['final_loss']:.4g}: rank {rank} of {len(finite)} finite configurations.",
        f"- Lowest final loss: beta1 = {_fmt(best['beta1'])}, beta2 = {_fmt(best['beta2'])}, eps = {_fmt(best['eps'])} "
        f"({best['final_loss']:.4g}).",
        f"- Reached loss <= 0 (past the saddle's level): {len(reached)} of {len(finite)} finite configurations; "
        f"the defaults {'did' if default['steps_to_target'] is not None else 'did not'}"
        + (f", at step {default['steps_to_target']}." if default["steps_to_target"] is not None else "."),
    ]
    by_eps = {}
    for r in finite:
        if r["beta1"] == 0.9 and r["beta2"] == 0.999:
            by_eps[r["eps"]] = r["final_loss"]
    if by_eps:
        lines.append(
            "- eps at the default betas (final loss): " + ", ".join(f"{_fmt(e)}: {v:.4g}" for e, v in sorted(by_eps.items())) + "."
        )
    return lines + [""]


def _speed(r: SweepResult, c: int) -> str:
    """Mean |w2 step| over the last 100 steps, in units of lr: how fast it leaves along the escape direction."""
    steps = r.steps.tolist()
    if r.status[c] == "diverged" or len(steps) < 11:
        return "-"
    i0 = steps.index(steps[-1] - 100) if steps[-1] - 100 in steps else 0
    dist = (r.path[c, -1, 1] - r.path[c, i0, 1]).abs().item()
    return f"{dist / (steps[-1] - steps[i0]) / LR:.3g}"


def _status(r: SweepResult, c: int) -> str:
    s = r.status[c]
    return f"{s} (step {int(r.first_bad_step[c])})" if s == "diverged" else s


def _span(r: SweepResult, key: str) -> str:
    values = sorted({cfg[key] for cfg in r.configs})
    return f"{{{_fmt(values[0])} ... {_fmt(values[-1])}}} ({len(values)} values)"


def _fmt(v: Any) -> str:
    return f"{v:g}"


def _num(v: Any) -> str:
    x = float(v)
    return "nan" if math.isnan(x) else f"{x:.4g}"
