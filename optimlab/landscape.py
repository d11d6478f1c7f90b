"""Loss landscapes of real training trajectories: stored checkpoints projected onto a plane, the loss over it.

>>> from optimlab.landscape import landscape
>>> landscape(Store("results/lab.sqlite", readonly=True), "results/landscape")  # doctest: +SKIP

Runs trained with ``checkpoint_every`` (``--checkpoint-every``: :mod:`optimlab.runner`) store their
parameters every N steps.  For the runs of several optimizers on one task and one seed (so that every
path starts from the same network) :func:`landscape` draws where each went:

* **PCA** (the default; Li et al., "Visualizing the Loss Landscape of Neural Nets", NeurIPS 2018, §7):
  the rows of the matrix ``M`` are ``theta_i - theta_0`` for every checkpoint ``theta_i`` of every
  run, centred on ``theta_0``, the initial point they share (Li et al. centre one trajectory on its
  final point; several optimizers end in several places but start in one).  The directions ``d1, d2``
  are ``M``'s top two right singular vectors (from the small Gram matrix ``M M^T``, accumulated in
  float64), each checkpoint's coordinates are ``M d_k``, and the share of ``M``'s squared norm that
  each direction carries (its "explained variance", uncentred as in Li et al.) is printed on the
  axes: a small share means the paths leave the plane and the contours describe them less.  The
  task's loss is evaluated at ``theta_0 + a d1 + b d2`` on a ``K x K`` grid over the paths' extent
  (with a margin), on a fixed subset of a split (the first ``examples`` examples of the run's own
  fixed subset of ``split``), in eval mode: ``K^2 x examples`` example evaluations (plus one per
  checkpoint for the paths' own loss), printed before it starts, with a progress bar.  Each grid point is one
  forward pass over the whole subset (batched over the examples, in chunks of 500).
* **t-SNE** (``method="tsne"``, scikit-learn's ``TSNE``, ``pip install 'optimlab[landscape]'``): a
  2-D embedding of the checkpoints from their pairwise distances.  Its axes carry no distance meaning
  (t-SNE keeps neighbours close and says nothing about far points), and no parameters correspond to
  a point off the checkpoints, so the loss surface cannot be evaluated there: t-SNE draws the paths
  alone (each checkpoint hovered with its loss), without contours.

Outputs in ``out``: ``landscape.png`` (matplotlib, for papers), ``landscape.html`` (the report's look:
plotly contours and paths, every checkpoint hovered with its step and loss; self-contained) and
``landscape.json`` (every number drawn).  ``optimlab report`` given the same ``--out`` shows the
landscape in its ``index.html`` too, in the section of its task and budget (:func:`stored_result`).
Tasks: those with a model and a loss on tensors or a Dataset (the supervised tasks); a GAN's
checkpoints (its generator) have no single loss to draw.
"""

from __future__ import annotations

import html
import json
import math
import os
import sys
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import tasks as tasks_mod
from .data import Split
from .optim._validate import check_choice, check_int
from .runner import CHECKPOINT_MEDIA_TYPE, check_environment, checkpoint_name
from .store import Store
from .tasks import Budget, Task

__all__ = [
    "METHODS",
    "Plane",
    "Trajectory",
    "grid_loss",
    "landscape",
    "pca_plane",
    "section",
    "stored_result",
    "trajectories",
    "tsne_embedding",
]

#: The projections :func:`landscape` offers.
METHODS = ("pca", "tsne")
#: Grid side and examples per grid point by default: 21 x 21 x 512 = 225,792 example evaluations.
DEFAULT_GRID = 21
DEFAULT_EXAMPLES = 512
#: The margin around the paths' extent, as a fraction of it on each side.
MARGIN = 0.25
_CHUNK = 500  # examples per forward pass (the supervised tasks' evaluation batch)
TSNE_CAUTION = (
    "t-SNE: the axes carry no distance meaning and no parameters lie off the checkpoints, "
    "so there is no loss surface to draw: paths only"
)


@dataclass(frozen=True)
class Trajectory:
    """One run's checkpoints: ``thetas[i]`` (float32) after ``steps[i]`` optimizer steps."""

    key: str
    label: str
    steps: tuple[int, ...]
    thetas: np.ndarray


@dataclass(frozen=True)
class Plane:
    """The PCA plane: ``origin + a * directions[0] + b * directions[1]``; ``coords[i]`` of each row given."""

    origin: np.ndarray
    directions: np.ndarray  # [2, P], orthonormal
    coords: np.ndarray  # [N, 2]
    explained: tuple[float, float]  # share of the squared norm of theta_i - origin along each direction


# ---------------------------------------------------------------------------------------------
# Reading the store
# ---------------------------------------------------------------------------------------------


def trajectories(
    store: Store, task: str | None = None, seed: int | None = None
) -> tuple[str, int, list[Trajectory], dict[str, Any]]:
    """The checkpointed finished runs of one task and seed: ``(task name, seed, trajectories, a run's config)``.

    Without ``task``, the store must hold checkpoints of one task only; without ``seed``, the
    smallest seed with checkpoints is taken.  Labels are the optimizer's name with the
    hyperparameters that differ between the runs drawn.

    Raises:
        ValueError: no checkpointed runs (of that task or seed), or several tasks and no ``task``.
    """
    runs = [r for r in store.runs("finished") if "checkpoint_every" in r["config"].get("settings", {})]
    if not runs:
        raise ValueError(
            f"landscape: {str(store.path)!r} has no finished runs with checkpoints; "
            "train some with --checkpoint-every N (optimlab run/tune)"
        )
    names = sorted({r["config"]["task"] for r in runs})
    if task is None and len(names) > 1:
        raise ValueError(
            f"landscape: the store has checkpoints of several tasks; give --task, one of {', '.join(names)}"
        )
    task = names[0] if task is None else task
    check_choice("landscape", "task", task, tuple(names))
    runs = [r for r in runs if r["config"]["task"] == task]
    seeds = sorted({r["config"]["seed"] for r in runs})
    seed = seeds[0] if seed is None else seed
    check_choice("landscape", "seed", seed, tuple(seeds))
    runs = [r for r in runs if r["config"]["seed"] == seed]
    labels = _labels([r["config"] for r in runs])
    out = []
    for run, label in zip(runs, labels):
        role = ((run.get("meta") or {}).get("task") or {}).get("roles", ["model"])[0]
        stored = store.artifacts(run["key"], name=checkpoint_name(role))
        points = [a for a in stored if a["media_type"] == CHECKPOINT_MEDIA_TYPE]
        thetas = np.stack([np.frombuffer(a["data"], dtype="<f4") for a in points])
        out.append(Trajectory(run["key"], label, tuple(a["step"] for a in points), thetas))
    return task, seed, out, runs[0]["config"]


def _labels(configs: Sequence[Mapping[str, Any]]) -> list[str]:
    """Each run's optimizer (``Adam``, ``Momentum``, ``torch.SGD``) with the hyperparameters that tell it from another
    run of the same optimizer; a suffix ``#n`` where even those agree (another budget setting)."""
    names = [_name(c) for c in configs]
    labels = []
    for name, c in zip(names, configs):
        same = [d["hyperparameters"] for n, d in zip(names, configs) if n == name]
        hp = c["hyperparameters"]
        differ = [k for k in sorted(hp) if any(_text(h.get(k)) != _text(hp[k]) for h in same)]
        shown = ", ".join(f"{k}={_text(hp[k])}" for k in differ)
        labels.append(f"{name}({shown})" if differ else name)
    counts: dict[str, int] = {}
    out = []
    for label in labels:
        counts[label] = counts.get(label, 0) + 1
        out.append(label if labels.count(label) == 1 else f"{label} #{counts[label]}")
    return out


def _name(config: Mapping[str, Any]) -> str:
    """The optimizer's name as the report shows it (a preset such as ``Momentum`` by its own name)."""
    from . import report

    optimizer, hp = report._role_view(config)
    return report._preset(report._spec(optimizer, hp), optimizer, hp)[0]


def _text(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else json.dumps(value, sort_keys=True)


# ---------------------------------------------------------------------------------------------
# Projections
# ---------------------------------------------------------------------------------------------


def _gram(rows: np.ndarray, origin: np.ndarray, chunk: int = 1 << 18) -> np.ndarray:
    """``M M^T`` in float64 for ``M = rows - origin``, a column chunk at a time (``M`` in float64 whole
    would take 8 bytes per parameter per checkpoint)."""
    gram = np.zeros((len(rows), len(rows)))
    for start in range(0, rows.shape[1], chunk):
        m = rows[:, start : start + chunk].astype(np.float64) - origin[start : start + chunk].astype(np.float64)
        gram += m @ m.T
    return gram


def pca_plane(rows: np.ndarray, origin: np.ndarray) -> Plane:
    """The top-2 principal directions of ``rows - origin`` (uncentred SVD, Li et al. 2018; see the module
    docstring), oriented so that the coordinate of largest magnitude along each is positive.

    Raises:
        ValueError: the rows span fewer than 2 dimensions around ``origin``.
    """
    rows = np.asarray(rows)
    gram = _gram(rows, origin)
    values, vectors = np.linalg.eigh(gram)
    order = np.argsort(values)[::-1][:2]
    values, vectors = values[order], vectors[:, order]
    total = float(np.trace(gram))
    if len(values) < 2 or values[1] <= 1e-12 * max(total, 1e-300):
        raise ValueError(
            "landscape: the checkpoints span fewer than 2 directions around the initial point; "
            "store more checkpoints (a smaller --checkpoint-every) or more runs"
        )
    sigma = np.sqrt(values)
    coords = vectors * sigma  # M d_k = u_k sigma_k
    signs = np.sign(coords[np.abs(coords).argmax(axis=0), [0, 1]])
    coords = coords * signs
    directions = np.zeros((2, rows.shape[1]))
    weights = vectors * signs / sigma  # d_k = M^T u_k / sigma_k
    for start in range(0, rows.shape[1], 1 << 18):
        m = rows[:, start : start + (1 << 18)].astype(np.float64) - origin[start : start + (1 << 18)].astype(np.float64)
        directions[:, start : start + (1 << 18)] = weights.T @ m
    return Plane(origin.astype(np.float64), directions, coords, (float(values[0] / total), float(values[1] / total)))


def tsne_embedding(rows: np.ndarray, origin: np.ndarray, *, seed: int = 0) -> np.ndarray:
    """A 2-D t-SNE embedding of ``rows`` (scikit-learn's ``TSNE`` on their exact pairwise distances,
    perplexity ``min(30, (N - 1) / 3)``); see the module docstring for what its axes do not mean.

    Raises:
        ValueError: scikit-learn is not installed, or fewer than 5 rows.
    """
    try:
        from sklearn.manifold import TSNE
    except ImportError:
        raise ValueError("landscape: --method tsne needs scikit-learn: pip install 'optimlab[landscape]'") from None
    if len(rows) < 5:
        raise ValueError(f"landscape: --method tsne needs at least 5 checkpoints, not {len(rows)}")
    gram = _gram(np.asarray(rows), origin)
    norms = np.diag(gram)
    distances = np.sqrt(np.maximum(norms[:, None] + norms[None, :] - 2 * gram, 0.0))
    tsne = TSNE(2, perplexity=min(30.0, (len(rows) - 1) / 3), metric="precomputed", init="random", random_state=seed)
    return tsne.fit_transform(distances)


# ---------------------------------------------------------------------------------------------
# The loss at given parameters
# ---------------------------------------------------------------------------------------------


class _Loss:
    """The task's loss at a flat parameter vector, on the first ``examples`` examples of ``split``
    (of the instance a run of ``budget`` builds), in eval mode, without gradients."""

    def __init__(self, task: Task, budget: Budget, split: str, examples: int, data_dir: Any) -> None:
        check_environment(task, data_dir, "cpu")  # missing data: one line
        with torch.random.fork_rng(devices=[]):  # building the model draws from torch's generator; the caller's stays
            instance = task.setup(budget, data_dir=data_dir, device=torch.device("cpu"))
        model, loss = getattr(instance, "model", None), getattr(getattr(instance, "task", None), "loss", None)
        if not isinstance(model, torch.nn.Module) or not callable(loss) or not hasattr(instance, "splits"):
            raise ValueError(
                f"landscape: task {task.name} is not a supervised task (one model, one loss): its checkpoints "
                "have no loss surface to draw"
            )
        check_choice("landscape", "split", split, tuple(instance.splits))
        data = instance.splits[split]
        if isinstance(data, Split):
            x, y = data.x[:examples], data.y[:examples]
        elif isinstance(data, torch.utils.data.Dataset):
            count = min(examples, len(data))  # type: ignore[arg-type]
            first = torch.utils.data.Subset(data, range(count))
            x, y = next(iter(torch.utils.data.DataLoader(first, batch_size=count)))
        else:
            raise ValueError(
                f"landscape: task {task.name}'s {split} data is a DataLoader factory: no fixed subset to evaluate"
            )
        self.x, self.y, self.model, self.loss = x, y, model.eval(), loss
        self.params = instance.parameters()["model"]
        self.size = sum(p.numel() for p in self.params)

    @torch.no_grad()
    def __call__(self, theta: np.ndarray) -> float:
        torch.nn.utils.vector_to_parameters(torch.as_tensor(theta, dtype=torch.float32), self.params)
        total = 0.0
        for start in range(0, len(self.x), _CHUNK):
            x, y = self.x[start : start + _CHUNK], self.y[start : start + _CHUNK]
            total += float(self.loss(self.model(x), y)) * len(x)  # the tasks' losses are means over the batch
        return total / len(self.x)


def grid_loss(
    loss: Callable[[np.ndarray], float],
    plane: Plane,
    xs: Sequence[float],
    ys: Sequence[float],
    *,
    bar: tqdm | None = None,
) -> np.ndarray:
    """``loss(origin + x d1 + y d2)`` for every ``(x, y)`` of the grid: ``z[j, i]`` at ``(xs[i], ys[j])``;
    ``bar`` (a tqdm progress bar) advances by one per point."""
    z = np.empty((len(ys), len(xs)))
    for j, b in enumerate(ys):
        for i, a in enumerate(xs):
            z[j, i] = loss(plane.origin + a * plane.directions[0] + b * plane.directions[1])
            if bar is not None:
                bar.update()
    return z


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def landscape(
    store: Store,
    out: str | os.PathLike[str],
    *,
    task: str | Task | None = None,
    seed: int | None = None,
    method: str = "pca",
    grid: int = DEFAULT_GRID,
    split: str = "train",
    examples: int = DEFAULT_EXAMPLES,
    data_dir: str | os.PathLike[str] | None = None,
    progress: bool = True,
) -> list[Path]:
    """Draw the checkpointed runs of one task and seed (see the module docstring): ``landscape.png``,
    ``landscape.html`` and ``landscape.json`` in ``out``; returns their paths.

    ``task``: a task name, or a task object (your own; its name picks the runs); default: the only task
    with checkpoints.  ``seed``: default the smallest with checkpoints.  ``grid``: the side ``K`` of the
    ``K x K`` grid (PCA).  ``split``/``examples``: the data the loss is evaluated on.

    Raises:
        ValueError: one line naming the argument, or what the store lacks.
    """
    check_choice("landscape", "method", method, METHODS)
    check_int("landscape", "grid", grid, 2)
    check_int("landscape", "examples", examples, 1)
    if seed is not None:
        check_int("landscape", "seed", seed, 0)
    task_obj = task if isinstance(task, Task) else None
    name, seed, paths, config = trajectories(store, task.name if isinstance(task, Task) else task, seed)
    origin = paths[0].thetas[0]
    for p in paths:
        if p.steps[0] != 0 or not np.array_equal(p.thetas[0], origin):
            raise ValueError(
                f"landscape: runs {paths[0].label} and {p.label} of {name} seed {seed} do not start from the same "
                "parameters (another budget or model?): draw them apart with --task/--seed"
            )
    if task_obj is None:
        task_obj = tasks_mod.get(name)
    budget = Budget(**config["settings"])
    loss = _Loss(task_obj, budget, split, examples, data_dir)
    if loss.size != origin.size:
        raise ValueError(f"landscape: the checkpoints of {name} hold {origin.size} parameters, its model {loss.size}")
    # the shared initial point once: t-SNE would scatter copies of one point
    rows = np.concatenate([origin[None], *(p.thetas[1:] for p in paths)])
    index, start = [], 1
    for p in paths:
        index.append(np.r_[0, start : start + len(p.steps) - 1])
        start += len(p.steps) - 1
    n = len(loss.x)
    cost = (grid * grid if method == "pca" else 0) + len(rows)
    _say(
        f"landscape: {name} seed {seed}, {len(paths)} runs, {sum(len(p.steps) for p in paths)} checkpoints of "
        f"{origin.size:,} parameters; "
        + (f"{grid}x{grid} grid + " if method == "pca" else "")
        + f"{len(rows)} distinct checkpoints = {cost:,} points x {n} {split} examples "
        f"= {cost * n:,} example evaluations"
    )
    bar = tqdm(total=cost, desc="landscape", unit="point", disable=not progress, file=sys.stderr)
    losses = []
    for theta in rows:
        losses.append(float(loss(theta)))
        bar.update()
    result: dict[str, Any] = {
        "task": name, "budget": config["budget"], "seed": seed, "method": method, "split": split, "examples": n,
        "parameters": int(origin.size),
        "runs": [], "grid": None, "explained": None,
    }  # fmt: skip
    if method == "pca":
        plane = pca_plane(rows, origin)
        coords = plane.coords
        lo, hi = coords.min(axis=0), coords.max(axis=0)
        pad = MARGIN * np.maximum(hi - lo, 1e-12)
        xs, ys = (np.linspace(lo[k] - pad[k], hi[k] + pad[k], grid) for k in (0, 1))
        z = grid_loss(loss, plane, xs, ys, bar=bar)
        result["grid"] = {"x": xs.tolist(), "y": ys.tolist(), "loss": z.tolist()}
        result["explained"] = list(plane.explained)
        result["centre"] = "the shared initial point theta_0"
    else:
        coords = tsne_embedding(rows, origin, seed=seed)
    bar.close()
    for p, rows_of in zip(paths, index):
        result["runs"].append({"key": p.key, "label": p.label, "steps": list(p.steps), "x": coords[rows_of, 0].tolist(),
                               "y": coords[rows_of, 1].tolist(), "loss": [losses[i] for i in rows_of]})  # fmt: skip
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    written = [out / "landscape.json", _png(result, out / "landscape.png")]
    written.append(_html(result, out / "landscape.html", store))
    (out / "landscape.json").write_text(json.dumps(_finite(result), indent=1), encoding="utf-8")
    return written


def _say(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _finite(value: Any) -> Any:
    """NaN and inf as ``None``: what JSON can hold (a diverged point's loss)."""
    if isinstance(value, float):
        return value if math.isfinite(value) else None
    if isinstance(value, Mapping):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_finite(v) for v in value]
    return value


def _log_scale(values: np.ndarray) -> bool:
    """Whether the losses span decades (then contours are drawn on log10 of the loss)."""
    finite = values[np.isfinite(values)]
    return finite.size > 0 and finite.min() > 0 and finite.max() > 100 * finite.min()


def _axis_titles(result: Mapping[str, Any]) -> tuple[str, str]:
    if result["method"] == "tsne":
        return "t-SNE 1 (no distance meaning)", "t-SNE 2 (no distance meaning)"
    e = result["explained"]
    return f"PC1 ({100 * e[0]:.1f}% of the squared distance)", f"PC2 ({100 * e[1]:.1f}%)"


def _title(result: Mapping[str, Any]) -> str:
    what = "PCA plane of the joint trajectory" if result["method"] == "pca" else "t-SNE embedding of the checkpoints"
    return f"{result['task']}, seed {result['seed']}: {what}"


def _png(result: Mapping[str, Any], path: Path) -> Path:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7.2, 5.8), dpi=110)
    if result["grid"] is not None:
        g = result["grid"]
        z = np.array(g["loss"], dtype=float)
        log = _log_scale(z)
        filled = ax.contourf(g["x"], g["y"], np.log10(z) if log else z, levels=24, cmap="viridis")
        label = f"{'log10 ' if log else ''}{result['split']} loss ({result['examples']} examples)"
        fig.colorbar(filled, ax=ax, label=label)
    colours = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for i, r in enumerate(result["runs"]):
        colour = colours[i % len(colours)]
        ax.plot(r["x"], r["y"], "-o", color=colour, markersize=3, linewidth=1.6, label=r["label"])
        ax.plot(r["x"][-1], r["y"][-1], "*", color=colour, markersize=12, markeredgecolor="black", markeredgewidth=0.6)
    first = result["runs"][0]
    ax.plot(first["x"][0], first["y"][0], "o", color="black", markersize=7, label="start (every run)")
    xlabel, ylabel = _axis_titles(result)
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    ax.set_title(_title(result), fontsize=10)
    if result["method"] == "tsne":
        fig.text(0.01, 0.01, TSNE_CAUTION, fontsize=7)
    ax.legend(fontsize=8, loc="best")
    fig.tight_layout()
    fig.savefig(path)
    plt.close(fig)
    return path


def _html(result: Mapping[str, Any], path: Path, store: Store) -> Path:
    from .html import _Page

    page = _Page(f"landscape of {store.path.name}")
    page.open_task(_title(result))
    section(page, result)
    page.close_task()
    path.write_text(page.render(), encoding="utf-8")
    return path


def stored_result(store: Store, out: str | os.PathLike[str]) -> dict[str, Any] | None:
    """The ``landscape.json`` that :func:`landscape` wrote in ``out`` for runs of ``store`` (what ``optimlab
    report`` shows when given the same folder), or ``None``: no such file, or one drawn from other runs."""
    path = Path(out) / "landscape.json"
    if not path.is_file():
        return None
    result = json.loads(path.read_text(encoding="utf-8"))
    return result if all(store.record(r["key"]) is not None for r in result["runs"]) else None


def section(page: Any, result: Mapping[str, Any]) -> None:
    """Add the landscape of ``result`` (a ``landscape.json``) to the task open in ``page`` (the report's
    :class:`optimlab.html._Page`): its description and one chart of contours and paths."""
    from .html import _COLOURS

    data: list[dict[str, Any]] = []
    if result["grid"] is not None:
        g = result["grid"]
        z = np.array(g["loss"], dtype=float)
        log = _log_scale(z)
        what = f"{'log10 ' if log else ''}{result['split']} loss"
        data.append({
            "type": "contour", "x": g["x"], "y": g["y"], "z": _finite((np.log10(z) if log else z).tolist()),
            "colorscale": "Viridis", "ncontours": 24, "showlegend": False, "name": "loss",
            "colorbar": {"title": {"text": what}},
            "hovertemplate": f"(%{{x:.3g}}, %{{y:.3g}})<br>{what}=%{{z:.4g}}<extra></extra>",
        })  # fmt: skip
        cost = len(g["x"]) * len(g["y"])
        explained = result["explained"]
        page.add(
            "landscape",
            f"<p>Loss on a {len(g['x'])}x{len(g['y'])} grid over the plane through the shared initial point spanned "
            "by the top-2 principal directions of every checkpoint minus that point (Li et al., 2018): "
            f"{cost} points x {result['examples']} {html.escape(result['split'])} examples, at seed {result['seed']}. "
            "Explained: PC1 "
            f"{100 * explained[0]:.1f}%, PC2 {100 * explained[1]:.1f}% of the squared distance from the start.</p>",
        )
    else:
        page.add("landscape", f"<p class='warning'>{html.escape(TSNE_CAUTION)}.</p>")
    for i, r in enumerate(result["runs"]):
        colour = _COLOURS[i % len(_COLOURS)]
        data.append({
            "type": "scatter", "mode": "lines+markers", "x": r["x"], "y": r["y"], "name": r["label"],
            "line": {"color": colour, "width": 2}, "marker": {"size": 5, "color": colour},
            "customdata": [[s, v] for s, v in zip(r["steps"], _finite(r["loss"]))],
            "hovertemplate": "step %{customdata[0]}: loss %{customdata[1]:.4g}"
                             f"<extra>{html.escape(r['label'])}</extra>",
        })  # fmt: skip
    xlabel, ylabel = _axis_titles(result)
    page.chart("landscape", data, {"title": {"text": "paths"}, "height": 640, "xaxis": {"title": {"text": xlabel}},
                                   "yaxis": {"title": {"text": ylabel}}, "legend": {"orientation": "h", "y": -0.15},
                                   "hovermode": "closest"})  # fmt: skip
