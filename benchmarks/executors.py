"""What each executor costs per run, and the throughput of 1 and 2 local workers (docs/scaling.md).

Run by hand (the data directory must hold airfoil and mnist)::

    OPTIMLAB_DATA_DIR=../shared/data python benchmarks/executors.py
    python benchmarks/executors.py --runs 20 --seeds 4 --no-ray

1. **Overhead**: ``--runs`` runs of a task that trains no step (airfoil-linreg's evaluation at step
   0 and at the end, nothing else) through each executor into a fresh store: ``first`` is the
   seconds to the first result (starting the workers or Ray included), ``per run`` the seconds per
   run after it.  The in-process executor is the baseline: what a run costs with no executor.
2. **Throughput**: :func:`optimlab.protocol.evaluate` of mnist-cnn (Adam, Momentum) at the smoke
   budget with ``--seeds`` seeds, into a fresh store each time: in process (torch's threads: the
   cores), then 1 and 2 local workers (1 thread each), and Ray with 2 CPUs (1 per run).  Rows are
   timed one after another in the same run: compare their ratios, not their seconds, on a loaded
   machine.
3. **The README's comparison** (``--comparison``): :func:`optimlab.protocol.compare` of mnist-cnn
   (``--opt``, default the README's six optimizers) with ``--trials`` trials and ``--eval-seeds``
   seeds at ``--budget`` (default quick), in process, at 1 and 2 local workers and on Ray with 2
   CPUs, each into a fresh store; the last column says whether its summary (every optimizer's final
   metrics over seeds) equals that of 1 local worker, number for number (the in-process runs use
   all of torch's threads, which makes them other runs with other numbers).
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch

from optimlab import protocol
from optimlab.executors import Driver, Executor, InProcess, Local
from optimlab.runner import prepare
from optimlab.store import Store
from optimlab.tasks import Instance, get

AIRFOIL = get("airfoil-linreg")


class NoSteps(type(AIRFOIL)):  # type: ignore[misc]
    """airfoil-linreg under another name, training no step: a run that costs what evaluating costs."""

    def __init__(self) -> None:
        self.__dict__.update(AIRFOIL.__dict__)
        object.__setattr__(self, "name", "airfoil-nosteps")  # a frozen dataclass field

    def setup(self, budget: Any, *, data_dir: Any, device: torch.device) -> Instance:
        return _NoStepsInstance(super().setup(budget, data_dir=data_dir, device=device))


class _NoStepsInstance(Instance):
    def __init__(self, inner: Instance) -> None:
        self.inner = inner
        self.eval_split, self.final_split, self.steps_per_epoch = (
            inner.eval_split,
            inner.final_split,
            inner.steps_per_epoch,
        )

    def parameters(self) -> dict[str, list[torch.nn.Parameter]]:
        return self.inner.parameters()

    def batches(self, generator: torch.Generator) -> Iterator[Any]:
        return iter(())

    def step(self, batch: Any, optimizers: Any) -> dict[str, torch.Tensor]:
        raise AssertionError("no step")

    def evaluate(self, split: str) -> dict[str, float]:
        return self.inner.evaluate(split)

    def constants(self) -> dict[str, float]:
        return self.inner.constants()


def overhead(make: Callable[[], Executor], runs: int, folder: Path, name: str) -> tuple[float, float]:
    """Seconds to the first result, and per run after it, of ``runs`` no-step runs."""
    task = NoSteps()
    with Store(folder / f"overhead-{name}.sqlite") as store, make() as executor:
        threads = getattr(executor, "threads", None)
        specs = [prepare(task, "Adam", {}, seed, "smoke", threads=threads) for seed in range(runs)]
        began = time.perf_counter()
        with Driver(executor, store) as driver:
            for n, spec in enumerate(specs):
                driver.submit(spec, n)
            first = None
            for _ in driver:
                first = first or time.perf_counter()
        end = time.perf_counter()
    assert first is not None
    return first - began, (end - first) / max(1, runs - 1)


def throughput(executor: Any, workers: int | None, seeds: int, folder: Path, name: str) -> float:
    with Store(folder / f"throughput-{name}.sqlite") as store:
        began = time.perf_counter()
        protocol.evaluate(
            "mnist-cnn", ["Adam", "Momentum"], "smoke", seeds=seeds, store=store, executor=executor, workers=workers,
            progress=False,
        )  # fmt: skip
        return time.perf_counter() - began


README_OPTIMIZERS = ("Adam", "AdamW", "RAdam", "AdaBelief", "Yogi", "Momentum")


def comparison(
    executor: Any, workers: int | None, args: argparse.Namespace, folder: Path, name: str
) -> tuple[float, Any]:
    """Seconds for the whole protocol, and every optimizer's final test metrics over seeds."""
    with Store(folder / f"comparison-{name}.sqlite") as store:
        began = time.perf_counter()
        result = protocol.compare(
            "mnist-cnn", args.opt or list(README_OPTIMIZERS), args.budget, seeds=args.eval_seeds,
            trials=args.trials, store=store, executor=executor, workers=workers, progress=False,
        )  # fmt: skip
        seconds = time.perf_counter() - began
    return seconds, [(s.label, tuple(map(repr, s.values))) for s in result.summaries]  # repr: NaN == NaN


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--runs", type=int, default=20, help="no-step runs per executor (default 20)")
    parser.add_argument("--seeds", type=int, default=4, help="mnist-cnn smoke seeds per optimizer (default 4)")
    parser.add_argument("--no-ray", action="store_true", help="leave Ray out")
    parser.add_argument("--comparison", action="store_true", help="time the README's mnist-cnn comparison instead")
    parser.add_argument("--opt", action="append", help="--comparison: an optimizer (repeat; default the README's six)")
    parser.add_argument("--trials", type=int, default=5, help="--comparison: trials per optimizer (default 5)")
    parser.add_argument("--eval-seeds", type=int, default=3, help="--comparison: seeds per optimizer (default 3)")
    parser.add_argument("--budget", default="quick", help="--comparison: the budget (default quick)")
    parser.add_argument("--no-in-process", action="store_true", help="--comparison: leave the in-process row out")
    args = parser.parse_args()
    if args.comparison:
        return main_comparison(args)
    print(f"{os.cpu_count()} cores, torch {torch.__version__}, {torch.get_num_threads()} threads in process")
    makers: dict[str, Callable[[], Executor]] = {
        "in process": InProcess,
        "local 1": lambda: Local(1),
        "local 2": lambda: Local(2),
    }
    if not args.no_ray:
        from optimlab.executors import Ray

        makers["ray 2 cpus"] = lambda: Ray(init_kwargs={"num_cpus": 2})
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        print(f"\noverhead: {args.runs} runs that train no step")
        print(f"{'executor':<12} {'first s':>8} {'per run s':>10}")
        for name, make in makers.items():
            first, per_run = overhead(make, args.runs, folder, name.replace(" ", "-"))
            print(f"{name:<12} {first:>8.2f} {per_run:>10.3f}")
        total = 2 * args.seeds
        print(f"\nthroughput: mnist-cnn smoke, Adam and Momentum x {args.seeds} seeds = {total} runs")
        print(f"{'executor':<12} {'seconds':>8} {'runs/min':>9} {'vs in process':>14}")
        rows = {"in process": (None, None), "local 1": ("local", 1), "local 2": ("local", 2)}
        if not args.no_ray:
            rows["ray 2 cpus"] = (makers["ray 2 cpus"], None)
        base = None
        for name, (executor, workers) in rows.items():
            if callable(executor):
                with executor() as ex:
                    seconds = throughput(ex, None, args.seeds, folder, name.replace(" ", "-"))
            else:
                seconds = throughput(executor, workers, args.seeds, folder, name.replace(" ", "-"))
            base = base or seconds
            print(f"{name:<12} {seconds:>8.1f} {60 * total / seconds:>9.2f} {base / seconds:>13.2f}x")


def main_comparison(args: argparse.Namespace) -> None:
    opts = args.opt or list(README_OPTIMIZERS)
    runs = len(opts) * (args.trials + args.eval_seeds)
    print(
        f"{os.cpu_count()} cores, torch {torch.__version__}; mnist-cnn {args.budget}, {len(opts)} optimizers "
        f"x ({args.trials} trials + {args.eval_seeds} seeds) = {runs} runs"
    )
    # Executors run each run at one torch thread; the process's own runs at all its threads are other
    # runs (the thread count is part of a run's key and changes its numbers), so numbers are compared
    # with 'local 1' and only timed against 'in process'.
    rows: dict[str, tuple[Any, int | None]] = {"local 1": ("local", 1), "local 2": ("local", 2)}
    if not args.no_ray:
        from optimlab.executors import Ray

        rows["ray 2 cpus"] = (lambda: Ray(init_kwargs={"num_cpus": 2}), None)
    if not args.no_in_process:
        rows = {"in process": (None, None), **rows}
    print(f"{'executor':<12} {'seconds':>8} {'runs/min':>9} {'vs local 1':>11} {'numbers = local 1':>18}")
    timed: dict[str, tuple[float, Any]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        for name, (executor, workers) in rows.items():
            if callable(executor):
                with executor() as ex:
                    timed[name] = comparison(ex, None, args, Path(tmp), name.replace(" ", "-"))
            else:
                timed[name] = comparison(executor, workers, args, Path(tmp), name.replace(" ", "-"))
    base, numbers = timed["local 1"]
    for name, (seconds, summary) in timed.items():
        same = (
            f"- ({torch.get_num_threads()} threads)" if name == "in process" else "yes" if summary == numbers else "NO"
        )
        print(f"{name:<12} {seconds:>8.1f} {60 * runs / seconds:>9.2f} {base / seconds:>10.2f}x {same:>18}")


if __name__ == "__main__":
    main()
