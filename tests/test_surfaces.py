"""Tests of optimlab.surfaces: gradients against finite differences, the minima, batching, dtypes."""

from __future__ import annotations

import dataclasses
import math

import pytest
import torch

from optimlab import surfaces
from optimlab.optim import Muon
from optimlab.surfaces import (
    IllConditionedQuadratic,
    MatrixFactorization,
    RandomSurface,
    Rosenbrock,
    Saddle,
    Surface,
)

# Every surface at its defaults, plus non-default parameters wherever a surface has them.
SURFACES = [surfaces.get(n) for n in surfaces.names()] + [
    Rosenbrock(a=-1.5, b=7.0),
    surfaces.get("rastrigin", A=3.0),
    IllConditionedQuadratic(condition=50.0, angle=0.7),
    RandomSurface(seed=3, n_bumps=20, height=5.0, curvature=0.3),
]
IDS = [repr(s)[:60] for s in SURFACES]
WITH_MIN = [s for s in SURFACES if s.min_value is not None]


def assert_close(actual: torch.Tensor, expected: torch.Tensor, rtol: float = 0.0, atol: float = 0.0) -> None:
    # torch.testing.assert_close costs seconds of imports on first use; this suite must stay fast.
    assert actual.dtype == expected.dtype and actual.shape == expected.shape
    assert torch.allclose(actual, expected, rtol=rtol, atol=atol), (actual, expected)


def points_in_box(s: Surface, n: int, dtype: torch.dtype = torch.float64, seed: int = 0) -> torch.Tensor:
    (x0, x1), (y0, y1) = s.bounds
    u = torch.rand(n, 2, generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    lo, hi = torch.tensor([x0, y0], dtype=torch.float64), torch.tensor([x1, y1], dtype=torch.float64)
    return (lo + (hi - lo) * u).to(dtype)


@pytest.mark.parametrize("s", SURFACES, ids=IDS)
def test_gradient_equals_central_differences(s: Surface) -> None:
    w = points_in_box(s, 16)
    h = 1e-6
    e = torch.eye(2, dtype=torch.float64) * h
    fd = torch.stack([(s(w + e[i]) - s(w - e[i])) / (2 * h) for i in range(2)], dim=-1)
    g = s.grad(w)
    scale = g.norm(dim=-1, keepdim=True).clamp(min=1.0)
    assert ((g - fd).abs() / scale).max() <= 1e-6


@pytest.mark.parametrize("s", WITH_MIN, ids=[repr(s)[:60] for s in WITH_MIN])
def test_known_minima_are_stationary_global_minima(s: Surface) -> None:
    m = torch.tensor(s.minima, dtype=torch.float64)
    loss, g = s.value_and_grad(m)
    # The irrational minimisers (Himmelblau's) are rounded to double: their loss is ~1e-30, not 0.
    assert (loss - s.min_value).abs().max() <= 1e-24
    assert g.norm(dim=-1).max() <= 1e-12
    # A strict local minimum: every point of a small ring around it is higher.
    t = torch.linspace(0, 2 * math.pi, 17, dtype=torch.float64)[:-1]
    ring = m[:, None, :] + 1e-3 * torch.stack([t.cos(), t.sin()], dim=-1)
    assert (s(ring) > s.min_value).all()
    # Global over the plotting box: no point of a fine grid is lower.
    (x0, x1), (y0, y1) = s.bounds
    grid = torch.stack(
        torch.meshgrid(
            torch.linspace(x0, x1, 201, dtype=torch.float64),
            torch.linspace(y0, y1, 201, dtype=torch.float64),
            indexing="ij",
        ),
        dim=-1,
    )
    assert s(grid).min() >= s.min_value


@pytest.mark.parametrize("s", SURFACES, ids=IDS)
def test_start_and_minima_lie_in_the_bounds(s: Surface) -> None:
    (x0, x1), (y0, y1) = s.bounds
    for x, y in [s.start, *s.minima]:
        assert x0 < x < x1 and y0 < y < y1
    assert "\n" not in s.description and s.description


@pytest.mark.parametrize("s", SURFACES, ids=IDS)
def test_batched_evaluation_equals_per_point(s: Surface) -> None:
    w = points_in_box(s, 12).reshape(3, 4, 2)
    loss, g = s.value_and_grad(w)
    assert loss.shape == (3, 4) and g.shape == (3, 4, 2)
    for i in range(3):
        for j in range(4):
            li, gi = s.value_and_grad(w[i, j])
            assert li.shape == () and gi.shape == (2,)
            assert_close(loss[i, j], li, rtol=1e-14, atol=1e-14)
            assert_close(g[i, j], gi, rtol=1e-14, atol=1e-14)
    assert_close(s(w), loss, rtol=0, atol=0)
    assert_close(s.grad(w), g, rtol=0, atol=0)


@pytest.mark.parametrize("s", SURFACES, ids=IDS)
def test_dtype_is_preserved_and_float32_agrees(s: Surface) -> None:
    w64 = points_in_box(s, 8)
    w32 = w64.float()
    loss32, g32 = s.value_and_grad(w32)
    assert s(w32).dtype == loss32.dtype == g32.dtype == s.grad(w32).dtype == torch.float32
    loss64, g64 = s.value_and_grad(w64)
    assert loss64.dtype == g64.dtype == torch.float64
    assert_close(loss32.double(), loss64, rtol=1e-5, atol=1e-5 * loss64.abs().max().item())
    assert_close(g32.double(), g64, rtol=1e-4, atol=1e-5 * g64.abs().max().item())


@pytest.mark.parametrize("s", SURFACES, ids=IDS)
def test_gradient_in_any_autograd_mode(s: Surface) -> None:
    w = points_in_box(s, 4)
    expected = s.grad(w)
    assert not w.requires_grad and w.grad is None
    assert not expected.requires_grad
    with torch.no_grad():
        loss, g = s.value_and_grad(w)
        assert not loss.requires_grad and not g.requires_grad
        assert_close(g, expected, rtol=0, atol=0)
    with torch.inference_mode():
        w_inf = w.clone()
        assert_close(s.grad(w_inf), expected, rtol=0, atol=0)
    # A caller's leaf that requires grad gets its gradient and keeps no .grad from us.
    leaf = w.clone().requires_grad_(True)
    assert_close(s.grad(leaf), expected, rtol=0, atol=0)
    assert leaf.grad is None
    # The loss also runs point by point under torch.vmap (no shape-dependent Python branches).
    assert_close(torch.vmap(s)(w), s(w), rtol=1e-14, atol=1e-14)


def test_saddle_is_a_saddle_at_one_one() -> None:
    s = Saddle()
    p = torch.tensor([1.0, 1.0], dtype=torch.float64)
    assert torch.equal(s.grad(p), torch.zeros(2, dtype=torch.float64))
    hess = torch.autograd.functional.hessian(s, p)
    assert torch.equal(hess, torch.tensor([[2.0, 0.0], [0.0, -2.0]], dtype=torch.float64))
    eig = torch.linalg.eigvalsh(hess)
    assert eig[0] < 0 < eig[1]
    # Unbounded below along w2, so no minimiser is listed.
    assert s(torch.tensor([1.0, 1e6], dtype=torch.float64)) == -((1e6 - 1) ** 2)
    assert s.minima == () and s.min_value is None
    assert s.start == (-3.0, 0.8)


@pytest.mark.parametrize("angle", [0.0, 0.7, -2.0])
def test_quadratic_eigenvalues_and_rotation(angle: float) -> None:
    s = IllConditionedQuadratic(condition=30.0, angle=angle)
    hess = torch.autograd.functional.hessian(s, torch.zeros(2, dtype=torch.float64))
    eig, vec = torch.linalg.eigh(hess)
    assert_close(eig, torch.tensor([1.0, 30.0], dtype=torch.float64), rtol=1e-14, atol=0)
    stiff = torch.tensor([-math.sin(angle), math.cos(angle)], dtype=torch.float64)
    assert abs(float(vec[:, 1] @ stiff)) == pytest.approx(1.0, abs=1e-14)
    # The start turns with the surface: same loss 0.5 (4^2 + 30 * 1^2) at every angle.
    start = torch.tensor(s.start, dtype=torch.float64)
    assert float(s(start)) == pytest.approx(0.5 * (16 + 30), rel=1e-14)


def test_rosenbrock_minimum_moves_with_a() -> None:
    s = Rosenbrock(a=2.0, b=5.0)
    assert s.minima == ((2.0, 4.0),)
    w = torch.tensor([[2.0, 4.0], [0.0, 0.0]], dtype=torch.float64)
    assert torch.equal(s(w), torch.tensor([0.0, 4.0], dtype=torch.float64))


def test_random_surface_is_a_function_of_its_seed() -> None:
    a, b = RandomSurface(seed=7), RandomSurface(seed=7)
    w = points_in_box(a, 50)
    assert a == b and torch.equal(a(w), b(w))
    assert not torch.equal(a(w), RandomSurface(seed=8)(w))
    assert a.minima == () and a.min_value is None
    # Python guarantees random.Random(seed).random() across versions, so the surfaces never change.
    assert RandomSurface(seed=0).bumps[0][0] == 2.755374812200385
    cx, cy, sigma, h = RandomSurface(seed=1, n_bumps=200, height=3.0).bumps
    assert len(cx) == len(cy) == len(sigma) == len(h) == 200
    assert all(-4 <= c <= 4 for c in cx + cy)
    assert all(0.5 <= s <= 1.5 for s in sigma)
    assert all(-3 <= v <= 3 for v in h) and min(h) < 0 < max(h)


def test_random_surface_formula() -> None:
    s = RandomSurface(seed=2, n_bumps=3, height=1.5, curvature=0.2)
    w = points_in_box(s, 5)
    expected = 0.1 * (w**2).sum(-1)
    for cx, cy, sigma, h in zip(*s.bumps):
        expected = expected + h * torch.exp(-((w[:, 0] - cx) ** 2 + (w[:, 1] - cy) ** 2) / (2 * sigma**2))
    assert_close(s(w), expected, rtol=1e-14, atol=1e-14)
    bowl = RandomSurface(n_bumps=0, curvature=0.2)
    assert_close(bowl(w), 0.1 * (w**2).sum(-1), rtol=0, atol=0)


def test_registry_round_trip() -> None:
    assert surfaces.names() == [
        "saddle",
        "rosenbrock",
        "beale",
        "himmelblau",
        "rastrigin",
        "booth",
        "ill_conditioned_quadratic",
        "random_surface",
    ]
    for s in SURFACES:
        assert surfaces.get(s.name, **dataclasses.asdict(s)) == s
    assert surfaces.get("rosenbrock", b=10) == Rosenbrock(a=1.0, b=10.0)


def test_registry_errors() -> None:
    with pytest.raises(ValueError, match="unknown surface 'rosenbrok': expected one of saddle, rosenbrock, beale"):
        surfaces.get("rosenbrok")
    with pytest.raises(ValueError, match="rosenbrock: unknown parameter 'c': expected some of a, b"):
        surfaces.get("rosenbrock", c=1.0)
    with pytest.raises(ValueError, match="saddle: unknown parameter 'a': expected none"):
        surfaces.get("saddle", a=1.0)


@pytest.mark.parametrize(
    ("name", "params", "message"),
    [
        ("rosenbrock", {"b": -1.0}, r"rosenbrock: invalid b=-1.0: expected 0 < b < inf"),
        ("rosenbrock", {"b": 0.0}, r"rosenbrock: invalid b=0.0: expected 0 < b < inf"),
        ("rosenbrock", {"a": math.inf}, r"rosenbrock: invalid a=inf: expected -inf < a < inf"),
        ("rosenbrock", {"a": "one"}, r"rosenbrock: invalid a='one': expected a number"),
        ("rastrigin", {"A": -1.0}, r"rastrigin: invalid A=-1.0: expected 0 <= A < inf"),
        ("ill_conditioned_quadratic", {"condition": 0.5}, r"invalid condition=0.5: expected 1 <= condition < inf"),
        ("ill_conditioned_quadratic", {"angle": math.nan}, r"invalid angle=nan: expected -inf < angle < inf"),
        ("random_surface", {"seed": -1}, r"random_surface: invalid seed=-1: expected an integer >= 0"),
        ("random_surface", {"seed": 1.0}, r"random_surface: invalid seed=1.0: expected an integer >= 0"),
        ("random_surface", {"n_bumps": -2}, r"invalid n_bumps=-2: expected an integer >= 0"),
        ("random_surface", {"height": -1.0}, r"invalid height=-1.0: expected 0 <= height < inf"),
        ("random_surface", {"curvature": 0.0}, r"invalid curvature=0.0: expected 0 < curvature < inf"),
    ],
)
def test_invalid_parameters(name: str, params: dict, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        surfaces.get(name, **params)


def test_invalid_points() -> None:
    s = surfaces.get("booth")
    with pytest.raises(ValueError, match=r"booth: invalid w of shape \(3,\): expected shape \(\.\.\., 2\)"):
        s(torch.zeros(3))
    with pytest.raises(ValueError, match=r"booth: invalid w of shape \(\)"):
        s.grad(torch.tensor(1.0))
    with pytest.raises(ValueError, match=r"booth: invalid w of dtype torch.int64: expected a floating-point dtype"):
        s(torch.zeros(2, dtype=torch.long))


# --- the matrix problem of the matrix methods -------------------------------------------------------------

MF = [MatrixFactorization(), MatrixFactorization(rows=5, cols=7, rank=3, seed=4, init=0.5)]


@pytest.mark.parametrize("s", MF, ids=repr)
def test_matrix_factorization_minimum_and_gradient(s: MatrixFactorization) -> None:
    a, b = s.factors()
    m = s.target()
    assert torch.linalg.matrix_rank(m) == s.rank and torch.equal(m, a @ b.T)
    assert s(a, b).item() == s.min_value == 0.0
    g = torch.randn(s.rank, s.rank, generator=torch.Generator().manual_seed(1), dtype=torch.float64)
    assert s(a @ g, b @ torch.linalg.inv(g).T).item() < 1e-24  # the minimisers form a set
    _, (ga, gb) = s.value_and_grad(a, b)
    assert ga.abs().max() == gb.abs().max() == 0
    # away from it: the formulas against central differences, batched over three points
    gen = torch.Generator().manual_seed(2)
    u = torch.randn(3, s.rows, s.rank, generator=gen, dtype=torch.float64)
    v = torch.randn(3, s.cols, s.rank, generator=gen, dtype=torch.float64)
    loss, (gu, gv) = s.value_and_grad(u, v)
    assert loss.shape == (3,) and (loss > 0).all()
    h = 1e-6
    for x, grad in ((u, gu), (v, gv)):
        for index in [(0, 0, 0), (1, -1, -1), (2, 1, 0)]:
            e = torch.zeros_like(x)
            e[index] = h
            plus = s(u + e, v) if x is u else s(u, v + e)
            minus = s(u - e, v) if x is u else s(u, v - e)
            assert abs((plus - minus)[index[0]] / (2 * h) - grad[index]) <= 1e-7 * (1 + abs(grad[index]))


def test_matrix_factorization_is_its_seed_and_checks_its_parameters() -> None:
    s = MatrixFactorization(seed=7)
    assert torch.equal(s.target(), MatrixFactorization(seed=7).target())
    assert not torch.equal(s.target(), MatrixFactorization(seed=8).target())
    u0, v0 = s.start()
    assert u0.abs().max() <= s.init and v0.shape == (s.cols, s.rank) and s(u0, v0) > 0
    assert s.name not in surfaces.names()  # not a 2-D surface: no picture, no surface/sweep command
    with pytest.raises(ValueError, match=r"matrix_factorization: invalid rank=0: expected an integer >= 1"):
        MatrixFactorization(rank=0)
    with pytest.raises(ValueError, match=r"matrix_factorization: invalid init=0.0: expected 0 < init < inf"):
        MatrixFactorization(init=0.0)
    with pytest.raises(ValueError, match=r"invalid shapes U \(6, 2\), V \(6, 2\): expected \(\.\.\., 8, 2\)"):
        s(torch.zeros(6, 2), torch.zeros(6, 2))


def test_muon_solves_the_matrix_problem() -> None:
    """Muon at its defaults (bfloat16 Newton-Schulz) on float32 matrices, its lr annealed to 0 (a constant lr
    keeps its fixed-size orthogonal steps circling the minimum)."""
    s = MatrixFactorization()
    u, v = (x.float() for x in s.start())
    opt = Muon([u, v])
    steps = 300
    schedule = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: 1 - t / steps)
    start = s(u, v).item()
    for _ in range(steps):
        _, (u.grad, v.grad) = s.value_and_grad(u, v)
        opt.step()
        schedule.step()
    assert s(u, v).item() <= 1e-6 * start  # measured 4e-8 of the start: a 25x margin
