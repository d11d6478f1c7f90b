"""Checkpoints (Budget.checkpoint_every) and optimlab.landscape: PCA of trajectories, the loss over a plane,
the command."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torch import nn

from optimlab import cli
from optimlab.landscape import Plane, _Loss, grid_loss, landscape, pca_plane
from optimlab.runner import CHECKPOINT_MEDIA_TYPE, prepare, run
from optimlab.store import Store
from optimlab.tasks import Budget, SupervisedTask
from optimlab.tasks.supervised import mse

_g = torch.Generator().manual_seed(0)
_X = torch.randn(64, 3, generator=_g)
_Y = _X @ torch.tensor([[1.0], [-2.0], [0.5]]) + 0.3 + 0.1 * torch.randn(64, 1, generator=_g)


def _linear() -> nn.Module:
    return nn.Linear(3, 1)


def _wide() -> nn.Module:
    return nn.Sequential(nn.Linear(3, 20000), nn.Linear(20000, 1))


#: a linear model with squared loss: its loss at any parameters is known in closed form; 4 steps an epoch
TINY = SupervisedTask(
    name="tiny-linreg", model=_linear, loss=mse, train=(_X, _Y), budget=Budget(epochs=2, batch_size=16)
)
#: 100,001 parameters: 391 KiB a checkpoint
WIDE = SupervisedTask(name="wide-linreg", model=_wide, loss=mse, train=(_X, _Y), budget=Budget(epochs=2, batch_size=16))


def _closed_form(theta: np.ndarray, n: int) -> float:
    """Mean squared error of ``x w + b`` on the first ``n`` examples, in float64."""
    x, y = _X[:n].double().numpy(), _Y[:n].double().numpy()[:, 0]
    return float(np.mean((x @ theta[:3] + theta[3] - y) ** 2))


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------


def test_checkpoints_are_taken_at_step_0_every_n_steps_and_at_the_end_and_hold_the_model() -> None:
    result = run(TINY.with_budget(checkpoint_every=3), "Adam", {"lr": 0.05}, seed=0, budget="smoke", progress=False)
    points = result["artifacts"]
    assert [a["step"] for a in points] == [0, 3, 6, 8]
    assert {a["name"] for a in points} == {"params/model"}
    assert {a["media_type"] for a in points} == {CHECKPOINT_MEDIA_TYPE}
    thetas = [np.frombuffer(a["data"], dtype="<f4") for a in points]
    assert all(t.shape == (4,) for t in thetas) and not np.array_equal(thetas[0], thetas[-1])
    torch.manual_seed(int(np.random.SeedSequence(0).generate_state(2, dtype=np.uint64)[0]))
    assert np.array_equal(thetas[0], torch.cat([p.detach().flatten() for p in _linear().parameters()]).numpy())
    # the last checkpoint is the trained model: its loss on the training data is the run's final loss
    final = result["final"]["full_loss"]
    assert abs(_closed_form(thetas[-1].astype(np.float64), 64) - final) <= 1e-6 * final


def test_checkpoint_settings_leave_existing_run_keys_alone() -> None:
    plain = prepare(TINY, "Adam", budget="smoke")
    settings = {"epochs", "batch_size", "train_size", "val_size", "test_size", "eval_every"}  # as before checkpoints
    assert set(plain.config["settings"]) == settings
    assert prepare(TINY.with_budget(checkpoint_cap_mb=5), "Adam", budget="smoke").key == plain.key  # changes no number
    checkpointed = prepare(TINY.with_budget(checkpoint_every=3), "Adam", budget="smoke")
    assert checkpointed.config["settings"]["checkpoint_every"] == 3 and checkpointed.key != plain.key
    with pytest.raises(ValueError, match="checkpoint_every=0"):
        TINY.with_budget(checkpoint_every=0)


def test_checkpoints_over_the_cap_are_refused_in_one_line_naming_the_option(tmp_path: Path, capsys) -> None:
    with pytest.raises(ValueError, match=r"invalid checkpoint_every=1: 9 checkpoints .* 100001 parameters .* 3\.4 MiB, "
                                         r"over checkpoint_cap_mb=1 \(room for 2\)"):  # fmt: skip
        run(WIDE.with_budget(checkpoint_every=1, checkpoint_cap_mb=1), "Adam", budget="smoke", progress=False)
    argv = ["run", "--task", "tests.test_landscape:WIDE", "--opt", "Adam", "--seeds", "1", "--budget", "smoke",
            "--store", str(tmp_path / "s.sqlite"), "--workers", "0", "--checkpoint-cap-mb", "1"]  # fmt: skip
    assert cli.main([*argv, "--checkpoint-every", "1"]) == 1
    (error,) = [line for line in capsys.readouterr().err.splitlines() if "error" in line]  # besides the progress bar
    assert error.startswith("optimlab run: error: ")
    assert "checkpoint_every=1" in error and "checkpoint_cap_mb=1" in error
    assert cli.main([*argv, "--checkpoint-every", "8"]) == 0  # steps 0 and 8: 782 KiB


# ---------------------------------------------------------------------------------------------
# Projections and the loss over a plane
# ---------------------------------------------------------------------------------------------


def test_pca_gives_back_the_coordinates_of_points_on_a_known_plane_up_to_sign() -> None:
    rng = np.random.default_rng(0)
    basis, _ = np.linalg.qr(rng.standard_normal((50, 2)))
    origin = rng.standard_normal(50)
    # orthogonal coordinate columns with different norms (18 and 2): the principal axes are u and v
    a = np.array([0.0, 3.0, -3.0, 0.0, 0.0, 0.0])
    b = np.array([0.0, 0.0, 0.0, 1.0, -1.0, 0.0])
    rows = origin + a[:, None] * basis[:, 0] + b[:, None] * basis[:, 1]
    plane = pca_plane(rows, origin)
    for k, truth in enumerate((a, b)):
        sign = np.sign(plane.coords[np.abs(truth).argmax(), k] * truth[np.abs(truth).argmax()])
        assert np.allclose(plane.coords[:, k], sign * truth, atol=1e-9)
        assert np.allclose(plane.directions[k], sign * basis[:, k], atol=1e-9)
    assert np.allclose(plane.explained, (0.9, 0.1), atol=1e-12)
    with pytest.raises(ValueError, match="fewer than 2 directions"):
        pca_plane(origin + a[:, None] * basis[:, 0], origin)


def test_the_grid_loss_of_a_linear_model_is_its_closed_form_squared_error() -> None:
    loss = _Loss(TINY, TINY.budgets["smoke"], "train", 40, None)
    origin = np.array([0.5, -1.0, 0.0, 0.2])
    directions = np.array([[1.0, 0.0, 0.0, 0.0], [0.0, 0.6, 0.0, 0.8]])
    plane = Plane(origin, directions, np.zeros((1, 2)), (1.0, 0.0))
    xs, ys = np.linspace(-2, 2, 5), np.linspace(-1, 3, 4)
    z = grid_loss(loss, plane, xs, ys)
    truth = np.array([[_closed_form(origin + x * directions[0] + y * directions[1], 40) for x in xs] for y in ys])
    assert z.shape == (4, 5) and np.allclose(z, truth, rtol=1e-5, atol=0)
    assert len(set(z.ravel().round(6))) == 20  # not one value repeated: every point evaluated where it lies


# ---------------------------------------------------------------------------------------------
# The command
# ---------------------------------------------------------------------------------------------


def _figures(page: str) -> list[dict]:
    return json.loads(page.split("id='optimlab-figures'>")[1].split("</script>")[0])


def _train(tmp_path: Path) -> Path:
    path = tmp_path / "s.sqlite"
    argv = ["run", "--task", "tests.test_landscape:TINY", "--opt", "Adam(lr=0.05)", "--opt", "Momentum(lr=0.05)",
            "--opt", "Lion(lr=0.01)", "--seeds", "1", "--budget", "smoke", "--store", str(path), "--workers", "0",
            "--checkpoint-every", "2"]  # fmt: skip
    assert cli.main(argv) == 0
    return path


def test_the_command_draws_the_pca_landscape_of_the_stored_runs(tmp_path: Path, capsys) -> None:
    store_path = _train(tmp_path)
    out = tmp_path / "out"
    argv = ["landscape", "--store", str(store_path), "--out", str(out), "--task", "tests.test_landscape:TINY",
            "--grid", "6"]  # fmt: skip
    assert cli.main(argv) == 0
    err = capsys.readouterr().err
    assert "3 runs, 15 checkpoints of 4 parameters; 6x6 grid + 13 distinct checkpoints " in err
    assert "= 49 points x 64 train examples = 3,136 example evaluations" in err
    result = json.loads((out / "landscape.json").read_text())
    assert [r["label"] for r in result["runs"]] == ["Adam", "Momentum", "Lion"]
    with Store(store_path, readonly=True) as store:
        keys = {r["config"]["optimizer"]: r["key"] for r in store.runs()}
        final = {r["key"]: r["final"]["full_loss"] for r in store.runs()}
        for r in result["runs"]:
            assert r["steps"] == [0, 2, 4, 6, 8]
            # the plane passes through the start, and each checkpoint's loss is the model's there
            assert r["x"][0] == r["y"][0] == 0.0
            theta = np.frombuffer(store.artifacts(r["key"], name="params/model")[-1]["data"], dtype="<f4")
            assert abs(r["loss"][-1] - _closed_form(theta.astype(np.float64), 64)) <= 1e-5 * r["loss"][-1]
            assert abs(r["loss"][-1] - final[r["key"]]) <= 1e-5 * final[r["key"]]
    assert set(keys.values()) == {r["key"] for r in result["runs"]}
    grid = np.array(result["grid"]["loss"])
    assert grid.shape == (6, 6) and np.isfinite(grid).all()
    assert 0.5 < sum(result["explained"]) <= 1.0 + 1e-12 and result["explained"][0] >= result["explained"][1]
    xs, ys = result["grid"]["x"], result["grid"]["y"]
    every_x = [x for r in result["runs"] for x in r["x"]]
    assert xs[0] < min(every_x) and xs[-1] > max(every_x) and ys[0] < 0 < ys[-1]  # the grid covers every path
    page = (out / "landscape.html").read_text()
    assert page.count("class='chart'") == 1 and "data-view='landscape'" in page
    assert [t["type"] for t in _figures(page)[0]["data"]] == ["contour", "scatter", "scatter", "scatter"]
    assert "<script src=" not in page and "https://" not in page.split("<script>")[0]  # self-contained
    import matplotlib.image

    image = matplotlib.image.imread(out / "landscape.png")
    assert image.shape[0] > 300 and image[..., :3].std() > 0.05  # drawn, not blank


def test_tsne_draws_paths_only_with_its_caution(tmp_path: Path) -> None:
    pytest.importorskip("sklearn")
    with Store(_train(tmp_path), readonly=True) as store:
        landscape(store, tmp_path / "out", task=TINY, method="tsne", progress=False)
    result = json.loads((tmp_path / "out" / "landscape.json").read_text())
    assert result["grid"] is None and result["explained"] is None
    assert [len(r["x"]) for r in result["runs"]] == [5, 5, 5]
    assert len({(r["x"][0], r["y"][0]) for r in result["runs"]}) == 1  # the shared start is one point
    page = (tmp_path / "out" / "landscape.html").read_text()
    assert "no distance meaning" in page and [t["type"] for t in _figures(page)[0]["data"]] == ["scatter"] * 3


def test_a_store_without_checkpoints_or_of_several_tasks_says_what_to_do(tmp_path: Path) -> None:
    with Store(tmp_path / "empty.sqlite") as store:
        run(TINY, "Adam", budget="smoke", store=store, progress=False)
        with pytest.raises(ValueError, match="no finished runs with checkpoints; train some with --checkpoint-every"):
            landscape(store, tmp_path / "out")
        run(TINY.with_budget(checkpoint_every=4), "Adam", budget="smoke", store=store, progress=False)
        run(WIDE.with_budget(checkpoint_every=8), "Adam", budget="smoke", store=store, progress=False)
        with pytest.raises(ValueError, match="several tasks; give --task, one of tiny-linreg, wide-linreg"):
            landscape(store, tmp_path / "out")
        with pytest.raises(ValueError, match="invalid seed=3"):
            landscape(store, tmp_path / "out", task=TINY, seed=3)
        with pytest.raises(ValueError, match="invalid method='umap'"):
            landscape(store, tmp_path / "out", task=TINY, method="umap")


def test_the_landscape_page_draws_in_headless_chromium_with_nothing_fetched(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium: .ci/run)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    with Store(_train(tmp_path), readonly=True) as store:
        written = landscape(store, tmp_path / "out", task=TINY, grid=4, progress=False)
    (page,) = [p for p in written if p.suffix == ".html"]
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # root in CI: no sandbox
        try:
            tab = browser.new_page()
            errors: list[str] = []
            requests: list[str] = []
            tab.on("console", lambda m: errors.append(m.text) if m.type in ("error", "warning") else None)
            tab.on("pageerror", lambda e: errors.append(str(e)))
            tab.on("request", lambda r: requests.append(r.url))
            tab.goto(page.as_uri())
            tab.wait_for_selector("body[data-ready=true]", timeout=30_000)
            drawn = tab.evaluate(
                "() => Array.from(document.querySelectorAll('section[data-view=landscape] .js-plotly-plot'))"
                ".map(d => d.data.map(t => [t.type, t.type === 'contour' ? t.z.length : t.customdata.length]))"
            )
        finally:
            browser.close()
    assert errors == [] and requests == [page.as_uri()]
    assert drawn == [[["contour", 4], ["scatter", 5], ["scatter", 5], ["scatter", 5]]]  # 4x4 grid; steps 0, 2, 4, 6, 8


def test_the_report_shows_the_landscape_drawn_in_its_folder_for_its_own_runs(tmp_path: Path) -> None:
    from optimlab.html import html_report

    with Store(_train(tmp_path), readonly=True) as store:
        landscape(store, tmp_path / "out", task=TINY, grid=3, progress=False)
        page = html_report(store, tmp_path / "out").read_text()
        assert page.count("data-view='landscape'") == 1
        drawn = [f for f in _figures(page) if f["data"][0]["type"] == "contour"]
        assert len(drawn) == 1 and [t["name"] for t in drawn[0]["data"][1:]] == ["Adam", "Momentum", "Lion"]
    with Store(tmp_path / "other.sqlite") as other:  # another store's report in that folder: not its runs
        run(TINY, "Adam", budget="smoke", store=other, progress=False)
        assert "data-view='landscape'" not in html_report(other, tmp_path / "out").read_text()
