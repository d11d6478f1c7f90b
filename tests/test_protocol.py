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
    LR_RANGE,
    WarmupTask,
    arm,
    compare,
    default_lr_range,
    evaluate,
    final_value,
    lr_sensitivity,
    range_edge,
    read_tuning_meta,
    tune,
)
from optimlab.stats import summarize
from optimlab.store import Store
from optimlab.tasks import Instance, get

DATA = Path(os.environ.get("OPTIMLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    if not (DATA / "airfoil").exists():
        pytest.skip(f"real data not staged under {DATA} (set OPTIMLAB_DATA_DIR)")
    monkeypatch.setenv("OPTIMLAB_DATA_DIR", str(DATA))


# ---------------------------------------------------------------------------------------------
# Optimizer names
# ---------------------------------------------------------------------------------------------


def test_arm_resolves_presets_and_fixed_hyperparameters() -> None:
    nag = arm("NAG")
    assert (nag.label, nag.optimizer, dict(nag.hyperparameters)) == ("NAG(lr=0.001)", "optimlab.SGD", {"momentum": 0.9, "nesterov": True})
    assert arm("amsgrad").hyperparameters == {"amsgrad": True}
    adamw = arm(("AdamW", {"weight_decay": 0.02}))
    assert (adamw.label, adamw.optimizer) == ("AdamW(lr=0.001, weight_decay=0.02)", "optimlab.AdamW")
    assert arm("AdamW(weight_decay=0.02)") == adamw
    assert arm("torch.SGD").optimizer == "torch.SGD"
    assert arm("Adam(beta1=0.5)").hyperparameters == {"betas": [0.5, 0.999]}
    look = arm("Lookahead(Adam(lr=0.01), k=3)")
    assert (look.label, dict(look.hyperparameters)) == (
        "Lookahead(Adam(lr=0.01), k=3)",
        {"optimizer": {"name": "optimlab.Adam", "hyperparameters": {"lr": 0.01}}, "k": 3},
    )
    with pytest.raises(ValueError, match="Adamm"):
        arm("Adamm")
    with pytest.raises(ValueError, match="betaz"):
        arm(("Adam", {"betaz": 0.9}))
    with pytest.raises(ValueError, match="given twice"):
        tune("airfoil-linreg", ["Adam", "adam"], trials=1)
    with pytest.raises(ValueError, match=r"'Adam\(lr=0.001\)' and 'Adam' both run as Adam\(lr=0.001\)"):
        evaluate("airfoil-linreg", ["Adam", "Adam(lr=0.001)"], seeds=1)


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
    assert result["SGD"].edges == []  # the "best" of diverged trials is the first, wherever it lies: no edge


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
    adam = result.tuned["Adam"]
    assert adam.label.startswith("Adam(lr=") and adam.label.endswith("*)")  # the summary names the lr that ran
    assert float(adam.label[len("Adam(lr=") : -2]) == pytest.approx(adam.spec.hyperparameters["lr"], rel=5e-3)
    assert finals == result.finals[adam.label]


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
    assert warm.finals["Adam(lr=0.001)"][0]["full_loss"] != plain.finals["Adam(lr=0.001)"][0]["full_loss"]


# ---------------------------------------------------------------------------------------------
# Divergence and uncertainty are results (issue 10, "Why" 2)
# ---------------------------------------------------------------------------------------------


def _printed(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    from optimlab.cli import main

    assert main(argv) == 0
    return [line for line in capsys.readouterr().err.splitlines() if "it/s" not in line and "run/s" not in line]


def test_a_diverged_optimizer_is_named_not_within_noise(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = str(tmp_path / "lab.sqlite")
    lines = _printed(capsys, ["run", "--task", "airfoil-linreg", "--opt", "SGD(lr=1000)", "--opt", "Adam(lr=0.01)",
                              "--seeds", "3", "--budget", "smoke", "--store", store])  # fmt: skip
    (sgd,) = [line for line in lines if line.strip().startswith("SGD(lr=1000)")]
    assert "3 of 3 diverged" in sgd and sgd.rstrip().endswith("diverged") and "nan" not in sgd
    text = lines[-1]
    assert text.startswith("Adam(lr=0.01) is best") and "within noise" not in text
    assert "SGD(lr=1000) (3 of 3 seeds) diverged and cannot be best" in text
    assert "weak comparison: 3 seeds per optimizer" in text


def test_one_optimizer_claims_no_comparison(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    lines = _printed(capsys, ["run", "--task", "airfoil-linreg", "--opt", "Adam(lr=0.01)", "--seeds", "2",
                              "--budget", "smoke", "--store", str(tmp_path / "lab.sqlite")])  # fmt: skip
    assert lines[-1].startswith("one optimizer, no comparison: Adam(lr=0.01) ")
    assert "worse beyond noise" not in "\n".join(lines)


def test_intervals_stay_inside_what_each_task_metric_can_be() -> None:
    assert get("mnist-cnn").metric_bounds == (0.0, 1.0) and get("mnist-dcgan").metric_bounds == (0.0, 1.0)
    assert get("airfoil-linreg").metric_bounds == (0.0, math.inf) and get("house-mlp").metric_bounds == (0.0, math.inf)
    # SGD(lr=1) on airfoil (smoke, 5 seeds) read 4.116 [-1.037, 9.269]: a squared loss cannot be negative
    values = {"SGD(lr=1)": [0.3, 0.4, 0.35, 19.1, 0.43], "SGD(lr=0.3)": [0.25, 0.26, 0.24, 0.25, 0.26]}
    (wide, _) = summarize(values, higher_is_better=False, bounds=get("airfoil-linreg").metric_bounds)
    assert wide.low == 0.0 and wide.high > 10


def test_an_absurd_house_price_error_counts_as_divergence(tmp_path: Path) -> None:
    house = get("house-mlp")
    # a run stored before the ceiling existed: RMSE $3.5e16, flagged finished
    assert math.isnan(final_value(house, {"test_rmse": 3.5e16, "diverged": 0}))
    assert final_value(house, {"test_rmse": 2.5e5, "diverged": 0}) == 2.5e5
    if not (DATA / "kc-house").exists():
        pytest.skip("King County data not staged")
    # SGD at lr 0.6 blows the training loss up 1e6-fold within the one smoke epoch (measured: mean 1.1e6)
    result = runner.run("house-mlp", "SGD", {"lr": 0.6}, seed=1, budget="smoke", progress=False)
    assert result["status"] == "diverged" and result["final"]["diverged"] == 1


# ---------------------------------------------------------------------------------------------
# Tuning tunes what is free, labels say what ran, failures and a second process (issue 10, "Why" 1, 3, 6)
# ---------------------------------------------------------------------------------------------


def _lab(capsys: pytest.CaptureFixture[str], argv: list[str]) -> list[str]:
    from optimlab.cli import main

    assert main([*argv, "--budget", "smoke"]) == 0
    return [line for line in capsys.readouterr().err.splitlines() if "/s]" not in line and "/s," not in line]


def _stored(path: Path) -> list[dict[str, Any]]:
    with Store(path) as store:
        return store.runs()


def test_a_fixed_lr_is_never_tuned_and_the_label_says_what_ran(tmp_path: Path, capsys: pytest.CaptureFixture[str]):
    path = tmp_path / "lab.sqlite"
    argv = ["tune", "--task", "airfoil-linreg", "--opt", "Adam(lr=0.01)", "--opt", "Adam", "--trials", "2"]
    argv += ["--seeds", "2"]
    lines = _lab(capsys, [*argv, "--store", str(path)])
    assert "Adam(lr=0.01): nothing to tune; fixed by the spec: lr" in lines
    runs = _stored(path)
    fixed = [r for r in runs if r["config"]["hyperparameters"]["lr"] == 0.01]
    assert sorted(r["config"]["seed"] for r in fixed) == [1, 2]  # its two seeds and no trial
    tuned = [r for r in runs if r["config"]["hyperparameters"]["lr"] != 0.01]
    assert sorted(r["config"]["seed"] for r in tuned) == [0, 0, 1, 2]  # Adam: two trials, then its two seeds
    chosen = tuned[-1]["config"]["hyperparameters"]["lr"]
    rows = [line.strip() for line in lines if line.startswith("  Adam(")]
    assert rows[0].startswith("Adam(lr=0.01) ") and rows[1].startswith(f"Adam(lr={chosen:.3g}*) ")


def test_space_tunes_beta2_and_a_wrapped_lr_but_never_what_the_spec_fixes(tmp_path: Path) -> None:
    with Store(tmp_path / "lab.sqlite") as store:
        result = tune(
            "airfoil-linreg", ["Adam(beta1=0.5)", "Lookahead(Adam(beta2=0.99), k=3)"], "smoke", trials=3,
            store=store, extra_space={"beta2": ("lin", 0.9, 0.999)}, progress=False,
        )  # fmt: skip
        runs = store.runs()
    adam, look = result["Adam(beta1=0.5)"], result["Lookahead(Adam(beta2=0.99), k=3)"]
    assert (adam.free, adam.fixed) == (("lr", "beta2"), ())
    betas = [r["config"]["hyperparameters"]["betas"] for r in runs if r["config"]["optimizer"] == "optimlab.Adam"]
    assert len(betas) == 3 and len({b[1] for b in betas}) == 3
    assert all(b[0] == 0.5 and 0.9 <= b[1] <= 0.999 for b in betas)
    assert (look.free, look.fixed) == (("lr",), ("beta2",))  # the inner Adam's lr; its beta2 stays 0.99
    configs = [r["config"] for r in runs if r["config"]["optimizer"] == "optimlab.Lookahead"]
    inner = [c["hyperparameters"]["optimizer"]["hyperparameters"] for c in configs]
    assert [h["betas"] for h in inner] == [[0.9, 0.99]] * 3 and len({h["lr"] for h in inner}) == 3
    assert r"k=3" in look.label and "*" in look.label and "0.99)" in look.label
    # SGD has no beta2: a name an optimizer lacks is an error, before anything runs
    with pytest.raises(ValueError, match=r"tune: SGD cannot tune 'beta2'.*SGD has no hyperparameter 'beta2'"):
        tune("airfoil-linreg", ["SGD"], "smoke", trials=1, extra_space={"beta2": ("lin", 0.9, 0.999)}, progress=False)
    with pytest.raises(ValueError, match=r"a pair is not one value; tune its components beta1 and beta2"):
        tune("airfoil-linreg", ["Adam"], "smoke", trials=1, extra_space={"betas": [0.9, 0.99]}, progress=False)


def test_every_spelling_runs_in_run_and_tune(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = ["--store", str(tmp_path / "lab.sqlite")]
    lines = _lab(capsys, ["run", "--task", "airfoil-linreg", "--opt", "torch.Adam(lr=0.01)", "--opt", "Adam(beta1=0.5)",
                          "--opt", "Lookahead(Adam(lr=0.01), k=3)", "--seeds", "2", *store])  # fmt: skip
    rows = [line.strip().split("  ")[0] for line in lines if line.startswith("  ")]
    assert rows == ["torch.Adam(lr=0.01)", "Adam(lr=0.001, betas=(0.5, 0.999))", "Lookahead(Adam(lr=0.01), k=3)"]
    lines = _lab(capsys, ["tune", "--task", "airfoil-linreg", "--opt", "Lookahead(Adam, k=3)",
                          "--space", "optimizer.beta1=lin:0.5:0.9", "--trials", "2", "--seeds", "2",
                          *store])  # fmt: skip
    said = [line for line in lines if line.startswith("Lookahead(Adam(lr=")]
    assert len(said) == 1 and "tuned lr in [1e-05, 1], optimizer.beta1 in [0.5, 0.9] over 2 trials" in said[0]


def test_a_failed_trial_is_recorded_and_tuning_goes_on(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    train = _CountingTrain()

    def second_fails(*args: Any, **kwargs: Any) -> Any:
        if train.calls == 1:
            train.calls += 1
            raise RuntimeError("out of memory (simulated)")
        return train(*args, **kwargs)

    monkeypatch.setattr(runner, "_train", second_fails)
    with Store(tmp_path / "lab.sqlite") as store:
        result = tune("airfoil-linreg", ["Adam"], "smoke", trials=3, store=store, progress=False)["Adam"]
        statuses = sorted(r["status"] for r in store.runs())
    assert [t.status for t in result.trials] == ["finished", "failed", "finished"]
    assert math.isnan(result.trials[1].value) and "out of memory (simulated)" in result.trials[1].error
    assert result.value == min(result.trials[0].value, result.trials[2].value)
    assert statuses == ["failed", "finished", "finished"]
    assert "1 failed" in result.describe()
    # without a store, an invalid suggested value (beta2 = 1 is refused by Adam) is a failed trial too
    space = {"beta2": [0.99, 1.0]}
    result = tune("airfoil-linreg", ["Adam"], "smoke", trials=4, extra_space=space, progress=False)["Adam"]
    by_beta2 = {b: {t.status for t in result.trials if t.suggested["beta2"] == b} for b in (0.99, 1.0)}
    assert by_beta2 == {0.99: {"finished"}, 1.0: {"failed"}} and result.spec.hyperparameters["betas"] == (0.9, 0.99)
    # values the class refuses throughout the space are one error before anything runs
    with pytest.raises(ValueError, match=r"tune: Adam cannot tune lr, beta2: Adam: invalid betas\[1\]=1"):
        tune("airfoil-linreg", ["Adam"], "smoke", trials=2, extra_space={"beta2": [1.0]}, progress=False)
    # every trial failing is an error naming the arm and the last error
    monkeypatch.setattr(runner, "_train", lambda *args, **kwargs: 1 / 0)
    with pytest.raises(protocol.RunFailedError, match=r"every trial of Adam failed; the last: .*ZeroDivisionError"):
        tune("airfoil-linreg", ["Adam"], "smoke", trials=2, progress=False)


@pytest.mark.slow  # two fresh processes: ~7 s of CPU here, 15-27 s of wall time under load
def test_two_identical_tune_commands_share_one_store(tmp_path: Path) -> None:
    import subprocess
    import sys

    path = tmp_path / "lab.sqlite"
    argv = [sys.executable, "-m", "optimlab", "tune", "--task", "airfoil-linreg", "--opt", "Adam", "--opt", "Momentum",
            "--trials", "2", "--seeds", "1", "--budget", "smoke", "--store", str(path)]  # fmt: skip
    env = {**os.environ, "OPTIMLAB_DATA_DIR": str(DATA)}
    pipe = subprocess.PIPE
    processes = [subprocess.Popen(argv, env=env, stdout=pipe, stderr=pipe, text=True) for _ in "ab"]
    outputs = [p.communicate(timeout=600) for p in processes]
    assert [p.returncode for p in processes] == [0, 0], [err[-2000:] for _, err in outputs]
    runs = _stored(path)
    assert len(runs) == 2 * (2 + 1) and all(r["status"] == "finished" and r["attempt"] == 1 for r in runs)
    verdicts = [err.strip().splitlines()[-1] for _, err in outputs]
    assert verdicts[0] == verdicts[1]  # both read the same results


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


# ---------------------------------------------------------------------------------------------
# Each optimizer's lr range, and a best value at the edge of what was searched (issue 14)
# ---------------------------------------------------------------------------------------------


class DeclaresItsRange(torch.optim.SGD):
    """A user's optimizer whose lr is searched over its own range."""

    tune_lr_range = (0.01, 0.1)


class DeclaresABadRange(torch.optim.SGD):
    tune_lr_range = (1.0, 0.1)


def fixed_lrs(monkeypatch: pytest.MonkeyPatch, lrs: list[float]) -> None:
    """Every optimizer's sampler tries ``lrs`` in turn, in place of TPE: the winner is known."""
    import optuna

    class Fixed(optuna.samplers.BaseSampler):  # Optuna's GridSampler stops the study, which needs optimize()
        def infer_relative_search_space(self, study: Any, trial: Any) -> dict[str, Any]:
            return {}

        def sample_relative(self, study: Any, trial: Any, search_space: Any) -> dict[str, Any]:
            return {}

        def sample_independent(self, study: Any, trial: Any, name: str, distribution: Any) -> float:
            return lrs[trial.number]

    monkeypatch.setattr(optuna.samplers, "TPESampler", lambda **_: Fixed())


def test_range_edge_is_the_outer_5_percent_of_the_range_in_its_own_scale() -> None:
    log = ("log", 1e-5, 1.0)  # five decades: the outer 5% is a quarter decade at each end (1.78e-5, 0.562)
    values = (1e-5, 1.7e-5, 1.9e-5, 1e-3, 0.55, 0.57, 1.0)
    assert [range_edge(v, log) for v in values] == ["bottom", "bottom", None, None, None, "top", "top"]
    assert [range_edge(v, ("lin", 0.9, 0.999)) for v in (0.904, 0.906, 0.99, 0.996)] == ["bottom", None, None, "top"]
    assert [range_edge(v, ("int", 1, 10)) for v in (1, 2, 9, 10)] == ["bottom", None, None, "top"]
    assert range_edge(0.99, [0.9, 0.99]) is None  # choices have no order, so no edge


def test_a_best_lr_at_the_top_of_its_range_is_said_and_one_inside_is_not(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    fixed_lrs(monkeypatch, [0.002, 0.03])  # on airfoil (smoke) Adam ends lower at 0.03
    with Store(tmp_path / "lab.sqlite") as store:
        top = tune("airfoil-linreg", ["Adam"], "smoke", trials=2, store=store, lr_range=(1e-3, 0.032))["Adam"]
    with Store(tmp_path / "other.sqlite") as store:
        inside = tune("airfoil-linreg", ["Adam"], "smoke", trials=2, store=store, lr_range=(1e-4, 1.0))["Adam"]
    printed = [line for line in capsys.readouterr().err.splitlines() if line.startswith("Adam")]  # no progress bar
    assert top.chosen == inside.chosen == {"lr": 0.03} and top.value == inside.value
    line = "Adam: best lr=0.03 is at the top of its range [0.001, 0.032]: the optimum may lie above; widen --lr-range"
    assert top.edges == [line] and printed[:2] == [top.describe(), line]  # printed right below its tuning line
    assert inside.edges == [] and printed[2:] == [inside.describe()]
    assert inside.describe().startswith("Adam(lr=0.03*): tuned lr in [0.0001, 1] over 2 trials; final validation ")


def test_prodigy_searches_its_own_lr_range_unless_one_is_given(tmp_path: Path) -> None:
    assert default_lr_range("Prodigy") == default_lr_range("Lookahead(Prodigy, k=3)") == (0.1, 10.0)
    assert default_lr_range("ScheduleFreeSGD") == (1e-4, 10.0)  # its default 1.0 inside, not on the edge
    assert default_lr_range("Adam") == default_lr_range("torch.SGD") == LR_RANGE == (1e-5, 1.0)
    assert default_lr_range(DeclaresItsRange) == (0.01, 0.1)  # any class may declare one
    with pytest.raises(ValueError, match=r"tune: invalid DeclaresABadRange.tune_lr_range\[1\]=0.1"):
        default_lr_range(DeclaresABadRange)
    with Store(tmp_path / "lab.sqlite") as store:
        common = {"budget": "smoke", "trials": 2, "seed": 1, "store": store, "progress": False}
        own = tune("airfoil-linreg", ["Prodigy", "Adam"], **common)
        given = tune("airfoil-linreg", ["Prodigy"], lr_range=LR_RANGE, **common)
        adam = tune("airfoil-linreg", ["Adam"], lr_range=LR_RANGE, **common)
        records = {r["key"]: r for r in store.runs()}
    prodigy = own["Prodigy"]
    assert prodigy.space == {"lr": ("log", 0.1, 10.0)}
    assert own["Adam"].space == given["Prodigy"].space == {"lr": ("log", *LR_RANGE)}
    assert [len(t.trials) for t in (*own.values(), given["Prodigy"])] == [2, 2, 2]  # the budgets stay equal
    assert all(0.1 <= t.suggested["lr"] <= 10.0 for t in prodigy.trials)
    assert all(t.suggested["lr"] <= 1.0 for t in given["Prodigy"].trials)

    def positions(tuned: protocol.Tuned) -> list[float]:
        _, low, high = tuned.space["lr"]
        return [math.log(t.suggested["lr"] / low) / math.log(high / low) for t in tuned.trials]

    assert positions(prodigy) == pytest.approx(positions(own["Adam"]), abs=1e-12)  # the same quantiles of each range
    assert prodigy.describe().startswith(f"{prodigy.label}: tuned lr in [0.1, 10] over 2 trials")
    # a class that declares no range searches the old one: the same trials, the same runs (nothing new trained)
    assert [t.key for t in adam["Adam"].trials] == [t.key for t in own["Adam"].trials]
    assert len(records) == 6
    # each trial's run holds the space its values were drawn from, beside the run: its key holds no range
    for tuned in (prodigy, own["Adam"], given["Prodigy"]):
        for t in tuned.trials:
            record = records[t.key]
            assert read_tuning_meta(record["meta"]) == (tuned.space, t.suggested)
            config = record["config"]
            spec = runner.prepare("airfoil-linreg", config["optimizer"], config["hyperparameters"], 1, "smoke")
            assert spec.key == t.key
