"""The contract every generative model keeps: a config, a loss with named terms, and sampling."""

from __future__ import annotations

import contextlib
import dataclasses
from typing import Any, Callable, ClassVar, Protocol, Sequence

import torch
from torch import Tensor, nn

from genlab.config import DEFAULT_BATCH_SIZE, Config
from genlab.data.dataset import Batch, DataSpec, Dataset
from genlab.errors import ConfigError


class StepContext(Protocol):
    """What a model with several players (GANs) gets in `training_step(batch, ctx)` from the engine
    (`genlab.train.engine.EngineStepContext` implements it; a test may pass any object that does):

    ctx.optimizers[name]; ctx.step, the updates done so far; `with ctx.autocast():` around forward
    passes; ctx.backward(loss); ctx.optimizer_step(name) unscales, averages gradients over processes,
    clips, steps, zeroes the gradients and advances that optimizer's learning-rate schedule.
    """

    optimizers: dict[str, torch.optim.Optimizer]
    step: int

    def autocast(self) -> contextlib.AbstractContextManager: ...

    def backward(self, loss: Tensor) -> None: ...

    def optimizer_step(self, name: str) -> None: ...


@dataclasses.dataclass(frozen=True)
class Loss:
    """A scalar to minimise and its named parts (for logging), e.g. terms={"recon": ..., "kl": ...}.

    `terms` hold scalars; they need not add up to `total` (a term may be weighted or only logged).
    """

    total: Tensor
    terms: dict[str, Tensor] = dataclasses.field(default_factory=dict)


# what a LikelihoodMeasure's nll is a negative log-probability of, and so how a report states it
MEASURE_KINDS = ("dequantized", "discrete", "continuous", "code")


@dataclasses.dataclass(frozen=True)
class LikelihoodMeasure:
    """A likelihood-like quantity a model offers for evaluation besides `log_prob` / `nll_bound`
    (`GenerativeModel.likelihood_measures`), e.g. a diffusion model's probability-flow ODE
    likelihood or the code length of a VQ-VAE's prior; the metric layer turns it into a report.

    name: the stem of the report's keys ("nll_ode" -> nll_ode_nats, nll_ode_bits_per_dim).
    nll: (x (B, *spec.shape) in the data's space, generator or None) -> a negative log-probability
        per sample in nats, (B,); every random draw it makes (dequantization, trace probes) comes
        from the generator.
    kind: "dequantized", "discrete" or "continuous" as in `GenerativeModel.likelihood_kind` (an
        NLL of x, reported in nats and bits/dim), or "code": -log p of a discrete code of x, not of
        x itself (reported in bits per image and per pixel, never as bits/dim of x).
    description: how it is computed, one phrase for the report (e.g. which trace estimator).
    costly: each sample costs many network evaluations (an ODE solve), so evaluation uses a
        bounded number of held-out samples.
    batch_size: samples per call of nll.
    """

    name: str
    nll: Callable[[Tensor, "torch.Generator | None"], Tensor]
    kind: str
    description: str
    costly: bool = False
    batch_size: int = 256

    def __post_init__(self) -> None:
        if self.kind not in MEASURE_KINDS:
            raise ConfigError(f"LikelihoodMeasure {self.name!r}: kind={self.kind!r} is unknown; choose one of {', '.join(map(repr, MEASURE_KINDS))}")
        if self.batch_size < 1:
            raise ConfigError(f"LikelihoodMeasure {self.name!r}: batch_size={self.batch_size} must be >= 1")


@dataclasses.dataclass(frozen=True)
class Trajectory:
    """states: the path's states, each (n, *spec.shape) in the data's units, from the start (noise)
    to the end (samples); title: what the picture is of."""

    states: list[Tensor]
    title: str


# the image size the `cpu_train_defaults` batches are set for (MNIST), and the smallest batch the
# scaling to larger images goes down to
CPU_REFERENCE_PIXELS = 28 * 28
MIN_CPU_BATCH = 16


def sized_for_cpu(config: Config, spec: DataSpec) -> bool:
    """Whether the "cpu" size preset sized the networks for `spec` (images of side >= 16; smaller
    data gets the same networks under both presets): where the CPU defaults apply."""
    from genlab.nn.builders import is_large_image

    return getattr(config, "preset", None) == "cpu" and is_large_image(spec)


def cpu_sized_pixels(config: Config, spec: DataSpec) -> int:
    """H W of `spec`'s images where the "cpu" size preset sized the networks for them
    (`sized_for_cpu`), else 0: what the CPU defaults scale by (`cpu_batch_size`)."""
    return spec.shape[-2] * spec.shape[-1] if sized_for_cpu(config, spec) else 0


def cpu_batch_size(batch_size: int, pixels: int) -> int:
    """A CPU default batch for images of `pixels` (H W): batch_size x CPU_REFERENCE_PIXELS / pixels,
    rounded down to a multiple of 8 and at least MIN_CPU_BATCH; never larger than batch_size.

    >>> cpu_batch_size(128, 28 * 28), cpu_batch_size(128, 32 * 32), cpu_batch_size(128, 64 * 64), cpu_batch_size(64, 64 * 64)
    (128, 96, 24, 16)
    """
    if pixels <= CPU_REFERENCE_PIXELS:
        return batch_size
    scaled = batch_size * CPU_REFERENCE_PIXELS // pixels // 8 * 8
    return min(batch_size, max(MIN_CPU_BATCH, scaled))


class GenerativeModel(nn.Module):
    """Base of every model: `loss(batch)`, `sample(n)`, and `log_prob(x)` or a named bound.

    Subclasses set `config_class`, build their networks in `__init__(config, spec)`, and implement
    `loss` and `sample`. `forward(batch)` is `loss(batch)` so DistributedDataParallel sees the call.
    `exact_likelihood` says whether `log_prob` is exact (flows, autoregressive models) or absent.
    """

    config_class: ClassVar[type[Config]] = Config
    name: ClassVar[str] = ""  # set by @register
    exact_likelihood: ClassVar[bool] = False
    # `nll_bound` costs many network evaluations per sample (a DDPM's bound: one per timestep), so
    # evaluation computes it on a bounded number of held-out samples, as for a costly LikelihoodMeasure
    costly_nll_bound: ClassVar[bool] = False
    has_custom_step: ClassVar[bool] = False
    # the kinds of data (DataSpec.kind) the model is built for; `genlab.create` refuses the others
    data_kinds: ClassVar[tuple[str, ...]] = ("image", "vector", "table")
    # training options this family does well with (e.g. more steps for diffusion); `fit` uses them
    # where the caller gave none, so `genlab train NAME` works well without flags
    train_defaults: ClassVar[dict[str, Any]] = {}
    # what replaces train_defaults' entries for a model whose networks the "cpu" size preset sized
    # (images of side >= 16, `genlab.nn.presets`): a default run of the CPU networks on MNIST-size
    # images fits in minutes on a laptop (README, "Images at real size"). Such short runs take a
    # shorter weight average where the engine's 0.999 would keep 0.999^steps of the initial weights
    # (a sixth after 1,800 steps: torch's EMA starts from them, without a bias correction)
    cpu_train_defaults: ClassVar[dict[str, Any]] = {}
    # whether `initialize` runs once per model, remembered in a buffer (see `initialize_from_data`)
    initializes_once: ClassVar[bool] = False
    # K, the number of classes `sample(n, cond=labels)` takes labels in [0, K) of; None for a model
    # trained without labels. Class-conditional models set it in __init__ (from spec.num_classes).
    num_classes: int | None = None

    def __init__(self, config: Config, spec: DataSpec) -> None:
        super().__init__()
        self.config = config
        self.spec = spec
        if self.initializes_once:
            self.register_buffer("initialized_from_data", torch.zeros((), dtype=torch.uint8))

    # -- training ---------------------------------------------------------------------
    def training_defaults(self) -> dict[str, Any]:
        """The training options `fit` uses where the caller gave none: `train_defaults`, updated by
        `cpu_train_defaults` when the "cpu" size preset sized this model's networks. Those are set
        for MNIST's 28 x 28 pixels; on larger images the batch shrinks in proportion to the pixels
        (`cpu_batch_size`), so that a default step, and a default run, costs about what it does on
        MNIST instead of growing with the image (5x at 64 x 64)."""
        pixels = cpu_sized_pixels(self.config, self.spec)
        if not pixels:
            return dict(self.train_defaults)
        defaults = {**self.train_defaults, **self.cpu_train_defaults}
        batch_size = defaults.get("batch_size", DEFAULT_BATCH_SIZE)
        scaled = cpu_batch_size(batch_size, pixels)
        if scaled != batch_size:
            defaults["batch_size"] = scaled
        return defaults

    def loss(self, batch: Batch) -> Loss:
        """The objective on a batch (a Loss with total and named terms)."""
        raise NotImplementedError

    def forward(self, batch: Batch) -> Loss:
        return self.loss(batch)

    def training_step(self, batch: Batch, ctx: StepContext) -> Loss:
        """One update for models with several players (set `has_custom_step = True`).

        Use `ctx.optimizers[name]`, `with ctx.autocast():`, `ctx.backward(loss)` and
        `ctx.optimizer_step(name)`; return the Loss to log. Single-loss models never override this:
        the engine steps them itself (with accumulation and DDP).
        """
        raise NotImplementedError(f"{type(self).__name__} sets has_custom_step but defines no training_step")

    def pretraining(self, train: Dataset, run_steps: int) -> list[tuple["GenerativeModel", dict[str, Any]]]:
        """Parts of this model that `genlab.fit` trains first, each by a fit of its own on the
        training split with the given options (max_steps, batch_size, lr, ...), at the start of a
        fresh run and before `initialize_from_data`: the first stage of a two-stage model (e.g. the
        autoencoder of a latent model). run_steps: the run's own max_steps, which a stage may
        follow. Return [] once they are trained (a second fit, a resumed run). The default: none."""
        return []

    def initialize_from_data(self, train: Dataset, generator: torch.Generator) -> None:
        """Data-dependent initialisation (e.g. VampPrior pseudo-inputs, ActNorm statistics), called by
        `genlab.fit` at the start of a fresh run, before the optimizers and the EMA copy exist.

        Runs `initialize(train, generator)`. Models that set `initializes_once` keep an
        `initialized_from_data` buffer and run it once per model, so the choice survives save, load
        and resume, and a second fit on the same model keeps it; the others (whose initialisation
        gives the same result every time, e.g. counting class frequencies) run it at every fresh fit.
        Draw from `generator` only (seeded by the run's seed, so every DDP process makes the same
        choice).
        """
        if self.initializes_once:
            if bool(self.initialized_from_data):
                return
            self.initialize(train, generator)
            self.initialized_from_data.fill_(1)
        else:
            self.initialize(train, generator)

    def initialize(self, train: Dataset, generator: torch.Generator) -> None:
        """The data-dependent initialisation itself; `initialize_from_data` is its only caller and
        decides whether it runs once (`initializes_once`). The default does nothing."""

    def on_fit_end(self, train: Dataset, generator: torch.Generator) -> None:
        """Work after the last optimizer step and before the final checkpoint and samples, e.g. fitting
        a density to an autoencoder's latent codes. `genlab.fit` calls it on the trained model and on
        its EMA copy, each with a generator seeded by the run's seed; what it fits must live in
        parameters or buffers so that the checkpoint and `genlab.load` keep it. The default does nothing.
        """

    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """Optimizers by name. One AdamW over all parameters unless a model needs more."""
        return {"model": torch.optim.AdamW(self.parameters(), lr=lr, weight_decay=weight_decay)}

    # -- generation and likelihood -------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Draw n samples (n, *spec.shape) in the data's space and value range."""
        raise NotImplementedError

    def log_prob(self, x: Tensor) -> Tensor:
        """Exact log-density log p(x) per sample, (B,), in nats, where the family defines it."""
        raise NotImplementedError(f"{type(self).__name__} has no exact log-likelihood; see its bound instead")

    def nll_bound(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """An upper bound on -log p(x) per sample in nats, (B,), for models without an exact one."""
        raise NotImplementedError(f"{type(self).__name__} defines no likelihood bound")

    def likelihood_kind(self) -> str:
        """What `log_prob` / `nll_bound` measure, so that evaluation reports them in the right units:

        "dequantized": a density on dequantized discrete data (bits/dim get the dequantization
            correction of `genlab.metrics.bits_per_dim` with levels=spec.levels);
        "discrete": a probability of the discrete values themselves (bits/dim need no correction);
        "continuous": a density on continuous data (nats; bits/dim = nats / (D ln 2));
        "none": not a likelihood at all (e.g. a Bernoulli cross-entropy on grey levels).
        """
        return "continuous" if self.spec.levels is None else "dequantized"

    def likelihood_measures(self) -> list[LikelihoodMeasure]:
        """Likelihood-like measures besides `log_prob` / `nll_bound` that evaluation reports (see
        `LikelihoodMeasure`), e.g. a diffusion model's ODE likelihood; the default offers none."""
        return []

    def trajectory(self, generator: torch.Generator) -> Trajectory | None:
        """The path from noise to data a picture of this family shows (a diffusion sampler's), or None.
        `genlab.fit` draws it as trajectory.png in the run directory after the final samples (the
        pictures are viz's: a model only exposes what they need). The default has none."""
        return None

    # -- helpers --------------------------------------------------------------------------
    @property
    def device(self) -> torch.device:
        for p in self.parameters():
            return p.device
        for b in self.buffers():
            return b.device
        return torch.device("cpu")

    def check_labels(self, cond: Tensor | int | Sequence[int] | None, n: int, num_classes: int | None) -> Tensor | None:
        """`cond` as (n,) long labels on the model's device (one label stands for all n); None stays
        None. Raises ConfigError naming the fix when the model is unconditional (num_classes None) or
        a label lies outside [0, num_classes)."""
        if cond is None:
            return None
        if num_classes is None:
            raise ConfigError(f"{self.name or type(self).__name__} is unconditional; pass cond=None (train with class_conditional=true for labels)")
        cond = torch.as_tensor(cond, device=self.device).long().reshape(-1)
        if cond.numel() == 1:
            cond = cond.expand(n)
        if cond.numel() != n or cond.min() < 0 or cond.max() >= num_classes:
            raise ConfigError(f"cond must hold {n} labels in [0, {num_classes - 1}] (or one label for all), got {cond.tolist()[:8]}")
        return cond

    def describe(self) -> dict[str, Any]:
        n_params = sum(p.numel() for p in self.parameters())
        return {"model": self.name, "parameters": n_params, "config": self.config.to_dict(), "data": self.spec.name}
