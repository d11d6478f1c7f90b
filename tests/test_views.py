"""What the HTML report's views compute: performance profiles, time to target, seed bands, edge warnings."""

from __future__ import annotations

import math

import pytest

from optimlab import views

INF = math.inf


def test_ratios_are_costs_over_each_tasks_best() -> None:
    ratios = views.performance_ratios(
        {
            "a": {"Adam": 2.0, "SGD": 3.0, "Lion": INF},
            "b": {"Adam": 5.0, "SGD": 1.0},
            "c": {"SGD": math.nan, "Adam": 4.0},
        }
    )
    assert ratios == {
        "a": {"Adam": 1.0, "SGD": 1.5, "Lion": INF},
        "b": {"Adam": 5.0, "SGD": 1.0, "Lion": INF},  # Lion did not run on b: never within tau there
        "c": {"Adam": 1.0, "SGD": INF, "Lion": INF},  # a NaN (diverged) cost is never within tau
    }


def test_zero_best_cost_and_negative_costs() -> None:
    assert views.performance_ratios({"t": {"A": 0.0, "B": 0.5}}) == {"t": {"A": 1.0, "B": INF}}
    with pytest.raises(ValueError, match=r"performance_ratios: invalid cost=-1\.0 of 'A' on 't': expected >= 0"):
        views.performance_ratios({"t": {"A": -1.0}})


def test_profile_counts_tasks_within_tau() -> None:
    ratios = {
        "a": {"Adam": 1.0, "SGD": 1.5},
        "b": {"Adam": 5.0, "SGD": 1.0},
        "c": {"Adam": 1.0, "SGD": INF},
        "d": {"Adam": 1.2, "SGD": 1.0},
    }
    profile = views.performance_profile(ratios, [1.0, 1.2, 1.5, 4.9, 5.0, 1e9])
    assert profile["Adam"] == [0.5, 0.75, 0.75, 0.75, 1.0, 1.0]
    assert profile["SGD"] == [0.5, 0.5, 0.75, 0.75, 0.75, 0.75]  # never reaches 1: it diverged on c
    with pytest.raises(ValueError, match="at least one task"):
        views.performance_profile({}, [1.0])


def test_metric_cost_and_median_over_seeds() -> None:
    assert views.metric_cost(0.3, higher_is_better=False) == 0.3
    assert views.metric_cost(0.97, higher_is_better=True, upper=1.0) == pytest.approx(0.03)  # the error rate
    assert views.metric_cost(4.0, higher_is_better=True) == 0.25  # no upper bound: 1 / value
    assert views.metric_cost(math.nan, higher_is_better=True, upper=1.0) == INF
    assert views.metric_cost(1.0 + 1e-12, higher_is_better=True, upper=1.0) == 0.0  # past the bound by rounding
    assert views.median_cost([3.0, 1.0, 2.0]) == 2.0
    assert views.median_cost([1.0, math.nan, 2.0]) == 2.0  # a diverged seed is the worst, not dropped
    assert views.median_cost([1.0, math.nan, math.nan]) == INF  # most seeds diverged
    assert views.median_cost([]) == INF


CURVE = [
    {"step": 0, "epochs": 0.0, "wall_time": 0.0, "val_accuracy": 0.10},
    {"step": 10, "epochs": 0.5, "wall_time": 1.5, "val_accuracy": 0.80},
    {"step": 20, "epochs": 1.0, "wall_time": 3.0, "val_accuracy": math.nan},
    {"step": 30, "epochs": 1.5, "wall_time": 4.5, "val_accuracy": 0.95},
    {"step": 40, "epochs": 2.0, "wall_time": 6.0, "val_accuracy": 0.90},
]


def test_time_to_target_is_the_first_point_reaching_it() -> None:
    assert views.time_to_target(CURVE, "val_accuracy", 0.9, higher_is_better=True) == 4.5
    assert views.time_to_target(CURVE, "val_accuracy", 0.9, higher_is_better=True, x="step") == 30.0
    assert views.time_to_target(CURVE, "val_accuracy", 0.8, higher_is_better=True, x="epochs") == 0.5  # reached exactly
    assert views.time_to_target(CURVE, "val_accuracy", 0.99, higher_is_better=True) == INF
    assert views.time_to_target(CURVE, "val_accuracy", 0.5, higher_is_better=False, x="step") == 0.0  # lower is better
    assert views.time_to_target(CURVE, "val_loss", 0.5, higher_is_better=False) == INF  # not recorded


def test_band_aggregates_seeds_per_step() -> None:
    other = [
        {"step": 0, "epochs": 0.0, "wall_time": 0.0, "val_accuracy": 0.20},
        {"step": 10, "epochs": 0.5, "wall_time": 2.5, "val_accuracy": 0.60},
    ]
    rows = views.band([CURVE, other], "val_accuracy")
    assert [r["step"] for r in rows] == [0, 10, 30, 40]  # step 20 is NaN in the only seed that has it
    assert rows[0] == {
        "step": 0,
        "epochs": 0.0,
        "wall_time": 0.0,
        "mean": pytest.approx(0.15),
        "min": 0.1,
        "max": 0.2,
        "seeds": 2,
    }
    assert (
        rows[1]["wall_time"] == 2.0
        and rows[1]["mean"] == pytest.approx(0.7)
        and (rows[1]["min"], rows[1]["max"]) == (0.6, 0.8)
    )
    assert rows[2] == {"step": 30, "epochs": 1.5, "wall_time": 4.5, "mean": 0.95, "min": 0.95, "max": 0.95, "seeds": 1}


def test_edge_of_the_values_tried() -> None:
    assert views.edge(1e-3, [1e-3, 1e-2, 1e-1]) == "lowest"
    assert views.edge(0.1, [1e-3, 1e-2, 1e-1]) == "highest"
    assert views.edge(1e-2, [1e-3, 1e-2, 1e-1]) is None
    assert views.edge(0.5, [0.5, 0.5]) is None  # one value: nothing was searched
