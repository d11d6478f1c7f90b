"""SophiaG: the authors' equations as the reference, first steps by hand, the clip, rho * bs, the
hessian EMA, step(bs=...), errors, the training-loop hook, and where the ports differ."""

import math

import pytest
import sophia_opt
import torch
import torch.nn.functional as F

from optimlab.optim import SophiaG

from . import harness as h


class AuthorsSophiaG(torch.optim.Optimizer):
    """The update of the authors' SophiaG (Liuhong99/Sophia, sophia.py), as equations in plain torch.

    ``update_hessian()``: ``h = beta2 * h + (1 - beta2) * g * g`` with ``g = p.grad``.
    ``step(bs=5120)``: ``p *= 1 - lr * weight_decay``; ``m = beta1 * m + (1 - beta1) * g``;
    ``p -= lr * sign(m) * min(|m| / (rho * bs * h + 1e-15), 1)``.  State: ``step``, ``exp_avg``,
    ``hessian``, created by whichever of the two comes first.
    """

    def __init__(self, params, lr=1e-4, betas=(0.965, 0.99), rho=0.04, weight_decay=1e-1):
        super().__init__(params, dict(lr=lr, betas=betas, rho=rho, weight_decay=weight_decay))

    def _state(self, p):
        state = self.state[p]
        if not state:
            state.update(step=torch.tensor(0.0), exp_avg=torch.zeros_like(p), hessian=torch.zeros_like(p))
        return state

    @torch.no_grad()
    def update_hessian(self):
        for group in self.param_groups:
            beta2 = group["betas"][1]
            for p in group["params"]:
                if p.grad is not None:
                    state = self._state(p)
                    state["hessian"] = beta2 * state["hessian"] + (1 - beta2) * p.grad * p.grad

    @torch.no_grad()
    def step(self, closure=None, bs=5120):
        for group in self.param_groups:
            lr, beta1, rho, wd = group["lr"], group["betas"][0], group["rho"], group["weight_decay"]
            for p in group["params"]:
                if p.grad is None:
                    continue
                state = self._state(p)
                state["step"] += 1
                p.mul_(1 - lr * wd)
                m = state["exp_avg"] = beta1 * state["exp_avg"] + (1 - beta1) * p.grad
                ratio = torch.clamp(m.abs() / (rho * bs * state["hessian"] + 1e-15), max=1)
                p.sub_(lr * torch.sign(m) * ratio)


def hessian_every(cls, k=None, bs=None):
    """``cls`` whose ``step()`` first calls ``update_hessian()`` (on the same ``p.grad``) at steps 1, k+1, 2k+1, ...
    (never for ``k=None``), and passes ``bs`` to the authors' ``step(bs=...)`` where given.

    The step count is read from the state, so a resumed optimizer keeps the schedule.  The
    authors' loop refreshes after step ``t`` with ``t % k == 0`` on another batch: the same times.
    """

    class Every(cls):
        def step(self, closure=None):
            with_grad = [p for group in self.param_groups for p in group["params"] if p.grad is not None]
            state = self.state.get(with_grad[0]) if with_grad else None
            if k is not None and with_grad and int(state["step"] if state else 0) % k == 0:
                self.update_hessian()
            return super().step(closure) if bs is None else super().step(closure, bs=bs)

    Every.__name__ = Every.__qualname__ = cls.__name__  # error messages name the class
    return Every


def _scalar_steps(grads, *, hessian_before=(), start=0.5, **kw):
    """One float64 scalar through SophiaG; ``update_hessian()`` before the steps (0-based) listed."""
    p = torch.tensor([start], dtype=torch.float64)
    opt = SophiaG([p], **kw)
    out = []
    for t, g in enumerate(grads):
        p.grad = torch.tensor([g], dtype=torch.float64)
        if t in hessian_before:
            opt.update_hessian()
        opt.step()
        out.append(p.item())
    return out, opt.state[p]


def test_first_steps_by_hand():
    kw = dict(lr=0.1, betas=(0.5, 0.75), rho=0.5, bs=4, weight_decay=0.5)
    (x1, x2), state = _scalar_steps([2.0, 4.0], hessian_before=(1,), **kw)
    # step 1, no estimate yet (h = 0): m = 0.5 * 2 = 1, |m| / 1e-15 is clipped to 1, so the step
    # is lr * sign(m) after the decay by 1 - 0.1 * 0.5
    assert x1 == 0.5 * 0.95 - 0.1
    # the estimate from g = 4: h = 0.25 * 16 = 4, so rho * bs * h = 8; m = 0.5 * 1 + 0.5 * 4 = 2.5,
    # ratio 2.5 / 8 = 0.3125 (not clipped): the step is 0.1 * 0.3125
    assert math.isclose(x2, x1 * 0.95 - 0.1 * 2.5 / (8 + 1e-15), rel_tol=1e-15)
    assert state["hessian"].item() == 4.0 and state["exp_avg"].item() == 2.5 and state["step"].item() == 2


def test_step_is_clipped_at_lr_per_coordinate():
    p = torch.zeros(3, dtype=torch.float64)
    opt = SophiaG([p], lr=0.1, betas=(0.0, 0.0), rho=1.0, bs=1, weight_decay=0.0)
    p.grad = torch.tensor([1.0, 1.0, 1.0], dtype=torch.float64)
    opt.update_hessian()  # h = 1 (beta2 = 0)
    # beta1 = 0: m = g; ratios |m| / (h + 1e-15) = 0.5, 2 and 40 -> 0.5, then 1 and 1 (clipped): the
    # clipped coordinates move by exactly lr, however large their gradient
    p.grad = torch.tensor([0.5, -2.0, 40.0], dtype=torch.float64)
    opt.step()
    assert math.isclose(p[0].item(), -0.05, rel_tol=1e-14)
    assert p[1].item() == 0.1 and p[2].item() == -0.1


def test_denominator_is_rho_times_bs_times_h_plus_1e_15():
    # h = 0: the ratio is |m| / 1e-15, below 1 only for |m| < 1e-15 (an eps of max(., eps) form or
    # of another size would give another step)
    (x1,), _ = _scalar_steps([2e-20], start=0.0, lr=1.0, betas=(0.0, 0.99), weight_decay=0.0)
    assert math.isclose(x1, -2e-20 / 1e-15, rel_tol=1e-12)
    # only the product rho * bs counts (0.02 * 100 == 0.04 * 50 == 2.0 exactly)
    grads = [0.3, -0.2, 0.7, 0.1]
    a, _ = _scalar_steps(grads, hessian_before=(0, 2), rho=0.02, bs=100, lr=0.1)
    b, _ = _scalar_steps(grads, hessian_before=(0, 2), rho=0.04, bs=50, lr=0.1)
    c, _ = _scalar_steps(grads, hessian_before=(0, 2), rho=0.04, bs=100, lr=0.1)
    assert a == b and a != c


def test_hessian_ema_and_its_state():
    p, frozen = torch.ones(2, dtype=torch.float64), torch.ones(2, dtype=torch.float64)
    opt = SophiaG([p, frozen], betas=(0.9, 0.8))
    p.grad = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt.update_hessian()  # before any step: the state is created, its step count still 0
    assert opt.state[p]["step"].item() == 0 and torch.equal(
        opt.state[p]["exp_avg"], torch.zeros(2, dtype=torch.float64)
    )
    assert frozen not in opt.state  # no gradient: skipped
    p.grad = torch.tensor([3.0, 0.5], dtype=torch.float64)
    opt.update_hessian()
    expected = torch.tensor([0.8 * 0.2 * 1 + 0.2 * 9, 0.8 * 0.2 * 4 + 0.2 * 0.25], dtype=torch.float64)
    assert torch.allclose(opt.state[p]["hessian"], expected, rtol=1e-15, atol=0)
    assert torch.equal(p, torch.ones(2, dtype=torch.float64))  # the estimate moves nothing
    # the gradient's sign does not matter, nor maximize
    q = torch.ones(2, dtype=torch.float64)
    other = SophiaG([q], betas=(0.9, 0.8), maximize=True)
    for g in ([-1.0, 2.0], [-3.0, -0.5]):
        q.grad = torch.tensor(g, dtype=torch.float64)
        other.update_hessian()
    assert torch.equal(other.state[q]["hessian"], opt.state[p]["hessian"])


def test_step_bs_overrides_the_group_bs_for_that_call_only():
    grads = h.gradient_stream([(5,)], 6, torch.float64)
    runs = []
    for by_step in (False, True):
        p = h.make_params([(5,)], torch.float64)[0]
        opt = SophiaG([p], lr=0.1, bs=10 if by_step else 40)
        for gs in grads:
            p.grad = gs[0]
            opt.update_hessian()
            opt.step(bs=40) if by_step else opt.step()
        runs.append(p)
        assert opt.param_groups[0]["bs"] == (10 if by_step else 40)  # not stored
    assert torch.equal(*runs)


def test_step_without_bs_equals_the_authors_default():
    # the authors' step() takes bs=5120; ours takes the group's bs, whose default is 5120
    start = h.make_params(h.SHAPES, torch.float64)
    grads = h.gradient_stream(h.SHAPES, 30, torch.float64)
    ours = h.run(hessian_every(SophiaG, 2), [p.clone() for p in start], grads)
    theirs = h.run(hessian_every(sophia_opt.SophiaG, 2), [p.clone() for p in start], grads)
    assert h.relative_gap(ours, theirs, start) <= 1e-12


@pytest.mark.parametrize(
    "call, message",
    [
        (lambda opt: opt.step(bs=-1.0), r"SophiaG: invalid bs=-1.0: expected 0 <= bs"),
        (lambda opt: opt.step(bs="5120"), r"SophiaG: invalid bs='5120': expected a number"),
        (lambda opt: opt.add_param_group({"params": [torch.zeros(1)], "bs": float("nan")}), r"SophiaG: invalid bs=nan"),
        (lambda opt: opt.add_param_group({"params": [torch.zeros(1)], "rho": -0.5}), r"SophiaG: invalid rho=-0.5"),
    ],
)
def test_errors_name_the_parameter(call, message):
    opt = SophiaG([torch.zeros(2, requires_grad=True)])
    opt.param_groups[0]["params"][0].grad = torch.ones(2)
    with pytest.raises((ValueError, TypeError), match=message):
        call(opt)


def test_update_hessian_refuses_sparse_and_complex():
    p = torch.zeros(4)
    opt = SophiaG([p])
    p.grad = torch.sparse_coo_tensor([[0]], [1.0], (4,))
    with pytest.raises(RuntimeError, match="SophiaG does not support sparse gradients"):
        opt.update_hessian()
    z = torch.zeros(2, dtype=torch.complex64)
    opt = SophiaG([z])
    z.grad = torch.ones_like(z)
    with pytest.raises(RuntimeError, match="SophiaG does not support complex parameters"):
        opt.update_hessian()


def test_infinite_gradient_reaches_the_parameter_where_the_authors_code_steps_on():
    def run(cls):
        p = torch.zeros(2, dtype=torch.float64)
        opt = cls([p], lr=0.1, weight_decay=0.0)
        out = []
        for g in ([float("inf"), 1.0], [1.0, 1.0], [1.0, 1.0]):
            p.grad = torch.tensor(g, dtype=torch.float64)
            opt.step()
            out.append(p[0].item())
        return out

    assert all(math.isnan(x) for x in run(SophiaG))
    # theirs: sign(inf) * min(inf / 1e-15, 1) = 1, a step of lr at every step, whatever the gradient
    assert run(sophia_opt.SophiaG) == pytest.approx([-0.1, -0.2, -0.3], rel=1e-15)


def test_authors_checkpoint_loads_into_ours():
    saved = h.reference_checkpoint_continues(sophia_opt.SophiaG, SophiaG, lr=0.1, rho=0.5)
    assert set(saved["state"][0]) == {"step", "exp_avg", "hessian"}
    # with an estimate in the state too
    p, q = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    theirs, ours = sophia_opt.SophiaG([p], lr=0.1, rho=0.5), SophiaG([q], lr=0.1, rho=0.5)
    for g in ([1.0, -2.0, 3.0], [0.5, 0.5, -1.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        theirs.update_hessian()
        theirs.step(bs=8)
    ours.load_state_dict(h.roundtrip(theirs.state_dict()))
    q.copy_(p)
    for x in (p, q):
        x.grad = torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64)
    theirs.step(bs=8)
    ours.step(bs=8)
    assert torch.allclose(p, q, rtol=0, atol=1e-15)


def _blobs(n=384, classes=3, dim=8, seed=0):
    gen = torch.Generator().manual_seed(seed)
    centres = 2.0 * torch.randn(classes, dim, generator=gen)
    y = torch.randint(classes, (n,), generator=gen)
    return centres[y] + torch.randn(n, dim, generator=gen), y


def test_training_loop_hook_on_a_tiny_classifier():
    # The authors' loop (the module docstring): a step on every batch, and every k steps an
    # estimate from labels sampled from the model's own softmax.
    torch.manual_seed(0)
    x, y = _blobs()
    model = torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))
    opt = SophiaG(model.parameters(), lr=0.02, rho=0.05, weight_decay=0.0, bs=64)
    k, estimates, batches = 5, 0, list(zip(x.split(64), y.split(64)))
    initial = F.cross_entropy(model(x), y).item()
    for step in range(200):
        xb, yb = batches[step % len(batches)]
        F.cross_entropy(model(xb), yb).backward()
        opt.step()
        opt.zero_grad(set_to_none=True)
        if step % k == k - 1:
            logits = model(xb)
            sampled = torch.distributions.Categorical(logits=logits).sample()
            F.cross_entropy(logits, sampled).backward()
            opt.update_hessian()
            opt.zero_grad(set_to_none=True)
            estimates += 1
    final = F.cross_entropy(model(x), y).item()
    assert estimates == 40
    assert final <= initial / 10, (initial, final)
    # the estimate is in use: some coordinates take steps shorter than lr (|m| < rho * bs * h)
    unclipped = sum((s["exp_avg"].abs() < 0.05 * 64 * s["hessian"]).sum().item() for s in opt.state.values())
    assert unclipped > 0


def test_float16_zero_momentum_without_estimate_is_a_zero_step_where_the_authors_code_gives_nan():
    # m = 0.5 * 0.5 = 0.25, then 0.5 * 0.25 + 0.5 * -0.25 = 0 exactly; h = 0 and float16 rounds 1e-15
    # to 0: theirs divides 0 by 0
    def run(cls):
        p = torch.ones(2, dtype=torch.float16)
        opt = cls([p], lr=0.25, betas=(0.5, 0.99), weight_decay=0.0)
        for g in ([0.5, 0.5], [-0.25, 0.5]):
            p.grad = torch.tensor(g, dtype=torch.float16)
            opt.step()
        return p.tolist()

    assert run(SophiaG) == [0.75, 0.5]  # the second step: none where m = 0, lr where m = 0.375
    theirs = run(sophia_opt.SophiaG)
    assert math.isnan(theirs[0]) and theirs[1] == 0.5


def _mlp():
    return torch.nn.Sequential(torch.nn.Linear(8, 16), torch.nn.Tanh(), torch.nn.Linear(16, 3))


def test_the_runner_estimate_is_the_authors_gnb_estimator():
    from types import SimpleNamespace

    from optimlab.runner import gnb_estimate

    torch.manual_seed(0)
    model, (x, y) = _mlp(), _blobs(n=32)
    opt = SophiaG(model.parameters())
    for p in model.parameters():
        p.grad = torch.full_like(p, 7.0)  # the training step's gradient: must not enter the estimate
    torch.manual_seed(5)
    assert gnb_estimate(SimpleNamespace(model=model), (x, y), {"model": opt})
    assert all(p.grad is None for p in model.parameters())

    def estimate(labels):
        logits = model(x)
        grads = torch.autograd.grad(F.cross_entropy(logits, labels(logits)), list(model.parameters()))
        return [0.01 * g * g for g in grads]  # one update from h = 0, beta2 = 0.99

    torch.manual_seed(5)
    sampled = estimate(lambda logits: torch.distributions.Categorical(logits=logits.detach()).sample())
    true_labels = estimate(lambda logits: y)
    ours = [opt.state[p]["hessian"] for p in model.parameters()]
    assert all(torch.allclose(a, b, rtol=1e-5, atol=0) for a, b in zip(ours, sampled))
    assert not all(torch.allclose(a, b, rtol=1e-2, atol=0) for a, b in zip(ours, true_labels))


def test_the_runner_estimate_only_for_classification_and_optimizers_that_take_it():
    from types import SimpleNamespace

    from optimlab.runner import gnb_estimate

    model, (x, y) = _mlp(), _blobs(n=16)
    sophia, adam = SophiaG(model.parameters()), torch.optim.Adam(model.parameters())
    instance = SimpleNamespace(model=model)
    assert not gnb_estimate(instance, (x, y), {"model": adam})
    assert not gnb_estimate(instance, (x, y.float()), {"model": sophia})  # regression targets
    assert not gnb_estimate(SimpleNamespace(), (x, y), {"model": sophia})  # no single model (a GAN)
    assert not sophia.state


def test_the_runner_takes_an_estimate_every_hessian_every_steps(monkeypatch):
    from optimlab import runner
    from optimlab.tasks import Budget, SupervisedTask

    calls = []
    original = SophiaG.update_hessian

    def counted(self):
        calls.append(int(next(iter(self.state.values()))["step"]))
        original(self)

    monkeypatch.setattr(SophiaG, "update_hessian", counted)
    train, test = _blobs(n=160, seed=1), _blobs(n=48, seed=2)
    task = SupervisedTask(
        name="sophia-blobs",
        model=_mlp,
        loss=torch.nn.CrossEntropyLoss(),
        train=train,
        test=test,
        budget=Budget(epochs=2, batch_size=8),
    )
    result = runner.run(task, "SophiaG", {"lr": 0.01}, progress=False)
    assert result["status"] == "finished" and result["final"]["steps"] == 40
    assert calls == [10, 20, 30, 40]  # after steps 10, 20, ... (the authors' k = 10)
