"""Optimizer step time, bandwidth and first-step (compilation) time, for every optimizer of optimlab.optim.

Run by hand; prints one table per layout::

    python benchmarks/step.py                                       # everything (tens of minutes)
    python benchmarks/step.py --layouts tiny many-small --optimizers Adam SGD --reps 5 --first-step
    python benchmarks/step.py --layouts conv --path auto reference --first-step   # both paths

Layouts: ``large`` (8 tensors of 2**23 float32, 67M parameters), ``many-small`` (387 tensors
shaped like a 32-layer transformer of width 256, 25.3M parameters), ``conv`` (ResNet-34's 110
tensors: 3x3 convolutions of 64-512 channels, 1x1 downsampling, a 7x7 stem, batch-norm weights
and biases, a 1000-class classifier; 21.8M parameters) and ``tiny`` (one 2-element tensor).
Every optimizer runs with its defaults, so each layout takes the path the library chooses
(``--path native`` or ``--path reference`` forces one; several paths give a row each), on the
same parameters and fixed random gradients; the time is the median of ``--reps`` steps after
``--warmup`` steps (the first of which may compile; on ``tiny`` at least 200 after 20).

Byte model: a step reads each parameter, gradient and state element once and writes each
parameter and state element once, so it moves ``(3 + 2 S) * 4`` bytes per float32 parameter,
where ``S`` is the optimizer's state in floats per parameter, measured after one step (Adam: S = 2,
28 B; SGD: S = 0, 12 B; AMSGrad: S = 3, 36 B; Adafactor's factored second moment: S ~ 0;
Lookahead(Adam) adds 16 B every k = 5 steps for its synchronisation, 31.2 B).  The new classes by
the same rule: Lion and ScheduleFreeSGD S = 1, 20 B (momentum; z); ADOPT, ScheduleFreeAdamW and
LAMB S = 2, 28 B; AdEMAMix S = 3, 36 B (its slow EMA); MARS S = 3, 36 B (last_grad, kept for every
tensor); SophiaG S = 2, 28 B (its Hessian estimate); Adan S = 4, 44 B (its previous gradient); Prodigy S = 4, 44 B (its start p0 and s at
slice_p = 1); Muon S = 1 on matrices, 20 B, and 2 (AdamW) on the rest, plus the Newton–Schulz work
on each matrix, which no byte model counts.
GB/s is that byte count over the median step time: work done, not traffic measured, so an
implementation that makes several passes (the norms of LAMB and of MARS on matrices, Prodigy's two) shows as slower.

Each class's own byte model (columns ``own B/param``, ``vs fused (own)``) is the model above but for the
classes whose step must move other bytes than it counts (:data:`OWN`).  SophiaG, 24 B: its step reads its
Hessian estimate and does not write it (``update_hessian``, called every k steps, does; not timed here).
The rules that make two passes: a sum over a whole tensor (LAMB's norms of the parameter and of its update,
MARS's norm of the corrected gradient of a matrix) or over every tensor (Prodigy's estimate) must be
complete before the first element is written, so a tensor larger than the cache is read twice; their
model counts the least traffic that allows, from what each pass must read and write per float32 parameter:

* LAMB, 40 B: the first pass reads the parameter, the gradient and both moments and writes the moments
  (16 + 8; it sums the squares of the parameter and of the update), the second reads the parameter and the
  new moments and writes the parameter (12 + 4).  Computing the moments again in the second pass instead
  would read the gradient and old moments twice (16 + 28 = 44 B).
* MARS, 44 B on a matrix: the first pass reads the gradient and the last one (8, for the norm of the
  corrected gradient), the second is the one-pass step (36); on a vector (AdamW's single pass) the model
  above, 36 B.
* Prodigy, 48 B: the first pass reads the parameter, the gradient, ``s`` and ``p0`` and writes ``s`` (16 +
  4, the estimate's sums), the second reads the parameter, the gradient and the moments and writes the
  parameter and moments (16 + 12).  Updating the moments in the first pass instead costs more (24 + 12,
  then 12 + 4: 52 B).
The row ``prodigyopt`` is the authors' Prodigy (``--optimizers Prodigy prodigyopt``: the two rows' ``cpu vs
fused`` compare them by CPU time).

Columns: ``path`` (``native`` or ``reference``), ``ms`` (median step; Lookahead: median over cycles of k steps, per step), ``B/param`` (the byte
model), ``GB/s``, ``baseline ms`` and ``vs fused`` (GB/s over torch.optim.Adam(fused=True)'s,
timed on the same parameters right before the row; on ``tiny``, µs per step over torch.optim.Adam(foreach=False)'s instead),
``own B/param``, ``vs fused (own)`` and ``cpu vs fused (own)`` (the same by the class's own model, above;
not on ``tiny``),
``cpu vs fused``/``cpu vs µs`` (the same from this process's CPU time: with one thread, what a loaded
machine's waits leave out of the wall clock), ``vs po`` (the
pytorch_optimizer implementation's step time over ours, where it implements the same algorithm;
> 1 means ours is faster), ``vs official`` (the same for the authors' package: ``lion-pytorch``,
``torch-adopt``, ``schedulefree``, ``prodigyopt``, ``muon-optimizer``; :data:`OFFICIAL`), ``first cold``/``first warm`` (seconds for the first step in a fresh
process, compilation included, with an empty and then a filled kernel cache) and ``state
B/param`` (optimizer state bytes per parameter, ``step`` counters excluded).
"""

from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable

import torch

from optimlab.optim import PRESETS, Adam, Lookahead, SophiaG

Shapes = list[tuple[int, ...]]


def _transformer(layers: int = 32, width: int = 256, vocab: int = 1000) -> Shapes:
    block = [
        (width, 3 * width), (3 * width,), (width, width), (width,), (width,), (width,),
        (width, 4 * width), (4 * width,), (4 * width, width), (width,), (width,), (width,),
    ]  # fmt: skip
    return [(vocab, width)] + block * layers + [(width,), (width,)]


def _resnet34(classes: int = 1000) -> Shapes:
    def bn(width: int) -> Shapes:
        return [(width,), (width,)]

    shapes = [(64, 3, 7, 7), *bn(64)]
    wide = 64
    for width, blocks in zip((64, 128, 256, 512), (3, 4, 6, 3)):
        for _ in range(blocks):
            shapes += [(width, wide, 3, 3), *bn(width), (width, width, 3, 3), *bn(width)]
            if wide != width:
                shapes += [(width, wide, 1, 1), *bn(width)]
            wide = width
    return shapes + [(classes, wide), (classes,)]


PATHS = {"auto": None, "native": True, "reference": False}
LAYOUTS: dict[str, Callable[[], Shapes]] = {
    "large": lambda: [(1 << 23,)] * 8,
    "many-small": _transformer,
    "conv": _resnet34,
    "tiny": lambda: [(2,)],
}

#: preset -> (pytorch_optimizer class name, options), where that package implements the algorithm
#: itself (its Adam, SGD, RMSprop and NAdam are torch.optim's classes)
PYTORCH_OPTIMIZER = {
    "Adadelta": ("AdaDelta", {}),
    "Adamax": ("AdaMax", {}),
    "Yogi": ("Yogi", {}),
    "RAdam": ("RAdam", {}),
    "AdaBound": ("AdaBound", {}),
    "AMSBound": ("AdaBound", {"amsbound": True}),
    "AdaMod": ("AdaMod", {}),
    "Adafactor": ("AdaFactor", {}),
    "AdaBelief": ("AdaBelief", {}),
    "AdEMAMix": ("AdEMAMix", {}),
    "Adan": ("Adan", {}),
    "MARS": ("MARS", {}),
    "LAMB": ("Lamb", {}),
}


def _muon_official(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    """Keller Jordan's Muon with its AdamW for the tensors of fewer than 2 dimensions, as our use_muon=None."""
    # the installed module, not benchmarks/muon.py, which a script run from here imports as "muon"
    here = os.path.dirname(os.path.abspath(__file__))
    found = importlib.machinery.PathFinder.find_spec("muon", [p for p in sys.path if os.path.abspath(p or ".") != here])
    if found is None or found.loader is None:
        raise ImportError("muon-optimizer is not installed (pip install muon-optimizer==0.1.0)")
    muon = importlib.util.module_from_spec(found)
    found.loader.exec_module(muon)
    matrices, rest = [p for p in params if p.ndim >= 2], [p for p in params if p.ndim < 2]
    groups = [{"params": matrices, "use_muon": True}, {"params": rest, "use_muon": False}]
    return muon.SingleDeviceMuonWithAuxAdam([g for g in groups if g["params"]])


def _lion_official(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    import lion_pytorch

    return lion_pytorch.Lion(params)


def _adopt_official(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    import adopt

    return adopt.ADOPT(params)


def _schedulefree_official(name: str) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    def make(params: list[torch.Tensor]) -> torch.optim.Optimizer:
        import schedulefree

        return getattr(schedulefree, name)(params)

    return make


def _prodigy_official(params: list[torch.Tensor]) -> torch.optim.Optimizer:
    import prodigyopt

    return prodigyopt.Prodigy(params)


#: preset -> the authors' own package, at its defaults (ADOPTOriginal has none: the package is the current form)
OFFICIAL: dict[str, Callable[[list[torch.Tensor]], torch.optim.Optimizer]] = {
    "Lion": _lion_official,
    "ADOPT": _adopt_official,
    "ScheduleFreeSGD": _schedulefree_official("SGDScheduleFree"),
    "ScheduleFreeAdamW": _schedulefree_official("AdamWScheduleFree"),
    "Prodigy": _prodigy_official,
    "Muon": _muon_official,
}


def make_params(shapes: Shapes, seed: int = 0) -> list[torch.Tensor]:
    gen = torch.Generator().manual_seed(seed)
    params = [torch.randn(s, generator=gen) for s in shapes]
    for p in params:
        p.grad = torch.randn(p.shape, generator=gen) * 1e-2
    return params


#: Lookahead around Adam (k=5, alpha=0.5): one synchronisation every 5 steps
LOOKAHEAD = "Lookahead(Adam)"
#: the authors' Prodigy as a row of its own, so that it is timed by CPU time too against a baseline re-timed right
#: before it (``vs official`` is wall clock, which a loaded machine's waits distort)
PRODIGYOPT = "prodigyopt"
#: not a preset (its Hessian estimate needs a second backward pass in the training loop): a row of its own, the
#: step alone, on a zero estimate (the same arithmetic as any other)
SOPHIA = "SophiaG"
NAMES = [*PRESETS, LOOKAHEAD, PRODIGYOPT, SOPHIA]


def ours(name: str, fast: bool | None = None) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer]:
    if name == PRODIGYOPT:
        return _prodigy_official
    if name == LOOKAHEAD:
        return lambda params: Lookahead(Adam(params, fast=fast))
    if name == SOPHIA:
        return lambda params: SophiaG(params, fast=fast)
    cls, options = PRESETS[name]
    return lambda params: training(cls(params, **options, fast=fast))


def training(opt: torch.optim.Optimizer) -> torch.optim.Optimizer:
    """``opt`` in train mode where it has one (Schedule-Free, ours and the package's, start in eval mode)."""
    if callable(getattr(opt, "train", None)) and callable(getattr(opt, "eval", None)):
        opt.train()
    return opt


def reference(name: str) -> Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None:
    import pytorch_optimizer

    if name == LOOKAHEAD:
        return lambda params: pytorch_optimizer.Lookahead(torch.optim.Adam(params, foreach=False), k=5, alpha=0.5)
    if name not in PYTORCH_OPTIMIZER:
        return None

    cls_name, options = PYTORCH_OPTIMIZER[name]
    cls = getattr(pytorch_optimizer, cls_name)
    return lambda params: cls(params, lr=1e-3, **options)


def median_step(opt: torch.optim.Optimizer, warmup: int, reps: int) -> tuple[float, float]:
    """Medians over ``reps`` blocks of one cycle (Lookahead's k steps, else one step), per step: seconds of
    wall clock, and of this process's CPU time (module docstring)."""
    # Lookahead's k, not Schedule-Free's k (its step count in defaults)
    cycle = opt.defaults["k"] if isinstance(opt, Lookahead) else 1
    for _ in range(warmup):
        opt.step()
    wall, cpu = [], []
    for _ in range(reps):
        start, start_cpu = time.perf_counter(), time.process_time()
        for _ in range(cycle):
            opt.step()
        cpu.append((time.process_time() - start_cpu) / cycle)
        wall.append((time.perf_counter() - start) / cycle)
    return statistics.median(wall), statistics.median(cpu)


def byte_model(opt: torch.optim.Optimizer, n: int) -> float:
    """Bytes per parameter a step must move (module docstring); Lookahead's synchronisation reads
    and writes the fast and slow weights once every k steps."""
    inner = getattr(opt, "optimizer", None)
    if isinstance(inner, torch.optim.Optimizer):
        return byte_model(inner, n) + 4 * 4 / opt.defaults["k"]
    return 3 * 4 + 2 * state_bytes(opt) / n


#: bytes per float32 parameter of each tensor, for the classes whose step moves other bytes than the one-pass
#: model counts (module docstring)
OWN: dict[str, Callable[[torch.Tensor], int]] = {
    "SophiaG": lambda p: 24,
    "LAMB": lambda p: 40,
    "MARS": lambda p: 44 if p.dim() == 2 else 36,  # MARS's own test: a tensor of 2 dimensions takes its branch
    "Prodigy": lambda p: 48,
    PRODIGYOPT: lambda p: 48,  # the authors' Prodigy: the same rule
}


def own_model(name: str, opt: torch.optim.Optimizer, params: list[torch.Tensor]) -> float:
    """The class's own byte model: :data:`OWN` where it has one, else :func:`byte_model`."""
    n = sum(p.numel() for p in params)
    model = OWN.get(name)
    return byte_model(opt, n) if model is None else sum(model(p) * p.numel() for p in params) / n


def state_bytes(opt: torch.optim.Optimizer) -> int:
    """Optimizer state in bytes, Lookahead's slow weights and its inner optimizer's included."""
    inner = getattr(opt, "optimizer", None)
    return (state_bytes(inner) if isinstance(inner, torch.optim.Optimizer) else 0) + sum(
        v.numel() * v.element_size()
        for state in opt.state.values()
        for k, v in state.items()
        if torch.is_tensor(v) and k != "step"
    )


def path(opt: torch.optim.Optimizer) -> str:
    """``native`` if one more step runs a compiled kernel (a package's optimizer, such as the ``prodigyopt`` row,
    never does)."""
    from optimlab.optim import _native

    launch, launched = _native._launch, []

    def spy(*args: object) -> None:
        launched.append(True)
        launch(*args)

    _native._launch = spy
    try:
        opt.step()
    finally:
        _native._launch = launch
    return "native" if launched else "reference"


def first_step(layout: str, name: str, cache: str) -> float:
    """Seconds for the first step of ``name`` in a fresh process whose kernel cache is ``cache``."""
    env = dict(os.environ, OPTIMLAB_CACHE_DIR=cache)
    out = subprocess.run(
        [sys.executable, __file__, "--child", layout, name], env=env, check=True, capture_output=True, text=True
    ).stdout
    return json.loads(out.splitlines()[-1])["first_step_s"]


def child(layout: str, name: str) -> None:
    params = make_params(LAYOUTS[layout]())
    opt = ours(name)(params)
    start = time.perf_counter()
    opt.step()
    print(json.dumps({"first_step_s": time.perf_counter() - start}))


def bench_layout(layout: str, names: list[str], args: argparse.Namespace) -> None:
    shapes = LAYOUTS[layout]()
    params = make_params(shapes)
    n = sum(p.numel() for p in params)
    tiny = layout == "tiny"
    base_make = (
        (lambda ps: torch.optim.Adam(ps, foreach=False)) if tiny else (lambda ps: torch.optim.Adam(ps, fused=True))
    )
    base_name = "torch Adam(foreach=False)" if tiny else "torch Adam(fused=True)"
    print(f"\n## {layout}: {len(shapes)} tensors, {n:,} parameters; baseline {base_name}, timed before each row")
    header = [
        "optimizer",
        "path",
        "ms",
        "B/param",
        "GB/s",
        "baseline ms",
        "vs µs" if tiny else "vs fused",
        "cpu vs µs" if tiny else "cpu vs fused",
        "own B/param",
        "vs fused (own)",
        "cpu vs fused (own)",
        "vs po",
        "vs official",
        "first cold",
        "first warm",
        "state B/param",
    ]
    print("| " + " | ".join(header) + " |")
    print("|" + "---|" * len(header))
    # a tiny step takes tens of microseconds: many more repetitions for a stable median
    warmup, reps = (max(args.warmup, 20), max(args.reps, 200)) if tiny else (args.warmup, args.reps)
    for name, chosen in ((name, chosen) for name in names for chosen in args.path):
        # the baseline right before each row: a drift in the machine's load moves both alike
        base, base_cpu = median_step(base_make(params), warmup, reps)
        opt = ours(name, PATHS[chosen])(params)
        t, t_cpu = median_step(opt, warmup, reps)
        state = state_bytes(opt) / n
        model = byte_model(opt, n)
        own = own_model(name, opt, params)
        gbs = model * n / t / 1e9
        # on tiny the time per step, elsewhere the bandwidth (Adam's byte model is 28 B/param)
        versus, versus_cpu = (
            (t / base, t_cpu / base_cpu) if tiny else (model * base / (28 * t), model * base_cpu / (28 * t_cpu))
        )
        route = path(opt)
        del opt
        po, official = (
            _versus(make, params, t, warmup, reps) if chosen == args.path[0] else "-"
            for make in (reference(name), OFFICIAL.get(name))
        )
        cold = warm = "-"
        if layout in args.first_step and chosen == args.path[0]:
            with tempfile.TemporaryDirectory() as cache:
                cold = f"{first_step(layout, name, cache):.2f}"
                warm = f"{first_step(layout, name, cache):.2f}"
        row = [
            name,
            route,
            f"{t * 1e3:.3f}",
            f"{model:.0f}",
            f"{gbs:.2f}",
            f"{base * 1e3:.3f}",
            f"{versus:.2f}",
            f"{versus_cpu:.2f}",
            "-" if tiny else f"{own:.0f}",
            "-" if tiny else f"{own * base / (28 * t):.2f}",
            "-" if tiny else f"{own * base_cpu / (28 * t_cpu):.2f}",
            po,
            official,
            cold,
            warm,
            f"{state:.2f}",
        ]
        print("| " + " | ".join(row) + " |", flush=True)


def _versus(
    make: Callable[[list[torch.Tensor]], torch.optim.Optimizer] | None,
    params: list[torch.Tensor],
    t: float,
    warmup: int,
    reps: int,
) -> str:
    """Another implementation's median step time over ours (``t``), on copies of the parameters; "-" without one."""
    if make is None:
        return "-"
    copies = [p.detach().clone() for p in params]
    for p, q in zip(copies, params):
        p.grad = q.grad
    return f"{median_step(training(make(copies)), warmup, reps)[0] / t:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--layouts", nargs="+", choices=list(LAYOUTS), default=list(LAYOUTS))
    parser.add_argument("--optimizers", nargs="+", choices=NAMES, default=NAMES, metavar="NAME")
    parser.add_argument("--warmup", type=int, default=3, help="steps before timing (the first compiles)")
    parser.add_argument("--reps", type=int, default=10, help="timed steps; the median is reported")
    parser.add_argument(
        "--first-step", nargs="*", choices=list(LAYOUTS), default=["many-small"],
        help="layouts whose first step is timed in fresh processes, cold and warm cache (give none to skip)",
    )  # fmt: skip
    parser.add_argument(
        "--path", nargs="+", choices=list(PATHS), default=["auto"],
        help="auto: the library's choice (fast=None); native or reference: fast=True or fast=False; several: a row each",
    )  # fmt: skip
    parser.add_argument("--child", nargs=2, metavar=("LAYOUT", "NAME"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        child(*args.child)
        return
    load = os.getloadavg()[0]
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average {load:.2f} at start")
    for layout in args.layouts:
        bench_layout(layout, args.optimizers, args)
    print(f"\nload average {os.getloadavg()[0]:.2f} at end")


if __name__ == "__main__":
    main()
