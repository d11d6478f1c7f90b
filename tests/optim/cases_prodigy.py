import torch

from optimlab.optim import Prodigy

from .harness import Case
from .test_prodigy import AuthorsProdigy

INVALID = [
    (dict(lr=-1.0), r"Prodigy: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(1.0, 0.999)), r"Prodigy: invalid betas\[0\]=1.0: expected 0 <= betas\[0\] < 1"),
    (dict(beta3=1.5), r"Prodigy: invalid beta3=1.5: expected 0 <= beta3 < 1"),
    (dict(eps=0.0), r"Prodigy: invalid eps=0.0: expected 0 < eps"),
    (dict(weight_decay=float("nan")), r"Prodigy: invalid weight_decay=nan"),
    (dict(d0=0.0), r"Prodigy: invalid d0=0.0: expected 0 < d0"),
    (dict(d_coef=-1.0), r"Prodigy: invalid d_coef=-1.0: expected 0 < d_coef"),
    (dict(growth_rate=0.5), r"Prodigy: invalid growth_rate=0.5: expected 1 <= growth_rate"),
    (dict(slice_p=0), r"Prodigy: invalid slice_p=0: expected an integer >= 1"),
    (dict(slice_p=1.5), r"Prodigy: invalid slice_p=1.5: expected an integer >= 1"),
    (dict(fsdp_in_use=True), r"Prodigy: invalid fsdp_in_use=True: optimlab does not sum the estimate across processes"),
    (dict(decouple="no"), r"Prodigy: invalid decouple='no': expected True or False"),
]


def _case(id, solves=False, **kw):
    """``kw`` configures both sides; the convergence runs (``solves``) take lr 1, Prodigy's default."""
    return Case(
        id,
        make=lambda p, **o: Prodigy(p, **{**kw, **o}),
        reference=lambda p: AuthorsProdigy(p, **kw),
        solver=(lambda p: Prodigy(p, **kw)) if solves else None,
        invalid=INVALID,
        # for the harness: a float16 step is refused (test_prodigy.py), not run
        extra={"refuses_dtypes": {torch.float16: "v = d^2 g^2 underflows in float16 (the authors' code steps to inf)"}},
    )


CASES = [
    _case("Prodigy", solves=True),
    _case("Prodigy-wd", weight_decay=0.1, d0=1e-3),
    _case("Prodigy-coupled-wd", weight_decay=0.1, decouple=False, d0=1e-3),
    _case("Prodigy-bias-correction-safeguard", use_bias_correction=True, safeguard_warmup=True, d0=1e-2),
    _case("Prodigy-no-momentum", betas=(0.0, 0.99), beta3=0.9),
    _case("Prodigy-slice-growth", slice_p=3, d_coef=0.5, growth_rate=1.02, d0=1e-3),
]
