"""The batched sweep engine against the optimizer classes run one configuration at a time."""

from __future__ import annotations

import pytest
import torch

from optimlab import surfaces
from optimlab.optim import Adam
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
        alone = _alone(SADDLE, Adam, cfg["start"], 120, 10, lr=0.005, betas=(cfg["beta1"], cfg["beta2"]), eps=cfg["eps"])
        assert _displacement_gap(result.path[c], alone, cfg["start"]) <= 1e-9, cfg


def test_degenerate_betas_get_a_status_instead_of_an_error():
    result = sweep(SADDLE, Adam, {"beta1": [0.9, 1.0], "beta2": [0.999, 1.0]}, options=dict(lr=0.005), steps=50)
    by = {(c["beta1"], c["beta2"]): (s, int(b)) for c, s, b in zip(result.configs, result.status, result.first_bad_step)}
    # beta1 = 1: m stays 0 and 1 - beta1^t = 0, so m_hat = 0/0 = NaN at the first step;
    # beta2 = 1: v stays 0 and 1 - beta2^t = 0, so v_hat = 0/0 = NaN at the first step.
    assert by[(1.0, 0.999)] == ("diverged", 1)
    assert by[(0.9, 1.0)] == ("diverged", 1)
    assert by[(0.9, 0.999)][0] == "moving"


def test_statuses_converged_stuck_and_out_of_bounds():
    booth = surfaces.get("booth")
    result = sweep(booth, Adam, {"lr": [0.0, 0.1]}, steps=3000)
    assert result.status == ["stuck", "converged"]
    far = sweep(SADDLE, Adam, {"lr": [0.5]}, steps=600, divergence_radius=20.0)
    assert far.status == ["diverged"] and 0 < int(far.first_bad_step[0]) < 600


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
