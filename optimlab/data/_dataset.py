"""What every loader returns, and the seeded row split they share."""

from __future__ import annotations

import numbers
from collections.abc import Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import numpy as np
import torch
from torch import Tensor

from ..optim._validate import check_int, check_range


@dataclass(frozen=True)
class Split:
    """One part of a data set: inputs ``x`` and targets ``y``, with the same number of rows.

    * images: ``x`` float32 ``[N, C, H, W]`` in ``[0, 1]`` (the byte value / 255), ``y`` int64 ``[N]``;
    * regression: ``x`` float32 ``[N, D]``, ``y`` float32 ``[N, 1]``.
    """

    x: Tensor
    y: Tensor

    def __post_init__(self) -> None:
        if self.x.shape[0] != self.y.shape[0]:
            raise ValueError(f"Split: x has {self.x.shape[0]} rows but y has {self.y.shape[0]}")

    def __len__(self) -> int:
        return self.x.shape[0]


@dataclass(frozen=True)
class Dataset:
    """A loaded data set.

    Attributes:
        name: the name :func:`optimlab.data.load` knows it by.
        train: the training split.
        val: the validation split, or ``None`` where none was asked for.
        test: the test split, or ``None`` where the data set has none.
        num_classes: the number of classes, or ``None`` for a regression.
        info: read-only facts particular to the data set (class names, feature names, how the
            target was scaled); each loader's docstring lists its keys.
    """

    name: str
    train: Split
    val: Split | None
    test: Split | None
    num_classes: int | None
    info: Mapping[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        object.__setattr__(self, "info", MappingProxyType(dict(self.info)))


def check_split(owner: str, seed: int, **fractions: float) -> None:
    """Raise ``ValueError`` unless ``seed`` is an integer >= 0 and the fractions are in [0, 1) with a sum < 1.

    Loaders call it before reading any file, so a typo costs no download.
    """
    check_int(owner, "seed", seed, 0)
    for name, f in fractions.items():
        if isinstance(f, bool) or not isinstance(f, numbers.Real):  # check_range would accept "0.1"
            raise ValueError(f"{owner}: invalid {name}={f!r}: expected a number with 0 <= {name} < 1")
        check_range(owner, name, f, 0.0, 1.0, high_open=True)
    if sum(fractions.values()) >= 1:
        given = ", ".join(f"{k}={v!r}" for k, v in fractions.items())
        raise ValueError(f"{owner}: invalid fractions {given}: expected a sum < 1 so that training rows remain")


def split_rows(owner: str, n: int, seed: int, **fractions: float) -> tuple[np.ndarray, ...]:
    """Split rows ``0..n-1`` by a seeded shuffle: ``round(f * n)`` rows for each fraction, then the rest.

    Returns one sorted index array per keyword, in order, and last the remaining rows.  The
    shuffle is ``numpy.random.default_rng(seed).permutation(n)``, so the split depends only on
    ``n``, the fractions and ``seed``.

    Raises:
        ValueError: what :func:`check_split` rejects, or a positive fraction too small to give a row.
    """
    check_split(owner, seed, **fractions)
    for name, f in fractions.items():
        if f > 0 and round(f * n) == 0:
            raise ValueError(f"{owner}: invalid {name}={f!r}: it gives 0 of {n} rows; expected 0 or enough for one row")
    order = np.random.default_rng(seed).permutation(n)
    parts, start = [], 0
    for f in fractions.values():
        stop = start + round(f * n)
        parts.append(np.sort(order[start:stop]))
        start = stop
    parts.append(np.sort(order[start:]))
    return tuple(parts)


def image_dataset(
    name: str,
    train: tuple[np.ndarray, np.ndarray],
    test: tuple[np.ndarray, np.ndarray],
    classes: tuple[str, ...],
    *,
    val_fraction: float,
    seed: int,
) -> Dataset:
    """A classification :class:`Dataset` from uint8 images ``[N, C, H, W]`` and integer labels.

    ``val_fraction`` of the training images (chosen by :func:`split_rows` with ``seed``) become the
    validation split; the test split is the data set's own.  ``info["classes"]`` holds ``classes``.
    """
    val_rows, train_rows = split_rows(f"load({name!r})", len(train[1]), seed, val_fraction=val_fraction)
    val = None
    if len(val_rows):
        val = _image_split(train[0][val_rows], train[1][val_rows])
        train = (train[0][train_rows], train[1][train_rows])
    return Dataset(name, _image_split(*train), val, _image_split(*test), len(classes), {"classes": classes})


def _image_split(images: np.ndarray, labels: np.ndarray) -> Split:
    x = torch.from_numpy(images.astype(np.float32))
    return Split(x.div_(255), torch.from_numpy(labels.astype(np.int64)))
