r"""Generative adversarial networks: the training step they share, and ``gan-ring``.

A GAN has two roles, ``"generator"`` and ``"discriminator"``, each with its own optimizer.  One
:meth:`GanInstance.step` is one discriminator (critic) update on one batch of real data; every
``critic_steps``-th step also makes one generator update on fresh noise (as many samples as the
real batch, conditioned on its labels where the networks are conditional).  Two objectives, with
:math:`D` the discriminator's logit and :math:`\sigma` the logistic function:

* ``"standard"``: Goodfellow et al., "Generative Adversarial Nets", NeurIPS 2014, with the
  non-saturating generator loss of their section 3,

  .. math:: L_D = -\mathbb E_x \log\sigma(D(x)) - \mathbb E_z \log(1 - \sigma(D(G(z)))),\qquad
            L_G = -\mathbb E_z \log \sigma(D(G(z)))

  (binary cross-entropy on the logits, each term a mean over its batch), one discriminator step
  per generator step;
* ``"wasserstein"``: Arjovsky, Chintala & Bottou, "Wasserstein GAN", ICML 2017, Algorithm 1,
  with the critic :math:`f = D`,

  .. math:: L_f = \mathbb E_z f(G(z)) - \mathbb E_x f(x),\qquad L_G = -\mathbb E_z f(G(z)),

  every critic parameter clipped to :math:`[-c, c]` after each critic step (as in Algorithm 1;
  the authors' code clips before each critic step instead, which leaves the critic of the
  generator step unclipped by one update), and ``critic_steps`` critic steps per generator step.

Reported per curve point: ``train_d_loss`` and ``train_g_loss``, the means of :math:`L_D` (or
:math:`L_f`) and :math:`L_G` over the steps since the previous point.

``gan-ring`` (:class:`RingTask`): the 2-D mixture of 8 Gaussians on a circle of radius 2 with
standard deviation 0.02 (Metz et al., "Unrolled GANs", ICLR 2017, section 3.1, whose mixture has
std 0.02; later papers such as VEEGAN and PacGAN reuse it), infinite data (fresh samples every
epoch), and MLPs of 2 hidden layers of 128 ReLU units for both networks, with 16-dimensional
standard normal noise.  Metrics (:func:`ring_quality`), on samples from fixed noise:

* ``hq_fraction``: the share of *high-quality* samples, those within 3 std (0.06) of a mode's
  centre (a perfect generator scores :math:`1 - e^{-9/2} = 0.989`, the chance that a 2-D
  Gaussian sample lies within 3 std of its mean);
* ``coverage``: the number of modes (0-8) that hold at least ``min_fraction`` = 1% of the samples
  as high-quality samples (our threshold; a perfect generator puts 12.5% near each mode; the
  literature's thresholds vary).
"""

from __future__ import annotations

import io
import math
from abc import abstractmethod
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from ..optim._validate import check_choice
from ._base import Budget, Instance, Task, num_batches

OBJECTIVES = ("standard", "wasserstein")
#: Seeds of the noise that evaluation draws, one per split (independent of the run's seed).
EVAL_SEEDS = {"val": 1, "test": 2}
#: Seed of the noise of the samples image drawn at the end of a run (:meth:`GanInstance.samples_png`).
SAMPLES_SEED = 3
#: The name of the samples image among a run's artifacts (:meth:`optimlab.store.Store.artifacts`).
SAMPLES_ARTIFACT = "samples"
#: Samples drawn in ``gan-ring``'s samples image.
RING_SAMPLES = 1000


class GanInstance(Instance):
    """One run of a GAN: the two networks and the shared training step (module docstring).

    Subclasses supply :meth:`batches` (``(real, labels)`` pairs; ``labels`` is ``None`` for an
    unconditional GAN) and :meth:`evaluate`.  The networks are called as ``generator(z, labels)``
    and ``discriminator(x, labels)``; noise is drawn on the CPU and moved, so a run draws the same
    noise on every device.
    """

    def __init__(
        self,
        generator: nn.Module,
        discriminator: nn.Module,
        *,
        objective: str,
        critic_steps: int,
        clip: float | None,
        noise_dim: int,
        device: torch.device,
    ) -> None:
        check_choice("GanInstance", "objective", objective, OBJECTIVES)
        self.generator = generator
        self.discriminator = discriminator
        self.objective = objective
        self.critic_steps = critic_steps
        self.clip = clip
        self.noise_dim = noise_dim
        self.device = device
        self._critic_updates = 0

    def parameters(self) -> dict[str, list[nn.Parameter]]:
        return {"generator": list(self.generator.parameters()), "discriminator": list(self.discriminator.parameters())}

    def noise(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """``n`` standard normal noise vectors, from ``generator`` (default: torch's global one)."""
        return torch.randn(n, self.noise_dim, generator=generator).to(self.device)

    def step(self, batch: tuple[Tensor, Tensor | None], optimizers: Mapping[str, torch.optim.Optimizer]) -> dict[str, Tensor]:
        real, labels = batch
        generator, discriminator = self.generator, self.discriminator
        generator.train()
        discriminator.train()
        with torch.no_grad():
            fake = generator(self.noise(len(real)), labels)
        on_real, on_fake = discriminator(real, labels), discriminator(fake, labels)
        if self.objective == "standard":
            d_loss = F.binary_cross_entropy_with_logits(on_real, torch.ones_like(on_real)) + F.binary_cross_entropy_with_logits(
                on_fake, torch.zeros_like(on_fake)
            )
        else:
            d_loss = on_fake.mean() - on_real.mean()
        optimizers["discriminator"].zero_grad(set_to_none=True)
        d_loss.backward()
        optimizers["discriminator"].step()
        if self.clip is not None:
            with torch.no_grad():
                for p in discriminator.parameters():
                    p.clamp_(-self.clip, self.clip)
        losses = {"d_loss": d_loss.detach()}
        self._critic_updates += 1
        if self._critic_updates % self.critic_steps == 0:
            judged = discriminator(generator(self.noise(len(real)), labels), labels)
            if self.objective == "standard":
                g_loss = F.binary_cross_entropy_with_logits(judged, torch.ones_like(judged))
            else:
                g_loss = -judged.mean()
            optimizers["generator"].zero_grad(set_to_none=True)
            g_loss.backward()
            optimizers["generator"].step()
            losses["g_loss"] = g_loss.detach()
        return losses

    def sample(self, n: int, split: str, labels: Tensor | None = None) -> Tensor:
        """``n`` samples of the generator in eval mode, from the fixed noise of ``split``."""
        return self.generate(n, torch.Generator().manual_seed(EVAL_SEEDS[split]), labels)

    @torch.no_grad()
    def generate(self, n: int, noise: torch.Generator, labels: Tensor | None = None) -> Tensor:
        """``n`` samples of the generator in eval mode (batch normalisation on its running statistics, which
        it leaves as they were) from noise drawn from ``noise`` alone, so that sampling changes nothing a
        later training step or evaluation draws or computes."""
        z = self.noise(n, noise)
        self.generator.eval()
        try:
            return self.generator(z, labels)
        finally:
            self.generator.train()

    def artifacts(self) -> list[dict[str, Any]]:
        """The samples image (:meth:`samples_png`), stored with the run as ``"samples"`` and shown in the report."""
        return [{"name": SAMPLES_ARTIFACT, "media_type": "image/png", "data": self.samples_png()}]

    @abstractmethod
    def samples_png(self) -> bytes:
        """The generator's samples now (the end of training) as a PNG of bounded size, from the fixed noise
        of :data:`SAMPLES_SEED`: the same noise for every run and optimizer, so that the images of two runs
        compare sample for sample."""


def mlp(inputs: int, hidden: int, outputs: int) -> nn.Sequential:
    """Two hidden layers of ``hidden`` ReLU units."""
    return nn.Sequential(
        nn.Linear(inputs, hidden), nn.ReLU(), nn.Linear(hidden, hidden), nn.ReLU(), nn.Linear(hidden, outputs)
    )


class _Unconditional(nn.Module):
    """A network called as ``net(x, labels)`` that ignores ``labels`` (always ``None`` here)."""

    def __init__(self, net: nn.Module) -> None:
        super().__init__()
        self.net = net

    def forward(self, x: Tensor, labels: Tensor | None) -> Tensor:
        return self.net(x)


def ring_centres(modes: int, radius: float) -> Tensor:
    """The ``modes`` centres :math:`r(\\cos 2\\pi k/K, \\sin 2\\pi k/K)`, float32 ``[K, 2]``."""
    angles = torch.arange(modes, dtype=torch.float64) * (2 * math.pi / modes)
    return (radius * torch.stack([angles.cos(), angles.sin()], dim=1)).float()


def ring_quality(samples: Tensor, centres: Tensor, std: float, min_fraction: float) -> dict[str, float]:
    """``coverage`` and ``hq_fraction`` of 2-D ``samples`` (see the module docstring).

    A sample is high-quality if its distance to the nearest centre is at most ``3 * std``;
    non-finite samples never are.
    """
    distance, nearest = torch.cdist(samples.double(), centres.double()).min(dim=1)
    good = distance <= 3 * std  # False for NaN
    counts = torch.bincount(nearest[good], minlength=len(centres))
    return {
        "coverage": float((counts >= min_fraction * len(samples)).sum().item()),
        "hq_fraction": good.double().mean().item(),
    }


RING_BUDGETS = {
    "smoke": Budget(epochs=1, batch_size=128, train_size=128 * 50, val_size=1000, test_size=2000),
    # 2,000 steps are too few: measured with Adam (lr 1e-3, beta1 0.5), the samples reach the modes after ~2,500
    "quick": Budget(epochs=10, batch_size=256, train_size=256 * 500, val_size=2000, test_size=10000),
    "full": Budget(epochs=50, batch_size=256, train_size=256 * 500, val_size=2000, test_size=10000),
}


@dataclass(frozen=True, repr=False)
class RingTask(Task):
    """``gan-ring``: a GAN on a ring of Gaussians (module docstring); the fields are its setup."""

    roles: ClassVar[tuple[str, ...]] = ("generator", "discriminator")
    metric = "coverage"
    higher_is_better = True
    name: str = "gan-ring"
    modes: int = 8
    radius: float = 2.0
    std: float = 0.02
    noise_dim: int = 16
    hidden: int = 128
    min_fraction: float = 0.01
    budgets: Mapping[str, Budget] = field(default_factory=lambda: dict(RING_BUDGETS))

    @property
    def description(self) -> str:  # type: ignore[override]
        return (
            f"GAN (non-saturating) on {self.modes} Gaussians on a circle of radius {self.radius:g}, std {self.std:g}; "
            f"MLPs 2x{self.hidden} ReLU; metrics: modes covered, share of samples within 3 std"
        )

    def setup(self, budget: Budget, *, data_dir: Any, device: torch.device) -> RingInstance:
        if budget.train_size is None:
            raise ValueError(f"{self.name}: invalid budget train_size=None: the data is unlimited, give samples per epoch")
        generator = _Unconditional(mlp(self.noise_dim, self.hidden, 2)).to(device)
        discriminator = _Unconditional(mlp(2, self.hidden, 1)).to(device)
        return RingInstance(self, budget, generator, discriminator, device)


class RingInstance(GanInstance):
    """One run of :class:`RingTask`: fresh mixture samples every epoch, quality on fixed noise."""

    def __init__(
        self, task: RingTask, budget: Budget, generator: nn.Module, discriminator: nn.Module, device: torch.device
    ) -> None:
        super().__init__(
            generator, discriminator, objective="standard", critic_steps=1, clip=None, noise_dim=task.noise_dim, device=device
        )
        self.task = task
        self.budget = budget
        self.centres = ring_centres(task.modes, task.radius)
        self.steps_per_epoch = num_batches(budget.train_size, budget.batch_size, drop_last=True)

    def batches(self, generator: torch.Generator) -> Iterator[tuple[Tensor, None]]:
        n, size = self.budget.train_size, self.budget.batch_size
        modes = torch.randint(self.task.modes, (n,), generator=generator)
        points = (self.centres[modes] + self.task.std * torch.randn(n, 2, generator=generator)).to(self.device)
        for i in range(self.steps_per_epoch):
            yield points[i * size : (i + 1) * size], None

    def evaluate(self, split: str) -> dict[str, float]:
        n = (self.budget.val_size if split == "val" else self.budget.test_size) or 1000
        samples = self.sample(n, split).cpu()
        return ring_quality(samples, self.centres, self.task.std, self.task.min_fraction)

    def samples_png(self) -> bytes:
        """A scatter of :data:`RING_SAMPLES` samples over the ring (320 x 320 pixels): each mode's centre with
        its 3-std circle (the high-quality region of :func:`ring_quality`), on the same axes for every run;
        the title gives the samples' coverage and high-quality share, and how many fall off the axes."""
        from matplotlib.backends.backend_agg import FigureCanvasAgg
        from matplotlib.figure import Figure
        from matplotlib.patches import Circle

        points = self.generate(RING_SAMPLES, torch.Generator().manual_seed(SAMPLES_SEED)).float().cpu()
        quality = ring_quality(points, self.centres, self.task.std, self.task.min_fraction)
        limit = 1.5 * self.task.radius
        xy = points.numpy()
        off = int((~((abs(xy) <= limit).all(axis=1))).sum())  # NaN samples count as off the axes
        fig = Figure(figsize=(3.2, 3.2), dpi=100, layout="constrained")
        FigureCanvasAgg(fig)
        ax = fig.add_subplot()
        for x, y in self.centres.tolist():
            ax.add_patch(Circle((x, y), 3 * self.task.std, fill=False, color="#d62728", lw=0.8))
        ax.scatter(xy[:, 0], xy[:, 1], s=2, color="#1f77b4", alpha=0.5, linewidths=0)
        ax.set_xlim(-limit, limit)
        ax.set_ylim(-limit, limit)
        ax.set_aspect("equal")
        ax.tick_params(labelsize=7)
        ax.set_title(
            f"{quality['coverage']:.0f}/{self.task.modes} modes, {quality['hq_fraction']:.0%} within 3 std"
            + (f"; {off} off the axes" if off else ""),
            fontsize=8,
        )
        buffer = io.BytesIO()
        # no version stamp: the same samples give the same bytes
        fig.savefig(buffer, format="png", metadata={"Software": None})
        return buffer.getvalue()


GAN_RING = RingTask()
