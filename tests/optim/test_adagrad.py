"""Adagrad's first steps by hand, torch checkpoints, and torch ignoring a group's initial_accumulator_value."""

import math

import torch

from optimlab.optim.adagrad import Adagrad

from . import harness as h


def test_first_two_steps_by_hand():
    lr, decay, wd, s0, eps = 0.1, 0.5, 0.2, 0.3, 1e-3
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = Adagrad([p], lr=lr, lr_decay=decay, weight_decay=wd, initial_accumulator_value=s0, eps=eps)
    xs = []
    for g in (4.0, -2.0):
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        xs.append(p.item())
    g = 4.0 + wd * 0.5
    s = s0 + g * g
    x1 = 0.5 - lr * g / (math.sqrt(s) + eps)  # step 1: no decay yet
    assert math.isclose(xs[0], x1, rel_tol=1e-15)
    g = -2.0 + wd * x1
    s += g * g
    assert math.isclose(xs[1], x1 - lr / (1 + decay) * g / (math.sqrt(s) + eps), rel_tol=1e-15)
    assert math.isclose(opt.state[p]["sum"].item(), s, rel_tol=1e-15)


def test_torch_state_dict_loads_into_ours():
    kw = dict(lr=0.1, lr_decay=0.1, initial_accumulator_value=0.2)
    h.reference_checkpoint_continues(torch.optim.Adagrad, Adagrad, **kw)


def test_group_initial_accumulator_value_is_used_where_torch_ignores_it():
    # torch.optim.Adagrad initialises every state from self.defaults: a param group's own
    # initial_accumulator_value is accepted, stored in the group, and then silently not used.
    def sums(cls):
        a, b = torch.zeros(2), torch.zeros(2)
        opt = cls([{"params": [a]}, {"params": [b], "initial_accumulator_value": 5.0}], lr=0.1)
        a.grad, b.grad = torch.ones(2), torch.ones(2)
        opt.step()
        return opt.state[a]["sum"], opt.state[b]["sum"]

    ours_a, ours_b = sums(Adagrad)
    theirs_a, theirs_b = sums(torch.optim.Adagrad)
    assert torch.equal(ours_a, torch.full((2,), 1.0)) and torch.equal(theirs_a, ours_a)
    assert torch.equal(ours_b, torch.full((2,), 6.0))
    assert torch.equal(theirs_b, torch.full((2,), 1.0))  # torch's deviation
