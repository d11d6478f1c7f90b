"""The results store: one SQLite file that a sweep writes and resumes from.

A sweep runs many training runs (task x optimizer x hyperparameters x seed x budget). Each run is
keyed by :func:`run_key`, the sha256 of its configuration in a canonical JSON form, so a restarted
sweep recognises the runs it already has::

    store = Store("results/sweep.sqlite")
    for config in configs:
        config = with_versions(config)
        run = store.claim(config)           # None: finished already, or live in another process
        if run is None:
            continue
        with run:                           # an exception is stored as 'failed' and the sweep goes on
            for epoch in range(config["budget"]):
                run.log_epoch(epoch, train_loss=..., val_loss=..., accuracy=..., wall_time=...)
            run.finish({"val_loss": ..., "accuracy": ...}, state_bytes=...)

What survives what:

* A finished run is never claimed again. Every write commits at once (WAL, ``synchronous=FULL``),
  so Ctrl-C, a crash or a reboot loses at most the epoch in progress.
* A run whose code raised is stored as ``'failed'`` with its traceback; it is not re-run unless
  ``claim(..., retry_failed=True)``.
* Ctrl-C (``KeyboardInterrupt``) or ``SystemExit`` inside ``with run:`` stores ``'interrupted'``
  and re-raises; the next claim re-runs it.
* A run left ``'running'`` by a process that died (SIGKILL, power loss) is re-run by the next
  claim once its owner is known to be gone: on the owner's machine, the owner's pid no longer
  names the same live process; from any other machine, its heartbeat (written at the claim and
  at every epoch) is older than ``stale_after`` seconds.
* A run's artifacts (checkpoints, images: :meth:`RunHandle.finish`, :meth:`Store.artifacts`) are
  written in the transaction that finishes it: an interrupted or failed run leaves none.
* A re-run deletes the curve of the attempt it replaces (kept until then, for inspection) and
  counts ``attempt``. A process whose claim was taken over gets :class:`ClaimLostError` on its
  next write, so two attempts never mix their rows.

Two processes may write the same file: every read-modify-write is one ``BEGIN IMMEDIATE``
transaction and waiters retry for ``timeout`` seconds. (SQLite's locking needs a local disk,
not a network file system.)

The schema is versioned with ``PRAGMA user_version``; :data:`MIGRATIONS` lists the SQL steps
from each version to the next, applied in order when an older file is opened. A file written by
a newer optimlab raises :class:`SchemaVersionError`.

Reading anywhere: ``Store(path, readonly=True)`` (what ``optimlab report`` uses) never writes,
so it reads a store on a read-only disk or one the user may not write (falling back to SQLite's
``immutable`` mode where not even the WAL index can be created: then no process may be writing
it). A file that cannot be a store (a directory, a corrupt or foreign file, a newer schema) raises
:class:`StoreError` (a ``ValueError``) naming it, in one line. A store is in WAL mode: until
SQLite checkpoints, recent writes live in ``<file>-wal`` beside it, so copying only the main file
of a store in use (or left by a crash) can lose them, or all of it; such a copy is refused with
a message saying so. To copy a store, use :meth:`Store.backup` (``optimlab export --format
sqlite``): one self-contained file, consistent even while another process writes.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import platform
import socket
import sqlite3
import time
import traceback
import uuid
from collections.abc import Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from pathlib import Path
from types import TracebackType
from typing import Any

from .tables import write_table

__all__ = [
    "MIGRATIONS",
    "SCHEMA_VERSION",
    "ClaimLostError",
    "RunHandle",
    "SchemaVersionError",
    "Store",
    "StoreError",
    "canonical_json",
    "run_key",
    "with_versions",
]

_log = logging.getLogger(__name__)

# "optl": marks the file as an optimlab store so another program's SQLite file is refused.
APPLICATION_ID = 0x6F70746C

# MIGRATIONS[i] takes a file from schema version i to i + 1. Append; never edit a released step.
MIGRATIONS: tuple[tuple[str, ...], ...] = (
    (
        f"PRAGMA application_id = {APPLICATION_ID}",
        """CREATE TABLE runs (
            key         TEXT PRIMARY KEY,   -- run_key(config)
            config      TEXT NOT NULL,      -- canonical_json(config)
            status      TEXT NOT NULL CHECK (status IN ('running', 'finished', 'failed', 'interrupted')),
            attempt     INTEGER NOT NULL,   -- 1 for the first claim, +1 at each re-run
            token       TEXT NOT NULL,      -- random id of the current claim
            owner_host  TEXT NOT NULL,
            owner_pid   INTEGER NOT NULL,
            owner_start TEXT NOT NULL,      -- the owner's start time, to tell a reused pid
            heartbeat   REAL NOT NULL,      -- unix time of the owner's last write
            started     REAL NOT NULL,
            ended       REAL,
            final       TEXT,               -- JSON object of final metrics
            state_bytes INTEGER,
            error       TEXT
        )""",
        """CREATE TABLE epochs (
            key     TEXT NOT NULL REFERENCES runs (key) ON DELETE CASCADE,
            epoch   INTEGER NOT NULL,
            metrics TEXT NOT NULL,          -- JSON object; NaN and inf kept (a diverged loss is data)
            PRIMARY KEY (key, epoch)
        ) WITHOUT ROWID""",
    ),
    # what a report needs to know about the run's task (metric, direction, bounds), so that a store
    # reports without importing the task's code: JSON, see Store.claim
    ("ALTER TABLE runs ADD COLUMN meta TEXT",),
    # files a run made (parameter checkpoints, sample images): written with its finish, in one transaction.
    # A rowid table, not WITHOUT ROWID: its rows are large blobs, which SQLite keeps best out of the b-tree's keys
    (
        """CREATE TABLE artifacts (
            key        TEXT NOT NULL REFERENCES runs (key) ON DELETE CASCADE,
            name       TEXT NOT NULL,
            step       INTEGER NOT NULL,   -- optimizer steps done when it was made
            media_type TEXT NOT NULL,      -- 'image/png', 'application/x-float32-le', ...
            data       BLOB NOT NULL,
            UNIQUE (key, name, step)
        )""",
    ),
)
SCHEMA_VERSION = len(MIGRATIONS)

STATUSES = ("running", "finished", "failed", "interrupted")
_RECORD = "key, status, attempt, config, final, state_bytes, error, started, ended, meta"
#: The oldest schema a read-only store reads (what it lacks reads as NULL, or no artifacts).
_OLDEST_READABLE = 1
#: The schema versions that added the runs' metadata and the artifacts table.
_META_VERSION, _ARTIFACTS_VERSION = 2, 3
_RUN_COLUMNS = ("key", "status", "attempt", "started", "ended", "state_bytes", "error")


class StoreError(ValueError):
    """The file cannot be opened as a store: a directory, corrupt, foreign, incomplete or newer."""


class SchemaVersionError(StoreError):
    """The file's schema is newer than this optimlab knows, or the file is not an optimlab store."""


class ClaimLostError(RuntimeError):
    """The run was re-claimed by another process (its owner looked dead); this attempt must stop."""


# ---------------------------------------------------------------------------------------------
# Run keys
# ---------------------------------------------------------------------------------------------


def canonical_json(config: Mapping[str, Any]) -> str:
    """The canonical text of a run configuration, from which :func:`run_key` is hashed.

    The form (changing it changes every key; ``tests/test_store.py`` pins one hash):

    * mappings: keys must be ``str``; written sorted by code point, so key order does not matter;
    * ``float`` (and subclasses such as ``numpy.float64``): Python's ``repr``, the shortest text
      that reads back to the same double, so ``1e-3`` and ``0.001`` are one value; ``inf`` is
      ``Infinity``; NaN is refused (NaN != NaN, and a NaN hyperparameter is a bug);
    * ``int`` (not ``bool``): decimal. ``1`` and ``1.0`` stay different, as ``True`` and ``1`` do:
      they can take different code paths (integer arithmetic, ``isinstance`` checks);
    * ``list`` and ``tuple``: the same JSON array; ``str``, ``bool``, ``None``: JSON;
    * JSON with ``ensure_ascii`` and no whitespace (``separators=(",", ":")``).

    Anything else (sets, arrays, tensors, objects) raises ``ValueError`` naming where it is:
    a value without a canonical text cannot be keyed safely.
    """
    return json.dumps(_canonical(config, "config"), sort_keys=True, separators=(",", ":"), ensure_ascii=True)


def run_key(config: Mapping[str, Any]) -> str:
    """The run's key: the sha256 hex digest of ``canonical_json(config)``.

    The key is the whole configuration, nothing less: the task, the optimizer's name, every
    hyperparameter (defaults included, spelled out), the seed, the budget, the device and dtype,
    and the library versions (:func:`with_versions`). Two runs that differ in anything that can
    change their numbers must not share a key, or the store would hand one's results for the other.
    """
    return _sha256(canonical_json(config))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("ascii")).hexdigest()


def with_versions(config: Mapping[str, Any]) -> dict[str, Any]:
    """A copy of ``config`` with ``"versions"``: the optimlab, torch, numpy and Python versions.

    Each can change the numbers of a run (an optimizer fix, a new kernel, a data pipeline's
    random stream, the float formatting of a parser), so each is part of the key: upgrading any of
    them starts fresh runs instead of mixing old and new results. ``torch.__version__`` carries the
    build (``+cpu``, ``+cu121``).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"with_versions: invalid config={config!r}: expected a mapping")
    if "versions" in config:
        raise ValueError(f"with_versions: invalid config: it already has versions={config['versions']!r}")
    import numpy
    import torch

    import optimlab

    versions = {
        "optimlab": optimlab.__version__,
        "torch": torch.__version__,
        "numpy": numpy.__version__,
        "python": platform.python_version(),
    }
    return {**config, "versions": versions}


def _canonical(value: Any, where: str) -> Any:
    """``value`` as plain JSON types, checked; ``where`` names it in errors (``config.hp.lr``)."""
    if value is None or isinstance(value, (bool, str)):
        return value
    if isinstance(value, int):
        return int(value)
    if isinstance(value, float):
        if math.isnan(value):
            raise ValueError(f"run config: invalid {where}=nan: expected a number, not NaN")
        return float(value)
    if isinstance(value, (list, tuple)):
        return [_canonical(v, f"{where}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"run config: invalid key {k!r} in {where}: expected a str")
            out[k] = _canonical(v, f"{where}.{k}")
        return out
    raise ValueError(
        f"run config: invalid {where}={value!r} of type {type(value).__name__}: "
        "expected None, bool, int, float, str, list, tuple or a mapping with str keys"
    )


# ---------------------------------------------------------------------------------------------
# Who owns a running run
# ---------------------------------------------------------------------------------------------


def _machine() -> str:
    """This machine: host name, plus the kernel's boot id where there is one (changes at reboot)."""
    try:
        boot = Path("/proc/sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        boot = ""
    return f"{socket.gethostname()}/{boot}"


def _process_start(pid: int) -> str | None:
    """An id of the live process ``pid`` that a reused pid does not share; ``None`` if it is gone.

    Linux: its start time in clock ticks since boot (``/proc/<pid>/stat`` field 22); a zombie
    counts as gone. Other POSIX systems: ``""`` while the pid exists (pid reuse goes unseen).
    """
    if Path("/proc/self/stat").exists():
        try:
            stat = Path(f"/proc/{pid}/stat").read_text()
        except OSError:
            return None
        fields = stat.rsplit(")", 1)[1].split()  # the command name, in parentheses, may hold spaces
        return None if fields[0] in ("Z", "X") else fields[19]
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return None
    except PermissionError:
        pass
    return ""


# ---------------------------------------------------------------------------------------------
# The store
# ---------------------------------------------------------------------------------------------


class Store:
    """A results file: runs keyed by :func:`run_key`, their per-epoch metrics and final metrics.

    Parameters
    ----------
    path : str or Path
        The SQLite file; created (with its folder) if missing.
    timeout : float, default 60
        Seconds to wait for another process's write lock before ``sqlite3.OperationalError``.
    stale_after : float, default 3600
        A ``'running'`` run owned by another machine whose last heartbeat (claim or epoch) is
        older than this is taken to be dead and is re-run. Must exceed the longest epoch.
        Runs owned by this machine are judged by their process instead, at once.
    readonly : bool, default False
        Open for reading only: the file must exist and is never changed (see the module docstring).

    Raises
    ------
    StoreError
        The path is a directory, or the file is corrupt, not an optimlab store, written by a newer
        optimlab, or a copy whose data is still in a ``-wal`` file that was not copied.
    """

    def __init__(
        self, path: str | os.PathLike[str], *, timeout: float = 60.0, stale_after: float = 3600.0, readonly: bool = False
    ) -> None:
        if not (isinstance(timeout, (int, float)) and timeout >= 0):
            raise ValueError(f"Store: invalid timeout={timeout!r}: expected a number of seconds >= 0")
        if not (isinstance(stale_after, (int, float)) and stale_after > 0):
            raise ValueError(f"Store: invalid stale_after={stale_after!r}: expected a number of seconds > 0")
        self.path = Path(path)
        self.stale_after = float(stale_after)
        self.readonly = bool(readonly)
        self._record_sql = _RECORD
        self._has_artifacts = True
        if self.path.is_dir():
            raise StoreError(f"Store: {str(self.path)!r} is a directory, not a results file")
        if readonly and not self.path.is_file():
            raise StoreError(f"Store: {str(self.path)!r}: no such file")
        if not readonly:
            self.path.parent.mkdir(parents=True, exist_ok=True)
        # before connecting: opening a WAL-mode file creates an empty -wal beside it
        wal = Path(f"{self.path}-wal")
        self._wal_missing = _wal_header(self.path) and (not wal.exists() or wal.stat().st_size == 0)
        # isolation_level=None: no implicit transactions; each write is one explicit BEGIN IMMEDIATE.
        try:
            self._db = self._connect(timeout)
        except sqlite3.Error as e:
            raise StoreError(f"Store: cannot open {str(self.path)!r}: {e}") from None
        try:
            if readonly:
                self._check_readable()
            else:
                self._db.execute("PRAGMA journal_mode = WAL")
                self._db.execute("PRAGMA synchronous = FULL")  # a commit survives power loss, not just a crash
                self._db.execute("PRAGMA foreign_keys = ON")
                self._migrate()
        except sqlite3.DatabaseError as e:  # "file is not a database", "database disk image is malformed"
            self._db.close()
            if "readonly" in str(e):
                raise StoreError(
                    f"Store: {str(self.path)!r} cannot be written ({e}); `optimlab report` and `export` read it read-only"
                ) from None
            raise StoreError(f"Store: {str(self.path)!r} is not a readable SQLite results file: {e}") from None
        except BaseException:
            self._db.close()
            raise

    def _connect(self, timeout: float) -> sqlite3.Connection:
        if not self.readonly:
            return sqlite3.connect(self.path, timeout=timeout, isolation_level=None)
        uri = self.path.resolve().as_uri()
        db = sqlite3.connect(f"{uri}?mode=ro", timeout=timeout, isolation_level=None, uri=True)
        try:
            db.execute("SELECT count(*) FROM sqlite_master").fetchone()
            return db
        except sqlite3.OperationalError:
            # a WAL file needs its -shm index, which a reader of a read-only folder cannot create
            db.close()
            return sqlite3.connect(f"{uri}?immutable=1", timeout=timeout, isolation_level=None, uri=True)

    def _check_readable(self) -> None:
        self._check_identity(self._db)
        version = self._db.execute("PRAGMA user_version").fetchone()[0]
        if version < _META_VERSION:
            self._record_sql = _RECORD.replace("meta", "NULL")  # a version-1 store has no metadata: reports fall back
        self._has_artifacts = version >= _ARTIFACTS_VERSION
        if version < _OLDEST_READABLE:
            raise SchemaVersionError(
                f"Store: {str(self.path)!r} has schema version {version}, older than this optimlab's {SCHEMA_VERSION}: "
                "open it once for writing (any optimlab run or tune on it) to migrate it"
            )

    def close(self) -> None:
        """Close the file. Open handles can no longer write."""
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"Store({str(self.path)!r})"

    @contextmanager
    def _transaction(self) -> Iterator[sqlite3.Connection]:
        # IMMEDIATE takes the write lock before the first read, so check-then-write is atomic.
        self._db.execute("BEGIN IMMEDIATE")
        try:
            yield self._db
        except BaseException:
            if self._db.in_transaction:  # some errors have rolled back already
                self._db.execute("ROLLBACK")
            raise
        self._db.execute("COMMIT")

    def _check_identity(self, db: sqlite3.Connection) -> None:
        """Refuse a foreign file, a newer schema, and a WAL-mode copy whose data stayed in its ``-wal`` file."""
        version = db.execute("PRAGMA user_version").fetchone()[0]
        app = db.execute("PRAGMA application_id").fetchone()[0]
        tables = db.execute("SELECT count(*) FROM sqlite_master").fetchone()[0]
        if app not in (0, APPLICATION_ID) or (tables > 0 and version == 0):
            raise SchemaVersionError(f"Store: {str(self.path)!r} is not an optimlab results file (another program's SQLite file)")
        if version > SCHEMA_VERSION:
            raise SchemaVersionError(
                f"Store: {str(self.path)!r} has schema version {version}, newer than this optimlab "
                f"{_optimlab_version()} reads (versions 0 to {SCHEMA_VERSION}): upgrade optimlab to open it"
            )
        if tables == 0 and self._wal_missing:
            raise StoreError(
                f"Store: {str(self.path)!r} holds no tables and its -wal file, where a store in WAL mode keeps its "
                f"recent writes, is missing or empty: copy {self.path.name}-wal beside it from where the store was "
                "made, or copy stores with `optimlab export --format sqlite` (Store.backup)"
            )

    def _migrate(self) -> None:
        with self._transaction() as db:
            version = db.execute("PRAGMA user_version").fetchone()[0]
            self._check_identity(db)
            for step in MIGRATIONS[version:]:
                for sql in step:
                    db.execute(sql)
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

    # -- writing -----------------------------------------------------------------------------

    def claim(
        self, config: Mapping[str, Any], *, retry_failed: bool = False, meta: Mapping[str, Any] | None = None
    ) -> RunHandle | None:
        """Mark the run of ``config`` as ``'running'`` by this process and return its handle.

        Returns ``None`` when there is nothing to do: the run is finished, failed (unless
        ``retry_failed``), or running in a live process. A run that is new, interrupted, or
        running in a dead process (see :class:`Store`) is claimed; a re-run deletes the previous
        attempt's epochs. The check and the claim are one transaction, so of several processes
        claiming one config exactly one gets a handle.

        ``meta`` (JSON-able, not part of the key) is stored with the run and read back as the
        record's ``"meta"``: the runner stores ``{"task": Task.metadata()}`` there (task name,
        metric names and directions, bounds), so ``optimlab report`` needs no task code.
        """
        if not isinstance(config, Mapping):
            raise ValueError(f"Store.claim: invalid config={config!r}: expected a mapping")
        if self.readonly:
            raise StoreError(f"Store.claim: {str(self.path)!r} is open read-only; open it with readonly=False to run")
        text = canonical_json(config)
        key = _sha256(text)
        meta_text = None if meta is None else json.dumps(meta, sort_keys=True)
        token = uuid.uuid4().hex
        pid = os.getpid()
        owner = (_machine(), pid, _process_start(pid) or "")
        with self._transaction() as db:
            now = time.time()
            row = db.execute(
                "SELECT status, attempt, owner_host, owner_pid, owner_start, heartbeat FROM runs WHERE key = ?", (key,)
            ).fetchone()
            if row is None:
                attempt = 1
                db.execute(
                    "INSERT INTO runs (key, config, status, attempt, token, owner_host, owner_pid, owner_start,"
                    " heartbeat, started, meta) VALUES (?, ?, 'running', 1, ?, ?, ?, ?, ?, ?, ?)",
                    (key, text, token, *owner, now, now, meta_text),
                )
            else:
                status, attempt, host, owner_pid, start, heartbeat = row
                if status == "finished" or (status == "failed" and not retry_failed):
                    return None
                if status == "running" and self._alive(host, owner_pid, start, heartbeat, now):
                    return None
                attempt += 1
                db.execute("DELETE FROM epochs WHERE key = ?", (key,))
                db.execute("DELETE FROM artifacts WHERE key = ?", (key,))
                db.execute(
                    "UPDATE runs SET status = 'running', attempt = ?, token = ?, owner_host = ?, owner_pid = ?,"
                    " owner_start = ?, heartbeat = ?, started = ?, ended = NULL, final = NULL, state_bytes = NULL,"
                    " error = NULL, meta = ? WHERE key = ?",
                    (attempt, token, *owner, now, now, meta_text, key),
                )
        return RunHandle(self, key, token, attempt)

    def _alive(self, host: str, pid: int, start: str, heartbeat: float, now: float) -> bool:
        if host == _machine() and os.name == "posix":
            return _process_start(pid) == start
        return now - heartbeat < self.stale_after

    # -- reading -----------------------------------------------------------------------------

    def runs(self, status: str | None = None, **where: Any) -> list[dict[str, Any]]:
        """The runs, oldest claim first, as dicts; optionally only those with ``status`` and
        whose top-level config entries equal ``where`` (compared in canonical form, so
        ``lr=1e-3`` matches a stored ``0.001``).

        Each dict has ``key``, ``status``, ``attempt``, ``config`` (dict), ``final`` (dict or
        ``None``), ``state_bytes``, ``error`` (traceback text or ``None``), ``started``,
        ``ended`` (unix times).
        """
        if status is not None and status not in STATUSES:
            raise ValueError(f"Store.runs: invalid status={status!r}: expected one of {', '.join(STATUSES)}")
        wanted = {k: canonical_json({"v": v}) for k, v in where.items()}
        rows = self._db.execute(
            f"SELECT {self._record_sql} FROM runs" + (" WHERE status = ?" if status else "") + " ORDER BY started, key",
            (status,) if status else (),
        ).fetchall()
        out = [_record(row) for row in rows]
        return [r for r in out if all(k in r["config"] and canonical_json({"v": r["config"][k]}) == v for k, v in wanted.items())]

    def record(self, key: str) -> dict[str, Any] | None:
        """The run ``key`` as :meth:`runs` gives it, or ``None`` if the store has no such run."""
        row = self._db.execute(f"SELECT {self._record_sql} FROM runs WHERE key = ?", (key,)).fetchone()
        return None if row is None else _record(row)

    def artifacts(self, key: str, name: str | None = None) -> list[dict[str, Any]]:
        """The artifacts of run ``key`` (its latest attempt; only a finished run has any), ordered by
        name then step, each ``{"name", "step", "media_type", "data"}`` with ``data`` the stored bytes;
        only those called ``name`` if given.  A store older than artifacts reads as having none.

        Raises:
            ValueError: no run has this key.
        """
        if self._db.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is None:
            raise ValueError(f"Store.artifacts: invalid key={key!r}: no run has this key")
        if not self._has_artifacts:
            return []
        sql = "SELECT name, step, media_type, data FROM artifacts WHERE key = ?"
        rows = self._db.execute(sql + (" AND name = ?" if name is not None else "") + " ORDER BY name, step",
                                (key,) if name is None else (key, name))  # fmt: skip
        return [{"name": n, "step": step, "media_type": media, "data": bytes(data)} for n, step, media, data in rows]

    def backup(self, path: str | os.PathLike[str]) -> Path:
        """Copy the store into one self-contained file at ``path`` (SQLite's online backup API: a
        consistent snapshot even while another process writes; no ``-wal`` file to carry along).

        Raises:
            StoreError: ``path`` exists (nothing is overwritten).
        """
        target = Path(path)
        if target.exists():
            raise StoreError(f"Store.backup: {str(target)!r} exists; choose a new file name")
        target.parent.mkdir(parents=True, exist_ok=True)
        copy = sqlite3.connect(target, isolation_level=None)
        try:
            self._db.backup(copy)
            copy.execute("PRAGMA journal_mode = DELETE")  # one file: the copy has no -wal to lose
        finally:
            copy.close()
        return target

    def epochs(self, key: str) -> list[dict[str, Any]]:
        """The per-epoch metrics of run ``key`` (of its latest attempt), as ``{"epoch": e, **metrics}``."""
        if self._db.execute("SELECT 1 FROM runs WHERE key = ?", (key,)).fetchone() is None:
            raise ValueError(f"Store.epochs: invalid key={key!r}: no run has this key")
        rows = self._db.execute("SELECT epoch, metrics FROM epochs WHERE key = ? ORDER BY epoch", (key,))
        return [{"epoch": epoch, **json.loads(metrics)} for epoch, metrics in rows]

    def export(self, directory: str | os.PathLike[str], format: str = "csv") -> dict[str, Path]:
        """Write two tidy tables into ``directory``: ``runs.<format>`` and ``epochs.<format>``.

        ``runs``: one row per run: ``key, status, attempt, started, ended, state_bytes, error``,
        then ``config.<name>`` and ``final.<name>`` columns (nested config mappings flattened
        with dots, lists as their canonical JSON). ``epochs``: one row per (run, epoch):
        ``key, epoch`` and one column per metric. Join them on ``key``. A missing value is empty
        (CSV) or null (Parquet). ``format`` is ``"csv"`` or ``"parquet"`` (needs pyarrow:
        ``pip install optimlab[parquet]``). Returns the two paths.
        """
        if format not in ("csv", "parquet"):
            raise ValueError(f"Store.export: invalid format={format!r}: expected 'csv' or 'parquet'")
        directory = Path(directory)
        directory.mkdir(parents=True, exist_ok=True)
        runs_rows = []
        epoch_rows = []
        for run in self.runs():
            row = {k: run[k] for k in _RUN_COLUMNS}
            _flatten(run["config"], "config", row)
            _flatten(run["final"] or {}, "final", row)
            runs_rows.append(row)
            epoch_rows += [{"key": run["key"], **e} for e in self.epochs(run["key"])]
        paths = {"runs": directory / f"runs.{format}", "epochs": directory / f"epochs.{format}"}
        for name, rows, fixed in (("runs", runs_rows, _RUN_COLUMNS), ("epochs", epoch_rows, ("key", "epoch"))):
            columns = _columns(rows, fixed)
            write_table([dict(zip(columns, values)) for values in zip(*columns.values())], paths[name], columns=list(columns))
        return paths


class RunHandle:
    """One claimed attempt of a run: log its epochs, then finish or fail it exactly once.

    Used as a context manager, it ends the run for you: an ``Exception`` from the block is stored
    as ``'failed'`` with its traceback and *not* re-raised (logged as a warning, so the sweep goes
    on); ``KeyboardInterrupt`` or ``SystemExit`` is stored as ``'interrupted'`` and re-raised.
    A block that ends without :meth:`finish` raises ``RuntimeError`` (the run is stored failed).
    """

    def __init__(self, store: Store, key: str, token: str, attempt: int) -> None:
        self.store = store
        self.key = key
        self.attempt = attempt
        self._token = token
        self._done = False

    def __repr__(self) -> str:
        return f"RunHandle(key={self.key!r}, attempt={self.attempt})"

    def log_epoch(self, epoch: int, **metrics: float) -> None:
        """Store the metrics of ``epoch`` (e.g. ``train_loss``, ``val_loss``, ``accuracy``,
        ``wall_time``), committed at once. NaN and inf are stored as they are."""
        if isinstance(epoch, bool) or not isinstance(epoch, int) or epoch < 0:
            raise ValueError(f"RunHandle.log_epoch: invalid epoch={epoch!r}: expected an integer >= 0")
        if not metrics:
            raise ValueError("RunHandle.log_epoch: invalid metrics={}: expected at least one name=value")
        if "key" in metrics:
            raise ValueError("RunHandle.log_epoch: invalid metric name 'key': reserved for the run key in exports")
        text = _metrics_json("RunHandle.log_epoch", metrics)
        with self._write() as db:
            if db.execute("SELECT 1 FROM epochs WHERE key = ? AND epoch = ?", (self.key, epoch)).fetchone():
                raise ValueError(f"RunHandle.log_epoch: invalid epoch={epoch}: already logged in this attempt")
            db.execute("INSERT INTO epochs (key, epoch, metrics) VALUES (?, ?, ?)", (self.key, epoch, text))

    def finish(
        self,
        metrics: Mapping[str, float],
        *,
        state_bytes: int | None = None,
        artifacts: Iterable[Mapping[str, Any]] = (),
    ) -> None:
        """Store the final metrics, the optimizer-state size in bytes and the run's ``artifacts``; the
        run is ``'finished'``.

        Each artifact is ``{"name": str, "step": int >= 0, "media_type": str, "data": bytes}``
        (what :func:`optimlab.runner.execute` returns under ``"artifacts"``), one per ``(name, step)``.
        They are written in the finish's transaction: a run interrupted or failed leaves none, and a
        bad artifact stores nothing (the run stays ``'running'``, to be failed by the caller).
        """
        if not isinstance(metrics, Mapping):
            raise ValueError(f"RunHandle.finish: invalid metrics={metrics!r}: expected a mapping of name to number")
        if state_bytes is not None and (
            isinstance(state_bytes, bool) or not isinstance(state_bytes, int) or state_bytes < 0
        ):
            raise ValueError(f"RunHandle.finish: invalid state_bytes={state_bytes!r}: expected an integer >= 0")
        rows = _artifact_rows(self.key, artifacts)
        self._end("finished", final=_metrics_json("RunHandle.finish", metrics), state_bytes=state_bytes, artifacts=rows)

    def fail(self, error: BaseException | str) -> None:
        """Store the run as ``'failed'`` with ``error``'s traceback (or the text given)."""
        text = error if isinstance(error, str) else "".join(traceback.format_exception(error))
        self._end("failed", error=text)

    def __enter__(self) -> RunHandle:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> bool:
        if exc is None:
            if not self._done:
                self.fail("the with block ended without finish()")
                raise RuntimeError(f"run {self.key}: the with block ended without finish() or fail()")
            return False
        if self._done:
            return False  # already ended; an error after finish() is the caller's, not the run's
        if isinstance(exc, (KeyboardInterrupt, SystemExit)):
            try:
                self._end("interrupted", error="".join(traceback.format_exception(exc)))
            except ClaimLostError:
                pass  # the new owner has it; the interrupt matters more
            return False
        if isinstance(exc, ClaimLostError) or not isinstance(exc, Exception):
            return False
        self.fail(exc)
        _log.warning("run %s failed: %s: %s", self.key, exc_type.__name__, exc)
        return True

    def _end(
        self,
        status: str,
        *,
        final: str | None = None,
        state_bytes: int | None = None,
        error: str | None = None,
        artifacts: Sequence[tuple[str, str, int, str, bytes]] = (),
    ) -> None:
        with self._write() as db:
            db.executemany("INSERT INTO artifacts (key, name, step, media_type, data) VALUES (?, ?, ?, ?, ?)",
                           artifacts)  # fmt: skip
            db.execute(
                "UPDATE runs SET status = ?, final = ?, state_bytes = ?, error = ?, ended = ? WHERE key = ?",
                (status, final, state_bytes, error, time.time(), self.key),
            )
        self._done = True

    @contextmanager
    def _write(self) -> Iterator[sqlite3.Connection]:
        """A transaction that first checks this attempt still owns the run, and beats the heartbeat."""
        if self._done:
            raise RuntimeError(f"run {self.key}: already ended; claim it again to re-run")
        with self.store._transaction() as db:
            owned = db.execute(
                "UPDATE runs SET heartbeat = ? WHERE key = ? AND token = ? AND status = 'running'",
                (time.time(), self.key, self._token),
            ).rowcount
            if not owned:
                raise ClaimLostError(f"run {self.key} attempt {self.attempt}: re-claimed by another process")
            yield db


# ---------------------------------------------------------------------------------------------
# Helpers
# ---------------------------------------------------------------------------------------------


def _record(row: tuple[Any, ...]) -> dict[str, Any]:
    key, status, attempt, config, final, state_bytes, error, started, ended, meta = row
    return {
        "key": key,
        "status": status,
        "attempt": attempt,
        "config": json.loads(config),
        "final": None if final is None else json.loads(final),
        "state_bytes": state_bytes,
        "error": error,
        "started": started,
        "ended": ended,
        "meta": None if meta is None else json.loads(meta),
    }


def _artifact_rows(key: str, artifacts: Iterable[Mapping[str, Any]]) -> list[tuple[str, str, int, str, bytes]]:
    """The rows of ``artifacts`` for the artifacts table, checked (see :meth:`RunHandle.finish`)."""
    rows = []
    seen = set()
    for a in artifacts:
        where = f"RunHandle.finish: invalid artifact {a.get('name')!r}" if isinstance(a, Mapping) else ""
        if not isinstance(a, Mapping) or set(a) != {"name", "step", "media_type", "data"}:
            raise ValueError(
                f"RunHandle.finish: invalid artifact {a!r:.200}: "
                "expected a mapping with exactly name, step, media_type, data"
            )
        name, step, media, data = a["name"], a["step"], a["media_type"], a["data"]
        if not isinstance(name, str) or not name:
            raise ValueError(f"{where}: expected a non-empty str name")
        if isinstance(step, bool) or not isinstance(step, int) or step < 0:
            raise ValueError(f"{where}: invalid step={step!r}: expected an integer >= 0")
        if not isinstance(media, str) or "/" not in media:
            raise ValueError(f"{where}: invalid media_type={media!r}: expected a media type such as 'image/png'")
        if not isinstance(data, (bytes, bytearray, memoryview)):
            raise ValueError(f"{where}: invalid data of type {type(data).__name__}: expected bytes")
        if (name, step) in seen:
            raise ValueError(f"{where}: step {step} given twice; expected one artifact per name and step")
        seen.add((name, step))
        rows.append((key, name, step, media, bytes(data)))
    return rows


def _wal_header(path: Path) -> bool:
    """Whether the SQLite header of ``path`` marks WAL mode (file format bytes 18 and 19 are 2)."""
    try:
        with path.open("rb") as f:
            header = f.read(20)
    except OSError:
        return False
    return len(header) == 20 and header[18] == 2 and header[19] == 2


def _optimlab_version() -> str:
    import optimlab

    return optimlab.__version__


def _metrics_json(owner: str, metrics: Mapping[str, Any]) -> str:
    for name, value in metrics.items():
        if not isinstance(name, str) or not name:
            raise ValueError(f"{owner}: invalid metric name {name!r}: expected a non-empty str")
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            raise ValueError(f"{owner}: invalid {name}={value!r}: expected an int or a float (NaN and inf allowed)")
    return json.dumps({k: v if isinstance(v, float) else int(v) for k, v in metrics.items()}, sort_keys=True)


def _flatten(mapping: Mapping[str, Any], prefix: str, out: dict[str, Any]) -> None:
    """``{"hp": {"lr": 0.1}}`` -> ``out["config.hp.lr"] = 0.1``; lists become canonical JSON text."""
    for name, value in mapping.items():
        column = f"{prefix}.{name}"
        if isinstance(value, Mapping):
            _flatten(value, column, out)
            continue
        if column in out:
            raise ValueError(f"Store.export: two entries flatten to one column {column!r}; rename one")
        out[column] = json.dumps(value, sort_keys=True, separators=(",", ":")) if isinstance(value, list) else value


def _columns(rows: list[dict[str, Any]], fixed: tuple[str, ...]) -> dict[str, list[Any]]:
    """Rows -> columns: the ``fixed`` names, then the others sorted; each column of one type.

    A column holding ints and floats becomes floats; one holding other mixed types becomes the
    JSON text of each value, so Parquet gets one type per column and CSV the same values.
    """
    others = {name for row in rows for name in row} - set(fixed)
    order = [*fixed, *sorted(others)]
    columns = {}
    for name in order:
        values = [row.get(name) for row in rows]
        kinds = {type(v) for v in values if v is not None}
        if kinds == {int, float}:
            values = [None if v is None else float(v) for v in values]
        elif len(kinds) > 1:
            values = [None if v is None else json.dumps(v) for v in values]
        columns[name] = values
    return columns
