"""Hyperparameter checks shared by every optimizer.

Every message names the optimizer, the parameter, the value given and what is allowed, so a typo
in a config file is found from the error alone.  The same checks run wherever a hyperparameter
enters: the constructor, ``add_param_group`` and ``load_state_dict``.

A number may be a Python ``int``/``float``, a NumPy scalar or a one-element tensor (torch.optim
accepts a tensor ``lr``), and is checked by its value.  ``True``/``False`` are not numbers here
(Python would take ``lr=True`` as 1).  A value of the wrong type raises :class:`HyperparameterTypeError`,
a ``TypeError`` that is also a ``ValueError``, so code that catches ``ValueError`` for a bad
hyperparameter (the lab's command line does) catches every one.
"""

from __future__ import annotations

import math
import numbers
from typing import Any

import torch


class HyperparameterTypeError(TypeError, ValueError):
    """A hyperparameter of the wrong type (a string, a bool for a number, a number for a pair)."""


def number(owner: str, name: str, value: Any, allowed: str = "") -> float:
    """``value`` as a float, or :class:`HyperparameterTypeError` unless it is a real number.

    ``allowed`` (the range, say) completes the message.
    """
    if torch.is_tensor(value):
        # torch accepts a one-element tensor lr; bool and complex tensors are no more numbers than bool and complex
        if value.numel() == 1 and not value.dtype.is_complex and value.dtype != torch.bool:
            return float(value.item())
    elif isinstance(value, numbers.Real) and not isinstance(value, bool):
        return float(value)
    what = "a number (int, float, NumPy scalar or one-element tensor)"
    raise HyperparameterTypeError(
        f"{owner}: invalid {name}={value!r}: expected {what}{' with ' + allowed if allowed else ''}"
    )


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

    ``None`` for a bound means unbounded on that side.  NaN is always rejected; a value that is
    not a number raises :class:`HyperparameterTypeError`.
    """
    lo = "" if low is None else f"{_fmt(low)} {'<' if low_open else '<='} "
    hi = "" if high is None else f" {'<' if high_open else '<='} {_fmt(high)}"
    allowed = f"{lo}{name}{hi}"
    v = number(owner, name, value, allowed)
    bad = math.isnan(v)
    if low is not None:
        bad |= v <= low if low_open else v < low
    if high is not None:
        bad |= v >= high if high_open else v > high
    if bad:
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected {allowed}")


def check_tuple(owner: str, name: str, value: Any, parts: str, n: int) -> tuple[Any, ...]:
    """``value`` as a tuple, or an error unless it is a tuple or list of ``n`` (2 or 3) entries, named by ``parts``."""
    expected = f"expected {'a pair' if n == 2 else 'a triple'} {parts}"
    if not isinstance(value, (tuple, list)):
        raise HyperparameterTypeError(f"{owner}: invalid {name}={value!r}: {expected}")
    if len(value) != n:
        got = f"{len(value)} value{'' if len(value) == 1 else 's'}"
        raise ValueError(f"{owner}: invalid {name}={value!r}: {expected}, got {got}")
    return tuple(value)


def check_pair(owner: str, name: str, value: Any, parts: str) -> tuple[Any, Any]:
    """``value`` unpacked, or an error unless it is a tuple or list of two entries (``parts`` names them)."""
    first, second = check_tuple(owner, name, value, parts, 2)
    return first, second


def check_betas(owner: str, group: dict[str, Any], name: str = "betas", n: int = 2) -> None:
    """``group[name]`` is a pair of numbers in [0, 1), or ``n`` of them (Adan's and AdEMAMix's triples)."""
    parts = f"({', '.join(f'beta{i}' for i in range(1, n + 1))})"
    for i, beta in enumerate(check_tuple(owner, name, group[name], parts, n)):
        check_range(owner, f"{name}[{i}]", beta, 0.0, 1.0, high_open=True)


def check_adam_family(owner: str, group: dict[str, Any], n_betas: int = 2) -> None:
    """What every Adam-like optimizer checks: ``lr``, ``eps``, ``weight_decay`` >= 0, ``n_betas`` betas in [0, 1)."""
    check_range(owner, "lr", group["lr"], 0.0)
    check_betas(owner, group, n=n_betas)
    check_range(owner, "eps", group["eps"], 0.0)
    check_range(owner, "weight_decay", group["weight_decay"], 0.0)


def check_int(owner: str, name: str, value: Any, low: int) -> None:
    """Raise an error unless ``value`` is an integer (Python or NumPy, not a bool) ``>= low``."""
    if not isinstance(value, numbers.Integral) or isinstance(value, bool):
        raise HyperparameterTypeError(f"{owner}: invalid {name}={value!r}: expected an integer >= {low}")
    if value < low:
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected an integer >= {low}")


def check_flag(owner: str, name: str, value: Any, *, none: bool = False) -> None:
    """Raise :class:`HyperparameterTypeError` unless ``value`` is ``True`` or ``False`` (or ``None`` if ``none``).

    A string such as ``"false"`` would otherwise count as true.
    """
    if isinstance(value, bool) or (none and value is None):
        return
    allowed = "None, True or False" if none else "True or False"
    raise HyperparameterTypeError(f"{owner}: invalid {name}={value!r}: expected {allowed}")


def check_choice(owner: str, name: str, value: Any, choices: tuple[Any, ...]) -> None:
    """Raise ``ValueError`` unless ``value`` is one of ``choices``."""
    if value not in choices:
        raise ValueError(f"{owner}: invalid {name}={value!r}: expected one of {', '.join(map(repr, choices))}")


def check_dtype(owner: str, name: str, value: Any, *, none: str | None = None) -> torch.dtype | None:
    """``value`` as a floating-point torch.dtype, given as one or by its name (``"float64"``, ``"torch.float64"``:
    the form a run's JSON configuration keeps); :class:`HyperparameterTypeError` for anything else.

    With ``none`` (what ``None`` means, for the message), ``None`` is allowed and returned.
    """
    if value is None and none is not None:
        return None
    dtype = getattr(torch, value.removeprefix("torch."), None) if isinstance(value, str) else value
    if not (isinstance(dtype, torch.dtype) and dtype.is_floating_point):
        allowed = "a floating-point torch.dtype such as torch.float64 (or its name, 'float64')"
        raise HyperparameterTypeError(
            f"{owner}: invalid {name}={value!r}: expected {f'None ({none}) or ' if none else ''}{allowed}"
        )
    return dtype


def _fmt(x: float) -> str:
    return repr(x) if isinstance(x, float) and (abs(x) < 1e-3 or abs(x) >= 1e4) and x != 0 else f"{x:g}"
