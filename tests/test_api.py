"""The public Python API on a model the test makes: a SupervisedTask from tensors, a Dataset or a
DataLoader factory; compare() with spec strings, classes from another package or this file, and
(class, hyperparameters) pairs; the result's table, verdict and report."""

from __future__ import annotations

import math

import pytest
import torch
import torch_optimizer
from torch import nn
from torch.utils.data import DataLoader, TensorDataset

import optimlab
from optimlab import Budget, SupervisedTask, runner
from optimlab.store import Store


class MySGD(torch.optim.Optimizer):
    """A user's own optimizer: plain SGD with heavy-ball momentum, written as users write them."""

    def __init__(self, params, lr: float = 0.1, momentum: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad)
                p.add_(buf, alpha=-group["lr"])


def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """Three well-separated Gaussian classes in 8 dimensions: a network learns them in a few steps."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    centres = torch.eye(3, 8) * 4
    return centres[y] + torch.randn(n, 8, generator=g), y


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return (outputs.argmax(1) == targets).float().mean().item()


def mlp() -> nn.Module:
    return nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3))


def make_task(**kwargs) -> SupervisedTask:
    options = {
        "name": "blobs-mlp",
        "model": mlp,
        "train": blobs(96, 0),
        "val": blobs(48, 1),
        "test": blobs(48, 2),
        "loss": nn.CrossEntropyLoss(),
        "metrics": {"accuracy": (accuracy, "maximize")},
        "budget": Budget(epochs=2, batch_size=16),
    }
    return SupervisedTask(**{**options, **kwargs})


def test_compare_takes_specs_classes_and_pairs_and_reports(tmp_path):
    task = make_task()
    store = tmp_path / "lab.sqlite"
    result = optimlab.compare(
        task, ["Adam", torch_optimizer.Lamb, (MySGD, {"momentum": 0.9})], trials=2, seeds=2, store=store, progress=False
    )
    table = result.table()
    assert [row["optimizer"].split("(")[0] for row in table] == [
        "Adam",
        "torch_optimizer.lamb.Lamb",
        "tests.test_api.MySGD",
    ]
    assert all(row["seeds"] == 2 and 0 <= row["ci_low"] <= row["mean"] <= row["ci_high"] <= 1 for row in table)
    # the blobs are separable: every tuned optimizer beats chance (1/3) by far
    assert min(row["mean"] for row in table) > 0.6
    assert "fewer than 5 seeds" in result.verdict() or "weak" in result.verdict()
    paths = result.report(tmp_path / "report")
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert any(p.name == "summary.md" for p in paths)
    assert "blobs-mlp" in summary and "Lamb" in summary and "MySGD" in summary
    with Store(store, readonly=True) as s:
        runs = s.runs()
    # the other packages' versions are in each run's key: torch_optimizer's release, this file's class by its source
    lamb = [r for r in runs if r["config"]["optimizer"] == "torch_optimizer.lamb.Lamb"]
    assert lamb and all(r["config"]["versions"]["torch_optimizer"] == "0.3.0" for r in lamb)
    mine = [r for r in runs if r["config"]["optimizer"] == "tests.test_api.MySGD"]
    assert mine and all(r["config"]["versions"]["tests.test_api.MySGD"].startswith("source sha256:") for r in mine)
    assert all(r["meta"]["task"]["metric"] == "accuracy" and r["meta"]["task"]["higher_is_better"] for r in runs)


def test_a_dataset_and_a_dataloader_factory_with_two_workers_train_the_same_model(tmp_path):
    x, y = blobs(96, 0)

    def loader(batch_size: int, generator: torch.Generator) -> DataLoader:
        # augmentation in the workers: a little noise on each example, from the worker's seeded generator
        return DataLoader(
            TensorDataset(x, y), batch_size, shuffle=True, generator=generator, num_workers=2,
            collate_fn=lambda rows: (torch.stack([r[0] for r in rows]) + 0.01 * torch.randn(len(rows), 8),
                                     torch.stack([r[1] for r in rows])),
        )  # fmt: skip

    for train in (TensorDataset(x, y), loader):
        task = make_task(train=train, val=TensorDataset(*blobs(48, 1)))
        first, second = (optimlab.evaluate(task, ["Adam(lr=0.01)"], seeds=1, progress=False) for _ in range(2))
        # one seed fixes the run: the order and the workers' augmentation included
        ((a,),), ((b,),) = first.finals.values(), second.finals.values()
        assert (a["test_loss"], a["test_accuracy"]) == (b["test_loss"], b["test_accuracy"])
        assert first.summaries[0].mean > 0.6
        curve = runner.run(task, "Adam", {"lr": 0.01}, 1, "smoke", progress=False)["curve"]
        assert [p["step"] for p in curve] == list(range(13))  # 6 batches x 2 epochs, a point each, and step 0


def test_bfloat16_runs_under_autocast_and_is_another_run(tmp_path):
    task = make_task()
    with Store(tmp_path / "lab.sqlite") as store:
        runs = [
            runner.run(task, "Adam", {"lr": 0.01}, 1, "smoke", store, False, dtype=d)
            for d in ("float32", "bfloat16")
        ]
    assert runs[0]["key"] != runs[1]["key"] and runs[1]["config"]["dtype"] == "bfloat16"
    assert runs[0]["final"]["test_accuracy"] > 0.6 and runs[1]["final"]["test_accuracy"] > 0.6
    assert runs[0]["final"]["test_loss"] != runs[1]["final"]["test_loss"]  # bfloat16 arithmetic did run
    with pytest.raises(ValueError, match=r"run: invalid dtype='float16': expected one of 'float32', 'bfloat16'"):
        runner.run(task, "Adam", dtype="float16")
    with pytest.raises(ValueError, match=r"protocol: invalid dtype='float16'"):  # before any trial runs
        optimlab.compare(task, ["Adam"], trials=1, seeds=1, dtype="float16", progress=False)


def test_budget_overrides_are_part_of_the_key(tmp_path):
    task = make_task()
    with Store(tmp_path / "lab.sqlite") as store:
        base = runner.run(task, "Adam", {}, 1, "smoke", store, False)
        longer = runner.run(task.with_budget(epochs=3), "Adam", {}, 1, "smoke", store, False)
    assert base["key"] != longer["key"] and longer["config"]["settings"]["epochs"] == 3
    assert longer["final"]["steps"] == 18 and base["final"]["steps"] == 12


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"train": None}, "give the training data as exactly one of train="),
        ({"train": [1, 2]}, "invalid train=\\[1, 2\\]: expected \\(inputs, targets\\) tensors"),
        ({"metrics": {"accuracy": accuracy}}, "invalid metrics\\['accuracy'\\].*'maximize' or 'minimize'"),
        ({"metrics": {"accuracy": (accuracy, "higher")}}, "invalid metrics\\['accuracy'\\]"),
        ({"metric": "f1"}, "invalid metric='f1': expected 'loss' or one of accuracy"),
        ({"budget": None}, "give budget=Budget\\(...\\) or budgets="),
        ({"model": "mlp"}, "invalid model='mlp': expected a callable"),
    ],
)
def test_bad_task_arguments_are_one_clear_error(kwargs, message):
    with pytest.raises(ValueError, match=message):
        make_task(**kwargs)


def test_bad_optimizers_are_one_clear_error():
    class Local(MySGD):
        pass

    task = make_task()
    with pytest.raises(ValueError, match="defined inside a function cannot be imported by name"):
        optimlab.compare(task, [Local], trials=1, seeds=1, progress=False)
    with pytest.raises(ValueError, match="expected a torch.optim.Optimizer subclass"):
        optimlab.compare(task, [nn.Linear], trials=1, seeds=1, progress=False)


def test_a_comparison_without_a_store_says_how_to_get_a_report(tmp_path):
    result = optimlab.evaluate(make_task(), ["Adam(lr=0.01)"], seeds=1, progress=False)
    assert result.store is None and result.table()[0]["seeds"] == 1
    with pytest.raises(ValueError, match=r"these runs were not stored; run compare\(\.\.\., store='lab.sqlite'\)"):
        result.report(tmp_path / "report")
    assert not (tmp_path / "report").exists()


def test_a_task_without_val_or_test_evaluates_on_its_training_data():
    task = make_task(val=None, test=None, metric="loss")
    assert (task.eval_split, task.final_split, task.higher_is_better) == ("full", "full", False)
    result = runner.run(task, "Adam", {"lr": 0.01}, 0, "smoke", progress=False)
    assert math.isfinite(result["final"]["full_loss"]) and "full_accuracy" in result["final"]


def test_the_examples_your_model_script_runs_at_a_tiny_size(tmp_path):
    import subprocess
    import sys
    from pathlib import Path

    root = Path(__file__).resolve().parents[1]
    done = subprocess.run(
        [sys.executable, str(root / "examples" / "your_model.py"), "--tiny", "--out", str(tmp_path)],
        cwd=tmp_path, capture_output=True, text=True, timeout=600, check=False,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    for label in ("Adam(lr=", "torch.AdamW(lr=", "torch.SGD(lr=", "__main__.SignSGD(lr="):
        assert label in done.stdout, label
    assert "weak comparison: 2 seeds" in done.stdout
    summary = (tmp_path / "report" / "summary.md").read_text()
    assert "bars-cnn, smoke budget" in summary and "SignSGD" in summary


EVENTS: list[str] = []


class LoggedScheduleFree(optimlab.optim.ScheduleFreeAdamW):
    """Schedule-Free AdamW that records its switches: the lab must evaluate it at its averaged point."""

    def train(self) -> None:
        EVENTS.append("train")
        super().train()

    def eval(self) -> None:
        EVENTS.append("eval")
        super().eval()

    def step(self, closure=None):
        EVENTS.append("step")
        return super().step(closure)


def logged_accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    EVENTS.append("evaluate")
    return accuracy(outputs, targets)


def test_schedule_free_optimizers_train_in_train_mode_and_are_evaluated_in_eval_mode():
    import schedulefree

    # the official package's class: it refuses to step in eval mode, the mode it starts in
    official = optimlab.evaluate(make_task(), [(schedulefree.AdamWScheduleFree, {"lr": 0.01})], seeds=1, progress=False)
    EVENTS.clear()
    task = make_task(metrics={"accuracy": (logged_accuracy, "maximize")})
    ours = optimlab.evaluate(task, [(LoggedScheduleFree, {"lr": 0.01})], seeds=1, progress=False)
    assert all(row["mean"] > 0.6 for row in official.table() + ours.table())
    mode, seen = "eval", []  # a new Schedule-Free optimizer is in eval mode
    for event in EVENTS:
        if event in ("train", "eval"):
            mode = event
        else:
            seen.append((event, mode))
    assert ("step", "train") in seen and ("evaluate", "eval") in seen
    assert all(mode == ("train" if event == "step" else "eval") for event, mode in seen)
