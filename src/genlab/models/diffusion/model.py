"""Diffusion and score-based models: one model class that joins the four parts (Karras et al. 2022).

    forward process   `schedules.get_schedule(config.schedule)`   x_t = alpha(t) x_0 + sigma(t) eps
    objective         `objectives.DenoisingLoss(prediction, weighting)`, or EDM's preconditioning
    network           UNet / DiT for images, TimeConditionedMLP for vectors (`genlab.nn`)
    sampler           `samplers.get_sampler(config.sampler)`, called with the model's eps_fn

The model works in a normalised space: images are mapped from the data's value range to [-1, 1];
vectors and tables are standardised per dimension (statistics taken from the training split by
`initialize_from_data`). `sample` maps back. Registered presets differ only in their defaults:
"ddpm" (Ho et al. 2020), "ncsn" (Song & Ermon 2019), "score-sde" (Song et al. 2021), "edm"
(Karras et al. 2022) and "dit" (Peebles & Xie 2023), each a config subclass and a model subclass at
the end of this file (`NcsnConfig`, `NcsnModel`, ...).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, Callable

import torch
from torch import Tensor, nn

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec
from genlab.data.transforms import dequantize, quantize
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, LikelihoodMeasure, Loss, Trajectory
from genlab.models.diffusion.objectives import PREDICTIONS, WEIGHTINGS, DenoisingLoss, EDMPreconditioning, ddpm_vlb
from genlab.models.diffusion.samplers import SAMPLERS, SampleResult, get_sampler, ode_log_likelihood
from genlab.models.diffusion.schedules import SCHEDULES, DiscreteSchedule, NoiseSchedule, get_schedule, schedule_parameters
from genlab.nn.builders import CONV_MIN_SIDE, resolve_net
from genlab.nn.dit import DIT_PRESETS, DiT
from genlab.nn.presets import SIZE_PRESETS, resolve_size_preset
from genlab.nn.standardize import Standardizer
from genlab.nn.time_mlp import TimeConditionedMLP
from genlab.nn.unet import UNET_PRESETS, UNet
from genlab.registry import register

# the denoising networks by config word: builder(config, spec, num_classes) -> a module taking
# (x_t (B, *shape), noise level (B,), labels (B,) or None); "auto" picks unet for images, mlp otherwise
NETWORKS: dict[str, Callable[["DiffusionConfig", DataSpec, int | None], nn.Module]] = {}


def _network(name: str):
    def decorate(builder):
        NETWORKS[name] = builder
        return builder

    return decorate


def _image_shape(name: str, spec: DataSpec) -> tuple[int, int, int]:
    if spec.kind != "image" or len(spec.shape) != 3:
        raise ConfigError(f"net={name!r} needs images (C, H, W); data {spec.name!r} has shape {spec.shape}; use net='mlp'")
    return spec.shape


def network_preset(preset: str, net: str, spec: DataSpec) -> str:
    """The network preset that `preset` names for a `net` ("unet", "dit", "mlp") on `spec`.

    A size preset word (`genlab.nn.presets`) picks by the image's larger side: "cpu" takes the UNet
    "small" below 16 pixels and "cpu" from 16 on, the DiT "tiny"; "paper" takes "small" to 8, "mnist"
    to 28, "ddpm-cifar10" above, and the DiT "tiny" below 16, "DiT-S/2" from 16 on. Other words are
    network preset names and stand. An MLP has no presets: the word stands ("cpu" or "paper").
    """
    word = resolve_size_preset(preset)
    if word not in ("cpu", "paper") or net == "mlp" or len(spec.shape) != 3:
        return word  # a network name, or no network presets (the builder names what is wrong)
    side = max(spec.shape[1:])
    if net == "dit":
        return "tiny" if word == "cpu" or side < CONV_MIN_SIDE else "DiT-S/2"
    if word == "cpu":
        return "small" if side < CONV_MIN_SIDE else "cpu"
    return "small" if side <= 8 else "mnist" if side <= 28 else "ddpm-cifar10"


@_network("mlp")
def _mlp_network(config: "DiffusionConfig", spec: DataSpec, num_classes: int | None) -> nn.Module:
    """A time-conditioned MLP over the flattened sample, for vectors and tables (and tiny images)."""
    net = TimeConditionedMLP(dim=math.prod(spec.shape), hidden=config.hidden, num_classes=num_classes, embedding_dim=config.embedding_dim)
    return _Flatten(net, spec.shape)


@_network("unet")
def _unet_network(config: "DiffusionConfig", spec: DataSpec, num_classes: int | None) -> nn.Module:
    """The UNet of `config.preset`, a name of UNET_PRESETS (a size preset word is resolved first by
    `network_preset`)."""
    channels, height, width = _image_shape("unet", spec)
    preset = network_preset(config.preset, "unet", spec)
    if preset not in UNET_PRESETS:
        raise ConfigError(f"preset={preset!r} is not a UNet preset; choose one of {', '.join((*SIZE_PRESETS, *UNET_PRESETS))}")
    overrides: dict[str, Any] = {"image_size": (height, width) if height != width else height, "num_classes": num_classes}
    if config.dropout is not None:
        overrides["dropout"] = config.dropout
    return UNet.from_preset(preset, in_channels=channels, out_channels=channels, **overrides)


@_network("dit")
def _dit_network(config: "DiffusionConfig", spec: DataSpec, num_classes: int | None) -> nn.Module:
    """The DiT of `config.preset`, a name of DIT_PRESETS (a size preset word is resolved first by
    `network_preset`), on square images."""
    channels, height, width = _image_shape("dit", spec)
    preset = network_preset(config.preset, "dit", spec)
    if preset not in DIT_PRESETS:
        raise ConfigError(f"preset={preset!r} is not a DiT preset; choose one of {', '.join((*SIZE_PRESETS, *DIT_PRESETS))}")
    overrides: dict[str, Any] = {"num_classes": num_classes}
    if config.patch_size is not None:
        overrides["patch_size"] = config.patch_size
    else:  # the preset's patch, or the largest smaller one that tiles the image (25x25: 1)
        patch = DIT_PRESETS[preset]["patch_size"] if preset in DIT_PRESETS else 1
        while height % patch or width % patch:
            patch -= 1
        overrides["patch_size"] = patch
    if height != width:
        raise ConfigError(f"the DiT takes square images; data {spec.name!r} is {height}x{width}; use net='unet'")
    return DiT.from_preset(preset, input_size=height, in_channels=channels, **overrides)
# the exact trace costs one backward pass per dimension and Hutchinson's one per probe, so
# trace="auto" takes the exact one (no estimator noise) only up to this many dimensions
ODE_EXACT_TRACE_MAX_DIM = 16
# the tolerances of Song et al. 2021 for their likelihoods (their code's defaults)
ODE_LIKELIHOOD_TOLERANCE = 1e-5


@dataclasses.dataclass
class DiffusionConfig(Config):
    """Configuration of a diffusion model.

    schedule: the forward process: "linear", "cosine" (discrete DDPM, `steps` of them), "vp",
        "subvp", "ve" (score SDEs) or "edm" (sigma(t) = t with EDM's preconditioning).
    steps: number N of discrete steps of "linear"/"cosine".
    prediction: what the network predicts: "eps", "x0" or "v" (ignored for "edm", which predicts
        x0 through its preconditioning).
    weighting: the loss weighting over noise levels ("simple", "snr", "min_snr", "edm", "ncsn");
        see `objectives.loss_weight`.
    net: "auto" (UNet for images, MLP otherwise), "unet", "dit" or "mlp".
    preset: a size preset, "auto", "cpu" or "paper" (`genlab.nn.presets`), resolved by the image's
        side to a network preset (`network_preset`), or a UNet or DiT preset by name
        (`genlab.nn.UNET_PRESETS`, `DIT_PRESETS`).
    patch_size: DiT only: the patch side (None: the preset's, or the largest smaller one that tiles the image).
    hidden, embedding_dim: the MLP's widths and noise-level embedding size (vectors).
    dropout: UNet dropout (None: the preset's).
    sampler: default sampler of `sample`, a name of `samplers.SAMPLERS`, or "auto": DPM-Solver++(2M)
        for images (20 evaluations), SDE-DPM-Solver++ (50 evaluations) for vectors and tables, where
        the deterministic samplers smear the modes the network has learnt only roughly and fresh noise
        at each step corrects it;
        sample_steps: its number of steps (None: the sampler's default); eta: DDIM's and DPM-Solver's
        (the options a sampler takes from the config are its `config_options`).
    class_conditional: condition on the data's labels; label_dropout: the share of labels replaced
        by the "no label" token in training (classifier-free guidance, Ho & Salimans 2022);
        guidance_scale: w of eps = (1 + w) eps(x, y) - w eps(x, no label) at sampling (0: none).
    sigma_data: EDM's data standard deviation (in the normalised space).
    clip_denoised: clamp x0_hat to [-1, 1] while sampling images.
    """

    schedule: str = "linear"
    steps: int = 1000
    prediction: str = "eps"
    weighting: str = "simple"
    net: str = "auto"
    preset: str = "auto"
    patch_size: int | None = None
    hidden: tuple[int, ...] = (256, 256, 256)
    embedding_dim: int = 128
    dropout: float | None = None
    sampler: str = "auto"
    sample_steps: int | None = None
    eta: float = 0.0
    class_conditional: bool = False
    label_dropout: float = 0.1
    guidance_scale: float = 0.0
    sigma_data: float = 0.5
    clip_denoised: bool = True

    def validate(self) -> None:
        self._choice("schedule", tuple(SCHEDULES))
        self._positive("steps", "embedding_dim", "sigma_data")
        self._choice("prediction", PREDICTIONS)
        self._choice("weighting", WEIGHTINGS)
        self._choice("net", ("auto", *NETWORKS))
        self._choice("sampler", ("auto", *SAMPLERS))
        self._in_range("label_dropout", 0.0, 1.0)
        self._in_range("eta", 0.0, 1.0)
        self._positive("guidance_scale", allow_zero=True)
        if self.sample_steps is not None:
            self._positive("sample_steps")
        if self.dropout is not None:
            self._in_range("dropout", 0.0, 1.0)
        self.hidden = tuple(self.hidden)
        if not self.hidden or any(not isinstance(w, int) or w <= 0 for w in self.hidden):
            raise ConfigError(f"DiffusionConfig.hidden={self.hidden!r} must be positive integer widths, e.g. (256, 256)")
        if self.guidance_scale > 0 and not self.class_conditional:
            raise ConfigError(
                f"guidance_scale={self.guidance_scale} needs class_conditional=True (classifier-free guidance "
                "mixes the conditional and unconditional predictions); set it or leave guidance_scale=0"
            )


@register("ddpm", DiffusionConfig, family="diffusion", summary="Denoising diffusion (Ho et al. 2020): any schedule, objective, network, sampler")
class DiffusionModel(GenerativeModel, Standardizer):
    """A diffusion model: eps_hat = eps_theta(x_t, t), trained by a weighted denoising loss and
    sampled by any sampler of `samplers.py`.

    loss: t ~ schedule.training_times, x_t = alpha x_0 + sigma eps, total = mean_b w(t_b) mean_i
    (x0_hat - x0)_i^2 in the prediction's own space (`objectives.denoising_loss`).

    >>> import torch
    >>> from genlab.data import Batch, DataSpec
    >>> spec = DataSpec("toy", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
    >>> model = DiffusionModel(DiffusionConfig(hidden=(16,), steps=10, sample_steps=5), spec)
    >>> sorted(model.loss(Batch(torch.randn(4, 2))).terms)
    ['denoise']
    >>> model.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 2])
    """

    initializes_once = True

    config: DiffusionConfig
    # sized for the small presets on small data (digits, the 2D toys) trained on a CPU
    train_defaults = {"max_steps": 4000, "lr": 1e-3, "lr_schedule": "cosine", "warmup_steps": 100, "ema_decay": 0.999}
    cpu_train_defaults = {"max_steps": 1800, "batch_size": 64, "ema_decay": 0.995}
    costly_nll_bound = True  # the variational bound evaluates the network at every one of the N timesteps

    def __init__(self, config: DiffusionConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        if config.class_conditional and not spec.num_classes:
            raise ConfigError(f"class_conditional=True needs labelled data; {spec.name!r} has no labels")
        # N applies to the schedules built with a number of steps (the discrete DDPM ones)
        schedule_options = {"steps": config.steps} if "steps" in schedule_parameters(config.schedule) else {}
        self.schedule: NoiseSchedule = get_schedule(config.schedule, **schedule_options)
        self.preconditioning = EDMPreconditioning(config.sigma_data) if self.schedule.edm_preconditioning else None
        prediction, weighting = config.prediction, config.weighting
        if self.preconditioning is not None:
            prediction, weighting = "x0", "edm"
        self.objective = DenoisingLoss(prediction=prediction, weighting=weighting, sigma_data=config.sigma_data)
        self.num_classes = spec.num_classes if config.class_conditional else None
        self.net = self._build_network(config, spec)
        # the normalisation x_norm = (x - shift) / scale; for vectors set by initialize_from_data
        shift, scale = torch.zeros(spec.shape), torch.ones(spec.shape)
        low, high = spec.value_range
        if spec.kind == "image" and math.isfinite(low) and math.isfinite(high):
            shift, scale = torch.full(spec.shape, (low + high) / 2), torch.full(spec.shape, (high - low) / 2)
        self.register_standardization(shift, scale)

    # -- parts -------------------------------------------------------------------------------
    def _build_network(self, config: DiffusionConfig, spec: DataSpec) -> nn.Module:
        """The network for `spec` (the space the diffusion runs in); records the network preset it
        took in self.config, so the run rebuilds the same network wherever it is loaded."""
        net = config.net
        if net == "auto":
            net = "unet" if resolve_net(spec, "auto") == "conv" or (spec.kind == "image" and len(spec.shape) == 3) else "mlp"
        self.config = dataclasses.replace(self.config, preset=network_preset(config.preset, net, spec))
        return NETWORKS[net](self.config, spec, self.num_classes)

    def initialize(self, train, generator: torch.Generator) -> None:
        """Vectors and tables: standardise each dimension with the training split's mean and std
        (the schedules assume unit-scale data: the prior N(0, I) at t_max)."""
        if self.spec.kind != "image":
            self.fit_standardization(train.tensors()[0].float())

    @property
    def default_sampler(self) -> str:
        """config.sampler, with "auto" resolved: "dpm_solver" for images, "dpm_solver_sde" otherwise."""
        if self.config.sampler != "auto":
            return self.config.sampler
        return "dpm_solver" if self.spec.kind == "image" else "dpm_solver_sde"

    @property
    def diffusion_spec(self) -> DataSpec:
        """The space the diffusion runs in: the data's (a latent model overrides it with its latents')."""
        return self.spec

    def normalize(self, x: Tensor) -> Tensor:
        return self.standardize(x)

    def denormalize(self, x: Tensor) -> Tensor:
        return self.unstandardize(x)

    def network_output(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """The prediction (eps, x0 or v; EDM: the denoised D) at x_t (B, ...) and times t (B,)."""
        if self.preconditioning is not None:
            return self.preconditioning.denoise(self.net, x_t, self.schedule.sigma(t), y)
        return self.net(x_t, self.schedule.noise_conditioning(t), y)

    def eps(self, x_t: Tensor, t: Tensor, y: Tensor | None = None) -> Tensor:
        """eps_hat(x_t, t[, y]), (B, ...), whatever the network predicts."""
        alpha, sigma = self.schedule.alpha(t), self.schedule.sigma(t)
        eps_hat, _ = self.objective.to_eps_and_x0(self.network_output(x_t, t, y), x_t, alpha, sigma)
        return eps_hat

    def eps_fn(self, cond: Tensor | None = None, guidance_scale: float | None = None) -> Callable[[Tensor, Tensor], Tensor]:
        """The denoiser a sampler calls, eps_fn(x_t, t) -> eps_hat, for labels `cond` (B,) or none;
        with classifier-free guidance eps = (1 + w) eps(x, y) - w eps(x, no label) (Ho & Salimans 2022),
        both halves in one batch of 2B."""
        w = self.config.guidance_scale if guidance_scale is None else guidance_scale
        if cond is None or w == 0:
            return lambda x, t: self.eps(x, t, cond)
        null = self.null_condition(cond)

        def guided(x: Tensor, t: Tensor) -> Tensor:
            both = self.eps(torch.cat([x, x]), torch.cat([t, t]), torch.cat([cond, null]))  # (2B, ...)
            conditional, unconditional = both.chunk(2)
            return (1 + w) * conditional - w * unconditional

        return guided

    # -- training ----------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> Loss:
        x0 = self.normalize(batch.x)
        t = self.schedule.training_times(x0.shape[0], device=x0.device)
        eps = torch.randn_like(x0)
        x_t = self.schedule.q_sample(x0, t, eps)
        y = self.training_condition(batch)
        per_sample = self.objective.loss(self.network_output(x_t, t, y), x0, eps, self.schedule.alpha(t), self.schedule.sigma(t))
        total = per_sample.mean()
        return Loss(total, {"denoise": total.detach()})

    def null_condition(self, cond: Tensor) -> Tensor:
        """The "no label" condition of classifier-free guidance, cond's shape: the label num_classes."""
        return torch.full_like(cond, self.num_classes)

    def training_condition(self, batch: Batch) -> Tensor | None:
        """What the network is conditioned on for a training batch: its labels (B,), a share
        label_dropout of them replaced by the "no label" token; None for an unconditional model.
        Conditional subclasses (SR3's image, text-ddpm's caption embedding) override this alone."""
        if self.num_classes is None:
            return None
        if batch.y is None:
            raise ConfigError("class_conditional=True but the batch has no labels; load labelled data")
        y = batch.y.long()
        if self.config.label_dropout > 0:
            drop = torch.rand(y.shape, device=y.device) < self.config.label_dropout
            y = torch.where(drop, torch.full_like(y, self.num_classes), y)
        return y

    # -- sampling ------------------------------------------------------------------------------------
    @torch.no_grad()
    def generate(
        self,
        n: int,
        cond: Tensor | None = None,
        generator: torch.Generator | None = None,
        *,
        sampler: str | None = None,
        steps: int | None = None,
        guidance_scale: float | None = None,
        eps_fn: Callable[[Tensor, Tensor], Tensor] | None = None,
        **options: Any,
    ) -> SampleResult:
        """Samples in the normalised space (n, *diffusion_spec.shape) with their number of network
        evaluations (nfe) and, with return_trajectory=True, the path. eps_fn replaces the model's own
        denoiser (e.g. classifier guidance, `guidance.py`); options go to the sampler (eta, x_start,
        t_start, after_step, ...)."""
        name = sampler or self.default_sampler
        sample_fn = get_sampler(name)
        for key in sample_fn.config_options:
            options.setdefault(key, getattr(self.config, key))
        if cond is not None:
            cond = self.check_labels(cond, n, self.num_classes)
        space = self.diffusion_spec
        if space.kind == "image" and self.config.clip_denoised:
            options.setdefault("clip_denoised", (-1.0, 1.0))
        steps = steps or self.config.sample_steps
        if steps is not None:
            options["steps"] = steps
        shape = None if options.get("x_start") is not None else (n, *space.shape)
        return sample_fn(
            eps_fn or self.eps_fn(cond, guidance_scale), self.schedule, shape,
            generator=generator, device=self.device, dtype=self._dtype, **options,
        )  # fmt: skip

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """n samples (n, *shape) in the data's space (images quantized to the data's levels), drawn
        with config.sampler unless `sampler=` is given; labels `cond` (n,) for a conditional model."""
        x = self.to_data_space(self.generate(n, cond, generator, **options).x)
        return x

    @torch.no_grad()
    def sample_trajectory(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None,
                          **options: Any) -> list[Tensor]:
        """The sampler's path for n samples: x at the start (noise) and after each step, each state
        (n, *spec.shape) mapped to the data's units (images also clamped, quantized and, for latent
        diffusion, decoded); options as `generate`."""
        result = self.generate(n, cond, generator, return_trajectory=True, **options)
        # vectors are not clamped to the data's range: the noisy states lie far outside it
        to_data = self.to_data_space if self.spec.kind == "image" else lambda x: self.denormalize(x.float())
        return [to_data(x) for x in result.trajectory]

    def trajectory(self, generator: torch.Generator) -> Trajectory | None:
        """The default sampler's path from noise to data: 8 images, or 2,000 points of 2-D data."""
        if self.spec.kind != "image" and self.spec.dim != 2:
            return None
        n = 8 if self.spec.kind == "image" else 2000
        path = self.sample_trajectory(n, generator=generator)
        return Trajectory([x.cpu() for x in path], f"{self.name}: {self.default_sampler} sampler, noise to data")

    def to_data_space(self, x: Tensor) -> Tensor:
        """From the normalised space back to the data's units, clamped to its value range and, for
        images with discrete levels, quantized."""
        x = self.denormalize(x.float()).clamp(*self.spec.value_range)
        return quantize(x, self.spec) if self.spec.kind == "image" and self.spec.levels else x

    # -- likelihood --------------------------------------------------------------------------------------
    def likelihood_kind(self) -> str:
        return "discrete" if self._has_vlb() else "none"

    def _has_vlb(self) -> bool:
        return isinstance(self.schedule, DiscreteSchedule) and self.spec.kind == "image" and bool(self.spec.levels)

    @torch.no_grad()
    def nll_bound(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """-log p(x) <= L_VLB, the DDPM variational bound (Ho et al. 2020 eq. 5) on the discrete data
        (spec.levels levels), in nats per sample (B,); every one of the N terms is evaluated."""
        if not self._has_vlb():
            raise NotImplementedError(
                "the variational bound is defined here for discrete schedules ('linear', 'cosine') on images with "
                "discrete levels; continuous schedules have `samplers.ode_log_likelihood`"
            )
        x0 = self.normalize(x)
        result = ddpm_vlb(
            lambda x_t, t: self.eps(x_t, t).float(), self.schedule, x0,
            levels=self.spec.levels, data_range=(-1.0, 1.0), generator=generator,
        )  # fmt: skip
        return result.total

    def ode_trace(self, trace: str = "auto") -> str:
        """The divergence estimator `ode_log_prob` uses: trace itself, or for "auto" "exact" up to
        ODE_EXACT_TRACE_MAX_DIM dimensions of the diffusion space and "hutchinson" above."""
        if trace != "auto":
            return trace
        return "exact" if self.diffusion_spec.dim <= ODE_EXACT_TRACE_MAX_DIM else "hutchinson"

    def ode_log_prob(self, x: Tensor, generator: torch.Generator | None = None, *, trace: str = "auto", probes: int = 1,
                     rtol: float = ODE_LIKELIHOOD_TOLERANCE, atol: float = ODE_LIKELIHOOD_TOLERANCE) -> Tensor:
        """log p(x) in nats per sample, (B,), of the density the model's probability-flow ODE defines
        (Song et al. 2021, appendix D; `samplers.ode_log_likelihood`), in the data's units:

            log p(x) = log p_norm((x - shift) / scale) - sum_i log scale_i,

        the sum the change of variables from the normalised space the diffusion runs in. The density is
        that of the data noised to the schedule's smallest noisy time t_min (it tends to p(x_0) as
        t_min -> 0). Data with levels are first uniformly dequantized, x' = a + (v + u) w with one draw
        u ~ U[0, 1)^D from `generator` (as the flows' `log_prob` does), and log p(x') is returned: its
        mean, corrected by `genlab.metrics.bits_per_dim(levels=L)`, bounds the discrete NLL.

        trace: "exact", "hutchinson" (`probes` Rademacher vectors from `generator`, unbiased) or
        "auto" (`ode_trace`). Defined for every schedule; for discrete DDPM schedules it runs the ODE
        of their continuous-time interpolation (see `likelihood_measures`). x: (B, *spec.shape).
        """
        x = x.to(device=self.device, dtype=self._dtype)
        if self.spec.levels is not None:
            x = dequantize(x, self.spec, generator)
        x_norm = self.normalize(x)
        result = ode_log_likelihood(
            lambda x_t, t: self.eps(x_t, t), self.schedule, x_norm, method="dopri5", rtol=rtol, atol=atol,
            trace=self.ode_trace(trace), probes=probes, generator=generator,
        )  # fmt: skip
        log_det_normalize = -torch.log(self.data_scale.to(x.dtype).abs()).sum()
        return result.log_prob + log_det_normalize

    def likelihood_measures(self) -> list[LikelihoodMeasure]:
        """"nll_ode": -`ode_log_prob` (trace "auto"), for continuous-time schedules ("vp", "subvp", "ve",
        "edm": the score-sde, ncsn and edm presets) on images and vectors.

        Not for discrete DDPM schedules ("linear", "cosine": the ddpm and dit presets): their network
        is trained at the N grid times only (Ho et al. 2020, alg. 1), so an ODE in continuous time would
        query noise levels it never saw, through an interpolation of the schedule that is genlab's, not
        the model's; their own likelihood is the variational bound `nll_bound`, which evaluation
        already reports (every one of its N terms). Not for tables: a density of one-hot encoded
        columns is no likelihood of the table.
        """
        if isinstance(self.schedule, DiscreteSchedule) or self.spec.kind not in ("image", "vector"):
            return []
        trace = self.ode_trace()
        how = "exact trace" if trace == "exact" else "Hutchinson trace, 1 Rademacher probe"
        dequantized = self.spec.levels is not None
        description = (
            f"probability-flow ODE likelihood (dopri5, rtol = atol = {ODE_LIKELIHOOD_TOLERANCE:g}, {how})"
            + (", uniformly dequantized" if dequantized else "")
        )
        return [LikelihoodMeasure(
            "nll_ode", lambda x, generator: -self.ode_log_prob(x, generator), kind="dequantized" if dequantized else "continuous",
            description=description, costly=True,
        )]  # fmt: skip

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.net.parameters()).dtype


class _Flatten(nn.Module):
    """Runs a vector network on data of any shape: (B, *shape) -> (B, prod shape) -> (B, *shape)."""

    def __init__(self, net: nn.Module, shape: tuple[int, ...]) -> None:
        super().__init__()
        self.net, self.shape = net, tuple(shape)

    def forward(self, x: Tensor, noise_level: Tensor, y: Tensor | None = None) -> Tensor:
        return self.net(x.flatten(1), noise_level, y).view(x.shape[0], *self.shape)


# ================================================================================================
# Presets: the same model with other defaults (the same fields, so a saved config loads under any)
# ================================================================================================
@dataclasses.dataclass
class NcsnConfig(DiffusionConfig):
    """NCSN's defaults: VE noise, sigma^2-weighted denoising score matching, annealed Langevin sampling."""

    schedule: str = "ve"
    weighting: str = "ncsn"
    sampler: str = "langevin"


@register("ncsn", NcsnConfig, family="diffusion", summary="Noise-conditional score network (Song & Ermon 2019): VE noise, sigma^2-weighted DSM, annealed Langevin")
class NcsnModel(DiffusionModel):
    """Noise-conditional score network (Song & Ermon 2019): DiffusionModel with NcsnConfig's defaults."""


@dataclasses.dataclass
class ScoreSdeConfig(DiffusionConfig):
    """The score SDE's defaults: the VP SDE, predictor-corrector sampling in 500 steps."""

    schedule: str = "vp"
    sampler: str = "pc"
    sample_steps: int | None = 500


@register("score-sde", ScoreSdeConfig, family="diffusion", summary="Score SDE (Song et al. 2021): VP SDE, predictor-corrector sampling, probability-flow ODE")
class ScoreSdeModel(DiffusionModel):
    """Score SDE (Song et al. 2021): DiffusionModel with ScoreSdeConfig's defaults."""


@dataclasses.dataclass
class EdmConfig(DiffusionConfig):
    """EDM's defaults: sigma(t) = t with its preconditioning, Heun's sampler in 18 steps (EDM's CIFAR-10 setting)."""

    schedule: str = "edm"
    sampler: str = "heun"
    sample_steps: int | None = 18


@register("edm", EdmConfig, family="diffusion", summary="EDM (Karras et al. 2022): sigma(t) = t, preconditioned denoiser, Heun's 2nd-order ODE sampler")
class EdmModel(DiffusionModel):
    """EDM (Karras et al. 2022): DiffusionModel with EdmConfig's defaults."""


@dataclasses.dataclass
class FlowMatchingConfig(DiffusionConfig):
    """Flow matching's defaults (Lipman et al. 2023; rectified flow, Liu et al. 2023): the straight
    path x_t = (1 - t) x0 + t eps, a network predicting the velocity eps - x0 with the plain MSE, and
    Heun's 2nd-order solver of the ODE dx/dt = velocity (`--set sampler=ddim` is Euler's method on
    this path: DDIM's update is x_s = x_t + (s - t) u_hat here)."""

    schedule: str = "rectified"
    prediction: str = "velocity"
    weighting: str = "simple"
    sampler: str = "heun"


@register("flow-matching", FlowMatchingConfig, family="diffusion",
          summary="flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023): straight path, velocity prediction, Heun's ODE sampler")  # fmt: skip
class FlowMatchingModel(DiffusionModel):
    """Flow matching (Lipman et al. 2023): DiffusionModel with FlowMatchingConfig's defaults."""


@dataclasses.dataclass
class DitConfig(DiffusionConfig):
    """The diffusion transformer's defaults: a DiT over image patches on the linear DDPM schedule."""

    net: str = "dit"
    schedule: str = "linear"


@register("dit", DitConfig, family="diffusion", summary="Diffusion transformer (Peebles & Xie 2023): patches, adaLN-Zero blocks, DPM-Solver++(2M) sampling")
class DitModel(DiffusionModel):
    """Diffusion transformer (Peebles & Xie 2023): DiffusionModel with DitConfig's defaults, for images."""

    data_kinds = ("image",)
