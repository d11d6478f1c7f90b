"""The ``optimlab`` command line: ``optimlab --help`` and ``optimlab COMMAND --help`` are the manual.

Every command also takes ``--config FILE`` (JSON): its keys are the option names without the
leading dashes, positional arguments included (``{"surface": "saddle", "opt": ["Adam(lr=0.005)"],
"steps": 600}``, ``{"task": "mnist-cnn", "opt": ["Adam", "NAG"], "budget": "quick"}``); options
given on the command line win over the file.

Every ``--opt`` is a spec of :mod:`optimlab.spec`, the same grammar everywhere: ``Adam``,
``Adam(lr=0.01, betas=(0.5, 0.9))``, ``Adam(beta1=0.5)``, presets (``Momentum``, ``NAG``,
``AMSGrad``, ``AMSBound``), ``torch.Adam`` (run/tune), ``Lookahead(Adam(lr=0.01), k=5)``.
"""

from __future__ import annotations

import argparse
import ast
import json
import math
import sys
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

EXAMPLES = """\
examples:
  optimlab study adam-saddle --out results/adam-saddle
  optimlab study compare-all --surface rosenbrock --out results/compare-rosenbrock
  optimlab surface saddle --opt "Adam(lr=0.005)" --opt "Momentum(lr=0.005)" --start=-3,0.8 --gif --out results/saddle
  optimlab sweep saddle --opt "Adam(lr=0.005)" --grid beta1=lin:0:1:21 --grid beta2=0.9,0.99,0.999 \\
      --heatmap beta1,beta2 --out results/adam-betas
  optimlab run --task mnist-cnn --opt "Adam(lr=0.001)" --opt "AdamW(lr=0.001, weight_decay=0.01)" --seeds 5 \\
      --budget quick --store results/lab.sqlite
  optimlab tune --task mnist-cnn --opt Adam --opt NAG --trials 20 --seeds 5 --budget quick --store results/lab.sqlite
  optimlab tune --task airfoil-linreg --opt "Adam(beta1=0.5)" --opt "Lookahead(Adam, k=5)" --space beta2=lin:0.9:0.999 \\
      --trials 8 --seeds 5 --budget smoke --store results/lab.sqlite
  optimlab report --store results/lab.sqlite --out results/report
  optimlab list

optimizer specs (every --opt): NAME or NAME(key=value, ...) with Python literal values; constructor
names (lr, betas, eps, ...) or a pair's components (beta1, beta2); presets Momentum, NAG, AMSGrad,
AMSBound; torch.<Class> for torch.optim's; wrappers as calls: Lookahead(Adam(lr=0.01), k=5).
"""


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the ``optimlab`` command; returns the exit status."""
    parser = build_parser()
    args = _parse_with_config(parser, argv)
    try:
        return int(args.func(args) or 0)
    except (ValueError, FileNotFoundError) as exc:
        print(f"optimlab {args.command}: error: {exc}", file=sys.stderr)
        return 2
    except RuntimeError as exc:
        from .protocol import RunFailedError

        if not isinstance(exc, RunFailedError):
            raise
        print(f"optimlab {args.command}: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print(f"optimlab {args.command}: interrupted", file=sys.stderr)
        return 130


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="optimlab",
        description="Verified optimizers and a lab that shows how they and their hyperparameters behave.",
        epilog=EXAMPLES,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    from . import __version__

    parser.add_argument("--version", action="version", version=f"optimlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    p = sub.add_parser("surface", help="optimizers on a 2-D surface: paths, loss curves, animation", description=_doc(cmd_surface))
    _surface_args(p)
    p.add_argument("--gif", action="store_true", help="also write an animated GIF of the paths")
    p.add_argument("--zoom", type=_floats(4), metavar="X0,X1,Y0,Y1", help="add a zoomed panel of this box")
    p.set_defaults(func=cmd_surface)

    p = sub.add_parser("sweep", help="a hyperparameter grid on a 2-D surface: heatmaps and a table", description=_doc(cmd_sweep))
    _surface_args(p)
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="NAME=VALUES",
        help="values of one hyperparameter: a list 0.1,0.5,0.9; lin:START:STOP:N; or log:START:STOP:N (repeatable)",
    )
    p.add_argument("--heatmap", action="append", default=[], metavar="X,Y", help="draw a heatmap over these two swept names (repeatable)")
    p.add_argument("--value", default="final_loss", choices=_heatmap_values(), help="heatmap colour (default final_loss)")
    p.add_argument("--fixed", action="append", default=[], metavar="NAME=VALUE", help="value of a swept name not on a heatmap's axes")
    p.add_argument("--target", type=float, help="loss that counts as arrived, for steps_to_target")
    p.set_defaults(func=cmd_sweep)

    from .studies import TASK_STUDIES

    p = sub.add_parser("study", help=f"a packaged study: adam-saddle, compare-all, {', '.join(TASK_STUDIES)}", description=_doc(cmd_study))
    p.add_argument("name", choices=["adam-saddle", "compare-all", *TASK_STUDIES], help="which study")
    p.add_argument("--out", type=Path, help="output folder (default results/<study>)")
    p.add_argument("--config", type=Path, help="JSON file of option values")
    p.add_argument("--no-heatmaps", action="store_true", help="adam-saddle: skip the full-grid heatmaps")
    p.add_argument("--no-gif", action="store_true", help="skip the animation")
    p.add_argument("--surface", default="rosenbrock", help="compare-all: the surface (default rosenbrock)")
    p.add_argument("--steps", type=int, default=200, help="compare-all: steps per run (default 200)")
    p.add_argument("--lr-trials", type=int, default=26, help="compare-all: learning rates tried per optimizer (default 26)")
    p.add_argument(
        "--budget", default="quick", choices=["smoke", "quick", "full"],
        help=f"{', '.join(TASK_STUDIES)}: smoke (seconds), quick (minutes), full (the real protocol); default quick",
    )  # fmt: skip
    p.add_argument("--data-dir", type=Path, help=f"{', '.join(TASK_STUDIES)}: the data directory (default $OPTIMLAB_DATA_DIR)")
    p.set_defaults(func=cmd_study)

    p = sub.add_parser("run", help="train tasks with given hyperparameters over seeds (no tuning)", description=_doc(cmd_run))
    _lab_args(p)
    p.set_defaults(func=cmd_run)

    p = sub.add_parser("tune", help="the fair protocol: equal-budget tuning, then seeds, statistics", description=_doc(cmd_tune))
    _lab_args(p)
    p.add_argument("--trials", type=int, default=20, help="Optuna trials per optimizer, the same for all (default 20)")
    p.add_argument(
        "--batch", type=int, default=1, metavar="N",
        help="trials each optimizer's sampler proposes at once (default 1); the trials depend on it, never on --workers",
    )  # fmt: skip
    p.add_argument("--tuning-seed", type=int, default=0, help="sampler and trial training seed (default 0); evaluation seeds follow it")
    p.add_argument(
        "--lr-range", type=_floats(2), metavar="LOW,HIGH",
        help="log-uniform lr range for every optimizer (default: 1e-5,1, or the range a class declares: Prodigy 0.1,10)",
    )  # fmt: skip
    p.add_argument(
        "--space",
        action="append",
        default=[],
        metavar="NAME=SPEC",
        help="also tune a hyperparameter the specs leave free: log:LOW:HIGH, lin:LOW:HIGH, int:LOW:HIGH or choices "
        "A,B; names as in a spec (eps, beta1, beta2, weight_decay; optimizer.beta1 inside Lookahead) (repeatable)",
    )
    p.set_defaults(func=cmd_tune)

    p = sub.add_parser("report", help="figures and summary tables of a results store", description=_doc(cmd_report))
    p.add_argument("--store", type=Path, required=True, help="the results store (SQLite)")
    p.add_argument("--out", type=Path, help="output folder (default results/report)")
    p.add_argument("--tuning-seed", type=int, default=0, help="the seed of the tuning trials, left out of the statistics (default 0)")
    p.add_argument(
        "--target",
        action="append",
        default=[],
        metavar="TASK=VALUE",
        help="a value of TASK's headline metric on its evaluated split (mnist-cnn=0.97): index.html shows each run's "
        "time and steps to reach it (repeatable)",
    )
    p.add_argument("--config", type=Path, help="JSON file of option values")
    p.set_defaults(func=cmd_report)

    p = sub.add_parser("export", help="a results store as CSV or Parquet tables, or a one-file copy", description=_doc(cmd_export))
    p.add_argument("--store", type=Path, required=True, help="the results store (SQLite)")
    p.add_argument("--out", type=Path, required=True, help="csv/parquet: a folder for runs.* and epochs.*; sqlite: the new file")
    p.add_argument("--format", default="csv", choices=["csv", "parquet", "sqlite"], help="(default csv)")
    p.add_argument("--config", type=Path, help="JSON file of option values")
    p.set_defaults(func=cmd_export)

    p = sub.add_parser(
        "landscape", help="checkpointed runs projected onto a plane (PCA) with the loss over it, or t-SNE paths",
        description=_doc(cmd_landscape),
    )  # fmt: skip
    p.add_argument("--store", type=Path, required=True, help="the results store (SQLite) with --checkpoint-every runs")
    p.add_argument("--out", type=Path, help="output folder (default results/landscape)")
    p.add_argument(
        "--task", help="the task, or FILE.py:NAME / MODULE:NAME for your own (default: the only one with checkpoints)"
    )
    p.add_argument("--seed", type=int, help="the runs' seed (default: the smallest with checkpoints)")
    p.add_argument(
        "--method", default="pca", choices=["pca", "tsne"],
        help="pca: the top-2 principal directions of the joint trajectory, with the loss over them (default); "
        "tsne: a t-SNE embedding of the checkpoints (pip install 'optimlab[landscape]'): its axes carry no distance "
        "meaning and there is no loss off the checkpoints, so it draws the paths only",
    )  # fmt: skip
    p.add_argument("--grid", type=int, default=21, metavar="K", help="pca: the loss on a K x K grid (default 21)")
    p.add_argument("--split", default="train", help="the data split the loss is evaluated on (default train)")
    p.add_argument(
        "--examples", type=int, default=512, metavar="N",
        help="the first N examples of the runs' subset of --split (default 512): the cost is K*K*N example evaluations",
    )  # fmt: skip
    p.add_argument("--data-dir", type=Path, help="the data directory (default $OPTIMLAB_DATA_DIR)")
    p.add_argument("--config", type=Path, help="JSON file of option values")
    p.set_defaults(func=cmd_landscape)

    p = sub.add_parser("list", help="tasks, optimizers, presets, surfaces and budgets", description=_doc(cmd_list))
    p.set_defaults(func=cmd_list)
    return parser


def _lab_args(p: argparse.ArgumentParser) -> None:
    from .runner import DTYPES
    from .tasks import BUDGETS, names

    p.add_argument(
        "--task",
        metavar="TASK",
        help=f"the training task (required; may come from --config): one of {', '.join(names())}, or your own as "
        "path/to/file.py:NAME or package.module:NAME (NAME a task object or a function returning one)",
    )
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="SPEC",
        help='an optimizer spec: what it sets is fixed (never tuned), e.g. "AdamW(weight_decay=0.01)", '
        '"Adam(beta1=0.5)", "NAG", "torch.Adam", "Lookahead(Adam, k=5)", any class "torch_optimizer.Lamb(lr=0.01)" '
        "or package.module:Class (repeatable; see optimlab --help)",
    )
    p.add_argument("--seeds", type=int, default=5, help="evaluation seeds per optimizer (default 5)")
    p.add_argument("--budget", default="quick", choices=BUDGETS, help="run length (default quick)")
    for name, what in (
        ("epochs", "passes over the training data"),
        ("batch-size", "examples per step"),
        ("train-size", "training examples (a fixed subset)"),
        ("eval-every", "steps between curve points"),
    ):
        p.add_argument(f"--{name}", type=int, metavar="N", help=f"{what}, instead of the budget's (part of the run's key)")
    p.add_argument(
        "--checkpoint-every", type=int, metavar="N",
        help="store the model's parameters (a GAN's generator's) every N steps, at step 0 and at the end, "
        "with each run, for optimlab landscape (off by default; part of the run's key when set)",
    )  # fmt: skip
    p.add_argument(
        "--checkpoint-cap-mb", type=int, metavar="MB",
        help="refuse a run whose checkpoints would exceed this many MiB (default 256)",
    )  # fmt: skip
    p.add_argument("--store", type=Path, default=Path("results/lab.sqlite"), help="results store (default results/lab.sqlite)")
    p.add_argument("--data-dir", type=Path, help="the data directory (default $OPTIMLAB_DATA_DIR)")
    p.add_argument("--warmup", help="'untuned' (Ma & Yarats) or a number of linear warmup steps")
    p.add_argument("--device", default="cpu", help="what torch.device takes: cpu, cuda, cuda:1, mps (default cpu)")
    p.add_argument("--dtype", default="float32", choices=DTYPES, help="bfloat16: steps and evaluations under autocast (default float32)")
    p.add_argument(
        "--no-retry-failed", dest="retry_failed", action="store_false",
        help="keep runs the store holds as failed (by default the same command runs them again)",
    )  # fmt: skip
    p.add_argument(
        "--executor", default="local", choices=["local", "ray"],
        help="where runs train: local worker processes (default) or a Ray cluster (pip install 'optimlab[ray]')",
    )  # fmt: skip
    p.add_argument(
        "--workers", type=int, metavar="N",
        help="runs at a time (default: local, the cores / --cpus-per-run; ray, the cluster's CPUs / --cpus-per-run); "
        "0: one at a time in this process, at its torch threads; the numbers are the same for any N >= 1",
    )  # fmt: skip
    p.add_argument(
        "--cpus-per-run", type=int, default=1, metavar="N",
        help="torch threads of each run, and its CPU request on Ray (default 1; a run's numbers depend on it)",
    )  # fmt: skip
    p.add_argument("--gpus-per-run", type=float, default=0, metavar="N", help="ray: GPUs each run requests (default 0)")
    p.add_argument("--ray-address", help="ray: the cluster's address (default $RAY_ADDRESS, else a local Ray for this command)")
    p.add_argument("--config", type=Path, help="JSON file of option values")


def _executor(args: argparse.Namespace, task: Any) -> Any:
    """The executor of --executor, --workers, --cpus-per-run, --gpus-per-run, --ray-address; this process
    when --task cannot travel to worker processes (a task of lambdas from a file)."""
    import pickle

    from .executors import InProcess, Local, Ray

    try:
        pickle.dumps(task)
    except (pickle.PicklingError, TypeError, AttributeError) as e:
        _log(f"--task {args.task} cannot be sent to worker processes ({e}); its runs train in this process, one at a time")
        return InProcess()
    if args.executor == "ray":
        return Ray(args.ray_address, cpus_per_run=args.cpus_per_run, gpus_per_run=args.gpus_per_run, slots=args.workers)
    if args.gpus_per_run or args.ray_address:
        raise ValueError("--gpus-per-run and --ray-address need --executor ray")
    return InProcess() if args.workers == 0 else Local(args.workers, threads=args.cpus_per_run)


def _surface_args(p: argparse.ArgumentParser) -> None:
    from . import surfaces

    p.add_argument("surface", nargs="?", help=f"one of: {', '.join(_surface_names(surfaces.names()))} (may come from --config)")
    p.add_argument(
        "--opt",
        action="append",
        default=[],
        metavar="SPEC",
        help='an optimizer spec, e.g. "Adam(lr=0.005, beta1=0.5)", "NAG(lr=0.01)", "Lookahead(Adam(lr=0.005), k=5)" '
        "(repeatable; see optimlab --help)",
    )
    p.add_argument("--param", action="append", default=[], metavar="NAME=VALUE", help="surface parameter, e.g. condition=100")
    p.add_argument("--start", action="append", type=_floats(2), default=[], metavar="X,Y", help="start point (repeatable; write --start=-3,0.8)")
    p.add_argument("--steps", type=int, default=600, help="steps per run (default 600)")
    p.add_argument("--record-every", type=int, default=10, help="keep a point every this many steps (default 10)")
    p.add_argument("--grad-clip", type=float, help="clip gradients to this norm (off by default; shown in the legend)")
    p.add_argument("--out", type=Path, required=False, help="output folder (default results/<command>-<surface>)")
    p.add_argument("--config", type=Path, help="JSON file of option values")


def cmd_surface(args: argparse.Namespace) -> int:
    """Run each --opt on the surface and write paths, loss curves (and a GIF) with their tables."""
    from . import figures, surfaces, tables

    surface = surfaces.get(_surface_name(args.surface), **_assignments(args.param))
    specs = args.opt or ["Adam(lr=0.005)"]
    results = [_run_spec(surface, spec, {}, args) for spec in specs]
    out = _out(args, f"surface-{surface.name}")
    figures.trajectories(results, surface, out / "paths.png", zoom=_zoom(args.zoom))
    figures.loss_curves(results, out / "loss.png")
    if args.gif:
        figures.animation(results, surface, out / "paths.gif")
    tables.write_table([row for r in results for row in r.summary_rows()], out / "summary.csv")
    _report(out, results, surface)
    return 0


def cmd_sweep(args: argparse.Namespace) -> int:
    """Run the full product of the --grid values and write heatmaps and a table of every configuration."""
    from . import figures, surfaces, tables

    surface = surfaces.get(_surface_name(args.surface), **_assignments(args.param))
    if len(args.opt) > 1:
        raise ValueError("sweep takes one --opt; run one sweep per optimizer")
    grid = {name: _grid_values(name, text) for name, text in (_split_assignment(g) for g in args.grid)}
    plan = _sweep_plan((args.opt or ["Adam"])[0], grid)
    heatmaps = [_pair(spec) for spec in args.heatmap]
    for x, y in heatmaps:  # a heatmap that cannot be drawn fails before the sweep runs
        figures.check_heatmap(list(plan.grid), x, y, args.value, args.target)
    result = _run_plan(surface, plan, args, target=args.target)
    out = _out(args, f"sweep-{surface.name}")
    tables.write_table(result.summary_rows(), out / "grid.csv")
    fixed = _assignments(args.fixed)
    for x, y in heatmaps:
        figures.heatmap(result, x, y, args.value, fixed=fixed, path=out / figures.heatmap_filename(x, y, args.value))
    if len(result) <= 12:
        figures.trajectories(result, surface, out / "paths.png")
        figures.loss_curves(result, out / "loss.png")
    _report(out, [result], surface)
    return 0


def cmd_study(args: argparse.Namespace) -> int:
    """Run a packaged study and write its figures, tables and summary.md."""
    out = args.out or Path("results") / args.name
    t0 = time.perf_counter()
    if args.name == "adam-saddle":
        from .studies import adam_saddle

        result = adam_saddle.run(out, heatmaps=not args.no_heatmaps, animate=not args.no_gif, log=_log)
    elif args.name != "compare-all":
        from .studies import run_task_study

        result = run_task_study(args.name, out, budget=args.budget, data_dir=args.data_dir, log=_log)
    else:
        from .studies import compare_all

        result = compare_all.run(out, surface=_surface_name(args.surface), steps=args.steps, lr_trials=args.lr_trials, animate=not args.no_gif, log=_log)
    _log(f"wrote {len(result.files)} files to {result.directory} in {time.perf_counter() - t0:.1f} s; summary: {result.directory / 'summary.md'}")
    return 0


def cmd_run(args: argparse.Namespace) -> int:
    """Train each --opt as given (no tuning) with --seeds seeds (1..N) in the store and print mean ± 95% CI.

    Runs already in the store are read back, not re-run; Ctrl-C keeps the store consistent and a
    re-run resumes."""
    from . import protocol
    from .store import Store

    task, specs = _lab_task(args), _lab_specs(args)  # bad input fails before the store is touched
    with Store(args.store) as store, _executor(args, task) as executor:
        result = protocol.evaluate(
            task, specs, args.budget, args.seeds, 0, store, warmup=_warmup(args.warmup), data_dir=args.data_dir,
            device=args.device, dtype=args.dtype, retry_failed=args.retry_failed, executor=executor,
        )  # fmt: skip
    _print_comparison(result)
    return 0


def cmd_tune(args: argparse.Namespace) -> int:
    """The fair protocol: tune every --opt with the same --trials (lr log-uniform over --lr-range, plus any
    --space), choose on the final validation metric, run the choice with --seeds seeds, print mean ± 95% CI
    and which differences are within noise (Welch p >= 0.05).

    Without --lr-range, the lr range is 1e-5 to 1, except for a class that declares its own (Prodigy,
    whose lr multiplies its step-size estimate: 0.1 to 10); each optimizer's line says the range it
    searched, and a chosen value within 5% of its range from a bound (in log scale for the lr) gets a
    line saying that the optimum may lie beyond it.

    What an --opt spec sets is never tuned: "Adam(lr=0.01)" tunes only the --space names, and each
    optimizer's line says what it tuned and what its spec fixed; labels show the values that ran,
    tuned ones marked *.  A failed trial is recorded and the tuning goes on.  Every trial is a
    stored run: after Ctrl-C, the same command resumes where it stopped."""
    from . import protocol
    from .store import Store

    space = {name: _space(name, text) for name, text in (_split_assignment(item) for item in args.space)}
    task, specs = _lab_task(args), _lab_specs(args)  # bad input fails before the store is touched
    lr_range = None if args.lr_range is None else tuple(args.lr_range)  # None: each class's own range
    with Store(args.store) as store, _executor(args, task) as executor:
        result = protocol.compare(
            task, specs, args.budget, args.seeds, args.trials, args.tuning_seed, store,
            lr_range, space, warmup=_warmup(args.warmup), data_dir=args.data_dir, device=args.device,
            dtype=args.dtype, retry_failed=args.retry_failed, batch=args.batch, executor=executor,
        )  # fmt: skip
    _print_comparison(result)
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    """Write index.html (one self-contained interactive page: open it in a browser), training curves,
    lr-sensitivity curves and summary tables (summary.md) of every task in --store.  index.html also shows
    the loss landscape `optimlab landscape` drew into the same --out for this store's runs."""
    from .html import html_report
    from .report import report
    from .store import Store

    if not args.store.exists():
        raise FileNotFoundError(f"--store {args.store}: no such file")
    targets = {}
    for item in args.target:
        task, value = _split_assignment(item)
        try:
            targets[task] = float(value)
        except ValueError:
            raise ValueError(f"report: invalid --target {item!r}: expected TASK=NUMBER") from None
    out = args.out or Path("results") / "report"
    with Store(args.store, readonly=True) as store:  # reads a store the user may not write
        page = html_report(store, out, tuning_seed=args.tuning_seed, targets=targets)  # first: it checks --target
        paths = report(store, out, tuning_seed=args.tuning_seed)
    _log(f"wrote {len(paths) + 1} files to {out}/; open {page} in a browser; summary: {paths[-1]}")
    return 0


def cmd_export(args: argparse.Namespace) -> int:
    """Write --store as two tidy tables (runs and epochs, CSV or Parquet) into the folder --out, or with
    --format sqlite copy it into the one self-contained file --out (consistent while the store is being written;
    copying the .sqlite file alone can lose what is still in its -wal file)."""
    from .store import Store

    with Store(args.store, readonly=True) as store:
        if args.format == "sqlite":
            paths = [store.backup(args.out)]
        else:
            paths = list(store.export(args.out, args.format).values())
    _log(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_landscape(args: argparse.Namespace) -> int:
    """Project the checkpoints of the runs of one --task and --seed (trained with --checkpoint-every) onto the
    top-2 PCA directions of their joint trajectory (Li et al., 2018), evaluate the loss on a --grid K x K grid
    over that plane on --examples examples of --split, and draw filled contours with each optimizer's path:
    landscape.png, landscape.html (interactive) and landscape.json in --out.  --method tsne draws a t-SNE
    embedding of the checkpoints instead: paths only, on axes that carry no distance meaning."""
    from .landscape import landscape
    from .store import Store
    from .tasks import load

    if not args.store.exists():
        raise FileNotFoundError(f"--store {args.store}: no such file")
    task = None if args.task is None else load(args.task)
    out = args.out or Path("results") / "landscape"
    with Store(args.store, readonly=True) as store:
        paths = landscape(store, out, task=task, seed=args.seed, method=args.method, grid=args.grid, split=args.split,
                          examples=args.examples, data_dir=args.data_dir)  # fmt: skip
    _log(f"wrote {', '.join(str(p) for p in paths)}")
    return 0


def cmd_list(args: argparse.Namespace) -> int:
    """Print the tasks, optimizers, presets, 2-D surfaces and budgets (epochs and sizes per task)."""
    from . import spec, surfaces, tasks

    lines = ["tasks (run/tune --task):"]
    lines += [f"  {name:<18} {tasks.get(name).description}" for name in tasks.names()]
    names = spec.optimizer_names()
    lines.append("optimizers (--opt; a bare name is optimlab's):")
    lines.append("  optimlab: " + ", ".join(n.removeprefix("optimlab.") for n in names if n.startswith("optimlab.")))
    lines.append("  torch (run/tune only): " + ", ".join(n for n in names if n.startswith("torch.")))
    lines.append("presets:")
    presets = spec.presets()
    width = max(map(len, presets), default=0)
    for preset, (name, options) in presets.items():
        lines.append(f"  {preset:<{width}} {spec.format(spec.OptimizerSpec(name, options, frozenset(options)))}")
    lines.append("surfaces (surface/sweep): " + ", ".join(_surface_names(surfaces.names())))
    lines.append("budgets (run/tune --budget: smoke, quick, full):")
    lines += ["  " + line for line in tasks.budget_table().splitlines()]
    print("\n".join(lines))
    return 0


def _lab_task(args: argparse.Namespace) -> Any:
    """The --task (a registered name, FILE.py:NAME or MODULE:NAME) with the --epochs... overrides,
    and the --device checked: bad input fails here, before a store is opened."""
    from .runner import check_device
    from .tasks import load, names

    if args.task is None:
        raise ValueError(f"give --task (on the command line or in --config): one of {', '.join(names())}, FILE.py:NAME or MODULE:NAME")
    check_device(args.device)
    task = load(args.task)
    settings = ("epochs", "batch_size", "train_size", "eval_every", "checkpoint_every", "checkpoint_cap_mb")
    overrides = {k: getattr(args, k) for k in settings if getattr(args, k) is not None}
    for name, value in overrides.items():
        if value < 1:
            raise ValueError(f"invalid --{name.replace('_', '-')} {value}: expected an integer >= 1")
    return task.with_budget(**overrides) if overrides else task


def _lab_specs(args: argparse.Namespace) -> list[Any]:
    """The parsed --opt specs: an unknown name or keyword fails here, before anything runs."""
    from .spec import parse

    if not args.opt:
        raise ValueError("give at least one --opt, e.g. --opt Adam")
    return [parse(text) for text in args.opt]


# The README's and the studies' spellings of the surfaces, besides surfaces.names()
_SURFACE_ALIASES = {"random": "random_surface"}


def _surface_name(name: str | None) -> str:
    """``ill-conditioned-quadratic`` / ``random`` (the README's) -> the registry's name."""
    from . import surfaces

    if name is None:
        raise ValueError(f"give a surface (on the command line or in --config): one of {', '.join(_surface_names(surfaces.names()))}")
    name = name.strip().replace("-", "_")
    return _SURFACE_ALIASES.get(name, name)


def _surface_names(names: Sequence[str]) -> list[str]:
    """The surface names as the README writes them (dashes; ``random``)."""
    inverse = {v: k for k, v in _SURFACE_ALIASES.items()}
    return [inverse.get(n, n).replace("_", "-") for n in names]


def _warmup(text: str | None) -> int | str | None:
    if text is None or text == "untuned":
        return text
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"invalid --warmup {text!r}: expected 'untuned' or a number of steps >= 1") from None


def _space(name: str, text: str) -> Any:
    """``log:1e-8:1e-4`` -> ``("log", 1e-8, 1e-4)``; ``int:1:8``; ``A,B`` -> a list of choices."""
    kind, _, rest = text.partition(":")
    if kind in ("log", "lin", "int"):
        parts = rest.split(":")
        number = int if kind == "int" else float
        try:
            if len(parts) == 2:
                return (kind, number(parts[0]), number(parts[1]))
        except ValueError:
            pass
        raise ValueError(f"--space {name}={text}: expected {kind}:LOW:HIGH")
    return [_assignments([f"v={v}"])["v"] for v in text.split(",")]


def _print_comparison(result: Any) -> None:
    _log(result.render())


@dataclass(frozen=True)
class _SweepPlan:
    """What :func:`optimlab.sweep.sweep` runs for one --opt: the class, every swept name (the spec's
    numbers as one-value entries, so that values the class refuses, such as beta1=1, still run), the
    fixed options, a wrapper's own options and the legend's name."""

    cls: type
    grid: dict[str, list[Any]]
    options: dict[str, Any]
    lookahead: dict[str, Any] | None
    name: str


def _sweep_plan(text: str, grid: dict[str, list[float]]) -> _SweepPlan:
    """The plan of the spec ``text`` times ``grid``; every name is checked here, before anything runs."""
    from . import spec as spec_mod
    from .optim import RuleOptimizer
    from .sweep import check_grid_names

    spec = spec_mod.parse(text)
    inner = spec.inner or spec
    if not issubclass(inner.cls, RuleOptimizer):
        raise ValueError(  # noqa: TRY004 (the commands report ValueError as one clean line)
            f"invalid optimizer spec {text!r}: the 2-D lab runs optimlab's update rules; {inner.name} has none "
            f"(use {inner.cls.__name__} for optimlab's, see optimlab list)"
        )
    preset = spec_mod.presets()[inner.preset][1] if inner.preset else {}
    single: dict[str, list[Any]] = {}
    options: dict[str, Any] = {}
    for key, value in inner.hyperparameters.items():
        if key in preset and preset[key] == value:  # NAG's own options, as the class takes them
            options[key] = value
        elif key in spec_mod.COMPONENTS and isinstance(value, tuple):  # the sweep takes a pair as its components
            single.update({name: [v] for name, v in zip(spec_mod.COMPONENTS[key], value)})
        elif isinstance(value, (int, float)) and not isinstance(value, bool):
            single[key] = [value]
        else:
            options[key] = value
    clash = sorted(set(single) & set(grid))
    if clash:
        raise ValueError(f"{', '.join(clash)} given both in --opt {text!r} and --grid")
    check_grid_names(inner.cls, grid, options)
    name = inner.preset or inner.cls.__name__  # the preset's name (NAG, AMSGrad, ...), not only its class
    return _SweepPlan(
        inner.cls,
        {**single, **grid},
        options,
        dict(spec.hyperparameters) if spec.inner is not None else None,
        name if spec.inner is None else f"{spec.cls.__name__}({name})",
    )


def _run_plan(surface: Any, plan: _SweepPlan, args: argparse.Namespace, target: float | None = None) -> Any:
    from .sweep import sweep

    result = sweep(
        surface,
        plan.cls,
        plan.grid,
        options=plan.options,
        lookahead=plan.lookahead,
        starts=args.start or None,
        steps=args.steps,
        record_every=args.record_every,
        grad_clip=args.grad_clip,
        target=target,
    )
    result.optimizer = plan.name
    return result


def _run_spec(surface: Any, text: str, grid: dict[str, list[float]], args: argparse.Namespace) -> Any:
    """Run the spec ``text`` times ``grid`` on ``surface`` (see :class:`_SweepPlan`)."""
    return _run_plan(surface, _sweep_plan(text, grid), args)


def _heatmap_values() -> tuple[str, ...]:
    from .figures import HEATMAP_VALUES

    return HEATMAP_VALUES


def _grid_values(name: str, text: str) -> list[float]:
    """``0.1,0.5`` | ``lin:0:1:21`` | ``log:1e-8:1:9`` -> a list of floats."""
    import numpy as np

    kind, _, rest = text.partition(":")
    if kind in ("lin", "log"):
        parts = rest.split(":")
        if len(parts) != 3:
            raise ValueError(f"--grid {name}={text}: expected {kind}:START:STOP:N")
        start, stop, n = float(parts[0]), float(parts[1]), int(parts[2])
        if n < 1:
            raise ValueError(f"--grid {name}={text}: N must be >= 1")
        if kind == "lin":
            return [float(x) for x in np.linspace(start, stop, n)]
        if start <= 0 or stop <= 0:
            raise ValueError(f"--grid {name}={text}: log grids need START > 0 and STOP > 0")
        return [float(x) for x in np.geomspace(start, stop, n)]
    try:
        return [float(x) for x in text.split(",")]
    except ValueError:
        raise ValueError(f"--grid {name}={text}: expected numbers separated by commas, lin:START:STOP:N or log:START:STOP:N") from None


def _assignments(items: Sequence[str]) -> dict[str, Any]:
    out = {}
    for item in items:
        key, value = _split_assignment(item)
        try:
            out[key] = ast.literal_eval(value)
        except (ValueError, SyntaxError):
            out[key] = value
    return out


def _split_assignment(item: str) -> tuple[str, str]:
    key, sep, value = item.partition("=")
    if not sep or not key:
        raise ValueError(f"invalid {item!r}: expected NAME=VALUE")
    return key.strip(), value.strip()


def _pair(text: str) -> tuple[str, str]:
    parts = [p.strip() for p in text.split(",")]
    if len(parts) != 2:
        raise ValueError(f"--heatmap {text}: expected two names X,Y")
    return parts[0], parts[1]


def _floats(n: int) -> Callable[[str], tuple[float, ...]]:
    def parse(text: str) -> tuple[float, ...]:
        try:
            values = tuple(float(x) for x in text.split(","))
        except ValueError:
            values = ()
        if len(values) != n or not all(math.isfinite(v) for v in values):
            raise argparse.ArgumentTypeError(f"expected {n} finite numbers separated by commas, got {text!r}")
        return values

    return parse


def _zoom(box: tuple[float, ...] | None) -> Any:
    return None if box is None else ((box[0], box[1]), (box[2], box[3]))


def _out(args: argparse.Namespace, default: str) -> Path:
    out = args.out or Path("results") / default
    out.mkdir(parents=True, exist_ok=True)
    return out


def _report(out: Path, results: Sequence[Any], surface: Any) -> None:
    from .html import lab_page

    lab_page(results, surface, out)
    for r in results:
        counts = {s: r.status.count(s) for s in dict.fromkeys(r.status)}
        _log(f"{r.optimizer}: {len(r)} configurations: " + ", ".join(f"{n} {s}" for s, n in counts.items()))
    _log(f"wrote {out}/")


def _log(message: str) -> None:
    print(message, file=sys.stderr, flush=True)


def _doc(fn: Callable[..., Any]) -> str:
    return (fn.__doc__ or "").strip()


def _parse_with_config(parser: argparse.ArgumentParser, argv: Sequence[str] | None) -> argparse.Namespace:
    """Parse, then re-parse with the --config file's values as defaults (command line wins)."""
    args = parser.parse_args(argv)
    if getattr(args, "config", None) is None:
        return args
    try:
        config = json.loads(Path(args.config).read_text())
    except (OSError, json.JSONDecodeError) as exc:
        parser.error(f"--config {args.config}: {exc}")
    if not isinstance(config, dict):
        parser.error(f"--config {args.config}: expected a JSON object of option names")
    sub = next(a for a in parser._subparsers._group_actions if isinstance(a, argparse._SubParsersAction)).choices[args.command]  # type: ignore[union-attr]
    actions = {a.dest: a for a in sub._actions if a.dest not in ("help", "config", "func")}
    values = {k.replace("-", "_"): v for k, v in config.items()}
    unknown = sorted(set(values) - set(actions))
    if unknown:
        parser.error(f"--config {args.config}: unknown option(s) {', '.join(unknown)}; expected some of {', '.join(actions)}")
    for dest, value in list(values.items()):
        if isinstance(actions[dest], argparse._AppendAction):
            if getattr(args, dest):  # given on the command line: it wins (append would add to the file's)
                del values[dest]
            else:
                values[dest] = list(value) if isinstance(value, list) else [value]
    sub.set_defaults(**values)
    return parser.parse_args(argv)


if __name__ == "__main__":
    raise SystemExit(main())
