"""The packaged studies, run as a user runs them (optimlab study ...): what they claim and what they refuse."""

from __future__ import annotations

import json

import pytest

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
