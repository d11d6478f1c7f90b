"""Small helpers that let one rule take Python numbers, tensors or TensorLists alike."""

from __future__ import annotations

from typing import Any

import torch


def is_zero(x: Any) -> bool:
    """True only for a Python number equal to 0.

    Rules skip a term (weight decay, say) only when this is true: a tensor hyperparameter (one
    value per sweep configuration) always takes the general path, so no Python branch ever
    depends on a tensor's value.
    """
    return isinstance(x, (int, float)) and x == 0


def where(cond: Any, a: Any, b: Any) -> Any:
    """``a`` where ``cond`` holds, else ``b``: a Python choice for a bool, ``torch.where`` otherwise."""
    if isinstance(cond, bool):
        return a if cond else b
    return torch.where(cond, a, b)
