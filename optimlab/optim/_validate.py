"""Hyperparameter checks shared by every optimizer.

Every message names the optimizer, the parameter, the value given and the allowed range, so a
typo in a config file is found from the error alone.
"""

from __future__ import annotations

import math
from typing import Any


def check_range(
    owner: str,
    name: str,
    value: Any,
    low: float | None = None,
    high: float | None = None,
    *,
    low_open: bool = False,
    high_open: bool = False,
) -> None:
    """Raise ``ValueError`` unless ``low <= value <= high`` (bounds open where asked).

    ``None`` for a bound means unbounded on that side.  NaN is always rejected.
    """
    lo = "" if low is None else f"{_fmt(low)} {'<' if low_open else '<='} "
    hi = "" if high is None else f" {'<' if high_open else '<='} {_fmt(high)}"
    allowed = f"{lo}{name}{hi}"
    try:
        v = float(value)
    except (TypeError, ValueError):
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected a number with {allowed}") from None
    bad = math.isnan(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected {allowed}")


def check_adam_family(owner: str, group: dict[str, Any]) -> None:
    """The checks every Adam-like optimizer shares: ``lr``, ``eps``, ``weight_decay`` >= 0, betas in [0, 1)."""
    check_range(owner, "lr", group["lr"], 0.0)
    beta1, beta2 = group["betas"]
    check_range(owner, "betas[0]", beta1, 0.0, 1.0, high_open=True)
    check_range(owner, "betas[1]", beta2, 0.0, 1.0, high_open=True)
    check_range(owner, "eps", group["eps"], 0.0)
    check_range(owner, "weight_decay", group["weight_decay"], 0.0)


def check_int(owner: str, name: str, value: Any, low: int) -> None:
    """Raise ``ValueError`` unless ``value`` is an integer ``>= low``."""
    if isinstance(value, bool) or not isinstance(value, int) or value < low:
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected an integer >= {low}")


def check_choice(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected one of {', '.join(map(repr, choices))}")


def _fmt(x: float) -> str:
    return repr(x) if isinstance(x, float) and (abs(x) < 1e-3 or abs(x) >= 1e4) and x != 0 else f"{x:g}"
