"""The flags torch.optim users pass (``fused``, ``capturable``, ``differentiable``, a tensor lr) work
here with torch's meaning, or are refused with an error that names the flag and says why."""

from __future__ import annotations

import copy
import inspect
import warnings

import pytest
import torch

import optimlab.optim as ours
from optimlab import optim
from optimlab.optim import _native

from .cases_nadam import TorchNAdam

F64 = torch.float64
#: every optimizer class the library exports
CLASSES = [
    cls
    for cls in (getattr(optim, name) for name in optim.__all__)
    if isinstance(cls, type) and issubclass(cls, optim.RuleOptimizer) and cls is not optim.RuleOptimizer
]
BASE = {"Adafactor": dict(relative_step=False, lr=0.01)}
#: the optimizers torch also has, with settings that exercise more than the defaults
TORCH = {
    "SGD": dict(momentum=0.9, weight_decay=0.01),
    "Adam": dict(amsgrad=True),
    "AdamW": dict(),
    "Adamax": dict(),
    "NAdam": dict(),
    "RAdam": dict(),
    "Adagrad": dict(lr_decay=0.01),
    "Adadelta": dict(),
    "RMSprop": dict(momentum=0.5, centered=True),
}


def _params() -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(shape, dtype=F64, generator=gen).requires_grad_() for shape in [(5, 7), (11,), ()]]


def _run(opt, params: list[torch.Tensor], steps: int, seed: int = 1, scheduler=None) -> None:
    gen = torch.Generator().manual_seed(seed)
    for _ in range(steps):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        opt.step()
        if scheduler is not None:
            scheduler.step()


def _gap(params, reference, start) -> float:
    """max |ours - torch| over max |torch's displacement|."""
    gap = max((p - r).abs().max().item() for p, r in zip(params, reference))
    moved = max((r - s).abs().max().item() for r, s in zip(reference, start))
    return gap / moved


def _torch_flags(torch_cls: type) -> dict[str, object]:
    """fused=True where torch's class has a fused step, capturable and differentiable False where it takes them."""
    taken = inspect.signature(torch_cls.__init__).parameters
    flags = dict(fused=True, capturable=False, differentiable=False)
    return {k: v for k, v in flags.items() if k in taken}


@pytest.mark.parametrize("name", TORCH)
def test_torch_flags_and_a_tensor_lr_give_torchs_result(name):
    settings = TORCH[name]
    # torch's fused steps (SGD, Adam, AdamW, Adagrad) read a tensor lr's value, as every path here
    # does; its single-tensor steps divide a float32 tensor lr by the bias correction in float32,
    # which Adamax and NAdam (1e-8 apart) show.  A float64 tensor takes that rounding out.
    lr = torch.tensor(0.01) if name not in ("Adamax", "NAdam") else torch.tensor(0.01, dtype=F64)
    torch_cls = TorchNAdam if name == "NAdam" else getattr(torch.optim, name)
    start = _params()
    ref_params = [p.detach().clone().requires_grad_() for p in start]
    ref = torch_cls(ref_params, lr=lr.clone(), **settings, **_torch_flags(torch_cls))
    _run(ref, ref_params, 20)
    params = [p.detach().clone().requires_grad_() for p in start]
    opt = getattr(ours, name)(params, lr=lr.clone(), **settings, fused=True, capturable=False, differentiable=False)
    _run(opt, params, 20)
    assert _gap(params, ref_params, start) <= 1e-9


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_flags_are_kept_in_every_param_group_as_torch_keeps_them(cls):
    opt = cls(_params(), **BASE.get(cls.__name__, {}), fused=False, capturable=False, differentiable=False)
    opt.add_param_group({"params": [torch.zeros(2, requires_grad=True)], "fused": True})
    first, second = opt.param_groups
    assert (first["fused"], first["capturable"], first["differentiable"], first["fast"]) == (False, False, False, None)
    # fused=True asks for the native path, as fast=True does
    assert (second["fused"], second["capturable"], second["differentiable"], second["fast"]) == (
        True,
        False,
        False,
        True,
    )
    if _native.available():
        assert _native.wanted(opt, second)


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_flags_torch_has_no_meaning_for_here_are_refused_with_the_reason(cls):
    n = cls.__name__
    base = BASE.get(n, {})
    refused = [
        (dict(capturable=True), rf"^{n}: invalid capturable=True: optimlab does not support CUDA-graph capture"),
        (dict(differentiable=True), rf"^{n}: invalid differentiable=True: optimlab does not support differentiating"),
        (
            dict(fused=True, fast=False),
            rf"^{n}: invalid fused=True with fast=False: fused=True asks for the native path",
        ),
        (dict(fused=True, foreach=True), rf"^{n}: invalid fused=True with foreach=True: as in torch.optim"),
        (dict(fused="yes"), rf"^{n}: invalid fused='yes': expected None, True or False$"),
    ]
    for kwargs, message in refused:
        with pytest.raises(ValueError, match=message):
            cls(_params(), **base, **kwargs)


@pytest.mark.parametrize("fast", [None, False])
def test_fused_false_and_none_are_the_default_step(fast):
    runs = []
    for fused in (None, False, "default"):
        params = _params()
        flags = {} if fused == "default" else dict(fused=fused)
        _run(ours.Adam(params, lr=0.01, fast=fast, **flags), params, 5)
        runs.append(params)
    assert all(torch.equal(p, q) for run in runs[1:] for p, q in zip(runs[0], run))


@pytest.mark.parametrize("path", [dict(fast=False), dict(fast=False, foreach=True), dict(fast=None)])
@pytest.mark.parametrize("name", ["Adam", "AdamW", "NAdam", "AdaBound", "Adafactor"])
def test_a_float32_tensor_lr_is_its_value_on_every_path(name, path):
    # bit for bit the run with lr = float(tensor): nothing computes with the float32 tensor itself
    if name == "Adafactor" and path.get("foreach"):
        pytest.skip("Adafactor has no multi-tensor path")
    cls = getattr(ours, name)
    base = dict(BASE.get(name, {}), **path)
    runs = []
    for lr in (torch.tensor(0.01), float(torch.tensor(0.01))):
        params = _params()
        _run(cls(params, **{**base, "lr": lr}), params, 8)
        runs.append(params)
    assert all(torch.equal(p, q) for p, q in zip(*runs))


@pytest.mark.parametrize("path", [dict(fast=False), dict(fused=True)])
def test_a_tensor_lr_changed_in_place_by_a_scheduler_is_honoured(path):
    # torch's schedulers write a tensor lr in place (fill_); every step reads it again
    runs = []
    for lr in (torch.tensor(0.05, dtype=F64), 0.05):
        params = _params()
        opt = ours.Adam(params, lr=lr, **path)
        _run(opt, params, 10, scheduler=torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7))
        runs.append(params)
        if torch.is_tensor(lr):
            assert opt.param_groups[0]["lr"] is lr and lr.item() == pytest.approx(0.05 * 0.7**10)
    assert all(torch.equal(p, q) for p, q in zip(*runs))
    # and beside torch's fused Adam, which reads the tensor the same way
    params, start = _params(), _params()
    ref_params = _params()
    lr, ref_lr = torch.tensor(0.05, dtype=F64), torch.tensor(0.05, dtype=F64)
    opt = ours.Adam(params, lr=lr, **path)
    ref = torch.optim.Adam(ref_params, lr=ref_lr, fused=True)
    _run(opt, params, 10, scheduler=torch.optim.lr_scheduler.ExponentialLR(opt, gamma=0.7))
    _run(ref, ref_params, 10, scheduler=torch.optim.lr_scheduler.ExponentialLR(ref, gamma=0.7))
    assert _gap(params, ref_params, start) <= 1e-9


def test_an_lr_set_to_zero_in_place_stops_the_parameters():
    params = _params()
    lr = torch.tensor(0.1)
    opt = ours.Adam(params, lr=lr)
    _run(opt, params, 3)
    before = [p.detach().clone() for p in params]
    lr.zero_()
    _run(opt, params, 3, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(params, before))


def test_a_torch_checkpoint_with_fused_loads_and_continues():
    start = _params()
    ref_params = [p.detach().clone().requires_grad_() for p in start]
    ref = torch.optim.AdamW(ref_params, lr=0.01, fused=True)
    _run(ref, ref_params, 5)
    params = [p.detach().clone().requires_grad_() for p in ref_params]
    opt = ours.AdamW(params)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))  # as from a file: torch's load shares tensors
    assert (opt.param_groups[0]["fused"], opt.param_groups[0]["fast"]) == (True, True)
    _run(ref, ref_params, 5, seed=2)
    _run(opt, params, 5, seed=2)
    assert _gap(params, ref_params, start) <= 1e-9


@pytest.mark.parametrize("name", ["Adam", "Adamax", "SGD"])
def test_our_checkpoint_with_the_flags_loads_into_torch(name):
    settings = dict(TORCH[name], lr=0.01)
    start = _params()
    params = [p.detach().clone().requires_grad_() for p in start]
    opt = getattr(ours, name)(params, **settings, fused=True, capturable=False, differentiable=False)
    _run(opt, params, 5)
    ref_params = [p.detach().clone().requires_grad_() for p in params]
    ref = getattr(torch.optim, name)(ref_params, **settings)
    ref.load_state_dict(copy.deepcopy(opt.state_dict()))
    _run(opt, params, 5, seed=2)
    _run(ref, ref_params, 5, seed=2)
    assert _gap(params, ref_params, start) <= 1e-9


def test_a_capturable_torch_checkpoint_is_refused_with_the_reason():
    params = _params()
    ref = torch.optim.Adam(params, lr=0.01)
    _run(ref, params, 2)
    saved = ref.state_dict()
    saved["param_groups"][0]["capturable"] = True  # what a CUDA-graph run saves
    opt = ours.Adam(params)
    with pytest.raises(
        ValueError, match=r"^Adam: invalid capturable=True: optimlab does not support CUDA-graph capture"
    ):
        opt.load_state_dict(saved)
    assert not opt.state


def test_fast_false_turns_off_what_a_torch_checkpoints_fused_asked_for():
    params = _params()
    ref = torch.optim.Adam(params, lr=0.01, fused=True)
    _run(ref, params, 2)
    opt = ours.Adam(params, fast=False)
    opt.load_state_dict(copy.deepcopy(ref.state_dict()))
    group = opt.param_groups[0]
    assert (group["fused"], group["fast"]) == (False, False)
    assert not _native.wanted(opt, group)


def test_fused_says_which_tensors_the_native_path_does_not_take():
    # torch's fused step takes 16-bit tensors; here they take the reference path, and fused=True says so
    with pytest.warns(RuntimeWarning, match=r"^Adam: fused=True, but .* this group's torch\.bfloat16 on cpu tensors"):
        ours.Adam(
            [torch.zeros(3, dtype=torch.bfloat16, requires_grad=True), torch.zeros(2, requires_grad=True)], fused=True
        )
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        ours.Adam([torch.zeros(3, dtype=torch.bfloat16, requires_grad=True)], fused=None)
        ours.Adam([torch.zeros(3, dtype=torch.float32, requires_grad=True)], fused=True)


class _OnAnotherDevice(torch.Tensor):
    """A CPU tensor that says it is not (no CUDA here): what the step decides from ``is_cpu``/``is_cuda``."""

    @property
    def is_cuda(self) -> bool:
        return True

    @property
    def is_cpu(self) -> bool:
        return False


@pytest.mark.filterwarnings("ignore:Adam. fused=True, but the native path takes only")  # said for these tensors
@pytest.mark.parametrize("flags", [dict(fused=True), dict(fast=True), dict()])
def test_a_group_without_cpu_tensors_keeps_the_multi_tensor_path(flags, monkeypatch):
    # torch.optim's default on CUDA is foreach; the native path has nothing to take there
    taken = []
    monkeypatch.setattr(_native, "step_group", lambda *args: taken.append("native"))
    monkeypatch.setattr(ours.Adam, "_step_foreach", lambda *args: taken.append("foreach"))
    params = [_OnAnotherDevice._make_subclass(_OnAnotherDevice, torch.zeros(3), True)]
    params[0].grad = torch.ones(3)
    ours.Adam(params, **flags).step()
    cpu = [torch.zeros(3, requires_grad=True)]
    cpu[0].grad = torch.ones(3)
    ours.Adam(cpu, **flags).step()
    # and a CPU group takes the native path where a compiler is found (the per-parameter path otherwise)
    assert taken == ["foreach"] + (["native"] if _native.available() else [])
