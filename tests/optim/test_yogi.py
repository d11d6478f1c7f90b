"""Yogi's first steps by hand, and the options torch-optimizer lacks, against their equations."""

import math

import torch
import torch_optimizer

from optimlab.optim.yogi import Yogi

from . import harness as h


def _steps(opt_cls, grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def _equations(grads, lr, b1, b2, eps, v0, *, m0, corrected=True, eps_root=0.0, tf_eps=False):
    """Plain-Python Yogi: optax's scale_by_yogi (eps_root), the paper's Algorithm 2
    (corrected=False) and the authors' tfa.optimizers.Yogi (tf_eps: lr * sqrt(1-b2^t)/(1-b1^t)
    times m / (sqrt(v) + eps))."""
    x, m, v = 0.5, m0, v0
    out = []
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = v - (1 - b2) * math.copysign(1.0, v - g * g) * g * g if v != g * g else v
        c1, c2 = (1 - b1**t, 1 - b2**t) if corrected else (1.0, 1.0)
        if tf_eps:
            x -= lr * math.sqrt(c2) / c1 * m / (math.sqrt(v + eps_root) + eps)
        else:
            x -= lr * (m / c1) / (math.sqrt(v / c2 + eps_root) + eps)
        out.append(x)
    return out


def test_first_two_steps_by_hand():
    lr, b1, b2, eps, v0 = 1e-2, 0.9, 0.999, 1e-3, 1e-6
    x1, x2 = _steps(Yogi, [4.0, 0.1])
    m = b1 * v0 + (1 - b1) * 4.0
    v = v0 + (1 - b2) * 16.0  # v0 < g^2: v grows by (1-b2) g^2
    assert x1 == 0.5 - lr / (1 - b1) * m / (math.sqrt(v / (1 - b2)) + eps)
    m = b1 * m + (1 - b1) * 0.1
    v = v - (1 - b2) * 0.01  # v > g^2: v shrinks by (1-b2) g^2, where Adam would multiply it by b2
    expected = x1 - lr / (1 - b1**2) * m / (math.sqrt(v / (1 - b2**2)) + eps)
    assert math.isclose(x2, expected, rel_tol=1e-15)


def test_second_moment_moves_additively():
    p = torch.zeros(3, dtype=torch.float64)
    opt = Yogi([p], initial_accumulator=1.0)
    p.grad = torch.tensor([2.0, 0.5, 1.0], dtype=torch.float64)
    opt.step()
    # up by (1-b2) g^2 where g^2 > v, down by it where g^2 < v, unchanged where equal
    expected = torch.tensor([1.0 + 0.001 * 4.0, 1.0 - 0.001 * 0.25, 1.0], dtype=torch.float64)
    assert torch.equal(opt.state[p]["exp_avg_sq"], expected)


def test_state_layout_is_torch_optimizers():
    p = torch.zeros(2)
    opt = Yogi([p], initial_accumulator=3e-6, zero_exp_avg=True)
    p.grad = torch.zeros(2)
    opt.step()
    assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_sq"}
    assert torch.equal(opt.state[p]["exp_avg"], torch.zeros(2))
    assert torch.equal(opt.state[p]["exp_avg_sq"], torch.full((2,), 3e-6))


def test_options_follow_their_equations():
    grads = [float(g) for (g,) in h.gradient_stream([()], 300, torch.float64)]
    grads = [g * (10.0 if i < 5 else 0.1) for i, g in enumerate(grads)]  # the moment must go down as well as up
    lr, b1, b2 = 0.01, 0.9, 0.99
    for kw, eq in [
        (dict(), dict(m0=1e-6)),
        (dict(eps_root=1e-4, eps=1e-6), dict(m0=1e-6, eps_root=1e-4)),
        (dict(zero_exp_avg=True, bias_correction=False), dict(m0=0.0, corrected=False)),
        (dict(zero_exp_avg=True, eps_before_bias_correction=True), dict(m0=0.0, tf_eps=True)),
        (
            dict(eps_before_bias_correction=True, eps_root=1e-4, initial_accumulator=0.0),
            dict(m0=0.0, tf_eps=True, eps_root=1e-4),
        ),
    ]:
        v0 = kw.get("initial_accumulator", 1e-6)
        ours = _steps(Yogi, grads, lr=lr, betas=(b1, b2), **kw)
        ref = _equations(grads, lr, b1, b2, kw.get("eps", 1e-3), v0, **eq)
        assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1e-12, kw


def test_torch_optimizer_starts_the_first_moment_at_the_accumulator():
    # The paper's Algorithm 2 and the authors' tfa.optimizers.Yogi start m at 0; torch-optimizer
    # (and optax) fill m with initial_accumulator too, so their first step is off by b1*v0/(1-b1).
    (ref,) = _steps(torch_optimizer.Yogi, [1.0], initial_accumulator=1e-2)
    (paper,) = _steps(Yogi, [1.0], initial_accumulator=1e-2, zero_exp_avg=True)
    (default,) = _steps(Yogi, [1.0], initial_accumulator=1e-2)
    assert math.isclose(default, ref, rel_tol=1e-15)
    assert math.isclose((paper - default) / (paper - 0.5), -0.9 * 1e-2 / 0.1, rel_tol=1e-12)
