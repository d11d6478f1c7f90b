"""Compare optimizers on your own model: the README's "Your own model" example, complete.

    python examples/your_model.py                      # about a minute on 2 CPU cores
    python examples/your_model.py --tiny --out /tmp/x  # seconds: what the test suite runs

A small CNN learns to tell three kinds of 12x12 pictures apart (horizontal bars, vertical bars,
a diagonal), from noisy examples the script draws.  Training batches come from a DataLoader with
two worker processes that flip and shift each picture (augmentation); the validation and test
pictures are plain tensors.  Four optimizers are tuned with the same budget (the learning rate,
log-uniform), then each chosen configuration is trained with several seeds: optimlab's Adam, torch's
AdamW as a class, SGD with momentum as a (class, hyperparameters) pair, and an optimizer written
here.  It prints the table and the verdict and writes the report (curves, summary.md).
"""

from __future__ import annotations

import argparse
from pathlib import Path

import torch
from torch import nn
from torch.utils.data import DataLoader, Dataset

import optimlab
from optimlab import Budget, SupervisedTask


def pictures(n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` noisy 1x12x12 pictures of three classes: horizontal bars, vertical bars, a diagonal."""
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % 3
    x = torch.zeros(n, 1, 12, 12)
    x[y == 0, :, ::3, :] = 1.0
    x[y == 1, :, :, ::3] = 1.0
    x[y == 2] = torch.eye(12).expand(int((y == 2).sum()), 1, 12, 12)
    return x + 0.8 * torch.randn(x.shape, generator=g), y


class Augmented(Dataset):
    """The training pictures, each flipped left-right at random and shifted by up to one pixel."""

    def __init__(self, x: torch.Tensor, y: torch.Tensor) -> None:
        self.x, self.y = x, y

    def __len__(self) -> int:
        return len(self.y)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, torch.Tensor]:
        # torch's generator in a DataLoader worker is seeded from the loader's generator: one run
        # seed fixes the augmentation too
        image = self.x[i]
        if torch.rand(()) < 0.5:
            image = image.flip(-1)
        shift = [int(s) for s in torch.randint(-1, 2, (2,))]
        return image.roll(shift, dims=(-2, -1)), self.y[i]


def cnn() -> nn.Module:
    return nn.Sequential(
        nn.Conv2d(1, 8, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2),
        nn.Conv2d(8, 16, 3, padding=1), nn.ReLU(), nn.AdaptiveAvgPool2d(1),
        nn.Flatten(), nn.Linear(16, 3),
    )  # fmt: skip


def accuracy(outputs: torch.Tensor, targets: torch.Tensor) -> float:
    return (outputs.argmax(1) == targets).float().mean().item()


class SignSGD(torch.optim.Optimizer):
    """Your own optimizer: signSGD with momentum (Bernstein et al., 2018), as anyone would write it."""

    def __init__(self, params, lr: float = 1e-3, momentum: float = 0.9) -> None:
        super().__init__(params, {"lr": lr, "momentum": momentum})

    @torch.no_grad()
    def step(self, closure=None):
        for group in self.param_groups:
            for p in group["params"]:
                if p.grad is None:
                    continue
                buf = self.state[p].setdefault("momentum_buffer", torch.zeros_like(p))
                buf.mul_(group["momentum"]).add_(p.grad, alpha=1 - group["momentum"])
                p.add_(buf.sign(), alpha=-group["lr"])


def make_task(train_size: int = 1200, epochs: int = 4) -> SupervisedTask:
    x, y = pictures(train_size, seed=0)

    def train_loader(batch_size: int, generator: torch.Generator) -> DataLoader:
        # pass the generator: the run's seed then fixes the order and the workers' augmentation
        return DataLoader(Augmented(x, y), batch_size, shuffle=True, generator=generator, num_workers=2)

    return SupervisedTask(
        name="bars-cnn",
        model=cnn,
        train=train_loader,
        val=pictures(300, seed=1),
        test=pictures(600, seed=2),
        loss=nn.CrossEntropyLoss(),
        metrics={"accuracy": (accuracy, "maximize")},
        budget=Budget(epochs=epochs, batch_size=32),
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("results/your-model"), help="store and report folder")
    parser.add_argument("--tiny", action="store_true", help="a few seconds: the size the test suite runs")
    args = parser.parse_args()
    tiny = args.tiny
    task = make_task(train_size=96 if tiny else 1200, epochs=1 if tiny else 4)
    result = optimlab.compare(
        task,
        ["Adam", torch.optim.AdamW, (torch.optim.SGD, {"momentum": 0.9}), SignSGD],
        trials=1 if tiny else 8,
        seeds=2 if tiny else 5,
        store=args.out / "lab.sqlite",
    )
    print(result.render())
    for row in result.table():
        print(row)
    paths = result.report(args.out / "report")
    print(f"report: {paths[-1]}")


if __name__ == "__main__":
    main()
