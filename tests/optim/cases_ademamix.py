import pytorch_optimizer

from optimlab.optim import AdEMAMix

from .harness import Case
from .test_ademamix import AuthorsAdEMAMix

INVALID = [
    (dict(lr=-1.0), r"AdEMAMix: invalid lr=-1.0: expected 0 <= lr"),
    (
        dict(betas=(0.9, 0.999)),
        r"AdEMAMix: invalid betas=\(0.9, 0.999\): expected a triple \(beta1, beta2, beta3\), got 2",
    ),
    (dict(betas=0.9), r"AdEMAMix: invalid betas=0.9: expected a triple \(beta1, beta2, beta3\)$"),
    (dict(betas=(0.9, 0.999, 1.0)), r"AdEMAMix: invalid betas\[2\]=1.0: expected 0 <= betas\[2\] < 1"),
    (dict(alpha=-1.0), r"AdEMAMix: invalid alpha=-1.0: expected 0 <= alpha"),
    (dict(eps=float("nan")), r"AdEMAMix: invalid eps=nan"),
    (dict(weight_decay=-0.1), r"AdEMAMix: invalid weight_decay=-0.1: expected 0 <= weight_decay"),
    (dict(alpha_warmup=-5), r"AdEMAMix: invalid alpha_warmup=-5: expected an integer >= 0"),
    (dict(beta3_warmup=2.5), r"AdEMAMix: invalid beta3_warmup=2.5: expected an integer >= 0"),
]

# beta3 = 0.9999 keeps the first, far gradients for ~7000 steps: the convergence runs shorten the
# slow EMA's memory to 0.99 (measured: 5.5e-10 quadratic, 1.4e-9 Rosenbrock after 6000 steps)
SOLVE = dict(lr=3e-3, betas=(0.9, 0.999, 0.99), weight_decay=0.0)


def _case(id, ref, solve=False, **kw):
    """``kw`` configures both sides; ``solve``: this case runs the convergence problems."""
    return Case(
        id,
        make=lambda p, **o: AdEMAMix(p, **{**kw, **o}),
        reference=lambda p: ref(p, **kw),
        solver=(lambda p: AdEMAMix(p, **{**kw, **SOLVE})) if solve else None,
        solve_steps=6000,
        invalid=INVALID,
    )


CASES = [
    _case("AdEMAMix", AuthorsAdEMAMix, solve=True, lr=0.01),
    _case("AdEMAMix-beta1-zero", AuthorsAdEMAMix, solve=True, lr=0.01, betas=(0.0, 0.999, 0.999)),
    # both warm-ups end inside the 200 steps of the parity checks
    _case(
        "AdEMAMix-wd-warmups", AuthorsAdEMAMix, lr=0.01, alpha=5.0, beta3_warmup=120, alpha_warmup=80, weight_decay=0.1
    ),
    _case(
        "AdEMAMix-vs-pytorch-optimizer",
        lambda p, **kw: pytorch_optimizer.AdEMAMix(p, weight_decouple=True, **kw),
        lr=0.01,
        alpha=2.0,
        weight_decay=0.1,
    ),
]
