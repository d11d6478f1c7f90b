"""Adafactor: fairseq's equations as an independent reference, hand-computed steps, vmap, the libraries' deviations."""

import math

import pytest
import torch

from optimlab.optim.adafactor import Adafactor, adafactor

from . import harness as h


class FairseqAdafactor(torch.optim.Optimizer):
    """fairseq's ``Adafactor.step`` (fairseq/optim/adafactor.py) written out in plain torch.

    In-place tensor ops and Python arithmetic in fairseq's order, with one change: the step size
    stays local instead of being written into ``group['lr']`` (as transformers does; fairseq's
    write compounds lr when ``relative_step=False`` and ``scale_parameter=True``).  16-bit
    parameters are updated in float32 with float32 state, as in fairseq.
    """

    def __init__(self, params, lr=None, eps=(1e-30, 1e-3), clip_threshold=1.0, decay_rate=-0.8, beta1=None,
                 weight_decay=0.0, scale_parameter=True, relative_step=True, warmup_init=False):  # fmt: skip
        super().__init__(params, dict(lr=lr, eps=eps, clip_threshold=clip_threshold, decay_rate=decay_rate, beta1=beta1,
                                      weight_decay=weight_decay, scale_parameter=scale_parameter,
                                      relative_step=relative_step, warmup_init=warmup_init))  # fmt: skip

    @staticmethod
    def _rms(x):
        return x.norm(2) / (x.numel() ** 0.5)

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                grad = p.grad.float() if p.grad.dtype in (torch.float16, torch.bfloat16) else p.grad
                state = self.state[p]
                shape = grad.shape
                factored = len(shape) >= 2
                if not state:
                    state["step"] = 0
                    if group["beta1"] is not None:
                        state["exp_avg"] = torch.zeros_like(grad)
                    if factored:
                        state["exp_avg_sq_row"] = torch.zeros(shape[:-1]).to(grad)
                        state["exp_avg_sq_col"] = torch.zeros(shape[:-2] + shape[-1:]).to(grad)
                    else:
                        state["exp_avg_sq"] = torch.zeros_like(grad)
                p32 = p.float() if p.dtype in (torch.float16, torch.bfloat16) else p
                state["step"] += 1
                t = state["step"]
                rel = group["lr"]
                if group["relative_step"]:
                    rel = min(1e-6 * t if group["warmup_init"] else 1e-2, 1.0 / math.sqrt(t))
                scale = max(group["eps"][1], self._rms(p32)) if group["scale_parameter"] else 1.0
                lr = scale * rel
                beta2t = 1.0 - math.pow(t, group["decay_rate"])
                update = grad**2 + group["eps"][0]
                if factored:
                    row, col = state["exp_avg_sq_row"], state["exp_avg_sq_col"]
                    row.mul_(beta2t).add_(update.mean(dim=-1), alpha=1.0 - beta2t)
                    col.mul_(beta2t).add_(update.mean(dim=-2), alpha=1.0 - beta2t)
                    r = (row / row.mean(dim=-1, keepdim=True)).rsqrt_().unsqueeze(-1)
                    update = torch.mul(r, col.unsqueeze(-2).rsqrt()).mul_(grad)
                else:
                    v = state["exp_avg_sq"]
                    v.mul_(beta2t).add_(update, alpha=1.0 - beta2t)
                    update = v.rsqrt().mul_(grad)
                update.div_((self._rms(update) / group["clip_threshold"]).clamp_(min=1.0))
                update.mul_(lr)
                if group["beta1"] is not None:
                    m = state["exp_avg"]
                    m.mul_(group["beta1"]).add_(update, alpha=1 - group["beta1"])
                    update = m
                if group["weight_decay"] != 0:
                    p32.add_(p32, alpha=-group["weight_decay"] * float(lr))
                p32.add_(-update)
                if p32 is not p:
                    p.copy_(p32)


def _rms(xs):
    return math.sqrt(sum(x * x for x in xs) / len(xs))


def test_first_step_of_a_vector_by_hand():
    # t = 1: beta2 = 1 - 1 = 0, so V = g^2 + eps1 and U = g / sqrt(g^2 + eps1); RMS(U) ~ 1
    x0, g = [0.5, -1.0, 2.0], [4.0, -0.5, 1e-3]
    p = torch.tensor(x0, dtype=torch.float64)
    p.grad = torch.tensor(g, dtype=torch.float64)
    Adafactor([p]).step()
    u = [gi / math.sqrt(gi * gi + 1e-30) for gi in g]
    alpha = max(1e-3, _rms(x0)) * min(1e-2, 1.0)
    c = max(1.0, _rms(u) / 1.0)
    expected = [xi - alpha * ui / c for xi, ui in zip(x0, u)]
    assert max(abs(a - b) / abs(b) for a, b in zip(p.tolist(), expected)) <= 1e-15


def test_two_factored_steps_by_hand():
    x = [[0.5, -1.0, 2.0], [1.5, 0.25, -0.75]]
    grads = [[[4.0, -0.5, 1.0], [0.1, 2.0, -3.0]], [[-1.0, 0.5, 0.2], [1.0, -2.0, 0.3]]]
    p = torch.tensor(x, dtype=torch.float64)
    opt = Adafactor([p], lr=0.1, relative_step=False, clip_threshold=0.5, beta1=0.8)
    row, col, m = [0.0, 0.0], [0.0, 0.0, 0.0], [[0.0] * 3 for _ in range(2)]
    for t, g in enumerate(grads, 1):
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        b2 = 1 - t**-0.8
        sq = [[gij * gij + 1e-30 for gij in gi] for gi in g]
        row = [b2 * r + (1 - b2) * sum(s) / 3 for r, s in zip(row, sq)]
        col = [b2 * c + (1 - b2) * (sq[0][j] + sq[1][j]) / 2 for j, c in enumerate(col)]
        mean_row = sum(row) / 2
        u = [[g[i][j] / math.sqrt(row[i] / mean_row * col[j]) for j in range(3)] for i in range(2)]
        alpha = max(1e-3, _rms([v for xi in x for v in xi])) * 0.1
        c = max(1.0, _rms([v for ui in u for v in ui]) / 0.5)
        m = [[0.8 * m[i][j] + 0.2 * alpha * u[i][j] / c for j in range(3)] for i in range(2)]
        x = [[x[i][j] - m[i][j] for j in range(3)] for i in range(2)]
        assert max(abs(a - b) / abs(b) for ra, rb in zip(p.tolist(), x) for a, b in zip(ra, rb)) <= 1e-14


def test_factored_state_of_a_3d_tensor():
    p = torch.randn(2, 3, 4)
    p.grad = torch.randn(2, 3, 4)
    opt = Adafactor([p])
    opt.step()
    assert opt.state[p]["exp_avg_sq_row"].shape == (2, 3)
    assert opt.state[p]["exp_avg_sq_col"].shape == (2, 4)
    assert "exp_avg_sq" not in opt.state[p] and "exp_avg" not in opt.state[p]


@pytest.mark.parametrize("shape", [(2, 3, 4), (5,), ()])
@pytest.mark.parametrize("options", [dict(), dict(relative_step=False, scale_parameter=False), dict(warmup_init=True)], ids=["relative", "lr", "warmup"])
def test_rule_under_vmap_with_tensor_hyperparameters(shape, options):
    """The sweep engine's call: one configuration per batch row, reductions over the param only."""
    n = 3
    f64 = dict(dtype=torch.float64)
    hp = dict(
        lr=torch.tensor([0.1, 0.01, 0.5], **f64),
        eps2=torch.tensor([1e-3, 10.0, 0.0], **f64),
        clip_threshold=torch.tensor([1.0, 0.1, 1e6], **f64),
        decay_rate=torch.tensor([-0.8, 0.0, -0.3], **f64),
        beta1=torch.tensor([0.0, 0.5, 0.9], **f64),
        weight_decay=torch.tensor([0.0, 0.1, 1.0], **f64),
    )
    kw = dict(eps1=1e-30, **options)
    probe = Adafactor([torch.zeros(shape, **f64)], beta1=0.9)  # the state depends on beta1 and the shape only
    p = torch.randn((n, *shape), **f64)
    state = torch.vmap(lambda q: probe.init_state(q, probe.param_groups[0]))(p)
    singles = [(p[i], {k: v[i] for k, v in state.items()}) for i in range(n)]
    for step in (1.0, 2.0, 3.0):
        g = torch.randn((n, *shape), **f64)
        p, state = torch.vmap(lambda p_, g_, s_, h_: adafactor(p_, g_, s_, step, **kw, **h_))(p, g, state, hp)
        singles = [adafactor(q, g[i], s, step, **kw, **{k: v[i].item() for k, v in hp.items()}) for i, (q, s) in enumerate(singles)]
        for i, (q, s) in enumerate(singles):
            assert torch.allclose(p[i], q, rtol=1e-14, atol=0)
            assert all(torch.allclose(state[k][i], s[k], rtol=1e-14, atol=0) for k in s)


def test_float16_small_gradients_stay_finite():
    """The step runs in float32: fp16's g^2 and eps1 = 1e-30 would round to 0 and 1/sqrt(V) to inf.

    torch_optimizer and pytorch_optimizer compute in fp16 and turn such steps into NaN; fairseq
    computes in float32 as we do (but also keeps float32 state, so it remembers averages that
    our fp16 state flushes to zero: the two drift apart, hence only finiteness is compared).
    """
    import pytorch_optimizer
    import torch_optimizer

    gen = torch.Generator().manual_seed(0)
    start = torch.randn(4, 6, generator=gen).half()
    grads = [torch.randn(4, 6, generator=gen).half() * 1e-4 for _ in range(10)]

    def run(make):
        p = start.clone()
        opt = make([p])
        for g in grads:
            p.grad = g.clone()
            opt.step()
        return p

    for make in (Adafactor, FairseqAdafactor):
        p = run(make)
        assert torch.isfinite(p).all() and not torch.equal(p, start)
    assert run(torch_optimizer.Adafactor).isnan().any()
    assert run(lambda ps: pytorch_optimizer.AdaFactor(ps, lr=None, betas=(None, 0.999))).isnan().any()


def _gap_to_fairseq(make, shapes, grads=None, steps=100, **kw):
    start = h.make_params(shapes, torch.float64)
    grads = grads or h.gradient_stream(shapes, steps, torch.float64)
    theirs = h.run(make, [p.clone() for p in start], grads, groups=False)
    ref = h.run(lambda ps: FairseqAdafactor(ps, **kw), [p.clone() for p in start], grads, groups=False)
    return h.relative_gap(theirs, ref, start)


def test_torch_optimizer_mishandles_3d_tensors():
    """``torch_optimizer.Adafactor`` divides the row factors by ``row.mean(dim=-1)`` without keepdim.

    Fine for matrices (the mean is a scalar), but for a (b, n, m) tensor the (b,) means broadcast
    against the last dimension of the (b, n) rows: an error when b != n, a silently wrong update
    when b == n.  It matches fairseq exactly on vectors and matrices.
    """
    import torch_optimizer

    assert _gap_to_fairseq(torch_optimizer.Adafactor, [(7,), (4, 5)]) <= 1e-15
    with pytest.raises(RuntimeError, match="must match the size"):
        _gap_to_fairseq(torch_optimizer.Adafactor, [(2, 3, 4)])
    assert _gap_to_fairseq(torch_optimizer.Adafactor, [(3, 3, 4)]) > 1e-2


def test_torch_adafactor_is_fairseqs_default_but_decays_weights_by_lr():
    """``torch.optim.Adafactor(lr=1e-2)`` is fairseq's default configuration (the Case
    "Adafactor-vs-torch" checks it to 1e-9), but its weight decay multiplies by ``1 - lr * wd``
    with the raw lr, where fairseq uses the scaled step size alpha_t (``variant="torch"`` does as
    torch: the cases "Adafactor-torch-variant*")."""
    shapes = [(7,), (4, 5)]
    assert _gap_to_fairseq(lambda ps: torch.optim.Adafactor(ps, lr=1e-2), shapes) <= 1e-12
    assert _gap_to_fairseq(lambda ps: torch.optim.Adafactor(ps, lr=1e-2, weight_decay=0.1), shapes, weight_decay=0.1) > 1e-2


def test_pytorch_optimizer_caps_beta2():
    """``pytorch_optimizer.AdaFactor`` uses min(betas[1], 1 - t^decay_rate), and betas[1] < 1 is
    enforced, so the cap can't be switched off: with decay_rate=-2 it bites from t = 32 on
    (at the default -0.8 only after 5,600 steps)."""
    import pytorch_optimizer

    def theirs(ps):
        return pytorch_optimizer.AdaFactor(ps, lr=None, betas=(None, 0.999), decay_rate=-2.0, momentum_dtype=torch.float64)

    assert _gap_to_fairseq(theirs, [(7,), (4, 5)], steps=30, decay_rate=-2.0) <= 1e-12
    assert _gap_to_fairseq(theirs, [(7,), (4, 5)], steps=100, decay_rate=-2.0) > 1e-4
    with pytest.raises(ValueError):
        pytorch_optimizer.AdaFactor([torch.zeros(2)], betas=(None, 1.0))


def test_libraries_clip_the_update_rather_than_rescale_it():
    """It was reported that one library rescales every update to RMS 1 instead of clipping it at
    RMS clip_threshold.  None of the installed ones does: with shrinking gradients RMS(U) falls far
    below 1 (so clipping is idle and a rescaling would show), and all match fairseq."""
    import pytorch_optimizer
    import torch_optimizer

    shapes = [(7,), (4, 5)]
    grads = [[g * 0.97**t for g in gs] for t, gs in enumerate(h.gradient_stream(shapes, 200, torch.float64))]
    p = h.make_params(shapes, torch.float64)[1]
    opt = FairseqAdafactor([p], lr=1.0, relative_step=False, scale_parameter=False)
    for gs in grads[:150]:
        before = p.clone()
        p.grad = gs[1].clone()
        opt.step()
    assert _rms((p - before).flatten().tolist()) < 0.1  # the last update: RMS(U) < 0.1
    for make in (
        Adafactor,
        torch_optimizer.Adafactor,
        lambda ps: torch.optim.Adafactor(ps, lr=1e-2),
        lambda ps: pytorch_optimizer.AdaFactor(ps, lr=None, betas=(None, 0.999), momentum_dtype=torch.float64),
    ):
        assert _gap_to_fairseq(make, shapes, grads=grads) <= 1e-12


# -- variant="torch": torch.optim.Adafactor ---------------------------------------------------------
def _torch_variant(params, **kw):
    return Adafactor(params, lr=1e-2, variant="torch", **kw)


def test_torch_variant_first_step_of_a_vector_by_hand():
    # step 1: rho = min(lr, 1) = lr, beta2_1 = 0 so V = G^2, U = G / |G| = sign(G) with RMS 1 (no
    # clipping), alpha = max(eps2, RMS(X)) lr, and the decay multiplies by 1 - lr wd
    x0 = [3.0, -4.0, 0.5]
    p = torch.tensor(x0, dtype=torch.float64)
    opt = Adafactor([p], lr=0.05, eps=(None, 1e-3), weight_decay=0.1, variant="torch")
    p.grad = torch.tensor([0.2, 1e-3, -7.0], dtype=torch.float64)
    opt.step()
    alpha = _rms(x0) * 0.05
    expected = [x * (1 - 0.05 * 0.1) - alpha * s for x, s in zip(x0, [1.0, 1.0, -1.0])]
    assert p.tolist() == pytest.approx(expected, rel=1e-15)


def test_torch_variant_eps1_is_a_floor_as_in_torch():
    # eps1 = 0.5 bites on N(0, 1) gradients: G^2 and the row means fall below it often; fairseq's
    # form adds it to G^2 instead
    shapes = [(7,), (4, 5), (2, 3, 4)]
    start = h.make_params(shapes, torch.float64)
    grads = h.gradient_stream(shapes, 100, torch.float64)
    ref = h.run(lambda p: torch.optim.Adafactor(p, eps=(0.5, 1e-3)), [p.clone() for p in start], grads)
    ours = h.run(lambda p: Adafactor(p, lr=1e-2, eps=(0.5, 1e-3), variant="torch"), [p.clone() for p in start], grads)
    assert h.relative_gap(ours, ref, start) <= 1e-9
    fairseq = h.run(lambda p: Adafactor(p, eps=(0.5, 1e-3)), [p.clone() for p in start], grads)
    assert h.relative_gap(fairseq, ref, start) > 1e-2


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_torch_variant_eps1_none_is_the_machine_epsilon_of_the_dtype(dtype):
    shapes = [(7,), (4, 5)]
    start = h.make_params(shapes, dtype)
    # gradients of 1e-9 (float32) and 1e-18 (float64): G^2 is below eps1^2, the floor decides
    scale = 1e-9 if dtype == torch.float32 else 1e-18
    grads = [[g * scale for g in gs] for gs in h.gradient_stream(shapes, 20, dtype)]
    eps1 = torch.finfo(dtype).eps
    default = h.run(lambda p: _torch_variant(p, eps=(None, 1e-3)), [p.clone() for p in start], grads)
    named = h.run(lambda p: _torch_variant(p, eps=(eps1, 1e-3)), [p.clone() for p in start], grads)
    assert all(torch.equal(a, b) for xs, ys in zip(default, named) for a, b in zip(xs, ys))
    # the truth: torch in float64 with this dtype's eps1 named; the bar as the harness's
    truth = h.run(
        lambda p: torch.optim.Adafactor(p, eps=(eps1, 1e-3)),
        [p.double() for p in start],
        [[g.double() for g in gs] for gs in grads],
    )
    theirs = h.run(torch.optim.Adafactor, [p.clone() for p in start], grads)
    bar = max(h.FLOAT32_FLOOR, h.REFERENCE_ERROR_FACTOR * h.relative_gap(theirs, truth, start))
    assert h.relative_gap(default, truth, start) <= bar
    # fairseq's 1e-30 added to G^2 gives other steps here
    assert h.relative_gap(h.run(Adafactor, [p.clone() for p in start], grads), truth, start) > 1e-2


def test_torch_variant_follows_an_lr_scheduler_as_torch():
    # lr caps the relative step (0.01 < 1/sqrt(t) for the 60 steps): a scheduler changes every step
    shapes = [(7,), (4, 5)]
    start = h.make_params(shapes, torch.float64)
    grads = h.gradient_stream(shapes, 60, torch.float64)
    ref = h.run(torch.optim.Adafactor, [p.clone() for p in start], grads, schedule=True)
    ours = h.run(lambda p: _torch_variant(p, eps=(None, 1e-3)), [p.clone() for p in start], grads, schedule=True)
    assert h.relative_gap(ours, ref, start) <= 1e-9
    unscheduled = h.run(torch.optim.Adafactor, [p.clone() for p in start], grads)
    assert h.relative_gap(unscheduled, ref, start) > 1e-2


def test_the_fairseq_variant_still_refuses_lr_with_a_relative_step():
    with pytest.raises(ValueError, match=r"^Adafactor: invalid lr=0\.01 with relative_step=True: .*variant='torch'"):
        Adafactor([torch.zeros(2)], lr=0.01)
    with pytest.raises(ValueError, match=r"^Adafactor: invalid eps\[0\]=None: expected a number"):
        Adafactor([torch.zeros(2)], eps=(None, 1e-3))
