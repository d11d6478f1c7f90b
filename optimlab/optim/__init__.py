"""Drop-in ``torch.optim`` optimizers, each defined by one update rule next to its paper's equations.

Besides the classes, :data:`PRESETS` names the variants people talk about (Momentum, NAG,
AMSGrad, AMSBound, ADOPTOriginal, ...) as a class plus fixed options, and :func:`get` resolves a name.
"""

from __future__ import annotations

from typing import Any

from ._base import RuleOptimizer
from .adabelief import AdaBelief
from .adabound import AdaBound
from .adadelta import Adadelta
from .adafactor import Adafactor
from .adagrad import Adagrad
from .adam import Adam, AdamW
from .adamax import Adamax
from .adamod import AdaMod
from .adan import Adan
from .ademamix import AdEMAMix
from .adopt import ADOPT
from .lamb import LAMB
from .lion import Lion
from .lookahead import Lookahead
from .mars import MARS
from .muon import Muon
from .nadam import NAdam
from .prodigy import Prodigy
from .radam import RAdam
from .rmsprop import RMSprop
from .schedulefree import ScheduleFreeAdamW, ScheduleFreeSGD
from .sgd import SGD
from .shampoo import Shampoo
from .soap import SOAP
from .sophia import SophiaG
from .yogi import Yogi

#: name -> (class, options fixed by the name).  The lab's commands accept these names.
PRESETS: dict[str, tuple[type[RuleOptimizer], dict[str, Any]]] = {
    "SGD": (SGD, {}),
    "Momentum": (SGD, {"momentum": 0.9}),
    "NAG": (SGD, {"momentum": 0.9, "nesterov": True}),
    "Adagrad": (Adagrad, {}),
    "Adadelta": (Adadelta, {}),
    "RMSprop": (RMSprop, {}),
    "Adam": (Adam, {}),
    "AMSGrad": (Adam, {"amsgrad": True}),
    "AdamW": (AdamW, {}),
    "Adamax": (Adamax, {}),
    "NAdam": (NAdam, {}),
    "Yogi": (Yogi, {}),
    "RAdam": (RAdam, {}),
    "AdaBound": (AdaBound, {}),
    "AMSBound": (AdaBound, {"amsbound": True}),
    "AdaMod": (AdaMod, {}),
    "Adafactor": (Adafactor, {}),
    "AdaBelief": (AdaBelief, {}),
    "Lion": (Lion, {}),
    "ScheduleFreeSGD": (ScheduleFreeSGD, {}),
    "ScheduleFreeAdamW": (ScheduleFreeAdamW, {}),
    "ADOPT": (ADOPT, {}),
    # the authors' first release (before 2024-11-21): no clipping, m_2 = n_2 (ADOPT's docstring)
    "ADOPTOriginal": (ADOPT, {"original": True, "clip_lambda": None}),
    "AdEMAMix": (AdEMAMix, {}),
    "Adan": (Adan, {}),
    # MARS-approx, the authors' default; the exact correction needs the previous batch's gradient at the
    # current parameters (a second backward pass the lab's training loop does not make), so it is no preset
    "MARS": (MARS, {}),
    "LAMB": (LAMB, {}),
    "Prodigy": (Prodigy, {}),
    # Muon for every tensor of 2 or more dimensions, AdamW for the rest (the class's use_muon=None)
    "Muon": (Muon, {}),
    "SOAP": (SOAP, {}),
    "Shampoo": (Shampoo, {}),
}


def get(name: str) -> tuple[type[RuleOptimizer], dict[str, Any]]:
    """The class and fixed options of a preset name (case-insensitive), e.g. ``get("nag")``."""
    by_lower = {k.lower(): v for k, v in PRESETS.items()}
    try:
        cls, options = by_lower[name.lower()]
    except KeyError:
        raise ValueError(f"unknown optimizer {name!r}: expected one of {', '.join(PRESETS)}") from None
    return cls, dict(options)


__all__ = [
    "ADOPT",
    "PRESETS",
    "AdaBelief",
    "AdaBound",
    "AdEMAMix",
    "AdaMod",
    "Adadelta",
    "Adafactor",
    "Adagrad",
    "Adam",
    "AdamW",
    "Adamax",
    "Adan",
    "LAMB",
    "Lion",
    "Lookahead",
    "MARS",
    "Muon",
    "NAdam",
    "Prodigy",
    "RAdam",
    "RMSprop",
    "RuleOptimizer",
    "SGD",
    "SOAP",
    "ScheduleFreeAdamW",
    "ScheduleFreeSGD",
    "Shampoo",
    "SophiaG",
    "Yogi",
    "get",
]
