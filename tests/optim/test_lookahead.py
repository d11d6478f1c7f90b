"""Lookahead's first cycles by hand, its sync rule under vmap, checkpoints in a fresh process, and
every place where a library or the authors' code departs from the paper (module docstring of
optimlab/optim/lookahead.py)."""

from __future__ import annotations

import math
import subprocess
import sys
from collections import OrderedDict
from pathlib import Path

import pytest
import pytorch_optimizer
import torch
import torch_optimizer

from optimlab.optim.adam import Adam
from optimlab.optim.lookahead import Lookahead, lookahead_sync

from . import harness as h
from .cases_lookahead import PaperLookahead

F64 = torch.float64


def _scalar_run(make, grads, x0=1.0):
    """Steps a 1-element parameter through ``grads``; returns the optimizer and the values after each step."""
    p = torch.tensor([x0], dtype=F64)
    opt = make([p])
    out = []
    for g in grads:
        p.grad = torch.tensor([g], dtype=F64)
        opt.step()
        out.append(p.item())
    return opt, p, out


def _close(xs, ys):
    return all(math.isclose(x, y, rel_tol=1e-15) for x, y in zip(xs, ys, strict=True))


# -- the equations by hand ---------------------------------------------------------------------
def test_two_cycles_by_hand():
    # plain SGD, lr 0.1: theta moves by -0.1 g; every second step phi += alpha (theta - phi), theta = phi
    for alpha in (0.5, 0.8):  # both sides of the two-sided interpolation
        opt, p, xs = _scalar_run(lambda ps: Lookahead(torch.optim.SGD(ps, lr=0.1), k=2, alpha=alpha), [1.0, 2.0, -1.0, 0.5])
        t1 = 1.0 - 0.1 * 1.0
        t2 = t1 - 0.1 * 2.0
        phi = 1.0 + alpha * (t2 - 1.0)
        t3 = phi + 0.1
        t4 = t3 - 0.1 * 0.5
        phi2 = phi + alpha * (t4 - phi)
        assert _close(xs, [t1, phi, t3, phi2])
        assert math.isclose(opt.state[p]["slow_param"].item(), phi2, rel_tol=1e-15)


def test_momentum_options_by_hand():
    # SGD with momentum 0.5 (torch: m_1 = g_1, m_t = 0.5 m_{t-1} + g_t), lr 0.1, k = 2, alpha = 0.5, g = 1
    theta2 = 1.0 - 0.1 * 1.0 - 0.1 * 1.5
    phi = 1.0 + 0.5 * (theta2 - 1.0)
    m_after_sync = {"none": 1.5, "reset": 0.0, "pullback": 0.5 * 1.5}  # pullback: 0 + alpha (m - 0)
    for mode, m in m_after_sync.items():
        opt, p, xs = _scalar_run(lambda ps: Lookahead(torch.optim.SGD(ps, lr=0.1, momentum=0.5), k=2, alpha=0.5, pullback_momentum=mode), [1.0] * 4)
        m3 = 0.5 * m + 1.0
        theta3 = phi - 0.1 * m3
        m4 = 0.5 * m3 + 1.0
        theta4 = theta3 - 0.1 * m4
        phi2 = phi + 0.5 * (theta4 - phi)
        assert _close(xs, [1.0 - 0.1, phi, theta3, phi2]), mode
        if mode == "pullback":
            # The second synchronisation still pulls back.  The authors' code keeps the buffer itself
            # as the slow momentum after the first one, which makes every later pullback a no-op
            # (the buffer would stay m4 = 1.6875).
            expected = m + 0.5 * (m4 - m)
            assert opt.optimizer.state[p]["momentum_buffer"].item() == expected != m4


@pytest.mark.parametrize("mode", ["reset", "pullback"])
def test_adam_first_moment_is_reset_or_pulled_back(mode):
    grads = [1.0, -2.0, 0.5]
    opt, p, _ = _scalar_run(lambda ps: Lookahead(Adam(ps, lr=0.1), k=3, alpha=0.25, pullback_momentum=mode), grads)
    m = 0.0
    for g in grads:
        m = 0.9 * m + 0.1 * g
    expected = 0.0 if mode == "reset" else 0.25 * m
    assert math.isclose(opt.optimizer.state[p]["exp_avg"].item(), expected, rel_tol=1e-15, abs_tol=0.0)
    if mode == "pullback":
        assert opt.state[p]["slow_momentum"].item() == opt.optimizer.state[p]["exp_avg"].item()


def test_k1_alpha1_is_the_inner_optimizer_bit_for_bit():
    start = h.make_params(h.SHAPES, F64)
    grads = h.gradient_stream(h.SHAPES, 100, F64)
    ours = h.run(lambda ps: Lookahead(Adam(ps, lr=0.01), k=1, alpha=1.0), [p.clone() for p in start], grads)
    alone = h.run(lambda ps: Adam(ps, lr=0.01), [p.clone() for p in start], grads)
    assert all(torch.equal(a, b) for xs, ys in zip(ours, alone) for a, b in zip(xs, ys))


def test_unmoved_parameter_is_left_bit_for_bit():
    # theta = phi: the synchronisation gives phi exactly, whatever alpha
    x = torch.randn(100, dtype=F64)
    for alpha in (0.1, 0.3, 0.7, 0.9):
        fast, slow = lookahead_sync(x, x.clone(), 5, k=5, alpha=alpha)
        assert torch.equal(fast, x) and torch.equal(slow, x)


def test_sync_rule_under_vmap_with_tensor_step_and_hyperparameters():
    gen = torch.Generator().manual_seed(0)
    fast, slow = torch.randn(5, 3, generator=gen, dtype=F64), torch.randn(5, 3, generator=gen, dtype=F64)
    step = torch.tensor([3.0, 4.0, 6.0, 8.0, 10.0], dtype=F64)
    k = torch.tensor([3.0, 3.0, 3.0, 4.0, 4.0], dtype=F64)
    alpha = torch.tensor([0.3, 0.5, 0.8, 1.0, 0.5], dtype=F64)
    new_fast, new_slow = torch.vmap(lambda f, s, t, kk, a: lookahead_sync(f, s, t, k=kk, alpha=a))(fast, slow, step, k, alpha)
    for i in range(5):
        f, s = lookahead_sync(fast[i], slow[i], int(step[i]), k=int(k[i]), alpha=alpha[i].item())
        assert torch.equal(new_fast[i], f) and torch.equal(new_slow[i], s)
    assert torch.equal(new_fast[1], fast[1]) and torch.equal(new_slow[1], slow[1])  # step 4, k 3: no sync
    assert torch.equal(new_fast[0], new_slow[0]) and not torch.equal(new_slow[0], slow[0])


# -- torch.optim behaviour ----------------------------------------------------------------------
def test_lr_scheduler_on_lookahead_sets_the_inner_lr_also_after_a_reload():
    p = torch.ones(2)
    opt = Lookahead(torch.optim.SGD([p], lr=1.0, momentum=0.9), k=2)
    sched = torch.optim.lr_scheduler.StepLR(opt, step_size=1, gamma=0.5)
    p.grad = torch.ones(2)
    opt.step()
    sched.step()
    assert opt.param_groups is opt.optimizer.param_groups and opt.optimizer.param_groups[0]["lr"] == 0.5
    opt.load_state_dict(h.roundtrip(opt.state_dict()))
    opt.step()
    sched.step()
    assert opt.optimizer.param_groups[0]["lr"] == 0.25


def test_slow_weights_are_the_initial_parameters_with_a_closure_and_added_groups():
    a, b = torch.tensor([1.0, 2.0], requires_grad=True), torch.tensor([3.0], requires_grad=True)
    opt = Lookahead(torch.optim.SGD([a], lr=0.1), k=3, alpha=0.5)

    def closure():
        opt.zero_grad()
        loss = (a * a).sum() + (b * b).sum()
        loss.backward()
        return loss

    opt.step(closure)  # the gradients only appear inside the inner step
    assert torch.equal(opt.state[a]["slow_param"], torch.tensor([1.0, 2.0]))
    opt.add_param_group({"params": [b]})
    assert b not in opt.state
    opt.step(closure)
    assert torch.equal(opt.state[b]["slow_param"], torch.tensor([3.0]))
    opt.step(closure)  # step 3 synchronises b too, from its value when it joined: 3 -> 2.4 -> 1.92 -> 2.46
    assert math.isclose(b.item(), 3.0 + 0.5 * (3.0 * 0.8 * 0.8 - 3.0), rel_tol=1e-6)


def test_a_gradless_parameter_is_still_synchronised():
    p, q = torch.zeros(1, dtype=F64), torch.zeros(1, dtype=F64)
    opt = Lookahead(torch.optim.SGD([p, q], lr=0.1), k=2, alpha=0.5)
    p.grad, q.grad = torch.ones(1, dtype=F64), torch.ones(1, dtype=F64)
    opt.step()
    q.grad = None  # q moved during the cycle but has no gradient at the synchronisation step
    opt.step()
    assert p.item() == q.item() * 2 == -0.1
    # pytorch-optimizer leaves q where it was: it synchronises only parameters with a gradient
    p, q = torch.zeros(1, dtype=F64), torch.zeros(1, dtype=F64)
    theirs = pytorch_optimizer.Lookahead(torch.optim.SGD([p, q], lr=0.1), k=2, alpha=0.5)
    p.grad, q.grad = torch.ones(1, dtype=F64), torch.ones(1, dtype=F64)
    theirs.step()
    q.grad = None
    theirs.step()
    assert p.item() == -0.1 and q.item() == -0.1


def test_pullback_needs_a_momentum_in_the_inner_state():
    p = torch.ones(2)
    opt = Lookahead(torch.optim.SGD([p], lr=0.1), k=1, pullback_momentum="reset")
    p.grad = torch.ones(2)
    with pytest.raises(RuntimeError, match=r"pullback_momentum='reset' needs .*'momentum_buffer', 'exp_avg'; SGD's has \[\]"):
        opt.step()


def test_invalid_optimizer_and_checkpoints_raise_a_clear_error():
    with pytest.raises(ValueError, match=r"Lookahead: invalid optimizer=\[.*\]: expected a torch.optim.Optimizer"):
        Lookahead([torch.zeros(1)])
    p = torch.ones(2)
    inner = torch.optim.SGD([p], lr=0.1)
    opt = Lookahead(inner)
    with pytest.raises(ValueError, match=r"no 'lookahead' entry.*lookahead.optimizer.load_state_dict"):
        opt.load_state_dict(inner.state_dict())
    saved = opt.state_dict()
    saved["lookahead"] = dict(saved["lookahead"], state={3: {"slow_param": torch.ones(2)}})
    with pytest.raises(ValueError, match=r"slow state for parameter indices \[3\], expected 0 to 0"):
        opt.load_state_dict(saved)
    saved["lookahead"] = dict(saved["lookahead"], k=0)
    with pytest.raises(ValueError, match=r"invalid k=0"):
        opt.load_state_dict(saved)


# -- checkpoints --------------------------------------------------------------------------------
RESUME_CONFIGS = {
    "SGD-pullback": ("torch.optim.SGD", dict(lr=0.05, momentum=0.9), dict(k=5, alpha=0.5, pullback_momentum="pullback")),
    # fast=False: the two processes must take the same path (the native one's sqrt is correctly rounded,
    # torch's is not, on a CPU-dependent share of inputs); the native path's resume is tested in test_fast_path
    "Adam": ("optimlab.optim.adam.Adam", dict(lr=0.01, fast=False), dict(k=4, alpha=0.8)),
    "torchAdam-reset": ("torch.optim.Adam", dict(lr=0.01), dict(k=3, alpha=0.5, pullback_momentum="reset")),
}

RESUME_SCRIPT = """
import importlib, sys, torch
from optimlab.optim.lookahead import Lookahead
for path in sys.argv[1:]:
    saved = torch.load(path, weights_only=True)
    module, name = saved["inner_class"].rsplit(".", 1)
    inner_cls = getattr(importlib.import_module(module), name)
    torch.manual_seed(123)  # a fresh model: its initial values are overwritten by the checkpoint
    model = torch.nn.Linear(4, 3, dtype=torch.float64)
    model.load_state_dict(saved["model"])
    opt = Lookahead(inner_cls(model.parameters(), **saved["inner"]), k=99, alpha=0.1)  # options come from the checkpoint
    opt.load_state_dict(saved["optimizer"])
    for x, y in zip(saved["xs"], saved["ys"]):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()
    torch.save(model.state_dict(), path + ".out")
"""


def _train(model, opt, xs, ys):
    for x, y in zip(xs, ys):
        opt.zero_grad()
        torch.nn.functional.mse_loss(model(x), y).backward()
        opt.step()


def test_resume_in_a_fresh_process_is_exact(tmp_path: Path):
    gen = torch.Generator().manual_seed(0)
    xs, ys = torch.randn(30, 8, 4, generator=gen, dtype=F64), torch.randn(30, 8, 3, generator=gen, dtype=F64)
    straight, paths = {}, []
    for config, (class_path, inner_kw, la_kw) in RESUME_CONFIGS.items():
        module, name = class_path.rsplit(".", 1)
        inner_cls = getattr(__import__(module, fromlist=[name]), name)

        def build():
            torch.manual_seed(0)
            model = torch.nn.Linear(4, 3, dtype=F64)
            return model, Lookahead(inner_cls(model.parameters(), **inner_kw), **la_kw)

        model, opt = build()
        _train(model, opt, xs, ys)
        straight[config] = model.state_dict()
        model, opt = build()
        _train(model, opt, xs[:13], ys[:13])  # 13 is mid-cycle for every k above
        paths.append(str(tmp_path / f"{config}.pt"))
        torch.save(dict(model=model.state_dict(), optimizer=opt.state_dict(), inner_class=class_path, inner=inner_kw, xs=xs[13:], ys=ys[13:]), paths[-1])
    # one fresh interpreter for all of them: starting one costs seconds
    subprocess.run([sys.executable, "-c", RESUME_SCRIPT, *paths], check=True, cwd=Path(__file__).resolve().parents[2])
    for config, path in zip(RESUME_CONFIGS, paths):
        resumed = torch.load(path + ".out", weights_only=True)
        assert all(torch.equal(resumed[key], straight[config][key]) for key in resumed), config


def _resumed_run(make, resume_at, reload, steps=23):
    """Run ``steps`` steps on a 2-vector, rebuilding the optimizer at ``resume_at`` with ``reload``."""
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(2, generator=gen, dtype=F64) for _ in range(steps)]
    p = torch.tensor([1.0, -2.0], dtype=F64)
    opt = make([p])
    for i, g in enumerate(grads):
        if i == resume_at:
            p = p.clone()
            opt = reload(opt, make([p]))
        p.grad = g.clone()
        opt.step()
    return p


def test_a_checkpoint_of_the_inner_optimizer_alone_loses_the_slow_weights():
    # The authors' state_dict() is the inner optimizer's: resuming from it restarts the slow weights
    # at the current fast weights and the step count at 0, and the run departs from the straight one.
    def make(ps):
        return Lookahead(torch.optim.SGD(ps, lr=0.1, momentum=0.9), k=5, alpha=0.5)

    def inner_only(old, new):
        new.optimizer.load_state_dict(h.roundtrip(old.optimizer.state_dict()))
        return new

    def full(old, new):
        new.load_state_dict(h.roundtrip(old.state_dict()))
        return new

    straight = _resumed_run(make, None, None)
    assert torch.equal(_resumed_run(make, 12, full), straight)
    assert (_resumed_run(make, 12, inner_only) - straight).abs().max() > 1e-2


def test_pytorch_optimizer_resumes_exactly():
    # contrary to the report that every PyTorch Lookahead loses its slow weights: 4.1.0 saves them
    def make(ps):
        return pytorch_optimizer.Lookahead(torch.optim.SGD(ps, lr=0.1, momentum=0.9), k=5, alpha=0.5)

    def reload(old, new):
        new.load_state_dict(h.roundtrip(old.state_dict()))
        return new

    assert torch.equal(_resumed_run(make, 12, reload), _resumed_run(make, None, None))


def _give_torch_hooks(theirs):
    """The attributes Optimizer.__init__ would have made; torch-optimizer's Lookahead lacks them.

    Its load_state_dict() makes torch patch the step method of its class, after which every
    instance needs them to step.
    """
    for name in ("step_pre", "step_post", "state_dict_pre", "state_dict_post", "load_state_dict_pre", "load_state_dict_post"):
        setattr(theirs, f"_optimizer_{name}_hooks", OrderedDict())
    return theirs


def test_torch_optimizer_cannot_save_and_its_reload_detaches_the_param_groups():
    p = torch.ones(2)
    theirs = torch_optimizer.Lookahead(torch.optim.SGD([p], lr=1.0), k=2)
    with pytest.raises(AttributeError, match="_optimizer_state_dict_pre_hooks"):
        theirs.state_dict()  # it never runs Optimizer.__init__, which creates the hooks torch 2.13 reads
    _give_torch_hooks(theirs)
    theirs.load_state_dict(h.roundtrip(theirs.state_dict()))
    sched = torch.optim.lr_scheduler.StepLR(theirs, step_size=1, gamma=0.5)
    p.grad = torch.ones(2)
    theirs.step()
    sched.step()
    assert theirs.param_groups[0]["lr"] == 0.5 and theirs.optimizer.param_groups[0]["lr"] == 1.0


def test_torch_optimizer_synchronises_one_step_out_of_phase():
    # torch-optimizer synchronises after inner steps 1, k+1, 2k+1, ...: its slow weights are the
    # parameters after the first inner step.  It equals the paper started one plain step late.
    gen = torch.Generator().manual_seed(0)
    grads = [torch.randn(3, generator=gen, dtype=F64) for _ in range(21)]
    start = torch.tensor([1.0, -2.0, 0.5], dtype=F64)

    def trajectory(make, skip_one=False):
        p = start.clone()
        inner = torch.optim.SGD([p], lr=0.1, momentum=0.9)
        if skip_one:
            p.grad = grads[0].clone()
            inner.step()
        opt = make(inner)
        out = []
        for g in grads[1:] if skip_one else grads:
            p.grad = g.clone()
            opt.step()
            out.append(p.clone())
        return out

    theirs = trajectory(lambda inner: _give_torch_hooks(torch_optimizer.Lookahead(inner, k=5, alpha=0.5)))
    paper = trajectory(lambda inner: PaperLookahead(inner, k=5, alpha=0.5))
    late = trajectory(lambda inner: Lookahead(inner, k=5, alpha=0.5), skip_one=True)
    assert max((a - b).abs().max().item() for a, b in zip(theirs[1:], late)) <= 1e-15
    assert torch.equal(theirs[3], paper[3]) and (theirs[4] - paper[4]).abs().max() > 1e-2  # apart from step k


def test_pytorch_optimizer_momentum_options_do_nothing_for_adam():
    # its reset/pullback write a 'momentum_buffer' that Adam never reads; ours act on 'exp_avg'
    def run(make):
        return _resumed_run(make, None, None, steps=12)

    def theirs(mode):
        return run(lambda ps: pytorch_optimizer.Lookahead(torch.optim.Adam(ps, lr=0.1), k=3, alpha=0.5, pullback_momentum=mode))

    def ours(mode):
        return run(lambda ps: Lookahead(torch.optim.Adam(ps, lr=0.1), k=3, alpha=0.5, pullback_momentum=mode))

    assert torch.equal(theirs("reset"), theirs("none")) and torch.equal(theirs("pullback"), theirs("none"))
    assert (ours("reset") - ours("none")).abs().max() > 1e-3 and (ours("pullback") - ours("none")).abs().max() > 1e-3
