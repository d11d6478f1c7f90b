"""NAdam's first steps by hand, its equations over many steps (where torch's float32 mu_product
falls short of float64), torch checkpoints, and mu_product as state under vmap."""

import math

import pytest
import torch

from optimlab.optim.nadam import NAdam, nadam

from . import harness as h
from .cases_nadam import TorchNAdam


def _steps(opt_cls, grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def _equations(grads, lr, b1=0.9, b2=0.999, eps=1e-8, wd=0.0, psi=4e-3, decoupled=False):
    """Plain-Python NAdam (the module docstring's equations)."""
    x, m, v, prod = 0.5, 0.0, 0.0, 1.0
    out = []
    for t, g in enumerate(grads, 1):
        if decoupled:
            x *= 1 - lr * wd
        else:
            g += wd * x
        mu = b1 * (1 - 0.5 * 0.96 ** (t * psi))
        mu_next = b1 * (1 - 0.5 * 0.96 ** ((t + 1) * psi))
        prod *= mu
        m = b1 * m + (1 - b1) * g
        v = b2 * v + (1 - b2) * g * g
        denom = math.sqrt(v / (1 - b2**t)) + eps
        x -= lr * (1 - mu) / (1 - prod) * g / denom + lr * mu_next / (1 - prod * mu_next) * m / denom
        out.append(x)
    return out


def test_first_step_by_hand():
    # mu_1 = 0.9 (1 - 0.96^0.004 / 2), Pi_1 = mu_1; m_1 = 0.1 g and sqrt(v_1 / (1-b2)) = |g|
    lr, g = 0.1, 4.0
    (x1,) = _steps(NAdam, [g], lr=lr)
    mu1 = 0.9 * (1 - 0.5 * 0.96**0.004)
    mu2 = 0.9 * (1 - 0.5 * 0.96**0.008)
    step = lr * (1 - mu1) / (1 - mu1) * g / (4.0 + 1e-8) + lr * mu2 / (1 - mu1 * mu2) * 0.1 * g / (4.0 + 1e-8)
    assert math.isclose(x1, 0.5 - step, rel_tol=1e-15)


@pytest.mark.parametrize(
    "kw, eq",
    [
        (dict(), dict()),
        (dict(weight_decay=0.1), dict(wd=0.1)),
        (dict(weight_decay=0.1, decoupled_weight_decay=True), dict(wd=0.1, decoupled=True)),
        (dict(betas=(0.8, 0.99), eps=1e-3, momentum_decay=0.04), dict(b1=0.8, b2=0.99, eps=1e-3, psi=0.04)),
    ],
    ids=["plain", "l2", "decoupled", "betas-eps-momentum-decay"],
)
def test_steps_follow_the_equations(kw, eq):
    grads = [float(g) for (g,) in h.gradient_stream([()], 100, torch.float64)]
    ours = _steps(NAdam, grads, lr=0.01, **kw)
    ref = _equations(grads, 0.01, **eq)
    assert math.isclose(ours[0], ref[0], rel_tol=1e-15)
    disp = max(abs(x - 0.5) for x in ref)
    assert max(abs(a - b) for a, b in zip(ours, ref)) <= 1e-13 * disp


def test_torch_float32_mu_product_falls_short_of_float64():
    # A fresh torch.optim.NAdam keeps mu_product in the default dtype (float32) for float64
    # parameters: ~1e-9 of the displacement, the float64 parity tolerance.  Its own code run
    # with float64 as the default dtype (TorchNAdam, the parity reference) agrees with ours.
    grads = [float(g) for (g,) in h.gradient_stream([()], 100, torch.float64)]
    ref = _equations(grads, 0.01)
    disp = max(abs(x - 0.5) for x in ref)

    def gap(cls):
        return max(abs(a - b) for a, b in zip(_steps(cls, grads, lr=0.01), ref)) / disp

    p = torch.zeros(1, dtype=torch.float64)
    fresh = torch.optim.NAdam([p])
    p.grad = torch.ones(1, dtype=torch.float64)
    fresh.step()
    assert fresh.state[p]["mu_product"].dtype == torch.float32
    assert gap(torch.optim.NAdam) > 1e-10
    assert gap(NAdam) <= 1e-13 and gap(TorchNAdam) <= 1e-13


def test_torch_state_dict_loads_into_ours():
    kw = dict(lr=0.1, weight_decay=0.1)
    p = torch.ones(3, dtype=torch.float64)
    theirs = torch.optim.NAdam([p], **kw)
    for g in ([1.0, -2.0, 3.0], [0.5, 0.5, -1.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        theirs.step()
    saved = h.roundtrip(theirs.state_dict())  # a copy: state_dict() shares tensors
    assert saved["state"][0]["mu_product"].dtype == torch.float32
    # Loading casts mu_product to the parameter's dtype, in torch as in ours: both continue
    # from the same state, so they must agree to the last bits.
    q, r = p.clone(), p.clone()
    ours, reloaded = NAdam([q], **kw), torch.optim.NAdam([r], **kw)
    ours.load_state_dict(saved)
    reloaded.load_state_dict(h.roundtrip(saved))  # its own copy: loading keeps float64 tensors as they are
    assert ours.state[q]["mu_product"].dtype == torch.float64
    assert ours.state[q]["mu_product"].item() == saved["state"][0]["mu_product"].item()
    for g in ([2.0, 1.0, -1.0], [-0.5, 3.0, 1.0], [1.0, 1.0, 1.0]):
        for x in (q, r):
            x.grad = torch.tensor(g, dtype=torch.float64)
        ours.step()
        reloaded.step()
    assert torch.allclose(q, r, rtol=0, atol=1e-15)
    assert torch.equal(ours.state[q]["mu_product"], reloaded.state[r]["mu_product"])


def test_mu_product_is_state_under_vmap_with_tensor_hyperparameters():
    # The sweep's call: state from init_state under vmap, one configuration per row, swept
    # hyperparameters as tensors; mu_product is a per-row scalar the rule carries forward.
    start = h.make_params([(3, 2)], torch.float64)[0]
    grads = [g for (g,) in h.gradient_stream([(2,)], 30, torch.float64)]
    hp = dict(
        lr=torch.tensor([0.01, 0.05, 0.02], dtype=torch.float64),
        beta1=torch.tensor([0.9, 0.5, 0.0], dtype=torch.float64),
        momentum_decay=torch.tensor([4e-3, 0.0, 0.1], dtype=torch.float64),
    )
    probe = NAdam([torch.zeros(2)])
    p = start.clone()
    state = torch.vmap(lambda q: probe.init_state(q, probe.param_groups[0]))(p)
    assert state["mu_product"].shape == (3,)
    for t, g in enumerate(grads, 1):
        p, state = torch.vmap(lambda p_, s_, h_: nadam(p_, g, s_, float(t), beta2=0.999, eps=1e-8, **h_))(p, state, hp)
    for row in range(3):
        q = start[row].clone()
        lr, beta1, decay = (hp[k][row].item() for k in ("lr", "beta1", "momentum_decay"))
        opt = NAdam([q], lr=lr, betas=(beta1, 0.999), momentum_decay=decay)
        for g in grads:
            q.grad = g.clone()
            opt.step()
        assert torch.allclose(p[row], q, rtol=0, atol=1e-15), row
        assert torch.allclose(state["mu_product"][row], opt.state[q]["mu_product"], rtol=1e-15, atol=0)


def test_mu_product_on_the_foreach_path():
    # TensorList of scalar tensors beside the parameters' TensorLists: one mu_product per parameter.
    shapes = [(4,), (2, 3), ()]
    grads = h.gradient_stream(shapes, 5, torch.float64)
    opts = {}
    for foreach in (False, True):
        ps = h.make_params(shapes, torch.float64)
        opts[foreach] = (NAdam(ps, lr=0.01, foreach=foreach), ps)
        for gs in grads:
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opts[foreach][0].step()
    (single, ps1), (multi, ps2) = opts[False], opts[True]
    for a, b in zip(ps1, ps2):
        assert multi.state[b]["mu_product"].shape == ()
        assert torch.equal(multi.state[b]["mu_product"], single.state[a]["mu_product"])
        assert torch.allclose(a, b, rtol=0, atol=1e-15)
