"""The command line: each command writes its files; bad input gives a clear error and exit status 2."""

from __future__ import annotations

import csv
import json

import pytest

from optimlab.cli import main, parse_spec


def _rows(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def test_surface_writes_figures_tables_and_configs(tmp_path):
    out = tmp_path / "s"
    status = main(["surface", "booth", "--opt", "Adam(lr=0.1)", "--opt", "NAG(lr=0.01)", "--steps", "40", "--record-every", "10", "--out", str(out)])
    assert status == 0
    for name in ("paths.png", "paths.csv", "paths.json", "loss.png", "loss.csv", "summary.csv"):
        assert (out / name).stat().st_size > 0, name
    rows = _rows(out / "summary.csv")
    assert [r["optimizer"] for r in rows] == ["Adam", "NAG"]
    runs = json.loads((out / "paths.json").read_text())["runs"]
    assert runs[1]["options"] == {"momentum": 0.9, "nesterov": True}


def test_sweep_grid_and_heatmap(tmp_path):
    out = tmp_path / "g"
    args = ["sweep", "saddle", "--opt", "Adam(lr=0.005)", "--grid", "beta1=lin:0:1:3", "--grid", "eps=log:1e-8:1:2"]
    assert main([*args, "--steps", "20", "--heatmap", "beta1,eps", "--out", str(out)]) == 0
    rows = _rows(out / "grid.csv")
    assert len(rows) == 6
    assert sorted({float(r["beta1"]) for r in rows}) == [0.0, 0.5, 1.0]
    assert {r["status"] for r in rows if float(r["beta1"]) == 1.0} == {"diverged"}
    assert (out / "heatmap-eps-beta1.png").exists() and (out / "heatmap-eps-beta1.csv").exists()


def test_config_file_values_and_command_line_override(tmp_path):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"opt": ["Adam(lr=0.1)"], "steps": 7, "record_every": 7}))
    out = tmp_path / "o"
    assert main(["surface", "booth", "--config", str(cfg), "--steps", "14", "--out", str(out)]) == 0
    paths = _rows(out / "paths.csv")
    assert max(int(r["step"]) for r in paths) == 14


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["surface", "nowhere"], "unknown surface|nowhere"),
        (["surface", "booth", "--opt", "Adamm"], "unknown optimizer 'Adamm'"),
        (["surface", "booth", "--opt", "Adam(lr=)"], "invalid optimizer spec"),
        (["sweep", "booth", "--grid", "beta1=log:0:1:3"], "log grids need START > 0"),
        (["sweep", "booth", "--grid", "beta9=0.1"], "no swept hyperparameter 'beta9'"),
    ],
)
def test_bad_input_is_named(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


def test_parse_spec():
    assert parse_spec("Adam") == ("Adam", {})
    assert parse_spec("AdaBound(lr=1e-3, amsbound=True)") == ("AdaBound", {"lr": 1e-3, "amsbound": True})
    with pytest.raises(ValueError, match="literal values"):
        parse_spec("Adam(lr=x)")


def test_help_is_the_manual(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for word in ("surface", "sweep", "study", "examples"):
        assert word in text
