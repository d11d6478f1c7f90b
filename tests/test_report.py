"""The report from a store (figures beside CSV/JSON, summary tables) and the run/tune/report commands."""

from __future__ import annotations

import csv
import json
import math
import os
from pathlib import Path
from typing import Any

import pytest

from optimlab import cli
from optimlab.protocol import compare, lr_sensitivity
from optimlab.report import read_store, report
from optimlab.store import Store

DATA = Path(os.environ.get("OPTIMLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    if not (DATA / "airfoil").exists():
        pytest.skip(f"real data not staged under {DATA} (set OPTIMLAB_DATA_DIR)")
    monkeypatch.setenv("OPTIMLAB_DATA_DIR", str(DATA))


def _csv(path: Path) -> list[dict[str, str]]:
    with path.open(newline="") as f:
        return list(csv.DictReader(f))


def test_report_writes_figures_tables_and_markdown(tmp_path: Path) -> None:
    store_path = tmp_path / "lab.sqlite"
    with Store(store_path) as store:
        result = compare("airfoil-linreg", ["Adam", "Momentum"], "smoke", seeds=3, trials=3, store=store, progress=False)
        lr_sensitivity("airfoil-linreg", "RAdam", [0.003, 0.03, 0.1, 1e5], seeds=2, store=store, progress=False)
        paths = report(store, tmp_path / "out")
    out = tmp_path / "out"
    names = sorted(p.name for p in out.iterdir())
    assert names == sorted(
        ["summary.md", "summary-airfoil-linreg-smoke.csv"]
        + [f"{kind}-airfoil-linreg-smoke.{ext}" for kind in ("curves", "lr") for ext in ("png", "csv", "json")]
    )
    assert paths[-1] == out / "summary.md"

    rows = {(r["optimizer"], r["hyperparameters"]): r for r in _csv(out / "summary-airfoil-linreg-smoke.csv")}
    by_label = {s.label.split("(")[0]: s for s in result.summaries}
    for label in ("Adam", "Momentum"):
        (row,) = [r for (name, _), r in rows.items() if name == label]
        s = by_label[label]
        assert float(row["mean"]) == s.mean and (float(row["ci95_low"]), float(row["ci95_high"])) == (s.low, s.high)  # the protocol's numbers
        assert row["trials"] == "3" and row["seeds"] == "3" and row["metric"] == "full_loss"
        assert row["hyperparameters"].startswith("lr=")  # tuned; Momentum's momentum=0.9 is in its name
        assert int(row["state_bytes"]) == {"Adam": 56, "Momentum": 32}[label]  # 6 parameters: exp_avg+exp_avg_sq+step / buffer
    radam = [r for (name, _), r in rows.items() if name == "RAdam"]
    assert len(radam) == 4 and all(r["trials"] == "0" for r in radam)

    md = (out / "summary.md").read_text()
    assert "## airfoil-linreg, smoke budget" in md and "| optimizer | trials | searched | final metric | diverged |" in md
    assert md.count("| best |") == 1 and ("No winner" in md or " is best; " in md)
    assert "| RAdam(lr=1e5) | 0 | — | — | 2 of 2 | " in md  # a diverged lr is a row, named by what ran (not tuned)

    lr_rows = _csv(out / "lr-airfoil-linreg-smoke.csv")
    assert [float(r["lr"]) for r in lr_rows] == [0.003, 0.03, 0.1, 1e5]
    assert lr_rows[-1]["diverged"] == "2" and math.isnan(float(lr_rows[-1]["mean"] or "nan"))

    curves = _csv(out / "curves-airfoil-linreg-smoke.csv")
    assert {r["split"] for r in curves} == {"train", "full"} and {r["quantity"] for r in curves} == {"loss"}
    finals = {r["optimizer"].split("(")[0]: r for r in curves if r["split"] == "full" and float(r["epochs"]) == 1.0}
    assert float(finals["Adam"]["mean"]) == pytest.approx(by_label["Adam"].mean, rel=1e-12)  # airfoil: final split = curve split
    config = json.loads((out / "curves-airfoil-linreg-smoke.json").read_text())
    assert config["band"] == "min-max over seeds" and {len(c["seeds"]) for c in config["configurations"]} >= {2}


def test_report_of_a_store_without_evaluated_runs(tmp_path: Path) -> None:
    with Store(tmp_path / "lab.sqlite") as store:
        report(store, tmp_path / "out")
        assert read_store(store) == ([], {})
    assert "No configuration" in (tmp_path / "out" / "summary.md").read_text()


def test_cli_run_tune_report_produce_files(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "lab.sqlite")
    common = ["--task", "airfoil-linreg", "--budget", "smoke", "--store", store, "--data-dir", str(DATA), "--seeds", "2"]
    assert cli.main(["run", *common, "--opt", "Adam(lr=0.01)", "--opt", "NAG(lr=0.01)"]) == 0
    err = capsys.readouterr().err
    assert "full_loss over seeds" in err and "Adam(lr=0.01)" in err and "NAG(lr=0.01)" in err
    assert cli.main(["tune", *common, "--opt", "Adam", "--opt", "AdamW(weight_decay=0.1)", "--trials", "2"]) == 0
    err = capsys.readouterr().err
    assert "2 trials" in err and "tune Adam" in err  # the progress bar went to stderr
    out = tmp_path / "report"
    assert cli.main(["report", "--store", store, "--out", str(out)]) == 0
    assert (out / "summary.md").exists() and (out / "curves-airfoil-linreg-smoke.png").stat().st_size > 10_000
    labels = {r["optimizer"] for r in _csv(out / "summary-airfoil-linreg-smoke.csv")}
    assert labels == {"Adam", "NAG", "AdamW(weight_decay=0.1)"}
    with Store(store) as s:
        assert len(s.runs()) == 2 * 2 + 2 * 2 + 2 * 2  # run: 2 x 2 seeds; tune: 2 x 2 trials + 2 x 2 seeds
    assert cli.main(["tune", *common, "--opt", "Adam", "--trials", "0"]) == 2
    assert "trials" in capsys.readouterr().err
    assert cli.main(["report", "--store", str(tmp_path / "missing.sqlite"), "--out", str(out)]) == 2


def test_tune_and_report_flag_a_tuned_lr_at_the_edge_of_its_range(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    """Issue 14: Adam tuned over [0.001, 0.032] wins at 0.03, the top of that range; Momentum, over the default
    range, wins inside it.  tune prints the flag under Adam's line; the report shows it beside Adam's standing
    (summary.md, the CSV, index.html) with each optimizer's range; Momentum gets no flag."""
    from tests.test_protocol import fixed_lrs

    fixed_lrs(monkeypatch, [0.002, 0.03])  # both tried by each optimizer; on airfoil Adam ends lower at 0.03
    store = str(tmp_path / "lab.sqlite")
    common = ["--task", "airfoil-linreg", "--budget", "smoke", "--store", store, "--data-dir", str(DATA), "--seeds", "2",
              "--trials", "2"]  # fmt: skip
    flag = "lr=0.03 is at the top of its range [0.001, 0.032]: the optimum may lie above"
    assert cli.main(["tune", *common, "--opt", "Adam", "--lr-range", "1e-3,0.032"]) == 0
    assert f"Adam: best {flag}; widen --lr-range" in capsys.readouterr().err.splitlines()
    assert cli.main(["tune", *common, "--opt", "Momentum"]) == 0
    assert "the optimum may lie" not in capsys.readouterr().err
    out = tmp_path / "report"
    assert cli.main(["report", "--store", store, "--out", str(out)]) == 0
    rows = {r["optimizer"]: r for r in _csv(out / "summary-airfoil-linreg-smoke.csv")}
    assert (rows["Adam"]["search_space"], rows["Adam"]["range_edge"]) == ("lr in [0.001, 0.032]", flag)
    assert (rows["Momentum"]["search_space"], rows["Momentum"]["range_edge"]) == ("lr in [1e-05, 1]", "")
    md = (out / "summary.md").read_text().splitlines()
    (adam,) = [line for line in md if line.startswith("| Adam(")]
    assert adam.startswith("| Adam(lr=0.03*) | 2 | lr in [0.001, 0.032] | ") and adam.endswith(f"; ⚠ {flag} |")
    (momentum,) = [line for line in md if line.startswith("| Momentum(")]
    assert "| 2 | lr in [1e-05, 1] | " in momentum and "⚠" not in momentum
    page = (out / "index.html").read_text(encoding="utf-8")
    assert page.count(f"; ⚠ {flag}</td>") == 1 and page.count("⚠ lr=") == 1


def test_report_of_a_store_with_betas_and_lookahead_runs(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from optimlab.runner import run

    store = tmp_path / "lab.sqlite"
    with Store(store) as s:
        for seed in (1, 2):
            run("airfoil-linreg", "Adam(lr=0.01, betas=(0.5, 0.9))", None, seed, "smoke", s, False)
            run("airfoil-linreg", "Lookahead(Adam(lr=0.01), k=5)", None, seed, "smoke", s, False)
    assert cli.main(["report", "--store", str(store), "--out", str(tmp_path / "out")]) == 0
    md = (tmp_path / "out" / "summary.md").read_text()
    assert "| Adam(lr=0.01, betas=(0.5, 0.9)) | 0 |" in md and "| Lookahead(Adam(lr=0.01)) | 0 |" in md
    assert "2 seeds per optimizer" in md  # the verdict says the comparison is weak


def test_a_fully_diverged_lr_is_drawn_apart_from_the_values(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import optimlab.report as report_mod
    from optimlab.report import lr_figure

    drawn = {}
    save = report_mod._save

    def keep(fig: Any, *args: Any) -> Path:
        drawn["fig"] = fig
        return save(fig, *args)

    monkeypatch.setattr(report_mod, "_save", keep)
    rows = [{"optimizer": "SGD", "lr": lr, "seed": s, "value": math.nan if lr == 10.0 or (lr == 1.0 and s == 1) else lr + s,
             "diverged": int(lr == 10.0)} for lr in (0.01, 0.1, 1.0, 10.0) for s in (1, 2)]  # fmt: skip
    lr_figure(rows, tmp_path / "lr.png", task="t", budget="smoke", metric="val_loss")
    values, strip = drawn["fig"].axes
    on_values = [(x, y) for line in values.get_lines() for x, y in zip(line.get_xdata(), line.get_ydata())]
    assert 10.0 not in [x for x, _ in on_values]  # nothing at the diverged lr on the value axis
    crosses = [line for line in strip.get_lines() if line.get_marker() == "x"]
    assert [list(line.get_xdata()) for line in crosses] == [[10.0]]
    assert [t.get_text() for t in strip.texts] == ["1/2"]  # some seeds diverged at lr 1
    assert "diverged" in strip.get_ylabel() and strip.get_title(loc="left").startswith("diverged seeds")


def test_report_of_a_gan_store_shows_each_arms_samples(tmp_path: Path) -> None:
    """A smoke-budget mnist-dcgan comparison: one samples image per arm, from its first evaluation seed, in the
    samples figure that summary.md links and in index.html, the very bytes the run stored."""
    import base64
    import io
    import re

    from PIL import Image

    from optimlab.html import html_report

    if not (DATA / "mnist").exists():
        pytest.skip(f"MNIST not staged under {DATA}")
    with Store(tmp_path / "gan.sqlite") as store:
        compare("mnist-dcgan", ["Adam", "Momentum"], "smoke", seeds=2, trials=1, store=store, progress=False)
        report(store, tmp_path / "out")
        page = html_report(store, tmp_path / "out").read_text(encoding="utf-8")
        configurations, _ = read_store(store)
        stored = {}
        for c in configurations:
            seed = min(c.runs)
            (artifact,) = store.artifacts(c.runs[seed]["key"], name="samples")
            stored[c.name] = (seed, c.runs[seed]["key"], artifact)
    assert len(stored) == 2
    out = tmp_path / "out"
    assert "![samples-mnist-dcgan-smoke](samples-mnist-dcgan-smoke.png)" in (out / "summary.md").read_text()
    rows = {r["optimizer"]: r for r in _csv(out / "samples-mnist-dcgan-smoke.csv")}
    assert rows.keys() == stored.keys()
    for name, (seed, key, artifact) in stored.items():
        assert artifact["media_type"] == "image/png" and artifact["step"] == 8  # 256 images, batch 32: 8 steps
        assert Image.open(io.BytesIO(artifact["data"])).size == (242, 302)  # 8 digits across, one row per digit
        row = rows[name]
        assert (int(row["seed"]), row["key"], int(row["bytes"])) == (seed, key, len(artifact["data"]))
        assert (int(row["width"]), int(row["height"])) == (242, 302)
    section = page[page.index("data-view='samples'") :]
    section = section[: section.index("</section>")]
    shown = re.findall(r"<img class='samples' src='data:image/png;base64,([^']+)' alt='([^']+)'", section)
    assert {alt: base64.b64decode(data) for data, alt in shown} == {
        f"{name}, seed {seed}, step 8": artifact["data"] for name, (seed, _, artifact) in stored.items()
    }
