r"""``airfoil-linreg``: d2l.ai's linear regression on the airfoil data, their protocol exactly.

Dive into Deep Learning, chapter 12 "Optimization Algorithms" (chapter 11 in older editions),
``d2l.train_ch11``, the benchmark every optimizer section of the chapter runs:

* data: ``d2l.get_data_ch11``: the first 1,500 rows of the airfoil file, every column
  standardised (:func:`optimlab.data.load_airfoil`); 5 inputs, the sound pressure as target;
  no validation or test split: d2l trains and reports on the same 1,500 rows (split ``"full"``);
* model: :math:`\hat y = Xw + b`, :math:`w \sim \mathcal N(0, 0.01^2)`, :math:`b = 0`
  (:func:`linreg`);
* loss: ``d2l.squared_loss`` averaged over the batch,
  :math:`\ell = \frac{1}{2|B|}\sum_{i\in B} (\hat y_i - y_i)^2`;
* 2 epochs of batches of 10, reshuffled every epoch (``d2l.load_array(..., is_train=True)``);
* the curve: after every 200 examples (20 steps) the loss on all 1,500 rows
  (``d2l.evaluate_loss``); d2l prints the last one, after the 3,000th example.

d2l reports ``loss: 0.243`` for Adam (lr 0.01) and ``0.244`` for Yogi; the book seeds nothing,
so its numbers are one draw of the initialisation and shuffling.

:func:`lstsq_floor` is the lowest value the objective can take on the same rows (the closed-form
least-squares fit), reported with the final metrics as ``lstsq_floor``, so that a run's final
loss can be read as its excess over the optimum.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace

import torch
from torch import Tensor, nn

from ..data import Split
from ._base import Budget
from .supervised import SupervisedTask, mse


def linreg() -> nn.Linear:
    """``nn.Linear(5, 1)`` with d2l's initialisation: weights from N(0, 0.01²), bias 0."""
    net = nn.Linear(5, 1)
    nn.init.normal_(net.weight, mean=0.0, std=0.01)
    nn.init.zeros_(net.bias)
    return net


def half_mse(outputs: Tensor, targets: Tensor) -> Tensor:
    r"""``d2l.squared_loss`` averaged: :math:`\frac{1}{2N}\sum_i (\hat y_i - y_i)^2`."""
    return mse(outputs, targets) / 2


def lstsq_floor(data: Split) -> float:
    r"""The minimum over :math:`(w, b)` of :math:`\frac{1}{2N}\lVert Xw + b - y\rVert^2` on ``data``.

    Solved in float64 with ``torch.linalg.lstsq`` on :math:`[X, 1]`; no first-order method on
    the same rows can end below it (up to float32 rounding of its own loss evaluation).
    """
    x = data.x.double().cpu()
    design = torch.cat([x, torch.ones(len(x), 1, dtype=torch.float64)], dim=1)
    y = data.y.double().cpu()
    coefficients = torch.linalg.lstsq(design, y, driver="gelsd").solution
    return 0.5 * (design @ coefficients - y).square().mean().item()


def _floor(splits: Mapping[str, Split]) -> dict[str, float]:
    return {"lstsq_floor": lstsq_floor(splits["full"])}


# d2l's protocol (2 epochs, batch 10, a curve point every 200 examples) is already seconds long.
D2L = Budget(epochs=2, batch_size=10, eval_every=20)

AIRFOIL_LINREG = SupervisedTask(
    name="airfoil-linreg",
    description="d2l's linear regression on 1,500 airfoil rows; squared loss / 2; metric: the loss on "
    "all training rows (no split, as d2l)",
    dataset="airfoil",
    model=linreg,
    loss=half_mse,
    metric="loss",
    # quick: d2l's protocol with a point every 150 examples, 20 points per curve (full: d2l's own 15)
    budgets={"smoke": Budget(epochs=1, batch_size=10, train_size=300, eval_every=20), "quick": replace(D2L, eval_every=15), "full": D2L},
    eval_split="full",
    final_split="full",
    constants=_floor,
)
