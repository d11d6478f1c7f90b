"""Muon: the Newton–Schulz iteration and the first steps by hand, the bfloat16 defaults against the
official code, where the references and ports differ, and a matrix problem solved."""

from __future__ import annotations

import copy
import math

import muon as official
import pytest
import torch
from pytorch_optimizer import Muon as PortMuon

from optimlab.optim import Muon
from optimlab.optim._matrix import NS_COEFFICIENTS, newton_schulz

from . import harness as h
from .cases_muon import MATRICES, SHAPES, Official, in_dtype

F64 = torch.float64
A, B, C = NS_COEFFICIENTS


def _quintic(s: float, steps: int = 5) -> float:
    """A singular value after ``steps`` Newton-Schulz steps: s -> a s + b s^3 + c s^5."""
    for _ in range(steps):
        s = A * s + B * s**3 + C * s**5
    return s


def _rotation(angle: float) -> torch.Tensor:
    return torch.tensor([[math.cos(angle), -math.sin(angle)], [math.sin(angle), math.cos(angle)]], dtype=F64)


def test_newton_schulz_acts_on_the_singular_values_alone():
    # G = U diag(3, 4) V^T: ||G||_F = 5, so the iteration starts from singular values 0.6 and 0.8
    u, v = _rotation(0.3), _rotation(-1.1)
    g = u @ torch.diag(torch.tensor([3.0, 4.0], dtype=F64)) @ v.T
    out = newton_schulz(g, dtype=None)
    s = [_quintic(x / (5 + 1e-7)) for x in (3.0, 4.0)]
    expected = u @ torch.diag(torch.tensor(s, dtype=F64)) @ v.T
    assert torch.allclose(out, expected, rtol=0, atol=1e-13)
    # Keller Jordan's coefficients leave the singular values near 1, not at 1 (by design)
    assert 0.7 < min(s) and max(s) < 1.2 and abs(s[0] - s[1]) > 1e-3


def test_newton_schulz_clamped_norm_and_bfloat16():
    g = torch.tensor([[3e-8, 0.0], [0.0, 4e-8]], dtype=F64)
    # norm 5e-8 < eps: torch.optim.Muon divides by eps, Keller Jordan's code by norm + eps
    clamped = newton_schulz(g, dtype=None, clamp_norm=True)
    added = newton_schulz(g, dtype=None)
    assert torch.allclose(clamped.diagonal(), torch.tensor([_quintic(0.3), _quintic(0.4)], dtype=F64), atol=1e-13)
    assert torch.allclose(added.diagonal(), torch.tensor([_quintic(3 / 15), _quintic(4 / 15)], dtype=F64), atol=1e-13)
    # the default dtype, bfloat16: as close to the float64 iteration as the references' own
    # (they differ from each other in bfloat16: torch sums inside addmm, the official code apart)
    g = torch.randn(5, 3, generator=torch.Generator().manual_seed(0), dtype=F64)
    low = newton_schulz(g)
    assert low.dtype == torch.bfloat16
    exact = newton_schulz(g, dtype=None)
    error = (low.double() - exact).abs().max().item()
    theirs = (official.zeropower_via_newtonschulz5(g, steps=5).double() - exact).abs().max().item()
    assert 0 < error <= 4 * theirs


@pytest.mark.parametrize("wd", [0.0, 0.5])
def test_first_step_by_hand_wide_and_tall(wd):
    lr, mu = 0.1, 0.9
    # first step from a zero buffer: M = (1 - mu) G, the Nesterov mix (1 - mu) G + mu M = 0.19 G
    for shape, scale in [((2, 2), 1.0), ((3, 2), math.sqrt(3 / 2)), ((2, 3), 1.0)]:
        g = torch.zeros(shape, dtype=F64)
        g[0, 0], g[1, 1] = 3.0, 4.0
        w0 = torch.arange(1.0, 1 + g.numel(), dtype=F64).reshape(shape)
        w = w0.clone()
        opt = Muon([w], lr=lr, momentum=mu, weight_decay=wd, ns_dtype=None)
        w.grad = g
        opt.step()
        o = torch.zeros(shape, dtype=F64)
        o[0, 0], o[1, 1] = (_quintic(0.19 * x / (0.19 * 5 + 1e-7)) for x in (3.0, 4.0))
        assert torch.allclose(w, w0 * (1 - lr * wd) - lr * scale * o, rtol=0, atol=1e-14), shape
        assert torch.allclose(opt.state[w]["momentum_buffer"], (1 - mu) * g, rtol=0, atol=0)


def test_moonshots_scale_and_no_nesterov_by_hand():
    g = torch.zeros(3, 2, dtype=F64)
    g[0, 0], g[1, 1] = 3.0, 4.0
    w = torch.zeros(3, 2, dtype=F64)
    opt = Muon([w], lr=0.1, nesterov=False, adjust_lr_fn="match_rms_adamw", ns_dtype=None)
    w.grad = g
    opt.step()
    # M = 0.05 G is orthogonalised itself; the scale is 0.2 sqrt(max(3, 2))
    o = [_quintic(0.05 * x / (0.05 * 5 + 1e-7)) for x in (3.0, 4.0)]
    assert torch.allclose(w.diagonal(), -0.1 * 0.2 * math.sqrt(3) * torch.tensor(o, dtype=F64), rtol=0, atol=1e-14)


def test_tensors_of_fewer_dimensions_take_the_official_adamw_first_step_by_hand():
    b, s = torch.tensor([1.0, -2.0, 0.5], dtype=F64), torch.tensor(3.0, dtype=F64)
    w = torch.eye(2, dtype=F64)
    opt = Muon([w, b, s], adamw_lr=0.01, adamw_wd=0.1)
    for p, g in [
        (w, torch.ones(2, 2, dtype=F64)),
        (b, torch.tensor([0.2, -4.0, 1e-12], dtype=F64)),
        (s, torch.tensor(-1.0, dtype=F64)),
    ]:
        p.grad = g
    opt.step()
    # bias-corrected m = g and v = g^2: the step is lr g / (|g| + eps) after the decoupled decay
    for p, start, g in [(b, [1.0, -2.0, 0.5], [0.2, -4.0, 1e-12]), (s, 3.0, -1.0)]:
        start, g = torch.tensor(start, dtype=F64), torch.tensor(g, dtype=F64)
        assert torch.allclose(p, start * (1 - 0.01 * 0.1) - 0.01 * g / (g.abs() + 1e-10), rtol=0, atol=1e-15)
    assert set(opt.state[b]) == {"step", "exp_avg", "exp_avg_sq"}
    assert set(opt.state[w]) == {"step", "momentum_buffer"}


def test_use_muon_chooses_per_group_and_refuses_what_muon_cannot_take():
    w, v = torch.ones(3, 3), torch.ones(3)
    opt = Muon([{"params": [w], "use_muon": False}, {"params": [v]}])
    w.grad, v.grad = torch.ones(3, 3), torch.ones(3)
    opt.step()
    assert set(opt.state[w]) == {"step", "exp_avg", "exp_avg_sq"}  # an embedding, say: AdamW
    with pytest.raises(ValueError, match=r"^Muon: invalid use_muon=True for a tensor of shape \(3,\) \(entry 1 of its"):
        Muon([{"params": [torch.ones(2, 2), torch.ones(3)], "use_muon": True}])
    with pytest.raises(ValueError, match=r"^Muon: invalid use_muon='yes': expected None, True or False$"):
        opt.add_param_group({"params": [torch.ones(2, 2)], "use_muon": "yes"})


@pytest.mark.parametrize(
    "reference, ours, shapes",
    [
        (lambda p: Official(p, bfloat16=True), {}, SHAPES),
        (torch.optim.Muon, dict(lr=1e-3, weight_decay=0.1, clamp_norm=True), MATRICES),
    ],
    ids=["official", "torch"],
)
def test_bfloat16_defaults_are_as_close_to_float64_as_the_references(reference, ours, shapes):
    # Newton-Schulz in bfloat16 (both references' default) keeps ~3 digits: the bar is the
    # harness's float32 one, 4x the reference's own distance to the float64 run (measured ratios
    # 0.35 against the official code, 1.0 against torch, whose roundings these are)
    start = h.make_params(shapes, torch.float32)
    grads = h.gradient_stream(shapes, 100, torch.float32)
    exact = h.run(
        lambda p: Muon(p, **ours, ns_dtype=None),
        [p.double() for p in start],
        [[g.double() for g in gs] for gs in grads],
    )
    theirs = h.relative_gap(h.run(reference, [p.clone() for p in start], grads), exact, start)
    low = h.relative_gap(h.run(lambda p: Muon(p, **ours), [p.clone() for p in start], grads), exact, start)
    assert 1e-4 < theirs and low <= h.REFERENCE_ERROR_FACTOR * theirs, (low, theirs)


def test_the_official_step_overwrites_the_gradient_ours_does_not():
    g = torch.tensor([[1.0, 2.0], [3.0, 5.0]])
    p, q = torch.zeros(2, 2), torch.zeros(2, 2)
    p.grad, q.grad = g.clone(), g.clone()
    Official([p]).step()
    Muon([q]).step()
    assert not torch.equal(p.grad, g)  # the Nesterov mix (1 - mu) G + mu M, written into p.grad
    assert torch.equal(q.grad, g)


def test_a_convolution_weight_is_scaled_by_its_kernel_shape_as_in_the_official_code():
    # (16, 1, 3, 1) is orthogonalised as a 16 x 3 matrix; the official scale takes the kernel's
    # height over its width, sqrt(3), where pytorch_optimizer (and the flattened matrix) give sqrt(16/3)
    shape = (16, 1, 3, 1)
    start = h.make_params([shape], F64)
    grads = h.gradient_stream([shape], 5, F64)
    ours = h.run(lambda p: Muon(p, ns_dtype=None), [p.clone() for p in start], grads, groups=False)
    ref = h.run(Official, [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(ours, ref, start) <= 1e-12
    port = h.run(lambda p: PortMuon([{"params": p, "use_muon": True}]), [p.clone() for p in start], grads, groups=False)
    ours_step, port_step = ours[0][0] - start[0], port[0][0] - start[0]
    # the first steps differ by the ratio of the scales (the port's Newton-Schulz is bfloat16 too)
    ratio = (port_step.norm() / ours_step.norm()).item()
    assert ratio == pytest.approx(math.sqrt(16 / 3) / math.sqrt(3), rel=2e-2)


def test_torch_refuses_what_muon_takes():
    with pytest.raises(ValueError, match="Muon only supports 2D parameters"):
        torch.optim.Muon([torch.ones(4, 2, 3, 3)])
    w, b = torch.ones(4, 2, 3, 3), torch.ones(4)
    opt = Muon([w, b])
    w.grad, b.grad = torch.randn(4, 2, 3, 3), torch.randn(4)
    opt.step()
    assert torch.isfinite(w).all() and not torch.equal(w, torch.ones(4, 2, 3, 3))


def test_an_official_checkpoint_continues():
    w, v = torch.randn(5, 3, dtype=F64), torch.randn(3, dtype=F64)
    theirs = official.SingleDeviceMuonWithAuxAdam([dict(params=[w], use_muon=True), dict(params=[v], use_muon=False)])
    for _ in range(3):
        w.grad, v.grad = torch.randn(5, 3, dtype=F64), torch.randn(3, dtype=F64)
        with in_dtype():
            theirs.step()
    w2, v2 = w.clone(), v.clone()
    ours = Muon([{"params": [w2], "use_muon": True}, {"params": [v2], "use_muon": False}], ns_dtype=None)
    saved = h.roundtrip(theirs.state_dict())
    # the official AdamW group keeps its hyperparameters in lr/betas/eps/weight_decay, ours in adamw_*
    saved["param_groups"][1] = {"params": saved["param_groups"][1]["params"], "use_muon": False}
    saved["param_groups"][0] = {
        k: saved["param_groups"][0][k] for k in ("params", "lr", "momentum", "weight_decay", "use_muon")
    }
    ours.load_state_dict(saved)
    g, gv = torch.randn(5, 3, dtype=F64), torch.randn(3, dtype=F64)
    w.grad, v.grad, w2.grad, v2.grad = g.clone(), gv.clone(), g.clone(), gv.clone()
    with in_dtype():
        theirs.step()
    ours.step()
    assert torch.allclose(w, w2, rtol=0, atol=1e-14) and torch.allclose(v, v2, rtol=0, atol=1e-15)


def test_solves_a_least_squares_matrix_problem():
    # min_W |A W - B|^2 / 2n with B = A W*: Muon's steps have a fixed spectral size, so the lr decays
    gen = torch.Generator().manual_seed(5)
    a = torch.randn(32, 8, generator=gen, dtype=F64)
    target = torch.randn(8, 6, generator=gen, dtype=F64)
    b = a @ target
    w = torch.zeros(8, 6, dtype=F64, requires_grad=True)
    opt = Muon([w], lr=0.1)  # Newton-Schulz in bfloat16, the default
    sched = torch.optim.lr_scheduler.ExponentialLR(opt, 0.98)
    for _ in range(400):
        opt.zero_grad()
        (0.5 * ((a @ w - b) ** 2).sum() / 32).backward()
        opt.step()
        sched.step()
    error = ((w.detach() - target).norm() / target.norm()).item()
    assert error <= 1e-4, f"|W - W*| / |W*| = {error:.3g} (measured 7.1e-6)"


def test_exterior_adamw_gives_the_input_layer_and_the_head_to_adamw_as_the_authors_recipe():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 4, 3), torch.nn.Conv2d(4, 6, 3), torch.nn.Flatten(), torch.nn.Linear(24, 5), torch.nn.Linear(5, 3)
    ).double()
    twin = copy.deepcopy(model)
    first, hidden_conv, hidden_fc, head = (model[i].weight for i in (0, 1, 3, 4))
    opt = Muon(model.parameters(), lr=0.05, adamw_lr=0.01, exterior_adamw=True, ns_dtype=None)
    # the same split by hand, as the official README writes it: hidden filters and matrices with Muon, the rest AdamW
    hidden = [twin[1].weight, twin[3].weight]
    hand = Muon(
        [
            {"params": hidden, "use_muon": True},
            {"params": [p for p in twin.parameters() if all(p is not q for q in hidden)], "use_muon": False},
        ],
        lr=0.05,
        adamw_lr=0.01,
        ns_dtype=None,
    )
    x = torch.randn(8, 1, 6, 6, dtype=F64)
    for _ in range(3):
        for net, optimizer in ((model, opt), (twin, hand)):
            optimizer.zero_grad()
            net(x).square().mean().backward()
            optimizer.step()
    for p, q in zip(model.parameters(), twin.parameters()):
        assert torch.equal(p, q)
    assert set(opt.state[first]) == set(opt.state[head]) == {"step", "exp_avg", "exp_avg_sq"}
    assert set(opt.state[hidden_conv]) == set(opt.state[hidden_fc]) == {"step", "momentum_buffer"}
    # a checkpoint loads into an optimizer made the same way
    again = Muon(model.parameters(), lr=0.05, adamw_lr=0.01, exterior_adamw=True, ns_dtype=None)
    again.load_state_dict(opt.state_dict())
    with pytest.raises(ValueError, match=r"^Muon: invalid exterior_adamw='yes': expected True or False$"):
        Muon(model.parameters(), exterior_adamw="yes")
