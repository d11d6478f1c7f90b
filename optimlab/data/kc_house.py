r"""King County house sales, May 2014 - May 2015 (Kaggle "House Sales in King County, USA", harlfoxem; CC0).

``kc_house_data.csv``: a header and 21,613 sales with 21 columns (id, date, price, 17 numeric
house attributes, zipcode).  Kaggle serves it only to logged-in users, so it is never downloaded
here: put it at ``<data_dir>/kc-house/kc_house_data.csv`` (its sha256 is checked).

**Inputs: 71 features**, the width of the seed task's MLP (3 hidden layers of 1000 ReLU, MSE):

* 17 numeric columns as they are in the file, standardised: bedrooms, bathrooms, sqft_living,
  sqft_lot, floors, waterfront, view, condition, grade, sqft_above, sqft_basement, yr_built,
  yr_renovated (0 = never), lat, long, sqft_living15, sqft_lot15;
* the sale date as 2 standardised numbers, year and month (prices drift over the 13 months);
* the zipcode one-hot, for the 52 zipcodes with at least 200 sales (``MIN_ZIPCODE_SALES``) in
  the file; the other 18 (50 to 199 sales each, 2,466 sales in all) are all zeros there and are
  placed by lat/long alone.

Why this encoding: location is what drives price beyond size and quality, and one indicator per
zipcode lets the network learn a price level per area, which lat/long alone give only after the
network has carved the map into regions.  All 70 zipcodes one-hot would make 89 inputs; pooling
the sparse ones is the usual remedy (an indicator seen in fewer than ~140 training rows mostly
fits noise), and 200 sales is the round threshold that keeps 52 of them, so 17 + 2 + 52 = 71.
id is dropped (an identifier).  Nothing is removed or clipped: the file's outliers (a house with
33 bedrooms, houses with 0 bathrooms) stay, as a real data set has them.

**Target**: the standardised log price, :math:`y = (\ln p - \mu)/\sigma`, with :math:`\mu,\sigma`
the mean and standard deviation (ddof 0) of :math:`\ln p` over the training rows.  Prices run
from 75,000 to 7,700,000 dollars, right-skewed; on the log scale an MSE weighs a 10% error the
same for every house, instead of being ruled by the few mansions, and it is near 1 for a
constant prediction.  The price is :math:`\exp(\sigma y + \mu)` (``info["log_price_mean"]``,
``info["log_price_std"]``).

**Split**: train/validation/test rows by a seeded shuffle
(:func:`~optimlab.data._dataset.split_rows`), by default 70/10/20% (15,129 / 2,161 / 4,323).
The standardisation statistics of the inputs and the target come from the training rows only;
the zipcode list is fixed by the whole file, so the columns do not depend on the seed.
"""

from __future__ import annotations

import csv
import os

import numpy as np
import torch

from ._dataset import Dataset, Split, check_split, split_rows
from ._files import FormatError, RemoteFile, fetch

NAME = "kc-house"
FILE = RemoteFile(
    NAME,
    "kc_house_data.csv",
    (),
    "sha256",
    "d0875baa0251b21d4bdc9d2ae940a4fe0bb6009824f23dd0e2a5b2bf04557b7e",
    manual=(
        'download "kc_house_data.csv" from the Kaggle data set "House Sales in King County, USA" '
        "(https://www.kaggle.com/datasets/harlfoxem/housesalesprediction; a free Kaggle login is needed)"
    ),
)
NUMERIC = (
    "bedrooms", "bathrooms", "sqft_living", "sqft_lot", "floors", "waterfront", "view", "condition", "grade",
    "sqft_above", "sqft_basement", "yr_built", "yr_renovated", "lat", "long", "sqft_living15", "sqft_lot15",
)  # fmt: skip
COLUMNS = ("id", "date", "price", *NUMERIC[:13], "zipcode", *NUMERIC[13:])
MIN_ZIPCODE_SALES = 200


def load_kc_house(
    data_dir: str | os.PathLike[str] | None = None,
    *,
    download: bool = True,
    val_fraction: float = 0.1,
    test_fraction: float = 0.2,
    seed: int = 0,
) -> Dataset:
    """Load King County house sales: ``x`` float32 ``[N, 71]``, ``y`` float32 ``[N, 1]`` (see the module docstring).

    Args:
        data_dir: the data directory; the file is ``<data_dir>/kc-house/kc_house_data.csv``.
        download: accepted for a uniform interface; the file cannot be downloaded, so a missing
            file raises :class:`~optimlab.data.DataMissingError` saying where to get it.
        val_fraction, test_fraction: shares of the 21,613 rows held out.
        seed: seed of the row split.

    ``info`` holds ``feature_names`` (71), ``standardized`` (the 19 leading columns that are
    standardised), their training ``feature_mean`` and ``feature_std``, and ``log_price_mean`` and
    ``log_price_std``.
    """
    owner = f"load({NAME!r})"
    fractions = {"val_fraction": val_fraction, "test_fraction": test_fraction}
    check_split(owner, seed, **fractions)
    table = read_table(fetch(FILE, data_dir, download=download))
    x, names = encode(table)
    val_rows, test_rows, train_rows = split_rows(owner, len(x), seed, **fractions)
    k = len(NUMERIC) + 2
    mean, std = x[train_rows, :k].mean(axis=0), x[train_rows, :k].std(axis=0)
    x[:, :k] = (x[:, :k] - mean) / std
    log_price = np.log(table["price"])
    mu, sigma = log_price[train_rows].mean(), log_price[train_rows].std()
    y = ((log_price - mu) / sigma)[:, None]

    def part(rows: np.ndarray) -> Split | None:
        if not len(rows):
            return None
        return Split(torch.from_numpy(x[rows].astype(np.float32)), torch.from_numpy(y[rows].astype(np.float32)))

    info = {
        "feature_names": names,
        "standardized": k,
        "feature_mean": tuple(mean.tolist()),
        "feature_std": tuple(std.tolist()),
        "log_price_mean": float(mu),
        "log_price_std": float(sigma),
    }
    return Dataset(NAME, part(train_rows), part(val_rows), part(test_rows), None, info)


def read_table(path: str | os.PathLike[str]) -> dict[str, np.ndarray]:
    """Parse the CSV: ``id`` and ``zipcode`` as str arrays, ``date`` as int64 yyyymmdd, the rest float64.

    Raises:
        FormatError: a header other than Kaggle's, a short row, or a non-number.
    """
    with open(path, newline="") as f:
        rows = list(csv.reader(f))
    if not rows or tuple(rows[0]) != COLUMNS:
        raise FormatError(f"{path}: the header is {rows[0] if rows else 'missing'}, expected {list(COLUMNS)}")
    body = np.array(rows[1:], dtype=str)
    if body.ndim != 2 or body.shape[1] != len(COLUMNS):
        raise FormatError(f"{path}: every row must have {len(COLUMNS)} fields")
    table = {}
    for j, name in enumerate(COLUMNS):
        try:
            if name == "date":  # "20141013T000000" -> 20141013
                table[name] = body[:, j].astype("U8").astype(np.int64)
            else:
                table[name] = body[:, j] if name in ("id", "zipcode") else body[:, j].astype(np.float64)
        except ValueError as e:
            raise FormatError(f"{path}: column {name}: {e}") from e
    return table


def encode(table: dict[str, np.ndarray]) -> tuple[np.ndarray, tuple[str, ...]]:
    """The unstandardised inputs, float64 ``[N, 17 + 2 + zipcodes]``, and their names."""
    year, month = table["date"] // 10000, table["date"] // 100 % 100
    zipcodes, counts = np.unique(table["zipcode"], return_counts=True)
    kept = zipcodes[counts >= MIN_ZIPCODE_SALES]
    onehot = table["zipcode"][:, None] == kept[None, :]
    x = np.column_stack([*(table[c] for c in NUMERIC), year, month, onehot.astype(np.float64)])
    names = (*NUMERIC, "sale_year", "sale_month", *(f"zipcode_{z}" for z in kept))
    return x, names
