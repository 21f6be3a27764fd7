"""The GAN model: a generator G, a discriminator D, a swappable adversarial loss, and the one
training step every variant shares (Goodfellow et al. 2014, Algorithm 1, with its later options).

Notation: x ~ P data (B, *spec.shape), z ~ N(0, I) latents (B, latent_dim), G(z) ~ Q samples,
D(x) (B,) the discriminator's raw score. Both nets work in a "model space": images mapped from
their value range to [-1, 1] (the generator ends in tanh), vectors and tables standardised with
the training split's mean and standard deviation.

The step (`GAN.training_step`), one call per engine step and real batch:

1. discriminator: fakes G(z) from fresh z (no gradient into G), optional instance noise on both
   inputs, the loss's D term, plus the weighted penalties of D's regularisers (the loss's own, as
   WGAN-GP's gradient penalty, and the config's R1 and ProGAN drift), one step of D's optimizer,
   then the regularisers' projections (WGAN's weight clipping);
2. generator, on every n_critic-th engine step: fresh z, the loss's G term (or feature matching),
   one step of G's optimizer, with D's parameters frozen.

The step never asks which loss or architecture it trains: losses and their regularisers come from
`losses.LOSS_REGISTRY`, networks from `nets.NETWORK_KINDS`.

So one engine step is one critic iteration on a fresh real batch, as in Arjovsky et al. (2017,
Algorithm 1) and Gulrajani et al. (2017, Algorithm 1); `max_steps` counts critic iterations and G
takes max_steps / n_critic steps. Each player has its own optimizer and learning rate (two
time-scale update rule, Heusel et al. 2017). The engine's learning-rate schedule advances per
optimizer step, so G's runs n_critic times slower than D's; GAN presets keep it constant.

EMA of the generator: the engine keeps an exponential moving average of the whole model
(TrainConfig.ema_decay; 0 turns it off) and samples from that copy (`Run.sampling_model`, the
sample grids, and `genlab.load`, which reads ema.safetensors). Its generator is the average of
G's weights (Yazici et al. 2019); the copy's D is averaged too and unused. The average advances at
every engine step, so with n_critic > 1 it decays by ema_decay^n_critic per generator update.
Batch-norm statistics are averaged like weights; sampling runs in eval mode on them.
"""

from __future__ import annotations

import dataclasses
import math
import warnings
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec
from genlab.errors import ConfigError, TrainingWarning
from genlab.models.base import GenerativeModel, Loss
from genlab.models.gan.losses import (
    F_DIVERGENCES,
    LOSSES,
    AdversarialLoss,
    DiscriminatorRegularizer,
    DriftPenalty,
    R1Penalty,
    build_loss,
)
from genlab.models.gan.nets import (
    NETWORK_KINDS,
    Discriminator,
    DiscriminatorHead,
    Generator,
    TrunkOptions,
    apply_spectral_norm,
    auto_network_kind,
)
from genlab.nn.builders import build_encoder, is_large_image
from genlab.nn.distributions import sample_standard_normal
from genlab.nn.frozen import frozen
from genlab.nn.presets import SIZE_PRESETS, size_config
from genlab.nn.standardize import Standardizer
from genlab.registry import register

OPTIMIZERS = ("adam", "rmsprop")
# the convolutional nets of each size preset (genlab.nn.presets), for images of side >= 16
# (the CPU generator twice as wide as its discriminator: on MNIST in the same 10 minutes of 2 cores
# it drew more recognisable digits than equal widths, README "Images at real size")
GAN_PRESETS = {"cpu": {"channels": (16, 32, 64), "generator_channels": (32, 64, 128)}, "paper": {"channels": (64, 128)}}
DISCRIMINATOR_NORMS = ("auto", "batch", "layer", "none")
GENERATOR_NORMS = ("batch", "none")
SPECTRAL_NORMS = ("none", "discriminator", "both")

# -- training diagnostics ----------------------------------------------------------------------------
CHECK_EVERY = 100  # steps between reads of the diagnostics (each read is one device sync)
WARN_EVERY = 1000  # at most one warning per condition in this many steps
WARMUP_STEPS = 500  # no warnings before: an untrained G is neither diverse nor close to the data
OVERPOWER_ACCURACY = 0.99  # D "overpowers" G when it classifies at least this share right on both sides
COLLAPSE_DIVERSITY = 0.2  # samples "collapse" below this ratio of mean pairwise distances, fake / real
WARN_SHARE = 0.9  # a condition is reported when it held in this share of the steps checked
GROWTH_RESOLUTION = 100  # progressive growing records its progress in 1/100 of a phase


class GANTrainingWarning(TrainingWarning):
    """A GAN's training has gone wrong in a known way (D overpowers G, samples collapse)."""


@dataclasses.dataclass
class GANConfig(Config):
    """Configuration of a GAN.

    loss: the adversarial loss, a name in `genlab.models.gan.losses.LOSSES`: "minimax",
        "non-saturating", "least-squares", "wasserstein" (weight clipping), "wasserstein-gp"
        (gradient penalty), "hinge" or "f-gan".
    divergence: f-gan only: "kl", "reverse-kl", "jensen-shannon", "pearson", "squared-hellinger".
    ls_targets: least-squares only: (a, b, c), the fake and real codes for D and the code G aims
        for (Mao et al. 2017); (-1, 1, 0) minimises the Pearson chi^2 of (P + Q) against 2Q.
    weight_clip: wasserstein only: the clipping bound c (Arjovsky et al. 2017: 0.01).
    gp_weight: wasserstein-gp only: lambda of the gradient penalty; None: 10 for images (Gulrajani
        et al. 2017), 0.1 for vectors and tables (their toy experiments: on standardised
        low-dimensional data a penalty of 10 dominates the critic's loss, which then resolves
        narrow modes only slowly).
    r1_gamma: gamma of the R1 penalty gamma / 2 E_P ||grad_x D(x)||^2 on the real data (Mescheder
        et al. 2018, eq. 9), with any loss; 0 turns it off.
    drift_weight: epsilon_drift of ProGAN's E D(x)^2 term, which keeps the critic's outputs near 0
        (Karras et al. 2018, appendix A.1: 0.001); 0 turns it off.
    architecture: a name in `genlab.models.gan.nets.NETWORK_KINDS`: "mlp" (vectors, tables, or
        flattened images), "dcgan" (images: strided convolutions), "progressive" (images:
        progressive growing), or "auto" (dcgan for images, mlp otherwise).
    latent_dim: size of z ~ N(0, I); None: 64 for images, the data's dimension for vectors and
        tables (as Gulrajani et al.'s toy experiments).
    hidden: MLP widths of both nets.
    preset: "auto", "cpu" or "paper", the size of the convolutional nets on images of side >= 16
        (`genlab.nn.presets`): "cpu" widths (16, 32, 64) for D and (32, 64, 128) for G, "paper"
        (64, 128) for both.
    channels: convolution widths of D from full resolution down; G uses them reversed (None: the preset's).
    generator_channels: G's own widths, from full resolution down like `channels` (None: the preset's,
        else `channels`): a generator wider than its discriminator.
    generator_norm: dcgan G: "batch" (DCGAN) or "none".
    discriminator_norm: dcgan and mlp D: "batch", "layer" (GroupNorm with one group), "none", or
        "auto": batch for dcgan unless a penalty on D is per sample (wasserstein-gp's gradient
        penalty, R1: batch norm couples the samples, Gulrajani et al. 2017, sec. 4) or D is
        spectrally normalised; none for the MLP.
    spectral_norm: "none", "discriminator" (Miyato et al. 2018) or "both" (SAGAN, Zhang et al. 2019).
    self_attention: dcgan only: SAGAN's self-attention block in both nets.
    class_conditional: G takes a label embedding next to z (Mirza & Osindero 2014) and D the
        projection term (Miyato & Koyama 2018); sampling draws labels from the training
        frequencies unless given.
    embedding_dim: size of G's label embedding.
    n_critic: discriminator steps per generator step (WGAN: 5).
    optimizer: "adam" or "rmsprop" (WGAN with clipping).
    lr_generator, lr_discriminator: learning rates of the two players (TTUR, Heusel et al. 2017);
        None takes the training lr.
    betas: Adam's (beta1, beta2) for both players (DCGAN: (0.5, 0.999); WGAN-GP: (0.5, 0.9)).
    instance_noise: standard deviation (in model space) of the Gaussian noise added to D's inputs,
        real and fake (Sonderby et al. 2017; Arjovsky & Bottou 2017); 0 turns it off.
    instance_noise_steps: the noise decays linearly to 0 over this many steps; 0 keeps it constant.
    truncation: sampling only: draw z from N(0, I) truncated to [-t, t] per coordinate (Brock et
        al. 2019), trading diversity for fidelity; None draws the full N(0, I).
    feature_matching: G matches the mean of D's last features on real and fake batches,
        ||E phi(x) - E phi(G(z))||^2, instead of the loss's G term (Salimans et al. 2016, sec. 3.1).
    minibatch_discrimination: number of kernels of minibatch discrimination in D (Salimans et al.
        2016, sec. 3.2, kernel dimension 5); 0 turns it off.
    grow_steps: progressive only: steps of each phase; the first resolution trains grow_steps
        steps, then each next one fades in over grow_steps and stabilises for grow_steps.
    """

    loss: str = "non-saturating"
    divergence: str = "jensen-shannon"
    ls_targets: tuple[float, float, float] = (0.0, 1.0, 1.0)
    weight_clip: float = 0.01
    gp_weight: float | None = None
    r1_gamma: float = 0.0
    drift_weight: float = 0.0
    architecture: str = "mlp"
    latent_dim: int | None = None
    hidden: tuple[int, ...] = (256, 256, 256)
    # runs saved before `generator_channels` existed built G with D's widths
    added_fields: ClassVar[dict[str, Any]] = {"generator_channels": lambda saved: saved.get("channels")}

    preset: str = "auto"
    channels: tuple[int, ...] | None = None
    generator_channels: tuple[int, ...] | None = None
    generator_norm: str = "batch"
    discriminator_norm: str = "auto"
    spectral_norm: str = "none"
    self_attention: bool = False
    class_conditional: bool = False
    embedding_dim: int = 16
    n_critic: int | None = 1
    optimizer: str = "adam"
    lr_generator: float | None = None
    lr_discriminator: float | None = None
    betas: tuple[float, float] = (0.5, 0.999)
    instance_noise: float = 0.0
    instance_noise_steps: int = 0
    truncation: float | None = None
    feature_matching: bool = False
    minibatch_discrimination: int = 0
    grow_steps: int = 1000

    def validate(self) -> None:
        self._choice("loss", LOSSES)
        self._choice("divergence", tuple(F_DIVERGENCES))
        self._choice("architecture", ("auto", *NETWORK_KINDS))
        self._choice("generator_norm", GENERATOR_NORMS)
        self._choice("discriminator_norm", DISCRIMINATOR_NORMS)
        self._choice("spectral_norm", SPECTRAL_NORMS)
        self._choice("optimizer", OPTIMIZERS)
        self._choice("preset", SIZE_PRESETS)
        self._positive("weight_clip", "embedding_dim", "grow_steps")
        if self.n_critic is not None:  # None: the size preset's (WGAN-GP)
            self._positive("n_critic")
        self._positive("drift_weight", "r1_gamma", "instance_noise", "instance_noise_steps", "minibatch_discrimination", allow_zero=True)
        for field in ("lr_generator", "lr_discriminator", "truncation", "gp_weight", "latent_dim"):
            if getattr(self, field) is not None:
                self._positive(field)
        self.ls_targets = tuple(float(v) for v in self.ls_targets)
        if len(self.ls_targets) != 3 or self.ls_targets[0] == self.ls_targets[1]:
            raise ConfigError(f"GANConfig.ls_targets={self.ls_targets!r} must be (a, b, c) with fake code a != real code b, e.g. (0, 1, 1)")
        self.betas = tuple(float(v) for v in self.betas)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"GANConfig.betas={self.betas!r} must be two numbers in [0, 1), e.g. (0.5, 0.999)")
        for field in ("hidden", *(f for f in ("channels", "generator_channels") if getattr(self, f) is not None)):
            widths = tuple(getattr(self, field))
            if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
                raise ConfigError(f"GANConfig.{field}={widths!r} must be positive integer widths, e.g. (64, 128)")
            setattr(self, field, widths)
        per_sample = [r.term for r in self.regularizers(self.build_loss(image=True)) if r.per_sample]
        if per_sample and self.discriminator_norm == "batch":
            raise ConfigError(
                f"{type(self).__name__}.discriminator_norm='batch' with loss={self.loss!r}, r1_gamma={self.r1_gamma}: "
                f"the penalty {', '.join(per_sample)} needs each sample's output to depend on that sample alone, and batch "
                "norm mixes the samples (Gulrajani et al. 2017, sec. 4); use discriminator_norm='layer' or 'none'"
            )

    def build_loss(self, *, image: bool) -> AdversarialLoss:
        """The adversarial loss of `loss` with this config's settings; image: the data are images
        (gp_weight's default depends on it)."""
        gp_weight = self.gp_weight if self.gp_weight is not None else (10.0 if image else 0.1)
        return build_loss(self.loss, ls_targets=self.ls_targets, divergence=self.divergence, weight_clip=self.weight_clip, gp_weight=gp_weight)

    def regularizers(self, loss: AdversarialLoss) -> tuple[DiscriminatorRegularizer, ...]:
        """D's regularisers: the loss's own (its Lipschitz constraint), then R1 and drift where set."""
        extra: list[DiscriminatorRegularizer] = []
        if self.r1_gamma > 0:
            extra.append(R1Penalty(self.r1_gamma))
        if self.drift_weight > 0:
            extra.append(DriftPenalty(self.drift_weight))
        return (*loss.regularizers(), *extra)


@register("gan", GANConfig, family="gan", summary="GAN (Goodfellow et al. 2014): MLP nets, non-saturating loss; any loss and architecture by config")
class GAN(GenerativeModel, Standardizer):
    """Generative adversarial network: G(z) with z ~ N(0, I), trained against a discriminator D.

    Sampling uses `self.generator`; after `genlab.fit` the sampling model (`run.sampling_model`,
    `genlab.load(run)`) is the engine's EMA copy, whose generator holds the averaged weights.
    There is no likelihood (`likelihood_kind() == "none"`); evaluate with FID, precision/recall,
    or, on the Gaussian-mixture toys, the number of modes covered.

    >>> import torch, genlab
    >>> model = genlab.create("gan", data=genlab.data.load("8gaussians", n=256), hidden=(32,), latent_dim=4)
    >>> model.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """

    initializes_once = True

    config: GANConfig
    has_custom_step = True
    train_defaults: dict[str, Any] = {"max_steps": 5000, "batch_size": 128, "lr": 2e-4, "ema_decay": 0.999}
    cpu_train_defaults: dict[str, Any] = {"max_steps": 2400, "batch_size": 64, "ema_decay": 0.995}
    # vectors and tables (MLP nets) replace these: small nets on low-dimensional data take a larger
    # learning rate and need more steps to resolve every mode of a mixture
    vector_train_defaults: dict[str, Any] = {"max_steps": 20000, "batch_size": 256, "lr": 1e-3}
    # the config fields each size preset fills (`genlab.nn.presets`)
    size_presets: dict[str, dict[str, Any]] = GAN_PRESETS

    def __init__(self, config: GANConfig, spec: DataSpec) -> None:
        config = size_config(config, type(self).size_presets, sized_data=is_large_image(spec))
        super().__init__(config, spec)
        self.architecture = self._resolve_architecture()
        self.network = NETWORK_KINDS[self.architecture]
        if config.class_conditional and not spec.num_classes:
            raise ConfigError(f"class_conditional=True needs labelled data; {spec.name!r} has no classes")
        self.num_classes = spec.num_classes if config.class_conditional else None
        is_image = spec.kind == "image"
        self.latent_dim = config.latent_dim or (64 if is_image else spec.dim)
        if not is_image:  # an instance attribute: `fit` reads model.train_defaults
            self.train_defaults = {**type(self).train_defaults, **type(self).vector_train_defaults}
        self.adversarial_loss = config.build_loss(image=is_image)
        self.regularizers = config.regularizers(self.adversarial_loss)
        self.generator = self._build_generator()
        self.discriminator = self._build_discriminator()
        if config.spectral_norm in ("discriminator", "both"):
            apply_spectral_norm(self.discriminator)
        if config.spectral_norm == "both":
            apply_spectral_norm(self.generator)

        if spec.kind != "image":
            self.register_standardization(torch.zeros(spec.shape), torch.ones(spec.shape))
        if self.num_classes:
            self.register_buffer("class_prior", torch.full((self.num_classes,), 1.0 / self.num_classes))
        if self.network.progressive:
            # booleans, because the engine's EMA copy keeps a boolean that turned True (a float would
            # lag 1 / (1 - decay) steps behind, an integer would never move): milestone i is
            # "training reached step i * grow_steps / GROWTH_RESOLUTION"
            self.growth_granularity = max(1, config.grow_steps // GROWTH_RESOLUTION)
            milestones = math.ceil(self._growth_schedule_length() / self.growth_granularity) + 1
            self.register_buffer("growth_milestones", torch.zeros(milestones, dtype=torch.bool))
        self.monitor = TrainingMonitor()

    # -- construction -------------------------------------------------------------------------------
    def _resolve_architecture(self) -> str:
        arch = self.config.architecture
        is_image = self.spec.kind == "image" and len(self.spec.shape) == 3
        if arch == "auto":
            arch = auto_network_kind(image=is_image)
        if NETWORK_KINDS[arch].images_only and not is_image:
            others = " or ".join(f"architecture={k.name!r}" for k in NETWORK_KINDS.values() if not k.images_only)
            raise ConfigError(
                f"architecture={arch!r} needs images of shape (C, H, W); {self.spec.name!r} is {self.spec.kind} data "
                f"of shape {self.spec.shape}; use {others}"
            )
        if self.config.self_attention and not NETWORK_KINDS[arch].self_attention:
            with_attention = [k.name for k in NETWORK_KINDS.values() if k.self_attention]
            raise ConfigError(f"self_attention=True needs architecture={' or '.join(map(repr, with_attention))} (got {arch!r})")
        return arch

    def _discriminator_norm(self) -> str:
        norm = self.config.discriminator_norm
        if norm != "auto":
            return norm
        per_sample = any(r.per_sample for r in self.regularizers)
        if not self.network.batch_norm_discriminator or per_sample or self.config.spectral_norm != "none":
            return "none"
        return "batch"

    def _trunk_options(self) -> TrunkOptions:
        cfg = self.config
        return TrunkOptions(
            hidden=cfg.hidden, channels=cfg.channels, generator_channels=cfg.generator_channels, generator_norm=cfg.generator_norm,
            discriminator_norm=self._discriminator_norm(), self_attention=cfg.self_attention,
        )

    def _build_generator(self) -> Generator:
        cfg = self.config
        in_dim = self.latent_dim + (cfg.embedding_dim if self.num_classes else 0)
        trunk = self.network.generator_trunk(in_dim, self.spec.shape, self._trunk_options())
        tanh = self.spec.kind == "image" and self.network.tanh
        return Generator(trunk, num_classes=self.num_classes, embedding_dim=cfg.embedding_dim, tanh=tanh)

    def _build_discriminator(self) -> Discriminator:
        trunk = self.network.discriminator_trunk(self.spec.shape, self._trunk_options())
        head = DiscriminatorHead(trunk.out_features, num_classes=self.num_classes, minibatch_kernels=self.config.minibatch_discrimination)
        return Discriminator(trunk, head)

    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """Two optimizers, "generator" and "discriminator", with their own learning rates (TTUR)."""
        cfg = self.config
        lrs = {"generator": cfg.lr_generator or lr, "discriminator": cfg.lr_discriminator or lr}
        modules = {"generator": self.generator, "discriminator": self.discriminator}
        if cfg.optimizer == "rmsprop":
            return {k: torch.optim.RMSprop(modules[k].parameters(), lr=lrs[k], weight_decay=weight_decay) for k in modules}
        return {k: torch.optim.Adam(modules[k].parameters(), lr=lrs[k], betas=cfg.betas, weight_decay=weight_decay) for k in modules}

    def initialize(self, train, generator: torch.Generator) -> None:
        """Vectors and tables: the training split's per-dimension mean and standard deviation, which
        map the data to model space; conditional models: the class frequencies p(y)."""
        x, labels = train.tensors()
        with torch.no_grad():
            if self.spec.kind != "image":
                self.fit_standardization(x.float())
            if self.num_classes:
                if labels is None:
                    raise ConfigError("class_conditional=True but the training data has no labels; load labelled data")
                counts = torch.bincount(labels.long().cpu(), minlength=self.num_classes).float()
                self.class_prior.copy_(counts / counts.sum())

    # -- spaces ---------------------------------------------------------------------------------------
    def to_model_space(self, x: Tensor) -> Tensor:
        """Images: value_range -> [-1, 1]; vectors and tables: (x - mean) / std."""
        if self.spec.kind == "image":
            low, high = self.spec.value_range
            return 2.0 * (x - low) / (high - low) - 1.0
        return self.standardize(x)

    def from_model_space(self, x: Tensor) -> Tensor:
        """The inverse of `to_model_space`, clamped to the data's value range where it is finite."""
        low, high = self.spec.value_range
        if self.spec.kind == "image":
            x = low + (x.clamp(-1.0, 1.0) + 1.0) * (high - low) / 2.0
        else:
            x = self.unstandardize(x)
        if not (math.isfinite(low) or math.isfinite(high)):
            return x
        return x.clamp(low if math.isfinite(low) else None, high if math.isfinite(high) else None)

    # -- latents and labels ----------------------------------------------------------------------------
    def latent(self, n: int, generator: torch.Generator | None = None, truncation: float | None = None) -> Tensor:
        """z (n, latent_dim): N(0, I), or with `truncation` t each coordinate from N(0, 1) truncated
        to [-t, t] by inverse CDF, z = Phi^-1(U(Phi(-t), Phi(t))) (Brock et al. 2019, sec. 3.1)."""
        shape = (n, self.latent_dim)
        if truncation is None:
            return sample_standard_normal(shape, generator=generator, device=self.device)
        device = self.device if generator is None else generator.device
        u = torch.rand(shape, generator=generator, device=device, dtype=torch.float64)
        low = torch.special.ndtr(torch.tensor(-truncation, dtype=torch.float64))
        z = torch.special.ndtri(low + u * (1.0 - 2.0 * low))
        return z.clamp(-truncation, truncation).float().to(self.device)

    def sample_labels(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor | None:
        """`cond` checked and expanded to (n,), or y ~ p(y) (the training frequencies) for a
        conditional model given none; None for an unconditional model."""
        if cond is not None or self.num_classes is None:
            return self.check_labels(cond, n, self.num_classes)
        device = self.device if generator is None else generator.device
        return torch.multinomial(self.class_prior.to(device), n, replacement=True, generator=generator).to(self.device)

    # -- progressive growing ---------------------------------------------------------------------------
    def _growth_schedule_length(self) -> int:
        levels = len(self.generator.trunk.plan)
        return (2 * levels - 1) * self.config.grow_steps

    def growth_at(self, step: int) -> dict[str, Any]:
        """(level, alpha) at training step `step` (Karras et al. 2018, sec. 2): the first level trains
        grow_steps steps; each next one fades in (alpha 0 -> 1) over grow_steps, then stabilises
        (alpha = 1) for grow_steps. {} for the other architectures."""
        if not self.network.progressive:
            return {}
        phase = self.config.grow_steps
        last = len(self.generator.trunk.plan) - 1
        if step < phase:
            return {"level": 0, "alpha": 1.0}
        k, r = divmod(step - phase, 2 * phase)
        if k + 1 > last:
            return {"level": last, "alpha": 1.0}
        return {"level": k + 1, "alpha": min(1.0, r / phase)}

    def current_growth(self) -> dict[str, Any]:
        """The growth reached by training, read from the recorded milestones ({} if not progressive)."""
        if not self.network.progressive:
            return {}
        reached = int(self.growth_milestones.sum())
        return self.growth_at(max(0, reached - 1) * self.growth_granularity)

    def _record_growth(self, step: int) -> None:
        if self.network.progressive:
            self.growth_milestones[: step // self.growth_granularity + 1] = True

    def real_at_growth(self, x: Tensor, level: int | None = None, alpha: float = 1.0) -> Tensor:
        """Real images at the current resolution (B, C, h_level, w_level): average-pooled, and during
        a fade-in blended with their upsampled lower-resolution version, as the fakes are
        (Karras et al. 2018, appendix A.1). x unchanged for the other architectures."""
        if level is None:
            return x
        plan = self.generator.trunk.plan
        x_level = F.adaptive_avg_pool2d(x, plan[level])
        if level == 0 or alpha >= 1.0:
            return x_level
        coarse = F.interpolate(F.adaptive_avg_pool2d(x_level, plan[level - 1]), size=plan[level], mode="nearest")
        return coarse + alpha * (x_level - coarse)

    # -- the players ----------------------------------------------------------------------------------
    def generate(self, z: Tensor, y: Tensor | None = None, growth: dict[str, Any] | None = None) -> Tensor:
        """G(z, y) in model space, at the growth's resolution for progressive nets."""
        return self.generator(z, y, **(growth or {}))

    def discriminate(self, x: Tensor, y: Tensor | None = None, growth: dict[str, Any] | None = None) -> Tensor:
        """D(x, y), (B,) raw scores."""
        return self.discriminator(x, y, **(growth or {}))

    @torch.no_grad()
    def realness(self, x: Tensor) -> Tensor:
        """How real the discriminator judges data-space samples x (B, *shape): its raw score D(x), (B,),
        higher = more real; for a class-conditional D the highest over the classes, max_y D(x, y); at
        the resolution training reached (ProGAN)."""
        growth = self.current_growth()
        real = self.real_at_growth(self.to_model_space(x.to(self.device)), **growth)
        if not self.num_classes:
            return self.discriminate(real, None, growth).float().reshape(len(x))
        per_class = [self.discriminate(real, torch.full((len(x),), y, dtype=torch.long, device=real.device), growth)
                     for y in range(self.num_classes)]
        return torch.stack(per_class, 1).float().reshape(len(x), -1).amax(1)

    @torch.no_grad()
    def _inversion_labels(self, target: Tensor) -> Tensor | None:
        """The class a conditional D judges most likely for model-space images, argmax_y D(x, y), (B,);
        None for an unconditional GAN."""
        if not self.num_classes:
            return None
        growth = self.current_growth()
        real = self.real_at_growth(target, **growth)
        return torch.stack([self.discriminate(real, torch.full((len(target),), y, dtype=torch.long, device=real.device),
                                              growth).reshape(len(target)) for y in range(self.num_classes)], 1).argmax(1)

    def fit_inverse_encoder(self, x: Tensor, steps: int = 1000, batch_size: int = 64, lr: float = 1e-3,
                            generator: torch.Generator | None = None) -> nn.Module:
        """f-AnoGAN's izi encoder (Schlegl et al. 2019): E: x -> z, trained on data-space samples x
        (N, *shape) with G frozen to minimise (1 / D) |x - G(E(x))|^2 by Adam, `steps` minibatches of
        `batch_size` drawn with `generator`. Returns E, a network (B, *shape) in model space -> (B,
        latent_dim), for `invert(..., encoder=E)`; G's weights are untouched. A conv net for images
        (two stride-2 levels, no residual blocks), an MLP for vectors."""
        target_all = self.to_model_space(x.float().to(self.device))
        labels_all = self._inversion_labels(target_all)
        growth = self.current_growth()
        encoder = build_encoder(self.spec, self.latent_dim, channels=(32, 64), blocks_per_level=0).to(self.device)
        optimizer = torch.optim.Adam(encoder.parameters(), lr=lr)
        device = self.device if generator is None else generator.device
        encoder.train()
        with frozen(self.generator), torch.enable_grad():
            for _ in range(steps):
                rows = torch.randint(len(target_all), (min(batch_size, len(target_all)),), generator=generator, device=device)
                rows = rows.to(target_all.device)
                target = target_all[rows]
                labels = None if labels_all is None else labels_all[rows]
                made = self._full_size(self.generate(encoder(target), labels, growth), target)
                loss = (made - target).pow(2).mean()
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        return encoder.eval().requires_grad_(False)

    def invert(self, x: Tensor, steps: int = 100, lr: float = 0.05, generator: torch.Generator | None = None,
               encoder: nn.Module | None = None) -> Tensor:
        """AnoGAN's latent inversion (Schlegl et al. 2017): z* = argmin_z |to_model_space(x) - G(z)|^2 by
        Adam from z ~ N(0, I), or from z = E(x) given an encoder (`fit_inverse_encoder`; f-AnoGAN with
        steps=0), `steps` steps for the whole batch at once; returns G(z*) in the data's space,
        (B, *shape) (upsampled to x's size where a progressive generator has not grown to it). A
        class-conditional generator is inverted with the class it judges most likely, argmax_y D(x, y)."""
        target = self.to_model_space(x.to(self.device).float())
        labels = self._inversion_labels(target)
        growth = self.current_growth()
        if encoder is None:
            z = self.latent(len(x), generator)
        else:
            with torch.no_grad():
                z = encoder(target).reshape(len(x), self.latent_dim)
        if steps:
            z = z.detach().requires_grad_(True)
            optimizer = torch.optim.Adam([z], lr=lr)
            with frozen(self.generator), torch.enable_grad():
                for _ in range(steps):  # optimisation steps over the batch, not a loop over samples
                    made = self._full_size(self.generate(z, labels, growth), target)
                    loss = (made - target).pow(2).flatten(1).sum(1).sum()
                    optimizer.zero_grad(set_to_none=True)
                    loss.backward()
                    optimizer.step()
        with torch.no_grad():
            return self.from_model_space(self._full_size(self.generate(z, labels, growth), target))

    @staticmethod
    def _full_size(made: Tensor, target: Tensor) -> Tensor:
        if made.ndim == 4 and made.shape[-2:] != target.shape[-2:]:
            return F.interpolate(made, size=target.shape[-2:], mode="nearest")
        return made

    def instance_noise_std(self, step: int) -> float:
        """sigma_t = instance_noise * max(0, 1 - step / instance_noise_steps) (constant if steps = 0)."""
        cfg = self.config
        if cfg.instance_noise == 0.0:
            return 0.0
        if cfg.instance_noise_steps == 0:
            return cfg.instance_noise
        return cfg.instance_noise * max(0.0, 1.0 - step / cfg.instance_noise_steps)

    @staticmethod
    def _noisy(x: Tensor, std: float) -> Tensor:
        return x if std == 0.0 else x + std * torch.randn_like(x)

    def feature_matching_loss(self, real: Tensor, fake: Tensor, growth: dict[str, Any] | None = None) -> Tensor:
        """||E phi(x) - E phi(G(z))||_2^2 over D's last features phi (Salimans et al. 2016, sec. 3.1);
        the real features are constants."""
        with torch.no_grad():
            real_mean = self.discriminator.features(real, **(growth or {})).mean(0)
        fake_mean = self.discriminator.features(fake, **(growth or {})).mean(0)
        return (fake_mean.float() - real_mean.float()).pow(2).sum()

    # -- training ---------------------------------------------------------------------------------------
    def _batch_in_model_space(self, batch: Batch, growth: dict[str, Any]) -> tuple[Tensor, Tensor | None]:
        x = self.real_at_growth(self.to_model_space(batch.x), **growth)
        y = None
        if self.num_classes:
            if batch.y is None:
                raise ConfigError("class_conditional=True but the batch has no labels; train on labelled data")
            y = batch.y.long()
        return x, y

    def _discriminator_terms(self, real_out: Tensor, fake_out: Tensor, real: Tensor, fake: Tensor) -> dict[str, Tensor]:
        """Diagnostics (detached scalars): D's accuracy on each side, the fakes' diversity relative to
        the reals' (mean pairwise distance), and 0/1 flags for "D overpowers G" and "collapse"."""
        loss = self.adversarial_loss
        real_out, fake_out = real_out.detach().float(), fake_out.detach().float()
        real_says_real, fake_says_real = loss.real_decision(real_out), loss.real_decision(fake_out)
        critic = real_says_real is None
        if critic:  # split at the midpoint of the two means
            threshold = 0.5 * (real_out.mean() + fake_out.mean())
            real_says_real, fake_says_real = real_out > threshold, fake_out > threshold
        acc_real, acc_fake = real_says_real.float().mean(), 1.0 - fake_says_real.float().mean()
        diversity = _mean_pairwise_distance(fake.detach()) / _mean_pairwise_distance(real.detach()).clamp_min(1e-12)
        terms = {
            "d_acc_real": acc_real,
            "d_acc_fake": acc_fake,
            "diversity": diversity,
            "collapse": (diversity < COLLAPSE_DIVERSITY).float(),
        }
        if not critic:  # a critic that separates the two sets still gives G useful gradients (WGAN's point)
            terms["d_overpowers"] = ((acc_real >= OVERPOWER_ACCURACY) & (acc_fake >= OVERPOWER_ACCURACY)).float()
        terms.update(loss.estimates(real_out, fake_out))
        return terms

    def loss(self, batch: Batch) -> Loss:
        """Both players' losses on a batch without any update (the engine's validation):
        total = D's loss (without penalties), terms: g_loss and the diagnostics."""
        growth = self.current_growth()
        real, y = self._batch_in_model_space(batch, growth)
        fake = self.generate(self.latent(real.shape[0]), y, growth)
        real_out, fake_out = self.discriminate(real, y, growth), self.discriminate(fake, y, growth)
        d_loss = self.adversarial_loss.discriminator_loss(real_out.float(), fake_out.float())
        terms = {"g_loss": self.adversarial_loss.generator_loss(fake_out.float()).detach()}
        terms.update(self._discriminator_terms(real_out, fake_out, real, fake))
        return Loss(d_loss, terms)

    def training_step(self, batch: Batch, ctx) -> Loss:
        """One critic iteration, and a generator step on every n_critic-th call (see the module
        docstring). Returns Loss(total = D's loss with its penalties, terms = g_loss, penalties and
        diagnostics), and warns (GANTrainingWarning) when D overpowers G or the samples collapse."""
        cfg = self.config
        growth = self.growth_at(ctx.step)
        self._record_growth(ctx.step)
        real, y = self._batch_in_model_space(batch, growth)
        n = real.shape[0]
        noise_std = self.instance_noise_std(ctx.step)
        terms: dict[str, Tensor] = {}

        # Discriminator step.
        with ctx.autocast():
            with torch.no_grad():
                fake = self.generate(self.latent(n), y, growth)
            real_in, fake_in = self._noisy(real, noise_std), self._noisy(fake, noise_std)
        d_total, real_out, fake_out = self.critic_step(ctx, lambda v: self.discriminate(v, y, growth), real_in, fake_in, terms)

        # Generator step, with D frozen (no gradients accumulate in D's parameters).
        if (ctx.step + 1) % cfg.n_critic == 0:
            with frozen(self.discriminator):
                with ctx.autocast():
                    fake_g = self._noisy(self.generate(self.latent(n), y, growth), noise_std)
                    if cfg.feature_matching:
                        g_loss = self.feature_matching_loss(real_in, fake_g, growth)
                    else:
                        g_loss = self.adversarial_loss.generator_loss(self.discriminate(fake_g, y, growth).float())
                ctx.backward(g_loss)
                ctx.optimizer_step("generator")
        else:  # logged only: G's objective against the current D on this step's fakes
            g_loss = self.adversarial_loss.generator_loss(fake_out.detach().float())
        return self.step_result(ctx, d_total, g_loss, terms, (real_out, fake_out), (real, fake))

    def critic_step(self, ctx, critic, real_in: Tensor, fake_in: Tensor, terms: dict[str, Tensor]) -> tuple[Tensor, Tensor, Tensor]:
        """One optimizer step of D: the loss's D term on critic(real_in) and critic(fake_in) plus
        each regulariser's penalty (logged into `terms`), then the regularisers' after-step hooks.
        Returns (D's total loss, real scores, fake scores)."""
        with ctx.autocast():
            real_out, fake_out = critic(real_in), critic(fake_in)
            d_total = self.adversarial_loss.discriminator_loss(real_out.float(), fake_out.float())
            for regularizer in self.regularizers:
                penalty = regularizer.penalty(critic, real_in, fake_in, real_out)
                if penalty is not None:
                    d_total = d_total + regularizer.weight * penalty
                    terms[regularizer.term] = penalty.detach()
        ctx.backward(d_total)
        ctx.optimizer_step("discriminator")
        for regularizer in self.regularizers:
            regularizer.after_step(self.discriminator)
        return d_total, real_out, fake_out

    def step_result(self, ctx, d_total: Tensor, g_loss: Tensor, terms: dict[str, Tensor], scores: tuple[Tensor, Tensor],
                    samples: tuple[Tensor, Tensor]) -> Loss:
        """A step's Loss: D's total, G's loss and the diagnostics of (real, fake) scores and samples,
        which the training monitor also reads (its warnings)."""
        terms["g_loss"] = g_loss.detach()
        terms.update(self._discriminator_terms(*scores, *samples))
        self.monitor.update(terms, ctx.step)
        return Loss(d_total.detach(), terms)

    # -- generation ------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """x = G(z, y), z ~ N(0, I) (truncated to [-t, t] with config.truncation), y from `cond` or
        p(y) for conditional models; (n, *spec.shape) in the data's space and value range.
        Progressive nets sample at the resolution training reached, upsampled (nearest) to full size."""
        labels = self.sample_labels(n, cond, generator)
        z = self.latent(n, generator, truncation=self.config.truncation)
        growth = self.current_growth()
        x = self.generate(z, labels, growth)
        if growth and tuple(x.shape[-2:]) != tuple(self.spec.shape[-2:]):
            x = F.interpolate(x, size=tuple(self.spec.shape[-2:]), mode="nearest")
        return self.from_model_space(x.float())

    def likelihood_kind(self) -> str:
        return "none"


def _mean_pairwise_distance(x: Tensor) -> Tensor:
    """Mean Euclidean distance over the B (B - 1) ordered pairs of distinct rows of x (B, ...)."""
    flat = x.flatten(1).float()
    b = flat.shape[0]
    if b < 2:
        return flat.new_zeros(())
    # the direct difference, not the matmul expansion |a|^2 + |b|^2 - 2ab, whose rounding gives
    # identical rows a distance of order sqrt(eps |a|^2) and a collapsed generator some "diversity"
    return torch.cdist(flat, flat, compute_mode="donot_use_mm_for_euclid_dist").sum() / (b * (b - 1))


class TrainingMonitor:
    """Counts the steps on which "d_overpowers" and "collapse" held; every CHECK_EVERY steps, after
    WARMUP_STEPS, warns (GANTrainingWarning) about a condition that held on at least WARN_SHARE of
    them, at most once per WARN_EVERY steps per condition. The flags are also logged as loss terms,
    so the progress bar and metrics.jsonl show their share per logging interval."""

    MESSAGES = {
        "d_overpowers": (
            "the discriminator overpowers the generator: it told real from fake on {share:.0%} of the last {n} steps "
            "(D accuracy >= {acc}); G's gradients vanish. Try loss='non-saturating' or 'wasserstein-gp', a lower "
            "lr_discriminator, instance_noise=0.1, or spectral_norm='discriminator'"
        ),
        "collapse": (
            "the samples collapse: on {share:.0%} of the last {n} steps their mean pairwise distance was below {div} of the "
            "data's (mode collapse). Try minibatch_discrimination=50, feature_matching=true, loss='wasserstein-gp', or n_critic=5"
        ),
    }

    def __init__(self) -> None:
        self.counts: dict[str, Tensor | float] = {}
        self.steps = 0
        self.last_warned: dict[str, int] = {}

    def update(self, terms: dict[str, Tensor], step: int) -> None:
        for key in self.MESSAGES:
            if key in terms:  # critics (Wasserstein losses) have no "d_overpowers"
                self.counts[key] = self.counts.get(key, 0.0) + terms[key]
        self.steps += 1
        if (step + 1) % CHECK_EVERY:
            return
        shares = {k: float(v) / self.steps for k, v in self.counts.items()}
        n = self.steps
        self.counts, self.steps = {}, 0
        if step + 1 < WARMUP_STEPS:
            return
        for key, share in shares.items():
            if share >= WARN_SHARE and step - self.last_warned.get(key, -WARN_EVERY) >= WARN_EVERY:
                self.last_warned[key] = step
                message = self.MESSAGES[key].format(share=share, n=n, acc=OVERPOWER_ACCURACY, div=COLLAPSE_DIVERSITY)
                warnings.warn(message, GANTrainingWarning, stacklevel=2)


# -- presets: GAN with the papers' defaults, one config subclass and one model subclass each -------------
# A preset's config has GANConfig's fields (so any of them can still be set) with other defaults;
# its model class only narrows the data it takes and replaces training defaults.
@dataclasses.dataclass
class DCGANConfig(GANConfig):
    """GANConfig with DCGAN's strided convolutions (Radford et al. 2016)."""

    architecture: str = "dcgan"


@register("dcgan", DCGANConfig, family="gan", summary="DCGAN (Radford et al. 2016): strided convolutions, batch norm, ReLU/tanh G, LeakyReLU D, Adam(2e-4, 0.5)")
class DCGAN(GAN):
    """DCGAN (Radford et al. 2016) on images: transposed-convolution G with batch norm and ReLU,
    strided-convolution D with LeakyReLU, Adam(2e-4, betas (0.5, 0.999))."""

    data_kinds = ("image",)


@dataclasses.dataclass
class WGANConfig(GANConfig):
    """GANConfig with WGAN's critic: weight clipping, 5 critic steps per generator step, RMSprop
    (Arjovsky et al. 2017, Algorithm 1)."""

    loss: str = "wasserstein"
    architecture: str = "auto"
    n_critic: int = 5
    optimizer: str = "rmsprop"


@register("wgan", WGANConfig, family="gan", summary="WGAN (Arjovsky et al. 2017): Wasserstein critic with weight clipping 0.01, n_critic 5, RMSprop 5e-5")
class WGAN(GAN):
    """WGAN (Arjovsky et al. 2017): the critic's learning rate 5e-5 of their Algorithm 1."""

    train_defaults = {**GAN.train_defaults, "lr": 5e-5}


@dataclasses.dataclass
class WGANGPConfig(GANConfig):
    """GANConfig with WGAN-GP's critic: gradient penalty, 5 critic steps per generator step,
    Adam betas (0.5, 0.9) (Gulrajani et al. 2017, Algorithm 1). n_critic None: the size preset's,
    5 (the paper's) but 2 for the "cpu" networks (`WGANGP.size_presets`)."""

    loss: str = "wasserstein-gp"
    architecture: str = "auto"
    n_critic: int | None = None
    betas: tuple[float, float] = (0.5, 0.9)


# WGAN-GP's CPU networks: the paper's 5 critic steps per generator step would leave a 10-minute CPU
# run a few hundred generator steps, too few to draw digits; with 2 (and Adam at 2e-4) the same
# budget gives the generator 2,000 (README, "Images at real size")
WGANGP_PRESETS = {"cpu": {"channels": (16, 32, 64), "n_critic": 2}, "paper": {**GAN_PRESETS["paper"], "n_critic": 5}}


@register("wgan-gp", WGANGPConfig, family="gan", summary="WGAN-GP (Gulrajani et al. 2017): Wasserstein critic with gradient penalty 10, n_critic 5, Adam(1e-4, 0.5, 0.9)")
class WGANGP(GAN):
    """WGAN-GP (Gulrajani et al. 2017): Adam(1e-4), and more steps than the other GANs, because
    `max_steps` counts critic iterations and G takes only one step in n_critic."""

    size_presets = WGANGP_PRESETS
    train_defaults = {**GAN.train_defaults, "lr": 1e-4, "max_steps": 15000}
    # 3,600 critic steps (1,800 of G): what fits the 10-minute CPU budget on 2 cores (README)
    cpu_train_defaults = {"max_steps": 3600, "batch_size": 64, "lr": 2e-4, "ema_decay": 0.995}


@dataclasses.dataclass
class LSGANConfig(GANConfig):
    """GANConfig with the least-squares loss and the 0-1 coding of Mao et al. (2017)'s experiments."""

    loss: str = "least-squares"
    ls_targets: tuple[float, float, float] = (0.0, 1.0, 1.0)
    architecture: str = "auto"


@register("lsgan", LSGANConfig, family="gan", summary="LSGAN (Mao et al. 2017): least-squares loss with (a, b, c) = (0, 1, 1)")
class LSGAN(GAN):
    """LSGAN (Mao et al. 2017): the least-squares loss, DCGAN nets for images, MLPs otherwise."""


@dataclasses.dataclass
class FGANConfig(GANConfig):
    """GANConfig with the f-GAN loss for the f-divergence `divergence` (Nowozin et al. 2016)."""

    loss: str = "f-gan"
    architecture: str = "auto"


@register("fgan", FGANConfig, family="gan", summary="f-GAN (Nowozin et al. 2016): variational f-divergence; divergence = kl, reverse-kl, jensen-shannon, pearson, squared-hellinger")
class FGAN(GAN):
    """f-GAN (Nowozin et al. 2016): D maximises a variational lower bound on D_f(P || Q)."""


@dataclasses.dataclass
class SAGANConfig(GANConfig):
    """GANConfig with SAGAN's choices (Zhang et al. 2019): self-attention in DCGAN nets, spectral
    norm in both, the hinge loss, TTUR learning rates (1e-4, 4e-4) and Adam betas (0, 0.9)."""

    loss: str = "hinge"
    architecture: str = "dcgan"
    spectral_norm: str = "both"
    self_attention: bool = True
    lr_generator: float | None = 1e-4
    lr_discriminator: float | None = 4e-4
    betas: tuple[float, float] = (0.0, 0.9)


@register("sagan", SAGANConfig, family="gan", summary="SAGAN (Zhang et al. 2019): self-attention, spectral norm in G and D, hinge loss, TTUR (1e-4, 4e-4), Adam(0, 0.9)")
class SAGAN(GAN):
    """SAGAN (Zhang et al. 2019) on images."""

    data_kinds = ("image",)


@dataclasses.dataclass
class CGANConfig(GANConfig):
    """GANConfig with class conditioning in both nets."""

    architecture: str = "auto"
    class_conditional: bool = True


@register("cgan", CGANConfig, family="gan", summary="Conditional GAN: label embedding in G (Mirza & Osindero 2014), projection discriminator (Miyato & Koyama 2018)")
class CGAN(GAN):
    """Conditional GAN: G(z, y) with a label embedding (Mirza & Osindero 2014), D(x, y) with the
    projection term (Miyato & Koyama 2018); labelled data."""


@dataclasses.dataclass
class ProGANConfig(GANConfig):
    """GANConfig with ProGAN's choices (Karras et al. 2018): progressive growing, the WGAN-GP loss
    with drift epsilon 0.001, Adam betas (0, 0.99)."""

    loss: str = "wasserstein-gp"
    drift_weight: float = 0.001
    architecture: str = "progressive"
    betas: tuple[float, float] = (0.0, 0.99)


@register("progan", ProGANConfig, family="gan", summary="Progressive growing (Karras et al. 2018): fade-in, pixel norm, minibatch stddev, WGAN-GP with drift, Adam(1e-3, 0, 0.99)")
class ProGAN(GAN):
    """Progressive growing of GANs (Karras et al. 2018) on images, Adam(1e-3)."""

    data_kinds = ("image",)
    train_defaults = {**GAN.train_defaults, "lr": 1e-3}
