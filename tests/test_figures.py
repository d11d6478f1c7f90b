"""The lab's figures (optimlab.figures) and table writers (optimlab.tables).

Each figure must write PNG + CSV + JSON, the CSV must hold exactly the numbers drawn, labels must
name every hyperparameter that differs, and diverged / stuck configurations must be marked.
"""

from __future__ import annotations

import csv
import json
import math
import sys
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from optimlab import figures
from optimlab.optim.adam import Adam
from optimlab.sweep import sweep
from optimlab.tables import write_config, write_table


class Saddle:
    """Stand-in surface: f(w) = (w1 - 1)^2 - (w2 - 1)^2, a saddle at (1, 1), unbounded below."""

    name = "saddle"
    start = (-3.0, 0.8)
    bounds = ((-4.0, 4.0), (-4.0, 4.0))
    minima: tuple = ()
    min_value = None
    description = "(w1 - 1)^2 - (w2 - 1)^2"

    def __call__(self, w: torch.Tensor) -> torch.Tensor:
        return (w[..., 0] - 1) ** 2 - (w[..., 1] - 1) ** 2

    def value_and_grad(self, w: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self(w), torch.stack([2 * (w[..., 0] - 1), -2 * (w[..., 1] - 1)], dim=-1)


SURFACE = Saddle()
START, OTHER_START = [-3.0, 0.8], [2.0, 3.0]


@pytest.fixture(scope="module")
def result():
    # Per start: lr=1e-5 moves less than move_tol in 60 steps (stuck), lr=0.005 keeps moving,
    # lr=0.5 leaves the radius-6 ball within ~15 steps (diverged).  The loss starts near 16 and
    # never reaches the target -5 in 60 steps of lr=0.005.
    return sweep(
        SURFACE, Adam, {"beta1": [0.9, 0.5], "lr": [1e-5, 0.005, 0.5]}, options=dict(lr=0.005),
        starts=[START, OTHER_START], steps=60, record_every=5, divergence_radius=6.0, move_tol=1e-3, target=-5.0,
    )


def read_csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def outputs(png: Path) -> tuple[list[dict[str, str]], dict]:
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    return read_csv(png.with_suffix(".csv")), json.loads(png.with_suffix(".json").read_text())


def legend_texts(fig) -> list[str]:
    return [t.get_text() for t in fig.legends[0].get_texts()]


def check_points(rows: list[dict[str, str]], result) -> None:
    """The CSV's points are the start and the recorded points, cut before divergence, exactly."""
    assert len({r["line"] for r in rows}) == len(result)
    for c in range(len(result)):
        mine = [r for r in rows if int(r["line"]) == c]
        steps = [int(r["step"]) for r in mine]
        bad = int(result.first_bad_step[c])
        expected = [0] + [int(s) for s in result.steps if bad < 0 or s < bad]
        assert steps == expected
        assert [float(r["w1"]) for r in mine[1:]] == result.path[c, : len(expected) - 1, 0].tolist()
        assert [float(r["loss"]) for r in mine[1:]] == result.loss[c, : len(expected) - 1].tolist()
        assert [float(mine[0]["w1"]), float(mine[0]["w2"])] == result.start[c].tolist()
        assert {r["status"] for r in mine} == {result.status[c]}


def test_the_fixture_has_every_status_the_figures_mark(result):
    assert set(result.status) == {"moving", "diverged", "stuck"}


def test_trajectories_writes_png_csv_json_and_labels_every_differing_hyperparameter(result, tmp_path):
    fig = figures.trajectories(result, SURFACE, tmp_path / "traj.png", zoom=(1.0, 1.0))
    rows, config = outputs(tmp_path / "traj.png")
    check_points(rows, result)

    labels = legend_texts(fig)
    for c, cfg in enumerate(result.configs):
        label = labels[c]
        assert f"β1={cfg['beta1']:g}" in label and f"lr={figures._fmt(cfg['lr'])}" in label
        assert f"start ({cfg['start'][0]:g}, {cfg['start'][1]:g})" in label
        if result.status[c] == "diverged":
            assert f"✕ diverged at step {int(result.first_bad_step[c])}" in label
        else:
            assert "diverged" not in label
        assert ("stuck" in label) == (result.status[c] == "stuck")
    assert "start" in labels
    title = fig._suptitle.get_text()
    assert "Adam on saddle" in title and "β2=0.999" in title and "ε=1e-8" in title and "60 steps" in title
    assert "β1" not in title and "lr=" not in title and "amsgrad" not in title

    # Every diverged configuration ends in an ✕ marker, the others in a dot, in both panels.
    for ax in fig.axes[:2]:
        ends = [l for l in ax.get_lines() if l.get_marker() in ("X", "o") and len(l.get_xdata()) == 1]
        assert sum(l.get_marker() == "X" for l in ends) == result.status.count("diverged")
    # Stuck ones sit on their start: hollow rings of growing size keep them visible around it.
    rings = [l for l in fig.axes[0].get_lines() if l.get_markerfacecolor() == "none"]
    assert len(rings) == result.status.count("stuck")
    assert sorted(l.get_markersize() for l in rings) == [14, 14, 20, 20]
    assert len(fig.axes) == 4  # two panels (zoom) with their colour bars

    assert config["figure"] == "trajectories"
    (run,) = config["runs"]
    assert run["optimizer"] == "Adam" and run["options"] == {"lr": 0.005} and run["steps"] == 60
    assert run["grid"] == {"beta1": [0.9, 0.5], "lr": [1e-5, 0.005, 0.5]}
    assert run["defaults"]["beta2"] == 0.999 and run["defaults"]["eps"] == 1e-8
    assert run["starts"] == [START, OTHER_START] and run["divergence_radius"] == 6.0
    assert config["surface"]["name"] == "saddle" and config["surface"]["bounds"] == [[-4.0, 4.0], [-4.0, 4.0]]
    assert config["figure_options"]["zoom"] == [[0.6, 1.4], [0.6, 1.4]]


def test_a_diverged_end_beyond_the_view_is_marked_where_the_path_leaves_it():
    xy = np.array([[0.0, 0.0], [1.0, 0.5], [3.0, 1.5]])
    assert figures._end_point(xy, ((-2.0, 2.0), (-2.0, 2.0))) == (2.0, 1.0)
    assert figures._end_point(xy, None) == (3.0, 1.5)


def test_loss_curves_share_labels_and_colours_with_trajectories(result, tmp_path):
    traj = figures.trajectories(result, SURFACE)
    fig = figures.loss_curves(result, tmp_path / "loss.png")
    rows, config = outputs(tmp_path / "loss.png")
    check_points(rows, result)
    assert config["figure"] == "loss_curves" and config["runs"][0]["optimizer"] == "Adam"
    assert legend_texts(fig)[: len(result)] == legend_texts(traj)[: len(result)]
    assert legend_texts(fig)[-1] == "target f = -5"
    colours = lambda f: [tuple(h.get_color()) for h in f.legends[0].legend_handles[: len(result)]]  # noqa: E731
    assert colours(fig) == colours(traj) and len(set(colours(fig))) == len(result)
    assert any(l.get_marker() == "X" for l in fig.axes[0].get_lines())
    ax = fig.axes[0]
    assert ax.get_yscale() == "linear"  # the losses stay within 100x of the start's


def test_loss_curves_go_symlog_when_the_saddle_drops_by_orders_of_magnitude():
    r = sweep(SURFACE, Adam, {"lr": [0.005, 2.0]}, steps=60, record_every=10)
    assert r.loss[1, -1] < -100 * r.start_loss[1] < 0
    assert figures.loss_curves(r).axes[0].get_yscale() == "symlog"


def test_several_results_are_told_apart_by_what_differs(tmp_path):
    run = dict(steps=20, record_every=10, grad_clip=1.0)
    plain = sweep(SURFACE, Adam, {"beta1": [0.9]}, options=dict(lr=0.01), **run)
    ams = sweep(SURFACE, Adam, {"beta1": [0.9]}, options=dict(lr=0.01, amsgrad=True), **run)
    fig = figures.trajectories([plain, ams], SURFACE, tmp_path / "both.png")
    labels = legend_texts(fig)
    assert labels[:2] == ["no amsgrad", "amsgrad"]
    title = fig._suptitle.get_text()
    assert "grad clip ‖g‖≤1" in title and "β1=0.9" in title and "lr=0.01" in title
    _, config = outputs(tmp_path / "both.png")
    assert [run["options"] for run in config["runs"]] == [{"lr": 0.01}, {"lr": 0.01, "amsgrad": True}]
    assert [run["grad_clip"] for run in config["runs"]] == [1.0, 1.0]


def test_lookahead_settings_are_named_when_they_differ():
    runs = [sweep(SURFACE, Adam, steps=10, record_every=10, lookahead={"k": k, "alpha": 0.5}) for k in (5, 10)]
    fig = figures.loss_curves(runs)
    assert legend_texts(fig) == ["lookahead α=0.5, k=5", "lookahead α=0.5, k=10"]
    assert fig._suptitle.get_text().startswith("Lookahead(Adam) on saddle")


def test_heatmap_cells_are_the_results_values_with_diverged_and_stuck_marked(result, tmp_path):
    fig = figures.heatmap(result, "lr", "beta1", "final_loss", fixed={"start": START}, path=tmp_path / "heat.png")
    rows, config = outputs(tmp_path / "heat.png")
    summary = result.summary_rows()
    assert len(rows) == 6
    for row in rows:
        (c,) = [i for i, s in enumerate(summary)
                if s["start"] == START and s["lr"] == float(row["lr"]) and s["beta1"] == float(row["beta1"])]
        assert row["status"] == result.status[c]
        if result.status[c] == "diverged":
            assert row["final_loss"] == "" and row["shown"] == f"✕ {summary[c]['first_bad_step']}"
        elif result.status[c] == "stuck":
            assert row["final_loss"] == "" and row["shown"] == "stuck"
        else:
            assert float(row["final_loss"]) == summary[c]["final_loss"]
            assert math.isclose(float(row["shown"]), summary[c]["final_loss"], rel_tol=5e-3)
    ax = fig.axes[0]
    assert ax.get_xscale() == "log"
    assert [t.get_text() for t in ax.get_xticklabels()] == ["1e-5", "0.005", "0.5"]
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.5", "0.9"]
    texts = [t.get_text() for t in ax.texts]
    assert sorted(r["shown"] for r in rows) == sorted(texts)
    # The two moving cells differ in the 4th digit: the printed numbers must still differ.
    assert len({r["shown"] for r in rows if r["status"] == "moving"}) == 2
    assert sum(p.get_hatch() == "xx" for p in ax.patches) == 2 and sum(p.get_hatch() == "//" for p in ax.patches) == 2
    assert legend_texts(fig) == ["diverged (✕ step)", "stuck"]
    assert config["figure_options"] == {
        "x": "lr", "y": "beta1", "value": "final_loss", "fixed": {"start": START},
        "x_scale": "log", "y_scale": "linear",
    }


def test_heatmap_marks_unreached_targets(result, tmp_path):
    fixed = {"start": OTHER_START}
    fig = figures.heatmap(result, "beta1", "lr", "steps_to_target", fixed=fixed, path=tmp_path / "s.png")
    rows, _ = outputs(tmp_path / "s.png")
    expected = {"stuck": "stuck", "moving": "—", "diverged": "✕"}
    assert [r["shown"][:1] for r in rows] == [expected[r["status"]][:1] for r in rows]
    assert all(r["steps_to_target"] == "" for r in rows)
    assert legend_texts(fig) == ["diverged (✕ step)", "stuck", "target not reached"]
    assert fig.axes[0].get_yscale() == "log" and fig.axes[0].get_xscale() == "linear"
    assert "(f ≤ -5)" in fig._suptitle.get_text()


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(x="lr", y="beta1"), "'start' takes 2 values"),
        (dict(x="lr", y="lr", fixed={"start": START}), "invalid y='lr'"),
        (dict(x="beta2", y="lr", fixed={"start": START}), "invalid x='beta2'"),
        (dict(x="lr", y="beta1", fixed={"start": [0.0, 0.0]}), r"invalid fixed\['start'\]"),
        (dict(x="lr", y="beta1", fixed={"start": START, "eps": 1e-8}), "invalid fixed key 'eps'"),
        (dict(x="lr", y="beta1", value="accuracy", fixed={"start": START}), "invalid value='accuracy'"),
    ],
)
def test_heatmap_rejects_what_it_cannot_show(result, kwargs, match):
    with pytest.raises(ValueError, match=match):
        figures.heatmap(result, **kwargs)


@pytest.mark.parametrize(
    "name, values, scale",
    [
        ("lr", [1e-5, 0.005, 0.5], "log"),  # lr and eps: log whenever positive, even if uneven
        ("gamma", [1e-3, 1e-2, 1e-1], "log"),
        ("beta2", [0.9, 0.99, 0.999, 0.9999], "logit"),
        ("beta1", [0.1, 0.2, 0.3], "linear"),
        ("beta1", [0.0, 0.5, 0.9, 0.99], "categorical"),  # no scale spaces these evenly
        ("lr", [0.0, 0.1], "linear"),
    ],
)
def test_heatmap_axes_take_the_scale_that_spaces_the_grid_evenly(name, values, scale):
    assert figures._axis_scale(name, values) == scale


def test_animation_writes_a_small_gif_with_its_csv_and_json(result, tmp_path):
    figures.animation(result, SURFACE, tmp_path / "a.gif", fps=5, max_frames=6)
    gif = tmp_path / "a.gif"
    with Image.open(gif) as im:
        assert im.format == "GIF" and im.n_frames == 6 and im.info["duration"] == 200
    assert gif.stat().st_size < 2_000_000
    check_points(read_csv(gif.with_suffix(".csv")), result)
    config = json.loads(gif.with_suffix(".json").read_text())
    assert config["figure_options"]["frames"] == [0, 10, 25, 35, 50, 60]


def test_figures_reject_bad_paths_and_other_surfaces(result, tmp_path):
    with pytest.raises(ValueError, match="expected a path ending in .png"):
        figures.loss_curves(result, tmp_path / "loss.pdf")
    with pytest.raises(ValueError, match="expected a path ending in .gif"):
        figures.animation(result, SURFACE, tmp_path / "a.mp4")
    other = Saddle()
    other.name = "other"
    with pytest.raises(ValueError, match="swept on 'saddle'"):
        figures.trajectories(result, other)


def test_write_table_csv_keeps_every_float_exactly(tmp_path):
    rows = [{"a": 0.1 + 0.2, "b": None, "s": [1.0, 2.5]}, {"a": 1e-300, "c": "x"}]
    path = write_table(rows, tmp_path / "sub" / "t.csv")
    back = read_csv(path)
    assert list(back[0]) == ["a", "b", "s", "c"]
    assert float(back[0]["a"]) == 0.1 + 0.2 and float(back[1]["a"]) == 1e-300
    assert back[0]["b"] == "" and json.loads(back[0]["s"]) == [1.0, 2.5] and back[1]["c"] == "x"
    with pytest.raises(ValueError, match="invalid rows=\\[\\]"):
        write_table([], tmp_path / "e.csv")


def test_write_table_parquet_and_its_error_without_pyarrow(tmp_path, monkeypatch):
    pq = pytest.importorskip("pyarrow.parquet")
    path = write_table([{"a": 0.1 + 0.2, "b": 1}, {"a": 2.0, "b": None}], tmp_path / "t.parquet")
    assert pq.read_table(path).to_pylist() == [{"a": 0.1 + 0.2, "b": 1}, {"a": 2.0, "b": None}]
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with pytest.raises(ImportError, match="needs pyarrow"):
        write_table([{"a": 1}], tmp_path / "u.parquet")


def test_write_config_is_deterministic_json_with_exact_floats(tmp_path):
    config = {"z": (0.1 + 0.2, math.inf), "a": {"dtype": torch.float64, "t": torch.tensor([1.5])}, "n": np.float32(0.5)}
    path = write_config(config, tmp_path / "c.json")
    text = path.read_text()
    assert text.index('"a"') < text.index('"n"') < text.index('"z"')
    back = json.loads(text)
    assert back == {"z": [0.30000000000000004, "inf"], "a": {"dtype": "torch.float64", "t": [1.5]}, "n": 0.5}
    assert write_config(dict(reversed(config.items())), tmp_path / "d.json").read_text() == text
    with pytest.raises(ValueError, match=r"config\['bad'\]"):
        write_config({"bad": object()}, tmp_path / "e.json")


# --- figures for people (issue 10): readable heatmaps, small multiples, errors before the sweep -------


def _png_size(path: Path) -> tuple[int, int]:
    with Image.open(path) as im:
        return im.size


@pytest.fixture(scope="module")
def big():
    """A 50 x 50 grid on a log lr axis, the size that used to give a 6012 x 3588 px heatmap."""
    lrs = np.geomspace(1e-4, 1e-1, 50).tolist()
    return sweep(SURFACE, Adam, {"lr": lrs, "beta1": np.linspace(0, 0.99, 50).tolist()}, steps=20, record_every=20)


def test_a_large_heatmap_is_readable_colour_without_a_number_per_cell(big, tmp_path):
    fig = figures.heatmap(big, "lr", "beta1", path=tmp_path / "h.png")
    width, height = _png_size(tmp_path / "h.png")
    assert width <= 1000 and height <= 800
    ax = fig.axes[0]
    assert len(ax.texts) == 0  # 2,500 numbers would be unreadable
    assert ax.get_xscale() == "log"
    # round ticks of each axis's scale (powers of ten; tenths), not the 50 raw grid values
    (x0, x1), (y0, y1) = ax.get_xlim(), ax.get_ylim()
    xticks = [v for v in ax.get_xticks() if x0 <= v <= x1]
    yticks = [v for v in ax.get_yticks() if y0 <= v <= y1]
    assert 3 <= len(xticks) <= 10 and all(float(np.log10(v)).is_integer() for v in xticks), xticks
    assert 3 <= len(yticks) <= 10 and all(abs(v * 10 - round(v * 10)) < 1e-9 for v in yticks), yticks
    rows = read_csv(tmp_path / "h.csv")
    assert len(rows) == 2500 and {r["shown"] for r in rows} == {""}
    assert all(float(r["final_loss"]) == s["final_loss"] for r, s in zip(rows, _by_cell(big, rows)))


def _by_cell(result, rows):
    summary = {(s["lr"], s["beta1"]): s for s in result.summary_rows()}
    return [summary[(float(r["lr"]), float(r["beta1"]))] for r in rows]


def test_small_heatmaps_print_numbers_and_ticks_to_three_significant_digits(tmp_path):
    lrs = np.geomspace(1e-4, 1e-3, 4).tolist()  # 0.0001, 0.000215443..., 0.000464158..., 0.001
    r = sweep(SURFACE, Adam, {"lr": lrs, "beta2": [0.999, 0.9995, 0.9999]}, steps=10, record_every=10)
    fig = figures.heatmap(r, "lr", "beta2", path=tmp_path / "s.png")
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_xticklabels()] == ["0.0001", "0.000215", "0.000464", "0.001"]
    # 3 digits would print 0.9995 and 0.9999 both as "1": one more digit keeps them apart
    assert [t.get_text() for t in ax.get_yticklabels()] == ["0.999", "0.9995", "0.9999"]
    assert len(ax.texts) == 12
    assert _png_size(tmp_path / "s.png")[0] < 1000


@pytest.mark.parametrize(
    ("name", "values"),
    [("gamma", np.geomspace(0.01, 0.1, 50).tolist()), ("beta1", np.geomspace(0.01, 0.1, 6).tolist())],
)
def test_a_log_grid_gets_a_log_axis_even_over_less_than_a_decade_and_a_half(name, values):
    assert figures._axis_scale(name, values) == "log"


def test_diverged_cells_sit_off_the_colour_scale_in_a_labelled_style(result, tmp_path):
    fig = figures.heatmap(result, "lr", "beta1", fixed={"start": START}, path=tmp_path / "d.png")
    rows = read_csv(tmp_path / "d.csv")
    diverged = [r for r in rows if r["status"] == "diverged"]
    assert diverged and all(r["cell"] == "diverged" and r["final_loss"] == "" for r in diverged)
    mesh = fig.axes[0].collections[0]
    colour_bar = fig.axes[1]
    finite = [float(r["final_loss"]) for r in rows if r["cell"] == "value"]
    low, high = sorted(colour_bar.get_ylim())
    assert low <= min(finite) and max(finite) <= high  # the scale spans the finite values only
    assert mesh.get_array().mask.sum() == len(rows) - len(finite)
    assert "diverged (✕ step)" in legend_texts(fig)


def test_steps_to_target_without_a_target_is_an_error_before_anything_runs(result):
    with pytest.raises(ValueError, match="steps_to_target' without a target"):
        figures.check_heatmap(["lr", "beta1"], "lr", "beta1", "steps_to_target", target=None)
    figures.check_heatmap(["lr", "beta1"], "lr", "beta1", "steps_to_target", target=-5.0)
    with pytest.raises(ValueError, match="invalid x='eps'"):
        figures.check_heatmap(["lr", "beta1"], "eps", "beta1")
    untargeted = sweep(SURFACE, Adam, {"lr": [0.01, 0.1], "beta1": [0.5, 0.9]}, steps=5, record_every=5)
    with pytest.raises(ValueError, match="without a target"):
        figures.heatmap(untargeted, "lr", "beta1", "steps_to_target")


def test_heatmap_file_names_keep_the_order_asked():
    assert figures.heatmap_filename("beta1", "eps") == "heatmap-beta1-eps.png"
    assert figures.heatmap_filename("eps", "beta1", "steps_to_target") == "heatmap-eps-beta1-steps-to-target.png"


def test_small_multiples_give_each_optimizer_its_own_panel_on_shared_axes(tmp_path):
    from optimlab.optim import SGD, Adagrad, RMSprop

    runs = []
    for cls, lr in ((Adam, 0.05), (SGD, 0.01), (RMSprop, 0.01), (Adagrad, 0.1), (SGD, 3.0)):
        r = sweep(SURFACE, cls, {"lr": [lr]}, steps=30, record_every=5, divergence_radius=6.0)
        runs.append(r)
    fig = figures.small_multiples(runs, SURFACE, tmp_path / "m.png")
    panels = [ax for ax in fig.axes if ax.get_visible() and ax.get_label() != "<colorbar>" and ax.get_title()]
    assert len(panels) == len(runs)
    assert {ax.get_xlim() for ax in panels} == {(-4.0, 4.0)} and {ax.get_ylim() for ax in panels} == {(-4.0, 4.0)}
    titles = [ax.get_title() for ax in panels]
    assert titles[0].startswith("Adam, lr=0.05") and titles[1].startswith("SGD, lr=0.01")
    assert runs[-1].status == ["diverged"] and "✕ diverged at step" in titles[-1]
    assert all("diverged" not in t for t in titles[:-1])
    rows, config = outputs(tmp_path / "m.png")
    assert {r["optimizer"] for r in rows} == {"Adam", "SGD", "RMSprop", "Adagrad"}
    assert config["figure"] == "small_multiples" and len(config["runs"]) == len(runs)


def test_a_saddle_heatmap_can_show_when_each_configuration_escaped(tmp_path):
    from optimlab import surfaces

    saddle = surfaces.get("saddle")
    r = sweep(saddle, Adam, {"lr": [0.005, 0.05, 0.5], "beta1": [0.5, 0.9]}, steps=300, record_every=10)
    assert {"escaped", "moving"} <= set(r.status)
    fig = figures.heatmap(r, "lr", "beta1", "steps_to_escape", path=tmp_path / "e.png")
    rows = read_csv(tmp_path / "e.csv")
    for row, s in zip(rows, _by_cell(r, rows)):
        if s["status"] == "escaped":
            assert int(float(row["steps_to_escape"])) == s["steps_to_escape"] > 0 and row["cell"] == "value"
        else:
            assert row["steps_to_escape"] == "" and row["cell"] == "missing"
    assert "did not escape" in legend_texts(fig)
