"""Lion: the authors' equations as the reference, first steps by hand, decoupled weight decay, the ports."""

import math

import lion_pytorch
import torch

from optimlab.optim import Lion

from . import harness as h


class AuthorsLion(torch.optim.Optimizer):
    """The update of the authors' Lion (google/automl, lion/lion_pytorch.py), as equations in plain torch.

    Their order: shrink the parameter by ``1 - lr * weight_decay``, step by ``-lr * sign(c)`` with
    ``c = beta1 * m + (1 - beta1) * g``, then ``m = beta2 * m + (1 - beta2) * g``.  Their state is
    ``exp_avg`` alone, with no step count.
    """

    def __init__(self, params, lr=1e-4, betas=(0.9, 0.99), weight_decay=0.0):
        super().__init__(params, dict(lr=lr, betas=betas, weight_decay=weight_decay))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (beta1, beta2), wd = group["lr"], group["betas"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state["exp_avg"] = torch.zeros_like(p)
                m = state["exp_avg"]
                p.mul_(1 - lr * wd)
                p.sub_(lr * torch.sign(m * beta1 + p.grad * (1 - beta1)))
                m.mul_(beta2).add_(p.grad * (1 - beta2))


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
    # lr 0.1, decay 0.5: the parameter shrinks by 1 - 0.05 before each signed step of 0.1
    x1, x2 = _steps(Lion, [4.0, -2.0], lr=0.1, weight_decay=0.5)
    # step 1: m0 = 0, c1 = 0.1 * 4 > 0
    assert x1 == 0.5 * 0.95 - 0.1
    # step 2: m1 = 0.01 * 4 = 0.04; c2 = 0.9 * 0.04 + 0.1 * -2 = -0.164 < 0 (with beta2 in the
    # interpolation it would be 0.99 * 0.04 + 0.01 * -2 = +0.0196: the step tells the betas apart)
    assert x2 == x1 * 0.95 + 0.1


def test_weight_decay_is_decoupled():
    # A small negative gradient on a large weight: decoupled decay shrinks the weight, then the
    # sign of the gradient (-) steps it up.  Coupled into g (g + 1.0 * 10 = 9.5 > 0), the sign
    # would flip and the step would go down to 9.9.
    (x1,) = _steps(Lion, [-0.5], start=10.0, lr=0.1, weight_decay=1.0)
    assert math.isclose(x1, 10.0 * 0.9 + 0.1, rel_tol=1e-15)


def test_no_bias_correction_steps_are_exactly_lr():
    # every coordinate moves by lr, whatever the gradient's size, from the first step on
    xs = _steps(Lion, [1e-6, 3.0, 1e3, 2.0], start=0.0, lr=0.25)
    assert xs == [-0.25, -0.5, -0.75, -1.0]


def test_non_finite_gradient_reaches_the_parameter_where_the_authors_code_freezes_it():
    grads = [1.0, float("nan"), 1.0, 1.0]
    ours = _steps(Lion, grads, lr=0.1)
    theirs = _steps(AuthorsLion, grads, lr=0.1)
    assert math.isnan(ours[1])
    # torch.sign(nan) is 0: their parameter stops (and its momentum is NaN from then on)
    assert theirs[1] == theirs[2] == theirs[3] == 0.4


def test_lion_pytorch_decoupled_option_is_weight_decay_over_the_initial_lr():
    start = h.make_params(h.SHAPES, torch.float64)
    grads = h.gradient_stream(h.SHAPES, 60, torch.float64)
    lr0, wd = 0.01, 0.005
    theirs = h.run(lambda p: lion_pytorch.Lion(p, lr=lr0, weight_decay=wd, decoupled_weight_decay=True),
                   [p.clone() for p in start], grads, schedule=True)  # fmt: skip
    ours = h.run(lambda p: Lion(p, lr=lr0, weight_decay=wd / lr0), [p.clone() for p in start], grads, schedule=True)
    same_number = h.run(lambda p: Lion(p, lr=lr0, weight_decay=wd), [p.clone() for p in start], grads, schedule=True)
    assert h.relative_gap(ours, theirs, start) <= 1e-9
    assert h.relative_gap(same_number, theirs, start) > 1e-3


def test_authors_checkpoint_loads_into_ours():
    saved = h.reference_checkpoint_continues(AuthorsLion, Lion, lr=0.1, weight_decay=0.5)
    assert set(saved["state"][0]) == {"exp_avg"}


def _quadratic():
    gen = torch.Generator().manual_seed(3)
    q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
    a = q @ torch.diag(torch.linspace(1.0, 10.0, 6, dtype=torch.float64)) @ q.T
    return a, torch.randn(6, generator=gen, dtype=torch.float64)


def test_solves_the_standard_problems_with_a_decaying_lr():
    # Sign steps have length lr in every coordinate, so at a constant lr Lion circles the minimum
    # at a distance ~2 lr (lr = 1e-3: 1.9e-3 on the quadratic).  Decayed as Lion is used (the
    # paper pairs it with cosine or linear decay), it converges: here lr 3e-2 -> 1e-6 over 3000
    # steps, where it gets within 2e-6 (quadratic) and 5e-5 (Rosenbrock), far inside the
    # standard suite's tolerances 1e-3 and 1e-2.
    a, b = _quadratic()
    problems = [
        (torch.zeros(6, dtype=torch.float64), lambda x: 0.5 * x @ a @ x - b @ x, torch.linalg.solve(a, b), 1e-3),
        (torch.tensor([-1.5, 2.0], dtype=torch.float64), lambda x: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2,
         torch.ones(2, dtype=torch.float64), 1e-2),
    ]  # fmt: skip
    steps = 3000
    for x, loss_fn, target, tol in problems:
        x.requires_grad_(True)
        opt = Lion([x], lr=3e-2)
        sched = torch.optim.lr_scheduler.ExponentialLR(opt, (1e-6 / 3e-2) ** (1 / steps))
        for _ in range(steps):
            opt.zero_grad()
            loss_fn(x).backward()
            opt.step()
            sched.step()
        dist = (x.detach() - target).norm().item()
        assert dist <= tol / 10, dist
