"""MNIST handwritten digits (LeCun, Cortes & Burges, yann.lecun.com/exdb/mnist; CC BY-SA 3.0).

60,000 training and 10,000 test images of the digits 0-9, 28x28 grey levels, as four
gzip-compressed IDX files.  Sources and md5 values are torchvision's (``torchvision.datasets.MNIST``).
"""

from __future__ import annotations

import os

from ._dataset import Dataset
from ._idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, idx_files, load_idx_dataset

NAME = "mnist"
#: torchvision's mirrors, in its order: its S3 copy first (LeCun's site often refuses scripts).
MIRRORS = ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/")
FILES = idx_files(
    NAME,
    MIRRORS,
    {
        TRAIN_IMAGES: "f68b3c2dcbeaaa9fbdd348bbdeb94873",
        TRAIN_LABELS: "d53e105ee54ea40749a09fcbcd1e9432",
        TEST_IMAGES: "9fb629c4189551a2d022fa330f9573f3",
        TEST_LABELS: "ec29112dd5afa0611ce80d1b7f02629c",
    },
)
CLASSES = tuple("0123456789")


def load_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Load MNIST: ``x`` float32 ``[N, 1, 28, 28]`` = byte / 255, ``y`` int64 digit labels.

    Args:
        data_dir: the data directory (see :mod:`optimlab.data`); files are read from
            ``<data_dir>/mnist/``.
        download: fetch missing files from the mirrors (``False`` raises instead).
        val_fraction: the share of the 60,000 training images held out as ``val`` (a seeded
            choice, see :func:`~optimlab.data._dataset.split_rows`); 0 gives ``val=None``.
        seed: seed of that choice.

    ``info["classes"]`` is ``("0", ..., "9")``.
    """
    return load_idx_dataset(NAME, FILES, CLASSES, data_dir, download=download, val_fraction=val_fraction, seed=seed)
