"""Shampoo against Distributed Shampoo v1.0.0 (facebookresearch/optimizers), written out below.

The official package is not on PyPI, and its repository's code needs CUDA or ``torch.distributed``
for its defaults (DTensor buffers), so :class:`ReferenceShampoo` is its single-device algorithm
written from ``distributed_shampoo/distributed_shampoo.py`` and ``utils/shampoo_utils.py`` /
``utils/matrix_functions.py`` at tag v1.0.0: the same order of operations, in-place updates, blocks
from its ``merge_small_dims``/``multi_dim_split``/``multi_dim_cat``, its eigen root inverse in the
factor matrices' dtype, and its gradient clipping (``max_grad_norm``).  Its ``matrix_inverse_root``
also has the coupled Newton iteration (``RootInvMethod.NEWTON``, ``max_iterations=1000``,
``tolerance=1e-6``), which its v1.0.0 optimizer never asks for: ``root_inv_method``,
``newton_max_iterations`` and ``newton_tolerance`` choose it here.

``preconditioner_dtype`` (float32 by default) holds the factor matrices, their roots and the filtered
gradient, as at v1.0.0, whose preconditioning then fails for any other parameter dtype (``tensordot`` of
a float32 gradient with a float64 root: "both inputs should have same dtype"; its cast back,
``preconditioned_grad.to(dtype=grad.dtype)``, is a no-op).  Here the gradient is cast to that dtype for
the products and the result back, as the official code does in later releases (``_precondition_grad``); each outer
product is formed in the gradient's dtype and rounded to ``preconditioner_dtype``, as in both.

The cases run ours and the reference with ``preconditioner_dtype`` the parameters' dtype unless they name
one, so that a float64 run is float64 throughout (the default would keep float32 factors).
"""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import Tensor

from optimlab.optim import Shampoo

from .harness import Case


def merge_small_dims(shape: list[int], threshold: int) -> list[int]:
    new_shape = [shape[0]]
    for d in shape[1:]:
        if new_shape[-1] == 1 or d == 1 or new_shape[-1] * d <= threshold:
            new_shape[-1] *= d
        else:
            new_shape.append(d)
    return new_shape


def multi_dim_split(t: Tensor, splits: list[int]) -> list[Tensor]:
    pieces = [t]
    for dim, split in enumerate(splits):
        pieces = [s for p in pieces for s in torch.split(p, split, dim=dim)]
    return pieces


def multi_dim_cat(pieces: list[Tensor], num_splits: list[int]) -> Tensor:
    for dim, n in reversed(list(enumerate(num_splits))):
        if n > 0:
            pieces = [torch.cat(pieces[i : i + n], dim=dim) for i in range(0, len(pieces), n)]
    assert len(pieces) == 1
    return pieces[0]


def matrix_inverse_root(
    a: Tensor, root: int, epsilon: float, exponent_multiplier: float, group: dict[str, Any]
) -> Tensor:
    """``matrix_inverse_root`` with ``RootInvMethod.EIGEN`` or ``NEWTON`` (``group["root_inv_method"]``),
    ``is_diagonal=False``."""
    alpha = -exponent_multiplier / root
    if a.numel() == 1:
        return (a + epsilon) ** alpha
    if group["root_inv_method"] == "newton":
        return matrix_inverse_root_newton(a, root, epsilon, group["newton_max_iterations"], group["newton_tolerance"])
    eigenvalues, q = torch.linalg.eigh(a)
    eigenvalues += -torch.minimum(torch.min(eigenvalues), torch.as_tensor(0.0, dtype=a.dtype))
    eigenvalues += epsilon
    return q * eigenvalues.pow(alpha).unsqueeze(0) @ q.T


def dtype_of(params: Any) -> torch.dtype:
    """The dtype of the first tensor of ``params`` (tensors or param-group dicts); float32 if none."""
    for x in params:
        for t in x["params"] if isinstance(x, dict) else [x]:
            return t.dtype
    return torch.float32


def matrix_inverse_root_newton(a: Tensor, root: int, epsilon: float, max_iterations: int, tolerance: float) -> Tensor:
    """``_matrix_inverse_root_newton``: the coupled inverse Newton iteration."""
    identity = torch.eye(a.shape[0], dtype=a.dtype)
    a = a + epsilon * identity
    z = (root + 1) / (2 * torch.linalg.norm(a))
    x, m = z ** (1 / root) * identity, z * a
    iteration, error = 0, torch.dist(m, identity, p=torch.inf)
    while error > tolerance and iteration < max_iterations:
        iteration += 1
        m_p = m.mul(-1 / root).add_(identity, alpha=1 + 1 / root)
        x = x @ m_p
        m = torch.linalg.matrix_power(m_p, root) @ m
        error = torch.dist(m, identity, p=torch.inf)
    return x


class Grafting:
    """``AdagradGrafting`` and its RMSProp/Adam subclasses (beta2, epsilon, bias correction), and SGD's."""

    def __init__(self, param: Tensor, kind: str, beta2: float, epsilon: float) -> None:
        self.kind, self.epsilon = kind, epsilon
        self.beta2 = 1.0 if kind == "adagrad" else beta2
        self.use_bias_correction = kind in ("adagrad", "adam")
        self.preconditioner = torch.zeros_like(param)
        self.bias_correction2 = 1.0

    def update_preconditioners(self, grad: Tensor, iteration: int) -> None:
        if self.kind == "sgd":
            return
        if self.beta2 == 1.0:
            self.preconditioner.addcmul_(grad, grad, value=1)
        else:
            self.preconditioner.mul_(self.beta2).addcmul_(grad, grad, value=1 - self.beta2)
        if self.use_bias_correction and self.beta2 < 1.0:
            self.bias_correction2 = 1.0 - self.beta2**iteration

    def precondition(self, grad: Tensor) -> Tensor:
        if self.kind == "sgd":
            return grad
        return grad / (self.preconditioner / self.bias_correction2).sqrt().add_(self.epsilon)

    def direction_norm(self, grad: Tensor) -> Tensor:
        return torch.linalg.norm(self.precondition(grad))


class BlockPreconditioner:
    """``ShampooPreconditioner`` of one block (its ``diagonal_threshold`` is None under blocking)."""

    def __init__(self, block: Tensor, group: dict[str, Any], start: int) -> None:
        self.group, self.start, self.order = group, start, block.dim()
        self.beta1, self.beta2 = group["betas"]
        self.dtype = group["preconditioner_dtype"]
        self.bias_correction2 = 1.0
        self.filtered_grad = torch.zeros_like(block, dtype=self.dtype) if self.beta1 != 0.0 else None
        override = group["exponent_override"]
        if isinstance(override, list):
            self.root = 2 * self.order if self.order > len(override) else override[self.order - 1]
        else:
            self.root = 2 * self.order if override == 0 else override
        self.factor_matrices = [torch.zeros(d, d, dtype=self.dtype) for d in block.shape]
        self.inv_factor_matrices = [torch.zeros(d, d, dtype=self.dtype) for d in block.shape]
        kind = group["grafting_type"]
        self.grafting = (
            None if kind is None else Grafting(block, kind, group["grafting_beta2"], group["grafting_epsilon"])
        )

    def update_preconditioners(self, grad: Tensor, iteration: int) -> None:
        for k, factor in enumerate(self.factor_matrices):
            if self.beta2 != 1.0:
                factor.mul_(self.beta2)
            contract = [*range(k)] + [*range(k + 1, self.order)]
            outer = torch.tensordot(grad, grad, dims=(contract, contract)).to(self.dtype)
            factor.add_(outer, alpha=1 - self.beta2 if self.beta2 != 1.0 else 1.0)
        if self.grafting is not None:
            self.grafting.update_preconditioners(grad, iteration)
        if self.group["use_bias_correction"] and self.beta2 < 1.0:
            self.bias_correction2 = 1.0 - self.beta2**iteration

    def compute_root_inverse(self) -> None:
        for factor, inverse in zip(self.factor_matrices, self.inv_factor_matrices):
            inverse.copy_(
                matrix_inverse_root(
                    factor / self.bias_correction2,
                    self.root,
                    self.group["epsilon"],
                    self.group["exponent_multiplier"],
                    self.group,
                )
            )

    def precondition(self, grad: Tensor, iteration: int) -> Tensor:
        if self.beta1 != 0.0:
            bias_correction1 = 1.0 - self.beta1**iteration if self.group["use_bias_correction"] else 1.0
            self.filtered_grad.mul_(self.beta1).add_(grad, alpha=1 - self.beta1)
            grad.copy_(self.filtered_grad / bias_correction1)
        if iteration < self.start:
            return self.grafting.precondition(grad) if self.grafting is not None else grad
        preconditioned = grad.to(self.dtype)
        for inverse in self.inv_factor_matrices:
            preconditioned = torch.tensordot(preconditioned, inverse, [[0], [0]])
        preconditioned = preconditioned.to(grad.dtype)
        if self.grafting is not None:
            grafting_norm = self.grafting.direction_norm(grad)
            shampoo_norm = torch.linalg.norm(preconditioned)
            preconditioned.mul_(grafting_norm).div_(shampoo_norm + 1e-16)
        return preconditioned


class ReferenceShampoo(torch.optim.Optimizer):
    """``DistributedShampoo`` v1.0.0 on one device, ``LargeDimMethod.BLOCKING`` (its default).

    ``grafting_type`` is a string (its GraftingType's name in lower case, or None).  Like the
    official class, it reads the options of the first group's construction for every group; the
    cases give both groups the same.
    """

    def __init__(
        self,
        params: Any,
        lr: float = 1e-2,
        betas: tuple[float, float] = (0.9, 1.0),
        epsilon: float = 1e-12,
        momentum: float = 0.0,
        weight_decay: float = 0.0,
        max_preconditioner_dim: int = 1024,
        precondition_frequency: int = 1,
        start_preconditioning_step: int = -1,
        exponent_override: int | list[int] = 0,
        exponent_multiplier: float = 1.0,
        use_nesterov: bool = False,
        use_bias_correction: bool = True,
        use_decoupled_weight_decay: bool = True,
        grafting_type: str | None = "adagrad",
        grafting_epsilon: float = 1e-3,
        grafting_beta2: float = 1.0,
        use_merge_dims: bool = True,
        preconditioner_dtype: torch.dtype = torch.float,
        max_grad_norm: float | None = None,
        root_inv_method: str = "eigen",
        newton_max_iterations: int = 1000,
        newton_tolerance: float = 1e-6,
    ) -> None:
        options = dict(locals())
        del options["self"], options["params"], options["__class__"]
        super().__init__(params, options)
        self.max_grad_norm = max_grad_norm
        self.frequency = precondition_frequency
        self.start = precondition_frequency if start_preconditioning_step == -1 else start_preconditioning_step
        for group in self.param_groups:
            for p in group["params"]:
                state = self.state[p]
                state["step"] = torch.tensor(0)
                if group["momentum"] != 0.0:
                    state["momentum"] = torch.zeros_like(p)
                merged = merge_small_dims(list(p.shape), max_preconditioner_dim) if use_merge_dims else list(p.shape)
                state["merged"] = merged
                state["num_splits"] = [math.ceil(d / max_preconditioner_dim) for d in merged]
                blocks = multi_dim_split(p.view(merged), [max_preconditioner_dim] * len(merged))
                state["blocks"] = [BlockPreconditioner(b, group, self.start) for b in blocks]

    def _split(self, t: Tensor, state: dict[str, Any], group: dict[str, Any]) -> list[Tensor]:
        return multi_dim_split(t.view(state["merged"]), [group["max_preconditioner_dim"]] * len(state["merged"]))

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        live = [(g, p) for g in self.param_groups for p in g["params"] if p.grad is not None]
        for _, p in live:
            self.state[p]["step"] += 1
        iteration = self.state[live[-1][1]]["step"].item()
        grads = {p: p.grad.clone() for _, p in live}
        if self.max_grad_norm is not None:  # _clip_gradients: one norm over every group
            total = 0.0
            for grad in grads.values():
                total += torch.norm(grad) ** 2
            total = torch.sqrt(total)
            clip = 1.0 if total <= self.max_grad_norm else total / self.max_grad_norm
            for grad in grads.values():
                grad.div_(clip)
        for group, p in live:  # _update_preconditioners
            grad = grads[p]
            if not group["use_decoupled_weight_decay"] and group["weight_decay"] != 0:
                grad.add_(p, alpha=group["weight_decay"])
            state = self.state[p]
            for block, g in zip(state["blocks"], self._split(grad, state, group)):
                block.update_preconditioners(g, iteration)
        if iteration % self.frequency == 0 and iteration >= self.start:
            for _, p in live:
                for block in self.state[p]["blocks"]:
                    block.compute_root_inverse()
        for group in self.param_groups:
            lr, momentum, weight_decay = group["lr"], group["momentum"], group["weight_decay"]
            params = [p for p in group["params"] if p.grad is not None]
            directions = []
            for p in params:
                state = self.state[p]
                pieces = [
                    block.precondition(g, iteration)
                    for block, g in zip(state["blocks"], self._split(grads[p].clone(), state, group))
                ]
                directions.append(multi_dim_cat(pieces, state["num_splits"]).view(p.shape))
            if group["use_decoupled_weight_decay"] and weight_decay != 0.0:
                if momentum == 0.0:
                    torch._foreach_mul_(params, 1.0 - lr * weight_decay)
                else:
                    torch._foreach_add_(directions, params, alpha=weight_decay)
            if momentum != 0.0:
                buffers = [self.state[p]["momentum"] for p in params]
                torch._foreach_mul_(buffers, momentum)
                torch._foreach_add_(buffers, directions)
                if group["use_nesterov"]:
                    torch._foreach_add_(directions, buffers, alpha=momentum)
                else:
                    directions = buffers
            torch._foreach_add_(params, directions, alpha=-lr)


#: a vector, a matrix, a 4-D tensor, a vector longer than max_preconditioner_dim (8 below), and a
#: matrix of which both dimensions are (no 0-dim tensor: the reference fails on it)
SHAPES = ((7,), (16, 3), (4, 2, 3, 3), (20,), (5, 5), (12, 10))

INVALID = [
    (dict(lr=-0.1), r"^Shampoo: invalid lr=-0\.1: expected 0 <= lr$"),
    (dict(betas=(1.0, 1.0)), r"^Shampoo: invalid betas\[0\]=1\.0: expected 0 <= betas\[0\] < 1$"),
    (dict(betas=(0.9, 0.0)), r"^Shampoo: invalid betas\[1\]=0\.0: expected 0 < betas\[1\] <= 1$"),
    (dict(betas=0.9), r"^Shampoo: invalid betas=0\.9: expected a pair \(beta1, beta2\)$"),
    (dict(epsilon=0.0), r"^Shampoo: invalid epsilon=0\.0: expected 0 < epsilon$"),
    (dict(momentum=1.0), r"^Shampoo: invalid momentum=1\.0: expected 0 <= momentum < 1$"),
    (dict(weight_decay=-1e-3), r"^Shampoo: invalid weight_decay=-0\.001: expected 0 <= weight_decay$"),
    (dict(max_preconditioner_dim=0), r"^Shampoo: invalid max_preconditioner_dim=0: expected an integer >= 1$"),
    (dict(max_preconditioner_dim=8.0), r"^Shampoo: invalid max_preconditioner_dim=8\.0: expected an integer >= 1$"),
    (dict(precondition_frequency=0), r"^Shampoo: invalid precondition_frequency=0: expected an integer >= 1$"),
    (
        dict(precondition_frequency=10, start_preconditioning_step=5),
        (
            r"^Shampoo: invalid start_preconditioning_step=5: expected -1 \(precondition_frequency\) or an integer "
            r">= precondition_frequency=10$"
        ),
    ),
    (
        dict(start_preconditioning_step=-2),
        r"^Shampoo: invalid start_preconditioning_step=-2: expected an integer >= -1$",
    ),
    (dict(exponent_override=-1), r"^Shampoo: invalid exponent_override=-1: expected an integer >= 0$"),
    (dict(exponent_override=[2, 1.5]), r"^Shampoo: invalid exponent_override\[1\]=1\.5: expected an integer >= 0$"),
    (dict(exponent_multiplier=0.0), r"^Shampoo: invalid exponent_multiplier=0\.0: expected 0 < exponent_multiplier$"),
    (dict(grafting_type="ADAM"), r"^Shampoo: invalid grafting_type='ADAM': expected one of None, 'sgd', 'adagrad', "),
    (dict(grafting_type=3), r"^Shampoo: invalid grafting_type=3: expected one of None, 'sgd'"),
    (dict(grafting_epsilon=-1.0), r"^Shampoo: invalid grafting_epsilon=-1\.0: expected 0 < grafting_epsilon$"),
    (dict(grafting_beta2=1.5), r"^Shampoo: invalid grafting_beta2=1\.5: expected 0 < grafting_beta2 <= 1$"),
    (dict(use_nesterov="yes"), r"^Shampoo: invalid use_nesterov='yes': expected True or False$"),
    (
        dict(preconditioner_dtype="bf16"),
        r"^Shampoo: invalid preconditioner_dtype='bf16': expected a floating-point torch\.dtype such as torch\.float64 "
        r"\(or its name, 'float64'\)$",
    ),
    (
        dict(preconditioner_dtype=torch.int32),
        r"^Shampoo: invalid preconditioner_dtype=torch\.int32: expected a floating",
    ),
    (dict(max_grad_norm=0.0), r"^Shampoo: invalid max_grad_norm=0\.0: expected 0 < max_grad_norm$"),
    (dict(max_grad_norm="1"), r"^Shampoo: invalid max_grad_norm='1': expected a number"),
    (dict(root_inv_method="svd"), r"^Shampoo: invalid root_inv_method='svd': expected one of 'eigen', 'newton'$"),
    (
        dict(root_inv_method="newton", exponent_multiplier=0.5),
        (
            r"^Shampoo: invalid exponent_multiplier=0\.5 with root_inv_method='newton': the coupled Newton iteration "
            r"takes only exponent_multiplier=1 \(as the reference\)$"
        ),
    ),
    (dict(newton_max_iterations=0), r"^Shampoo: invalid newton_max_iterations=0: expected an integer >= 1$"),
    (dict(newton_tolerance=-1e-6), r"^Shampoo: invalid newton_tolerance=-1e-06: expected 0 <= newton_tolerance$"),
]


#: why the standard low-precision check (20 steps, the float32 run within 1e-4 of the float64 one) is
#: skipped for some cases.  A factor matrix is a sum of t outer products: for t below its size it is
#: singular, and the rounding of its entries in the parameter's dtype (float32: ~1e-7 of them) moves its
#: zero eigenvalues by more than epsilon; the inverse root then multiplies the gradient's part in those
#: directions by a factor that rounding decides (whether the eigendecomposition is then taken in float32, as
#: the reference's, or in float64).  The float64 parity tests and the float32 check against the reference's
#: float64 run (which meets the bar) are unaffected; test_shampoo.py checks low-precision runs where the
#: factors have full rank.
SINGULAR_FACTORS = "rank-deficient factor matrices in this dtype: see cases_shampoo.SINGULAR_FACTORS"
#: the low-precision check asserts that every state has the parameter's dtype
FLOAT64_STATE = "factor matrices in float64 by design (preconditioner_dtype): test_shampoo.py checks low precision"


def _case(
    id: str,
    shapes: tuple[tuple[int, ...], ...] = SHAPES,
    low_precision_skips: tuple[torch.dtype, ...] = (),
    why: str = SINGULAR_FACTORS,
    **kw: Any,
) -> Case:
    return Case(
        id,
        make=lambda p, **o: Shampoo(p, **{"preconditioner_dtype": dtype_of(p), **kw, **o}),
        reference=lambda p: ReferenceShampoo(p, **{"preconditioner_dtype": dtype_of(p), **kw}),
        solver=None,  # test_shampoo.py solves a matrix problem
        shapes=shapes,
        invalid=INVALID,
        extra={"refuses_dtypes": dict.fromkeys(low_precision_skips, why)},
    )


SMALL_BLOCKS = dict(max_preconditioner_dim=8)
CASES = [
    # the defaults: AdaGrad grafting, beta2 = 1 (sums), beta1 = 0.9, a root every step
    _case("Shampoo", low_precision_skips=(torch.float32,), **SMALL_BLOCKS),
    # every tensor in one block, merged into a vector: a 120 x 120 factor of rank t < 120 whose near-zero
    # eigenvalues (rounding, ~1e-15) meet epsilon = 1e-12 amplifies rounding by epsilon**-0.5; two correct
    # float64 runs then differ by ~1e-9 of the displacement (measured), so epsilon = 1e-10 here
    _case("Shampoo-large-blocks", epsilon=1e-10, low_precision_skips=(torch.float32,)),
    _case(
        "Shampoo-adam-grafting",
        lr=3e-3,
        betas=(0.95, 0.99),
        epsilon=1e-8,
        weight_decay=0.1,
        precondition_frequency=5,
        start_preconditioning_step=12,
        grafting_type="adam",
        grafting_beta2=0.999,
        grafting_epsilon=1e-8,
        # float16: 1e-8 is 0 in float16, and a gradient entry under 2.4e-4 squares to 0: 0 / 0
        low_precision_skips=(torch.float16,),
        **SMALL_BLOCKS,
    ),
    _case(
        "Shampoo-rmsprop-grafting-momentum",
        betas=(0.0, 0.999),
        epsilon=1e-10,
        momentum=0.9,
        weight_decay=0.01,
        grafting_type="rmsprop",
        grafting_beta2=0.99,
        grafting_epsilon=1e-8,
        use_merge_dims=False,
        low_precision_skips=(torch.float32, torch.float16),
        **SMALL_BLOCKS,
    ),
    _case(
        "Shampoo-nesterov-coupled-decay",
        momentum=0.5,
        use_nesterov=True,
        weight_decay=0.01,
        use_decoupled_weight_decay=False,
        use_bias_correction=False,
        betas=(0.9, 0.95),
        exponent_override=[2, 2],
        exponent_multiplier=0.5,
        grafting_type="sgd",
        **SMALL_BLOCKS,
    ),
    # float32 parameters with float64 factors, roots and filtered gradient in the float32 check
    _case(
        "Shampoo-float64-preconditioner",
        preconditioner_dtype=torch.float64,
        low_precision_skips=(torch.float32, torch.bfloat16, torch.float16),
        why=FLOAT64_STATE,
        **SMALL_BLOCKS,
    ),
    # the gradients of both groups together have a norm of 15.4-19.4 (17.1 on average): 119 of the 200
    # steps clip, before the coupled weight decay
    _case(
        "Shampoo-max-grad-norm",
        max_grad_norm=17.0,
        weight_decay=0.01,
        use_decoupled_weight_decay=False,
        momentum=0.5,
        low_precision_skips=(torch.float32,),
        **SMALL_BLOCKS,
    ),
    # the coupled Newton iteration, which diverges where rounding leaves an eigenvalue of a rank-deficient
    # factor below -epsilon (the eigendecomposition shifts it): epsilon 1e-6 keeps every one positive
    _case(
        "Shampoo-newton",
        root_inv_method="newton",
        newton_tolerance=1e-10,
        epsilon=1e-6,
        precondition_frequency=2,
        **SMALL_BLOCKS,
    ),
    _case(
        "Shampoo-no-grafting",
        lr=1e-3,
        grafting_type=None,
        epsilon=1e-6,
        precondition_frequency=3,
        low_precision_skips=(torch.float32,),
        **SMALL_BLOCKS,
    ),
]
