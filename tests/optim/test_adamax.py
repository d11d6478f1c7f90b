"""Adamax's first steps by hand, and torch checkpoints."""

import math

import torch

from optimlab.optim.adamax import Adamax

from . import harness as h


def test_first_step_moves_by_lr_times_sign():
    # m_1 = (1-b1) g and u_1 = |g| + eps: after bias correction the step is lr * g / (|g| + eps)
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = Adamax([p], lr=0.1)
    p.grad = torch.tensor([4.0], dtype=torch.float64)
    opt.step()
    assert math.isclose(p.item(), 0.5 - 0.1 * 4.0 / (4.0 + 1e-8), rel_tol=1e-15)


def test_three_steps_by_hand():
    lr, b1, b2, eps, wd = 0.1, 0.9, 0.5, 1e-3, 0.2
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = Adamax([p], lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd)
    x, m, u = 0.5, 0.0, 0.0
    for t, g in enumerate((4.0, -2.0, 0.1), 1):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        g += wd * x
        m = b1 * m + (1 - b1) * g
        decayed = b2 * u
        u = max(decayed, abs(g) + eps)
        x -= lr / (1 - b1**t) * m / u
        assert math.isclose(p.item(), x, rel_tol=1e-15)
    # the small last gradient: u kept the decayed norm instead of following |g|
    assert u == decayed > abs(g) + eps
    assert math.isclose(opt.state[p]["exp_inf"].item(), u, rel_tol=1e-15)


def test_torch_state_dict_loads_into_ours():
    kw = dict(lr=0.1, betas=(0.8, 0.9), weight_decay=0.1)
    h.reference_checkpoint_continues(torch.optim.Adamax, Adamax, **kw)
