import torch

from optimlab.optim.nadam import NAdam

from .harness import Case

INVALID = [
    (dict(lr=-1.0), r"NAdam: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"NAdam: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(betas=(0.9, 1.0)), r"NAdam: invalid betas\[1\]=1.0: expected 0 <= betas\[1\] < 1"),
    (dict(eps=-1e-8), r"NAdam: invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=-0.1), r"NAdam: invalid weight_decay=-0.1: expected 0 <= weight_decay"),
    (dict(momentum_decay=float("nan")), r"NAdam: invalid momentum_decay=nan"),
]


class TorchNAdam(torch.optim.NAdam):
    """``torch.optim.NAdam``, its state created in the parameters' dtype.

    A fresh torch.optim.NAdam keeps ``mu_product`` in the default dtype (float32) even for float64
    parameters; it casts it to theirs only when it loads a state_dict.  Running torch's own step
    with the parameters' dtype as default gives its float64 arithmetic throughout, so the parity
    check is exact to float64; test_nadam.py shows what the float32 product costs.
    """

    def step(self, closure=None):
        default = torch.get_default_dtype()
        torch.set_default_dtype(self.param_groups[0]["params"][0].dtype)
        try:
            return super().step(closure)
        finally:
            torch.set_default_dtype(default)


# at a constant lr the steps circle the minimum: a larger lr that falls to 0 at the end
SOLVE = dict(lr=5e-3, betas=(0.9, 0.99))


def _case(id, solves=True, **kw):
    """``kw`` configures both sides; the convergence run (if ``solves``) drops weight decay (it
    moves the minimiser)."""
    return Case(
        id,
        make=lambda p, **o: NAdam(p, **{**kw, **o}),
        reference=lambda p: TorchNAdam(p, **kw),
        solver=None if not solves else lambda p: NAdam(p, **{**kw, "weight_decay": 0.0, **SOLVE}),
        solve_steps=6000,
        solve_anneal=True,
        invalid=INVALID,
    )


# Cases whose convergence run would repeat another's exactly (their option is weight decay, which
# the run drops, or a setting the run overrides) have none.
CASES = [
    _case("NAdam", lr=0.01),
    _case("NAdam-l2", False, lr=0.01, weight_decay=0.1),
    _case("NAdamW", False, lr=0.01, weight_decay=0.1, decoupled_weight_decay=True),
    _case("NAdam-momentum-decay", lr=0.01, betas=(0.8, 0.99), momentum_decay=0.04),
]
