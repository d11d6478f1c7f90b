"""The optimizer-spec grammar: one parser, every spelling, canonical text, labels of what runs (issue 10)."""

from __future__ import annotations

import pytest
import torch

from optimlab import protocol, runner
from optimlab.optim import PRESETS, SGD, Adafactor, Adam, Lookahead
from optimlab.spec import OptimizerSpec, build, format, label, make, parse


@pytest.mark.parametrize(
    ("text", "name", "hyperparameters", "fixed", "preset"),
    [
        ("Adam", "optimlab.Adam", {}, set(), None),
        ("adam", "optimlab.Adam", {}, set(), None),
        ("optimlab.optim.Adam(lr=0.01)", "optimlab.Adam", {"lr": 0.01}, {"lr"}, None),
        ("Adam(lr=0.01, betas=(0.5, 0.9))", "optimlab.Adam", {"lr": 0.01, "betas": (0.5, 0.9)}, {"lr", "betas"}, None),
        ("Adam(betas=[0.5, 0.9])", "optimlab.Adam", {"betas": (0.5, 0.9)}, {"betas"}, None),
        ("Adam(beta1=0.5)", "optimlab.Adam", {"betas": (0.5, 0.999)}, {"beta1"}, None),
        ("Adam(betas=(0.5, 0.9), beta2=0.8)", "optimlab.Adam", {"betas": (0.5, 0.8)}, {"betas"}, None),
        (
            "Adafactor(eps1=1e-20, relative_step=False)",
            "optimlab.Adafactor",
            {"eps": (1e-20, 1e-3), "relative_step": False},
            {"eps1", "relative_step"},
            None,
        ),
        ("Momentum", "optimlab.SGD", {"momentum": 0.9}, {"momentum"}, "Momentum"),
        (
            "nag(lr=0.1)",
            "optimlab.SGD",
            {"lr": 0.1, "momentum": 0.9, "nesterov": True},
            {"lr", "momentum", "nesterov"},
            "NAG",
        ),
        ("AMSGrad", "optimlab.Adam", {"amsgrad": True}, {"amsgrad"}, "AMSGrad"),
        ("AMSBound(lr=0.01)", "optimlab.AdaBound", {"lr": 0.01, "amsbound": True}, {"lr", "amsbound"}, "AMSBound"),
        (
            "adoptoriginal(lr=0.01)",
            "optimlab.ADOPT",
            {"lr": 0.01, "clip_lambda": None, "original": True},
            {"lr", "clip_lambda", "original"},
            "ADOPTOriginal",
        ),
        (
            "Muon(adjust_lr_fn='match_rms_adamw')",
            "optimlab.Muon",
            {"adjust_lr_fn": "match_rms_adamw"},
            {"adjust_lr_fn"},
            None,
        ),
        ("ScheduleFreeAdamW(beta1=0.95)", "optimlab.ScheduleFreeAdamW", {"betas": (0.95, 0.999)}, {"beta1"}, None),
        ("AdEMAMix(beta3=0.999)", "optimlab.AdEMAMix", {"betas": (0.9, 0.999, 0.999)}, {"beta3"}, None),  # a triple
        ("Adan(betas=(0.9, 0.9, 0.9), beta2=0.5)", "optimlab.Adan", {"betas": (0.9, 0.5, 0.9)}, {"betas"}, None),
        # Prodigy's beta3 is an argument of its own beside its pair betas
        (
            "Prodigy(beta3=0.9, beta1=0.5)",
            "optimlab.Prodigy",
            {"betas": (0.5, 0.999), "beta3": 0.9},
            {"beta1", "beta3"},
            None,
        ),
        ("torch.Adam", "torch.Adam", {}, set(), None),
        ("torch.optim.SGD(lr=0.1, momentum=0.9)", "torch.SGD", {"lr": 0.1, "momentum": 0.9}, {"lr", "momentum"}, None),
        ("torch.Adam(beta1=0.8)", "torch.Adam", {"betas": (0.8, 0.999)}, {"beta1"}, None),
        ("Rprop", "torch.Rprop", {}, set(), None),  # optimlab has none: torch's
        ("torch.optim.adam:Adam", "torch.Adam", {}, set(), None),  # package.module:Class
        ("optimlab.optim.sgd.SGD(lr=0.5)", "optimlab.SGD", {"lr": 0.5}, {"lr"}, None),  # package.module.Class
    ],
)
def test_every_spelling_parses_to_the_class_and_constructor_names(text, name, hyperparameters, fixed, preset):
    spec = parse(text)
    assert (spec.name, spec.hyperparameters, set(spec.fixed), spec.preset) == (name, hyperparameters, fixed, preset)


def test_wrappers_are_calls():
    spec = parse("Lookahead(Adam(lr=0.01), k=5)")
    assert (spec.name, spec.hyperparameters, spec.inner) == ("optimlab.Lookahead", {"k": 5}, parse("Adam(lr=0.01)"))
    assert parse("Lookahead(optimizer=Adam(lr=0.01), k=5)") == spec
    assert parse("""Lookahead({"name": "Adam", "hyperparameters": {"lr": 0.01}}, k=5)""") == spec  # the runner's form
    assert make("Lookahead", {"optimizer": "Adam(lr=0.01)", "k": 5}) == spec
    assert parse("Lookahead(NAG)").inner.preset == "NAG"


@pytest.mark.parametrize(
    "text",
    [
        "Adam",
        "Adam(lr=0.01, betas=(0.5, 0.9))",
        "Adam(beta1=0.5)",
        "Adam(eps=1e-08, amsgrad=True, weight_decay=0)",
        "NAG(lr=0.1)",
        "Momentum(momentum=0.5)",
        "torch.SGD(lr=0.1)",
        "Adafactor(lr=None, eps2=0.01, relative_step=False)",
        "Lookahead(Adam(beta2=0.99), k=10, alpha=0.8)",
        "Lookahead(AMSGrad, pullback_momentum='reset')",
        "optimlab.optim.adam.AdamW(lr=0.1)",
        "AdEMAMix(beta3=0.999, alpha=5.0)",
        "Prodigy(betas=(0.5, 0.9), beta3=0.9)",
    ],
)
def test_format_parses_back_to_the_same_spec(text):
    spec = parse(text)
    assert parse(format(spec)) == spec
    assert format(parse(format(spec))) == format(spec)
    assert OptimizerSpec.from_config(spec.to_config()).to_config() == spec.to_config()


def test_every_spelling_of_one_configuration_is_one_run():
    """beta1=0.5 and betas=(0.5, 0.999) are the same configuration: the runner spells them out identically."""
    spellings = [
        "Adam(beta1=0.5)",
        "Adam(betas=(0.5, 0.999))",
        "adam(beta2=0.999, beta1=0.5)",
        "optimlab.Adam(betas=[0.5, 0.999])",
    ]
    full = {str(runner.optimizer_spec(text)) for text in spellings}
    full.add(str(runner.optimizer_spec("Adam", {"beta1": 0.5})))
    full.add(str(runner.optimizer_spec("Adam", {"betas": [0.5, 0.999]})))
    assert len(full) == 1
    name, hp = runner.optimizer_spec("Lookahead(Adam(beta1=0.5), k=3)")
    assert name == "optimlab.Lookahead" and hp["k"] == 3 and hp["optimizer"]["hyperparameters"]["betas"] == [0.5, 0.999]


def test_build_makes_what_the_spec_names():
    params = [torch.zeros(2, requires_grad=True)]
    adam = build("Adam(beta1=0.5, lr=0.1)", params)
    assert type(adam) is Adam and adam.defaults["betas"] == (0.5, 0.999) and adam.defaults["lr"] == 0.1
    nag = build("NAG", params)
    assert type(nag) is SGD and nag.defaults["nesterov"] is True and nag.defaults["momentum"] == 0.9
    look = build("Lookahead(Adam(lr=0.01), k=3)", params)
    assert type(look) is Lookahead and look.defaults["k"] == 3 and look.optimizer.defaults["lr"] == 0.01
    assert type(build("torch.Adam", params)) is torch.optim.Adam
    assert build("Adafactor(eps1=1e-20)", params).defaults["eps"] == (1e-20, 1e-3)
    assert type(build("Adafactor", params)) is Adafactor
    with pytest.raises(ValueError, match=r"invalid betas\[0\]=1.5"):  # the class's own range check runs when built
        build("Adam(beta1=1.5)", params)


def test_labels_show_what_runs():
    assert label(parse("Adam")) == "Adam(lr=0.001)"  # the lr always, even at its default
    assert label(parse("Yogi(lr=0.01)")) == "Yogi(lr=0.01)"  # an lr equal to the default is not hidden
    assert label(parse("Adam(eps=1e-08, weight_decay=0.0)")) == "Adam(lr=0.001)"  # values equal to the default are
    assert label(parse("Adam(beta1=0.5)"), tuned={"lr": 0.037712345}) == "Adam(lr=0.0377*, betas=(0.5, 0.999))"
    assert label(parse("Adam(betas=(0.9, 0.9999))")) == "Adam(lr=0.001, betas=(0.9, 0.9999))"  # not (0.9, 1)
    assert label(parse("Adam(eps=1e-6, lr=0.012345)")) == "Adam(lr=0.0123, eps=1e-6)"
    assert label(parse("NAG(lr=0.1)")) == "NAG(lr=0.1)"  # a preset's own options are its name
    assert label(parse("Momentum(momentum=0.5)")) == "Momentum(lr=0.001, momentum=0.5)"
    assert label(parse("torch.Adam")) == "torch.Adam(lr=0.001)"
    assert label(parse("Adafactor")) == "Adafactor"  # lr=None by default: no lr to show
    look = parse("Lookahead(Adam, k=10)")
    assert label(look, tuned={"lr": 0.02}) == "Lookahead(Adam(lr=0.02*), k=10)"
    assert label(look, tuned={"optimizer.beta2": 0.99}) == "Lookahead(Adam(lr=0.001, betas=(0.9, 0.99*)), k=10)"
    with pytest.raises(ValueError, match="no hyperparameter 'lrr'"):
        label(parse("Adam"), tuned={"lrr": 0.1})


def test_a_stored_configuration_reads_back_under_the_users_names():
    name, hp = runner.optimizer_spec("NAG(lr=0.05)")
    assert label(OptimizerSpec.from_config({"name": name, "hyperparameters": hp})) == "NAG(lr=0.05)"
    name, hp = runner.optimizer_spec("Lookahead(Adam(beta1=0.5))")
    stored = OptimizerSpec.from_config({"optimizer": name, "hyperparameters": hp})  # a run's config
    assert label(stored) == "Lookahead(Adam(lr=0.001, betas=(0.5, 0.999)))"
    # a torch.dtype default is stored by its name (Muon's ns_dtype): that is no difference to show
    name, hp = runner.optimizer_spec("Muon(exterior_adamw=True)")
    assert hp["ns_dtype"] == "bfloat16"
    assert (
        label(OptimizerSpec.from_config({"optimizer": name, "hyperparameters": hp}))
        == "Muon(lr=0.02, exterior_adamw=True)"
    )
    name, hp = runner.optimizer_spec("Muon(ns_dtype='float32')")
    assert (
        label(OptimizerSpec.from_config({"optimizer": name, "hyperparameters": hp}))
        == "Muon(lr=0.02, ns_dtype='float32')"
    )


def test_what_a_spec_fixes():
    spec = parse("Adam(lr=0.01, beta1=0.5)")
    assert spec.is_fixed("lr") and spec.is_fixed("beta1") and spec.is_fixed("betas")
    assert not spec.is_fixed("beta2") and not spec.is_fixed("eps")
    assert parse("Momentum").is_fixed("momentum") and not parse("Momentum").is_fixed("lr")
    look = parse("Lookahead(Adam(lr=0.01), k=5)")
    assert look.is_fixed("k") and look.is_fixed("lr") and look.is_fixed("optimizer.lr") and not look.is_fixed("alpha")
    tuned = parse("Adam").with_values({"beta2": 0.99, "lr": 0.1})
    assert tuned == parse("Adam(lr=0.1, beta2=0.99)")
    assert parse("Lookahead(Adam)").with_values({"optimizer.lr": 0.1}) == parse("Lookahead(Adam(lr=0.1))")
    with pytest.raises(ValueError, match="no hyperparameter 'momentum'"):
        spec.is_fixed("momentum")


@pytest.mark.parametrize(
    ("text", "message"),
    [
        (
            "Adma",
            r"invalid optimizer spec 'Adma'.*did you mean.*optimlab\.Adam"
            r".*expected one of .*optimlab\.AdamW.*torch\.SGD",
        ),
        ("Adam(learning_rate=0.1)", r"Adam has no hyperparameter 'learning_rate'.*expected some of lr, betas"),
        ("Adam(bta1=0.5)", r"did you mean beta1\?"),
        ("SGD(beta1=0.5)", r"SGD has no hyperparameter 'beta1'"),  # SGD has no betas, so no components
        ("Adam(lr=x)", r"the value of lr must be a Python literal"),
        ("Adam(lr=1e-3 * 2)", r"the value of lr must be a Python literal"),
        ("Adam(**{'lr': 0.1})", r"\*\*\{\.\.\.\} is not allowed"),
        ("Adam(*[0.1])", r"\*args is not allowed"),
        ("Adam(0.1)", r"Adam takes keyword arguments only"),
        ("Adam(lr=0.1, lr=0.2)", r"lr is given twice"),
        ("Adam(lr=0.1", r"expected NAME or NAME\(key=value, \.\.\.\)"),
        ("Adam)", r"expected NAME or NAME\(key=value"),
        ("", r"expected NAME"),
        ("Lookahead", r"Lookahead wraps an optimizer"),
        ("Lookahead(Adam, Adam)", r"takes one optimizer"),
        ("Lookahead(Adam, optimizer=Adam)", r"the optimizer of Lookahead is given twice"),
        ("Lookahead(Adma)", r"'Adma'"),
        ("torch.LBFGS", r"invalid optimizer"),  # its step needs a closure
        ("os.path:join", r"is not a torch.optim.Optimizer subclass"),
        ("keras.Adam", r"invalid optimizer='keras.Adam'"),
    ],
)
def test_bad_specs_are_one_clean_line(text, message):
    with pytest.raises(ValueError, match=message) as error:
        parse(text)
    assert "\n" not in str(error.value)


def test_values_are_never_evaluated(tmp_path):
    marker = tmp_path / "ran"
    with pytest.raises(ValueError, match="must be a Python literal"):
        parse(f"Adam(lr=__import__('pathlib').Path({str(marker)!r}).touch())")
    assert not marker.exists()


@pytest.mark.parametrize("name", list(PRESETS))
def test_every_preset_is_a_spec_that_trains_and_tunes(name):
    """What the commands do with a preset name: parse it in any case, store it, build it, step it, and
    set both ends of the lr range tune searches for it by default (a class refusing one would fail every
    trial there)."""
    cls, options = PRESETS[name]
    spec = parse(name.lower())
    assert (spec.cls, spec.hyperparameters, set(spec.fixed)) == (cls, options, set(options))
    assert parse(format(spec)) == spec and OptimizerSpec.from_config(spec.to_config()) == spec
    low, high = protocol.default_lr_range(spec)
    assert not spec.is_fixed("lr")
    if cls is Adafactor:  # its relative step ignores lr: tune says so before any trial (test_protocol)
        with pytest.raises(ValueError, match="relative_step=True"):
            build(spec.with_values({"lr": low}), [torch.zeros(1)])
        return
    torch.manual_seed(0)
    model = torch.nn.Linear(
        4, 3, dtype=torch.float64
    )  # a matrix and a vector (Muon); Prodigy at lr=1e-5 moves by ~1e-11
    x, y = torch.randn(16, 4, dtype=torch.float64), torch.randn(16, 3, dtype=torch.float64)
    for lr in (low, high):
        opt = build(spec.with_values({"lr": lr}), model.parameters())
        assert type(opt) is cls and opt.defaults["lr"] == lr
        if callable(getattr(opt, "train", None)):  # Schedule-Free starts in eval mode, as its package
            opt.train()
        before = [p.detach().clone() for p in model.parameters()]
        for _ in range(2):  # ADOPT's first step only measures the gradient
            torch.nn.functional.mse_loss(model(x), y).backward()
            opt.step()
            opt.zero_grad()
        assert all(not torch.equal(a, b) for a, b in zip(before, model.parameters())), lr


def test_a_triple_of_betas_is_three_components_and_prodigys_beta3_is_its_own():
    ademamix = parse("AdEMAMix(beta3=0.999)")
    assert ademamix.is_fixed("beta3") and ademamix.is_fixed("betas") and not ademamix.is_fixed("beta1")
    assert label(parse("AdEMAMix"), tuned={"beta3": 0.99}) == "AdEMAMix(lr=0.001, betas=(0.9, 0.999, 0.99*))"
    prodigy = parse("Prodigy(beta3=0.9)")
    assert prodigy.is_fixed("beta3") and not prodigy.is_fixed("betas") and not prodigy.is_fixed("beta1")
    assert label(parse("Prodigy"), tuned={"beta3": 0.5}) == "Prodigy(lr=1, beta3=0.5*)"
    with pytest.raises(ValueError, match="Adam has no hyperparameter 'beta3'"):
        parse("Adam(beta3=0.1)")
