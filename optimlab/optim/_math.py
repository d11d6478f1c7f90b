"""Small numeric helpers: those that let one rule take Python numbers, tensors or TensorLists alike,
and the global gradient norm that LAMB's and Adan's classes compute for their rules."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor


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


def log(x: Any) -> Any:
    """The natural logarithm of a Python number (``math.log``) or of a tensor."""
    return x.log() if isinstance(x, Tensor) else math.log(x)


def global_grad_norm(opt: torch.optim.Optimizer, off: str) -> float:
    """The Euclidean norm of all gradients of ``opt`` (every param group), in double precision.

    For the global clips of LAMB and Adan: no single rule call sees every gradient, so the class
    computes this before its rule runs.  ``off`` says how the caller turns the clip off, for the
    error where no parameter has a gradient (a batched sweep cannot give them).
    """
    name = type(opt).__name__
    grads = [p.grad for group in opt.param_groups for p in group["params"] if p.grad is not None]
    if not grads:
        raise ValueError(
            f"{name}: max_grad_norm clips by the norm of all the optimizer's gradients, and no parameter has one "
            f"(a batched sweep cannot give them); use {off}"
        )
    if any(g.is_sparse for g in grads):  # the step's own error, before the norm fails on it
        raise RuntimeError(f"{name} does not support sparse gradients")
    return math.sqrt(sum(float(torch.linalg.vector_norm(g.double())) ** 2 for g in grads))
