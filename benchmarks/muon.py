"""Muon's step time against torch.optim.Muon, and what of it is Newton–Schulz.

Run by hand::

    python benchmarks/muon.py                          # 12 layers of width 512 (37.8M parameters)
    python benchmarks/muon.py --layers 2 --width 256 --reps 5

Layout: ``--layers`` transformer blocks of width d, each with four d x d matrices (attention),
a d x 4d and a 4d x d matrix (MLP) and six vectors (biases, norms), float32 on the CPU, fixed
random gradients.  Both sides follow the official recipe: ``optimlab.optim.Muon`` with its
defaults (Muon for the matrices, its AdamW for the vectors), against ``torch.optim.Muon`` for the
matrices plus ``torch.optim.AdamW(lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0)`` (the
official auxiliary AdamW's settings) for the vectors; both run Newton–Schulz in bfloat16 (their
default; ``--ns-dtype float32`` runs ours in float32 as well, torch's cannot).

Printed: the median step of each over ``--reps`` steps after ``--warmup``, timed alternately in
the same run, their ratio, and ``newton-schulz ms``: the median time of Newton–Schulz alone on
the same matrices (``optimlab.optim._matrix.newton_schulz``, 5 steps), i.e. the matrix work of
one step, with its share of our step.

``--soap`` adds SOAP on the same layout: ``optimlab.optim.SOAP`` against ``pytorch_optimizer.SOAP``
(4.1.0), both with their defaults (every tensor in SOAP, the vectors as Adam; bases refreshed
every ``--soap-frequency`` steps, 10 by default), float32.  A step's cost depends on whether it
refreshes the bases, so each is timed over blocks of that many steps (one refresh each), alternately,
after a first step that builds the bases (``eigh``).  Printed: the mean step of each over ``--reps``
blocks (median block), their ratio, and the matrix work of our step alone on the same tensors
(``optimlab.optim._matrix``: the Gram matrices and the two rotations of every step, plus a refresh's
rotations and power-iteration QRs divided by the frequency).

``--shampoo`` adds Shampoo on the same layout: ``optimlab.optim.Shampoo`` with its defaults (blocks of at
most 1024, AdaGrad grafting) and unblocked (``max_preconditioner_dim`` = the largest dimension: the same
factor matrices as the port; the same configuration as the defaults where no dimension exceeds 1024,
so that the two rows show the run's noise), against ``pytorch_optimizer.Shampoo`` (4.1.0, Gupta et al.'s original: no
blocking, no grafting, roots by SVD), every tensor in Shampoo, float32, inverse roots recomputed every
``--shampoo-frequency`` steps (10 by default; the port's ``preconditioning_compute_steps``).  As for SOAP,
each is timed over blocks of that many steps (one root computation each), alternately, after a first
step.  Printed: the mean step of each (median block), the ratios, and the matrix work of our step alone:
the inverse roots of every factor matrix (``matrix_inverse_root``, ``eigh`` in the factors' float32) divided by the
frequency, and every step's outer products and preconditioning products.
"""

from __future__ import annotations

import argparse
import statistics
import time

import torch

from optimlab.optim import SOAP, Muon, Shampoo
from optimlab.optim._matrix import gram, matrix_inverse_root, newton_schulz, refresh_eigenbasis, rotate
from optimlab.optim.shampoo import merged_shape, split_blocks


def shapes(layers: int, d: int) -> list[tuple[int, ...]]:
    block = [(d, d)] * 4 + [(d, 4 * d), (4 * d, d)] + [(d,)] * 4 + [(4 * d,), (d,)]
    return block * layers


def timed(step, warmup: int, reps: int) -> list[float]:
    for _ in range(warmup):
        step()
    times = []
    for _ in range(reps):
        start = time.perf_counter()
        step()
        times.append(time.perf_counter() - start)
    return times


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layers", type=int, default=12)
    parser.add_argument("--width", type=int, default=512)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--warmup", type=int, default=1)
    parser.add_argument("--ns-dtype", choices=["bfloat16", "float32"], default="bfloat16")
    parser.add_argument("--soap", action="store_true", help="also time SOAP against pytorch_optimizer.SOAP")
    parser.add_argument("--soap-frequency", type=int, default=10, help="SOAP's precondition_frequency")
    parser.add_argument("--shampoo", action="store_true", help="also time Shampoo against pytorch_optimizer.Shampoo")
    parser.add_argument("--shampoo-frequency", type=int, default=10, help="Shampoo's precondition_frequency")
    args = parser.parse_args()
    ns_dtype = getattr(torch, args.ns_dtype)

    gen = torch.Generator().manual_seed(0)
    layout = shapes(args.layers, args.width)
    start = [torch.randn(s, generator=gen) for s in layout]
    grads = [torch.randn(s, generator=gen) for s in layout]
    n = sum(p.numel() for p in start)

    ours_params = [p.clone() for p in start]
    ours = Muon(ours_params, ns_dtype=ns_dtype)
    theirs_params = [p.clone() for p in start]
    matrices = [p for p in theirs_params if p.dim() == 2]
    vectors = [p for p in theirs_params if p.dim() < 2]
    torch_muon = torch.optim.Muon(matrices, lr=0.02, weight_decay=0.0)
    torch_adamw = torch.optim.AdamW(vectors, lr=3e-4, betas=(0.9, 0.95), eps=1e-10, weight_decay=0.0)
    for ps in (ours_params, theirs_params):
        for p, g in zip(ps, grads):
            p.grad = g

    def torch_step() -> None:
        torch_muon.step()
        torch_adamw.step()

    # alternate the two, so that load on the machine falls on both alike
    ours_times, torch_times = [], []
    timed(ours.step, args.warmup, 0)
    timed(torch_step, args.warmup, 0)
    for _ in range(args.reps):
        ours_times += timed(ours.step, 0, 1)
        torch_times += timed(torch_step, 0, 1)
    ns_inputs = [g for g in grads if g.dim() == 2]
    ns_times = timed(lambda: [newton_schulz(g, dtype=ns_dtype) for g in ns_inputs], args.warmup, args.reps)

    ours_ms, torch_ms, ns_ms = (1e3 * statistics.median(t) for t in (ours_times, torch_times, ns_times))
    print(
        f"{args.layers} layers, width {args.width}: {len(layout)} tensors, {n / 1e6:.1f}M parameters, "
        f"{len(ns_inputs)} matrices; Newton-Schulz in {args.ns_dtype}; {torch.get_num_threads()} threads; "
        f"median of {args.reps} steps"
    )
    print(f"{'':24}{'ms':>10}")
    print(f"{'optimlab Muon':24}{ours_ms:10.1f}")
    print(f"{'torch Muon + AdamW':24}{torch_ms:10.1f}")
    print(f"{'newton-schulz alone':24}{ns_ms:10.1f}  ({100 * ns_ms / ours_ms:.0f}% of our step)")
    print(f"torch / optimlab step time: {torch_ms / ours_ms:.2f} (> 1: ours is faster)")
    if args.soap:
        soap_rows(start, grads, args.soap_frequency, args.reps)
    if args.shampoo:
        shampoo_rows(start, grads, args.shampoo_frequency, args.reps)


def soap_rows(start: list[torch.Tensor], grads: list[torch.Tensor], frequency: int, reps: int) -> None:
    """SOAP against pytorch_optimizer's, per step over blocks of ``frequency`` steps (see the module docstring)."""
    import pytorch_optimizer

    ours_params, theirs_params = [p.clone() for p in start], [p.clone() for p in start]
    ours = SOAP(ours_params, precondition_frequency=frequency)
    theirs = pytorch_optimizer.SOAP(theirs_params, precondition_frequency=frequency)
    for ps in (ours_params, theirs_params):
        for p, g in zip(ps, grads):
            p.grad = g
    ours.step()  # the first step builds the bases
    theirs.step()

    def block(opt: torch.optim.Optimizer) -> None:
        for _ in range(frequency):
            opt.step()

    ours_times, theirs_times = [], []
    for _ in range(reps):
        ours_times += timed(lambda: block(ours), 0, 1)
        theirs_times += timed(lambda: block(theirs), 0, 1)
    states = [ours.state[p] for p in ours_params]
    step_work = timed(lambda: [_step_matrix_work(g, s) for g, s in zip(grads, states)], 1, reps)
    refresh_work = timed(lambda: [_refresh_matrix_work(s) for s in states], 1, reps)

    ours_ms, theirs_ms = (1e3 * statistics.median(t) / frequency for t in (ours_times, theirs_times))
    work_ms = 1e3 * (statistics.median(step_work) + statistics.median(refresh_work) / frequency)
    print(f"SOAP, precondition_frequency={frequency}: mean step over blocks of {frequency}, median of {reps} blocks")
    print(f"{'optimlab SOAP':24}{ours_ms:10.1f}")
    print(f"{'pytorch_optimizer SOAP':24}{theirs_ms:10.1f}")
    print(f"{'matrix work alone':24}{work_ms:10.1f}  ({100 * work_ms / ours_ms:.0f}% of our step)")
    print(f"pytorch_optimizer / optimlab step time: {theirs_ms / ours_ms:.2f} (> 1: ours is faster)")


def _step_matrix_work(g: torch.Tensor, state: dict) -> None:
    """What of a SOAP step multiplies matrices: the Gram matrices and the two rotations."""
    bases = [q if len(q) else None for q in state["Q"]]
    for k, m in enumerate(state["GG"]):
        if len(m):
            gram(g, k)
    rotate(rotate(g, bases), bases, back=True)


def _refresh_matrix_work(state: dict) -> None:
    """A refresh's extra work: the first moment out of and into the bases, a power iteration + QR per basis."""
    bases = [q if len(q) else None for q in state["Q"]]
    rotate(rotate(state["exp_avg"], bases, back=True), bases)
    for m, q in zip(state["GG"], bases):
        if q is not None:
            refresh_eigenbasis(m, q)


def shampoo_rows(start: list[torch.Tensor], grads: list[torch.Tensor], frequency: int, reps: int) -> None:
    """Shampoo against pytorch_optimizer's, per step over blocks of ``frequency`` steps (see the module docstring)."""
    import pytorch_optimizer

    largest = max(max(p.shape) for p in start)
    sides = {
        "optimlab Shampoo": lambda ps: Shampoo(ps, precondition_frequency=frequency),
        "  unblocked": lambda ps: Shampoo(ps, precondition_frequency=frequency, max_preconditioner_dim=largest),
        "pytorch_optimizer": lambda ps: pytorch_optimizer.Shampoo(ps, preconditioning_compute_steps=frequency),
    }
    opts = {}
    for name, make in sides.items():
        params = [p.clone() for p in start]
        for p, g in zip(params, grads):
            p.grad = g.clone()  # pytorch_optimizer's Shampoo overwrites its gradients
        opts[name] = make(params)
        opts[name].step()

    def block(opt: torch.optim.Optimizer) -> None:
        for _ in range(frequency):
            opt.step()

    times: dict[str, list[float]] = {name: [] for name in opts}
    for _ in range(reps):
        for name, opt in opts.items():
            times[name] += timed(lambda opt=opt: block(opt), 0, 1)
    ours = opts["optimlab Shampoo"]
    states = [ours.state[p] for p in ours.param_groups[0]["params"]]
    factors = [v for s in states for k, v in s.items() if ".factor_matrix_" in k]
    roots = timed(lambda: [matrix_inverse_root(f, 4, dtype=None) for f in factors], 0, reps)
    products = timed(lambda: [_shampoo_products(g, s) for g, s in zip(grads, states)], 1, reps)

    ms = {name: 1e3 * statistics.median(t) / frequency for name, t in times.items()}
    roots_ms = 1e3 * statistics.median(roots) / frequency
    products_ms = 1e3 * statistics.median(products)
    print(
        f"Shampoo, precondition_frequency={frequency} (pytorch_optimizer's preconditioning_compute_steps): mean step "
        f"over blocks of {frequency}, median of {reps} blocks; {len(factors)} factor matrices in blocks of at most 1024"
    )
    for name, value in ms.items():
        print(f"{name:24}{value:10.1f}")
    print(f"{'roots alone (eigh)':24}{roots_ms:10.1f}  ({100 * roots_ms / ms['optimlab Shampoo']:.0f}% of our step)")
    print(f"{'products alone':24}{products_ms:10.1f}  ({100 * products_ms / ms['optimlab Shampoo']:.0f}% of our step)")
    print(
        f"pytorch_optimizer / optimlab step time: {ms['pytorch_optimizer'] / ms['optimlab Shampoo']:.2f}, unblocked "
        f"{ms['pytorch_optimizer'] / ms['  unblocked']:.2f} (> 1: ours is faster)"
    )


def _shampoo_products(g: torch.Tensor, state: dict) -> None:
    """What of a Shampoo step multiplies matrices: every block's outer products and its preconditioning."""
    merged = merged_shape(g.shape, 1024, True)
    for i, b in enumerate(split_blocks(g.reshape(merged), 1024)):
        direction = b
        for k in range(b.dim()):
            others = [d for d in range(b.dim()) if d != k]
            torch.tensordot(b, b, dims=(others, others))
            direction = torch.tensordot(direction, state[f"block_{i}.inv_factor_matrix_{k}"], dims=([0], [0]))


if __name__ == "__main__":
    main()
