"""Prodigy: the authors' package as the reference, first steps by hand, the global estimate, its paths, its edges."""

import contextlib
import io
import math

import prodigyopt
import pytest
import torch

from optimlab.optim import Prodigy

from . import harness as h


class AuthorsProdigy(prodigyopt.Prodigy):
    """``prodigyopt.Prodigy`` as it is, without the line it prints for decoupled weight decay."""

    def __init__(self, params, **kw):
        with contextlib.redirect_stdout(io.StringIO()):
            super().__init__(params, **kw)


def test_first_steps_by_hand():
    # one tensor, lr 1, d0 1e-6; at step 1 x = x0, so the numerator is 0 and d stays d0
    b1, b2, eps, d0 = 0.9, 0.999, 1e-8, 1e-6
    b3 = math.sqrt(b2)
    x = torch.tensor([1.0, -2.0], dtype=torch.float64)
    opt = Prodigy([x])
    x.grad = torch.tensor([0.5, 1.0], dtype=torch.float64)
    opt.step()
    m, v = (1 - b1) * d0 * 0.5, (1 - b2) * d0**2 * 0.25
    x1 = 1.0 - d0 * m / (math.sqrt(v) + d0 * eps)
    assert opt.param_groups[0]["d"] == d0 and opt.param_groups[0]["d_numerator"] == 0.0
    assert math.isclose(x[0].item(), x1, rel_tol=1e-15)
    # step 2: the numerator d/d0 * dlr * <g, x0 - x> with dlr = d0 * lr, the denominator sum |s|
    y1 = x.clone()
    x.grad = torch.tensor([0.25, 0.5], dtype=torch.float64)
    opt.step()
    g1, g2 = torch.tensor([0.5, 1.0], dtype=torch.float64), torch.tensor([0.25, 0.5], dtype=torch.float64)
    numerator = d0 * torch.dot(g2, torch.tensor([1.0, -2.0], dtype=torch.float64) - y1).item()
    s = b3 * d0 * g1 + d0 * g2
    d_hat = numerator / s.abs().sum().item()
    d = max(d0, d_hat)  # the first change: d becomes d_hat if larger, and d_max follows
    assert opt.param_groups[0]["d_hat"] == pytest.approx(d_hat, rel=1e-14)
    assert opt.param_groups[0]["d"] == pytest.approx(d, rel=1e-14)
    m = b1 * (1 - b1) * d0 * g1 + (1 - b1) * d0 * g2  # the moments take the old d
    v = b2 * (1 - b2) * d0**2 * g1**2 + (1 - b2) * d0**2 * g2**2
    expected = y1 - d0 * m / (v.sqrt() + d * eps)  # the denominator's eps takes the new one
    assert torch.allclose(x, expected, rtol=1e-14, atol=0)


def test_the_estimate_is_one_number_over_all_groups():
    # two groups: d is the same in both, and equals one group holding both tensors
    start = h.make_params([(5,), (3, 2)], torch.float64)
    grads = h.gradient_stream([(5,), (3, 2)], 30, torch.float64)
    split = h.run(lambda p: Prodigy(p, d0=1e-3), [p.clone() for p in start], grads, groups=True)
    whole = h.run(lambda p: Prodigy(p, d0=1e-3), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(split, whole, start) <= 1e-12


def test_groups_must_share_the_lr_or_have_zero():
    a, b, c = torch.ones(2), torch.ones(2), torch.ones(2)
    opt = Prodigy([{"params": [a]}, {"params": [b], "lr": 0.0}, {"params": [c], "lr": 0.5}])
    for p in (a, b, c):
        p.grad = torch.ones(2)
    with pytest.raises(ValueError, match=r"Prodigy: invalid lr=0.5 in param group 2: every group takes the same lr"):
        opt.step()


def test_a_zero_lr_group_adds_nothing_to_the_estimate_as_in_the_authors_code():
    start = h.make_params([(5,), (4,)], torch.float64)
    grads = h.gradient_stream([(5,), (4,)], 20, torch.float64)

    def groups(cls):
        return lambda p: cls([{"params": p[:1]}, {"params": p[1:], "lr": 0.0}], d0=1e-3, weight_decay=0.1)

    ours = h.run(groups(Prodigy), [p.clone() for p in start], grads, groups=False)
    theirs = h.run(groups(AuthorsProdigy), [p.clone() for p in start], grads, groups=False)
    assert h.relative_gap(ours, theirs, start) <= 1e-12
    ratio = ours[-1][1] / start[1]  # only the decoupled decay moved it: a pure shrink
    assert torch.allclose(ratio, ratio[0].expand(4), rtol=1e-12, atol=0) and ratio[0] < 1


def test_nothing_moves_while_every_gradient_is_zero():
    x = torch.tensor([1.0, 2.0])
    opt = Prodigy([x])
    x.grad = torch.zeros(2)
    opt.step()
    assert torch.equal(x, torch.tensor([1.0, 2.0])) and opt.param_groups[0]["k"] == 0
    assert opt.state[x]["step"].item() == 0


def test_authors_checkpoint_loads_into_ours():
    saved = h.reference_checkpoint_continues(AuthorsProdigy, Prodigy, d0=1e-2, weight_decay=0.1)
    assert set(saved["state"][0]) == {"step", "s", "p0", "exp_avg", "exp_avg_sq"}
    assert {"d", "d_max", "d_numerator", "k"} <= set(saved["param_groups"][0])


def test_float16_parameters_are_refused_where_the_authors_code_steps_to_infinity():
    x, y = torch.ones(4, 2, dtype=torch.float16), torch.ones(3, dtype=torch.float32)
    theirs = AuthorsProdigy([x.clone()])
    theirs.param_groups[0]["params"][0].grad = torch.ones(4, 2, dtype=torch.float16)
    theirs.step()
    assert not torch.isfinite(theirs.param_groups[0]["params"][0]).any()  # v = d0^2 (1 - beta2) g^2 = 0 in float16
    opt = Prodigy([{"params": [y]}, {"params": [x]}])
    x.grad, y.grad = torch.ones_like(x), torch.ones_like(y)
    with pytest.raises(
        ValueError, match=r"Prodigy: invalid float16 parameter \(a tensor of shape \(4, 2\) in param group 1\)"
    ):
        opt.step()
    assert not opt.state and torch.equal(y, torch.ones(3))  # nothing changed


SHAPES = [(40,), (3, 5), (6,), ()]


def _mixed_run(make, dtype, steps=30):
    """Three groups (another d0, coupled decay and bias correction in the options), a tensor that starts at zero
    (its p0 is a 0-dim zero), a 0-dim one."""
    start = h.make_params(SHAPES, dtype)
    start[2].zero_()
    grads = h.gradient_stream(SHAPES, steps, dtype)

    def build(ps):
        groups = [{"params": ps[:2]}, {"params": ps[2:3], "d0": 1e-2}, {"params": ps[3:], "weight_decay": 0.2}]
        return make(groups)

    return h.run(build, [p.clone() for p in start], grads, groups=False)


OPTIONS = [
    dict(d0=1e-3),
    dict(d0=1e-3, weight_decay=0.1, decouple=False, use_bias_correction=True),
    dict(d0=1e-3, betas=(0.0, 0.99), safeguard_warmup=True),
]


def _counting_launches(monkeypatch):
    from optimlab.optim import _native

    if not _native.available():
        pytest.skip("no C compiler: no native path")
    launches = []
    launch = _native._launch
    monkeypatch.setattr(_native, "_launch", lambda fn, n, *a: launches.append(n) or launch(fn, n, *a))
    return launches


@pytest.mark.parametrize("options", OPTIONS, ids=str)
def test_native_passes_equal_the_reference_path_up_to_the_rounding_of_the_sums(options, monkeypatch):
    # The native first pass sums each tensor in double precision, torch in the tensor's dtype (float64 here): the
    # two orders of summation leave the estimate a few ulps apart, nothing more.
    from .test_fast_path import correctly_rounded_sqrt

    launches = _counting_launches(monkeypatch)
    native = _mixed_run(lambda p: Prodigy(p, **options), torch.float64)
    assert len(launches) >= 30 * 3  # both passes native at every step (a check of one path alone proves nothing)
    launches.clear()
    with correctly_rounded_sqrt():  # torch's vectorised sqrt is not correctly rounded, C's is
        reference = _mixed_run(lambda p: Prodigy(p, fast=False, **options), torch.float64)
    assert not launches
    start = [p.double() for p in h.make_params(SHAPES, torch.float64)]
    start[2].zero_()
    assert h.relative_gap(native, reference, start) <= 1e-13
    # the first step, where x = x0 leaves d as it is whatever the sums, is the same bit for bit
    assert all(torch.equal(a, b) for a, b in zip(native[0], reference[0]))


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64], ids=str)
def test_native_sums_are_the_exact_sums_rounded_once(dtype, monkeypatch):
    # dot = sum g (x0 - x) and size = sum |s| of each tensor, against the same float terms summed exactly (in
    # float64: the error of a float64 sum of these 70,000 terms is far below a float32 ulp), then rounded
    from optimlab.optim import _native
    from optimlab.optim.prodigy import prodigy_sums

    launches = _counting_launches(monkeypatch)
    gen = torch.Generator().manual_seed(0)
    sizes = [70_000, 3, 1 << 16]  # several tiles; one element short of a vector; a power of two
    ps, gs, p0s, ss = ([torch.randn(n, generator=gen, dtype=dtype) for n in sizes] for _ in range(4))
    pairs = torch.empty(len(sizes), 2, dtype=dtype)
    states = [{"s": s.clone(), "p0": p0, "dot": pair[0], "size": pair[1]} for s, p0, pair in zip(ss, p0s, pairs)]
    hyper = dict(beta3=0.9, weight=0.3, weight_decay=0.1, decouple=False)
    assert _native.run(prodigy_sums, ps, gs, states, 0.0, hyper, vectors=True) and launches == [3]
    for p, g, p0, s, state, pair in zip(ps, gs, p0s, ss, states, pairs):
        _, expected = prodigy_sums(p, g, {"s": s, "p0": p0}, 0.0, **hyper)  # the reference path, elementwise
        assert torch.equal(state["s"], expected["s"])
        grad = g + 0.1 * p
        for got, terms in ((pair[0], grad * (p0 - p)), (pair[1], expected["s"].abs())):
            exact = terms.double().sum()
            if dtype == torch.float32:
                # the exact sum correctly rounded: within half an ulp of it, but for the float64 sums' own order
                # (1e-11 of the terms' size: any order of these double sums, on any CPU's vector width; about 1e-3
                # ulp here).  torch's float32 sums of these are not: 0.82 and 0.97 ulp off on two of them.
                ulp = torch.finfo(dtype).eps * 2 ** math.floor(math.log2(abs(exact.item())))
                assert abs(got.item() - exact.item()) <= 0.5 * ulp + 1e-11 * terms.abs().sum().item()
            else:
                assert abs(got.item() - exact.item()) <= 1e-14 * terms.abs().sum().item()


@pytest.mark.parametrize("options", [*OPTIONS, dict(d0=1e-3, slice_p=3)], ids=str)
def test_foreach_path_equals_per_parameter_path(options):
    single = _mixed_run(lambda p: Prodigy(p, fast=False, foreach=False, **options), torch.float64)
    multi = _mixed_run(lambda p: Prodigy(p, fast=False, foreach=True, **options), torch.float64)
    for ours, ref in zip(multi, single):
        assert all(torch.equal(a, b) for a, b in zip(ours, ref))


def test_a_step_reads_nothing_on_the_host_where_the_estimate_stays_a_tensor(monkeypatch):
    # On a GPU the estimate and every hyperparameter of the passes stay 0-dim tensors on the device (a host read
    # would wait for them); on the CPU they are Python floats.  Here that GPU form, run on the CPU: the same results,
    # and after the first step (whose new state asks, as the authors', whether each tensor is all zero) no tensor
    # read on the host at all.
    from optimlab.optim import prodigy as module

    options = dict(d0=1e-3, use_bias_correction=True, weight_decay=0.1)
    cpu_form = _mixed_run(lambda p: Prodigy(p, fast=False, foreach=True, **options), torch.float32, steps=10)
    read: list[torch.Tensor] = []
    opts = []

    def make(groups):
        opts.append(Prodigy(groups, fast=False, foreach=True, **options))
        step = opts[-1].step

        def spied_step():
            step()
            if read is not None and not monkeypatch_done:  # from the second step on
                for name in ("item", "__bool__", "__float__", "__int__", "tolist"):
                    original = getattr(torch.Tensor, name)
                    monkeypatch.setattr(torch.Tensor, name, lambda t, *a, _f=original: read.append(t) or _f(t, *a))
                monkeypatch_done.append(True)
                probe = torch.ones(())
                assert probe.item() == 1.0 and read == [probe]  # the spy sees a read
                read.clear()

        opts[-1].step = spied_step
        return opts[-1]

    monkeypatch_done: list[bool] = []
    monkeypatch.setattr(module, "_on_host", lambda device: False)  # the device's form: the estimate as tensors
    device_form = _mixed_run(make, torch.float32, steps=10)
    monkeypatch.undo()
    assert monkeypatch_done and not read
    # bit for bit, but for the 0-dim parameter: there a 0-dim float64 hyperparameter promotes the arithmetic
    # (torch's rule for two 0-dim operands), so it rounds once at the end where the numbers round each time:
    # a few float32 ulps apart
    assert all(torch.equal(a, b) for xs, ys in zip(device_form, cpu_form) for a, b in zip(xs[:3], ys[:3]))
    ulps = 4 * torch.finfo(torch.float32).eps
    assert all(torch.allclose(xs[3], ys[3], rtol=ulps, atol=0) for xs, ys in zip(device_form, cpu_form))
    group = opts[0].param_groups[0]
    assert all(group[k].dtype == torch.float64 for k in ("d", "d_max", "d_numerator", "d_denom", "d_hat", "k"))


def test_our_checkpoint_loads_into_the_authors_code():
    # the estimate is kept as tensors in the groups; their step takes them as it takes its numbers
    p, q = torch.ones(3, dtype=torch.float64), torch.ones(3, dtype=torch.float64)
    ours, theirs = Prodigy([p], d0=1e-2, weight_decay=0.1), AuthorsProdigy([q], d0=1e-2, weight_decay=0.1)
    for g in ([1.0, -2.0, 0.5], [0.5, 1.0, -1.0], [0.25, -0.5, 2.0]):
        p.grad = torch.tensor(g, dtype=torch.float64)
        ours.step()
    theirs.load_state_dict(h.roundtrip(ours.state_dict()))
    q.copy_(p)
    for x in (p, q):
        x.grad = torch.tensor([2.0, 1.0, -1.0], dtype=torch.float64)
    ours.step()
    theirs.step()
    assert torch.allclose(p, q, rtol=0, atol=1e-15) and not torch.equal(p, torch.ones(3, dtype=torch.float64))
