"""Your own model through the command line: --task FILE.py:NAME / MODULE:NAME, --opt for any optimizer class,
budget overrides, a report after the task's file is gone, and one clean line for every bad path."""

from __future__ import annotations

import json
import os
import textwrap

import pytest
import torch

from optimlab.cli import main
from optimlab.store import Store

TASK_FILE = textwrap.dedent(
    """
    import torch
    from torch import nn

    from optimlab import Budget, SupervisedTask


    def data(n, seed):
        g = torch.Generator().manual_seed(seed)
        x = torch.randn(n, 6, generator=g)
        return x, (x[:, :1] * 2 - x[:, 1:2] + 0.1 * torch.randn(n, 1, generator=g))


    def r2(outputs, targets):
        return 1 - ((outputs - targets) ** 2).sum().item() / ((targets - targets.mean()) ** 2).sum().item()


    TASK = SupervisedTask(
        name="my-regression",
        model=lambda: nn.Sequential(nn.Linear(6, 16), nn.Tanh(), nn.Linear(16, 1)),
        train=data(128, 0),
        val=data(64, 1),
        test=data(64, 2),
        loss=nn.MSELoss(),
        metrics={"r2": (r2, "maximize")},
        budget=Budget(epochs=1, batch_size=16),
    )
    """
)


class MySGD(torch.optim.Optimizer):
    """The user's own optimizer: SGD with momentum, as people write it."""

    def __init__(self, params, lr: float = 0.01, momentum: float = 0.0) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    buf = self.state[p].setdefault("buf", torch.zeros_like(p))
                    p.add_(buf.mul_(group["momentum"]).add_(p.grad), alpha=-group["lr"])


def make_task():
    """A function returning a task, for --task tests.test_user_task:make_task."""
    from tests.test_api import make_task as api_task

    return api_task(name="blobs-from-module")


@pytest.fixture
def task_file(tmp_path):
    folder = tmp_path / "mine"
    folder.mkdir(mode=0o755)
    path = folder / "my_task.py"
    path.write_text(TASK_FILE)
    path.chmod(0o644)
    return path


def test_a_task_from_a_file_is_tuned_with_any_optimizer_then_reports_after_the_file_is_deleted(
    task_file, tmp_path, capsys
):
    store = tmp_path / "lab.sqlite"
    argv = ["tune", "--task", f"{task_file}:TASK", "--opt", "Adam", "--opt", "torch_optimizer.Lamb",
            "--opt", "tests.test_user_task:MySGD(momentum=0.9)", "--trials", "2", "--seeds", "2", "--budget", "smoke",
            "--epochs", "2", "--eval-every", "4", "--store", str(store)]  # fmt: skip
    assert main(argv) == 0
    printed = capsys.readouterr().err
    assert "my-regression, smoke: final test_r2" in printed and "Lamb" in printed and "MySGD(" in printed
    with Store(store, readonly=True) as s:
        runs = s.runs()
    assert {r["config"]["settings"]["epochs"] for r in runs} == {2}  # the override ran and is in the key
    curve_steps = [p["step"] for p in Store(store, readonly=True).epochs(runs[0]["key"])]
    assert curve_steps == [0, 4, 8, 12, 16]  # 128 rows / 16 = 8 steps per epoch, 2 epochs, a point every 4
    lamb = next(r for r in runs if "Lamb" in r["config"]["optimizer"])
    assert lamb["config"]["versions"]["torch_optimizer"] == "0.3.0"

    task_file.unlink()  # the report needs nothing of the task's code: its metadata is in the store
    task_file.parent.rmdir()
    out = tmp_path / "report"
    assert main(["report", "--store", str(store), "--out", str(out)]) == 0
    summary = (out / "summary.md").read_text()
    assert "my-regression, smoke budget" in summary and "test_r2" in summary and "higher is better" in summary
    for name in ("Adam", "Lamb", "MySGD"):
        assert name in summary, name
    assert "Other optimizer packages (in each run's key): tests.test_user_task.MySGD source sha256:" in summary
    assert "torch_optimizer 0.3.0" in summary
    assert (out / "curves-my-regression-smoke.png").stat().st_size > 0


def test_a_task_function_from_a_module_runs_with_overrides_device_and_dtype(tmp_path):
    store = tmp_path / "lab.sqlite"
    argv = ["run", "--task", "tests.test_user_task:make_task", "--opt", "Adam(lr=0.01)", "--seeds", "2",
            "--budget", "smoke", "--batch-size", "32", "--train-size", "64", "--device", "cpu", "--dtype", "bfloat16",
            "--store", str(store)]  # fmt: skip
    assert main(argv) == 0
    with Store(store, readonly=True) as s:
        (config, *_), meta = [r["config"] for r in s.runs()], s.runs()[0]["meta"]
    assert config["task"] == "blobs-from-module" and config["dtype"] == "bfloat16" and config["device"] == "cpu"
    assert config["settings"]["batch_size"] == 32 and config["settings"]["train_size"] == 64
    assert meta["task"]["metric"] == "accuracy" and meta["task"]["directions"]["accuracy"] == "maximize"
    assert json.dumps(meta)  # plain JSON: another program reads it too


def _bad(tmp_path, task_file):
    folder = task_file.parent
    return [
        (["--task", str(tmp_path / "nothere.py") + ":TASK"], "no such file"),
        (["--task", f"{task_file}:NOPE"], "has no 'NOPE'"),
        (["--task", f"{task_file}:torch"], "torch is module, not a task"),
        (["--task", "no_such_package.tasks:TASK"], "cannot import no_such_package.tasks: ModuleNotFoundError"),
        (["--task", "mnist"], "expected one of airfoil-linreg"),
        (["--task", "tests.test_user_task:MySGD"], "MySGD\\(\\) raised TypeError"),
        (
            ["--task", f"{task_file}:TASK", "--opt", "no_such_package.Opt"],
            "invalid optimizer spec 'no_such_package.Opt'",
        ),
        (["--task", f"{task_file}:TASK", "--opt", "torch_optimizer.NoSuchLamb"], "invalid optimizer spec"),
        (["--task", f"{task_file}:TASK", "--opt", "torch.nn.Linear"], "is not a torch.optim.Optimizer subclass"),
        (["--task", f"{task_file}:TASK", "--device", "cuda:7"], "invalid device='cuda:7'"),
        (["--task", f"{task_file}:TASK", "--device", "gpu"], "invalid device='gpu'"),
        (["--task", f"{task_file}:TASK", "--epochs", "0"], "invalid --epochs 0: expected an integer >= 1"),
        (["--task", f"{folder}/broken.py:TASK"], "importing .*broken.py' raised ZeroDivisionError: division by zero"),
    ]


def test_bad_task_and_optimizer_paths_are_one_clean_line(task_file, tmp_path, capsys):
    (task_file.parent / "broken.py").write_text("x = 1 / 0\n")
    (task_file.parent / "broken.py").chmod(0o644)
    store = tmp_path / "lab.sqlite"
    for extra, message in _bad(tmp_path, task_file):
        args = ["run", *extra, "--budget", "smoke", "--store", str(store)]
        if "--opt" not in extra:
            args += ["--opt", "Adam"]
        assert main(args) == 2, extra
        err = capsys.readouterr().err
        assert len(err.strip().splitlines()) == 1 and "Traceback" not in err, err
        assert pytest.importorskip("re").search(message, err), (message, err)
    assert not store.exists()  # every error came before the store was opened


def test_code_in_a_place_another_user_can_write_is_never_run(task_file, tmp_path, capsys):
    ran = tmp_path / "ran"
    task_file.write_text(f"open({str(ran)!r}, 'w').close()\n" + TASK_FILE)
    for target, mode, who in (
        (task_file, 0o664, "its group"),
        (task_file, 0o646, "others"),
        (task_file.parent, 0o777, "others"),
    ):
        target.chmod(mode)
        assert main(["run", "--task", f"{task_file}:TASK", "--opt", "Adam", "--store", str(tmp_path / "s.sqlite")]) == 2
        err = capsys.readouterr().err
        assert f"is writable by {who}" in err and "never run code from a place another user can write" in err
        assert not ran.exists()
        target.chmod(0o755 if target.is_dir() else 0o644)
    if os.getuid() == 0:  # only root can give a file away: CI runs as root
        os.chown(task_file, 65534, -1)
        assert main(["run", "--task", f"{task_file}:TASK", "--opt", "Adam", "--store", str(tmp_path / "s.sqlite")]) == 2
        assert "belongs to another user (uid 65534)" in capsys.readouterr().err and not ran.exists()
