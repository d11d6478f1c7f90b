"""Supervised tasks: one network, its data, a loss and evaluation metrics; the lab's own and yours.

A :class:`SupervisedTask` is built from what a PyTorch user already has::

    task = SupervisedTask(
        name="my-mlp",
        model=lambda: nn.Sequential(nn.Linear(20, 64), nn.ReLU(), nn.Linear(64, 3)),
        train=(x_train, y_train),               # tensors, a torch Dataset, or a DataLoader factory
        val=(x_val, y_val),
        loss=nn.CrossEntropyLoss(),
        metrics={"accuracy": (accuracy, "maximize")},
        budget=Budget(epochs=5, batch_size=64, eval_every=10),
    )

The image classifiers (:mod:`.images`), the house-price MLP (:mod:`.house`) and d2l's airfoil
regression (:mod:`.airfoil`) are the same class on a data set of :mod:`optimlab.data`
(``dataset="mnist"``); they differ in their model, loss, metric, budgets and splits.
"""

from __future__ import annotations

import inspect
import math
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.utils.data import DataLoader, Subset
from torch.utils.data import Dataset as TorchDataset

from ..data import Dataset, Split
from ._base import BUDGETS, Budget, Instance, Task, UsesDataset, num_batches, shuffled, subset

#: ``loss(outputs, targets)``: the mean loss of a batch, a scalar tensor (``nn.CrossEntropyLoss()``, ``F.mse_loss``).
Loss = Callable[[Tensor, Tensor], Tensor]
#: ``metric(outputs, targets)`` (or ``metric(outputs, targets, info)``, ``info`` the data set's): a number
#: from a whole split's outputs.
Metric = Callable[..., float]
#: Data as the user has it: ``(inputs, targets)`` tensors, a map-style :class:`torch.utils.data.Dataset` of
#: ``(input, target)`` pairs, or a DataLoader factory ``make(batch_size, generator) -> DataLoader``.
Data = tuple[Tensor, Tensor] | Split | TorchDataset | Callable[[int, torch.Generator], Iterable[Any]]

#: Examples per forward pass when evaluating (bounds memory; does not change the numbers).
EVAL_BATCH = 500
#: Optuna's names for a metric's direction.
DIRECTIONS = ("maximize", "minimize")


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of logits ``[N, C]`` against class indices ``[N]``."""
    return F.cross_entropy(outputs, targets)


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error, :math:`\\frac1N\\sum_i (\\hat y_i - y_i)^2`."""
    return F.mse_loss(outputs, targets)


def accuracy(outputs: Tensor, targets: Tensor) -> float:
    """The share of examples whose largest logit is at the true class."""
    return (outputs.argmax(dim=1) == targets).double().mean().item()


@dataclass(frozen=True, repr=False, kw_only=True)
class SupervisedTask(UsesDataset, Task):
    """A network trained by minibatch steps on a loss, judged by metrics on held-out data.

    Each epoch visits the training data once, in batches of the budget's size, in an order drawn
    from the run's data generator (the last batch may be smaller).  Evaluation computes ``loss``
    and every metric over a whole split in eval mode (dropout off), without gradients.

    Parameters
    ----------
    name : str
        The task's name in the store and the report (``"my-mlp"``).  It is the task's identity in a
        run's key (with the budget's settings, not the code or the data): a run of the same name,
        optimizer, settings and seed is read back from the store, not trained again, so give a new
        name (``"my-mlp-v2"``) when you change the model, the data, the loss or the metrics.
    model : callable
        ``model() -> nn.Module``: a fresh network, initialised from torch's global generator
        (the runner seeds it; every run builds its own).
    loss : callable
        ``loss(outputs, targets) -> scalar tensor``: the training objective, also reported on
        the evaluated splits (``nn.CrossEntropyLoss()``, ``torch.nn.functional.mse_loss``).
    train, val, test : data
        ``(inputs, targets)`` tensors; a map-style :class:`torch.utils.data.Dataset` of
        ``(input, target)`` pairs (batched by a DataLoader in the main process); or a DataLoader
        factory ``make(batch_size, generator) -> DataLoader`` (workers, augmentation, your own
        collate: pass ``generator`` to the DataLoader, so that the run's seed fixes the order and
        the workers' seeds).  ``val`` is evaluated at every curve point, ``test`` once at the end
        (without ``test``: ``val``; without ``val``: the training data, and say so).  The budget's
        ``train_size``, ``val_size`` and ``test_size`` take a fixed subset (seed 0) of tensors
        and Datasets; a factory's loader is used whole.
    metrics : mapping
        ``{name: (metric, direction)}``: ``metric(outputs, targets) -> float`` over a whole
        split, ``direction`` ``"maximize"`` or ``"minimize"`` (Optuna's words).
    metric : str, optional
        The headline metric that tuning optimizes and the verdict compares: a name of
        ``metrics``, or ``"loss"``; default the first of ``metrics``, else ``"loss"``.
    budget : Budget, optional
        How long a run trains (every budget name runs it), or ``budgets``: a :class:`Budget`
        for each of ``"smoke"``, ``"quick"``, ``"full"`` (give one of the two).
    description : str, optional
        One line for listings; default from the model and metric.
    dataset, load_kwargs, data
        The lab's own tasks: an :func:`optimlab.data.load` name and its arguments, or an
        :class:`optimlab.data.Dataset` (:meth:`with_data`), instead of ``train``/``val``/``test``.
    eval_split, final_split
        The splits of the curve and of the final evaluation (``"val"``, ``"test"``, or ``"full"``:
        the training data itself); the defaults follow the data given (see above).
    constants : callable, optional
        Numbers of the data that training cannot change, from the tensor splits (reported with
        the final metrics).
    metric_ceiling : float
        See :class:`Task`.

    Raises
    ------
    ValueError
        One line naming the argument, its value and what is allowed.
    """

    name: str
    model: Callable[[], nn.Module]
    loss: Loss
    train: Data | None = None
    val: Data | None = None
    test: Data | None = None
    metrics: Mapping[str, tuple[Metric, str]] = field(default_factory=dict)
    metric: str = ""
    budget: Budget | None = None
    budgets: Mapping[str, Budget] = field(default_factory=dict)
    description: str = ""
    dataset: str | None = None
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)
    data: Dataset | None = None
    eval_split: str = ""
    final_split: str = ""
    constants: Callable[[Mapping[str, Split]], dict[str, float]] | None = None
    metric_ceiling: float = math.inf

    def __post_init__(self) -> None:
        who = "SupervisedTask"
        if not isinstance(self.name, str) or not self.name.strip():
            raise ValueError(f"{who}: invalid name={self.name!r}: expected a non-empty str")
        for arg in ("model", "loss"):
            if not callable(getattr(self, arg)):
                raise ValueError(f"{who} {self.name}: invalid {arg}={getattr(self, arg)!r}: expected a callable")  # noqa: TRY004
        sources = [n for n in ("train", "dataset") if getattr(self, n) is not None]
        if self.dataset is None and self.data is not None:
            sources.append("data")
        if len(sources) != 1:
            raise ValueError(
                f"{who} {self.name}: give the training data as exactly one of train= (tensors, a Dataset or a "
                f"DataLoader factory), dataset= or data=; got {', '.join(sources) or 'none'}"
            )
        for arg in ("train", "val", "test"):
            value = getattr(self, arg)
            if isinstance(value, tuple):
                if len(value) != 2 or not all(isinstance(t, Tensor) for t in value):
                    raise ValueError(
                        f"{who} {self.name}: invalid {arg}: expected (inputs, targets) tensors, a torch Dataset "
                        "or a DataLoader factory"
                    )
                object.__setattr__(self, arg, Split(*value))
            elif value is not None and not isinstance(value, (Split, TorchDataset)) and not callable(value):
                raise ValueError(
                    f"{who} {self.name}: invalid {arg}={value!r}: expected (inputs, targets) tensors, a torch Dataset "
                    "or a DataLoader factory make(batch_size, generator)"
                )
        for name, entry in dict(self.metrics).items():
            if (
                name == "loss"
                or not isinstance(entry, tuple)
                or len(entry) != 2
                or not callable(entry[0])
                or entry[1] not in DIRECTIONS
            ):
                raise ValueError(
                    f"{who} {self.name}: invalid metrics[{name!r}]={entry!r}: expected (metric(outputs, targets), "
                    "'maximize' or 'minimize'), named other than 'loss'"
                )
        metric = self.metric or next(iter(self.metrics), "loss")
        if metric != "loss" and metric not in self.metrics:
            raise ValueError(
                f"{who} {self.name}: invalid metric={metric!r}: expected 'loss' or one of {', '.join(self.metrics)}"
            )
        object.__setattr__(self, "metric", metric)
        if (self.budget is None) == (not self.budgets):
            raise ValueError(f"{who} {self.name}: give budget=Budget(...) or budgets={{name: Budget}}, one of the two")
        budgets = dict.fromkeys(BUDGETS, self.budget) if self.budget is not None else dict(self.budgets)
        for name, b in budgets.items():
            if name not in BUDGETS or not isinstance(b, Budget):
                raise ValueError(
                    f"{who} {self.name}: invalid budgets[{name!r}]={b!r}: expected a Budget for {', '.join(BUDGETS)}"
                )
        object.__setattr__(self, "budgets", budgets)
        own = self.train is not None
        if not self.eval_split:
            object.__setattr__(self, "eval_split", "val" if self.val is not None or not own else "full")
        if not self.final_split:
            final = "test" if self.test is not None or not own else self.eval_split
            object.__setattr__(self, "final_split", final)
        if not self.description:
            what = getattr(self.model, "__name__", type(self.model).__name__)
            object.__setattr__(
                self,
                "description",
                f"{what}; metric: {metric} ({'higher' if self.higher_is_better else 'lower'} is better)",
            )

    @property
    def directions(self) -> dict[str, str]:
        """``{"loss": "minimize", metric: direction, ...}``: what the report needs to rank each metric."""
        return {"loss": "minimize", **{name: direction for name, (_, direction) in self.metrics.items()}}

    @property
    def higher_is_better(self) -> bool:  # type: ignore[override]
        return self.directions[self.metric] == "maximize"

    def check_data(self, data_dir: Any) -> None:
        if self.train is None:
            super().check_data(data_dir)

    def setup(self, budget: Budget, *, data_dir: Any, device: torch.device) -> SupervisedInstance:
        if self.train is None:
            data = self.load(data_dir)
            parts = {"train": data.train, "val": data.val, "test": data.test}
            info = dict(data.info)
        else:
            parts, info = {"train": self.train, "val": self.val, "test": self.test}, {}
        sizes = {"train": budget.train_size, "val": budget.val_size, "test": budget.test_size}
        splits = {
            name: _subset(self.name, name, part, sizes[name], device)
            for name, part in parts.items()
            if part is not None
        }
        splits["full"] = splits["train"]
        for name in (self.eval_split, self.final_split):
            if name not in splits:
                raise ValueError(f"{self.name}: the data has no {name!r} split to evaluate on")
        tensors = {name: s for name, s in splits.items() if isinstance(s, Split)}
        constants = self.constants(tensors) if self.constants is not None else {}
        return SupervisedInstance(self, self.model().to(device), splits, budget.batch_size, info, constants, device)


def _subset(task: str, name: str, part: Any, n: int | None, device: torch.device) -> Any:
    """``n`` examples of one split (a fixed choice, see :func:`optimlab.tasks._base.subset`); tensors moved to ``device``."""
    if isinstance(part, Split):
        s = subset(part, n)
        return Split(s.x.to(device), s.y.to(device))
    if isinstance(part, TorchDataset):
        if n is None or n >= len(part):  # type: ignore[arg-type]
            return part
        rows = torch.randperm(len(part), generator=torch.Generator().manual_seed(0))[:n].sort().values  # type: ignore[arg-type]
        return Subset(part, rows.tolist())
    if n is not None:
        raise ValueError(
            f"{task}: invalid {name}_size={n}: a DataLoader factory's {name} data is used whole; "
            f"give {name} as tensors or a Dataset to take a subset"
        )
    return part


class SupervisedInstance(Instance):
    """One run of a :class:`SupervisedTask`: its network and its splits (tensors on the run's device,
    Datasets, or DataLoader factories)."""

    def __init__(
        self,
        task: SupervisedTask,
        model: nn.Module,
        splits: dict[str, Any],
        batch_size: int,
        info: dict[str, Any],
        constants: dict[str, float],
        device: torch.device,
    ) -> None:
        self.task = task
        self.model = model
        self.splits = splits
        self.batch_size = batch_size
        self.info = info
        self.device = device
        self._constants = constants
        self.eval_split = task.eval_split
        self.final_split = task.final_split
        train = splits["train"]
        if isinstance(train, (Split, TorchDataset)):
            self.steps_per_epoch = num_batches(len(train), batch_size, drop_last=False)  # type: ignore[arg-type]
        else:
            self.steps_per_epoch = len(train(batch_size, torch.Generator()))

    def parameters(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.model.parameters())}

    def batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        train = self.splits["train"]
        if isinstance(train, Split):
            for rows in shuffled(len(train), self.batch_size, generator, drop_last=False):
                rows = rows.to(train.x.device)
                yield train.x[rows], train.y[rows]
            return
        loader = (
            DataLoader(train, self.batch_size, shuffle=True, generator=generator)
            if isinstance(train, TorchDataset)
            else train(self.batch_size, generator)
        )
        for x, y in loader:
            yield x.to(self.device), y.to(self.device)

    def step(self, batch: tuple[Tensor, Tensor], optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Tensor]:
        x, y = batch
        optimizer = optimizers["model"]
        self.model.train()
        optimizer.zero_grad(set_to_none=True)
        loss = self.task.loss(self.model(x), y)
        loss.backward()
        optimizer.step()
        return {"loss": loss.detach()}

    @torch.no_grad()
    def evaluate(self, split: str) -> dict[str, float]:
        data = self.splits[split]
        self.model.eval()
        try:
            outputs, targets = [], []
            for x, y in self._eval_batches(data):
                outputs.append(self.model(x))
                targets.append(y)
        finally:
            self.model.train()
        out, target = torch.cat(outputs), torch.cat(targets)
        result = {"loss": self.task.loss(out, target).item()}
        for name, (metric, _) in self.task.metrics.items():
            result[name] = float(metric(out, target, self.info) if _takes_info(metric) else metric(out, target))
        return result

    def _eval_batches(self, data: Any) -> Iterator[tuple[Tensor, Tensor]]:
        if isinstance(data, Split):
            for i in range(0, len(data), EVAL_BATCH):
                yield data.x[i : i + EVAL_BATCH], data.y[i : i + EVAL_BATCH]
            return
        # a factory's evaluation loader gets a fixed generator: evaluating never draws from the run's
        loader = (
            DataLoader(data, EVAL_BATCH)
            if isinstance(data, TorchDataset)
            else data(EVAL_BATCH, torch.Generator().manual_seed(0))
        )
        for x, y in loader:
            yield x.to(self.device), y.to(self.device)

    def constants(self) -> dict[str, float]:
        return dict(self._constants)


def _takes_info(metric: Metric) -> bool:
    """Whether ``metric`` takes the data set's ``info`` as a third argument (the lab's RMSE in dollars)."""
    try:
        required = [p for p in inspect.signature(metric).parameters.values() if p.default is inspect.Parameter.empty]
    except (TypeError, ValueError):  # a builtin without a signature: the two-argument form
        return False
    return len(required) >= 3
