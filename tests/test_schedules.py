"""Warmup schedules: values by hand, torch's LinearLR, and composition with torch's decay schedules."""

from __future__ import annotations

import math

import pytest
import torch
from torch.optim.lr_scheduler import ChainedScheduler, CosineAnnealingLR, ExponentialLR, LinearLR, SequentialLR

from optimlab.schedules import LinearWarmup, UntunedWarmup, untuned_warmup_steps


def _optimizer(lr=1.0, **kw):
    return torch.optim.Adam([torch.zeros(1)], lr=lr, **kw)


def _lrs(opt, scheduler, steps):
    """The lr each of ``steps`` optimizer steps uses, per param group (gradless steps: nothing moves)."""
    out = []
    for _ in range(steps):
        out.append([g["lr"] for g in opt.param_groups])
        opt.step()
        scheduler.step()
    return out


def _close(xs, ys, rel=1e-15):
    return all(math.isclose(x, y, rel_tol=rel) for x, y in zip(xs, ys, strict=True))


def test_linear_warmup_by_hand():
    opt = _optimizer(0.1)
    assert _close([lr for (lr,) in _lrs(opt, LinearWarmup(opt, 4), 6)], [0.025, 0.05, 0.075, 0.1, 0.1, 0.1])
    opt = _optimizer(0.1)
    assert _close([lr for (lr,) in _lrs(opt, LinearWarmup(opt, 4, start_factor=0.2), 6)], [0.04, 0.06, 0.08, 0.1, 0.1, 0.1])
    opt = _optimizer(1.0)  # a length that is not an integer: the full lr from step 3 on
    assert _close([lr for (lr,) in _lrs(opt, LinearWarmup(opt, 2.5), 4)], [0.4, 0.8, 1.0, 1.0])


def test_linear_warmup_is_torch_linear_lr_with_the_first_factor_moved():
    for steps, start in [(10, 0.0), (7, 0.3)]:
        ours_opt, torch_opt = _optimizer(0.5), _optimizer(0.5)
        ours = _lrs(ours_opt, LinearWarmup(ours_opt, steps, start), 20)
        theirs = _lrs(torch_opt, LinearLR(torch_opt, start_factor=start + (1 - start) / steps, total_iters=steps - 1), 20)
        assert _close([x for (x,) in ours], [y for (y,) in theirs], rel=1e-14)


@pytest.mark.parametrize("warmup_first", [True, False])
def test_chained_with_cosine_is_the_product(warmup_first):
    opt = _optimizer(0.3)
    warmup = LinearWarmup(opt, 5) if warmup_first else None
    cosine = CosineAnnealingLR(opt, T_max=20)
    warmup = warmup or LinearWarmup(opt, 5)
    lrs = _lrs(opt, ChainedScheduler([warmup, cosine]), 20)
    expected = [0.3 * min(1.0, t / 5) * (1 + math.cos(math.pi * (t - 1) / 20)) / 2 for t in range(1, 21)]
    assert _close([lr for (lr,) in lrs], expected, rel=1e-13)


def test_sequential_warmup_then_cosine():
    opt = _optimizer(0.3)
    lrs = _lrs(opt, SequentialLR(opt, [LinearWarmup(opt, 4), CosineAnnealingLR(opt, T_max=10)], milestones=[4]), 14)
    expected = [0.3 * t / 4 for t in range(1, 5)] + [0.3 * (1 + math.cos(math.pi * (t - 5) / 10)) / 2 for t in range(5, 15)]
    assert _close([lr for (lr,) in lrs], expected, rel=1e-13)


def test_resumed_warmup_continues_exactly():
    opt = _optimizer(0.1)
    scheduler = LinearWarmup(opt, 6)
    straight = _lrs(opt, scheduler, 10)
    opt = _optimizer(0.1)
    scheduler = LinearWarmup(opt, 6)
    first = _lrs(opt, scheduler, 3)
    saved_opt, saved_scheduler = opt.state_dict(), scheduler.state_dict()
    opt = _optimizer(0.1)
    scheduler = LinearWarmup(opt, 6)
    opt.load_state_dict(saved_opt)
    scheduler.load_state_dict(saved_scheduler)
    assert first + _lrs(opt, scheduler, 7) == straight


def test_untuned_schedules_by_hand():
    # beta2 = 0.999: linear reaches the full lr after 2 / 0.001 = 2000 steps, exponential has time constant 1000
    opt = _optimizer(1.0)
    lrs = [lr for (lr,) in _lrs(opt, UntunedWarmup(opt), 2001)]
    assert _close([lrs[0], lrs[999], lrs[1998]], [0.0005, 0.5, 0.9995], rel=1e-12)
    assert lrs[1999] == lrs[2000] and math.isclose(lrs[2000], 1.0, rel_tol=1e-12)
    scheduler = UntunedWarmup(_optimizer(), beta2=0.999)
    assert [scheduler.factor(0, t) for t in (1, 1000, 1999, 2000, 2001)] == [0.0005, 0.5, 0.9995, 1.0, 1.0]
    opt = _optimizer(1.0)
    lrs = [lr for (lr,) in _lrs(opt, UntunedWarmup(opt, "exponential"), 3000)]
    one_minus_exp_small = 0.001 - 0.001**2 / 2 + 0.001**3 / 6 - 0.001**4 / 24  # 1 - exp(-0.001), Taylor to 1e-17
    assert _close([lrs[0], lrs[999], lrs[2999]], [one_minus_exp_small, 1 - math.exp(-1), 1 - math.exp(-3)], rel=1e-12)


def test_untuned_warmup_reads_each_groups_beta2():
    opt = torch.optim.Adam([{"params": [torch.zeros(1)], "betas": (0.9, 0.99)}, {"params": [torch.zeros(1)]}], lr=1.0)
    lrs = _lrs(opt, UntunedWarmup(opt), 100)
    assert _close(lrs[99], [min(1.0, 0.01 / 2 * 100), 0.001 / 2 * 100], rel=1e-12)
    opt = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    assert _close(_lrs(opt, UntunedWarmup(opt, beta2=0.98), 3)[2], [0.01 * 3], rel=1e-12)


def test_untuned_warmup_then_decay_is_the_product():
    opt = _optimizer(0.2, betas=(0.9, 0.98))
    lrs = _lrs(opt, ChainedScheduler([UntunedWarmup(opt, "exponential"), ExponentialLR(opt, gamma=0.99)]), 60)
    expected = [0.2 * (1 - math.exp(-0.02 * t)) * 0.99 ** (t - 1) for t in range(1, 61)]
    assert _close([lr for (lr,) in lrs], expected, rel=1e-12)


def test_untuned_warmup_steps():
    assert [untuned_warmup_steps(b) for b in (0.999, 0.99, 0.98, 0.9, 0.0)] == [2000, 200, 100, 20, 2]
    assert untuned_warmup_steps(0.997) == 667  # 666.67 steps: 0.9995 at step 666
    # the trap: 1 - 0.999 is 0.0010000000000000009, and pytorch_warmup's UntunedLinearWarmup
    # truncates int(2 / (1 - beta2)), which reaches the full lr one step early
    assert int(2 / (1 - 0.999)) == 1999 and int(2 / (1 - 0.98)) == 99
    for beta2, steps in [(0.999, 2000), (0.9, 20), (0.997, 667)]:
        scheduler = UntunedWarmup(_optimizer(), beta2=beta2)
        assert scheduler.factor(0, steps - 1) < 1.0 == scheduler.factor(0, steps)


@pytest.mark.parametrize(
    ("build", "message"),
    [
        (lambda opt: LinearWarmup(opt, 0), r"LinearWarmup: invalid warmup_steps=0: expected 0 < warmup_steps"),
        (lambda opt: LinearWarmup(opt, float("nan")), r"LinearWarmup: invalid warmup_steps=nan"),
        (lambda opt: LinearWarmup(opt, 10, start_factor=1.5), r"LinearWarmup: invalid start_factor=1.5: expected 0 <= start_factor <= 1"),
        (lambda opt: UntunedWarmup(opt, "cosine"), r"UntunedWarmup: invalid kind='cosine': expected one of 'linear', 'exponential'"),
        (lambda opt: UntunedWarmup(opt, beta2=1.0), r"UntunedWarmup: invalid beta2=1.0: expected 0 <= beta2 < 1"),
        (lambda opt: untuned_warmup_steps(-0.5), r"untuned_warmup_steps: invalid beta2=-0.5: expected 0 <= beta2 < 1"),
    ],
)
def test_invalid_arguments_raise_a_clear_error(build, message):
    with pytest.raises(ValueError, match=message):
        build(_optimizer())


def test_beta2_missing_or_out_of_range_in_a_group():
    opt = torch.optim.SGD([torch.zeros(1)], lr=1.0)
    with pytest.raises(ValueError, match=r"UntunedWarmup: invalid beta2=None: param_groups\[0\] has no 'betas'.*pass beta2"):
        UntunedWarmup(opt)
    opt = torch.optim.SGD([{"params": [torch.zeros(1)], "betas": (0.9, 1.0)}], lr=1.0)
    with pytest.raises(ValueError, match=r"invalid param_groups\[0\]\['betas'\]\[1\]=1.0: expected 0 <= param_groups"):
        UntunedWarmup(opt)
