"""index.html, the interactive report: what it shows from a store, and the page in a real headless chromium
(no console errors, no network, the charts drawn per section, interactive, not blank, opened at all)."""

from __future__ import annotations

import math
import re
import shutil
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch

from optimlab import cli
from optimlab.html import html_report
from optimlab.store import Store

# Two tasks of opposite directions; every trial and run is made here, through the Store API, with known numbers.
TASKS = {
    "airfoil-linreg": {"metric": "full_loss", "final": "full_loss", "higher": False},
    "mnist-cnn": {"metric": "val_accuracy", "final": "test_accuracy", "higher": True},
}
# A GAN task evaluated without tuning trials: its runs store a samples image (the run artifact "samples")
GAN_TASKS = {"mnist-dcgan": {"metric": "val_gen_accuracy", "final": "test_gen_accuracy", "higher": True}}
ARMS = {"Adam": ("optimlab.Adam", {}), "Momentum": ("optimlab.SGD", {"momentum": 0.9})}
TRIAL_LRS = (1e-3, 1e-2, 1e-1, 1.0)
CHOSEN = {"Adam": 1e-2, "Momentum": 1e-1}  # Momentum's is not the largest lr tried: lr=1 diverged
STEPS = 20


def _quality(arm: str, lr: float, seed: int) -> float:
    """A run's final quality in (0, 1), best at its chosen lr."""
    return 0.9 - 0.1 * abs(math.log10(lr / CHOSEN[arm])) - (0.05 if arm == "Momentum" else 0.0) + 0.002 * seed


def _samples_png(arm: str, seed: int) -> bytes:
    """The samples image of a run: a grid of one grey, its own for each arm and seed."""
    from optimlab.tasks.mnist_gan import image_grid

    return image_grid(torch.full((80, 1, 28, 28), 0.1 * seed + 0.4 * list(ARMS).index(arm)), 8)


def _add_run(
    store: Store, task: str, arm: str, lr: float, seed: int, stored_as: str | None = None, samples: bytes | None = None
) -> None:
    """A run of ``task``; ``stored_as``: under that name, with the task's metadata (a task of the user's own);
    ``samples``: a GAN run's samples image (default :func:`_samples_png`)."""
    name, fixed = ARMS[arm]
    spec = {**TASKS, **GAN_TASKS}[task]
    meta = None
    if stored_as is not None:
        from optimlab import tasks

        meta, task = {"task": {**tasks.get(task).metadata(), "name": stored_as}}, stored_as
    config = {"task": task, "budget": "smoke", "seed": seed, "optimizer": name, "hyperparameters": {**fixed, "lr": lr},
              "device": "cpu", "dtype": "float32"}  # fmt: skip
    # Momentum diverges at lr=1 (a tuning trial) and at its third evaluation seed on mnist
    diverged = arm == "Momentum" and (lr >= 1.0 or (task == "mnist-cnn" and seed == 3))
    q = _quality(arm, lr, seed)
    run = store.claim(config, meta=meta)
    assert run is not None
    with run:
        run.log_epoch(
            1, epochs=0.0, step=0, train_time=0.0, wall_time=0.0, **{spec["metric"]: 0.1 if spec["higher"] else 2.0}
        )
        for i in range(1, STEPS + 1):
            progress = q * i / STEPS
            point = {"epochs": i / STEPS, "step": i, "train_time": 0.01 * i, "wall_time": 0.012 * i + 0.001 * seed,
                     "train_loss": math.nan if diverged and i == 3 else 2.0 - progress}  # fmt: skip
            if not (diverged and i == 3):
                point[spec["metric"]] = 0.05 + progress if spec["higher"] else 2.0 - progress
                if spec["higher"]:
                    point["val_loss"] = 2.0 - progress
            run.log_epoch(i + 1, **point)
            if diverged and i == 3:
                break
        value = math.nan if diverged else (0.05 + q if spec["higher"] else 2.0 - q)
        run.finish({spec["final"]: value, "diverged": int(diverged), "steps": 3 if diverged else STEPS,
                    "train_time": 0.2, "wall_time": 0.25, "state_bytes": 64 if arm == "Adam" else 32},
                   state_bytes=64 if arm == "Adam" else 32,
                   artifacts=[{"name": "samples", "step": STEPS, "media_type": "image/png", "data": samples or _samples_png(arm, seed)}]
                   if task in GAN_TASKS else ())  # fmt: skip


def _make_store(path: Path, trial_lrs: dict[tuple[str, str], tuple[float, ...]] | None = None) -> Path:
    """The store of the tests; ``trial_lrs[(task, arm)]``: other tuning trials than ``TRIAL_LRS``."""
    with Store(path) as store:
        for task in TASKS:
            for arm in ARMS:
                for lr in (trial_lrs or {}).get((task, arm), TRIAL_LRS):
                    _add_run(store, task, arm, lr, seed=0)
                for seed in (1, 2, 3):
                    _add_run(store, task, arm, CHOSEN[arm], seed)
        for arm in ARMS:
            for seed in (1, 2, 3):
                _add_run(store, "mnist-dcgan", arm, CHOSEN[arm], seed)
        for lr in (3e-3, 3e-2):  # Adam evaluated at 3 lrs on airfoil: the lr-sensitivity view
            for seed in (1, 2):
                _add_run(store, "airfoil-linreg", "Adam", lr, seed)
    return path


@pytest.fixture(scope="module")
def store_path(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return _make_store(tmp_path_factory.mktemp("html") / "lab.sqlite")


@pytest.fixture(scope="module")
def page(store_path: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    out = tmp_path_factory.mktemp("report")
    assert (
        cli.main(
            [
                "report",
                "--store",
                str(store_path),
                "--out",
                str(out),
                "--target",
                "mnist-cnn=0.85",
                "--target",
                "airfoil-linreg=1.2",
            ]
        )
        == 0
    )
    return out / "index.html"


# What each section of the page must hold: (task heading, view) -> charts.
EXPECTED_CHARTS = {
    ("airfoil-linreg, smoke budget", "curves"): 1,  # loss: train and full split in one chart
    ("airfoil-linreg, smoke budget", "tuning"): 1,  # lr
    ("airfoil-linreg, smoke budget", "lr"): 1,
    ("airfoil-linreg, smoke budget", "resources"): 2,
    ("airfoil-linreg, smoke budget", "targets"): 1,
    ("mnist-cnn, smoke budget", "curves"): 2,  # loss and accuracy
    ("mnist-cnn, smoke budget", "tuning"): 1,
    ("mnist-cnn, smoke budget", "resources"): 2,
    ("mnist-cnn, smoke budget", "targets"): 1,
    ("mnist-dcgan, smoke budget", "curves"): 2,  # loss and gen_accuracy
    ("mnist-dcgan, smoke budget", "samples"): 2,  # one image per arm
    ("mnist-dcgan, smoke budget", "resources"): 2,
    ("Across tasks", "profiles"): 3,  # final metric, time to target, steps to target
}


def _text(html: str) -> str:
    return re.sub(r"\s+", " ", re.sub(r"<[^>]+>", " ", html))


def test_page_is_one_self_contained_file(page: Path) -> None:
    html = page.read_text(encoding="utf-8")
    assert page.stat().st_size < 10 * 2**20
    assert not re.search(r"<(script|link|img)[^>]+(src|href)=(?!'data:image/png;base64,)", html)  # all inline
    assert (page.parent / "curves-mnist-cnn-smoke.png").exists()  # the rest stays, and summary.md shows its figures
    summary = (page.parent / "summary.md").read_text(encoding="utf-8")
    assert "![curves-mnist-cnn-smoke](curves-mnist-cnn-smoke.png)" in summary
    assert "![lr-airfoil-linreg-smoke](lr-airfoil-linreg-smoke.png)" in summary


def test_page_shows_the_store(page: Path) -> None:
    text = _text(page.read_text(encoding="utf-8"))
    # Momentum diverged at lr=1 in tuning, on both tasks; its evaluated lr=0.1 is then not at the edge, Adam's 0.01 neither
    assert "the evaluated lr" not in text
    assert "16 tuning trials" not in text and text.count("8 tuning trials") == 2
    # mnist: Adam's final accuracies 0.952, 0.954, 0.956; Momentum's 0.902, 0.904 and a diverged seed; the trials
    # were stored without their search space (as before tune recorded it): no range is shown
    assert "Adam(lr=0.01*) lr=0.01 4 — 0.954 [" in text and "Momentum(lr=0.1*) lr=0.1 4 — 0.903 [" in text
    assert re.search(r"Momentum\(lr=0\.1\*\) lr=0\.1 4 — 0\.903 \[[\d.]+, [\d.]+\] 1 of 3 diverged", text)
    # val_accuracy 0.05 + q * step / 20 first reaches 0.85 at step 18 (q >= 0.9, Adam) or 19 (Momentum), at wall time
    # 0.012 step + 0.001 seed: medians 0.218 s and 0.23 s (its diverged seed never reaches it)
    assert "Adam(lr=0.01*) 3 of 3 0.218 s 18 Momentum(lr=0.1*) 2 of 3 0.23 s 19" in text
    # lr sensitivity only where 3 lrs were evaluated: airfoil
    assert text.count("Learning-rate sensitivity") == 1


def test_page_shows_each_arms_samples(page: Path) -> None:
    """mnist-dcgan's samples section: each arm's image of its first evaluation seed, the bytes its run stored."""
    import base64

    html = page.read_text(encoding="utf-8")
    section = html[html.index("data-view='samples'") :]
    section = section[: section.index("</section>")]
    shown = re.findall(r"<img class='samples' src='data:image/png;base64,([^']+)' alt='([^']+)'", section)
    assert [(alt, base64.b64decode(data)) for data, alt in shown] == [
        (f"{arm}(lr={CHOSEN[arm]:g}), seed 1, step {STEPS}", _samples_png(arm, 1)) for arm in ARMS
    ]
    assert html.count("data-view='samples'") == 1  # the GAN task's alone


def test_an_oversized_samples_image_is_named_not_embedded(tmp_path: Path) -> None:
    from optimlab.html import MAX_SAMPLES_BYTES

    big = np.random.default_rng(0).bytes(MAX_SAMPLES_BYTES + 1)  # the page does not decode it, only weighs it
    with Store(tmp_path / "big.sqlite") as store:
        for seed in (1, 2):
            _add_run(store, "mnist-dcgan", "Adam", CHOSEN["Adam"], seed, samples=big)
            _add_run(store, "mnist-dcgan", "Momentum", CHOSEN["Momentum"], seed)
        html = html_report(store, tmp_path / "out").read_text(encoding="utf-8")
    assert "Left out, larger than 512 KiB: Adam(lr=0.01), seed 1, step 20 (512.0 KiB)" in _text(html)
    assert re.findall(r"<img class='samples' src='data:image/png;base64,[^']+' alt='([^']+)'", html) == [
        "Momentum(lr=0.1), seed 1, step 20"
    ]
    assert len(html) < 6 * 2**20  # plotly.js (about 4.6 MiB) and the small image, not the big one


def test_edge_warning(tmp_path: Path) -> None:
    """Adam tuned on mnist without the lrs above its chosen one: the evaluated lr is the highest tried, and the page says so."""
    with Store(_make_store(tmp_path / "edge.sqlite", {("mnist-cnn", "Adam"): (1e-3, 1e-2)}), readonly=True) as store:
        path = html_report(store, tmp_path / "out")
    text = _text(path.read_text(encoding="utf-8"))
    assert "Adam: the evaluated lr=0.01 is the highest value tried (0.001 to 0.01)" in text
    assert text.count("the evaluated lr") == 1


def test_a_task_known_only_from_its_stored_metadata(tmp_path: Path) -> None:
    with Store(tmp_path / "own.sqlite") as store:
        for seed in (0, 1, 2):
            _add_run(store, "mnist-cnn", "Adam", CHOSEN["Adam"], seed, stored_as="my-cnn")
        path = html_report(store, tmp_path / "out", targets={"my-cnn": 0.9})
    text = _text(path.read_text(encoding="utf-8"))
    assert "my-cnn, smoke budget" in text and "Final test_accuracy (higher is better)" in text
    assert "Target: val_accuracy >= 0.9" in text


def test_bad_target_is_one_error(store_path: Path, tmp_path: Path) -> None:
    with (
        Store(store_path, readonly=True) as store,
        pytest.raises(ValueError, match=r"report: invalid targets for \['cifar'\]"),
    ):
        html_report(store, tmp_path, targets={"cifar": 0.5})
    assert not (tmp_path / "index.html").exists()


# ---------------------------------------------------------------------------------------------
# In a real browser
# ---------------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.skip("chromium is not installed (CI installs Debian's chromium: .ci/run)")
    sync_api = pytest.importorskip("playwright.sync_api", reason="playwright is in the test extras")
    with sync_api.sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=["--no-sandbox"])  # root in CI: no sandbox
        yield browser
        browser.close()


def _open(browser: Any, page: Path) -> tuple[Any, list[str], list[str], float]:
    """``(tab, console errors and warnings, requests, seconds until the page's scripts had run)``."""
    tab = browser.new_page(viewport={"width": 1400, "height": 1000})
    errors: list[str] = []
    requests: list[str] = []
    tab.on(
        "console", lambda m: errors.append(f"console {m.type}: {m.text}") if m.type in ("error", "warning") else None
    )
    tab.on("pageerror", lambda e: errors.append(f"page error: {e}"))
    tab.on("request", lambda r: requests.append(r.url))
    began = time.perf_counter()
    tab.goto(page.as_uri())
    tab.wait_for_selector("body[data-ready=true]", timeout=30_000)
    return tab, errors, requests, time.perf_counter() - began


def test_page_in_headless_chromium(browser: Any, page: Path, tmp_path: Path) -> None:
    tab, errors, requests, opened = _open(browser, page)
    print(f"index.html ({page.stat().st_size / 2**20:.1f} MiB) opened in {opened:.2f} s")
    assert requests == [page.as_uri()]  # nothing fetched but the page itself
    tab.wait_for_function("() => Array.from(document.images).every(i => i.complete)", timeout=10_000)
    counts = tab.evaluate(  # the plotly charts drawn, and the images decoded
        """() => Array.from(document.querySelectorAll('section.view')).map(s =>
             [s.closest('.task').dataset.task, s.dataset.view, (s.querySelectorAll('.js-plotly-plot .main-svg').length > 0
              ? s.querySelectorAll('.js-plotly-plot').length : 0)
              + Array.from(s.querySelectorAll('img')).filter(i => i.naturalWidth > 0).length])"""
    )
    assert {(t, v): n for t, v, n in counts if v != "summary"} == EXPECTED_CHARTS
    assert [v for _, v, _ in counts].count("summary") == 3
    assert tab.locator("section[data-view=summary] tbody tr").count() == 4 + 2 + 2  # airfoil: Adam at 3 lrs + Momentum
    sizes = tab.evaluate(
        "() => Array.from(document.querySelectorAll('section[data-view=samples] img'))"
        ".map(i => [i.alt, i.naturalWidth, i.naturalHeight])"
    )
    assert sizes == [["Adam(lr=0.01), seed 1, step 20", 242, 302], ["Momentum(lr=0.1), seed 1, step 20", 242, 302]]

    curves = "section[data-view=curves] .js-plotly-plot"
    seed_traces = "([sel, seed]) => document.querySelector(sel).data.filter(t => t.meta && t.meta.seed === seed && t.visible === true).length"
    assert tab.evaluate(seed_traces, [curves, 2]) == 0  # seeds hidden until asked for
    tab.locator("section[data-view=curves] input.seedtoggle[value='2']").first.check()
    assert tab.evaluate(seed_traces, [curves, 2]) == 4 * 2  # airfoil: 3 Adam lrs + Momentum, train and full split
    tab.locator("section[data-view=curves] input.xswitch[value='wall_time']").first.check()
    axis = tab.evaluate(
        "sel => { const d = document.querySelector(sel); return [d.layout.xaxis.title.text, d.data[1].x, d.data[1].meta.xs.wall_time]; }",
        curves,
    )
    assert axis[0] == "wall time (s)" and axis[1] == axis[2] and max(axis[1]) < 1  # the runs' wall times, not steps
    tuning = tab.evaluate(
        """() => Array.from(document.querySelectorAll('section[data-view=tuning] .js-plotly-plot')).map(d =>
             d.data.filter(t => t.name.endsWith('evaluated') || t.name.endsWith('diverged')).map(t => [t.name, t.x]))"""
    )
    expected = [
        ["Adam evaluated", [CHOSEN["Adam"]]],
        ["Momentum evaluated", [CHOSEN["Momentum"]]],
        ["Momentum diverged", [1.0]],
    ]
    assert tuning == [expected, expected]  # the stars at the evaluated lrs; Momentum's lr=1 in the diverged strip
    # linked hover: hovering mnist's loss chart shows the same step in its accuracy chart
    mnist = tab.locator("[data-task='mnist-cnn, smoke budget'] section[data-view=curves] .js-plotly-plot")
    mnist.nth(0).scroll_into_view_if_needed()
    box = mnist.nth(0).locator(".nsewdrag").first.bounding_box()
    assert mnist.nth(1).locator(".hoverlayer .hovertext").count() == 0
    tab.mouse.move(box["x"] + box["width"] / 2, box["y"] + box["height"] / 2)
    tab.wait_for_timeout(200)
    assert mnist.nth(0).locator(".hoverlayer .hovertext").count() > 0
    assert mnist.nth(1).locator(".hoverlayer .hovertext").count() > 0
    assert errors == []

    shot = tmp_path / "report.png"
    tab.screenshot(path=str(shot), full_page=True)
    from PIL import Image

    pixels = np.asarray(Image.open(shot).convert("L"), dtype=float)
    assert pixels.shape[0] > 3000 and pixels.std() > 20  # drawn: a blank or unstyled page is nearly uniform
    # A functional bound only (the machines are shared: speed is measured by hand, README "The report"):
    # a page whose scripts hang or loop never sets data-ready within it.
    assert opened < 20.0, f"index.html took {opened:.2f} s to open"


@pytest.fixture(scope="module")
def lab_pages(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    out = tmp_path_factory.mktemp("lab")
    surface = [
        "surface",
        "rosenbrock",
        "--opt",
        "Adam(lr=0.05)",
        "--opt",
        "Momentum(lr=0.0005)",
        "--steps",
        "100",
        "--out",
        str(out / "surface"),
    ]
    grid = [
        "--grid",
        "lr=log:1e-3:1e-1:3",
        "--grid",
        "eps=log:1e-8:1e-1:2",
        "--steps",
        "100",
        "--out",
        str(out / "sweep"),
    ]
    assert cli.main(surface) == 0
    assert cli.main(["sweep", "rosenbrock", "--opt", "Adam", *grid]) == 0
    return {"surface": out / "surface" / "index.html", "sweep": out / "sweep" / "index.html"}


def _csv(path: Path) -> list[dict[str, str]]:
    import csv

    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_lab_pages_show_statuses_and_heatmaps(lab_pages: dict[str, Path]) -> None:
    from optimlab.sweep import STATUSES

    rows = _csv(lab_pages["surface"].parent / "summary.csv")  # the surface command's own table
    statuses = " ".join(" ".join(["1"] + ["1" if r["status"] == s else "0" for s in STATUSES]) for r in rows)
    surface = lab_pages["surface"].read_text(encoding="utf-8")
    table = _text(surface[surface.index("<table>") : surface.index("</table>")])
    assert table.split("moving ", 1)[1].replace("Adam ", "").replace("Momentum ", "").strip() == statuses
    sweep = lab_pages["sweep"].read_text(encoding="utf-8")
    assert "Adam: final loss over lr and eps" in sweep and not re.search(r"<(script|link|img)[^>]+(src|href)=", sweep)


def test_lab_pages_in_headless_chromium(browser: Any, lab_pages: dict[str, Path]) -> None:
    for kind, expected in (("surface", {"paths": 2}), ("sweep", {"paths": 2, "heatmaps": 1})):
        tab, errors, requests, _ = _open(browser, lab_pages[kind])
        counts = tab.evaluate("() => Object.fromEntries(Array.from(document.querySelectorAll('section.view'))"
                              ".map(s => [s.dataset.view, s.querySelectorAll('.js-plotly-plot').length]))")  # fmt: skip
        assert {v: n for v, n in counts.items() if n} == expected, kind
        paths = tab.evaluate(
            "() => document.querySelector('section[data-view=paths] .js-plotly-plot').data.map(t => t.type)"
        )
        assert (
            paths[0] == "contour" and paths.count("scatter") == (2 if kind == "surface" else 6) + 1
        )  # + the known minimum
        if kind == "sweep":  # the heatmap's cells: lr across, eps up; each the final loss of that configuration
            z = tab.evaluate("() => document.querySelector('section[data-view=heatmaps] .js-plotly-plot').data[0].z")
            grid = _csv(lab_pages[kind].parent / "grid.csv")
            lrs, epss = sorted({float(r["lr"]) for r in grid}), sorted({float(r["eps"]) for r in grid})
            assert z == [[next(float(r["final_loss"]) for r in grid if float(r["lr"]) == lr and float(r["eps"]) == eps)
                          for lr in lrs] for eps in epss]  # fmt: skip
        assert errors == [] and requests == [lab_pages[kind].as_uri()], kind
        tab.close()


def test_a_study_page_has_a_section_per_panel(tmp_path: Path) -> None:
    from optimlab.studies import adam_saddle

    result = adam_saddle.run(tmp_path, heatmaps=False, animate=False, log=lambda _: None)
    assert tmp_path / "index.html" in result.files
    page = (tmp_path / "index.html").read_text(encoding="utf-8")
    titles = re.findall(r"<div class='task' id='t\d+' data-task='([^']+)'>", page)
    assert titles == [name for name, _, _ in adam_saddle.PANELS]
    assert page.count("data-view='paths'") == len(titles)
