r"""``house-mlp``: the seed's house-price MLP on King County sales (:func:`optimlab.data.load_kc_house`).

Inputs: the loader's 71 features (19 standardised numbers and 52 zipcode indicators).  Model
(:func:`house_mlp`, 2.07 M parameters)::

    fc 71 -> 1000, ReLU -> fc 1000 -> 1000, ReLU -> fc 1000 -> 1000, ReLU -> fc 1000 -> 1

Loss: the mean squared error on the loader's target, the standardised log price
:math:`y = (\ln p - \mu)/\sigma` (so ``loss`` is in the target's scale: about 1 for a constant
prediction).  Metric: ``rmse`` **in dollars**, of the prices the network implies,

.. math:: \mathrm{RMSE} = \sqrt{\tfrac1N \textstyle\sum_i \big(e^{\sigma \hat y_i + \mu} - p_i\big)^2},

which weighs the expensive houses most; the loss weighs relative errors evenly.
(:math:`e^{\sigma\hat y + \mu}` estimates the median price given the inputs, not the mean, so a
perfect fit of the log price leaves an RMSE above zero.)  Splits: the loader's default 70/10/20%
train/validation/test with seed 0, the same for every run.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

import torch
from torch import Tensor, nn

from ._base import Budget
from .supervised import SupervisedTask, mse


def house_mlp() -> nn.Sequential:
    """The seed's MLP: three hidden layers of 1000 ReLU units, torch's default initialisation."""
    return nn.Sequential(
        nn.Linear(71, 1000),
        nn.ReLU(),
        nn.Linear(1000, 1000),
        nn.ReLU(),
        nn.Linear(1000, 1000),
        nn.ReLU(),
        nn.Linear(1000, 1),
    )


def rmse_dollars(outputs: Tensor, targets: Tensor, info: Mapping[str, Any]) -> float:
    """Root mean squared error of the prices, in dollars (module docstring), computed in float64."""
    mu, sigma = info["log_price_mean"], info["log_price_std"]
    predicted = torch.exp(outputs.double() * sigma + mu)
    actual = torch.exp(targets.double() * sigma + mu)
    return (predicted - actual).square().mean().sqrt().item()


HOUSE_MLP = SupervisedTask(
    name="house-mlp",
    description="the seed's 3x1000 ReLU MLP on King County sales (71 inputs); MSE on the standardised "
    "log price; metric: RMSE in dollars",
    dataset="kc-house",
    model=house_mlp,
    loss=mse,
    metrics={"rmse": (rmse_dollars, "minimize")},
    budgets={
        "smoke": Budget(epochs=1, batch_size=64, train_size=512, val_size=512, test_size=512),
        "quick": Budget(epochs=3, batch_size=128, train_size=5000),
        "full": Budget(epochs=30, batch_size=128),
    },
    load_kwargs={"seed": 0},
    metric_ceiling=1e8,  # dollars: 13x the dearest of the 21,613 sales (7.7e6); beyond it the fit is meaningless
)
