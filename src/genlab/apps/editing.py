"""Editing with a trained diffusion model: inpainting and SDEdit regeneration, for images and vectors.

Both run the model's own sampler (any of `models/diffusion/samplers.py`) from a start built from the
input, through the keywords every sampler shares: `x_start`, `t_start` and `after_step(x, t_next)`.

inpaint, the replacement method (Song et al. 2021, appendix I.2; RePaint without resampling, Lugmayr
et al. 2022, alg. 1): after every step t -> s of the sampler,

    x_s <- m * q_sample(x_0, s) + (1 - m) * x_s,

m = 1 on the known pixels and 0 on the region to generate: the known region is replaced by the input
noised afresh to the new time, and the network fills in the rest consistently with it. The method is
approximate: the generated part follows p(x_unknown | x_known) only as far as the noised known part
carries x_known's information at each time (tests/test_editing.py measures the error on a Gaussian).
`resample=U` takes every step U times, noising x_s back to t between the repeats (RePaint's resampling,
jump length 1), which lets the two regions agree better, for U times the network calls.

regenerate (SDEdit, Meng et al. 2022, alg. 1): noise the input to t_0 = `strength_to_time(strength)`,
x_{t_0} = q_sample(x, t_0), and sample back to the data. A small strength keeps the input's layout and
changes its details; strength 1 draws a fresh sample. With a mask, only the masked-out region changes.

`mask_blur` = s > 0 (images) softens the mask's edge so that a regenerated region blends in: the
region to generate h = 1 - m becomes h_s = max(h, min(1, 2 G_s * h)), G_s a Gaussian of s pixels,
which is 1 on the region and its border and falls smoothly to 0 over about 2 s pixels outside it;
the known part is then blended, x_s <- (1 - h_s) q_sample(x_0, s) + h_s x_s after every step and
(1 - h_s) x + h_s x_hat at the end, so the input is kept exactly only where h_s = 0. `seam_energy`
measures what the blur is for: the mean squared gradient of an image in a band around the border.

Inputs and outputs are in the data's space (images in their value range, e.g. [0, 1]); the model works
in its normalised space (`model.normalize`). A mask passed to these functions holds 1 (True) for a known
value to keep and 0 for one to generate; it may have any shape that broadcasts to x's (B, *shape), e.g.
(1, 1, H, W) for one mask over every channel and example. Mask *image files* are the other way round,
as in most inpainting tools: white marks the region to regenerate (`read_mask`).
"""

from __future__ import annotations

import math
import os
from pathlib import Path
from typing import Any, Callable, Sequence

import numpy as np
import torch
from torch import Tensor

from genlab.apps.sampling import class_labels, resolve_classes, sampling_options
from genlab.data.dataset import DataSpec
from genlab.data.transforms import gaussian_blur, quantize
from genlab.errors import ConfigError, DataError
from genlab.models.diffusion.latent import LatentDiffusionModel
from genlab.models.diffusion.model import DiffusionModel
from genlab.models.diffusion.samplers import SAMPLERS
from genlab.models.diffusion.schedules import EDMSchedule, NoiseSchedule
from genlab.nn.distributions import sample_standard_normal

__all__ = ["inpaint", "regenerate", "strength_to_time", "read_image", "read_mask", "save_edit_grid", "edit_image_file",
           "soft_keep_mask", "seam_energy", "step_to_strength"]

# steps of a full trajectory when neither the caller nor the model's config gives them (DDIM's default);
# used where a number must be known in advance: SDEdit's share of them and RePaint's resampling grid
DEFAULT_STEPS = 50
# samplers whose update depends on (x, t, s) alone, so that a step can be repeated (RePaint's resampling)
RESAMPLING_SAMPLERS = tuple(name for name, sampler in SAMPLERS.items() if sampler.resamples)
# results per row of the grid `save_edit_grid` writes, and the least side of its tiles (8x8 digits: 8 times)
RESULTS_PER_ROW = 8
MIN_TILE_PIXELS = 64


# ================================================================================================
# Inpainting and regeneration
# ================================================================================================
def inpaint(
    model: DiffusionModel,
    x: Tensor,
    mask: Tensor,
    *,
    sampler: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    resample: int = 1,
    cond: Tensor | None = None,
    guidance_scale: float | None = None,
    mask_blur: float = 0.0,
) -> Tensor:
    """Generate the region where mask = 0, consistent with the known values where mask = 1, by the
    replacement method (Song et al. 2021, appendix I.2; RePaint, Lugmayr et al. 2022, alg. 1).

    The sampler starts from the prior at t_max (the known region from the input noised to t_max) and,
    after every step t -> s, re-imposes the known region noised afresh to s: x_s <- m q_sample(x_0, s)
    + (1 - m) x_s. resample = U > 1 takes each step U times, drawing x_t ~ q(x_t | x_s) = N(alpha_{t|s}
    x_s, sigma_{t|s}^2 I) between the repeats (RePaint's resampling with jump length 1): U times the
    network calls, on the grid `schedule.sampling_times(steps)` (steps default: the model's sample_steps,
    else 50), with a sampler whose steps stand alone (`RESAMPLING_SAMPLERS`: ancestral, DDIM, ...).

    model: a DiffusionModel (ddpm, ncsn, score-sde, edm, dit, ...); x: (B, *model.spec.shape) in the
    data's space; mask: 1 (True) = known, 0 = generate, any shape broadcasting to x's, e.g. (1, 1, H, W)
    or (B, D); sampler, steps: as for `model.sample` (default: the model's config); cond: labels (B,) of a
    class-conditional model, guidance_scale: its classifier-free guidance w (default: the config's);
    every random draw uses `generator`; mask_blur: the Gaussian's sigma in pixels softening the mask's
    edge (images; 0: a hard edge; module docstring).
    Returns (B, *shape) on x's device, in x's dtype: the known values exactly x's (with mask_blur, those
    farther than the soft edge), the generated ones
    clamped to the data's range and quantized like `model.sample`. A mask of all ones returns a copy of x.

    >>> from genlab.data import DataSpec
    >>> from genlab.models.diffusion.model import DiffusionConfig
    >>> spec = DataSpec("toy", kind="vector", shape=(3,), value_range=(-math.inf, math.inf))
    >>> model = DiffusionModel(DiffusionConfig(hidden=(16,), steps=10, sample_steps=5), spec)
    >>> x, keep = torch.randn(4, 3), torch.tensor([[1, 1, 0]])  # generate the last coordinate
    >>> y = inpaint(model, x, keep, generator=torch.Generator().manual_seed(0))
    >>> y.shape, torch.equal(y[:, :2], x[:, :2])
    (torch.Size([4, 3]), True)
    """
    _check_model(model, "inpaint")
    x = _check_input(model, x)
    keep = _keep_mask(mask, x, model)
    if isinstance(resample, bool) or not isinstance(resample, int) or resample < 1:
        raise ConfigError(f"resample={resample!r} must be a positive integer (1: no resampling; RePaint uses 10)")
    if bool(keep.all()):
        return x.clone()
    return _edit(model, x, keep, t_start=None, steps=steps, sampler=sampler, generator=generator, cond=cond, resample=resample,
                 guidance_scale=guidance_scale, mask_blur=mask_blur)


def regenerate(
    model: DiffusionModel,
    x: Tensor,
    *,
    strength: float,
    sampler: str | None = None,
    steps: int | None = None,
    generator: torch.Generator | None = None,
    mask: Tensor | None = None,
    cond: Tensor | None = None,
    guidance_scale: float | None = None,
    mask_blur: float = 0.0,
) -> Tensor:
    """SDEdit (Meng et al. 2022, alg. 1): noise x to t_0 = `strength_to_time(model.schedule, strength)` by
    x_{t_0} = alpha(t_0) x_0 + sigma(t_0) eps, then sample back to the data with the model's sampler.

    strength in [0, 1] sets how much changes: 0 returns x unchanged (no network call); small values
    keep the input's layout and redraw its details; 1 draws a fresh sample, from the prior (it ignores x).
    steps counts the steps of a full trajectory from t_max (default: the model's sample_steps, else 50):
    SDEdit takes ceil(strength * steps) of them from t_0, so a step is as long as in a full sample (as in
    diffusers' img2img), and at most the grid steps below t_0 for DDPM schedules; strength 1 samples
    exactly as `model.sample(B, steps=steps)` does. With `mask` (1 = keep,
    0 = regenerate, as for `inpaint`), only the masked-out region changes: the known region is re-imposed,
    noised to each new time, after every step, and returned exactly (mask_blur > 0: softly, as `inpaint`).

    x: (B, *model.spec.shape) in the data's space; cond: labels (B,) of a class-conditional model,
    guidance_scale: its classifier-free guidance w (default: the config's).
    Returns (B, *shape) on x's device, in x's dtype, in the data's space (clamped and quantized like
    `model.sample`).

    >>> from genlab.data import DataSpec
    >>> from genlab.models.diffusion.model import DiffusionConfig
    >>> spec = DataSpec("toy", kind="vector", shape=(3,), value_range=(-math.inf, math.inf))
    >>> model = DiffusionModel(DiffusionConfig(hidden=(16,), steps=10, sample_steps=4), spec)
    >>> x = torch.randn(2, 3)
    >>> torch.equal(regenerate(model, x, strength=0.0), x)
    True
    >>> regenerate(model, x, strength=0.5, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 3])
    """
    _check_model(model, "regenerate")
    x = _check_input(model, x)
    keep = None if mask is None else _keep_mask(mask, x, model)
    strength = _check_strength(strength)
    if strength == 0.0 or (keep is not None and bool(keep.all())):
        return x.clone()
    schedule = model.schedule
    t_start: float | None = strength_to_time(schedule, strength)
    if t_start >= schedule.t_max:  # a fresh sample: start from the prior, as `model.sample` does
        t_start = None
    else:
        steps = partial_steps(model, steps, strength, t_start)
    return _edit(model, x, keep, t_start=t_start, steps=steps, sampler=sampler, generator=generator, cond=cond,
                 guidance_scale=guidance_scale, mask_blur=mask_blur)


def strength_to_time(schedule: NoiseSchedule, strength: float) -> float:
    """The time t_0 an SDEdit strength in (0, 1] starts from (Meng et al. 2022 take t_0 in (0, 1] of the SDE).

    strength * t_max for the DDPM grids (rounded to the grid, at least one step), VP, sub-VP and VE. For EDM,
    whose time is the noise level sigma in [sigma_min, sigma_max] = [0.002, 80], the point at `strength` along
    its sampling ramp, sigma = (sigma_min^(1/rho) + strength (sigma_max^(1/rho) - sigma_min^(1/rho)))^rho
    (Karras et al. 2022, eq. 5): strength * 80 would leave nothing of unit-scale data at strength 0.1.

    >>> from genlab.models.diffusion.schedules import DiscreteSchedule, EDMSchedule
    >>> strength_to_time(DiscreteSchedule.linear(steps=1000), 0.2504), round(strength_to_time(EDMSchedule(), 0.5), 3)
    (0.25, 2.515)
    """
    strength = _check_strength(strength)
    if strength == 0.0:
        raise ConfigError("strength=0 changes nothing and has no start time; regenerate returns x itself")
    if strength == 1.0:
        return float(schedule.t_max)
    if isinstance(schedule, EDMSchedule):
        low, high = schedule.sigma_min ** (1 / schedule.rho), schedule.sigma_max ** (1 / schedule.rho)
        return (low + strength * (high - low)) ** schedule.rho
    t = strength * schedule.t_max
    if schedule.discrete_steps is not None:
        n = schedule.discrete_steps
        return max(1, round(t * n)) / n
    if t <= schedule.t_min:
        raise ConfigError(
            f"strength={strength} maps to t={t:g}, not above the {schedule.name!r} schedule's last sampling time "
            f"t_min={schedule.t_min}; use a strength above {schedule.t_min / schedule.t_max:g}, or 0 to keep the input"
        )
    return t


def partial_steps(model: DiffusionModel, steps: int | None, strength: float, t_start: float) -> int:
    """SDEdit's steps: ceil(strength * the full trajectory's steps), at most the DDPM grid steps below t_start."""
    full = steps or model.config.sample_steps or DEFAULT_STEPS
    if isinstance(full, bool) or not isinstance(full, int) or full < 1:
        raise ConfigError(f"steps={steps!r} must be a positive integer (the steps of a full trajectory)")
    partial = max(1, math.ceil(round(strength * full, 9)))  # round: 0.3 * 10 is 3.0000000000000004
    if model.schedule.discrete_steps is not None:
        partial = min(partial, max(1, round(t_start * model.schedule.discrete_steps)))
    return partial


@torch.no_grad()
def _edit(
    model: DiffusionModel,
    x: Tensor,
    keep: Tensor | None,
    *,
    t_start: float | None,
    steps: int | None,
    sampler: str | None,
    generator: torch.Generator | None,
    cond: Tensor | None,
    resample: int = 1,
    guidance_scale: float | None = None,
    mask_blur: float = 0.0,
) -> Tensor:
    """Sample from t_start (None: from the prior at t_max) with the known region re-imposed after every
    step; returned in the data's space with the known values exactly x's (softly blended within a
    blurred mask's edge). x: (B, *shape)."""
    schedule = model.schedule
    weight: Tensor | None = None if keep is None else (soft_keep_mask(keep, mask_blur, model.spec) if mask_blur else keep)
    dtype = next(model.parameters()).dtype
    x0 = model.normalize(x.to(device=model.device, dtype=dtype))  # (B, *shape) in the model's space
    if t_start is None:
        x_start = schedule.prior_sample(tuple(x0.shape), generator=generator, device=x0.device, dtype=dtype)
        start_time = torch.tensor(schedule.t_max, dtype=torch.float64)
    else:
        start_time = torch.tensor(t_start, dtype=torch.float64)
        x_start = schedule.q_sample(x0, start_time, generator=generator)
    after_step = None
    if weight is not None:
        after_step = _reimpose_known(schedule, x0, weight.to(x0.device), generator)
        if t_start is None:
            x_start = after_step(x_start, start_time)
    if resample > 1:
        result = _resampled(
            model, x_start, t_start=t_start, steps=steps, sampler=sampler, generator=generator,
            cond=cond, after_step=after_step, resample=resample, guidance_scale=guidance_scale,
        )  # fmt: skip
    else:
        result = model.generate(
            x.shape[0], cond, generator, sampler=sampler, steps=steps, x_start=x_start, t_start=t_start, after_step=after_step,
            guidance_scale=guidance_scale,
        ).x
    out = model.to_data_space(result).to(device=x.device, dtype=x.dtype)
    if weight is None:
        return out
    if weight.dtype != torch.bool:  # a soft edge: blended, and exactly x where the weight is 1
        weight = weight.to(device=x.device, dtype=x.dtype)
        return torch.where(weight == 1, x, torch.lerp(out, x, weight))
    return torch.where(weight, x, out)


def _reimpose_known(
    schedule: NoiseSchedule, x0: Tensor, keep: Tensor, generator: torch.Generator | None
) -> Callable[[Tensor, Tensor], Tensor]:
    """after_step(x_t, t) = m q_sample(x_0, t) + (1 - m) x_t: the known region noised to t, with fresh noise
    at every call as in RePaint (Lugmayr et al. 2022, alg. 1); x0: (B, ...) normalised; keep: bool, or
    weights m in [0, 1] of a soft mask, broadcasting."""

    def after_step(x_t: Tensor, t: Tensor) -> Tensor:
        known = schedule.q_sample(x0, t, generator=generator)
        return torch.where(keep, known, x_t) if keep.dtype == torch.bool else torch.lerp(x_t, known, keep.to(x_t.dtype))

    return after_step


def _resampled(
    model: DiffusionModel,
    x_start: Tensor,
    *,
    t_start: float | None,
    steps: int | None,
    sampler: str | None,
    generator: torch.Generator | None,
    cond: Tensor | None,
    after_step: Callable[[Tensor, Tensor], Tensor] | None,
    resample: int,
    guidance_scale: float | None = None,
) -> Tensor:
    """RePaint's resampling (Lugmayr et al. 2022, alg. 1, jump length 1): each step t -> s is taken `resample`
    times, x_s noised back to t by x_t = alpha_{t|s} x_s + sigma_{t|s} z between the repeats; (B, ...)."""
    name = sampler or model.default_sampler
    if name not in RESAMPLING_SAMPLERS:
        raise ConfigError(
            f"resample > 1 (RePaint) repeats single steps, which sampler {name!r} does not take; "
            f"pass sampler= one of {', '.join(map(repr, RESAMPLING_SAMPLERS))}, or resample=1"
        )
    schedule = model.schedule
    times = schedule.sampling_times(steps or model.config.sample_steps or DEFAULT_STEPS, t_start=t_start, dtype=torch.float64)
    x, last_step = x_start, times.numel() - 2
    for i in range(last_step + 1):
        for repeat in range(resample):
            final = repeat == resample - 1
            x = model.generate(
                x.shape[0], cond, generator, sampler=name, times=times[i : i + 2], x_start=x,
                after_step=after_step, denoise_final=final and i == last_step, guidance_scale=guidance_scale,
            ).x  # fmt: skip
            if not final:
                scale, variance = schedule.transition(times[i + 1], times[i])
                noise = sample_standard_normal(x.shape, generator=generator, device=x.device, dtype=x.dtype)
                x = float(scale) * x + math.sqrt(float(variance)) * noise
    return x


def soft_keep_mask(keep: Tensor, blur: float, spec: DataSpec) -> Tensor:
    """A keep-mask (bool, broadcasting to (B, C, H, W)) with a soft edge: 1 - h_s, h_s = max(h, min(1, 2 G_blur * h))
    for the region to generate h = 1 - keep (module docstring): 0 on the region and its border pixels,
    rising smoothly to 1 over about 2 blur pixels outside it. Float, keep's shape."""
    if spec.kind != "image" or len(spec.shape) != 3:
        raise ConfigError(f"mask_blur softens an image mask's edge; {spec.name!r} is {spec.kind} data of shape "
                          f"{tuple(spec.shape)}: use mask_blur=0")
    if not (isinstance(blur, (int, float)) and math.isfinite(blur) and blur >= 0):
        raise ConfigError(f"mask_blur={blur!r} must be a number of pixels >= 0 (0: a hard edge; e.g. 1.5)")
    hole = (~keep).float()
    soft = torch.maximum(hole, (2.0 * gaussian_blur(hole, float(blur))).clamp(max=1.0))
    return 1.0 - soft


def seam_energy(x: Tensor, keep: Tensor, width: int = 3) -> Tensor:
    """How visible the border of an edited region is: the mean squared finite-difference gradient
    |x(i+1, j) - x(i, j)|^2 + |x(i, j+1) - x(i, j)|^2 over the pixels within `width` pixels of the
    border between keep (True) and the generated region, per image, (B,). A step of height d at the
    border adds d^2; spread over k pixels by a blurred mask it adds d^2 / k.
    x: (B, C, H, W); keep: bool broadcasting to it."""
    keep = torch.as_tensor(keep, device=x.device).expand_as(x)
    hole = (~keep).float()
    # pixels within `width` of the border: max-pooling dilates either region, their overlap is the band
    pool = lambda m: torch.nn.functional.max_pool2d(m, 2 * width + 1, stride=1, padding=width)  # noqa: E731
    band = (pool(hole) * pool(1.0 - hole))[..., :-1, :-1]
    dy = (x[..., 1:, :-1] - x[..., :-1, :-1]) ** 2
    dx = (x[..., :-1, 1:] - x[..., :-1, :-1]) ** 2
    return ((dx + dy) * band).flatten(1).sum(1) / band.flatten(1).sum(1).clamp_min(1.0)


def step_to_strength(model: DiffusionModel, step: int) -> float:
    """The SDEdit strength that starts at diffusion step `step` of a DDPM grid of T steps (t = step / T):
    step / T. For `--from-step`; continuous schedules take a strength."""
    steps = model.schedule.discrete_steps
    if steps is None:
        raise ConfigError(f"--from-step counts the steps of a discrete (DDPM) schedule; {model.name!r} has the continuous "
                          f"{model.schedule.name!r} schedule: pass --strength in (0, 1] instead")
    if isinstance(step, bool) or not isinstance(step, int) or not 1 <= step <= steps:
        raise ConfigError(f"--from-step {step!r} must be a step in 1..{steps} of the model's {steps}-step schedule")
    return step / steps


# ================================================================================================
# Checks
# ================================================================================================
def _check_model(model: Any, what: str) -> None:
    if getattr(model, "needs_image_condition", False):
        raise ConfigError(f"{what} needs a diffusion model of the images themselves; '{model.name}' generates given a "
                          "low-resolution image (use `genlab upscale`)")
    if not isinstance(model, DiffusionModel):
        name = getattr(model, "name", "") or type(model).__name__
        raise ConfigError(
            f"{what} needs a diffusion model (ddpm, ncsn, score-sde, edm, dit), got {name!r}; "
            "train one, e.g. `genlab train ddpm --data digits`, and load it with genlab.load"
        )


def _check_input(model: DiffusionModel, x: Any) -> Tensor:
    """x as a floating tensor of shape (B, *spec.shape), with values in the data's range."""
    spec = model.spec
    x = torch.as_tensor(x)
    if not x.is_floating_point():
        x = x.to(torch.get_default_dtype())
    expected = "(B, " + ", ".join(map(str, spec.shape)) + ")"
    if tuple(x.shape[1:]) != tuple(spec.shape) or x.shape[0] < 1:
        hint = "; add the batch dimension, x[None]" if tuple(x.shape) == tuple(spec.shape) else ""
        raise DataError(f"x has shape {tuple(x.shape)}, but this model's data {spec.name!r} takes {expected}{hint}")
    if not bool(torch.isfinite(x).all()):
        raise DataError("x holds NaN or infinite values; pass finite data")
    low, high = spec.value_range
    if math.isfinite(low) and math.isfinite(high):
        tolerance = 1e-6 * (high - low)
        seen_low, seen_high = float(x.min()), float(x.max())
        if seen_low < low - tolerance or seen_high > high + tolerance:
            raise DataError(
                f"x has values in [{seen_low:g}, {seen_high:g}], outside the data's range [{low:g}, {high:g}]; "
                "pass x in the data's space (e.g. 8-bit pixels / 255)"
            )
    return x


def _keep_mask(mask: Any, x: Tensor, model: DiffusionModel) -> Tensor:
    """The mask as a bool tensor that broadcasts to x (B, *shape): True = known."""
    if isinstance(model, LatentDiffusionModel):
        # its samples are decoded from latent codes: a pixel cannot be kept while the code around it changes
        raise ConfigError(f"'{model.name}' diffuses in its autoencoder's latent space, so a pixel mask cannot be kept; "
                          "regenerate the whole image (leave out --mask, SDEdit) or inpaint with a pixel-space diffusion run")  # fmt: skip
    spec = model.spec
    mask = torch.as_tensor(mask, device=x.device)
    example = (1, 1, *spec.shape[1:]) if spec.kind == "image" and len(spec.shape) == 3 else (1, *spec.shape)
    try:
        fits = mask.dim() <= x.dim() and torch.broadcast_shapes(mask.shape, x.shape) == x.shape
    except RuntimeError:
        fits = False
    if not fits:
        raise DataError(
            f"mask has shape {tuple(mask.shape)}, which does not broadcast to x's shape {tuple(x.shape)}; "
            f"pass e.g. {example} (one mask for all) or {(x.shape[0], *example[1:])} (one per example)"
        )
    if mask.dtype == torch.bool:
        return mask
    if not bool(((mask == 0) | (mask == 1)).all()):
        bad = mask[(mask != 0) & (mask != 1)].flatten()[:3].tolist()
        raise DataError(
            f"mask must hold only 0 (generate) and 1 (keep), got values such as {bad}; "
            "threshold it, e.g. mask = (mask > 0.5).float()"
        )
    return mask == 1


def _check_strength(strength: Any) -> float:
    try:
        value = float(strength)
    except (TypeError, ValueError):
        value = math.nan
    if not 0.0 <= value <= 1.0:  # also refuses NaN
        raise ConfigError(f"strength={strength!r} must lie in [0, 1] (0 keeps the input, 1 draws a fresh sample)")
    return value


# ================================================================================================
# Image files (the CLI's `genlab inpaint`)
# ================================================================================================
def _image_shape(spec: DataSpec) -> tuple[int, int, int]:
    low, high = spec.value_range
    if spec.kind != "image" or len(spec.shape) != 3 or spec.shape[0] not in (1, 3) or not (math.isfinite(low) and math.isfinite(high)):
        raise DataError(
            f"image files need a model of grayscale or RGB images; this model's data {spec.name!r} is "
            f"{spec.kind} data of shape {tuple(spec.shape)}; use inpaint/regenerate from Python with tensors"
        )
    channels, height, width = spec.shape
    return channels, height, width


def _open_picture(path: str | os.PathLike, what: str):
    from PIL import Image

    path = Path(path)
    if not path.is_file():
        raise DataError(f"{what} file '{path}' does not exist; check the path")
    try:
        picture = Image.open(path)
        picture.load()
    except Exception as err:  # Pillow raises several types for broken files
        raise DataError(f"cannot read {what} file '{path}' ({err}); pass a PNG or JPEG image") from None
    return picture


def read_image(path: str | os.PathLike, spec: DataSpec) -> Tensor:
    """An image file (PNG, JPEG, anything Pillow reads) as a batch of one, (1, C, H, W), in the data's space of
    `spec`: converted to grayscale (C = 1) or RGB (C = 3), resized to H x W (bicubic, antialiased when
    shrinking), its 8-bit values p mapped to low + (p / 255)(high - low) of spec.value_range and
    quantized to spec.levels."""
    from PIL import Image

    channels, height, width = _image_shape(spec)
    picture = _open_picture(path, "image").convert("L" if channels == 1 else "RGB")
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BICUBIC)
    pixels = torch.from_numpy(np.asarray(picture, dtype=np.uint8).copy()).float() / 255.0
    pixels = pixels.reshape(height, width, channels).permute(2, 0, 1)[None]  # (H, W[, C]) -> (1, C, H, W)
    low, high = spec.value_range
    x = low + pixels * (high - low)
    return quantize(x, spec) if spec.levels else x


def read_mask(path: str | os.PathLike, spec: DataSpec) -> Tensor:
    """A mask image file as the keep-mask `inpaint` takes, (1, 1, H, W) bool. White marks the region to
    regenerate (False), black the region to keep (True), as in most inpainting tools: the picture is
    converted to grayscale, resized to H x W (bilinear, antialiased when shrinking) and thresholded at 128."""
    from PIL import Image

    _, height, width = _image_shape(spec)
    picture = _open_picture(path, "mask").convert("L")
    if picture.size != (width, height):
        picture = picture.resize((width, height), Image.Resampling.BILINEAR)
    regenerate_here = torch.from_numpy(np.asarray(picture, dtype=np.uint8) >= 128)  # (H, W)
    if not bool(regenerate_here.any()):
        raise DataError(
            f"mask '{path}' has no white pixel, so nothing to regenerate at {height}x{width}; "
            "paint the region to regenerate white (black keeps)"
        )
    return ~regenerate_here[None, None]


def save_edit_grid(
    path: str | os.PathLike, x: Tensor, results: Tensor, spec: DataSpec, *, mask: Tensor | None = None,
    per_row: int | None = None,
) -> Path:
    """Write one input, its mask (white = regenerated) and its results side by side as a PNG, with
    `genlab.viz.save_image_grid`: rows of input | mask | `per_row` results (default RESULTS_PER_ROW;
    one row per class when the results are grouped by class), later rows blank under the input and
    mask, images enlarged (nearest neighbour) to at least MIN_TILE_PIXELS. x: (1, C, H, W) or
    (C, H, W); results: (K, C, H, W); mask: a keep-mask broadcasting to (1, C, H, W). Returns the path."""
    from genlab.viz import save_image_grid

    _image_shape(spec)
    low, high = spec.value_range
    x = x.detach().float().cpu().reshape(spec.shape)
    results = results.detach().float().cpu()
    head = [x]
    if mask is not None:
        keep = torch.as_tensor(mask).cpu().bool().expand(1, *spec.shape)[0]
        head.append(torch.where(keep, low, high).float())  # the region to regenerate in white
    blank = torch.full_like(x, high)
    per_row = min(len(results), per_row or RESULTS_PER_ROW)
    tiles: list[Tensor] = []
    for first in range(0, len(results), per_row):
        row = list(results[first : first + per_row])
        tiles += (head if first == 0 else [blank] * len(head)) + row + [blank] * (per_row - len(row))
    upscale = max(1, math.ceil(MIN_TILE_PIXELS / max(spec.shape[1:])))
    return save_image_grid(torch.stack(tiles), path, nrow=len(head) + per_row, value_range=spec.value_range, upscale=upscale)


def edit_image_file(
    model: DiffusionModel,
    image: str | os.PathLike,
    *,
    out: str | os.PathLike,
    mask: str | os.PathLike | None = None,
    strength: float | None = None,
    n: int = 1,
    steps: int | None = None,
    sampler: str | None = None,
    seed: int = 0,
    classes: str | int | Sequence[int] | None = None,
    guidance_scale: float | None = None,
    mask_blur: float = 0.0,
    from_step: int | None = None,
) -> Path:
    """What `genlab inpaint` does: read `image` (and `mask`: white = regenerate) into the model's shape, make
    n variations and write the grid input | mask | results to `out` (PNG); returns its path.

    With a mask and no strength (or 1): `inpaint` the white region. With a mask and strength < 1: `regenerate`
    only that region, from the input noised to the strength's time. Without a mask: `regenerate` the whole
    image at strength (default 0.5). Every draw comes from torch.Generator().manual_seed(seed).
    classes (class-conditional models, see `genlab.apps.sampling.resolve_classes`): n variations of each
    chosen class, one grid row per class when there are several; guidance_scale: classifier-free
    guidance towards them; sampler "auto" (or None): the model's own; mask_blur: the mask's soft edge
    in pixels (`inpaint`); from_step: start at that step of a DDPM grid instead of a strength
    (`step_to_strength`)."""
    _check_model(model, "inpainting")
    if isinstance(n, bool) or not isinstance(n, int) or n < 1:
        raise ConfigError(f"n={n!r} must be a positive integer (the number of variations)")
    chosen = resolve_classes(model, classes)
    options = sampling_options(model, sampler=sampler, steps=steps, guidance_scale=guidance_scale, classes=chosen)
    cond = None if chosen is None else class_labels(chosen, n)
    x = read_image(image, model.spec)
    keep = None if mask is None else read_mask(mask, model.spec)
    batch = x.expand(n if cond is None else len(cond), *x.shape[1:])
    generator = torch.Generator().manual_seed(seed)
    if from_step is not None:
        if strength is not None:
            raise ConfigError("give --strength or --from-step, not both: a step is a strength of step / T")
        strength = step_to_strength(model, from_step)
    if keep is None and mask_blur:
        raise ConfigError("--mask-blur softens the edge of --mask; give a mask, or leave --mask-blur out")
    if keep is not None and (strength is None or _check_strength(strength) == 1.0):
        results = inpaint(model, batch, keep, generator=generator, cond=cond, mask_blur=mask_blur, **options)
    else:
        strength = 0.5 if strength is None else strength
        results = regenerate(model, batch, strength=strength, generator=generator, mask=keep, cond=cond, mask_blur=mask_blur, **options)
    return save_edit_grid(out, x, results, model.spec, mask=keep, per_row=n if chosen is not None and len(chosen) > 1 else None)
