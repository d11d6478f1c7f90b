"""The results store: resume after Ctrl-C, a crash and SIGKILL; failures kept; keys; schema; export."""

from __future__ import annotations

import csv
import json
import math
import os
import signal
import sqlite3
import subprocess
import sys
import time
from pathlib import Path

import numpy as np
import pytest

import optimlab
from optimlab import store as store_mod
from optimlab.store import (
    SCHEMA_VERSION,
    ClaimLostError,
    SchemaVersionError,
    Store,
    canonical_json,
    run_key,
    with_versions,
)

REPO = Path(optimlab.__file__).resolve().parents[1]


def config(seed: int, optimizer: str = "adam", lr: float = 1e-3) -> dict:
    return {
        "task": "toy",
        "optimizer": optimizer,
        "hp": {"lr": lr, "betas": [0.9, 0.999]},
        "seed": seed,
        "budget": 3,
    }


CONFIGS = [config(s) for s in range(4)] + [config(0, optimizer="boom")]


def curve(cfg: dict, epoch: int) -> dict:
    """The fake training's metrics: distinct for every run and epoch, with one NaN to carry."""
    loss = 1.0 / (1 + epoch + cfg["seed"]) + cfg["hp"]["lr"]
    return {"train_loss": loss, "val_loss": loss * 1.1, "accuracy": float("nan") if epoch == 0 else 1 - loss,
            "wall_time": 0.5 * (epoch + 1)}


def sweep(store: Store, configs: list[dict], interrupt_at=None, hang_at=None, sleep: float = 0.0) -> list[str]:
    """Run every claimable config; return the keys actually trained. ``interrupt_at=(seed, epoch)``
    raises KeyboardInterrupt there; ``hang_at`` prints the key and sleeps (to be SIGKILLed)."""
    trained = []
    for cfg in configs:
        run = store.claim(cfg)
        if run is None:
            continue
        trained.append(run.key)
        with run:
            for epoch in range(cfg["budget"]):
                if (cfg["seed"], epoch) == interrupt_at:
                    raise KeyboardInterrupt
                if (cfg["seed"], epoch) == hang_at:
                    print(run.key, flush=True)
                    time.sleep(60)
                if cfg["optimizer"] == "boom" and epoch == 1:
                    raise FloatingPointError("loss is nan at epoch 1")
                run.log_epoch(epoch, **curve(cfg, epoch))
                time.sleep(sleep)
            run.finish(curve(cfg, cfg["budget"] - 1), state_bytes=8 * cfg["seed"])
    return trained


def results(store: Store) -> dict:
    """Everything a sweep's analysis reads, by key (timestamps left out)."""
    return {
        r["key"]: (r["status"], r["config"], r["final"], r["state_bytes"], store.epochs(r["key"]))
        for r in store.runs()
    }


def same(a, b) -> bool:
    """Equality where NaN equals NaN (json round-trips keep it a float)."""
    return json.dumps(a, sort_keys=True) == json.dumps(b, sort_keys=True)


@pytest.fixture
def reference(tmp_path):
    """The results of the sweep run once, uninterrupted."""
    with Store(tmp_path / "reference.sqlite") as s:
        sweep(s, CONFIGS)
        return results(s)


# ---------------------------------------------------------------------------------------------
# Interrupt and resume
# ---------------------------------------------------------------------------------------------


def test_sweep_records_finished_and_failed_runs(tmp_path, reference):
    keys = [run_key(c) for c in CONFIGS]
    assert len(reference) == 5
    for c, k in zip(CONFIGS[:4], keys):
        status, cfg, final, state_bytes, epochs = reference[k]
        assert (status, cfg, state_bytes) == ("finished", c, 8 * c["seed"])
        assert same(final, curve(c, 2))
        assert same(epochs, [{"epoch": e, **curve(c, e)} for e in range(3)])
    status, _, final, _, epochs = reference[keys[4]]
    assert (status, final) == ("failed", None)
    assert same(epochs, [{"epoch": 0, **curve(CONFIGS[4], 0)}])  # the curve up to the failure is kept


def test_failed_run_keeps_traceback_and_sweep_goes_on(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        trained = sweep(s, [CONFIGS[4], CONFIGS[0]])  # the failure comes first; the next still runs
        assert trained == [run_key(CONFIGS[4]), run_key(CONFIGS[0])]
        (failed,) = s.runs(status="failed")
        assert failed["error"].startswith("Traceback (most recent call last):")
        assert "FloatingPointError: loss is nan at epoch 1" in failed["error"]
        assert [r["key"] for r in s.runs(status="finished")] == [run_key(CONFIGS[0])]
        assert sweep(s, CONFIGS[:1] + CONFIGS[4:]) == []  # neither the finished nor the failed run again
        again = s.claim(CONFIGS[4], retry_failed=True)
        assert again.attempt == 2
        (row,) = s.runs(status="running")
        assert row["error"] is None and s.epochs(row["key"]) == []


def test_keyboard_interrupt_marks_interrupted_and_resume_reruns_only_it(tmp_path, reference):
    with Store(tmp_path / "s.sqlite") as s:
        with pytest.raises(KeyboardInterrupt):
            sweep(s, CONFIGS, interrupt_at=(2, 2))
        before = results(s)
        hit = run_key(CONFIGS[2])
        assert before[hit][0] == "interrupted"
        assert "KeyboardInterrupt" in s.runs(status="interrupted")[0]["error"]
        assert len(before[hit][4]) == 2  # its curve so far is kept until the re-run
        trained = sweep(s, CONFIGS)
        assert trained == [hit, run_key(CONFIGS[3]), run_key(CONFIGS[4])]
        after = results(s)
        for k in before:  # nothing finished was touched
            if before[k][0] == "finished":
                assert same(after[k], before[k])
        assert same(after, reference)
        assert {r["key"]: r["attempt"] for r in s.runs()}[hit] == 2


def test_sigkilled_sweep_resumes_and_reruns_the_killed_run(tmp_path, reference):
    path = tmp_path / "s.sqlite"
    code = (
        "import sys; from optimlab.store import Store; from tests.test_store import sweep, CONFIGS;"
        "sweep(Store(sys.argv[1]), CONFIGS, hang_at=(2, 2))"
    )
    child = subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
    try:
        hung = child.stdout.readline().strip()
        assert hung == run_key(CONFIGS[2])
        with Store(path) as s:
            assert s.claim(CONFIGS[2]) is None  # its owner is alive: not taken over
            child.send_signal(signal.SIGKILL)
            child.wait(10)
            before = results(s)
            assert before[hung][0] == "running" and len(before[hung][4]) == 2
            assert sweep(s, CONFIGS) == [hung, run_key(CONFIGS[3]), run_key(CONFIGS[4])]
            after = results(s)
            assert all(same(after[k], before[k]) for k in before if before[k][0] == "finished")
            assert same(after, reference)
    finally:
        child.kill()
        child.wait()
        child.stdout.close()


def test_two_processes_run_each_config_exactly_once(tmp_path):
    path = tmp_path / "s.sqlite"
    configs = [config(s, lr=lr) for s in range(5) for lr in (1e-3, 1e-2, 1e-1)]
    code = (
        "import sys, json; from optimlab.store import Store; from tests.test_store import sweep, config;"
        "configs = [config(s, lr=lr) for s in range(5) for lr in (1e-3, 1e-2, 1e-1)];"
        "print(json.dumps(sweep(Store(sys.argv[1], timeout=30), configs, sleep=0.005)))"
    )
    Store(path).close()  # created once, so both children open an existing file
    children = [
        subprocess.Popen([sys.executable, "-c", code, str(path)], cwd=REPO, stdout=subprocess.PIPE, text=True)
        for _ in range(2)
    ]
    trained = [json.loads(c.communicate(timeout=60)[0]) for c in children]
    assert all(c.returncode == 0 for c in children)
    assert sorted(trained[0] + trained[1]) == sorted(run_key(c) for c in configs)
    with Store(path) as s:
        assert {(r["status"], r["attempt"]) for r in s.runs()} == {("finished", 1)}
        assert all(len(s.epochs(r["key"])) == 3 for r in s.runs())


def test_running_run_of_another_machine_is_rerun_after_stale_heartbeat(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path, stale_after=100) as s:
        s.claim(CONFIGS[0]).log_epoch(0, train_loss=1.0)
        with sqlite3.connect(path) as db:  # as if another machine had claimed it 50 s ago
            db.execute("UPDATE runs SET owner_host = 'elsewhere', heartbeat = ?", (time.time() - 50,))
        assert s.claim(CONFIGS[0]) is None
        with sqlite3.connect(path) as db:
            db.execute("UPDATE runs SET heartbeat = ?", (time.time() - 150,))
        run = s.claim(CONFIGS[0])
        assert run.attempt == 2 and s.epochs(run.key) == []


def test_old_owner_loses_the_claim_after_takeover(tmp_path):
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        old = s.claim(CONFIGS[0])
        assert s.claim(CONFIGS[0]) is None  # same live process
        with sqlite3.connect(path) as db:  # as if the pid had been reused by another process
            db.execute("UPDATE runs SET owner_start = 'another process'")
        new = s.claim(CONFIGS[0])
        with pytest.raises(ClaimLostError):
            with old:
                old.log_epoch(0, train_loss=1.0)
        new.log_epoch(0, train_loss=2.0)
        new.finish({"train_loss": 2.0})
        assert s.epochs(new.key) == [{"epoch": 0, "train_loss": 2.0}]
        assert s.runs()[0]["status"] == "finished"


@pytest.mark.skipif(not Path("/proc/self/stat").exists(), reason="Linux /proc")
def test_dead_or_zombie_process_counts_as_gone():
    assert store_mod._process_start(os.getpid()) not in (None, "")
    child = subprocess.Popen(["true"])
    stat = Path(f"/proc/{child.pid}/stat")
    while stat.read_text().rsplit(")", 1)[1].split()[0] != "Z":  # exited, not yet reaped by us
        time.sleep(0.01)
    assert store_mod._process_start(child.pid) is None
    child.wait()
    assert store_mod._process_start(child.pid) is None


def test_with_block_without_finish_is_an_error(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        run = s.claim(CONFIGS[0])
        with pytest.raises(RuntimeError, match="without finish"):
            with run:
                run.log_epoch(0, train_loss=1.0)
        assert s.runs()[0]["status"] == "failed"
        with pytest.raises(RuntimeError, match="already ended"):
            run.finish({"train_loss": 1.0})


def test_invalid_inputs_name_the_parameter(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        run = s.claim(CONFIGS[0])
        run.log_epoch(0, train_loss=1.0)
        for call, match in [
            (lambda: run.log_epoch(-1, train_loss=1.0), "epoch=-1"),
            (lambda: run.log_epoch(0, train_loss=1.0), "epoch=0: already logged"),
            (lambda: run.log_epoch(1), "metrics"),
            (lambda: run.log_epoch(1, train_loss="low"), "train_loss='low'"),
            (lambda: run.log_epoch(1, key=1.0), "'key'"),
            (lambda: run.finish({"loss": 1.0}, state_bytes=-1), "state_bytes=-1"),
            (lambda: s.runs(status="done"), "status='done'"),
            (lambda: s.epochs("nope"), "key='nope'"),
            (lambda: s.export(tmp_path, format="xlsx"), "format='xlsx'"),
            (lambda: Store(tmp_path / "t.sqlite", timeout=-1), "timeout=-1"),
            (lambda: Store(tmp_path / "t.sqlite", stale_after=0), "stale_after=0"),
        ]:
            with pytest.raises(ValueError, match=match):
                call()


# ---------------------------------------------------------------------------------------------
# Run keys
# ---------------------------------------------------------------------------------------------


def test_key_ignores_key_order_float_spelling_and_tuples():
    a = {"task": "toy", "hp": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8}, "seed": 0}
    b = {"seed": 0, "hp": {"eps": float("1.0E-8"), "betas": [0.9, 0.999], "lr": 0.001}, "task": "toy"}
    c = {"seed": 0, "hp": {"eps": np.float64(1e-8), "betas": [0.9, 0.999], "lr": np.float64(10.0) ** -3}, "task": "toy"}
    assert canonical_json(a) == canonical_json(b) == canonical_json(c)
    assert run_key(a) == run_key(b) == run_key(c)


def test_any_change_changes_the_key():
    base = config(0)
    variants = [
        base,
        {**base, "seed": 1},
        {**base, "budget": 4},
        {**base, "task": "toy2"},
        {**base, "optimizer": "adamw"},
        {**base, "hp": {**base["hp"], "lr": 1.0000000000000002e-3}},  # one ulp away
        {**base, "hp": {**base["hp"], "betas": [0.9, 0.99]}},
        {**base, "hp": {**base["hp"], "betas": [0.999, 0.9]}},  # order of a list matters
        {**base, "hp": {**base["hp"], "eps": 1e-8}},  # a default spelled out is a different config
        {**base, "budget": 3.0},  # int and float stay apart
        {**base, "budget": True},
        {**base, "hp": {**base["hp"], "lr": -0.0}},
        {**base, "hp": {**base["hp"], "lr": 0.0}},
        {**base, "versions": {"torch": "2.13.0+cpu"}},
        {**base, "versions": {"torch": "2.13.0+cu121"}},
    ]
    assert len({run_key(v) for v in variants}) == len(variants)


def test_canonical_form_is_pinned():
    cfg = {"task": "mnist", "optimizer": "adam", "hp": {"lr": 1e-3, "betas": (0.9, 0.999), "eps": 1e-8},
           "seed": 0, "budget": 10, "clip": float("inf"), "note": "é", "extra": None, "amsgrad": False}
    assert canonical_json(cfg) == (
        '{"amsgrad":false,"budget":10,"clip":Infinity,"extra":null,'
        '"hp":{"betas":[0.9,0.999],"eps":1e-08,"lr":0.001},"note":"\\u00e9","optimizer":"adam","seed":0,"task":"mnist"}'
    )
    assert run_key(cfg) == "1bd627c0ec608dec8000063d554f4b72cd705b8dba7fa413827b12a2b4cdf851"


@pytest.mark.parametrize(
    "bad, match",
    [
        ({"lr": float("nan")}, r"config\.lr=nan"),
        ({"hp": {1: 0.1}}, r"key 1 in config\.hp"),
        ({"hp": {"betas": [0.9, {0.999}]}}, r"config\.hp\.betas\[1\]=\{0\.999\} of type set"),
        ({"lr": np.float32(0.1)}, r"config\.lr=.* of type float32"),
    ],
)
def test_unkeyable_config_is_refused(bad, match):
    with pytest.raises(ValueError, match=match):
        run_key(bad)


def test_with_versions_adds_the_libraries(monkeypatch):
    import platform
    import types

    # The version the running torch reports (its build included), without the cost of importing it.
    monkeypatch.setitem(sys.modules, "torch", types.SimpleNamespace(__version__="9.9.9+cu999"))
    cfg = with_versions(config(0))
    assert cfg["versions"] == {"optimlab": optimlab.__version__, "torch": "9.9.9+cu999",
                               "numpy": np.__version__, "python": platform.python_version()}
    assert {k: v for k, v in cfg.items() if k != "versions"} == config(0)
    with pytest.raises(ValueError, match="already has versions"):
        with_versions(cfg)


# ---------------------------------------------------------------------------------------------
# Schema
# ---------------------------------------------------------------------------------------------


def test_new_file_is_wal_at_the_current_version(tmp_path):
    path = tmp_path / "sub" / "s.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION
        assert db.execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_newer_schema_is_refused(tmp_path):
    path = tmp_path / "s.sqlite"
    Store(path).close()
    with sqlite3.connect(path) as db:
        db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    with pytest.raises(SchemaVersionError, match=f"schema version {SCHEMA_VERSION + 1}, newer.*upgrade optimlab"):
        Store(path)


def test_other_sqlite_file_is_refused(tmp_path):
    path = tmp_path / "other.sqlite"
    with sqlite3.connect(path) as db:
        db.execute("CREATE TABLE t (x)")
    with pytest.raises(SchemaVersionError, match="not an optimlab results file"):
        Store(path)


def test_older_file_is_migrated_in_order_keeping_its_runs(tmp_path, monkeypatch):
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        sweep(s, CONFIGS[:1])
        before = results(s)
    step = ("ALTER TABLE runs ADD COLUMN note TEXT", "UPDATE runs SET note = 'migrated'")
    monkeypatch.setattr(store_mod, "MIGRATIONS", (*store_mod.MIGRATIONS, step))
    monkeypatch.setattr(store_mod, "SCHEMA_VERSION", SCHEMA_VERSION + 1)
    with Store(path) as s:
        assert same(results(s), before)
        assert s._db.execute("SELECT note FROM runs").fetchall() == [("migrated",)]
        assert s._db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION + 1


def test_meta_is_stored_with_the_run_outside_its_key_and_replaced_by_a_rerun(tmp_path):
    meta = {"task": {"name": "toy", "metric": "accuracy", "higher_is_better": True, "metric_bounds": [0, math.inf]}}
    with Store(tmp_path / "s.sqlite") as s:
        handle = s.claim(CONFIGS[0], meta=meta)
        assert handle.key == run_key(CONFIGS[0])  # the metadata is not part of the key
        handle.fail("boom")
        assert s.record(handle.key)["meta"] == meta  # inf included: JSON's Infinity reads back
        again = s.claim(CONFIGS[0], retry_failed=True, meta={"task": {**meta["task"], "metric": "loss"}})
        again.finish({"loss": 0.5})
        assert s.record(handle.key)["meta"]["task"]["metric"] == "loss"
        assert s.claim(CONFIGS[1]) is not None and s.runs()[1]["meta"] is None  # a claim without it reads None


def test_a_version_1_store_is_read_as_it_is_and_migrated_when_written(tmp_path):
    path = tmp_path / "old.sqlite"
    with sqlite3.connect(path) as db:  # the file the first release wrote
        for statement in store_mod.MIGRATIONS[0]:
            db.execute(statement)
        db.execute("PRAGMA user_version = 1")
        db.execute("PRAGMA journal_mode = WAL")
    with Store(path) as s:
        sweep(s, CONFIGS[:1])
        with sqlite3.connect(path) as db:
            db.execute("ALTER TABLE runs DROP COLUMN meta")  # as if written by the first release
            db.execute("DROP TABLE artifacts")
            db.execute("PRAGMA user_version = 1")
    with Store(path, readonly=True) as s:  # report reads it without migrating it
        (record,) = s.runs()
        assert record["status"] == "finished" and record["meta"] is None
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == 1
    with Store(path) as s:  # opened for writing: migrated, the run kept
        assert s.runs()[0]["key"] == record["key"] and s.runs()[0]["meta"] is None
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


ARTIFACTS = [
    {"name": "params/model", "step": 10, "media_type": "application/x-float32-le",
     "data": np.arange(3, dtype="<f4").tobytes()},
    {"name": "params/model", "step": 0, "media_type": "application/x-float32-le", "data": b"\x00" * 12},
    {"name": "samples", "step": 10, "media_type": "image/png", "data": bytes(range(256)) * 3},
]


def test_artifacts_are_stored_with_the_finish_and_read_back_byte_for_byte(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        handle = s.claim(CONFIGS[0])
        handle.log_epoch(1, loss=1.0)
        assert s.artifacts(handle.key) == []  # nothing before the finish
        handle.finish({"loss": 0.5}, artifacts=ARTIFACTS)
        got = s.artifacts(handle.key)
        assert [(a["name"], a["step"]) for a in got] == [("params/model", 0), ("params/model", 10), ("samples", 10)]
        assert got == sorted(ARTIFACTS, key=lambda a: (a["name"], a["step"]))
        assert [a["data"] for a in s.artifacts(handle.key, name="samples")] == [ARTIFACTS[2]["data"]]
        assert s.artifacts(handle.key, name="other") == []
    with Store(tmp_path / "s.sqlite", readonly=True) as s:
        assert s.artifacts(handle.key) == got
        with pytest.raises(ValueError, match="Store.artifacts: invalid key='nope'"):
            s.artifacts("nope")


@pytest.mark.parametrize(
    ("bad", "match"),
    [
        ({**ARTIFACTS[0], "step": -1}, "invalid step=-1"),
        ({**ARTIFACTS[0], "data": "text"}, "invalid data of type str: expected bytes"),
        ({**ARTIFACTS[0], "media_type": "png"}, "invalid media_type='png'"),
        ({"name": "x", "data": b""}, "expected a mapping with exactly name, step, media_type, data"),
        (ARTIFACTS[1], "step 0 given twice"),
    ],
)
def test_a_bad_artifact_stores_nothing_and_leaves_the_run_to_its_owner(tmp_path, bad, match):
    with Store(tmp_path / "s.sqlite") as s:
        handle = s.claim(CONFIGS[0])
        with pytest.raises(ValueError, match=match):
            handle.finish({"loss": 0.5}, artifacts=[ARTIFACTS[1], bad])
        assert s.record(handle.key)["status"] == "running" and s.artifacts(handle.key) == []
        handle.finish({"loss": 0.5}, artifacts=ARTIFACTS[:1])
        assert len(s.artifacts(handle.key)) == 1


def test_an_interrupted_or_taken_over_run_leaves_no_artifacts(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        with pytest.raises(KeyboardInterrupt), s.claim(CONFIGS[0]) as handle:
            raise KeyboardInterrupt
        assert s.record(handle.key)["status"] == "interrupted" and s.artifacts(handle.key) == []
        lost = s.claim(CONFIGS[0])
        s._db.execute("UPDATE runs SET token = 'another process' WHERE key = ?", (lost.key,))
        with pytest.raises(ClaimLostError):
            lost.finish({"loss": 0.5}, artifacts=ARTIFACTS)
        assert s.artifacts(lost.key) == [] and s.record(lost.key)["status"] == "running"


def test_a_rerun_deletes_the_artifacts_of_the_attempt_it_replaces(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        handle = s.claim(CONFIGS[0])
        rows = store_mod._artifact_rows(handle.key, ARTIFACTS)
        handle._end("failed", error="crashed after its artifacts", artifacts=rows)
        assert len(s.artifacts(handle.key)) == 3
        again = s.claim(CONFIGS[0], retry_failed=True)
        assert again is not None and s.artifacts(handle.key) == []


def test_a_version_2_store_reads_its_metadata_and_no_artifacts_then_migrates(tmp_path):
    path = tmp_path / "v2.sqlite"
    meta = {"task": {"name": "toy"}}
    with sqlite3.connect(path) as db:  # the file the release before artifacts wrote
        for step in store_mod.MIGRATIONS[:2]:
            for statement in step:
                db.execute(statement)
        db.execute("PRAGMA user_version = 2")
        db.execute(
            "INSERT INTO runs (key, config, status, attempt, token, owner_host, owner_pid, owner_start, heartbeat,"
            " started, ended, final, meta)"
            " VALUES ('k', '{}', 'finished', 1, 't', 'h', 1, '', 0, 0, 1, '{\"loss\":1}', ?)",
            (json.dumps(meta),),
        )
    with Store(path, readonly=True) as s:
        (record,) = s.runs()
        assert record["meta"] == meta and s.artifacts("k") == []
    with Store(path) as s:
        assert s.runs()[0]["meta"] == meta
        handle = s.claim(CONFIGS[0])
        handle.finish({"loss": 0.5}, artifacts=ARTIFACTS)
        assert len(s.artifacts(handle.key)) == 3
    with sqlite3.connect(path) as db:
        assert db.execute("PRAGMA user_version").fetchone()[0] == SCHEMA_VERSION == 3


# ---------------------------------------------------------------------------------------------
# Export
# ---------------------------------------------------------------------------------------------


def expected_tables(s: Store) -> tuple[list[dict], list[dict]]:
    runs, epochs = [], []
    for r in s.runs():
        c = r["config"]
        runs.append({"key": r["key"], "status": r["status"], "attempt": r["attempt"], "error": r["error"],
                     "state_bytes": r["state_bytes"], "config.task": c["task"], "config.optimizer": c["optimizer"],
                     "config.hp.lr": c["hp"]["lr"], "config.hp.betas": "[0.9,0.999]", "config.seed": c["seed"],
                     "config.budget": c["budget"], **{f"final.{k}": v for k, v in (r["final"] or {}).items()}})
        epochs += [{"key": r["key"], **e} for e in s.epochs(r["key"])]
    return runs, epochs


def test_csv_export_round_trips(tmp_path, reference):
    with Store(tmp_path / "s.sqlite") as s:
        sweep(s, CONFIGS)
        paths = s.export(tmp_path / "out")
        runs, epochs = expected_tables(s)
    assert paths == {"runs": tmp_path / "out" / "runs.csv", "epochs": tmp_path / "out" / "epochs.csv"}
    with paths["runs"].open(newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0])[:7] == ["key", "status", "attempt", "started", "ended", "state_bytes", "error"]
    assert len(got) == len(runs) == 5
    for row, want in zip(got, runs):
        for name, value in want.items():
            text = row[name]
            if value is None:
                assert text == "", name
            elif isinstance(value, str):
                assert text == value, name
            else:
                assert float(text) == value or math.isnan(float(text)) and math.isnan(value), name
        unset = set(row) - set(want) - {"started", "ended"}  # the failed run's final metrics
        assert all(row[name] == "" for name in unset)
        assert unset <= {f"final.{k}" for k in curve(CONFIGS[0], 0)}
    with paths["epochs"].open(newline="") as f:
        got = list(csv.DictReader(f))
    assert list(got[0]) == ["key", "epoch", "accuracy", "train_loss", "val_loss", "wall_time"]
    assert len(got) == len(epochs) == 13
    for row, want in zip(got, epochs):
        assert row["key"] == want["key"] and int(row["epoch"]) == want["epoch"]
        assert same({k: float(row[k]) for k in want if k not in ("key", "epoch")},
                    {k: v for k, v in want.items() if k not in ("key", "epoch")})


def test_parquet_export_round_trips(tmp_path):
    pq = pytest.importorskip("pyarrow.parquet")
    with Store(tmp_path / "s.sqlite") as s:
        sweep(s, CONFIGS)
        paths = s.export(tmp_path / "out", format="parquet")
        runs, epochs = expected_tables(s)
    got = pq.read_table(paths["runs"]).to_pylist()
    assert len(got) == 5
    for row, want in zip(got, runs):
        assert same({k: row[k] for k in want}, want)
        assert isinstance(row["config.seed"], int) and isinstance(row["config.hp.lr"], float)
    assert "final.val_loss" in got[0] and got[4]["final.val_loss"] is None  # the failed run has no final
    assert same(pq.read_table(paths["epochs"]).to_pylist(), epochs)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    with Store(tmp_path / "s.sqlite") as s, pytest.raises(ImportError, match=r"pip install '?optimlab\[parquet\]"):
        s.export(tmp_path / "out", format="parquet")


def test_runs_filters_on_config_in_canonical_form(tmp_path):
    with Store(tmp_path / "s.sqlite") as s:
        sweep(s, CONFIGS)
        assert [r["config"]["seed"] for r in s.runs(optimizer="adam", hp={"betas": (0.9, 0.999), "lr": 0.001})] == [
            0, 1, 2, 3]
        assert [r["config"]["seed"] for r in s.runs(status="finished", seed=1)] == [1]
        assert s.runs(seed=1.0) == []  # 1.0 is not the int 1 (as in the key)
        assert s.runs(status="failed")[0]["config"]["optimizer"] == "boom"
        assert s.runs(missing=1) == []


# ---------------------------------------------------------------------------------------------
# A store that reads anywhere (issue 10, "Why" 4)
# ---------------------------------------------------------------------------------------------


def _cli(capsys: pytest.CaptureFixture[str], *argv: str) -> tuple[int, str]:
    """``optimlab ARGV`` as the user types it: (exit status, stderr)."""
    from optimlab.cli import main

    status = main(list(argv))
    return status, capsys.readouterr().err


def test_read_only_opening_changes_nothing_and_cannot_claim(tmp_path, reference):
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        sweep(s, CONFIGS)
    before = path.read_bytes()
    with Store(path, readonly=True) as s:
        assert same(results(s), reference)
        with pytest.raises(store_mod.StoreError, match="read-only"):
            s.claim(CONFIGS[0])
    assert path.read_bytes() == before


@pytest.mark.skipif(not hasattr(os, "geteuid") or os.geteuid() == 0, reason="root may write every file")
def test_report_reads_a_store_the_user_cannot_write(tmp_path, reference):
    path = tmp_path / "store" / "s.sqlite"
    with Store(path) as s:
        sweep(s, CONFIGS)
    path.chmod(0o444)
    path.parent.chmod(0o555)  # not even a -wal or -shm file can be created beside it
    try:
        with pytest.raises(store_mod.StoreError):
            Store(path)
        with Store(path, readonly=True) as s:
            assert same(results(s), reference)
    finally:
        path.parent.chmod(0o755)


def test_a_copy_without_its_wal_file_says_what_is_missing(tmp_path, capsys):
    path = tmp_path / "s.sqlite"
    live = Store(path)
    sweep(live, CONFIGS[:2])  # still open: the runs are in s.sqlite-wal, not yet in s.sqlite
    copy = tmp_path / "copy" / "s.sqlite"
    copy.parent.mkdir()
    copy.write_bytes(path.read_bytes())
    for readonly in (True, False):
        with pytest.raises(store_mod.StoreError, match=r"copy\.sqlite|s\.sqlite.*-wal file.*missing or empty"):
            Store(copy, readonly=readonly)
    status, err = _cli(capsys, "report", "--store", str(copy), "--out", str(tmp_path / "r"))
    assert status == 2 and err.count("\n") == 1 and "-wal" in err
    # the documented one-file copy holds everything, even while the store is open
    assert _cli(capsys, "export", "--store", str(path), "--out", str(tmp_path / "one.sqlite"), "--format", "sqlite")[0] == 0
    assert not Path(f"{tmp_path / 'one.sqlite'}-wal").exists()
    with Store(tmp_path / "one.sqlite", readonly=True) as s:
        assert same(results(s), results(live))
    live.close()


@pytest.mark.parametrize("kind", ["directory", "corrupt", "foreign", "newer"])
def test_unreadable_files_are_one_line_naming_the_file(tmp_path, capsys, kind):
    path = tmp_path / f"{kind}.sqlite"
    if kind == "directory":
        path.mkdir()
    elif kind == "corrupt":
        path.write_bytes(b"SQLite format 3\x00" + os.urandom(4000))
    elif kind == "foreign":
        with sqlite3.connect(path) as db:
            db.execute("CREATE TABLE t (x)")
    else:
        Store(path).close()
        with sqlite3.connect(path) as db:
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION + 1}")
    for command in (["report", "--store", str(path), "--out", str(tmp_path / "r")],
                    ["export", "--store", str(path), "--out", str(tmp_path / "e")]):  # fmt: skip
        status, err = _cli(capsys, *command)
        assert status == 2 and err.count("\n") == 1 and str(path) in err, err


def test_export_command_writes_the_tables(tmp_path, capsys, reference):
    path = tmp_path / "s.sqlite"
    with Store(path) as s:
        sweep(s, CONFIGS)
        expected_runs, _ = expected_tables(s)
    status, err = _cli(capsys, "export", "--store", str(path), "--out", str(tmp_path / "out"))
    assert status == 0 and "runs.csv" in err
    with open(tmp_path / "out" / "runs.csv", newline="") as f:
        assert [r["key"] for r in csv.DictReader(f)] == [r["key"] for r in expected_runs]
