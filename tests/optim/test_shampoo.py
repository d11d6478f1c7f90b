"""What is particular to Shampoo: its first steps by hand, grafting norms, the update frequency, a matrix
problem, and how pytorch_optimizer's Shampoo differs.  The standard checks against Distributed Shampoo
v1.0.0 are in cases_shampoo.py."""

from __future__ import annotations

import math

import pytest
import torch
from pytorch_optimizer import Shampoo as PytorchOptimizerShampoo

from optimlab.optim import Adam, Shampoo
from optimlab.optim import shampoo as shampoo_module
from optimlab.optim._matrix import matrix_inverse_root

from . import harness as h
from .cases_shampoo import SHAPES, ReferenceShampoo

#: float64 factor matrices for float64 parameters (the default, as the reference's, is float32)
F64 = dict(preconditioner_dtype=torch.float64)


def _rotation(angle: float) -> torch.Tensor:
    c, s = math.cos(angle), math.sin(angle)
    return torch.tensor([[c, -s], [s, c]], dtype=torch.float64)


def test_first_two_steps_by_hand_on_a_2x2_matrix() -> None:
    # G_t = Q diag(s_t) V^T share their singular vectors, so L_t = Q diag(sum s^2) Q^T and
    # R_t = V diag(sum s^2) V^T, and their inverse fourth roots (the default root of a matrix: 2 * order)
    # are Q diag((sum s^2 + eps)^(-1/4)) Q^T and the same in V: the step is Q diag(.) V^T.
    q, v = _rotation(math.pi / 6), _rotation(math.pi / 4)
    s1, s2 = torch.tensor([3.0, 0.5], dtype=torch.float64), torch.tensor([1.0, 2.0], dtype=torch.float64)
    g1, g2 = q @ torch.diag(s1) @ v.T, q @ torch.diag(s2) @ v.T
    lr, beta1, eps = 0.1, 0.9, 1e-4
    w0 = torch.tensor([[1.0, -2.0], [0.5, 3.0]], dtype=torch.float64)
    w = w0.clone()
    opt = Shampoo([w], lr=lr, betas=(beta1, 1.0), epsilon=eps, grafting_type=None, use_merge_dims=False, **F64)

    w.grad = g1
    opt.step()
    # step 1: the filtered gradient (1 - beta1) g1 / (1 - beta1) is g1
    d1 = s1 / (s1**2 + eps).sqrt()
    assert torch.allclose(w, w0 - lr * q @ torch.diag(d1) @ v.T, rtol=0, atol=1e-14)
    # near the polar factor Q V^T of g1: what Shampoo's first step is without epsilon
    assert torch.allclose(w, w0 - lr * q @ v.T, rtol=0, atol=1e-3)
    root = opt.state[w]["block_0.inv_factor_matrix_0"]
    assert torch.allclose(root, q @ torch.diag((s1**2 + eps) ** -0.25) @ q.T, rtol=0, atol=1e-14)

    w1 = w.clone()
    w.grad = g2
    opt.step()
    filtered = (beta1 * (1 - beta1) * s1 + (1 - beta1) * s2) / (1 - beta1**2)
    d2 = filtered / (s1**2 + s2**2 + eps).sqrt()
    assert torch.allclose(w, w1 - lr * q @ torch.diag(d2) @ v.T, rtol=0, atol=1e-14)
    assert torch.allclose(opt.state[w]["block_0.factor_matrix_1"], g1.T @ g1 + g2.T @ g2, rtol=0, atol=1e-14)


@pytest.mark.parametrize("grafting", ["adagrad", "adam", "rmsprop", "sgd"])
def test_each_block_takes_the_norm_of_the_grafted_methods_step(grafting: str) -> None:
    # a 16-vector in two blocks of 8 and a 6 x 10 matrix in blocks of 6 x 8 and 6 x 2
    gen = torch.Generator().manual_seed(0)
    ps = [torch.randn(16, generator=gen, dtype=torch.float64), torch.randn(6, 10, generator=gen, dtype=torch.float64)]
    grads = [[torch.randn_like(p) for p in ps] for _ in range(3)]
    lr, beta2, eps = 0.05, 0.9, 1e-3
    opt = Shampoo(
        ps,
        lr=lr,
        betas=(0.0, 1.0),
        max_preconditioner_dim=8,
        grafting_type=grafting,
        grafting_beta2=beta2,
        grafting_epsilon=eps,
        **F64,
    )
    sums = [torch.zeros_like(p) for p in ps]
    for t, gs in enumerate(grads, 1):
        before = [p.clone() for p in ps]
        for p, g in zip(ps, gs):
            p.grad = g
        opt.step()
        for p, b, g, acc in zip(ps, before, gs, sums):
            if grafting == "adagrad":
                acc += g * g
                graft = g / (acc.sqrt() + eps)
            elif grafting in ("adam", "rmsprop"):
                acc.mul_(beta2).add_((1 - beta2) * g * g)
                correction = 1 - beta2**t if grafting == "adam" else 1.0
                graft = g / ((acc / correction).sqrt() + eps)
            else:
                graft = g
            step = b - p
            blocks = (
                [(slice(0, 8),), (slice(8, 16),)]
                if p.dim() == 1
                else [(slice(None), slice(0, 8)), (slice(None), slice(8, 10))]
            )
            for block in blocks:
                assert step[block].norm().item() == pytest.approx(lr * graft[block].norm().item(), rel=1e-12)
            if (
                t > 1
            ):  # and the direction is Shampoo's, not the grafted method's (on a vector's first step, both are g's)
                assert not torch.allclose(step, lr * graft, rtol=0, atol=1e-3)


def test_before_start_preconditioning_step_the_step_is_the_grafted_methods() -> None:
    p, g = torch.ones(5, dtype=torch.float64), torch.tensor([1.0, -2.0, 0.5, 3.0, -1.0], dtype=torch.float64)
    opt = Shampoo([p], lr=0.1, betas=(0.0, 1.0), precondition_frequency=4, grafting_epsilon=1e-3)
    p.grad = g
    opt.step()  # step 1 < start = precondition_frequency = 4: AdaGrad's step, g / (|g| + eps)
    assert torch.allclose(p, 1 - 0.1 * g / (g.abs() + 1e-3), rtol=0, atol=1e-15)


def test_inverse_roots_are_recomputed_only_every_precondition_frequency_steps(monkeypatch: pytest.MonkeyPatch) -> None:
    calls: list[float] = []
    original = shampoo_module.matrix_inverse_root

    def counted(*args, **kwargs):
        calls.append(opt.state[p]["step"].item())
        return original(*args, **kwargs)

    monkeypatch.setattr(shampoo_module, "matrix_inverse_root", counted)
    gen = torch.Generator().manual_seed(0)
    p = torch.randn(4, 3, dtype=torch.float64, generator=gen)
    opt = Shampoo([p], precondition_frequency=5, start_preconditioning_step=10, use_merge_dims=False)
    roots = []
    for _ in range(22):
        p.grad = torch.randn(4, 3, dtype=torch.float64, generator=gen)
        opt.step()
        roots.append(opt.state[p]["block_0.inv_factor_matrix_0"].clone())
    # a 4 x 3 matrix has two factors, each rooted at steps 10, 15 and 20 (multiples of 5 from the start on)
    assert calls == [10.0, 10.0, 15.0, 15.0, 20.0, 20.0]
    assert all(torch.equal(roots[t], roots[10]) for t in range(11, 14))
    assert not torch.equal(roots[13], roots[14]) and not torch.equal(roots[18], roots[19])
    assert not roots[0].any() and roots[9].any()  # zeros until the first root


def test_errors_name_the_optimizer_the_parameter_and_the_allowed_values() -> None:
    p = torch.zeros(3)
    opt = Shampoo([p])
    with pytest.raises(ValueError, match=r"^Shampoo: invalid precondition_frequency=0: expected an integer >= 1$"):
        opt.add_param_group({"params": [torch.zeros(2)], "precondition_frequency": 0})
    with pytest.raises(ValueError, match=r"^Shampoo: invalid grafting_type='lamb': expected one of None, 'sgd', "):
        Shampoo([p], grafting_type="lamb")
    with pytest.raises(ValueError, match=r"start_preconditioning_step=3: expected -1 .* >= precondition_frequency=5$"):
        Shampoo([p], precondition_frequency=5, start_preconditioning_step=3)


def _matrix_least_squares() -> tuple[torch.Tensor, torch.Tensor, torch.Tensor, torch.Tensor]:
    """min_X 0.5 |A X B - C|^2 with A, B of condition number 30: a Hessian (B B^T) (x) (A^T A) of
    condition number 30^4, the Kronecker structure that Shampoo's two factors model."""
    gen = torch.Generator().manual_seed(5)

    def conditioned(m: int, n: int) -> torch.Tensor:
        u, _ = torch.linalg.qr(torch.randn(m, m, generator=gen, dtype=torch.float64))
        v, _ = torch.linalg.qr(torch.randn(n, n, generator=gen, dtype=torch.float64))
        s = torch.logspace(0, math.log10(30.0), min(m, n), dtype=torch.float64)
        return u[:, : len(s)] @ torch.diag(s) @ v[: len(s)]

    a, b = conditioned(8, 6), conditioned(4, 5)
    target = torch.randn(6, 4, generator=gen, dtype=torch.float64)
    return a, b, a @ target @ b, target


def _solve(make, steps: int = 1000) -> float:
    """Relative distance to the minimiser after ``steps`` steps, the lr falling to 0 over the last third."""
    a, b, c, target = _matrix_least_squares()
    x = torch.zeros(6, 4, dtype=torch.float64, requires_grad=True)
    opt = make([x])
    anneal = torch.optim.lr_scheduler.LambdaLR(opt, lambda t: min(1.0, 3 * (1 - t / steps)))
    for _ in range(steps):
        opt.zero_grad()
        (0.5 * (a @ x @ b - c).square().sum()).backward()
        opt.step()
        anneal.step()
    return ((x.detach() - target).norm() / target.norm()).item()


def test_solves_an_ill_conditioned_matrix_problem() -> None:
    # measured: 3.4e-7 (2026-11-30); the bar leaves a margin of 100x and more
    shampoo = _solve(
        lambda p: Shampoo(p, lr=0.3, betas=(0.9, 0.99), epsilon=1e-8, grafting_type=None, use_merge_dims=False, **F64)
    )
    assert shampoo <= 1e-4
    # Adam at its best lr of 0.3, 0.1, 0.03 stays 0.11 away: the problem needs the preconditioner
    assert _solve(lambda p: Adam(p, lr=0.3, betas=(0.9, 0.99))) > 1e-2


def _pytorch_optimizer_gap(momentum: float) -> float:
    gen = torch.Generator().manual_seed(1)
    start = torch.randn(5, 3, generator=gen, dtype=torch.float64)
    grads = [torch.randn(5, 3, generator=gen, dtype=torch.float64) for _ in range(30)]
    ours, theirs = start.clone(), start.clone()
    opt = Shampoo(
        [ours],
        lr=0.01,
        betas=(0.0, 1.0),
        epsilon=1e-6,
        momentum=momentum,
        grafting_type=None,
        use_merge_dims=False,
        **F64,
    )
    ref = PytorchOptimizerShampoo([theirs], lr=0.01, momentum=momentum, matrix_eps=1e-6)
    for g in grads:
        ours.grad, theirs.grad = g.clone(), g.clone()
        opt.step()
        ref.step()
    return ((ours - theirs).abs().max() / (theirs - start).abs().max()).item()


def test_pytorch_optimizer_shampoo_is_ours_without_grafting_filtering_or_merging_but_its_momentum_differs() -> None:
    # its factors start at matrix_eps * I and sum G G^T: (L + eps I)^(-1/4), as ours with beta2 = 1
    assert _pytorch_optimizer_gap(0.0) <= 1e-9
    # its momentum buffer holds the last preconditioned step and is mixed into the next raw gradient
    # (grad.lerp_(buffer, momentum)); the reference's momentum accumulates the preconditioned steps
    assert _pytorch_optimizer_gap(0.9) > 0.1


def test_zero_dim_tensor_is_a_one_element_vector() -> None:
    scalar, vector = torch.tensor(2.0, dtype=torch.float64), torch.tensor([2.0], dtype=torch.float64)
    a, b = Shampoo([scalar], grafting_type=None), Shampoo([vector], grafting_type=None)
    for g in (1.5, -0.5, 3.0):
        scalar.grad, vector.grad = torch.tensor(g, dtype=torch.float64), torch.tensor([g], dtype=torch.float64)
        a.step()
        b.step()
        assert scalar.item() == vector.item()
    assert scalar.item() != 2.0


def test_low_precision_runs_track_float64_where_the_factors_have_full_rank() -> None:
    # 40 steps of a 4 x 3 matrix: factors of rank 4 and 3 from the fourth step on, rooted from step 5
    # (the standard check's 20 steps of rank-deficient factors are skipped: cases_shampoo.SINGULAR_FACTORS)
    gen = torch.Generator().manual_seed(2)
    start = torch.randn(4, 3, generator=gen, dtype=torch.float64)
    grads = [torch.randn(4, 3, generator=gen, dtype=torch.float64) for _ in range(40)]
    runs = {}
    for dtype in (torch.float64, torch.float32):
        p = start.to(dtype, copy=True)
        opt = Shampoo([p], precondition_frequency=5, use_merge_dims=False, preconditioner_dtype=dtype)
        for g in grads:
            p.grad = g.to(dtype)
            opt.step()
        assert all(v.dtype == dtype for v in opt.state[p].values() if v.is_floating_point() and v.dim())
        runs[dtype] = p.double()
    moved = (runs[torch.float64] - start).abs().max()
    # measured 3.1e-6 (2026-11-30): the inputs' float32 rounding (6e-8) amplified by the inverse roots
    assert ((runs[torch.float32] - runs[torch.float64]).abs().max() / moved).item() <= 3e-5


def _stepped(steps: int = 3, **kw) -> tuple[list[torch.Tensor], Shampoo]:
    """Two parameters in two groups after ``steps`` steps of ``Shampoo(**kw)``."""
    gen = torch.Generator().manual_seed(3)
    ps = [torch.randn(2, 3, 4, generator=gen, dtype=torch.float64), torch.randn(5, generator=gen, dtype=torch.float64)]
    opt = Shampoo([{"params": ps[:1]}, {"params": ps[1:]}], **kw)
    for _ in range(steps):
        for p in ps:
            p.grad = torch.randn(p.shape, generator=gen, dtype=torch.float64)
        opt.step()
    return ps, opt


def test_momentum_turned_on_after_the_first_step_starts_at_zero_as_in_the_reference() -> None:
    # the reference reads momentum at every step but creates its buffer only when built with momentum != 0:
    # built with momentum and given momentum=0 for the first steps, its buffer is still zero when it turns on
    start = h.make_params(SHAPES, torch.float64)
    grads = h.gradient_stream(SHAPES, 30, torch.float64)
    kw = dict(max_preconditioner_dim=8, weight_decay=0.01, use_nesterov=True, **F64)

    def run(make, on: float = 0.9) -> list[list[torch.Tensor]]:
        ps = [p.clone() for p in start]
        opt, history = make(h.param_groups(ps)), []
        for t, gs in enumerate(grads):
            for group in opt.param_groups:
                group["momentum"] = on if 10 <= t < 20 or t >= 25 else 0.0  # on, off, on again
            for p, g in zip(ps, gs):
                p.grad = g.clone()
            opt.step()
            history.append([p.clone() for p in ps])
        return history

    ours = run(lambda groups: Shampoo(groups, momentum=0.0, **kw))
    reference = run(lambda groups: ReferenceShampoo(groups, momentum=0.9, **kw))
    assert h.relative_gap(ours, reference, start) <= 1e-9
    # the momentum did act; and the reference built without it fails there, as Distributed Shampoo v1.0.0
    assert h.relative_gap(ours, run(lambda groups: Shampoo(groups, **kw), on=0.0), start) > 1e-3
    with pytest.raises(KeyError, match="momentum"):
        run(lambda groups: ReferenceShampoo(groups, momentum=0.0, **kw))


@pytest.mark.parametrize(
    ("built", "changed", "message"),
    [
        (
            dict(betas=(0.0, 1.0)),
            dict(betas=(0.9, 1.0)),
            (
                r"^Shampoo: invalid betas\[0\]=0\.9 after a first step with betas\[0\]=0: the filtered gradient and "
                r"its bias correction start at the first step .* so it cannot change from 0 after the first step$"
            ),
        ),
        (
            dict(grafting_type="sgd"),
            dict(grafting_type="adam"),
            (
                r"^Shampoo: invalid grafting_type='adam' after a first step with grafting_type None or 'sgd': .* "
                r"cannot change to an accumulating type after the first step$"
            ),
        ),
        (
            dict(),
            dict(max_preconditioner_dim=8),
            (
                r"^Shampoo: invalid max_preconditioner_dim=8 / use_merge_dims=True after the first step: they cut this "
                r"\(2, 3, 4\) tensor into other blocks .* so they cannot change after the first step$"
            ),
        ),
        (
            dict(),
            dict(use_merge_dims=False),
            r"^Shampoo: invalid max_preconditioner_dim=1024 / use_merge_dims=False after the first step: ",
        ),
        (
            dict(),
            dict(preconditioner_dtype="float64"),
            (
                r"^Shampoo: invalid preconditioner_dtype='float64' after the first step in torch\.float32: the factor "
                r"matrices keep their dtype, so it cannot change after the first step$"
            ),
        ),
    ],
    ids=["betas", "grafting_type", "max_preconditioner_dim", "use_merge_dims", "preconditioner_dtype"],
)
def test_options_that_cannot_change_after_the_first_step_raise_before_anything_changes(
    built: dict, changed: dict, message: str
) -> None:
    ps, opt = _stepped(**built)
    before = [p.clone() for p in ps]
    saved = h.roundtrip(opt.state_dict())
    opt.param_groups[0].update(changed)  # the first group's (2, 3, 4) tensor is the one that objects
    opt.param_groups[1].update(changed)
    with pytest.raises(ValueError, match=message):
        opt.step()
    # nothing moved, no step counted, no state added: the run can go on once the option is set back
    assert all(torch.equal(p, b) for p, b in zip(ps, before))
    state = opt.state_dict()["state"]
    for i in saved["state"]:
        assert state[i].keys() == saved["state"][i].keys()
        assert all(torch.equal(state[i][k], v) for k, v in saved["state"][i].items())
    # before the first step the same options are free
    fresh, _ = _stepped(steps=1, **{**built, **changed})
    assert not torch.equal(fresh[0], _stepped(steps=0)[0][0])


def test_options_read_at_every_step_follow_a_scheduler() -> None:
    # OneCycleLR cycles betas[0] (cycle_momentum): the filtered gradient follows the value of each step
    p = torch.zeros(3, dtype=torch.float64)
    opt = Shampoo([p], betas=(0.9, 1.0), **F64)
    sched = torch.optim.lr_scheduler.OneCycleLR(opt, max_lr=0.1, total_steps=10, base_momentum=0.5, max_momentum=0.9)
    average = torch.zeros(3, dtype=torch.float64)
    for g in ([1.0, -2.0, 0.5], [3.0, 1.0, -1.0], [0.5, 0.5, 2.0]):
        beta1 = opt.param_groups[0]["betas"][0]
        p.grad = torch.tensor(g, dtype=torch.float64)
        opt.step()
        sched.step()
        average = beta1 * average + (1 - beta1) * p.grad
        assert torch.allclose(opt.state[p]["filtered_grad"], average, rtol=0, atol=1e-15)
    assert opt.param_groups[0]["betas"][0] != 0.9  # the scheduler did change it


def test_max_grad_norm_clips_every_gradient_by_the_norm_of_all_of_them() -> None:
    # before start_preconditioning_step with SGD grafting, a step is -lr times the (clipped) gradient
    kw = dict(lr=0.1, betas=(0.0, 1.0), grafting_type="sgd", precondition_frequency=100, **F64)
    for max_grad_norm, scale in ((6.5, 0.5), (13.0, 1.0), (26.0, 1.0)):  # the gradients' norm is 13
        a, b, c = torch.zeros(2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64), torch.zeros(2)
        opt = Shampoo([{"params": [a]}, {"params": [b]}, {"params": [c], "max_grad_norm": None}], **kw)
        opt.param_groups[0]["max_grad_norm"] = opt.param_groups[1]["max_grad_norm"] = max_grad_norm
        a.grad, b.grad = torch.tensor([3.0, 4.0], dtype=torch.float64), torch.tensor([12.0], dtype=torch.float64)
        c.grad = torch.zeros(2)  # counts in the norm (it adds 0) and, in a group without clipping, is not clipped
        opt.step()
        assert torch.equal(a, -0.1 * scale * torch.tensor([3.0, 4.0], dtype=torch.float64))
        assert torch.equal(b, -0.1 * scale * torch.tensor([12.0], dtype=torch.float64))
    # a group without clipping keeps its gradient, while another group's is clipped by the norm of both
    a, c = torch.zeros(2, dtype=torch.float64), torch.zeros(1, dtype=torch.float64)
    opt = Shampoo([{"params": [a], "max_grad_norm": 2.5}, {"params": [c]}], **kw)
    a.grad, c.grad = torch.tensor([3.0, 4.0], dtype=torch.float64), torch.tensor([0.0], dtype=torch.float64)
    opt.step()
    c.grad = torch.tensor([5.0 * math.sqrt(3.0)], dtype=torch.float64)  # now the norm of both is 10
    a_before = a.clone()
    opt.step()
    assert torch.allclose(a - a_before, -0.1 * 0.25 * torch.tensor([3.0, 4.0], dtype=torch.float64), rtol=1e-15)
    assert torch.allclose(c, -0.1 * torch.tensor([5.0 * math.sqrt(3.0)], dtype=torch.float64), rtol=1e-15)


@pytest.mark.parametrize(
    ("dtype", "preconditioner_dtype", "bar"),
    [
        # measured (2026-12-01): 0 (the same float64 arithmetic as the float64 run)
        (torch.float32, torch.float64, 1e-12),
        # measured 1.7e-7 (2026-12-01, eigh in float32 as the reference; 4.9e-8 and 4.2e-8 with float64 eigh):
        # float32's rounding, where bfloat16 or float16 factors are 3.6e-3 / 6.8e-4 off
        (torch.bfloat16, torch.float32, 1e-6),
        (torch.float16, torch.float32, 1e-6),
        (torch.float32, torch.float32, 1e-6),
    ],
    ids=str,
)
def test_preconditioner_dtype_holds_the_factors_and_sets_the_accuracy_of_the_roots(
    dtype: torch.dtype, preconditioner_dtype: torch.dtype, bar: float
) -> None:
    # gradients that bfloat16 holds exactly: the float64 run's roots are the truth for every dtype
    gen = torch.Generator().manual_seed(2)
    grads = [torch.randn(4, 3, generator=gen, dtype=torch.float64).bfloat16().double() for _ in range(40)]

    def roots(dtype: torch.dtype, preconditioner_dtype: torch.dtype) -> dict[str, torch.Tensor]:
        p = torch.zeros(4, 3, dtype=dtype)
        opt = Shampoo([p], precondition_frequency=5, use_merge_dims=False, preconditioner_dtype=preconditioner_dtype)
        for g in grads:
            p.grad = g.to(dtype)
            opt.step()
        state = opt.state[p]
        for key in ("block_0.factor_matrix_0", "block_0.inv_factor_matrix_1", "filtered_grad"):
            assert state[key].dtype == preconditioner_dtype, key
        assert state["grafting_preconditioner"].dtype == dtype
        return {k: v.double() for k, v in state.items() if "inv_factor" in k}

    truth = roots(torch.float64, torch.float64)
    ours = roots(dtype, preconditioner_dtype)
    for key, root in truth.items():
        assert ((ours[key] - root).abs().max() / root.abs().max()).item() <= bar, key
    if preconditioner_dtype != dtype and dtype != torch.float32:  # the option is what makes them accurate
        same = roots(dtype, dtype)
        assert all(((same[k] - root).abs().max() / root.abs().max()).item() > 1e-4 for k, root in truth.items())


def test_a_checkpoint_keeps_the_preconditioner_dtype_and_takes_it_by_name() -> None:
    ps, opt = _stepped(preconditioner_dtype=torch.float64)
    ps32 = [p.float() for p in ps]
    loaded = Shampoo([{"params": ps32[:1]}, {"params": ps32[1:]}])
    loaded.load_state_dict(h.roundtrip(opt.state_dict()))
    for p, q in zip(ps, ps32):
        for key, value in opt.state[p].items():
            expected = torch.float64 if "factor_matrix" in key or key == "filtered_grad" else torch.float32
            assert loaded.state[q][key].dtype == expected and torch.equal(loaded.state[q][key], value.to(expected))
    # a run configuration keeps a dtype by its name ('float64'): the same steps
    by_name, named = _stepped(preconditioner_dtype="float64")
    assert all(torch.equal(a, b) for a, b in zip(ps, by_name))
    assert named.state[by_name[0]]["block_0.factor_matrix_0"].dtype == torch.float64


@pytest.mark.parametrize(("tolerance", "bar"), [(1e-12, 1e-10), (1e-6, 1e-5)])
def test_newton_roots_equal_the_eigendecompositions_to_their_tolerance(tolerance: float, bar: float) -> None:
    # full-rank factors (12 steps of a 4 x 3 matrix) with epsilon 1e-6: both methods converge to the same root
    def roots(**kw) -> dict[str, torch.Tensor]:
        gen = torch.Generator().manual_seed(4)
        p = torch.randn(4, 3, generator=gen, dtype=torch.float64)
        opt = Shampoo([p], epsilon=1e-6, precondition_frequency=4, use_merge_dims=False, **F64, **kw)
        for _ in range(12):
            p.grad = torch.randn(4, 3, generator=gen, dtype=torch.float64)
            opt.step()
        return {k: v for k, v in opt.state[p].items() if "inv_factor" in k}

    eigen, newton = roots(), roots(root_inv_method="newton", newton_tolerance=tolerance)
    for key, root in eigen.items():
        gap = ((newton[key] - root).abs().max() / root.abs().max()).item()
        assert 0 < gap <= bar, key


def test_newton_warns_when_it_stops_before_its_tolerance() -> None:
    p = torch.zeros(3, dtype=torch.float64)
    opt = Shampoo([p], root_inv_method="newton", newton_max_iterations=1, **F64)
    p.grad = torch.tensor([1.0, 2.0, -1.0], dtype=torch.float64)
    with pytest.warns(
        RuntimeWarning, match=r"did not reach newton_tolerance=1e-06 in newton_max_iterations=1 for a 3 x 3"
    ):
        opt.step()
    assert torch.isfinite(p).all() and p.any()


def test_inverse_root_of_a_batch_is_nan_only_where_a_matrix_is_not_finite() -> None:
    # every matrix finite (the path without selections) and one NaN matrix in a batch give the same roots
    gen = torch.Generator().manual_seed(5)
    g = torch.randn(3, 4, 6, generator=gen, dtype=torch.float64)
    factors = g @ g.mT  # full rank: no shift of the eigenvalues
    eigenvalues, q = torch.linalg.eigh(factors)
    truth = q @ torch.diag_embed((eigenvalues + 1e-6) ** -0.25) @ q.mT

    def gap(a: torch.Tensor, b: torch.Tensor) -> float:
        return ((a - b).abs().max() / b.abs().max()).item()

    assert gap(matrix_inverse_root(factors, 4, 1e-6), truth) <= 1e-12
    factors[1, 2, 0] = float("nan")
    roots = matrix_inverse_root(factors, 4, 1e-6)
    assert roots[1].isnan().all()
    assert gap(roots[0], truth[0]) <= 1e-12 and gap(roots[2], truth[2]) <= 1e-12


def test_inverse_root_retries_in_float64_where_eigh_fails_in_float32(monkeypatch: pytest.MonkeyPatch) -> None:
    # as the reference's retry_double_precision; float32 factors are otherwise decomposed in float32
    eigh, dtypes = torch.linalg.eigh, []

    def failing_in_float32(x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        dtypes.append(x.dtype)
        if x.dtype == torch.float32:
            raise torch.linalg.LinAlgError("did not converge")
        return eigh(x)

    g = torch.randn(4, 6, generator=torch.Generator().manual_seed(6))
    factor = g @ g.T
    monkeypatch.setattr(torch.linalg, "eigh", failing_in_float32)
    root = matrix_inverse_root(factor, 4, 1e-6, dtype=None)
    assert dtypes == [torch.float32, torch.float64] and root.dtype == torch.float32
    assert torch.equal(root, matrix_inverse_root(factor, 4, 1e-6))  # float64 throughout, rounded once
