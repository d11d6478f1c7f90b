"""AdEMAMix: the authors' equations as the reference, first steps by hand, the warm-ups, pytorch_optimizer's port."""

import math

import pytest
import pytorch_optimizer
import torch

from optimlab.optim import AdEMAMix
from optimlab.optim.ademamix import slow_schedule

from . import harness as h


class AuthorsAdEMAMix(torch.optim.Optimizer):
    """The update of the authors' AdEMAMix (apple/ml-ademamix, pytorch/ademamix.py), as equations in plain torch.

    Per parameter, t counted from 1: alpha_t and beta3_t from the warm-ups (alpha linear from 0;
    beta3's half-life f(b) = ln 0.5 / ln(b + 1e-8) - 1 linear from beta1's, f^-1(h) = 0.5^(1/(h+1))),
    m1 = beta1 m1 + (1 - beta1) g (m1 = g, no buffer, for beta1 = 0), m2 = beta3_t m2 + (1 - beta3_t) g,
    v = beta2 v + (1 - beta2) g^2, u = (m1 / (1 - beta1^t) + alpha_t m2) / (sqrt(v) / sqrt(1 - beta2^t) + eps)
    + wd theta, theta -= lr u.  The step is a Python int in their state.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.999, 0.9999), alpha=2.0, beta3_warmup=None, alpha_warmup=None,
                 eps=1e-8, weight_decay=0.0):  # fmt: skip
        super().__init__(params, dict(lr=lr, betas=betas, alpha=alpha, beta3_warmup=beta3_warmup,
                                      alpha_warmup=alpha_warmup, eps=eps, weight_decay=weight_decay))  # fmt: skip

    @staticmethod
    def _schedules(t, group):
        beta1, _, beta3 = group["betas"]
        alpha = group["alpha"]
        if group["alpha_warmup"] is not None and t < group["alpha_warmup"]:
            alpha = t / group["alpha_warmup"] * group["alpha"]
        if group["beta3_warmup"] is not None and t < group["beta3_warmup"]:
            a = t / group["beta3_warmup"]
            f = lambda b: math.log(0.5) / math.log(b + 1e-8) - 1  # noqa: E731
            beta3 = 0.5 ** (1 / ((1 - a) * f(beta1) + a * f(beta3) + 1))
        return alpha, beta3

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (beta1, beta2, _), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if not state:
                    state.update(step=0, exp_avg_fast=torch.zeros_like(p) if beta1 != 0 else None,
                                 exp_avg_slow=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))  # fmt: skip
                state["step"] += 1
                t = state["step"]
                alpha, beta3 = self._schedules(t, group)
                if beta1 != 0:
                    state["exp_avg_fast"].mul_(beta1).add_((1 - beta1) * g)
                fast = state["exp_avg_fast"] if beta1 != 0 else g
                state["exp_avg_slow"].mul_(beta3).add_((1 - beta3) * g)
                state["exp_avg_sq"].mul_(beta2).add_((1 - beta2) * g * g)
                denom = state["exp_avg_sq"].sqrt() / math.sqrt(1 - beta2**t) + eps
                update = (fast / (1 - beta1**t) + alpha * state["exp_avg_slow"]) / denom + wd * p
                p.sub_(lr * update)


def _steps(opt_cls, grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def test_first_steps_by_hand():
    lr, (b1, b2, b3), alpha, eps, wd = 0.1, (0.9, 0.999, 0.9999), 2.0, 1e-8, 0.5
    x1, x2 = _steps(AdEMAMix, [4.0, -2.0], lr=lr, weight_decay=wd)
    # step 1: m1/(1 - b1) = 4 (Adam's), m2 = (1 - b3) 4 = 4e-4 uncorrected, sqrt(v / (1 - b2)) = 4
    m1, m2, v = (1 - b1) * 4.0, (1 - b3) * 4.0, (1 - b2) * 16.0
    u = (m1 / (1 - b1) + alpha * m2) / (math.sqrt(v) / math.sqrt(1 - b2) + eps) + wd * 0.5
    assert math.isclose(x1, 0.5 - lr * u, rel_tol=1e-14)
    assert math.isclose(u, 1.0002 + 0.25, rel_tol=1e-7)  # the slow EMA adds 2 * 4e-4 / 4 to Adam's 1
    m1, m2, v = b1 * m1 + (1 - b1) * -2.0, b3 * m2 + (1 - b3) * -2.0, b2 * v + (1 - b2) * 4.0
    u = (m1 / (1 - b1**2) + alpha * m2) / (math.sqrt(v) / math.sqrt(1 - b2**2) + eps) + wd * x1
    assert math.isclose(x2, x1 - lr * u, rel_tol=1e-14)


def test_beta1_zero_keeps_no_fast_buffer_and_uses_the_gradient():
    p = torch.ones(3, dtype=torch.float64)
    opt = AdEMAMix([p], betas=(0.0, 0.999, 0.9999))
    p.grad = torch.full((3,), 4.0, dtype=torch.float64)
    opt.step()
    assert set(opt.state[p]) == {"step", "exp_avg_slow", "exp_avg_sq"}
    # m1 = g: the step is 1e-3 * (4 + 2 * 4e-4) / (4 + eps)
    assert torch.allclose(p, torch.full((3,), 1 - 1e-3 * 4.0008 / (4 + 1e-8), dtype=torch.float64), rtol=0, atol=1e-15)


def test_warm_ups_follow_the_authors_schedules():
    # alpha from 0 linearly; beta3's half-life from beta1's (6.6 steps) linearly to beta3's (6931)
    for t in (1, 50, 99, 100, 150):
        alpha, beta3 = slow_schedule(float(t), beta1=0.9, beta3=0.9999, alpha=8.0, alpha_warmup=100, beta3_warmup=100)
        assert alpha == (8.0 * t / 100 if t < 100 else 8.0)
        half_life = math.log(0.5) / math.log(beta3)
        a = min(t / 100, 1.0)
        expected = (1 - a) * math.log(0.5) / math.log(0.9 + 1e-8) + a * math.log(0.5) / math.log(0.9999 + 1e-8)
        assert math.isclose(half_life, expected if t < 100 else math.log(0.5) / math.log(0.9999), rel_tol=1e-9)


def test_schedules_are_the_authors_and_pytorch_optimizer_drops_their_1e_8():
    group = dict(betas=(0.9, 0.999, 0.9999), alpha=8.0, alpha_warmup=100, beta3_warmup=100)
    for t in (1, 50, 99, 100, 101):
        ours = slow_schedule(float(t), beta1=0.9, beta3=0.9999, alpha=8.0, alpha_warmup=100, beta3_warmup=100)
        assert ours == AuthorsAdEMAMix._schedules(t, group)
        if t < 100:
            # pytorch_optimizer's beta3_t is the same formula without the 1e-8 of ln(beta + 1e-8):
            # 1 - beta3_t is 1e-4 of itself off (ln 0.9999 is only -1e-4)
            theirs = pytorch_optimizer.AdEMAMix.schedule_beta3(100, t, 0.9, 0.9999)
            assert 5e-5 < (ours[1] - theirs) / (1 - ours[1]) < 2e-4


def test_pytorch_optimizer_defaults_differ_from_the_authors():
    grads = [4.0, -2.0, 1.0]
    authors = _steps(AuthorsAdEMAMix, grads, lr=0.1, weight_decay=0.5)
    assert _steps(AdEMAMix, grads, lr=0.1, weight_decay=0.5) == pytest.approx(authors, rel=1e-14)
    # alpha 5 instead of 2, and L2 decay (divided by sqrt(v)) instead of AdamW's
    theirs = _steps(pytorch_optimizer.AdEMAMix, grads, lr=0.1, weight_decay=0.5)
    assert abs(theirs[0] - authors[0]) > 1e-3
    same = _steps(pytorch_optimizer.AdEMAMix, grads, lr=0.1, weight_decay=0.5, alpha=2.0, weight_decouple=True)
    assert same == pytest.approx(authors, rel=1e-12)


def test_authors_checkpoint_loads_into_ours():
    h.reference_checkpoint_continues(AuthorsAdEMAMix, AdEMAMix, lr=0.1, weight_decay=0.1, alpha_warmup=3)
    saved = h.reference_checkpoint_continues(AuthorsAdEMAMix, AdEMAMix, lr=0.1, betas=(0.0, 0.99, 0.999))
    assert saved["state"][0]["exp_avg_fast"] is None  # theirs keeps the key for beta1 = 0
