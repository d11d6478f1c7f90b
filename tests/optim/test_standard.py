"""The checks every optimizer must pass, run over the CASES of every ``cases_*.py`` module."""

from __future__ import annotations

import importlib
import math
import pkgutil
from pathlib import Path

import pytest
import torch

from . import harness as h

CASES: list[h.Case] = []
for info in pkgutil.iter_modules([str(Path(__file__).parent)]):
    if info.name.startswith("cases_"):
        CASES.extend(importlib.import_module(f"{__package__}.{info.name}").CASES)

with_ref = [c for c in CASES if c.reference is not None]
params = pytest.mark.parametrize("case", CASES, ids=str)


@pytest.mark.parametrize("fast", [None, False], ids=["default", "reference-path"])
@pytest.mark.parametrize("case", with_ref, ids=str)
def test_parity_with_reference(case: h.Case, fast: bool | None) -> None:
    start = h.make_params(case.shapes, torch.float64)
    grads = h.gradient_stream(case.shapes, case.steps, torch.float64)
    ours = h.run(h.with_fast(case.make, fast), [p.clone() for p in start], grads)
    ref = h.run(case.reference, [p.clone() for p in start], grads)
    assert h.relative_gap(ours, ref, start) <= 1e-9


@pytest.mark.parametrize("fast", [None, False], ids=["default", "reference-path"])
@pytest.mark.parametrize("case", with_ref, ids=str)
def test_float32_is_as_close_to_the_float64_reference_as_the_reference_is(case: h.Case, fast: bool | None) -> None:
    # the reference's float32 run is no truth (torch's float32 sqrt rounding varies by CPU)
    truth = h.float64_truth(case.reference, case.shapes, case.steps)
    truth.check(h.run(h.with_fast(case.make, fast), truth.start32(), truth.grads32()))


@pytest.mark.parametrize("case", [c for c in with_ref if c.scheduled], ids=str)
def test_parity_under_lr_scheduler(case: h.Case) -> None:
    start = h.make_params(case.shapes, torch.float64)
    grads = h.gradient_stream(case.shapes, 60, torch.float64)
    ours = h.run(case.make, [p.clone() for p in start], grads, schedule=True)
    ref = h.run(case.reference, [p.clone() for p in start], grads, schedule=True)
    assert h.relative_gap(ours, ref, start) <= 1e-9


@params
def test_resume_from_checkpoint_is_exact(case: h.Case) -> None:
    start = h.make_params(case.shapes, torch.float32)
    grads = h.gradient_stream(case.shapes, 100, torch.float32)
    straight = h.run(case.make, [p.clone() for p in start], grads)[-1]

    ps = [p.clone() for p in start]
    opt = case.make(h.param_groups(ps))
    for step_grads in grads[:50]:
        for p, g in zip(ps, step_grads):
            p.grad = g.clone()
        opt.step()
    saved = h.roundtrip(opt.state_dict())
    resumed = [p.detach().clone() for p in ps]
    del opt, ps
    opt = case.make(h.param_groups(resumed))
    opt.load_state_dict(saved)
    for step_grads in grads[50:]:
        for p, g in zip(resumed, step_grads):
            p.grad = g.clone()
        opt.step()
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)


@params
def test_foreach_path_equals_per_parameter_path(case: h.Case) -> None:
    probe = case.make([torch.zeros(1)])
    if not getattr(probe, "elementwise", False):
        pytest.skip("no multi-tensor path: the rule reduces over each tensor")
    start = h.make_params(case.shapes, torch.float64)
    grads = h.gradient_stream(case.shapes, 50, torch.float64)
    reference = h.with_fast(case.make, False)
    single = h.run(lambda p: reference(p, foreach=False), [p.clone() for p in start], grads)
    multi = h.run(lambda p: reference(p, foreach=True), [p.clone() for p in start], grads)
    assert h.relative_gap(multi, single, start) <= 1e-12


@params
@pytest.mark.parametrize("dtype", [torch.float32, torch.bfloat16, torch.float16], ids=str)
def test_low_precision_state_follows_param_and_tracks_float64(case: h.Case, dtype: torch.dtype) -> None:
    refused = case.extra.get("refuses_dtypes", {})
    if dtype in refused:  # the optimizer refuses this dtype by design (its own tests check the message)
        pytest.skip(refused[dtype])
    # a case may name shapes whose rounding does not decide the update (SOAP: an 8 x 4 gradient's
    # first Gram matrix GG^T has a 4-dim null space, whose eigenvectors rounding picks)
    shapes = case.extra.get("low_precision_shapes", [(8, 4), (5,)])
    start = h.make_params(shapes, torch.float64)
    grads = h.gradient_stream(shapes, 20, torch.float64)
    exact = h.run(case.make, [p.clone() for p in start], grads)[-1]
    low_start = [p.to(dtype) for p in start]
    low = h.run(case.make, low_start, [[g.to(dtype) for g in gs] for gs in grads])[-1]
    opt = case.make(low_start)
    for p in low_start:
        p.grad = torch.ones_like(p)
    opt.step()
    for p in low_start:
        for key, value in opt.state[p].items():
            if torch.is_tensor(value) and key != "step" and value.is_floating_point():
                assert value.dtype == dtype, key
    scale = max((e - s).abs().max().item() for e, s in zip(exact, start))
    gap = max((a.double() - e).abs().max().item() for a, e in zip(low, exact))
    # a few ulps of the dtype per step, relative to how far the parameters moved
    assert gap <= max(20 * 20 * torch.finfo(dtype).eps, 1e-4) * max(scale, 1.0) + 20 * torch.finfo(dtype).eps


@params
def test_zero_element_and_gradless_parameters(case: h.Case) -> None:
    empty, also_empty, moving, frozen = torch.zeros(0), torch.zeros(0, 3), torch.ones(3), torch.ones(3)
    opt = case.make([empty, also_empty, moving, frozen])
    for p in (empty, also_empty, moving):
        p.grad = torch.ones_like(p)
    for _ in range(6):  # RAdam's authors' variant takes no step while rho_t <= 5
        opt.step()
    assert frozen.grad is None and torch.equal(frozen, torch.ones(3))
    assert frozen not in opt.state
    assert not torch.equal(moving, torch.ones(3))


@params
def test_grad_is_never_modified_and_maximize_negates(case: h.Case) -> None:
    start = h.make_params([(6,), (3, 2)], torch.float64)
    grads = h.gradient_stream([(6,), (3, 2)], 10, torch.float64)
    kept = [[g.clone() for g in gs] for gs in grads]
    a = [p.clone() for p in start]
    opt = case.make(a)
    for gs in grads:
        for p, g in zip(a, gs):
            p.grad = g
        opt.step()
        for p, g in zip(a, gs):
            assert p.grad is g
    assert all(torch.equal(g, k) for gs, ks in zip(grads, kept) for g, k in zip(gs, ks))
    up = h.run(lambda p: case.make(p, maximize=True), [p.clone() for p in start], [[-g for g in gs] for gs in grads])
    assert all(torch.equal(x, y) for x, y in zip(up[-1], a))


@params
def test_invalid_hyperparameters_raise_a_clear_error(case: h.Case) -> None:
    assert case.invalid, "every optimizer must test its error paths"
    for kwargs, message in case.invalid:
        with pytest.raises(ValueError, match=message):
            case.make([torch.zeros(2)], **kwargs)


@params
def test_sparse_gradient_raises(case: h.Case) -> None:
    p = torch.zeros(4)
    opt = case.make([p])
    p.grad = torch.sparse_coo_tensor([[0]], [1.0], (4,))
    with pytest.raises(RuntimeError, match="sparse"):
        opt.step()


def _quadratic() -> tuple[torch.Tensor, torch.Tensor]:
    # condition number 10, minimiser x* = A^-1 b
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(1.0, 10.0, 6, dtype=torch.float64)) @ q.T
    return a, torch.randn(6, generator=gen, dtype=torch.float64)


@pytest.mark.parametrize("case", [c for c in CASES if c.solver is not None], ids=str)
@pytest.mark.parametrize("problem", ["quadratic", "rosenbrock"])
def test_solves(case: h.Case, problem: str) -> None:
    if problem == "quadratic":
        a, b = _quadratic()
        x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
        target = torch.linalg.solve(a, b)
        loss_fn = lambda: 0.5 * x @ a @ x - b @ x
        tol = 1e-3
    else:
        x = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
        target = torch.ones(2, dtype=torch.float64)
        loss_fn = lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2
        tol = 1e-2
    opt = case.solver([x])
    steps = case.solve_steps
    anneal = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, 3 * (1 - t / steps))) if case.solve_anneal else None
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
        if anneal is not None:
            anneal.step()
    dist = (x.detach() - target).norm().item()
    assert math.isfinite(dist) and dist <= tol, f"{case.id}: |x - x*| = {dist:.3g} after {case.solve_steps} steps"


@params
def test_non_finite_gradients_propagate_without_error(case: h.Case) -> None:
    # The documented policy (as torch.optim): no check, no skip, no hang; NaN reaches the parameter.
    p, q = torch.ones(4), torch.ones(4)
    opt = case.make([p, q])
    p.grad = torch.tensor([1.0, float("nan"), 1.0, 1.0])
    q.grad = torch.tensor([1.0, float("inf"), 1.0, 1.0])
    for _ in range(6):  # RAdam's authors' variant takes no step while rho_t <= 5
        opt.step()
    assert torch.isnan(p).any() or torch.isinf(p).any()
    assert not torch.isfinite(q).all()


FRESH_PROCESS = """
import sys, torch
sys.path.insert(0, {root!r})
from tests.optim.test_standard import CASES
case = next(c for c in CASES if c.id == {case!r})
saved = torch.load({path!r}, weights_only=True)
ps = saved["params"]
opt = case.make([{{"params": ps[: len(ps) // 2]}}, {{"params": ps[len(ps) // 2 :]}}])
sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lambda _: 0.99)
opt.load_state_dict(saved["optimizer"])
sched.load_state_dict(saved["scheduler"])
for step_grads in saved["grads"]:
    for p, g in zip(ps, step_grads):
        p.grad = g.clone()
    opt.step()
    sched.step()
torch.save(ps, {out!r})
"""


@pytest.mark.parametrize("case_id", ["AdaBound", "Adam-amsgrad", "Lookahead-Adam"])
def test_resume_in_a_fresh_process_under_a_scheduler(case_id: str, tmp_path) -> None:
    import subprocess
    import sys

    case = next(c for c in CASES if c.id == case_id)
    start = h.make_params(case.shapes, torch.float64)
    grads = h.gradient_stream(case.shapes, 40, torch.float64)
    straight = h.run(case.make, [p.clone() for p in start], grads, schedule=True)[-1]

    ps = [p.clone() for p in start]
    opt = case.make(h.param_groups(ps))
    sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lambda _: 0.99)
    for step_grads in grads[:20]:
        for p, g in zip(ps, step_grads):
            p.grad = g.clone()
        opt.step()
        sched.step()
    path, out = tmp_path / "ckpt.pt", tmp_path / "out.pt"
    torch.save({"params": ps, "optimizer": opt.state_dict(), "scheduler": sched.state_dict(), "grads": grads[20:]}, path)
    root = str(Path(__file__).resolve().parents[2])
    code = FRESH_PROCESS.format(root=root, case=case_id, path=str(path), out=str(out))
    subprocess.run([sys.executable, "-c", code], check=True, cwd=root, timeout=120)
    resumed = torch.load(out, weights_only=True)
    for a, b in zip(resumed, straight):
        assert torch.equal(a, b)


@params
def test_large_tensors_updated_in_pieces_equal_the_whole(case: h.Case, monkeypatch: pytest.MonkeyPatch) -> None:
    from optimlab.optim import _base

    start = h.make_params(case.shapes, torch.float64)
    grads = h.gradient_stream(case.shapes, 12, torch.float64)
    reference = h.with_fast(case.make, False)
    whole = h.run(lambda p: reference(p, foreach=False), [p.clone() for p in start], grads)
    monkeypatch.setattr(_base, "CHUNK", 5)  # every tensor above 5 elements is split, unevenly
    pieces = h.run(lambda p: reference(p, foreach=False), [p.clone() for p in start], grads)
    assert all(torch.equal(a, b) for xs, ys in zip(whole, pieces) for a, b in zip(xs, ys))
