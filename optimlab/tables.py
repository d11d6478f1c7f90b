"""Writing tidy tables (CSV or Parquet) and run configurations (JSON) to disk.

Both writers are deterministic: the same rows or config give the same bytes, so a figure's
numbers and settings can be compared across runs with ``diff``.  Floats are written as Python's
``repr`` (the shortest text that reads back as the same double), so nothing is rounded away.
"""

from __future__ import annotations

import csv
import json
import math
import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

__all__ = ["write_table", "write_config"]


def write_table(
    rows: Sequence[Mapping[str, Any]], path: str | os.PathLike[str], *, columns: Sequence[str] | None = None
) -> Path:
    """Write ``rows`` (one mapping per row) as a table; returns the path written.

    The columns are ``columns`` if given (then ``rows`` may be empty: a header-only table), else
    the union of the rows' keys in order of first appearance; a row without a column leaves it
    empty.  A path ending in ``.parquet`` is written as Parquet (needs
    ``pyarrow``, the ``parquet`` extra), any other as CSV.  In CSV, floats are written as their
    ``repr``, ``None`` as an empty field and lists or tuples as JSON text.  Parent folders are
    created.

    Raises
    ------
    ValueError
        if ``rows`` is empty (a table without columns says nothing) or a row is not a mapping.
    ImportError
        for a ``.parquet`` path when pyarrow is not installed.
    """
    rows = list(rows)
    if not rows and columns is None:
        raise ValueError("write_table: invalid rows=[]: expected at least one row, or the columns")
    for i, row in enumerate(rows):
        if not isinstance(row, Mapping):
            raise ValueError(f"write_table: invalid rows[{i}]={row!r}: expected a mapping of column -> value")
    columns = list(columns) if columns is not None else list(dict.fromkeys(k for row in rows for k in row))
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    cleaned = [{c: _plain(row.get(c), f"rows[{i}][{c!r}]") for c in columns} for i, row in enumerate(rows)]
    if path.suffix == ".parquet":
        _write_parquet(cleaned, columns, path)
    else:
        with path.open("w", newline="", encoding="utf-8") as f:
            writer = csv.writer(f, lineterminator="\n")
            writer.writerow(columns)
            writer.writerows([_csv_field(row[c]) for c in columns] for row in cleaned)
    return path


def write_config(config: Mapping[str, Any], path: str | os.PathLike[str]) -> Path:
    """Write ``config`` as JSON with sorted keys and floats as their ``repr``; returns the path.

    Tuples, tensors and NumPy arrays become lists, NumPy scalars and ``torch.dtype`` plain values,
    paths strings.  JSON has no infinities or NaN, so those floats are written as the strings
    ``"inf"``, ``"-inf"`` and ``"nan"`` (``float()`` reads them back).  Parent folders are created.

    Raises
    ------
    ValueError
        if ``config`` is not a mapping, or holds a key that is not a string or a value JSON cannot
        represent (the message names where).
    """
    if not isinstance(config, Mapping):
        raise ValueError(f"write_config: invalid config of type {type(config).__name__}: expected a mapping")
    data = _plain(config, "config")
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    text = json.dumps(_json_floats(data), indent=2, sort_keys=True, ensure_ascii=False)
    path.write_text(text + "\n", encoding="utf-8")
    return path


def _plain(value: Any, where: str) -> Any:
    """``value`` as built-in Python types (None, bool, int, float, str, list, dict)."""
    if value is None or isinstance(value, (bool, int, float, str)):
        return value
    if isinstance(value, (np.generic, np.ndarray)):
        return _plain(value.tolist(), where)
    if isinstance(value, torch.Tensor):
        return _plain(value.detach().cpu().tolist(), where)
    if isinstance(value, (torch.dtype, os.PathLike)):
        return str(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValueError(f"tables: invalid key {k!r} in {where}: expected a string key")
            out[k] = _plain(v, f"{where}[{k!r}]")
        return out
    if isinstance(value, (list, tuple)):
        return [_plain(v, f"{where}[{i}]") for i, v in enumerate(value)]
    raise ValueError(f"tables: invalid value {value!r} at {where}: type {type(value).__name__} cannot be written")


def _json_floats(value: Any) -> Any:
    # json.dumps already writes finite floats as repr; only the non-finite ones need a spelling.
    if isinstance(value, float) and not math.isfinite(value):
        return repr(value)
    if isinstance(value, dict):
        return {k: _json_floats(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_json_floats(v) for v in value]
    return value


def _csv_field(value: Any) -> Any:
    if value is None:
        return ""
    if isinstance(value, float):
        return repr(value)
    if isinstance(value, (list, dict)):
        return json.dumps(_json_floats(value), sort_keys=True)
    return value


def _write_parquet(rows: list[dict[str, Any]], columns: list[str], path: Path) -> None:
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError as err:
        raise ImportError(
            f"write_table: writing {path} as Parquet needs pyarrow; install it with "
            "`pip install 'optimlab[parquet]'` or write a .csv path instead"
        ) from err
    pq.write_table(pa.Table.from_pydict({c: [row[c] for row in rows] for c in columns}), path)
