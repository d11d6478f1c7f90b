"""What every optimizer case declares, and the runs the standard tests compare.

Each ``tests/optim/cases_<name>.py`` module lists ``CASES``; ``test_standard.py`` runs the same
checks (parity with the reference, resume, foreach, dtypes, convergence, errors) on all of them.
"""

from __future__ import annotations

import functools
import io
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

Make = Callable[..., torch.optim.Optimizer]

# Shapes for parity runs: a scalar, vectors, a matrix, a 3-D tensor and a tall matrix.
SHAPES: tuple[tuple[int, ...], ...] = ((), (1,), (7,), (4, 5), (2, 3, 4), (16, 3))


@dataclass
class Case:
    """One optimizer configuration and how to check it.

    make(params, **overrides) builds ours; reference(params) builds the reference (a
    torch.optim.Optimizer: the named library's class, or a from-the-paper implementation in the
    tests); solver(params) builds ours with the settings that must solve the test problems
    within ``solve_steps`` (with a 10x margin whatever the rounding).  ``invalid`` lists
    (constructor kwargs, regex of the message).
    """

    id: str
    make: Make
    reference: Make | None
    solver: Make | None = None
    solve_steps: int = 2000
    # the convergence run's lr falls linearly to 0 over its last third: at a constant lr an
    # adaptive method circles the minimum, and rounding decides where on the circle it stops
    solve_anneal: bool = False
    shapes: Sequence[tuple[int, ...]] = SHAPES
    steps: int = 200
    invalid: Sequence[tuple[dict[str, Any], str]] = ()
    # the reference runs in the schedule test too (False where a reference ignores lr changes)
    scheduled: bool = True
    extra: dict[str, Any] = field(default_factory=dict)

    def __str__(self) -> str:
        return self.id


def with_fast(make: Make, fast: bool | None) -> Make:
    """``make`` with ``group["fast"] = fast`` in every group (of Lookahead's inner optimizer too):
    ``False`` is the reference path, ``True`` the native one."""

    def made(params: Any, **kwargs: Any) -> torch.optim.Optimizer:
        opt = make(params, **kwargs)
        for group in getattr(opt, "optimizer", opt).param_groups:
            group["fast"] = fast
        return opt

    return made


def make_params(shapes: Sequence[tuple[int, ...]], dtype: torch.dtype, seed: int = 0) -> list[Tensor]:
    gen = torch.Generator().manual_seed(seed)
    return [torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes]


def param_groups(params: list[Tensor]) -> list[dict[str, Any]]:
    """Two groups: the second overrides nothing, so group defaults are exercised too."""
    half = len(params) // 2
    return [{"params": params[:half]}, {"params": params[half:]}]


def gradient_stream(shapes: Sequence[tuple[int, ...]], steps: int, dtype: torch.dtype, seed: int = 1) -> list[list[Tensor]]:
    gen = torch.Generator().manual_seed(seed)
    return [[torch.randn(s, generator=gen, dtype=torch.float64).to(dtype) for s in shapes] for _ in range(steps)]


def run(
    make: Make,
    params: list[Tensor],
    grads: list[list[Tensor]],
    *,
    schedule: bool = False,
    groups: bool = True,
) -> list[list[Tensor]]:
    """Apply the gradients step by step; returns the parameters after every step."""
    opt = make(param_groups(params) if groups else params)
    sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lambda _: 0.99) if schedule else None
    history = []
    for step_grads in grads:
        for p, g in zip(params, step_grads):
            p.grad = g.clone()
        opt.step()
        if sched is not None:
            sched.step()
        history.append([p.detach().clone() for p in params])
    return history


def displacement(history: list[list[Tensor]], start: list[Tensor]) -> float:
    """The largest |p_t - p_0| over all steps and elements."""
    return max((b.double() - s.double()).abs().max().item() if b.numel() else 0.0 for ys in history for b, s in zip(ys, start))


def relative_gap(
    ours: list[list[Tensor]], ref: list[list[Tensor]], start: list[Tensor], moved: list[list[Tensor]] | None = None
) -> float:
    """max |ours - ref| over all steps and elements, divided by the largest displacement of ref
    (or of ``moved``, the whole run where ``ref`` is its last steps)."""
    gap = max((a.double() - b.double()).abs().max().item() if a.numel() else 0.0 for xs, ys in zip(ours, ref) for a, b in zip(xs, ys))
    disp = displacement(moved or ref, start)
    assert disp > 0, "the reference never moved: the comparison would prove nothing"
    return gap / disp


# A float32 run is judged against the reference run in float64 on the same data, never against a
# float32 run of torch: torch's vectorised float32 sqrt is not correctly rounded, by an amount that
# varies by CPU (1 ulp off on ~0.6% of inputs on one, ~20% on another), so a float32 reference is
# not the truth.  The bar is the larger of FLOAT32_FLOOR and REFERENCE_ERROR_FACTOR times the
# float32 reference's own error against the float64 run, both relative to the displacement.
# Why 4: most of a float32 run's error is the rounding of the stored parameters, the same in every
# correct path.  Measured (2026-11-30, AMD Zen 5): over 182 library-parity runs and 91 native-path
# runs, ours was at most 1.27x as far from the float64 run as the float32 reference, and at most
# 1.18x with the reference's sqrt made 1 ulp off on half of its inputs (a CPU worse than any seen);
# 4x leaves room for what was not measured.
FLOAT32_FLOOR = 1e-6
REFERENCE_ERROR_FACTOR = 4.0


@dataclass(frozen=True)
class Float64Truth:
    """A reference run in float64, and the bar a float32 run of the same data must meet."""

    start: list[Tensor]  # float64 values that float32 holds exactly: both runs start alike
    grads: list[list[Tensor]]
    history: list[list[Tensor]]  # the float64 parameters after every step
    reference_error: float  # of the float32 reference run, relative to the displacement
    bar: float

    def start32(self) -> list[Tensor]:
        return [p.float() for p in self.start]

    def grads32(self) -> list[list[Tensor]]:
        return [[g.float() for g in gs] for gs in self.grads]

    def check(self, ours: list[list[Tensor]]) -> None:
        """Assert that a float32 run is within the bar.  ``ours`` holds the parameters after each
        of the last ``len(ours)`` steps (``[params]``: the final ones only)."""
        gap = relative_gap(ours, self.history[-len(ours) :], self.start, self.history)
        assert gap <= self.bar, (
            f"float32 run off the float64 reference run by {gap:.3g} of the displacement; bar {self.bar:.3g} "
            f"(the larger of {FLOAT32_FLOOR:g} and {REFERENCE_ERROR_FACTOR:g}x the float32 reference's "
            f"{self.reference_error:.3g})"
        )


def float64_truth(reference: Make, shapes: Sequence[tuple[int, ...]], steps: int, *, schedule: bool = False) -> Float64Truth:
    """``reference`` run in float64 and in float32 on the same seeded data (see FLOAT32_FLOOR)."""
    return _float64_truth(reference, tuple(map(tuple, shapes)), steps, schedule)


@functools.lru_cache(maxsize=4)  # the standard tests judge two paths of ours against each reference
def _float64_truth(reference: Make, shapes: tuple[tuple[int, ...], ...], steps: int, schedule: bool) -> Float64Truth:
    start = [p.float().double() for p in make_params(shapes, torch.float64)]
    grads = [[g.float().double() for g in gs] for gs in gradient_stream(shapes, steps, torch.float64)]
    history = run(reference, [p.clone() for p in start], grads, schedule=schedule)
    float32 = run(reference, [p.float() for p in start], [[g.float() for g in gs] for gs in grads], schedule=schedule)
    error = relative_gap(float32, history, start)
    return Float64Truth(start, grads, history, error, max(FLOAT32_FLOOR, REFERENCE_ERROR_FACTOR * error))


def roundtrip(state_dict: dict[str, Any]) -> dict[str, Any]:
    buf = io.BytesIO()
    torch.save(state_dict, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


BEFORE = ([1.0, -2.0, 3.0], [0.5, 0.5, -1.0])


def reference_checkpoint_continues(theirs_cls: Make, ours_cls: Make, before: Sequence[list[float]] = BEFORE, **kw: Any) -> dict[str, Any]:
    """Steps of the reference (one per gradient in ``before``), its state_dict loaded into ours,
    then one more step of each: equal.  Returns the saved state_dict, for checks of its layout.
    """
    p, q = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    theirs, ours = theirs_cls([p], **kw), ours_cls([q], **kw)
    for g in before:
        p.grad = torch.tensor(g, dtype=torch.float64)
        theirs.step()
    saved = roundtrip(theirs.state_dict())  # a copy: state_dict() shares tensors
    ours.load_state_dict(roundtrip(saved))
    q.copy_(p)
    for x in (p, q):
        x.grad = torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64)
    theirs.step()
    ours.step()
    assert torch.allclose(p, q, rtol=0, atol=1e-15)
    return saved
