"""Latent diffusion (Rombach et al. 2022): a diffusion model in the latent space of a trained autoencoder.

With a frozen encoder E and decoder D (a genlab VAE: E(x) = mu(x), the posterior mean, and
D(z) = E[x | z], the decoder mean), the model standardises the latents and diffuses there:

    z = E(x),    z_norm = (z - m) / s,    x_t = alpha(t) z_norm + sigma(t) eps     (training)
    z_norm ~ sampler(eps_theta),    x = D(s z_norm + m)                          (sampling)

m and s are the training split's per-dimension mean and standard deviation of z, taken once by
`initialize_from_data` (latent_scale="auto"); the schedules assume unit-scale data, and Rombach et
al. rescale their latents by one factor for the same reason (their scale factor 0.18215 is 1 / std).
A number latent_scale = c fixes m = 0, s = 1 / c instead, as theirs does.

This is a `DiffusionModel` whose normalised space is the standardised latent space: `normalize(x)`
encodes and standardises, `denormalize(z_norm)` de-standardises and decodes, so the parent's loss
and `to_data_space` hold unchanged; the denoiser is a TimeConditionedMLP on the latent vector. The
model's `spec` stays the data's (what `genlab.fit` checks and `genlab.load` rebuilds); the latent
space's is `diffusion_spec`.

The autoencoder is a frozen submodule (`requires_grad_(False)`, always in eval mode): its weights
are saved in the latent model's own model.safetensors, and config.autoencoder_config records its
run's model name, config and data spec, so `genlab.load` rebuilds a trained latent-diffusion run
even after the autoencoder's run is moved, deleted or retrained.
"""

from __future__ import annotations

import copy
import dataclasses
import math
from pathlib import Path
from typing import Any

import torch
from torch import Tensor, nn

from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError, GenlabError
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel
from genlab.nn.presets import saved_config_values
from genlab.registry import register

__all__ = ["LatentDiffusionConfig", "LatentDiffusionModel"]

_RECORD_KEYS = ("path", "model", "model_config", "data_spec")
_EXAMPLE = "--set autoencoder=runs/vae-digits (train it with `genlab train vae --data digits --out runs/vae-digits`)"


@dataclasses.dataclass
class LatentDiffusionConfig(DiffusionConfig):
    """Configuration of a latent diffusion model: DiffusionConfig's fields (the denoiser is the MLP
    of `hidden`, `embedding_dim`), plus

    autoencoder: the run directory of a trained genlab autoencoder on the same data: any model with
        `encode(x)` (a tensor, or a distribution whose `.mean` is used: the VAE's posterior mean) and
        `decode(z)` (mapped by its `decoder_mean` when it has one), e.g. "runs/vae-digits".
    latent_scale: "auto" (standardise each latent dimension with the training split's mean and std)
        or a number c > 0 (z_norm = c z, Rombach et al.'s fixed scale factor).
    autoencoder_config: filled in by the model, not by hand: the autoencoder run's path, model name,
        config and data spec, so that a saved run rebuilds the autoencoder without its run directory.
    """

    autoencoder: str = ""
    latent_scale: float | str = "auto"
    autoencoder_config: dict[str, Any] | None = None

    def validate(self) -> None:
        super().validate()
        self.autoencoder = str(self.autoencoder)
        if isinstance(self.latent_scale, str):
            if self.latent_scale.strip().lower() == "auto":
                self.latent_scale = "auto"
            else:
                try:
                    self.latent_scale = float(self.latent_scale)
                except ValueError:
                    raise ConfigError(f"LatentDiffusionConfig.latent_scale={self.latent_scale!r} must be 'auto' or a number > 0, e.g. 0.18") from None
        if not isinstance(self.latent_scale, str) and not (math.isfinite(self.latent_scale) and self.latent_scale > 0):
            raise ConfigError(f"LatentDiffusionConfig.latent_scale={self.latent_scale!r} must be 'auto' or a finite number > 0")
        record = self.autoencoder_config
        if record is not None and not (isinstance(record, dict) and set(_RECORD_KEYS) <= set(record)):
            raise ConfigError(
                f"LatentDiffusionConfig.autoencoder_config={record!r} is written by the model (keys {', '.join(_RECORD_KEYS)}); "
                "leave it unset and pass autoencoder=RUN_DIR"
            )


@register("latent-diffusion", LatentDiffusionConfig, family="diffusion", summary="Latent diffusion (Rombach et al. 2022): diffusion in a trained VAE's latent space")
class LatentDiffusionModel(DiffusionModel):
    """Diffusion in the standardised latent space of a frozen autoencoder (Rombach et al. 2022).

    loss: z_norm = normalize(x) = (E(x) - m) / s, encoded without gradients, then the parent's weighted
        denoising loss on z_norm (B, D). sample: z_norm from config.sampler, x = D(s z_norm + m), the
        decoder mean clamped to the data's range and, for images with discrete levels, quantized to them
        (as every diffusion model's samples are). `generate` returns the latents z_norm (n, D).

    autoencoder: instead of config.autoencoder, an autoencoder module in memory (e.g. `fit(vae, ...).model`),
        copied and frozen; a model built so saves its weights but `genlab.load` can rebuild it only if
        config.autoencoder names the autoencoder's run.

    >>> import torch
    >>> from genlab.data import Batch
    >>> from genlab.models.latent import VAE, VAEConfig
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8), levels=17)
    >>> vae = VAE(VAEConfig(latent_dim=4, hidden=(32,), prior="standard"), spec)
    >>> model = LatentDiffusionModel(LatentDiffusionConfig(hidden=(16,), steps=10, sample_steps=5), spec, autoencoder=vae)
    >>> model.diffusion_spec.shape, sorted(model.loss(Batch(torch.rand(5, 1, 8, 8))).terms)
    ((4,), ['denoise'])
    >>> model.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
    """

    config: LatentDiffusionConfig

    def __init__(self, config: LatentDiffusionConfig, spec: DataSpec, *, autoencoder: nn.Module | None = None) -> None:
        if autoencoder is not None:
            autoencoder, record = copy.deepcopy(autoencoder), config.autoencoder_config
        else:
            autoencoder, record = _load_autoencoder(config)
        _check_autoencoder(autoencoder, spec, config.autoencoder)
        autoencoder.requires_grad_(False).eval()
        with torch.no_grad():
            probe = _cast(torch.zeros(1, *spec.shape, device=_module_device(autoencoder)), autoencoder)
            latent_shape = tuple(_encode(autoencoder, probe).shape[1:])
        latent_spec = DataSpec(
            f"{spec.name}-latent", kind="vector", shape=latent_shape, value_range=(-math.inf, math.inf),
            num_classes=spec.num_classes, class_names=spec.class_names,
        )  # fmt: skip
        if record != config.autoencoder_config:
            config = dataclasses.replace(config, autoencoder_config=record)
        super().__init__(config, latent_spec)
        self.spec = spec  # the data's: what fit checks, what the run saves, what load rebuilds
        self._latent_spec = latent_spec
        self.autoencoder = autoencoder
        if config.latent_scale != "auto":
            self.data_scale.fill_(1.0 / float(config.latent_scale))

    # -- the autoencoder ---------------------------------------------------------------------
    @torch.no_grad()
    def encode(self, x: Tensor) -> Tensor:
        """z = E(x): the autoencoder's latent (its posterior mean), x (B, *spec.shape) -> (B, *latent shape)."""
        return _encode(self.autoencoder, _cast(x, self.autoencoder)).to(self.data_shift.dtype)

    @torch.no_grad()
    def decode(self, z: Tensor) -> Tensor:
        """x = D(z): the decoder mean (`decoder_mean(decode(z))` for a VAE), (B, *latent shape) -> (B, *spec.shape)."""
        params = self.autoencoder.decode(_cast(z, self.autoencoder))
        decoder_mean = getattr(self.autoencoder, "decoder_mean", None)
        return decoder_mean(params) if callable(decoder_mean) else params

    def normalize(self, x: Tensor) -> Tensor:
        """From the data to the standardised latent space: (E(x) - m) / s, (B, *spec.shape) -> (B, D)."""
        return self.standardize(self.encode(x))

    def denormalize(self, x: Tensor) -> Tensor:
        """From the standardised latent space to the data: D(s z_norm + m), (B, D) -> (B, *spec.shape)."""
        return self.decode(self.unstandardize(x))

    def initialize(self, train, generator: torch.Generator) -> None:
        """latent_scale="auto": m, s = the per-dimension mean and std of E(x) over the training split
        (encoded in chunks), so the latents the diffusion sees have mean 0 and std 1."""
        if self.config.latent_scale == "auto":
            x, _ = train.tensors()
            z = torch.cat([self.encode(x[i : i + 1024].to(self.device)) for i in range(0, len(x), 1024)])  # (N, D)
            self.fit_standardization(z)

    # -- what the frozen autoencoder changes --------------------------------------------------
    def train(self, mode: bool = True) -> "LatentDiffusionModel":
        super().train(mode)
        self.autoencoder.eval()  # frozen: its dropout or normalisation never switches to training
        return self

    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """AdamW over the denoiser only (the autoencoder is frozen)."""
        trainable = [p for p in self.parameters() if p.requires_grad]
        return {"model": torch.optim.AdamW(trainable, lr=lr, weight_decay=weight_decay)}

    @property
    def diffusion_spec(self) -> DataSpec:
        """The latent space the diffusion runs in: a vector spec of the autoencoder's latent shape."""
        return self._latent_spec

    def likelihood_kind(self) -> str:
        return "none"

    def nll_bound(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        raise NotImplementedError(
            "latent diffusion has no likelihood bound on the data: a bound on the latents says nothing of "
            "p(x) without the decoder's likelihood; compare models by FID (`genlab eval`)"
        )

    def ode_log_prob(self, x: Tensor, generator: torch.Generator | None = None, **options) -> Tensor:
        raise NotImplementedError(
            "latent diffusion has no ODE likelihood of the data: the probability-flow ODE gives a density of the "
            "latents, which says nothing of p(x) without the decoder's likelihood; compare models by FID (`genlab eval`)"
        )

    def likelihood_measures(self) -> list:
        """None: the ODE likelihood would be a density of the latents (see `ode_log_prob`)."""
        return []


# ================================================================================================
# Finding, checking and calling the autoencoder
# ================================================================================================
def _record(module: nn.Module, path: str) -> dict[str, Any]:
    """What rebuilds the autoencoder's architecture: its run's path, model name, config and data spec."""
    return {"path": path, "model": module.name, "model_config": module.config.to_dict(), "data_spec": module.spec.to_dict()}


def _build(record: dict[str, Any]) -> nn.Module:
    """An autoencoder of the recorded architecture; its weights come from the latent model's own file."""
    from genlab import registry

    entry = registry.get(record["model"])
    values = saved_config_values(entry.config_class, record["model_config"])
    return entry.model_class(entry.config_class.from_dict(values), DataSpec.from_dict(record["data_spec"]))


def _load_autoencoder(config: LatentDiffusionConfig) -> tuple[nn.Module, dict[str, Any]]:
    """The autoencoder (weights included) of the run at config.autoencoder and its record; or, for a
    saved latent model whose autoencoder run is gone or retrained, one rebuilt from the record."""
    from genlab import registry  # genlab.load reads a run; it imports the training layer lazily

    path, record = config.autoencoder, config.autoencoder_config
    run = Path(path) if path else None
    readable = run is not None and (run / "config.yaml").is_file()
    if record is not None and record["path"] == path:
        if readable:
            try:
                module = registry.load(path)
            except GenlabError:
                module = None
            if module is not None and _record(module, path) == record:
                return module, record
        return _build(record), record
    if run is None:
        raise ConfigError(f"LatentDiffusionConfig.autoencoder is empty: latent diffusion needs a trained autoencoder; pass {_EXAMPLE}")
    if not run.is_dir():
        raise ConfigError(f"LatentDiffusionConfig.autoencoder={path!r}: there is no run directory there; pass {_EXAMPLE}")
    if not readable:
        raise ConfigError(f"LatentDiffusionConfig.autoencoder={path!r} is not a genlab run (no config.yaml in it); pass the --out folder of a trained autoencoder, {_EXAMPLE}")
    module = registry.load(path)
    return module, _record(module, path)


def _check_autoencoder(module: nn.Module, spec: DataSpec, path: str) -> None:
    where = f"autoencoder={path!r}" if path else "the autoencoder"
    if not (callable(getattr(module, "encode", None)) and callable(getattr(module, "decode", None))):
        kind = getattr(module, "name", "") or type(module).__name__
        raise ConfigError(f"{where} is a {kind!r} model, which has no encode(x) and decode(z); pass the run of an autoencoder such as a VAE, {_EXAMPLE}")
    trained_on = getattr(module, "spec", None)
    if trained_on is not None and tuple(trained_on.shape) != tuple(spec.shape):
        raise ConfigError(
            f"{where} was trained on data of shape {tuple(trained_on.shape)} ({trained_on.name!r}), but this data "
            f"({spec.name!r}) has shape {tuple(spec.shape)}; train an autoencoder on this data "
            f"(`genlab train vae --data {spec.name} --out runs/vae-{spec.name}`) and pass --set autoencoder=runs/vae-{spec.name}"
        )


def _encode(module: nn.Module, x: Tensor) -> Tensor:
    """E(x): encode's tensor, or the `.mean` of the distribution it returns (a VAE's posterior mean)."""
    out = module.encode(x)
    return out if isinstance(out, Tensor) else out.mean


def _module_device(module: nn.Module) -> torch.device:
    tensor = next(module.parameters(), next(module.buffers(), None))
    return tensor.device if tensor is not None else torch.device("cpu")


def _cast(x: Tensor, module: nn.Module) -> Tensor:
    """x in the dtype of the module's floating parameters (unchanged for a module without any)."""
    weight = next((p for p in module.parameters() if p.is_floating_point()), None)
    return x if weight is None else x.to(weight.dtype)
