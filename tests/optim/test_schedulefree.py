"""Schedule-Free SGD and AdamW: the paper's three sequences, train()/eval(), the authors' package, convergence at x."""

import math

import pytest
import pytorch_optimizer
import schedulefree
import torch

from optimlab.optim import ScheduleFreeAdamW, ScheduleFreeSGD

from . import harness as h
from .cases_schedulefree import training


def _steps(opt, grads, start=0.5):
    """Steps of ``opt`` (built on one float64 parameter) in train mode: the parameter (y) after each."""
    (p,) = opt.param_groups[0]["params"]
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def _param(start=0.5):
    return torch.tensor([start], dtype=torch.float64)


def test_sgd_first_steps_by_hand():
    p = _param()
    opt = training(ScheduleFreeSGD([p], lr=0.1, momentum=0.9))
    y1, y2 = _steps(opt, [4.0, -2.0])
    # step 1: weight lr^2 of a sum lr^2, c = 1: z = x = 0.5 - 0.1 * 4 = 0.1, and y with them
    assert math.isclose(y1, 0.1, rel_tol=1e-15)
    # step 2: c = 1/2; z = 0.1 + 0.1 * 2 = 0.3, x = (0.1 + 0.3) / 2 = 0.2, y = 0.1 z + 0.9 x = 0.21
    assert math.isclose(y2, 0.21, rel_tol=1e-14)
    opt.eval()
    assert math.isclose(p.item(), 0.2, rel_tol=1e-14)


def _paper(
    grads, *, lr, beta, adam, weight_decay=0.0, warmup_steps=0, r=0.0, weight_lr_power=2.0, beta2=0.999, eps=1e-8
):
    """The paper's three sequences, with the authors' package's weights: (y, x) after every step."""
    x = z = 0.5
    v = weight_sum = 0.0
    lr_max = -1.0
    out = []
    for t, g in enumerate(grads, 1):
        y = (1 - beta) * z + beta * x
        gamma = lr * min(1.0, t / warmup_steps) if warmup_steps else lr
        lr_max = max(lr_max, gamma)
        weight = t**r * lr_max**weight_lr_power
        weight_sum += weight
        c = weight / weight_sum
        if adam:
            v = beta2 * v + (1 - beta2) * g * g
            g = g / (math.sqrt(v / (1 - beta2**t)) + eps)
        z -= gamma * (g + weight_decay * y)
        x = (1 - c) * x + c * z
        out.append(((1 - beta) * z + beta * x, x))
    return out


@pytest.mark.parametrize(
    ("cls", "kw"),
    [
        (ScheduleFreeSGD, dict(lr=0.1, momentum=0.8, weight_decay=0.1, warmup_steps=5, r=1.0)),
        (
            ScheduleFreeAdamW,
            dict(lr=0.05, betas=(0.9, 0.99), weight_decay=0.1, warmup_steps=5, r=0.5, weight_lr_power=1.0),
        ),
        (ScheduleFreeAdamW, dict(lr=0.05)),
    ],
    ids=["sgd", "adamw", "adamw-defaults"],
)
def test_steps_follow_the_papers_three_sequences(cls, kw):
    grads = [float(g) for (g,) in h.gradient_stream([()], 30, torch.float64)]
    adam = cls is ScheduleFreeAdamW
    beta = kw.get("betas", (0.9, 0.999))[0] if adam else kw["momentum"]
    extra = {"beta2": kw.get("betas", (0.9, 0.999))[1]} if adam else {}
    names = ("weight_decay", "warmup_steps", "r", "weight_lr_power")
    paper = _paper(grads, lr=kw["lr"], beta=beta, adam=adam, **extra, **{k: kw[k] for k in names if k in kw})
    p = _param()
    opt = training(cls([p], **kw))
    for g, (y, x) in zip(grads, paper):
        _steps(opt, [g])
        assert math.isclose(p.item(), y, rel_tol=1e-12)
        opt.eval()  # x, the point to evaluate
        assert math.isclose(p.item(), x, rel_tol=1e-12)
        opt.train()


def test_new_optimizer_is_in_eval_mode_and_refuses_to_step_there():
    p = _param()
    opt = ScheduleFreeAdamW([p])
    p.grad = torch.ones(1, dtype=torch.float64)
    with pytest.raises(RuntimeError, match=r"ScheduleFreeAdamW: step\(\) in eval mode.*call optimizer.train\(\)"):
        opt.step()
    assert p.item() == 0.5 and not opt.state  # nothing happened
    opt.train()
    opt.step()
    opt.eval()
    with pytest.raises(RuntimeError, match="eval mode"):
        opt.step()


def test_a_new_authors_optimizer_refuses_to_step_too_pytorch_optimizers_does_not():
    for make in (schedulefree.AdamWScheduleFree, schedulefree.SGDScheduleFree):
        p = _param()
        p.grad = torch.ones(1, dtype=torch.float64)
        with pytest.raises(Exception, match="not in train mode"):
            make([p]).step()
    for make in (pytorch_optimizer.ScheduleFreeAdamW, pytorch_optimizer.ScheduleFreeSGD):
        p = _param()
        p.grad = torch.ones(1, dtype=torch.float64)
        make([p]).step()  # their ports start in train mode
        assert p.item() != 0.5


def test_eval_moves_to_the_average_and_back():
    start = h.make_params([(5,), (2, 3)], torch.float64)
    grads = h.gradient_stream([(5,), (2, 3)], 40, torch.float64)

    def steps(opt, ps):
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()

    ours_p, theirs_p = [p.clone() for p in start], [p.clone() for p in start]
    opt = training(ScheduleFreeAdamW(ours_p, lr=0.05, weight_decay=0.1))
    ref = training(schedulefree.AdamWScheduleFree(theirs_p, lr=0.05, weight_decay=0.1))
    steps(opt, ours_p)
    steps(ref, theirs_p)
    y = [p.clone() for p in ours_p]
    opt.eval()
    ref.eval()
    x = [p.clone() for p in ours_p]
    assert h.relative_gap([ours_p], [theirs_p], start) <= 1e-12
    assert not any(torch.equal(a, b) for a, b in zip(x, y))
    opt.eval()  # already there
    assert all(torch.equal(a, b) for a, b in zip(ours_p, x))
    opt.train()
    assert h.relative_gap([ours_p], [y], start) <= 1e-12  # back to y, up to the rounding of two lerps
    opt.train()
    assert h.relative_gap([ours_p], [y], start) <= 1e-12


def test_authors_package_overwrites_the_gradient_ours_does_not():
    for ours_cls, theirs_cls in ((ScheduleFreeAdamW, schedulefree.AdamWScheduleFree),
                                 (ScheduleFreeSGD, schedulefree.SGDScheduleFree)):  # fmt: skip
        p, q = _param(), _param()
        ours, theirs = training(ours_cls([p], weight_decay=0.5)), training(theirs_cls([q], weight_decay=0.5))
        for x in (p, q):
            x.grad = torch.tensor([4.0], dtype=torch.float64)
        ours.step()
        theirs.step()
        assert p.grad.item() == 4.0
        assert q.grad.item() != 4.0  # normalised (AdamW) and weight decay added, in place


def test_groups_without_gradients_advance_the_schedule_as_in_the_authors_package():
    # the average's weights count the group's steps, whether its parameters had gradients or not
    def run(cls):
        a, b = _param(), _param(-1.0)
        opt = training(cls([{"params": [a]}, {"params": [b]}], lr=0.1))
        for t in range(8):
            a.grad = torch.tensor([1.0 + t], dtype=torch.float64)
            b.grad = torch.tensor([2.0 - t], dtype=torch.float64) if t >= 3 else None
            opt.step()
        opt.eval()
        return a.item(), b.item(), opt.param_groups[1]["k"]

    ours, theirs = run(ScheduleFreeSGD), run(schedulefree.SGDScheduleFree)
    assert ours[2] == theirs[2] == 8
    assert all(math.isclose(u, v, rel_tol=1e-14) for u, v in zip(ours[:2], theirs[:2]))


def test_authors_checkpoint_loads_into_ours():
    saved = h.reference_checkpoint_continues(
        lambda ps, **kw: training(schedulefree.AdamWScheduleFree(ps, **kw)),
        lambda ps, **kw: training(ScheduleFreeAdamW(ps, **kw)),
        lr=0.1,
        weight_decay=0.1,
        warmup_steps=3,
    )
    assert set(saved["state"][0]) == {"z", "exp_avg_sq"}
    assert saved["param_groups"][0]["k"] == 2 and saved["param_groups"][0]["train_mode"]


def _solve(opt_cls, problem, steps, **kw):
    """|x - x*| after ``steps`` training steps, measured at the average x (after ``eval()``)."""
    if problem == "quadratic":
        gen = torch.Generator().manual_seed(3)  # the standard suite's problem
        q, _ = torch.linalg.qr(torch.randn(6, 6, generator=gen, dtype=torch.float64))
        a = q @ torch.diag(torch.linspace(1.0, 10.0, 6, dtype=torch.float64)) @ q.T
        b = torch.randn(6, generator=gen, dtype=torch.float64)
        x = torch.zeros(6, dtype=torch.float64, requires_grad=True)
        target = torch.linalg.solve(a, b)
        loss_fn = lambda: 0.5 * x @ a @ x - b @ x  # noqa: E731
    else:
        x = torch.tensor([-1.5, 2.0], dtype=torch.float64, requires_grad=True)
        target = torch.ones(2, dtype=torch.float64)
        loss_fn = lambda: (1 - x[0]) ** 2 + 100 * (x[1] - x[0] ** 2) ** 2  # noqa: E731
    opt = training(opt_cls([x], **kw))
    for _ in range(steps):
        opt.zero_grad()
        loss_fn().backward()
        opt.step()
    opt.eval()
    return (x.detach() - target).norm().item()


# The standard suite's tolerances (1e-3 quadratic, 1e-2 Rosenbrock) with a 10x margin.  The
# uniform average keeps the first, far iterates for long: polynomial weights (r) forget them
# faster, which Rosenbrock's long valley needs.  Measured here: AdamW 3.1e-6 and 5.5e-4,
# SGD 1.0e-6 (quadratic, 4000 steps) and 7.1e-4 (Rosenbrock, 16000 steps).
ADAMW_SOLVER = dict(lr=0.01, betas=(0.9, 0.99), r=2.0)


@pytest.mark.parametrize(("problem", "tol"), [("quadratic", 1e-4), ("rosenbrock", 1e-3)])
def test_adamw_average_solves_the_standard_problems(problem, tol):
    assert _solve(ScheduleFreeAdamW, problem, 6000, **ADAMW_SOLVER) <= tol


def test_sgd_average_solves_the_quadratic():
    assert _solve(ScheduleFreeSGD, "quadratic", 4000, lr=0.05) <= 1e-4


@pytest.mark.slow
def test_sgd_average_solves_rosenbrock():
    # Rosenbrock's curvature (~2000 at the start) caps SGD's lr at ~1e-3: many steps
    assert _solve(ScheduleFreeSGD, "rosenbrock", 16000, lr=1.5e-3, momentum=0.7, r=3.0) <= 1e-3
