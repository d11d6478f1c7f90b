"""RMSprop's first steps by hand (plain, centered with momentum), and torch checkpoints."""

import math

import pytest
import torch

from optimlab.optim.rmsprop import RMSprop

from . import harness as h


def _steps(grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = RMSprop([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out, opt.state[p]


def test_first_step_by_hand():
    ((x1,), state) = _steps([4.0], lr=0.1)
    assert math.isclose(x1, 0.5 - 0.1 * 4.0 / (math.sqrt(0.01 * 16.0) + 1e-8), rel_tol=1e-15)
    assert set(state) == {"step", "square_avg"}


def test_centered_momentum_steps_by_hand():
    lr, alpha, eps, mu, wd = 0.1, 0.9, 1e-3, 0.8, 0.2
    xs, state = _steps([4.0, -2.0, 1.0], lr=lr, alpha=alpha, eps=eps, momentum=mu, centered=True, weight_decay=wd)
    assert set(state) == {"step", "square_avg", "grad_avg", "momentum_buffer"}
    x, v, gbar, b = 0.5, 0.0, 0.0, 0.0
    for g, got in zip((4.0, -2.0, 1.0), xs):
        g += wd * x
        v = alpha * v + (1 - alpha) * g * g
        gbar = alpha * gbar + (1 - alpha) * g
        b = mu * b + g / (math.sqrt(v - gbar * gbar) + eps)  # b_0 = 0, no dampening
        x -= lr * b
        assert math.isclose(got, x, rel_tol=1e-14)


@pytest.mark.parametrize("kw", [dict(momentum=0.9), dict(momentum=0.9, centered=True)], ids=["momentum", "centered"])
def test_torch_state_dict_loads_into_ours(kw):
    kw = dict(lr=0.01, alpha=0.9, **kw)
    h.reference_checkpoint_continues(torch.optim.RMSprop, RMSprop, **kw)
