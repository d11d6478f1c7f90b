r"""The statistics of a comparison: per-arm summaries over seeds, divergence counted, and the verdict.

>>> from optimlab.stats import summarize, verdict
>>> s = summarize({"A": [0.96, 0.97, 0.96, 0.97, 0.96], "B": [0.90, 0.91, 0.90, 0.91, 0.90]}, higher_is_better=True)
>>> verdict(s)
'A is best; B is worse beyond noise (Welch p < 0.05)'

**What a seed is worth.**  A seed whose run diverged (non-finite, or absurd by the task's own
ceiling: :func:`optimlab.protocol.final_value` turns both into NaN) is a *result*, not a missing
value: each arm reports ``diverged`` of ``seeds`` next to its mean, and the mean and interval
are over the finite seeds only.  Arms are ranked first by whether any seed diverged, then by
mean: an arm with a diverged seed is never best over one without, and the verdict names it.
An arm with fewer than 2 finite seeds has no spread to test: it is "not enough seeds", never
"within noise".

**Interval: Student's t, clipped to the metric's range.**  ``mean ± t_{0.975, n-1} s/√n``
over the finite seeds, then intersected with the range the metric can take (``bounds``; an
accuracy's is ``[0, 1]``).  Why this and not a bootstrap: with the 3 to 10 seeds a comparison
affords, a percentile bootstrap is known to cover too little (it cannot be wider than the
sample's own range, and with 3 seeds it has only 10 distinct resamples), while the t-interval is
the standard small-sample interval that readers know.  Why clipping is honest: the true mean
lies inside the metric's range, so removing the part of the interval outside it cannot remove
the true mean; the coverage is unchanged and the interval no longer claims impossible values
(3 seeds of an accuracy that collapsed once read ``0.66 ± 1.18`` before; now ``[0, 1]``).  The
interval is therefore given as ``(low, high)``, not as a half-width.

**Test: Welch's t-test** against the reference arm (the best ranked), two-sided, unequal
variances (``scipy.stats.ttest_ind(..., equal_var=False)``); ``p >= alpha`` (0.05) makes the
pair *within noise*, and no winner is claimed while any arm is within noise of the best or has
too few seeds to tell.  Two constant samples (nothing to estimate a variance from) give p = 1
when their means are equal and 0 otherwise.  With fewer than :data:`WEAK_SEEDS` seeds per arm
the verdict says the comparison is weak: with 2 to 4 seeds a t-test detects only differences of
several standard deviations.  With one arm nothing is compared.

References: B. L. Welch, "The generalization of Student's problem when several different
population variances are involved", Biometrika 34 (1947); B. Efron & R. Tibshirani, *An
Introduction to the Bootstrap* (1993), on the percentile interval and its coverage in small samples.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass

from scipy import stats as _scipy

from .optim._validate import check_range

__all__ = [
    "STATUSES",
    "WEAK_SEEDS",
    "Summary",
    "mean_ci",
    "student_t_quantile",
    "summarize",
    "verdict",
    "welch_p_value",
]

#: Fewer seeds per arm than this and the verdict says the comparison is weak.
WEAK_SEEDS = 5

#: The statuses of :attr:`Summary.status`.
STATUSES = ("best", "within noise", "worse beyond noise", "diverged", "not enough seeds", "only arm")

_UNBOUNDED = (-math.inf, math.inf)


def student_t_quantile(probability: float, dof: float) -> float:
    """The ``probability`` quantile of Student's t with ``dof > 0`` degrees of freedom (scipy's ``t.ppf``)."""
    check_range("student_t_quantile", "probability", probability, 0.5, 1.0, low_open=True, high_open=True)
    check_range("student_t_quantile", "dof", dof, 0.0, low_open=True)
    return float(_scipy.t.ppf(probability, dof))


def mean_ci(
    values: Sequence[float], confidence: float = 0.95, bounds: tuple[float, float] = _UNBOUNDED
) -> tuple[float, float, float]:
    r"""``(mean, low, high)``: the Student-t interval :math:`\bar x \pm t_{(1+c)/2,\,n-1}\, s/\sqrt n`
    intersected with ``bounds`` (see the module docstring).

    ``s`` is the sample standard deviation (divisor :math:`n-1`).  One value: ``low`` and ``high``
    NaN; none: all NaN.
    """
    check_range("mean_ci", "confidence", confidence, 0.0, 1.0, low_open=True, high_open=True)
    if not (isinstance(bounds, tuple) and len(bounds) == 2 and bounds[0] < bounds[1]):
        raise ValueError(f"mean_ci: invalid bounds={bounds!r}: expected (low, high) with low < high")
    xs = [float(v) for v in values]
    n = len(xs)
    if n == 0:
        return math.nan, math.nan, math.nan
    mean = math.fsum(xs) / n
    if n == 1:
        return mean, math.nan, math.nan
    sd = math.sqrt(math.fsum((x - mean) ** 2 for x in xs) / (n - 1))
    half = student_t_quantile((1.0 + confidence) / 2.0, n - 1) * sd / math.sqrt(n)
    return mean, max(mean - half, bounds[0]), min(mean + half, bounds[1])


def welch_p_value(a: Sequence[float], b: Sequence[float]) -> float:
    """Welch's two-sided t-test of equal means: the p-value (NaN with fewer than 2 values on a side).

    Both samples constant: 1 if the means are equal, else 0 (scipy gives NaN there).
    """
    a, b = [float(x) for x in a], [float(x) for x in b]
    if len(a) < 2 or len(b) < 2:
        return math.nan
    if len(set(a)) == 1 and len(set(b)) == 1:
        return 1.0 if a[0] == b[0] else 0.0
    return float(_scipy.ttest_ind(a, b, equal_var=False).pvalue)


@dataclass(frozen=True)
class Summary:
    """The final metric of one arm over its seeds, compared with the reference (best-ranked) arm.

    ``values``: every seed's value (NaN where it diverged); ``n``: the finite ones; ``mean``,
    ``low``, ``high``: over those (:func:`mean_ci`); ``diverged`` of ``seeds``; ``best``: the
    reference of the comparison; ``p_value``: Welch's test against it (NaN where not computed);
    ``status``: one of :data:`STATUSES`.
    """

    label: str
    values: tuple[float, ...]
    mean: float
    low: float
    high: float
    n: int
    diverged: int
    best: bool
    p_value: float
    status: str

    @property
    def seeds(self) -> int:
        return len(self.values)

    @property
    def within_noise(self) -> bool | None:
        """``True``/``False`` where Welch's test was decided; ``None`` otherwise."""
        return {"within noise": True, "worse beyond noise": False}.get(self.status)

    def interval(self, digits: int = 4) -> str:
        """``0.9612 [0.9549, 0.9675]`` (mean and interval), ``0.25 (1 seed)``, or ``—`` with no finite seed."""
        if self.n == 0:
            return "—"
        if self.n == 1:
            return f"{self.mean:.{digits}g} (1 finite seed)"
        return f"{self.mean:.{digits}g} [{self.low:.{digits}g}, {self.high:.{digits}g}]"

    def divergence(self) -> str:
        """``0 of 5 diverged``."""
        return f"{self.diverged} of {self.seeds} diverged"


def summarize(
    values: Mapping[str, Sequence[float]],
    higher_is_better: bool,
    *,
    bounds: tuple[float, float] = _UNBOUNDED,
    confidence: float = 0.95,
    alpha: float = 0.05,
) -> list[Summary]:
    """The :class:`Summary` of each label's final metric over seeds (NaN: a diverged seed).

    The reference arm is, among arms with 2 or more finite seeds, the one without a diverged seed
    and with the best mean (highest where ``higher_is_better``); only if every such arm has a
    diverged seed, the one with the fewest, then the best mean.  See the module docstring.
    """
    check_range("summarize", "alpha", alpha, 0.0, 1.0, low_open=True, high_open=True)
    if not values:
        raise ValueError("summarize: invalid values={}: expected at least one arm")
    sign = -1.0 if higher_is_better else 1.0
    finite = {label: [float(v) for v in raw if math.isfinite(v)] for label, raw in values.items()}
    diverged = {label: len(raw) - len(finite[label]) for label, raw in values.items()}
    stats = {label: mean_ci(v, confidence, bounds) for label, v in finite.items()}
    ranked = [label for label in values if len(finite[label]) >= 2]
    best = min(ranked, key=lambda label: (diverged[label] > 0, diverged[label], sign * stats[label][0]), default=None)
    out = []
    for label, raw in values.items():
        p = math.nan
        if len(values) == 1:
            status = "only arm"
        elif label == best:
            status = "best"
        elif diverged[label] and best is not None and not diverged[best]:
            status = "diverged"  # never best over an arm that has no diverged seed, whatever its mean
        elif len(finite[label]) < 2 or best is None:
            status = "not enough seeds"
        else:
            p = welch_p_value(finite[label], finite[best])
            status = "within noise" if p >= alpha else "worse beyond noise"
        out.append(
            Summary(label, tuple(float(v) for v in raw), *stats[label], len(finite[label]), diverged[label],
                    label == best, p, status)
        )  # fmt: skip
    return out


def verdict(summaries: Sequence[Summary], alpha: float = 0.05) -> str:
    """The comparison in words: a winner only where every other arm is worse beyond noise or diverged
    (and the best did not); the arms that diverged, too few seeds, and a weak comparison are named."""
    if not summaries:
        raise ValueError("verdict: invalid summaries=[]: expected at least one arm")
    if len(summaries) == 1:
        s = summaries[0]
        return f"one optimizer, no comparison: {s.label} {s.interval()}, {s.divergence()}"
    by = {status: [s.label for s in summaries if s.status == status] for status in STATUSES}
    best = next((s for s in summaries if s.best), None)
    parts = []
    if best is None:
        parts.append("no comparison: no optimizer has 2 or more finite seeds")
    elif by["within noise"] or by["not enough seeds"]:
        parts.append(f"no winner: {best.label} has the best mean")
        if by["within noise"]:
            parts.append(
                f"{_join(by['within noise'])} {_is(by['within noise'])} within noise of it (Welch p >= {alpha:g})"
            )
    else:
        parts.append(f"{best.label} is best")
        if by["worse beyond noise"]:
            worse = by["worse beyond noise"]
            parts.append(f"{_join(worse)} {_is(worse)} worse beyond noise (Welch p < {alpha:g})")
    if by["diverged"]:
        counts = [f"{s.label} ({s.diverged} of {s.seeds} seeds)" for s in summaries if s.status == "diverged"]
        parts.append(f"{_join(counts)} diverged and cannot be best over an optimizer that never did")
    if best is not None and best.diverged:
        parts.append(
            f"every optimizer with 2 or more finite seeds diverged on some seeds ({best.label}: {best.divergence()})"
        )
    if by["not enough seeds"]:
        few = [f"{s.label} ({s.n} finite of {s.seeds})" for s in summaries if s.status == "not enough seeds"]
        parts.append(f"not enough seeds to compare {_join(few)}: 2 or more finite seeds are needed")
    fewest = min(s.seeds for s in summaries)
    if fewest < WEAK_SEEDS:
        parts.append(f"weak comparison: {fewest} seed{'s' if fewest != 1 else ''} per optimizer, "
                     f"{WEAK_SEEDS} or more are needed to separate optimizers")  # fmt: skip
    return "; ".join(parts)


def _join(items: Sequence[str]) -> str:
    return items[0] if len(items) == 1 else f"{', '.join(items[:-1])} and {items[-1]}"


def _is(items: Sequence[str]) -> str:
    return "is" if len(items) == 1 else "are"
