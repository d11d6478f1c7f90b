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
reads a data set can run on other tensors with ``task.with_data(dataset)``; ``task.with_budget(epochs=...)``
changes every budget's settings (the command line's ``--epochs``, ``--batch-size``...).

Your own task is a :class:`SupervisedTask` (model, data, loss, metrics, budget: see its docstring
and the README's "Your own model"); :func:`load` finds one from the command line's ``--task``
(``path/to/file.py:NAME`` or ``package.module:NAME``).
"""

from __future__ import annotations

import hashlib
import importlib
import importlib.util
import os
import stat
import sys
from pathlib import Path
from types import ModuleType

from ..optim._validate import check_choice
from ._base import BUDGETS, Budget, Instance, Task
from .airfoil import AIRFOIL_LINREG, lstsq_floor
from .gan import GAN_RING, ring_quality
from .house import HOUSE_MLP
from .images import CIFAR10_CNN, FASHION_MNIST_CNN, MNIST_CNN
from .mnist_gan import MNIST_DCGAN, MNIST_WGAN
from .supervised import SupervisedTask

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


__all__ = [
    "BUDGETS",
    "Budget",
    "Instance",
    "SupervisedTask",
    "Task",
    "budget_table",
    "get",
    "load",
    "lstsq_floor",
    "names",
    "ring_quality",
]


def load(text: str) -> Task:
    """The task ``text`` names: a registered name (``mnist-cnn``), ``path/to/file.py:NAME`` or
    ``package.module:NAME``, where ``NAME`` is a :class:`Task` object or a function returning one
    (called without arguments).

    Code is run from a file only if neither the file nor its folder is owned by another user or
    writable by group or others: never run code from a place another user can write.

    Raises:
        ValueError: one line naming ``text`` and what is wrong (no such file, module or name, an
            unsafe place, an error while importing, not a task).
    """
    if not isinstance(text, str) or not text.strip():
        raise ValueError(
            f"invalid --task {text!r}: expected a task name ({', '.join(names())}), FILE.py:NAME or MODULE:NAME"
        )
    if text in _TASKS:
        return _TASKS[text]
    where, sep, attr = text.rpartition(":")
    if not sep or not where or not attr.isidentifier():
        raise ValueError(
            f"invalid --task {text!r}: expected one of {', '.join(names())}, path/to/file.py:NAME or package.module:NAME"
        )
    module = (
        _import_file(text, Path(where)) if where.endswith(".py") or os.sep in where else _import_module(text, where)
    )
    obj = getattr(module, attr, None)
    if obj is None:
        raise ValueError(f"invalid --task {text!r}: {where} has no {attr!r}")
    if not isinstance(obj, Task) and callable(obj):
        try:
            obj = obj()
        except Exception as e:  # noqa: BLE001 - the user's code: its error, in one line
            raise ValueError(f"invalid --task {text!r}: {attr}() raised {_one_line(e)}") from None
    if not isinstance(obj, Task):
        raise ValueError(  # noqa: TRY004 (the commands report ValueError as one clean line)
            f"invalid --task {text!r}: {attr} is {type(obj).__name__}, not a task (an optimlab SupervisedTask, "
            "or a function returning one)"
        )
    return obj


def _import_module(text: str, name: str) -> ModuleType:
    try:
        return importlib.import_module(name)
    except Exception as e:  # noqa: BLE001 - the user's code: its error, in one line
        raise ValueError(f"invalid --task {text!r}: cannot import {name}: {_one_line(e)}") from None


def _import_file(text: str, path: Path) -> ModuleType:
    if not path.is_file():
        raise ValueError(f"invalid --task {text!r}: no such file {str(path)!r}")
    real = path.resolve()
    for place in dict.fromkeys((path.absolute(), path.absolute().parent, real, real.parent)):
        info = place.stat()
        if info.st_uid != os.getuid():
            raise ValueError(
                f"invalid --task {text!r}: {str(place)!r} belongs to another user (uid {info.st_uid}); "
                "never run code from a place another user can write"
            )
        if info.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
            raise ValueError(
                f"invalid --task {text!r}: {str(place)!r} is writable by {'others' if info.st_mode & stat.S_IWOTH else 'its group'}; "
                f"never run code from a place another user can write (chmod go-w {str(place)!r})"
            )
    name = f"optimlab_task_{real.stem}_{hashlib.sha256(str(real).encode()).hexdigest()[:12]}"
    spec = importlib.util.spec_from_file_location(name, real)
    if spec is None or spec.loader is None:
        raise ValueError(f"invalid --task {text!r}: {str(path)!r} cannot be imported as Python")
    module = importlib.util.module_from_spec(spec)
    sys.modules[name] = module  # dataclasses and pickling (DataLoader workers) look the module up by name
    try:
        spec.loader.exec_module(module)
    except Exception as e:  # noqa: BLE001 - the user's code: its error, in one line
        del sys.modules[name]
        raise ValueError(f"invalid --task {text!r}: importing {str(path)!r} raised {_one_line(e)}") from None
    return module


def _one_line(e: BaseException) -> str:
    lines = str(e).strip().splitlines()
    return f"{type(e).__name__}: {lines[-1] if lines else ''}".strip()
