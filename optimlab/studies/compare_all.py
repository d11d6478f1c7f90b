"""Every optimizer of the library on one surface: with its defaults, and with its learning rate tuned.

Fairness: every optimizer gets the same tuning budget (the same ``lr_trials`` learning rates, log
spaced over one fixed range), the same objective (the loss after ``steps`` steps, a diverged run
counting as +inf) measured over exactly the steps that are plotted, the same start, and no
gradient clipping.  Optimizers whose step size is not ``lr`` alone are tuned on their ``lr`` all the
same; Adafactor's default (``relative_step=True``) ignores ``lr``, so its tuned runs set
``relative_step=False`` (said in the summary).

Schedule-Free takes its gradients at y and is shown and judged at its evaluation point x (where
``eval()`` puts it); Prodigy estimates its step size from each configuration's own run (see
:mod:`optimlab.sweep`).

The matrix methods (:data:`MATRIX_METHODS`: Muon, SOAP, Shampoo) act on a weight matrix as a
matrix, which two scalar coordinates cannot show: they run on a small matrix factorisation
(:class:`optimlab.surfaces.MatrixFactorization`) instead of the 2-D surface, beside
:data:`MATRIX_BASELINES`, with the same learning rates and objective, drawn as loss against step.
Muon's Newton–Schulz runs in the problem's float64 there (``ns_dtype=None``): the authors' bfloat16
is a GPU speed choice, and on the CPU a bfloat16 iteration from float64 costs about 40 ms a step at
this size against 0.2 ms.  Shampoo's factor matrices are float64 too (``preconditioner_dtype``; its
reference's default, float32, is a memory choice for float32 weights).

On a surface without a lower bound (the saddle) the final loss only measures how far a run
travelled downhill, and a larger learning rate always travels further: ranking by it, or tuning
the learning rate on it, would crown whoever got the largest step.  There the study runs every
optimizer at its defaults, reports each one's status and the step at which it escaped the
plotting box, and says that it ranks nothing (and leaves out the matrix problem, which it would rank).
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
from ..sweep import MatrixSweepResult, SweepResult, matrix_sweep, sweep
from .adam_saddle import StudyOutput

LR_RANGE = (1e-4, 10.0)
LOOKAHEAD = {"k": 5, "alpha": 0.5}
#: classes that precondition or orthogonalise a weight matrix: run on the matrix problem, not on 2-D surfaces
MATRIX_METHODS = ("Muon", "SOAP", "Shampoo")
#: presets run beside them on the matrix problem (Muon's authors compare with AdamW)
MATRIX_BASELINES = ("AdamW", "SGD")
#: options of the matrix runs, by class (module docstring)
MATRIX_OPTIONS: dict[str, dict[str, Any]] = {"Muon": {"ns_dtype": None}, "Shampoo": {"preconditioner_dtype": "float64"}}


def entries() -> list[tuple[str, Any, dict[str, Any], dict[str, float] | None]]:
    """(label, class, options, lookahead) for every preset but the matrix methods, plus Lookahead around Adam."""
    out = [(name, cls, dict(opts), None) for name, (cls, opts) in PRESETS.items() if cls.__name__ not in MATRIX_METHODS]
    cls, opts = PRESETS["Adam"]
    out.append(("Lookahead(Adam)", cls, dict(opts), LOOKAHEAD))
    return out


def matrix_entries() -> list[tuple[str, Any, dict[str, Any]]]:
    """(label, class, options) for every preset of a matrix method, then the baselines."""
    chosen = [n for n, (cls, _) in PRESETS.items() if cls.__name__ in MATRIX_METHODS] + list(MATRIX_BASELINES)
    return [(n, PRESETS[n][0], {**PRESETS[n][1], **MATRIX_OPTIONS.get(PRESETS[n][0].__name__, {})}) for n in chosen]


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
        log(
            f"  default final loss {d.loss[0, -1].item():.4g}; tuned lr {lrs[best]:.3g}: {tuned.loss[0, -1].item():.4g}"
        )

    tables.write_table(rows, out / "lr-search.csv")
    files = [out / "lr-search.csv"]
    for name, runs in (("defaults", default_runs), ("tuned", tuned_runs)):
        files += _figures(out, name, runs, surf)
    if animate:
        figures.animation(tuned_runs, surf, out / "tuned-paths.gif")
        files.append(out / "tuned-paths.gif")
    files.append(lab_page({"defaults": default_runs, "tuned lr": tuned_runs}, surf, out))
    matrix_files, matrix_summary = _run_matrix(out, steps, lrs, log)
    files += matrix_files
    summary = _summary(surf, steps, lrs, default_runs, tuned_runs) + matrix_summary
    (out / "summary.md").write_text(summary)
    files.append(out / "summary.md")
    return StudyOutput(out, files, summary)


def _run_matrix(out: Path, steps: int, lrs: list[float], log: Callable[[str], None]) -> tuple[list[Path], str]:
    """The matrix methods and their baselines on the matrix problem: defaults and tuned lr, as on the surface."""
    surf = surfaces.MatrixFactorization()
    rows: list[dict[str, Any]] = []
    defaults: list[MatrixSweepResult] = []
    tuned: list[MatrixSweepResult] = []
    for label, cls, opts in matrix_entries():
        log(f"{label} on {surf.name}: defaults, then {len(lrs)} learning rates")
        d = matrix_sweep(surf, cls, options=opts, steps=steps)
        grid = matrix_sweep(surf, cls, {"lr": lrs}, options=opts, steps=steps)
        final = [_objective(grid, c) for c in range(len(grid))]
        best = int(np.argmin(final))
        t = matrix_sweep(surf, cls, {"lr": [lrs[best]]}, options=opts, steps=steps)
        for r in (d, t):
            r.optimizer = label
        defaults.append(d)
        tuned.append(t)
        rows += [{**row, "optimizer": label} for row in grid.summary_rows()]
        log(f"  default final loss {d.loss[0, -1].item():.4g}; tuned lr {lrs[best]:.3g}: {t.loss[0, -1].item():.4g}")
    tables.write_table(rows, out / "matrix-lr-search.csv")
    curves = [
        {"run": kind, "optimizer": r.optimizer, **r.configs[0], "step": step, "loss": loss}
        for kind, runs in (("defaults", defaults), ("tuned lr", tuned))
        for r in runs
        for step, loss in zip([0, *r.steps.tolist()], [r.start_loss, *r.loss[0].tolist()])
    ]
    tables.write_table(curves, out / "matrix-loss.csv")
    _matrix_figure(defaults, tuned, surf, out / "matrix-loss.png")
    files = [out / "matrix-lr-search.csv", out / "matrix-loss.csv", out / "matrix-loss.png"]
    return files, _matrix_summary(surf, steps, lrs, defaults, tuned)


def _matrix_figure(defaults: list[MatrixSweepResult], tuned: list[MatrixSweepResult], surf: Any, path: Path) -> None:
    """Loss against step (step 0 is the start), one line per optimizer: defaults left, tuned lr right."""
    import matplotlib

    matplotlib.use("Agg")
    from matplotlib.figure import Figure

    fig = Figure(figsize=(11.0, 4.8), dpi=120)
    axes = fig.subplots(1, 2, sharey=True)
    for ax, (title, runs) in zip(axes, (("defaults", defaults), ("tuned lr", tuned))):
        for r in runs:
            loss = np.array([r.start_loss, *r.loss[0].tolist()])
            shown = np.where(np.isfinite(loss) & (loss > 0), loss, np.nan)  # a log axis shows no 0, inf or NaN
            label = r.optimizer if title == "defaults" else f"{r.optimizer} (lr={r.configs[0]['lr']:.3g})"
            if r.status[0] != "moving":
                label += f": {r.status[0]}"
            ax.plot([0, *r.steps.tolist()], shown, lw=1.6, label=label)
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_title(title)
        ax.grid(True, alpha=0.3)
        ax.legend(fontsize=8)
    axes[0].set_ylabel("loss 0.5 ||U V^T - M||_F^2")
    fig.suptitle(f"Matrix methods on {surf.name} (minimum 0)")
    fig.savefig(path, format="png")


def _matrix_summary(
    surf: Any, steps: int, lrs: list[float], defaults: list[MatrixSweepResult], tuned: list[MatrixSweepResult]
) -> str:
    order = sorted(range(len(tuned)), key=lambda i: _objective(tuned[i], 0))
    methods = ", ".join(n for n, cls, _ in matrix_entries() if cls.__name__ in MATRIX_METHODS) or "none"
    lines = [
        "",
        f"## Matrix methods on {surf.name}",
        "",
        (
            f"Problem: {surf.description}. The matrix methods ({methods}) act on U and V as matrices, which a 2-D "
            f"surface cannot show; they run here beside {', '.join(MATRIX_BASELINES)}, {steps} steps, the same "
            f"{len(lrs)} learning rates and objective as above, drawn as loss against step. Muon's Newton-Schulz "
            "and Shampoo's factor matrices run in float64 (ns_dtype=None, preconditioner_dtype=float64)."
        ),
        "",
        "![matrix loss](matrix-loss.png)",
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
    return "\n".join(lines + [""])


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


def _objective(r: SweepResult | MatrixSweepResult, c: int) -> float:
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
        f"Lookahead wraps Adam with k={LOOKAHEAD['k']}, alpha={LOOKAHEAD['alpha']}. "
        "Schedule-Free is shown at its evaluation point x (its gradients are taken at y).",
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
