"""ADOPT: first steps by hand, clipping, the first release's algorithm, and where pytorch_optimizer differs."""

import math
import warnings

import adopt
import pytorch_optimizer
import torch

from optimlab.optim import ADOPT

from . import harness as h


class OriginalADOPT(torch.optim.Optimizer):
    """The first release of the authors' ADOPT (iShohei220/adopt, initial commit), as equations in plain torch.

    Per parameter, with t counted from 1: weight decay first (decoupled, theta -= lr wd theta, or
    added to the gradient),
    then at t = 1 only v = g^2; after that n = g / max(sqrt(v), eps), m = n at t = 2 and
    beta1 m + (1 - beta1) n later, theta -= lr m, v = beta2 v + (1 - beta2) g^2.  No clipping.
    """

    def __init__(self, params, lr=1e-3, betas=(0.9, 0.9999), eps=1e-6, weight_decay=0.0, decoupled=False):
        super().__init__(params, dict(lr=lr, betas=betas, eps=eps, weight_decay=weight_decay, decoupled=decoupled))

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            lr, (beta1, beta2), eps, wd = group["lr"], group["betas"], group["eps"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self.state[p]
                if not state:
                    state.update(step=0, exp_avg=torch.zeros_like(p), exp_avg_sq=torch.zeros_like(p))
                state["step"] += 1
                t, m, v, g = state["step"], state["exp_avg"], state["exp_avg_sq"], p.grad
                if wd != 0:
                    if group["decoupled"]:
                        p.sub_(lr * wd * p)
                    else:
                        g = g + wd * p
                if t == 1:
                    v.copy_(g * g)
                    continue
                n = g / v.sqrt().clamp(min=eps)
                m.copy_(n if t == 2 else beta1 * m + (1 - beta1) * n)
                p.sub_(lr * m)
                v.mul_(beta2).add_((1 - beta2) * g * g)


class AuthorsADOPT(adopt.ADOPT):
    """``torch-adopt``'s ADOPT as it is, without the deprecation warnings its step gives on torch 2.13 at every call."""

    def step(self, closure=None):
        with warnings.catch_warnings():
            warnings.filterwarnings("ignore", "`torch._utils.is_compiling` is deprecated")
            warnings.filterwarnings("ignore", "Use _accelerator_graph_capture_health_check instead")
            return super().step(closure)


def _steps(opt_cls, grads, **kw):
    p = torch.tensor([0.5], dtype=torch.float64)
    opt = opt_cls([p], **kw)
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=torch.float64)
        opt.step()
        out.append(p.item())
    return out


def test_first_steps_by_hand():
    lr, b1, b2, eps = 0.1, 0.9, 0.9999, 1e-6
    x1, x2, x3 = _steps(ADOPT, [4.0, -2.0, 1.0], lr=lr)
    assert x1 == 0.5  # the first gradient only initialises v = 16
    v = 16.0
    n = -2.0 / math.sqrt(v)  # -0.5, inside the clip (t - 1)^(1/4) = 1
    m = (1 - b1) * n
    assert math.isclose(x2, 0.5 - lr * m, rel_tol=1e-15)
    v = b2 * v + (1 - b2) * 4.0
    n = 1.0 / max(math.sqrt(v), eps)  # v does not contain this step's gradient
    m = b1 * m + (1 - b1) * n
    assert math.isclose(x3, x2 - lr * m, rel_tol=1e-15)


def test_normalised_gradient_is_clipped_at_the_number_of_updates_to_the_quarter():
    # a tiny first gradient, then a large one: n = 10 / 1e-3 = 1e4 is clipped to 1^(1/4) = 1,
    # then to 2^(1/4) at the next update
    lr, b1 = 0.1, 0.9
    _, x2, x3 = _steps(ADOPT, [1e-3, 10.0, 10.0], lr=lr)
    assert math.isclose(x2, 0.5 - lr * (1 - b1) * 1.0, rel_tol=1e-15)
    m = b1 * (1 - b1) + (1 - b1) * 2**0.25
    assert math.isclose(x3, x2 - lr * m, rel_tol=1e-15)
    unclipped = _steps(ADOPT, [1e-3, 10.0], lr=lr, clip_lambda=None)
    assert math.isclose(unclipped[1], 0.5 - lr * (1 - b1) * 1e4, rel_tol=1e-12)


def test_pytorch_optimizer_clips_one_update_later_than_the_authors():
    grads = [1e-3, 10.0]
    ours = _steps(ADOPT, grads, lr=0.1)
    authors = _steps(AuthorsADOPT, grads, lr=0.1)
    theirs = _steps(pytorch_optimizer.ADOPT, grads, lr=0.1)
    assert ours == authors
    assert math.isclose(0.5 - ours[1], 0.1 * 0.1 * 1.0, rel_tol=1e-12)
    assert math.isclose(0.5 - theirs[1], 0.1 * 0.1 * 2**0.25, rel_tol=1e-12)  # clip_lambda(t), not (t - 1)


def test_pytorch_optimizer_decays_the_weight_at_the_first_step_where_the_authors_do_not():
    kw = dict(lr=0.1, weight_decay=0.5)
    (ours,) = _steps(ADOPT, [4.0], decouple=True, **kw)
    (authors,) = _steps(AuthorsADOPT, [4.0], decouple=True, **kw)
    (theirs,) = _steps(pytorch_optimizer.ADOPT, [4.0], weight_decouple=True, **kw)
    assert ours == authors == 0.5
    assert theirs == 0.5 * (1 - 0.1 * 0.5)


def test_original_release_by_hand():
    lr, wd = 0.1, 0.5
    x1, x2 = _steps(ADOPT, [4.0, -2.0], lr=lr, weight_decay=wd, decouple=True, clip_lambda=None, original=True)
    assert x1 == 0.5 * (1 - lr * wd)  # decoupled decay at the first step too
    assert math.isclose(x2, x1 * (1 - lr * wd) - lr * (-2.0 / 4.0), rel_tol=1e-15)  # m_2 = n_2, whole


def test_no_clipping_is_not_the_original_release():
    # the authors' README: clip_lambda=None reproduces the original; it does not, in the first
    # momentum (the current code starts m from 0 with weight 1 - beta1)
    grads = [4.0, -2.0, 1.0]
    unclipped = _steps(ADOPT, grads, lr=0.1, clip_lambda=None)
    original = _steps(ADOPT, grads, lr=0.1, clip_lambda=None, original=True)
    assert unclipped == _steps(AuthorsADOPT, grads, lr=0.1, clip_lambda=None)
    assert original == _steps(OriginalADOPT, grads, lr=0.1)
    assert math.isclose(0.5 - unclipped[1], 0.1 * (1 - 0.9) * (0.5 - original[1]) / 0.1, rel_tol=1e-12)


def test_authors_checkpoint_loads_into_ours():
    saved = h.reference_checkpoint_continues(AuthorsADOPT, ADOPT, lr=0.1, weight_decay=0.1, decouple=True)
    assert set(saved["state"][0]) == {"step", "exp_avg", "exp_avg_sq"}
