"""The native fast path (optim/_codegen.py, optim/_native.py) against the reference path, and its policy."""

from __future__ import annotations

import contextlib
import inspect
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from torch.fx.experimental.proxy_tensor import get_proxy_mode

from optimlab.optim import _codegen, _native
from optimlab.optim._base import RuleOptimizer
from optimlab.optim.adafactor import Adafactor
from optimlab.optim.adam import Adam
from optimlab.optim.nadam import NAdam

from . import harness as h
from .test_standard import CASES


def _rule_optimizer(case: h.Case) -> RuleOptimizer | None:
    opt = case.make([torch.zeros(2)])
    opt = getattr(opt, "optimizer", opt)  # Lookahead's inner optimizer
    return opt if isinstance(opt, RuleOptimizer) else None


NATIVE_CASES = [c for c in CASES if (opt := _rule_optimizer(c)) is not None and type(opt).elementwise]
# rules that reduce over a tensor: summed in another order than torch's, so equal to rounding.
# Muon's matrices have no native form (Newton-Schulz multiplies matrices): they take the reference
# path by design, and test_standard's default-path parity covers its AdamW tensors' native path.
# Prodigy's own step (one d over all tensors) runs its two passes natively: test_prodigy.py checks them.
# Shampoo's inverse roots (eigendecompositions) have no native form: the reference path by design.
REDUCING_CASES = [
    c
    for c in CASES
    if (opt := _rule_optimizer(c)) is not None
    and not type(opt).elementwise
    and type(opt).__name__ not in ("Muon", "Shampoo")
    and inspect.unwrap(type(opt).step).__qualname__ == "RuleOptimizer.step"  # torch wraps step in a hook
]


_TORCH_SQRT = torch.Tensor.sqrt


def _ieee_sqrt(x: torch.Tensor) -> torch.Tensor:
    if get_proxy_mode() is not None:  # a rule traced into a native kernel here records torch's sqrt op
        return _TORCH_SQRT(x)
    return torch.from_numpy(np.asarray(np.sqrt(x.detach().numpy()))).reshape(x.shape)


@contextlib.contextmanager
def correctly_rounded_sqrt() -> Iterator[None]:
    """torch's vectorised CPU sqrt is not correctly rounded (how many results are 1 ulp off varies
    by CPU: ~0.6% of float32 inputs on one, ~20% on another); C's sqrt and NumPy's are, as IEEE 754
    asks.  Within this, the reference path takes NumPy's: it then uses only operations that round
    alike on every CPU, so the native path must equal it bit for bit."""
    with pytest.MonkeyPatch.context() as m:
        m.setattr(torch.Tensor, "sqrt", _ieee_sqrt)
        m.setattr(torch, "sqrt", _ieee_sqrt)
        yield


@pytest.fixture
def launched(monkeypatch: pytest.MonkeyPatch) -> list[int]:
    """The number of tensors of every kernel launch."""
    calls: list[int] = []
    launch = _native._launch

    def spy(fn: Any, n: int, *args: Any) -> None:
        calls.append(n)
        launch(fn, n, *args)

    monkeypatch.setattr(_native, "_launch", spy)
    return calls


@pytest.fixture
def fallbacks(monkeypatch: pytest.MonkeyPatch) -> list[torch.Tensor]:
    """The parameters updated by the reference path (so that no test passes by falling back)."""
    calls: list[torch.Tensor] = []
    update = RuleOptimizer._update

    def spy(self: RuleOptimizer, p: torch.Tensor, *args: Any) -> None:
        calls.append(p)
        update(self, p, *args)

    monkeypatch.setattr(RuleOptimizer, "_update", spy)
    return calls


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
@pytest.mark.parametrize("case", NATIVE_CASES, ids=str)
def test_native_path_is_the_reference_path_bit_for_bit(
    case: h.Case, dtype: torch.dtype, fallbacks: list[torch.Tensor]
) -> None:
    start = h.make_params(case.shapes, dtype)
    grads = h.gradient_stream(case.shapes, 100, dtype)
    # under a scheduler, so that changing hyperparameters reach the kernel
    native = h.run(h.with_fast(case.make, True), [p.clone() for p in start], grads, schedule=case.scheduled)
    assert not fallbacks
    with correctly_rounded_sqrt():
        reference = h.run(h.with_fast(case.make, False), [p.clone() for p in start], grads, schedule=case.scheduled)
    assert len(fallbacks) == 100 * len(case.shapes)
    for step, (ours, ref) in enumerate(zip(native, reference)):
        assert all(torch.equal(a, b) for a, b in zip(ours, ref)), f"differs at step {step}"


@pytest.mark.parametrize("case", NATIVE_CASES, ids=str)
def test_native_path_in_float32_is_as_close_to_float64_as_the_reference_path(
    case: h.Case, fallbacks: list[torch.Tensor]
) -> None:
    # with torch's own sqrt the two paths differ by its rounding, which depends on the CPU: both are
    # judged against the float64 run instead, also across checkpoints swapped between the paths
    fast, ref = h.with_fast(case.make, True), h.with_fast(case.make, False)
    truth = h.float64_truth(ref, case.shapes, 100, schedule=case.scheduled)
    fallbacks.clear()  # the truth's own runs
    truth.check(h.run(fast, truth.start32(), truth.grads32(), schedule=case.scheduled))
    assert not fallbacks
    for first, then in ((fast, ref), (ref, fast)):
        truth.check([_run_resumed(first, then, truth.start32(), truth.grads32(), schedule=case.scheduled)])


@pytest.mark.parametrize("nudge", [0.0, 2.0])
def test_the_float64_comparison_fails_a_native_path_off_by_more_than_its_bar(
    nudge: float, monkeypatch: pytest.MonkeyPatch
) -> None:
    # the check above, on a native path that drifts by `nudge` x the bar over the run (every
    # parameter moved a little after every native step): caught, where the plain one passes
    case = next(c for c in NATIVE_CASES if c.id == "Adam")
    truth = h.float64_truth(h.with_fast(case.make, False), case.shapes, 100)
    drift = nudge * truth.bar * h.displacement(truth.history, truth.start) / len(truth.grads)
    step_group = _native.step_group

    def drifting(opt: RuleOptimizer, group: dict[str, Any], params: list[torch.Tensor], kwargs: dict[str, Any]) -> None:
        step_group(opt, group, params, kwargs)
        for p in params:
            p.add_(drift)

    monkeypatch.setattr(_native, "step_group", drifting)
    native = h.run(h.with_fast(case.make, True), truth.start32(), truth.grads32())
    if nudge:
        with pytest.raises(AssertionError, match="off the float64 reference run"):
            truth.check(native)
    else:
        truth.check(native)


def _run_resumed(
    first: h.Make, then: h.Make, start: list[torch.Tensor], grads: list[list[torch.Tensor]], schedule: bool = False
) -> list[torch.Tensor]:
    """Half the steps with ``first``, its state_dict (and its scheduler's) loaded into ``then``,
    the other half: the parameters at the end."""
    ps = [p.clone() for p in start]
    half = len(grads) // 2
    saved: tuple[dict[str, Any], dict[str, Any]] | None = None
    for make, part in ((first, grads[:half]), (then, grads[half:])):
        opt = make(h.param_groups(ps))
        sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lambda _: 0.99) if schedule else None
        if saved is not None:
            opt.load_state_dict(saved[0])
            if sched is not None:
                sched.load_state_dict(saved[1])
        for step_grads in part:
            for p, g in zip(ps, step_grads):
                p.grad = g.clone()
            opt.step()
            if sched is not None:
                sched.step()
        saved = (h.roundtrip(opt.state_dict()), sched.state_dict() if sched is not None else {})
    return [p.detach().clone() for p in ps]


@pytest.mark.parametrize("case", REDUCING_CASES, ids=str)
def test_native_path_of_a_reducing_rule_is_as_accurate_as_the_reference_path(
    case: h.Case, fallbacks: list[torch.Tensor], launched: list[int]
) -> None:
    fast, ref = h.with_fast(case.make, True), h.with_fast(case.make, False)
    truth = h.float64_truth(ref, case.shapes, 100)
    fallbacks.clear()  # the truth's own runs
    # float64: the reference path's arithmetic with sums in another order; float32: within the bar
    native = h.run(fast, [p.clone() for p in truth.start], truth.grads)
    assert h.relative_gap(native, truth.history, truth.start) <= 1e-12
    truth.check(h.run(fast, truth.start32(), truth.grads32()))
    assert not fallbacks and launched  # every step native (a check of the reference path alone proves nothing)
    for first, then in ((fast, ref), (ref, fast)):
        resumed = _run_resumed(first, then, truth.start, truth.grads)
        assert h.relative_gap([resumed], truth.history[-1:], truth.start, truth.history) <= 1e-12


@pytest.mark.parametrize("threads", [1, 2, 3])
@pytest.mark.parametrize("beta1", [None, 0.9])
def test_loop_nest_kernels_split_rows_between_threads(threads: int, beta1: float | None, launched: list[int]) -> None:
    # a batch of matrices and vectors big enough for threads, with rows split between them
    shapes = [(3, 2, 157, 131), (70001,), (300, 257), (5,), (2, 3)]
    start = h.make_params(shapes, torch.float64)
    grads = h.gradient_stream(shapes, 4, torch.float64)

    def make(ps: list[torch.Tensor], fast: bool) -> Adafactor:
        return Adafactor(ps, beta1=beta1, weight_decay=0.1, fast=fast)

    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        native = h.run(lambda ps: make(ps, True), [p.clone() for p in start], grads, groups=False)
        again = h.run(lambda ps: make(ps, True), [p.clone() for p in start], grads, groups=False)
    finally:
        torch.set_num_threads(before)
    assert sum(launched) == 2 * len(shapes) * 4  # a matrix kernel and a vector kernel per step
    reference = h.run(lambda ps: make(ps, False), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(native, reference, start) <= 1e-12
    # partial sums are added in thread order, not as threads finish: a rerun is bit-identical
    assert all(torch.equal(a, b) for xs, ys in zip(native, again) for a, b in zip(xs, ys))


@pytest.mark.parametrize("threads", [2, 3])
def test_threads_split_many_tensors_exactly(threads: int, launched: list[int]) -> None:
    # over 65,536 elements the kernel splits all tensors' elements between threads: shares end
    # inside tensors, a tensor can be shared by threads or skipped by one
    shapes = [(1000, 37), (3,), (1,), (0,), (20001,), (17, 13), (9000,), (2,)]
    start = h.make_params(shapes, torch.float32)
    grads = h.gradient_stream(shapes, 5, torch.float32)
    before = torch.get_num_threads()
    torch.set_num_threads(threads)
    try:
        native = h.run(h.with_fast(NAdam, True), [p.clone() for p in start], grads, groups=False)
    finally:
        torch.set_num_threads(before)
    assert launched == [len(shapes)] * 5
    with correctly_rounded_sqrt():
        reference = h.run(h.with_fast(NAdam, False), [p.clone() for p in start], grads, groups=False)
    assert all(torch.equal(a, b) for xs, ys in zip(native, reference) for a, b in zip(xs, ys))


@pytest.mark.parametrize(("fast", "native"), [(None, True), (True, True), (False, False)])
def test_when_the_native_path_is_taken(launched: list[int], fast: bool | None, native: bool) -> None:
    p = torch.zeros(2)
    p.grad = torch.ones(2)
    opt = Adam([p], fast=fast)
    assert opt.param_groups[0]["fast"] is fast
    opt.step()
    assert bool(launched) == native


def test_channels_last_parameters_take_the_native_path(fallbacks: list[torch.Tensor]) -> None:
    # conv weights in channels_last: walked in memory order, with a gradient in either layout
    gen = torch.Generator().manual_seed(0)
    start = [
        torch.randn(4, 3, 5, 2, generator=gen).to(memory_format=torch.channels_last),
        torch.randn(6, generator=gen),
    ]
    grads = [[torch.randn(4, 3, 5, 2, generator=gen), torch.randn(6, generator=gen)] for _ in range(5)]
    grads[1][0] = grads[1][0].to(memory_format=torch.channels_last)

    def run(fast: bool) -> list[torch.Tensor]:
        ps = [p.clone(memory_format=torch.preserve_format) for p in start]
        opt = NAdam(ps, lr=0.1, weight_decay=0.1, fast=fast)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone(memory_format=torch.preserve_format)
            opt.step()
        assert ps[0].is_contiguous(memory_format=torch.channels_last)
        return ps

    native = run(True)
    assert not fallbacks
    with correctly_rounded_sqrt():
        reference = run(False)
    assert all(torch.equal(a, b) for a, b in zip(native, reference))


def test_ineligible_tensors_take_the_reference_path_in_the_same_group(fallbacks: list[torch.Tensor]) -> None:
    gen = torch.Generator().manual_seed(0)
    params = [
        torch.randn(8, generator=gen),
        torch.randn(6, 4, generator=gen).t(),  # not dense in memory order
        torch.randn(5, generator=gen).half(),  # 16-bit
        torch.randn(3, generator=gen, dtype=torch.float64),
    ]
    grads = [[torch.randn(p.shape, generator=gen).to(p.dtype) for p in params] for _ in range(4)]

    def run(fast: bool) -> list[torch.Tensor]:
        ps = [p.clone() for p in params]
        opt = Adam(ps, lr=0.1, fast=fast)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
        return ps

    with correctly_rounded_sqrt():  # in both runs: the ineligible tensors take the reference path in both
        native = run(True)
        assert len(fallbacks) == 2 * 4  # the two ineligible tensors, at every step
        assert all(p.dtype == torch.float16 or not p.is_contiguous() for p in fallbacks)
        reference = run(False)
    assert all(torch.equal(a, b) for a, b in zip(native, reference))


@pytest.fixture
def fresh(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """An empty kernel cache, in memory and on disk, and no compiler found yet."""
    monkeypatch.setenv("OPTIMLAB_CACHE_DIR", str(tmp_path))
    monkeypatch.setattr(_native, "_kernels", {})
    monkeypatch.setattr(_native, "_compiler", None)
    monkeypatch.setattr(_native, "_disabled", None)
    monkeypatch.setattr(_native, "_warned", False)
    monkeypatch.setattr(_native, "_fallbacks", set())
    yield tmp_path / "kernels"


def _steps(
    fast: bool | None, lrs: tuple[float, ...] = (0.1,) * 5, weight_decay: tuple[float, ...] = (0.0,) * 5
) -> list[torch.Tensor]:
    ps = h.make_params([(6, 2), (5,), (3,)], torch.float32)
    opt = Adam(ps, fast=fast)
    for lr, wd, step_grads in zip(lrs, weight_decay, h.gradient_stream([(6, 2), (5,), (3,)], len(lrs), torch.float32)):
        opt.param_groups[0].update(lr=lr, weight_decay=wd)
        for p, g in zip(ps, step_grads):
            p.grad = g
        opt.step()
    return ps


def test_changing_hyperparameters_build_no_new_kernel_until_one_crosses_zero(
    fresh: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    built: list[str] = []
    generate = _codegen.generate
    monkeypatch.setattr(_codegen, "generate", lambda *a, **k: built.append("kernel") or generate(*a, **k))
    _steps(True, lrs=(0.1, 0.05, 0.02, 0.3, 1e-4), weight_decay=(0.1, 0.2, 0.3, 0.4, 0.5))
    assert len(built) == 1
    # rules skip a term whose hyperparameter is exactly 0, as the reference path does: one more
    _steps(True, weight_decay=(0.1, 0.0, 0.2, 0.0, 0.3))
    assert len(built) == 2


def test_kernels_are_cached_on_disk(fresh: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    expected = _steps(True)
    assert len(list(fresh.glob("*.so"))) == 1 and not [p for p in fresh.iterdir() if p.is_dir()]
    monkeypatch.setattr(_native, "_kernels", {})  # as in a new process

    def no_compiler(*args: Any, **kwargs: Any) -> None:
        raise AssertionError("compiled again despite the cache")

    monkeypatch.setattr(_native.subprocess, "run", no_compiler)
    assert all(torch.equal(a, b) for a, b in zip(_steps(True), expected))


def test_an_unwritable_kernel_cache_falls_back_to_a_temporary_one(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    blocker = tmp_path / "file"
    blocker.write_text("")
    monkeypatch.setenv("OPTIMLAB_CACHE_DIR", str(blocker))  # its kernels/ cannot be created
    monkeypatch.setattr(_native.tempfile, "gettempdir", lambda: str(tmp_path))
    with pytest.warns(RuntimeWarning, match="cannot be written"):
        ps = _steps(fast=True)
    assert list(tmp_path.glob("optimlab-kernels-*/*.so"))
    with correctly_rounded_sqrt():
        assert all(torch.equal(a, b) for a, b in zip(ps, _steps(fast=False)))


def test_missing_compiler_is_quiet_by_default_and_warns_once_when_asked(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    # no compiler on the PATH and none named by CC (a CC that is missing warns: see test_native_cache.py)
    monkeypatch.delenv("CC", raising=False)
    monkeypatch.setenv("PATH", str(tmp_path))
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        _steps(fast=None)
    with pytest.warns(RuntimeWarning, match="no C compiler found") as caught:
        ps = _steps(fast=True)
        _steps(fast=True)
    assert len(caught) == 1
    assert all(torch.equal(a, b) for a, b in zip(ps, _steps(fast=False)))


def test_failed_compilation_warns_once_and_loses_no_step(
    fresh: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    broken = tmp_path / "cc"
    broken.write_text("#!/bin/sh\necho 'simulated compiler crash' >&2\nexit 1\n")
    broken.chmod(0o755)
    monkeypatch.setenv("CC", str(broken))
    with pytest.warns(RuntimeWarning, match="simulated compiler crash") as caught:
        ps = _steps(fast=True)
        _steps(fast=True)
    assert len(caught) == 1 and not _native.available()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert all(torch.equal(a, b) for a, b in zip(ps, _steps(fast=False)))


def test_a_rule_without_translation_keeps_the_reference_path(fresh: Path) -> None:
    def exp_rule(
        param: torch.Tensor, grad: torch.Tensor, state: dict, step: Any, *, lr: Any
    ) -> tuple[torch.Tensor, dict]:
        return param - lr * grad.exp(), {}

    class ExpDescent(RuleOptimizer):
        rule = staticmethod(exp_rule)

        def __init__(self, params: Any, lr: float = 0.1, fast: bool | None = None) -> None:
            super().__init__(params, {"lr": lr}, fast=fast)

        def validate(self, group: dict[str, Any]) -> None:
            pass

        def init_state(self, param: torch.Tensor, group: dict[str, Any]) -> dict:
            return {}

    p = torch.ones(3)
    p.grad = torch.zeros(3)
    ExpDescent([p], fast=True).step()
    assert torch.equal(p, torch.full((3,), 0.9))
    assert list(_native._kernels.values()) == [None]
    with pytest.raises(_codegen.Unsupported, match="exp"):
        _codegen.generate(exp_rule, {}, ("lr",), (4,), {}, torch.float32)


def test_generated_code_computes_hyperparameter_arithmetic_once_per_call() -> None:
    # the point of the three value classes: no pow() inside the element loop
    state = {"exp_avg": (4,), "exp_avg_sq": (4,)}
    kernel = _codegen.generate(Adam.rule, {}, ("lr", "beta1", "beta2", "eps"), (4,), state, torch.float32)
    loop = kernel.source[kernel.source.index("for (int64_t i = begin") :]
    assert "pow(" in kernel.source and "pow(" not in loop and "double" not in loop


def test_lookahead_synchronises_natively_unless_the_inner_optimizer_is_told_not_to(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from optimlab.optim import lookahead

    used: list[int] = []
    tensor_list = lookahead.TensorList
    monkeypatch.setattr(lookahead, "TensorList", lambda ts: used.append(1) or tensor_list(ts))
    for fast, reference_syncs in ((None, 0), (False, 2 * 2)):  # two syncs of (fast, slow) lists
        ps = h.make_params([(5, 3), (4,)], torch.float32)
        opt = lookahead.Lookahead(Adam(ps, fast=fast), k=3)
        for grads in h.gradient_stream([(5, 3), (4,)], 6, torch.float32):
            for p, g in zip(ps, grads):
                p.grad = g
            opt.step()
        assert len(used) == reference_syncs
        used.clear()
