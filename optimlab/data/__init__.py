"""The data sets of the lab, as plain tensors, from verified files.

>>> from optimlab.data import load
>>> ds = load("mnist", data_dir="/data")            # or $OPTIMLAB_DATA_DIR, or ~/.cache/optimlab/data
>>> ds.train.x.shape, ds.train.y.dtype, ds.test.x.shape
(torch.Size([60000, 1, 28, 28]), torch.int64, torch.Size([10000, 1, 28, 28]))

=================  =============================  ==================  ===============
name               x                              y                   files
=================  =============================  ==================  ===============
``mnist``          float32 [N, 1, 28, 28] in 0..1  int64 [N], 10 classes   4 IDX .gz (md5)
``fashion-mnist``  float32 [N, 1, 28, 28] in 0..1  int64 [N], 10 classes   4 IDX .gz (md5)
``cifar-10``       float32 [N, 3, 32, 32] in 0..1  int64 [N], 10 classes   1 tar.gz (md5)
``airfoil``        float32 [1500, 5] (d2l)         float32 [1500, 1]       1 .dat (sha1)
``kc-house``       float32 [N, 71]                 float32 [N, 1]          1 .csv (sha256)
=================  =============================  ==================  ===============

Files live at ``<data_dir>/<name>/<file>``; the data directory is the ``data_dir`` argument,
else ``$OPTIMLAB_DATA_DIR``, else ``$XDG_CACHE_HOME/optimlab/data`` (``~/.cache/optimlab/data``).
Every file is checked against its published checksum; missing files are downloaded from their
canonical source (or ``$OPTIMLAB_DATA_MIRROR``) unless ``download=False``.  :mod:`._files` tells
how, and each data set's module tells its format, source, licence and preprocessing.
"""

from __future__ import annotations

import os
from collections.abc import Callable

from ..optim._validate import check_choice
from ._dataset import Dataset, Split
from ._files import (
    ChecksumError,
    DataError,
    DataMissingError,
    DownloadError,
    FormatError,
    RemoteFile,
    fetch,
    resolve_data_dir,
)
from .airfoil import load_airfoil
from .cifar10 import load_cifar10
from .fashion_mnist import load_fashion_mnist
from .kc_house import load_kc_house
from .mnist import load_mnist

#: Every data set :func:`load` knows, by name (also its directory inside the data directory).
DATASETS: dict[str, Callable[..., Dataset]] = {
    "mnist": load_mnist,
    "fashion-mnist": load_fashion_mnist,
    "cifar-10": load_cifar10,
    "airfoil": load_airfoil,
    "kc-house": load_kc_house,
}


def load(name: str, data_dir: str | os.PathLike[str] | None = None, **kwargs: object) -> Dataset:
    """Load the data set ``name`` (a key of :data:`DATASETS`); ``kwargs`` go to its loader.

    Every loader takes ``download`` (default ``True``); see each one for the rest
    (``val_fraction``, ``test_fraction``, ``seed``, ``n``).
    """
    check_choice("load", "name", name, tuple(DATASETS))
    return DATASETS[name](data_dir, **kwargs)


__all__ = [
    "DATASETS",
    "ChecksumError",
    "DataError",
    "DataMissingError",
    "Dataset",
    "DownloadError",
    "FormatError",
    "RemoteFile",
    "Split",
    "fetch",
    "load",
    "load_airfoil",
    "load_cifar10",
    "load_fashion_mnist",
    "load_kc_house",
    "load_mnist",
    "resolve_data_dir",
]
