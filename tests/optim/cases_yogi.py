import torch_optimizer

from optimlab.optim.yogi import Yogi

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"Yogi: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"Yogi: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, 1.5)), r"Yogi: invalid betas\[1\]=1.5: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-3), r"Yogi: invalid eps=-0.001: expected 0 <= eps"),
    (dict(initial_accumulator=-1e-6), r"Yogi: invalid initial_accumulator=-1e-06: expected 0 <= initial_accumulator"),
    (dict(weight_decay=float("nan")), r"Yogi: invalid weight_decay=nan: expected 0 <= weight_decay"),
    (dict(eps_root=-1.0), r"Yogi: invalid eps_root=-1.0: expected 0 <= eps_root"),
]


def _case(id, ref, solve=None, solve_steps=4000, **kw):
    """``kw`` configures both sides; ``solve`` the convergence run (weight decay off: it moves the minimiser)."""
    return Case(
        id,
        make=lambda p, **o: Yogi(p, **{**kw, **o}),
        reference=(lambda p: ref(p, **kw)) if ref else None,
        solver=lambda p: Yogi(p, **{**kw, "weight_decay": 0.0, "lr": 0.05, **(solve or {})}),
        solve_steps=solve_steps,
        invalid=INVALID,
    )


CASES = [
    _case("Yogi", torch_optimizer.Yogi),
    _case("Yogi-l2", torch_optimizer.Yogi, weight_decay=0.1, betas=(0.8, 0.99), solve=dict(betas=(0.9, 0.999))),
    # v_0 = 0: the first step takes sign(0 - g^2) = -1 for every nonzero gradient
    _case("Yogi-zero-accumulator", torch_optimizer.Yogi, initial_accumulator=0.0, eps=1e-6),
    # options with no torch reference: checked against the equations in test_yogi.py
    _case("Yogi-paper", None, zero_exp_avg=True, bias_correction=False),
    _case("Yogi-authors-tf", None, zero_exp_avg=True, eps_before_bias_correction=True),
    _case("Yogi-optax-eps-root", None, eps_root=1e-8),
]
