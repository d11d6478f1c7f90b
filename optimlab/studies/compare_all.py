"""Every optimizer of the library on one surface: with its defaults, and with its learning rate tuned.

Fairness: every optimizer gets the same tuning budget (the same ``lr_trials`` learning rates, log
spaced over one fixed range), the same objective (the loss after ``steps`` steps, a diverged run
counting as +inf) measured over exactly the steps that are plotted, the same start, and no
gradient clipping.  Optimizers whose step size is not ``lr`` alone are tuned on their ``lr`` all the
same; Adafactor's default (``relative_step=True``) ignores ``lr``, so its tuned runs set
``relative_step=False`` (said in the summary).

On a surface without a lower bound (the saddle) the final loss only measures how far a run
travelled downhill, and a larger learning rate always travels further: ranking by it, or tuning
the learning rate on it, would crown whoever got the largest step.  There the study runs every
optimizer at its defaults, reports each one's status and the step at which it escaped the
plotting box, and says that it ranks nothing.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from .. import figures, surfaces, tables
from ..html import lab_page
from ..optim import PRESETS
from ..sweep import SweepResult, sweep
from .adam_saddle import StudyOutput

LR_RANGE = (1e-4, 10.0)
LOOKAHEAD = {"k": 5, "alpha": 0.5}


def entries() -> list[tuple[str, Any, dict[str, Any], dict[str, float] | None]]:
    """(label, class, options, lookahead) for every preset, plus Lookahead around Adam."""
    out = [(name, cls, dict(opts), None) for name, (cls, opts) in PRESETS.items()]
    cls, opts = PRESETS["Adam"]
    out.append(("Lookahead(Adam)", cls, dict(opts), LOOKAHEAD))
    return out


def run(
    out_dir: str | Path,
    *,
    surface: str = "rosenbrock",
    steps: int = 200,
    lr_trials: int = 26,
    animate: bool = True,
    log: Callable[[str], None] = print,
) -> StudyOutput:
    """Run the comparison and write its figures, tables and ``summary.md`` into ``out_dir``."""
    if lr_trials < 2:
        raise ValueError(f"compare-all: invalid lr_trials={lr_trials}: expected an integer >= 2")
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    surf = surfaces.get(surface)
    if not surf.bounded_below:
        return _run_unbounded(out, surf, steps, animate, log)
    lrs = [float(x) for x in np.geomspace(*LR_RANGE, lr_trials)]
    target = None if surf.min_value is None else surf.min_value + 1e-3
    default_runs: list[SweepResult] = []
    tuned_runs: list[SweepResult] = []
    rows: list[dict[str, Any]] = []
    for label, cls, opts, la in entries():
        log(f"{label}: defaults, then {lr_trials} learning rates")
        d = sweep(surf, cls, options=opts, steps=steps, lookahead=la, target=target)
        # Adafactor's default ignores lr; tuned, it takes the lr of the grid (the lr here is a placeholder)
        tune_opts = {**opts, "relative_step": False, "lr": lrs[0]} if cls.__name__ == "Adafactor" else opts
        grid = sweep(surf, cls, {"lr": lrs}, options=tune_opts, steps=steps, lookahead=la, target=target)
        final = [_objective(grid, c) for c in range(len(grid))]
        best = int(np.argmin(final))
        tuned = sweep(surf, cls, {"lr": [lrs[best]]}, options=tune_opts, steps=steps, lookahead=la, target=target)
        for r in (d, tuned):
            r.optimizer = label
        default_runs.append(d)
        tuned_runs.append(tuned)
        for c, lr in enumerate(lrs):
            rows.append({"optimizer": label, "lr": lr, "final_loss": grid.loss[c, -1].item(), "status": grid.status[c]})
        log(f"  default final loss {d.loss[0, -1].item():.4g}; tuned lr {lrs[best]:.3g}: {tuned.loss[0, -1].item():.4g}")

    tables.write_table(rows, out / "lr-search.csv")
    files = [out / "lr-search.csv"]
    for name, runs in (("defaults", default_runs), ("tuned", tuned_runs)):
        files += _figures(out, name, runs, surf)
    if animate:
        figures.animation(tuned_runs, surf, out / "tuned-paths.gif")
        files.append(out / "tuned-paths.gif")
    files.append(lab_page({"defaults": default_runs, "tuned lr": tuned_runs}, surf, out))
    summary = _summary(surf, steps, lrs, default_runs, tuned_runs)
    (out / "summary.md").write_text(summary)
    files.append(out / "summary.md")
    return StudyOutput(out, files, summary)


def _figures(out: Path, name: str, runs: list[SweepResult], surf: Any) -> list[Path]:
    """One panel per optimizer (shared axes) for the paths, one plot for the loss curves."""
    figures.small_multiples(runs, surf, out / f"{name}-paths.png")
    figures.loss_curves(runs, out / f"{name}-loss.png")
    return [out / f"{name}-paths.png", out / f"{name}-loss.png"]


def _run_unbounded(out: Path, surf: Any, steps: int, animate: bool, log: Callable[[str], None]) -> StudyOutput:
    """Every optimizer at its defaults, unranked (module docstring)."""
    log(f"{surf.name} has no lower bound: running every optimizer at its defaults, without tuning or ranking")
    runs = []
    for label, cls, opts, la in entries():
        r = sweep(surf, cls, options=opts, steps=steps, lookahead=la)
        r.optimizer = label
        runs.append(r)
    files = _figures(out, "defaults", runs, surf)
    if animate:
        figures.animation(runs, surf, out / "defaults-paths.gif")
        files.append(out / "defaults-paths.gif")
    rows = [row for r in runs for row in r.summary_rows()]
    tables.write_table(rows, out / "defaults.csv")
    files.append(out / "defaults.csv")
    files.append(lab_page({"defaults": runs}, surf, out))
    summary = _summary_unbounded(surf, steps, runs)
    (out / "summary.md").write_text(summary)
    files.append(out / "summary.md")
    return StudyOutput(out, files, summary)


def _summary_unbounded(surf: Any, steps: int, runs: list[SweepResult]) -> str:
    (x0, x1), (y0, y1) = surf.bounds
    lines = [
        f"# Every optimizer on {surf.name}, at its defaults: not ranked",
        "",
        f"Surface: {surf.description}. Start {tuple(surf.start)}, {steps} steps, no gradient clipping.",
        "",
        f"**No ranking.** {surf.name} has no lower bound: the final loss only measures how far a run went down the "
        "unbounded direction, and a larger learning rate always goes further, so ranking by it (or tuning the "
        "learning rate on it) would crown the largest step. Each optimizer runs at its own defaults "
        f"(Lookahead wraps Adam with k={LOOKAHEAD['k']}, alpha={LOOKAHEAD['alpha']}); 'escaped' means the run left "
        f"the box [{x0:g}, {x1:g}] x [{y0:g}, {y1:g}] downhill, at the step given.",
        "",
        "![defaults](defaults-paths.png)",
        "",
        "![loss](defaults-loss.png)",
        "",
        "| optimizer | status | escaped at step | final loss |",
        "|---|---|---|---|",
    ]
    for r in runs:
        row = r.summary_rows()[0]
        escape = row["steps_to_escape"]
        escaped = "-" if escape is None else escape
        lines.append(f"| {r.optimizer} | {row['status']} | {escaped} | {row['final_loss']:.4g} |")
    return "\n".join(lines + [""])


def _objective(r: SweepResult, c: int) -> float:
    loss = r.loss[c, -1].item()
    return math.inf if r.status[c] == "diverged" or not math.isfinite(loss) else loss


def _summary(surf: Any, steps: int, lrs: list[float], defaults: list[SweepResult], tuned: list[SweepResult]) -> str:
    order = sorted(range(len(tuned)), key=lambda i: _objective(tuned[i], 0))
    lines = [
        f"# Every optimizer on {surf.name}: defaults and tuned learning rate",
        "",
        f"Surface: {surf.description}. Start {tuple(surf.start)}, {steps} steps, no gradient clipping. "
        f"Tuning: the same {len(lrs)} learning rates for every optimizer, log-spaced over [{lrs[0]:g}, {lrs[-1]:g}], "
        f"objective = loss after step {steps} (the last plotted step); diverged = +inf. "
        "Adafactor is tuned with relative_step=False (its default ignores lr). "
        f"Lookahead wraps Adam with k={LOOKAHEAD['k']}, alpha={LOOKAHEAD['alpha']}.",
        "",
        "![defaults](defaults-paths.png) ![tuned](tuned-paths.png)",
        "",
        "![tuned loss](tuned-loss.png)",
        "",
        "| rank (tuned) | optimizer | default: final loss | status | tuned lr | tuned: final loss | status |",
        "|---|---|---|---|---|---|---|",
    ]
    for rank, i in enumerate(order, 1):
        d, t = defaults[i], tuned[i]
        lines.append(
            f"| {rank} | {t.optimizer} | {d.loss[0, -1].item():.4g} | {d.status[0]} | {t.configs[0]['lr']:.3g} | "
            f"{t.loss[0, -1].item():.4g} | {t.status[0]} |"
        )
    best, worst = tuned[order[0]], tuned[order[-1]]
    gain = [(defaults[i].loss[0, -1].item(), tuned[i].loss[0, -1].item()) for i in range(len(tuned))]
    improved = sum(1 for a, b in gain if math.isfinite(b) and (not math.isfinite(a) or b < a))
    lines += [
        "",
        f"- Best after tuning: {best.optimizer} ({best.loss[0, -1].item():.4g}); worst: {worst.optimizer} ({worst.loss[0, -1].item():.4g}).",
        f"- Tuning the learning rate lowered the final loss for {improved} of {len(tuned)} optimizers.",
        f"- At the edges of the range: {', '.join(t.optimizer for t in tuned if t.configs[0]['lr'] in (lrs[0], lrs[-1])) or 'none'} "
        "(their best lr may lie outside it).",
        "",
    ]
    return "\n".join(lines)
