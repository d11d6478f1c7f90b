"""Adam's first steps by hand, and its two options that no library reference has."""

import math

import torch

from optimlab.optim import Adam, AdamW

from . import harness as h


def _steps(opt_cls, grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def test_first_step_moves_by_lr_times_sign():
    # m1 = (1-b1) g, v1 = (1-b2) g^2: after bias correction the step is lr * g / (|g| + eps)
    (x1,) = _steps(Adam, [4.0], lr=0.1)
    assert x1 == 0.5 - 0.1 * 4.0 / (4.0 + 1e-8)


def test_two_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.999, 1e-8
    x1, x2 = _steps(Adam, [4.0, -2.0], lr=lr)
    m = (1 - b1) * 4.0
    v = (1 - b2) * 16.0
    m = b1 * m + (1 - b1) * -2.0
    v = b2 * v + (1 - b2) * 4.0
    expected = x1 - lr / (1 - b1**2) * m / (math.sqrt(v) / math.sqrt(1 - b2**2) + eps)
    assert math.isclose(x2, expected, rel_tol=1e-15)


def test_adamw_decays_the_weight_before_the_adam_step():
    (x1,) = _steps(AdamW, [4.0], lr=0.1, weight_decay=0.5)
    assert math.isclose(x1, 0.5 * (1 - 0.1 * 0.5) - 0.1 * 4.0 / (4.0 + 1e-8), rel_tol=1e-15)


def _paper_adam(grads, lr, b1, b2, eps, inside, corrected_max):
    """Plain-Python Adam/AMSGrad from the equations, for the two options torch lacks."""
    x, m, v, vmax = 0.5, 0.0, 0.0, 0.0
    out = []
    for t, g in enumerate(grads, 1):
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        if corrected_max is None:
            v_hat = v / (1 - b2**t)
        elif corrected_max:
            vmax = max(vmax, v / (1 - b2**t))
            v_hat = vmax
        else:
            vmax = max(vmax, v)
            v_hat = vmax / (1 - b2**t)
        denom = math.sqrt(v_hat + eps) if inside else math.sqrt(v_hat) + eps
        x -= lr / (1 - b1**t) * m / denom
        out.append(x)
    return out


def test_options_follow_their_equations():
    grads = [float(g) for g in h.gradient_stream([()], 300, torch.float64)[0:300] for g in g]
    grads = [g * (10.0 if i < 5 else 0.1) for i, g in enumerate(grads)]  # early large gradients make the max matter
    for kw, inside, corrected in [
        (dict(eps_inside_sqrt=True, eps=1e-3), True, None),
        (dict(amsgrad=True), False, False),
        (dict(amsgrad=True, amsgrad_corrected_max=True), False, True),
        (dict(amsgrad=True, amsgrad_corrected_max=True, eps_inside_sqrt=True, eps=1e-3), True, True),
    ]:
        eps = kw.get("eps", 1e-8)
        ours = _steps(Adam, grads, lr=0.01, betas=(0.9, 0.99), **kw)
        ref = _paper_adam(grads, 0.01, 0.9, 0.99, eps, inside, corrected)
        assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1e-12, kw


def test_corrected_and_raw_max_differ():
    grads = [10.0] + [0.1] * 20
    raw = _steps(Adam, grads, lr=0.01, amsgrad=True)
    corrected = _steps(Adam, grads, lr=0.01, amsgrad=True, amsgrad_corrected_max=True)
    assert abs(raw[-1] - corrected[-1]) > 1e-4


def test_torch_state_dict_loads_into_ours():
    h.reference_checkpoint_continues(torch.optim.Adam, Adam, lr=0.1, amsgrad=True)
