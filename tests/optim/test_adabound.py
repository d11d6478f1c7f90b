"""AdaBound's first steps by hand, its base lr through checkpoints, and where the reference breaks."""

import math

import pytest
import torch

from optimlab.optim.adabound import AdaBound

from . import harness as h
from .cases_adabound import reference


def _steps(make, grads, x0=0.5):
    p = torch.tensor([x0], dtype=torch.float64)
    opt = make([p])
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def _by_hand(grads, lr, final_lr, gamma, b1=0.9, b2=0.999, eps=1e-8, amsbound=False, x=0.5):
    m = v = vmax = 0.0
    out = []
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        vmax = max(vmax, v)
        eta = lr * math.sqrt(1 - b2**t) / (1 - b1**t) / (math.sqrt(vmax if amsbound else v) + eps)
        lower, upper = final_lr * (1 - 1 / (gamma * t + 1)), final_lr * (1 + 1 / (gamma * t))
        x -= min(max(eta, lower), upper) * m
        out.append(x)
    return out


def test_first_steps_by_hand_with_each_bound_active():
    # step 1: the upper bound final_lr (1 + 1/gamma) = 0.21 is above Adam's 0.1 step: free;
    # later the tiny gradients make Adam's rate huge and the upper bound clips it; with a small lr
    # the lower bound lifts it.
    grads = [4.0, -2.0, 1e-3, 1e-3, 3.0]
    for lr, final_lr, gamma in [(0.1, 0.1, 0.9), (1e-4, 0.1, 0.5)]:
        ours = _steps(lambda p: AdaBound(p, lr=lr, final_lr=final_lr, gamma=gamma), grads)
        expected = _by_hand(grads, lr, final_lr, gamma)
        assert max(abs(a - b) / abs(b) for a, b in zip(ours, expected)) <= 1e-15


def test_amsbound_uses_the_running_max():
    # a wide band (final_lr and gamma small), so that the max, not a bound, sets the steps
    grads = [10.0, 0.1, 0.1, -0.1, 0.1]
    ours = _steps(lambda p: AdaBound(p, lr=0.01, final_lr=0.01, gamma=1e-3, amsbound=True), grads)
    expected = _by_hand(grads, 0.01, 0.01, 1e-3, amsbound=True)
    assert max(abs(a - b) / abs(b) for a, b in zip(ours, expected)) <= 1e-15
    plain = _steps(lambda p: AdaBound(p, lr=0.01, final_lr=0.01, gamma=1e-3), grads)
    assert abs(plain[-1] - ours[-1]) > 1e-5


def test_bounds_follow_lr_over_base_lr():
    # halving lr halves both bounds: with gamma large the band is tight around final_lr * 1/2
    p = torch.tensor([1.0], dtype=torch.float64)
    opt = AdaBound([p], lr=0.1, final_lr=0.2, gamma=0.9)
    opt.param_groups[0]["lr"] = 0.05
    p.grad = torch.tensor([1e-6], dtype=torch.float64)
    opt.step()
    # lower bound at t=1: final_lr * lr/base_lr * (1 - 1/1.9); Adam's rate (~1e-6 / 1e-6) is far below it
    lower = 0.2 * 0.05 / 0.1 * (1 - 1 / 1.9)
    m = 0.1 * 1e-6
    eta = 0.05 * math.sqrt(1 - 0.999) / 0.1 / (math.sqrt(0.001 * 1e-12) + 1e-8)
    assert eta > 1.0  # upper bound active
    upper = 0.2 * 0.05 / 0.1 * (1 + 1 / 0.9)
    assert p.item() == 1.0 - upper * m
    assert lower < upper


def _scheduled_run(make_opt, grads, start, resume_at=None, rebuild_lr=None):
    """lr x 0.9 per step; optionally checkpoint at ``resume_at`` and go on in a rebuilt optimizer."""
    ps = [p.clone() for p in start]
    opt = make_opt(ps, 0.01)
    sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lambda _: 0.9)
    for i, gs in enumerate(grads):
        if i == resume_at:
            saved, saved_sched = h.roundtrip(opt.state_dict()), sched.state_dict()
            ps = [p.detach().clone() for p in ps]
            opt = make_opt(ps, rebuild_lr(saved))
            opt.load_state_dict(saved)
            sched = torch.optim.lr_scheduler.MultiplicativeLR(opt, lambda _: 0.9)
            sched.load_state_dict(saved_sched)
        for p, g in zip(ps, gs):
            p.grad = g.clone()
        opt.step()
        sched.step()
    return ps


@pytest.mark.parametrize("rebuild", ["constructor lr", "scheduled lr"])
def test_resume_under_a_scheduler_keeps_the_bounds(rebuild):
    shapes = [(5,), (3, 2)]
    start = h.make_params(shapes, torch.float64)
    grads = h.gradient_stream(shapes, 40, torch.float64)
    rebuild_lr = (lambda sd: 0.01) if rebuild == "constructor lr" else (lambda sd: sd["param_groups"][0]["lr"])
    kw = dict(final_lr=0.05, gamma=0.1)
    ours = lambda ps, lr: AdaBound(ps, lr=lr, **kw)  # noqa: E731
    straight = _scheduled_run(ours, grads, start)
    resumed = _scheduled_run(ours, grads, start, resume_at=20, rebuild_lr=rebuild_lr)
    assert all(torch.equal(a, b) for a, b in zip(straight, resumed))
    # the reference agrees when rebuilt with its first lr, but takes a scheduled lr as the new base
    theirs = lambda ps, lr: reference(ps, lr=lr, **kw)  # noqa: E731
    ref_straight = _scheduled_run(theirs, grads, start)
    ref_resumed = _scheduled_run(theirs, grads, start, resume_at=20, rebuild_lr=rebuild_lr)
    assert max((a - b).abs().max().item() for a, b in zip(straight, ref_straight)) <= 1e-12
    gap = max((a - b).abs().max().item() for a, b in zip(ref_straight, ref_resumed))
    assert gap <= 1e-12 if rebuild == "constructor lr" else gap > 1e-3


def test_reference_checkpoint_keeps_our_base_lr():
    p, q = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    theirs, ours = reference([p], lr=0.1, final_lr=0.05, gamma=0.5), AdaBound([q], lr=0.1, final_lr=0.05, gamma=0.5)
    for x in (p, q):
        x.grad = torch.tensor([1.0, -2.0, 3.0], dtype=torch.float64)
    theirs.step()
    theirs.param_groups[0]["lr"] = 0.03  # a scheduler's doing
    ours.load_state_dict(h.roundtrip(theirs.state_dict()))
    ours.state[q]["step"] = torch.tensor(float(ours.state[q]["step"]))  # the reference counts in an int
    assert ours.param_groups[0]["base_lr"] == 0.1 and ours.param_groups[0]["lr"] == 0.03
    q.copy_(p)
    for x in (p, q):
        x.grad = torch.tensor([0.5, 0.5, -1.0], dtype=torch.float64)
    theirs.step()
    ours.step()
    assert torch.allclose(p, q, rtol=0, atol=1e-15)


def test_base_lr_is_per_group_and_saved():
    a, b = torch.ones(2), torch.ones(2)
    opt = AdaBound([{"params": [a]}, {"params": [b], "lr": 0.5, "base_lr": 0.25}], lr=0.1)
    assert [g["base_lr"] for g in opt.param_groups] == [0.1, 0.25]
    assert [g["base_lr"] for g in opt.state_dict()["param_groups"]] == [0.1, 0.25]
    with pytest.raises(ValueError, match=r"AdaBound: invalid base_lr=0.0: expected 0 < base_lr"):
        AdaBound([{"params": [a], "base_lr": 0.0}])


def test_reference_never_steps_a_group_added_later():
    a, b, c, d = (torch.ones(2) for _ in range(4))
    theirs, ours = reference([a], lr=0.1), AdaBound([c], lr=0.1)
    theirs.add_param_group({"params": [b]})
    ours.add_param_group({"params": [d]})
    for x in (a, b, c, d):
        x.grad = torch.ones(2)
    theirs.step()
    ours.step()
    assert torch.equal(a, c) and not torch.equal(a, torch.ones(2))
    assert torch.equal(b, torch.ones(2))  # the reference's zip(param_groups, base_lrs) drops it
    assert torch.equal(d, c)


def test_gamma_zero_means_no_bounds():
    grads = [4.0, -2.0, 1e-3]
    ours = _steps(lambda p: AdaBound(p, lr=0.1, gamma=0.0), grads)
    m = v = 0.0
    x, adam = 0.5, []
    for t, g in enumerate(grads, 1):
        m, v = 0.9 * m + 0.1 * g, 0.999 * v + 0.001 * g * g
        x -= 0.1 * math.sqrt(1 - 0.999**t) / (1 - 0.9**t) / (math.sqrt(v) + 1e-8) * m
        adam.append(x)
    assert max(abs(a - b) / abs(b) for a, b in zip(ours, adam)) <= 1e-15
    with pytest.raises(ZeroDivisionError):  # the reference accepts gamma=0, then divides by it
        _steps(lambda p: reference(p, lr=0.1, gamma=0.0), grads)


def test_rule_takes_tensor_hyperparameters_under_vmap():
    from optimlab.optim.adabound import adabound

    p = torch.randn(3, 4, dtype=torch.float64)
    g = torch.randn(3, 4, dtype=torch.float64)
    state = {"exp_avg": torch.zeros_like(p), "exp_avg_sq": torch.zeros_like(p)}
    hp = dict(lr=torch.tensor([0.1, 0.01, 0.001], dtype=torch.float64), gamma=torch.tensor([0.0, 0.1, 0.5], dtype=torch.float64))
    fixed = dict(final_lr=0.1, beta1=0.9, beta2=0.999, eps=1e-8)
    batched, _ = torch.vmap(lambda p, g, s, h_: adabound(p, g, s, 1.0, **fixed, **h_))(p, g, state, hp)
    for i in range(3):
        single, _ = adabound(p[i], g[i], {k: v[i] for k, v in state.items()}, 1.0, **fixed, lr=hp["lr"][i].item(), gamma=hp["gamma"][i].item())
        assert torch.allclose(batched[i], single, rtol=1e-15, atol=0)
