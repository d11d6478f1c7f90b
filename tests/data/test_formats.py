"""The loaders on tiny synthetic files in the real formats: decoding, splits and format errors.

The loaders verify published checksums, which a synthetic file cannot have, so these tests point
the URL/checksum tables at the synthetic files' own digests (the tables are module attributes).
"""

from __future__ import annotations

import dataclasses
import gzip
import hashlib
import io
import os
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
import pytest
import torch

from optimlab.data import ChecksumError, DataMissingError, FormatError, cifar10, kc_house, load, mnist
from optimlab.data._dataset import split_rows
from optimlab.data._idx import TEST_IMAGES, TEST_LABELS, TRAIN_IMAGES, TRAIN_LABELS, read_idx

RNG = np.random.default_rng(0)


def md5_of(path: Path) -> str:
    return hashlib.md5(path.read_bytes()).hexdigest()


def write_idx(path: Path, array: np.ndarray, magic: int | None = None) -> Path:
    """An IDX file of uint8, gzip-compressed, as LeCun specifies it (``magic`` overrides the header)."""
    magic = 0x0800 | array.ndim if magic is None else magic
    header = struct.pack(f">I{array.ndim}I", magic, *array.shape)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(gzip.compress(header + array.astype(np.uint8).tobytes()))
    return path


def tiny_mnist(root: Path, monkeypatch: pytest.MonkeyPatch, n_train: int = 12, n_test: int = 5) -> dict:
    """Write four tiny MNIST files under ``root/mnist`` and make them the ones the loader trusts."""
    arrays = {
        TRAIN_IMAGES: RNG.integers(0, 256, (n_train, 28, 28)),
        TRAIN_LABELS: np.arange(n_train) % 10,
        TEST_IMAGES: RNG.integers(0, 256, (n_test, 28, 28)),
        TEST_LABELS: np.arange(n_test)[::-1] % 10,
    }
    for name, array in arrays.items():
        path = write_idx(root / "mnist" / name, array)
        monkeypatch.setitem(mnist.FILES, name, dataclasses.replace(mnist.FILES[name], digest=md5_of(path)))
    return arrays


# --- IDX ----------------------------------------------------------------------------------------


def test_read_idx_decodes_header_and_bytes(tmp_path: Path) -> None:
    images = RNG.integers(0, 256, (3, 28, 28))
    got = read_idx(write_idx(tmp_path / "i.gz", images), 3)
    assert got.dtype == np.uint8 and got.shape == (3, 28, 28)
    np.testing.assert_array_equal(got, images)


def test_read_idx_rejects_a_labels_file_read_as_images(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "labels.gz", np.arange(5))
    message = r"labels\.gz is not an IDX file of uint8 with 3 dimension\(s\): magic 0x00000801, expected 0x00000803"
    with pytest.raises(FormatError, match=message):
        read_idx(path, 3)


def test_read_idx_rejects_bad_magic(tmp_path: Path) -> None:
    path = write_idx(tmp_path / "bad.gz", np.zeros((2, 28, 28)), magic=0x12345678)
    with pytest.raises(FormatError, match=r"bad\.gz .* magic 0x12345678, expected 0x00000803"):
        read_idx(path, 3)


def test_read_idx_rejects_data_shorter_than_the_header_says(tmp_path: Path) -> None:
    path = tmp_path / "short.gz"
    path.write_bytes(gzip.compress(struct.pack(">IIII", 0x803, 2, 28, 28) + bytes(28 * 28)))
    message = r"short\.gz: the header says shape \(2, 28, 28\) \(1568 bytes\) but 784 bytes follow"
    with pytest.raises(FormatError, match=message):
        read_idx(path, 3)


def test_read_idx_rejects_a_file_that_is_not_gzip(tmp_path: Path) -> None:
    path = tmp_path / "plain.gz"
    path.write_bytes(struct.pack(">II", 0x801, 1) + b"\x03")
    with pytest.raises(FormatError, match=r"plain\.gz is not a readable gzip file"):
        read_idx(path, 1)


# --- MNIST-like loading -------------------------------------------------------------------------


def test_mnist_loader_on_tiny_files(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    arrays = tiny_mnist(tmp_path, monkeypatch)
    ds = load("mnist", tmp_path, download=False)
    assert ds.name == "mnist" and ds.num_classes == 10 and ds.val is None and ds.info["classes"][3] == "3"
    assert ds.train.x.shape == (12, 1, 28, 28) and ds.train.x.dtype == torch.float32
    assert ds.train.y.dtype == torch.int64 and ds.test.x.shape == (5, 1, 28, 28)
    assert torch.equal(ds.train.x, torch.tensor(arrays[TRAIN_IMAGES], dtype=torch.float32)[:, None] / 255)
    assert ds.test.y.tolist() == arrays[TEST_LABELS].tolist()


def test_validation_split_is_seeded_and_disjoint(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    arrays = tiny_mnist(tmp_path, monkeypatch)
    a = load("mnist", tmp_path, download=False, val_fraction=0.25, seed=1)
    b = load("mnist", tmp_path, download=False, val_fraction=0.25, seed=1)
    assert len(a.train) == 9 and len(a.val) == 3
    assert torch.equal(a.val.x, b.val.x) and torch.equal(a.train.y, b.train.y)
    val_rows, train_rows = split_rows("t", 12, 1, val_fraction=0.25)
    assert a.val.y.tolist() == arrays[TRAIN_LABELS][val_rows].tolist()
    assert a.train.y.tolist() == arrays[TRAIN_LABELS][train_rows].tolist()
    assert sorted([*val_rows, *train_rows]) == list(range(12))


def test_split_rows_sizes_and_seed() -> None:
    val, test, train = split_rows("t", 100, 0, val_fraction=0.1, test_fraction=0.25)
    assert (len(val), len(test), len(train)) == (10, 25, 65)
    assert sorted(np.concatenate([val, test, train]).tolist()) == list(range(100))
    assert not np.array_equal(split_rows("t", 100, 1, val_fraction=0.1)[0], val)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"val_fraction": 1.0}, r"load\('mnist'\): invalid val_fraction=1.0: expected 0 <= val_fraction < 1"),
        ({"val_fraction": -0.1}, r"invalid val_fraction=-0.1"),
        ({"val_fraction": 0.01}, r"invalid val_fraction=0.01: it gives 0 of 12 rows"),
        ({"seed": -1}, r"invalid seed=-1: expected an integer >= 0"),
        ({"seed": 1.5}, r"invalid seed=1.5"),
    ],
)
def test_invalid_split_arguments(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, kwargs: dict, message: str) -> None:
    tiny_mnist(tmp_path, monkeypatch)
    with pytest.raises(ValueError, match=message):
        load("mnist", tmp_path, download=False, **kwargs)


@pytest.mark.parametrize(
    ("name", "kwargs", "message"),
    [
        (
            "kc-house",
            {"val_fraction": 0.5, "test_fraction": 0.5},
            r"load\('kc-house'\): invalid fractions val_fraction=0.5, test_fraction=0.5: expected a sum < 1",
        ),
        ("kc-house", {"test_fraction": 1}, r"invalid test_fraction=1: expected 0 <= test_fraction < 1"),
        ("cifar-10", {"seed": "0"}, r"load\('cifar-10'\): invalid seed='0': expected an integer >= 0"),
        ("fashion-mnist", {"val_fraction": "0.1"}, r"invalid val_fraction='0.1'"),
        ("airfoil", {"n": 1504}, r"load\('airfoil'\): invalid n=1504: expected an integer with 1 <= n <= 1503"),
        ("airfoil", {"n": 0}, r"invalid n=0"),
        ("airfoil", {"n": 10.0}, r"invalid n=10.0"),
    ],
)
def test_invalid_arguments_are_caught_before_reading(tmp_path: Path, name: str, kwargs: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        load(name, tmp_path / "empty", **kwargs)
    assert not (tmp_path / "empty").exists()


def test_mismatched_image_and_label_counts(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny_mnist(tmp_path, monkeypatch)
    path = write_idx(tmp_path / "mnist" / TRAIN_LABELS, np.arange(11) % 10)
    monkeypatch.setitem(mnist.FILES, TRAIN_LABELS, dataclasses.replace(mnist.FILES[TRAIN_LABELS], digest=md5_of(path)))
    with pytest.raises(FormatError, match=r"has 12 images but .*train-labels-idx1-ubyte.gz has 11 labels"):
        load("mnist", tmp_path, download=False)


def test_label_out_of_range(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny_mnist(tmp_path, monkeypatch)
    path = write_idx(tmp_path / "mnist" / TEST_LABELS, np.array([0, 1, 10, 3, 4]))
    monkeypatch.setitem(mnist.FILES, TEST_LABELS, dataclasses.replace(mnist.FILES[TEST_LABELS], digest=md5_of(path)))
    with pytest.raises(FormatError, match=r"t10k-labels-idx1-ubyte.gz: label 10 is out of range 0..9"):
        load("mnist", tmp_path, download=False)


def test_bad_magic_through_the_loader_names_the_file(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    tiny_mnist(tmp_path, monkeypatch)
    path = write_idx(tmp_path / "mnist" / TEST_IMAGES, np.zeros((5, 28, 28)), magic=0x0803_0000)
    monkeypatch.setitem(mnist.FILES, TEST_IMAGES, dataclasses.replace(mnist.FILES[TEST_IMAGES], digest=md5_of(path)))
    with pytest.raises(FormatError, match=rf"{path} is not an IDX file .* magic 0x08030000"):
        load("mnist", tmp_path, download=False)


def test_real_checksums_reject_synthetic_files(tmp_path: Path) -> None:
    for name in (TRAIN_IMAGES, TRAIN_LABELS, TEST_IMAGES, TEST_LABELS):
        write_idx(tmp_path / "mnist" / name, np.zeros((1, 28, 28) if "images" in name else (1,)))
    message = r"its md5 is [0-9a-f]{32} but the published md5 is f68b3c2dcbeaaa9fbdd348bbdeb94873"
    with pytest.raises(ChecksumError, match=message):
        load("mnist", tmp_path, download=False)


def test_missing_file_without_download(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError, match=r"fashion-mnist/train-images-idx3-ubyte.gz is not in the data dir"):
        load("fashion-mnist", tmp_path, download=False)
    assert list(tmp_path.iterdir()) == []


def test_unknown_name() -> None:
    message = r"load: invalid name='imagenet': expected one of 'mnist', 'fashion-mnist', 'cifar-10', 'airfoil', 'kc-"
    with pytest.raises(ValueError, match=message):
        load("imagenet")


# --- CIFAR-10 -----------------------------------------------------------------------------------


def batch_pickle(data: np.ndarray, labels: list[int], name: str) -> bytes:
    """A batch as Toronto pickles it: bytes keys, uint8 ``[N, 3072]`` data, a list of int labels."""
    files = [f"img_{i}.png".encode() for i in range(len(labels))]
    batch = {b"batch_label": name.encode(), b"labels": labels, b"data": data, b"filenames": files}
    return pickle.dumps(batch, protocol=2)


def write_cifar(path: Path, per_batch: int = 4, n_test: int = 3, members: dict[str, bytes] | None = None) -> dict:
    """A CIFAR-10 python archive in the published layout, with ``per_batch`` images per training batch."""
    batches = {
        name: (RNG.integers(0, 256, (n, 3072)).astype(np.uint8), RNG.integers(0, 10, n).tolist())
        for name, n in [*((b, per_batch) for b in cifar10.TRAIN_BATCHES), (cifar10.TEST_BATCH, n_test)]
    }
    content = {name: batch_pickle(*batch, name) for name, batch in batches.items()}
    names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
    meta = {b"num_cases_per_batch": per_batch, b"label_names": [n.encode() for n in names], b"num_vis": 3072}
    content[cifar10.META] = pickle.dumps(meta, protocol=2)
    content.update(members or {})
    path.parent.mkdir(parents=True, exist_ok=True)
    with tarfile.open(path, "w:gz") as tar:
        for name, raw in content.items():
            info = tarfile.TarInfo(name)
            info.size = len(raw)
            tar.addfile(info, io.BytesIO(raw))
    return batches


def test_cifar10_archive_decoding(tmp_path: Path) -> None:
    batches = write_cifar(tmp_path / "c.tar.gz")
    (train_x, train_y), (test_x, test_y), classes = cifar10.read_archive(tmp_path / "c.tar.gz")
    assert train_x.shape == (20, 3, 32, 32) and test_x.shape == (3, 3, 32, 32) and classes[0] == "airplane"
    first, labels = batches[cifar10.TRAIN_BATCHES[0]]
    # Row layout: 1024 red values, then green, then blue, each image row-major.
    assert train_x[1, 2, 5, 7] == first[1, 2 * 1024 + 5 * 32 + 7]
    np.testing.assert_array_equal(train_x[4:8].reshape(4, -1), batches[cifar10.TRAIN_BATCHES[1]][0])
    assert train_y[:4].tolist() == labels and test_y.tolist() == batches[cifar10.TEST_BATCH][1]


def test_cifar10_loader_on_a_small_archive(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "cifar-10" / "cifar-10-python.tar.gz"
    batches = write_cifar(path)
    monkeypatch.setattr(cifar10, "ARCHIVE", dataclasses.replace(cifar10.ARCHIVE, digest=md5_of(path)))
    ds = load("cifar-10", tmp_path, download=False, val_fraction=0.25, seed=0)
    assert ds.train.x.shape == (15, 3, 32, 32) and ds.val.x.shape == (5, 3, 32, 32)
    assert ds.test.x.shape == (3, 3, 32, 32)
    assert ds.train.x.dtype == torch.float32 and ds.test.y.dtype == torch.int64 and ds.num_classes == 10
    expected = torch.tensor(batches[cifar10.TEST_BATCH][0], dtype=torch.float32).reshape(3, 3, 32, 32) / 255
    assert torch.equal(ds.test.x, expected)
    assert ds.info["classes"][-1] == "truck"


def test_cifar10_small_archive_fails_the_published_md5(tmp_path: Path) -> None:
    write_cifar(tmp_path / "cifar-10" / "cifar-10-python.tar.gz")
    with pytest.raises(ChecksumError, match=r"published md5 is c58f30108f718f92721af3b95e74349a"):
        load("cifar-10", tmp_path, download=False)


def test_cifar10_missing_batch(tmp_path: Path) -> None:
    path = tmp_path / "c.tar.gz"
    write_cifar(path)
    with tarfile.open(path, "r:gz") as tar:
        kept = [(m, tar.extractfile(m).read()) for m in tar if m.name != cifar10.TEST_BATCH]
    with tarfile.open(path, "w:gz") as tar:
        for member, raw in kept:
            tar.addfile(member, io.BytesIO(raw))
    with pytest.raises(FormatError, match=r"c\.tar\.gz lacks cifar-10-batches-py/test_batch"):
        cifar10.read_archive(path)


class _Evil:
    def __reduce__(self) -> tuple:
        return (os.system, ("echo should never run",))


def test_cifar10_refuses_pickles_that_run_code(tmp_path: Path) -> None:
    write_cifar(tmp_path / "c.tar.gz", members={cifar10.TEST_BATCH: pickle.dumps(_Evil(), protocol=2)})
    with pytest.raises(FormatError, match=r"test_batch is not a readable pickle: refusing to load posix.system"):
        cifar10.read_archive(tmp_path / "c.tar.gz")


def test_cifar10_wrong_data_shape(tmp_path: Path) -> None:
    bad = batch_pickle(np.zeros((2, 100), np.uint8), [0, 1], "test")
    write_cifar(tmp_path / "c.tar.gz", members={cifar10.TEST_BATCH: bad})
    message = r"test_batch: b'data' is ndarray uint8 \(2, 100\), expected a uint8 array \[N, 3072\]"
    with pytest.raises(FormatError, match=message):
        cifar10.read_archive(tmp_path / "c.tar.gz")


def test_not_an_archive(tmp_path: Path) -> None:
    (tmp_path / "c.tar.gz").write_bytes(b"not a tar")
    with pytest.raises(FormatError, match=r"is not a readable tar.gz archive"):
        cifar10.read_archive(tmp_path / "c.tar.gz")


# --- King County --------------------------------------------------------------------------------


def test_kc_house_cannot_be_downloaded_and_says_where_to_get_it(tmp_path: Path) -> None:
    with pytest.raises(DataMissingError) as err:
        load("kc-house", tmp_path)  # download=True by default: still no way to download
    message = str(err.value)
    assert "kaggle.com/datasets/harlfoxem/housesalesprediction" in message
    assert str(tmp_path / "kc-house" / "kc_house_data.csv") in message
    assert kc_house.FILE.digest in message


def test_kc_house_wrong_header(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    path = tmp_path / "kc-house" / "kc_house_data.csv"
    path.parent.mkdir()
    path.write_text("id,date,price\n1,20140101T000000,3\n")
    digest = hashlib.sha256(path.read_bytes()).hexdigest()
    monkeypatch.setattr(kc_house, "FILE", dataclasses.replace(kc_house.FILE, digest=digest))
    message = r"kc_house_data.csv: the header is \['id', 'date', 'price'\], expected \['id', 'date', 'price', 'bed"
    with pytest.raises(FormatError, match=message):
        load("kc-house", tmp_path)


def test_kc_house_encoding_of_a_tiny_table(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    header = ",".join(kc_house.COLUMNS)
    rows = [
        '"1","20140502T000000",100000,3,1,1180,5650,"1",0,0,3,7,1180,0,1955,0,"98178",47.5,-122.2,1340,5650',
        '"2","20150227T000000",200000,2,1.5,770,10000,"2",1,2,4,6,770,0,1933,1990,"98028",47.7,-122.3,2720,8062',
    ]
    path = tmp_path / "kc.csv"
    path.write_text("\n".join([header, *rows]) + "\n")
    table = kc_house.read_table(path)
    x, names = kc_house.encode(table)
    assert names[:19] == (*kc_house.NUMERIC, "sale_year", "sale_month") and names[19:] == ()  # no zipcode has 200 sales
    assert x[1, names.index("yr_renovated")] == 1990 and x[1, names.index("floors")] == 2
    assert x[:, 17].tolist() == [2014, 2015] and x[:, 18].tolist() == [5, 2]
    monkeypatch.setattr(kc_house, "MIN_ZIPCODE_SALES", 1)
    x, names = kc_house.encode(table)
    assert names[19:] == ("zipcode_98028", "zipcode_98178")
    assert x[:, 19:].tolist() == [[0, 1], [1, 0]]
