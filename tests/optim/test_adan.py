"""Adan: the authors' equations as the reference, first steps by hand, the betas' convention, and the ports."""

import math

import pytest
import pytorch_optimizer
import torch

from optimlab.optim import Adan

from . import harness as h


class AuthorsAdan(torch.optim.Optimizer):
    """The authors' Adan (sail-sg/Adan ``adan.py``, its per-tensor path) as equations in plain torch.

    Per param group the step t counts from 1.  With max_grad_norm > 0 every gradient is first
    multiplied by c = min(1, max_grad_norm / (||all gradients|| + eps)) (they sum the squares in
    float32; here in the parameters' dtype, so that a float64 run is exact).  Then with
    d = g - g_prev (0 at t = 1): m = b1 m + (1 - b1) g, diff = b2 diff + (1 - b2) d,
    n = b3 n + (1 - b3) (g + b2 d)^2, denom = sqrt(n) / sqrt(1 - b3^t) + eps,
    x -= lr / (1 - b1^t) m / denom, x -= lr b2 / (1 - b2^t) diff / denom, then x /= 1 + lr wd
    (no_prox: x *= 1 - lr wd before the two steps).
    """

    def __init__(self, params, lr=1e-3, betas=(0.98, 0.92, 0.99), eps=1e-8, weight_decay=0.0, max_grad_norm=0.0,
                 no_prox=False):  # fmt: skip
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, no_prox=no_prox)
        super().__init__(params, dict(defaults, max_grad_norm=max_grad_norm))

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        clip = 1.0
        if self.defaults["max_grad_norm"] > 0:
            norm = torch.stack([g.pow(2).sum() for g in grads]).sum().sqrt().item()
            clip = min(1.0, self.defaults["max_grad_norm"] / (norm + self.defaults["eps"]))
        for group in self.param_groups:
            lr, (b1, b2, b3), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            group["step"] = t = group.get("step", 0) + 1
            for p in group["params"]:
                if p.grad is None:
                    continue
                g = p.grad * clip
                state = self.state[p]
                if not state:
                    state.update({k: torch.zeros_like(p) for k in ("exp_avg", "exp_avg_sq", "exp_avg_diff")})
                if t == 1:
                    state["neg_pre_grad"] = -g
                d = g + state["neg_pre_grad"]
                state["exp_avg"].mul_(b1).add_((1 - b1) * g)
                state["exp_avg_diff"].mul_(b2).add_((1 - b2) * d)
                state["exp_avg_sq"].mul_(b3).add_((1 - b3) * (g + b2 * d) ** 2)
                denom = state["exp_avg_sq"].sqrt() / math.sqrt(1 - b3**t) + eps
                if group["no_prox"]:
                    p.mul_(1 - lr * wd)
                p.sub_(lr / (1 - b1**t) * state["exp_avg"] / denom)
                p.sub_(lr * b2 / (1 - b2**t) * state["exp_avg_diff"] / denom)
                if not group["no_prox"]:
                    p.div_(1 + lr * wd)
                state["neg_pre_grad"] = -g


def _steps(opt_cls, grads, start=0.5, **kw):
    p = torch.tensor([start], dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def test_first_steps_by_hand():
    lr, b1, b2, b3, eps = 0.1, 0.98, 0.92, 0.99, 1e-8
    x1, x2 = _steps(Adan, [4.0, -2.0], lr=lr)
    # step 1: no difference yet; bias-corrected m = g and n = g^2, so the step is lr * g / (|g| + eps)
    assert math.isclose(x1, 0.5 - lr * 4.0 / (4.0 + eps), rel_tol=1e-15)
    # step 2: d = -2 - 4 = -6
    m = b1 * (1 - b1) * 4.0 + (1 - b1) * -2.0
    diff = (1 - b2) * -6.0
    n = b3 * (1 - b3) * 16.0 + (1 - b3) * (-2.0 + b2 * -6.0) ** 2
    denom = math.sqrt(n / (1 - b3**2)) + eps
    expected = x1 - lr / (1 - b1**2) * m / denom - lr * b2 / (1 - b2**2) * diff / denom
    assert math.isclose(x2, expected, rel_tol=1e-14)


def test_betas_are_one_minus_the_papers():
    # the paper weighs a new gradient by its beta1 = 0.02; the code, and this class, by 1 - beta1 with beta1 = 0.98
    p = torch.zeros(1, dtype=torch.float64)
    opt = Adan([p])
    p.grad = torch.ones(1, dtype=torch.float64)
    opt.step()
    assert opt.param_groups[0]["betas"] == (0.98, 0.92, 0.99)
    assert opt.state[p]["exp_avg"].item() == pytest.approx(0.02, rel=1e-14)
    assert opt.state[p]["exp_avg_sq"].item() == pytest.approx(0.01, rel=1e-14)  # (1 - beta3) g^2, the paper's 0.01


def test_proximal_decay_divides_and_no_prox_multiplies():
    lr, wd = 0.1, 0.5
    (prox,) = _steps(Adan, [0.0], start=2.0, lr=lr, weight_decay=wd, eps=1.0)
    (no_prox,) = _steps(Adan, [0.0], start=2.0, lr=lr, weight_decay=wd, eps=1.0, no_prox=True)
    assert prox == 2.0 / (1 + lr * wd)  # a zero gradient: only the decay moves the weight
    assert no_prox == 2.0 * (1 - lr * wd)


def test_global_clip_scales_every_gradient_and_leaves_p_grad_alone():
    a, b = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    opt = Adan([{"params": [a]}, {"params": [b]}], max_grad_norm=1.0, eps=0.0)
    a.grad, b.grad = torch.tensor([3.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64)
    opt.step()
    assert opt.state[a]["neg_pre_grad"].item() == pytest.approx(-3.0 / 5.0, rel=1e-15)
    assert opt.state[b]["exp_avg"].item() == pytest.approx((1 - 0.98) * 4.0 / 5.0, rel=1e-15)
    assert a.grad.item() == 3.0 and b.grad.item() == 4.0  # the authors' step multiplies p.grad in place


def test_pytorch_optimizer_clip_fails_on_a_zero_dimensional_parameter():
    p = torch.zeros((), dtype=torch.float64)
    opt = pytorch_optimizer.Adan([p], max_grad_norm=1.0)
    p.grad = torch.tensor(2.0, dtype=torch.float64)
    with pytest.raises(RuntimeError, match="doesn't match the broadcast shape"):
        opt.step()
    ours = Adan([q := torch.zeros((), dtype=torch.float64)], max_grad_norm=1.0)
    q.grad = torch.tensor(2.0, dtype=torch.float64)
    ours.step()
    assert q.item() != 0.0


def test_pytorch_optimizer_clips_by_a_norm_summed_in_float32():
    # as the authors' code: float64 gradients, a float32 norm; ours takes it in double
    g = torch.tensor([0.1, 0.2], dtype=torch.float64)
    p, q = torch.zeros(2, dtype=torch.float64), torch.zeros(2, dtype=torch.float64)
    theirs, ours = pytorch_optimizer.Adan([p], max_grad_norm=0.01), Adan([q], max_grad_norm=0.01)
    p.grad, q.grad = g.clone(), g.clone()
    theirs.step()
    ours.step()
    exact = -g * 0.01 / (g.norm() + 1e-8)
    assert torch.allclose(ours.state[q]["neg_pre_grad"], exact, rtol=1e-15, atol=0)
    error = ((theirs.state[p]["previous_grad"] - exact).abs() / exact.abs()).max().item()
    assert 1e-9 < error < 1e-6  # float32 rounding of the norm and of the factor, in a float64 run


def test_authors_checkpoint_loads_into_ours():
    # theirs counts steps per param group; each of our parameters takes that count
    saved = h.reference_checkpoint_continues(AuthorsAdan, Adan, lr=0.1, weight_decay=0.1)
    assert set(saved["state"][0]) == {"exp_avg", "exp_avg_sq", "exp_avg_diff", "neg_pre_grad"}
    assert saved["param_groups"][0]["step"] == 2
