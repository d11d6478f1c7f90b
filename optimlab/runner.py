"""Train one task with one optimizer, one seed and one budget: the lab's single run.

>>> from optimlab.runner import run
>>> result = run("airfoil-linreg", "Adam", {"lr": 0.01, "eps": 1e-6}, seed=0, budget="full", progress=False)
>>> result["status"], round(result["final"]["full_loss"], 2), result["final"]["lstsq_floor"] < 0.243
('finished', 0.24, True)

**Optimizers** are specs of :mod:`optimlab.spec` (the one grammar of every command): a name
(``"Adam"``, ``"torch.SGD"``, a preset such as ``"NAG"``) or spec text (``"Adam(beta1=0.5)"``,
``"Lookahead(Adam(lr=0.01), k=5)"``), stored under the canonical class name (``"optimlab.Adam"``,
``"torch.SGD"``).  ``torch.optim.LBFGS`` is left out: its ``step`` needs a closure.
``hyperparameters`` (constructor names, or a pair's components such as ``beta1``) are set over
the spec's; the run's configuration spells out every constructor argument, defaults included, so
every spelling of one configuration is one run.  A wrapper whose first argument is an optimizer
(``optimlab.Lookahead``) may also take the inner one as ``{"optimizer": {"name": "Adam",
"hyperparameters": {"lr": 1e-3}}, "k": 5, ...}`` (how it is stored).  A GAN task has two roles, ``"generator"``
and ``"discriminator"``: a name and a hyperparameter dict apply to both, or give a mapping from
role to name and/or from role to hyperparameters.  An unknown name or hyperparameter raises
``ValueError`` listing the valid ones, before anything is trained or stored.

**Budgets** (:data:`optimlab.tasks.BUDGETS`): ``"smoke"`` (seconds: tiny subsets, one epoch;
for tests), ``"quick"`` (minutes on two CPU cores: a first look), ``"full"`` (the real protocol;
an hour or more for the image tasks on a CPU).
"train", "val" and "test" are example counts (a fixed subset, the same for every seed and
optimizer; "all": the whole split); for a GAN, "train" is real examples per epoch and "val"/"test"
the number of generated samples judged.  ``airfoil-linreg`` has no val/test split: it evaluates
on its training rows (d2l's protocol, split ``"full"``).

=================  ======  ======  =====  ======  ====  =====  ==========
task               budget  epochs  batch  train   val   test   eval every
=================  ======  ======  =====  ======  ====  =====  ==========
airfoil-linreg     smoke   1       10     300     all   all    20 steps
airfoil-linreg     quick   2       10     all     all   all    15 steps
airfoil-linreg     full    2       10     all     all   all    20 steps
cifar10-cnn        smoke   1       64     256     256   256    steps/20
cifar10-cnn        quick   2       128    5000    1000  10000  steps/20
cifar10-cnn        full    20      128    all     all   all    steps/20
fashion-mnist-cnn  smoke   1       64     256     256   256    steps/20
fashion-mnist-cnn  quick   2       128    6000    1000  10000  steps/20
fashion-mnist-cnn  full    10      128    all     all   all    steps/20
gan-ring           smoke   1       128    6400    1000  2000   steps/20
gan-ring           quick   10      256    128000  2000  10000  steps/20
gan-ring           full    50      256    128000  2000  10000  steps/20
house-mlp          smoke   1       64     512     512   512    steps/20
house-mlp          quick   3       128    5000    all   all    steps/20
house-mlp          full    30      128    all     all   all    steps/20
mnist-cnn          smoke   1       64     256     256   256    steps/20
mnist-cnn          quick   2       128    6000    1000  10000  steps/20
mnist-cnn          full    10      128    all     all   all    steps/20
mnist-dcgan        smoke   1       32     256     100   200    steps/20
mnist-dcgan        quick   3       64     10000   1000  2000   steps/20
mnist-dcgan        full    20      64     all     2000  10000  steps/20
mnist-wgan         smoke   1       32     256     100   200    steps/20
mnist-wgan         quick   3       64     10000   1000  2000   steps/20
mnist-wgan         full    20      64     all     2000  10000  steps/20
=================  ======  ======  =====  ======  ====  =====  ==========

**What is recorded.**  A *curve point* at step 0 (before any step: every optimizer starts from
the same network), then every ``eval every`` steps ("steps/20": a twentieth of the run's steps,
so every curve has at least 20 points after step 0), and always at the end, holds ``epochs``
(epochs done, a float), ``step`` (optimizer steps),
``train_<loss>`` (the mean of the minibatch losses since the previous point, as the optimizer saw
them, absent at step 0: ``train_loss``, or a GAN's ``train_d_loss`` and ``train_g_loss``), ``<split>_<name>`` for
every loss and metric the task evaluates on its curve split (``val_loss``, ``val_accuracy``;
``full_loss`` for airfoil; ``val_coverage``...), ``train_time`` (seconds spent training so far,
evaluation excluded) and ``wall_time`` (seconds since training began, evaluation included).
The *final* metrics are evaluated once, after the last step, on the task's final split
(``test_accuracy``...; never the best value seen during training), with the task's constants
(``lstsq_floor``, ``judge_accuracy``), ``diverged`` (0 or 1), ``steps``, ``epochs``,
``train_time``, ``wall_time`` (training and every evaluation), ``setup_time`` (loading data,
building models), ``num_params``, ``state_bytes`` (the bytes of every tensor in the optimizers'
``state``, a wrapper's inner optimizer included), ``threads`` (torch's CPU threads) and, where the
system reports it (not on Windows), ``peak_rss_bytes``: the process's peak resident memory so far
(of this run and anything the process did before it, such as earlier runs).

With the budget's ``checkpoint_every`` (``--checkpoint-every``), the parameters of the task's first
role (the model; a GAN's generator) are kept as artifacts (:func:`execute`) named
:func:`checkpoint_name` (``"params/model"``): flattened in ``parameters()`` order, float32
little-endian, at step 0, every ``checkpoint_every`` steps and at the last step (not a diverged one),
taken where the curve evaluates (a Schedule-Free optimizer's average).  A run whose checkpoints
would exceed ``checkpoint_cap_mb`` (256 MiB) raises ``ValueError`` before its first step.

A non-finite training loss, or one above ``task.loss_ceiling_factor`` (1e6) times the first step's
loss (taken as at least 1), stops the run at that step: the last curve point has that loss and no
evaluation, the final metrics of the split are NaN (a diverged network's accuracy means nothing)
and ``diverged`` is 1.  A final metric above ``task.metric_ceiling`` (house-mlp: an RMSE of
$1e8) also sets ``diverged`` to 1, keeping the absurd value.  The run still counts as finished:
divergence is a result.

An optimizer with ``update_hessian()`` (:class:`optimlab.optim.SophiaG`) gets its curvature estimate
as in its authors' training loop, every :data:`HESSIAN_EVERY` steps on a classification task (integer
targets, a model with one logit per class): :func:`gnb_estimate`.  Elsewhere it runs without one.

**Determinism.**  ``seed`` is expanded into two independent seeds
(``numpy.random.SeedSequence(seed).generate_state(2, uint64)``): the first seeds torch's global
generator (weights, dropout, GAN noise), the second a ``torch.Generator`` that alone draws the
order of the training examples.  Evaluation draws from neither.  The run uses
``torch.use_deterministic_algorithms(True, warn_only=True)`` and sets
``CUBLAS_WORKSPACE_CONFIG=:4096:8`` on CUDA if unset; the caller's global random state and
determinism setting are restored afterwards.  The same seed, budget, device and thread count give
identical curves, bit for bit.

**Store.**  With ``store``, the run is keyed by its configuration (task, optimizer and every
hyperparameter, seed, budget, device, dtype, library versions: :func:`optimlab.store.with_versions`),
claimed before training, and every curve point is written as it is made.  A finished run is
not run again: the stored result is returned with ``status`` ``"skipped"``.  A run live in another
process is waited for, then returned the same way (two identical commands on one store share the
work).  A run stored as failed is run again (``retry_failed=False`` returns the stored failure).
Before a run is claimed, :func:`check_environment` checks the device and the task's data, so a
wrong ``data_dir`` or ``device`` is one ``ValueError`` and nothing is stored.  An exception during
training is stored as ``'failed'`` with its traceback and returned as ``status`` ``"failed"``, so
that a sweep goes on; Ctrl-C is stored as ``'interrupted'`` and raised.  Without a store,
exceptions propagate.
"""

from __future__ import annotations

import dataclasses
import hashlib
import importlib.metadata
import inspect
import math
import os
import sys
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager, nullcontext
from typing import Any

import numpy as np
import torch
from tqdm import tqdm

from . import spec as spec_mod
from . import tasks as tasks_mod
from .data import DataError
from .optim._validate import check_choice, check_int
from .spec import OptimizerSpec
from .store import Store, canonical_json, run_key, with_versions
from .tasks import BUDGETS, Budget, Instance, Task

__all__ = [
    "CHECKPOINT_MEDIA_TYPE",
    "CURVE_POINTS",
    "DTYPES",
    "RunSpec",
    "build_optimizer",
    "check_device",
    "checkpoint_name",
    "check_environment",
    "execute",
    "optimizer_names",
    "optimizer_spec",
    "optimizer_versions",
    "prepare",
    "resolve_optimizer",
    "run",
    "state_bytes",
]


#: The precisions a run can train in (``run(..., dtype=)``, ``--dtype``).
DTYPES = ("float32", "bfloat16")
#: Curve points of a budget without ``eval_every`` (besides the one at step 0): one every
#: ``max(1, steps // CURVE_POINTS)`` steps.
CURVE_POINTS = 20
#: Steps between two curvature estimates of an optimizer that takes them (its authors' k for SophiaG).
HESSIAN_EVERY = 10


# ---------------------------------------------------------------------------------------------
# Optimizers by name (the grammar is optimlab.spec's)
# ---------------------------------------------------------------------------------------------


def optimizer_names() -> tuple[str, ...]:
    """Every optimizer :func:`run` accepts, by canonical name, sorted (``"optimlab.Adam"``, ``"torch.SGD"``...)."""
    return spec_mod.optimizer_names()


def resolve_optimizer(name: str) -> tuple[str, type[torch.optim.Optimizer]]:
    """``(canonical name, class)`` of ``name`` (see the module docstring for the accepted forms).

    Raises:
        ValueError: an unknown name; the message lists every valid one, the closest matches,
            and any optimlab module that failed to import.
    """
    return spec_mod.resolve(name, who="run")


def optimizer_spec(
    name: str | OptimizerSpec, hyperparameters: Mapping[str, Any] | None = None
) -> tuple[str, dict[str, Any]]:
    """``(canonical name, every hyperparameter)``: the spec ``name`` (a name, a preset, or spec text
    such as ``"Adam(beta1=0.5)"``, see :mod:`optimlab.spec`) with ``hyperparameters`` applied over
    it and the constructor's defaults filled in (a wrapper's inner optimizer spelled out the same way).

    Raises:
        ValueError: an unknown optimizer or hyperparameter name, a missing required one, or a
            value that cannot be part of a run key (see :func:`optimlab.store.canonical_json`).
    """
    spec = _parsed(name)
    given = {} if hyperparameters is None else hyperparameters
    if not isinstance(given, Mapping):
        raise ValueError(f"run: invalid hyperparameters={given!r} for {spec.name}: expected a mapping of name to value")
    cls = spec.cls
    wrapper = spec_mod.is_wrapper(cls)
    allowed = [*(["optimizer"] if wrapper else []), *spec_mod.parameters(cls), *spec_mod.components(cls)]
    unknown = [k for k in given if k not in allowed]
    if unknown:
        raise ValueError(f"run: invalid hyperparameter {unknown[0]!r} for {spec.name}: expected some of {', '.join(allowed)}")
    if wrapper and given.get("optimizer", spec.inner) is None:
        raise ValueError(
            f"run: invalid hyperparameter optimizer=None for {spec.name}: expected a spec such as "
            "'Adam(lr=0.01)' or {'name': <optimizer name>, 'hyperparameters': {...}}"
        )
    try:
        spec = spec_mod.make(spec, given)
    except ValueError as e:
        raise ValueError(f"run: {e}") from None
    full: dict[str, Any] = {}
    if wrapper:
        inner_name, inner_hp = optimizer_spec(spec.inner)  # type: ignore[arg-type]
        full["optimizer"] = {"name": inner_name, "hyperparameters": inner_hp}
    for p in spec_mod.parameters(cls).values():
        if p.name in spec.hyperparameters:
            full[p.name] = spec.hyperparameters[p.name]
        elif p.default is inspect.Parameter.empty:
            raise ValueError(f"run: missing hyperparameter {p.name!r} for {spec.name}: it has no default")
        elif not callable(p.default):
            full[p.name] = p.default
        # a default that is a function (ADOPT's clip_lambda) has no JSON form: the constructor supplies
        # it, and the library versions in the run's key stand for it
    # a torch.dtype (Muon's ns_dtype) is kept by its name, as specs compare it; its constructor takes the name
    full = {k: spec_mod._plain(v) for k, v in full.items()}
    canonical_json({f"hyperparameters of {spec.name}": full})  # ValueError for a value with no key
    return spec.name, json_plain(full)


def _parsed(name: str | OptimizerSpec) -> OptimizerSpec:
    if isinstance(name, OptimizerSpec):
        return name
    if not isinstance(name, str):
        raise ValueError(f"run: invalid optimizer={name!r}: expected a name such as 'Adam' or 'torch.SGD'")
    try:  # a bare name may be a wrapper whose inner optimizer comes in the hyperparameters
        return spec_mod.parse(name) if "(" in name else spec_mod.named(name)
    except ValueError as e:
        raise ValueError(f"run: {e}") from None


def optimizer_versions(names: Iterable[str]) -> dict[str, str]:
    """``{package: version}`` of every optimizer among ``names`` that is neither optimlab's nor torch's
    (``torch_optimizer.Lamb`` -> ``{"torch_optimizer": "0.3.0"}``), for the run's key and the report.

    A class from no installed distribution (your own, in a script or a test) is versioned by the
    sha256 of its source, so that editing it starts fresh runs.  A wrapper's inner optimizer counts.
    """
    out: dict[str, str] = {}
    for name in names:
        cls = resolve_optimizer(name)[1]
        top = cls.__module__.split(".")[0]
        if top in ("optimlab", "torch"):
            continue
        dists = importlib.metadata.packages_distributions().get(top)
        if dists:
            out[top] = importlib.metadata.version(dists[0])
            continue
        try:
            source = inspect.getsource(cls)
        except (OSError, TypeError):  # defined in an interactive session: nothing to hash
            source = ""
        out[f"{cls.__module__}.{cls.__qualname__}"] = "source sha256:" + hashlib.sha256(source.encode()).hexdigest()[:16]
    return out


def _names(hyperparameters: Mapping[str, Any], name: str) -> Iterator[str]:
    """``name`` and a wrapper's inner optimizers' names (``hyperparameters["optimizer"]``)."""
    yield name
    inner = hyperparameters.get("optimizer")
    if isinstance(inner, Mapping):
        yield from _names(inner.get("hyperparameters", {}), inner["name"])


def json_plain(value: Any) -> Any:
    """``value`` as it reads back from its canonical JSON (tuples become lists, float subclasses floats)."""
    if isinstance(value, Mapping):
        return {k: json_plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [json_plain(v) for v in value]
    if isinstance(value, float):
        return float(value)
    if isinstance(value, int) and not isinstance(value, bool):
        return int(value)
    return value


def build_optimizer(name: str, hyperparameters: Mapping[str, Any], params: list[torch.nn.Parameter]) -> torch.optim.Optimizer:
    """The optimizer ``name`` over ``params`` with ``hyperparameters`` (lists are passed as tuples)."""
    _, cls = resolve_optimizer(name)
    kwargs = {k: tuple(v) if isinstance(v, list) else v for k, v in hyperparameters.items() if k != "optimizer"}
    if spec_mod.is_wrapper(cls):
        inner = hyperparameters["optimizer"]
        return cls(build_optimizer(inner["name"], inner.get("hyperparameters", {}), params), **kwargs)
    return cls(params, **kwargs)


def state_bytes(optimizer: torch.optim.Optimizer) -> int:
    """The bytes of every tensor in ``optimizer.state`` (and a wrapper's inner optimizer's), each counted once."""
    seen: set[int] = set()
    total = 0
    pending: list[Any] = []
    current: Any = optimizer
    while isinstance(current, torch.optim.Optimizer):
        pending.append(current.state)
        current = getattr(current, "optimizer", None)
    while pending:
        item = pending.pop()
        if isinstance(item, torch.Tensor):
            if id(item) not in seen:
                seen.add(id(item))
                total += item.numel() * item.element_size()
        elif isinstance(item, Mapping):
            pending.extend(item.values())
        elif isinstance(item, (list, tuple)):
            pending.extend(item)
    return total


# ---------------------------------------------------------------------------------------------
# One run
# ---------------------------------------------------------------------------------------------


def run(
    task: str | Task,
    optimizer: str | Mapping[str, str],
    hyperparameters: Mapping[str, Any] | None = None,
    seed: int = 0,
    budget: str = "smoke",
    store: Store | None = None,
    progress: bool = True,
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    retry_failed: bool = True,
    poll: float = 2.0,
    dtype: str = "float32",
) -> dict[str, Any]:
    """Train ``task`` with ``optimizer`` for ``seed`` and ``budget``; see the module docstring.

    Parameters
    ----------
    task : str or Task
        A name of :func:`optimlab.tasks.names`, or a task object (``task.with_data(...)``).
    optimizer : str or mapping
        An optimizer name, or for a GAN a mapping from role to name.
    hyperparameters : mapping, optional
        Constructor keyword arguments (for a GAN, optionally a mapping from role to them).
    seed : int
        ``>= 0``.
    budget : str
        ``"smoke"``, ``"quick"`` or ``"full"``.
    store : Store, optional
        Claim, record and skip runs there.
    progress : bool
        Show a tqdm bar on stderr.
    data_dir : path, optional
        The data directory (default: ``$OPTIMLAB_DATA_DIR``, see :mod:`optimlab.data`).
    device : str or torch.device
        Where to train: what ``torch.device`` takes (``"cpu"``, ``"cuda"``, ``"cuda:1"``, ``"mps"``),
        checked before anything is claimed; part of the run's key.
    retry_failed : bool
        With a store, re-run a run stored as failed (the default: the environment may have been
        fixed since) instead of returning the stored failure.
    poll : float
        With a store, seconds between looks at a run that is live in another process: the call
        waits for it and returns its stored result (two processes on one store share the work).
    dtype : str
        ``"float32"`` (parameters and arithmetic in float32), or ``"bfloat16"``: the training steps
        and evaluations run under ``torch.autocast`` in bfloat16 (parameters and optimizer state stay
        float32, as mixed-precision training does); part of the run's key.

    Returns
    -------
    dict
        ``status`` (``"finished"``, ``"diverged"``, ``"failed"`` or ``"skipped"``), ``key``
        (the store key, or ``None`` without a store), ``config``, ``curve`` (a list of curve
        points, each ``{"epoch": i, ...}`` with ``i`` from 1), ``final`` (the final metrics),
        without a store ``artifacts`` (see :func:`execute`; with one, :meth:`Store.artifacts`
        reads them), and, for a failed or skipped run, ``error`` (the stored traceback or ``None``) and
        ``stored_status`` (skipped runs: the store's status).
    """
    if not isinstance(progress, bool):
        raise ValueError(f"run: invalid progress={progress!r}: expected True or False")
    if store is not None and not isinstance(store, Store):
        raise ValueError(f"run: invalid store={store!r}: expected an optimlab.store.Store or None")
    if isinstance(poll, bool) or not isinstance(poll, (int, float)) or not poll > 0:
        raise ValueError(f"run: invalid poll={poll!r}: expected a number of seconds > 0")
    spec = prepare(task, optimizer, hyperparameters, seed, budget, data_dir=data_dir, device=device, dtype=dtype, keyed=store is not None)
    task, config, key = _task_of(spec), spec.config, spec.key
    train = lambda log: execute(spec, log, progress)  # noqa: E731
    if store is None:
        check_environment(task, data_dir, device)
        return {"key": None, "config": config, **train(None)}
    stored = store.record(key)
    if stored is None or stored["status"] not in ("finished", "failed") or (stored["status"] == "failed" and retry_failed):
        check_environment(task, data_dir, device)  # a wrong data directory or device: one error, nothing stored
    waiting = False
    while (handle := store.claim(config, retry_failed=retry_failed, meta=spec.meta)) is None:
        if store.record(key)["status"] != "running":
            return _stored(store, key, config, skipped=True)
        if progress and not waiting:
            tqdm.write(f"{task.name} seed {seed}: waiting for the run live in another process (key {key[:12]})", file=sys.stderr)
        waiting = True
        time.sleep(poll)
    outcome = None
    with handle:
        outcome = train(handle.log_epoch)
        artifacts = outcome.pop("artifacts")  # stored with the finish; read them back with Store.artifacts
        handle.finish(outcome["final"], state_bytes=int(outcome["final"]["state_bytes"]), artifacts=artifacts)
    if outcome is None:  # the handle stored the exception as 'failed' and swallowed it
        return _stored(store, key, config, skipped=False)
    return {"key": key, "config": config, **outcome}


@dataclasses.dataclass(frozen=True)
class RunSpec:
    """Everything one run needs, and nothing else: what :func:`execute` (the trainable, Ray Tune's
    style) takes in another process or on another machine.  Picklable: a registered task travels
    by name, any other task as its object (define its class at a module's top level)."""

    task: str | Task
    specs: Mapping[str, tuple[str, dict[str, Any]]]
    seed: int
    budget: str
    data_dir: str | os.PathLike[str] | None
    device: str
    dtype: str
    config: dict[str, Any]
    key: str | None
    meta: dict[str, Any]
    #: torch's CPU threads for the run (part of its key: the same runs give the same numbers only at
    #: the same thread count, so executors set it whatever their worker count).
    threads: int | None = None


def prepare(
    task: str | Task,
    optimizer: str | Mapping[str, str],
    hyperparameters: Mapping[str, Any] | None = None,
    seed: int = 0,
    budget: str = "smoke",
    *,
    data_dir: str | os.PathLike[str] | None = None,
    device: str | torch.device = "cpu",
    dtype: str = "float32",
    keyed: bool = True,
    threads: int | None = None,
) -> RunSpec:
    """The :class:`RunSpec` of a run (``run``'s arguments, checked; ``keyed``: with the library versions
    and the store key in its configuration).  Trains nothing and touches no store.

    Raises:
        ValueError: a bad argument, an unknown optimizer or hyperparameter.
    """
    task = tasks_mod.get(task) if isinstance(task, str) else task
    if not isinstance(task, Task):
        raise ValueError(f"run: invalid task={task!r}: expected one of {', '.join(tasks_mod.names())} or a Task")
    check_choice("run", "budget", budget, tuple(n for n in BUDGETS if n in task.budgets))
    check_choice("run", "dtype", dtype, DTYPES)
    check_int("run", "seed", seed, 0)
    if threads is None:
        threads = torch.get_num_threads()
    check_int("run", "threads", threads, 1)
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"run: invalid device={device!r}: {e}") from None
    specs = _role_specs(task, optimizer, hyperparameters)
    for name, hp in specs.values():  # the constructor's own checks, before anything is claimed
        build_optimizer(name, hp, [torch.zeros(1, requires_grad=True)])
    single = len(task.roles) == 1
    config = {
        "task": task.name,
        "optimizer": specs[task.roles[0]][0] if single else {role: specs[role][0] for role in task.roles},
        "hyperparameters": specs[task.roles[0]][1] if single else {role: specs[role][1] for role in task.roles},
        "seed": seed,
        "budget": budget,
        "device": device.type,
        "dtype": dtype,
        "settings": task.budgets[budget].settings(),  # overrides (--epochs...) make other runs
        # the same configuration and seed give the same numbers only at the same thread count
        "threads": threads,
    }
    key = None
    if keyed:
        config = with_versions(config)
        config["versions"].update(optimizer_versions(n for name, hp in specs.values() for n in _names(hp, name)))
        key = run_key(config)
    registered = task.name in tasks_mod.names() and tasks_mod.get(task.name) is task
    return RunSpec(
        task.name if registered else task, specs, seed, budget, data_dir, str(device), dtype, config, key,
        {"task": task.metadata()}, threads,
    )  # fmt: skip


def _task_of(spec: RunSpec) -> Task:
    return tasks_mod.get(spec.task) if isinstance(spec.task, str) else spec.task


def execute(spec: RunSpec, log: Callable[..., None] | None = None, progress: bool = False) -> dict[str, Any]:
    """Train the run ``spec`` describes: ``{"status", "curve", "final"}`` (see the module docstring).

    A plain function of its argument (no store, no globals), so that any process or machine can run
    it: ``log(epoch, **metrics)`` is called at each curve point if given (the serial path writes
    the store as it goes; an executor hands the curve back whole).  ``"artifacts"``: the files the
    run made (:meth:`optimlab.tasks.Instance.artifacts`), each ``{"name", "step", "media_type",
    "data"}`` with ``data`` bytes; whoever holds the store writes them with the run's finish
    (:meth:`optimlab.store.RunHandle.finish`), and a result returned with a store leaves them there.
    """
    previous = torch.get_num_threads()
    if spec.threads is not None:
        torch.set_num_threads(spec.threads)
    try:
        return _train(
            _task_of(spec), spec.specs, spec.seed, spec.budget, spec.data_dir, torch.device(spec.device), progress, log,
            spec.dtype,
        )  # fmt: skip
    finally:
        torch.set_num_threads(previous)


def _role_specs(
    task: Task, optimizer: str | Mapping[str, str], hyperparameters: Mapping[str, Any] | None
) -> dict[str, tuple[str, dict[str, Any]]]:
    """``{role: (canonical optimizer name, every hyperparameter)}``."""
    roles = task.roles
    hyperparameters = {} if hyperparameters is None else hyperparameters
    if isinstance(optimizer, Mapping):
        if set(optimizer) != set(roles):
            raise ValueError(
                f"run: invalid optimizer={dict(optimizer)!r} for {task.name}: a mapping needs exactly the roles {', '.join(roles)}"
            )
        names = dict(optimizer)
    else:
        names = dict.fromkeys(roles, optimizer)
    if not isinstance(hyperparameters, Mapping):
        raise ValueError(f"run: invalid hyperparameters={hyperparameters!r}: expected a mapping")
    per_role = len(roles) > 1 and bool(hyperparameters) and set(hyperparameters) <= set(roles)
    if per_role and set(hyperparameters) != set(roles):
        missing = sorted(set(roles) - set(hyperparameters))
        raise ValueError(f"run: invalid hyperparameters for {task.name}: per-role hyperparameters lack {', '.join(missing)}")
    return {role: optimizer_spec(names[role], hyperparameters[role] if per_role else hyperparameters) for role in roles}


def check_device(device: str | torch.device) -> torch.device:
    """``device`` as a ``torch.device``, if this machine and torch build can train on it: what
    ``torch.device`` accepts (``cpu``, ``cuda``, ``cuda:1``, ``mps``...), present here.

    Raises:
        ValueError: one line naming the device and why not.
    """
    try:
        device = torch.device(device)
    except (RuntimeError, TypeError) as e:
        raise ValueError(f"run: invalid device={device!r}: {e} (e.g. cpu, cuda, cuda:1, mps)") from None
    if device.type not in ("cpu", "cuda", "mps"):
        backend = getattr(torch, device.type, None)  # torch.xpu and the like have is_available()
        if device.type == "meta" or not callable(getattr(backend, "is_available", None)) or not backend.is_available():
            raise ValueError(f"run: invalid device='{device}': this torch ({torch.__version__}) cannot train on it; use --device cpu")
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(
            f"run: invalid device='{device}': this torch ({torch.__version__}) sees no CUDA device; use --device cpu"
        )
    if device.type == "cuda" and device.index is not None and device.index >= torch.cuda.device_count():
        raise ValueError(f"run: invalid device='{device}': there are {torch.cuda.device_count()} CUDA devices")
    if device.type == "mps" and not torch.backends.mps.is_available():
        raise ValueError(f"run: invalid device='{device}': this machine or torch build has no MPS device; use --device cpu")
    return device


def check_environment(task: Task, data_dir: str | os.PathLike[str] | None, device: str | torch.device) -> None:
    """Check that ``device`` exists and that ``task``'s data is in ``data_dir`` and verifies
    (:meth:`optimlab.tasks.Task.check_data`), before a run is claimed.

    Raises:
        ValueError: one line naming what is wrong (the device, or the data file and why).
    """
    check_device(device)
    try:
        task.check_data(data_dir)
    except DataError as e:
        raise ValueError(f"run: the data of {task.name} is not usable: {' '.join(str(e).split())}") from None  # one line


def _stored(store: Store, key: str, config: dict[str, Any], *, skipped: bool) -> dict[str, Any]:
    """The result of a run the store holds: skipped (claimed before) or just failed."""
    record = store.record(key)
    return {
        "key": key,
        "config": config,
        "status": "skipped" if skipped else "failed",
        "stored_status": record["status"],
        "error": record["error"],
        "curve": store.epochs(key),
        "final": record["final"] or {},
    }


def _peak_rss_bytes() -> int | None:
    """The process's peak resident memory in bytes; ``None`` where there is no ``resource`` module (Windows)."""
    try:
        import resource
    except ImportError:
        return None
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return int(peak if sys.platform == "darwin" else peak * 1024)  # macOS counts bytes, Linux KiB


def _seeds(seed: int) -> tuple[int, int]:
    """Two independent 64-bit seeds from ``seed``: (torch's global generator, the data order)."""
    weights, order = np.random.SeedSequence(seed).generate_state(2, dtype=np.uint64)
    return int(weights), int(order)


@contextmanager
def _seeded(seed: int, device: torch.device) -> Iterator[None]:
    """Seed torch's global generators and require deterministic algorithms; restore both after."""
    if device.type == "cuda":
        os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")  # cuBLAS's condition for determinism
    devices = list(range(torch.cuda.device_count())) if torch.cuda.is_initialized() or device.type == "cuda" else []
    enabled = torch.are_deterministic_algorithms_enabled()
    warn_only = torch.is_deterministic_algorithms_warn_only_enabled()
    with torch.random.fork_rng(devices=devices):
        torch.manual_seed(seed)
        torch.use_deterministic_algorithms(True, warn_only=True)
        try:
            yield
        finally:
            torch.use_deterministic_algorithms(enabled, warn_only=warn_only)


@contextmanager
def _at_evaluation_point(optimizers: Mapping[str, torch.optim.Optimizer]) -> Iterator[None]:
    """Evaluate where the optimizers say the model is: an optimizer with ``train()``/``eval()``
    (Schedule-Free, optimlab's and the official ``schedulefree`` package's) trains at one point and
    is evaluated at its average, so it is switched to ``eval()`` for the evaluation and back."""
    modal = [o for o in optimizers.values() if callable(getattr(o, "train", None)) and callable(getattr(o, "eval", None))]
    for o in modal:
        o.eval()
    try:
        yield
    finally:
        for o in modal:
            o.train()


def gnb_estimate(instance: Instance, batch: Any, optimizers: Mapping[str, torch.optim.Optimizer]) -> bool:
    """The Gauss-Newton-Bartlett curvature estimate of Sophia's authors, for the optimizers with
    ``update_hessian()``: labels drawn from the model's own softmax on ``batch``, the gradient of
    their mean cross-entropy, ``update_hessian()``, the gradients cleared.  Only where the instance
    has a ``model`` and ``batch`` is ``(inputs, integer class labels)`` with one logit per class;
    returns whether it took the estimate."""
    takers = [o for o in optimizers.values() if callable(getattr(o, "update_hessian", None))]
    model = getattr(instance, "model", None)
    pair = isinstance(batch, (tuple, list)) and len(batch) == 2
    if not takers or not isinstance(model, torch.nn.Module) or not pair:
        return False
    x, y = batch
    if not torch.is_tensor(y) or y.dim() != 1 or y.is_floating_point() or y.is_complex() or y.dtype == torch.bool:
        return False
    logits = model(x)
    if logits.dim() != 2 or logits.size(0) != y.size(0):
        return False
    for o in takers:
        o.zero_grad(set_to_none=True)  # the training step's gradients must not enter the estimate
    sampled = torch.distributions.Categorical(logits=logits.detach().float()).sample()
    torch.nn.functional.cross_entropy(logits, sampled).backward()
    for o in takers:
        o.update_hessian()
        o.zero_grad(set_to_none=True)
    return True


class _Curve:
    """Collects the losses of the steps between curve points and writes the points."""

    def __init__(
        self,
        instance: Instance,
        optimizers: Mapping[str, torch.optim.Optimizer],
        log: Callable[..., None] | None,
        bar: tqdm,
    ) -> None:
        self.instance = instance
        self.optimizers = optimizers
        self.log = log
        self.bar = bar
        self.points: list[dict[str, Any]] = []
        self.sums: dict[str, float] = {}
        self.counts: dict[str, int] = {}
        self.train_time = 0.0
        self.start = self.resumed = time.perf_counter()

    def add(self, losses: Mapping[str, float]) -> None:
        for name, value in losses.items():
            self.sums[name] = self.sums.get(name, 0.0) + value
            self.counts[name] = self.counts.get(name, 0) + 1

    def point(self, step: int, *, evaluate: bool) -> None:
        """A curve point after ``step`` steps (with the curve split's evaluation if ``evaluate``)."""
        if step:  # before the first step nothing has trained: the time since the setup is none of training's
            self.train_time += time.perf_counter() - self.resumed
        row: dict[str, Any] = {"epochs": step / self.instance.steps_per_epoch, "step": step}
        row.update({f"train_{name}": self.sums[name] / self.counts[name] for name in self.sums})
        self.sums, self.counts = {}, {}
        if evaluate:
            split = self.instance.eval_split
            with _at_evaluation_point(self.optimizers):
                row.update({f"{split}_{name}": value for name, value in self.instance.evaluate(split).items()})
        row["train_time"] = self.train_time
        row["wall_time"] = time.perf_counter() - self.start
        self.points.append({"epoch": len(self.points) + 1, **row})
        if self.log is not None:
            self.log(len(self.points), **row)
        shown = {k: f"{v:.4g}" for k, v in row.items() if k not in ("epochs", "step", "train_time", "wall_time")}
        self.bar.set_postfix(shown, refresh=False)
        self.resumed = time.perf_counter()


#: The media type of a checkpoint: the parameters flattened in ``parameters()`` order, float32 little-endian.
CHECKPOINT_MEDIA_TYPE = "application/x-float32-le"


def checkpoint_name(role: str) -> str:
    """The artifact name of ``role``'s checkpoints (``"params/model"``, ``"params/generator"``)."""
    return f"params/{role}"


class _Checkpoints:
    """The parameters of the task's first role (the model; a GAN's generator, whose samples are what
    the GAN makes) every ``budget.checkpoint_every`` steps, at step 0 and at the end, as artifacts."""

    def __init__(
        self, task: Task, budget: Budget, instance: Instance, optimizers: Mapping[str, torch.optim.Optimizer]
    ) -> None:
        self.every = budget.checkpoint_every
        self.role = task.roles[0]
        self.params = instance.parameters()[self.role]
        self.optimizers = optimizers
        self.artifacts: list[dict[str, Any]] = []
        if self.every is None:
            return
        steps = budget.epochs * instance.steps_per_epoch
        count = steps // self.every + 1 + (steps % self.every > 0)  # step 0 and the last step too
        each = sum(p.numel() for p in self.params) * 4
        cap = budget.checkpoint_cap_mb * 2**20
        if count * each > cap:
            raise ValueError(
                f"run {task.name}: invalid checkpoint_every={self.every}: {count} checkpoints of the {self.role}'s "
                f"{each // 4} parameters would take {count * each / 2**20:.1f} MiB, over checkpoint_cap_mb="
                f"{budget.checkpoint_cap_mb} (room for {cap // each}); checkpoint less often or raise checkpoint_cap_mb"
            )

    def take(self, step: int, *, last: bool = False) -> None:
        """A checkpoint after ``step`` steps if it is one of the schedule's (or ``last``), once per step."""
        if self.every is None or (step % self.every and not last):
            return
        if self.artifacts and self.artifacts[-1]["step"] == step:
            return
        with torch.no_grad(), _at_evaluation_point(self.optimizers):  # where the curve evaluates the model
            flat = torch.cat([p.detach().reshape(-1).to("cpu", torch.float32) for p in self.params])
        data = flat.numpy().astype("<f4", copy=False).tobytes()
        self.artifacts.append(
            {"name": checkpoint_name(self.role), "step": step, "media_type": CHECKPOINT_MEDIA_TYPE, "data": data}
        )


def _train(
    task: Task,
    specs: Mapping[str, tuple[str, dict[str, Any]]],
    seed: int,
    budget_name: str,
    data_dir: Any,
    device: torch.device,
    progress: bool,
    log: Callable[..., None] | None,
    dtype: str = "float32",
) -> dict[str, Any]:
    """The run itself: ``{"status", "curve", "final"}``."""
    budget = task.budgets[budget_name]
    weights_seed, order_seed = _seeds(seed)
    # no cast cache: one autocast region spans the run, and cached bfloat16 copies of the weights
    # would hide every update until it ends
    precision = torch.autocast(device.type, dtype=torch.bfloat16, cache_enabled=False) if dtype == "bfloat16" else nullcontext()
    with _seeded(weights_seed, device), precision:
        began = time.perf_counter()
        instance = task.setup(budget, data_dir=data_dir, device=device)
        params = instance.parameters()
        optimizers = {role: build_optimizer(*specs[role], params[role]) for role in task.roles}
        setup_time = time.perf_counter() - began
        order = torch.Generator().manual_seed(order_seed)
        label = "/".join(dict.fromkeys(name for name, _ in specs.values()))
        with tqdm(
            total=budget.epochs * instance.steps_per_epoch,
            desc=f"{task.name} {label} seed {seed}",
            unit="step",
            disable=not progress,
            file=sys.stderr,
            dynamic_ncols=True,
        ) as bar:
            curve = _Curve(instance, optimizers, log, bar)
            every = budget.eval_every or max(1, budget.epochs * instance.steps_per_epoch // CURVE_POINTS)
            checkpoints = _Checkpoints(task, budget, instance, optimizers)
            # where every optimizer starts: the same network, the same numbers (the evaluation leaves
            # a Schedule-Free optimizer in train mode, where it must step)
            curve.point(0, evaluate=True)
            checkpoints.take(0)
            step, diverged = 0, False
            first: dict[str, float] = {}
            for _ in range(budget.epochs):
                for batch in instance.batches(order):
                    losses = {name: value.item() for name, value in instance.step(batch, optimizers).items()}
                    step += 1
                    curve.add(losses)
                    bar.update()
                    for name, value in losses.items():
                        first.setdefault(name, max(abs(value), 1.0))
                    if not all(math.isfinite(v) and abs(v) <= task.loss_ceiling_factor * first[k] for k, v in losses.items()):
                        diverged = True
                        break
                    if step % HESSIAN_EVERY == 0:
                        gnb_estimate(instance, batch, optimizers)
                    if step % every == 0:
                        curve.point(step, evaluate=True)
                    checkpoints.take(step)
                if diverged:
                    break
            if diverged or curve.points[-1]["step"] != step:
                curve.point(step, evaluate=not diverged)
            if not diverged:
                checkpoints.take(step, last=True)
        split = instance.final_split
        with _at_evaluation_point(optimizers):
            evaluated = instance.evaluate(split)
            artifacts = checkpoints.artifacts + [{**a, "step": step} for a in instance.artifacts()]
        final: dict[str, Any] = {f"{split}_{name}": math.nan if diverged else value for name, value in evaluated.items()}
        # an absurd final metric (beyond the task's ceiling) is divergence too; its value is kept as data
        diverged = diverged or evaluated.get(task.metric, 0.0) > task.metric_ceiling
        final.update(instance.constants())
        final.update(
            diverged=int(diverged),
            steps=step,
            epochs=step / instance.steps_per_epoch,
            train_time=curve.train_time,
            wall_time=time.perf_counter() - curve.start,
            setup_time=setup_time,
            num_params=sum(p.numel() for ps in params.values() for p in ps),
            state_bytes=sum(state_bytes(o) for o in optimizers.values()),
            threads=torch.get_num_threads(),
        )
        peak = _peak_rss_bytes()
        if peak is not None:
            final["peak_rss_bytes"] = peak
    status = "diverged" if diverged else "finished"
    return {"status": status, "curve": curve.points, "final": final, "artifacts": artifacts}
