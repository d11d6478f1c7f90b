"""Figures of the 2-D lab: trajectories over a surface, loss curves, hyperparameter heatmaps, GIFs.

Every function takes what :func:`optimlab.sweep.sweep` returned (one :class:`SweepResult`, or a
list of them to compare optimizers) and returns a matplotlib :class:`~matplotlib.figure.Figure`
drawn on the Agg canvas (no pyplot state, no display needed).  Given an output path
``name.png``, it also writes beside it

* ``name.csv``: a tidy table of exactly the numbers the figure shows (one row per drawn point or
  per heatmap cell), and
* ``name.json``: the full configuration that produced them (optimizer, options, defaults, grid,
  start points, surface, steps and the sweep's settings), written by :mod:`optimlab.tables`.

One configuration keeps one colour and one label in :func:`trajectories`, :func:`loss_curves`
and :func:`animation`: the label names every hyperparameter that differs between the drawn
configurations, and the title names the ones they share (switches that are off, such as
``amsgrad=False`` or a zero weight decay, are left out of the title; the JSON has them all).

A diverged configuration is drawn up to its last recorded point before the step at which it
diverged and marked there with ✕; a configuration that never moved is labelled "stuck"; one that
left an unbounded surface's box downhill is labelled "escaped" with its step.
"""

from __future__ import annotations

import dataclasses
import math
import os
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from functools import cached_property
from pathlib import Path
from typing import Any

import numpy as np
import torch
from PIL import Image
from matplotlib import colormaps, colors, patheffects
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch, Rectangle
from matplotlib.ticker import Locator, LogLocator, MaxNLocator, NullLocator, SymmetricalLogLocator

from .sweep import SweepResult
from .tables import write_config, write_table

__all__ = [
    "HEATMAP_VALUES",
    "animation",
    "check_heatmap",
    "heatmap",
    "heatmap_filename",
    "loss_curves",
    "small_multiples",
    "trajectories",
]

Box = tuple[tuple[float, float], tuple[float, float]]

#: The per-configuration numbers :func:`heatmap` can colour cells by (columns of ``summary_rows``).
HEATMAP_VALUES = ("final_loss", "steps_to_target", "steps_to_escape", "first_bad_step", "final_w1", "final_w2")
#: Up to this many values per axis a heatmap prints every cell's number and ticks every grid value;
#: beyond it a number per cell is too small to read, and the figure keeps a fixed size.
HEATMAP_NUMBERS_UP_TO = 15

# How hyperparameters are written in labels; names not listed are written as they are.
_SYMBOLS = {
    "beta1": "β1",
    "beta2": "β2",
    "beta3": "β3",
    "eps": "ε",
    "weight_decay": "wd",
    "momentum": "μ",
    "alpha": "α",
    "rho": "ρ",
    "lr_decay": "lr decay",
}
# Labels list hyperparameters in this order, then the rest in order of first appearance.
_ORDER = ("optimizer", "lr", "beta1", "beta2", "beta3", "eps", "momentum", "alpha", "rho", "weight_decay")
# Settings that describe the run rather than the optimizer; they go last.
_RUN_KEYS = ("lookahead", "grad_clip", "start", "steps")
# A value of zero switches these off, like False does for a boolean option.
_OFF_WHEN_ZERO = frozenset({"weight_decay", "momentum", "lr_decay"})
# Grid axes that are log-scaled whenever their values are positive.
_LOG_NAMES = frozenset({"lr", "eps", "weight_decay", "lr_decay"})

_CONTOUR_CMAP = colors.LinearSegmentedColormap.from_list("optimlab_ground", ["#3b3f4a", "#b9bec8", "#f4f4f2"])
# Heatmap cells without a colour: diverged (hatched red), stuck (hatched grey), no value (pale).
_CELL_STYLES = {
    "diverged": dict(facecolor="#fde0dc", edgecolor="#b2182b", hatch="xx"),
    "stuck": dict(facecolor="#d9d9d9", edgecolor="#606060", hatch="//"),
    "missing": dict(facecolor="#f0f0f0", edgecolor="#a0a0a0", hatch=""),
}
_FONT = 10
_MARKERS = ("o", "s", "^", "D", "v", "P", "<", ">")


# ------------------------------------------------------------------------------------------------
# Public figures
# ------------------------------------------------------------------------------------------------


def trajectories(
    results: SweepResult | Sequence[SweepResult],
    surface: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    zoom: Box | tuple[float, float] | None = None,
    bounds: Box | None = None,
) -> Figure:
    """The configurations' paths over a filled contour of ``surface``.

    Each configuration is a line with a marker at every recorded step and a larger one where it
    ended (an end beyond the view is pinned where the path leaves it, so a divergence's ✕ stays
    in sight); the start is a black square, known minima white stars.  Contour levels are
    logarithmic where the surface's values span orders of magnitude (Rosenbrock), symmetric-log
    where they change sign over orders of magnitude, linear otherwise.  The CSV has one row per
    drawn point: line, label, hyperparameters, step, w1, w2, loss, status.

    Parameters
    ----------
    results:
        one sweep result or several (e.g. one per optimizer) on this surface.
    surface:
        the surface that was swept (``__call__``, ``bounds``, ``minima``; see
        :mod:`optimlab.surfaces`).
    path:
        where to write the PNG (``.png``); the CSV of the drawn points and the JSON config go
        beside it.  ``None``: write nothing.
    zoom:
        a box ``((x0, x1), (y0, y1))``, or a point ``(x, y)`` meaning the box of a tenth of the
        view's width and height around it: adds a second panel showing that box (outlined on the
        first).
    bounds:
        the view; the surface's ``bounds`` by default.
    """
    results = _as_list(results)
    _check_same_surface(results, surface)
    lines = _lines(results)
    box = _check_box("bounds", bounds) if bounds is not None else _check_box("surface.bounds", surface.bounds)
    zoom_box = _zoom_box(zoom, box) if zoom is not None else None

    width = 12.5 if zoom_box else 7.5
    fig = _figure((width, 6.2 + 0.26 * _legend_rows(lines, width, extra=2)))
    axes = fig.subplots(1, 2) if zoom_box else [fig.subplots()]
    # Ends beyond the main view are pinned to its edge; the zoom panel simply clips them.
    for ax, view, pin_to in zip(axes, [box, zoom_box], [box, None]):
        _draw_surface(fig, ax, surface, view)
        for line in lines:
            _draw_path(ax, line, pin_to)
        _draw_landmarks(ax, surface, lines)
        _set_view(ax, view)
    if zoom_box:
        (x0, x1), (y0, y1) = zoom_box
        outline = Rectangle((x0, y0), x1 - x0, y1 - y0, fill=False, edgecolor="black", lw=1.2, ls="--", zorder=6)
        axes[0].add_patch(outline)
        axes[1].set_title(f"zoom: w1 ∈ [{_fmt(x0)}, {_fmt(x1)}], w2 ∈ [{_fmt(y0)}, {_fmt(y1)}]", fontsize=_FONT)
    fig.suptitle(_title(lines, "trajectories"), fontsize=_FONT + 1)
    _legend(fig, lines, extra=_landmark_handles(surface))
    if path is not None:
        options = dict(zoom=zoom_box, bounds=box)
        _save(fig, path, _point_rows(lines), _config("trajectories", results, surface, options))
    return fig


def loss_curves(
    results: SweepResult | Sequence[SweepResult],
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """Loss against step, one line per configuration (colours and labels as in :func:`trajectories`).

    Step 0 is the start.  The y axis is logarithmic when the losses are positive and span orders
    of magnitude, symmetric-log when they change sign over orders of magnitude (an unbounded
    surface such as the saddle), linear otherwise.  A diverged configuration ends in ✕ at its last
    point before it diverged; the sweep's ``target``, if any, is a dashed line.
    """
    results = _as_list(results)
    lines = _lines(results)
    fig = _figure((8.0, 5.0 + 0.26 * _legend_rows(lines, 8.0)))
    ax = fig.subplots()
    for line in lines:
        ax.plot(line.steps, line.loss, color=line.color, lw=1.8, marker=line.marker, ms=2.5, zorder=3)
        _draw_end(ax, line, line.steps[-1], line.loss[-1]).set_clip_on(False)  # whole at the last step
    targets = sorted({r.target for r in results if r.target is not None})
    marks = [ax.axhline(t, color="black", lw=1, ls="--", zorder=2, label=f"target f = {_fmt(t)}") for t in targets]
    all_loss = np.concatenate([line.loss for line in lines] + [np.asarray(targets, dtype=float)])
    _apply_scale(ax, all_loss, scale=float(np.median(np.abs([line.loss[0] for line in lines]))))
    ax.set_xlabel("step", fontsize=_FONT)
    ax.set_ylabel("loss f(w)", fontsize=_FONT)
    ax.grid(True, which="major", alpha=0.3)
    ax.tick_params(labelsize=_FONT - 1)
    ax.set_xlim(0, max(int(r.steps[-1]) for r in results))
    fig.suptitle(_title(lines, "loss"), fontsize=_FONT + 1)
    _legend(fig, lines, extra=marks)
    if path is not None:
        _save(fig, path, _point_rows(lines), _config("loss_curves", results, None, {}))
    return fig


def heatmap(
    result: SweepResult,
    x: str,
    y: str,
    value: str = "final_loss",
    *,
    fixed: Mapping[str, Any] | None = None,
    path: str | os.PathLike[str] | None = None,
) -> Figure:
    """A grid over two swept hyperparameters, each cell coloured by one configuration's ``value``.

    Parameters
    ----------
    result:
        a sweep whose grid holds ``x`` and ``y``.
    x, y:
        the swept hyperparameters on the horizontal and vertical axes.  An axis is logarithmic
        for ``lr``, ``eps`` and ``weight_decay``; other grids get the scale that spaces them
        evenly (log for a geometric grid such as 1e-3, 1e-2, 1e-1; logit for ``beta2`` in 0.9,
        0.99, 0.999; linear), or one equal cell per value when none does (0, 0.5, 0.9, 0.99).
        Up to :data:`HEATMAP_NUMBERS_UP_TO` values the ticks are the grid's values, to 3
        significant digits (more only where 3 would print two values alike); beyond, round ticks
        of the axis's scale.
    value:
        one of :data:`HEATMAP_VALUES` (the columns of ``summary_rows``).
    fixed:
        a value for every other hyperparameter (and ``start``) that the sweep varied, selecting
        the slice to show, e.g. ``{"beta1": 0.9}``.

    Diverged cells are hatched red (off the colour scale, named in the legend) and show the step
    they diverged at, stuck cells hatched grey; cells without a value (a target never reached)
    are pale grey.  With at most :data:`HEATMAP_NUMBERS_UP_TO` values per axis every cell prints
    its number, with enough digits to tell apart the cells the colour scale tells apart, and the
    figure grows with the grid; larger grids are drawn at a fixed 960 x 768 px without numbers.
    The CSV has one row per cell: the hyperparameters, the value coloured (empty where none), the
    text shown (empty when numbers are not printed), the cell's kind, the status and the step of
    divergence.  Raises ``ValueError`` as :func:`check_heatmap` does.
    """
    if not isinstance(result, SweepResult):
        raise ValueError(f"heatmap: invalid result of type {type(result).__name__}: expected a SweepResult")
    check_heatmap([k for k in result.configs[0] if k != "start"], x, y, value, result.target)
    cells = _select(result, x, y, dict(fixed or {}))

    xs = _unique([result.configs[c][x] for c in cells.values()])
    ys = _unique([result.configs[c][y] for c in cells.values()])
    rows = result.summary_rows()
    grid = np.full((len(ys), len(xs)), np.nan)
    for (xv, yv), c in cells.items():
        v = rows[c][value]
        if v is not None and result.status[c] not in ("diverged", "stuck"):
            grid[ys.index(yv), xs.index(xv)] = float(v)

    numbers = max(len(xs), len(ys)) <= HEATMAP_NUMBERS_UP_TO
    # A cell must hold "1.23e-5" at 8 pt when numbers are printed; otherwise colour alone does.
    size = (max(5.5, 2.6 + 0.62 * len(xs)), max(4.2, 2.4 + 0.36 * len(ys))) if numbers else (8.0, 6.4)
    fig = _figure(size)
    ax = fig.subplots()
    xscale, yscale = _axis_scale(x, xs), _axis_scale(y, ys)
    # Where each grid value sits on its axis: the value itself, or its index on a categorical axis.
    xpos = {v: p for v, p in zip(xs, _positions(xs, xscale))}
    ypos = {v: p for v, p in zip(ys, _positions(ys, yscale))}
    xedges, yedges = _edges(list(xpos.values()), xscale), _edges(list(ypos.values()), yscale)
    finite = grid[np.isfinite(grid)]
    norm = _norm(finite, low=0)
    cmap = colormaps["viridis"]
    mesh = ax.pcolormesh(xedges, yedges, np.ma.masked_invalid(grid), cmap=cmap, norm=norm, shading="flat")
    ax.set_xscale("linear" if xscale == "categorical" else xscale)
    ax.set_yscale("linear" if yscale == "categorical" else yscale)
    ax.set_xlim(xedges[0], xedges[-1])
    ax.set_ylim(yedges[0], yedges[-1])
    label = value.replace("_", " ")
    if value == "steps_to_target" and result.target is not None:
        label += f" (f ≤ {_fmt(result.target)})"
    if finite.size:
        fig.colorbar(mesh, ax=ax, label=label)

    fontsize = _FONT if max(len(xs), len(ys)) <= 6 else _FONT - 2
    digits = _cell_digits(finite, norm)
    table = []
    for (xv, yv), c in cells.items():
        i, j = ys.index(yv), xs.index(xv)
        kind, text = _cell(result.status[c], grid[i, j], rows[c]["first_bad_step"], digits)
        if kind == "value":
            r, g, b, _ = cmap(norm(grid[i, j]))
            color = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
        else:
            x0, x1, y0, y1 = xedges[j], xedges[j + 1], yedges[i], yedges[i + 1]
            ax.add_patch(Rectangle((x0, y0), x1 - x0, y1 - y0, lw=0, **_CELL_STYLES[kind]))
            color = "black"
        box = dict(boxstyle="round,pad=0.15", fc="white", ec="none", alpha=0.8) if kind != "value" else None
        if numbers:
            ax.text(xpos[xv], ypos[yv], text, ha="center", va="center", fontsize=fontsize, color=color, bbox=box)
        else:
            text = ""
        table.append({
            x: xv, y: yv, **{k: v for k, v in _flat(result.configs[c]).items() if k not in (x, y)},
            value: None if math.isnan(grid[i, j]) else float(grid[i, j]), "shown": text, "cell": kind,
            "status": result.status[c], "first_bad_step": rows[c]["first_bad_step"],
        })
    for axis, positions, name, scale in ((ax.xaxis, xpos, x, xscale), (ax.yaxis, ypos, y, yscale)):
        _grid_ticks(axis, list(positions), list(positions.values()), scale)
        axis.set_label_text(_axis_label(name), fontsize=_FONT)
    ax.tick_params(labelsize=_FONT - 1)
    if len(ax.get_xticks()) > 5:
        ax.tick_params(axis="x", labelrotation=45)

    missing = {"steps_to_target": "target not reached", "steps_to_escape": "did not escape"}.get(value, "no value")
    names = {"diverged": "diverged (✕ step)" if numbers else "diverged", "stuck": "stuck", "missing": missing}
    used = {row["cell"] for row in table}
    handles = [Patch(**style, label=names[kind]) for kind, style in _CELL_STYLES.items() if kind in used]
    if handles:
        fig.legend(handles=handles, loc="outside lower center", ncol=len(handles), fontsize=_FONT - 1, frameon=False)
    _, shared = _split([_params(result, c) for c in cells.values()])
    fig.suptitle(f"{result.optimizer} on {result.surface}: {label}\n{_describe_all(shared)}", fontsize=_FONT + 1)

    if path is not None:
        options = dict(x=x, y=y, value=value, fixed=dict(fixed or {}), x_scale=xscale, y_scale=yscale)
        _save(fig, path, table, _config("heatmap", [result], None, options))
    return fig


def small_multiples(
    results: SweepResult | Sequence[SweepResult],
    surface: Any,
    path: str | os.PathLike[str] | None = None,
    *,
    columns: int | None = None,
    bounds: Box | None = None,
) -> Figure:
    """One panel per result (one per optimizer, say) with shared axes: each path over the same
    contour, instead of many paths crossing on one panel.

    Panels are in the order given, titled with the line's label (what tells it from the others,
    and its status: ✕ diverged at step n, escaped, converged, stuck); paths are drawn as in
    :func:`trajectories` (ends beyond the view pinned to its edge).  ``columns`` defaults to
    ceil(sqrt(n)), at most 5.  The CSV has one row per drawn point, as for :func:`trajectories`.
    """
    results = _as_list(results)
    _check_same_surface(results, surface)
    if columns is not None and (isinstance(columns, bool) or not isinstance(columns, int) or columns < 1):
        raise ValueError(f"small_multiples: invalid columns={columns!r}: expected an integer >= 1")
    lines = _lines(results)
    box = _check_box("bounds", bounds) if bounds is not None else _check_box("surface.bounds", surface.bounds)
    ncols = columns or min(5, math.ceil(math.sqrt(len(results))))
    nrows = math.ceil(len(results) / ncols)
    fig = _figure((2.7 * ncols + 1.2, 2.55 * nrows + 1.0), dpi=100)
    axes = fig.subplots(nrows, ncols, sharex=True, sharey=True, squeeze=False)
    contour = _contour_data(surface, box, levels=16)
    cs = None
    for i, (ax, result) in enumerate(zip(axes.flat, results)):
        mine = [line for line in lines if line.result is result]
        cs = _draw_contour(ax, contour)
        for line in mine:
            # every panel stands alone, so one strong colour reads better than the palette's light shades
            _draw_path(ax, dataclasses.replace(line, color="#d1495b") if len(mine) == 1 else line, box)
        _draw_landmarks(ax, surface, mine)
        (x0, x1), (y0, y1) = box
        ax.set_xlim(x0, x1)
        ax.set_ylim(y0, y1)
        ax.tick_params(labelsize=_FONT - 2)
        title = "\n".join(line.label for line in mine) if len(mine) <= 2 else result.optimizer
        diverged = all(line.status == "diverged" for line in mine)
        ax.set_title(title, fontsize=_FONT - 1, color="#b2182b" if diverged else "black")
        if diverged:
            # its path may stop before the first recorded step: say so where the eye looks
            ax.text(0.5, 0.5, "✕ diverged", transform=ax.transAxes, ha="center", va="center", fontsize=_FONT + 2,
                    color="#b2182b", bbox=dict(boxstyle="round,pad=0.3", fc="white", ec="#b2182b", alpha=0.9), zorder=7)
        if i % ncols == 0:
            ax.set_ylabel("w2", fontsize=_FONT - 1)
        if i >= len(results) - ncols:
            ax.set_xlabel("w1", fontsize=_FONT - 1)
            ax.xaxis.set_tick_params(labelbottom=True)
    for ax in list(axes.flat)[len(results) :]:
        ax.set_visible(False)
    _colorbar(fig, axes, cs, shrink=0.6)
    fig.suptitle(_title(lines, "one panel per run, shared axes"), fontsize=_FONT + 1)
    handles = _landmark_handles(surface)
    fig.legend(handles=handles, loc="outside lower center", ncol=2, fontsize=_FONT - 1, frameon=False)
    if path is not None:
        options = dict(bounds=box, columns=ncols)
        _save(fig, path, _point_rows(lines), _config("small_multiples", results, surface, options))
    return fig


def check_heatmap(grid: Sequence[str], x: str, y: str, value: str = "final_loss", target: float | None = None) -> None:
    """Raise ``ValueError`` unless :func:`heatmap` can draw ``value`` over ``x`` and ``y`` of a sweep
    of these ``grid`` names and this ``target``.

    Needs no result: a command calls it before the sweep runs, so a wrong request costs nothing.
    ``steps_to_target`` needs a target (without one every cell would be empty).
    """
    if value not in HEATMAP_VALUES:
        raise ValueError(f"heatmap: invalid value={value!r}: expected one of {', '.join(HEATMAP_VALUES)}")
    swept = list(grid)
    for name, axis in (("x", x), ("y", y)):
        if axis not in swept:
            raise ValueError(f"heatmap: invalid {name}={axis!r}: expected a swept hyperparameter, one of {swept}")
    if x == y:
        raise ValueError(f"heatmap: invalid y={y!r}: expected a hyperparameter other than x={x!r}")
    if value == "steps_to_target" and target is None:
        raise ValueError(
            "heatmap: invalid value='steps_to_target' without a target: give the loss that counts as arrived "
            "(sweep(..., target=...), --target)"
        )


def heatmap_filename(x: str, y: str, value: str | None = None) -> str:
    """``heatmap-X-Y[-VALUE].png``: the axes in the order asked (x first), then the value if given."""
    parts = ["heatmap", x, y] + ([value.replace("_", "-")] if value else [])
    return "-".join(parts) + ".png"


def animation(
    results: SweepResult | Sequence[SweepResult],
    surface: Any,
    path_gif: str | os.PathLike[str],
    *,
    fps: int = 10,
    max_frames: int = 60,
    bounds: Box | None = None,
) -> Figure:
    """An animated GIF of the trajectories growing over the recorded steps.

    The frames are the start and up to ``max_frames - 1`` recorded steps, evenly spread (the last
    step always included), drawn as in :func:`trajectories` at a small size so the file stays
    near 1 MB.  Writes ``path_gif`` (``.gif``) and, beside it, the CSV of the points and the JSON
    config; returns the figure at its last frame.
    """
    results = _as_list(results)
    _check_same_surface(results, surface)
    if isinstance(fps, bool) or not isinstance(fps, int) or not 1 <= fps <= 50:
        raise ValueError(f"animation: invalid fps={fps!r}: expected an integer in [1, 50]")
    if isinstance(max_frames, bool) or not isinstance(max_frames, int) or max_frames < 2:
        raise ValueError(f"animation: invalid max_frames={max_frames!r}: expected an integer >= 2")
    path_gif = Path(path_gif)
    if path_gif.suffix != ".gif":
        raise ValueError(f"animation: invalid path_gif={str(path_gif)!r}: expected a path ending in .gif")
    lines = _lines(results)
    box = _check_box("bounds", bounds) if bounds is not None else _check_box("surface.bounds", surface.bounds)

    fig = _figure((6.4, 5.4 + 0.26 * _legend_rows(lines, 6.4, extra=2)), dpi=80)
    ax = fig.subplots()
    _draw_surface(fig, ax, surface, box, levels=14)
    _set_view(ax, box)
    artists = [_draw_path(ax, line, box) for line in lines]
    landmarks = _draw_landmarks(ax, surface, lines)
    _legend(fig, lines, extra=_landmark_handles(surface))
    title = _title(lines, "trajectories")
    steps = np.unique(np.concatenate([line.steps for line in lines]))
    frames = steps[np.unique(np.linspace(0, len(steps) - 1, min(max_frames, len(steps))).round().astype(int))]

    # Draw the still parts once and blit only the paths and the title onto them for each frame:
    # a full redraw per frame (what matplotlib.animation's writers do) costs ~20x more.
    heading = fig.suptitle(f"{title}\nstep {int(frames[-1])}", fontsize=_FONT)
    # Blitted artists are drawn in this order, after everything else: the landmarks stay on top.
    dynamic = [a for pair in artists for a in pair] + landmarks + [heading]
    for artist in dynamic:
        artist.set_animated(True)
    fig.canvas.draw()
    fig.set_layout_engine("none")
    background = fig.canvas.copy_from_bbox(fig.bbox)
    images = []
    for step in frames:
        for line, (trace, end) in zip(lines, artists):
            k = int(np.searchsorted(line.steps, step, side="right"))
            trace.set_data(line.xy[:k, 0], line.xy[:k, 1])
            end.set_data(*([v] for v in _end_point(line.xy[:k], box)))
            # A diverged configuration's ✕ appears once its path has reached that point.
            end.set_visible(k == len(line.steps) or line.status != "diverged")
        heading.set_text(f"{title}\nstep {int(step)}")
        fig.canvas.restore_region(background)
        for artist in dynamic:
            fig.draw_artist(artist)
        images.append(Image.fromarray(np.asarray(fig.canvas.buffer_rgba())[..., :3]))
    for artist in dynamic:
        artist.set_animated(False)
    # One palette for all frames (the last holds every colour) keeps colours steady and the file small.
    palette = images[-1].quantize(colors=255, method=Image.Quantize.MEDIANCUT)
    frames_p = [im.quantize(palette=palette, dither=Image.Dither.NONE) for im in images]
    path_gif.parent.mkdir(parents=True, exist_ok=True)
    frames_p[0].save(path_gif, save_all=True, append_images=frames_p[1:], duration=round(1000 / fps), loop=0)
    options = dict(bounds=box, fps=fps, frames=[int(f) for f in frames])
    write_table(_point_rows(lines), path_gif.with_suffix(".csv"))
    write_config(_config("animation", results, surface, options), path_gif.with_suffix(".json"))
    return fig


# ------------------------------------------------------------------------------------------------
# Configurations as labelled lines
# ------------------------------------------------------------------------------------------------


@dataclass
class _Line:
    """One configuration of one result, with what every figure draws of it."""

    result: SweepResult
    index: int
    params: dict[str, Any]
    label: str = ""
    color: Any = None
    marker: str = "o"
    ring: int = 0  # among the stuck configurations sharing this start, this one's place

    @property
    def status(self) -> str:
        return self.result.status[self.index]

    @property
    def first_bad_step(self) -> int | None:
        step = int(self.result.first_bad_step[self.index])
        return step if step >= 0 else None

    @property
    def first_escape_step(self) -> int | None:
        steps = self.result.first_escape_step
        step = -1 if steps is None else int(steps[self.index])
        return step if step >= 0 else None

    @property
    def steps(self) -> np.ndarray:
        return self._drawn[0]

    @property
    def xy(self) -> np.ndarray:
        return self._drawn[1]

    @property
    def loss(self) -> np.ndarray:
        return self._drawn[2]

    @cached_property
    def _drawn(self) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Steps, points and losses drawn: the start (step 0) and the recorded steps, up to the
        last one before the step of divergence and before any non-finite value."""
        r, c = self.result, self.index
        steps = np.concatenate([[0], r.steps.numpy()])
        xy = np.concatenate([r.start[c : c + 1].numpy(), r.path[c].numpy()])
        loss = np.concatenate([r.start_loss[c : c + 1].numpy(), r.loss[c].numpy()])
        keep = np.isfinite(loss) & np.isfinite(xy).all(axis=1)
        if self.first_bad_step is not None:
            keep &= steps < self.first_bad_step
        n = len(keep) if keep.all() else int(np.argmin(keep))
        return steps[:n], xy[:n], loss[:n]


def _as_list(results: SweepResult | Sequence[SweepResult]) -> list[SweepResult]:
    out = [results] if isinstance(results, SweepResult) else list(results)
    if not out or not all(isinstance(r, SweepResult) for r in out):
        raise ValueError(f"figures: invalid results={results!r}: expected a SweepResult or a non-empty list of them")
    return out


def _check_same_surface(results: list[SweepResult], surface: Any) -> None:
    for r in results:
        if r.surface != surface.name:
            raise ValueError(
                f"figures: invalid surface={surface.name!r}: the result of {r.optimizer} was swept on {r.surface!r}"
            )


def _params(result: SweepResult, c: int) -> dict[str, Any]:
    """Everything that defines configuration ``c``: optimizer, rule hyperparameters, run settings."""
    cfg = result.configs[c]
    params = {"optimizer": result.optimizer, **result.settings.get("defaults", {})}
    params.update({k: v for k, v in cfg.items() if k != "start"})
    params["lookahead"] = result.settings.get("lookahead")
    params["grad_clip"] = result.settings.get("grad_clip")
    params["start"] = tuple(float(v) for v in cfg["start"])
    params["steps"] = result.settings.get("steps", int(result.steps[-1]))
    return params


def _lines(results: list[SweepResult]) -> list[_Line]:
    # Each result gets its own marker shape, so results whose paths coincide stay apart.
    lines = [
        _Line(r, c, _params(r, c), marker=_MARKERS[i % len(_MARKERS)])
        for i, r in enumerate(results)
        for c in range(len(r))
    ]
    varying, _ = _split([line.params for line in lines])
    palette = _palette(len(lines))
    stuck_at: dict[tuple[float, ...], int] = {}
    for line, color in zip(lines, palette):
        if line.status == "stuck":
            line.ring = stuck_at.setdefault(line.params["start"], 0)
            stuck_at[line.params["start"]] += 1
        label = _label(line.params, varying)
        if line.status == "diverged":
            label += f" — ✕ diverged at step {line.first_bad_step}"
        elif line.status == "escaped":
            label += f" — escaped at step {line.first_escape_step}"
        elif line.status in ("stuck", "converged"):
            label += f" — {line.status}"
        line.label, line.color = label, color
    return lines


def _label(params: dict[str, Any], varying: list[str]) -> str:
    """A line's legend label: the settings that tell it from the others.

    Between different optimizers the name says most; of their settings only a varying learning
    rate is named (the JSON beside the figure has every setting).
    """
    keys = ["optimizer"] + (["lr"] if "lr" in varying else []) if "optimizer" in varying else varying
    keys = [k for k in keys if k in params]
    # an "off" switch is named only when nothing else tells the line apart ("no amsgrad")
    parts = [_describe(k, params[k]) for k in keys if not _is_off(k, params[k])] or [_describe(k, params[k]) for k in keys]
    return ", ".join(parts) or str(params["optimizer"])


def _split(params: list[dict[str, Any]]) -> tuple[list[str], dict[str, Any]]:
    """The keys whose values differ between configurations (ordered), and the shared ones."""
    keys = _ordered(dict.fromkeys(k for p in params for k in p))
    missing = object()
    varying = [k for k in keys if len({_key(p.get(k, missing)) for p in params}) > 1]
    shared = {k: params[0][k] for k in keys if k not in varying}
    return varying, shared


def _key(value: Any) -> Any:
    """``value`` made hashable, to compare settings that are lists or dicts."""
    if isinstance(value, dict):
        return tuple(sorted((k, _key(v)) for k, v in value.items()))
    return tuple(value) if isinstance(value, list) else value


def _ordered(keys: Mapping[str, Any]) -> list[str]:
    def rank(item: tuple[int, str]) -> tuple[int, int]:
        i, k = item
        if k in _ORDER:
            return (0, _ORDER.index(k))
        return (2, _RUN_KEYS.index(k)) if k in _RUN_KEYS else (1, i)

    return [k for _, k in sorted(enumerate(keys), key=rank)]


def _describe(key: str, value: Any) -> str:
    """One setting as a label fragment: ``β1=0.9``, ``amsgrad``, ``no clipping``, ``600 steps``."""
    if key == "optimizer":
        return str(value)
    if key == "grad_clip":
        return "no grad clipping" if value is None else f"grad clip ‖g‖≤{_fmt(value)}"
    if key == "lookahead":
        return "no lookahead" if value is None else "lookahead " + ", ".join(
            f"{_SYMBOLS.get(k, k)}={_fmt(v)}" for k, v in sorted(value.items())
        )
    if key == "start":
        return f"start ({', '.join(_fmt(v) for v in value)})"
    if key == "steps":
        return f"{value} steps"
    name = _SYMBOLS.get(key, key)
    if isinstance(value, bool):
        return name if value else f"no {name}"
    return f"{name}={_fmt(value)}"


def _is_off(key: str, value: Any) -> bool:
    return value is False or value is None or (key in _OFF_WHEN_ZERO and value == 0)


def _describe_all(shared: Mapping[str, Any]) -> str:
    return ", ".join(_describe(k, v) for k, v in shared.items() if k != "optimizer" and not _is_off(k, v))


def _title(lines: list[_Line], what: str) -> str:
    _, shared = _split([line.params for line in lines])
    surface = lines[0].result.surface
    head = f"{shared['optimizer']} on {surface}" if "optimizer" in shared else surface
    head = f"{head}: {what}"
    rest = _describe_all(shared)
    return f"{head}\n{rest}" if rest else head


def _palette(n: int) -> list[Any]:
    """Distinct colours: tab10; up to 20, tab20's dark shades then its light ones; then turbo."""
    if n <= 10:
        return list(colormaps["tab10"].colors[:n])
    if n <= 20:
        tab20 = colormaps["tab20"].colors
        return list(tab20[0::2] + tab20[1::2])[:n]
    return list(colormaps["turbo"](np.linspace(0.05, 0.95, n)))


def _fmt(value: Any) -> str:
    """A hyperparameter as typed when that is short (``0.005``, ``1e-8``, ``0.9995``, ``3``), else to 3
    significant digits (a log-grid value 0.000120679 reads ``0.000121``)."""
    if isinstance(value, (bool, str)):
        return str(value)
    value = float(value)
    if value.is_integer() and abs(value) < 1e6:
        return str(int(value))
    text = repr(value) if len(repr(value)) <= 6 else f"{value:.3g}"
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", text)


def _fmt_value(value: float, digits: int = 3) -> str:
    """A measured number in a heatmap cell: ``digits`` significant digits, integers whole."""
    if float(value).is_integer() and abs(value) < 1e6:
        return str(int(value))
    return re.sub(r"e\+?(-?)0*(\d)", r"e\1\2", f"{value:.{digits}g}")


def _cell(status: str, value: float, first_bad_step: int | None, digits: int) -> tuple[str, str]:
    """A heatmap cell's kind ('value', 'diverged', 'stuck' or 'missing') and its text."""
    if status == "diverged":
        return "diverged", f"✕ {first_bad_step}"
    if status == "stuck":
        return "stuck", "stuck"
    if math.isnan(value):
        return "missing", "—"
    return "value", _fmt_value(value, digits)


def _cell_digits(values: np.ndarray, norm: colors.Normalize) -> int:
    """Significant digits for the cells: enough to tell apart what a linear colour scale tells apart.

    On a linear scale spanning a range much smaller than the values (13.40 to 13.42), 3 digits
    would print the same number in cells of opposite colours; one digit more per decade of
    ``max |v| / range``, up to 6.  A log scale separates relative sizes, which 3 digits show.
    """
    if type(norm) is not colors.Normalize or values.size < 2 or np.ptp(values) == 0:
        return 3
    return int(np.clip(math.ceil(math.log10(np.abs(values).max() / np.ptp(values))) + 2, 3, 6))


# ------------------------------------------------------------------------------------------------
# Drawing
# ------------------------------------------------------------------------------------------------


def _figure(size: tuple[float, float], dpi: int = 120) -> Figure:
    fig = Figure(figsize=size, dpi=dpi, layout="constrained")
    FigureCanvasAgg(fig)
    return fig


def _draw_surface(fig: Figure, ax: Axes, surface: Any, box: Box, levels: int = 24) -> None:
    _colorbar(fig, ax, _draw_contour(ax, _contour_data(surface, box, levels)))


@dataclass
class _Contour:
    X: np.ndarray
    Y: np.ndarray
    Z: np.ndarray
    levels: Any
    norm: colors.Normalize


def _contour_data(surface: Any, box: Box, levels: int) -> _Contour:
    """The surface on a 240 x 240 grid of ``box`` with its contour levels (computed once, drawn on any axes)."""
    (x0, x1), (y0, y1) = box
    n = 240
    X, Y = np.meshgrid(np.linspace(x0, x1, n), np.linspace(y0, y1, n))
    with torch.no_grad():
        Z = surface(torch.from_numpy(np.stack([X, Y], axis=-1))).double().numpy()
    finite = Z[np.isfinite(Z)]
    norm = _norm(finite)
    if isinstance(norm, colors.LogNorm):
        bounds = np.geomspace(norm.vmin, norm.vmax, levels)
        Z = np.clip(Z, norm.vmin, norm.vmax)
    elif isinstance(norm, colors.SymLogNorm):
        bounds = norm.inverse(np.linspace(0, 1, levels))
    else:
        bounds = np.linspace(finite.min(), finite.max(), levels) if np.ptp(finite) > 0 else levels
    return _Contour(X, Y, Z, bounds, norm)


def _draw_contour(ax: Axes, data: _Contour) -> Any:
    style = dict(cmap=_CONTOUR_CMAP, norm=data.norm, extend="neither", zorder=0)
    cs = ax.contourf(data.X, data.Y, data.Z, levels=data.levels, **style)
    ax.contour(data.X, data.Y, data.Z, levels=cs.levels, colors="white", linewidths=0.3, alpha=0.5, zorder=1)
    return cs


def _colorbar(fig: Figure, ax: Any, cs: Any, shrink: float = 0.9) -> None:
    bar = fig.colorbar(cs, ax=ax, shrink=shrink, pad=0.02, ticks=_ticks(cs.norm))
    bar.set_label("f(w)", fontsize=_FONT)
    bar.ax.tick_params(labelsize=_FONT - 2)


def _draw_path(ax: Axes, line: _Line, pin_to: Box | None) -> tuple[Line2D, Line2D]:
    """The path with a marker per recorded step, and its end (see :func:`_end_point` for ``pin_to``)."""
    halo = [patheffects.Stroke(linewidth=3.6, foreground="white", alpha=0.85), patheffects.Normal()]
    (trace,) = ax.plot(line.xy[:, 0], line.xy[:, 1], color=line.color, lw=1.8, marker=line.marker, ms=2.8,
                       path_effects=halo, zorder=4)
    x, y = _end_point(line.xy, pin_to)
    end = _draw_end(ax, line, x, y)
    end.set_clip_on(pin_to is None)
    return trace, end


def _draw_end(ax: Axes, line: _Line, x: float, y: float) -> Line2D:
    """The last drawn point, marked as :func:`_end_style` says."""
    (end,) = ax.plot([x], [y], ls="none", color=line.color, zorder=5, **_end_style(line))
    return end


def _end_style(line: _Line, legend: bool = False) -> dict[str, Any]:
    """✕ where a configuration diverged; a hollow ring where it got stuck (it sits on its start,
    under the start's square: rings of growing size keep several stuck ones apart); a dot else."""
    if line.status == "diverged":
        return dict(marker="X", ms=8 if legend else 12, mec="black", mew=1.0)
    if line.status == "stuck":
        return dict(marker="o", ms=8 if legend else 14 + 6 * line.ring, mfc="none", mec=line.color, mew=2.0)
    return dict(marker=line.marker, ms=5 if legend else 7, mec="black", mew=0.8)


def _end_point(xy: np.ndarray, box: Box | None) -> tuple[float, float]:
    """The path's last point; one beyond ``box`` is moved to where the path last leaves the box.

    A diverging path usually ends far outside the view, and its ✕ would be lost; pinned to the
    edge it shows where the path went.
    """
    end = xy[-1]
    if box is None:
        return float(end[0]), float(end[1])
    low, high = np.array([box[0][0], box[1][0]]), np.array([box[0][1], box[1][1]])
    inside = np.flatnonzero(((xy >= low) & (xy <= high)).all(axis=1))
    if inside.size == 0 or inside[-1] == len(xy) - 1:
        clipped = np.clip(end, low, high)
        return float(clipped[0]), float(clipped[1])
    a, b = xy[inside[-1]], xy[inside[-1] + 1]
    d = b - a
    # The largest t in [0, 1] keeping a + t d inside the box.
    t = min([1.0] + [((high if d[k] > 0 else low)[k] - a[k]) / d[k] for k in range(2) if d[k] != 0])
    point = a + t * d
    return float(point[0]), float(point[1])


def _draw_landmarks(ax: Axes, surface: Any, lines: list[_Line]) -> list[Line2D]:
    """The start points (black squares) and the known minima (white stars), above the paths."""
    starts = np.array(list(dict.fromkeys(line.params["start"] for line in lines)))
    style = dict(ls="none", mew=1.2, zorder=6)
    artists = ax.plot(starts[:, 0], starts[:, 1], marker="s", ms=8, color="black", mec="white", **style)
    minima = np.array(getattr(surface, "minima", None) or (), dtype=float).reshape(-1, 2)
    if len(minima):
        artists += ax.plot(minima[:, 0], minima[:, 1], marker="*", ms=15, color="white", mec="black", **style)
    return artists


def _landmark_handles(surface: Any) -> list[Line2D]:
    handles = [Line2D([], [], ls="none", marker="s", ms=8, color="black", mec="white", label="start")]
    if getattr(surface, "minima", None):
        handles.append(Line2D([], [], ls="none", marker="*", ms=13, color="white", mec="black", label="minimum"))
    return handles


def _set_view(ax: Axes, box: Box) -> None:
    (x0, x1), (y0, y1) = box
    ax.set_xlim(x0, x1)
    ax.set_ylim(y0, y1)
    ax.set_xlabel("w1", fontsize=_FONT)
    ax.set_ylabel("w2", fontsize=_FONT)
    ax.tick_params(labelsize=_FONT - 1)


def _legend_rows(lines: list[_Line], width: float, extra: int = 0) -> int:
    """How many rows the legend of ``lines`` (and ``extra`` entries) takes in a figure ``width`` inches wide."""
    return math.ceil((len(lines) + extra) / _legend_columns(lines, width))


def _legend_columns(lines: list[_Line], width: float) -> int:
    # At the legend's 9 pt a character is about 1/14 inch wide; an entry's handle takes ~6 more.
    longest = max(len(line.label) for line in lines)
    return max(1, min(4, len(lines), int(width * 14) // (longest + 6)))


def _legend(fig: Figure, lines: list[_Line], extra: Sequence[Any] = ()) -> None:
    """Below the axes, in columns, so it never covers a path."""
    handles = [Line2D([], [], color=line.color, lw=2, label=line.label, **_end_style(line, legend=True)) for line in lines]
    columns = _legend_columns(lines, fig.get_figwidth())
    fig.legend(handles=handles + list(extra), loc="outside lower center", ncol=columns, fontsize=_FONT - 1,
               frameon=False, handlelength=2.2, columnspacing=1.6)


# ------------------------------------------------------------------------------------------------
# Scales
# ------------------------------------------------------------------------------------------------


def _scale_kind(values: np.ndarray, scale: float | None = None, low: float = 5) -> str:
    """'log', 'symlog' or 'linear' for showing ``values`` (non-finite ones ignored).

    Positive values are shown on a log scale once the largest is 100x the ``low`` percentile
    (so the bottom of a valley is resolved; a heatmap, whose every cell counts, passes 0).
    Signed values cross zero anyway; they get a symlog scale once the largest magnitude is 100x
    ``scale``, the size of a typical value (the median magnitude unless given; the loss curves
    give the start's loss).
    """
    values = values[np.isfinite(values)]
    if values.size == 0:
        return "linear"
    if values.min() > 0:
        return "log" if values.max() >= 100 * np.percentile(values, low) else "linear"
    return "symlog" if np.abs(values).max() >= 100 * _typical(values, scale) else "linear"


def _typical(values: np.ndarray, scale: float | None) -> float:
    if scale is not None and math.isfinite(scale) and scale != 0:
        return abs(scale)
    magnitude = np.abs(values[np.isfinite(values) & (values != 0)])
    return float(np.median(magnitude)) if magnitude.size else 1.0


def _linthresh(values: np.ndarray, scale: float | None = None) -> float:
    """Where a symlog scale turns linear: the decade of the typical value (see :func:`_scale_kind`)."""
    return float(10 ** math.floor(math.log10(_typical(values, scale))))


def _norm(values: np.ndarray, low: float = 5) -> colors.Normalize:
    """The colour scale for ``values`` (see :func:`_scale_kind`)."""
    kind = _scale_kind(values, low=low)
    if values.size == 0:
        return colors.Normalize(0, 1)
    lo, hi = float(values.min()), float(values.max())
    if kind == "log":
        # The bottom percent (the floor of a valley; a heatmap keeps its smallest cell) shares the
        # darkest colour, and six decades are as many as a colour scale can show.
        return colors.LogNorm(max(float(np.percentile(values, min(low, 1))), hi * 1e-6), hi)
    if kind == "symlog":
        return colors.SymLogNorm(_linthresh(values), vmin=lo, vmax=hi, base=10)
    return colors.Normalize(lo, hi) if hi > lo else colors.Normalize(lo - 1, hi + 1)


def _ticks(norm: colors.Normalize) -> Locator:
    """Round ticks for a contour's colour bar (its levels would give unreadable ones)."""
    if isinstance(norm, colors.LogNorm):
        return LogLocator(base=10)
    if isinstance(norm, colors.SymLogNorm):
        return SymmetricalLogLocator(linthresh=norm.linthresh, base=10)
    return MaxNLocator(8)


def _apply_scale(ax: Axes, values: np.ndarray, scale: float) -> None:
    """The y scale for ``values`` (see :func:`_scale_kind`); ``scale`` is a typical magnitude."""
    kind = _scale_kind(values, scale)
    if kind == "symlog":
        ax.set_yscale("symlog", linthresh=_linthresh(values, scale))
    else:
        ax.set_yscale(kind)


def _axis_scale(name: str, values: list[Any]) -> str:
    """The heatmap axis for a sorted grid: 'log', 'logit', 'linear' or 'categorical'.

    ``lr``, ``eps`` and the like are always logarithmic (when positive); other grids get the
    scale in which they are evenly spaced (log for 1e-3, 1e-2, 1e-1; logit for 0.9, 0.99,
    0.999; linear for 0.1, 0.2, 0.3) and a categorical axis, one equal cell per value, when
    none fits (0, 0.5, 0.9, 0.99), so that no cell shrinks to a sliver.
    """
    v = np.asarray(values, dtype=float)
    positive = len(v) > 1 and v.min() > 0
    if positive and (name in _LOG_NAMES or (_even(np.log10(v)) and (v.max() / v.min() >= 20 or not _even(v)))):
        return "log"
    if positive and len(v) > 2 and v.max() < 1 and (1 - v.min()) / (1 - v.max()) >= 20 and _even(np.log(v / (1 - v))):
        return "logit"
    return "linear" if _even(v) else "categorical"


def _even(t: np.ndarray) -> bool:
    """Whether sorted values are roughly evenly spaced (no gap more than twice another)."""
    gaps = np.diff(t)
    return len(t) <= 2 or gaps.max() <= 2 * gaps.min()


def _grid_ticks(axis: Any, values: list[Any], positions: list[float], scale: str) -> None:
    """Ticks of a heatmap axis: every grid value up to :data:`HEATMAP_NUMBERS_UP_TO` of them, else
    the scale's own round ticks (a categorical axis labels every k-th value)."""
    if len(values) <= HEATMAP_NUMBERS_UP_TO:
        axis.set_ticks(positions, _tick_labels(values))
        axis.set_minor_locator(NullLocator())
    elif scale == "categorical":
        every = math.ceil(len(values) / 10)
        axis.set_ticks(positions[::every], _tick_labels(values)[::every])
        axis.set_minor_locator(NullLocator())


def _tick_labels(values: list[Any]) -> list[str]:
    """3 significant digits, or as few more as keep the labels of distinct values distinct."""
    for digits in range(3, 10):
        labels = [_fmt_value(float(v), digits) for v in values]
        if len(set(labels)) == len(labels):
            return labels
    return [_fmt(v) for v in values]


def _positions(values: list[Any], scale: str) -> list[float]:
    return [float(i) for i in range(len(values))] if scale == "categorical" else [float(v) for v in values]


_TRANSFORMS: dict[str, tuple[Callable[[np.ndarray], np.ndarray], Callable[[np.ndarray], np.ndarray]]] = {
    "linear": (lambda v: v, lambda t: t),
    "log": (np.log10, lambda t: 10.0**t),
    "logit": (lambda v: np.log(v / (1 - v)), lambda t: 1 / (1 + np.exp(-t))),
}


def _edges(values: list[Any], scale: str) -> np.ndarray:
    """Cell edges halfway between grid values in the axis's own scale (equal cells for even grids)."""
    forward, inverse = _TRANSFORMS["linear" if scale == "categorical" else scale]
    t = forward(np.asarray(values, dtype=float))
    if len(t) == 1:
        half = 0.5 if scale != "linear" else (abs(t[0]) / 2 or 0.5)
        return inverse(np.array([t[0] - half, t[0] + half]))
    mid = (t[1:] + t[:-1]) / 2
    return inverse(np.concatenate([[2 * t[0] - mid[0]], mid, [2 * t[-1] - mid[-1]]]))


def _axis_label(name: str) -> str:
    symbol = _SYMBOLS.get(name, name)
    return symbol if symbol == name else f"{symbol} ({name})"


# ------------------------------------------------------------------------------------------------
# Heatmap selection
# ------------------------------------------------------------------------------------------------


def _select(result: SweepResult, x: str, y: str, fixed: dict[str, Any]) -> dict[tuple[Any, Any], int]:
    """(x value, y value) -> configuration index, over the configurations matching ``fixed``."""
    others = [k for k in result.configs[0] if k not in (x, y)]
    for k in fixed:
        if k not in others:
            raise ValueError(f"heatmap: invalid fixed key {k!r}: expected one of the other swept settings {others}")
    for k in others:
        values = _unique([result.configs[c][k] for c in range(len(result))])
        if k not in fixed:
            if len(values) > 1:
                raise ValueError(
                    f"heatmap: {k!r} takes {len(values)} values {values}: choose one with fixed={{{k!r}: ...}}"
                )
            continue
        if not any(_same(fixed[k], v) for v in values):
            raise ValueError(f"heatmap: invalid fixed[{k!r}]={fixed[k]!r}: expected one of the swept values {values}")
    cells: dict[tuple[Any, Any], int] = {}
    for c, cfg in enumerate(result.configs):
        if all(_same(cfg[k], fixed[k]) for k in fixed):
            cell = (cfg[x], cfg[y])
            if cell in cells:
                raise ValueError(
                    f"heatmap: the grid holds {x}={cell[0]!r}, {y}={cell[1]!r} twice: expected distinct values"
                )
            cells[cell] = c
    return cells


def _same(a: Any, b: Any) -> bool:
    if isinstance(a, (list, tuple)) and isinstance(b, (list, tuple)):
        return len(a) == len(b) and all(_same(u, v) for u, v in zip(a, b))
    try:
        return math.isclose(float(a), float(b), rel_tol=1e-12, abs_tol=0.0)
    except (TypeError, ValueError):
        return a == b


def _unique(values: list[Any]) -> list[Any]:
    out: list[Any] = []
    for v in values:
        if not any(_same(v, u) for u in out):
            out.append(v)
    return sorted(out) if all(isinstance(v, (int, float)) for v in out) else out


# ------------------------------------------------------------------------------------------------
# Output: PNG + CSV + JSON
# ------------------------------------------------------------------------------------------------


def _flat(cfg: Mapping[str, Any]) -> dict[str, Any]:
    """A configuration with its start point as two columns."""
    out = {k: v for k, v in cfg.items() if k != "start"}
    out["start_w1"], out["start_w2"] = (float(v) for v in cfg["start"])
    return out


def _point_rows(lines: list[_Line]) -> list[dict[str, Any]]:
    rows = []
    for i, line in enumerate(lines):
        cfg = _flat(line.result.configs[line.index])
        head = {"line": i, "label": line.label, "optimizer": line.result.optimizer, **cfg}
        tail = {"status": line.status, "first_bad_step": line.first_bad_step}
        for step, (w1, w2), loss in zip(line.steps, line.xy, line.loss):
            rows.append({**head, "step": int(step), "w1": float(w1), "w2": float(w2), "loss": float(loss), **tail})
    return rows


def _grid(result: SweepResult) -> dict[str, list[Any]]:
    keys = [k for k in result.configs[0] if k != "start"]
    return {k: list(dict.fromkeys(cfg[k] for cfg in result.configs)) for k in keys}


def _surface_config(surface: Any) -> dict[str, Any]:
    params = dataclasses.asdict(surface) if dataclasses.is_dataclass(surface) else {}
    return {
        "name": surface.name,
        "parameters": params,
        "bounds": surface.bounds,
        "start": surface.start,
        "minima": list(getattr(surface, "minima", None) or []),
        "min_value": getattr(surface, "min_value", None),
        "description": getattr(surface, "description", ""),
    }


def _config(figure: str, results: list[SweepResult], surface: Any, options: Mapping[str, Any]) -> dict[str, Any]:
    runs = [
        {
            "optimizer": r.optimizer,
            "surface": r.surface,
            "grid": _grid(r),
            "starts": list(dict.fromkeys(tuple(cfg["start"]) for cfg in r.configs)),
            "target": r.target,
            **r.settings,
        }
        for r in results
    ]
    surface_cfg = _surface_config(surface) if surface is not None else {"name": results[0].surface}
    return {"figure": figure, "surface": surface_cfg, "runs": runs, "figure_options": dict(options)}


def _save(fig: Figure, path: str | os.PathLike[str], rows: list[dict[str, Any]], config: dict[str, Any]) -> None:
    path = Path(path)
    if path.suffix != ".png":
        raise ValueError(f"figures: invalid path={str(path)!r}: expected a path ending in .png")
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    write_table(rows, path.with_suffix(".csv"))
    write_config(config, path.with_suffix(".json"))


def _check_box(name: str, box: Any) -> Box:
    try:
        (x0, x1), (y0, y1) = box
        x0, x1, y0, y1 = (float(v) for v in (x0, x1, y0, y1))
    except (TypeError, ValueError):
        raise ValueError(f"figures: invalid {name}={box!r}: expected ((xmin, xmax), (ymin, ymax))") from None
    if not (all(map(math.isfinite, (x0, x1, y0, y1))) and x0 < x1 and y0 < y1):
        raise ValueError(f"figures: invalid {name}={box!r}: expected finite xmin < xmax and ymin < ymax")
    return (x0, x1), (y0, y1)


def _zoom_box(zoom: Any, view: Box) -> Box:
    try:
        is_point = len(zoom) == 2 and all(isinstance(v, (int, float)) for v in zoom)
    except TypeError:
        is_point = False
    if not is_point:
        return _check_box("zoom", zoom)
    (x0, x1), (y0, y1) = view
    hx, hy = (x1 - x0) / 20, (y1 - y0) / 20
    return _check_box("zoom", ((zoom[0] - hx, zoom[0] + hx), (zoom[1] - hy, zoom[1] + hy)))
