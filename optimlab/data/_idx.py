"""The IDX format of MNIST and Fashion-MNIST, and the loader the two data sets share.

An IDX file (LeCun et al., yann.lecun.com/exdb/mnist) is a big-endian header, then the array
in C order.  The header is a 4-byte magic ``0x00 0x00 <type> <ndim>`` (type ``0x08`` = uint8;
so 2051 = ``0x00000803`` for images ``[N, rows, cols]`` and 2049 = ``0x00000801`` for labels
``[N]``), then ``ndim`` uint32 sizes.  The data sets ship each file gzip-compressed.
"""

from __future__ import annotations

import gzip
import os
import struct
import zlib
from collections.abc import Mapping
from pathlib import Path

import numpy as np

from ._dataset import Dataset, check_split, image_dataset
from ._files import FormatError, RemoteFile, fetch

TRAIN_IMAGES = "train-images-idx3-ubyte.gz"
TRAIN_LABELS = "train-labels-idx1-ubyte.gz"
TEST_IMAGES = "t10k-images-idx3-ubyte.gz"
TEST_LABELS = "t10k-labels-idx1-ubyte.gz"
_UINT8 = 0x08


def idx_files(dataset: str, base_urls: tuple[str, ...], md5: Mapping[str, str]) -> dict[str, RemoteFile]:
    """The four files of an MNIST-like data set, each at ``<base><file name>`` for every base URL."""
    return {name: RemoteFile(dataset, name, tuple(base + name for base in base_urls), "md5", md5[name]) for name in md5}


def read_idx(path: str | os.PathLike[str], ndim: int) -> np.ndarray:
    """Decode a gzip-compressed IDX file of uint8 with ``ndim`` dimensions (a read-only array).

    The bytes are viewed with ``numpy.frombuffer``, not copied or looped over.

    Raises:
        FormatError: not gzip, a wrong magic number, or a size that disagrees with the header.
    """
    try:
        with gzip.open(path, "rb") as f:
            raw = f.read()
    except (OSError, EOFError, zlib.error) as e:
        raise FormatError(f"{path} is not a readable gzip file: {e}") from e
    want = _UINT8 << 8 | ndim
    header = 4 + 4 * ndim
    magic = struct.unpack(">I", raw[:4])[0] if len(raw) >= 4 else None
    if magic != want:
        got = "none (file too short)" if magic is None else f"0x{magic:08x}"
        raise FormatError(
            f"{path} is not an IDX file of uint8 with {ndim} dimension(s): magic {got}, expected 0x{want:08x}"
        )
    if len(raw) < header:
        raise FormatError(f"{path}: the IDX header needs {header} bytes but the file has {len(raw)}")
    shape = struct.unpack(f">{ndim}I", raw[4:header])
    size = int(np.prod(shape))
    if len(raw) - header != size:
        raise FormatError(f"{path}: the header says shape {shape} ({size} bytes) but {len(raw) - header} bytes follow")
    return np.frombuffer(raw, dtype=np.uint8, offset=header).reshape(shape)


def load_idx_dataset(
    name: str,
    files: Mapping[str, RemoteFile],
    classes: tuple[str, ...],
    data_dir: str | os.PathLike[str] | None,
    *,
    download: bool,
    val_fraction: float,
    seed: int,
) -> Dataset:
    """Fetch and decode the four IDX files of an MNIST-like data set (28x28 uint8 images)."""
    check_split(f"load({name!r})", seed, val_fraction=val_fraction)
    paths = {key: fetch(spec, data_dir, download=download) for key, spec in files.items()}
    train = _images_and_labels(paths[TRAIN_IMAGES], paths[TRAIN_LABELS], len(classes))
    test = _images_and_labels(paths[TEST_IMAGES], paths[TEST_LABELS], len(classes))
    return image_dataset(name, train, test, classes, val_fraction=val_fraction, seed=seed)


def _images_and_labels(images_path: Path, labels_path: Path, num_classes: int) -> tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, 3)
    labels = read_idx(labels_path, 1)
    if images.shape[1:] != (28, 28):
        raise FormatError(f"{images_path}: images are {images.shape[1]}x{images.shape[2]}, expected 28x28")
    if len(images) != len(labels):
        raise FormatError(f"{images_path} has {len(images)} images but {labels_path} has {len(labels)} labels")
    if labels.size and labels.max() >= num_classes:
        raise FormatError(f"{labels_path}: label {labels.max()} is out of range 0..{num_classes - 1}")
    return images[:, None], labels
