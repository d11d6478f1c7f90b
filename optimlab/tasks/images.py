"""Image classification: the seed's CNN on MNIST and Fashion-MNIST, and a small CNN on CIFAR-10.

``mnist-cnn`` / ``fashion-mnist-cnn`` (:func:`mnist_cnn`, 5.2 M parameters)::

    conv 3x3, 30 channels, ReLU -> conv 3x3, 60 channels, ReLU -> max-pool 2
    -> fc 8640 -> 600, ReLU -> dropout 0.5 -> fc 600 -> 10

on the 28x28 grey images (pixel / 255, no other normalisation).  ``cifar10-cnn``
(:func:`cifar10_cnn`, 1.25 M parameters) is the architecture of Keras's ``cifar10_cnn.py``
example, the usual small CIFAR-10 baseline::

    conv 3x3 'same', 32, ReLU -> conv 3x3, 32, ReLU -> max-pool 2 -> dropout 0.25
    -> conv 3x3 'same', 64, ReLU -> conv 3x3, 64, ReLU -> max-pool 2 -> dropout 0.25
    -> fc 2304 -> 512, ReLU -> dropout 0.5 -> fc 512 -> 10

on the 32x32 RGB images (pixel / 255), without data augmentation.  All three minimise the mean
cross-entropy and report the accuracy.  The validation split is 10% of the official training
images (chosen with seed 0, the same for every run); the test split is the official one.
"""

from __future__ import annotations

from collections.abc import Callable

from torch import nn

from ._base import Budget
from .supervised import SupervisedTask, accuracy, cross_entropy


def mnist_cnn() -> nn.Sequential:
    """The seed's MNIST CNN (module docstring), with torch's default initialisation."""
    return nn.Sequential(
        nn.Conv2d(1, 30, 3),
        nn.ReLU(),
        nn.Conv2d(30, 60, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(60 * 12 * 12, 600),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(600, 10),
    )


def cifar10_cnn() -> nn.Sequential:
    """Keras's ``cifar10_cnn.py`` architecture (module docstring), with torch's default initialisation."""
    return nn.Sequential(
        nn.Conv2d(3, 32, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(32, 32, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Conv2d(32, 64, 3, padding=1),
        nn.ReLU(),
        nn.Conv2d(64, 64, 3),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Dropout(0.25),
        nn.Flatten(),
        nn.Linear(64 * 6 * 6, 512),
        nn.ReLU(),
        nn.Dropout(0.5),
        nn.Linear(512, 10),
    )


# quick: the curve's 21 evaluations use a fixed 1,000 validation images (each costs about 3.5
# training steps per 2,000 images on a CPU); the compared number is the final test on 10,000
MNIST_BUDGETS = {
    "smoke": Budget(epochs=1, batch_size=64, train_size=256, val_size=256, test_size=256),
    "quick": Budget(epochs=2, batch_size=128, train_size=6000, val_size=1000, test_size=10000),
    "full": Budget(epochs=10, batch_size=128),
}
CIFAR10_BUDGETS = {
    "smoke": Budget(epochs=1, batch_size=64, train_size=256, val_size=256, test_size=256),
    "quick": Budget(epochs=2, batch_size=128, train_size=5000, val_size=1000, test_size=10000),
    "full": Budget(epochs=20, batch_size=128),
}


def _classifier(
    name: str, dataset: str, model: Callable[[], nn.Module], budgets: dict[str, Budget], what: str
) -> SupervisedTask:
    return SupervisedTask(
        name=name,
        description=f"{what}; cross-entropy; metric: accuracy",
        dataset=dataset,
        model=model,
        loss=cross_entropy,
        metrics={"accuracy": (accuracy, "maximize")},
        budgets=budgets,
        load_kwargs={"val_fraction": 0.1, "seed": 0},
    )


MNIST_CNN = _classifier("mnist-cnn", "mnist", mnist_cnn, MNIST_BUDGETS, "the seed's CNN on MNIST")
FASHION_MNIST_CNN = _classifier(
    "fashion-mnist-cnn", "fashion-mnist", mnist_cnn, MNIST_BUDGETS, "the seed's CNN on Fashion-MNIST"
)
CIFAR10_CNN = _classifier("cifar10-cnn", "cifar-10", cifar10_cnn, CIFAR10_BUDGETS, "Keras's small CNN on CIFAR-10")
