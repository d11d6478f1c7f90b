"""The loop-nest kernels of the rules that reduce (Adafactor, LAMB, MARS, Prodigy's sums): every way a tensor is cut
into tiles, results that do not depend on the number of threads, scratch memory that does not grow
with it, and a failed allocation."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
import torch

from optimlab.optim import LAMB, MARS, _native
from optimlab.optim._base import RuleOptimizer
from optimlab.optim.adafactor import Adafactor

from . import harness as h
from .test_fast_path import launched  # noqa: F401 - a fixture

# one shape per way of cutting a tensor (see optim/_loopnest.py): whole matrices per tile (conv
# weights of 3x3 and 1x1 matrices, compiled with constant sizes and taken 16 at a time, in one and
# in several tiles, with and without a short last block in a tile (97 x 95 and 300 x 250: the
# first tile's ends with 15 and 12 matrices, right before the second tile's), and other sizes),
# ranges of rows of a tall matrix (a column, (n, 1)), ranges of columns of a wide one, ranges of a
# vector's elements
SHAPES = [
    (96, 96, 3, 3),
    (97, 95, 3, 3),
    (40, 30, 3, 3),
    (512, 256, 1, 1),
    (300, 250, 1, 1),
    (6, 5, 1, 1),
    (5, 2, 7, 5),
    (70000, 1),
    (300, 257),
    (3, 40000),
    (70001,),
    (64,),
]


def _make(beta1: float | None, fast: bool) -> h.Make:
    return lambda ps: Adafactor(ps, beta1=beta1, weight_decay=0.1, fast=fast)


def _with_threads(threads: int, fn: h.Make, start: list[torch.Tensor], grads: list[list[torch.Tensor]]) -> list:
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        return h.run(fn, [p.clone() for p in start], grads, groups=False)
    finally:
        torch.set_num_threads(before)


@pytest.mark.parametrize("beta1", [None, 0.9])
def test_every_tiling_matches_the_float64_reference(beta1: float | None, launched: list[int]) -> None:  # noqa: F811
    start = h.make_params(SHAPES, torch.float64)
    grads = h.gradient_stream(SHAPES, 4, torch.float64)
    native = _with_threads(2, _make(beta1, True), start, grads)
    assert sum(launched) == 4 * len(SHAPES), "every tensor in a kernel"
    reference = h.run(_make(beta1, False), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(native, reference, start) <= 1e-12


def test_results_do_not_depend_on_the_number_of_threads(launched: list[int]) -> None:  # noqa: F811
    # tiles are cut by shape alone and their sums added in tile order: the same bits for any
    # number of threads (float32, where the order of a sum shows most)
    start = h.make_params(SHAPES, torch.float32)
    grads = h.gradient_stream(SHAPES, 3, torch.float32)
    runs = [_with_threads(threads, _make(0.9, True), start, grads) for threads in (1, 2, 3, 8)]
    assert launched and sum(launched) == 4 * 3 * len(SHAPES)
    for other in runs[1:]:
        assert all(torch.equal(a, b) for xs, ys in zip(runs[0], other) for a, b in zip(xs, ys))


# the rules with a norm per tensor: LAMB's moments are stored by the pass that sums the norms and
# read back by the one that writes the parameter; MARS's vectors and conv weights (AdamW) and its
# matrices (its corrected gradient's norm) take different code in the same launch
NORMS = {
    "LAMB": lambda fast: lambda ps: LAMB(ps, lr=0.01, weight_decay=0.1, fast=fast),
    "LAMB-clamp": lambda fast: lambda ps: LAMB(ps, lr=0.01, bias_correction=False, clamp_value=10.0, fast=fast),
    "MARS": lambda fast: lambda ps: MARS(ps, lr=0.01, weight_decay=0.1, fast=fast),
    "MARS-amsgrad-1d": lambda fast: lambda ps: MARS(ps, lr=0.01, amsgrad=True, optimize_1d=True, fast=fast),
}


@pytest.mark.parametrize("name", NORMS)
def test_rules_with_norms_match_the_float64_reference_at_every_tiling(name: str, launched: list[int]) -> None:  # noqa: F811
    start = h.make_params(SHAPES, torch.float64)
    grads = h.gradient_stream(SHAPES, 4, torch.float64)
    native = _with_threads(2, NORMS[name](True), start, grads)
    assert sum(launched) == 4 * len(SHAPES), "every tensor in a kernel"
    reference = h.run(NORMS[name](False), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(native, reference, start) <= 1e-12


@pytest.mark.parametrize("name", ["LAMB", "MARS"])
def test_rules_with_norms_do_not_depend_on_the_number_of_threads(name: str, launched: list[int]) -> None:  # noqa: F811
    start = h.make_params(SHAPES, torch.float32)
    grads = h.gradient_stream(SHAPES, 3, torch.float32)
    runs = [_with_threads(threads, NORMS[name](True), start, grads) for threads in (1, 2, 3, 8)]
    assert launched and sum(launched) == 4 * 3 * len(SHAPES)
    for other in runs[1:]:
        assert all(torch.equal(a, b) for xs, ys in zip(runs[0], other) for a, b in zip(xs, ys))


def _normalised(param: torch.Tensor, grad: torch.Tensor, state: dict, step: Any, *, lr: Any) -> tuple:
    """A rule whose last pass reads its new state (after the norm) and the old one."""
    m = 0.5 * state["m"] + grad
    norm = (m * m).sum().sqrt()
    return param - lr * (m / norm) - lr * state["m"], {"m": m}


class _Normalised(RuleOptimizer):
    rule = staticmethod(_normalised)
    elementwise = False

    def __init__(self, params: Any, lr: float = 0.1, fast: bool | None = None) -> None:
        super().__init__(params, {"lr": lr}, fast=fast)

    def validate(self, group: dict[str, Any]) -> None:
        pass

    def init_state(self, param: torch.Tensor, group: dict[str, Any]) -> dict:
        return {"m": torch.zeros_like(param)}


def test_a_state_whose_old_value_a_later_pass_reads_is_not_stored_before_it(launched: list[int]) -> None:  # noqa: F811
    # stored by the pass of the norm (as LAMB's moments are), m would be read back for its old value
    shapes = [(70001,), (300, 257), (40, 30, 3, 3)]
    start = h.make_params(shapes, torch.float64)
    grads = h.gradient_stream(shapes, 3, torch.float64)
    native = h.run(lambda ps: _Normalised(ps, fast=True), [p.clone() for p in start], grads, groups=False)
    assert sum(launched) == 3 * len(shapes)
    reference = h.run(lambda ps: _Normalised(ps, fast=False), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(native, reference, start) <= 1e-12


def test_an_output_no_later_pass_reads_is_stored_by_the_pass_that_sums(launched: list[int]) -> None:  # noqa: F811
    # Prodigy's first pass: the new s and two sums of the tensor.  Nothing after the sums reads s, so the pass that
    # sums stores it: one pass over the elements (20 B per float32 parameter), not a second one for s alone.
    from optimlab.optim import _codegen
    from optimlab.optim.prodigy import prodigy_sums

    hyper = {"beta3": 0.9, "weight": 0.3, "weight_decay": 0.1}
    layout = {"s": (7,), "p0": (7,), "dot": (), "size": ()}
    kernel = _codegen.generate(prodigy_sums, {"decouple": False}, list(hyper), (7,), layout, torch.float64)
    assert kernel.source.count("for (int64_t j = j0; j < j1; ++j)") == 1
    gen = torch.Generator().manual_seed(0)
    sizes = (70001, 64)
    ps, gs, p0s, ss = ([torch.randn(n, generator=gen, dtype=torch.float64) for n in sizes] for _ in range(4))
    sums = torch.zeros(len(sizes), 2, dtype=torch.float64)
    states = [{"s": s.clone(), "p0": p0, "dot": pair[0], "size": pair[1]} for s, p0, pair in zip(ss, p0s, sums)]
    assert _native.run(prodigy_sums, ps, gs, states, 0.0, {**hyper, "decouple": False}, vectors=True)
    assert launched == [2]
    for p, g, p0, s, state, pair in zip(ps, gs, p0s, ss, states, sums):
        _, expected = prodigy_sums(p, g, {"s": s, "p0": p0}, 0.0, **hyper, decouple=False)
        assert torch.equal(state["s"], expected["s"])
        # the two sums agree but for their order of summation: a bar relative to the terms' size, not the sum's
        grad = g + 0.1 * p
        for got, want, terms in (
            (pair[0], expected["dot"], grad * (p0 - p)),
            (pair[1], expected["size"], expected["s"]),
        ):
            assert abs(got - want).item() <= 1e-12 * terms.abs().sum().item()


# C's malloc and calloc, replaced for a child process: they record the largest request, and refuse
# requests of at least $OPTIMLAB_TEST_MALLOC_LIMIT bytes (torch allocates tensors with
# posix_memalign, so only the kernel's scratch memory is concerned)
_SHIM = """\
#include <stddef.h>
#include <stdlib.h>
void *__libc_malloc(size_t);
void *__libc_calloc(size_t, size_t);
static size_t largest;
size_t shim_largest(void) { size_t n = largest; largest = 0; return n; }
static int refuse(size_t n)
{
    const char *limit = getenv("OPTIMLAB_TEST_MALLOC_LIMIT");
    if (limit && n >= strtoull(limit, NULL, 10))
        return 1;
    if (n > largest)
        largest = n;
    return 0;
}
void *malloc(size_t n) { return refuse(n) ? NULL : __libc_malloc(n); }
void *calloc(size_t n, size_t size) { return refuse(n * size) ? NULL : __libc_calloc(n, size); }
"""

_CHILD = """\
import ctypes, json, os, sys, warnings
import torch
from optimlab.optim.adafactor import Adafactor

shim = ctypes.CDLL(os.environ["LD_PRELOAD"])
shim.shim_largest.restype = ctypes.c_size_t
shape, dtype, threads, limit = json.loads(sys.argv[1])
dtype = getattr(torch, dtype)
gen = torch.Generator().manual_seed(0)
start = torch.randn(shape, generator=gen, dtype=dtype)
grads = [torch.randn(shape, generator=gen, dtype=dtype) for _ in range(2)]

def run(fast):
    warm = start.clone()
    warm.grad = grads[0]
    Adafactor([warm], beta1=0.9, fast=fast).step()  # builds the kernel
    p = start.clone()
    opt = Adafactor([p], beta1=0.9, fast=fast)
    p.grad = grads[1]
    if limit:
        os.environ["OPTIMLAB_TEST_MALLOC_LIMIT"] = str(limit)
    shim.shim_largest()
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        opt.step()
    largest = shim.shim_largest()
    os.environ.pop("OPTIMLAB_TEST_MALLOC_LIMIT", None)
    return p, largest, [str(w.message) for w in caught]

torch.set_num_threads(threads)
native, largest, caught = run(True)
reference, _, _ = run(False)
print(json.dumps({"equal": torch.equal(native, reference), "largest": largest, "warnings": caught}))
"""


@pytest.fixture(scope="module")
def malloc_shim(tmp_path_factory: pytest.TempPathFactory) -> Path:
    cc = next((shutil.which(name) for name in ("cc", "gcc", "clang") if shutil.which(name)), None)
    if cc is None or not _native.available() or not sys.platform.startswith("linux"):
        pytest.skip("needs a C compiler and glibc to replace malloc in a child process")
    work = tmp_path_factory.mktemp("shim")
    (work / "shim.c").write_text(_SHIM)
    done = subprocess.run(
        [cc, "-shared", "-fPIC", "-O1", "shim.c", "-o", "shim.so"], cwd=work, capture_output=True, check=False
    )
    if done.returncode != 0:
        pytest.skip(f"cannot build the malloc replacement: {done.stderr.decode(errors='replace')[-300:]}")
    return work / "shim.so"


def _child(shim: Path, shape: tuple[int, ...], dtype: str, threads: int, limit: int = 0) -> dict:
    env = dict(os.environ, LD_PRELOAD=str(shim))
    done = subprocess.run(
        [sys.executable, "-c", _CHILD, json.dumps([shape, dtype, threads, limit])],
        env=env,
        capture_output=True,
        check=False,
        text=True,
        timeout=300,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize("shape", [(400_000, 1), (64, 64, 3, 3), (1000, 600)], ids=str)
def test_scratch_memory_does_not_grow_with_threads(malloc_shim: Path, shape: tuple[int, ...]) -> None:
    # once one buffer was threads x rows: 64 threads and a (50M, 1) parameter crashed
    one, many = (_child(malloc_shim, shape, "float64", threads) for threads in (1, 16))
    assert one["largest"] == many["largest"] > 1 << 16, "the kernel's scratch, above Python's own requests"
    # the kernel's one allocation is a few bytes per element at most: row and column statistics
    # of the tensor, in double precision, and 64 slots per tensor-wide sum
    elements = torch.Size(shape).numel()
    assert one["largest"] <= 64 * elements + (1 << 16)
    assert not one["warnings"] and not many["warnings"]


def test_a_kernel_that_cannot_allocate_leaves_the_step_to_the_reference_path(malloc_shim: Path) -> None:
    shape = (512, 256, 3, 3)
    free = _child(malloc_shim, shape, "float32", 2)
    assert not free["warnings"] and free["largest"] > 1 << 20, "the kernel allocates its scratch"
    starved = _child(malloc_shim, shape, "float32", 2, limit=1 << 20)
    assert starved["equal"], "the step was done, by the reference path"
    assert any("could not allocate" in w and "reference path" in w for w in starved["warnings"]), starved


def test_many_tiny_matrices_take_the_reference_path(launched: list[int]) -> None:  # noqa: F811
    # rows of one or two elements: the loop nest would be slower than torch (optim/_loopnest.suits)
    shapes = [(200, 64, 1), (100, 16, 2), (70, 3, 3)]
    start = h.make_params(shapes, torch.float64)
    grads = h.gradient_stream(shapes, 2, torch.float64)
    native = h.run(_make(None, True), [p.clone() for p in start], grads, groups=False)
    assert launched == [1, 1], "only the 3x3 matrices in a kernel"
    reference = h.run(_make(None, False), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(native, reference, start) <= 1e-12
