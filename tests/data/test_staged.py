"""The loaders on the real, staged data sets (skipped where they are not staged).

Counts and checksums are those of ``shared/data/README.md`` and the publishers.
"""

from __future__ import annotations

import gzip
from pathlib import Path

import numpy as np
import pytest
import torch

from optimlab.data import Dataset, load, load_airfoil, load_kc_house

from .conftest import serve_directory

MNIST_TRAIN_COUNTS = [5923, 6742, 5958, 6131, 5842, 5421, 5918, 6265, 5851, 5949]


@pytest.fixture(scope="module")
def mnist(staged: Path) -> Dataset:
    return load("mnist", staged, download=False)


@pytest.fixture(scope="module")
def fashion(staged: Path) -> Dataset:
    return load("fashion-mnist", staged, download=False)


@pytest.fixture(scope="module")
def kc(staged: Path) -> Dataset:
    return load("kc-house", staged, download=False)


def test_mnist_shapes_dtypes_and_label_counts(mnist: Dataset) -> None:
    assert mnist.train.x.shape == (60000, 1, 28, 28) and mnist.test.x.shape == (10000, 1, 28, 28)
    assert mnist.train.x.dtype == torch.float32 and mnist.train.y.dtype == torch.int64
    assert torch.bincount(mnist.train.y).tolist() == MNIST_TRAIN_COUNTS
    assert len(mnist.test.y) == 10000 and mnist.test.y.min() == 0 and mnist.test.y.max() == 9
    assert mnist.train.x.min() == 0 and mnist.train.x.max() == 1


def test_mnist_pixels_are_the_file_bytes_over_255(mnist: Dataset, staged: Path) -> None:
    raw = gzip.decompress((staged / "mnist" / "t10k-images-idx3-ubyte.gz").read_bytes())
    first = np.frombuffer(raw, np.uint8, count=100 * 784, offset=16).reshape(100, 1, 28, 28)
    assert torch.equal(mnist.test.x[:100], torch.tensor(first, dtype=torch.float32) / 255)
    labels = gzip.decompress((staged / "mnist" / "t10k-labels-idx1-ubyte.gz").read_bytes())[8:18]
    assert mnist.test.y[:10].tolist() == list(labels)  # 7 2 1 0 4 1 4 9 5 9


def test_fashion_mnist_is_balanced(fashion: Dataset) -> None:
    assert fashion.train.x.shape == (60000, 1, 28, 28) and fashion.test.x.shape == (10000, 1, 28, 28)
    assert torch.bincount(fashion.train.y).tolist() == [6000] * 10
    assert torch.bincount(fashion.test.y).tolist() == [1000] * 10
    assert fashion.info["classes"][9] == "Ankle boot"


def test_airfoil_is_d2l_get_data_ch11(staged: Path) -> None:
    ds = load_airfoil(staged, download=False)
    # d2l.ai's get_data_ch11, as the book prints it (numpy float32 throughout).
    data = np.genfromtxt(staged / "airfoil" / "airfoil_self_noise.dat", dtype=np.float32, delimiter="\t")
    data = torch.from_numpy((data - data.mean(axis=0)) / data.std(axis=0))
    assert torch.equal(ds.train.x, data[:1500, :-1]) and torch.equal(ds.train.y[:, 0], data[:1500, -1])
    assert ds.train.x.shape == (1500, 5) and ds.train.y.shape == (1500, 1) and ds.val is None and ds.test is None


def test_airfoil_standardisation_against_float64(staged: Path) -> None:
    ds = load_airfoil(staged, download=False, n=1503)
    raw = np.loadtxt(staged / "airfoil" / "airfoil_self_noise.dat", dtype=np.float64)
    z = (raw - raw.mean(axis=0)) / raw.std(axis=0)
    got = torch.cat([ds.train.x, ds.train.y], dim=1).double().numpy()
    # d2l's float32 statistics (summed row by row) put it up to 1.83e-5 from the exact values.
    np.testing.assert_allclose(got, z, rtol=0, atol=2e-5)
    np.testing.assert_allclose(got.mean(axis=0), 0, atol=2e-5)
    np.testing.assert_allclose(got.std(axis=0), 1, atol=1e-5)
    np.testing.assert_allclose(np.array(ds.info["mean"]), raw.mean(axis=0), rtol=1e-5)
    np.testing.assert_allclose(np.array(ds.info["std"]), raw.std(axis=0), rtol=1e-5)
    assert raw[0].tolist() == [800, 0, 0.3048, 71.3, 0.00266337, 126.201]


def test_kc_house_has_71_inputs_and_a_70_10_20_split(kc: Dataset) -> None:
    assert (len(kc.train), len(kc.val), len(kc.test)) == (15129, 2161, 4323)
    for split in (kc.train, kc.val, kc.test):
        assert split.x.shape[1] == 71 and split.x.dtype == torch.float32
        assert split.y.shape == (len(split), 1) and split.y.dtype == torch.float32
    names = kc.info["feature_names"]
    assert len(names) == 71 and names[17:19] == ("sale_year", "sale_month")
    assert sum(n.startswith("zipcode_") for n in names) == 52


def test_kc_house_standardisation_uses_training_rows(kc: Dataset) -> None:
    k = kc.info["standardized"]
    assert k == 19
    x = kc.train.x[:, :k].double()
    assert x.mean(0).abs().max() < 1e-6 and (x.std(0, correction=0) - 1).abs().max() < 1e-5
    assert abs(kc.train.y.double().mean()) < 1e-6 and abs(kc.train.y.double().std(correction=0) - 1) < 1e-5
    onehot = torch.cat([kc.train.x, kc.val.x, kc.test.x])[:, k:]
    assert set(onehot.unique().tolist()) == {0.0, 1.0}
    assert (onehot.sum(1) <= 1).all() and int((onehot.sum(1) == 0).sum()) == 2466  # the 18 pooled zipcodes


def test_kc_house_target_is_the_log_price(kc: Dataset, staged: Path) -> None:
    prices = np.loadtxt(staged / "kc-house" / "kc_house_data.csv", delimiter=",", skiprows=1, usecols=2)
    y = torch.cat([kc.train.y, kc.val.y, kc.test.y]).double().squeeze(1)
    back = torch.exp(y * kc.info["log_price_std"] + kc.info["log_price_mean"])
    np.testing.assert_allclose(np.sort(back.numpy()), np.sort(prices), rtol=1e-6)


def test_kc_house_split_depends_on_the_seed_only(kc: Dataset, staged: Path) -> None:
    again = load_kc_house(staged, download=False)
    assert torch.equal(again.test.x, kc.test.x) and torch.equal(again.val.y, kc.val.y)
    other = load_kc_house(staged, download=False, seed=1)
    assert not torch.equal(other.test.y, kc.test.y)
    assert other.info["feature_names"] == kc.info["feature_names"]


def test_download_from_a_local_mirror(monkeypatch: pytest.MonkeyPatch, tmp_path: Path, staged: Path) -> None:
    with serve_directory(staged) as url:
        monkeypatch.setenv("OPTIMLAB_DATA_MIRROR", url)
        airfoil = load("airfoil", tmp_path)
        kc = load("kc-house", tmp_path, val_fraction=0.0, test_fraction=0.5)
    files = ["airfoil", "airfoil_self_noise.dat", "kc-house", "kc_house_data.csv"]
    assert sorted(p.name for p in tmp_path.rglob("*")) == files  # and no temporary file
    name = "airfoil/airfoil_self_noise.dat"
    assert (tmp_path / name).read_bytes() == (staged / name).read_bytes()
    assert torch.equal(airfoil.train.x, load_airfoil(staged).train.x)
    assert kc.val is None and len(kc.test) == 10806
