"""The statistics of a comparison on data with known answers: intervals, Welch's test, divergence, verdicts."""

from __future__ import annotations

import math

import pytest

from optimlab.stats import mean_ci, student_t_quantile, summarize, verdict, welch_p_value

# Student t quantiles t_{0.975, dof}: the textbook tables' 12.706, 2.776, 2.262, 1.962 to full precision
T975 = {1: 12.706204736174694, 4: 2.7764451051977934, 9: 2.262157162798205, 1000: 1.9623390808264083}

FIVE = {
    "A": [0.90, 0.91, 0.89, 0.92, 0.88],  # mean 0.900
    "B": [0.90, 0.89, 0.91, 0.88, 0.895],  # mean 0.895: inside A's spread
    "C": [0.70, 0.71, 0.69, 0.72, 0.70],  # far below
}


@pytest.mark.parametrize("dof", sorted(T975))
def test_student_t_quantile_matches_the_tables(dof: int) -> None:
    assert student_t_quantile(0.975, dof) == pytest.approx(T975[dof], rel=1e-12)


def test_mean_ci_on_known_numbers() -> None:
    mean, low, high = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    # s = sqrt(2.5), n = 5: half-width t_{0.975,4} * s / sqrt(5) = t * sqrt(0.5)
    assert mean == 3.0
    assert (low, high) == pytest.approx((3.0 - T975[4] * math.sqrt(0.5), 3.0 + T975[4] * math.sqrt(0.5)), rel=1e-12)
    assert mean_ci([0.25, 0.25, 0.25]) == (0.25, 0.25, 0.25)
    one = mean_ci([7.0])
    assert one[0] == 7.0 and math.isnan(one[1]) and math.isnan(one[2])
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_an_accuracy_interval_stays_inside_zero_and_one() -> None:
    # the README's old row: two seeds near 0.93 and one collapsed to 0.1135 read "0.660 +- 1.18"
    values = [0.917, 0.948, 0.1135]
    mean, low, high = mean_ci(values)
    assert low < 0.0 and high > 1.0  # the raw t-interval leaves [0, 1] on both sides
    assert mean_ci(values, bounds=(0.0, 1.0)) == (mean, 0.0, 1.0)
    # a tight interval is not touched by the bounds
    assert mean_ci([0.95, 0.96, 0.97], bounds=(0.0, 1.0)) == mean_ci([0.95, 0.96, 0.97])
    s = summarize({"Adam": values}, higher_is_better=True, bounds=(0.0, 1.0))[0]
    assert (s.low, s.high) == (0.0, 1.0) and s.interval() == "0.6595 [0, 1]"


def test_welch_p_value_on_known_numbers() -> None:
    # t = -1.7348, Welch-Satterthwaite dof = 6.938; the same p to 1e-12 as the continued-fraction
    # implementation (Numerical Recipes 6.4) this module replaced, and R's t.test (0.136)
    assert welch_p_value([1, 2, 3, 4.5], [2, 3.1, 5, 6, 7]) == pytest.approx(0.13601276255797104, rel=1e-12)
    assert welch_p_value([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert math.isnan(welch_p_value([1.0], [1.0, 2.0]))


def test_a_clear_winner_and_a_tie() -> None:
    s = {x.label: x for x in summarize(FIVE, higher_is_better=True)}
    assert s["A"].best and s["A"].status == "best" and math.isnan(s["A"].p_value)
    assert s["B"].status == "within noise" and s["B"].p_value == pytest.approx(welch_p_value(FIVE["B"], FIVE["A"]))
    assert s["C"].status == "worse beyond noise" and s["C"].p_value < 1e-6
    assert verdict(list(s.values())) == "no winner: A has the best mean; B is within noise of it (Welch p >= 0.05)"
    # lower is better: C is best, both others beyond noise: a winner is named
    s = summarize(FIVE, higher_is_better=False)
    assert [x.label for x in s if x.best] == ["C"]
    assert verdict(s) == "C is best; A and B are worse beyond noise (Welch p < 0.05)"


def test_an_arm_with_a_diverged_seed_is_never_best_over_one_without() -> None:
    # D has by far the best mean on the seeds it finished, but diverged on 2 of 5
    values = {**FIVE, "D": [0.99, 0.99, 0.98, math.nan, math.nan]}
    s = {x.label: x for x in summarize(values, higher_is_better=True)}
    assert s["A"].best and not s["D"].best
    assert s["D"].status == "diverged" and (s["D"].n, s["D"].diverged, s["D"].seeds) == (3, 2, 5)
    assert s["D"].mean == pytest.approx(0.98666666, rel=1e-6)  # the mean is of the finite seeds
    assert s["D"].divergence() == "2 of 5 diverged"
    text = verdict(list(s.values()))
    assert "D (2 of 5 seeds) diverged and cannot be best" in text and text.startswith("no winner: A has the best mean")


def test_when_every_arm_diverged_somewhere_the_fewest_divergences_rank_first() -> None:
    values = {"A": [0.9, 0.91, 0.92, math.nan], "B": [0.99, 0.98, math.nan, math.nan]}
    s = {x.label: x for x in summarize(values, higher_is_better=True)}
    assert s["A"].best and s["B"].status in ("within noise", "worse beyond noise")
    assert "every optimizer with 2 or more finite seeds diverged on some seeds (A: 1 of 4 diverged)" in verdict(
        list(s.values())
    )


def test_fewer_than_two_finite_seeds_is_not_enough_never_within_noise() -> None:
    values = {"A": FIVE["A"], "E": [0.95]}
    s = {x.label: x for x in summarize(values, higher_is_better=True)}
    assert s["E"].status == "not enough seeds" and s["E"].within_noise is None and math.isnan(s["E"].p_value)
    text = verdict(list(s.values()))
    assert text.startswith("no winner: A has the best mean") and "within noise" not in text
    assert "not enough seeds to compare E (1 finite of 1)" in text
    # no arm with 2 finite seeds: nothing is compared
    s = summarize({"A": [0.9], "B": [0.8]}, higher_is_better=True)
    assert not any(x.best for x in s) and verdict(s).startswith(
        "no comparison: no optimizer has 2 or more finite seeds"
    )


def test_one_arm_claims_no_comparison() -> None:
    (s,) = summarize({"Adam": FIVE["A"]}, higher_is_better=True)
    assert s.status == "only arm"
    assert verdict([s]) == "one optimizer, no comparison: Adam 0.9 [0.8804, 0.9196], 0 of 5 diverged"


@pytest.mark.parametrize("seeds", [2, 3, 4])
def test_fewer_than_five_seeds_say_the_comparison_is_weak(seeds: int) -> None:
    s = summarize({k: v[:seeds] for k, v in FIVE.items()}, higher_is_better=True)
    assert verdict(s).endswith(
        f"weak comparison: {seeds} seeds per optimizer, 5 or more are needed to separate optimizers"
    )
    assert "weak" not in verdict(summarize(FIVE, higher_is_better=True))
