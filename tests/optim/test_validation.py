"""Hyperparameters are checked wherever they enter (constructor, add_param_group, load_state_dict),
and every error names the optimizer, the parameter, the value and what is allowed; nested
Lookahead saves and resumes exactly."""

from __future__ import annotations

import copy
import inspect
import io
import re
import warnings

import numpy as np
import pytest
import torch

from optimlab import optim
from optimlab.optim import SGD, Adam, Lookahead
from optimlab.optim._validate import HyperparameterTypeError

F64 = torch.float64
#: every optimizer class the library exports
CLASSES = [
    cls
    for cls in (getattr(optim, name) for name in optim.__all__)
    if isinstance(cls, type) and issubclass(cls, optim.RuleOptimizer) and cls is not optim.RuleOptimizer
]
#: the keyword arguments that make a valid optimizer of each class (Adafactor's lr must be None by default)
BASE = {"Adafactor": dict(relative_step=False, lr=0.01)}


def _params(n: int = 2) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(0)
    return [torch.randn(3, 4, dtype=F64, generator=gen).requires_grad_() for _ in range(n)]


def _make(cls: type, params: list[torch.Tensor] | None = None, **kwargs):
    return cls(_params() if params is None else params, **{**BASE.get(cls.__name__, {}), **kwargs})


def _options(cls: type) -> dict[str, object]:
    """The constructor's options and their defaults (``params`` left out)."""
    return {
        name: p.default
        for name, p in inspect.signature(cls.__init__).parameters.items()
        if name not in ("self", "params") and p.default is not inspect.Parameter.empty
    }


def _numbers(cls: type) -> list[str]:
    """The options that are numbers (a None default is a number that may be left out: Adafactor's lr, beta1)."""
    return [
        name
        for name, default in _options(cls).items()
        if (isinstance(default, (int, float)) and not isinstance(default, bool))
        or (default is None and name in ("lr", "beta1"))
    ]


def _pairs(cls: type) -> list[str]:
    return [name for name, default in _options(cls).items() if isinstance(default, tuple) and len(default) == 2]


def _flags(cls: type) -> list[str]:
    return [name for name, default in _options(cls).items() if isinstance(default, bool)]


def _steps(opt, params: list[torch.Tensor], n: int, seed: int) -> None:
    if hasattr(opt, "train"):  # optimizers with a training and an evaluation mode (schedule-free)
        opt.train()
    gen = torch.Generator().manual_seed(seed)
    for _ in range(n):
        for p in params:
            p.grad = torch.randn(p.shape, dtype=p.dtype, generator=gen)
        opt.step()


# -- types: the constructor ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_every_number_refuses_bools_strings_and_tensors_of_several_elements(cls):
    names = _numbers(cls)
    assert "lr" in names
    for name in names:
        for bad in (True, False, "0.5", torch.tensor([0.1, 0.2]), None if name not in ("lr", "beta1") else 1j):
            with pytest.raises(
                HyperparameterTypeError,
                match=rf"^{cls.__name__}: invalid {name}={re.escape(repr(bad))}: expected (a number|an integer)",
            ):
                _make(cls, **{name: bad})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_pairs_must_be_two_numbers(cls):
    for name in _pairs(cls):
        n = cls.__name__
        with pytest.raises(HyperparameterTypeError, match=rf"^{n}: invalid {name}=0\.9: expected a pair \("):
            _make(cls, **{name: 0.9})
        with pytest.raises(ValueError, match=rf"^{n}: invalid {name}=\(0\.9,\): expected a pair \(.*\), got 1 value$"):
            _make(cls, **{name: (0.9,)})
        with pytest.raises(ValueError, match=rf"^{n}: invalid {name}=\[0\.1, 0\.2, 0\.3\]: .* got 3 values$"):
            _make(cls, **{name: [0.1, 0.2, 0.3]})
        with pytest.raises(HyperparameterTypeError, match=rf"^{n}: invalid {name}\[0\]=True: expected a number"):
            _make(cls, **{name: (True, 1e-3)})
        with pytest.raises(HyperparameterTypeError, match=rf"^{n}: invalid {name}\[1\]='0\.999': expected a number"):
            _make(cls, **{name: (1e-3, "0.999")})


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_options_that_are_true_or_false_take_nothing_else(cls):
    names = _flags(cls)
    assert {"maximize", "capturable", "differentiable"} <= set(names)
    for name in names:
        for bad in ("false", 0, 1, None):
            with pytest.raises(
                HyperparameterTypeError, match=rf"^{cls.__name__}: invalid {name}={bad!r}: expected True or False$"
            ):
                _make(cls, **{name: bad})
    for name in ("fast", "foreach", "fused"):
        with pytest.raises(
            HyperparameterTypeError, match=rf"^{cls.__name__}: invalid {name}='false': expected None, True or False$"
        ):
            _make(cls, **{name: "false"})


def test_the_type_error_is_also_a_value_error():
    # the lab's command line reports ValueErrors as a one-line message
    with pytest.raises(ValueError, match="Adam: invalid lr='0.01'"):
        Adam(_params(), lr="0.01")
    with pytest.raises(TypeError, match="Adam: invalid lr='0.01'"):
        Adam(_params(), lr="0.01")


def test_the_constructor_arguments_are_checked_even_where_every_group_overrides_them():
    groups = [{"params": _params(1), "lr": 0.1}]
    with pytest.raises(ValueError, match=r"^Adam: invalid lr=-1\.0: expected 0 <= lr$"):
        Adam(groups, lr=-1.0)
    with pytest.raises(HyperparameterTypeError, match=r"^SGD: invalid momentum='0\.9'"):
        SGD(groups, lr=0.1, momentum="0.9")


@pytest.mark.parametrize(
    "lr", [np.float32(0.01), np.float64(0.01), np.int64(1), torch.tensor(0.01), torch.tensor([0.01], dtype=F64), 1]
)
def test_numbers_may_be_numpy_scalars_and_one_element_tensors(lr):
    opt = Adam(_params(), lr=lr)
    assert opt.param_groups[0]["lr"] is lr  # kept as given, as torch.optim keeps a tensor lr


@pytest.mark.parametrize(
    "bad", [torch.tensor(-0.5), np.float32("nan"), np.float64(-1.0), torch.tensor([-2.0], dtype=F64)]
)
def test_tensors_and_numpy_scalars_are_checked_by_value(bad):
    shown = re.escape(repr(bad))
    with pytest.raises(ValueError, match=rf"^Adam: invalid lr={shown}: expected 0 <= lr$"):
        Adam(_params(), lr=bad)
    with pytest.raises(ValueError, match=rf"^Adam: invalid betas\[1\]={shown}: expected 0 <= betas\[1\] < 1$"):
        Adam(_params(), betas=(0.9, bad))


# -- parameters listed twice ---------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_parameter_listed_twice_is_refused_in_one_group_and_across_groups(cls):
    a, b = _params()
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # our error, not torch's "duplicate parameters" warning first
        with pytest.raises(
            ValueError,
            match=rf"^{cls.__name__}: invalid params: some parameters appear more than once in this parameter group "
            r"\(entries 0 and 2, a tensor of shape \(3, 4\)\)",
        ):
            _make(cls, [a, b, a])
    with pytest.raises(
        ValueError,
        match=rf"^{cls.__name__}: invalid params: some parameters appear more than once, in param group 0 and in the "
        r"new one \(its entry 1,",
    ):
        _make(cls, [{"params": [a]}, {"params": [b, a]}])
    opt = _make(cls, [a])
    with pytest.raises(ValueError, match="some parameters appear more than once, in param group 0"):
        opt.add_param_group({"params": [b, a]})
    assert len(opt.param_groups) == 1


def test_a_generator_of_params_is_read_once():
    params = _params()
    opt = Adam(p for p in params)
    opt.add_param_group({"params": (p for p in _params(1))})
    assert [len(g["params"]) for g in opt.param_groups] == [2, 1]


# -- add_param_group --------------------------------------------------------------------------
@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_add_param_group_checks_the_group_and_leaves_the_optimizer_as_it_was(cls):
    opt = _make(cls)
    name = cls.__name__
    extra = _params(1)
    for key, bad, message in [
        ("lr", "0.1", rf"^{name}: invalid lr='0\.1': expected a number"),
        ("lr", float("nan"), rf"^{name}: invalid lr=nan: expected 0 <=? lr"),
        ("maximize", "yes", rf"^{name}: invalid maximize='yes': expected True or False$"),
        ("capturable", True, rf"^{name}: invalid capturable=True: optimlab does not support CUDA-graph capture"),
    ]:
        with pytest.raises(ValueError, match=message):
            opt.add_param_group({"params": extra, key: bad})
        assert len(opt.param_groups) == 1
    opt.add_param_group({"params": extra, "lr": 0.5})  # and the refused tries left nothing behind
    assert opt.param_groups[1]["lr"] == 0.5


# -- load_state_dict ----------------------------------------------------------------------------
def _trained(cls: type, **kwargs):
    params = _params()
    opt = _make(cls, params, **kwargs)
    _steps(opt, params, 3, seed=1)
    return opt, params


@pytest.mark.parametrize("cls", CLASSES, ids=lambda c: c.__name__)
def test_a_checkpoint_with_a_bad_hyperparameter_is_refused_and_changes_nothing(cls):
    name = cls.__name__
    cases = [
        ("lr", float("nan"), rf"^{name}: invalid lr=nan: expected 0 <=? lr"),
        ("lr", True, rf"^{name}: invalid lr=True: expected a number"),
        ("fast", "false", rf"^{name}: invalid fast='false': expected None, True or False$"),
        ("capturable", True, rf"^{name}: invalid capturable=True: optimlab does not support CUDA-graph capture"),
    ]
    if "betas" in _pairs(cls):  # AdEMAMix's are three: cases_ademamix.py checks those
        cases.append(("betas", (2, 3), rf"^{name}: invalid betas\[0\]=2: expected 0 <=? betas\[0\] < 1$"))
        cases.append(("betas", 0.9, rf"^{name}: invalid betas=0\.9: expected a pair \(beta1, beta2\)$"))
    opt, params = _trained(cls)
    twin, twin_params = _trained(cls)
    good = opt.state_dict()
    for key, bad, message in cases:
        saved = copy.deepcopy(good)
        saved["param_groups"][0][key] = bad
        saved["param_groups"][0]["weight_decay" if "weight_decay" in good["param_groups"][0] else "eps"] = 0.25
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(saved)
    assert opt.param_groups[0].get("weight_decay") == twin.param_groups[0].get("weight_decay")
    # nothing changed: the next steps are the twin's, bit for bit
    _steps(opt, params, 3, seed=2)
    _steps(twin, twin_params, 3, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(params, twin_params))


def test_a_torch_checkpoint_is_checked_too():
    params = _params()
    ref = torch.optim.Adam(params, lr=0.01)
    _steps(ref, params, 2, seed=1)
    saved = ref.state_dict()
    saved["param_groups"][0]["betas"] = (0.9, 1.5)
    opt = Adam(params)
    with pytest.raises(ValueError, match=r"^Adam: invalid betas\[1\]=1\.5: expected 0 <= betas\[1\] < 1$"):
        opt.load_state_dict(saved)
    assert not opt.state


# -- Lookahead ----------------------------------------------------------------------------------
@pytest.mark.parametrize(
    "kwargs, error, message",
    [
        (dict(k=True), HyperparameterTypeError, r"^Lookahead: invalid k=True: expected an integer >= 1$"),
        (dict(k="5"), HyperparameterTypeError, r"^Lookahead: invalid k='5': expected an integer >= 1$"),
        (dict(k=2.0), HyperparameterTypeError, r"^Lookahead: invalid k=2\.0: expected an integer >= 1$"),
        (dict(k=0), ValueError, r"^Lookahead: invalid k=0: expected an integer >= 1$"),
        (dict(alpha=True), HyperparameterTypeError, r"^Lookahead: invalid alpha=True: expected a number"),
        (dict(alpha="0.5"), HyperparameterTypeError, r"^Lookahead: invalid alpha='0\.5': expected a number"),
        (dict(alpha=float("nan")), ValueError, r"^Lookahead: invalid alpha=nan: expected 0 < alpha <= 1$"),
        (
            dict(pullback_momentum=1),
            HyperparameterTypeError,
            r"^Lookahead: invalid pullback_momentum=1: expected one of",
        ),
        (
            dict(pullback_momentum="Reset"),
            ValueError,
            r"^Lookahead: invalid pullback_momentum='Reset': expected one of",
        ),
    ],
)
def test_lookahead_checks_its_options(kwargs, error, message):
    with pytest.raises(error, match=message):
        Lookahead(Adam(_params()), **kwargs)


def test_lookahead_takes_numpy_and_tensor_options_by_value():
    runs = []
    for k, alpha in [(2, 0.25), (np.int64(2), np.float32(0.25)), (2, torch.tensor(0.25, dtype=F64))]:
        params = _params()
        opt = Lookahead(Adam(params, lr=0.1), k=k, alpha=alpha)
        _steps(opt, params, 5, seed=3)
        runs.append(params)
    # 0.25 is exact in float32: the three runs are one
    assert all(torch.equal(p, q) for run in runs[1:] for p, q in zip(runs[0], run))


def test_lookahead_refuses_a_bad_checkpoint_and_changes_nothing():
    params = _params()
    opt = Lookahead(Adam(params, lr=0.1), k=3)
    _steps(opt, params, 4, seed=1)
    good = opt.state_dict()
    before = copy.deepcopy(good)
    for edit, message in [
        (lambda sd: sd["lookahead"].update(alpha=float("nan")), r"^Lookahead: invalid alpha=nan"),
        (lambda sd: sd["lookahead"].update(step=-1), r"^Lookahead: invalid step=-1: expected an integer >= 0$"),
        (lambda sd: sd["param_groups"][0].update(lr=float("nan")), r"^Adam: invalid lr=nan"),
        (lambda sd: sd["param_groups"][0].update(betas=(2, 3)), r"^Adam: invalid betas\[0\]=2"),
    ]:
        saved = copy.deepcopy(good)
        edit(saved)
        with pytest.raises(ValueError, match=message):
            opt.load_state_dict(saved)
    after = opt.state_dict()
    assert after["lookahead"]["step"] == before["lookahead"]["step"] == 4
    assert after["param_groups"] == before["param_groups"]


def _nested(params: list[torch.Tensor], **outer):
    inner = Lookahead(Adam(params, lr=0.05), k=2, alpha=0.5, pullback_momentum="pullback")
    return Lookahead(inner, k=3, alpha=0.8, **outer)


@pytest.mark.parametrize("pullback", ["none", "reset", "pullback"])
def test_nested_lookahead_resumes_bit_for_bit_also_in_a_fresh_optimizer(pullback):
    params = _params()
    opt = _nested(params, pullback_momentum=pullback)
    _steps(opt, params, 7, seed=1)  # mid-cycle for both (7 % 2, 7 % 3)
    buffer = io.BytesIO()
    torch.save({"params": [p.detach().clone() for p in params], "opt": opt.state_dict()}, buffer)
    _steps(opt, params, 11, seed=2)

    buffer.seek(0)
    saved = torch.load(buffer)
    fresh = [p.clone().requires_grad_() for p in saved["params"]]
    resumed = _nested(fresh, pullback_momentum=pullback)
    resumed.load_state_dict(saved["opt"])
    _steps(resumed, fresh, 11, seed=2)
    assert all(torch.equal(p, q) for p, q in zip(params, fresh))
    assert resumed.optimizer.step_count == opt.optimizer.step_count == 18
    for p, q in zip(params, fresh):  # both levels' slow weights came back
        assert torch.equal(opt.state[p]["slow_param"], resumed.state[q]["slow_param"])
        assert torch.equal(opt.optimizer.state[p]["slow_param"], resumed.optimizer.state[q]["slow_param"])


def test_nested_lookahead_synchronises_at_both_levels_by_hand():
    # SGD with lr 1 and g = 1 moves theta by -1 per step; the inner Lookahead (k=2, alpha=0.5) and the
    # outer one (k=3, alpha=0.5) start their slow weights at 0.
    #   step 1: theta -1
    #   step 2: theta -2; inner sync: phi_in = 0 + 0.5 (-2 - 0) = -1, theta = -1
    #   step 3: theta -2; outer sync: phi_out = 0 + 0.5 (-2 - 0) = -1, theta = -1
    #   step 4: theta -2; inner sync: phi_in = -1 + 0.5 (-2 + 1) = -1.5, theta = -1.5
    #   step 5: theta -2.5
    #   step 6: theta -3.5; inner sync: phi_in = -1.5 + 0.5 (-3.5 + 1.5) = -2.5; outer sync from there:
    #           phi_out = -1 + 0.5 (-2.5 + 1) = -1.75, theta = -1.75
    p = torch.zeros(1, dtype=F64, requires_grad=True)
    opt = Lookahead(Lookahead(torch.optim.SGD([p], lr=1.0), k=2, alpha=0.5), k=3, alpha=0.5)
    values = []
    for _ in range(6):
        p.grad = torch.ones(1, dtype=F64)
        opt.step()
        values.append(p.item())
    assert values == [-1.0, -1.0, -1.0, -1.5, -2.5, -1.75]
    assert opt.state[p]["slow_param"].item() == -1.75
    assert opt.optimizer.state[p]["slow_param"].item() == -2.5


def test_a_nested_checkpoint_and_a_plain_one_are_not_mixed_up():
    params = _params()
    nested = _nested(params)
    plain = Lookahead(Adam(params, lr=0.05), k=3)
    _steps(nested, params, 2, seed=1)
    with pytest.raises(
        ValueError,
        match=r"^Lookahead: invalid state_dict: it was saved by a Lookahead around a Lookahead, "
        r"and this Lookahead wraps Adam$",
    ):
        plain.load_state_dict(nested.state_dict())
    with pytest.raises(
        ValueError,
        match=r"^Lookahead: invalid state_dict: it was saved by a Lookahead around an optimizer, "
        r"and this Lookahead wraps Lookahead$",
    ):
        nested.load_state_dict(plain.state_dict())
