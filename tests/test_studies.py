"""The packaged studies, run as a user runs them (optimlab study ...): what they claim and what they refuse."""

from __future__ import annotations

import csv
import json

import pytest
import torch

from optimlab.cli import main
from optimlab.studies import compare_all


def test_compare_all_refuses_to_rank_on_the_unbounded_saddle(tmp_path, capsys):
    out = tmp_path / "saddle"
    assert main(["study", "compare-all", "--surface", "saddle", "--steps", "20", "--no-gif", "--out", str(out)]) == 0
    assert "no lower bound" in capsys.readouterr().err
    summary = (out / "summary.md").read_text()
    assert "**No ranking.**" in summary and "| rank" not in summary and "Best after tuning" not in summary
    assert "| optimizer | status | escaped at step | final loss |" in summary
    assert "tuned" not in {p.stem.split("-")[0] for p in out.iterdir()}  # no lr tuning on a bottomless loss
    config = json.loads((out / "defaults-paths.json").read_text())
    assert config["figure"] == "small_multiples" and len(config["runs"]) == len(compare_all.entries())


@pytest.mark.slow
def test_compare_all_on_a_bounded_surface_ranks_and_draws_one_panel_per_optimizer(tmp_path):
    out = tmp_path / "booth"
    argv = ["study", "compare-all", "--surface", "booth", "--steps", "20", "--lr-trials", "2", "--no-gif"]
    assert main([*argv, "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "| rank (tuned) | optimizer |" in summary and "No ranking" not in summary
    for name in ("defaults", "tuned"):
        config = json.loads((out / f"{name}-paths.json").read_text())
        assert config["figure"] == "small_multiples" and len(config["runs"]) == len(compare_all.entries())


def test_every_preset_runs_in_compare_all_and_the_matrix_methods_on_the_matrix_problem(tmp_path, monkeypatch):
    """At a tiny size; the 2-D figures (drawn by the slow test above) are left out to keep it fast."""
    from optimlab.optim import PRESETS

    drawn = {}
    monkeypatch.setattr(compare_all, "_figures", lambda out, name, runs, surf: drawn.setdefault(name, runs) and [])
    monkeypatch.setattr(compare_all, "lab_page", lambda runs, surf, out: out / "index.html")
    out = compare_all.run(tmp_path, surface="rosenbrock", steps=5, lr_trials=2, animate=False, log=lambda line: None)
    planar = [name for name, (cls, _) in PRESETS.items() if cls.__name__ not in compare_all.MATRIX_METHODS]
    matrix = [name for name, (cls, _) in PRESETS.items() if cls.__name__ in compare_all.MATRIX_METHODS]
    assert "Muon" in matrix and "Muon" not in planar
    for kind in ("defaults", "tuned"):
        assert [r.optimizer for r in drawn[kind]] == [*planar, "Lookahead(Adam)"]
        for r in drawn[kind]:  # a result each (ScheduleFreeSGD's default lr=1 diverges on Rosenbrock)
            assert r.loss.shape == (1, 1) and (torch.isfinite(r.loss).all() or r.status == ["diverged"]), r.optimizer
    ranked, matrix_table = out.summary.split("## Matrix methods")
    assert all(f"| {name} |" in ranked for name in planar) and "| Muon |" not in ranked
    assert all(f"| {name} |" in matrix_table for name in [*matrix, *compare_all.MATRIX_BASELINES])
    assert (tmp_path / "matrix-loss.png").stat().st_size > 0
    with open(tmp_path / "matrix-loss.csv") as f:
        rows = list(csv.DictReader(f))
    # both runs of each optimizer, from the start (step 0) to the last step
    assert {(r["run"], r["optimizer"]) for r in rows if r["step"] == "0"} == {
        (run, name) for run in ("defaults", "tuned lr") for name in [*matrix, *compare_all.MATRIX_BASELINES]
    }
    assert len(rows) == 2 * (len(matrix) + len(compare_all.MATRIX_BASELINES)) * 6
