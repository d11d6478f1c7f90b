r"""Two-dimensional test surfaces for the lab: loss, gradient and what is known about the minima.

Every surface is a frozen dataclass whose fields are its parameters (``Rosenbrock(a=1.0, b=100.0)``)
and which offers

* ``surface(w)``: the loss at ``w`` of shape ``(..., 2)`` (any leading batch dims, e.g. ``(C, 2)``
  for C sweep configurations), a tensor of shape ``(...)`` in ``w``'s dtype, written in torch so
  that autograd differentiates it (and ``torch.vmap`` maps it);
* ``surface.grad(w)`` and ``surface.value_and_grad(w)``: the gradient by one autograd pass, for
  any ``w`` (no ``requires_grad`` needed; also inside ``torch.no_grad()`` or
  ``torch.inference_mode()``);
* ``name``, ``start`` (default start point), ``bounds`` (``((xmin, xmax), (ymin, ymax))``, the
  plotting box), ``minima`` (the known global minimisers, a tuple of points; empty where none is
  known or none exists), ``min_value`` (the known minimum, or ``None``) and ``description`` (one line
  with the formula), and ``bounded_below`` (false only where the loss has no lower bound, the
  saddle: the sweep then calls a point that leaves the plotting box downhill "escaped", and studies
  do not rank by the final loss).

:func:`get` builds a surface from its name and parameters and :func:`names` lists the names;
``get(s.name, **dataclasses.asdict(s)) == s`` for every surface ``s``.  Invalid parameters raise
``ValueError`` naming the surface, the parameter, the value and the allowed range.

Bounds and start points of the classic functions follow Jamil & Yang, "A literature survey of
benchmark functions for global optimization problems", Int. J. Math. Model. Numer. Optim. 4(2),
2013, and Surjanovic & Bingham, "Virtual Library of Simulation Experiments", Simon Fraser University.
"""

from __future__ import annotations

import math
import random
from dataclasses import dataclass, fields
from functools import cached_property
from typing import Any, ClassVar

import torch
from torch import Tensor

from .optim._validate import check_int, check_range

Point = tuple[float, float]
Bounds = tuple[tuple[float, float], tuple[float, float]]


class Surface:
    """Base of every surface: evaluation and gradients from ``_loss``; subclasses add the facts.

    A subclass is a frozen dataclass whose fields are its parameters; it defines ``_loss(x, y)``
    on the two coordinate tensors and the attributes ``name``, ``start``, ``bounds``, ``minima``,
    ``min_value`` and ``description`` (class attributes, or properties where they depend on the
    parameters).
    """

    name: ClassVar[str]
    start: Point
    bounds: Bounds
    minima: tuple[Point, ...]
    min_value: float | None
    description: str
    bounded_below: ClassVar[bool] = True

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        raise NotImplementedError

    def __call__(self, w: Tensor) -> Tensor:
        """The loss at ``w`` of shape ``(..., 2)``: a tensor of shape ``(...)``, dtype of ``w``."""
        if w.ndim == 0 or w.shape[-1] != 2:
            raise ValueError(f"{self.name}: invalid w of shape {tuple(w.shape)}: expected shape (..., 2)")
        if not w.is_floating_point():
            raise ValueError(f"{self.name}: invalid w of dtype {w.dtype}: expected a floating-point dtype")
        return self._loss(w[..., 0], w[..., 1])

    def value_and_grad(self, w: Tensor) -> tuple[Tensor, Tensor]:
        """The loss (shape ``(...)``) and its gradient (shape of ``w``) in one autograd pass.

        Each point's loss depends on that point alone, so the gradient of the summed loss is every
        point's own gradient.  Neither result is attached to a graph.
        """
        # Callers in inference mode hand us inference tensors, which autograd cannot track: copy.
        with torch.inference_mode(False), torch.enable_grad():
            w = (w.clone() if w.is_inference() else w.detach()).requires_grad_(True)
            loss = self(w)
            (grad,) = torch.autograd.grad(loss.sum(), w)
        return loss.detach(), grad

    def grad(self, w: Tensor) -> Tensor:
        """The gradient at ``w`` of shape ``(..., 2)``, same shape and dtype."""
        return self.value_and_grad(w)[1]

    def _set_number(self, field: str, low: float = -math.inf, *, low_open: bool = True) -> None:
        """Check that a parameter is finite and ``>= low`` (``> low`` if open); store it as a float.

        The conversion keeps numpy or tensor scalars from changing the dtype of the loss.
        """
        value = getattr(self, field)
        check_range(self.name, field, value, low, math.inf, low_open=low_open, high_open=True)
        object.__setattr__(self, field, float(value))


@dataclass(frozen=True)
class Saddle(Surface):
    r"""The symmetric saddle :math:`f(w) = (w_1 - 1)^2 - (w_2 - 1)^2` of the seed's study.

    Its only stationary point (1, 1) is a saddle (Hessian diag(2, -2)); it is unbounded below along
    :math:`w_2`, so it has no minimiser.  The start (-3, 0.8) lies just off the saddle's stable
    axis :math:`w_2 = 1`: a method that follows the gradient first heads for the saddle and must then
    escape along :math:`w_2`.
    """

    name: ClassVar[str] = "saddle"
    start: ClassVar[Point] = (-3.0, 0.8)
    bounds: ClassVar[Bounds] = ((-4.0, 4.0), (-4.0, 4.0))
    minima: ClassVar[tuple[Point, ...]] = ()
    min_value: ClassVar[float | None] = None
    description: ClassVar[str] = "(w1 - 1)^2 - (w2 - 1)^2; saddle point at (1, 1), unbounded below along w2"
    bounded_below: ClassVar[bool] = False

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        return (x - 1) ** 2 - (y - 1) ** 2


@dataclass(frozen=True)
class Rosenbrock(Surface):
    r"""Rosenbrock's banana valley :math:`f(w) = (a - w_1)^2 + b\,(w_2 - w_1^2)^2`.

    Minimum 0 at :math:`(a, a^2)`, the end of a long, curved, flat-bottomed valley; the classic start
    (-1.2, 1) lies on the far side of the bend.  Requires :math:`b > 0` (at b = 0 every point of the
    line :math:`w_1 = a` is a minimiser).

    Reference: H. H. Rosenbrock, "An automatic method for finding the greatest or least value of a
    function", The Computer Journal 3(3), 1960.
    """

    a: float = 1.0
    b: float = 100.0

    name: ClassVar[str] = "rosenbrock"
    start: ClassVar[Point] = (-1.2, 1.0)
    min_value: ClassVar[float | None] = 0.0

    def __post_init__(self) -> None:
        self._set_number("a")
        self._set_number("b", 0.0)

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        return (self.a - x) ** 2 + self.b * (y - x * x) ** 2

    @property
    def bounds(self) -> Bounds:  # type: ignore[override]
        # The classic box (-2, 2) x (-1, 3), widened to keep the minimiser a unit inside.
        a = self.a
        return (min(-2.0, a - 1), max(2.0, a + 1)), (min(-1.0, a * a - 1), max(3.0, a * a + 1))

    @property
    def minima(self) -> tuple[Point, ...]:  # type: ignore[override]
        return ((self.a, self.a * self.a),)

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"(a - w1)^2 + b (w2 - w1^2)^2 with a={self.a:g}, b={self.b:g}; minimum 0 at (a, a^2)"


@dataclass(frozen=True)
class Beale(Surface):
    r"""Beale's function :math:`f(w) = \sum_{i=1}^{3} (c_i - w_1 + w_1 w_2^i)^2`, c = (1.5, 2.25, 2.625).

    Minimum 0 at (3, 0.5), in a narrow valley; the surface rises steeply (as :math:`w_1^2 w_2^6`)
    towards the corners of its box, so plain gradient steps that leave the valley blow up.

    Reference: E. M. L. Beale, "On an iterative method for finding a local minimum of a function of
    more than one variable", Tech. Rep. 25, Statistical Techniques Research Group, Princeton, 1958.
    """

    name: ClassVar[str] = "beale"
    start: ClassVar[Point] = (1.0, 1.0)
    bounds: ClassVar[Bounds] = ((-4.5, 4.5), (-4.5, 4.5))
    minima: ClassVar[tuple[Point, ...]] = ((3.0, 0.5),)
    min_value: ClassVar[float | None] = 0.0
    description: ClassVar[str] = (
        "(1.5 - w1 + w1 w2)^2 + (2.25 - w1 + w1 w2^2)^2 + (2.625 - w1 + w1 w2^3)^2; minimum 0 at (3, 0.5)"
    )

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        return (1.5 - x + x * y) ** 2 + (2.25 - x + x * y**2) ** 2 + (2.625 - x + x * y**3) ** 2


@dataclass(frozen=True)
class Himmelblau(Surface):
    r"""Himmelblau's function :math:`f(w) = (w_1^2 + w_2 - 11)^2 + (w_1 + w_2^2 - 7)^2`.

    Four global minima of value 0, one per quadrant: (3, 2) exactly, and three irrational ones
    (roots of a quartic; listed to double precision, found by Newton's method at 40 digits).
    A local maximum near (-0.27, -0.92) separates them; which minimum a method reaches depends on
    its path.

    Reference: D. M. Himmelblau, "Applied Nonlinear Programming", McGraw-Hill, 1972.
    """

    name: ClassVar[str] = "himmelblau"
    start: ClassVar[Point] = (0.0, 0.0)
    bounds: ClassVar[Bounds] = ((-5.0, 5.0), (-5.0, 5.0))
    minima: ClassVar[tuple[Point, ...]] = (
        (3.0, 2.0),
        (-2.805118086952745, 3.131312518250573),
        (-3.779310253377747, -3.2831859912861696),
        (3.5844283403304917, -1.8481265269644036),
    )
    min_value: ClassVar[float | None] = 0.0
    description: ClassVar[str] = "(w1^2 + w2 - 11)^2 + (w1 + w2^2 - 7)^2; four minima of value 0, one at (3, 2)"

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        return (x * x + y - 11) ** 2 + (x + y * y - 7) ** 2


@dataclass(frozen=True)
class Rastrigin(Surface):
    r"""Rastrigin's function in 2-D, :math:`f(w) = 2A + \sum_{i=1}^{2} (w_i^2 - A \cos 2\pi w_i)`.

    A bowl covered by a lattice of local minima near the integer points; the global minimum is 0 at
    the origin for every :math:`A \ge 0` (both terms of :math:`w_i^2 + A(1 - \cos 2\pi w_i)` are
    nonnegative and vanish together only at 0).

    Reference: L. A. Rastrigin, "Systems of Extremal Control", Nauka, 1974; the n-dimensional form
    with A = 10 is from H. Mühlenbein, M. Schomisch & J. Born, Parallel Computing 17, 1991.
    """

    A: float = 10.0

    name: ClassVar[str] = "rastrigin"
    start: ClassVar[Point] = (2.7, -3.3)
    bounds: ClassVar[Bounds] = ((-5.12, 5.12), (-5.12, 5.12))
    minima: ClassVar[tuple[Point, ...]] = ((0.0, 0.0),)
    min_value: ClassVar[float | None] = 0.0

    def __post_init__(self) -> None:
        self._set_number("A", 0.0, low_open=False)

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        two_pi = 2 * math.pi
        return 2 * self.A + (x * x - self.A * torch.cos(two_pi * x)) + (y * y - self.A * torch.cos(two_pi * y))

    @property
    def description(self) -> str:  # type: ignore[override]
        return f"2A + sum_i (w_i^2 - A cos(2 pi w_i)) with A={self.A:g}; minimum 0 at (0, 0)"


@dataclass(frozen=True)
class Booth(Surface):
    r"""Booth's function :math:`f(w) = (w_1 + 2 w_2 - 7)^2 + (2 w_1 + w_2 - 5)^2`.

    A convex quadratic (Hessian [[10, 8], [8, 10]], eigenvalues 18 and 2, along the diagonals) with
    minimum 0 at (1, 3).

    Reference: Jamil & Yang 2013 (module docstring), function 24.
    """

    name: ClassVar[str] = "booth"
    start: ClassVar[Point] = (-8.0, 8.0)
    bounds: ClassVar[Bounds] = ((-10.0, 10.0), (-10.0, 10.0))
    minima: ClassVar[tuple[Point, ...]] = ((1.0, 3.0),)
    min_value: ClassVar[float | None] = 0.0
    description: ClassVar[str] = "(w1 + 2 w2 - 7)^2 + (2 w1 + w2 - 5)^2; minimum 0 at (1, 3)"

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        return (x + 2 * y - 7) ** 2 + (2 * x + y - 5) ** 2


@dataclass(frozen=True)
class IllConditionedQuadratic(Surface):
    r"""The quadratic :math:`f(w) = \tfrac12 w^\top A w` with eigenvalues 1 and ``condition``.

    :math:`A = R(\theta)\,\mathrm{diag}(1, \kappa)\,R(\theta)^\top`, with :math:`R(\theta)` the
    rotation by ``angle`` :math:`\theta` (radians) and :math:`\kappa` = ``condition``, evaluated as
    :math:`\tfrac12 (u^2 + \kappa v^2)` in the eigen-coordinates :math:`u = c w_1 + s w_2`,
    :math:`v = -s w_1 + c w_2` so it is never negative in rounding.  At ``angle = 0`` the stiff
    direction is :math:`w_2`, aligned with the axes (where per-coordinate methods like Adam see
    the conditioning); other angles mix the coordinates.  Minimum 0 at the origin.

    The start is the eigen-coordinate point (u, v) = (-4, 1) rotated with the surface, so every
    angle starts at the same loss and distance from the minimum.
    """

    condition: float = 100.0
    angle: float = 0.0

    name: ClassVar[str] = "ill_conditioned_quadratic"
    bounds: ClassVar[Bounds] = ((-5.0, 5.0), (-5.0, 5.0))
    minima: ClassVar[tuple[Point, ...]] = ((0.0, 0.0),)
    min_value: ClassVar[float | None] = 0.0

    def __post_init__(self) -> None:
        self._set_number("condition", 1.0, low_open=False)
        self._set_number("angle")

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        c, s = math.cos(self.angle), math.sin(self.angle)
        u = c * x + s * y
        v = c * y - s * x
        return 0.5 * (u * u + self.condition * (v * v))

    @property
    def start(self) -> Point:  # type: ignore[override]
        c, s = math.cos(self.angle), math.sin(self.angle)
        u, v = -4.0, 1.0
        return (c * u - s * v, s * u + c * v)

    @property
    def description(self) -> str:  # type: ignore[override]
        return (
            f"0.5 w^T R diag(1, {self.condition:g}) R^T w, R the rotation by {self.angle:g} rad; "
            "minimum 0 at (0, 0)"
        )


@dataclass(frozen=True)
class RandomSurface(Surface):
    r"""A random smooth landscape: a convex bowl plus Gaussian bumps and wells, drawn from ``seed``.

    .. math::

        f(w) = \tfrac12\,\mathrm{curvature}\,\lVert w\rVert^2
               + \sum_{k=1}^{n} h_k \exp\!\Big(-\frac{\lVert w - c_k\rVert^2}{2\sigma_k^2}\Big)

    with centres :math:`c_k` uniform in :math:`[-4, 4]^2`, widths :math:`\sigma_k` uniform in
    [0.5, 1.5] and heights :math:`h_k` uniform in [-height, height] (negative: a well).  The
    numbers come from Python's ``random.Random(seed).random()``, whose sequence Python guarantees
    across versions, so a seed names the same surface everywhere.  The bowl makes f coercive, so
    a global minimum exists, but it is not known in closed form: ``minima`` is empty and
    ``min_value`` is ``None``.
    """

    seed: int = 0
    n_bumps: int = 8
    height: float = 2.0
    curvature: float = 0.1

    name: ClassVar[str] = "random_surface"
    start: ClassVar[Point] = (-4.0, 4.0)
    bounds: ClassVar[Bounds] = ((-5.0, 5.0), (-5.0, 5.0))
    minima: ClassVar[tuple[Point, ...]] = ()
    min_value: ClassVar[float | None] = None

    def __post_init__(self) -> None:
        # random.Random folds a negative seed onto its absolute value: reject it rather than alias.
        check_int(self.name, "seed", self.seed, 0)
        check_int(self.name, "n_bumps", self.n_bumps, 0)
        self._set_number("height", 0.0, low_open=False)
        self._set_number("curvature", 0.0)

    @cached_property
    def bumps(self) -> tuple[tuple[float, ...], tuple[float, ...], tuple[float, ...], tuple[float, ...]]:
        """The bumps as four tuples: centre w1, centre w2, width sigma, height h (one entry per bump)."""
        rng = random.Random(self.seed)
        draws = [
            (-4 + 8 * rng.random(), -4 + 8 * rng.random(), 0.5 + rng.random(), self.height * (2 * rng.random() - 1))
            for _ in range(self.n_bumps)
        ]
        cx, cy, sigma, h = (tuple(d[i] for d in draws) for i in range(4))
        return cx, cy, sigma, h

    def _loss(self, x: Tensor, y: Tensor) -> Tensor:
        cx, cy, sigma, h = torch.tensor(self.bumps, dtype=x.dtype, device=x.device)
        bowl = 0.5 * self.curvature * (x * x + y * y)
        # The bumps along a new last dimension, summed out.
        sq_dist = (x[..., None] - cx) ** 2 + (y[..., None] - cy) ** 2
        return bowl + (h * torch.exp(-sq_dist / (2 * sigma**2))).sum(-1)

    @property
    def description(self) -> str:  # type: ignore[override]
        return (
            f"0.5 c |w|^2 + sum_k h_k exp(-|w - c_k|^2 / (2 s_k^2)): c={self.curvature:g}, {self.n_bumps} random "
            f"bumps of |h| <= {self.height:g} from seed {self.seed}; minimum unknown"
        )


@dataclass(frozen=True)
class MatrixFactorization:
    r"""Low-rank matrix factorisation, the lab's problem for the matrix methods (Muon, SOAP, Shampoo).

    .. math::

        f(U, V) = \tfrac12\,\lVert U V^\top - M\rVert_F^2, \qquad M = A B^\top,
        \qquad \nabla_U f = R V, \quad \nabla_V f = R^\top U \quad (R = U V^\top - M)

    with :math:`U, A` of shape (``rows``, ``rank``) and :math:`V, B` of shape (``cols``, ``rank``).
    :math:`A`, :math:`B` and the start :math:`(U_0, V_0)` (entries ``init`` times uniform in
    [-1, 1]) come from Python's ``random.Random(seed).random()``, so a seed names the same problem
    everywhere.  The minimum is 0, reached wherever :math:`U V^\top = M`, e.g. at :math:`(A, B)`
    and at :math:`(AG, BG^{-\top})` for every invertible :math:`G`: a set, not a point, so runs are
    judged by their loss.  A method that orthogonalises or preconditions a weight matrix acts on
    :math:`U` and :math:`V` as matrices, which two scalar coordinates cannot show; so this is not a
    2-D :class:`Surface` (not among :func:`names`) and its runs are drawn as loss against step.
    From the small start, gradient descent first has to leave the saddle at :math:`U = V = 0`.

    ``surface(U, V)`` and ``surface.value_and_grad(U, V)`` take any leading batch dimensions
    (one per configuration).
    """

    rows: int = 8
    cols: int = 6
    rank: int = 2
    seed: int = 0
    init: float = 0.1

    name: ClassVar[str] = "matrix_factorization"
    min_value: ClassVar[float] = 0.0
    bounded_below: ClassVar[bool] = True

    def __post_init__(self) -> None:
        check_int(self.name, "rows", self.rows, 1)
        check_int(self.name, "cols", self.cols, 1)
        check_int(self.name, "rank", self.rank, 1)
        check_int(self.name, "seed", self.seed, 0)
        check_range(self.name, "init", self.init, 0.0, math.inf, low_open=True, high_open=True)
        object.__setattr__(self, "init", float(self.init))

    @cached_property
    def _draws(self) -> tuple[tuple[float, ...], ...]:
        """A, B, U0, V0 as flat tuples, row-major, uniform in [-1, 1] (U0, V0 not yet scaled)."""
        rng = random.Random(self.seed)
        sizes = (self.rows, self.cols, self.rows, self.cols)
        return tuple(tuple(2 * rng.random() - 1 for _ in range(n * self.rank)) for n in sizes)

    def _matrix(self, i: int, dtype: torch.dtype) -> Tensor:
        rows = self.rows if i % 2 == 0 else self.cols
        return torch.tensor(self._draws[i], dtype=dtype).reshape(rows, self.rank)

    def factors(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """``(A, B)``: one minimiser, :math:`A B^\top = M`."""
        return self._matrix(0, dtype), self._matrix(1, dtype)

    def target(self, dtype: torch.dtype = torch.float64) -> Tensor:
        """:math:`M`, of shape (``rows``, ``cols``) and rank ``rank`` (or less, where ``rank`` exceeds a side)."""
        a, b = self.factors(dtype)
        return a @ b.T

    def start(self, dtype: torch.dtype = torch.float64) -> tuple[Tensor, Tensor]:
        """``(U0, V0)``, new tensors."""
        return self.init * self._matrix(2, dtype), self.init * self._matrix(3, dtype)

    def __call__(self, u: Tensor, v: Tensor) -> Tensor:
        """The loss, of the batch shape of ``u`` and ``v`` (``u``: (..., rows, rank), ``v``: (..., cols, rank))."""
        return self.value_and_grad(u, v)[0]

    def value_and_grad(self, u: Tensor, v: Tensor) -> tuple[Tensor, tuple[Tensor, Tensor]]:
        """The loss and its gradients with respect to ``u`` and ``v`` (the formulas above)."""
        shapes = (tuple(u.shape[-2:]), tuple(v.shape[-2:]))
        if shapes != ((self.rows, self.rank), (self.cols, self.rank)):
            raise ValueError(
                f"{self.name}: invalid shapes U {tuple(u.shape)}, V {tuple(v.shape)}: expected (..., {self.rows}, "
                f"{self.rank}) and (..., {self.cols}, {self.rank})"
            )
        r = u @ v.transpose(-1, -2) - self.target(u.dtype)
        return 0.5 * (r * r).sum((-2, -1)), (r @ v, r.transpose(-1, -2) @ u)

    @property
    def description(self) -> str:
        return (
            f"0.5 ||U V^T - M||_F^2: U {self.rows}x{self.rank}, V {self.cols}x{self.rank}, M = A B^T of rank "
            f"{self.rank} from seed {self.seed}, start entries within +-{self.init:g}; minimum 0"
        )


_REGISTRY: dict[str, type[Surface]] = {
    cls.name: cls
    for cls in (Saddle, Rosenbrock, Beale, Himmelblau, Rastrigin, Booth, IllConditionedQuadratic, RandomSurface)
}


def names() -> list[str]:
    """The names :func:`get` accepts."""
    return list(_REGISTRY)


def get(name: str, **params: Any) -> Surface:
    """The surface called ``name`` with ``params`` (its dataclass fields; the rest keep defaults)."""
    if name not in _REGISTRY:
        raise ValueError(f"unknown surface {name!r}: expected one of {', '.join(_REGISTRY)}")
    cls = _REGISTRY[name]
    allowed = [f.name for f in fields(cls)]  # type: ignore[arg-type]
    unknown = sorted(set(params) - set(allowed))
    if unknown:
        raise ValueError(
            f"{name}: unknown parameter {', '.join(map(repr, unknown))}: "
            f"expected {'some of ' + ', '.join(allowed) if allowed else 'none'}"
        )
    return cls(**params)
