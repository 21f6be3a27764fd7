"""Forward processes of diffusion models: x_t = alpha(t) x_0 + sigma(t) eps, eps ~ N(0, I).

Every schedule is one object in the notation of Kingma et al. 2021 ("Variational Diffusion Models")
and of Karras et al. 2022 ("EDM"): a continuous time t in [t_min, t_max], a signal scale alpha(t) and a
noise scale sigma(t). Discrete DDPM schedules (Ho et al. 2020) are the same object on the grid
t_i = i / N, i = 0..N, with log alpha linear between grid points, so every method is defined for any t.

The same process is the linear SDE  dx = f(t) x dt + g(t) dW  (Song et al. 2021) with

    f(t) = d log alpha / dt,        g(t)^2 = d sigma^2 / dt - 2 f(t) sigma^2,

and its transition from s < t is q(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}^2 I) with
alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2.

Code names and paper names:

    alpha(t)^2          alpha_bar_t (Ho et al.), alpha_t (DDIM), 1 for VE and EDM
    sigma(t)^2          1 - alpha_bar_t (VP), sigma_t^2 (VE, EDM: sigma(t) = t)
    log_snr(t)          lambda_t = log(alpha_t^2 / sigma_t^2) (Kingma et al. 2021)
    drift(t)            f(t); for VP, -beta(t) / 2
    diffusion_squared   g(t)^2; for VP, beta(t)

A schedule is a plain Python object, not an nn.Module: it holds no learnable state, and its few
tables (for discrete schedules) are moved to the time tensor's device and dtype when used. Every
method takes t of shape (B,) (or a 0-dim tensor) and returns the same shape; `expand_like` broadcasts
a (B,) vector over the data's other dimensions. Times in bf16/fp16 are computed in float32.
"""

from __future__ import annotations

import abc
import inspect
import math
from typing import Callable, NamedTuple, Sequence

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.nn.distributions import at_least_float32, diagonal_gaussian_log_prob, sample_standard_normal

__all__ = [
    "NoiseSchedule",
    "DiscreteSchedule",
    "VPSDE",
    "SubVPSDE",
    "VESDE",
    "EDMSchedule",
    "Transition",
    "Posterior",
    "SCHEDULES",
    "schedule_parameters",
    "get_schedule",
    "expand_like",
]


def expand_like(v: Tensor, x: Tensor) -> Tensor:
    """A per-sample value v (B,) reshaped to (B, 1, ..., 1) so it broadcasts against x (B, ...).

    >>> expand_like(torch.ones(4), torch.zeros(4, 3, 8, 8)).shape
    torch.Size([4, 1, 1, 1])
    """
    return v.reshape(tuple(v.shape) + (1,) * (x.dim() - v.dim()))


def _as_time(t: Tensor | float) -> Tensor:
    """t as a float tensor of at least float32 precision (times in bf16 lose the grid)."""
    if not isinstance(t, Tensor):
        return torch.tensor(float(t), dtype=torch.float64)
    if not t.is_floating_point():
        return t.to(torch.get_default_dtype())
    return at_least_float32(t)


class Transition(NamedTuple):
    """q(x_t | x_s) = N(scale * x_s, variance * I); unpacks as `scale, variance = ...`."""

    scale: Tensor
    variance: Tensor


class Posterior(NamedTuple):
    """q(x_s | x_t, x_0) = N(mean, variance * I); unpacks as `mean, variance = ...`."""

    mean: Tensor
    variance: Tensor


class NoiseSchedule(abc.ABC):
    """A forward process x_t = alpha(t) x_0 + sigma(t) eps; subclasses give log alpha and sigma.

    Attributes: `name` (the registry's word), `t_min` (the smallest time a sampler goes down to;
    samplers may take a last step to t = 0 where the schedule is defined there, see
    `sampling_times`), `t_max` (the prior's time) and `discrete_steps` (N for a discrete DDPM
    schedule, else None). `edm_preconditioning`: whether a model preconditions its network as Karras
    et al. 2022 do for this process (alpha = 1, the time the noise level sigma), predicting x0 with
    EDM's loss weighting.
    """

    name: str = "schedule"
    t_min: float = 0.0
    t_max: float = 1.0
    discrete_steps: int | None = None
    edm_preconditioning: bool = False

    # -- what a subclass defines ----------------------------------------------------------------
    @abc.abstractmethod
    def log_alpha(self, t: Tensor) -> Tensor:
        """log alpha(t), (B,) -> (B,)."""

    @abc.abstractmethod
    def sigma(self, t: Tensor) -> Tensor:
        """sigma(t) >= 0, (B,) -> (B,)."""

    @abc.abstractmethod
    def drift(self, t: Tensor) -> Tensor:
        """f(t) = d log alpha / dt of the SDE dx = f(t) x dt + g(t) dW, (B,) -> (B,)."""

    @abc.abstractmethod
    def diffusion_squared(self, t: Tensor) -> Tensor:
        """g(t)^2 = d sigma^2 / dt - 2 f(t) sigma^2, (B,) -> (B,)."""

    @abc.abstractmethod
    def sampling_times(
        self, steps: int, *, t_start: float | None = None, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """(steps + 1,) decreasing times from t_start (default t_max) down to the end of sampling."""

    @abc.abstractmethod
    def training_times(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """(B,) times drawn from the training distribution of this process."""

    @abc.abstractmethod
    def noise_conditioning(self, t: Tensor) -> Tensor:
        """The scalar fed to a network's noise-level embedding, (B,) -> (B,)."""

    # -- derived quantities ---------------------------------------------------------------------
    def alpha(self, t: Tensor) -> Tensor:
        """alpha(t) = exp(log alpha(t)), (B,) -> (B,)."""
        return torch.exp(self.log_alpha(t))

    def log_sigma(self, t: Tensor) -> Tensor:
        """log sigma(t), (B,) -> (B,); -inf where sigma(t) = 0."""
        return torch.log(self.sigma(t))

    def log_snr(self, t: Tensor) -> Tensor:
        """lambda(t) = log(alpha(t)^2 / sigma(t)^2) (Kingma et al. 2021), decreasing in t; +inf where sigma = 0."""
        return 2.0 * (self.log_alpha(t) - self.log_sigma(t))

    def time_at_log_snr(self, log_snr: Tensor, *, t_low: float | None = None, t_high: float | None = None) -> Tensor:
        """The inverse of `log_snr`: t in [t_low, t_high] (default [t_min, t_max]) with lambda(t) = log_snr,
        by bisection (lambda decreases in t); targets outside the range give its ends. (B,) -> (B,).

        >>> s = VESDE(sigma_min=0.01, sigma_max=100.0)
        >>> s.time_at_log_snr(-2 * torch.log(torch.tensor([1.0])), t_low=0.0)  # sigma = 1 halfway in log scale
        tensor([0.5000])
        """
        log_snr = _as_time(log_snr)
        low = torch.full_like(log_snr, self.t_min if t_low is None else t_low)
        high = torch.full_like(log_snr, self.t_max if t_high is None else t_high)
        for _ in range(64):  # 64 halvings reach float64 resolution
            middle = 0.5 * (low + high)
            later = self.log_snr(middle) > log_snr  # the target lies at a later time
            low, high = torch.where(later, middle, low), torch.where(later, high, middle)
        return 0.5 * (low + high)

    def q_sample(self, x0: Tensor, t: Tensor, noise: Tensor | None = None, *, generator: torch.Generator | None = None) -> Tensor:
        """Draw x_t ~ q(x_t | x_0) = N(alpha(t) x_0, sigma(t)^2 I)  (Ho et al. 2020, eq. 4, in VDM notation).

        x0: (B, ...); t: (B,) or 0-dim; noise: eps ~ N(0, I) of x0's shape, drawn with `generator`
        when None. Returns x_t: (B, ...).

        >>> s = DiscreteSchedule.linear(steps=10)
        >>> s.q_sample(torch.ones(2, 3), torch.zeros(2), torch.randn(2, 3))  # t = 0 is the data
        tensor([[1., 1., 1.],
                [1., 1., 1.]])
        """
        if noise is None:
            noise = sample_standard_normal(x0.shape, generator=generator, device=x0.device, dtype=x0.dtype)
        t = _as_time(t).to(x0.device)
        alpha, sigma = self.alpha(t).to(x0.dtype), self.sigma(t).to(x0.dtype)
        return expand_like(alpha, x0) * x0 + expand_like(sigma, x0) * noise

    def transition(self, s: Tensor, t: Tensor) -> Transition:
        """q(x_t | x_s) = N(alpha_{t|s} x_s, sigma_{t|s}^2 I) for s < t (Kingma et al. 2021, eq. 12-13).

        alpha_{t|s} = alpha_t / alpha_s and sigma_{t|s}^2 = sigma_t^2 - alpha_{t|s}^2 sigma_s^2, written
        as sigma_t^2 (1 - exp(lambda_t - lambda_s)) to keep its precision when s is close to t.
        s, t: (B,). Returns Transition(scale (B,), variance (B,)).
        """
        s, t = _as_time(s), _as_time(t)
        scale = torch.exp(self.log_alpha(t) - self.log_alpha(s))
        variance = self.sigma(t) ** 2 * -torch.expm1(self.log_snr(t) - self.log_snr(s))
        return Transition(scale, variance)

    def posterior(self, x_t: Tensor, x0: Tensor, t: Tensor, s: Tensor) -> Posterior:
        """q(x_s | x_t, x_0) = N(mean, variance I) for s < t: Bayes' rule on q(x_s | x_0) and q(x_t | x_s).

        mean = (alpha_{t|s} sigma_s^2 / sigma_t^2) x_t + (alpha_s sigma_{t|s}^2 / sigma_t^2) x_0,
        variance = sigma_{t|s}^2 sigma_s^2 / sigma_t^2  (Ho et al. 2020, eq. 6-7, for any two times;
        Kingma et al. 2021, eq. 26-27). With r = sigma_{t|s}^2 / sigma_t^2 = 1 - exp(lambda_t - lambda_s):
        mean = (1 - r) (alpha_s / alpha_t) x_t + r alpha_s x_0, variance = r sigma_s^2.
        x_t, x0: (B, ...); t, s: (B,). Returns Posterior(mean (B, ...), variance (B,)).
        """
        s, t = _as_time(s).to(x_t.device), _as_time(t).to(x_t.device)
        log_alpha_s = self.log_alpha(s)
        r = -torch.expm1(self.log_snr(t) - self.log_snr(s))
        coef_x_t = (1.0 - r) * torch.exp(log_alpha_s - self.log_alpha(t))
        coef_x0 = r * torch.exp(log_alpha_s)
        mean = expand_like(coef_x_t.to(x_t.dtype), x_t) * x_t + expand_like(coef_x0.to(x_t.dtype), x_t) * x0
        return Posterior(mean, r * self.sigma(s) ** 2)

    # -- the conversions between predictions (each exact, for any schedule) -----------------
    def x0_from_eps(self, x_t: Tensor, t: Tensor, eps: Tensor) -> Tensor:
        """x0_hat = (x_t - sigma(t) eps_hat) / alpha(t). x_t, eps: (B, ...); t: (B,)."""
        t = _as_time(t).to(x_t.device)
        return (x_t - expand_like(self.sigma(t).to(x_t.dtype), x_t) * eps) / expand_like(self.alpha(t).to(x_t.dtype), x_t)

    def eps_from_x0(self, x_t: Tensor, t: Tensor, x0: Tensor) -> Tensor:
        """eps_hat = (x_t - alpha(t) x0_hat) / sigma(t); undefined (inf) where sigma(t) = 0."""
        t = _as_time(t).to(x_t.device)
        return (x_t - expand_like(self.alpha(t).to(x_t.dtype), x_t) * x0) / expand_like(self.sigma(t).to(x_t.dtype), x_t)

    def score_from_eps(self, t: Tensor, eps: Tensor) -> Tensor:
        """grad_x log p_t(x) = -eps_hat / sigma(t) (Vincent 2011; Song et al. 2021, eq. 7). eps: (B, ...)."""
        t = _as_time(t).to(eps.device)
        return -eps / expand_like(self.sigma(t).to(eps.dtype), eps)

    # -- the prior at t_max ---------------------------------------------------------------------
    def prior_std(self) -> float:
        """sqrt(alpha(t_max)^2 + sigma(t_max)^2): the std of x_{t_max} when the data is unit-scale, centred."""
        t = torch.tensor(self.t_max, dtype=torch.float64)
        return math.sqrt(float(self.alpha(t) ** 2 + self.sigma(t) ** 2))

    def prior_sample(
        self,
        shape: Sequence[int],
        *,
        generator: torch.Generator | None = None,
        device: torch.device | str | None = None,
        dtype: torch.dtype | None = None,
    ) -> Tensor:
        """x_{t_max} ~ N(0, (alpha(t_max)^2 + sigma(t_max)^2) I), of `shape`.

        >>> VESDE(sigma_max=50.0).prior_sample((2, 3), generator=torch.Generator().manual_seed(0)).shape
        torch.Size([2, 3])
        """
        return self.prior_std() * sample_standard_normal(shape, generator=generator, device=device, dtype=dtype)

    def prior_log_prob(self, x: Tensor) -> Tensor:
        """log N(x; 0, (alpha(t_max)^2 + sigma(t_max)^2) I) summed over all but the batch dim, (B,) nats."""
        return diagonal_gaussian_log_prob(x, torch.zeros_like(x), 2.0 * math.log(self.prior_std()))

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r}, t_min={self.t_min}, t_max={self.t_max})"


def _uniform_times(batch_size: int, low: float, high: float, generator, device) -> Tensor:
    """(B,) draws from U(low, high), made on the generator's device (same seed, same numbers)."""
    where = generator.device if generator is not None else device
    u = torch.rand(batch_size, generator=generator, device=where)
    return (low + (high - low) * u).to(device) if device is not None else low + (high - low) * u


def _check_steps(steps: int) -> None:
    if not isinstance(steps, int) or steps < 1:
        raise ConfigError(f"steps={steps!r} must be a positive integer (the number of sampling steps)")


def _check_t_start(schedule: NoiseSchedule, t_start: float | None) -> float:
    if t_start is None:
        return schedule.t_max
    t_start = float(t_start)
    if not (0.0 < t_start <= schedule.t_max):
        raise ConfigError(f"t_start={t_start} must lie in (0, t_max={schedule.t_max}] for the {schedule.name!r} schedule")
    return t_start


# ================================================================================================
# Discrete DDPM schedules
# ================================================================================================
class DiscreteSchedule(NoiseSchedule):
    """A DDPM schedule of N steps (Ho et al. 2020), as a process in continuous time t in [0, 1].

    betas: (N,) in (0, 1), beta_i for steps i = 1..N. alpha_bar_0 = 1 and
    alpha_bar_i = prod_{j<=i} (1 - beta_j); on the grid t_i = i / N, alpha(t_i) = sqrt(alpha_bar_i)
    and sigma(t_i) = sqrt(1 - alpha_bar_i); between grid points log alpha is linear and
    sigma = sqrt(1 - alpha^2) (variance preserving). Then f(t) = N log(1 - beta_i) / 2 and
    g(t)^2 = -2 f(t) = -N log(1 - beta_i) ~ N beta_i on ((i-1)/N, i/N], the VP SDE of Song et al. 2021
    with beta(t) = N beta_i.

    >>> s = DiscreteSchedule.linear(steps=1000)
    >>> s.alpha(torch.tensor([0.0, 1.0]))
    tensor([1.0000, 0.0064])
    """

    t_min = 0.0
    t_max = 1.0

    def __init__(self, betas: Tensor, *, name: str = "discrete") -> None:
        betas = torch.as_tensor(betas, dtype=torch.float64)
        if betas.dim() != 1 or betas.numel() < 1:
            raise ConfigError(f"betas must be a 1-D tensor of N >= 1 values, got shape {tuple(betas.shape)}")
        if not bool(((betas > 0) & (betas < 1)).all()):
            raise ConfigError("betas must lie in (0, 1); clip them, e.g. betas.clamp(1e-8, 0.999)")
        self.name = name
        self.betas = betas
        self.discrete_steps = int(betas.numel())
        log_alpha_bar = torch.cat([torch.zeros(1, dtype=torch.float64), torch.cumsum(torch.log1p(-betas), 0)])
        self.alpha_bar = torch.exp(log_alpha_bar)  # (N + 1,), alpha_bar[0] = 1
        self._log_alpha_grid = 0.5 * log_alpha_bar  # (N + 1,)
        self._grid_copies: dict[tuple[torch.device, torch.dtype], Tensor] = {}

    @classmethod
    def linear(cls, steps: int = 1000, beta_start: float = 1e-4, beta_end: float = 0.02) -> "DiscreteSchedule":
        """betas linear from beta_start to beta_end over `steps` steps (Ho et al. 2020, sec. 4)."""
        _check_steps(steps)
        if not (0.0 < beta_start <= beta_end < 1.0):
            raise ConfigError(f"need 0 < beta_start={beta_start} <= beta_end={beta_end} < 1 for the linear schedule")
        return cls(torch.linspace(beta_start, beta_end, steps, dtype=torch.float64), name="linear")

    @classmethod
    def cosine(cls, steps: int = 1000, s: float = 0.008, max_beta: float = 0.999) -> "DiscreteSchedule":
        """alpha_bar(t) = h(t) / h(0), h(t) = cos^2(((t + s) / (1 + s)) pi / 2), t = i / N (Nichol & Dhariwal 2021,
        eq. 17); beta_i = 1 - alpha_bar_i / alpha_bar_{i-1}, clipped at max_beta to avoid the singularity at t = 1."""
        _check_steps(steps)
        if s < 0:
            raise ConfigError(f"s={s} must be >= 0 (the cosine schedule's offset; 0.008 in the paper)")
        t = torch.arange(steps + 1, dtype=torch.float64) / steps
        h = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2
        alpha_bar = h / h[0]
        betas = (1 - alpha_bar[1:] / alpha_bar[:-1]).clamp(min=1e-12, max=max_beta)
        return cls(betas, name="cosine")

    def _grid_position(self, t: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(i0, i1, frac) with t N = i0 + frac in [i1 - 1, i1]: i1 = ceil(t N), so a grid time i / N
        belongs to the step (i - 1, i] ending at it (the step a reverse sampler takes from it)."""
        n = self.discrete_steps
        position = (t * n).clamp(0, n)
        nearest = torch.round(position)
        # the step is chosen after snapping float32 round-off (0.3 * 1000 = 299.99998) onto the grid;
        # frac keeps the exact position, so log alpha stays continuous (a lerp a hair outside [0, 1])
        snapped = torch.where((position - nearest).abs() < 1e-3, nearest, position)
        i1 = torch.ceil(snapped).clamp(1, n).long()
        i0 = i1 - 1
        return i0, i1, position - i0.to(position.dtype)

    def _grid_like(self, t: Tensor) -> Tensor:
        """log alpha on the grid (N + 1,) on t's device and in its dtype, copied there once and kept:
        a copy from the CPU to a GPU at every call makes the host wait for the GPU's queued work (a
        blocking copy), and the loss calls this 4 times per training step, DDIM 9 times per step."""
        key = (t.device, t.dtype)
        if key not in self._grid_copies:
            self._grid_copies[key] = self._log_alpha_grid.to(device=t.device, dtype=t.dtype)
        return self._grid_copies[key]

    def log_alpha(self, t: Tensor) -> Tensor:
        t = _as_time(t)
        grid = self._grid_like(t)
        i0, i1, frac = self._grid_position(t)
        return torch.lerp(grid[i0], grid[i1], frac)

    def sigma(self, t: Tensor) -> Tensor:
        # 0.0 - expm1(0) is +0.0, where -expm1(0) would be -0.0
        return torch.sqrt(0.0 - torch.expm1(2.0 * self.log_alpha(t)))

    def log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def drift(self, t: Tensor) -> Tensor:
        t = _as_time(t)
        grid = self._grid_like(t)
        i0, i1, _ = self._grid_position(t)
        return (grid[i1] - grid[i0]) * self.discrete_steps

    def diffusion_squared(self, t: Tensor) -> Tensor:
        return -2.0 * self.drift(t)

    def sampling_times(
        self, steps: int, *, t_start: float | None = None, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """(steps + 1,) grid times from t_start (default 1) to 0: the grid indices round(linspace(t_start N, 0, steps + 1)).

        Both ends are kept (the "trailing"-style spacing of Lin et al. 2024, which starts at t = 1 where
        DDIM's "leading" spacing misses it); steps = N gives the full grid of Ho et al. 2020. A t_start off
        the grid is kept as the first time. The last step lands on t = 0, where sigma = 0 and x_0 = x0_hat.

        >>> DiscreteSchedule.linear(steps=1000).sampling_times(4)
        tensor([1.0000, 0.7500, 0.5000, 0.2500, 0.0000])
        """
        _check_steps(steps)
        t_start = _check_t_start(self, t_start)
        n = self.discrete_steps
        indices = torch.round(torch.linspace(t_start * n, 0.0, steps + 1, dtype=torch.float64))
        times = indices / n
        times[0] = t_start
        if not bool((times[:-1] > times[1:]).all()):
            raise ConfigError(
                f"steps={steps} is more than the {int(round(t_start * n))} grid steps below t_start={t_start} "
                f"of this {n}-step schedule; pass steps <= {max(1, int(t_start * n))}"
            )
        return times.to(device=device, dtype=dtype)

    def training_times(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """(B,) times uniform on the grid {1, ..., N} / N (Ho et al. 2020, alg. 1)."""
        n = self.discrete_steps
        where = generator.device if generator is not None else device
        steps = torch.randint(1, n + 1, (batch_size,), generator=generator, device=where)
        times = steps.to(torch.float32) / n
        return times.to(device) if device is not None else times

    def noise_conditioning(self, t: Tensor) -> Tensor:
        """1000 t: the step index i for N = 1000 (the DDPM convention), on the same scale for any N."""
        return 1000.0 * _as_time(t)

    def __repr__(self) -> str:
        return f"DiscreteSchedule(name={self.name!r}, steps={self.discrete_steps})"


# ================================================================================================
# Continuous SDEs (Song et al. 2021) and EDM (Karras et al. 2022)
# ================================================================================================
class _UnitTimeSDE(NoiseSchedule):
    """Continuous time on [0, 1] (the score SDEs): sampling on a uniform grid from t_start down to
    t_min, training times ~ U(t_eps, 1) (Song et al. 2021, appendix C). For VE the uniform grid in t
    gives geometric noise levels."""

    t_max = 1.0
    t_eps: float

    def sampling_times(
        self, steps: int, *, t_start: float | None = None, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """(steps + 1,) times uniform from t_start (default 1) to t_min."""
        _check_steps(steps)
        t_start = _check_t_start(self, t_start)
        if t_start <= self.t_min:
            raise ConfigError(f"t_start={t_start} must exceed t_min={self.t_min}")
        return torch.linspace(t_start, self.t_min, steps + 1, dtype=torch.float64).to(device=device, dtype=dtype)

    def training_times(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """(B,) times ~ U(t_eps, 1) (Song et al. 2021, appendix C)."""
        return _uniform_times(batch_size, self.t_eps, 1.0, generator, device)



class VPSDE(_UnitTimeSDE):
    """The variance-preserving SDE dx = -beta(t)/2 x dt + sqrt(beta(t)) dW, beta(t) = beta_min + t (beta_max - beta_min)
    (Song et al. 2021, eq. 11), the continuous limit of DDPM: beta_min = N beta_1, beta_max = N beta_N.

    log alpha(t) = -t^2 (beta_max - beta_min) / 4 - t beta_min / 2, sigma(t)^2 = 1 - alpha(t)^2.
    t_min = 1e-3 (where samplers stop, as in the paper's code) and training times are U(t_eps, 1).

    >>> VPSDE().diffusion_squared(torch.tensor([0.0, 1.0]))
    tensor([ 0.1000, 20.0000])
    """

    name = "vp"
    t_max = 1.0

    def __init__(self, beta_min: float = 0.1, beta_max: float = 20.0, *, t_min: float = 1e-3, t_eps: float = 1e-5) -> None:
        if not (0.0 < beta_min <= beta_max):
            raise ConfigError(f"need 0 < beta_min={beta_min} <= beta_max={beta_max} for the {self.name!r} SDE")
        if not (0.0 < t_min < 1.0 and 0.0 <= t_eps < 1.0):
            raise ConfigError(f"t_min={t_min} and t_eps={t_eps} must lie in (0, 1); the paper uses 1e-3 and 1e-5")
        self.beta_min, self.beta_max, self.t_min, self.t_eps = float(beta_min), float(beta_max), float(t_min), float(t_eps)

    def beta(self, t: Tensor) -> Tensor:
        """beta(t) = beta_min + t (beta_max - beta_min)."""
        return self.beta_min + _as_time(t) * (self.beta_max - self.beta_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        t = _as_time(t)
        return -0.25 * t**2 * (self.beta_max - self.beta_min) - 0.5 * t * self.beta_min

    def sigma(self, t: Tensor) -> Tensor:
        # 0.0 - expm1(0) is +0.0, where -expm1(0) would be -0.0
        return torch.sqrt(0.0 - torch.expm1(2.0 * self.log_alpha(t)))

    def log_sigma(self, t: Tensor) -> Tensor:
        return 0.5 * torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def drift(self, t: Tensor) -> Tensor:
        return -0.5 * self.beta(t)

    def diffusion_squared(self, t: Tensor) -> Tensor:
        return self.beta(t)

    def noise_conditioning(self, t: Tensor) -> Tensor:
        """1000 t, the DDPM convention, so one network serves DDPM and VP."""
        return 1000.0 * _as_time(t)

    def __repr__(self) -> str:
        return f"{type(self).__name__}(beta_min={self.beta_min}, beta_max={self.beta_max}, t_min={self.t_min}, t_eps={self.t_eps})"


class SubVPSDE(VPSDE):
    """The sub-VP SDE dx = -beta(t)/2 x dt + sqrt(beta(t) (1 - exp(-2 int_0^t beta))) dW (Song et al. 2021, eq. 12).

    alpha(t) as for VP; sigma(t) = 1 - alpha(t)^2, so its variance sigma^2 = (1 - alpha^2)^2 stays
    below VP's; g(t)^2 = beta(t) (1 - alpha(t)^4).

    >>> round(float(SubVPSDE().sigma(torch.tensor(1.0))), 6)  # 1 - exp(-10.05)
    0.999957
    """

    name = "subvp"

    def sigma(self, t: Tensor) -> Tensor:
        return 0.0 - torch.expm1(2.0 * self.log_alpha(t))

    def log_sigma(self, t: Tensor) -> Tensor:
        return torch.log(-torch.expm1(2.0 * self.log_alpha(t)))

    def diffusion_squared(self, t: Tensor) -> Tensor:
        return self.beta(t) * -torch.expm1(4.0 * self.log_alpha(t))


class VESDE(_UnitTimeSDE):
    """The variance-exploding SDE dx = sqrt(d sigma^2/dt) dW with sigma(t) = sigma_min (sigma_max / sigma_min)^t
    (Song et al. 2021, eq. 9; the geometric noise levels of NCSN, Song & Ermon 2019).

    alpha = 1, f = 0, g(t)^2 = 2 sigma(t)^2 log(sigma_max / sigma_min). sigma(0) = sigma_min, not 0: the
    process at t = 0 is the data blurred by sigma_min, as in the paper. Set sigma_max to about the
    largest distance between two training points (Song & Ermon 2020, technique 1).

    >>> VESDE(sigma_min=0.01, sigma_max=50.0).sigma(torch.tensor([0.0, 1.0]))
    tensor([1.0000e-02, 5.0000e+01])
    """

    name = "ve"
    t_max = 1.0

    def __init__(self, sigma_min: float = 0.01, sigma_max: float = 50.0, *, t_min: float = 1e-5, t_eps: float = 1e-5) -> None:
        if not (0.0 < sigma_min < sigma_max):
            raise ConfigError(f"need 0 < sigma_min={sigma_min} < sigma_max={sigma_max} for the 've' SDE")
        if not (0.0 <= t_min < 1.0 and 0.0 <= t_eps < 1.0):
            raise ConfigError(f"t_min={t_min} and t_eps={t_eps} must lie in [0, 1); the paper uses 1e-5")
        self.sigma_min, self.sigma_max, self.t_min, self.t_eps = float(sigma_min), float(sigma_max), float(t_min), float(t_eps)
        self._log_ratio = math.log(self.sigma_max / self.sigma_min)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_as_time(t))

    def log_sigma(self, t: Tensor) -> Tensor:
        return math.log(self.sigma_min) + _as_time(t) * self._log_ratio

    def sigma(self, t: Tensor) -> Tensor:
        return torch.exp(self.log_sigma(t))

    def drift(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_as_time(t))

    def diffusion_squared(self, t: Tensor) -> Tensor:
        return 2.0 * self._log_ratio * self.sigma(t) ** 2

    def noise_conditioning(self, t: Tensor) -> Tensor:
        """log(sigma(t)) / 4, the c_noise of Karras et al. 2022, table 1."""
        return 0.25 * self.log_sigma(t)

    def __repr__(self) -> str:
        return f"VESDE(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, t_min={self.t_min}, t_eps={self.t_eps})"


class EDMSchedule(NoiseSchedule):
    """The schedule of Karras et al. 2022 ("EDM"): alpha = 1, sigma(t) = t, so time is the noise level.

    f = 0 and g(t)^2 = 2 t; the probability-flow ODE is dx/dt = (x - D(x; t)) / t (EDM, eq. 4).
    t_max = sigma_max, t_min = sigma_min; sampling times follow the rho-spacing of EDM eq. 5 and end at
    t = 0; training draws log sigma ~ N(P_mean, P_std^2) (EDM, table 1).

    >>> EDMSchedule().sampling_times(3)
    tensor([8.0000e+01, 2.5152e+00, 2.0000e-03, 0.0000e+00])
    """

    name = "edm"
    edm_preconditioning = True

    def __init__(
        self, sigma_min: float = 0.002, sigma_max: float = 80.0, rho: float = 7.0, *, p_mean: float = -1.2, p_std: float = 1.2
    ) -> None:
        if not (0.0 < sigma_min < sigma_max):
            raise ConfigError(f"need 0 < sigma_min={sigma_min} < sigma_max={sigma_max} for the 'edm' schedule")
        if rho <= 0 or p_std <= 0:
            raise ConfigError(f"rho={rho} and p_std={p_std} must be > 0 (EDM uses rho=7, P_std=1.2)")
        self.sigma_min, self.sigma_max, self.rho = float(sigma_min), float(sigma_max), float(rho)
        self.p_mean, self.p_std = float(p_mean), float(p_std)
        self.t_min, self.t_max = self.sigma_min, self.sigma_max

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_as_time(t))

    def sigma(self, t: Tensor) -> Tensor:
        return _as_time(t).clone()

    def drift(self, t: Tensor) -> Tensor:
        return torch.zeros_like(_as_time(t))

    def diffusion_squared(self, t: Tensor) -> Tensor:
        return 2.0 * _as_time(t)

    def sampling_times(
        self, steps: int, *, t_start: float | None = None, device: torch.device | str | None = None, dtype: torch.dtype = torch.float32
    ) -> Tensor:
        """(steps + 1,) times: t_i = (t_start^(1/rho) + i/(steps-1) (sigma_min^(1/rho) - t_start^(1/rho)))^rho for
        i < steps, then t_steps = 0 (Karras et al. 2022, eq. 5): steps = 18 is the paper's CIFAR-10 setting."""
        _check_steps(steps)
        t_start = _check_t_start(self, t_start)
        if steps == 1:
            times = torch.tensor([t_start, 0.0], dtype=torch.float64)
        else:
            if t_start <= self.sigma_min:
                raise ConfigError(f"t_start={t_start} must exceed sigma_min={self.sigma_min}")
            ramp = torch.linspace(0.0, 1.0, steps, dtype=torch.float64)
            low, high = self.sigma_min ** (1 / self.rho), t_start ** (1 / self.rho)
            times = torch.cat([(high + ramp * (low - high)) ** self.rho, torch.zeros(1, dtype=torch.float64)])
            times[0] = t_start
        return times.to(device=device, dtype=dtype)

    def training_times(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """(B,) noise levels with log sigma ~ N(P_mean, P_std^2) (Karras et al. 2022, table 1)."""
        log_sigma = self.p_mean + self.p_std * sample_standard_normal((batch_size,), generator=generator, device=device)
        return torch.exp(log_sigma)

    def noise_conditioning(self, t: Tensor) -> Tensor:
        """log(sigma) / 4, the c_noise of Karras et al. 2022, table 1."""
        return 0.25 * torch.log(_as_time(t))

    def __repr__(self) -> str:
        return f"EDMSchedule(sigma_min={self.sigma_min}, sigma_max={self.sigma_max}, rho={self.rho})"


class RectifiedFlowSchedule(_UnitTimeSDE):
    """The straight path of flow matching and rectified flow, x_t = (1 - t) x_0 + t eps (Lipman et al.
    2023, sec. 4.1 with sigma_min = 0; Liu et al. 2023, eq. 1): alpha = 1 - t, sigma = t.

    f = d log alpha / dt = -1 / (1 - t), g^2 = d sigma^2 / dt - 2 f sigma^2 = 2 t / (1 - t), so the
    probability-flow ODE is dx/dt = f x + g^2 eps_hat / (2 sigma) = (eps_hat - x) / (1 - t)
    = E[eps - x_0 | x_t], the velocity a flow-matching network learns ("velocity" prediction).
    t_max = 1 - 1e-3: at t = 1 alpha vanishes and x_0 cannot be read off x_t and eps; there x_t is
    N(0.001 x_0, 0.999^2 I), taken as the prior N(0, prior_std^2 I). t_min = 1e-3, where samplers end
    with one denoising step (Langevin correctors and the likelihood's ODE need noise at their last
    time), training times ~ U(t_eps, t_max); the network sees 1000 t, as for VP.

    >>> s = RectifiedFlowSchedule()
    >>> s.alpha(torch.tensor([0.25])), s.sigma(torch.tensor([0.25])), s.diffusion_squared(torch.tensor([0.5]))
    (tensor([0.7500]), tensor([0.2500]), tensor([2.]))
    """

    name = "rectified"

    def __init__(self, *, t_min: float = 1e-3, t_max: float = 1.0 - 1e-3, t_eps: float = 1e-5) -> None:
        if not (0.0 < t_min < t_max < 1.0 and 0.0 <= t_eps < t_max):
            raise ConfigError(f"need 0 < t_min={t_min} < t_max={t_max} < 1 and 0 <= t_eps={t_eps} < t_max for the 'rectified' path")
        self.t_min, self.t_max, self.t_eps = float(t_min), float(t_max), float(t_eps)

    def log_alpha(self, t: Tensor) -> Tensor:
        return torch.log1p(-_as_time(t))

    def sigma(self, t: Tensor) -> Tensor:
        return _as_time(t).clone()

    def drift(self, t: Tensor) -> Tensor:
        return -1.0 / (1.0 - _as_time(t))

    def diffusion_squared(self, t: Tensor) -> Tensor:
        t = _as_time(t)
        return 2.0 * t / (1.0 - t)

    def training_times(
        self, batch_size: int, *, generator: torch.Generator | None = None, device: torch.device | str | None = None
    ) -> Tensor:
        """(B,) times ~ U(t_eps, t_max)."""
        return _uniform_times(batch_size, self.t_eps, self.t_max, generator, device)

    def noise_conditioning(self, t: Tensor) -> Tensor:
        """1000 t, as for DDPM and VP, so the same networks and embeddings serve."""
        return 1000.0 * _as_time(t)

    def __repr__(self) -> str:
        return f"RectifiedFlowSchedule(t_min={self.t_min}, t_max={self.t_max}, t_eps={self.t_eps})"


SCHEDULES: dict[str, Callable[..., NoiseSchedule]] = {
    "linear": DiscreteSchedule.linear,
    "cosine": DiscreteSchedule.cosine,
    "vp": VPSDE,
    "subvp": SubVPSDE,
    "ve": VESDE,
    "edm": EDMSchedule,
    "rectified": RectifiedFlowSchedule,
}


def schedule_parameters(name: str) -> tuple[str, ...]:
    """The keywords the schedule registered as `name` is built with (`get_schedule`'s kwargs).

    >>> "steps" in schedule_parameters("linear"), "steps" in schedule_parameters("vp")
    (True, False)
    """
    return tuple(inspect.signature(_schedule_factory(name)).parameters)


def _schedule_factory(name: str) -> Callable[..., NoiseSchedule]:
    if name not in SCHEDULES:
        raise ConfigError(f"unknown noise schedule {name!r}; choose one of {', '.join(map(repr, SCHEDULES))}")
    return SCHEDULES[name]


def get_schedule(name: str, **kwargs) -> NoiseSchedule:
    """The schedule registered as `name`, built with `kwargs` (forwarded to its constructor).

    >>> get_schedule("cosine", steps=100).discrete_steps
    100
    """
    factory = _schedule_factory(name)
    try:
        return factory(**kwargs)
    except TypeError as exc:
        raise ConfigError(f"schedule {name!r}: {exc}") from None
