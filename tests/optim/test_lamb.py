"""LAMB: the paper's equations as the reference, first steps by hand, the options, and where the ports differ."""

import math

import pytest
import pytorch_optimizer
import torch
import torch_optimizer

from optimlab.optim import LAMB

from . import harness as h


class PaperLAMB(torch.optim.Optimizer):
    """LAMB as You et al. (ICLR 2020) write it in Algorithm 2, in plain torch, one tensor at a time.

    With t counted from 1 and the gradient g first divided by max(1, ||all gradients|| / max_grad_norm)
    where that is given: m = beta1 m + (1 - beta1) g, v = beta2 v + (1 - beta2) g^2,
    r = (m / (1 - beta1^t)) / (sqrt(v / (1 - beta2^t)) + eps) (without bias correction m / (sqrt(v) + eps)),
    r += wd x, phi = ||x|| (at most clamp_value), x -= lr * phi / ||r|| * r, the ratio 1 where
    phi or ||r|| is 0.
    """

    def __init__(
        self, params, lr=1e-3, betas=(0.9, 0.999), eps=1e-6, weight_decay=0.0, bias_correction=True,
        clamp_value=None, max_grad_norm=None,
    ):  # fmt: skip
        defaults = dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, bias_correction=bias_correction)
        super().__init__(params, dict(defaults, clamp_value=clamp_value, max_grad_norm=max_grad_norm))

    @torch.no_grad()
    def step(self, closure=None):
        grads = [p.grad for group in self.param_groups for p in group["params"] if p.grad is not None]
        total = math.sqrt(sum(g.double().pow(2).sum().item() for g in grads))
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            clip = group["max_grad_norm"]
            scale = 1.0 if clip is None else max(1.0, total / clip)
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad / scale
                m.mul_(beta1).add_((1 - beta1) * g)
                v.mul_(beta2).add_((1 - beta2) * g * g)
                if group["bias_correction"]:
                    r = (m / (1 - beta1**t)) / ((v / (1 - beta2**t)).sqrt() + eps)
                else:
                    r = m / (v.sqrt() + eps)
                r = r + wd * p
                phi = p.norm().item()
                if group["clamp_value"] is not None:
                    phi = min(phi, group["clamp_value"])
                r_norm = r.norm().item()
                p.sub_(lr * (phi / r_norm if phi > 0 and r_norm > 0 else 1.0) * r)


def _steps(opt_cls, grads, start=(3.0, 4.0), **kw):
    p = torch.tensor(start, dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        out.append(p.clone())
    return out


def test_first_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-6
    x1, x2 = _steps(LAMB, [[1.0, -2.0], [0.5, 0.5]], lr=lr)
    # step 1: bias-corrected m = g and v = g^2, so r = g / (|g| + eps); the trust ratio ||x|| / ||r||
    # makes the step lr * ||x|| = 0.5 long
    r = [1.0 / (1.0 + eps), -2.0 / (2.0 + eps)]
    expected = [x - 0.5 * ri / math.hypot(*r) for x, ri in zip((3.0, 4.0), r)]
    assert torch.allclose(x1, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=4e-15)
    m = [(1 - b1) * b1 * g1 + (1 - b1) * g2 for g1, g2 in ((1.0, 0.5), (-2.0, 0.5))]
    v = [(1 - b2) * b2 * g1 * g1 + (1 - b2) * g2 * g2 for g1, g2 in ((1.0, 0.5), (-2.0, 0.5))]
    r = [(mi / (1 - b1**2)) / (math.sqrt(vi / (1 - b2**2)) + eps) for mi, vi in zip(m, v)]
    ratio = x1.norm().item() / math.hypot(*r)
    expected = [x - lr * ratio * ri for x, ri in zip(x1.tolist(), r)]
    assert torch.allclose(x2, torch.tensor(expected, dtype=torch.float64), rtol=0, atol=4e-15)


def test_each_tensor_steps_lr_times_its_own_norm_whatever_its_gradients_scale():
    small, large = torch.full((4,), 0.1, dtype=torch.float64), torch.full((9,), 10.0, dtype=torch.float64)
    opt = LAMB([small, large], lr=0.01, eps=0.0)
    small.grad = torch.full((4,), 1e3, dtype=torch.float64)
    large.grad = torch.full((9,), 1e-3, dtype=torch.float64)
    opt.step()
    assert math.isclose((small - 0.1).norm().item(), 0.01 * 0.2, rel_tol=1e-12)  # ||x|| = 0.1 * sqrt(4)
    assert math.isclose((large - 10.0).norm().item(), 0.01 * 30.0, rel_tol=1e-12)


def test_weight_decay_enters_the_trust_ratio():
    # a zero gradient: r = wd x, so the step is lr * ||x|| along -x whatever wd is
    for wd in (0.01, 1.0):
        (x1,) = _steps(LAMB, [[0.0, 0.0]], lr=0.1, weight_decay=wd)
        assert torch.allclose(x1, torch.tensor([3.0, 4.0], dtype=torch.float64) * 0.9, rtol=0, atol=1e-14)


def test_zero_weights_take_the_unscaled_step_and_clamp_value_caps_the_weight_norm():
    (x1,) = _steps(LAMB, [[1.0, -2.0]], start=(0.0, 0.0), lr=0.1, eps=0.0)
    assert torch.equal(x1, torch.tensor([-0.1, 0.1], dtype=torch.float64))  # ratio 1: the Adam step r = sign(g)
    (x1,) = _steps(LAMB, [[1.0, 0.0]], start=(30.0, 40.0), lr=0.1, clamp_value=10.0)
    assert x1.tolist() == [30.0 - 0.1 * 10.0, 40.0]  # phi = min(50, 10); r = (1 / (1 + eps), 0)


def test_global_clip_divides_every_gradient_by_the_norm_of_all_of_them_over_max_grad_norm():
    # two groups; all gradients together have norm 5, so with max_grad_norm 1 each is divided by 5
    a, b = torch.tensor([1.0], dtype=torch.float64), torch.tensor([1.0], dtype=torch.float64)
    opt = LAMB([{"params": [a]}, {"params": [b]}], max_grad_norm=1.0, bias_correction=False, eps=0.0)
    a.grad, b.grad = torch.tensor([3.0], dtype=torch.float64), torch.tensor([4.0], dtype=torch.float64)
    opt.step()
    assert opt.state[a]["exp_avg"].item() == pytest.approx(0.1 * 3.0 / 5.0, rel=1e-15)
    assert opt.state[b]["exp_avg_sq"].item() == pytest.approx(0.001 * (4.0 / 5.0) ** 2, rel=1e-15)
    assert a.grad.item() == 3.0  # p.grad untouched


def test_global_clip_cannot_be_swept():
    from optimlab import surfaces
    from optimlab.sweep import sweep

    with pytest.raises(ValueError, match="LAMB: max_grad_norm clips by the norm of all the optimizer's gradients"):
        sweep(surfaces.get("booth"), LAMB, options={"max_grad_norm": 1.0}, steps=5)


def test_torch_optimizer_debias_scales_the_normalised_step_instead_of_correcting_the_moments():
    # torch_optimizer multiplies lr * trust_ratio by sqrt(1 - beta2^t) / (1 - beta1^t): with eps = 0 and
    # no decay r is scale-free, so the paper's step is lr * ||x|| exactly and theirs that times the factor
    grads = [[1.0, -2.0], [0.5, 0.5], [-1.0, 0.2]]
    start = torch.tensor([3.0, 4.0], dtype=torch.float64)
    ours = _steps(LAMB, grads, lr=0.1, eps=0.0)
    theirs = _steps(torch_optimizer.Lamb, grads, lr=0.1, eps=0.0, debias=True)
    before = [start] + ours[:-1]
    for t, (x, y, prev) in enumerate(zip(ours, theirs, before), 1):
        assert math.isclose((x - prev).norm().item(), 0.1 * prev.norm().item(), rel_tol=1e-12)
    factor = math.sqrt(1 - 0.999) / (1 - 0.9)
    assert math.isclose((theirs[0] - start).norm().item(), factor * 0.1 * 5.0, rel_tol=1e-12)


def test_pytorch_optimizer_adds_eps_to_the_update_norm_and_corrects_the_step_for_the_first_moment():
    # by default (adam_debias=False) it divides lr by 1 - beta1^t: its first step is 10x the paper's lr * ||x||
    eps = 1e-6
    (ours,) = _steps(LAMB, [[1.0, -2.0]], lr=0.1, bias_correction=False, clamp_value=10.0)
    (theirs,) = _steps(pytorch_optimizer.Lamb, [[1.0, -2.0]], lr=0.1, weight_decouple=False)
    # no bias correction: m = 0.1 g, v = 0.001 g^2
    g = torch.tensor([1.0, -2.0], dtype=torch.float64)
    r = 0.1 * g / (math.sqrt(0.001) * g.abs() + eps)
    start = torch.tensor([3.0, 4.0], dtype=torch.float64)
    assert torch.allclose(ours, start - 0.1 * 5.0 / r.norm() * r, rtol=0, atol=4e-15)
    assert torch.allclose(theirs, start - 0.1 / (1 - 0.9) * 5.0 / (r.norm() + eps) * r, rtol=0, atol=4e-15)


def test_pytorch_optimizer_decays_outside_the_ratio_by_default():
    # its default weight_decouple=True shrinks x by 1 - lr wd first and leaves the decay out of r
    eps, lr, wd = 1e-6, 0.1, 0.5
    (theirs,) = _steps(pytorch_optimizer.Lamb, [[1.0, 1.0]], lr=lr, weight_decay=wd)
    (ours,) = _steps(LAMB, [[1.0, 1.0]], lr=lr, weight_decay=wd, bias_correction=False, clamp_value=10.0)
    shrunk = torch.tensor([3.0, 4.0], dtype=torch.float64) * (1 - lr * wd)
    u = torch.full((2,), 0.1 / (math.sqrt(0.001) + eps), dtype=torch.float64)
    assert torch.allclose(theirs, shrunk - lr / (1 - 0.9) * shrunk.norm() / (u.norm() + eps) * u, rtol=0, atol=4e-15)
    assert (ours - theirs).abs().max().item() > 1e-2


def test_torch_optimizer_checkpoint_loads_into_ours():
    kw = dict(lr=0.1, weight_decay=0.1)
    theirs_cls = lambda p, **k: torch_optimizer.Lamb(p, **k)
    ours_cls = lambda p, **k: LAMB(p, bias_correction=False, clamp_value=10.0, **k)
    saved = h.reference_checkpoint_continues(theirs_cls, ours_cls, **kw)
    assert {"step", "exp_avg", "exp_avg_sq"} <= set(saved["state"][0])


def test_solves_the_standard_problems_with_a_decaying_lr():
    # Each step is lr * ||x|| long, so at a constant lr LAMB circles the minimum at a distance that
    # does not shrink with the gradient; as it is used (with a decaying lr) it converges: here lr
    # 0.1 -> 1e-6 over 3000 steps, where it gets within 1.8e-6 (quadratic) and 1.7e-6 (Rosenbrock).
    # (From lr 3e-2 it stalls on Rosenbrock at the origin, which its valley crosses: steps
    # proportional to ||x|| shrink geometrically there and never jump across.)
    from .test_standard import _quadratic  # here: test_standard imports this module's cases

    a, b = _quadratic()
    problems = [
        (torch.zeros(6, dtype=torch.float64), lambda x: 0.5 * x @ a @ x - b @ x, torch.linalg.solve(a, b), 1e-3),
        (torch.tensor([-1.5, 2.0], dtype=torch.float64), lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2,
         torch.ones(2, dtype=torch.float64), 1e-2),
    ]  # fmt: skip
    steps = 3000
    for x, loss_fn, target, tol in problems:
        x.requires_grad_(True)
        opt = LAMB([x], lr=0.1)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, (1e-6 / 0.1) ** (1 / steps))
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(x).backward()
            opt.step()
            sched.step()
        dist = (x.detach() - target).norm().item()
        assert dist <= tol / 10, dist
