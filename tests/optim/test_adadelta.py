"""Adadelta's first steps by hand, and torch checkpoints."""

import math

import torch

from optimlab.optim.adadelta import Adadelta

from . import harness as h


def test_first_two_steps_by_hand():
    lr, rho, eps, wd = 0.5, 0.9, 1e-3, 0.2
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = Adadelta([p], lr=lr, rho=rho, eps=eps, weight_decay=wd)
    xs = []
    for g in (4.0, -2.0):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        xs.append(p.item())
    x, v, u = 0.5, 0.0, 0.0
    for g, got in zip((4.0, -2.0), xs):
        g += wd * x
        v = rho * v + (1 - rho) * g * g
        delta = math.sqrt(u + eps) / math.sqrt(v + eps) * g
        u = rho * u + (1 - rho) * delta * delta
        x -= lr * delta
        assert math.isclose(got, x, rel_tol=1e-15)
    # the first step is ~lr * sqrt(eps / (1-rho)): Adadelta's slow start
    assert math.isclose(xs[0], 0.5 - lr * math.sqrt(eps) / math.sqrt(0.1 * 4.1**2 + eps) * 4.1, rel_tol=1e-15)
    assert math.isclose(opt.state[p]["acc_delta"].item(), u, rel_tol=1e-15)


def test_torch_state_dict_loads_into_ours():
    kw = dict(lr=0.5, rho=0.8, weight_decay=0.1)
    h.reference_checkpoint_continues(torch.optim.Adadelta, Adadelta, **kw)
