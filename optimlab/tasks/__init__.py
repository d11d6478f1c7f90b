"""The training tasks of the lab: model + data + loss + metrics, with three budgets each.

>>> from optimlab import tasks
>>> tasks.names()
('airfoil-linreg', 'cifar10-cnn', 'fashion-mnist-cnn', 'gan-ring', 'house-mlp', 'mnist-cnn', 'mnist-dcgan', 'mnist-wgan')
>>> tasks.get("mnist-cnn").budgets["smoke"]
Budget(epochs=1, batch_size=64, train_size=256, val_size=256, test_size=256, eval_every=None)

=====================  ==============================  ========================================
task                   module                          headline metric
=====================  ==============================  ========================================
``mnist-cnn``          :mod:`.images`                  ``accuracy`` (higher is better)
``fashion-mnist-cnn``  :mod:`.images`                  ``accuracy``
``cifar10-cnn``        :mod:`.images`                  ``accuracy``
``house-mlp``          :mod:`.house`                   ``rmse``, in dollars (lower)
``airfoil-linreg``     :mod:`.airfoil`                 ``loss``, d2l's squared loss / 2 (lower)
``gan-ring``           :mod:`.gan`                     ``coverage``, modes of 8 (higher)
``mnist-dcgan``        :mod:`.mnist_gan`               ``gen_accuracy`` (higher)
``mnist-wgan``         :mod:`.mnist_gan`               ``gen_accuracy`` (higher)
=====================  ==============================  ========================================

:func:`optimlab.runner.run` trains one of them; its docstring has the budgets.  A task that
reads a data set can run on other tensors with ``task.with_data(dataset)``.
"""

from __future__ import annotations

from ..optim._validate import check_choice
from ._base import BUDGETS, Budget, Instance, Task
from .airfoil import AIRFOIL_LINREG, lstsq_floor
from .gan import GAN_RING, ring_quality
from .house import HOUSE_MLP
from .images import CIFAR10_CNN, FASHION_MNIST_CNN, MNIST_CNN
from .mnist_gan import MNIST_DCGAN, MNIST_WGAN

_TASKS: dict[str, Task] = {
    task.name: task
    for task in (
        MNIST_CNN,
        FASHION_MNIST_CNN,
        CIFAR10_CNN,
        HOUSE_MLP,
        AIRFOIL_LINREG,
        GAN_RING,
        MNIST_DCGAN,
        MNIST_WGAN,
    )
}


def names() -> tuple[str, ...]:
    """The names of every task, sorted."""
    return tuple(sorted(_TASKS))


def get(name: str) -> Task:
    """The task called ``name`` (one of :func:`names`)."""
    check_choice("tasks.get", "name", name, names())
    return _TASKS[name]


def budget_table() -> str:
    """The budgets of every task as an aligned text table (the runner's docstring shows it)."""
    header = ("task", "budget", "epochs", "batch", "train", "val", "test", "eval every")
    rows = [header]
    for name in names():
        for budget_name in BUDGETS:
            b = get(name).budgets[budget_name]
            sizes = (b.train_size, b.val_size, b.test_size)
            rows.append(
                (name, budget_name, str(b.epochs), str(b.batch_size), *("all" if s is None else str(s) for s in sizes),
                 "steps/20" if b.eval_every is None else f"{b.eval_every} steps")
            )  # fmt: skip
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    rule = "  ".join("=" * w for w in widths)
    lines = ["  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip() for row in rows]
    return "\n".join([rule, lines[0], rule, *lines[1:], rule])


__all__ = ["BUDGETS", "Budget", "Instance", "Task", "budget_table", "get", "lstsq_floor", "names", "ring_quality"]
