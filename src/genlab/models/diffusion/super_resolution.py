"""Super-resolution: SR3 (Saharia et al. 2022) and its regression baseline.

A low-resolution image l is the high-resolution x averaged over scale x scale blocks (`degrade`);
its bicubic upsampling u = up(l) to x's size (`upsample`) is what both models see.

    sr3            a conditional diffusion model: the UNet takes [x_t, u] concatenated on the channel
                   axis and predicts eps (any schedule, objective and sampler of `ddpm`), trained by
                   the denoising loss on (x, u) pairs built from high-resolution images; sampling
                   draws from p(x | u);
    sr-regression  the same UNet layout fed u alone, trained by L2 to predict x: the conditional mean
                   E[x | u], which maximises PSNR and blurs what u leaves uncertain (the
                   perception-distortion trade-off, Blau & Michaeli 2018).

Both train on any image data whose sides the scale divides, and upscale with `upscale(low)`; a model
asked for samples without low-resolution images (the engine's sample grids, `genlab sample`) upscales
the `PREVIEW` training images it kept at the start of training.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec
from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel, Loss
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel, SampleResult, network_preset
from genlab.nn.presets import SIZE_PRESETS
from genlab.nn.unet import UNET_PRESETS, UNet
from genlab.registry import register

__all__ = ["SR3Config", "SR3Model", "SRRegressionConfig", "SRRegressionModel", "degrade", "upsample"]

SCALES = (2, 4, 8)
PREVIEW = 16  # low-resolution training images kept for the sample grids


def degrade(x: Tensor, scale: int) -> Tensor:
    """The low-resolution image: x (B, C, H, W) averaged over scale x scale blocks, (B, C, H/s, W/s)."""
    return F.avg_pool2d(x, scale)


def upsample(low: Tensor, size: tuple[int, int], value_range: tuple[float, float]) -> Tensor:
    """Bicubic upsampling (align_corners=False, as PIL's and most tools') to `size`, clamped to the
    data's value range: (B, C, h, w) -> (B, C, *size)."""
    return F.interpolate(low.float(), size=size, mode="bicubic", align_corners=False).clamp(*value_range)


def _check_scale(scale: int, spec: DataSpec) -> None:
    if spec.kind != "image" or len(spec.shape) != 3:
        raise ConfigError(f"super-resolution needs images (C, H, W); data {spec.name!r} has shape {tuple(spec.shape)}")
    height, width = spec.shape[1:]
    if height % scale or width % scale:
        raise ConfigError(f"scale={scale} must divide the image's sides ({height}x{width}); choose a scale of "
                          f"{', '.join(str(s) for s in SCALES if not height % s and not width % s) or 'none here: resize the images'}")


def _unet(preset: str, dropout: float | None, spec: DataSpec, in_channels: int) -> UNet:
    channels, height, width = spec.shape
    name = network_preset(preset, "unet", spec)
    if name not in UNET_PRESETS:
        raise ConfigError(f"preset={name!r} is not a UNet preset; choose one of {', '.join((*SIZE_PRESETS, *UNET_PRESETS))}")
    overrides: dict[str, Any] = {"image_size": (height, width) if height != width else height}
    if dropout is not None:
        overrides["dropout"] = dropout
    return UNet.from_preset(name, in_channels=in_channels, out_channels=channels, **overrides)


class _Concatenated(nn.Module):
    """(x_t, noise level, u) -> UNet([x_t, u], noise level): SR3's conditioning by concatenation."""

    def __init__(self, unet: UNet) -> None:
        super().__init__()
        self.unet = unet

    def forward(self, x: Tensor, noise_level: Tensor, y: Tensor | None = None) -> Tensor:
        if y is None:
            raise ConfigError("sr3 predicts given a low-resolution image; call upscale(low) or sample(n, cond=low)")
        return self.unet(torch.cat([x, y.to(x.dtype)], 1), noise_level, None)


class _SuperResolution:
    """What both models share: the scale, the conditioning image u in the model's space, and the
    kept preview images."""

    spec: DataSpec
    config: Any
    data_kinds = ("image",)
    needs_image_condition: ClassVar[bool] = True

    def _register_preview(self) -> None:
        channels, height, width = self.spec.shape
        s = self.config.scale
        self.register_buffer("preview_low", torch.zeros(PREVIEW, channels, height // s, width // s))

    def keep_preview(self, train) -> None:
        x = train.tensors()[0][:PREVIEW].float()
        low = degrade(x, self.config.scale)
        self.preview_low[: len(low)].copy_(low)
        if len(low) < PREVIEW:  # fewer training images than previews: repeat them
            self.preview_low[len(low):].copy_(low[torch.arange(PREVIEW - len(low)) % len(low)])

    def check_low(self, low: Tensor) -> Tensor:
        channels, height, width = self.spec.shape
        s = self.config.scale
        expected = (channels, height // s, width // s)
        if low.dim() != 4 or tuple(low.shape[1:]) != expected:
            raise DataError(f"low-resolution images of shape {tuple(low.shape)[1:] if low.dim() == 4 else tuple(low.shape)}; "
                            f"this {self.name} upscales {expected} by {s} to {tuple(self.spec.shape)}")
        return low

    def low_or_preview(self, n: int, low: Tensor | None) -> Tensor:
        if low is not None and (not torch.is_tensor(low) or not low.is_floating_point()):
            raise ConfigError(f"{self.name} takes no labels: it is unconditional; pass cond=None (its kept previews) or "
                              "low-resolution images (B, C, H/scale, W/scale)")
        if low is None:
            return self.preview_low[torch.arange(n, device=self.preview_low.device) % PREVIEW]
        low = self.check_low(low)
        if len(low) != n:
            raise DataError(f"{len(low)} low-resolution images for {n} samples; pass one per sample")
        return low

    def condition(self, low: Tensor) -> Tensor:
        """u in the model's normalised space: (B, C, h, w) in the data's space -> (B, C, H, W)."""
        up = upsample(low.to(self.device), tuple(self.spec.shape[1:]), self.spec.value_range)
        return self.normalize(up)


@dataclasses.dataclass
class SR3Config(DiffusionConfig):
    """SR3: a diffusion model conditioned on the bicubic upsampling of a low-resolution image.

    scale: the upscaling factor (2, 4 or 8): the low-resolution side is the image's side / scale.
    The other fields are `ddpm`'s (SR3 uses the cosine schedule's relative, the linear DDPM grid here).
    """

    scale: int = 4

    def validate(self) -> None:
        super().validate()
        self._choice("scale", SCALES)
        if self.class_conditional:
            raise ConfigError("class labels are not supported: sr3 is conditioned on the low-resolution image; leave class_conditional off")


@register("sr3", SR3Config, family="diffusion", summary="SR3 (Saharia et al. 2022): super-resolution by a diffusion model conditioned on the upsampled image")
class SR3Model(_SuperResolution, DiffusionModel):
    """SR3 (module docstring): eps_theta([x_t, u], t), trained by the denoising loss on (x, u = up(degrade(x)))."""

    config: SR3Config

    def __init__(self, config: SR3Config, spec: DataSpec) -> None:
        _check_scale(config.scale, spec)
        super().__init__(config, spec)
        self._register_preview()

    def _build_network(self, config: DiffusionConfig, spec: DataSpec) -> nn.Module:
        if config.net not in ("auto", "unet"):
            raise ConfigError(f"sr3 conditions a UNet by concatenation; net={config.net!r} is not one: use net='unet'")
        self.config = dataclasses.replace(config, preset=network_preset(config.preset, "unet", spec))
        return _Concatenated(_unet(config.preset, config.dropout, spec, 2 * spec.shape[0]))

    def initialize(self, train, generator: torch.Generator) -> None:
        self.keep_preview(train)

    def training_condition(self, batch: Batch) -> Tensor:
        """u = the upsampled low-resolution version of the batch, in the model's space."""
        return self.condition(degrade(batch.x, self.config.scale))

    @torch.no_grad()
    def generate(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None, **options: Any) -> SampleResult:
        """Samples of p(x | u) in the normalised space; cond: low-resolution images (n, C, H/s, W/s) in
        the data's space (None: the kept previews)."""
        u = self.condition(self.low_or_preview(n, cond))
        options.pop("guidance_scale", None)
        return super().generate(n, None, generator, eps_fn=lambda x, t: self.eps(x, t, u), **options)

    @torch.no_grad()
    def upscale(self, low: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """High-resolution samples (B, C, H, W) for low-resolution images (B, C, H/s, W/s), data space."""
        return self.sample(len(low), cond=low, generator=generator, **options)

    def likelihood_kind(self) -> str:
        return "none"  # a conditional model: its bound would be on p(x | u), not the p(x) evaluation compares

    def _has_vlb(self) -> bool:
        return False


@dataclasses.dataclass
class SRRegressionConfig(Config):
    """The regression baseline of SR3: the same UNet layout, fed the upsampled image u alone, trained
    by L2 to predict x.

    scale: the upscaling factor (2, 4 or 8). preset: the UNet's (as `ddpm`'s). dropout: the UNet's
    (None: the preset's)."""

    scale: int = 4
    preset: str = "auto"
    dropout: float | None = None

    def validate(self) -> None:
        self._choice("scale", SCALES)


@register("sr-regression", SRRegressionConfig, family="diffusion", summary="Super-resolution by a UNet trained with L2: the regression baseline of SR3")
class SRRegressionModel(_SuperResolution, GenerativeModel):
    """x_hat = u + f(u), f a UNet (noise level fixed at 0), trained by the mean squared error to x in
    the model's space [-1, 1]: the conditional mean E[x | u] at the optimum."""

    config: SRRegressionConfig
    train_defaults = {"max_steps": 4000, "lr": 1e-3, "lr_schedule": "cosine", "warmup_steps": 100, "ema_decay": 0.999}
    cpu_train_defaults = {"max_steps": 1800, "batch_size": 64, "ema_decay": 0.995}

    def __init__(self, config: SRRegressionConfig, spec: DataSpec) -> None:
        _check_scale(config.scale, spec)
        super().__init__(config, spec)
        low, high = spec.value_range
        if not (math.isfinite(low) and math.isfinite(high)):
            raise ConfigError(f"sr-regression needs images with a finite value range; {spec.name!r} has {spec.value_range}")
        self.config = dataclasses.replace(config, preset=network_preset(config.preset, "unet", spec))
        self.net = _unet(config.preset, config.dropout, spec, spec.shape[0])
        self._register_preview()

    def normalize(self, x: Tensor) -> Tensor:
        low, high = self.spec.value_range
        return 2.0 * (x - low) / (high - low) - 1.0

    def to_data_space(self, x: Tensor) -> Tensor:
        from genlab.data.transforms import quantize

        low, high = self.spec.value_range
        x = (low + (x.float().clamp(-1.0, 1.0) + 1.0) * (high - low) / 2.0)
        return quantize(x, self.spec) if self.spec.levels else x

    def initialize(self, train, generator: torch.Generator) -> None:
        self.keep_preview(train)

    def predict(self, u: Tensor) -> Tensor:
        return u + self.net(u, torch.zeros(len(u), device=u.device), None)

    def loss(self, batch: Batch) -> Loss:
        u = self.condition(degrade(batch.x, self.config.scale))
        error = (self.predict(u) - self.normalize(batch.x)).pow(2).mean()
        return Loss(error, {"mse": error.detach()})

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        """The prediction for low-resolution images `cond` (n, C, H/s, W/s) (None: the kept previews);
        deterministic: the generator is unused."""
        return self.to_data_space(self.predict(self.condition(self.low_or_preview(n, cond))))

    @torch.no_grad()
    def upscale(self, low: Tensor, generator: torch.Generator | None = None, **options: Any) -> Tensor:
        return self.sample(len(low), cond=low)
