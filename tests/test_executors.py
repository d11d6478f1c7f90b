"""Executors: the same store whatever runs the runs (one process, N local workers, Ray), and faults.

Every comparison of two stores is bit for bit in every stored metric except the timings and the
process's peak memory (which depend on the machine's load and on what ran before in the process).
"""

from __future__ import annotations

import math
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import pytest
import torch

from optimlab import protocol
from optimlab.executors import Driver, Local, make_executor
from optimlab.runner import prepare
from optimlab.runner import run as runner_run
from optimlab.store import Store, StoreError
from optimlab.tasks import get

DATA = Path(os.environ.get("OPTIMLAB_DATA_DIR") or Path(__file__).resolve().parents[2] / "shared" / "data")
NOT_NUMBERS = {"train_time", "wall_time", "setup_time", "peak_rss_bytes"}
AIRFOIL = get("airfoil-linreg")


@pytest.fixture(autouse=True)
def _data_dir(monkeypatch: pytest.MonkeyPatch) -> None:
    if not (DATA / "airfoil").exists():
        pytest.skip(f"real data not staged under {DATA} (set OPTIMLAB_DATA_DIR)")
    monkeypatch.setenv("OPTIMLAB_DATA_DIR", str(DATA))


class Faulty(type(AIRFOIL)):  # type: ignore[misc]
    """airfoil-linreg (same name, so the same run keys) whose setup SIGKILLs its own process, once
    (the first to create ``marker``) or always, or raises, or sleeps half a second."""

    def __init__(self, fault: str, marker: str = "") -> None:
        self.__dict__.update(AIRFOIL.__dict__)
        self.fault = fault
        self.marker = marker

    def setup(self, budget: Any, *, data_dir: Any, device: torch.device) -> Any:
        if self.fault == "raise":
            raise ZeroDivisionError("simulated bug in the run")
        if self.fault == "slow":
            time.sleep(0.5)
        if self.fault == "die" or (self.fault == "once" and _first(self.marker)):
            os.kill(os.getpid(), signal.SIGKILL)
        return super().setup(budget, data_dir=data_dir, device=device)


#: runs that last long enough for a driver to be stopped among them, even on an idle machine
SLOW = Faulty("slow")


def _first(marker: str) -> bool:
    try:
        os.close(os.open(marker, os.O_CREAT | os.O_EXCL))
    except FileExistsError:
        return False
    return True


def _numbers(path: Path) -> dict[str, Any]:
    """Every run's status, final metrics and curve, without timings, as exact float text."""

    def exact(metrics: dict[str, Any]) -> dict[str, Any]:
        return {k: float(v).hex() if isinstance(v, float) else v for k, v in metrics.items() if k not in NOT_NUMBERS}

    with Store(path, readonly=True) as store:
        return {
            r["key"]: (r["status"], exact(r["final"] or {}), [exact(e) for e in store.epochs(r["key"])])
            for r in store.runs()
        }


def _compare(path: Path, **kwargs: Any) -> protocol.Comparison:
    with Store(path) as store:
        return protocol.compare(
            "airfoil-linreg", ["Adam", "Momentum"], "smoke", seeds=2, trials=4, seed=3, store=store, batch=2,
            progress=False, **kwargs,
        )  # fmt: skip


def test_one_process_one_worker_and_two_workers_store_the_same_numbers(tmp_path: Path) -> None:
    # conftest sets this process to 1 torch thread, the local workers' default: the same runs
    results = {
        name: _compare(tmp_path / f"{name}.sqlite", **kwargs)
        for name, kwargs in (("inprocess", {}), ("one", {"workers": 1}), ("two", {"workers": 2}))
    }
    stores = {name: _numbers(tmp_path / f"{name}.sqlite") for name in results}
    assert len(stores["one"]) == 2 * (4 + 2)
    assert all(status == "finished" for status, _, _ in stores["one"].values())
    assert stores["inprocess"] == stores["one"] == stores["two"]
    tables = [r.table() for r in results.values()]
    assert repr(tables[0]) == repr(tables[1]) == repr(tables[2])
    trials = [{k: [(t.suggested, t.value) for t in v.trials] for k, v in r.tuned.items()} for r in results.values()]
    assert trials[0] == trials[1] == trials[2]


def test_the_batch_decides_the_trials(tmp_path: Path) -> None:
    def tuned(batch: int) -> list[float]:
        result = protocol.tune("airfoil-linreg", ["Adam"], "smoke", trials=12, seed=3, batch=batch, progress=False)
        return [t.suggested["lr"] for t in result["Adam"].trials]

    one, four = tuned(1), tuned(4)
    # TPE's 10 random start-up trials come from the seeded sampler whatever the batch; after them a
    # batch of 4 proposes trials 10 and 11 together, without trial 10's result
    assert one[:10] == four[:10] and one[10:] != four[10:]


def test_a_killed_worker_is_retried_and_the_store_is_the_same(tmp_path: Path) -> None:
    marker = tmp_path / "killed"
    with Store(tmp_path / "faulty.sqlite") as store:
        protocol.evaluate(Faulty("once", str(marker)), ["Adam", "Momentum"], "smoke", seeds=2, store=store, workers=2,
                          progress=False)  # fmt: skip
    with Store(tmp_path / "clean.sqlite") as store:
        protocol.evaluate(
            "airfoil-linreg", ["Adam", "Momentum"], "smoke", seeds=2, store=store, workers=1, progress=False
        )
    assert marker.exists()  # a worker did die under a run
    assert _numbers(tmp_path / "faulty.sqlite") == _numbers(tmp_path / "clean.sqlite")


def test_a_run_that_raises_or_keeps_killing_its_worker_is_stored_failed_and_the_rest_goes_on(tmp_path: Path) -> None:
    unpicklable = Faulty("none")
    unpicklable.hook = lambda: None  # a task that cannot travel to a worker
    specs = [
        prepare(task, "Adam", {"lr": 0.01}, seed, "smoke", threads=1)
        for task, seed in ((Faulty("die"), 1), (Faulty("raise"), 2), (AIRFOIL, 3), (unpicklable, 4))
    ]
    with Store(tmp_path / "lab.sqlite") as store, Local(2) as executor:
        with Driver(executor, store, retries=1) as driver:
            for n, spec in enumerate(specs):
                driver.submit(spec, n)
            results = dict(driver)
        records = {r["config"]["seed"]: r for r in store.runs()}
    assert [results[n]["status"] for n in range(4)] == ["failed", "failed", "finished", "failed"]
    assert "died (exit code -9) (2 attempts; no more retries)" in records[1]["error"]
    assert "ZeroDivisionError: simulated bug in the run" in records[2]["error"]
    assert records[3]["status"] == "finished" and math.isfinite(records[3]["final"]["full_loss"])
    assert "Can't pickle" in records[4]["error"]


# ~60 s each here (two commands, two spawned workers each); Ctrl-C in one process is also tested in test_protocol
@pytest.mark.parametrize("how", [pytest.param(signal.SIGINT, marks=pytest.mark.slow), signal.SIGKILL])
def test_a_driver_stopped_then_rerun_trains_nothing_twice(how: signal.Signals, tmp_path: Path) -> None:
    path = tmp_path / "lab.sqlite"
    argv = [sys.executable, "-m", "optimlab", "run", "--task", "tests.test_executors:SLOW", "--opt", "Adam", "--opt", "Momentum",
            "--seeds", "4", "--budget", "smoke", "--store", str(path), "--workers", "2"]  # fmt: skip
    root = Path(__file__).resolve().parents[1]
    env = {
        **os.environ,
        "OPTIMLAB_DATA_DIR": str(DATA),
        "PYTHONPATH": os.pathsep.join([str(root), os.environ.get("PYTHONPATH", "")]),
    }
    driver = subprocess.Popen(
        argv, env=env, cwd=root, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        finished: list[dict[str, Any]] = []
        deadline = time.monotonic() + 300
        while not finished and time.monotonic() < deadline and driver.poll() is None:
            time.sleep(0.2)
            try:
                with Store(path, readonly=True) as store:
                    finished = store.runs("finished")
            except StoreError:  # not created, or its schema not written yet
                continue
        assert finished and driver.poll() is None, "no run finished before the driver ended"
        driver.send_signal(how)
        driver.wait(timeout=120)
    finally:
        os.killpg(driver.pid, signal.SIGKILL)  # the workers of a killed driver too
        driver.wait()
    with Store(path, readonly=True) as store:
        before = {r["key"]: r for r in store.runs("finished")}
        statuses = {r["status"] for r in store.runs()}
    assert len(before) < 8 and statuses <= {"finished", "running", "interrupted"}
    if how == signal.SIGINT:
        assert "running" not in statuses  # Ctrl-C stored what was in flight as interrupted
    rerun = subprocess.run(argv, env=env, cwd=root, capture_output=True, text=True, timeout=600, check=False)
    assert "cannot be sent to worker processes" not in rerun.stderr  # the runs did go to the workers
    assert rerun.returncode == 0, rerun.stderr[-2000:]
    with Store(path, readonly=True) as store:
        after = {r["key"]: r for r in store.runs()}
    assert len(after) == 8 and all(r["status"] == "finished" for r in after.values())
    assert all(after[k]["started"] == r["started"] and after[k]["attempt"] == 1 for k, r in before.items())


def test_ray_without_ray_or_with_a_bad_name_says_what_to_do(monkeypatch: pytest.MonkeyPatch) -> None:
    with pytest.raises(ValueError, match="executor='spark'"):
        make_executor("spark")
    with pytest.raises(ValueError, match="workers=-1"):
        make_executor(None, -1)
    assert type(make_executor("local", 0)).__name__ == type(make_executor()).__name__ == "InProcess"
    monkeypatch.setitem(sys.modules, "ray", None)  # import ray raises ImportError
    with pytest.raises(ValueError, match=r"pip install 'optimlab\[ray\]'"):
        make_executor("ray")


def test_ray_stores_the_same_numbers_as_one_local_worker(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from optimlab.executors import Ray

    # a private Ray instance (separate raylet and worker processes, not local_mode); a short socket path
    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    try:
        executor = Ray(cpus_per_run=1, init_kwargs={"num_cpus": 2, "_temp_dir": temp})
        with executor:
            ray_result = _compare(tmp_path / "ray.sqlite", executor=executor)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    local_result = _compare(tmp_path / "local.sqlite", workers=1)
    assert _numbers(tmp_path / "ray.sqlite") == _numbers(tmp_path / "local.sqlite")
    assert repr(ray_result.table()) == repr(local_result.table())


class Artifacts(type(AIRFOIL)):  # type: ignore[misc]
    """airfoil-linreg whose runs make two artifacts: the final weights' bytes (distinct for every run)
    and a fixed 1 MB blob."""

    def __init__(self) -> None:
        self.__dict__.update(AIRFOIL.__dict__)

    def setup(self, budget: Any, *, data_dir: Any, device: torch.device) -> Any:
        instance = super().setup(budget, data_dir=data_dir, device=device)

        def artifacts() -> list[dict[str, Any]]:
            weights = torch.cat([p.detach().flatten() for p in instance.parameters()["model"]])
            return [
                {"name": "weights", "media_type": "application/x-float32-le",
                 "data": weights.numpy().astype("<f4").tobytes()},
                {"name": "blob", "media_type": "application/octet-stream", "data": bytes(range(256)) * 4096},
            ]

        instance.artifacts = artifacts
        return instance


def _artifacts(path: Path) -> dict[str, list[dict[str, Any]]]:
    with Store(path, readonly=True) as store:
        return {r["key"]: store.artifacts(r["key"]) for r in store.runs()}


def _evaluate_with_artifacts(path: Path, **kwargs: Any) -> None:
    with Store(path) as store:
        protocol.evaluate(Artifacts(), ["Adam", "Momentum"], "smoke", seeds=2, store=store, progress=False, **kwargs)


def test_artifacts_come_back_from_every_executor_byte_for_byte(tmp_path: Path) -> None:
    _evaluate_with_artifacts(tmp_path / "inprocess.sqlite")
    _evaluate_with_artifacts(tmp_path / "two.sqlite", workers=2)
    stores = {name: _artifacts(tmp_path / f"{name}.sqlite") for name in ("inprocess", "two")}
    assert len(stores["inprocess"]) == 4
    for artifacts in stores["inprocess"].values():
        assert [(a["name"], a["media_type"]) for a in artifacts] == [
            ("blob", "application/octet-stream"), ("weights", "application/x-float32-le")
        ]
        assert artifacts[0]["data"] == bytes(range(256)) * 4096
        assert len(artifacts[1]["data"]) == 4 * 6  # 5 weights and a bias
        assert {a["step"] for a in artifacts} == {30}  # smoke airfoil: 300 rows / 10 per step, one epoch
    assert len({a[1]["data"] for a in stores["inprocess"].values()}) == 4  # every run its own weights
    assert stores["inprocess"] == stores["two"]
    # the serial path, runner.run with a store, stores the same; its result leaves them in the store
    with Store(tmp_path / "run.sqlite") as store:
        result = runner_run(Artifacts(), "Adam", seed=1, budget="smoke", store=store, progress=False)
        assert "artifacts" not in result and store.artifacts(result["key"]) == stores["two"][result["key"]]
    unstored = runner_run(Artifacts(), "Adam", seed=1, budget="smoke", progress=False)["artifacts"]  # in the result
    assert sorted(unstored, key=lambda a: a["name"]) == stores["two"][result["key"]]


def test_ray_carries_artifacts_byte_for_byte(tmp_path: Path) -> None:
    pytest.importorskip("ray")
    from optimlab.executors import Ray

    temp = tempfile.mkdtemp(prefix="ray", dir="/tmp")
    try:
        with Ray(cpus_per_run=1, init_kwargs={"num_cpus": 2, "_temp_dir": temp}) as executor:
            _evaluate_with_artifacts(tmp_path / "ray.sqlite", executor=executor)
    finally:
        shutil.rmtree(temp, ignore_errors=True)
    _evaluate_with_artifacts(tmp_path / "one.sqlite", workers=1)
    ray, one = _artifacts(tmp_path / "ray.sqlite"), _artifacts(tmp_path / "one.sqlite")
    assert len(ray) == 4 and all(len(a) == 2 for a in ray.values()) and ray == one
