"""Samplers of diffusion models: each turns a denoiser and a forward process into draws from the data.

A sampler never knows which network it calls. It receives a denoiser

    eps_fn(x_t: Tensor (B, ...), t: Tensor (B,)) -> eps_hat (B, ...),

the prediction of the noise in x_t = alpha(t) x_0 + sigma(t) eps, and a `NoiseSchedule`; from them

    x0_hat = (x_t - sigma(t) eps_hat) / alpha(t),      score(x_t, t) = -eps_hat / sigma(t).

The reverse-time SDE and the probability-flow ODE of the forward SDE dx = f(t) x dt + g(t) dW are
(Song et al. 2021, eq. 6 and 13)

    dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar,        dx/dt = f(t) x - g(t)^2 score(x, t) / 2
                                                                       = f(t) x + g(t)^2 eps_hat / (2 sigma(t)).

A sampler is a step rule (a `StepRule`: the update x_t -> x_s for one pair of times, with whatever
state a multistep method keeps between steps, as a diffusers scheduler's `set_timesteps` and `step`)
registered with `register_sampler` under a name, a summary, its default number of steps and its
defaults. One driver (`Sampler.__call__`) runs every rule, so every sampler takes `(eps_fn, schedule,
shape)` and the same keywords:

- `steps` or an explicit decreasing `times` tensor (default `schedule.sampling_times(steps)`);
- `x_start` with `t_start` to start from a given x_t (SDEdit, Meng et al. 2022: noise an image to
  t_start with `schedule.q_sample`, then sample from there); without x_start the start is drawn from
  N(0, (alpha^2 + sigma^2)(t_start) I), the prior `schedule.prior_sample` at t_max;
- `generator`, `device`, `dtype` (every random draw uses the generator: same seed, same numbers);
- `after_step(x, t_next) -> x`, called after every step (inpainting re-imposes the known region noised to t_next);
- `clip_denoised=(low, high)`: clamp x0_hat to the data range, and use the eps consistent with the
  clamped x0_hat, (x_t - alpha clamp(x0_hat)) / sigma, wherever the algorithm uses the denoiser;
- `denoise_final`: where the last time still has noise (sigma > 0, as for VP at t_min = 1e-3), return
  Tweedie's estimate x0_hat = E[x_0 | x_t] there, at the cost of one more call (Efron 2011; the "denoising
  step" of Song & Ermon 2019 and Jolicoeur-Martineau et al. 2021);
- `return_trajectory`: keep x at the start and after each step;

and the options of its rule (eta, s_churn, corrector_steps, ...). They return `SampleResult(x, nfe,
trajectory)`, nfe counting the calls of eps_fn (each on the whole batch). All run under torch.no_grad(),
except the divergence in `ode_log_likelihood`. Adding a sampler is one `StepRule` subclass under one
`@register_sampler(...)`; the CLI's choices, the model's config and the editing tools read `SAMPLERS`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any, Callable, ClassVar, Iterator, Sequence

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.models.diffusion.schedules import NoiseSchedule, expand_like
from genlab.nn.divergence import DIVERGENCE_METHODS, PROBE_KINDS, divergence, sample_probe
from genlab.nn.distributions import sample_standard_normal

__all__ = [
    "SampleResult",
    "LikelihoodResult",
    "StepRule",
    "Sampler",
    "register_sampler",
    "ancestral_sample",
    "ddim_sample",
    "ddim_invert",
    "dpm_solver_sample",
    "dpm_solver_sde_sample",
    "annealed_langevin_sample",
    "euler_maruyama_sample",
    "predictor_corrector_sample",
    "heun_sample",
    "ode_sample",
    "ode_log_likelihood",
    "SAMPLERS",
    "get_sampler",
]

EpsFn = Callable[[Tensor, Tensor], Tensor]
AfterStep = Callable[[Tensor, Tensor], Tensor]


@dataclass(frozen=True)
class SampleResult:
    """x: the samples (B, ...); nfe: calls of eps_fn made; trajectory: x at the start and after each step, or None."""

    x: Tensor
    nfe: int
    trajectory: list[Tensor] | None = None


@dataclass(frozen=True)
class LikelihoodResult:
    """log_prob: log p(x_0) in nats (B,); nfe: calls of eps_fn; latent: x at t_max (B, ...);
    prior_log_prob: log p_{t_max}(latent) (B,), the part of log_prob the prior gives."""

    log_prob: Tensor
    nfe: int
    latent: Tensor
    prior_log_prob: Tensor


# ================================================================================================
# What every sampler shares
# ================================================================================================
class _Denoiser:
    """eps_fn with a call counter and the optional clamp of x0_hat; t is a (B,) tensor of one time."""

    def __init__(self, eps_fn: EpsFn, schedule: NoiseSchedule, clip_denoised: tuple[float, float] | None) -> None:
        if clip_denoised is not None and not (len(clip_denoised) == 2 and clip_denoised[0] < clip_denoised[1]):
            raise ConfigError(f"clip_denoised={clip_denoised!r} must be (low, high) with low < high, e.g. (-1.0, 1.0)")
        self.eps_fn, self.schedule, self.clip_denoised = eps_fn, schedule, clip_denoised
        self.nfe = 0

    def __call__(self, x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        """(eps_hat, x0_hat) at (x, t), both (B, ...)."""
        eps = self.eps_fn(x, t).to(x.dtype)
        self.nfe += 1
        x0 = self.schedule.x0_from_eps(x, t, eps)
        if self.clip_denoised is not None:
            x0 = x0.clamp(*self.clip_denoised)
            sigma = expand_like(self.schedule.sigma(t).to(x.dtype), x)
            # where sigma = 0 the state is x_0 itself and eps cannot be recovered from x0_hat
            eps = torch.where(sigma > 0, self.schedule.eps_from_x0(x, t, x0), eps)
        return eps, x0

    def score(self, x: Tensor, t: Tensor) -> Tensor:
        """score(x, t) = -eps_hat / sigma(t), (B, ...)."""
        eps, _ = self(x, t)
        return -eps / expand_like(self.schedule.sigma(t).to(x.dtype), x)

    def ode_drift(self, x: Tensor, t: Tensor) -> Tensor:
        """dx/dt = f(t) x + g(t)^2 eps_hat / (2 sigma(t)) of the probability-flow ODE."""
        eps, _ = self(x, t)
        return _ode_drift(self.schedule, x, t, eps)


def _ode_drift(schedule: NoiseSchedule, x: Tensor, t: Tensor, eps: Tensor) -> Tensor:
    f = schedule.drift(t).to(x.dtype)
    eps_coefficient = (schedule.diffusion_squared(t) / (2.0 * schedule.sigma(t))).to(x.dtype)
    return expand_like(f, x) * x + expand_like(eps_coefficient, x) * eps


def _time_dtype(dtype: torch.dtype) -> torch.dtype:
    return torch.float64 if dtype == torch.float64 else torch.float32


def _noise(x: Tensor, generator: torch.Generator | None) -> Tensor:
    return sample_standard_normal(x.shape, generator=generator, device=x.device, dtype=x.dtype)


def _start(
    schedule: NoiseSchedule,
    shape: Sequence[int] | None,
    times: Tensor,
    *,
    x_start: Tensor | None,
    generator: torch.Generator | None,
    device: torch.device | str | None,
    dtype: torch.dtype | None,
    min_times: int = 2,
) -> tuple[Tensor, Tensor]:
    """The first state x (B, ...) and the decreasing times (n + 1,) on x's device, in float32 or float64."""
    if x_start is not None:
        if shape is not None and tuple(shape) != tuple(x_start.shape):
            raise ConfigError(f"shape={tuple(shape)} differs from x_start's shape {tuple(x_start.shape)}; pass one of them")
        x_start = x_start.to(device=device if device is not None else x_start.device, dtype=dtype or x_start.dtype)
        device, dtype = x_start.device, x_start.dtype
    elif shape is None:
        raise ConfigError("pass the shape of the batch to draw, e.g. shape=(16, 2), or x_start to start from")
    dtype = dtype or torch.get_default_dtype()
    times = torch.as_tensor(times, dtype=torch.float64).to(device=device, dtype=_time_dtype(dtype))
    if times.dim() != 1 or times.numel() < min_times:
        raise ConfigError(f"times must be a 1-D tensor of at least {min_times} decreasing times, got shape {tuple(times.shape)}")
    if not bool((times[:-1] > times[1:]).all()):
        raise ConfigError("times must be strictly decreasing (from the noisiest time down to the data)")
    if x_start is not None:
        return x_start, times
    if math.isclose(float(times[0]), schedule.t_max, rel_tol=1e-6):
        x = schedule.prior_sample(tuple(shape), generator=generator, device=device, dtype=dtype)
    else:  # the prior's rule at an earlier time: N(0, (alpha^2 + sigma^2) I) for unit-scale data
        t0 = times[:1].cpu().double()
        std = float(torch.sqrt(schedule.alpha(t0) ** 2 + schedule.sigma(t0) ** 2))
        x = std * sample_standard_normal(tuple(shape), generator=generator, device=device, dtype=dtype)
    return x, times


def _default_steps(schedule: NoiseSchedule, default: int, t_start: float | None) -> int:
    """A sampler's default number of steps, at most the DDPM grid steps below t_start: a default may
    exceed a short grid (a 30-step schedule), where steps asked for explicitly are refused instead."""
    if schedule.discrete_steps is None:
        return default
    below = round((schedule.t_max if t_start is None else t_start) / schedule.t_max * schedule.discrete_steps)
    return max(1, min(default, below))


def _at(t: Tensor, x: Tensor) -> Tensor:
    """A time (0-dim) as the (B,) vector eps_fn takes."""
    return t.reshape(1).repeat(x.shape[0])


def _finish(
    denoiser: _Denoiser, x: Tensor, t_last: Tensor, denoise_final: bool, trajectory: list[Tensor] | None
) -> SampleResult:
    if denoise_final and float(denoiser.schedule.sigma(t_last)) > 0:
        _, x = denoiser(x, _at(t_last, x))
        if trajectory is not None:
            trajectory.append(x)
    return SampleResult(x=x, nfe=denoiser.nfe, trajectory=trajectory)


def _smallest_noisy_time(schedule: NoiseSchedule) -> float:
    """t_min where sigma(t_min) > 0; else (discrete schedules, sigma(0) = 0) the first grid time 1 / N."""
    if float(schedule.sigma(torch.tensor(schedule.t_min, dtype=torch.float64))) > 0:
        return schedule.t_min
    if schedule.discrete_steps is not None:
        return 1.0 / schedule.discrete_steps
    raise ConfigError(f"the {schedule.name!r} schedule has sigma(t_min) = 0; pass times ending at a time with noise")


def _geometric_levels(schedule: NoiseSchedule, levels: int, t_start: float) -> Tensor:
    """(levels,) times from t_start to the smallest noisy time with sigma / alpha geometric (log-SNR uniform)."""
    t_end = _smallest_noisy_time(schedule)
    ends = torch.tensor([t_start, t_end], dtype=torch.float64)
    if levels == 1:
        return ends[:1]
    log_snr_start, log_snr_end = schedule.log_snr(ends).tolist()
    targets = torch.linspace(log_snr_start, log_snr_end, levels, dtype=torch.float64)
    times = schedule.time_at_log_snr(targets, t_low=t_end, t_high=t_start)
    times[0], times[-1] = t_start, t_end
    return times


def _noisy_times(schedule: NoiseSchedule, times: Tensor) -> Tensor:
    """times whose last entry has sigma > 0: a last time with sigma = 0 (where score = -eps/sigma is
    undefined) is replaced by the smallest time with noise, or dropped if the one before is already there."""
    if float(schedule.sigma(times[-1:].cpu())) > 0:
        return times
    t_end = _smallest_noisy_time(schedule)
    if float(times[-2]) > t_end * (1 + 1e-6):
        return torch.cat([times[:-1], times.new_tensor([t_end])])
    if times.numel() < 3:
        raise ConfigError(f"times {times.tolist()} leave no step above the smallest noisy time {t_end}")
    return times[:-1]


# ================================================================================================
# The step rule and the one driver
# ================================================================================================
class StepRule:
    """One sampler's update x_t -> x_s, and any state it keeps between updates.

    The driver (`Sampler.__call__`) builds the rule from its options, asks it for the times when the
    caller gave none (`grid`), lets it adjust them and reset its state (`set_times`), then for each
    (t, s) of `updates(times)` calls `step(denoiser, x, t, s, generator)` and after it the caller's
    after_step(x, s). A subclass writes `step` (and `__init__` for its options); the other hooks have
    the usual defaults: the schedule's grid of the sampler's default steps, pairs of consecutive times.
    `denoiser(x, t)` returns (eps_hat, x0_hat) and counts the call; t, s are (B,) vectors of one time.
    """

    min_times: ClassVar[int] = 2  # times the rule needs: a pair for one step

    def grid(self, schedule: NoiseSchedule, steps: int | None, t_start: float | None, default_steps: int) -> Tensor:
        """The decreasing times when the caller passed none: `schedule.sampling_times(steps)`, steps
        defaulting to the sampler's, at most the DDPM grid steps below t_start (`_default_steps`)."""
        steps = steps if steps is not None else _default_steps(schedule, default_steps, t_start)
        return schedule.sampling_times(steps, t_start=t_start)

    def set_times(self, schedule: NoiseSchedule, times: Tensor) -> Tensor:
        """The times the run will walk (by default those given), and the rule's state reset for them."""
        return times

    def updates(self, times: Tensor) -> Iterator[tuple[Tensor, Tensor, bool]]:
        """(t, s, keep) for each update: t -> s, keep: whether the trajectory records the state after it."""
        for i in range(times.numel() - 1):
            yield times[i], times[i + 1], True

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        """x_s from x_t, (B, ...)."""
        raise NotImplementedError


@dataclass(frozen=True, eq=False)
class Sampler:
    """A registered sampler: its name, a line of summary, its step rule and what the driver needs of it.

    default_steps: int, or a function of the schedule (ancestral sampling walks the DDPM grid);
    defaults: options given to the rule unless the caller passes them (the SDE variant of DPM-Solver
    is eta = 1); config_options: options a model takes from its config (`DiffusionConfig.eta`);
    resamples: whether each update depends on (x, t, s) alone, so that a single step can be taken by
    itself and repeated (RePaint's resampling in `apps/editing.py`).

    Called as sampler(eps_fn, schedule, shape, **keywords) -> SampleResult (the module's docstring).
    """

    name: str
    summary: str
    rule: type[StepRule]
    default_steps: int | Callable[[NoiseSchedule], int]
    defaults: dict[str, Any] = field(default_factory=dict)
    config_options: tuple[str, ...] = ()
    resamples: bool = False

    def __post_init__(self) -> None:
        object.__setattr__(self, "__doc__", f"{self.summary}.\n\n{self.rule.__doc__ or ''}")

    def __repr__(self) -> str:
        return f"Sampler({self.name!r}, {self.rule.__name__})"

    @torch.no_grad()
    def __call__(
        self,
        eps_fn: EpsFn,
        schedule: NoiseSchedule,
        shape: Sequence[int] | None = None,
        *,
        steps: int | None = None,
        times: Tensor | None = None,
        x_start: Tensor | None = None,
        t_start: float | None = None,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
        after_step: AfterStep | None = None,
        clip_denoised: tuple[float, float] | None = None,
        denoise_final: bool = True,
        return_trajectory: bool = False,
        **options: Any,
    ) -> SampleResult:
        rule = self.rule(**{**self.defaults, **options})
        denoiser = _Denoiser(eps_fn, schedule, clip_denoised)
        if times is None:
            default = self.default_steps if isinstance(self.default_steps, int) else self.default_steps(schedule)
            times = rule.grid(schedule, steps, t_start, default)
        elif t_start is not None and not math.isclose(float(times[0]), float(t_start), rel_tol=1e-6):
            raise ConfigError(f"t_start={t_start} differs from times[0]={float(times[0])}; pass one of them")
        x, times = _start(
            schedule, shape, times, x_start=x_start, generator=generator, device=device, dtype=dtype, min_times=rule.min_times
        )
        times = rule.set_times(schedule, times)
        trajectory = [x] if return_trajectory else None
        for t, s, keep in rule.updates(times):
            t, s = _at(t, x), _at(s, x)
            x = rule.step(denoiser, x, t, s, generator)
            if after_step is not None:
                x = after_step(x, s)
            if keep and trajectory is not None:
                trajectory.append(x)
        return _finish(denoiser, x, times[-1], denoise_final, trajectory)


SAMPLERS: dict[str, Sampler] = {}


def register_sampler(
    name: str,
    *,
    summary: str,
    default_steps: int | Callable[[NoiseSchedule], int],
    defaults: dict[str, Any] | None = None,
    config_options: tuple[str, ...] = (),
    resamples: bool = False,
) -> Callable[[type[StepRule]], type[StepRule]]:
    """Class decorator: register a `StepRule` as the sampler `name` (fields as `Sampler`'s); one rule may
    carry several names with different defaults."""

    def decorate(rule: type[StepRule]) -> type[StepRule]:
        if name in SAMPLERS:
            raise ConfigError(f"sampler name {name!r} is registered twice ({SAMPLERS[name].rule.__name__}, {rule.__name__})")
        SAMPLERS[name] = Sampler(name, summary, rule, default_steps, dict(defaults or {}), tuple(config_options), resamples)
        return rule

    return decorate


# ================================================================================================
# 1-2. Ancestral sampling, DDIM and DPM-Solver++
# ================================================================================================
@register_sampler(
    "ancestral", summary="DDPM ancestral sampling (Ho et al. 2020, alg. 2)",
    default_steps=lambda schedule: schedule.discrete_steps or 1000, resamples=True,
)  # fmt: skip
class AncestralStep(StepRule):
    """DDPM ancestral sampling (Ho et al. 2020, alg. 2) on the full grid or any sub-sequence of times.

    Each step t -> s draws x_s ~ q(x_s | x_t, x0_hat(x_t, t)), the posterior of the forward process given
    the denoised estimate (`NoiseSchedule.posterior`: Ho et al. eq. 6-7 for any two times, with the
    variance beta_tilde). The last step to t = 0 has zero variance and returns x0_hat.
    steps defaults to the schedule's N (1000 for continuous schedules). nfe = steps.

    >>> from genlab.models.diffusion.schedules import DiscreteSchedule
    >>> schedule = DiscreteSchedule.linear(steps=100)
    >>> eps_fn = lambda x, t: schedule.sigma(t)[:, None] * x  # the exact eps of data N(0, I)
    >>> out = ancestral_sample(eps_fn, schedule, (3, 2), steps=10, generator=torch.Generator().manual_seed(0))
    >>> out.x.shape, out.nfe
    (torch.Size([3, 2]), 10)
    """

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        _, x0 = denoiser(x, t)
        mean, variance = denoiser.schedule.posterior(x, x0, t, s)
        return mean + expand_like(variance.sqrt().to(x.dtype), x) * _noise(x, generator)


@register_sampler("ddim", summary="DDIM (Song, Meng & Ermon 2021)", default_steps=50, config_options=("eta",), resamples=True)
class DDIMStep(StepRule):
    """DDIM (Song, Meng & Ermon 2021, eq. 12) on any decreasing sub-sequence of times; steps defaults to 50.

    x_s = alpha_s x0_hat + sqrt(sigma_s^2 - c^2) eps_hat + c z,  c^2 = eta^2 sigma_s^2 sigma_{t|s}^2 / sigma_t^2,

    eta = 0 is deterministic (the probability-flow ODE's first-order exponential integrator; no random
    draw), eta = 1 gives the ancestral sampler's posterior variance (the same draws as `ancestral_sample`).
    nfe = steps.

    >>> from genlab.models.diffusion.schedules import DiscreteSchedule
    >>> schedule = DiscreteSchedule.linear()
    >>> eps_fn = lambda x, t: schedule.sigma(t)[:, None] * x  # the exact eps of data N(0, I)
    >>> x_T = torch.randn(2, 3)
    >>> a, b = (ddim_sample(eps_fn, schedule, x_start=x_T, steps=5) for _ in range(2))
    >>> torch.equal(a.x, b.x), a.nfe  # eta = 0: deterministic
    (True, 5)
    """

    def __init__(self, *, eta: float = 0.0) -> None:
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"eta={eta} must lie in [0, 1] (0: deterministic DDIM, 1: ancestral variance)")
        self.eta = eta

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        schedule = denoiser.schedule
        eps, x0 = denoiser(x, t)
        alpha_s, sigma_s = schedule.alpha(s).to(x.dtype), schedule.sigma(s).to(x.dtype)
        if self.eta == 0:
            return expand_like(alpha_s, x) * x0 + expand_like(sigma_s, x) * eps
        c_squared = self.eta**2 * schedule.posterior(x, x0, t, s).variance.to(x.dtype)
        direction = torch.sqrt((sigma_s**2 - c_squared).clamp(min=0.0))
        return expand_like(alpha_s, x) * x0 + expand_like(direction, x) * eps + expand_like(c_squared.sqrt(), x) * _noise(x, generator)


@register_sampler(
    # its fresh noise at each step corrects the denoiser's errors where the ODE solvers carry them to the
    # end; that noise needs more, shorter steps than the ODE's 20
    "dpm_solver_sde", summary="SDE-DPM-Solver++(2M) (Lu et al. 2022): DPM-Solver++ with eta = 1, the reverse SDE",
    default_steps=50, defaults={"eta": 1.0},
)  # fmt: skip
@register_sampler(
    "dpm_solver", summary="DPM-Solver++(2M) (Lu et al. 2022), the probability-flow ODE's multistep solver",
    default_steps=20, config_options=("eta",),
)  # fmt: skip
class DPMSolverStep(StepRule):
    """DPM-Solver++(2M) (Lu et al. 2022, "DPM-Solver++", alg. 2) and its SDE variant; steps defaults to
    20 ("dpm_solver", eta = 0) and 50 ("dpm_solver_sde", eta = 1).

    A multistep exponential integrator in the data prediction x0_hat and the half log-SNR
    lambda = log(alpha / sigma). Each step t -> s, h = lambda_s - lambda_t > 0:

        x_s = (sigma_s / sigma_t) e^{-eta h} x_t + alpha_s (1 - e^{-(1 + eta) h}) D + sigma_s sqrt(1 - e^{-2 eta h}) z,
        D = x0_hat_t + (x0_hat_t - x0_hat_prev) / (2 r),   r = h_prev / h    (order 2, from the second step)
        D = x0_hat_t                                                          (order 1, the first step, and a
                                                                               last step to sigma = 0)

    eta = 0 is the probability-flow ODE solver (order 1: exactly DDIM with eta = 0); eta = 1 the
    SDE-DPM-Solver++(2M) of the reverse SDE (order 1: exactly ancestral sampling, the posterior
    q(x_s | x_t, x0_hat)). One network evaluation per step: nfe = steps (+ 1 final denoising where
    sigma(times[-1]) > 0), the cost of DDIM with the accuracy of a 2nd-order method. The state kept
    between steps is the previous x0_hat and h.

    >>> from genlab.models.diffusion.schedules import DiscreteSchedule
    >>> schedule = DiscreteSchedule.cosine()
    >>> eps_fn = lambda x, t: schedule.sigma(t)[:, None] * x  # the exact eps of data N(0, I)
    >>> dpm_solver_sample(eps_fn, schedule, (4, 2), steps=10).nfe
    10
    """

    def __init__(self, *, order: int = 2, eta: float = 0.0) -> None:
        if order not in (1, 2):
            raise ConfigError(f"order={order} is not supported; choose 1 (DDIM-like) or 2 (DPM-Solver++(2M))")
        if not 0.0 <= eta <= 1.0:
            raise ConfigError(f"eta={eta} must lie in [0, 1] (0: the probability-flow ODE, 1: the reverse SDE)")
        self.order, self.eta = order, eta
        self.x0_previous: Tensor | None = None
        self.h_previous: Tensor | None = None

    def set_times(self, schedule: NoiseSchedule, times: Tensor) -> Tensor:
        self.x0_previous, self.h_previous = None, None
        return times

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        schedule, eta = denoiser.schedule, self.eta
        _, x0 = denoiser(x, t)
        alpha_s, sigma_s, sigma_t = (schedule.alpha(s).to(x.dtype), schedule.sigma(s).to(x.dtype),
                                     schedule.sigma(t).to(x.dtype))  # fmt: skip
        if float(sigma_s[0]) == 0.0:  # lambda_s = inf: the step lands on x0_hat itself
            x = expand_like(alpha_s, x) * x0
        else:
            h = (schedule.log_snr(s[:1]) - schedule.log_snr(t[:1])).to(x.dtype) / 2.0  # (1,)
            denoised = x0
            if self.order == 2 and self.x0_previous is not None:
                r = self.h_previous / h
                denoised = x0 + (x0 - self.x0_previous) / (2.0 * r)
            x = (expand_like(sigma_s / sigma_t * torch.exp(-eta * h), x) * x
                 - expand_like(alpha_s * torch.expm1(-(1.0 + eta) * h), x) * denoised)  # fmt: skip
            if eta > 0:
                x = x + expand_like(sigma_s * torch.sqrt(-torch.expm1(-2.0 * eta * h)), x) * _noise(x, generator)
            self.h_previous = h
        self.x0_previous = x0
        return x


@torch.no_grad()
def ddim_invert(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x0: Tensor,
    steps: int | None = None,
    *,
    times: Tensor | None = None,
    clip_denoised: tuple[float, float] | None = None,
    return_trajectory: bool = False,
) -> SampleResult:
    """The deterministic DDIM map (eta = 0) run backwards, from data to noise (Song et al. 2021, sec. 4.3;
    Dhariwal & Nichol 2021, appendix F).

    `times` (or `schedule.sampling_times(steps)`, steps default 50) is the decreasing grid a later
    `ddim_sample(..., x_start=latent, times=times)` walks; it is walked upwards here:
    x_t = alpha_t x0_hat(x_s, s) + sigma_t eps_hat(x_s, s) for s < t, with x0 taken as the state at
    times[-1] (0 for discrete schedules). The round trip is exact in the limit of small steps. nfe = steps.

    >>> from genlab.models.diffusion.schedules import DiscreteSchedule
    >>> gm_eps = lambda x, t: torch.zeros_like(x)
    >>> ddim_invert(gm_eps, DiscreteSchedule.linear(), torch.ones(1, 2), 5).x  # alpha(1) x0 when eps = 0
    tensor([[0.0064, 0.0064]])
    """
    denoiser = _Denoiser(eps_fn, schedule, clip_denoised)
    if times is None:
        times = schedule.sampling_times(steps if steps is not None else SAMPLERS["ddim"].default_steps)
    _, times = _start(schedule, None, times, x_start=x0, generator=None, device=None, dtype=None)
    x = x0
    trajectory = [x] if return_trajectory else None
    for i in range(times.numel() - 1, 0, -1):
        s, t = _at(times[i], x), _at(times[i - 1], x)
        eps, x0_hat = denoiser(x, s)
        x = expand_like(schedule.alpha(t).to(x.dtype), x) * x0_hat + expand_like(schedule.sigma(t).to(x.dtype), x) * eps
        if trajectory is not None:
            trajectory.append(x)
    return SampleResult(x=x, nfe=denoiser.nfe, trajectory=trajectory)


# ================================================================================================
# 3. Annealed Langevin dynamics (NCSN)
# ================================================================================================
@register_sampler("langevin", summary="Annealed Langevin dynamics (Song & Ermon 2019, NCSN)", default_steps=10)
class AnnealedLangevinStep(StepRule):
    """Annealed Langevin dynamics (Song & Ermon 2019, alg. 1) with score = -eps_hat / sigma.

    For each noise level sigma_i = sigma(t_i), i = 1..L (decreasing), take T = steps_per_level steps

        x <- x + a_i / 2 * score(x, t_i) + sqrt(a_i) z,      a_i = step_size * sigma_i^2 / sigma_L^2.

    The levels are `times` if given, else NCSN's geometric sequence: sigma_i / alpha_i geometric from t_start
    (default t_max) down to the smallest time with noise (t_min; 1 / N for discrete schedules), i.e. log-SNR
    uniform; for VE these are sigma_min (sigma_max / sigma_min)^(i / (L - 1)). `steps`, if given, is L (so every
    sampler takes `steps`). step_size is calibrated, as in NCSN, for sigma_1 / sigma_L ~ 100: with a far smaller
    last level (sub-VP at t_min = 1e-3 has sigma_L ~ 1e-4) the first steps a_1 are too large; lower step_size
    or pass `times`. Then, with denoise_final, Tweedie's x0_hat at the last level removes its
    noise sigma_L (the final denoising step of Jolicoeur-Martineau et al. 2021; Song & Ermon 2020).
    nfe = L * T (+ 1). after_step is called after each Langevin step, with that level's time; the
    trajectory keeps the state after each level.

    >>> from genlab.models.diffusion.schedules import VESDE
    >>> eps_fn = lambda x, t: torch.zeros_like(x)
    >>> out = annealed_langevin_sample(eps_fn, VESDE(), (4, 2), noise_levels=3, steps_per_level=2)
    >>> out.nfe
    7
    """

    min_times = 1  # one noise level is a run

    def __init__(self, *, noise_levels: int = 10, steps_per_level: int = 100, step_size: float = 2e-5) -> None:
        if noise_levels < 1 or steps_per_level < 1 or step_size <= 0:
            raise ConfigError(
                f"need noise_levels={noise_levels} >= 1, steps_per_level={steps_per_level} >= 1 and step_size={step_size} > 0"
            )
        self.noise_levels, self.steps_per_level, self.step_size = noise_levels, steps_per_level, step_size

    def grid(self, schedule: NoiseSchedule, steps: int | None, t_start: float | None, default_steps: int) -> Tensor:
        levels = self.noise_levels if steps is None else steps
        if levels < 1:
            raise ConfigError(f"need steps={steps} >= 1 (the number of noise levels)")
        return _geometric_levels(schedule, levels, schedule.t_max if t_start is None else float(t_start))

    def set_times(self, schedule: NoiseSchedule, times: Tensor) -> Tensor:
        self.sigma_last = schedule.sigma(times[-1:])
        if float(self.sigma_last) <= 0:
            raise ConfigError("the last noise level has sigma = 0, where the score is undefined; end the levels above t = 0")
        return times

    def updates(self, times: Tensor) -> Iterator[tuple[Tensor, Tensor, bool]]:
        for level in times:
            for k in range(self.steps_per_level):
                yield level, level, k == self.steps_per_level - 1

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        sigma = denoiser.schedule.sigma(t[:1]).to(x.dtype)  # (1,)
        a = self.step_size * (sigma / self.sigma_last.to(x.dtype)) ** 2
        return x + 0.5 * a * denoiser.score(x, t) + a.sqrt() * _noise(x, generator)


# ================================================================================================
# 4-5. Reverse SDE: Euler-Maruyama and predictor-corrector
# ================================================================================================
def _euler_maruyama_step(denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator) -> Tensor:
    """x_s = x_t + [f(t) x_t - g(t)^2 score(x_t, t)] dt + g(t) sqrt(-dt) z, dt = s - t < 0."""
    schedule = denoiser.schedule
    score = denoiser.score(x, t)
    f = expand_like(schedule.drift(t).to(x.dtype), x)
    g_squared = expand_like(schedule.diffusion_squared(t).to(x.dtype), x)
    dt = expand_like((s - t).to(x.dtype), x)
    return x + (f * x - g_squared * score) * dt + torch.sqrt(g_squared * -dt) * _noise(x, generator)


def _reverse_diffusion_step(denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator) -> Tensor:
    """x_s = (2 - alpha_{t|s}) x_t + sigma_{t|s}^2 score + sigma_{t|s} z: the reverse of the discretised forward
    step x_t = alpha_{t|s} x_s + sigma_{t|s} z (Song et al. 2021, eq. 46-47, for any schedule)."""
    score = denoiser.score(x, t)
    scale, variance = denoiser.schedule.transition(s, t)
    scale, variance = expand_like(scale.to(x.dtype), x), expand_like(variance.to(x.dtype), x)
    return (2.0 - scale) * x + variance * score + variance.sqrt() * _noise(x, generator)


_PREDICTORS = {"euler_maruyama": _euler_maruyama_step, "reverse_diffusion": _reverse_diffusion_step}


@register_sampler("euler_maruyama", summary="The reverse-time SDE by Euler-Maruyama (Song et al. 2021)", default_steps=1000, resamples=True)
class EulerMaruyamaStep(StepRule):
    """The reverse-time SDE dx = [f(t) x - g(t)^2 score(x, t)] dt + g(t) dW_bar (Song et al. 2021, eq. 6)
    by Euler-Maruyama: for each step t -> s (dt = s - t < 0),

        x_s = x_t + [f(t) x_t - g(t)^2 score(x_t, t)] dt + g(t) sqrt(-dt) z,   score = -eps_hat / sigma(t).

    steps defaults to 1000; nfe = steps (+ 1 for the final denoising where sigma(times[-1]) > 0).

    >>> from genlab.models.diffusion.schedules import VPSDE
    >>> eps_fn = lambda x, t: torch.zeros_like(x)
    >>> euler_maruyama_sample(eps_fn, VPSDE(), (2, 3), steps=20).nfe
    21
    """

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        return _euler_maruyama_step(denoiser, x, t, s, generator)


@register_sampler("pc", summary="Predictor-corrector sampling (Song et al. 2021)", default_steps=1000, resamples=True)
class PredictorCorrectorStep(StepRule):
    """Predictor-corrector sampling (Song et al. 2021, alg. 4-5): at each time t, `corrector_steps` Langevin
    corrector steps on p_t, then one predictor step of the reverse SDE to the next time s.

    Corrector (alg. 5): with g = score(x, t) = -eps_hat / sigma(t) and z ~ N(0, I),
    step = 2 a (snr ||z|| / ||g||)^2 and x <- x + step g + sqrt(2 step) z, where a = alpha_{t|s}^2 (1 - beta_i
    for VP, 1 for VE) and the norms are averaged over the batch (as in the paper's code). Predictor: "euler_maruyama" (as `euler_maruyama_sample`)
    or "reverse_diffusion" (Song et al. eq. 46). The corrector runs before the predictor at each time, as in
    the paper's released code, so it never runs at t = 0 where the score is undefined. snr = 0.16 is the
    paper's CIFAR-10 VE setting. steps defaults to 1000; nfe = steps (1 + corrector_steps) (+ 1 final denoising).

    >>> from genlab.models.diffusion.schedules import VESDE
    >>> eps_fn = lambda x, t: x / torch.sqrt(1 + VESDE().sigma(t)[:, None] ** 2)  # data N(0, I)
    >>> predictor_corrector_sample(eps_fn, VESDE(), (2, 3), steps=10, corrector_steps=2).nfe
    31
    """

    def __init__(self, *, corrector_steps: int = 1, snr: float = 0.16, predictor: str = "euler_maruyama") -> None:
        if predictor not in _PREDICTORS:
            raise ConfigError(f"predictor={predictor!r} is not known; choose one of {', '.join(map(repr, _PREDICTORS))}")
        if corrector_steps < 0 or snr <= 0:
            raise ConfigError(f"need corrector_steps={corrector_steps} >= 0 and snr={snr} > 0 (the paper uses 1 and 0.16)")
        self.corrector_steps, self.snr, self.predictor = corrector_steps, snr, _PREDICTORS[predictor]

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        a = expand_like(denoiser.schedule.transition(s, t).scale.to(x.dtype) ** 2, x)
        for _ in range(self.corrector_steps):
            score = denoiser.score(x, t)
            z = _noise(x, generator)
            # norms averaged over the batch, as in the paper's code: per sample, a point where the score
            # nearly vanishes (a mode, in low dimension) would get an unbounded step
            ratio = z.flatten(1).norm(dim=1).mean() / score.flatten(1).norm(dim=1).mean().clamp(min=1e-12)
            step = 2.0 * a * (self.snr * ratio) ** 2
            x = x + step * score + torch.sqrt(2.0 * step) * z
        return self.predictor(denoiser, x, t, s, generator)


# ================================================================================================
# 6-7. Probability-flow ODE: Heun and torchdiffeq
# ================================================================================================
@register_sampler("heun", summary="The probability-flow ODE by Heun's 2nd-order method (Karras et al. 2022)", default_steps=18)
class HeunStep(StepRule):
    """The probability-flow ODE dx/dt = f(t) x - g(t)^2 score(x, t) / 2 by Heun's 2nd-order method
    (Karras et al. 2022, alg. 1), for any schedule; steps defaults to 18 (EDM's CIFAR-10 setting).

    Each step t -> s: d = dx/dt(x, t); Euler step x' = x + (s - t) d; then, except at the last step,
    the 2nd-order correction x' = x + (s - t) (d + dx/dt(x', s)) / 2. Deterministic unless s_churn > 0;
    nfe = 2 steps - 1 (+ 1 final denoising where sigma(times[-1]) > 0).

    Stochastic churn (Karras et al. 2022, alg. 2): at times t in [s_tmin, s_tmax], first raise the noise to
    the time t_hat where sigma/alpha is (1 + gamma) times that at t, gamma = min(s_churn / steps, sqrt(2) - 1)
    (capped at t_max), by the forward transition x_hat = alpha_{t_hat|t} x + s_noise sigma_{t_hat|t} z, then
    step from t_hat. For EDM this is the paper's sigma_hat = (1 + gamma) sigma, x_hat = x + s_noise
    sqrt(sigma_hat^2 - sigma^2) z. s_tmin, s_tmax bound the time t (EDM: the noise level).

    >>> from genlab.models.diffusion.schedules import EDMSchedule
    >>> eps_fn = lambda x, t: x / torch.sqrt(1 + t[:, None] ** 2)  # data N(0, I)
    >>> heun_sample(eps_fn, EDMSchedule(), (2, 3), steps=18).nfe
    35
    """

    def __init__(self, *, s_churn: float = 0.0, s_tmin: float = 0.0, s_tmax: float = math.inf, s_noise: float = 1.0) -> None:
        if s_churn < 0 or s_noise < 0:
            raise ConfigError(f"s_churn={s_churn} and s_noise={s_noise} must be >= 0 (EDM alg. 2)")
        self.s_churn, self.s_tmin, self.s_tmax, self.s_noise = s_churn, s_tmin, s_tmax, s_noise

    def set_times(self, schedule: NoiseSchedule, times: Tensor) -> Tensor:
        self.gamma = min(self.s_churn / (times.numel() - 1), math.sqrt(2.0) - 1.0)
        self.t_last = float(times[-1])
        return times

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        schedule = denoiser.schedule
        if self.gamma > 0 and self.s_tmin <= float(t[0]) <= self.s_tmax:
            # Increase noise temporarily.
            log_snr_hat = schedule.log_snr(t) - 2.0 * math.log1p(self.gamma)  # sigma/alpha grows by 1 + gamma
            t_hat = schedule.time_at_log_snr(log_snr_hat, t_low=float(t[0]), t_high=schedule.t_max).to(t.dtype)
            scale, variance = schedule.transition(t, t_hat)
            x = expand_like(scale.to(x.dtype), x) * x + self.s_noise * expand_like(variance.sqrt().to(x.dtype), x) * _noise(x, generator)
            t = t_hat
        # Euler step.
        dt = expand_like((s - t).to(x.dtype), x)
        d = denoiser.ode_drift(x, t)
        x_next = x + dt * d
        # Apply 2nd order correction.
        if float(s[0]) != self.t_last:
            x_next = x + dt * 0.5 * (d + denoiser.ode_drift(x_next, s))
        return x_next


@register_sampler("ode", summary="The probability-flow ODE through torchdiffeq (Song et al. 2021; Chen et al. 2018)", default_steps=1)
class ODEStep(StepRule):
    """The probability-flow ODE dx/dt = f(t) x + g(t)^2 eps_hat / (2 sigma(t)) (Song et al. 2021, eq. 13)
    through `torchdiffeq.odeint` (Chen et al. 2018), adaptive "dopri5" by default; nfe counts its calls.

    Without `times` or `steps` it integrates from t_start (default t_max) to the smallest time with noise
    (t_min; 1 / N for discrete schedules) in one solve, then denoises (Tweedie) if denoise_final.
    With `steps` or `times`, each step is one solve between two consecutive times (the grid for fixed-step
    methods such as "euler" or "rk4"); a last time with sigma = 0 is moved to the smallest time with noise,
    where the drift is finite. `options` go to odeint; adaptive methods get step_t = the step's two times,
    so that no step overshoots its end (torchdiffeq steps past it and interpolates, which would evaluate
    the drift below t_min, where VP's sigma is undefined).

    >>> from genlab.models.diffusion.schedules import VPSDE
    >>> eps_fn = lambda x, t: VPSDE().sigma(t)[:, None] * x  # data N(0, I): x_t ~ N(0, I) at every t
    >>> x_T = torch.tensor([[1.0, -2.0]])
    >>> out = ode_sample(eps_fn, VPSDE(), x_start=x_T, denoise_final=False)
    >>> torch.allclose(out.x, x_T, atol=1e-4)  # for this data the flow is the identity
    True
    """

    def __init__(self, *, method: str = "dopri5", rtol: float = 1e-5, atol: float = 1e-5, options: dict | None = None) -> None:
        import torchdiffeq  # imported here: only the ODE samplers need it

        self.odeint = torchdiffeq.odeint
        self.method, self.rtol, self.atol, self.options = method, rtol, atol, options

    def grid(self, schedule: NoiseSchedule, steps: int | None, t_start: float | None, default_steps: int) -> Tensor:
        if steps is not None:
            return super().grid(schedule, steps, t_start, default_steps)
        t0 = schedule.t_max if t_start is None else float(t_start)
        return torch.tensor([t0, _smallest_noisy_time(schedule)], dtype=torch.float64)

    def set_times(self, schedule: NoiseSchedule, times: Tensor) -> Tensor:
        return _noisy_times(schedule, times)

    def step(self, denoiser: _Denoiser, x: Tensor, t: Tensor, s: Tensor, generator: torch.Generator | None) -> Tensor:
        def drift(time: Tensor, x_t: Tensor) -> Tensor:
            return denoiser.ode_drift(x_t, _at(time, x_t))

        pair = torch.stack([t[0], s[0]])
        options = _solver_options(self.method, pair, self.options)
        return self.odeint(drift, x, pair, rtol=self.rtol, atol=self.atol, method=self.method, options=options)[-1]


_ADAPTIVE_METHODS = ("dopri5", "dopri8", "bosh3", "fehlberg2", "adaptive_heun")


def _solver_options(method: str, times: Tensor, options: dict | None) -> dict | None:
    """odeint's options; adaptive solvers must land on every time, never step past the last."""
    if method not in _ADAPTIVE_METHODS:
        return options
    return {"step_t": times, **(options or {})}


def ode_log_likelihood(
    eps_fn: EpsFn,
    schedule: NoiseSchedule,
    x0: Tensor,
    *,
    method: str = "dopri5",
    rtol: float = 1e-5,
    atol: float = 1e-5,
    trace: str = "hutchinson",
    probes: int = 1,
    probe: str = "rademacher",
    t_start: float | None = None,
    generator: torch.Generator | None = None,
) -> LikelihoodResult:
    """log p(x_0) in nats by the probability-flow ODE (Song et al. 2021, appendix D; Chen et al. 2018):

        log p_{t_0}(x(t_0)) = log p_{t_max}(x(t_max)) + int_{t_0}^{t_max} div F(x(t), t) dt,

    integrating x and the divergence of the drift F(x, t) = f(t) x + g(t)^2 eps_hat(x, t) / (2 sigma(t))
    forward from t_0 = t_start (default: the smallest time with noise, t_min) to t_max, where the prior's
    density is known. div F = f(t) D + g(t)^2 / (2 sigma(t)) div eps_hat, and div eps_hat is

    - trace="hutchinson": v^T (d eps_hat / dx) v averaged over `probes` vectors v (Rademacher, or Gaussian
      with probe="gaussian"), drawn once per solve with `generator` (Hutchinson 1989; Grathwohl et al. 2019,
      "FFJORD"): unbiased, one vector-Jacobian product per probe;
    - trace="exact": the Jacobian's diagonal by one autograd pass per dimension (for small D).

    The result is the density of the data noised to t_0 (which tends to p(x_0) as t_0 -> 0), in nats per
    example; for bits per dimension divide by D log 2 (and account for dequantisation). x0: (B, ...).
    Runs the solver without gradients; the divergence alone is under torch.enable_grad().

    >>> from genlab.models.diffusion.analytic import GaussianMixtureData
    >>> from genlab.models.diffusion.schedules import VPSDE
    >>> data = GaussianMixtureData(torch.ones(1), torch.zeros(1, 2), stds=1.0)
    >>> x = torch.tensor([[0.5, -1.0]])
    >>> result = ode_log_likelihood(data.eps_fn(VPSDE()), VPSDE(), x, trace="exact")
    >>> torch.allclose(result.log_prob, data.log_prob(x), atol=1e-4)
    True
    """
    import torchdiffeq

    if trace not in DIVERGENCE_METHODS:
        raise ConfigError(f"trace={trace!r} is not known; choose 'hutchinson' (any D) or 'exact' (small D)")
    if probe not in PROBE_KINDS:
        raise ConfigError(f"probe={probe!r} is not known; choose 'rademacher' or 'gaussian'")
    if probes < 1:
        raise ConfigError(f"probes={probes} must be >= 1 (Hutchinson vectors per solve)")
    t0 = _smallest_noisy_time(schedule) if t_start is None else float(t_start)
    times = torch.tensor([t0, schedule.t_max], dtype=_time_dtype(x0.dtype), device=x0.device)
    denoiser = _Denoiser(eps_fn, schedule, None)
    dim = x0[0].numel()
    # the same probes at every evaluation, so the solver integrates a smooth function of t (FFJORD)
    vectors = None
    if trace == "hutchinson":
        vectors = sample_probe((probes,) + tuple(x0.shape), kind=probe, generator=generator, device=x0.device, dtype=x0.dtype)

    def eps_divergence(x: Tensor, t: Tensor) -> tuple[Tensor, Tensor]:
        with torch.enable_grad():
            x = x.detach().requires_grad_(True)
            eps, _ = denoiser(x, t)
            eps_div = divergence(eps, x, method=trace, noise=vectors, create_graph=False)
        return eps.detach(), eps_div.detach()

    def dynamics(t: Tensor, state: tuple[Tensor, Tensor]) -> tuple[Tensor, Tensor]:
        x, _ = state
        t_vec = _at(t.to(x.dtype), x)
        eps, eps_div = eps_divergence(x, t_vec)
        f = schedule.drift(t_vec).to(x.dtype)
        eps_coefficient = (schedule.diffusion_squared(t_vec) / (2.0 * schedule.sigma(t_vec))).to(x.dtype)
        dx = expand_like(f, x) * x + expand_like(eps_coefficient, x) * eps
        return dx, f * dim + eps_coefficient * eps_div

    with torch.no_grad():
        start = (x0, torch.zeros(x0.shape[0], dtype=x0.dtype, device=x0.device))
        options = _solver_options(method, times, None)
        path_x, path_divergence = torchdiffeq.odeint(dynamics, start, times, rtol=rtol, atol=atol, method=method, options=options)
    latent, integral = path_x[-1], path_divergence[-1]
    prior = schedule.prior_log_prob(latent).to(x0.dtype)
    return LikelihoodResult(log_prob=prior + integral, nfe=denoiser.nfe, latent=latent, prior_log_prob=prior)


# ================================================================================================
# The samplers by their public names (each is `SAMPLERS[name]`)
# ================================================================================================
ancestral_sample = SAMPLERS["ancestral"]
ddim_sample = SAMPLERS["ddim"]
dpm_solver_sample = SAMPLERS["dpm_solver"]
dpm_solver_sde_sample = SAMPLERS["dpm_solver_sde"]
annealed_langevin_sample = SAMPLERS["langevin"]
euler_maruyama_sample = SAMPLERS["euler_maruyama"]
predictor_corrector_sample = SAMPLERS["pc"]
heun_sample = SAMPLERS["heun"]
ode_sample = SAMPLERS["ode"]


def get_sampler(name: str) -> Sampler:
    """The sampler registered as `name`; each is called as sampler(eps_fn, schedule, shape, **keywords).

    >>> get_sampler("ddim") is ddim_sample
    True
    """
    if name not in SAMPLERS:
        raise ConfigError(f"unknown sampler {name!r}; choose one of {', '.join(map(repr, SAMPLERS))}")
    return SAMPLERS[name]
