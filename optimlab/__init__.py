"""optimlab: the optimizers of the Adam story, verified, fast, and a lab to compare them.

The lab's public API (see the README's "Your own model"): build a :class:`SupervisedTask` from
your model, data, loss and metrics with a :class:`Budget`, then :func:`compare` optimizers on it::

    import optimlab
    result = optimlab.compare(task, ["Adam", torch_optimizer.Lamb, (MySGD, {"momentum": 0.9})],
                              trials=8, seeds=5, store="results/lab.sqlite")
    print(result.render())
    result.report("results/report")
"""

from typing import Any

__version__ = "0.1.0"

# Imported on first use: `import optimlab` (the CLI's --version, the store's version stamp) stays
# free of torch's import time.
_LAZY = {
    "Budget": "optimlab.tasks",
    "Task": "optimlab.tasks",
    "SupervisedTask": "optimlab.tasks.supervised",
    "compare": "optimlab.protocol",
    "evaluate": "optimlab.protocol",
    "tune": "optimlab.protocol",
    "Comparison": "optimlab.protocol",
    "Store": "optimlab.store",
}

__all__ = ["Budget", "Comparison", "Store", "SupervisedTask", "Task", "__version__", "compare", "evaluate", "tune"]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'optimlab' has no attribute {name!r}")
