"""Hand-off between two diffusion models of the same data: the first takes the reverse process from
noise down to a time, the second finishes it (e.g. a model good at layout, then one good at detail).

With `at` = a in (0, 1), the share of the way from data to noise where the second takes over
(SDEdit's strength, `editing.strength_to_time`): the first model samples from its prior at t_max
down to t_1 = strength_to_time(first.schedule, a), giving x_1 = alpha_1 x_0 + sigma_1 eps in its
normalised space. The second continues from the time t_2 of the same signal-to-noise ratio,
lambda_2(t_2) = lambda_1(t_1) (`time_at_log_snr`; the nearest step of a DDPM grid), from
x_2 = (alpha_2(t_2) / alpha_1(t_1)) x_1 = alpha_2 x_0 + sigma_2 eps: the same noisy sample on the
second model's scale. Both models must normalise the data alike (images always do; vectors only when
fitted on the same data). Each takes its share of a full trajectory's steps.
"""

from __future__ import annotations

import torch
from torch import Tensor

from genlab.apps.editing import DEFAULT_STEPS, partial_steps, strength_to_time
from genlab.errors import ConfigError
from genlab.models.diffusion.model import DiffusionModel

__all__ = ["check_hand_off", "hand_off"]


def check_hand_off(first: object, second: object, at: float) -> None:
    """A ConfigError unless `first` can hand off to `second` at `at` (module docstring)."""
    for role, model in (("the first", first), ("--then", second)):
        if not isinstance(model, DiffusionModel) or model.diffusion_spec is not model.spec or getattr(model, "needs_image_condition", False):
            name = getattr(model, "name", type(model).__name__)
            raise ConfigError(f"a hand-off runs two diffusion models in the data's own space; {role} run is {name!r}"
                              + (" (it diffuses latent codes)" if isinstance(model, DiffusionModel) else ""))
    if tuple(first.spec.shape) != tuple(second.spec.shape) or tuple(first.spec.value_range) != tuple(second.spec.value_range):
        raise ConfigError(f"the two runs model different data: shape {tuple(first.spec.shape)} in {first.spec.value_range} "
                          f"and {tuple(second.spec.shape)} in {second.spec.value_range}; hand off between runs on the same data")
    same_scale = torch.allclose(first.data_shift.cpu(), second.data_shift.cpu(), rtol=1e-3, atol=1e-4) and torch.allclose(
        first.data_scale.cpu(), second.data_scale.cpu(), rtol=1e-3, atol=1e-4)
    if not same_scale:
        raise ConfigError("the two runs standardise the data differently (their training splits' mean and std differ); "
                          "hand off between runs trained on the same data")
    if not (isinstance(at, (int, float)) and 0.0 < at < 1.0):
        raise ConfigError(f"--at {at!r} must lie strictly between 0 (the first run alone) and 1 (the second alone), e.g. 0.5")


@torch.no_grad()
def hand_off(first: DiffusionModel, second: DiffusionModel, n: int, *, at: float, cond: Tensor | None = None,
             generator: torch.Generator | None = None, sampler: str | None = None, steps: int | None = None,
             guidance_scale: float | None = None) -> Tensor:
    """n samples (n, *shape) in the data's space: `first` from noise to the time at share `at` of the
    way, `second` from there to the data (module docstring). cond: labels (n,) for two
    class-conditional runs of the same classes; sampler, steps (of a full trajectory), guidance_scale:
    as `model.sample`, for both (default: each model's own)."""
    check_hand_off(first, second, at)
    if cond is not None and not (first.num_classes and first.num_classes == second.num_classes):
        raise ConfigError("labels need two class-conditional runs with the same classes; "
                          f"they have {first.num_classes or 'none'} and {second.num_classes or 'none'}")
    t_first = strength_to_time(first.schedule, at)
    full = steps or first.config.sample_steps or DEFAULT_STEPS
    grid = first.schedule.sampling_times(full, dtype=torch.float64)
    times = torch.cat([grid[grid > t_first * (1 + 1e-9)], grid.new_tensor([t_first])])
    if times.numel() < 2:
        times = grid.new_tensor([first.schedule.t_max, t_first])
    x = first.generate(n, cond, generator, sampler=sampler, times=times, denoise_final=False, guidance_scale=guidance_scale).x
    t1 = torch.tensor([t_first], dtype=torch.float64)
    t2 = second.schedule.time_at_log_snr(first.schedule.log_snr(t1))
    if second.schedule.discrete_steps is not None:  # a DDPM grid: its nearest step
        grid_steps = second.schedule.discrete_steps
        t2 = torch.tensor([max(1, round(float(t2) * grid_steps)) / grid_steps], dtype=torch.float64)
    t_second = float(t2)
    x = x * float(second.schedule.alpha(t2) / first.schedule.alpha(t1))
    result = second.generate(n, cond, generator, sampler=sampler, steps=partial_steps(second, steps, at, t_second),
                             x_start=x.to(second.device), t_start=t_second, guidance_scale=guidance_scale).x
    return second.to_data_space(result)
