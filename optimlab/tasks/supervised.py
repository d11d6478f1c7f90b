"""Supervised tasks: one network, one data set of :mod:`optimlab.data`, a loss and a metric.

The image classifiers (:mod:`.images`), the house-price MLP (:mod:`.house`) and d2l's airfoil
regression (:mod:`.airfoil`) are all a :class:`SupervisedTask`; they differ in their model,
loss, metric, budgets and which splits they report on.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..data import Dataset, Split
from ._base import Budget, Instance, Task, UsesDataset, num_batches, shuffled, subset

#: ``loss(outputs, targets)``: the mean loss of a batch, a scalar tensor.
Loss = Callable[[Tensor, Tensor], Tensor]
#: ``metric(outputs, targets, info)``: a number from a whole split's outputs (``info``: the data set's).
Metric = Callable[[Tensor, Tensor, Mapping[str, Any]], float]

#: Examples per forward pass when evaluating (bounds memory; does not change the numbers).
EVAL_BATCH = 500


def cross_entropy(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean cross-entropy of logits ``[N, C]`` against class indices ``[N]``."""
    return F.cross_entropy(outputs, targets)


def mse(outputs: Tensor, targets: Tensor) -> Tensor:
    """Mean squared error, :math:`\\frac1N\\sum_i (\\hat y_i - y_i)^2`."""
    return F.mse_loss(outputs, targets)


def accuracy(outputs: Tensor, targets: Tensor, info: Mapping[str, Any]) -> float:
    """The share of examples whose largest logit is at the true class."""
    return (outputs.argmax(dim=1) == targets).double().mean().item()


@dataclass(frozen=True, repr=False)
class SupervisedTask(UsesDataset, Task):
    """A network trained on a data set of :mod:`optimlab.data` by minibatch steps.

    Each epoch visits the training subset once, in batches of the budget's size, in an order
    drawn from the run's data generator (the last batch may be smaller).  Evaluation computes
    ``loss`` and ``metric`` over a whole split in eval mode (dropout off).

    Attributes:
        name, description, metric, higher_is_better, budgets: see :class:`Task`.
        dataset: the :func:`optimlab.data.load` name; ``load_kwargs`` go to it.
        model: builds the network (from torch's global generator).
        loss: the training objective, also reported on the evaluated splits.
        metric_fn: computes ``metric``; ``None`` where the metric is the loss (``metric="loss"``).
        eval_split, final_split: the splits of the curve and of the final evaluation; ``"full"``
            is the training subset itself.
        constants: computes numbers of the data that training cannot change (reported with the
            final metrics) from the splits; ``None`` for none.
        data: a :class:`~optimlab.data.Dataset` to use instead of loading (:meth:`with_data`).
        metric_ceiling: see :class:`Task`.
    """

    name: str
    description: str
    dataset: str
    model: Callable[[], nn.Module]
    loss: Loss
    metric: str
    metric_fn: Metric | None
    higher_is_better: bool
    budgets: Mapping[str, Budget]
    load_kwargs: Mapping[str, Any] = field(default_factory=dict)
    eval_split: str = "val"
    final_split: str = "test"
    constants: Callable[[Mapping[str, Split]], dict[str, float]] | None = None
    data: Dataset | None = None
    metric_ceiling: float = math.inf

    def setup(self, budget: Budget, *, data_dir: Any, device: torch.device) -> SupervisedInstance:
        data = self.load(data_dir)
        splits = {"train": subset(data.train, budget.train_size)}
        for name, size in (("val", budget.val_size), ("test", budget.test_size)):
            part = getattr(data, name)
            if part is not None:
                splits[name] = subset(part, size)
        splits = {name: Split(s.x.to(device), s.y.to(device)) for name, s in splits.items()}
        splits["full"] = splits["train"]
        for name in (self.eval_split, self.final_split):
            if name not in splits:
                raise ValueError(f"{self.name}: the data set {data.name!r} has no {name!r} split to evaluate on")
        constants = self.constants(splits) if self.constants is not None else {}
        return SupervisedInstance(self, self.model().to(device), splits, budget.batch_size, dict(data.info), constants)


class SupervisedInstance(Instance):
    """One run of a :class:`SupervisedTask`: its network and the splits on the run's device."""

    def __init__(
        self,
        task: SupervisedTask,
        model: nn.Module,
        splits: dict[str, Split],
        batch_size: int,
        info: dict[str, Any],
        constants: dict[str, float],
    ) -> None:
        self.task = task
        self.model = model
        self.splits = splits
        self.batch_size = batch_size
        self.info = info
        self._constants = constants
        self.eval_split = task.eval_split
        self.final_split = task.final_split
        self.steps_per_epoch = num_batches(len(splits["train"]), batch_size, drop_last=False)

    def parameters(self) -> dict[str, list[nn.Parameter]]:
        return {"model": list(self.model.parameters())}

    def batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        train = self.splits["train"]
        for rows in shuffled(len(train), self.batch_size, generator, drop_last=False):
            rows = rows.to(train.x.device)
            yield train.x[rows], train.y[rows]

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
            outputs = torch.cat([self.model(data.x[i : i + EVAL_BATCH]) for i in range(0, len(data), EVAL_BATCH)])
        finally:
            self.model.train()
        result = {"loss": self.task.loss(outputs, data.y).item()}
        if self.task.metric_fn is not None:
            result[self.task.metric] = self.task.metric_fn(outputs, data.y, self.info)
        return result

    def constants(self) -> dict[str, float]:
        return dict(self._constants)
