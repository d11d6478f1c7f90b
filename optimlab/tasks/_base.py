"""What every task offers the runner: budgets, the :class:`Task` and the per-run :class:`Instance`.

A :class:`Task` is a recipe (model, data, loss, metrics, budgets); ``task.setup(budget, ...)``
turns it into an :class:`Instance`, one run's models and data, which the runner drives:

.. code-block:: python

    instance = task.setup(task.budgets["smoke"], data_dir=None, device=torch.device("cpu"))
    optimizers = {role: make(params) for role, params in instance.parameters().items()}
    for epoch in range(budget.epochs):
        for batch in instance.batches(data_generator):
            losses = instance.step(batch, optimizers)     # {"loss": tensor} or {"d_loss", "g_loss"}
        curve_point = instance.evaluate(instance.eval_split)
    final = instance.evaluate(instance.final_split)

Everything random in a task draws either from torch's global generator (weights, dropout, GAN
noise; the runner seeds it) or from the ``generator`` handed to :meth:`Instance.batches` (the
order of the examples), never from its own unseeded source, so one seed fixes a whole run.
Evaluation draws from neither: a task that needs random numbers to evaluate (GAN samples) uses its
own fixed-seed generator, so the curve of a run does not depend on how often it is evaluated.
"""

from __future__ import annotations

import copy
import math
from abc import ABC, abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, fields, replace
from functools import lru_cache
from typing import Any, ClassVar

import torch
from torch import Tensor, nn

from ..data import Dataset, Split, load, resolve_data_dir
from ..optim._validate import check_int

#: The budgets every task defines, cheapest first.
BUDGETS = ("smoke", "quick", "full")


@dataclass(frozen=True)
class Budget:
    """How much of its task one run does.

    Attributes:
        epochs: passes over the training data.
        batch_size: examples per optimizer step (per critic step for a GAN).
        train_size: training examples per epoch: a fixed subset of the training split, or
            ``None`` for all of it.  For a task with unlimited data (``gan-ring``), the number
            of fresh samples drawn per epoch.
        val_size: examples of the validation split evaluated at each curve point (``None``:
            all); for a GAN, the number of generated samples judged.
        test_size: the same for the final evaluation.
        eval_every: optimizer steps between curve points, counted across epochs; ``None``: a
            twentieth of the run's steps (:data:`optimlab.runner.CURVE_POINTS`).  Step 0 and the end
            of training are always curve points.  Each point evaluates the whole curve split
            (``val_size`` examples): make it smaller to evaluate often on a fixed subset.
        checkpoint_every: store the parameters (of the first role: the model, a GAN's generator)
            as float32 every this many steps, at step 0 and at the end, with the run
            (``optimlab landscape`` draws them); ``None``: none (part of the run's key only when set).
        checkpoint_cap_mb: a run whose checkpoints would exceed this many MiB refuses to start
            (not part of the key: it changes no number).
    """

    epochs: int
    batch_size: int
    train_size: int | None = None
    val_size: int | None = None
    test_size: int | None = None
    eval_every: int | None = None
    checkpoint_every: int | None = None
    checkpoint_cap_mb: int = 256

    def __post_init__(self) -> None:
        check_int("Budget", "epochs", self.epochs, 1)
        check_int("Budget", "batch_size", self.batch_size, 1)
        check_int("Budget", "checkpoint_cap_mb", self.checkpoint_cap_mb, 1)
        for name in ("train_size", "val_size", "test_size", "eval_every", "checkpoint_every"):
            if getattr(self, name) is not None:
                check_int("Budget", name, getattr(self, name), 1)

    def settings(self) -> dict[str, Any]:
        """The settings that make a run's numbers, as its key holds them: every field but the
        checkpoint cap, and ``checkpoint_every`` only when set (so that keys from before it stay)."""
        out = {f.name: getattr(self, f.name) for f in fields(self) if f.name != "checkpoint_cap_mb"}
        if out["checkpoint_every"] is None:
            del out["checkpoint_every"]
        return out


class Instance(ABC):
    """One run's models and data, built by :meth:`Task.setup`; the runner drives it.

    Attributes:
        eval_split: the split evaluated at every curve point (``"val"``; ``"full"`` for a task
            that reports on its training data, as d2l's airfoil protocol does).
        final_split: the split evaluated once, at the end (``"test"``, or ``"full"``).
        steps_per_epoch: optimizer steps in one call of :meth:`batches`.
    """

    eval_split: str = "val"
    final_split: str = "test"
    steps_per_epoch: int

    @abstractmethod
    def parameters(self) -> dict[str, list[nn.Parameter]]:
        """The trainable parameters of each role (``{"model": [...]}``, or a GAN's two roles)."""

    @abstractmethod
    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        """One epoch of training batches, in an order drawn from ``generator`` alone."""

    @abstractmethod
    def step(self, batch: Any, optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Tensor]:
        """One training step on ``batch`` with the optimizer of each role; returns its losses
        (detached scalar tensors, e.g. ``{"loss": ...}``; a GAN step may leave one out when
        it does not update that network)."""

    @abstractmethod
    def evaluate(self, split: str) -> dict[str, float]:
        """Loss and metrics on ``split`` (in eval mode, without gradients)."""

    def constants(self) -> dict[str, float]:
        """Numbers of this instance that training does not change, reported with the final
        metrics (a least-squares floor, the accuracy of a judge network); none by default."""
        return {}

    def artifacts(self) -> list[dict[str, Any]]:
        """Files to store with the run, made once after the final evaluation (a GAN's samples), each
        ``{"name": str, "media_type": str, "data": bytes}``; the runner adds the step
        (:meth:`optimlab.store.Store.artifacts` reads them back).  None by default."""
        return []


class Task(ABC):
    """A training task: model + data + loss + metrics, with a :class:`Budget` per budget name.

    Attributes:
        name: the registry name (``"mnist-cnn"``).
        roles: the networks that get an optimizer each: ``("model",)``, or
            ``("generator", "discriminator")`` for a GAN.
        metric: the headline metric, a key of :meth:`Instance.evaluate`'s result.
        higher_is_better: the direction of ``metric``.
        budgets: one :class:`Budget` for each name of :data:`BUDGETS`.
        description: one line: model, data, loss, metric.
        loss_ceiling_factor: a training loss above this many times the first step's (taken as at
            least 1) is divergence: the run stops there, as for a non-finite loss.
        metric_ceiling: a final ``metric`` above this (a lower-is-better metric) is absurd and
            counts as divergence; by default only a non-finite value does.
        metric_bounds: the range ``metric`` can take; confidence intervals are kept inside it.
    """

    name: str
    roles: ClassVar[tuple[str, ...]] = ("model",)
    metric: str
    higher_is_better: bool
    budgets: Mapping[str, Budget]
    description: str
    loss_ceiling_factor: float = 1e6
    metric_ceiling: float = math.inf

    @property
    def metric_bounds(self) -> tuple[float, float]:
        # every accuracy of the lab (classifier, GAN judge) is a share of examples; the headline
        # losses (squared error, cross-entropy) and errors (RMSE) are not negative
        if self.metric.endswith("accuracy"):
            return (0.0, 1.0)
        return (0.0, math.inf) if self.metric in ("loss", "rmse") else (-math.inf, math.inf)

    @abstractmethod
    def setup(self, budget: Budget, *, data_dir: Any, device: torch.device) -> Instance:
        """Load the data and build the models (from torch's global generator) for one run."""

    def check_data(self, data_dir: Any) -> None:
        """Raise :class:`optimlab.data.DataError` unless the data :meth:`setup` needs is in ``data_dir``
        and verifies (the runner calls it before claiming a run); nothing to check by default."""

    def with_budget(self, **overrides: int | None) -> Task:
        """This task with ``overrides`` (``epochs``, ``batch_size``, ``train_size``, ``val_size``,
        ``test_size``, ``eval_every``, ``checkpoint_every``, ``checkpoint_cap_mb``) set in every one of
        its budgets; the name is kept (a run's key holds the budget's settings, so the runs never mix
        with the original's).

        Raises:
            ValueError: an unknown setting or a bad value.
        """
        allowed = [f.name for f in fields(Budget)]
        unknown = [k for k in overrides if k not in allowed]
        if unknown:
            raise ValueError(f"{self.name}.with_budget: invalid setting {unknown[0]!r}: expected some of {', '.join(allowed)}")
        budgets = {name: replace(b, **overrides) for name, b in self.budgets.items()}
        task = copy.copy(self)
        object.__setattr__(task, "budgets", budgets)  # frozen dataclass tasks: a copy, never the original
        return task

    def metadata(self) -> dict[str, Any]:
        """What a report needs about this task, stored with each run (:meth:`optimlab.store.Store.claim`)
        so that a store reports without importing the task: name, description, roles, the headline
        metric with its direction, every evaluated metric's direction, the metric's bounds and
        ceiling, and the splits of the curve and the final evaluation."""
        return {
            "name": self.name,
            "description": self.description,
            "roles": list(self.roles),
            "metric": self.metric,
            "higher_is_better": bool(self.higher_is_better),
            "directions": dict(getattr(self, "directions", {self.metric: "maximize" if self.higher_is_better else "minimize"})),
            "metric_bounds": list(self.metric_bounds),
            "metric_ceiling": self.metric_ceiling,
            "loss_ceiling_factor": self.loss_ceiling_factor,
        }

    def __repr__(self) -> str:
        return f"<Task {self.name!r}: {self.description}>"


class StoredTask(Task):
    """A task as a store describes it (:meth:`Task.metadata`): enough to report its runs, nothing to run.

    ``optimlab report`` reads tasks this way, so that a store of any task (built-in, your own from a
    file since deleted) reports without importing its code.
    """

    def __init__(self, metadata: Mapping[str, Any]) -> None:
        self.name = metadata["name"]
        self.description = metadata.get("description", "")
        self.roles = tuple(metadata.get("roles", ("model",)))  # type: ignore[misc]
        self.metric = metadata["metric"]
        self.higher_is_better = bool(metadata["higher_is_better"])
        self.directions = dict(metadata.get("directions", {}))
        self._bounds = tuple(float(b) for b in metadata["metric_bounds"])
        self.metric_ceiling = float(metadata.get("metric_ceiling", math.inf))
        self.loss_ceiling_factor = float(metadata.get("loss_ceiling_factor", 1e6))
        self.budgets = {}

    @property
    def metric_bounds(self) -> tuple[float, float]:
        return self._bounds  # type: ignore[return-value]

    def setup(self, budget: Budget, *, data_dir: Any, device: torch.device) -> Instance:
        raise ValueError(f"{self.name}: a task read from a store can be reported, not run (import its code to run it)")


def subset(split: Split, n: int | None) -> Split:
    """``n`` rows of ``split`` (``None``: all): the first ``n`` of a shuffle with the fixed seed 0.

    The subset depends on ``n`` alone, never on the run's seed: every run of a budget, whatever
    its seed or optimizer, trains and is judged on the same examples.  Rows keep their order.
    """
    if n is None or n >= len(split):
        return split
    rows = torch.randperm(len(split), generator=torch.Generator().manual_seed(0))[:n].sort().values
    return Split(split.x[rows], split.y[rows])


def shuffled(n: int, batch_size: int, generator: torch.Generator, *, drop_last: bool) -> Iterator[Tensor]:
    """Index batches of one pass over ``n`` examples in an order drawn from ``generator``.

    ``drop_last`` leaves out the last, smaller batch (for networks with batch normalisation),
    unless it is the only one.
    """
    order = torch.randperm(n, generator=generator)
    stop = n - n % batch_size if drop_last and n >= batch_size else n
    for start in range(0, stop, batch_size):
        yield order[start : start + batch_size]


def num_batches(n: int, batch_size: int, *, drop_last: bool) -> int:
    """The number of batches :func:`shuffled` yields."""
    return n // batch_size if drop_last and n >= batch_size else math.ceil(n / batch_size)


class UsesDataset:
    """A task whose data is a data set of :mod:`optimlab.data` (attributes ``dataset``,
    ``load_kwargs``, ``data``), with :meth:`with_data` to run it on other tensors."""

    name: str
    dataset: str
    load_kwargs: Mapping[str, Any]
    data: Dataset | None

    def load(self, data_dir: Any) -> Dataset:
        """The data set: ``data`` if given, else ``optimlab.data.load(dataset, data_dir, **load_kwargs)``.

        Loaded data sets are kept for the next runs of the process (the last two; see
        :func:`_load`): the files are checksummed and never change, and decoding MNIST costs
        seconds per run.  Tasks never modify a data set's tensors in place.
        """
        if self.data is not None:
            return self.data
        return _load(self.dataset, str(resolve_data_dir(data_dir)), tuple(sorted(self.load_kwargs.items())))

    def check_data(self, data_dir: Any) -> None:
        """Load (and so verify, or download as :meth:`setup` would) the data set: kept for the run's setup."""
        self.load(data_dir)

    def with_data(self, data: Dataset) -> Any:
        """This task on ``data`` (tiny synthetic tensors in tests, another copy of the data).

        The copy is named ``"<name>@<data.name>"``, so that its runs never share a results key
        with runs on the real data.
        """
        if not isinstance(data, Dataset):
            raise ValueError(f"{self.name}.with_data: invalid data={data!r}: expected an optimlab.data.Dataset")
        return replace(self, name=f"{self.name.split('@')[0]}@{data.name}", data=data)  # type: ignore[type-var]


@lru_cache(maxsize=2)
def _load(dataset: str, data_dir: str, load_kwargs: tuple[tuple[str, Any], ...]) -> Dataset:
    return load(dataset, data_dir, **dict(load_kwargs))
