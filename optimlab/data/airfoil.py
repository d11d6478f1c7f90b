r"""NASA airfoil self-noise (Brooks, Pope & Marcolini, 1989; UCI ML Repository #291; CC BY 4.0), as d2l.ai uses it.

1,503 rows of 6 tab-separated numbers: frequency (Hz), angle of attack (deg), chord length (m),
free-stream velocity (m/s), suction-side displacement thickness (m), and the scaled sound
pressure level (dB), the regression target.

The preprocessing is d2l.ai's ``get_data_ch11`` (Dive into Deep Learning, section 12.5,
"Minibatch Stochastic Gradient Descent"), step for step, so results compare with the book's:
parse as float32 with ``numpy.genfromtxt``, standardise every column over all 1,503 rows with
float32 numpy arithmetic,

.. math:: z_{ij} = \frac{a_{ij} - \bar a_j}{\sigma_j},\qquad
          \sigma_j = \sqrt{\tfrac{1}{1503}\textstyle\sum_i (a_{ij} - \bar a_j)^2}\ \ (\text{ddof } 0),

then keep the first ``n`` = 1,500 rows.  d2l trains and reports on those rows only, so there is no
validation or test split.  The file and its sha1 are d2l's ``DATA_HUB['airfoil']``.

The result is d2l's tensor bit for bit (the tests compare with ``torch.equal``).  It is not the
exact standardisation: numpy sums the float32 columns row by row, so d2l's means and standard
deviations are off by up to 5e-6 (relative), and the values differ from a float64 standardisation
by up to 1.9e-5 (velocity column; 1.2e-6 would come from float32 storage alone).  We keep d2l's
numbers so that the data set is the book's; the gap is far below anything an optimizer
comparison can see.
"""

from __future__ import annotations

import os

import numpy as np
import torch

from ._dataset import Dataset, Split
from ._files import FormatError, RemoteFile, fetch

NAME = "airfoil"
FILE = RemoteFile(
    NAME,
    "airfoil_self_noise.dat",
    ("http://d2l-data.s3-accelerate.amazonaws.com/airfoil_self_noise.dat",),
    "sha1",
    "76e5be1548fd8222e5074cf0faae75edff8cf93f",
)
ROWS = 1503
FEATURES = (
    "frequency", "angle_of_attack", "chord_length", "free_stream_velocity", "suction_side_displacement_thickness"
)  # fmt: skip
TARGET = "scaled_sound_pressure_level"


def load_airfoil(data_dir: str | os.PathLike[str] | None = None, *, download: bool = True, n: int = 1500) -> Dataset:
    """Load the airfoil data as d2l does: ``train.x`` float32 ``[n, 5]``, ``train.y`` float32 ``[n, 1]``.

    Args:
        data_dir: the data directory; the file is ``<data_dir>/airfoil/airfoil_self_noise.dat``.
        download: fetch the file from d2l's data hub if missing (``False`` raises instead).
        n: how many leading rows to keep, 1..1503 (d2l's default 1500).

    ``val`` and ``test`` are ``None``.  ``info`` holds ``feature_names``, ``target_name``, and the
    per-column ``mean`` and ``std`` (float32, 6 values, target last) that undo the standardisation.
    """
    if isinstance(n, bool) or not isinstance(n, int) or not 1 <= n <= ROWS:
        raise ValueError(f"load({NAME!r}): invalid n={n!r}: expected an integer with 1 <= n <= {ROWS}")
    path = fetch(FILE, data_dir, download=download)
    try:
        data = np.genfromtxt(path, dtype=np.float32, delimiter="\t")
    except ValueError as e:  # rows of different lengths
        raise FormatError(f"{path}: expected {ROWS} rows of 6 tab-separated numbers: {e}") from e
    if data.shape != (ROWS, 6) or not np.isfinite(data).all():
        raise FormatError(f"{path}: expected {ROWS} rows of 6 tab-separated numbers, got {data.shape} or non-numbers")
    mean, std = data.mean(axis=0), data.std(axis=0)
    data = torch.from_numpy((data - mean) / std)
    info = {"feature_names": FEATURES, "target_name": TARGET, "mean": tuple(mean.tolist()), "std": tuple(std.tolist())}
    return Dataset(NAME, Split(data[:n, :-1].contiguous(), data[:n, -1:].contiguous()), None, None, None, info)
