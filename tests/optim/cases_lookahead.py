"""Lookahead around torch's SGD and Adam and optimlab's Adam, beside the paper and pytorch-optimizer.

``PaperLookahead`` is Algorithm 1 of Zhang et al. (2019) written out independently of
optimlab's class; ``pytorch_optimizer.Lookahead`` is the reference where it agrees with the paper
(every parameter has a gradient at every step here, and its pullback handles ``momentum_buffer``
only).  The torch-optimizer Lookahead is out of phase and the authors' code is not packaged:
both are in ``test_lookahead.py``.
"""

from __future__ import annotations

from typing import Any

import pytorch_optimizer
import torch

from optimlab.optim.adam import Adam
from optimlab.optim.lookahead import Lookahead

from .harness import Case

LOOKAHEAD_OPTIONS = ("k", "alpha", "pullback_momentum")


class PaperLookahead(torch.optim.Optimizer):
    """Algorithm 1 of the paper, plus the authors' momentum options, in plain tensor code.

    The slow weights are the parameters at construction; after every k-th inner step
    phi += alpha * (theta - phi) and theta = phi.  ``pullback`` does the same to the inner
    momentum with a slow momentum starting at zero; ``reset`` zeroes it.
    """

    def __init__(self, inner: torch.optim.Optimizer, k: int, alpha: float, pullback_momentum: str = "none") -> None:
        # no Optimizer.__init__: the groups must be the inner optimizer's list, for lr schedulers
        self.inner, self.k, self.alpha, self.mode = inner, k, alpha, pullback_momentum
        self.param_groups = inner.param_groups
        self.params = [p for g in inner.param_groups for p in g["params"]]
        self.slow = [p.detach().clone() for p in self.params]
        self.slow_momentum = [torch.zeros_like(p) for p in self.params]
        self.t = 0

    @torch.no_grad()
    def step(self, closure: Any = None) -> Any:
        loss = self.inner.step(closure)
        self.t += 1
        if self.t % self.k == 0:
            for p, phi, phi_m in zip(self.params, self.slow, self.slow_momentum):
                phi += self.alpha * (p - phi)
                p.copy_(phi)
                if self.mode == "none":
                    continue
                state = self.inner.state[p]
                m = state["exp_avg"] if "exp_avg" in state else state["momentum_buffer"]
                if self.mode == "reset":
                    m.zero_()
                else:
                    phi_m += self.alpha * (m - phi_m)
                    m.copy_(phi_m)
        return loss


INVALID = [
    (dict(k=0), r"Lookahead: invalid k=0: expected an integer >= 1"),
    (dict(k=2.0), r"Lookahead: invalid k=2.0: expected an integer >= 1"),
    (dict(k=True), r"Lookahead: invalid k=True: expected an integer >= 1"),
    (dict(alpha=0.0), r"Lookahead: invalid alpha=0.0: expected 0 < alpha <= 1"),
    (dict(alpha=1.5), r"Lookahead: invalid alpha=1.5: expected 0 < alpha <= 1"),
    (dict(alpha=float("nan")), r"Lookahead: invalid alpha=nan"),
    (dict(pullback_momentum="both"), r"Lookahead: invalid pullback_momentum='both': expected one of 'none', 'reset', 'pullback'"),
]


def _case(id, inner, ref_inner, wrap_ref, inner_kw, la_kw, solve=None, solve_steps=2000):
    """Lookahead(inner(params, **inner_kw), **la_kw) beside wrap_ref(ref_inner(params, **inner_kw), **la_kw).

    ``make`` sends k/alpha/pullback_momentum overrides to Lookahead and the rest (foreach,
    maximize, ...) to the inner optimizer; ``solve`` overrides both for the convergence runs.
    """

    def make(params, **overrides):
        la = {**la_kw, **{key: v for key, v in overrides.items() if key in LOOKAHEAD_OPTIONS}}
        kw = {**inner_kw, **{key: v for key, v in overrides.items() if key not in LOOKAHEAD_OPTIONS}}
        return Lookahead(inner(params, **kw), **la)

    return Case(
        id,
        make=make,
        reference=lambda params: wrap_ref(ref_inner(params, **inner_kw), **la_kw),
        solver=(lambda params: make(params, **solve)) if solve is not None else None,
        solve_steps=solve_steps,
        invalid=INVALID,
    )


def _alone(inner, **_lookahead):
    """The inner optimizer by itself: the reference for k=1, alpha=1."""
    return inner


SGD = dict(lr=0.05, momentum=0.9)
ADAM = dict(lr=0.01)
# Convergence runs for every SGD case and two Adam ones: Adam's deterministic end game is slow and
# spiky, each run costs seconds, and the other Adam options match the paper reference step by step.
SGD_SOLVE = dict(lr=2e-3, momentum=0.9)
ADAM_SOLVE = dict(lr=0.05, betas=(0.9, 0.9999), eps=1e-4)  # eps damps the spikes of Adam's end game

TORCH_SGD, TORCH_ADAM, LIBRARY = torch.optim.SGD, torch.optim.Adam, pytorch_optimizer.Lookahead

CASES = [
    # k = 5 resumes on a synchronisation step in the standard resume test (50 steps); the others mid-cycle
    _case("Lookahead-SGD", TORCH_SGD, TORCH_SGD, LIBRARY, SGD, dict(k=5, alpha=0.5), SGD_SOLVE),
    _case(
        "Lookahead-SGD-nesterov", TORCH_SGD, TORCH_SGD, PaperLookahead, dict(SGD, nesterov=True), dict(k=3, alpha=0.8),
        dict(SGD_SOLVE, lr=1e-3, nesterov=True),
        4000,
    ),
    _case("Lookahead-SGD-pullback", TORCH_SGD, TORCH_SGD, LIBRARY, SGD, dict(k=4, alpha=0.6, pullback_momentum="pullback"), SGD_SOLVE),
    _case("Lookahead-SGD-reset", TORCH_SGD, TORCH_SGD, LIBRARY, SGD, dict(k=6, alpha=0.5, pullback_momentum="reset"), SGD_SOLVE, 8000),
    _case("Lookahead-torchAdam", TORCH_ADAM, TORCH_ADAM, LIBRARY, ADAM, dict(k=3, alpha=0.5)),
    _case("Lookahead-Adam", Adam, TORCH_ADAM, PaperLookahead, ADAM, dict(k=7, alpha=0.5), ADAM_SOLVE, 3000),
    _case(
        "Lookahead-AdamW-amsgrad", Adam, TORCH_ADAM, PaperLookahead,
        dict(ADAM, weight_decay=0.1, decoupled_weight_decay=True, amsgrad=True), dict(k=4, alpha=0.3),
    ),
    # the first moment exp_avg pulled back or reset: no library does it (pytorch-optimizer's has no effect on Adam)
    _case("Lookahead-Adam-pullback", Adam, TORCH_ADAM, PaperLookahead, ADAM, dict(k=3, alpha=0.5, pullback_momentum="pullback")),
    _case("Lookahead-Adam-reset", Adam, TORCH_ADAM, PaperLookahead, ADAM, dict(k=6, alpha=0.5, pullback_momentum="reset")),
    _case("Lookahead-k1-alpha1", Adam, TORCH_ADAM, _alone, ADAM, dict(k=1, alpha=1.0), dict(lr=0.05), 3000),
]
