"""The fair protocol: statistics on known numbers, equal tuning budgets, resume, divergence, warmup."""

from __future__ import annotations

import math
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

import pytest
import torch

from optimlab import protocol, runner
from optimlab.protocol import (
    WarmupTask,
    arm,
    compare,
    evaluate,
    lr_sensitivity,
    mean_ci,
    student_t_quantile,
    summarize,
    tune,
    verdict,
    welch_p_value,
)
from optimlab.store import Store
from optimlab.tasks import Instance, get

DATA = Path(os.environ.get("OPTIMLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    if not (DATA / "airfoil").exists():
        pytest.skip(f"real data not staged under {DATA} (set OPTIMLAB_DATA_DIR)")
    monkeypatch.setenv("OPTIMLAB_DATA_DIR", str(DATA))


# ---------------------------------------------------------------------------------------------
# Statistics on known numbers
# ---------------------------------------------------------------------------------------------

# Student t quantiles t_{0.975, dof} (scipy 1.17 stats.t.ppf; the textbook tables' 12.706, 2.776, 2.262, 1.960)
T975 = {1: 12.706204736174694, 4: 2.7764451051977934, 9: 2.262157162798205, 1000: 1.9623390808264083}


@pytest.mark.parametrize("dof", sorted(T975))
def test_student_t_quantile_matches_the_tables(dof: int) -> None:
    assert student_t_quantile(0.975, dof) == pytest.approx(T975[dof], rel=1e-12)


def test_student_t_quantile_other_levels() -> None:
    assert student_t_quantile(0.95, 4) == pytest.approx(2.1318467863266495, rel=1e-12)  # scipy.stats.t.ppf(0.95, 4)
    assert student_t_quantile(0.995, 2.5) == pytest.approx(7.163728138948783, rel=1e-12)  # scipy, non-integer dof


def test_mean_ci_on_known_numbers() -> None:
    mean, half = mean_ci([1.0, 2.0, 3.0, 4.0, 5.0])
    assert mean == 3.0
    # s = sqrt(2.5), n = 5: t_{0.975,4} * s / sqrt(5) = 2.7764451051977987 * sqrt(0.5)
    assert half == pytest.approx(T975[4] * math.sqrt(0.5), rel=1e-12)
    assert mean_ci([0.25, 0.25, 0.25]) == (0.25, 0.0)
    assert math.isnan(mean_ci([7.0])[1]) and mean_ci([7.0])[0] == 7.0
    with pytest.raises(ValueError, match="confidence"):
        mean_ci([1.0, 2.0], confidence=1.5)


def test_welch_p_value_on_known_numbers() -> None:
    # scipy.stats.ttest_ind(a, b, equal_var=False).pvalue = 0.13601276255797104 (t = -1.7348, dof = 6.938)
    assert welch_p_value([1, 2, 3, 4.5], [2, 3.1, 5, 6, 7]) == pytest.approx(0.13601276255797104, rel=1e-12)
    assert welch_p_value([1.0, 1.0], [1.0, 1.0]) == 1.0
    assert welch_p_value([1.0, 1.0], [2.0, 2.0]) == 0.0
    assert math.isnan(welch_p_value([1.0], [1.0, 2.0]))


def test_within_noise_flag_on_a_constructed_case() -> None:
    values = {
        "A": [0.90, 0.91, 0.89, 0.92, 0.88],  # mean 0.900
        "B": [0.90, 0.89, 0.91, 0.88, 0.895],  # mean 0.895: inside A's spread
        "C": [0.70, 0.71, 0.69, 0.72, 0.70],  # far below
        "D": [0.95, math.nan, math.nan, math.nan, math.nan],  # diverged 4 of 5: one value, no test possible
    }
    s = {x.label: x for x in summarize(values, higher_is_better=True)}
    assert s["D"].best and s["D"].n == 1 and s["D"].diverged == 4  # the best mean, but no test is possible
    assert s["A"].within_noise is None and s["B"].within_noise is None and s["C"].within_noise is None
    s = {x.label: x for x in summarize({k: values[k] for k in "ABC"}, higher_is_better=True)}
    assert s["A"].best and s["A"].within_noise is None and math.isnan(s["A"].p_value)
    assert s["B"].within_noise is True and s["B"].p_value == pytest.approx(welch_p_value(values["B"], values["A"]))
    assert s["C"].within_noise is False and s["C"].p_value < 1e-6
    assert verdict(list(s.values())).startswith("no winner: A has the best mean, but B is within noise")
    # lower is better: C is best, and both others are beyond noise: a winner may be named
    s = summarize({k: values[k] for k in "ABC"}, higher_is_better=False)
    assert [x.label for x in s if x.best] == ["C"] and all(x.within_noise is False for x in s if not x.best)
    assert verdict(s).startswith("C is best")


# ---------------------------------------------------------------------------------------------
# Optimizer names
# ---------------------------------------------------------------------------------------------


def test_arm_resolves_presets_and_fixed_hyperparameters() -> None:
    nag = arm("NAG")
    assert (nag.label, nag.optimizer, dict(nag.hyperparameters)) == ("NAG", "optimlab.SGD", {"momentum": 0.9, "nesterov": True})
    assert arm("amsgrad").hyperparameters == {"amsgrad": True}
    adamw = arm(("AdamW", {"weight_decay": 0.01}))
    assert (adamw.label, adamw.optimizer) == ("AdamW(weight_decay=0.01)", "optimlab.AdamW")
    assert arm("torch.SGD").optimizer == "torch.SGD"
    with pytest.raises(ValueError, match="Adamm"):
        arm("Adamm")
    with pytest.raises(ValueError, match="betaz"):
        arm(("Adam", {"betaz": 0.9}))
    with pytest.raises(ValueError, match="given twice"):
        tune("airfoil-linreg", ["Adam", "Adam"], trials=1)


def test_invalid_arguments_name_the_parameter() -> None:
    with pytest.raises(ValueError, match="trials"):
        tune("airfoil-linreg", ["Adam"], trials=0)
    with pytest.raises(ValueError, match=r"lr_range\[1\]"):
        tune("airfoil-linreg", ["Adam"], lr_range=(1e-2, 1e-3))
    with pytest.raises(ValueError, match="extra_space name 'lr'"):
        tune("airfoil-linreg", ["Adam"], extra_space={"lr": ("log", 1e-3, 1.0)})
    with pytest.raises(ValueError, match="extra_space"):
        tune("airfoil-linreg", ["Adam"], extra_space={"eps": ("cubic", 1e-3, 1.0)})
    with pytest.raises(ValueError, match="seeds"):
        compare("airfoil-linreg", ["Adam"], seeds=0)
    with pytest.raises(ValueError, match="lrs"):
        lr_sensitivity("airfoil-linreg", "Adam", [])


# ---------------------------------------------------------------------------------------------
# Tuning: equal budgets, resume, divergence
# ---------------------------------------------------------------------------------------------


class _CountingTrain:
    """Wraps the runner's training to count real trainings, optionally raising Ctrl-C at one of them."""

    def __init__(self, interrupt_at: int | None = None) -> None:
        self.calls = 0
        self.interrupt_at = interrupt_at
        self.inner = runner._train

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        self.calls += 1
        if self.calls == self.interrupt_at:
            raise KeyboardInterrupt
        return self.inner(*args, **kwargs)


def _trials(result: Mapping[str, protocol.Tuned]) -> dict[str, list[tuple[dict[str, Any], float]]]:
    return {label: [(dict(t.suggested), t.value) for t in tuned.trials] for label, tuned in result.items()}


def test_every_optimizer_gets_the_same_trials_and_an_interrupted_tuning_resumes(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    optimizers = ["Adam", "Momentum"]
    with Store(tmp_path / "reference.sqlite") as store:
        reference = tune("airfoil-linreg", optimizers, "smoke", trials=4, seed=3, store=store, progress=False)
    assert [len(t.trials) for t in reference.values()] == [4, 4]
    # one seeded sampler per optimizer: both try the same learning rates (common random numbers)
    assert [t.suggested for t in reference["Adam"].trials] == [t.suggested for t in reference["Momentum"].trials]
    assert all(1e-5 <= t.suggested["lr"] <= 1.0 for t in reference["Adam"].trials)
    assert reference["Momentum"].hyperparameters["momentum"] == 0.9
    best = min(reference["Adam"].trials, key=lambda t: t.value)
    assert reference["Adam"].value == best.value and reference["Adam"].hyperparameters == best.suggested

    path = tmp_path / "lab.sqlite"
    interrupted = _CountingTrain(interrupt_at=3)  # Ctrl-C during Adam's third trial
    monkeypatch.setattr(runner, "_train", interrupted)
    with Store(path) as store, pytest.raises(KeyboardInterrupt):
        tune("airfoil-linreg", optimizers, "smoke", trials=4, seed=3, store=store, progress=False)
    with Store(path) as store:
        stored = store.runs()
        assert sorted(r["status"] for r in stored) == ["finished", "finished", "interrupted"]
        started = {r["key"]: r["started"] for r in stored if r["status"] == "finished"}

    resumed_train = _CountingTrain()
    monkeypatch.setattr(runner, "_train", resumed_train)
    with Store(path) as store:
        resumed = tune("airfoil-linreg", optimizers, "smoke", trials=4, seed=3, store=store, progress=False)
        assert resumed_train.calls == 2 + 4  # Adam's trials 3 and 4, then Momentum's four: nothing re-run
        assert _trials(resumed) == _trials(reference)  # nothing lost: the same trials and values
        after = {r["key"]: r for r in store.runs()}
        assert all(after[key]["started"] == t and after[key]["attempt"] == 1 for key, t in started.items())
        assert len(after) == 8 and all(r["status"] == "finished" for r in after.values())
        # a third pass trains nothing
        again = _CountingTrain()
        monkeypatch.setattr(runner, "_train", again)
        tune("airfoil-linreg", optimizers, "smoke", trials=4, seed=3, store=store, progress=False)
        assert again.calls == 0


def test_diverged_trials_count_as_the_worst_value(tmp_path: Path) -> None:
    with Store(tmp_path / "lab.sqlite") as store:
        result = tune("airfoil-linreg", ["SGD"], "smoke", trials=2, seed=0, store=store, lr_range=(1e4, 1e6), progress=False)
    trials = result["SGD"].trials
    assert [t.status for t in trials] == ["diverged", "diverged"]
    assert all(t.value == math.inf for t in trials)  # airfoil's loss is minimised: the worst is +inf
    assert result["SGD"].value == math.inf


def test_compare_runs_the_choice_at_seeds_other_than_the_tuning_seed(tmp_path: Path) -> None:
    with Store(tmp_path / "lab.sqlite") as store:
        result = compare("airfoil-linreg", ["Adam", "NAG"], "smoke", seeds=3, trials=2, seed=0, store=store, progress=False)
        runs = store.runs()
    assert {len(t.trials) for t in result.tuned.values()} == {2}
    assert result.metric == "full_loss" and not result.higher_is_better
    for tuned in result.tuned.values():
        name, hp = runner.optimizer_spec(tuned.arm.optimizer, tuned.hyperparameters)
        chosen = [r["config"]["seed"] for r in runs if (r["config"]["optimizer"], r["config"]["hyperparameters"]) == (name, hp)]
        assert sorted(seed for seed in chosen if seed != 0) == [1, 2, 3]  # seed 0 only if it was the best trial
    summaries = {s.label: s for s in result.summaries}
    for label, finals in result.finals.items():
        values = [f["full_loss"] for f in finals]
        assert summaries[label].n == 3 and summaries[label].mean == pytest.approx(sum(values) / 3, rel=1e-15)
    # run as given: the same numbers come back from the store, nothing trains
    with Store(tmp_path / "lab.sqlite") as store:
        again = evaluate("airfoil-linreg", [("Adam", dict(result.tuned["Adam"].hyperparameters))], "smoke", 3, 0, store, progress=False)
    (finals,) = again.finals.values()
    assert finals == result.finals["Adam"]


def test_lr_sensitivity_rows(tmp_path: Path) -> None:
    with Store(tmp_path / "lab.sqlite") as store:
        rows = lr_sensitivity("airfoil-linreg", "RAdam", [0.003, 0.1, 1e5], seeds=2, store=store, progress=False)
    assert [(r["lr"], r["seed"]) for r in rows] == [(0.003, 1), (0.003, 2), (0.1, 1), (0.1, 2), (1e5, 1), (1e5, 2)]
    assert all(math.isfinite(r["value"]) and r["diverged"] == 0 for r in rows[:4])
    assert rows[0]["value"] != rows[1]["value"]  # seeds differ


# ---------------------------------------------------------------------------------------------
# Warmup
# ---------------------------------------------------------------------------------------------


class _OneParameter(Instance):
    """A stand-in instance: one parameter, a constant gradient, so only the schedule moves the lr."""

    steps_per_epoch = 1

    def __init__(self) -> None:
        self.w = torch.nn.Parameter(torch.zeros(1))

    def parameters(self) -> dict[str, list[torch.nn.Parameter]]:
        return {"model": [self.w]}

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        yield None

    def step(self, batch: Any, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        (opt,) = optimizers.values()
        self.seen = opt.param_groups[0]["lr"]
        opt.zero_grad()
        self.w.grad = torch.ones(1)
        opt.step()
        return {"loss": self.w.detach().sum()}

    def evaluate(self, split: str) -> dict[str, float]:
        return {}


@pytest.mark.parametrize("warmup, factors", [(4, [0.25, 0.5, 0.75, 1.0, 1.0]), ("untuned", [0.05, 0.1, 0.15, 0.2, 0.25])])
def test_warmup_task_scales_each_step(warmup: int | str, factors: list[float]) -> None:
    inner = _OneParameter()
    instance = protocol._WarmupInstance(inner, warmup)
    opt = torch.optim.Adam(inner.parameters()["model"], lr=0.5, betas=(0.9, 0.9))  # untuned: over 2/(1-0.9) = 20 steps
    seen = []
    for _ in factors:
        instance.step(None, {"model": opt})
        seen.append(inner.seen)
    assert seen == pytest.approx([0.5 * f for f in factors], rel=1e-12)
    task = WarmupTask(get("airfoil-linreg"), warmup)
    assert task.name == f"airfoil-linreg+warmup={warmup}" and task.metric == "loss"
    with pytest.raises(ValueError, match="warmup"):
        WarmupTask(get("airfoil-linreg"), 0)


def test_warmup_runs_are_stored_under_their_own_task_name(tmp_path: Path) -> None:
    with Store(tmp_path / "lab.sqlite") as store:
        plain = evaluate("airfoil-linreg", ["Adam"], "smoke", 2, 0, store, progress=False)
        warm = evaluate("airfoil-linreg", ["Adam"], "smoke", 2, 0, store, warmup=10, progress=False)
        assert {r["config"]["task"] for r in store.runs()} == {"airfoil-linreg", "airfoil-linreg+warmup=10"}
    assert warm.task == "airfoil-linreg+warmup=10"
    assert warm.finals["Adam"][0]["full_loss"] != plain.finals["Adam"][0]["full_loss"]


# ---------------------------------------------------------------------------------------------
# The slower tasks
# ---------------------------------------------------------------------------------------------


@pytest.mark.slow
@pytest.mark.parametrize("task", ["gan-ring", "mnist-cnn"])
def test_compare_on_a_network_task(task: str, tmp_path: Path) -> None:
    if task == "mnist-cnn" and not (DATA / "mnist").exists():
        pytest.skip("MNIST not staged")
    with Store(tmp_path / "lab.sqlite") as store:
        result = compare(task, ["Adam", "NAG"], "smoke", seeds=2, trials=2, seed=0, store=store, progress=False)
    assert {len(t.trials) for t in result.tuned.values()} == {2}
    assert result.metric == {"gan-ring": "test_coverage", "mnist-cnn": "test_accuracy"}[task] and result.higher_is_better
    assert all(s.n + s.diverged == 2 for s in result.summaries)
