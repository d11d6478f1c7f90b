r"""Optimizer specs: the one grammar every command and the Python API use to name an optimizer.

>>> from optimlab.spec import parse, format, label
>>> spec = parse("Adam(lr=0.01, beta1=0.5)")
>>> spec.name, spec.hyperparameters
('optimlab.Adam', {'lr': 0.01, 'betas': (0.5, 0.999)})
>>> format(spec)
'Adam(lr=0.01, beta1=0.5)'
>>> label(spec, tuned={"lr": 0.037712})
'Adam(lr=0.0377*, betas=(0.5, 0.999))'

**Grammar.**  A spec is ``NAME`` or ``NAME(ARG, ...)``:

* ``NAME``: an optimizer class of :mod:`optimlab.optim` (``Adam``, ``optimlab.Adam``,
  ``optimlab.optim.Adam``), one of ``torch.optim`` (``torch.Adam``, ``torch.optim.SGD``), a
  preset of :data:`optimlab.optim.PRESETS` (``Momentum``, ``NAG``, ``AMSGrad``, ``AMSBound``: a
  class plus fixed options), or any importable ``torch.optim.Optimizer`` subclass as
  ``package.module.Class`` or ``package.module:Class``.  Case does not matter for the built-in
  names; a bare name is optimlab's where both libraries have it.  Optimizers whose ``step``
  needs a closure (``torch.optim.LBFGS``) are refused: the lab's training loop has none.
* ``ARG``: ``key=value`` with the constructor's keyword names (``lr``, ``betas``, ``eps``...),
  where ``value`` is a Python literal (a number, ``True``/``False``/``None``, a string, a tuple or
  list of them), read with :func:`ast.literal_eval`, never evaluated.  Each component of a pair
  argument also has the update rule's own name: ``beta1``/``beta2`` for ``betas`` (every class
  with ``betas``, torch's included; ``beta3`` too where ``betas`` is a triple, AdEMAMix and Adan,
  while Prodigy's ``beta3`` is an argument of its own) and ``eps1``/``eps2`` for Adafactor's
  ``eps``; a component given alone takes the others from the spec's ``betas`` or else from the
  default, so ``Adam(beta1=0.5)`` runs ``betas=(0.5, 0.999)``.
* A wrapper (a class whose first constructor argument is an optimizer, e.g. ``Lookahead``) takes
  its inner optimizer as a spec, positionally or as ``optimizer=``: ``Lookahead(Adam(lr=0.01),
  k=5)``.

Anything else (``**{...}``, ``*args``, expressions, a keyword given twice, an unknown name or
keyword) raises one ``ValueError`` naming the spec and the valid choices, before anything runs.
Values are not range-checked here (the 2-D lab runs values the classes reject, such as
``beta1=1``); the class's own checks run when it is built (:func:`build`).

**What is fixed.**  The keywords a spec gives, and a preset's options, are *fixed*; the rest are
*free*, and only free hyperparameters are tuned (:meth:`OptimizerSpec.is_fixed`).  A component
given by its own name fixes only that component: ``Adam(beta1=0.5)`` leaves ``beta2`` free.

**Hyperparameter names** in :meth:`OptimizerSpec.with_values`, :meth:`OptimizerSpec.is_fixed`
and tuning search spaces: a constructor name (``lr``, ``betas``), a component name (``beta1``),
or a wrapper's inner optimizer's name after ``optimizer.`` (``optimizer.lr``).  On a wrapper, a
name it does not have itself is its inner optimizer's: ``lr`` and ``beta1`` of ``Lookahead(Adam)``
are Adam's.
"""

from __future__ import annotations

import ast
import builtins
import difflib
import importlib
import inspect
import math
import pkgutil
import re
from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import Any

import torch

__all__ = [
    "OptimizerSpec",
    "build",
    "components",
    "defaults",
    "format",
    "is_wrapper",
    "label",
    "make",
    "named",
    "optimizer_names",
    "parameters",
    "parse",
    "presets",
    "resolve",
]

#: Constructor arguments that are pairs (``betas`` also a triple: AdEMAMix, Adan), and the update rule's
#: name for each component.
COMPONENTS: dict[str, tuple[str, ...]] = {"betas": ("beta1", "beta2", "beta3"), "eps": ("eps1", "eps2")}

_PREFIXES = {"": None, "optimlab": "optimlab", "optimlab.optim": "optimlab", "torch": "torch", "torch.optim": "torch"}
_NAME = re.compile(r"[A-Za-z_][\w.]*(:[A-Za-z_]\w*)?")


# ---------------------------------------------------------------------------------------------
# Classes by name
# ---------------------------------------------------------------------------------------------


@lru_cache(maxsize=1)
def _catalogue() -> tuple[dict[str, type[torch.optim.Optimizer]], tuple[str, ...]]:
    """``({canonical name: class}, (import errors of optimlab.optim modules))``."""
    from . import optim as optimlab_optim

    classes: dict[str, type[torch.optim.Optimizer]] = {}
    broken = []
    for module_info in sorted(pkgutil.iter_modules(optimlab_optim.__path__), key=lambda m: m.name):
        if module_info.name.startswith("_"):
            continue
        module_name = f"{optimlab_optim.__name__}.{module_info.name}"
        try:
            module = importlib.import_module(module_name)
        except Exception as e:  # a module being written must not hide every other optimizer
            broken.append(f"{module_name} ({type(e).__name__}: {e})")
            continue
        for name, cls in vars(module).items():
            if _is_optimizer(cls) and cls.__module__ == module_name:
                classes[f"optimlab.{name}"] = cls
    for name, cls in vars(torch.optim).items():
        if _is_optimizer(cls) and not _needs_closure(cls):
            classes[f"torch.{name}"] = cls
    return dict(sorted(classes.items())), tuple(broken)


def _is_optimizer(obj: Any) -> bool:
    return (
        isinstance(obj, type)
        and issubclass(obj, torch.optim.Optimizer)
        and obj is not torch.optim.Optimizer
        and not obj.__name__.startswith("_")
    )


def _needs_closure(cls: type) -> bool:
    closure = inspect.signature(cls.step).parameters.get("closure")
    return closure is not None and closure.default is inspect.Parameter.empty


def _signature(cls: type) -> inspect.Signature:
    return inspect.signature(cls.__init__)


def is_wrapper(cls: type) -> bool:
    """Whether ``cls``'s first constructor argument is another optimizer (Lookahead)."""
    params = list(_signature(cls).parameters)
    return len(params) > 1 and params[1] == "optimizer"


def parameters(cls: type) -> dict[str, inspect.Parameter]:
    """The constructor's keyword arguments of ``cls``, after ``params`` (or a wrapper's ``optimizer``), in order."""
    return {
        p.name: p
        for p in list(_signature(cls).parameters.values())[2:]
        if p.kind in (inspect.Parameter.POSITIONAL_OR_KEYWORD, inspect.Parameter.KEYWORD_ONLY)
    }


def defaults(cls: type) -> dict[str, Any]:
    """The constructor's defaults of ``cls`` (tuples for pairs); a required argument is left out."""
    return {n: _plain(p.default) for n, p in parameters(cls).items() if p.default is not inspect.Parameter.empty}


def components(cls: type) -> dict[str, tuple[str, int]]:
    """``{component name: (constructor name, index)}``: ``beta1 -> ("betas", 0)`` where ``betas`` is a pair
    (or a triple: AdEMAMix's ``beta3 -> ("betas", 2)``; Prodigy's ``beta3`` is an argument of its own)."""
    out = {}
    for name, default in defaults(cls).items():
        if name in COMPONENTS and isinstance(default, tuple) and 2 <= len(default) <= len(COMPONENTS[name]):
            for i, component in enumerate(COMPONENTS[name][: len(default)]):
                out[component] = (name, i)
    return out


def _parts(cls: type, pair: str) -> tuple[str, ...]:
    """The component names of the constructor argument ``pair`` of ``cls`` (none where it is no pair)."""
    return tuple(c for c, (name, _) in components(cls).items() if name == pair)


def optimizer_names() -> tuple[str, ...]:
    """Every built-in optimizer by canonical name, sorted (``"optimlab.Adam"``, ``"torch.SGD"``...)."""
    return tuple(_catalogue()[0])


def presets() -> dict[str, tuple[str, dict[str, Any]]]:
    """``{preset: (canonical class name, fixed options)}`` for the presets that fix options (Momentum, NAG...)."""
    from .optim import PRESETS

    return {k: (f"optimlab.{cls.__name__}", dict(opts)) for k, (cls, opts) in PRESETS.items() if opts}


def resolve(name: str, *, who: str = "spec") -> tuple[str, type[torch.optim.Optimizer]]:
    """``(canonical name, class)`` of an optimizer name (not a preset); see the module docstring.

    Raises:
        ValueError: an unknown name; the message (prefixed ``who: ``) lists every valid one, the
            closest matches, and any optimlab module that failed to import.
    """
    classes, broken = _catalogue()
    if not isinstance(name, str):
        raise ValueError(f"{who}: invalid optimizer={name!r}: expected a name such as 'Adam' or 'torch.SGD'")
    text = name.strip()
    prefix, _, short = text.replace(":", ".").rpartition(".")
    library = _PREFIXES.get(prefix.lower(), "?")
    if library != "?":
        matches = sorted(
            (
                c
                for c in classes
                if c.split(".")[1].lower() == short.lower() and (library is None or c.startswith(f"{library}."))
            ),
            key=lambda c: not c.startswith("optimlab."),  # optimlab's first
        )
        if matches:
            return matches[0], classes[matches[0]]
    elif _NAME.fullmatch(text):
        found = _import(text, who)
        if found is not None:
            return found
    by_short: dict[str, list[str]] = {}
    for canonical in classes:
        by_short.setdefault(canonical.split(".")[1].lower(), []).append(canonical)
    close = [c for s in difflib.get_close_matches(short.lower(), list(by_short), n=2, cutoff=0.6) for c in by_short[s]]
    hint = f" (did you mean {', '.join(close)}?)" if close else ""
    failed = f"; these optimlab modules failed to import: {'; '.join(broken)}" if broken else ""
    raise ValueError(
        f"{who}: invalid optimizer={name!r}{hint}: expected one of {', '.join(classes)} "
        f"(optimlab./torch. prefixes optional, a bare name is optimlab's where both have it), a preset "
        f"({', '.join(presets())}) or package.module.Class of a torch.optim.Optimizer subclass{failed}"
    )


def _import(text: str, who: str) -> tuple[str, type[torch.optim.Optimizer]] | None:
    """The class at ``package.module.Class`` / ``package.module:Class``; ``None`` if there is no such module."""
    module_name, sep, attr = text.partition(":")
    if not sep:
        module_name, _, attr = text.rpartition(".")
    try:
        module = importlib.import_module(module_name)
    except ImportError:
        return None
    cls = getattr(module, attr, None)
    if cls is None:
        return None
    if not _is_optimizer(cls):
        raise ValueError(f"{who}: invalid optimizer={text!r}: {cls!r} is not a torch.optim.Optimizer subclass")
    if _needs_closure(cls):
        raise ValueError(
            f"{who}: invalid optimizer={text!r}: its step needs a closure, which the lab's training loop has not"
        )
    for canonical, known in _catalogue()[0].items():
        if known is cls:
            return canonical, cls
    return f"{module_name}.{attr}", cls


# ---------------------------------------------------------------------------------------------
# The spec
# ---------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class OptimizerSpec:
    """An optimizer as the user named it: what to build, and which hyperparameters are fixed.

    Attributes:
        name: the canonical class name (``"optimlab.Adam"``, ``"torch.SGD"``, ``"package.module.Class"``),
            as :func:`optimlab.runner.run` names it.
        hyperparameters: the values the spec sets, by constructor name (pairs as tuples); every other
            argument keeps the constructor's default.  Not to be mutated.
        fixed: the names the spec fixed: constructor names, component names (``beta1``) and a
            preset's options (see the module docstring).
        inner: a wrapper's inner optimizer (``None`` otherwise).
        preset: the preset the spec came from (``"Momentum"``), or ``None``.
        source: the text it was parsed from (not compared).
        tuned: the names whose values a tuning chose (not compared; :func:`label` marks them).
    """

    name: str
    hyperparameters: dict[str, Any] = field(default_factory=dict)
    fixed: frozenset[str] = frozenset()
    inner: OptimizerSpec | None = None
    preset: str | None = None
    source: str | None = field(default=None, compare=False)
    tuned: frozenset[str] = field(default=frozenset(), compare=False)

    def __hash__(self) -> int:
        return hash(format(self))

    def __str__(self) -> str:
        return format(self)

    @property
    def cls(self) -> type[torch.optim.Optimizer]:
        """The optimizer class."""
        return resolve(self.name)[1]

    def is_fixed(self, name: str) -> bool:
        """Whether the hyperparameter ``name`` (see the module docstring) is fixed by the spec.

        A pair counts as fixed when any of its components is.

        Raises:
            ValueError: no such hyperparameter.
        """
        spec, key, index = _locate(self, name)
        if index is not None:
            return key in spec.fixed or COMPONENTS[key][index] in spec.fixed
        return key in spec.fixed or any(c in spec.fixed for c in _parts(spec.cls, key))

    def with_values(self, values: Mapping[str, Any]) -> OptimizerSpec:
        """A copy with ``values`` (names as in the module docstring) set, and fixed.

        Raises:
            ValueError: an unknown name.
        """
        spec = self
        for name, value in values.items():
            spec = _set(spec, name, _plain(value))
        return spec

    def to_config(self) -> dict[str, Any]:
        """``{"name": canonical name, "hyperparameters": {...}}`` as :func:`optimlab.runner.run` takes them
        (pairs as lists, a wrapper's inner optimizer as the same mapping under ``"optimizer"``)."""
        hp: dict[str, Any] = {} if self.inner is None else {"optimizer": self.inner.to_config()}
        hp.update({k: _jsonable(v) for k, v in self.hyperparameters.items()})
        return {"name": self.name, "hyperparameters": hp}

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> OptimizerSpec:
        """The spec of ``{"name": ..., "hyperparameters": {...}}`` (a run's stored ``{"optimizer": ...,
        "hyperparameters": ...}`` too).  Every stored value is fixed; a class plus the options of a
        preset (SGD with momentum 0.9) is read as that preset, so labels read as the user wrote them.

        Raises:
            ValueError: not such a mapping, an unknown optimizer or hyperparameter.
        """
        name = config.get("name", config.get("optimizer")) if isinstance(config, Mapping) else None
        hp = config.get("hyperparameters", {}) if isinstance(config, Mapping) else None
        if not isinstance(name, str) or not isinstance(hp, Mapping):
            raise ValueError(
                f"spec: invalid config={config!r}: expected {{'name': <optimizer name>, 'hyperparameters': {{...}}}}"
            )
        canonical, klass = resolve(name)
        hp = dict(hp)
        inner = None
        if is_wrapper(klass):
            inner_config = hp.pop("optimizer", None)
            if inner_config is None:
                raise ValueError(
                    f"spec: invalid config for {canonical}: hyperparameters['optimizer'] (its optimizer) is missing"
                )
            inner = inner_config if isinstance(inner_config, OptimizerSpec) else cls.from_config(inner_config)
        spec = _checked(
            cls(canonical, {}, frozenset(), inner), {k: _plain(v) for k, v in hp.items()}, source=repr(dict(config))
        )
        return _as_preset(spec)


def _jsonable(value: Any) -> Any:
    if isinstance(value, (list, tuple)):
        return [_jsonable(v) for v in value]
    return value


def _plain(value: Any) -> Any:
    """Lists as tuples, recursively, and a torch.dtype as its name (so that a spec read from JSON, where
    a run's configuration keeps Muon's ``ns_dtype=torch.bfloat16`` as ``"bfloat16"``, equals the one
    parsed from text, and a label does not show that default as a difference)."""
    if isinstance(value, (list, tuple)):
        return tuple(_plain(v) for v in value)
    if isinstance(value, torch.dtype):
        return str(value).removeprefix("torch.")
    return value


def _display(spec: OptimizerSpec) -> str:
    """The name as written in a spec: a preset, optimlab's short name, torch's with its prefix."""
    if spec.preset is not None:
        return spec.preset
    return spec.name.removeprefix("optimlab.")


def _checked(spec: OptimizerSpec, given: Mapping[str, Any], *, source: str) -> OptimizerSpec:
    """``spec`` with the keywords ``given`` applied (components resolved), after checking their names."""
    klass = spec.cls
    accepted = parameters(klass)
    parts_of = components(klass)
    unknown = [k for k in given if k not in accepted and k not in parts_of]
    if unknown:
        names = [*accepted, *parts_of]
        close = difflib.get_close_matches(unknown[0], names, n=1)
        hint = f" (did you mean {close[0]}?)" if close else ""
        raise ValueError(
            f"invalid optimizer spec {source!r}: {_display(spec)} has no hyperparameter {unknown[0]!r}{hint}: "
            f"expected some of {', '.join(names)}"
        )
    for key in sorted(given, key=lambda k: k in parts_of):  # a whole pair first, then its components
        spec = _set(spec, key, given[key])
    missing = [n for n, p in accepted.items() if p.default is inspect.Parameter.empty and n not in spec.hyperparameters]
    if missing:
        raise ValueError(f"invalid optimizer spec {source!r}: {_display(spec)} needs {missing[0]}= (it has no default)")
    return replace(spec, source=source)


def _absorbed(fixed: Iterable[str], cls: type) -> frozenset[str]:
    """``fixed`` without the components of a pair that is fixed whole (one spelling per fixed set)."""
    fixed = set(fixed)
    return frozenset(f for f in fixed if f not in components(cls) or components(cls)[f][0] not in fixed)


def _as_preset(spec: OptimizerSpec) -> OptimizerSpec:
    """``spec`` read as the preset with the most options that it matches, if any."""
    if spec.preset is not None:
        return spec
    best = None
    for preset, (name, options) in presets().items():
        matches = name == spec.name and all(_same(spec.hyperparameters.get(k), v) for k, v in options.items())
        if matches and (best is None or len(options) > len(presets()[best][1])):
            best = preset
    return spec if best is None else replace(spec, preset=best)


def _same(a: Any, b: Any) -> bool:
    """Equal as hyperparameters: ``True`` is not ``1`` (a flag is not a number); a tuple equals its list."""
    if isinstance(a, bool) or isinstance(b, bool):
        return a is b
    return _plain(a) == _plain(b)


def _locate(spec: OptimizerSpec, name: str) -> tuple[OptimizerSpec, str, int | None]:
    """``(the spec that holds name, constructor name, component index or None)``."""
    if not isinstance(name, str):
        raise ValueError(f"spec: invalid hyperparameter name {name!r} for {format(spec)}: expected a string")
    head, dot, rest = name.partition(".")
    klass = spec.cls
    if dot:
        if head != "optimizer" or spec.inner is None:
            raise ValueError(
                f"spec: invalid hyperparameter {name!r} for {format(spec)}: "
                + (
                    "'optimizer.<name>' names a wrapper's inner optimizer's"
                    if spec.inner is None
                    else "expected optimizer.<name>"
                )
            )
        return _locate(spec.inner, rest)
    accepted = parameters(klass)
    parts_of = components(klass)
    if name in accepted:
        return spec, name, None
    if name in parts_of:
        return spec, parts_of[name][0], parts_of[name][1]
    if spec.inner is not None:  # a wrapper's names and its optimizer's do not overlap (Lookahead: k, alpha)
        try:
            return _locate(spec.inner, name)
        except ValueError:
            pass
    names = [*accepted, *parts_of] + (["optimizer.<name of its optimizer>"] if spec.inner is not None else [])
    raise ValueError(f"spec: {format(spec)} has no hyperparameter {name!r}: expected one of {', '.join(names)}")


def _set(spec: OptimizerSpec, name: str, value: Any) -> OptimizerSpec:
    holder, key, index = _locate(spec, name)
    if holder is not spec:
        _, _, rest = name.partition(".")
        return replace(spec, inner=_set(spec.inner, rest if rest else name, value))  # type: ignore[arg-type]
    hp = dict(spec.hyperparameters)
    if index is None:
        hp[key] = value
        written = key
    else:
        current = list(hp.get(key, defaults(spec.cls)[key]))
        current[index] = value
        hp[key] = tuple(current)
        written = COMPONENTS[key][index]
    order = list(parameters(spec.cls))
    hp = {k: hp[k] for k in sorted(hp, key=order.index)}
    return replace(spec, hyperparameters=hp, fixed=_absorbed(spec.fixed | {written}, spec.cls))


# ---------------------------------------------------------------------------------------------
# Text
# ---------------------------------------------------------------------------------------------


def parse(text: str | OptimizerSpec) -> OptimizerSpec:
    """The :class:`OptimizerSpec` of ``text`` (see the module docstring); a spec is returned as is.

    Raises:
        ValueError: one line naming the spec, what is wrong and the valid choices.
    """
    if isinstance(text, OptimizerSpec):
        return text
    if not isinstance(text, str):
        raise ValueError(f'invalid optimizer spec {text!r}: expected a string such as "Adam(lr=0.01)"')
    source = text.strip()
    head, paren, rest = source.partition("(")
    head = head.strip()
    usage = 'expected NAME or NAME(key=value, ...) with literal values, e.g. "Adam(lr=0.01, betas=(0.5, 0.9))"'
    if not _NAME.fullmatch(head) or (paren and not rest.rstrip().endswith(")")):
        raise ValueError(f"invalid optimizer spec {text!r}: {usage}")
    call: ast.Call | None = None
    if paren:
        try:
            node = ast.parse(f"_({rest}", mode="eval").body
        except SyntaxError:
            raise ValueError(f"invalid optimizer spec {text!r}: {usage}") from None
        if not isinstance(node, ast.Call):
            raise ValueError(f"invalid optimizer spec {text!r}: {usage}")
        call = node
    base = _base(head, source)
    klass = base.cls
    wrapper = is_wrapper(klass)
    args = [] if call is None else list(call.args)
    keywords = [] if call is None else list(call.keywords)
    inner: OptimizerSpec | None = None
    for kw in keywords:
        if kw.arg is None:
            raise ValueError(
                f"invalid optimizer spec {text!r}: **{{...}} is not allowed: write each hyperparameter as key=value"
            )
    if any(isinstance(a, ast.Starred) for a in args):
        raise ValueError(
            f"invalid optimizer spec {text!r}: *args is not allowed: write each hyperparameter as key=value"
        )
    if args and not wrapper:
        raise ValueError(f"invalid optimizer spec {text!r}: {_display(base)} takes keyword arguments only (key=value)")
    if len(args) > 1:
        raise ValueError(f"invalid optimizer spec {text!r}: {_display(base)} takes one optimizer, then key=value")
    inner_nodes = [*args, *(kw.value for kw in keywords if kw.arg == "optimizer")] if wrapper else []
    if len(inner_nodes) > 1:
        raise ValueError(f"invalid optimizer spec {text!r}: the optimizer of {_display(base)} is given twice")
    if inner_nodes:
        inner = _inner(inner_nodes[0], text)
    elif wrapper:
        raise ValueError(
            f"invalid optimizer spec {text!r}: {_display(base)} wraps an optimizer: "
            f"write e.g. {_display(base)}(Adam(lr=0.01))"
        )
    given: dict[str, Any] = {}
    for kw in keywords:
        if wrapper and kw.arg == "optimizer":
            continue
        if kw.arg in given:  # ast accepts f(a=1, a=2) as a call
            raise ValueError(f"invalid optimizer spec {text!r}: {kw.arg} is given twice")
        try:
            given[kw.arg] = _plain(ast.literal_eval(kw.value))  # type: ignore[index]
        except (ValueError, TypeError, SyntaxError, MemoryError, RecursionError):
            raise ValueError(
                f"invalid optimizer spec {text!r}: the value of {kw.arg} must be a Python literal "
                "(a number, True/False/None, a string, a tuple or list of them)"
            ) from None
    return _checked(replace(base, inner=inner), given, source=source)


def named(name: str) -> OptimizerSpec:
    """The spec of a bare name: a preset with its options fixed, or a class (a wrapper's inner optimizer unset).

    Raises:
        ValueError: an unknown name.
    """
    if not isinstance(name, str):
        raise ValueError(f"invalid optimizer={name!r}: expected a name such as 'Adam' or 'torch.SGD'")
    return _base(name.strip(), name)


def make(name: str | OptimizerSpec, hyperparameters: Mapping[str, Any] | None = None) -> OptimizerSpec:
    """The spec of ``name`` (a name, a preset, spec text, or a spec) with ``hyperparameters`` set over it.

    ``hyperparameters`` use the names of :meth:`OptimizerSpec.with_values`; a wrapper's
    ``"optimizer"`` is its inner optimizer, as a spec, spec text, or the runner's
    ``{"name": ..., "hyperparameters": {...}}`` mapping.  ``make("Lookahead", {"optimizer":
    "Adam(lr=0.01)", "k": 5})`` is ``parse("Lookahead(Adam(lr=0.01), k=5)")``.

    Raises:
        ValueError: an unknown optimizer or hyperparameter, or a wrapper without its optimizer.
    """
    if isinstance(name, OptimizerSpec):
        spec = name
    elif isinstance(name, str):
        spec = parse(name) if "(" in name else named(name)  # a bare wrapper's optimizer may come below
    else:
        raise ValueError(f"invalid optimizer={name!r}: expected a name or spec text such as 'Adam(lr=0.01)'")
    given = dict(hyperparameters or {})
    if "optimizer" in given and is_wrapper(spec.cls):
        inner = given.pop("optimizer")
        if isinstance(inner, str):
            inner = parse(inner)
        elif isinstance(inner, Mapping):
            inner = OptimizerSpec.from_config(inner)
        elif not isinstance(inner, OptimizerSpec):
            raise ValueError(
                f"invalid optimizer={inner!r} inside {_display(spec)}: expected a spec such as 'Adam(lr=0.01)' "
                "or {'name': <optimizer name>, 'hyperparameters': {...}}"
            )
        spec = replace(spec, inner=inner)
    if spec.inner is None and is_wrapper(spec.cls):
        raise ValueError(f"{_display(spec)} wraps an optimizer: give it, e.g. {_display(spec)}(Adam(lr=0.01))")
    return spec.with_values(given)


def _base(head: str, source: str) -> OptimizerSpec:
    """The spec of a bare name: a preset with its options fixed, or a class."""
    for preset, (name, options) in presets().items():
        if head.lower() == preset.lower():
            return OptimizerSpec(name, dict(options), frozenset(options), preset=preset, source=source)
    try:
        canonical, _ = resolve(head)
    except ValueError as e:
        raise ValueError(f"invalid optimizer spec {source!r}: {str(e).removeprefix('spec: ')}") from None
    return OptimizerSpec(canonical, source=source)


def _inner(node: ast.expr, text: str) -> OptimizerSpec:
    if isinstance(node, ast.Dict):  # the runner's stored form {'name': ..., 'hyperparameters': {...}}
        try:
            return OptimizerSpec.from_config(ast.literal_eval(node))
        except (ValueError, SyntaxError) as e:
            raise ValueError(f"invalid optimizer spec {text!r}: its inner optimizer: {e}") from None
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return parse(node.value)
    if not isinstance(node, (ast.Name, ast.Attribute, ast.Call)):
        raise ValueError(f"invalid optimizer spec {text!r}: the inner optimizer must be a spec such as Adam(lr=0.01)")
    return parse(ast.unparse(node))


def format(spec: OptimizerSpec) -> str:
    """The canonical text of ``spec``: it parses back to an equal spec.

    Exact values (``repr``), the fixed hyperparameters only (a preset's options where they differ
    from the preset's), components by their own name where only they were fixed.
    """
    return _text(spec, repr, tuned=frozenset(), every_difference=False)


def label(spec: OptimizerSpec, tuned: Mapping[str, Any] | Collection[str] | None = None) -> str:
    """A short label of what runs: the name, the learning rate (always, even at its default), and
    every other hyperparameter that differs from the class default (for a preset: from the preset's
    options), in constructor order, e.g. ``Adam(lr=0.0377*, betas=(0.5, 0.999))``.

    ``tuned``: a mapping of the tuned values (applied to ``spec``), or the names in ``spec`` that
    were tuned (default: ``spec.tuned``).  Tuned values are always shown, marked with a trailing ``*``.  Numbers have 3
    significant digits, more where that would round a value just below 1 to 1 (``beta2=0.9999``).
    """
    if tuned is None:
        names: frozenset[str] = spec.tuned
    elif isinstance(tuned, Mapping):
        spec = spec.with_values(tuned)
        names = frozenset(tuned)
    else:
        names = frozenset(tuned)
    for name in names:
        _locate(spec, name)  # an unknown name is an error, not a silently unmarked value
    return _text(spec, _short, tuned=names, every_difference=True)


def _text(spec: OptimizerSpec, number: Any, *, tuned: frozenset[str], every_difference: bool) -> str:
    klass = spec.cls
    base = defaults(klass)
    if spec.preset is not None:
        base.update(presets()[spec.preset][1])
    pairs = {pair for pair, _ in components(klass).values()}
    inner_tuned = frozenset(
        n.partition(".")[2] if n.startswith("optimizer.") else n for n in tuned if _in_inner(spec, n)
    )
    own_tuned = tuned - {n for n in tuned if _in_inner(spec, n)}
    parts = (
        [] if spec.inner is None else [_text(spec.inner, number, tuned=inner_tuned, every_difference=every_difference)]
    )
    shown = spec.hyperparameters
    if every_difference and base.get("lr") is not None and "lr" not in shown:  # the learning rate is always shown
        shown = {"lr": base["lr"], **shown}
    for key, value in shown.items():
        if key in pairs:
            names = COMPONENTS[key]
            marks = [names[i] in own_tuned or key in own_tuned for i in range(len(value))]
            if every_difference:
                if not (any(marks) or not _same(value, base.get(key))):
                    continue
                shown = ", ".join(_value(v, number) + ("*" if m else "") for v, m in zip(value, marks))
                parts.append(f"{key}=({shown})")
                continue
            if key in spec.fixed and not (
                spec.preset and _same(value, base.get(key)) and key in presets()[spec.preset][1]
            ):
                parts.append(f"{key}={_value(value, number)}")
            else:
                parts.extend(
                    f"{names[i]}={_value(value[i], number)}" for i in range(len(value)) if names[i] in spec.fixed
                )
            continue
        mark = "*" if key in own_tuned else ""
        if every_difference:
            if mark or not _same(value, base.get(key, inspect.Parameter.empty)) or key == "lr":
                parts.append(f"{key}={_value(value, number)}{mark}")
        elif key in spec.fixed and not (
            spec.preset and key in presets()[spec.preset][1] and _same(value, base.get(key))
        ):
            parts.append(f"{key}={_value(value, number)}")
    name = _display(spec)
    return f"{name}({', '.join(parts)})" if parts else name


def _in_inner(spec: OptimizerSpec, name: str) -> bool:
    return spec.inner is not None and _locate(spec, name)[0] is not spec


def _value(value: Any, number: Any) -> str:
    if isinstance(value, tuple):
        inside = ", ".join(_value(v, number) for v in value)
        return f"({inside},)" if len(value) == 1 else f"({inside})"
    if isinstance(value, float) and not isinstance(value, bool):
        return number(value)
    return repr(value)


def _short(x: float) -> str:
    """3 significant digits; more for a value just below 1 (a decay rate), so that 0.9999 is not shown as 1."""
    if not math.isfinite(x) or x == 0:
        return repr(x)
    for digits in range(3, 18):
        text = builtins.format(x, f".{digits}g")
        error = abs(float(text) - x)
        if error <= 5e-3 * abs(x) and (not 0 < x < 1 or error <= 5e-3 * (1 - x)):
            break
    mantissa, e, exponent = text.partition("e")
    return f"{mantissa}e{int(exponent)}" if e else text


# ---------------------------------------------------------------------------------------------
# Building
# ---------------------------------------------------------------------------------------------


def build(spec: str | OptimizerSpec, params: Iterable[Any]) -> torch.optim.Optimizer:
    """The optimizer of ``spec`` over ``params`` (the class's own checks run here)."""
    spec = parse(spec)
    klass = spec.cls
    if spec.inner is not None:
        return klass(build(spec.inner, params), **spec.hyperparameters)
    return klass(params, **spec.hyperparameters)
