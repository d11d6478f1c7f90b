"""AdaMod's first steps by hand, and the references' docstrings against their code."""

import inspect
import math

import torch
import torch_optimizer

from optimlab.optim.adamod import AdaMod, adamod


def _steps(grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = AdaMod([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def _by_hand(grads, lr, b1=0.9, b2=0.999, b3=0.999, eps=1e-8, wd=0.0, x=0.5):
    m = v = s = 0.0
    out = []
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        eta = lr * math.sqrt(1 - b2**t) / (1 - b1**t) / (math.sqrt(v) + eps)
        s = b3 * s + (1 - b3) * eta
        x = x - lr * wd * x - min(eta, s) * m
        out.append(x)
    return out


def test_first_step_is_the_smoothed_rate():
    # s_1 = (1 - beta3) eta_1 < eta_1: the very first step is a thousandth of Adam's
    (x1,) = _steps([4.0], lr=0.1)
    eta = 0.1 * math.sqrt(1 - 0.999) / (1 - 0.9) / (math.sqrt(0.001 * 16.0) + 1e-8)
    assert math.isclose(x1, 0.5 - (1 - 0.999) * eta * 0.4, rel_tol=1e-15)


def test_steps_by_hand_with_the_cap_on_and_off():
    # a small beta3 lets s catch up with eta, so that both branches of the min are taken
    grads = [4.0, -2.0, 0.5, 0.5, 10.0, -0.1]
    for kw, hand in [
        (dict(lr=0.1, beta3=0.5), dict(lr=0.1, b3=0.5)),
        (dict(lr=0.1, betas=(0.8, 0.99), beta3=0.3, weight_decay=0.2), dict(lr=0.1, b1=0.8, b2=0.99, b3=0.3, wd=0.2)),
    ]:
        ours, expected = _steps(grads, **kw), _by_hand(grads, **hand)
        assert max(abs(a - b) / abs(b) for a, b in zip(ours, expected)) <= 1e-15


def test_rule_takes_tensor_hyperparameters_under_vmap():
    p, g = torch.randn(3, 5, dtype=torch.float64), torch.randn(3, 5, dtype=torch.float64)
    state = {k: torch.rand(3, 5, dtype=torch.float64) for k in ("exp_avg", "exp_avg_sq", "exp_avg_lr")}
    hp = dict(lr=torch.tensor([0.1, 0.01, 0.0], dtype=torch.float64), beta3=torch.tensor([0.0, 0.9, 0.999], dtype=torch.float64))
    fixed = dict(beta1=0.9, beta2=0.999, eps=1e-8, weight_decay=0.1)
    batched, _ = torch.vmap(lambda p, g, s, h: adamod(p, g, s, 3.0, **fixed, **h))(p, g, state, hp)
    for i in range(3):
        single, _ = adamod(p[i], g[i], {k: v[i] for k, v in state.items()}, 3.0, **fixed, lr=hp["lr"][i].item(), beta3=hp["beta3"][i].item())
        assert torch.allclose(batched[i], single, rtol=1e-15, atol=0)


def test_beta3_default_is_the_codes_not_the_docstrings():
    # the authors' and torch_optimizer's docstrings say 0.9999; both constructors use 0.999
    assert "(default: 0.9999)" in torch_optimizer.AdaMod.__doc__
    assert inspect.signature(torch_optimizer.AdaMod).parameters["beta3"].default == 0.999
    assert inspect.signature(AdaMod).parameters["beta3"].default == 0.999
