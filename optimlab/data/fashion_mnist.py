"""Fashion-MNIST (Xiao, Rasul & Vollgraf, 2017, arXiv:1708.07747; github.com/zalandoresearch/fashion-mnist; MIT).

60,000 training and 10,000 test images of 10 kinds of clothing (6,000 and 1,000 of each), 28x28
grey levels, in the same four-file IDX format as MNIST.  Source and md5 values are Zalando's.
"""

from __future__ import annotations

import os

from ._dataset import Dataset
from ._idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, idx_files, load_idx_dataset

NAME = "fashion-mnist"
MIRRORS = ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",)
FILES = idx_files(
    NAME,
    MIRRORS,
    {
        TRAIN_IMAGES: "8d4fb7e6c68d591d4c3dfef9ec88bf0d",
        TRAIN_LABELS: "25c81989df183df01b3e8a0aad5dffbe",
        TEST_IMAGES: "bef4ecab320f06d8554ea6380940ec79",
        TEST_LABELS: "bb300cfdad3c16e7a12a480ee83cd310",
    },
)
CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")


def load_fashion_mnist(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Load Fashion-MNIST: ``x`` float32 ``[N, 1, 28, 28]`` = byte / 255, ``y`` int64 labels.

    The arguments are :func:`~optimlab.data.mnist.load_mnist`'s (files in ``<data_dir>/fashion-mnist/``).
    ``info["classes"]`` holds Zalando's class names, in label order.
    """
    return load_idx_dataset(NAME, FILES, CLASSES, data_dir, download=download, val_fraction=val_fraction, seed=seed)
