"""The batched sweep engine against the optimizer classes run one configuration at a time."""

from __future__ import annotations

import csv

import pytest
import torch

from optimlab import surfaces
from optimlab.cli import main
from optimlab.optim import (
    ADOPT,
    LAMB,
    MARS,
    SGD,
    AdaBelief,
    AdaBound,
    Adadelta,
    Adafactor,
    Adagrad,
    Adam,
    Adamax,
    AdaMod,
    AdamW,
    AdEMAMix,
    Adan,
    Lion,
    Lookahead,
    NAdam,
    Prodigy,
    RAdam,
    RMSprop,
    ScheduleFreeAdamW,
    ScheduleFreeSGD,
    Yogi,
)
from optimlab.optim._base import RuleOptimizer
from optimlab.sweep import sweep

SADDLE = surfaces.get("saddle")


def _alone(surface, opt_cls, start, steps, record, **kwargs):
    """One configuration through the torch.optim-style class; validation bypassed for degenerate values."""
    w = torch.tensor(start, dtype=torch.float64)
    opt = opt_cls([w])
    opt.param_groups[0].update(kwargs)
    path = []
    for t in range(1, steps + 1):
        w.grad = surface.grad(w)
        opt.step()
        if t % record == 0:
            path.append(w.clone())
    return torch.stack(path)


def _displacement_gap(batched, alone, start):
    disp = (alone - torch.tensor(start, dtype=torch.float64)).abs().max()
    return ((batched - alone).abs().max() / disp).item()


def test_adam_grid_equals_each_configuration_alone():
    grid = {"beta1": [0.9, 0.5, 0.0], "beta2": [0.999, 0.9], "eps": [1e-8, 0.1]}
    starts = [(-3.0, 0.8), (0.5, 1.5)]
    result = sweep(SADDLE, Adam, grid, options=dict(lr=0.005), starts=starts, steps=120, record_every=10)
    assert len(result) == 3 * 2 * 2 * 2
    for c, cfg in enumerate(result.configs):
        alone = _alone(
            SADDLE, Adam, cfg["start"], 120, 10, lr=0.005, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"]
        )
        assert _displacement_gap(result.path[c], alone, cfg["start"]) <= 1e-9, cfg


def test_degenerate_betas_get_a_status_instead_of_an_error():
    result = sweep(SADDLE, Adam, {"beta1": [0.9, 1.0], "beta2": [0.999, 1.0]}, options=dict(lr=0.005), steps=50)
    by = {
        (c["beta1"], c["beta2"]): (s, int(b)) for c, s, b in zip(result.configs, result.status, result.first_bad_step)
    }
    # beta1 = 1: m stays 0 and 1 - beta1^t = 0, so m_hat = 0/0 = NaN at the first step;
    # beta2 = 1: v stays 0 and 1 - beta2^t = 0, so v_hat = 0/0 = NaN at the first step.
    assert by[(1.0, 0.999)] == ("diverged", 1)
    assert by[(0.9, 1.0)] == ("diverged", 1)
    assert by[(0.9, 0.999)][0] == "moving"


def test_statuses_converged_stuck_and_out_of_bounds():
    booth = surfaces.get("booth")
    result = sweep(booth, Adam, {"lr": [0.0, 0.1]}, steps=3000)
    assert result.status == ["stuck", "converged"]
    far = sweep(booth, SGD, {"lr": [0.2]}, steps=600, divergence_radius=20.0)
    assert far.status == ["diverged"] and 0 < int(far.first_bad_step[0]) < 600


def test_leaving_the_unbounded_saddle_downhill_is_escaped_not_diverged():
    assert not SADDLE.bounded_below and surfaces.get("rosenbrock").bounded_below
    # (-3, 0.8): lr 0.05 and 0.5 run down the w2 direction out of the box; lr 0.005 is still inside at 600.
    # (-3, 1.0) is on the stable axis w2 = 1: SGD with lr 1.5 overshoots w1 by a factor 2 per step, uphill.
    result = sweep(SADDLE, Adam, {"lr": [0.005, 0.05, 0.5]}, steps=600, record_every=1)
    assert result.status == ["moving", "escaped", "escaped"]
    for c in (1, 2):
        t = int(result.first_escape_step[c])
        inside = (result.path[c].abs() <= 4).all(-1)  # the saddle's box is [-4, 4]^2; path[c, i] is step i + 1
        assert not inside[t - 1] and inside[t - 2] and result.loss[c, t - 1] < result.start_loss[c]
        assert int(result.first_bad_step[c]) == -1 and result.summary_rows()[c]["steps_to_escape"] == t
    uphill = sweep(SADDLE, SGD, {"lr": [1.5]}, starts=[(-3.0, 1.0)], steps=100)
    assert uphill.status == ["diverged"] and int(uphill.first_escape_step[0]) == -1
    assert sweep(surfaces.get("rosenbrock"), SGD, {"lr": [0.01]}, steps=50).status == ["diverged"]


def test_recording_and_target_steps():
    result = sweep(surfaces.get("booth"), Adam, {"lr": [0.1]}, steps=295, record_every=10, target=1e-3)
    assert result.steps.tolist() == list(range(10, 291, 10)) + [295]
    hit = int(result.first_target_step[0])
    assert hit > 0
    alone = _alone(surfaces.get("booth"), Adam, surfaces.get("booth").start, 295, 1, lr=0.1)
    losses = surfaces.get("booth")(alone)
    assert losses[hit - 1] <= 1e-3 and (hit == 1 or losses[hit - 2] > 1e-3)


def test_gradient_clipping_is_off_unless_asked():
    plain = sweep(SADDLE, Adam, {"lr": [0.005]}, steps=20)
    clipped = sweep(SADDLE, Adam, {"lr": [0.005]}, steps=20, grad_clip=1e-3)
    assert plain.settings["grad_clip"] is None and clipped.settings["grad_clip"] == 1e-3
    # Adam is (nearly) invariant to gradient scale, except through eps: tiny clipped gradients make eps matter
    assert not torch.allclose(plain.path, clipped.path)


def test_bad_arguments_are_named():
    with pytest.raises(ValueError, match="no swept hyperparameter 'beta3'.*beta1"):
        sweep(SADDLE, Adam, {"beta3": [0.1]})
    with pytest.raises(ValueError, match=r"invalid steps=0: expected an integer >= 1"):
        sweep(SADDLE, Adam, steps=0)
    with pytest.raises(ValueError, match=r"grid\['lr'\] is empty"):
        sweep(SADDLE, Adam, {"lr": []})


# --- every option the classes take, each configuration equal to its class stepping alone -------------

ROSENBROCK = surfaces.get("rosenbrock")


def _class_path(surface, cls, kwargs, start, steps, record, lookahead=None):
    """The real optimlab.optim class (reference path), one configuration, float64."""
    w = torch.tensor(start, dtype=torch.float64)
    opt = cls([w], fast=False, **kwargs)
    if lookahead is not None:
        opt = Lookahead(opt, **lookahead)
    if _has_modes(cls):
        opt.train()  # Schedule-Free starts in eval mode
    path = []
    for t in range(1, steps + 1):
        w.grad = surface.grad(w)
        opt.step()
        if t % record == 0:
            path.append(w.clone())
    return torch.stack(path)


# (class, fixed constructor options, grid in rule names, constructor kwargs of each grid value)
OPTION_CASES = [
    (SGD, dict(lr=1e-4, momentum=0.9), {}, None),
    (SGD, dict(lr=1e-4, momentum=0.9, nesterov=True), {}, None),
    (SGD, dict(lr=1e-4, momentum=0.9, dampening=0.5, weight_decay=0.1), {}, None),
    (SGD, dict(lr=1e-4), {"momentum": [0.0, 0.5, 0.9]}, lambda m: dict(momentum=m)),
    (SGD, dict(lr=1e-4, nesterov=True), {"momentum": [0.5, 0.9]}, lambda m: dict(momentum=m)),
    (RMSprop, dict(lr=1e-3, momentum=0.9), {}, None),
    (RMSprop, dict(lr=1e-3, centered=True), {}, None),
    (RMSprop, dict(lr=1e-3, centered=True), {"momentum": [0.0, 0.9]}, lambda m: dict(momentum=m)),
    (Adafactor, {}, {}, None),
    (Adafactor, dict(beta1=0.9), {}, None),
    (Adafactor, dict(warmup_init=True, scale_parameter=False), {}, None),
    (Adafactor, dict(relative_step=False, lr=0.01), {}, None),
    (Adafactor, {}, {"beta1": [0.0, 0.5, 0.9]}, lambda b: dict(beta1=b)),
    (Adafactor, dict(relative_step=False), {"lr": [1e-3, 1e-2]}, lambda lr: dict(lr=lr)),
    (Adafactor, dict(relative_step=False, lr=1e-2), {"eps2": [1e-3, 0.1]}, lambda e: dict(eps=(1e-30, e))),
    (Adam, dict(lr=1e-2, amsgrad=True, weight_decay=0.1), {}, None),
    (Adam, dict(lr=1e-2), {"beta2": [0.9, 0.999]}, lambda b: dict(betas=(0.9, b))),
    (AdamW, dict(lr=1e-2), {}, None),
    (Adamax, {}, {}, None),
    (NAdam, dict(lr=1e-2), {}, None),
    (RAdam, dict(lr=1e-4), {}, None),  # its first steps are SGD steps
    (Yogi, dict(zero_exp_avg=True), {"initial_accumulator": [1e-6, 1.0]}, lambda v: dict(initial_accumulator=v)),
    (AdaBound, dict(amsbound=True), {"lr": [1e-3, 1e-2]}, lambda lr: dict(lr=lr)),
    (AdaMod, dict(lr=1e-2), {}, None),
    (AdaBelief, dict(lr=1e-4, amsgrad=True), {}, None),  # rectified: SGD steps first
    (Adagrad, {}, {"initial_accumulator_value": [0.0, 1.0]}, lambda v: dict(initial_accumulator_value=v)),
    (Adadelta, {}, {}, None),
    (Lion, dict(lr=1e-3, weight_decay=0.1), {"beta1": [0.9, 0.5]}, lambda b: dict(betas=(b, 0.99))),
    (ADOPT, dict(lr=1e-2, weight_decay=0.1, decouple=True), {}, None),
    (ADOPT, dict(lr=1e-2, original=True, clip_lambda=None), {"beta2": [0.9, 0.9999]}, lambda b: dict(betas=(0.9, b))),
    (AdEMAMix, dict(lr=1e-2, alpha_warmup=30, beta3_warmup=30, weight_decay=0.1), {}, None),
    (AdEMAMix, dict(lr=1e-2), {"alpha": [0.0, 5.0]}, lambda a: dict(alpha=a)),
    (AdEMAMix, dict(lr=1e-2), {"beta3": [0.99, 0.9999]}, lambda b: dict(betas=(0.9, 0.999, b))),
    (Adan, dict(lr=1e-2), {"beta2": [0.5, 0.92]}, lambda b: dict(betas=(0.98, b, 0.99))),
    (Adan, dict(lr=1e-2, weight_decay=0.1), {}, None),
    (Adan, dict(lr=1e-2, weight_decay=0.1, no_prox=True), {}, None),
    (MARS, dict(lr=1e-2, optimize_1d=True), {"gamma": [0.0, 0.025, 0.5]}, lambda g: dict(gamma=g)),
    (MARS, dict(lr=1e-2, optimize_1d=True, amsgrad=True, weight_decay=0.1), {}, None),
    (MARS, dict(lr=1e-2), {}, None),  # a vector takes MARS's AdamW with lr_1d, betas_1d, weight_decay_1d
    (LAMB, dict(lr=1e-2, weight_decay=0.1), {"beta1": [0.9, 0.5]}, lambda b: dict(betas=(b, 0.999))),
    (LAMB, dict(lr=1e-2, bias_correction=False, clamp_value=0.5), {}, None),
]


@pytest.mark.parametrize(
    ("cls", "options", "grid", "ctor"), OPTION_CASES, ids=lambda v: getattr(v, "__name__", None) or str(v)
)
def test_each_configuration_equals_its_class_stepping_alone(cls, options, grid, ctor):
    start, steps = ROSENBROCK.start, 60
    result = sweep(ROSENBROCK, cls, grid, options=options, steps=steps, record_every=5)
    assert len(result) == max(1, *(len(v) for v in grid.values())) if grid else len(result) == 1
    for c, cfg in enumerate(result.configs):
        extra = ctor(*(cfg[k] for k in grid)) if grid else {}
        alone = _class_path(ROSENBROCK, cls, {**options, **extra}, start, steps, 5)
        assert torch.isfinite(alone).all() and result.status[c] in ("moving", "converged"), cfg
        assert _displacement_gap(result.path[c], alone, start) <= 1e-12, cfg


def test_maximize_and_lookahead_equal_their_classes():
    saddle_top = (0.9, -2.0)  # maximizing the saddle climbs along w1 and settles w2 at 1
    result = sweep(SADDLE, Adam, options=dict(lr=0.01, maximize=True), starts=[saddle_top], steps=50, record_every=5)
    alone = _class_path(SADDLE, Adam, dict(lr=0.01, maximize=True), saddle_top, 50, 5)
    assert _displacement_gap(result.path[0], alone, saddle_top) <= 1e-12
    la = dict(k=3, alpha=0.5)
    result = sweep(ROSENBROCK, Adam, {"lr": [1e-2, 1e-3]}, lookahead=la, steps=60, record_every=5)
    for c, cfg in enumerate(result.configs):
        alone = _class_path(ROSENBROCK, Adam, dict(lr=cfg["lr"]), ROSENBROCK.start, 60, 5, lookahead=la)
        assert _displacement_gap(result.path[c], alone, ROSENBROCK.start) <= 1e-12


@pytest.mark.parametrize(
    ("cls", "options", "grid", "match"),
    [
        # relative_step=True computes its own step size: an lr would be silently ignored
        (Adafactor, {}, {"lr": [0.1]}, r"Adafactor: invalid lr=0\.1 with relative_step=True"),
        (Adafactor, dict(lr=1e-4), {}, r"Adafactor: invalid lr=0\.0001 with relative_step=True"),
        (Adafactor, dict(relative_step=False), {}, r"Adafactor: invalid lr=None with relative_step=False"),
        (
            Adafactor,
            dict(relative_step=False, lr=0.1, warmup_init=True),
            {},
            "warmup_init=True with relative_step=False",
        ),
        # Nesterov with momentum 0 is plain gradient descent: the option would do nothing
        (
            SGD,
            dict(nesterov=True),
            {"momentum": [0.0, 0.9]},
            r"SGD: invalid nesterov=True with momentum=0\.0.*grid values \{'momentum': 0\.0\}",
        ),
    ],
)
def test_an_option_the_rule_would_ignore_is_refused_before_any_step(cls, options, grid, match):
    with pytest.raises(ValueError, match=match):
        sweep(ROSENBROCK, cls, grid, options=options, steps=5)


def test_degenerate_single_values_still_run():
    # out-of-range numbers are results (status), not errors, also as one fixed value
    result = sweep(SADDLE, Adam, {"beta1": [1.0]}, options=dict(lr=0.005), steps=5)
    assert result.status == ["diverged"]
    result = sweep(SADDLE, SGD, options=dict(lr=-0.01), steps=5)
    assert result.status == ["moving"]


def test_the_cli_runs_every_option_as_its_class(tmp_path):
    """The commands of issue 10 that crashed or ignored their options, run as a user types them."""
    cases = {
        "SGD(lr=0.001, momentum=0.9)": (SGD, dict(lr=0.001, momentum=0.9)),
        "SGD(lr=0.001, momentum=0.9, nesterov=True)": (SGD, dict(lr=0.001, momentum=0.9, nesterov=True)),
        "RMSprop(lr=0.001, momentum=0.9, centered=True)": (RMSprop, dict(lr=0.001, momentum=0.9, centered=True)),
        "Adafactor(relative_step=False, lr=0.01)": (Adafactor, dict(relative_step=False, lr=0.01)),
        "Adafactor(beta1=0.9)": (Adafactor, dict(beta1=0.9)),
    }
    argv = ["surface", "rosenbrock", "--steps", "30", "--record-every", "10", "--out", str(tmp_path / "s")]
    for spec in cases:
        argv += ["--opt", spec]
    assert main(argv) == 0
    rows = _csv(tmp_path / "s" / "summary.csv")
    assert len(rows) == len(cases)
    for row, (cls, kwargs) in zip(rows, cases.values()):
        alone = _class_path(ROSENBROCK, cls, kwargs, ROSENBROCK.start, 30, 30)[-1]
        got = torch.tensor([float(row["final_w1"]), float(row["final_w2"])], dtype=torch.float64)
        assert _displacement_gap(got, alone, ROSENBROCK.start) <= 1e-12, row


def test_the_cli_refuses_an_ignored_lr_and_sweeps_momentum_through_zero(tmp_path, capsys):
    assert (
        main(["surface", "rosenbrock", "--opt", "Adafactor(lr=0.1)", "--steps", "5", "--out", str(tmp_path / "a")]) == 2
    )
    assert "Adafactor: invalid lr=0.1 with relative_step=True" in capsys.readouterr().err
    argv = ["sweep", "rosenbrock", "--opt", "SGD(lr=0.0001)", "--grid", "momentum=0,0.5,0.9", "--steps", "20"]
    assert main([*argv, "--out", str(tmp_path / "m")]) == 0
    rows = _csv(tmp_path / "m" / "grid.csv")
    finals = {float(r["momentum"]): (float(r["final_w1"]), float(r["final_w2"])) for r in rows}
    assert len(set(finals.values())) == 3  # momentum changes the path: it is not ignored
    argv = ["sweep", "rosenbrock", "--opt", "Adafactor", "--grid", "beta1=0,0.9", "--steps", "20"]
    assert main([*argv, "--out", str(tmp_path / "b")]) == 0


def _csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _rule_classes():
    from optimlab import optim

    classes = [getattr(optim, n) for n in optim.__all__]
    return [c for c in classes if isinstance(c, type) and issubclass(c, RuleOptimizer) and c is not RuleOptimizer]


def _steps_like_its_rule(cls):
    import inspect

    return inspect.unwrap(cls.step) is inspect.unwrap(RuleOptimizer.step)


@pytest.mark.parametrize("cls", _rule_classes(), ids=lambda c: c.__name__)
def test_every_optimizer_at_its_defaults_equals_its_class(cls):
    booth = surfaces.get("booth")
    result = sweep(booth, cls, steps=40, record_every=5)
    alone = _class_path(booth, cls, {}, booth.start, 40, 5)
    assert torch.isfinite(alone).all()
    if _has_modes(cls):
        return  # shown at its evaluation point: test_schedule_free_is_shown_at_its_evaluation_point
    if _steps_like_its_rule(cls):
        assert _displacement_gap(result.path[0], alone, booth.start) <= 1e-12
    else:  # the class itself steps (Prodigy): the same arithmetic, bit for bit
        assert torch.equal(result.path[0], alone)


def _has_modes(cls):
    return callable(getattr(cls, "train", None)) and callable(getattr(cls, "eval", None))


@pytest.mark.parametrize(
    ("cls", "options", "grid"),
    [
        (ScheduleFreeAdamW, dict(lr=0.05), {"beta1": [0.9, 0.5]}),
        (ScheduleFreeSGD, dict(lr=1e-3, warmup_steps=10, weight_decay=0.01), {"momentum": [0.9, 0.5]}),
    ],
)
def test_schedule_free_is_shown_at_its_evaluation_point(cls, options, grid):
    """Gradients at y, path and loss at x = what eval() gives after training untouched by evaluations."""
    steps = 50
    result = sweep(ROSENBROCK, cls, grid, options=options, steps=steps, record_every=steps)
    (name, values), pair = next(iter(grid.items())), "betas" if "beta1" in grid else None
    for c, value in enumerate(values):
        w = torch.tensor(ROSENBROCK.start, dtype=torch.float64)
        kwargs = {**options, pair: (value, 0.999)} if pair else {**options, name: value}
        opt = cls([w], fast=False, **kwargs)
        opt.train()
        for _ in range(steps):
            w.grad = ROSENBROCK.grad(w)
            opt.step()
        y = w.clone()
        opt.eval()
        assert torch.equal(result.path[c, -1], w), value  # x, and y was never rounded by an eval()/train()
        assert not torch.allclose(w, y), value  # x is not the training point
        assert result.loss[c, -1] == ROSENBROCK(w)


def test_schedule_free_without_momentum_has_no_evaluation_point_and_is_diverged_not_an_error():
    result = sweep(ROSENBROCK, ScheduleFreeSGD, {"momentum": [0.9, 0.0]}, options=dict(lr=1e-3), steps=5)
    assert result.status == ["moving", "diverged"] and int(result.first_bad_step[1]) == 1


def test_prodigy_estimates_its_step_size_per_configuration():
    """Prodigy's d is one number over all of an optimizer's tensors: each configuration is its own optimizer
    over its own point, as a user training those two parameters gets, whatever else the grid holds."""
    booth = surfaces.get("booth")
    both = sweep(booth, Prodigy, {"lr": [1.0, 0.1]}, steps=40, record_every=5)
    one = sweep(booth, Prodigy, {"lr": [0.1]}, steps=40, record_every=5)
    assert torch.equal(both.path[1], one.path[0])
    for c, lr in enumerate((1.0, 0.1)):
        assert torch.equal(both.path[c], _class_path(booth, Prodigy, dict(lr=lr), booth.start, 40, 5))
    # d grew from d0 = 1e-6 by itself: 40 steps of 1e-6 would not have moved the point by 1e-4
    assert (both.path[0, -1] - both.start[0]).norm() > 5 and both.loss[0, -1] < both.start_loss[0] / 10


# --- the matrix problem: each configuration through its class over [U, V] ---------------------------------


def test_matrix_sweep_is_each_configuration_through_its_class_and_judges_by_the_loss():
    from optimlab.optim import Muon
    from optimlab.sweep import matrix_sweep

    mf = surfaces.MatrixFactorization()
    result = matrix_sweep(mf, Muon, {"lr": [0.01, 0.05]}, options=dict(ns_dtype=None), steps=30, record_every=10)
    assert result.steps.tolist() == [10, 20, 30] and result.start_loss == mf(*mf.start()).item()
    for c, lr in enumerate((0.01, 0.05)):
        u, v = mf.start()
        opt = Muon([u, v], lr=lr, ns_dtype=None)
        for _ in range(30):
            _, (u.grad, v.grad) = mf.value_and_grad(u, v)
            opt.step()
        assert result.loss[c, -1] == mf(u, v)
    sgd = matrix_sweep(mf, SGD, {"lr": [0.0, 0.3, 1.0]}, steps=200, record_every=50, target=1e-3)
    assert sgd.status == ["stuck", "converged", "diverged"]
    assert 0 < int(sgd.first_target_step[1]) < 200 and 0 < int(sgd.first_bad_step[2]) < 200
    assert [row["status"] for row in sgd.summary_rows()] == sgd.status
    with pytest.raises(ValueError, match="ScheduleFreeAdamW has train\\(\\)/eval\\(\\)"):
        matrix_sweep(mf, ScheduleFreeAdamW, steps=1)
