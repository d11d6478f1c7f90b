"""The command line: each command writes its files; bad input gives a clear error and exit status 2."""

from __future__ import annotations

import csv
import json

import pytest

from optimlab.cli import main


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
    # named in the order asked (x, then y), then the value coloured
    assert (out / "heatmap-beta1-eps-final-loss.png").exists() and (out / "heatmap-beta1-eps-final-loss.csv").exists()
    assert not (out / "heatmap-eps-beta1-final-loss.png").exists()


@pytest.mark.parametrize(
    ("extra", "message"),
    [
        (["--heatmap", "beta1,eps", "--value", "steps_to_target"], "steps_to_target' without a target"),
        (["--heatmap", "beta1,beta2"], "invalid y='beta2': expected a swept hyperparameter"),
        (["--heatmap", "beta1,beta1"], "expected a hyperparameter other than x"),
        (["--grid", "momentum=0.1,0.9"], "Adam has no swept hyperparameter 'momentum'"),
    ],
)
def test_sweep_refuses_a_heatmap_or_grid_it_cannot_draw_before_running(extra, message, tmp_path, capsys, monkeypatch):
    import optimlab.sweep

    ran = []
    monkeypatch.setattr(optimlab.sweep, "sweep", lambda *a, **k: ran.append(1))
    argv = ["sweep", "saddle", "--opt", "Adam(lr=0.005)", "--grid", "beta1=0.5,0.9", "--grid", "eps=1e-8,1e-3", *extra]
    assert main([*argv, "--out", str(tmp_path / "g")]) == 2
    assert message in capsys.readouterr().err
    assert ran == [] and not (tmp_path / "g").exists()


def test_sweep_colours_a_heatmap_by_any_summary_value(tmp_path):
    out = tmp_path / "g"
    argv = ["sweep", "saddle", "--opt", "Adam(lr=0.005)", "--grid", "beta1=0.5,0.9", "--grid", "eps=1e-8,1e-3"]
    argv += ["--steps", "20", "--heatmap", "eps,beta1", "--value", "steps_to_target", "--target", "-0.5"]
    assert main([*argv, "--out", str(out)]) == 0
    cells = _rows(out / "heatmap-eps-beta1-steps-to-target.csv")
    assert len(cells) == 4
    with pytest.raises(SystemExit):  # argparse's own refusal of a value the figures cannot colour by
        main([*argv[:-6], "--value", "final_los", "--out", str(out)])


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
        (["surface", "booth", "--opt", "Adamm"], "invalid optimizer spec 'Adamm'.*did you mean optimlab.Adam"),
        (["surface", "booth", "--opt", "Adam(lr=)"], "invalid optimizer spec"),
        (["surface", "booth", "--opt", "Adam(lr=0.01, bta1=0.5)"], "Adam has no hyperparameter 'bta1' \\(did you mean beta1\\?\\)"),
        (["surface", "booth", "--opt", "Adam(lr=x)"], "the value of lr must be a Python literal"),
        (["surface", "booth", "--opt", "Adam(**{'lr': 0.1})"], r"\*\*\{\.\.\.\} is not allowed"),
        (["surface", "booth", "--opt", "torch.Adam"], "the 2-D lab runs optimlab's update rules"),
        (["surface", "booth", "--opt", "Lookahead"], "Lookahead wraps an optimizer"),
        (["sweep", "booth", "--opt", "Adam(beta1=0.5)", "--grid", "beta1=0.1,0.2"], "beta1 given both in --opt"),
        (["sweep", "booth", "--grid", "beta1=log:0:1:3"], "log grids need START > 0"),
        (["sweep", "booth", "--grid", "beta9=0.1"], "no swept hyperparameter 'beta9'"),
    ],
)
def test_bad_input_is_named(argv, message, capsys, tmp_path):
    assert main([*argv, "--out", str(tmp_path / "x")]) == 2
    assert pytest.importorskip("re").search(message, capsys.readouterr().err)


def test_help_is_the_manual(capsys):
    with pytest.raises(SystemExit):
        main(["--help"])
    text = capsys.readouterr().out
    for word in ("surface", "sweep", "study", "examples"):
        assert word in text


# ---------------------------------------------------------------------------------------------
# One spec grammar in every command (issue 10, "Why" 6)
# ---------------------------------------------------------------------------------------------


def test_surface_takes_the_readme_names_wrappers_and_component_names(tmp_path):
    out = tmp_path / "s"
    argv = ["surface", "ill-conditioned-quadratic", "--opt", "Adam(lr=0.01, beta1=0.5)", "--opt", "Lookahead(NAG(lr=0.01), k=3)"]
    assert main([*argv, "--steps", "20", "--out", str(out)]) == 0
    rows = _rows(out / "summary.csv")
    assert [r["optimizer"] for r in rows] == ["Adam", "Lookahead(NAG)"]
    assert float(rows[0]["beta1"]) == 0.5 and float(rows[0]["beta2"]) == 0.999  # beta1 alone keeps the default beta2
    assert main(["surface", "random", "--opt", "Adam", "--steps", "5", "--out", str(tmp_path / "r")]) == 0


def test_surface_runs_the_same_numbers_whether_betas_or_beta1_is_written(tmp_path):
    for i, spec in enumerate(["Adam(lr=0.01, beta1=0.5)", "Adam(lr=0.01, betas=(0.5, 0.999))"]):
        assert main(["surface", "booth", "--opt", spec, "--steps", "30", "--out", str(tmp_path / str(i))]) == 0
    first, second = (_rows(tmp_path / str(i) / "summary.csv")[0] for i in range(2))
    assert first["final_loss"] == second["final_loss"] and first["final_w1"] == second["final_w1"]


def test_list_and_version(capsys):
    assert main(["list"]) == 0
    text = capsys.readouterr().out
    for word in ("airfoil-linreg", "mnist-cnn", "Adam", "torch.SGD", "Momentum", "SGD(momentum=0.9, nesterov=True)",
                 "ill-conditioned-quadratic", "random", "smoke", "quick", "full", "epochs"):  # fmt: skip
        assert word in text, word
    with pytest.raises(SystemExit) as exit_:
        main(["--version"])
    assert exit_.value.code == 0 and capsys.readouterr().out.startswith("optimlab ")


def test_config_may_hold_every_option_the_task_and_the_surface_included(tmp_path, capsys):
    cfg = tmp_path / "c.json"
    cfg.write_text(json.dumps({"surface": "booth", "opt": "Adam(lr=0.1)", "steps": 7, "record_every": 7}))
    assert main(["surface", "--config", str(cfg), "--out", str(tmp_path / "o")]) == 0
    assert _rows(tmp_path / "o" / "summary.csv")[0]["optimizer"] == "Adam"
    # the command line's --opt replaces the file's (it does not add to it)
    assert main(["surface", "--config", str(cfg), "--opt", "NAG(lr=0.01)", "--out", str(tmp_path / "p")]) == 0
    assert [r["optimizer"] for r in _rows(tmp_path / "p" / "summary.csv")] == ["NAG"]
    cfg.write_text(json.dumps({"task": "airfoil-linreg", "opt": ["Adamm"], "store": str(tmp_path / "lab.sqlite")}))
    assert main(["run", "--config", str(cfg)]) == 2  # the task came from the file: the error is the spec's
    assert "invalid optimizer spec 'Adamm'" in capsys.readouterr().err
    assert main(["run", "--opt", "Adam", "--store", str(tmp_path / "lab.sqlite")]) == 2
    assert "give --task" in capsys.readouterr().err
    assert not (tmp_path / "lab.sqlite").exists()  # nothing was stored: the errors came before the store
