"""Packaged studies, ``optimlab study NAME``: each writes its figures, tables and ``summary.md``.

* on 2-D surfaces: ``adam-saddle`` (:mod:`.adam_saddle`), ``compare-all`` (:mod:`.compare_all`);
* on real tasks, written only with the public API (``optimlab.evaluate``, ``optimlab.Store``):
  ``airfoil`` (:mod:`.airfoil`, seeds 001/004), ``radam-lr`` (:mod:`.radam_lr`, seed 002) and
  ``adam-tasks`` (:mod:`.adam_tasks`, seed 000), each with the budgets ``smoke`` (seconds on tiny
  runs), ``quick`` (minutes) and ``full`` (the real protocol).
"""

from __future__ import annotations

import importlib
import os
from collections.abc import Callable
from typing import Any

#: The task studies by command name, and their modules.
TASK_STUDIES = {"airfoil": "airfoil", "radam-lr": "radam_lr", "adam-tasks": "adam_tasks"}


def run_task_study(
    name: str,
    out_dir: str | os.PathLike[str],
    *,
    budget: str = "quick",
    data_dir: str | os.PathLike[str] | None = None,
    log: Callable[[str], None] = print,
) -> Any:
    """Run the task study ``name`` (a key of :data:`TASK_STUDIES`); returns its ``StudyOutput``."""
    if name not in TASK_STUDIES:
        raise ValueError(f"study: invalid name={name!r}: expected one of {', '.join(TASK_STUDIES)}")
    module = importlib.import_module(f"{__name__}.{TASK_STUDIES[name]}")
    return module.run(out_dir, budget=budget, data_dir=data_dir, log=log)
