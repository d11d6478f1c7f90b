"""The single-run runner: optimizer names, hyperparameters, determinism, divergence, the store, progress."""

from __future__ import annotations

import inspect
import math
import os
from dataclasses import replace
from pathlib import Path

import pytest
import torch

import optimlab.runner as runner_mod
from optimlab import tasks
from optimlab.data import Dataset, Split
from optimlab.optim import ADOPT, PRESETS
from optimlab.optim import Muon as optimlab_muon
from optimlab.optim.adam import Adam
from optimlab.optim.lookahead import Lookahead
from optimlab.runner import build_optimizer, optimizer_names, optimizer_spec, resolve_optimizer, run, state_bytes
from optimlab.store import Store, run_key, with_versions

TIMES = ("train_time", "wall_time", "setup_time")
DATA = Path(os.environ.get("OPTIMLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")


@pytest.fixture(autouse=True)
def _one_thread():
    # Two pytest workers on two cores: a second thread per worker only makes OpenMP spin.
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def digits() -> Dataset:
    g = torch.Generator().manual_seed(0)
    split = lambda n: Split(torch.rand(n, 1, 28, 28, generator=g), torch.arange(n) % 10)  # noqa: E731
    return Dataset("digits", split(96), split(20), split(20), 10)


def line(n: int = 60) -> Dataset:
    g = torch.Generator().manual_seed(0)
    x = torch.randn(n, 5, generator=g)
    return Dataset("line", Split(x, x.sum(1, keepdim=True)), None, None, None)


MNIST = tasks.get("mnist-cnn").with_data(digits())
# torch's Adam for the 5.2 M-parameter CNN: optimlab's would compile its step (seconds of C++
# compilation, optimlab.optim._compiled), which is not what these tests are about.
CNN_OPTIMIZER = "torch.Adam"
AIRFOIL = tasks.get("airfoil-linreg").with_data(line())


def untimed(result: dict) -> tuple[list[dict], dict]:
    """The curve and final metrics without the wall-clock times and the process's peak memory (the only parts
    that may differ)."""
    strip = lambda d: {k: v for k, v in d.items() if k not in (*TIMES, "peak_rss_bytes")}  # noqa: E731
    return [strip(p) for p in result["curve"]], strip(result["final"])


# -- optimizers by name -----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("name", "canonical"),
    [
        ("Adam", "optimlab.Adam"),
        ("adam", "optimlab.Adam"),
        (" optimlab.optim.Adam ", "optimlab.Adam"),
        ("torch.Adam", "torch.Adam"),
        ("torch.optim.sgd", "torch.SGD"),
        ("Rprop", "torch.Rprop"),  # optimlab has none: the bare name falls back to torch's
        ("optimlab.Lookahead", "optimlab.Lookahead"),
    ],
)
def test_resolve_optimizer(name: str, canonical: str) -> None:
    assert resolve_optimizer(name)[0] == canonical
    assert canonical in optimizer_names()


def test_resolve_optimizer_classes() -> None:
    assert resolve_optimizer("Adam")[1] is Adam
    assert resolve_optimizer("torch.Adam")[1] is torch.optim.Adam
    assert "torch.LBFGS" not in optimizer_names()  # its step needs a closure
    assert not any(n.startswith("optimlab._") or n.endswith("RuleOptimizer") for n in optimizer_names())


@pytest.mark.parametrize("name", ["Adma", "optimlab.Rprop", "keras.Adam", 3])
def test_unknown_optimizer_lists_the_valid_names(name: object) -> None:
    with pytest.raises(ValueError, match=r"run: invalid optimizer=") as error:
        resolve_optimizer(name)  # type: ignore[arg-type]
    if isinstance(name, str):
        assert "optimlab.Adam, optimlab.AdamW" in str(error.value) and "torch.SGD" in str(error.value)
    if name == "Adma":
        assert "did you mean" in str(error.value) and "optimlab.Adam" in str(error.value).split("did you mean")[1]


def test_spec_spells_out_every_default() -> None:
    name, hp = optimizer_spec("torch.adam", {"lr": 0.01, "betas": (0.8, 0.9)})
    assert name == "torch.Adam"
    assert hp["lr"] == 0.01 and hp["betas"] == [0.8, 0.9] and hp["eps"] == 1e-8 and hp["amsgrad"] is False
    assert list(hp) == list(inspect.signature(torch.optim.Adam).parameters)[1:]  # all but params
    optimizer = build_optimizer(name, hp, [torch.zeros(2, requires_grad=True)])
    assert isinstance(optimizer, torch.optim.Adam) and optimizer.defaults["betas"] == (0.8, 0.9)


@pytest.mark.parametrize("preset", list(PRESETS))
def test_every_preset_makes_a_run_config(preset: str) -> None:
    # what `optimlab tune --opt NAME` does first; ADOPT's default clip_lambda, a function, once failed here
    name, hp = optimizer_spec(preset)
    run_key(with_versions({"optimizer": name, "hyperparameters": hp}))  # JSON-able: the run has a key
    optimizer = build_optimizer(name, hp, [torch.zeros(2, 2, requires_grad=True)])
    assert type(optimizer) is PRESETS[preset][0]


def test_a_function_default_is_left_to_the_constructor() -> None:
    name, hp = optimizer_spec("ADOPT")
    assert "clip_lambda" not in hp and hp["lr"] == 1e-3
    optimizer = build_optimizer(name, hp, [torch.zeros(3, requires_grad=True)])
    assert optimizer.clip_lambda is inspect.signature(ADOPT).parameters["clip_lambda"].default
    assert "clip_lambda" in optimizer_spec("ADOPTOriginal")[1]  # None is a value: kept in the key


def test_a_dtype_is_kept_by_its_name() -> None:
    name, hp = optimizer_spec("Muon")
    assert hp["ns_dtype"] == "bfloat16"
    grad = torch.randn(3, 2, generator=torch.Generator().manual_seed(0))
    w1, w2 = torch.ones(3, 2, requires_grad=True), torch.ones(3, 2, requires_grad=True)
    w1.grad, w2.grad = grad.clone(), grad.clone()
    build_optimizer(name, hp, [w1]).step()
    optimlab_muon([w2]).step()  # its default, torch.bfloat16
    assert torch.equal(w1, w2) and not torch.equal(w1, torch.ones(3, 2))
    assert optimizer_spec("Muon", {"ns_dtype": torch.float32})[1]["ns_dtype"] == "float32"
    with pytest.raises(ValueError, match="invalid ns_dtype='int8'"):
        build_optimizer(name, {**hp, "ns_dtype": "int8"}, [w1])


def test_spec_of_a_wrapper() -> None:
    name, hp = optimizer_spec("lookahead", {"optimizer": {"name": "adam", "hyperparameters": {"lr": 0.1}}, "k": 3})
    assert name == "optimlab.Lookahead"
    assert hp["k"] == 3 and hp["alpha"] == 0.5 and hp["optimizer"]["name"] == "optimlab.Adam"
    assert hp["optimizer"]["hyperparameters"]["lr"] == 0.1 and hp["optimizer"]["hyperparameters"]["eps"] == 1e-8
    optimizer = build_optimizer(name, hp, [torch.zeros(2, requires_grad=True)])
    assert isinstance(optimizer, Lookahead) and isinstance(optimizer.optimizer, Adam)
    with pytest.raises(ValueError, match=r"invalid hyperparameter optimizer=None for optimlab.Lookahead"):
        optimizer_spec("lookahead", {})


@pytest.mark.parametrize(
    ("name", "hp", "message"),
    [
        ("Adam", {"learning_rate": 0.1}, r"invalid hyperparameter 'learning_rate' for optimlab.Adam: expected some of lr, betas"),
        ("Adam", {"lr": float("nan")}, r"invalid config.* NaN"),
        ("Adam", {"lr": torch.tensor(0.1)}, r"of type Tensor"),
        ("Adam", [("lr", 0.1)], r"invalid hyperparameters=.*expected a mapping"),
    ],
)
def test_invalid_hyperparameters(name: str, hp: object, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        optimizer_spec(name, hp)  # type: ignore[arg-type]


def test_state_bytes() -> None:
    params = [torch.zeros(3, 4, requires_grad=True), torch.zeros(5, requires_grad=True)]
    optimizer = Adam(params)
    assert state_bytes(optimizer) == 0
    for p in params:
        p.grad = torch.ones_like(p)
    optimizer.step()
    # exp_avg and exp_avg_sq in float32 per parameter, and a float32 step scalar each
    assert state_bytes(optimizer) == 2 * (12 + 5) * 4 + 2 * 4
    wrapped = Lookahead(Adam(params), k=2)
    wrapped.step()
    # the inner Adam's state, plus one slow copy of each parameter
    assert state_bytes(wrapped) == 2 * (12 + 5) * 4 + 2 * 4 + (12 + 5) * 4


# -- runs -----------------------------------------------------------------------------------


def test_invalid_arguments_raise_before_training() -> None:
    with pytest.raises(ValueError, match=r"run: invalid budget='long': expected one of 'smoke', 'quick', 'full'"):
        run(MNIST, "Adam", {}, 0, "long")
    with pytest.raises(ValueError, match=r"run: invalid seed=-1: expected an integer >= 0"):
        run(MNIST, "Adam", {}, -1)
    with pytest.raises(ValueError, match=r"tasks.get: invalid name='mnist'"):
        run("mnist", "Adam")
    with pytest.raises(ValueError, match=r"Adam: invalid lr=-1"):  # the optimizer's own check
        run(MNIST, "Adam", {"lr": -1.0})
    with pytest.raises(ValueError, match=r"run: invalid device='gpu0'"):
        run(MNIST, "Adam", device="gpu0")


def test_same_seed_same_curve_bit_for_bit() -> None:
    before = torch.random.get_rng_state()
    first = run(MNIST, CNN_OPTIMIZER, {"lr": 1e-3}, 7, "smoke", progress=False)
    assert torch.equal(torch.random.get_rng_state(), before)  # the caller's random state is left alone
    second = run(MNIST, CNN_OPTIMIZER, {"lr": 1e-3}, 7, "smoke", progress=False)
    other = run(MNIST, CNN_OPTIMIZER, {"lr": 1e-3}, 8, "smoke", progress=False)
    assert untimed(first) == untimed(second)
    assert untimed(first)[0] != untimed(other)[0]
    assert not torch.are_deterministic_algorithms_enabled()  # restored


def test_gan_same_seed_same_curve() -> None:
    a, b = (run("gan-ring", "Adam", {"lr": 1e-3}, 3, "smoke", progress=False) for _ in range(2))
    assert untimed(a) == untimed(b) and math.isfinite(a["final"]["test_hq_fraction"])


def test_result_layout() -> None:
    result = run(MNIST, CNN_OPTIMIZER, {"lr": 1e-3}, 0, "smoke", progress=False)
    assert result["status"] == "finished" and result["key"] is None
    assert result["config"] == {
        "task": "mnist-cnn@digits",
        "optimizer": "torch.Adam",
        "hyperparameters": optimizer_spec("torch.Adam", {"lr": 1e-3})[1],
        "seed": 0,
        "budget": "smoke",
        "device": "cpu",
        "dtype": "float32",
        "settings": {"epochs": 1, "batch_size": 64, "train_size": 256, "val_size": 256, "test_size": 256, "eval_every": None},
        "threads": torch.get_num_threads(),
    }
    # 96 examples in batches of 64: 2 steps, a point at each (2 // 20 rounds up to every step) and one at step 0
    start, *_, point = result["curve"]
    assert [p["step"] for p in result["curve"]] == [0, 1, 2]
    assert list(start) == ["epoch", "epochs", "step", "val_loss", "val_accuracy", "train_time", "wall_time"]
    assert start["epoch"] == 1 and start["epochs"] == 0.0 and start["train_time"] == 0.0
    assert list(point) == ["epoch", "epochs", "step", "train_loss", "val_loss", "val_accuracy", "train_time", "wall_time"]
    assert point["epoch"] == 3 and point["epochs"] == 1.0 and point["step"] == 2
    final = result["final"]
    assert set(final) == {"test_loss", "test_accuracy", "diverged", "steps", "epochs", "num_params", "state_bytes", "threads",
                          "peak_rss_bytes", *TIMES}  # fmt: skip
    # the process holds the model's 5.2M float32 parameters, so its peak is at least that
    assert 4 * 5_207_170 < final["peak_rss_bytes"] < 64 * 2**30
    assert final["num_params"] == 5_207_170
    assert final["state_bytes"] == 8 * 5_207_170 + 4 * 8  # Adam: two float32 moments, 8 step scalars
    assert 0 < point["train_time"] <= point["wall_time"] <= final["wall_time"]


def test_eval_every_and_a_point_at_the_end() -> None:
    # 60 rows in batches of 10, 2 epochs: points every 20 steps would miss the end at step 12
    budgets = {**AIRFOIL.budgets, "smoke": tasks.Budget(epochs=2, batch_size=10, eval_every=5)}
    result = run(replace(AIRFOIL, budgets=budgets), "Adam", {"lr": 0.01}, 0, "smoke", progress=False)
    assert [p["step"] for p in result["curve"]] == [0, 5, 10, 12]
    assert [p["epochs"] for p in result["curve"]] == pytest.approx([0, 5 / 6, 10 / 6, 2.0])
    assert result["curve"][-1]["full_loss"] == result["final"]["full_loss"]


def test_curves_without_eval_every_have_twenty_points_after_step_zero() -> None:
    # 60 rows in batches of 2, 2 epochs: 60 steps; without eval_every, a point every 60 // 20 = 3 steps
    budgets = {**AIRFOIL.budgets, "smoke": tasks.Budget(epochs=2, batch_size=2)}
    result = run(replace(AIRFOIL, budgets=budgets), "Adam", {"lr": 0.01}, 0, "smoke", progress=False)
    assert [p["step"] for p in result["curve"]] == list(range(0, 61, 3))
    assert "full_loss" in result["curve"][0] and "train_loss" not in result["curve"][0]


def test_quick_budgets_give_every_curve_twenty_points() -> None:
    for name in tasks.names():
        task = tasks.get(name)
        b = task.budgets["quick"]
        if b.eval_every is not None:  # tasks that set it: the rows they train on are known without loading data
            rows = {"airfoil-linreg": 1500}[name] if b.train_size is None else b.train_size
            assert b.epochs * -(-rows // b.batch_size) // b.eval_every >= 20, name


def test_divergence_stops_the_run_and_is_recorded() -> None:
    result = run(AIRFOIL, "torch.SGD", {"lr": 1e6}, 0, "smoke", progress=False)
    assert result["status"] == "diverged"
    final, last = result["final"], result["curve"][-1]
    assert final["diverged"] == 1 and final["steps"] < 6 and math.isnan(final["full_loss"])
    # it stops once a loss exceeds 1e6 x the first step's (at least 1): the mean since the last point is huge
    assert not (last["train_loss"] < 1e6 / final["steps"]) and "full_loss" not in last and last["step"] == final["steps"]


def test_gan_optimizers_per_role() -> None:
    result = run(
        "gan-ring",
        {"generator": "Adam", "discriminator": "torch.SGD"},
        {"generator": {"lr": 1e-3}, "discriminator": {"lr": 0.01, "momentum": 0.9}},
        0,
        "smoke",
        progress=False,
    )
    config = result["config"]
    assert config["optimizer"] == {"generator": "optimlab.Adam", "discriminator": "torch.SGD"}
    assert config["hyperparameters"]["discriminator"]["momentum"] == 0.9
    assert config["hyperparameters"]["generator"]["betas"] == [0.9, 0.999]
    same = run("gan-ring", "Adam", {"lr": 1e-3}, 0, "smoke", progress=False)["config"]
    assert same["optimizer"] == {"generator": "optimlab.Adam", "discriminator": "optimlab.Adam"}
    assert same["hyperparameters"]["generator"] == same["hyperparameters"]["discriminator"]
    with pytest.raises(ValueError, match=r"per-role hyperparameters lack discriminator"):
        run("gan-ring", "Adam", {"generator": {"lr": 1e-3}})
    with pytest.raises(ValueError, match=r"a mapping needs exactly the roles generator, discriminator"):
        run("gan-ring", {"generator": "Adam"})


# -- store ----------------------------------------------------------------------------------


def test_store_records_then_skips_a_finished_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    with Store(tmp_path / "runs.sqlite") as store:
        first = run(AIRFOIL, "Adam", {"lr": 0.01}, 0, "smoke", store, progress=False)
        assert first["status"] == "finished" and first["key"] == run_key(first["config"])
        assert first["config"]["versions"] == with_versions({})["versions"]
        (record,) = store.runs()
        assert record["status"] == "finished" and record["final"] == first["final"]
        assert record["state_bytes"] == first["final"]["state_bytes"]
        assert store.epochs(first["key"]) == first["curve"]
        # the same run, named differently: skipped, not trained again
        with monkeypatch.context() as m:
            m.setattr(runner_mod, "_train", lambda *a: pytest.fail("a finished run was trained again"))
            again = run(AIRFOIL, "optimlab.adam", {"lr": 0.01, "eps": 1e-8}, 0, "smoke", store, progress=False)
        assert again["status"] == "skipped" and again["stored_status"] == "finished" and again["key"] == first["key"]
        assert again["final"] == first["final"] and again["curve"] == first["curve"]
        # another seed is another run
        assert run(AIRFOIL, "Adam", {"lr": 0.01}, 1, "smoke", store, progress=False)["status"] == "finished"
        assert len(store.runs()) == 2


def test_store_keeps_a_failure_and_the_sweep_goes_on(tmp_path: Path) -> None:
    broken = AIRFOIL.with_data(Dataset("broken", Split(torch.zeros(10, 3), torch.zeros(10, 1)), None, None, None))
    with Store(tmp_path / "runs.sqlite") as store:
        result = run(broken, "Adam", {}, 0, "smoke", store, progress=False)
        assert result["status"] == "failed" and "mat1 and mat2 shapes cannot be multiplied" in result["error"]
        assert store.runs()[0]["status"] == "failed"
        kept = run(broken, "Adam", {}, 0, "smoke", store, progress=False, retry_failed=False)
        assert kept["status"] == "skipped" and kept["stored_status"] == "failed" and store.runs()[0]["attempt"] == 1
        assert run(broken, "Adam", {}, 0, "smoke", store, progress=False)["status"] == "failed"  # retried by default
        assert store.runs()[0]["attempt"] == 2
    with pytest.raises(RuntimeError, match="mat1 and mat2"):  # without a store, errors propagate
        run(broken, "Adam", {}, 0, "smoke", progress=False)


# -- failures are retried, the environment checked first (issue 10, "Why" 3) ---------------------


def _lab(tmp_path: Path, *extra: str) -> list[str]:
    # --workers 0: in this process, where the tests replace _train
    return ["run", "--task", "airfoil-linreg", "--opt", "Adam(lr=0.01)", "--seeds", "2", "--budget", "smoke",
            "--store", str(tmp_path / "lab.sqlite"), "--workers", "0", *extra]  # fmt: skip


@pytest.mark.skipif(torch.cuda.is_available(), reason="needs a torch that sees no CUDA device")
def test_a_missing_device_is_one_error_and_nothing_is_stored(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    from optimlab.cli import main

    assert main(_lab(tmp_path, "--device", "cuda")) == 2
    err = capsys.readouterr().err.strip().splitlines()
    expected = f"run: invalid device='cuda': this torch ({torch.__version__}) sees no CUDA device; use --device cpu"
    assert err == [f"optimlab run: error: {expected}"]
    with Store(tmp_path / "lab.sqlite") as store:
        assert store.runs() == []


def test_a_wrong_data_directory_is_one_error_and_nothing_is_stored(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimlab.cli import main

    monkeypatch.setenv("OPTIMLAB_DATA_MIRROR", (tmp_path / "no-mirror").as_uri())  # no network needed to fail
    (tmp_path / "data" / "airfoil").mkdir(parents=True)
    (tmp_path / "data" / "airfoil" / "airfoil_self_noise.dat").write_text("not the data\n")
    assert main(_lab(tmp_path, "--data-dir", str(tmp_path / "data"))) == 2
    err = [line for line in capsys.readouterr().err.splitlines() if "it/s" not in line]
    assert len(err) == 1 and err[0].startswith("optimlab run: error: run: the data of airfoil-linreg is not usable: ")
    assert "airfoil_self_noise.dat" in err[0]
    with Store(tmp_path / "lab.sqlite") as store:
        assert store.runs() == []


def test_a_stored_failure_is_retried_by_the_same_command(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from optimlab.cli import main

    if not (DATA / "airfoil").exists():
        pytest.skip(f"airfoil data not staged under {DATA} (set OPTIMLAB_DATA_DIR)")
    monkeypatch.setenv("OPTIMLAB_DATA_DIR", str(DATA))
    train = runner_mod._train

    def broken(*args: object, **kwargs: object) -> None:
        raise OSError("disk on fire")

    monkeypatch.setattr(runner_mod, "_train", broken)
    assert main(_lab(tmp_path)) == 1
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert err.startswith("optimlab run: error: Adam(lr=0.01) seed 1 failed") and "OSError: disk on fire" in err
    monkeypatch.setattr(runner_mod, "_train", train)  # the environment is fixed
    assert main(_lab(tmp_path, "--no-retry-failed")) == 1  # kept as it was
    assert "disk on fire" in capsys.readouterr().err
    assert main(_lab(tmp_path)) == 0  # by default the same command runs it again
    assert "0 of 2 diverged" in capsys.readouterr().err
    with Store(tmp_path / "lab.sqlite") as store:
        # both seeds failed in the first command (a failed run no longer stops the others), both retried
        assert [(r["status"], r["attempt"]) for r in store.runs()] == [("finished", 2), ("finished", 2)]


def test_a_run_live_in_another_process_is_waited_for(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import threading
    import time

    train = runner_mod._train
    started = threading.Event()

    def slow(*args: object, **kwargs: object) -> object:
        started.set()
        time.sleep(1.0)
        return train(*args, **kwargs)

    monkeypatch.setattr(runner_mod, "_train", slow)
    results = {}

    def first() -> None:
        with Store(tmp_path / "lab.sqlite") as store:
            results["first"] = run(AIRFOIL, "Adam", {"lr": 0.01}, 0, "smoke", store, progress=False)

    thread = threading.Thread(target=first)
    thread.start()
    assert started.wait(10)
    with Store(tmp_path / "lab.sqlite") as store:  # the claim is live: its owner (this pid) is alive
        second = run(AIRFOIL, "Adam", {"lr": 0.01}, 0, "smoke", store, progress=False, poll=0.05)
    thread.join()
    assert results["first"]["status"] == "finished"
    assert second["status"] == "skipped" and second["stored_status"] == "finished"
    assert second["final"] == results["first"]["final"] and second["curve"] == results["first"]["curve"]


# -- progress and docs ----------------------------------------------------------------------


def test_progress_bar_goes_to_stderr_only_when_asked(capsys: pytest.CaptureFixture[str]) -> None:
    run(AIRFOIL, "Adam", {"lr": 0.01}, 0, "smoke", progress=True)
    shown = capsys.readouterr()
    assert "airfoil-linreg@line optimlab.Adam seed 0" in shown.err and "6/6" in shown.err and shown.out == ""
    run(AIRFOIL, "Adam", {"lr": 0.01}, 0, "smoke", progress=False)
    assert capsys.readouterr() == ("", "")


def test_docstring_budget_table_is_the_registry() -> None:
    assert tasks.budget_table() in runner_mod.__doc__
