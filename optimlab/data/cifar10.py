"""CIFAR-10 (Krizhevsky, 2009, "Learning Multiple Layers of Features from Tiny Images").

Source: www.cs.toronto.edu/~kriz/cifar.html.

50,000 training and 10,000 test colour images, 32x32, of 10 classes, in the "python version"
archive ``cifar-10-python.tar.gz``: a gzip tar holding ``cifar-10-batches-py/`` with
``data_batch_1`` .. ``data_batch_5``, ``test_batch`` and ``batches.meta``.  Each batch is a
pickled dict with ``b"data"``, a uint8 array ``[10000, 3072]`` (1024 red, then green, then blue
values of a 32x32 image in row-major order) and ``b"labels"``, a list of ints in 0..9;
``batches.meta`` has ``b"label_names"``.  The md5 of the archive is the one Toronto publishes.
"""

from __future__ import annotations

import io
import os
import pickle
import tarfile
import zlib
from typing import Any

import numpy as np

from ._dataset import Dataset, check_split, image_dataset
from ._files import FormatError, RemoteFile, fetch

NAME = "cifar-10"
ARCHIVE = RemoteFile(
    NAME,
    "cifar-10-python.tar.gz",
    ("https://www.cs.toronto.edu/~kriz/cifar-10-python.tar.gz",),
    "md5",
    "c58f30108f718f92721af3b95e74349a",
)
_DIR = "cifar-10-batches-py/"
TRAIN_BATCHES = tuple(f"{_DIR}data_batch_{i}" for i in range(1, 6))
TEST_BATCH = f"{_DIR}test_batch"
META = f"{_DIR}batches.meta"


def load_cifar10(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    val_fraction: float = 0.0,
    seed: int = 0,
) -> Dataset:
    """Load CIFAR-10: ``x`` float32 ``[N, 3, 32, 32]`` (RGB) = byte / 255, ``y`` int64 labels.

    The arguments are :func:`~optimlab.data.mnist.load_mnist`'s (the archive is
    ``<data_dir>/cifar-10/cifar-10-python.tar.gz``, about 170 MB).  ``info["classes"]`` holds the
    archive's label names (``"airplane"``, ..., ``"truck"``).
    """
    check_split(f"load({NAME!r})", seed, val_fraction=val_fraction)
    train, test, classes = read_archive(fetch(ARCHIVE, data_dir, download=download))
    return image_dataset(NAME, train, test, classes, val_fraction=val_fraction, seed=seed)


def read_archive(
    path: str | os.PathLike[str],
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray], tuple[str, ...]]:
    """Decode ``cifar-10-python.tar.gz``: ``(train, test, class names)``, images uint8 ``[N, 3, 32, 32]``.

    Raises:
        FormatError: not a gzip tar, a batch missing, or a batch without the expected arrays.
    """
    wanted = {*TRAIN_BATCHES, TEST_BATCH, META}
    found: dict[str, dict[bytes, Any]] = {}
    try:
        # One pass over the members in archive order: a gzip stream cannot seek back cheaply.
        with tarfile.open(path, "r:gz") as tar:
            for member in tar:
                if member.name in wanted and member.isfile():
                    found[member.name] = _unpickle(tar.extractfile(member).read(), path, member.name)
    except (OSError, EOFError, zlib.error, tarfile.TarError) as e:
        raise FormatError(f"{path} is not a readable tar.gz archive: {e}") from e
    missing = sorted(wanted - found.keys())
    if missing:
        raise FormatError(f"{path} lacks {', '.join(missing)}: not the CIFAR-10 python archive")
    classes = found[META].get(b"label_names")
    if not isinstance(classes, list) or len(classes) != 10:
        raise FormatError(f"{path}: {META} has no list of 10 b'label_names'")
    train = [_batch(found[name], path, name) for name in TRAIN_BATCHES]
    test = _batch(found[TEST_BATCH], path, TEST_BATCH)
    train_images = np.concatenate([images for images, _ in train])
    train_labels = np.concatenate([labels for _, labels in train])
    return (train_images, train_labels), test, tuple(c.decode() for c in classes)


def _batch(batch: dict[bytes, Any], path: str | os.PathLike[str], name: str) -> tuple[np.ndarray, np.ndarray]:
    data, labels = batch.get(b"data"), batch.get(b"labels")
    if not (isinstance(data, np.ndarray) and data.dtype == np.uint8 and data.ndim == 2 and data.shape[1] == 3072):
        got = f"{type(data).__name__} {getattr(data, 'dtype', '')} {getattr(data, 'shape', '')}"
        raise FormatError(f"{path}: {name}: b'data' is {got}, expected a uint8 array [N, 3072]")
    labels = np.asarray(labels)
    integers = labels.shape == (len(data),) and labels.dtype.kind in "iu"
    if not (integers and (labels.size == 0 or 0 <= labels.min() <= labels.max() <= 9)):
        raise FormatError(f"{path}: {name}: b'labels' is not {len(data)} integers in 0..9")
    return data.reshape(-1, 3, 32, 32), labels


class _ArrayUnpickler(pickle.Unpickler):
    """Unpickles dicts, lists, bytes and numpy arrays only: a batch cannot run code when loaded."""

    _ALLOWED = {
        ("numpy.core.multiarray", "_reconstruct"),  # pickles made by numpy 1 (the real archive)
        ("numpy._core.multiarray", "_reconstruct"),  # pickles made by numpy 2
        ("numpy", "ndarray"),
        ("numpy", "dtype"),
        ("_codecs", "encode"),  # bytes in protocol-2 pickles written by Python 3
    }

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) not in self._ALLOWED:
            raise pickle.UnpicklingError(f"refusing to load {module}.{name}")
        return super().find_class(module, name)


def _unpickle(raw: bytes, path: str | os.PathLike[str], name: str) -> dict[bytes, Any]:
    try:
        # encoding="bytes": the batches were pickled by Python 2, whose str keys load as bytes.
        batch = _ArrayUnpickler(io.BytesIO(raw), encoding="bytes").load()
    except Exception as e:  # a damaged pickle can raise almost anything; all mean "bad file"
        raise FormatError(f"{path}: {name} is not a readable pickle: {e}") from e
    if not isinstance(batch, dict):
        raise FormatError(f"{path}: {name} holds a {type(batch).__name__}, expected a dict")
    return batch
