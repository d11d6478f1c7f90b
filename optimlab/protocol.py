r"""The fair comparison protocol: equal tuning budgets, several seeds, confidence intervals.

>>> from optimlab.protocol import compare
>>> result = compare("airfoil-linreg", ["Adam", "Momentum"], budget="smoke", trials=8, seeds=5, store=store)
>>> print(result.verdict())

1. **Tune** (:func:`tune`).  Every optimizer gets the same number of Optuna trials, with a TPE
   sampler seeded the same way and the same search space: the learning rate log-uniform over one
   range, other hyperparameters only where the user asks (``extra_space``).  The lr range is
   ``lr_range`` for every optimizer where it is given; otherwise :data:`LR_RANGE`,
   :math:`[10^{-5}, 1]`, except for a class that declares its own in ``tune_lr_range`` (Prodigy,
   whose lr multiplies its own step-size estimate: :math:`[0.1, 10]` around the recommended 1;
   ScheduleFreeSGD, whose authors start at 1 and advise rates 10-50x the classical ones:
   :math:`[10^{-4}, 10]`).
   Because every optimizer's sampler starts from the same seed, their random start-up trials try
   the same learning rates (common random numbers; the same quantiles of a class's own range).
   A tuned value within :data:`EDGE_FRACTION` of its range from a bound, in the range's own scale
   (log for the lr), is *at the edge*: the optimum may lie beyond what was searched, and
   :attr:`Tuned.edges` (printed by ``tune``) and the report say so.  A trial's
   objective is the task's validation metric at the *end* of training (the last curve point,
   not the best epoch), minimised or maximised as the task's ``higher_is_better`` says.
   A diverged trial scores the worst value (:math:`+\infty` when minimising, :math:`-\infty`
   when maximising); it is a result, not an error.  Each trial is a run at the tuning ``seed``,
   kept in the store: the sampler is seeded and the store hands back finished runs, so an
   interrupted tuning run again suggests the same hyperparameters, replays the finished trials
   from the store into the study and trains only what is missing.  Trials are proposed ``batch``
   at a time per optimizer and every optimizer's run side by side on an executor
   (:mod:`optimlab.executors`: this process, ``workers=N`` local processes, or Ray); the trials
   depend on ``batch``, never on the number of workers.
2. **Evaluate** (:func:`compare`).  The chosen configuration of each optimizer runs with ``seeds``
   training seeds ``seed + 1, ..., seed + seeds`` (never the tuning seed, so the final numbers are
   not the ones the choice was made on).  The reported number is the *final* metric on the task's
   final split (test; the training rows for ``airfoil-linreg``), never the best value seen
   during training.
3. **Statistics** (:mod:`optimlab.stats`).  Each arm's final metric over its seeds: how many
   diverged (a non-finite value, or one beyond the task's ceiling: :func:`final_value`), the mean
   and a 95% Student-t interval of the finite ones kept inside the metric's range, and Welch's
   test against the best-ranked arm.  An arm with a diverged seed is never best over one without;
   fewer than 2 finite seeds is "not enough seeds"; one arm is no comparison; fewer than 5 seeds
   is a weak comparison.  :meth:`Comparison.render` prints it all.

Optimizers are specs of :mod:`optimlab.spec` (``"Adam"``, ``"NAG(lr=0.01)"``, ``"Adam(beta1=0.5)"``,
``"torch.SGD"``, ``"Lookahead(Adam, k=5)"``, ``"torch_optimizer.Lamb"``), ``torch.optim.Optimizer``
subclasses from any package or your own (``torch_optimizer.Lamb``, ``MySGD``), or ``("AdamW",
{"weight_decay": 0.01})`` / ``(MySGD, {"momentum": 0.9})``.  What a
spec sets is fixed and never tuned; results are labelled with :func:`optimlab.spec.label` (tuned
values marked ``*``).  For a GAN the hyperparameters apply to both networks.

**Warmup** (``warmup=``): ``None``; an int ``T``, :class:`optimlab.schedules.LinearWarmup` over
``T`` steps; or ``"untuned"``, Ma & Yarats' :class:`optimlab.schedules.UntunedWarmup` (linear over
:math:`2/(1-\beta_2)` steps, read from each param group's ``betas``).  The runner has no scheduler
option, so the warmup is applied by a task wrapper (:class:`WarmupTask`) that steps the schedulers
after each training step; its runs are stored under the task name ``"<task>+warmup=<warmup>"``.

**Learning-rate sensitivity** (:func:`lr_sensitivity`): the final validation metric over a grid of
learning rates, several seeds each: the tool for claims such as RAdam's "robust from 0.003 to 0.1".

The statistical method and its references are in :mod:`optimlab.stats`.
"""

from __future__ import annotations

import math
import os
import sys
from collections.abc import Iterator, Mapping, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import torch
from tqdm import tqdm

from . import spec as spec_mod
from . import tasks as tasks_mod
from .executors import Driver, Executor, make_executor
from .optim._validate import check_choice, check_int, check_range
from .runner import DTYPES, check_environment, optimizer_spec, prepare
from .schedules import LinearWarmup, UntunedWarmup
from .stats import Summary, summarize, verdict
from .store import Store
from .tasks import BUDGETS, Budget, Instance, Task

__all__ = [
    "EDGE_FRACTION",
    "LR_RANGE",
    "Arm",
    "Comparison",
    "RunFailedError",
    "Trial",
    "Tuned",
    "WarmupTask",
    "arm",
    "compare",
    "default_lr_range",
    "edge_notes",
    "evaluate",
    "evaluation_seeds",
    "final_value",
    "lr_sensitivity",
    "metric_key",
    "range_edge",
    "read_tuning_meta",
    "run_seeds",
    "space_text",
    "tune",
    "tuning_meta",
]

#: A spec of :mod:`optimlab.spec` (text or parsed), a ``torch.optim.Optimizer`` subclass, or
#: ``(name or class, {hyperparameters})``.
OptimizerSpec = str | spec_mod.OptimizerSpec | type | tuple[str | type, Mapping[str, Any]]
#: ``{name: ("log", low, high)}`` (log-uniform), ``("lin", low, high)`` (uniform), ``("int", low, high)`` or a list of choices.
SearchSpace = Mapping[str, Any]

#: The learning-rate range (log-uniform) tune searches for an optimizer whose class declares none
#: (``tune_lr_range``) when no ``lr_range`` is given.
LR_RANGE: tuple[float, float] = (1e-5, 1.0)
#: A tuned value is at the edge of its range when it lies within this fraction of the range from a
#: bound, measured in the range's own scale (log for the lr and ``log`` dimensions): for the default
#: lr range, above 10^-0.25 = 0.56 or below 1.8e-5.
EDGE_FRACTION = 0.05


# ---------------------------------------------------------------------------------------------
# Optimizers as the user names them
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Arm:
    """One optimizer of a comparison.

    ``label``: :func:`optimlab.spec.label` of what runs; ``optimizer`` and ``hyperparameters``:
    the runner's name and the values the spec sets (a wrapper's inner optimizer under
    ``"optimizer"``); ``spec``: the parsed spec (which hyperparameters it fixes).
    """

    label: str
    optimizer: str
    hyperparameters: Mapping[str, Any]
    spec: spec_mod.OptimizerSpec


def arm(spec: OptimizerSpec) -> Arm:
    """The :class:`Arm` of a spec: ``"Adam"``, ``"NAG"`` (a preset), ``"Lookahead(Adam(lr=0.01), k=5)"``
    (any text of :mod:`optimlab.spec`), an :class:`optimlab.spec.OptimizerSpec`, a
    ``torch.optim.Optimizer`` subclass from any package or your own (``torch_optimizer.Lamb``,
    ``MySGD``: defined at a module's top level, so that the runner can import it by name), or
    ``("AdamW", {"weight_decay": 0.01})`` / ``(MySGD, {"momentum": 0.9})``.

    Raises:
        ValueError: an unknown optimizer or hyperparameter (before anything runs).
    """
    if isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], type):
        spec = (_class_name(spec[0]), spec[1])
    if isinstance(spec, type):
        name, given = _class_name(spec), {}
    elif isinstance(spec, (str, spec_mod.OptimizerSpec)):
        name, given = spec, {}
    elif isinstance(spec, tuple) and len(spec) == 2 and isinstance(spec[0], str) and isinstance(spec[1], Mapping):
        name, given = spec[0], dict(spec[1])
    else:
        raise ValueError(
            f"protocol: invalid optimizer={spec!r}: expected a spec such as 'Adam(lr=0.01)' or (name, {{hyperparameters}})"
        )
    try:
        parsed = spec_mod.make(name, given)
    except ValueError as e:
        raise ValueError(f"protocol: {e}") from None
    config = parsed.to_config()
    optimizer_spec(config["name"], config["hyperparameters"])  # the runner's checks, before any training
    return Arm(spec_mod.label(parsed), config["name"], config["hyperparameters"], parsed)


def _class_name(cls: type) -> str:
    """``module:Class`` of an optimizer class, the name the runner imports it by (a run's key holds names)."""
    if not issubclass(cls, torch.optim.Optimizer):
        raise ValueError(  # noqa: TRY004 (the commands report ValueError as one clean line)
            f"protocol: invalid optimizer={cls!r}: expected a torch.optim.Optimizer subclass"
        )
    if "<" in cls.__qualname__:
        raise ValueError(
            f"protocol: invalid optimizer={cls.__qualname__}: a class defined inside a function cannot be imported "
            f"by name; define it at the top level of {cls.__module__}"
        )
    return f"{cls.__module__}:{cls.__qualname__}"


def _arms(optimizers: Sequence[OptimizerSpec], *, distinct_labels: bool = True) -> list[Arm]:
    """The arms of ``optimizers``: no spec twice, and (``distinct_labels``, for runs as given) no two
    specs that run the same thing."""
    if isinstance(optimizers, (str, tuple, type, spec_mod.OptimizerSpec)) or not optimizers:
        raise ValueError(f"protocol: invalid optimizers={optimizers!r}: expected a non-empty list of optimizers")
    arms = [arm(spec) for spec in optimizers]
    seen: dict[tuple[str, str], Arm] = {}
    for a in arms:
        text = spec_mod.format(a.spec)
        keys = (("spec", text), ("label", a.label)) if distinct_labels else (("spec", text),)
        for key in keys:
            if key in seen:
                other = spec_mod.format(seen[key].spec)
                what = "is given twice" if other == text else f"and {other!r} both run as {a.label}"
                raise ValueError(f"protocol: invalid optimizers: {text!r} {what}")
        seen.update(dict.fromkeys(keys, a))
    return arms


# ---------------------------------------------------------------------------------------------
# Warmup
# ---------------------------------------------------------------------------------------------


class WarmupTask(Task):
    """``task`` with a learning-rate warmup on every optimizer, named ``"<task>+warmup=<warmup>"``.

    ``warmup``: an int ``T >= 1`` (:class:`~optimlab.schedules.LinearWarmup` over ``T`` steps,
    from a start factor of 0) or ``"untuned"`` (:class:`~optimlab.schedules.UntunedWarmup`,
    linear, :math:`\\beta_2` from each param group's ``betas``).  The schedulers are built at the
    first training step and stepped after each one.
    """

    def __init__(self, task: Task, warmup: int | str) -> None:
        if warmup != "untuned":
            check_int("WarmupTask", "warmup", warmup, 1)
        self.task = task
        self.warmup = warmup
        self.name = f"{task.name}+warmup={warmup}"
        self.roles = task.roles  # type: ignore[misc]
        self.metric = task.metric
        self.higher_is_better = task.higher_is_better
        self.loss_ceiling_factor = task.loss_ceiling_factor
        self.metric_ceiling = task.metric_ceiling
        self.budgets = task.budgets
        self.description = f"{task.description}; warmup {warmup}"

    def setup(self, budget: Budget, *, data_dir: Any, device: torch.device) -> Instance:
        return _WarmupInstance(self.task.setup(budget, data_dir=data_dir, device=device), self.warmup)

    def check_data(self, data_dir: Any) -> None:
        self.task.check_data(data_dir)


class _WarmupInstance(Instance):
    def __init__(self, inner: Instance, warmup: int | str) -> None:
        self.inner = inner
        self.warmup = warmup
        self.eval_split = inner.eval_split
        self.final_split = inner.final_split
        self.steps_per_epoch = inner.steps_per_epoch
        self.schedulers: list[torch.optim.lr_scheduler.LRScheduler] | None = None

    def parameters(self) -> dict[str, list[torch.nn.Parameter]]:
        return self.inner.parameters()

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        return self.inner.batches(generator)

    def step(self, batch: Any, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, torch.Tensor]:
        if self.schedulers is None:  # built here: the optimizers exist only once the runner made them
            self.schedulers = [
                UntunedWarmup(o) if self.warmup == "untuned" else LinearWarmup(o, self.warmup) for o in optimizers.values()
            ]
        losses = self.inner.step(batch, optimizers)
        for scheduler in self.schedulers:
            scheduler.step()
        return losses

    def evaluate(self, split: str) -> dict[str, float]:
        return self.inner.evaluate(split)

    def constants(self) -> dict[str, float]:
        return self.inner.constants()


def _task(task: str | Task, warmup: int | str | None) -> Task:
    task = tasks_mod.get(task) if isinstance(task, str) else task
    if not isinstance(task, Task):
        raise ValueError(f"protocol: invalid task={task!r}: expected one of {', '.join(tasks_mod.names())} or a Task")
    return task if warmup is None else WarmupTask(task, warmup)


# ---------------------------------------------------------------------------------------------
# Reading a run
# ---------------------------------------------------------------------------------------------


def metric_key(metric: str, mapping: Mapping[str, Any]) -> str:
    """The key of the headline ``metric`` in a curve point or the final metrics: ``<split>_<metric>``
    of the split that is not ``train`` (``val_accuracy``, ``test_accuracy``; ``full_loss`` for airfoil).

    Raises:
        ValueError: ``mapping`` has no such key, or more than one.
    """
    found = [k for k in mapping if k.endswith(f"_{metric}") and "_" not in k[: -len(metric) - 1] and not k.startswith("train_")]
    if len(found) != 1:
        raise ValueError(f"protocol: invalid metric={metric!r}: the run recorded {sorted(mapping)}, not one <split>_{metric}")
    return found[0]


def _outcome(result: Mapping[str, Any], what: str) -> str:
    """``"finished"`` or ``"diverged"``; a failed run or one live in another process raises."""
    status = result["status"]
    if status == "skipped":
        status = result["stored_status"]
        if status == "finished" and result["final"].get("diverged"):
            status = "diverged"
    if status not in ("finished", "diverged"):
        error = (result.get("error") or "").strip().splitlines()
        where = "" if result["key"] is None else f" (run key {result['key'][:12]}...)"
        raise RunFailedError(
            f"{what} {status}{where}: {error[-1] if error else 'no error stored'}; its traceback "
            "is in the store (optimlab export), and the same command runs it again unless --no-retry-failed"
        )
    return status


class RunFailedError(RuntimeError):
    """An evaluation run failed (its exception is stored with the run); the command line prints it in one line."""


def final_value(task: Task, final: Mapping[str, Any]) -> float:
    """The headline metric of a run's final metrics; NaN where the run diverged: flagged so, non-finite,
    or beyond the task's ``metric_ceiling`` (a store written before the ceiling existed reads the same)."""
    value = float(final[metric_key(task.metric, final)])
    absurd = not math.isfinite(value) or (not task.higher_is_better and value > task.metric_ceiling)
    return math.nan if final.get("diverged") or absurd else value


def _validation(task: Task, result: Mapping[str, Any], what: str) -> float:
    """The validation metric at the end of training; the worst value for a diverged run."""
    worst = -math.inf if task.higher_is_better else math.inf
    if _outcome(result, what) == "diverged":
        return worst
    last = result["curve"][-1]
    value = float(last[metric_key(task.metric, last)])
    return value if math.isfinite(value) else worst


# ---------------------------------------------------------------------------------------------
# Tuning
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Trial:
    """One tuning trial: the suggested hyperparameters, its objective, status and run key.

    ``status``: ``"finished"``, ``"diverged"`` (objective: the worst value) or ``"failed"`` (the run
    raised or was stored as failed; objective NaN, ``error`` its last line; Optuna is told it failed).
    """

    number: int
    suggested: Mapping[str, Any]
    value: float
    status: str
    key: str | None
    error: str | None = None


@dataclass(frozen=True)
class Tuned:
    """The outcome of tuning one optimizer.

    ``free``: the hyperparameters tuned (those of the search space the spec leaves free; empty when
    the spec fixes them all: then no trial runs and ``value`` is NaN); ``fixed``: those of the
    search space that the spec fixes, never tuned; ``space``: the range each of ``free`` was
    searched over (``{"lr": ("log", 1e-05, 1.0)}``).  ``spec``: the spec with the chosen values set;
    ``hyperparameters``: the same for the runner; ``label``: what runs, tuned values marked ``*``;
    ``chosen``: the values of ``free`` that won (empty when nothing was tuned).
    """

    arm: Arm
    hyperparameters: Mapping[str, Any]
    value: float
    trials: tuple[Trial, ...]
    spec: spec_mod.OptimizerSpec
    free: tuple[str, ...]
    fixed: tuple[str, ...]
    space: Mapping[str, Any] = field(default_factory=dict)
    chosen: Mapping[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return spec_mod.label(self.spec)

    @property
    def edges(self) -> list[str]:
        """One line per chosen value at the edge of its range (:func:`range_edge`), naming the optimizer,
        the value, the range and the option to widen: what ``tune`` prints.  Empty when every trial
        diverged (the first is "best" then, wherever it lies)."""
        if not math.isfinite(self.value):
            return []
        name = spec_mod.format(self.arm.spec)
        return [
            f"{name}: best {note}; widen {'--lr-range' if k == 'lr' else f'--space {k}'}"
            for k, note in edge_notes(self.chosen, self.space).items()
        ]

    def describe(self) -> str:
        """One line: what was tuned over which range, what the spec fixed, what was chosen."""
        fixed = f"; fixed by the spec: {', '.join(self.fixed)}" if self.fixed else ""
        if not self.free:
            return f"{self.label}: nothing to tune{fixed}"
        failed = sum(t.status == "failed" for t in self.trials)
        diverged = sum(t.status == "diverged" for t in self.trials)
        counts = "".join(f", {n} {what}" for n, what in ((failed, "failed"), (diverged, "diverged")) if n)
        return (
            f"{self.label}: tuned {space_text(self.space)} over {len(self.trials)} trials{counts}{fixed}; "
            f"final validation {self.value:.4g}"
        )


def space_text(space: Mapping[str, Any]) -> str:
    """A search space as the lines and the report write it: ``lr in [1e-05, 1], eps in {1e-08, 1e-06}``."""
    return ", ".join(f"{name} in {_range_text(d)}" for name, d in space.items())


def _range_text(dimension: Any) -> str:
    """``[1e-05, 1]`` for a range, ``{0.9, 0.99}`` for choices."""
    if _is_range(dimension):
        return f"[{_bound(dimension[1])}, {_bound(dimension[2])}]"
    return f"{{{', '.join(_bound(c) for c in dimension)}}}"


def _is_range(dimension: Any) -> bool:
    """Whether a search-space dimension is a range (a tuple; a list is choices)."""
    return isinstance(dimension, tuple) and len(dimension) == 3 and dimension[0] in ("log", "lin", "int")


def tuning_meta(space: Mapping[str, Any], values: Mapping[str, Any]) -> dict[str, Any]:
    """What a trial's run stores beside it (its metadata, not its key): the ``space`` searched and the
    ``values`` suggested, as JSON (a range as ``[kind, low, high]``, choices as ``{"choices": [...]}``)."""
    return {
        "space": {k: list(d) if _is_range(d) else {"choices": list(d)} for k, d in space.items()},
        "values": dict(values),
    }


def read_tuning_meta(meta: Mapping[str, Any] | None) -> tuple[dict[str, Any], dict[str, Any]] | None:
    """``(space, values)`` of a run's metadata as :func:`tuning_meta` wrote it; ``None`` for a run that was
    no tuning trial or was stored before trials recorded their space."""
    tuning = (meta or {}).get("tuning")
    if not isinstance(tuning, Mapping):
        return None
    space = {k: list(d["choices"]) if isinstance(d, Mapping) else tuple(d) for k, d in tuning["space"].items()}
    return space, dict(tuning["values"])


def _bound(value: Any) -> str:
    return f"{value:g}" if isinstance(value, float) else str(value)


def range_edge(value: Any, dimension: Any) -> str | None:
    """``"bottom"`` or ``"top"`` when ``value`` lies within :data:`EDGE_FRACTION` of the range ``dimension``
    (``("log"|"lin"|"int", low, high)``, as :func:`tune` takes it) from that bound, in the range's own
    scale; ``None`` inside, for a list of choices (no order, no edge) or a value that is no number."""
    if not _is_range(dimension) or isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    kind, low, high = dimension
    scale = math.log if kind == "log" else float
    position = (scale(value) - scale(low)) / (scale(high) - scale(low))
    if position <= EDGE_FRACTION:
        return "bottom"
    return "top" if position >= 1 - EDGE_FRACTION else None


def edge_notes(values: Mapping[str, Any], space: Mapping[str, Any]) -> dict[str, str]:
    """``{name: "lr=0.97 is at the top of its range [1e-05, 1]: the optimum may lie above"}`` for each value
    of ``values`` at the edge of its dimension in ``space`` (:func:`range_edge`)."""
    notes = {}
    for name, value in values.items():
        side = range_edge(value, space.get(name))
        if side is not None:
            shown = spec_mod._short(float(value)) if isinstance(value, float) else str(value)
            notes[name] = (
                f"{name}={shown} is at the {side} of its range {_range_text(space[name])}: "
                f"the optimum may lie {'above' if side == 'top' else 'below'}"
            )
    return notes


@contextmanager
def _quiet_optuna() -> Iterator[Any]:
    import optuna

    level = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one INFO line per trial otherwise
    try:
        yield optuna
    finally:
        optuna.logging.set_verbosity(level)


def _check_lr_range(lr_range: Any, where: str = "lr_range") -> tuple[str, float, float]:
    """The lr's search-space dimension of the range ``lr_range`` (named ``where`` in the error)."""
    if not (isinstance(lr_range, (tuple, list)) and len(lr_range) == 2):
        raise ValueError(f"tune: invalid {where}={lr_range!r}: expected (low, high) with 0 < low < high")
    check_range("tune", f"{where}[0]", lr_range[0], 0.0, low_open=True)
    check_range("tune", f"{where}[1]", lr_range[1], lr_range[0], low_open=True)
    return ("log", float(lr_range[0]), float(lr_range[1]))


def default_lr_range(spec: OptimizerSpec) -> tuple[float, float]:
    """The lr range :func:`tune` searches for ``spec`` when no ``lr_range`` is given: the ``tune_lr_range``
    of the class whose lr is tuned (a wrapper's inner optimizer's, Lookahead's), else :data:`LR_RANGE`.

    Raises:
        ValueError: the class declares a range that is not ``(low, high)`` with ``0 < low < high``.
    """
    return _lr_range_of(arm(spec).spec)


def _lr_range_of(parsed: spec_mod.OptimizerSpec) -> tuple[float, float]:
    try:
        holder = spec_mod._locate(parsed, "lr")[0].cls
    except ValueError:  # no lr to tune: _plan says so, naming the optimizer
        return LR_RANGE
    declared = getattr(holder, "tune_lr_range", None)
    if declared is None:
        return LR_RANGE
    _, low, high = _check_lr_range(declared, f"{holder.__name__}.tune_lr_range")
    return (low, high)


def _check_space(lr_range: tuple[float, float] | None, extra_space: SearchSpace | None) -> dict[str, Any]:
    """The search space; its ``"lr"`` is ``None`` where each optimizer takes :func:`default_lr_range`."""
    space: dict[str, Any] = {"lr": None if lr_range is None else _check_lr_range(lr_range)}
    for name, spec in (extra_space or {}).items():
        if name in ("lr", "optimizer.lr"):
            raise ValueError(f"tune: invalid extra_space name {name!r}: the learning rate's range is lr_range")
        if name.rpartition(".")[2] in spec_mod.COMPONENTS:
            parts = spec_mod.COMPONENTS[name.rpartition(".")[2]]
            raise ValueError(
                f"tune: invalid extra_space name {name!r}: a pair is not one value; tune its components "
                f"{parts[0]} and {parts[1]} (e.g. {parts[0]}=lin:0.5:0.95)"
            )
        if isinstance(spec, list) and spec:
            odd = [c for c in spec if not (c is None or isinstance(c, (bool, int, float, str)))]
            if odd:  # what Optuna can store as a categorical choice
                raise ValueError(f"tune: invalid extra_space[{name!r}] choice {odd[0]!r}: expected None, bool, int, float or str")
            space[name] = list(spec)
            continue
        if not (isinstance(spec, tuple) and len(spec) == 3 and spec[0] in ("log", "lin", "int")):
            raise ValueError(
                f"tune: invalid extra_space[{name!r}]={spec!r}: expected ('log'|'lin'|'int', low, high) or a list of choices"
            )
        kind, low, high = spec
        check_range("tune", f"extra_space[{name!r}] low", low, 0.0 if kind == "log" else -math.inf, low_open=kind == "log")
        check_range("tune", f"extra_space[{name!r}] high", high, low, low_open=True)
        space[name] = spec
    return space


def _plan(a: Arm, space: Mapping[str, Any]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """``(free, fixed)``: the names of ``space`` that ``a`` tunes, and those its spec fixes.

    Raises:
        ValueError: a name of ``extra_space`` that ``a``'s optimizer does not have, or free values that
            its class refuses at the middle of their ranges (Adafactor's lr with ``relative_step=True``).
    """
    free, fixed = [], []
    for name in space:
        try:
            is_fixed = a.spec.is_fixed(name)
        except ValueError as e:
            raise ValueError(f"tune: {spec_mod.format(a.spec)} cannot tune {name!r}: {str(e).removeprefix('spec: ')}") from None
        (fixed if is_fixed else free).append(name)
    middle = {name: _middle(space[name]) for name in free}
    try:  # the class's own checks, so that an arm every trial of which would fail stops before anything runs
        spec_mod.build(a.spec.with_values(middle), [torch.zeros(1, requires_grad=True)])
    except ValueError as e:
        raise ValueError(
            f"tune: {spec_mod.format(a.spec)} cannot tune {', '.join(free)}: {e} (fix the value in the spec instead)"
        ) from None
    return tuple(free), tuple(fixed)


def _middle(dimension: Any) -> Any:
    """A value inside a search-space dimension: the geometric or arithmetic middle, or the first choice."""
    if isinstance(dimension, list):
        return dimension[0]
    kind, low, high = dimension
    if kind == "log":
        return math.sqrt(low * high)
    return (low + high) // 2 if kind == "int" else (low + high) / 2


def _suggest(trial: Any, space: Mapping[str, Any]) -> dict[str, Any]:
    out = {}
    for name, spec in space.items():
        if isinstance(spec, list):
            out[name] = trial.suggest_categorical(name, spec)
        elif spec[0] == "int":
            out[name] = trial.suggest_int(name, spec[1], spec[2])
        else:
            out[name] = trial.suggest_float(name, spec[1], spec[2], log=spec[0] == "log")
    return out


def tune(
    task: str | Task,
    optimizers: Sequence[OptimizerSpec],
    budget: str = "smoke",
    trials: int = 20,
    seed: int = 0,
    store: Store | None = None,
    lr_range: tuple[float, float] | None = None,
    extra_space: SearchSpace | None = None,
    *,
    warmup: int | str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
    retry_failed: bool = True,
    batch: int = 1,
    executor: Executor | str | None = None,
    workers: int | None = None,
) -> dict[str, Tuned]:
    """Tune every optimizer with the same number of trials over the same search space, restricted to
    what its spec leaves free.

    A hyperparameter the spec fixes (``Adam(lr=0.01)``, a preset's options) is never tuned: the arm
    tunes the rest of the space, and an arm with nothing free runs no trial.  A trial that fails
    (an exception, or a run stored as failed) is recorded as failed and tuning goes on; only an
    arm whose every trial failed raises.  A trial live in another process on the same store is
    waited for (by :func:`optimlab.runner.run`) and its result used.

    Parameters
    ----------
    task : str or Task
        A task name or object.
    optimizers : list
        Specs (:mod:`optimlab.spec`), or ``(name, {fixed hyperparameters})`` (module docstring).
    budget : str
        ``"smoke"``, ``"quick"`` or ``"full"``: the budget of every trial.
    trials : int
        ``>= 1`` trials per optimizer, the same for all.
    seed : int
        ``>= 0``: the TPE sampler's seed and the training seed of every trial.
    store : Store, optional
        Where trials are kept; with it, a re-run resumes (finished trials are read back).
    lr_range : (float, float), optional
        The learning rate is sampled log-uniformly from ``[low, high]`` for every optimizer (a
        wrapper without a learning rate, Lookahead, tunes its inner optimizer's).  ``None``
        (default): each optimizer's :func:`default_lr_range`, :data:`LR_RANGE` unless its class
        declares ``tune_lr_range``.
    extra_space : mapping, optional
        Other hyperparameters to tune, named as in :mod:`optimlab.spec` (``eps``, ``beta1``,
        ``optimizer.beta2``): ``("log"|"lin"|"int", low, high)`` or a list of choices.  Every
        optimizer must have them (it tunes those its spec leaves free).
    warmup : None, int or "untuned"
        See the module docstring.
    data_dir, device, dtype
        Passed to :func:`optimlab.runner.run`.
    progress : bool
        A progress bar over the trials and one line per optimizer on stderr.
    retry_failed : bool
        Run again a trial the store holds as failed (default); false keeps the stored failure.
    batch : int
        Trials each optimizer's sampler proposes at once (TPE with ``constant_liar`` above 1); the
        next batch is proposed when the whole batch is told back, in trial order, so the trials
        depend on ``batch`` and never on how many run at a time.  Every optimizer's trials run
        side by side.
    executor, workers
        Where the trials run (:func:`optimlab.executors.make_executor`): by default one after
        another in this process; ``workers=N`` in N local processes; ``executor="ray"`` on Ray.

    Returns
    -------
    dict
        ``{spec: Tuned}`` in the order given, keyed by each spec's :func:`optimlab.spec.format`
        (``"Adam"``, ``"NAG(lr=0.01)"``).  ``Tuned.spec`` is the spec with the best
        trial's values (Optuna's best; the first of equal values); ``Tuned.space`` the ranges
        searched, ``Tuned.edges`` a line for each chosen value at the edge of its range.  Each
        trial's run is stored with its search space and suggested values (the run's metadata,
        not its key), so that the report can say the same.

    Raises:
        ValueError: a bad argument, before anything runs.
        RunFailedError: every trial of an optimizer failed (the last error is named).
    """
    check_choice("tune", "budget", budget, BUDGETS)
    check_int("tune", "trials", trials, 1)
    check_int("tune", "seed", seed, 0)
    the_task = _task(task, warmup)
    arms = _arms(optimizers, distinct_labels=False)  # "Adam" (tuned) and "Adam(lr=0.001)" differ once tuned
    shared = _check_space(lr_range, extra_space)
    spaces = [{**shared, "lr": shared["lr"] or ("log", *_lr_range_of(a.spec))} for a in arms]
    plans = [_plan(a, space) for a, space in zip(arms, spaces)]
    check_environment(the_task, data_dir, device)  # a wrong data directory fails once, not as every trial
    check_choice("protocol", "dtype", dtype, DTYPES)
    check_int("tune", "batch", batch, 1)
    out: dict[str, Tuned] = {}
    with _quiet_optuna() as optuna, _executor(executor, workers) as ex:
        studies: dict[int, Any] = {}
        for i, (a, (free, fixed)) in enumerate(zip(arms, plans)):
            if free:
                studies[i] = optuna.create_study(
                    direction="maximize" if the_task.higher_is_better else "minimize",
                    sampler=optuna.samplers.TPESampler(seed=seed, **({"constant_liar": True} if batch > 1 else {})),
                )
        asked: dict[int, dict[int, Any]] = {i: {} for i in studies}  # the batch in flight: number -> optuna trial
        told: dict[int, dict[int, Trial]] = {i: {} for i in studies}
        done: dict[int, list[Trial]] = {i: [] for i in studies}
        total = trials * len(studies)
        desc = "tune " + ", ".join(spec_mod.format(arms[i].spec) for i in studies)
        with Driver(ex, store, retry_failed=retry_failed, progress=progress, total=total, desc=desc) as driver:

            def ask(i: int) -> None:
                """Propose arm ``i``'s next batch, tell it back once complete, until its trials are done."""
                while not asked[i] and len(done[i]) < trials:
                    a, free = arms[i], plans[i][0]
                    searched = {k: spaces[i][k] for k in free}
                    for number in range(len(done[i]), min(len(done[i]) + batch, trials)):
                        trial = studies[i].ask()
                        suggested = _suggest(trial, searched)
                        asked[i][number] = (trial, suggested)
                        try:
                            config = a.spec.with_values(suggested).to_config()
                            spec = prepare(the_task, config["name"], config["hyperparameters"], seed, budget,
                                           data_dir=data_dir, device=device, dtype=dtype, keyed=store is not None,
                                           threads=getattr(ex, "threads", None))  # fmt: skip
                        except Exception as e:  # noqa: BLE001 - a failed trial is a result of the tuning (issue 10)
                            told[i][number] = _failed(number, suggested, None, e)
                            continue
                        # the range searched, beside the run and outside its key: the report reads it back
                        meta = {**spec.meta, "tuning": tuning_meta(searched, suggested)}
                        driver.submit(replace(spec, meta=meta), (i, number))
                    if len(told[i]) == len(asked[i]):
                        tell(i)

            def tell(i: int) -> None:
                for number in sorted(asked[i]):
                    trial, _ = asked[i][number]
                    t = told[i][number]
                    if t.status == "failed":
                        studies[i].tell(trial, state=optuna.trial.TrialState.FAIL)
                    else:
                        studies[i].tell(trial, t.value)
                    done[i].append(t)
                asked[i], told[i] = {}, {}

            for i in studies:
                ask(i)
            for (i, number), result in driver:
                told[i][number] = _trial(the_task, arms[i], number, asked[i][number][1], result)
                if len(told[i]) == len(asked[i]):
                    tell(i)
                    ask(i)
    for i, (a, (free, fixed)) in enumerate(zip(arms, plans)):
        name = spec_mod.format(a.spec)
        if not free:
            out[name] = Tuned(a, a.hyperparameters, math.nan, (), a.spec, free, fixed)
        else:
            if all(t.status == "failed" for t in done[i]):
                raise RunFailedError(f"tune: every trial of {name} failed; the last: {done[i][-1].error}")
            best = studies[i].best_trial
            chosen = replace(a.spec.with_values(best.params), tuned=frozenset(free))
            hp = chosen.to_config()["hyperparameters"]
            searched = {k: spaces[i][k] for k in free}
            out[name] = Tuned(a, hp, float(best.value), tuple(done[i]), chosen, free, fixed, searched, best.params)
        if progress:
            for line in (out[name].describe(), *out[name].edges):
                tqdm.write(line, file=sys.stderr)
    return out


@contextmanager
def _executor(executor: Executor | str | None, workers: int | None) -> Iterator[Executor]:
    """The executor ``executor``/``workers`` name; closed after the call unless the caller passed one."""
    ex = make_executor(executor, workers)
    if ex is executor:
        yield ex
        return
    with ex:
        yield ex


def _failed(number: int, suggested: dict[str, Any], key: str | None, e: Exception) -> Trial:
    return Trial(number, suggested, math.nan, "failed", key, f"{type(e).__name__}: {e}".strip().splitlines()[-1])


def _trial(task: Task, a: Arm, number: int, suggested: dict[str, Any], result: dict[str, Any]) -> Trial:
    """The trial a run's result makes; a failed run is a failed trial, not an exception."""
    what = f"trial {number} of {spec_mod.format(a.spec)}"
    try:
        value = _validation(task, result, what)
        status = _outcome(result, what)
    except Exception as e:  # noqa: BLE001 - a failed trial is a result of the tuning (issue 10)
        return _failed(number, suggested, result["key"], e)
    return Trial(number, suggested, value, status, result["key"])


# ---------------------------------------------------------------------------------------------
# The protocol
# ---------------------------------------------------------------------------------------------


def evaluation_seeds(seed: int, seeds: int) -> list[int]:
    """The training seeds of the evaluation runs: ``seed + 1, ..., seed + seeds`` (never the tuning seed)."""
    check_int("protocol", "seeds", seeds, 1)
    return list(range(seed + 1, seed + 1 + seeds))


@dataclass(frozen=True)
class Comparison:
    """What :func:`compare` found: the tuning, every evaluation run's final metrics, the statistics."""

    task: str
    budget: str
    metric: str
    higher_is_better: bool
    tuned: Mapping[str, Tuned]
    finals: Mapping[str, tuple[Mapping[str, Any], ...]]
    summaries: tuple[Summary, ...]
    store: Path | None = None

    def verdict(self) -> str:
        """See :func:`optimlab.stats.verdict`."""
        return verdict(self.summaries)

    def table(self) -> list[dict[str, Any]]:
        """The summary table, one row per optimizer (a list of dicts, ``pandas.DataFrame(result.table())``):
        ``optimizer`` (the label of what ran), ``mean``, ``ci_low``, ``ci_high`` (95%, finite seeds),
        ``seeds``, ``diverged``, ``status`` (its standing) and ``p_value`` (Welch, against the best)."""
        return [
            {"optimizer": s.label, "mean": s.mean, "ci_low": s.low, "ci_high": s.high, "seeds": s.seeds,
             "diverged": s.diverged, "status": s.status, "p_value": s.p_value}
            for s in self.summaries
        ]  # fmt: skip

    def report(self, out_dir: str | os.PathLike[str]) -> list[Path]:
        """Write the report of the store these runs are in (curves, lr sensitivity, ``summary.md``:
        :func:`optimlab.report.report`) into ``out_dir``; returns the paths written.

        Raises:
            ValueError: the comparison ran without a store (nothing to report from).
        """
        from .report import report
        from .store import Store

        if self.store is None:
            raise ValueError("Comparison.report: these runs were not stored; run compare(..., store='lab.sqlite') to report")
        with Store(self.store, readonly=True) as store:
            return report(store, Path(out_dir))

    def render(self) -> str:
        """The comparison as printed: a header, one line per arm (label, mean [95% CI], diverged k of
        n, its standing) and the verdict."""
        direction = "higher" if self.higher_is_better else "lower"
        head = f"{self.task}, {self.budget}: final {self.metric} over seeds, mean [95% CI] of the finite seeds"
        lines = [f"{head} ({direction} is better)"]
        width = max(len(s.label) for s in self.summaries)
        for s in self.summaries:
            p = "" if math.isnan(s.p_value) else f" (Welch p={s.p_value:.2g})"
            lines.append(f"  {s.label:<{width}}  {s.interval():<28} {s.divergence():<16} {s.status}{p}")
        return "\n".join([*lines, self.verdict()])


def run_seeds(
    task: Task,
    a: Arm,
    hyperparameters: Mapping[str, Any],
    seeds: Sequence[int],
    budget: str,
    store: Store | None,
    *,
    data_dir: Any = None,
    device: str = "cpu",
    dtype: str = "float32",
    bar: tqdm | None = None,
    retry_failed: bool = True,
    executor: Executor | str | None = None,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """Run ``a`` with ``hyperparameters`` at each seed; returns each run's result (diverged included).

    Raises:
        RunFailedError: a run failed (now, or before when ``retry_failed`` is false).
    """
    results = _run_many(
        task, [(a, hyperparameters, s) for s in seeds], budget, store, data_dir=data_dir, device=device, dtype=dtype,
        retry_failed=retry_failed, executor=executor, workers=workers, progress=False,
    )  # fmt: skip
    if bar is not None:
        bar.update(len(results))
    return results


def _run_many(
    task: Task, runs: Sequence[tuple[Arm, Mapping[str, Any], int]], budget: str, store: Store | None, *, data_dir: Any,
    device: str, dtype: str, retry_failed: bool, executor: Executor | str | None, workers: int | None, progress: bool,
    desc: str = "seeds",
) -> list[dict[str, Any]]:  # fmt: skip
    """Every ``(arm, hyperparameters, seed)`` run, side by side on the executor; the results in order.

    Raises:
        RunFailedError: a run failed (the first in order), once every run is done and stored.
    """
    results: dict[int, dict[str, Any]] = {}
    with _executor(executor, workers) as ex:
        specs = [
            prepare(task, a.optimizer, hp, s, budget, data_dir=data_dir, device=device, dtype=dtype, keyed=store is not None,
                    threads=getattr(ex, "threads", None))
            for a, hp, s in runs
        ]  # fmt: skip
        with Driver(ex, store, retry_failed=retry_failed, progress=progress, total=len(specs), desc=desc) as driver:
            for n, spec in enumerate(specs):
                driver.submit(spec, n)
            results.update(driver)
    for n, (a, _, s) in enumerate(runs):
        _outcome(results[n], f"{a.label} seed {s}")
    return [results[n] for n in range(len(runs))]


def evaluate(
    task: str | Task,
    optimizers: Sequence[OptimizerSpec],
    budget: str = "smoke",
    seeds: int = 5,
    seed: int = 0,
    store: Store | None = None,
    *,
    hyperparameters: Mapping[str, Mapping[str, Any]] | None = None,
    warmup: int | str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
    retry_failed: bool = True,
    executor: Executor | str | None = None,
    workers: int | None = None,
) -> Comparison:
    """Run each optimizer as given (no tuning) at the seeds :func:`evaluation_seeds` gives, and summarize.

    ``hyperparameters`` maps a label to the hyperparameters to run it with instead of its own
    (what :func:`compare` passes after tuning).  The other parameters are :func:`compare`'s.
    """
    seed_list = evaluation_seeds(seed, seeds)
    check_choice("evaluate", "budget", budget, BUDGETS)
    the_task = _task(task, warmup)
    arms = _arms(optimizers)
    check_environment(the_task, data_dir, device)  # before the progress bar: one error line
    check_choice("protocol", "dtype", dtype, DTYPES)
    chosen = {} if hyperparameters is None else hyperparameters
    runs = [(a, chosen.get(a.label, a.hyperparameters), s) for a in arms for s in seed_list]
    results = _run_many(
        the_task, runs, budget, store, data_dir=data_dir, device=device, dtype=dtype, retry_failed=retry_failed,
        executor=executor, workers=workers, progress=progress,
    )  # fmt: skip
    finals = {a.label: tuple(r["final"] for (b, _, _), r in zip(runs, results) if b is a) for a in arms}
    final_key = metric_key(the_task.metric, finals[arms[0].label][0])
    values = {label: [final_value(the_task, f) for f in fs] for label, fs in finals.items()}
    summaries = tuple(summarize(values, the_task.higher_is_better, bounds=the_task.metric_bounds))
    where = None if store is None else store.path
    return Comparison(the_task.name, budget, final_key, the_task.higher_is_better, {}, finals, summaries, where)


def compare(
    task: str | Task,
    optimizers: Sequence[OptimizerSpec],
    budget: str = "smoke",
    seeds: int = 5,
    trials: int = 20,
    seed: int = 0,
    store: Store | str | os.PathLike[str] | None = None,
    lr_range: tuple[float, float] | None = None,
    extra_space: SearchSpace | None = None,
    *,
    warmup: int | str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
    retry_failed: bool = True,
    batch: int = 1,
    executor: Executor | str | None = None,
    workers: int | None = None,
) -> Comparison:
    """The whole protocol: :func:`tune`, then each chosen configuration with ``seeds`` seeds (:func:`evaluate`).

    The parameters are :func:`tune`'s, plus ``seeds`` (``>= 1``) evaluation runs per optimizer
    at the seeds :func:`evaluation_seeds` gives, and ``retry_failed`` (run again what the store
    holds as failed; default true).  ``store`` may be a path (opened for the call).  Returns a
    :class:`Comparison`: ``.table()``, ``.verdict()``, ``.render()`` and, with a store,
    ``.report(out_dir)``; its summaries hold the final metric (test split) over seeds, see
    :mod:`optimlab.stats`.  ``batch``, ``executor`` and ``workers``: see :func:`tune` (one executor
    serves the tuning and the evaluation).
    """
    if store is not None and not isinstance(store, Store):
        with Store(store) as opened:
            return compare(
                task, optimizers, budget, seeds, trials, seed, opened, lr_range, extra_space, warmup=warmup,
                data_dir=data_dir, device=device, dtype=dtype, progress=progress, retry_failed=retry_failed,
                batch=batch, executor=executor, workers=workers,
            )  # fmt: skip
    evaluation_seeds(seed, seeds)  # a bad seeds fails before the tuning
    the_task = _task(task, warmup)
    with _executor(executor, workers) as ex:
        tuned = tune(
            the_task, optimizers, budget, trials, seed, store, lr_range, extra_space,
            data_dir=data_dir, device=device, progress=progress, retry_failed=retry_failed, dtype=dtype, batch=batch,
            executor=ex,
        )  # fmt: skip
        result = evaluate(  # the tuned specs: each summary's label shows the values that ran
            the_task, [t.spec for t in tuned.values()], budget, seeds, seed, store,
            data_dir=data_dir, device=device, progress=progress, retry_failed=retry_failed, dtype=dtype, executor=ex,
        )  # fmt: skip
    return replace(result, tuned=tuned)


def lr_sensitivity(
    task: str | Task,
    optimizer: OptimizerSpec,
    lrs: Sequence[float],
    seeds: int = 3,
    budget: str = "smoke",
    store: Store | None = None,
    seed: int = 0,
    *,
    warmup: int | str | None = None,
    data_dir: str | os.PathLike[str] | None = None,
    device: str = "cpu",
    dtype: str = "float32",
    progress: bool = True,
    retry_failed: bool = True,
    executor: Executor | str | None = None,
    workers: int | None = None,
) -> list[dict[str, Any]]:
    """The final validation metric of ``optimizer`` at each learning rate, for seeds :func:`evaluation_seeds` gives.

    Returns one row per (lr, seed): ``lr``, ``seed``, ``value`` (the validation metric at the end
    of training; NaN for a diverged run), ``diverged`` (0/1), ``key``.
    :func:`optimlab.report.lr_figure` draws them.
    """
    if not lrs or not all(isinstance(lr, (int, float)) and lr > 0 for lr in lrs):
        raise ValueError(f"lr_sensitivity: invalid lrs={lrs!r}: expected a non-empty list of learning rates > 0")
    the_task = _task(task, warmup)
    a = arm(optimizer)
    seed_list = evaluation_seeds(seed, seeds)
    check_environment(the_task, data_dir, device)
    check_choice("protocol", "dtype", dtype, DTYPES)
    runs = [(a, {**a.hyperparameters, "lr": float(lr)}, s) for lr in lrs for s in seed_list]
    results = _run_many(
        the_task, runs, budget, store, data_dir=data_dir, device=device, dtype=dtype, retry_failed=retry_failed,
        executor=executor, workers=workers, progress=progress, desc=f"lr sensitivity {a.label}",
    )  # fmt: skip
    rows = []
    for (_, hp, s), result in zip(runs, results):
        value = _validation(the_task, result, f"{a.label} lr {hp['lr']} seed {s}")
        diverged = int(_outcome(result, "a run") == "diverged")
        rows.append({"optimizer": a.label, "lr": hp["lr"], "seed": s, "value": math.nan if diverged else value,
                     "diverged": diverged, "key": result["key"]})  # fmt: skip
    return rows
