import pytorch_optimizer

from optimlab.optim import Adan

from .harness import SHAPES, Case
from .test_adan import AuthorsAdan

INVALID = [
    (dict(lr=-1.0), r"Adan: invalid lr=-1.0: expected 0 <= lr"),
    (dict(betas=(0.98, 0.92)), r"Adan: invalid betas=\(0.98, 0.92\): expected a triple \(beta1, beta2, beta3\), got 2"),
    (dict(betas=0.9), r"Adan: invalid betas=0.9: expected a triple"),
    (dict(betas=(0.98, 1.0, 0.99)), r"Adan: invalid betas\[1\]=1.0: expected 0 <= betas\[1\] < 1"),
    (dict(betas=(0.98, 0.92, -0.1)), r"Adan: invalid betas\[2\]=-0.1: expected 0 <= betas\[2\] < 1"),
    (dict(eps=-1e-8), r"Adan: invalid eps=-1e-08: expected 0 <= eps"),
    (dict(weight_decay=float("nan")), r"Adan: invalid weight_decay=nan"),
    (dict(max_grad_norm=-1.0), r"Adan: invalid max_grad_norm=-1.0: expected 0 <= max_grad_norm"),
    (dict(no_prox="yes"), r"Adan: invalid no_prox='yes': expected True or False"),
]


def _case(id, ref, ref_kw=None, shapes=SHAPES, solves=False, **kw):
    """``kw`` configures both sides (``ref_kw`` the reference instead, where its names differ).

    The convergence runs (``solves``: only where the case changes what they would do) take the
    default betas at lr 1e-3 for 6000 steps: 3.5e-5 from the quadratic's minimum and 1e-5 from
    Rosenbrock's (measured), against tolerances of 1e-3 and 1e-2; at lr 1e-2 Adan hovers at 4e-4.
    """
    return Case(
        id,
        make=lambda p, **o: Adan(p, **{**kw, **o}),
        reference=lambda p: ref(p, **(kw if ref_kw is None else ref_kw)),
        solver=(lambda p: Adan(p, **{**kw, "lr": 1e-3})) if solves else None,
        solve_steps=6000,
        shapes=shapes,
        invalid=INVALID,
    )


CASES = [
    _case("Adan", AuthorsAdan, solves=True, lr=0.01),
    _case("Adan-wd", AuthorsAdan, lr=0.01, weight_decay=0.1, betas=(0.9, 0.8, 0.95)),
    _case("Adan-no-prox", AuthorsAdan, lr=0.01, weight_decay=0.1, no_prox=True),
    _case("Adan-clip", AuthorsAdan, solves=True, lr=0.01, max_grad_norm=1.0),
    # the port, as a second opinion (its clip sums in float32, as the authors' does: test_adan.py)
    _case("Adan-wd-vs-pytorch-optimizer", pytorch_optimizer.Adan, lr=0.01, weight_decay=0.1),
    _case(
        "Adan-no-prox-vs-pytorch-optimizer",
        pytorch_optimizer.Adan,
        ref_kw=dict(lr=0.01, weight_decay=0.1, weight_decouple=True),
        lr=0.01,
        weight_decay=0.1,
        no_prox=True,
    ),
]
