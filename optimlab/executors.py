"""Executors: carry out the runs the protocol proposes; the driver alone writes the store.

The protocol (:mod:`optimlab.protocol`) turns a study into runs, each a picklable
:class:`optimlab.runner.RunSpec`; an executor trains them (:func:`optimlab.runner.execute`, a plain
function of the spec) wherever it runs them and hands back each run's curve, final metrics and
artifacts (bytes: checkpoints, images); the :class:`Driver`, in the calling process, claims each run
in the SQLite store before it starts, writes its curve, result and artifacts when it comes back (the
artifacts in the finish's transaction), and is the store's only writer (so its guarantees hold on
any file system, and a cluster's nodes need no access to it).

* :class:`InProcess` (``executor=None``, the API's default): one run at a time in the caller's
  process, at the caller's torch thread count (what ``run`` does).
* :class:`Local` (``executor="local"``, ``workers=N``; the command line's default): ``N`` worker
  processes of this machine (``spawn``), each run at ``threads`` torch threads (default 1): the
  same numbers for any ``N``, since a run's numbers depend on its configuration, seed and thread
  count alone.  Default ``N``: the cores divided by ``threads`` (on a quiet 2-core machine, two
  1-thread mnist-cnn runs side by side did 1.3x the work of one 2-thread run; docs/scaling.md).
* :class:`Ray` (``executor="ray"``): each run a Ray task on a Ray cluster (``pip install
  optimlab[ray]``), see its docstring.

Faults: a run that raises is stored ``'failed'`` with its traceback and the study goes on; a worker
that dies under a run (SIGKILL, out of memory, a lost node) costs that run an attempt: it is run
again up to ``retries`` times, then stored ``'failed'`` with the cause.  Ctrl-C stores every run in
flight as ``'interrupted'``; after that, or after the driver is killed, the same command trains only
what was not finished.
"""

from __future__ import annotations

import multiprocessing
import os
import sys
import time
import traceback
from collections import deque
from collections.abc import Hashable, Iterator
from dataclasses import dataclass
from multiprocessing.connection import Connection, wait
from types import TracebackType
from typing import Any

from tqdm import tqdm

from .optim._validate import check_choice, check_int
from .runner import RunSpec, _stored, execute
from .store import RunHandle, Store

__all__ = ["EXECUTORS", "Driver", "Executor", "InProcess", "Local", "Outcome", "Ray", "make_executor"]

#: The executors by name (``executor=``, ``--executor``).
EXECUTORS = ("local", "ray")


@dataclass(frozen=True)
class Outcome:
    """What became of one submitted run: ``kind`` ``"ok"`` (``result``: :func:`~optimlab.runner.execute`'s
    dict), ``"error"`` (the run raised; ``error``: its traceback) or ``"lost"`` (its worker died; ``error``: why)."""

    job: int
    kind: str
    result: dict[str, Any] | None = None
    error: str | None = None


class Executor:
    """Carries out runs: ``submit`` at most ``slots`` at a time, ``wait`` for at least one :class:`Outcome`."""

    slots: int = 1

    def submit(self, job: int, spec: RunSpec) -> None:
        raise NotImplementedError

    def wait(self) -> list[Outcome]:
        """Block until at least one submitted run is done; its outcomes."""
        raise NotImplementedError

    def close(self) -> None:
        """Stop the workers (a run still going is abandoned: the driver stored it as interrupted)."""

    def __enter__(self) -> Executor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _attempt(job: int, spec: RunSpec) -> Outcome:
    try:
        return Outcome(job, "ok", execute(spec))
    except Exception as e:  # noqa: BLE001 - a run that raises is a failed run; the study goes on
        return Outcome(job, "error", error="".join(traceback.format_exception(e)))


class InProcess(Executor):
    """One run at a time in this process, at this process's torch thread count."""

    def __init__(self) -> None:
        self.queue: deque[tuple[int, RunSpec]] = deque()

    def submit(self, job: int, spec: RunSpec) -> None:
        self.queue.append((job, spec))

    def wait(self) -> list[Outcome]:
        return [_attempt(*self.queue.popleft())]


def _worker(conn: Connection, threads: int) -> None:
    """A local worker's loop: a run in, its outcome out, until the driver closes the pipe."""
    import torch

    torch.set_num_threads(threads)
    while True:
        try:
            job, spec = conn.recv()
        except (EOFError, OSError):  # the driver is gone
            return
        conn.send(_attempt(job, spec))


class Local(Executor):
    """``workers`` processes of this machine (``spawn``: nothing of the driver's state leaks into a run),
    each running one run at a time at ``threads`` torch threads.  Workers start when first needed."""

    def __init__(self, workers: int | None = None, *, threads: int = 1) -> None:
        check_int("executor local", "threads", threads, 1)
        if workers is None:
            workers = max(1, (os.cpu_count() or 1) // threads)
        check_int("executor local", "workers", workers, 1)
        self.slots = workers
        self.threads = threads
        self.context = multiprocessing.get_context("spawn")
        self.idle: list[tuple[Any, Connection]] = []
        self.busy: dict[int, tuple[Any, Connection, int]] = {}  # job -> (process, pipe, ...)

    def _start(self) -> tuple[Any, Connection]:
        ours, theirs = self.context.Pipe()
        process = self.context.Process(target=_worker, args=(theirs, self.threads), daemon=True)
        process.start()
        theirs.close()
        return process, ours

    def submit(self, job: int, spec: RunSpec) -> None:
        process, conn = self.idle.pop() if self.idle else self._start()
        try:
            conn.send((job, spec))
        except Exception:  # it does not pickle: nothing was sent, the worker stays free
            self.idle.append((process, conn))
            raise
        self.busy[job] = (process, conn, process.pid)

    def wait(self) -> list[Outcome]:
        by_handle: dict[Any, int] = {}
        for job, (process, conn, _) in self.busy.items():
            by_handle[conn] = job
            by_handle[process.sentinel] = job
        ready = wait(list(by_handle))
        out = []
        for job in dict.fromkeys(by_handle[r] for r in ready):
            process, conn, pid = self.busy.pop(job)
            try:
                outcome = conn.recv() if conn.poll() else None
            except (EOFError, OSError):
                outcome = None
            if outcome is None:  # the process died under the run
                process.join(timeout=5)
                conn.close()
                out.append(Outcome(job, "lost", error=f"worker process {pid} died (exit code {process.exitcode})"))
                continue
            self.idle.append((process, conn))
            out.append(outcome)
        return out

    def close(self) -> None:
        for process, conn in self.idle:  # the closed pipe ends its loop: it exits cleanly
            conn.close()
        for process, conn, _ in self.busy.values():  # a run abandoned (Ctrl-C): stop it now
            conn.close()
            process.terminate()
        for process in [p for p, _ in self.idle] + [p for p, _, _ in self.busy.values()]:
            process.join(timeout=30)
            if process.is_alive():
                process.kill()
                process.join()
        self.idle, self.busy = [], {}


class Ray(Executor):
    """Each run a Ray task (``pip install optimlab[ray]``).

    ``address``: a running cluster (``ray start --head`` on one node, ``ray start --address`` on the
    others), else ``$RAY_ADDRESS``, else a local Ray instance started for this executor and shut down
    by :meth:`close`.  ``cpus_per_run`` (also the run's torch threads) and ``gpus_per_run`` are each
    task's request.  Data: each run reads its task's data from the data directory of the node it
    lands on (``data_dir``, else ``$OPTIMLAB_DATA_DIR`` there): put the data on every node first, or
    mount one shared directory at the same path on every node.  The store stays with
    the driver.  ``slots``: runs kept in flight (default: the cluster's CPUs / ``cpus_per_run``).
    """

    def __init__(
        self,
        address: str | None = None,
        *,
        cpus_per_run: int = 1,
        gpus_per_run: float = 0,
        slots: int | None = None,
        init_kwargs: dict[str, Any] | None = None,
    ) -> None:
        check_int("executor ray", "cpus_per_run", cpus_per_run, 1)
        if isinstance(gpus_per_run, bool) or not isinstance(gpus_per_run, (int, float)) or gpus_per_run < 0:
            raise ValueError(f"executor ray: invalid gpus_per_run={gpus_per_run!r}: expected a number >= 0")
        try:
            import ray
        except ImportError:
            raise ValueError(
                "executor ray: Ray is not installed; install it with: pip install 'optimlab[ray]'"
            ) from None
        self.ray = ray
        address = address or os.environ.get("RAY_ADDRESS") or None
        self.owned = not ray.is_initialized()
        if self.owned:
            ray.init(address=address, include_dashboard=False, log_to_driver=False, **(init_kwargs or {}))
        self.cpus = cpus_per_run
        self.remote = ray.remote(_attempt).options(num_cpus=cpus_per_run, num_gpus=gpus_per_run, max_retries=0)
        if slots is None:
            slots = max(1, int(ray.cluster_resources().get("CPU", 1)) // cpus_per_run)
        check_int("executor ray", "slots", slots, 1)
        self.slots = slots
        self.refs: dict[Any, int] = {}

    def submit(self, job: int, spec: RunSpec) -> None:
        spec = RunSpec(**{**spec.__dict__, "threads": self.cpus})
        self.refs[self.remote.remote(job, spec)] = job

    def wait(self) -> list[Outcome]:
        ready, _ = self.ray.wait(list(self.refs), num_returns=1)
        out = []
        for ref in ready:
            job = self.refs.pop(ref)
            try:
                out.append(self.ray.get(ref))
            except self.ray.exceptions.RayError as e:  # the worker or its node died: not the run's fault
                out.append(Outcome(job, "lost", error=f"{type(e).__name__}: {str(e).strip().splitlines()[0]}"))
        return out

    def close(self) -> None:
        for ref in self.refs:
            self.ray.cancel(ref, force=True)
        self.refs = {}
        if self.owned and self.ray.is_initialized():
            self.ray.shutdown()


def make_executor(executor: Executor | str | None = None, workers: int | None = None) -> Executor:
    """The executor the protocol's ``executor=`` and ``workers=`` name: an :class:`Executor` as given;
    ``None`` without ``workers``, or ``workers=0`` (torch DataLoader's convention): :class:`InProcess`;
    ``"local"`` or ``workers`` alone: :class:`Local`; ``"ray"``: :class:`Ray` (``workers``: its runs in flight).

    Raises:
        ValueError: an unknown name, a bad worker count, or Ray not installed.
    """
    if isinstance(executor, Executor):
        return executor
    if workers is not None:
        check_int("protocol", "workers", workers, 0)
    if executor is not None:
        check_choice("protocol", "executor", executor, EXECUTORS)
    if workers == 0 or (executor is None and workers is None):
        return InProcess()
    if executor is None:
        return Local(workers)
    return Local(workers) if executor == "local" else Ray(slots=workers)


class Driver:
    """Runs :class:`~optimlab.runner.RunSpec`\\ s through an executor and writes them to the store.

    ``submit(spec, tag)`` skips a run the store holds (finished, or failed unless ``retry_failed``),
    waits for one live in another process, else claims it and hands it to the executor; ``next()``
    returns ``(tag, result)`` of a run that is done (the dict :func:`optimlab.runner.run` returns),
    or ``None`` when nothing is left.  A progress bar (``progress``) counts runs done, in flight and
    failed, with an ETA over ``total`` runs.
    """

    def __init__(
        self,
        executor: Executor,
        store: Store | None,
        *,
        retry_failed: bool = True,
        retries: int = 2,
        progress: bool = False,
        total: int | None = None,
        desc: str = "runs",
        poll: float = 2.0,
    ) -> None:
        check_int("protocol", "retries", retries, 0)
        self.executor = executor
        self.store = store
        self.retry_failed = retry_failed
        self.retries = retries
        self.poll = poll
        self.jobs: dict[int, tuple[Hashable, RunSpec, RunHandle | None, int]] = {}
        self.queued: deque[int] = deque()
        self.running: set[int] = set()
        self.foreign: dict[int, tuple[Hashable, RunSpec]] = {}
        self.ready: deque[tuple[Hashable, dict[str, Any]]] = deque()
        self.counter = 0
        self.failed = 0
        self.bar = tqdm(total=total, desc=desc, unit="run", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def __enter__(self) -> Driver:
        return self

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        try:
            if exc is not None:
                for _, _, handle, _ in self.jobs.values():  # runs claimed and not done: interrupted, rerun next time
                    if handle is not None:
                        handle.__exit__(type(exc), exc, tb)
        finally:
            self.bar.close()

    def submit(self, spec: RunSpec, tag: Hashable) -> None:
        job = self.counter
        if self.bar.total is None or job >= self.bar.total:  # more runs than announced
            self.bar.total = job + 1
        self.counter += 1
        self._queue(job, tag, spec, None)

    def _claim(self, spec: RunSpec) -> RunHandle | str:
        """A handle, ``"live"`` (running in another live process) or ``"stored"`` (nothing to do)."""
        assert self.store is not None and spec.key is not None
        handle = self.store.claim(spec.config, retry_failed=self.retry_failed, meta=spec.meta)
        if handle is not None:
            return handle
        return "live" if self.store.record(spec.key)["status"] == "running" else "stored"

    def _queue(self, job: int, tag: Hashable, spec: RunSpec, handle: RunHandle | None, attempt: int = 1) -> None:
        self.jobs[job] = (tag, spec, handle, attempt)
        self.queued.append(job)

    def _done(self, tag: Hashable, result: dict[str, Any]) -> None:
        self.failed += result["status"] == "failed"
        self.ready.append((tag, result))
        self.bar.update()
        self.bar.set_postfix({"in flight": len(self.running), "failed": self.failed}, refresh=False)

    def _dispatch(self) -> None:
        """Claim queued runs (only now: a claimed run is one being trained) and hand them out while slots are free."""
        while self.queued and len(self.running) < self.executor.slots:
            job = self.queued.popleft()
            tag, spec, handle, attempt = self.jobs[job]
            if handle is None and self.store is not None:
                claimed = self._claim(spec)
                if not isinstance(claimed, RunHandle):
                    del self.jobs[job]
                    if claimed == "live":
                        self.foreign[job] = (tag, spec)
                    else:
                        self._done(tag, _stored(self.store, spec.key, spec.config, skipped=True))
                    continue
                handle = claimed
                self.jobs[job] = (tag, spec, handle, attempt)
            try:
                self.executor.submit(job, spec)
            except Exception as e:  # noqa: BLE001 - a spec that cannot travel (a task that does not pickle) fails its run
                self._finish(Outcome(job, "error", error="".join(traceback.format_exception(e))))
                continue
            self.running.add(job)
        self.bar.set_postfix({"in flight": len(self.running), "failed": self.failed})

    def _check_foreign(self) -> None:
        """Queue again the runs live in other processes: the claim then finds each finished (read back),
        still live (waited for again), or its owner dead (ours to run)."""
        for job, (tag, spec) in self.foreign.items():
            self._queue(job, tag, spec, None)
        self.foreign = {}

    def next(self) -> tuple[Hashable, dict[str, Any]] | None:
        """The next run done, as ``(tag, result)``; ``None`` when every submitted run is done."""
        while True:
            self._dispatch()
            if self.ready:
                break
            if not self.running:
                if not self.foreign:
                    return None
                time.sleep(self.poll)
                self._check_foreign()
                continue
            for outcome in self.executor.wait():
                self.running.discard(outcome.job)
                self._finish(outcome)
            if self.foreign:
                self._check_foreign()
        return self.ready.popleft()

    def __iter__(self) -> Iterator[tuple[Hashable, dict[str, Any]]]:
        while (item := self.next()) is not None:
            yield item

    def _finish(self, outcome: Outcome) -> None:
        tag, spec, handle, attempt = self.jobs[outcome.job]
        if outcome.kind == "lost" and attempt <= self.retries:
            self.jobs[outcome.job] = (tag, spec, handle, attempt + 1)
            self.queued.appendleft(outcome.job)
            tqdm.write(f"run {str(spec.key)[:12]}: {outcome.error}; attempt {attempt + 1}", file=sys.stderr)
            return
        del self.jobs[outcome.job]
        error = outcome.error if outcome.kind == "error" else f"{outcome.error} ({attempt} attempts; no more retries)"
        if handle is None:
            result = {
                "key": None,
                "config": spec.config,
                **(outcome.result or {"status": "failed", "curve": [], "final": {}}),
            }
            if outcome.kind != "ok":
                result["error"] = error
            self._done(tag, result)
            return
        assert self.store is not None and spec.key is not None
        if outcome.kind != "ok":
            handle.fail(error)
            self._done(tag, _stored(self.store, spec.key, spec.config, skipped=False))
            return
        result = outcome.result
        artifacts = result.pop("artifacts", ())  # stored with the finish; read them back with Store.artifacts
        for point in result["curve"]:
            handle.log_epoch(point["epoch"], **{k: v for k, v in point.items() if k != "epoch"})
        try:
            handle.finish(result["final"], state_bytes=int(result["final"]["state_bytes"]), artifacts=artifacts)
        except ValueError as e:  # an artifact the store refuses (the task's bug): the run fails, the study goes on
            handle.fail(e)
            self._done(tag, _stored(self.store, spec.key, spec.config, skipped=False))
            return
        self._done(tag, {"key": spec.key, "config": spec.config, **result})
