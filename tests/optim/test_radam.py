"""RAdam's first steps by hand, the authors' variant against their equations, and the references' bugs."""

import math

import pytest
import pytorch_optimizer
import torch
import torch_optimizer

from optimlab.optim.radam import RAdam, radam

from . import harness as h
from .cases_radam import AUTHORS

# rho_6 is exactly 5.0 for this beta2: the one place where "> 5" and ">= 5" part ways
BETA2_RHO6_IS_5 = 0.8397685748659791


def _steps(opt_cls, grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def _rho(b2, t):
    rho_inf = 2 / (1 - b2) - 1
    return rho_inf, rho_inf - 2 * t * b2**t / (1 - b2**t)


def _equations(grads, lr, b1, b2, eps, wd, *, decoupled, sgd, inclusive):
    """Plain-Python RAdam: torch.optim.RAdam's equations, and the authors' radam.py with
    (decoupled, sgd=degenerated_to_sgd, inclusive: N_sma >= 5)."""
    x, m, v = 0.5, 0.0, 0.0
    out = []
    for t, g in enumerate(grads, 1):
        if not decoupled:
            g = g + wd * x
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        rho_inf, rho = _rho(b2, t)
        if rho >= 5 if inclusive else rho > 5:
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            step = lr * r * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(v) + eps)
        elif sgd:
            step = lr / (1 - b1**t) * m
        else:
            out.append(x)  # no step, no decay
            continue
        if decoupled:
            x *= 1 - lr * wd
        x -= step
        out.append(x)
    return out


def _grads(n):
    return [float(g) for (g,) in h.gradient_stream([()], n, torch.float64)]


def test_first_six_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    grads = [4.0, -2.0, 1.0, 3.0, 0.5, -1.0]
    xs = _steps(RAdam, grads, lr=lr)
    x, m, v = 0.5, 0.0, 0.0
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if t < 6:  # rho_t < 5: the SGD-with-momentum step
            assert _rho(b2, t)[1] < 5
            x -= lr * m / (1 - b1**t)
        else:
            rho_inf, rho = _rho(b2, t)
            r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
            x -= lr * r / (1 - b1**t) * m / (math.sqrt(v / (1 - b2**t)) + eps / math.sqrt(1 - b2**t))
        assert math.isclose(xs[t - 1], x, rel_tol=1e-15), t


@pytest.mark.parametrize("sgd", [False, True])
def test_pytorch_optimizer_computes_the_authors_equations(sgd):
    grads = _grads(100)
    ref = _steps(pytorch_optimizer.RAdam, grads, lr=0.01, weight_decay=0.1, degenerated_to_sgd=sgd)
    eq = _equations(grads, 0.01, 0.9, 0.999, 1e-8, 0.1, decoupled=True, sgd=sgd, inclusive=True)
    assert max(abs(a - b) for a, b in zip(ref, eq)) <= 1e-13


@pytest.mark.parametrize(("dtype", "tol"), [(torch.float64, 1e-9), (torch.float32, 1e-5)], ids=["f64", "f32"])
@pytest.mark.parametrize("schedule", [False, True])
def test_authors_default_matches_pytorch_optimizer(dtype, tol, schedule):
    # the standard suite cannot run it (it never moves within the 2 steps of its zero-element test)
    start = h.make_params(h.SHAPES, dtype)
    grads = h.gradient_stream(h.SHAPES, 200, dtype)
    ours = RAdam, dict(weight_decay=0.1, **AUTHORS)
    ref = pytorch_optimizer.RAdam, dict(weight_decay=0.1)
    ours, ref = (
        h.run(lambda p: cls(p, lr=0.01, **kw), [p.clone() for p in start], grads, schedule=schedule)
        for cls, kw in (ours, ref)
    )
    assert h.relative_gap(ours, ref, start) <= tol


@pytest.mark.parametrize("foreach", [False, True])
def test_options_follow_their_equations(foreach):
    grads = _grads(300)
    for decoupled in (False, True):
        for sgd in (False, True):
            for inclusive in (False, True):
                kw = dict(decoupled_weight_decay=decoupled, degenerated_to_sgd=sgd, inclusive_threshold=inclusive)
                ours = _steps(RAdam, grads, lr=0.01, betas=(0.9, 0.99), weight_decay=0.1, foreach=foreach, **kw)
                eq = _equations(grads, 0.01, 0.9, 0.99, 1e-8, 0.1, decoupled=decoupled, sgd=sgd, inclusive=inclusive)
                assert max(abs(a - b) for a, b in zip(ours, eq)) <= 1e-12, kw


def test_threshold_torch_vs_authors():
    assert _rho(BETA2_RHO6_IS_5, 6)[1] == 5.0
    grads, betas = _grads(6), (0.9, BETA2_RHO6_IS_5)
    strict = _steps(RAdam, grads, lr=0.01, betas=betas)
    inclusive = _steps(RAdam, grads, lr=0.01, betas=betas, inclusive_threshold=True)
    assert strict == _steps(torch.optim.RAdam, grads, lr=0.01, betas=betas)
    authors = _steps(pytorch_optimizer.RAdam, grads, lr=0.01, betas=betas, degenerated_to_sgd=True)
    assert max(abs(a - b) for a, b in zip(inclusive, authors)) <= 1e-15
    assert strict[:5] == inclusive[:5] and abs(strict[5] - inclusive[5]) > 1e-4


def test_intractable_branch_never_leaks_nan():
    # beta2 = 0.6 makes rho_inf = 4 (a zero denominator in r_t), beta2 < 2/3 keeps rho_t < 5 for good,
    # and 2 < rho_t < 4 makes the radicand negative: the chosen (SGD) step must stay finite, for
    # Python numbers and for tensors under vmap alike.
    betas2 = [0.0, 0.5, 0.6, 0.7, 0.999]
    p, g = torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([2.0, 3.0], dtype=torch.float64)
    state = {"exp_avg": torch.zeros(2, dtype=torch.float64), "exp_avg_sq": torch.zeros(2, dtype=torch.float64)}
    kw = dict(lr=0.1, beta1=0.9, eps=1e-8)
    for step in (1.0, 3.0, 8.0):
        rule = torch.vmap(lambda b2: radam(p, g, state, step, beta2=b2, **kw)[0])
        batched = rule(torch.tensor(betas2, dtype=torch.float64))
        for b2, row in zip(betas2, batched):
            python = radam(p, g, state, step, beta2=b2, **kw)[0]
            assert torch.isfinite(row).all() and torch.allclose(row, python, rtol=1e-15, atol=0), (b2, step)
        stepped = radam(p, g, state, torch.tensor(step, dtype=torch.float64), beta2=0.6, **kw)[0]
        assert torch.equal(stepped, radam(p, g, state, step, beta2=0.6, **kw)[0])


def test_torch_optimizer_uses_the_first_groups_lr_for_every_group():
    # torch_optimizer.RAdam caches lr inside the step size it shares between groups of equal betas
    a, b = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    ref = torch_optimizer.RAdam([{"params": [a]}, {"params": [b], "lr": 1.0}], lr=0.1)
    c, d = torch.zeros(1, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    ours = RAdam([{"params": [c]}, {"params": [d], "lr": 1.0}], lr=0.1, **{**AUTHORS, "degenerated_to_sgd": True})
    for _ in range(3):
        for x in (a, b, c, d):
            x.grad = torch.ones(1, dtype=torch.float64)
        ref.step()
        ours.step()
    assert math.isclose(d.item(), 10 * c.item(), rel_tol=1e-12)
    assert b.item() == a.item()  # the second group moved with the first group's lr


def test_pytorch_optimizer_ignores_coupled_weight_decay():
    grads = _grads(20)
    kw = dict(lr=0.1, weight_decouple=False, degenerated_to_sgd=True)
    decayed = _steps(pytorch_optimizer.RAdam, grads, weight_decay=0.5, **kw)
    assert decayed == _steps(pytorch_optimizer.RAdam, grads, **kw)
    assert _steps(RAdam, grads, lr=0.1, weight_decay=0.5) != _steps(RAdam, grads, lr=0.1)


def test_torch_state_dict_loads_into_ours():
    # six steps first: past the rectification threshold, so the loaded state is used
    before = ([1.0, -2.0, 3.0], [0.5, 0.5, -1.0], [1.0, 1.0, 1.0], [2.0, 0.0, 1.0], [1.0, 3.0, -2.0], [0.1, 0.2, 0.3])
    h.reference_checkpoint_continues(torch.optim.RAdam, RAdam, before=before, lr=0.1)
