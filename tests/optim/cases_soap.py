"""SOAP against the authors' code (github.com/nikhilvyas/SOAP ``soap.py``, not on PyPI), written out
below as plain equations in the parameter's dtype, and against ``pytorch_optimizer.SOAP`` 4.1.0.

The authors' code itself runs only on float32 parameters (its Gram matrices are made in torch's
default dtype, and ``lerp_`` refuses a float64 gradient): :class:`Authors` is their algorithm,
step by step in their order, with every tensor in the parameter's dtype.  ``eigh`` and QR leave
signs and the order of equal eigenvalues free, and a Gram matrix made from few gradients has a
null space whose basis rounding decides; so the reference makes its Gram matrices with the same
operations as ours (``tensordot`` over the other dimensions, ``lerp``) and so decomposes the same
matrices, and refreshes a basis from one product :math:`LQ` as ours does (the authors make three).
"""

from __future__ import annotations

from typing import Any

import pytorch_optimizer
import torch

from optimlab.optim.soap import SOAP

from .harness import Case


class Authors(torch.optim.Optimizer):
    """The authors' SOAP (December 2024: the first moment kept in the eigenbasis), their names and defaults."""

    def __init__(
        self,
        params: Any,
        lr: float = 3e-3,
        betas: tuple[float, float] = (0.95, 0.95),
        shampoo_beta: float = -1,
        eps: float = 1e-8,
        weight_decay: float = 0.01,
        precondition_frequency: int = 10,
        max_precond_dim: int = 10000,
        merge_dims: bool = False,
        precondition_1d: bool = False,
        normalize_grads: bool = False,
        data_format: str = "channels_first",
        correct_bias: bool = True,
    ) -> None:
        defaults = {
            "lr": lr,
            "betas": betas,
            "shampoo_beta": shampoo_beta,
            "eps": eps,
            "weight_decay": weight_decay,
            "precondition_frequency": precondition_frequency,
            "max_precond_dim": max_precond_dim,
            "merge_dims": merge_dims,
            "precondition_1d": precondition_1d,
            "normalize_grads": normalize_grads,
            "correct_bias": correct_bias,
        }
        super().__init__(params, defaults)
        self.data_format = data_format

    # the tensor as the preconditioner sees it, and back
    def _seen(self, x: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if not group["merge_dims"]:
            return x
        if self.data_format == "channels_last" and x.dim() == 4:
            x = x.permute(0, 3, 1, 2)
        # greedy: extend the current run of dimensions while its product fits
        limit, sizes, run = group["max_precond_dim"], [], 1
        for n in x.shape:
            if run * n > limit:
                sizes.append(run if run > 1 else n)
                run = n if run > 1 else 1
            else:
                run = run * n
        if run > 1 or not sizes:
            sizes.append(run)
        return x.reshape(sizes)

    def _unseen(self, x: torch.Tensor, like: torch.Tensor, group: dict[str, Any]) -> torch.Tensor:
        if not group["merge_dims"]:
            return x
        if self.data_format == "channels_last" and like.dim() == 4:
            n, h, w, c = like.shape
            return x.reshape(n, c, h, w).permute(0, 2, 3, 1)
        return x.reshape(like.shape)

    @staticmethod
    def _rotate(x: torch.Tensor, qs: list[Any], back: bool = False) -> torch.Tensor:
        # x_{i j ...} -> sum_a x_{a j ...} Q_{a i} for each dimension in turn (Q^T x; Q x when back)
        for q in qs:
            if len(q) == 0:
                x = x.permute(*range(1, x.dim()), 0)
            else:
                x = torch.tensordot(x, q, dims=([0], [1 if back else 0]))
        return x

    @staticmethod
    def _grams(gg: list[Any], g: torch.Tensor, beta: float) -> None:
        for k, m in enumerate(gg):
            if len(m) > 0:
                rest = [d for d in range(g.dim()) if d != k]
                m.lerp_(torch.tensordot(g, g, dims=(rest, rest)), 1 - beta)

    @torch.no_grad()
    def step(self, closure: Any = None) -> None:
        for group in self.param_groups:
            beta1, beta2 = group["betas"]
            beta_s = group["shampoo_beta"] if group["shampoo_beta"] >= 0 else beta2
            for p in group["params"]:
                if p.grad is None:
                    continue
                st = self.state[p]
                g = self._seen(p.grad, group)
                if not st:  # the first call: L, R, ... from this gradient, their eigenvectors, no step
                    st["step"] = 0
                    st["exp_avg"], st["exp_avg_sq"] = torch.zeros_like(p), torch.zeros_like(p)
                    if p.dim() == 1 and not group["precondition_1d"]:
                        sizes = [group["max_precond_dim"] + 1]
                    else:
                        sizes = g.shape
                    st["GG"] = [p.new_zeros(n, n) if n <= group["max_precond_dim"] else [] for n in sizes]
                    self._grams(st["GG"], g, beta_s)
                    st["Q"] = []
                    for m in st["GG"]:
                        if len(m) == 0:
                            st["Q"].append([])
                            continue
                        _, vectors = torch.linalg.eigh(m + 1e-30 * torch.eye(len(m), dtype=m.dtype))
                        st["Q"].append(vectors.flip(1))  # largest eigenvalue first
                    continue

                q = st["Q"]
                g_rot = self._rotate(g, q)
                st["step"] += 1
                t = st["step"]
                m_rot = beta1 * self._seen(st["exp_avg"], group) + (1 - beta1) * g_rot
                v_rot = beta2 * self._seen(st["exp_avg_sq"], group) + (1 - beta2) * g_rot**2
                u = self._rotate(m_rot / (v_rot.sqrt() + group["eps"]), q, back=True)
                if group["normalize_grads"]:
                    u = u / (1e-30 + u.pow(2).mean().sqrt())
                size = group["lr"]
                if group["correct_bias"]:
                    size = size * (1 - beta2**t) ** 0.5 / (1 - beta1**t)
                p.sub_(size * self._unseen(u, p, group))
                if group["weight_decay"] > 0:
                    p.sub_(group["lr"] * group["weight_decay"] * p)

                # after the step: M to the weights' coordinates, the Gram matrices, perhaps new
                # bases (power iteration + QR, V reordered), M into the bases
                m_plain = self._rotate(m_rot, q, back=True)
                self._grams(st["GG"], g, beta_s)
                if t % group["precondition_frequency"] == 0:
                    fresh = []
                    for k, (gram, basis) in enumerate(zip(st["GG"], q)):
                        if len(gram) == 0:
                            fresh.append([])
                            continue
                        # diag(Q^T L Q) and L Q~ from one product L Q, as ours (test_soap.py shows the
                        # authors' three products give the same basis where no eigenvalues tie)
                        product = gram @ basis
                        order = torch.argsort((basis * product).sum(0), descending=True)
                        v_rot = v_rot.index_select(k, order)
                        fresh.append(torch.linalg.qr(product[:, order]).Q)
                    st["Q"] = q = fresh
                st["exp_avg"] = self._unseen(self._rotate(m_plain, q), p, group)
                st["exp_avg_sq"] = self._unseen(v_rot, p, group)


INVALID = [
    ({"lr": -0.1}, r"^SOAP: invalid lr=-0\.1: expected 0 <= lr$"),
    ({"betas": (0.95, 1.0)}, r"^SOAP: invalid betas\[1\]=1\.0: expected 0 <= betas\[1\] < 1$"),
    ({"betas": 0.9}, r"^SOAP: invalid betas=0\.9: expected a pair \(beta1, beta2\)$"),
    ({"shampoo_beta": 1.0}, r"^SOAP: invalid shampoo_beta=1\.0: expected shampoo_beta < 1$"),
    ({"shampoo_beta": float("nan")}, r"^SOAP: invalid shampoo_beta=nan: expected shampoo_beta < 1$"),
    ({"eps": -1e-8}, r"^SOAP: invalid eps=-1e-08: expected 0 <= eps$"),
    ({"weight_decay": -0.01}, r"^SOAP: invalid weight_decay=-0\.01: expected 0 <= weight_decay$"),
    ({"precondition_frequency": 0}, r"^SOAP: invalid precondition_frequency=0: expected an integer >= 1$"),
    ({"precondition_frequency": 2.5}, r"^SOAP: invalid precondition_frequency=2\.5: expected an integer >= 1$"),
    ({"max_precond_dim": 0}, r"^SOAP: invalid max_precond_dim=0: expected an integer >= 1$"),
    ({"merge_dims": "yes"}, r"^SOAP: invalid merge_dims='yes': expected True or False$"),
    ({"precondition_1d": 1}, r"^SOAP: invalid precondition_1d=1: expected True or False$"),
    (
        {"data_format": "NHWC"},
        r"^SOAP: invalid data_format='NHWC': expected one of 'channels_first', 'channels_last'$",
    ),
]

# A Gram matrix made of few gradients has a null space (an 8 x 3 gradient's GG^T: 5 dimensions)
# whose eigenvectors rounding picks, differently in float32 and float64; SOAP's steps depend on
# them (Adam's normalisation is per coordinate), so a float32 run is then no closer to the float64
# one than the reference's own float32 run, ~0.2 of the displacement.  The shapes below leave at
# most a 1-dim null space (fixed up to a sign, which the step does not depend on) in every Gram
# matrix at the first step, so that the float32 checks mean something; SOAP-rank-deficient keeps
# the others, for the float64 parity.

#: a scalar, a vector, wide, tall and square matrices, a 3-D tensor and a 4-D convolution weight
SHAPES = ((), (7,), (4, 5), (5, 4), (3, 3), (2, 3, 4), (4, 2, 3, 3))
#: with max_precond_dim=10: dimensions above it (left in their own coordinates) beside ones within
LARGE_DIMS = ((40, 6), (6, 40), (3, 12, 5), (11,), (5, 4))
#: with max_precond_dim=12, merged: (8, 9), (6, 5, 4), (12, 13) (13 has no basis), (5, 4), (7,)
MERGED = ((4, 2, 3, 3), (2, 3, 5, 4), (2, 2, 3, 13), (5, 4), (7,))
#: NHWC, seen as NCHW (4, 2, 3, 3) and (2, 3, 5, 4), then merged as above
CHANNELS_LAST = ((4, 3, 3, 2), (2, 5, 4, 3), (5, 4), (2,))
#: for the dtype check against float64 (the standard one's 8 x 4 matrix has a 4-dim null space)
LOW_PRECISION_SHAPES = [(4, 4), (2,)]


def _case(id: str, reference: Any = Authors, shapes: tuple[tuple[int, ...], ...] = SHAPES, **kw: Any) -> Case:
    return Case(
        id,
        make=lambda p, **o: SOAP(p, **{**kw, **o}),
        reference=None if reference is None else lambda p: reference(p, **kw),
        solver=None,  # the standard problems are vectors (Adam's step): test_soap.py solves a matrix problem
        shapes=shapes,
        invalid=INVALID,
        extra={"low_precision_shapes": LOW_PRECISION_SHAPES},
    )


CASES = [
    _case("SOAP"),
    _case("SOAP-large-dims", shapes=LARGE_DIMS, max_precond_dim=10),
    _case(
        "SOAP-precondition-1d",
        shapes=((2,), (4, 5), (3, 3), (2, 3, 4)),
        precondition_1d=True,
        shampoo_beta=0.9,
        precondition_frequency=3,
    ),
    _case("SOAP-merge-dims", shapes=MERGED, merge_dims=True, max_precond_dim=12, precondition_frequency=4),
    _case(
        "SOAP-merge-dims-channels-last",
        shapes=CHANNELS_LAST,
        merge_dims=True,
        max_precond_dim=12,
        data_format="channels_last",
        precondition_1d=True,
    ),
    _case(
        "SOAP-options",
        lr=1e-2,
        betas=(0.9, 0.99),
        eps=1e-6,
        weight_decay=0.1,
        normalize_grads=True,
        correct_bias=False,
        precondition_frequency=1,
    ),
    # tall matrices and long preconditioned vectors: equal in float64 (the same operations pick the
    # same null-space bases); in float32 no better than the reference's own float32 run (see above)
    _case(
        "SOAP-rank-deficient",
        shapes=((16, 3), (3, 12), (9,), (6, 2, 2)),
        precondition_1d=True,
        precondition_frequency=5,
    ),
]

# pytorch_optimizer runs its QR in float32 whatever the dtype (test_soap.py shows it): compared
# where no refresh happens, with its names
CASES.append(
    Case(
        "SOAP-vs-pytorch-optimizer-no-refresh",
        make=lambda p, **o: SOAP(p, **{"precondition_frequency": 1000, **o}),
        reference=lambda p: pytorch_optimizer.SOAP(p, precondition_frequency=1000),
        shapes=SHAPES,
        invalid=INVALID,
        extra={"low_precision_shapes": LOW_PRECISION_SHAPES},
    )
)
