"""Tiny models for testing the training engine itself (registered under test-only names)."""

from __future__ import annotations

import dataclasses
import math
import warnings

import torch
from torch import Tensor, nn

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec, Dataset
from genlab.errors import TrainingWarning
from genlab.models.base import GenerativeModel, Loss
from genlab.registry import register


@dataclasses.dataclass
class GaussianConfig(Config):
    hidden: int = 8
    noise: float = 0.0  # > 0 makes the loss stochastic (draws from torch's global RNG)
    nan_after: int = 0  # > 0: the loss turns NaN after this many calls (tests the NaN stop)
    warn_every: int = 0  # > 0: a TrainingWarning every this many training calls (tests their routing)


@register("test-gaussian", GaussianConfig, family="test", summary="diagonal Gaussian with an MLP residual (engine tests)")
class GaussianModel(GenerativeModel):
    """log p(x) = sum_d log N(x_d; mu_d, sigma_d^2), with mu = b + MLP(0) so there are hidden weights."""

    exact_likelihood = True

    def __init__(self, config: GaussianConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        d = spec.dim
        self.net = nn.Sequential(nn.Linear(d, config.hidden), nn.Tanh(), nn.Linear(config.hidden, d))
        self.log_sigma = nn.Parameter(torch.zeros(d))
        self.register_buffer("calls", torch.zeros((), dtype=torch.long))

    def mean(self) -> Tensor:
        return self.net(torch.ones(1, self.spec.dim, device=self.log_sigma.device))[0]

    def log_prob(self, x: Tensor) -> Tensor:
        x = x.reshape(x.shape[0], -1)
        if self.training and self.config.noise:
            x = x + self.config.noise * torch.randn_like(x)
        z = (x - self.mean()) / self.log_sigma.exp()
        return (-0.5 * z.pow(2) - self.log_sigma - 0.5 * math.log(2 * math.pi)).sum(1)

    def loss(self, batch: Batch) -> Loss:
        if self.training:
            self.calls += 1
            if self.config.warn_every and int(self.calls) % self.config.warn_every == 0:
                warnings.warn(f"call {int(self.calls)} went wrong", TrainingWarning, stacklevel=2)
        nll = -self.log_prob(batch.x).mean()
        if self.config.nan_after and int(self.calls) > self.config.nan_after:
            nll = nll * float("nan")
        return Loss(nll, {"nll": nll, "sigma": self.log_sigma.exp().mean().detach()})

    @torch.no_grad()
    def sample(self, n, cond=None, generator=None):
        eps = torch.randn(n, self.spec.dim, generator=generator).to(self.log_sigma.device)
        return (self.mean() + eps * self.log_sigma.exp()).reshape(n, *self.spec.shape)


@dataclasses.dataclass
class TwoPlayerConfig(Config):
    pass


@register("test-two-player", TwoPlayerConfig, family="test", summary="two players, two optimizers (engine tests)")
class TwoPlayerModel(GenerativeModel):
    """Player a learns x -> 2x; player b fits the mean of a's output: two optimizers, own step."""

    has_custom_step = True

    def __init__(self, config: TwoPlayerConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.a = nn.Linear(spec.dim, spec.dim)
        self.b = nn.Linear(spec.dim, spec.dim)

    def configure_optimizers(self, lr, weight_decay=0.0):
        return {"a": torch.optim.Adam(self.a.parameters(), lr=lr), "b": torch.optim.SGD(self.b.parameters(), lr=lr)}

    def training_step(self, batch, ctx):
        x = batch.x.reshape(len(batch), -1)
        with ctx.autocast():
            loss_a = (self.a(x) - 2.0 * x).pow(2).mean()
        ctx.backward(loss_a)
        ctx.optimizer_step("a")
        with ctx.autocast():
            loss_b = (self.b(self.a(x).detach()) - 1.0).pow(2).mean()
        ctx.backward(loss_b)
        ctx.optimizer_step("b")
        return Loss(loss_a.detach() + loss_b.detach(), {"a": loss_a.detach(), "b": loss_b.detach()})

    def loss(self, batch):
        x = batch.x.reshape(len(batch), -1)
        la = (self.a(x) - 2.0 * x).pow(2).mean()
        lb = (self.b(self.a(x)) - 1.0).pow(2).mean()
        return Loss(la + lb, {"a": la, "b": lb})

    @torch.no_grad()
    def sample(self, n, cond=None, generator=None):
        return self.b(torch.randn(n, self.spec.dim, generator=generator)).reshape(n, *self.spec.shape)


def interrupt_after(model: GenerativeModel, calls: int) -> GenerativeModel:
    """Make `model.loss` raise KeyboardInterrupt on training call number `calls + 1` (a killed run)."""
    original = model.loss
    count = [0]

    def loss(batch: Batch) -> Loss:
        if model.training:
            count[0] += 1
            if count[0] > calls:
                raise KeyboardInterrupt
        return original(batch)

    model.loss = loss
    return model


def gaussian_data(n: int = 512, dim: int = 3, seed: int = 0) -> Dataset:
    """Vectors from N(m, diag(s^2)) with m = (1, -2, 0.5, ...), split 80/10/10."""
    g = torch.Generator().manual_seed(seed)
    mean = torch.tensor([1.0, -2.0, 0.5, 3.0][:dim] + [0.0] * max(0, dim - 4))
    x = mean + 0.5 * torch.randn(n, dim, generator=g)
    perm = torch.randperm(n, generator=g)
    k = n // 10
    spec = DataSpec(name="gauss", kind="vector", shape=(dim,), value_range=(-5.0, 5.0))
    return Dataset(x, spec, splits={"train": perm[2 * k :], "val": perm[k : 2 * k], "test": perm[:k]}, source={"name": "test-gauss"})
