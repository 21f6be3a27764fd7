"""The forward processes against the papers' formulas, Bayes' rule, finite differences and Monte Carlo."""

import math

import pytest
import torch
from scipy import stats

from genlab.errors import ConfigError
from genlab.models.diffusion.schedules import (
    SCHEDULES,
    VESDE,
    VPSDE,
    DiscreteSchedule,
    EDMSchedule,
    SubVPSDE,
    expand_like,
    get_schedule,
)

F64 = torch.float64


pytestmark = pytest.mark.usefixtures("one_thread")


ALL = sorted(SCHEDULES)


def interior_times(schedule, n=7, seed=0):
    """(n,) float64 times strictly inside (t_min, t_max), off the discrete grid."""
    g = torch.Generator().manual_seed(seed)
    low, high = max(schedule.t_min, 0.01 * schedule.t_max), 0.98 * schedule.t_max
    return low + (high - low) * torch.rand(n, generator=g, dtype=F64)


# -- the papers' alpha_bar -------------------------------------------------------------------------
def test_linear_alpha_bar_is_the_product_of_one_minus_beta():
    schedule = DiscreteSchedule.linear(steps=1000)
    betas = [1e-4 + (0.02 - 1e-4) * i / 999 for i in range(1000)]  # Ho et al. 2020: linear 1e-4 .. 0.02
    alpha_bar = [1.0]
    for beta in betas:
        alpha_bar.append(alpha_bar[-1] * (1 - beta))
    grid = torch.arange(1001, dtype=F64) / 1000
    torch.testing.assert_close(schedule.alpha(grid) ** 2, torch.tensor(alpha_bar, dtype=F64), rtol=1e-10, atol=1e-14)
    torch.testing.assert_close(schedule.sigma(grid) ** 2, 1 - torch.tensor(alpha_bar, dtype=F64), rtol=1e-10, atol=1e-14)


def test_cosine_alpha_bar_matches_nichol_dhariwal():
    steps, s = 1000, 0.008
    schedule = DiscreteSchedule.cosine(steps=steps, s=s)
    t = torch.arange(steps + 1, dtype=F64) / steps
    expected = torch.cos((t + s) / (1 + s) * math.pi / 2) ** 2 / math.cos(s / (1 + s) * math.pi / 2) ** 2
    # equal on the grid except the last step, where the paper clips beta at 0.999
    torch.testing.assert_close(schedule.alpha(t[:-1]) ** 2, expected[:-1], rtol=1e-9, atol=1e-12)
    assert float(schedule.betas.max()) == pytest.approx(0.999)
    assert float(schedule.alpha(t[-1:]) ** 2) == pytest.approx(float(expected[-2]) * (1 - 0.999), rel=1e-9)


def test_vp_sde_is_the_limit_of_the_linear_schedule():
    # Song et al. 2021, sec. 3.4: beta(t) = N beta_{Nt}, beta_min = N beta_1 = 0.1, beta_max = N beta_N = 20
    discrete, continuous = DiscreteSchedule.linear(steps=1000), VPSDE()
    t = torch.arange(1, 1001, dtype=F64) / 1000
    torch.testing.assert_close(discrete.alpha(t), continuous.alpha(t), atol=2e-3, rtol=0)
    torch.testing.assert_close(discrete.sigma(t), continuous.sigma(t), atol=2e-3, rtol=0)
    # g^2 = -N log(1 - beta_i) = N beta_i (1 + beta_i / 2 + ...) on ((i-1)/N, i/N]: within one step's change of beta(t)
    # (19.9 / N) and the relative second-order term (beta_N / 2 = 1%)
    torch.testing.assert_close(discrete.diffusion_squared(t), continuous.beta(t), rtol=0.011, atol=19.9 / 1000 + 1e-9)


def test_closed_forms_of_the_sdes():
    t = torch.tensor([0.1, 0.5, 0.9], dtype=F64)
    vp, subvp, ve, edm = VPSDE(), SubVPSDE(), VESDE(sigma_min=0.01, sigma_max=50.0), EDMSchedule()
    integral = 0.1 * t + 0.5 * t**2 * (20 - 0.1)  # int_0^t beta
    torch.testing.assert_close(vp.alpha(t), torch.exp(-0.5 * integral))
    torch.testing.assert_close(vp.sigma(t) ** 2, 1 - torch.exp(-integral))
    torch.testing.assert_close(subvp.sigma(t), 1 - torch.exp(-integral))
    torch.testing.assert_close(ve.sigma(t), 0.01 * (50 / 0.01) ** t)
    torch.testing.assert_close(ve.alpha(t), torch.ones_like(t))
    torch.testing.assert_close(edm.sigma(t), t)


# -- q(x_t | x_0) -----------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_q_sample_moments_match_alpha_and_sigma(name):
    schedule = get_schedule(name)
    g = torch.Generator().manual_seed(1)
    n = 20_000
    x0 = torch.tensor([1.5, -0.5, 0.0], dtype=F64).expand(n, 3)
    t = torch.full((n,), 0.3 * schedule.t_max, dtype=F64)
    x_t = schedule.q_sample(x0, t, generator=g)
    alpha, sigma = float(schedule.alpha(t[:1])), float(schedule.sigma(t[:1]))
    standard_error = sigma / math.sqrt(n)
    torch.testing.assert_close(x_t.mean(0), alpha * x0[0], atol=5 * standard_error, rtol=0)
    variance_error = sigma**2 * math.sqrt(2 / n)
    torch.testing.assert_close(x_t.var(0), torch.full((3,), sigma**2, dtype=F64), atol=5 * variance_error, rtol=0)


def test_q_sample_broadcasts_per_sample_times_over_images():
    schedule = DiscreteSchedule.linear(steps=100)
    x0, noise = torch.randn(4, 3, 5, 5), torch.randn(4, 3, 5, 5)
    t = torch.tensor([0.0, 0.25, 0.5, 1.0])
    x_t = schedule.q_sample(x0, t, noise)
    for b in range(4):
        expected = schedule.alpha(t[b : b + 1]) * x0[b] + schedule.sigma(t[b : b + 1]) * noise[b]
        torch.testing.assert_close(x_t[b], expected)
    assert expand_like(t, x0).shape == (4, 1, 1, 1)


# -- transitions and posteriors -----------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_transition_composes_with_q_sample(name):
    # q(x_t | x_0) = int q(x_t | x_s) q(x_s | x_0) dx_s: alpha_t = alpha_{t|s} alpha_s, sigma_t^2 = alpha_{t|s}^2 sigma_s^2 + sigma_{t|s}^2
    schedule = get_schedule(name)
    t = interior_times(schedule, seed=2)
    s = t * torch.rand(t.shape, generator=torch.Generator().manual_seed(3), dtype=F64).clamp(0.1, 0.9)
    s = s.clamp(min=schedule.t_min)
    scale, variance = schedule.transition(s, t)
    torch.testing.assert_close(scale * schedule.alpha(s), schedule.alpha(t))
    torch.testing.assert_close(scale**2 * schedule.sigma(s) ** 2 + variance, schedule.sigma(t) ** 2)
    # and by Monte Carlo: x_0 -> x_s by q_sample, x_s -> x_t by the transition
    g, n = torch.Generator().manual_seed(4), 20_000
    x_s = schedule.q_sample(torch.full((n, 1), 0.7, dtype=F64), s[:1].expand(n), generator=g)
    x_t = scale[0] * x_s + variance[0].sqrt() * torch.randn(n, 1, generator=g, dtype=F64)
    sigma_t = float(schedule.sigma(t[:1]))
    assert float(x_t.mean()) == pytest.approx(0.7 * float(schedule.alpha(t[:1])), abs=5 * sigma_t / math.sqrt(n))
    assert float(x_t.var()) == pytest.approx(sigma_t**2, abs=5 * sigma_t**2 * math.sqrt(2 / n))


@pytest.mark.parametrize("name", ALL)
def test_posterior_is_bayes_rule(name):
    # q(x_s | x_t, x_0) proportional to q(x_s | x_0) q(x_t | x_s): a product of two Gaussians in x_s
    schedule = get_schedule(name)
    t = interior_times(schedule, seed=5)
    s = (0.6 * t).clamp(min=schedule.t_min)
    g = torch.Generator().manual_seed(6)
    x0, x_t = torch.randn(t.numel(), 3, generator=g, dtype=F64), torch.randn(t.numel(), 3, generator=g, dtype=F64)
    alpha_s, sigma_s = schedule.alpha(s)[:, None], schedule.sigma(s)[:, None]
    scale = (schedule.alpha(t) / schedule.alpha(s))[:, None]
    variance_ts = schedule.sigma(t)[:, None] ** 2 - scale**2 * sigma_s**2
    precision = 1 / sigma_s**2 + scale**2 / variance_ts
    expected_mean = (alpha_s * x0 / sigma_s**2 + scale * x_t / variance_ts) / precision
    mean, variance = schedule.posterior(x_t, x0, t, s)
    torch.testing.assert_close(mean, expected_mean, rtol=1e-8, atol=1e-10)
    torch.testing.assert_close(variance, 1 / precision[:, 0], rtol=1e-8, atol=1e-12)


def test_posterior_on_the_grid_is_ho_et_al_eq_7():
    schedule = DiscreteSchedule.linear(steps=1000)
    alpha_bar, betas = schedule.alpha_bar, schedule.betas
    i = torch.tensor([1, 2, 10, 500, 1000])
    t, s = i.to(F64) / 1000, (i - 1).to(F64) / 1000
    x0, x_t = torch.randn(5, 2, dtype=F64), torch.randn(5, 2, dtype=F64)
    beta, a_bar, a_bar_prev = betas[i - 1], alpha_bar[i], alpha_bar[i - 1]
    beta_tilde = (1 - a_bar_prev) / (1 - a_bar) * beta
    mean_expected = (a_bar_prev.sqrt() * beta / (1 - a_bar))[:, None] * x0 + ((1 - beta).sqrt() * (1 - a_bar_prev) / (1 - a_bar))[:, None] * x_t
    mean, variance = schedule.posterior(x_t, x0, t, s)
    torch.testing.assert_close(mean, mean_expected, rtol=1e-9, atol=1e-12)
    torch.testing.assert_close(variance, beta_tilde, rtol=1e-9, atol=1e-15)
    assert float(variance[0]) == 0.0  # the last step of sampling adds no noise
    torch.testing.assert_close(schedule.transition(s, t).variance, beta, rtol=1e-9, atol=0)


# -- the SDE -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_drift_and_diffusion_match_finite_differences(name):
    # f = d log alpha / dt and g^2 = d sigma^2/dt - 2 f sigma^2
    schedule = get_schedule(name)
    t = interior_times(schedule, seed=7)
    h = 1e-7 * schedule.t_max
    log_alpha_rate = (schedule.log_alpha(t + h) - schedule.log_alpha(t - h)) / (2 * h)
    sigma2_rate = (schedule.sigma(t + h) ** 2 - schedule.sigma(t - h) ** 2) / (2 * h)
    torch.testing.assert_close(schedule.drift(t), log_alpha_rate, rtol=1e-5, atol=1e-7)
    expected_g2 = sigma2_rate - 2 * schedule.drift(t) * schedule.sigma(t) ** 2
    torch.testing.assert_close(schedule.diffusion_squared(t), expected_g2, rtol=1e-5, atol=1e-7)


def test_vp_drift_and_diffusion_are_beta():
    vp, subvp = VPSDE(beta_min=0.1, beta_max=20.0), SubVPSDE(beta_min=0.1, beta_max=20.0)
    t = torch.tensor([0.0, 0.25, 1.0], dtype=F64)
    beta = 0.1 + t * 19.9
    torch.testing.assert_close(vp.drift(t), -beta / 2)
    torch.testing.assert_close(vp.diffusion_squared(t), beta)
    integral = 0.1 * t + 0.5 * t**2 * 19.9
    torch.testing.assert_close(subvp.diffusion_squared(t), beta * (1 - torch.exp(-2 * integral)))


def test_discrete_drift_on_a_grid_time_is_the_step_ending_there():
    schedule = DiscreteSchedule.linear(steps=10)
    t = torch.tensor([0.3], dtype=torch.float32)  # 0.3 * 10 = 3.0000001 in float32
    assert float(schedule.diffusion_squared(t)) == pytest.approx(-10 * math.log(1 - float(schedule.betas[2])), rel=1e-5)



@pytest.mark.parametrize("dtype", [torch.float32, F64])
def test_discrete_grid_is_copied_once_per_device_and_dtype_with_unchanged_numbers(dtype):
    # the grid is kept on the times' device (a per-call copy to a GPU blocks the host); the numbers
    # must be those of the grid cast at each call, as before the copy was kept
    schedule = DiscreteSchedule.cosine(steps=50)
    t = torch.linspace(0.0, 1.0, 23, dtype=dtype)
    grid = schedule._log_alpha_grid.to(dtype)  # log alpha on the grid i / N, cast as each call did before
    position = t * 50
    i1 = torch.ceil(torch.where((position - position.round()).abs() < 1e-3, position.round(), position)).clamp(1, 50).long()
    expected_log_alpha = torch.lerp(grid[i1 - 1], grid[i1], position - (i1 - 1).to(dtype))
    for _ in range(2):  # the second call reads the kept copy
        assert torch.equal(schedule.log_alpha(t), expected_log_alpha)
        assert torch.equal(schedule.sigma(t), torch.sqrt(0.0 - torch.expm1(2.0 * expected_log_alpha)))
        assert torch.equal(schedule.drift(t), (grid[i1] - grid[i1 - 1]) * 50)
    assert list(schedule._grid_copies) == [(t.device, dtype)]
    kept = schedule._grid_copies[(t.device, dtype)]
    schedule.alpha(t[:3])
    assert schedule._grid_copies[(t.device, dtype)] is kept

# -- times -----------------------------------------------------------------------------------------
def test_training_times_of_discrete_schedules_are_uniform_on_the_grid():
    schedule = DiscreteSchedule.linear(steps=50)
    t = schedule.training_times(20_000, generator=torch.Generator().manual_seed(0))
    steps = t * 50
    torch.testing.assert_close(steps, steps.round())
    counts = torch.bincount(steps.round().long(), minlength=51)
    assert counts[0] == 0 and bool((counts[1:] > 0).all())
    assert stats.chisquare(counts[1:].numpy()).pvalue > 1e-3


@pytest.mark.parametrize("schedule", [VPSDE(t_eps=1e-5), SubVPSDE(t_eps=1e-3), VESDE(t_eps=1e-5)], ids=repr)
def test_training_times_of_sdes_are_uniform(schedule):
    t = schedule.training_times(5000, generator=torch.Generator().manual_seed(0))
    assert float(t.min()) >= schedule.t_eps and float(t.max()) <= 1.0
    assert stats.kstest(t.numpy(), stats.uniform(loc=schedule.t_eps, scale=1 - schedule.t_eps).cdf).pvalue > 1e-3


def test_training_times_of_edm_are_log_normal():
    schedule = EDMSchedule(p_mean=-1.2, p_std=1.2)
    t = schedule.training_times(5000, generator=torch.Generator().manual_seed(0))
    assert stats.kstest(torch.log(t).numpy(), stats.norm(loc=-1.2, scale=1.2).cdf).pvalue > 1e-3


def test_training_times_are_reproducible():
    schedule = VPSDE()
    a = schedule.training_times(8, generator=torch.Generator().manual_seed(3))
    b = schedule.training_times(8, generator=torch.Generator().manual_seed(3))
    assert torch.equal(a, b)


@pytest.mark.parametrize("name", ALL)
def test_sampling_times_decrease_from_t_max(name):
    schedule = get_schedule(name)
    times = schedule.sampling_times(10)
    assert times.shape == (11,)
    assert bool((times[:-1] > times[1:]).all())
    assert float(times[0]) == pytest.approx(schedule.t_max)
    assert float(times[-1]) in (0.0, pytest.approx(schedule.t_min))
    start = schedule.sampling_times(5, t_start=0.5 * schedule.t_max)
    assert float(start[0]) == pytest.approx(0.5 * schedule.t_max) and bool((start[:-1] > start[1:]).all())


def test_discrete_sampling_times_are_grid_sub_sequences():
    schedule = DiscreteSchedule.linear(steps=1000)
    full = schedule.sampling_times(1000, dtype=F64)
    torch.testing.assert_close(full, torch.arange(1000, -1, -1, dtype=F64) / 1000)
    part = schedule.sampling_times(50, dtype=F64) * 1000
    torch.testing.assert_close(part, part.round())
    with pytest.raises(ConfigError, match="steps"):
        schedule.sampling_times(200, t_start=0.1)


def test_edm_sampling_times_are_karras_eq_5():
    schedule = EDMSchedule(sigma_min=0.002, sigma_max=80.0, rho=7.0)
    times = schedule.sampling_times(18, dtype=F64)
    i = torch.arange(18, dtype=F64)
    expected = (80 ** (1 / 7) + i / 17 * (0.002 ** (1 / 7) - 80 ** (1 / 7))) ** 7
    torch.testing.assert_close(times[:-1], expected)
    assert float(times[-1]) == 0.0


@pytest.mark.parametrize("name", ALL)
def test_time_at_log_snr_inverts_log_snr(name):
    schedule = get_schedule(name)
    t = interior_times(schedule, seed=8)
    torch.testing.assert_close(schedule.time_at_log_snr(schedule.log_snr(t)), t, rtol=1e-9, atol=1e-12)


# -- conversions, prior, conditioning, registry ---------------------------------------------------
@pytest.mark.parametrize("name", ALL)
def test_eps_x0_score_conversions_are_consistent(name):
    schedule = get_schedule(name)
    t = interior_times(schedule, n=4, seed=9)
    x0, eps = torch.randn(4, 3, dtype=F64), torch.randn(4, 3, dtype=F64)
    x_t = schedule.q_sample(x0, t, eps)
    torch.testing.assert_close(schedule.x0_from_eps(x_t, t, eps), x0)
    torch.testing.assert_close(schedule.eps_from_x0(x_t, t, x0), eps)
    torch.testing.assert_close(schedule.score_from_eps(t, eps), -eps / schedule.sigma(t)[:, None])


@pytest.mark.parametrize("name", ALL)
def test_prior_is_the_stated_gaussian(name):
    schedule = get_schedule(name)
    t_max = torch.tensor([schedule.t_max], dtype=F64)
    std = float(torch.sqrt(schedule.alpha(t_max) ** 2 + schedule.sigma(t_max) ** 2))
    x = schedule.prior_sample((4000, 2), generator=torch.Generator().manual_seed(0), dtype=F64)
    assert float(x.std()) == pytest.approx(std, rel=0.05)
    expected = torch.distributions.Normal(0.0, std).log_prob(x[:5]).sum(1)
    torch.testing.assert_close(schedule.prior_log_prob(x[:5]), expected)


def test_noise_conditioning():
    t = torch.tensor([0.001, 0.5])
    torch.testing.assert_close(DiscreteSchedule.linear().noise_conditioning(t), 1000 * t)
    torch.testing.assert_close(VPSDE().noise_conditioning(t), 1000 * t)
    torch.testing.assert_close(EDMSchedule().noise_conditioning(t), torch.log(t) / 4)
    ve = VESDE()
    torch.testing.assert_close(ve.noise_conditioning(t), torch.log(ve.sigma(t)) / 4)


def test_low_precision_times_are_computed_in_float32():
    schedule = DiscreteSchedule.linear()
    t = torch.tensor([0.3, 0.7], dtype=torch.bfloat16)
    assert schedule.alpha(t).dtype == torch.float32
    torch.testing.assert_close(schedule.alpha(t), schedule.alpha(t.float()))


def test_registry_and_errors():
    assert isinstance(get_schedule("cosine", steps=10), DiscreteSchedule)
    with pytest.raises(ConfigError, match="'linear'"):
        get_schedule("quadratic")
    with pytest.raises(ConfigError, match="beta_min"):
        VPSDE(beta_min=5.0, beta_max=1.0)
    with pytest.raises(ConfigError, match="sigma_min"):
        VESDE(sigma_min=1.0, sigma_max=0.5)
    with pytest.raises(ConfigError, match="betas"):
        DiscreteSchedule(torch.tensor([0.5, 1.5]))
    with pytest.raises(ConfigError, match="steps"):
        DiscreteSchedule.linear(steps=0)
    with pytest.raises(ConfigError, match="warmup"):
        get_schedule("vp", warmup=3)
