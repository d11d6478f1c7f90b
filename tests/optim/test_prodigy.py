"""Prodigy: the authors' package as the reference, first steps by hand, the global estimate, and its edges."""

import contextlib
import io
import math

import prodigyopt
import pytest
import torch

from optimlab.optim import Prodigy

from . import harness as h


class AuthorsProdigy(prodigyopt.Prodigy):
    """``prodigyopt.Prodigy`` as it is, without the line it prints for decoupled weight decay."""

    def __init__(self, params, **kw):
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(params, **kw)


def test_first_steps_by_hand():
    # one tensor, lr 1, d0 1e-6; at step 1 x = x0, so the numerator is 0 and d stays d0
    b1, b2, eps, d0 = 0.9, 0.999, 1e-8, 1e-6
    b3 = math.sqrt(b2)
    x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt = Prodigy([x])
    x.grad = torch.tensor([0.5, 1.0], dtype=torch.float64)
    opt.step()
    m, v = (1 - b1) * d0 * 0.5, (1 - b2) * d0**2 * 0.25
    x1 = 1.0 - d0 * m / (math.sqrt(v) + d0 * eps)
    assert opt.param_groups[0]["d"] == d0 and opt.param_groups[0]["d_numerator"] == 0.0
    assert math.isclose(x[0].item(), x1, rel_tol=1e-15)
    # step 2: the numerator d/d0 * dlr * <g, x0 - x> with dlr = d0 * lr, the denominator sum |s|
    y1 = x.clone()
    x.grad = torch.tensor([0.25, 0.5], dtype=torch.float64)
    opt.step()
    g1, g2 = torch.tensor([0.5, 1.0], dtype=torch.float64), torch.tensor([0.25, 0.5], dtype=torch.float64)
    numerator = d0 * torch.dot(g2, torch.tensor([1.0, -2.0], dtype=torch.float64) - y1).item()
    s = b3 * d0 * g1 + d0 * g2
    d_hat = numerator / s.abs().sum().item()
    d = max(d0, d_hat)  # the first change: d becomes d_hat if larger, and d_max follows
    assert opt.param_groups[0]["d_hat"] == pytest.approx(d_hat, rel=1e-14)
    assert opt.param_groups[0]["d"] == pytest.approx(d, rel=1e-14)
    m = b1 * (1 - b1) * d0 * g1 + (1 - b1) * d0 * g2  # the moments take the old d
    v = b2 * (1 - b2) * d0**2 * g1**2 + (1 - b2) * d0**2 * g2**2
    expected = y1 - d0 * m / (v.sqrt() + d * eps)  # the denominator's eps takes the new one
    assert torch.allclose(x, expected, rtol=1e-14, atol=0)


def test_the_estimate_is_one_number_over_all_groups():
    # two groups: d is the same in both, and equals one group holding both tensors
    start = h.make_params([(5,), (3, 2)], torch.float64)
    grads = h.gradient_stream([(5,), (3, 2)], 30, torch.float64)
    split = h.run(lambda p: Prodigy(p, d0=1e-3), [p.clone() for p in start], grads, groups=True)
    whole = h.run(lambda p: Prodigy(p, d0=1e-3), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(split, whole, start) <= 1e-12


def test_groups_must_share_the_lr_or_have_zero():
    a, b, c = torch.ones(2), torch.ones(2), torch.ones(2)
    opt = Prodigy([{"params": [a]}, {"params": [b], "lr": 0.0}, {"params": [c], "lr": 0.5}])
    for p in (a, b, c):
        p.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"Prodigy: invalid lr=0.5 in param group 2: every group takes the same lr"):
        opt.step()


def test_a_zero_lr_group_adds_nothing_to_the_estimate_as_in_the_authors_code():
    start = h.make_params([(5,), (4,)], torch.float64)
    grads = h.gradient_stream([(5,), (4,)], 20, torch.float64)

    def groups(cls):
        return lambda p: cls([{"params": p[:1]}, {"params": p[1:], "lr": 0.0}], d0=1e-3, weight_decay=0.1)

    ours = h.run(groups(Prodigy), [p.clone() for p in start], grads, groups=False)
    theirs = h.run(groups(AuthorsProdigy), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(ours, theirs, start) <= 1e-12
    ratio = ours[-1][1] / start[1]  # only the decoupled decay moved it: a pure shrink
    assert torch.allclose(ratio, ratio[0].expand(4), rtol=1e-12, atol=0) and ratio[0] < 1


def test_nothing_moves_while_every_gradient_is_zero():
    x = torch.tensor([1.0, 2.0])
    opt = Prodigy([x])
    x.grad = torch.zeros(2)
    opt.step()
    assert torch.equal(x, torch.tensor([1.0, 2.0])) and opt.param_groups[0]["k"] == 0
    assert opt.state[x]["step"].item() == 0


def test_authors_checkpoint_loads_into_ours():
    saved = h.reference_checkpoint_continues(AuthorsProdigy, Prodigy, d0=1e-2, weight_decay=0.1)
    assert set(saved["state"][0]) == {"step", "s", "p0", "exp_avg", "exp_avg_sq"}
    assert {"d", "d_max", "d_numerator", "k"} <= set(saved["param_groups"][0])


def test_float16_parameters_are_refused_where_the_authors_code_steps_to_infinity():
    x, y = torch.ones(4, 2, dtype=torch.float16), torch.ones(3, dtype=torch.float32)
    theirs = AuthorsProdigy([x.clone()])
    theirs.param_groups[0]["params"][0].grad = torch.ones(4, 2, dtype=torch.float16)
    theirs.step()
    assert not torch.isfinite(theirs.param_groups[0]["params"][0]).any()  # v = d0^2 (1 - beta2) g^2 = 0 in float16
    opt = Prodigy([{"params": [y]}, {"params": [x]}])
    x.grad, y.grad = torch.ones_like(x), torch.ones_like(y)
    with pytest.raises(
        ValueError, match=r"Prodigy: invalid float16 parameter \(a tensor of shape \(4, 2\) in param group 1\)"
    ):
        opt.step()
    assert not opt.state and torch.equal(y, torch.ones(3))  # nothing changed
