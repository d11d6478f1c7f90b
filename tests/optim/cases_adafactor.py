import torch

from optimlab.optim.adafactor import Adafactor

from .harness import Case
from .test_adafactor import FairseqAdafactor

_rel = dict(relative_step=True, warmup_init=False)
_abs = dict(relative_step=False, warmup_init=False)
INVALID = [
    (dict(lr=0.01, **_rel), r"Adafactor: invalid lr=0.01 with relative_step=True"),
    (dict(lr=None, **_abs), r"Adafactor: invalid lr=None with relative_step=False"),
    (dict(lr=0.1, relative_step=False, warmup_init=True), r"invalid warmup_init=True with relative_step=False"),
    (dict(lr=-1.0, **_abs), r"invalid lr=-1.0: expected 0 <= lr"),
    (dict(eps=(-1.0, 1e-3)), r"invalid eps\[0\]=-1.0: expected 0 <= eps\[0\]"),
    (dict(eps=(1e-30, float("nan"))), r"invalid eps\[1\]=nan"),
    (dict(eps=1e-3), r"invalid eps=0.001: expected a pair"),
    (dict(clip_threshold=0.0), r"invalid clip_threshold=0.0: expected 0 < clip_threshold"),
    (dict(decay_rate=0.5), r"invalid decay_rate=0.5: expected decay_rate <= 0"),
    (dict(beta1=1.0), r"invalid beta1=1.0: expected 0 <= beta1 < 1"),
    (dict(weight_decay=-0.1), r"invalid weight_decay=-0.1: expected 0 <= weight_decay"),
]


def _case(id, ref=FairseqAdafactor, ref_kw=None, solve=None, solve_steps=9000, solve_anneal=True, steps=200, **kw):
    """``kw`` configures both sides (``ref_kw`` the reference instead, where its names differ).

    Without momentum Adafactor's normalised steps keep circling the minimum, so the convergence
    runs add ``beta1=0.9`` (and drop weight decay, which moves the minimiser).
    """
    return Case(
        id,
        make=lambda p, **o: Adafactor(p, **{**kw, **o}),
        reference=lambda p: ref(p, **(kw if ref_kw is None else ref_kw)),
        solver=None if solve is False else lambda p: Adafactor(p, **{**kw, "weight_decay": 0.0, "beta1": 0.9, **(solve or {})}),
        solve_steps=solve_steps,
        solve_anneal=solve_anneal,
        steps=steps,
        invalid=INVALID,
        # with relative_step the lr is None: there is nothing for a scheduler to scale
        scheduled=not kw.get("relative_step", True),
    )


# The relative step stays 1e-2 for the first 10,000 steps and circles the minimum (1e-3 or 1e-15
# away after 10,000: rounding decided), so the convergence runs of relative-step cases take a
# fixed lr that falls to 0 over the last third; Adafactor-unscaled keeps it, shrunk by warm-up.
FIXED_LR = dict(relative_step=False, lr=0.01)
CASES = [
    _case("Adafactor", solve=FIXED_LR),
    # torch.optim.Adafactor is fairseq's default configuration when its lr (the cap of the
    # relative step) is 1e-2; it has none of the options.
    _case("Adafactor-vs-torch", ref=torch.optim.Adafactor, ref_kw=dict(lr=1e-2), solve=FIXED_LR),
    _case("Adafactor-beta1", beta1=0.9, solve=FIXED_LR),
    # 200 warm-up steps (1e-6 t) move the parameters by ~1e-2, so that one float32 rounding of
    # a parameter is 1e-5 of it: 600 steps; warm-up is far too slow to solve anything either
    _case("Adafactor-warmup", warmup_init=True, steps=600, solve=False),
    # unscaled, the steps stay ~1e-2 long and circle the minimum at ~1e-3 (the final distance is
    # luck): the convergence runs shrink them, by warm-up or a smaller lr
    _case("Adafactor-unscaled", scale_parameter=False, solve=dict(warmup_init=True), solve_steps=12000, solve_anneal=False),
    _case("Adafactor-lr", lr=0.01, relative_step=False),
    _case("Adafactor-lr-unscaled-beta1", lr=0.01, relative_step=False, scale_parameter=False, beta1=0.5, solve=dict(lr=3e-3), solve_steps=5000),
    _case("Adafactor-decay", weight_decay=0.1, beta1=0.9, solve=FIXED_LR),
    _case("Adafactor-lr-decay", lr=0.01, relative_step=False, weight_decay=0.1),
    _case("Adafactor-clip-decay-rate-eps", clip_threshold=0.5, decay_rate=-0.5, eps=(1e-20, 1e-2), solve=FIXED_LR),
]


# variant="torch" against torch.optim.Adafactor itself: its defaults, and every option it has
_TORCH_INVALID = [
    (dict(lr=None), r"^Adafactor: invalid lr=None with variant='torch': lr caps the relative step there"),
    (dict(warmup_init=True), r"^Adafactor: invalid warmup_init=True with variant='torch': torch has no warm-up$"),
    (dict(variant="timm"), r"^Adafactor: invalid variant='timm': expected one of 'fairseq', 'torch'$"),
    (dict(eps=(-1.0, 1e-3)), r"invalid eps\[0\]=-1.0: expected 0 <= eps\[0\]"),
]


def _torch_case(id, ref_kw, solve=True, **kw):
    kw = {"variant": "torch", "lr": 1e-2, "eps": (None, 1e-3), **kw}
    return Case(
        id,
        make=lambda p, **o: Adafactor(p, **{**kw, **o}),
        reference=lambda p: torch.optim.Adafactor(p, **ref_kw),
        solver=(lambda p: Adafactor(p, **{**kw, "weight_decay": 0.0, "beta1": 0.9})) if solve else None,
        # its capped relative step circles the minimum too (1e-4 away after 3000 steps)
        solve_steps=9000,
        solve_anneal=True,
        invalid=_TORCH_INVALID,
    )


CASES += [
    _torch_case("Adafactor-torch-variant", {}),
    _torch_case(
        "Adafactor-torch-variant-options",
        dict(lr=0.05, eps=(1e-3, 1e-2), weight_decay=0.1, beta2_decay=-0.5, d=2.0),
        solve=False,  # the defaults solve the problems; this case is about parity
        lr=0.05,
        eps=(1e-3, 1e-2),
        weight_decay=0.1,
        decay_rate=-0.5,
        clip_threshold=2.0,
    ),
]
