"""MARS: the authors' equations as the reference, first steps by hand, the exact form's hooks, and the port."""

import math

import pytest
import pytorch_optimizer
import torch

from optimlab.optim import MARS

from . import harness as h


class AuthorsMARS(torch.optim.Optimizer):
    """The authors' MARS-AdamW (AGI-Arena/MARS ``MARS/optimizers/mars.py``) as equations in plain torch.

    Per tensor, t counted from 1, last = the kept gradient (zeros at first).  A 2-D tensor (any
    with optimize_1d): c = g + gamma * beta1 / (1 - beta1) * (g - last), divided by ||c|| where
    that exceeds 1; m = beta1 m + (1 - beta1) c, v = beta2 v + (1 - beta2) c^2 (AMSGrad: its
    running max); denom = (sqrt(v) / sqrt(1 - beta2^t) + eps) (1 - beta1^t);
    x += -lr (wd x + m / denom).  Any other tensor: the same on g with betas_1d, weight_decay_1d
    and lr * lr_1d / lr0.  MARS-approx keeps g as the next last; the exact form keeps what the
    hooks put there: previous_grad = p.grad, then last = previous_grad.
    """

    def __init__(self, params, lr=3e-3, betas=(0.95, 0.99), eps=1e-8, weight_decay=0.0, amsgrad=False, gamma=0.025,
                 is_approx=True, optimize_1d=False, lr_1d=3e-3, betas_1d=(0.9, 0.95), weight_decay_1d=0.1):  # fmt: skip
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))
        self.eps, self.amsgrad, self.gamma, self.is_approx, self.optimize_1d = (
            eps,
            amsgrad,
            gamma,
            is_approx,
            optimize_1d,
        )
        self.lr_1d_factor, self.betas_1d, self.weight_decay_1d = lr_1d / lr, betas_1d, weight_decay_1d

    @torch.no_grad()
    def update_previous_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is not None:
                    self.state[p]["previous_grad"] = p.grad.clone()

    @torch.no_grad()
    def update_last_grad(self):
        for group in self.param_groups:
            for p in group["params"]:
                self.state[p]["last_grad"] = self.state[p]["previous_grad"].clone()

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                g, state = p.grad, self.state[p]
                if "exp_avg" not in state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                    state.setdefault("last_grad", torch.zeros_like(p))
                    if self.amsgrad:
                        state["max_exp_avg_sq"] = torch.zeros_like(p)
                state["step"] += 1
                t = state["step"]
                if self.optimize_1d or p.dim() == 2:
                    (b1, b2), lr, wd = group["betas"], group["lr"], group["weight_decay"]
                    c = g + self.gamma * (b1 / (1 - b1)) * (g - state["last_grad"])
                    norm = c.norm()
                    if norm > 1:
                        c = c / norm
                else:
                    (b1, b2), lr, wd = self.betas_1d, group["lr"] * self.lr_1d_factor, self.weight_decay_1d
                    c = g
                state["exp_avg"].mul_(b1).add_((1 - b1) * c)
                state["exp_avg_sq"].mul_(b2).add_((1 - b2) * c * c)
                v = state["exp_avg_sq"]
                if self.amsgrad:
                    state["max_exp_avg_sq"] = v = torch.maximum(state["max_exp_avg_sq"], v)
                denom = (v.sqrt() / math.sqrt(1 - b2**t) + self.eps) * (1 - b1**t)
                p.add_(-lr * (wd * p + state["exp_avg"] / denom))
                if self.is_approx:
                    state["last_grad"] = g.clone()


def test_first_steps_by_hand():
    lr, b1, b2, eps, gamma = 0.01, 0.95, 0.99, 1e-8, 0.025
    x = torch.tensor([[0.5, -1.0]], dtype=torch.float64)  # 2-D: MARS
    opt = MARS([x], lr=lr)
    g1 = torch.tensor([[0.3, 0.4]], dtype=torch.float64)
    x.grad = g1
    opt.step()
    # step 1: last = 0, so c = (1 + gamma b1 / (1 - b1)) g = 1.475 g, norm 0.7375 < 1: kept
    c1 = (1 + gamma * b1 / (1 - b1)) * g1
    x1 = torch.tensor([[0.5, -1.0]], dtype=torch.float64) - lr * c1 / (c1.abs() + eps)
    assert torch.allclose(x, x1, rtol=0, atol=1e-16)
    # step 2: a large gradient: ||c|| > 1, so c is normalised
    g2 = torch.tensor([[3.0, -4.0]], dtype=torch.float64)
    x.grad = g2
    opt.step()
    c2 = g2 + gamma * b1 / (1 - b1) * (g2 - g1)
    c2 = c2 / c2.norm()
    m = b1 * (1 - b1) * c1 + (1 - b1) * c2
    v = b2 * (1 - b2) * c1**2 + (1 - b2) * c2**2
    x2 = x1 - lr * m / ((v / (1 - b2**2)).sqrt() + eps) / (1 - b1**2)
    assert torch.allclose(x, x2, rtol=0, atol=1e-15)


def test_tensors_that_are_not_2d_take_adamw_with_the_1d_settings():
    # a vector and a 3-D tensor: plain AdamW with betas_1d, weight_decay_1d 0.1 and lr_1d
    for shape in [(2,), (1, 1, 2)]:
        x = torch.full(shape, 2.0, dtype=torch.float64)
        opt = MARS([x], lr=0.01, lr_1d=0.001)
        x.grad = torch.full(shape, 0.5, dtype=torch.float64)
        opt.step()
        expected = 2.0 - 0.001 * (0.1 * 2.0 + 0.5 * 0.1 / ((0.5 * math.sqrt(0.05) / math.sqrt(0.05) + 1e-8) * 0.1))
        assert torch.allclose(x, torch.full(shape, expected, dtype=torch.float64), rtol=1e-15, atol=0)


def test_exact_form_corrects_with_the_gradient_the_hooks_keep():
    # the authors' loop: backward of the previous batch at the current point, update_previous_grad,
    # backward of this batch, step, update_last_grad
    start = h.make_params([(3, 2), (4,)], torch.float64)
    old = h.gradient_stream([(3, 2), (4,)], 10, torch.float64, seed=5)
    new = h.gradient_stream([(3, 2), (4,)], 10, torch.float64, seed=6)
    runs = []
    for cls in (MARS, AuthorsMARS):
        ps = [p.clone() for p in start]
        opt = cls(ps, lr=0.01, is_approx=False)
        for prev, cur in zip(old, new):
            for p, g in zip(ps, prev):
                p.grad = g.clone()
            opt.update_previous_grad()
            for p, g in zip(ps, cur):
                p.grad = g.clone()
            opt.step()
            opt.update_last_grad()
        runs.append(ps)
    assert all(torch.allclose(a, b, rtol=0, atol=1e-15) for a, b in zip(*runs))
    approx = h.run(lambda p: MARS(p, lr=0.01), [p.clone() for p in start], new, groups=False)[-1]
    assert (approx[0] - runs[0][0]).abs().max().item() > 1e-4  # the correction changed the 2-D tensor


def test_pytorch_optimizer_takes_mars_for_every_tensor_of_two_or_more_dimensions():
    x, y = torch.ones(1, 1, 2, dtype=torch.float64), torch.ones(1, 1, 2, dtype=torch.float64)
    ours, theirs = MARS([x], lr=0.01, eps=0.0), pytorch_optimizer.MARS([y], lr=0.01, eps=0.0)
    x.grad, y.grad = torch.full_like(x, 0.5), torch.full_like(y, 0.5)
    ours.step()
    theirs.step()
    assert torch.allclose(x, torch.full_like(x, 1 - 0.003 * (0.1 + 1.0)), rtol=1e-15, atol=0)  # AdamW, lr_1d
    assert torch.allclose(y, torch.full_like(y, 1 - 0.01 * 1.0), rtol=1e-14, atol=0)  # MARS: wd 0, step lr sign(c)


def test_pytorch_optimizer_adds_eps_before_the_bias_correction_and_1e_15_inside_the_root():
    x, y = torch.ones(1, 1, dtype=torch.float64), torch.ones(1, 1, dtype=torch.float64)
    ours, theirs = MARS([x], lr=1.0, eps=1e-3), pytorch_optimizer.MARS([y], lr=1.0, eps=1e-3)
    x.grad, y.grad = torch.full_like(x, 0.5), torch.full_like(y, 0.5)
    ours.step()
    theirs.step()
    c, b2 = (1 + 0.025 * 0.95 / 0.05) * 0.5, 0.99
    assert x.item() == pytest.approx(1 - c / (c + 1e-3), rel=1e-14)
    assert y.item() == pytest.approx(
        1 - c / ((math.sqrt((1 - b2) * c * c + 1e-15) + 1e-3) / math.sqrt(1 - b2)), rel=1e-14
    )


def test_pytorch_optimizer_is_close_where_it_takes_the_same_branches():
    # eps = 0 and tensors of at most 2 dimensions: only its sqrt(v + 1e-15) differs, by ~1e-8 of the
    # displacement over 200 steps (the clipped c keeps v small)
    shapes = [s for s in h.SHAPES if len(s) <= 2]
    start = h.make_params(shapes, torch.float64)
    grads = h.gradient_stream(shapes, 200, torch.float64)
    kw = dict(lr=0.01, eps=0.0, weight_decay=0.1, weight_decay_1d=0.05, lr_1d=0.005)
    ours = h.run(lambda p: MARS(p, **kw), [p.clone() for p in start], grads)
    theirs = h.run(lambda p: pytorch_optimizer.MARS(p, **kw), [p.clone() for p in start], grads)
    assert 1e-12 < h.relative_gap(ours, theirs, start) <= 1e-6


def test_only_mars_adamw_is_offered():
    with pytest.raises(ValueError, match=r"MARS: invalid mars_type='mars-lion': expected 'mars-adamw'"):
        MARS([torch.zeros(2)], mars_type="mars-lion")


def test_solves_the_standard_problems_as_one_matrix():
    # the standard problems on a 1-D vector would test only the AdamW branch: here x is a 1 x n matrix;
    # lr 1e-3 for 6000 steps ends 1.7e-9 (quadratic) and 3.9e-7 (Rosenbrock) from the minimum (measured)
    from .test_standard import _quadratic  # here: test_standard imports this module's cases

    a, b = _quadratic()
    problems = [
        (torch.zeros(1, 6, dtype=torch.float64), lambda x: 0.5 * x[0] @ a @ x[0] - b @ x[0], torch.linalg.solve(a, b), 1e-3),
        (torch.tensor([[-1.5, 2.0]], dtype=torch.float64), lambda x: (1 - x[0, 0]) ** 2 + 100 * (x[0, 1] - x[0, 0] ** 2) ** 2,
         torch.ones(2, dtype=torch.float64), 1e-2),
    ]  # fmt: skip
    for x, loss_fn, target, tol in problems:
        x.requires_grad_(True)
        opt = MARS([x], lr=1e-3)
        for _ in range(6000):
            opt.zero_grad()
            loss_fn(x).backward()
            opt.step()
        dist = (x.detach()[0] - target).norm().item()
        assert dist <= tol / 10, dist


def test_authors_checkpoint_loads_into_ours():
    saved = h.reference_checkpoint_continues(AuthorsMARS, MARS, lr=0.1, weight_decay=0.1)
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq", "last_grad"}
    # a matrix, through the MARS branch: their state (no is_2d) continues as theirs would
    p, q = torch.ones(1, 3, dtype=torch.float64), torch.ones(1, 3, dtype=torch.float64)
    theirs, ours = AuthorsMARS([p], lr=0.1), MARS([q], lr=0.1)
    for g in ([1.0, -2.0, 3.0], [0.5, 0.5, -1.0]):
        p.grad = torch.tensor([g], dtype=torch.float64)
        theirs.step()
    ours.load_state_dict(h.roundtrip(theirs.state_dict()))
    q.copy_(p)
    p.grad = q.grad = torch.tensor([[2.0, 1.0, -1.0]], dtype=torch.float64)
    theirs.step()
    ours.step()
    assert torch.allclose(p, q, rtol=0, atol=1e-15)
    assert ours.state[q]["is_2d"].item() == 1.0
