"""SGD's first steps by hand (plain, heavy ball, Nesterov), tensor hyperparameters under vmap, and
torch.optim.SGD checkpoints (which count no steps)."""

import math

import pytest
import torch

from optimlab.optim.sgd import SGD, sgd

from . import harness as h


def _steps(grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = SGD([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out, opt.state[p]


def test_plain_step_by_hand():
    (x1, x2), state = _steps([4.0, -2.0], lr=0.1, weight_decay=0.5)
    assert x1 == 0.5 - 0.1 * (4.0 + 0.5 * 0.5)
    assert x2 == x1 - 0.1 * (-2.0 + 0.5 * x1)
    assert set(state) == {"step"}  # momentum = 0 keeps no buffer


def test_heavy_ball_starts_undamped_then_damps():
    lr, mu, tau = 0.1, 0.9, 0.5
    (x1, x2, x3), state = _steps([4.0, -2.0, 1.0], lr=lr, momentum=mu, dampening=tau)
    b = 4.0  # b_1 = g_1: the first gradient is not damped
    assert x1 == 0.5 - lr * b
    b = mu * b + (1 - tau) * -2.0
    assert math.isclose(x2, x1 - lr * b, rel_tol=1e-15)
    b = mu * b + (1 - tau) * 1.0
    assert math.isclose(x3, x2 - lr * b, rel_tol=1e-15)
    assert state["momentum_buffer"].item() == pytest.approx(b, rel=1e-15)


def test_nesterov_by_hand():
    lr, mu, wd = 0.1, 0.9, 0.2
    (x1, x2), _ = _steps([4.0, -2.0], lr=lr, momentum=mu, nesterov=True, weight_decay=wd)
    g = 4.0 + wd * 0.5
    b = g
    assert math.isclose(x1, 0.5 - lr * (g + mu * b), rel_tol=1e-15)
    g = -2.0 + wd * x1
    b = mu * b + g
    assert math.isclose(x2, x1 - lr * (g + mu * b), rel_tol=1e-15)


def test_rule_under_vmap_with_tensor_step_and_hyperparameters():
    # The sweep's call: one configuration per row, every swept value a tensor, step a tensor.
    # momentum = 0 must ignore dampening as torch does (it keeps no buffer at all).
    momenta = [0.0, 0.5, 0.9]
    start = h.make_params([(3, 2)], torch.float64)[0]
    grads = [g for (g,) in h.gradient_stream([(2,)], 12, torch.float64)]
    probe = SGD([torch.zeros(2)], momentum=0.9)
    p = start.clone()
    state = torch.vmap(lambda q: probe.init_state(q, probe.param_groups[0]))(p)
    hp = {k: torch.tensor(v, dtype=torch.float64) for k, v in (("lr", [0.1, 0.05, 0.02]), ("momentum", momenta))}
    for t, g in enumerate(grads, 1):
        step = torch.tensor(float(t), dtype=torch.float64)
        p, state = torch.vmap(lambda p_, s_, h_: sgd(p_, g, s_, step, dampening=0.3, **h_))(p, state, hp)
    for row, (momentum, lr) in enumerate(zip(momenta, hp["lr"].tolist())):
        q = start[row].clone()
        opt = SGD([q], lr=lr, momentum=momentum, dampening=0.3)
        for g in grads:
            q.grad = g.clone()
            opt.step()
        assert torch.allclose(p[row], q, rtol=0, atol=1e-15), momentum


@pytest.mark.parametrize("nesterov", [False, True])
def test_torch_state_dict_loads_into_ours(nesterov):
    saved = h.reference_checkpoint_continues(torch.optim.SGD, SGD, lr=0.1, momentum=0.9, nesterov=nesterov)
    # torch counts no steps; a buffer that restarted at g (step 1) would have moved ours by lr * g
    assert set(saved["state"][0]) == {"momentum_buffer"}

