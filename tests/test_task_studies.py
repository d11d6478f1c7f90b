"""The real-task studies (optimlab study airfoil | radam-lr | adam-tasks) end to end at their smoke budget.

Each runs on tiny tensors shaped like its task's data (the studies take tasks, as a user's own study
would), so the suite needs no data set; one test runs the airfoil study from the command line on the
real data where it is staged.
"""

from __future__ import annotations

import csv
import math
import os
from pathlib import Path

import pytest
import torch
from torch import nn

from optimlab import Budget, Store, SupervisedTask, tasks
from optimlab.cli import main
from optimlab.data import Dataset, Split
from optimlab.studies import _lab, adam_tasks, airfoil, radam_lr

DATA = Path(os.environ.get("OPTIMLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


def line(n: int = 120) -> Dataset:
    """Airfoil-shaped data: 5 inputs, a noisy linear target (so the least-squares floor is above 0)."""
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return Dataset("line", Split(x, x.sum(1, keepdim=True) + 0.3 * torch.randn(n, 1, generator=g)), None, None, None)


def images(n: int, seed: int) -> Split:
    g = torch.Generator().manual_seed(seed)
    return Split(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)


def rows(path: Path) -> list[dict[str, str]]:
    with path.open() as f:
        return list(csv.DictReader(f))


def test_airfoil_runs_every_arm_and_its_curves_are_the_runs_it_reports(tmp_path):
    task = tasks.get("airfoil-linreg").with_data(line())
    out = airfoil.run(tmp_path / "airfoil", budget="smoke", task=task, log=lambda _: None)
    finals = rows(tmp_path / "airfoil" / "final.csv")
    assert [r["arm"] for r in finals] == [a.label for a in airfoil.ARMS for _ in range(airfoil.SEEDS["smoke"])]
    floor = float(finals[0]["lstsq_floor"])
    for r in finals:  # no first-order method ends below the least-squares optimum of its own objective
        assert float(r["full_loss"]) >= floor - 1e-5
    with Store(tmp_path / "airfoil" / "lab.sqlite", readonly=True) as store:
        for arm in airfoil.ARMS:
            t = airfoil.arm_task(task, arm, "smoke")
            curves = _lab.curves(store, t, "smoke", arm.optimizer, arm.hyperparameters, [1, 2])
            assert sorted(curves) == [1, 2], arm.label
            mine = [r for r in finals if r["arm"] == arm.label]
            for seed, final in zip((1, 2), mine):  # the curve read back is the run whose final metric is reported
                assert curves[seed][-1]["full_loss"] == pytest.approx(float(final["full_loss"]), rel=1e-12)
                assert curves[seed][-1]["step"] == int(final["steps"])
    gd = next(r for r in finals if r["arm"] == "GD")
    assert float(gd["steps"]) == 10  # full batch: one step per epoch, d2l's 10 epochs
    assert "| GD | SGD(lr=1.0) | 1500 |" in out.summary and "Least-squares floor of this objective" in out.summary
    assert "no comparison with the book's numbers" in out.summary  # smoke is not d2l's protocol
    curve_rows = rows(tmp_path / "airfoil" / "curves.csv")
    assert {r["arm"] for r in curve_rows} == {a.label for a in airfoil.ARMS}
    assert (tmp_path / "airfoil" / "curves.png").stat().st_size > 10_000


def test_airfoil_rerun_trains_nothing(tmp_path):
    task = tasks.get("airfoil-linreg").with_data(line(40))
    airfoil.run(tmp_path, budget="smoke", task=task, log=lambda _: None)
    with Store(tmp_path / "lab.sqlite", readonly=True) as store:
        before = {r["key"]: r["ended"] for r in store.runs()}
    again = airfoil.run(tmp_path, budget="smoke", task=task, log=lambda _: None)
    with Store(tmp_path / "lab.sqlite", readonly=True) as store:
        assert {r["key"]: r["ended"] for r in store.runs()} == before
    assert len(before) == len(airfoil.ARMS) * airfoil.SEEDS["smoke"]
    assert "| Yogi | Yogi(lr=0.01) | 10 |" in again.summary


def test_radam_lr_runs_three_arms_at_every_lr_the_warmup_arm_with_its_warmup(tmp_path):
    def blobs(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
        g = torch.Generator().manual_seed(seed)
        y = torch.arange(n) % 3
        return torch.randn(n, 8, generator=g) + 2 * nn.functional.one_hot(y, 8).float(), y

    task = SupervisedTask(
        name="blobs", model=lambda: nn.Sequential(nn.Linear(8, 16), nn.ReLU(), nn.Linear(16, 3)),
        train=blobs(64, 0), val=blobs(32, 1), test=blobs(32, 2), loss=nn.CrossEntropyLoss(),
        metrics={"accuracy": (lambda o, t: (o.argmax(1) == t).double().mean().item(), "maximize")},
        budget=Budget(epochs=1, batch_size=16),
    )  # fmt: skip
    out = radam_lr.run(tmp_path, budget="smoke", task=task, lrs=[0.003, 0.1], log=lambda _: None)
    table = rows(tmp_path / "lr.csv")
    assert [(r["arm"], float(r["lr"])) for r in table] == [(a, lr) for lr in (0.003, 0.1) for a in radam_lr.ARMS]
    with Store(tmp_path / "lab.sqlite", readonly=True) as store:
        runs = store.runs()
    warm = [r for r in runs if r["config"]["task"] == "blobs+warmup=untuned"]
    plain = [r for r in runs if r["config"]["task"] == "blobs"]
    assert len(warm) == 2 * 2 and len(plain) == 2 * 2 * 2
    assert {r["config"]["hyperparameters"]["lr"] for r in warm} == {0.003, 0.1}
    assert "a run here has 4 steps (shorter than the warmup" in out.summary
    assert "Robustness is the worst mean over the claimed range" in out.summary and "RAdam's worst is" in out.summary


def test_adam_tasks_table_marks_a_task_without_data_and_runs_the_rest(tmp_path):
    digits = Dataset("digits", images(32, 0), images(16, 1), images(16, 2), 10)
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(48, 71, generator=g), torch.randn(48, 1, generator=g)
    house = Dataset("h", Split(x[:32], y[:32]), Split(x[32:40], y[32:40]), Split(x[40:], y[40:]), None,
                    {"log_price_mean": 13.0, "log_price_std": 0.5})  # fmt: skip
    given = {
        name: tasks.get(name).with_data(digits)
        for name in ("mnist-cnn", "fashion-mnist-cnn", "mnist-dcgan", "mnist-wgan")
    }
    given["house-mlp"] = tasks.get("house-mlp").with_data(house)
    out = adam_tasks.run(tmp_path, budget="smoke", tasks=given, data_dir=tmp_path / "no-data", log=lambda _: None)
    table = [line for line in out.summary.splitlines() if line.startswith("| ")]
    assert table[0].startswith("| configuration | mnist-cnn (test_accuracy) |") and "cifar10-cnn (not run)" in table[0]
    assert [line.split(" | ")[0][2:] for line in table[1:]] == [label for label, _ in adam_tasks.CONFIGS]
    assert all(line.endswith("| not run: data absent |") for line in table[1:])
    assert "cifar-10 not in" in out.summary
    finals = rows(tmp_path / "final.csv")
    assert len(finals) == (3 * len(adam_tasks.CONFIGS) + 2 * 2) * adam_tasks.SEEDS["smoke"]
    with Store(tmp_path / "lab.sqlite", readonly=True) as store:
        eps = {
            r["config"]["hyperparameters"]["eps"] for r in store.runs() if r["config"]["task"].startswith("mnist-cnn")
        }
        wgan = {
            r["config"]["optimizer"]["generator"] for r in store.runs() if r["config"]["task"].startswith("mnist-wgan")
        }
    assert eps == {1e-8, 1e-3, 0.1, 1.0}
    assert {name.rpartition(".")[2] for name in wgan} == {"RMSprop", "Adam"}
    assert "mnist-dcgan, final test_gen_accuracy: beta1 = 0.5 (Adam(lr=0.0002, betas=(0.5, 0.999)))" in out.summary
    for name in ("mnist-cnn", "house-mlp", "mnist-wgan"):
        assert (tmp_path / f"{name}.png").is_file() and (tmp_path / f"{name}.csv").is_file()
    assert not (tmp_path / "cifar10-cnn.png").exists()
    assert all(math.isfinite(float(r["test_rmse"])) for r in finals if r["task"] == "house-mlp")


def test_study_command_refuses_a_bad_budget_in_one_line(tmp_path, capsys):
    with pytest.raises(SystemExit):
        main(["study", "airfoil", "--budget", "huge", "--out", str(tmp_path)])
    assert "invalid choice: 'huge'" in capsys.readouterr().err
    with pytest.raises(ValueError, match=r"study adam-tasks: invalid tasks name 'mnist'"):
        adam_tasks.run(tmp_path, budget="smoke", tasks={"mnist": tasks.get("mnist-cnn")})
    with pytest.raises(ValueError, match=r"study radam-lr: invalid budget='tiny': expected one of smoke, quick, full"):
        radam_lr.run(tmp_path, budget="tiny")


def test_study_airfoil_from_the_command_line_on_the_real_data(tmp_path, capsys):
    if not (DATA / "airfoil" / "airfoil_self_noise.dat").is_file():
        pytest.skip(f"airfoil data not staged under {DATA} (set OPTIMLAB_DATA_DIR)")
    out = tmp_path / "airfoil"
    assert main(["study", "airfoil", "--budget", "smoke", "--data-dir", str(DATA), "--out", str(out)]) == 0
    assert "summary:" in capsys.readouterr().err
    summary = (out / "summary.md").read_text()
    assert "Least-squares floor of this objective" in summary and "| Adam | Adam(lr=0.01, eps=1e-06) | 10 |" in summary
