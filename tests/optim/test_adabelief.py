"""AdaBelief's first steps by hand, every option against the paper's equations, and the references' bugs."""

import math

import adabelief_pytorch
import pytorch_optimizer
import torch
import torch_optimizer

from optimlab.optim.adabelief import AdaBelief

from . import harness as h
from .cases_adabelief import PACKAGE


def _steps(opt_cls, grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def _equations(grads, lr, b1, b2, eps, wd, *, amsgrad, decouple, fixed_decay, rectify, degenerated_to_sgd):
    """Plain-Python AdaBelief (the paper's Algorithm 2; rectify: RAdam's step, N_sma >= 5)."""
    x, m, s, s_max = 0.5, 0.0, 0.0, 0.0
    out = []
    for t, g in enumerate(grads, 1):
        if decouple:
            x *= 1 - (wd if fixed_decay else lr * wd)
        else:
            g = g + wd * x
        m = b1 * m + (1 - b1) * g
        s = b2 * s + (1 - b2) * (g - m) ** 2 + eps
        s_max = max(s_max, s)
        s_hat = s_max if amsgrad else s
        if not rectify:
            x -= lr / (1 - b1**t) * m / (math.sqrt(s_hat / (1 - b2**t)) + eps)
        else:
            rho_inf = 2 / (1 - b2) - 1
            rho = rho_inf - 2 * t * b2**t / (1 - b2**t)
            if rho >= 5:
                r = math.sqrt((rho - 4) * (rho - 2) * rho_inf / ((rho_inf - 4) * (rho_inf - 2) * rho))
                x -= lr * r * math.sqrt(1 - b2**t) / (1 - b1**t) * m / (math.sqrt(s_hat) + eps)
            elif degenerated_to_sgd:
                x -= lr / (1 - b1**t) * m
        out.append(x)
    return out


def test_first_step_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-16
    # rectified (the default): step 1 is intractable, so the SGD step lr * m_1/(1-b1) = lr * g
    assert _steps(AdaBelief, [4.0], lr=lr) == [0.5 - lr * 4.0]
    (x1,) = _steps(AdaBelief, [4.0], lr=lr, rectify=False)
    m = (1 - b1) * 4.0
    s = (1 - b2) * (4.0 - m) ** 2 + eps
    assert math.isclose(x1, 0.5 - lr / (1 - b1) * m / (math.sqrt(s / (1 - b2)) + eps), rel_tol=1e-15)
    assert math.isclose(x1, 0.5 - lr / 0.9, rel_tol=1e-14)  # |g - m_1| = 0.9 |g|


def test_every_option_follows_the_equations():
    grads = [float(g) for (g,) in h.gradient_stream([()], 300, torch.float64)]
    grads = [g * (10.0 if i < 8 else 0.1) for i, g in enumerate(grads)]  # early large gradients make the max matter
    lr, b1, b2, eps, wd = 0.01, 0.9, 0.99, 1e-12, 0.1
    for amsgrad in (False, True):
        for rectify in (False, True):
            for decouple, fixed in ((False, False), (True, False), (True, True)):
                for sgd in (False, True) if rectify else (True,):
                    opts = dict(amsgrad=amsgrad, rectify=rectify, fixed_decay=fixed, degenerated_to_sgd=sgd)
                    kw = dict(lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd, weight_decouple=decouple)
                    ours = _steps(AdaBelief, grads, **kw, **opts)
                    ref = _equations(grads, lr, b1, b2, eps, wd, decouple=decouple, **opts)
                    assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1e-12, (decouple, opts)


def test_packages_take_the_bias_corrected_first_step_and_torch_optimizer_does_not():
    grads = [1.0] * 7
    opts = dict(amsgrad=False, decouple=True, fixed_decay=False, rectify=True, degenerated_to_sgd=True)
    paper = _equations(grads, 0.1, 0.9, 0.999, 1e-16, 0.0, **opts)
    ours = _steps(AdaBelief, grads, lr=0.1)
    package = _steps(PACKAGE, grads, lr=0.1)
    pyopt = _steps(pytorch_optimizer.AdaBelief, grads, lr=0.1, rectify=True)
    for run in (ours, package, pyopt):
        assert max(abs(a - b) for a, b in zip(run, paper)) <= 1e-15
    # torch_optimizer.AdaBelief(rectify=True) takes lr * m_t in the SGD steps, without 1/(1-b1^t)
    deviant = _steps(torch_optimizer.AdaBelief, grads, lr=0.1, rectify=True, eps=1e-16)
    assert math.isclose((deviant[0] - 0.5) / (paper[0] - 0.5), 1 - 0.9, rel_tol=1e-12)


def test_package_ignores_its_amsgrad_max_when_rectifying():
    grads = [float(g) for (g,) in h.gradient_stream([()], 60, torch.float64)]
    grads = [g * (10.0 if i < 8 else 0.1) for i, g in enumerate(grads)]
    kw = dict(lr=0.01, betas=(0.9, 0.9))  # a short memory, so that the max stays far above s_t
    with_max = _steps(PACKAGE, grads, amsgrad=True, **kw)
    assert with_max == _steps(PACKAGE, grads, **kw)  # its AMSGrad changes nothing
    ours = _steps(AdaBelief, grads, amsgrad=True, **kw)
    pyopt = _steps(pytorch_optimizer.AdaBelief, grads, rectify=True, ams_bound=True, **kw)
    assert max(abs(a - b) for a, b in zip(ours, pyopt)) <= 1e-15
    assert abs(ours[-1] - with_max[-1]) > 1e-2


def test_state_layout_and_silence(capsys):
    p = torch.zeros(2)
    opt = AdaBelief([p], amsgrad=True, print_change_log=True)
    p.grad = torch.ones(2)
    opt.step()
    assert set(opt.state[p]) == {"step", "exp_avg", "exp_avg_var", "max_exp_avg_var"}
    assert capsys.readouterr().out == ""


def test_package_state_dict_loads_into_ours():
    p, q = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    theirs, ours = adabelief_pytorch.AdaBelief([p], lr=0.1, print_change_log=False), AdaBelief([q], lr=0.1)
    for g in ([1.0, -2.0, 3.0], [0.5, 0.5, -1.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        theirs.step()
    state = h.roundtrip(theirs.state_dict())
    for group in state["param_groups"]:
        del group["buffer"]  # the package's step-size cache
    for s in state["state"].values():
        s["step"] = torch.tensor(float(s["step"]))
    ours.load_state_dict(state)
    q.copy_(p)
    for _ in range(6):
        for x in (p, q):
            x.grad = torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64)
        theirs.step()
        ours.step()
    assert torch.allclose(p, q, rtol=0, atol=1e-15)
