r"""Conditional GANs on MNIST: ``mnist-dcgan`` and ``mnist-wgan``.

Both tasks train the same small class-conditional DCGAN-style networks (Radford, Metz & Chintala,
ICLR 2016: strided (transposed) convolutions, batch normalisation, ReLU in the generator, leaky
ReLU 0.2 in the discriminator, tanh output, weights from N(0, 0.02²), batch-norm scales from
N(1, 0.02²)), scaled down so a smoke run takes seconds on a CPU; they differ in the objective
(:mod:`.gan`):

* ``mnist-dcgan``: the standard (non-saturating) GAN loss, one discriminator step per generator step;
* ``mnist-wgan``: the Wasserstein loss with critic weights clipped to [-0.01, 0.01] and 5 critic
  steps per generator step (Arjovsky et al. 2017, Algorithm 1's c = 0.01, n_critic = 5).  The
  critic is the same network as the discriminator (its batch normalisation included, as in the
  paper's DCGAN critic); its output is used as a score, not a logit.

Networks (``w`` = 32 channels, 64-dimensional standard normal noise, the digit as one-hot)::

    generator:      [z, onehot(y)] -> fc 74 -> 2w*7*7, BN, ReLU -> convT 4x4/2 2w -> w, BN, ReLU
                    -> convT 4x4/2 w -> 1, tanh                                  (28x28 in [-1, 1])
    discriminator:  [x, onehot(y) as 10 constant planes] -> conv 4x4/2 11 -> w, leaky ReLU
                    -> conv 4x4/2 w -> 2w, BN, leaky ReLU -> fc 2w*7*7 -> 1

Real images are scaled from [0, 1] to [-1, 1].  The conditioning labels of a generator step are
those of the real batch (the data's class frequencies).

Sample quality (cheap proxies, evaluated on ``n`` samples with labels ``0, 1, ..., 9, 0, ...``
from fixed noise, the generator in eval mode):

* ``gen_accuracy`` (the headline metric): the accuracy, against the requested labels, of a small
  *judge* CNN trained at set-up on the run's real training images (2 epochs of Adam, lr 1e-3,
  batch 64, with the fixed seed 0, so every run of a budget has the same judge).  It measures
  whether the samples look like the digit asked for, as the judge sees it.  Limits: it says
  nothing about diversity (a generator that draws one perfect "3" for every "3" scores 100%);
  a weak judge (the smoke budget's, trained on 256 images) passes blurry samples and fails good
  ones; adversarial-looking samples can fool it.  ``judge_accuracy`` (with the final metrics)
  is the judge's accuracy on the real test images, its ceiling.
* ``mean_image_rms``: for each digit, the root-mean-square pixel difference (pixels in [0, 1])
  between the mean generated image and the mean real image of the evaluated split, averaged
  over the digits.  It catches wrong shapes, strokes or brightness per class, but a blurry
  average-looking sample per class scores well: it sees first moments only.
"""

from __future__ import annotations

import io
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image
from torch import Tensor, nn

from ..data import Dataset, Split
from ._base import Budget, Task, UsesDataset, num_batches, shuffled, subset
from .gan import SAMPLES_SEED, GanInstance

CLASSES = 10
#: Samples of each digit in the samples image (one row per digit).
SAMPLE_COLUMNS = 8


class ConditionalGenerator(nn.Module):
    """The generator of the module docstring: ``forward(z, labels)`` -> images in [-1, 1]."""

    def __init__(self, noise_dim: int = 64, width: int = 32) -> None:
        super().__init__()
        self.width = width
        self.project = nn.Sequential(
            nn.Linear(noise_dim + CLASSES, 2 * width * 7 * 7), nn.BatchNorm1d(2 * width * 7 * 7), nn.ReLU()
        )
        self.upsample = nn.Sequential(
            nn.ConvTranspose2d(2 * width, width, 4, 2, 1),
            nn.BatchNorm2d(width),
            nn.ReLU(),
            nn.ConvTranspose2d(width, 1, 4, 2, 1),
            nn.Tanh(),
        )

    def forward(self, z: Tensor, labels: Tensor) -> Tensor:
        h = self.project(torch.cat([z, F.one_hot(labels, CLASSES).to(z.dtype)], dim=1))
        return self.upsample(h.view(-1, 2 * self.width, 7, 7))


class ConditionalDiscriminator(nn.Module):
    """The discriminator (critic) of the module docstring: ``forward(x, labels)`` -> ``[N, 1]``."""

    def __init__(self, width: int = 32) -> None:
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(1 + CLASSES, width, 4, 2, 1),
            nn.LeakyReLU(0.2),
            nn.Conv2d(width, 2 * width, 4, 2, 1),
            nn.BatchNorm2d(2 * width),
            nn.LeakyReLU(0.2),
            nn.Flatten(),
            nn.Linear(2 * width * 7 * 7, 1),
        )

    def forward(self, x: Tensor, labels: Tensor) -> Tensor:
        planes = F.one_hot(labels, CLASSES).to(x.dtype)[:, :, None, None].expand(-1, -1, *x.shape[2:])
        return self.net(torch.cat([x, planes], dim=1))


def dcgan_init(module: nn.Module) -> None:
    """DCGAN's initialisation: (transposed) convolution and linear weights from N(0, 0.02²), biases
    0, batch-norm scales from N(1, 0.02²) and shifts 0; for ``module.apply``."""
    if isinstance(module, (nn.Conv2d, nn.ConvTranspose2d, nn.Linear)):
        nn.init.normal_(module.weight, 0.0, 0.02)
        nn.init.zeros_(module.bias)
    elif isinstance(module, (nn.BatchNorm1d, nn.BatchNorm2d)):
        nn.init.normal_(module.weight, 1.0, 0.02)
        nn.init.zeros_(module.bias)


def judge_network() -> nn.Sequential:
    """The judge: conv 5x5 16, ReLU, max-pool 2, conv 5x5 32, ReLU, max-pool 2, fc 512 -> 10."""
    return nn.Sequential(
        nn.Conv2d(1, 16, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Conv2d(16, 32, 5),
        nn.ReLU(),
        nn.MaxPool2d(2),
        nn.Flatten(),
        nn.Linear(32 * 4 * 4, CLASSES),
    )


def train_judge(train: Split, *, epochs: int = 2, batch_size: int = 64, seed: int = 0) -> nn.Sequential:
    """A :func:`judge_network` trained on ``train`` (images in [0, 1]) with Adam (lr 1e-3), in eval mode.

    It draws only from its own ``seed`` (torch's global generator is saved and restored), so the
    judge is the same whatever the run's seed, and training it leaves the run's random stream as
    it was.
    """
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        judge = judge_network().to(train.x.device)
        optimizer = torch.optim.Adam(judge.parameters(), lr=1e-3)
        order = torch.Generator().manual_seed(seed)
        for _ in range(epochs):
            for rows in shuffled(len(train), batch_size, order, drop_last=False):
                rows = rows.to(train.x.device)
                optimizer.zero_grad(set_to_none=True)
                F.cross_entropy(judge(train.x[rows]), train.y[rows]).backward()
                optimizer.step()
    return judge.eval()


@torch.no_grad()
def judge_accuracy(judge: nn.Module, images: Tensor, labels: Tensor) -> float:
    """The share of ``images`` (in [0, 1]) that ``judge`` assigns to ``labels``."""
    return (judge(images).argmax(dim=1) == labels).double().mean().item()


def mean_image_rms(images: Tensor, labels: Tensor, real: Split) -> float:
    """``mean_image_rms`` of the module docstring: per digit present in both, the RMS pixel
    difference of the mean images, averaged over those digits."""
    distances = []
    for digit in range(CLASSES):
        mine, theirs = images[labels == digit], real.x[real.y == digit]
        if len(mine) and len(theirs):
            distances.append((mine.double().mean(dim=0) - theirs.double().mean(dim=0)).square().mean().sqrt())
    return torch.stack(distances).mean().item() if distances else float("nan")


def image_grid(images: Tensor, columns: int, pad: int = 2) -> bytes:
    """``images`` (``[N, 1, H, W]`` in [0, 1], ``N`` a multiple of ``columns``) tiled row by row as a
    grayscale PNG, ``pad`` grey pixels around every tile (grey: neither a digit's stroke nor its
    background); a non-finite pixel is drawn black."""
    n, _, h, w = images.shape
    if n % columns:
        raise ValueError(f"image_grid: invalid columns={columns}: {n} images do not fill whole rows")
    pixels = (torch.nan_to_num(images[:, 0].float(), nan=0.0).clamp(0, 1) * 255).round().to(torch.uint8).cpu().numpy()
    grid = np.full(((n // columns) * (h + pad) + pad, columns * (w + pad) + pad), 128, dtype=np.uint8)
    for i, tile in enumerate(pixels):
        row, column = divmod(i, columns)
        top, left = pad + row * (h + pad), pad + column * (w + pad)
        grid[top : top + h, left : left + w] = tile
    buffer = io.BytesIO()
    Image.fromarray(grid).save(buffer, format="PNG", optimize=True)
    return buffer.getvalue()


MNIST_GAN_BUDGETS = {
    "smoke": Budget(epochs=1, batch_size=32, train_size=256, val_size=100, test_size=200),
    "quick": Budget(epochs=3, batch_size=64, train_size=10000, val_size=1000, test_size=2000),
    "full": Budget(epochs=20, batch_size=64, val_size=2000, test_size=10000),
}


@dataclass(frozen=True, repr=False)
class MnistGanTask(UsesDataset, Task):
    """A conditional GAN on MNIST (module docstring).

    Attributes:
        objective: ``"standard"`` or ``"wasserstein"`` (:mod:`.gan`).
        critic_steps: discriminator steps per generator step.
        clip: the critic's weight-clipping bound, or ``None``.
        dataset, load_kwargs, data: the data (:class:`~optimlab.tasks._base.UsesDataset`).
    """

    roles: ClassVar[tuple[str, ...]] = ("generator", "discriminator")
    metric = "gen_accuracy"
    higher_is_better = True
    name: str
    description: str
    objective: str
    critic_steps: int
    clip: float | None
    budgets: Mapping[str, Budget] = field(default_factory=lambda: dict(MNIST_GAN_BUDGETS))
    noise_dim: int = 64
    width: int = 32
    dataset: str = "mnist"
    load_kwargs: Mapping[str, Any] = field(default_factory=lambda: {"val_fraction": 0.1, "seed": 0})
    data: Dataset | None = None

    def setup(self, budget: Budget, *, data_dir: Any, device: torch.device) -> MnistGanInstance:
        data = self.load(data_dir)
        if data.val is None or data.test is None:
            raise ValueError(f"{self.name}: the data set {data.name!r} needs val and test splits")
        train = subset(data.train, budget.train_size)
        reference = {"val": subset(data.val, budget.val_size), "test": subset(data.test, budget.test_size)}
        to = lambda s: Split(s.x.to(device), s.y.to(device))  # noqa: E731
        train, reference = to(train), {k: to(v) for k, v in reference.items()}
        judge = train_judge(train)
        generator = ConditionalGenerator(self.noise_dim, self.width).to(device)
        generator.apply(dcgan_init)
        discriminator = ConditionalDiscriminator(self.width).to(device)
        discriminator.apply(dcgan_init)
        return MnistGanInstance(self, budget, generator, discriminator, train, reference, judge, device)


class MnistGanInstance(GanInstance):
    """One run of a :class:`MnistGanTask`."""

    def __init__(
        self,
        task: MnistGanTask,
        budget: Budget,
        generator: nn.Module,
        discriminator: nn.Module,
        train: Split,
        reference: dict[str, Split],
        judge: nn.Module,
        device: torch.device,
    ) -> None:
        super().__init__(
            generator,
            discriminator,
            objective=task.objective,
            critic_steps=task.critic_steps,
            clip=task.clip,
            noise_dim=task.noise_dim,
            device=device,
        )
        self.budget = budget
        self.train = train
        self.reference = reference
        self.judge = judge
        # batch normalisation needs batches of more than one image, hence drop_last
        self.steps_per_epoch = num_batches(len(train), budget.batch_size, drop_last=True)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, Tensor]]:
        for rows in shuffled(len(self.train), self.budget.batch_size, generator, drop_last=True):
            rows = rows.to(self.train.x.device)
            yield self.train.x[rows] * 2 - 1, self.train.y[rows]

    def evaluate(self, split: str) -> dict[str, float]:
        real = self.reference[split]
        n = len(real)
        labels = torch.arange(n, device=self.device) % CLASSES
        images = (self.sample(n, split, labels) + 1) / 2
        return {
            "gen_accuracy": judge_accuracy(self.judge, images, labels),
            "mean_image_rms": mean_image_rms(images, labels, real),
        }

    def samples_png(self) -> bytes:
        """:data:`SAMPLE_COLUMNS` samples of each digit, one row per digit from 0 at the top to 9, each from
        its own fixed noise vector (:func:`image_grid`: 302 x 242 pixels)."""
        labels = torch.arange(CLASSES, device=self.device).repeat_interleave(SAMPLE_COLUMNS)
        images = (self.generate(len(labels), torch.Generator().manual_seed(SAMPLES_SEED), labels) + 1) / 2
        return image_grid(images, SAMPLE_COLUMNS)

    def constants(self) -> dict[str, float]:
        test = self.reference["test"]
        return {"judge_accuracy": judge_accuracy(self.judge, test.x, test.y)}


MNIST_DCGAN = MnistGanTask(
    name="mnist-dcgan",
    description="small conditional DCGAN on MNIST, standard (non-saturating) loss; metric: a judge CNN's "
    "accuracy on generated digits",
    objective="standard",
    critic_steps=1,
    clip=None,
)
MNIST_WGAN = MnistGanTask(
    name="mnist-wgan",
    description="the same conditional networks as a WGAN: weight clipping 0.01, 5 critic steps per generator "
    "step; metric: a judge CNN's accuracy on generated digits",
    objective="wasserstein",
    critic_steps=5,
    clip=0.01,
)
