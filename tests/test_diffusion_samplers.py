"""Samplers driven by the exact denoiser of a Gaussian mixture must reproduce the mixture; the exact
denoiser itself is checked against autograd and torch.distributions.

Tolerances: a sample statistic of n draws must lie within Z standard errors (estimated from the same
draws) of the truth, plus a small allowance for each sampler's discretisation bias, measured at the
step counts used here (it shrinks as the steps grow; see the comments).
"""

import math

import pytest
import torch
from torch import nn

from genlab.errors import ConfigError
from genlab.models.diffusion.analytic import GaussianMixtureData
from genlab.models.diffusion.samplers import (
    SAMPLERS,
    SampleResult,
    ancestral_sample,
    annealed_langevin_sample,
    ddim_invert,
    ddim_sample,
    dpm_solver_sample,
    euler_maruyama_sample,
    get_sampler,
    heun_sample,
    ode_log_likelihood,
    ode_sample,
    predictor_corrector_sample,
)
from genlab.models.diffusion.schedules import SCHEDULES, VESDE, VPSDE, DiscreteSchedule, EDMSchedule, get_schedule

F64 = torch.float64
Z = 4.0  # standard errors allowed for sampling noise


pytestmark = pytest.mark.usefixtures("one_thread")


def mixture() -> GaussianMixtureData:
    """Two well-separated, correlated 2D Gaussians of weights 0.3 and 0.7 (float64)."""
    return GaussianMixtureData(
        torch.tensor([0.3, 0.7], dtype=F64),
        torch.tensor([[-1.5, 0.5], [1.0, -0.5]], dtype=F64),
        covariances=torch.tensor([[[0.2, 0.05], [0.05, 0.1]], [[0.1, -0.03], [-0.03, 0.3]]], dtype=F64),
    )


def seeded(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def assert_matches_mixture(x: torch.Tensor, data: GaussianMixtureData, bias: float) -> None:
    """Mean, covariance and mode weights of x against data's, within Z standard errors + bias.

    The mode weights are estimated by E_x[p(k | x)], which equals w_k exactly when x ~ data, so no
    classification error enters."""
    n = x.shape[0]
    assert x.shape == (n, data.dim) and bool(torch.isfinite(x).all())
    mean_error = (x.mean(0) - data.mean).abs()
    assert bool((mean_error <= Z * x.std(0) / math.sqrt(n) + bias).all()), f"mean off by {mean_error.tolist()}"
    centred = x - x.mean(0)
    products = centred[:, :, None] * centred[:, None, :]  # (n, D, D)
    covariance_error = (torch.cov(x.T) - data.covariance).abs()
    allowed = Z * products.std(0) / math.sqrt(n) + bias
    assert bool((covariance_error <= allowed).all()), f"covariance off by {covariance_error.tolist()}"
    responsibilities = data.responsibilities(x)  # (n, K)
    weight_error = (responsibilities.mean(0) - data.weights).abs()
    allowed = Z * responsibilities.std(0) / math.sqrt(n) + bias
    assert bool((weight_error <= allowed).all()), f"mode weights off by {weight_error.tolist()}"


# ================================================================================================
# Each sampler reproduces the mixture
# ================================================================================================
N_SAMPLES = 6000

# (sampler, schedule, keywords, bias allowance). Biases measured with the exact denoiser at n = 6000:
# ancestral/DDIM eta=1 at 300 steps ~0.02 in a variance (0.008 at 1000 steps), DDIM eta=0 at 100 steps
# ~0.02, Euler-Maruyama at 500 steps ~0.015, PC at 200 steps ~0.01, Heun on EDM at 40 steps ~0.01,
# annealed Langevin ~0.02 (the paper's 10 x 100 steps), dopri5 ~0.
CASES = {
    "ancestral": (ancestral_sample, lambda: DiscreteSchedule.linear(), dict(steps=300), 0.03),
    "ddim_eta0": (ddim_sample, lambda: DiscreteSchedule.cosine(), dict(steps=100, eta=0.0), 0.03),
    "ddim_eta1": (ddim_sample, lambda: DiscreteSchedule.cosine(), dict(steps=300, eta=1.0), 0.03),
    "langevin": (
        annealed_langevin_sample,
        lambda: VESDE(sigma_min=0.01, sigma_max=5.0),
        dict(noise_levels=10, steps_per_level=100, step_size=5e-5),
        0.03,
    ),
    "euler_maruyama": (euler_maruyama_sample, lambda: VPSDE(), dict(steps=500), 0.025),
    "pc": (predictor_corrector_sample, lambda: VESDE(sigma_min=0.01, sigma_max=10.0), dict(steps=200, snr=0.16), 0.03),
    "heun": (heun_sample, lambda: EDMSchedule(), dict(steps=40), 0.02),
    "dpm_solver": (dpm_solver_sample, lambda: DiscreteSchedule.cosine(), dict(steps=40), 0.03),
    "dpm_solver_sde": (dpm_solver_sample, lambda: VPSDE(), dict(steps=100, eta=1.0), 0.03),
    "ode": (ode_sample, lambda: VPSDE(), dict(method="dopri5", rtol=1e-5, atol=1e-5), 0.01),
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_sampler_with_the_exact_denoiser_reproduces_the_mixture(case):
    sampler, make_schedule, keywords, bias = CASES[case]
    data, schedule = mixture(), make_schedule()
    result = sampler(data.eps_fn(schedule), schedule, (N_SAMPLES, 2), generator=seeded(0), dtype=F64, **keywords)
    assert isinstance(result, SampleResult)
    assert_matches_mixture(result.x, data, bias)


def test_heun_with_churn_reproduces_the_mixture():
    data, schedule = mixture(), VPSDE()
    result = heun_sample(data.eps_fn(schedule), schedule, (N_SAMPLES, 2), steps=40, s_churn=10.0, generator=seeded(1), dtype=F64)
    assert_matches_mixture(result.x, data, bias=0.03)


def test_reverse_diffusion_predictor_reproduces_the_mixture():
    data, schedule = mixture(), VPSDE()
    result = predictor_corrector_sample(
        data.eps_fn(schedule), schedule, (N_SAMPLES, 2), steps=200, predictor="reverse_diffusion", generator=seeded(2), dtype=F64
    )
    assert_matches_mixture(result.x, data, bias=0.03)


# ================================================================================================
# Identities between samplers
# ================================================================================================
def test_ddim_with_eta_one_is_ancestral_sampling():
    # Song et al. 2021 (DDIM), eq. 16: eta = 1 is the DDPM posterior; with the same draws, the same numbers
    data, schedule = mixture(), DiscreteSchedule.linear(steps=1000)
    x_start = schedule.prior_sample((64, 2), generator=seeded(0), dtype=F64)
    ddpm = ancestral_sample(data.eps_fn(schedule), schedule, x_start=x_start, steps=20, generator=seeded(1))
    ddim = ddim_sample(data.eps_fn(schedule), schedule, x_start=x_start, steps=20, eta=1.0, generator=seeded(1))
    torch.testing.assert_close(ddim.x, ddpm.x, rtol=1e-9, atol=1e-9)


@pytest.mark.parametrize("schedule", [DiscreteSchedule.linear(), VPSDE(), EDMSchedule(), VESDE()], ids=lambda s: s.name)
def test_first_order_dpm_solver_is_ddim_and_ancestral_sampling(schedule):
    # order 1 of DPM-Solver++ is DDIM (Lu et al. 2022, sec. 4); its SDE variant at order 1 draws from
    # the posterior q(x_s | x_t, x0_hat), as DDIM with eta = 1 does: with the same draws, the same numbers
    eps_fn = mixture().eps_fn(schedule)
    x_start = schedule.prior_sample((64, 2), generator=seeded(0), dtype=F64)
    for eta in (0.0, 1.0):
        ddim = ddim_sample(eps_fn, schedule, x_start=x_start, steps=12, eta=eta, generator=seeded(1))
        dpm = dpm_solver_sample(eps_fn, schedule, x_start=x_start, steps=12, order=1, eta=eta, generator=seeded(1))
        torch.testing.assert_close(dpm.x, ddim.x, rtol=1e-9, atol=1e-9)


def test_second_order_dpm_solver_converges_faster_than_ddim():
    # the error to the exact ODE solution (dopri5 at 1e-8) falls as h^2 for DPM-Solver++(2M) and as h
    # for DDIM; mean distance at 10 and 40 steps on EDM's schedule, measured: DDIM 0.24 -> 0.057 (x4.3),
    # DPM-Solver++ 0.23 -> 0.0083 (x28)
    data, schedule = mixture(), EDMSchedule()
    eps_fn = data.eps_fn(schedule)
    x_start = schedule.prior_sample((256, 2), generator=seeded(0), dtype=F64)
    exact = ode_sample(eps_fn, schedule, x_start=x_start, rtol=1e-8, atol=1e-8).x
    error = {}
    for name, sampler in (("ddim", ddim_sample), ("dpm", dpm_solver_sample)):
        for steps in (10, 40):
            error[name, steps] = (sampler(eps_fn, schedule, x_start=x_start, steps=steps).x - exact).norm(dim=1).mean().item()
    assert error["dpm", 40] < 0.5 * error["ddim", 40]
    # 4x the steps: 2nd order cuts the error by well over 4 (16 in the limit), 1st order by about 4 or less
    assert error["dpm", 10] / error["dpm", 40] > 6.0
    assert error["ddim", 10] / error["ddim", 40] < 6.0


def test_ddim_with_eta_zero_is_deterministic():
    data, schedule = mixture(), DiscreteSchedule.cosine(steps=1000)
    x_start = torch.randn(32, 2, dtype=F64)
    torch.manual_seed(0)
    first = ddim_sample(data.eps_fn(schedule), schedule, x_start=x_start, steps=10)
    torch.manual_seed(1)
    second = ddim_sample(data.eps_fn(schedule), schedule, x_start=x_start, steps=10)
    assert torch.equal(first.x, second.x)


def test_ddim_inversion_then_sampling_returns_the_input():
    schedule = DiscreteSchedule.cosine(steps=1000)
    gaussian = GaussianMixtureData(torch.ones(1, dtype=F64), torch.tensor([[0.5, -0.3]], dtype=F64), covariances=mixture().covariances[:1])
    x0 = gaussian.sample(256, seeded(0))
    errors = []
    for steps in (100, 200):
        latent = ddim_invert(gaussian.eps_fn(schedule), schedule, x0, steps)
        assert latent.nfe == steps
        back = ddim_sample(gaussian.eps_fn(schedule), schedule, x_start=latent.x, steps=steps)
        errors.append(float((back.x - x0).norm(dim=1).max()))
    assert errors[0] < 0.06
    assert 1.6 < errors[0] / errors[1] < 2.4  # a first-order method: half the step, half the error
    # on the mixture, points near the boundary between modes are unstable (the flow splits there);
    # the typical point still comes back
    data = mixture()
    x0 = data.sample(256, seeded(1))
    latent = ddim_invert(data.eps_fn(schedule), schedule, x0, 200)
    back = ddim_sample(data.eps_fn(schedule), schedule, x_start=latent.x, steps=200)
    assert float((back.x - x0).norm(dim=1).median()) < 0.02


# ================================================================================================
# Likelihood
# ================================================================================================
def test_ode_log_likelihood_with_the_exact_trace_is_the_mixture_density():
    data, schedule = mixture(), VPSDE()
    x0 = data.sample(64, seeded(0))
    result = ode_log_likelihood(data.eps_fn(schedule), schedule, x0, trace="exact", rtol=1e-7, atol=1e-7)
    assert result.log_prob.shape == (64,) and result.nfe > 10
    t0, t_max = torch.tensor(schedule.t_min, dtype=F64), torch.tensor(schedule.t_max, dtype=F64)
    # the change of variables is exact: with the true density at t_max in place of the N(0, I) prior ...
    flow = result.log_prob - result.prior_log_prob + data.marginal_log_prob(result.latent, t_max, schedule)
    torch.testing.assert_close(flow, data.marginal_log_prob(x0, t0, schedule), rtol=0, atol=1e-4)
    # ... and with the prior it is within the prior's mismatch (alpha(1) = 0.007) of log p(x0)
    torch.testing.assert_close(result.log_prob, data.log_prob(x0), rtol=0, atol=0.02)


@pytest.mark.parametrize("probe", ["rademacher", "gaussian"])
def test_ode_log_likelihood_with_hutchinson_is_unbiased(probe):
    data, schedule = mixture(), VPSDE()
    x0 = data.sample(400, seeded(0))
    eps_fn = data.eps_fn(schedule)
    exact = ode_log_likelihood(eps_fn, schedule, x0, trace="exact").log_prob
    one = ode_log_likelihood(eps_fn, schedule, x0, trace="hutchinson", probe=probe, generator=seeded(1)).log_prob
    difference = one - exact
    assert abs(float(difference.mean())) < Z * float(difference.std()) / math.sqrt(400)
    eight = ode_log_likelihood(eps_fn, schedule, x0, trace="hutchinson", probes=8, probe=probe, generator=seeded(2)).log_prob
    assert float((eight - exact).std()) < 0.6 * float(difference.std())  # ~1/sqrt(8) of the one-probe spread


# ================================================================================================
# Function evaluations, hooks, starts, trajectories
# ================================================================================================
def counting(eps_fn):
    calls = []

    def counted(x, t):
        calls.append(t)
        assert t.shape == (x.shape[0],)
        return eps_fn(x, t)

    return counted, calls


@pytest.mark.parametrize(
    "name, schedule, keywords, expected",
    [
        ("ancestral", DiscreteSchedule.linear(), dict(steps=10), 10),
        ("ddim", DiscreteSchedule.linear(), dict(steps=10), 10),
        ("ddim", VPSDE(), dict(steps=10), 11),  # + the final denoising at t_min
        ("dpm_solver", DiscreteSchedule.cosine(), dict(steps=10), 10),
        ("dpm_solver", VPSDE(), dict(steps=10, eta=1.0), 11),
        ("langevin", VESDE(), dict(noise_levels=4, steps_per_level=3), 13),
        ("euler_maruyama", VPSDE(), dict(steps=10), 11),
        ("euler_maruyama", VPSDE(), dict(steps=10, denoise_final=False), 10),
        ("pc", VESDE(), dict(steps=10, corrector_steps=2), 31),
        ("heun", EDMSchedule(), dict(steps=10), 19),  # 2n - 1: no correction at the last step
        ("heun", VPSDE(), dict(steps=10, denoise_final=False), 19),
        ("ode", VPSDE(), dict(), None),
    ],
)
def test_nfe_counts_every_call(name, schedule, keywords, expected):
    counted, calls = counting(mixture().eps_fn(schedule))
    result = get_sampler(name)(counted, schedule, (8, 2), generator=seeded(0), dtype=F64, **keywords)
    assert result.nfe == len(calls)
    if expected is not None:
        assert result.nfe == expected


@pytest.mark.parametrize("name", ["ancestral", "ddim", "euler_maruyama", "pc", "heun", "ode"])
def test_after_step_is_called_after_every_step_with_the_next_time(name):
    schedule = VPSDE()
    times = torch.tensor([1.0, 0.6, 0.3, 0.1, 0.01], dtype=F64)
    seen = []

    def after_step(x, t_next):
        seen.append(float(t_next[0]))
        assert t_next.shape == (x.shape[0],)
        return x

    get_sampler(name)(mixture().eps_fn(schedule), schedule, (8, 2), times=times, after_step=after_step, generator=seeded(0), dtype=F64)
    assert seen == pytest.approx(times[1:].tolist())


def test_after_step_in_langevin_follows_each_langevin_step():
    schedule, seen = VESDE(), []
    annealed_langevin_sample(
        mixture().eps_fn(schedule), schedule, (8, 2), noise_levels=3, steps_per_level=4,
        after_step=lambda x, t: seen.append(float(t[0])) or x, dtype=F64,
    )  # fmt: skip
    assert len(seen) == 12


def test_after_step_imposes_a_known_region():
    # inpainting by replacement: coordinate 0 is known and re-imposed, noised to each next time
    data, schedule = mixture(), DiscreteSchedule.linear()
    known = torch.full((16, 2), 0.8, dtype=F64)

    def impose(x, t_next):
        noised = schedule.q_sample(known, t_next, generator=seeded(5))
        return torch.cat([noised[:, :1], x[:, 1:]], dim=1)

    result = ancestral_sample(data.eps_fn(schedule), schedule, (16, 2), steps=50, after_step=impose, generator=seeded(0), dtype=F64)
    torch.testing.assert_close(result.x[:, 0], known[:, 0])


def test_sdedit_from_a_small_time_stays_close_and_from_t_max_is_a_fresh_sample():
    data, schedule = mixture(), DiscreteSchedule.linear()
    x0 = data.sample(2000, seeded(0))
    eps_fn = data.eps_fn(schedule)
    # small t_start: the image comes back up to about its noise level sigma(0.02) ~ 0.05
    t_small = 0.02
    x_start = schedule.q_sample(x0, torch.tensor(t_small, dtype=F64), generator=seeded(1))
    near = ancestral_sample(eps_fn, schedule, x_start=x_start, t_start=t_small, steps=20, generator=seeded(2))
    assert near.nfe == 20
    assert float((near.x - x0).norm(dim=1).mean()) < 2 * float(schedule.sigma(torch.tensor(t_small)))
    # t_start = t_max: the start has forgotten x0 (alpha(1) = 0.006), the result is a new draw
    x_start = schedule.q_sample(x0, torch.tensor(1.0, dtype=F64), generator=seeded(3))
    fresh = ancestral_sample(eps_fn, schedule, x_start=x_start, t_start=1.0, steps=300, generator=seeded(4))
    correlation = torch.corrcoef(torch.stack([fresh.x[:, 0], x0[:, 0]]))[0, 1]
    assert abs(float(correlation)) < Z / math.sqrt(2000)
    assert_matches_mixture(fresh.x, data, bias=0.04)


def test_trajectory_holds_the_start_and_each_step():
    data, schedule = mixture(), VPSDE()
    result = ddim_sample(data.eps_fn(schedule), schedule, (4, 2), steps=5, return_trajectory=True, dtype=F64)
    assert len(result.trajectory) == 5 + 2  # start, 5 steps, final denoising
    assert torch.equal(result.trajectory[-1], result.x)
    assert ddim_sample(data.eps_fn(schedule), schedule, (4, 2), steps=5).trajectory is None


def test_clip_denoised_keeps_the_output_in_range():
    data, schedule = mixture(), DiscreteSchedule.linear()
    for sampler in (ancestral_sample, ddim_sample):
        result = sampler(data.eps_fn(schedule), schedule, (256, 2), steps=20, clip_denoised=(-1.0, 1.0), generator=seeded(0), dtype=F64)
        assert float(result.x.abs().max()) <= 1.0


def test_same_seed_same_numbers_different_seed_different_numbers():
    data, schedule = mixture(), VPSDE()
    for name in ("ancestral", "langevin", "euler_maruyama", "pc", "heun"):
        sampler = get_sampler(name)
        keywords = dict(steps=5, s_churn=5.0) if name == "heun" else dict(steps=5)
        a = sampler(data.eps_fn(schedule), schedule, (8, 2), generator=seeded(7), **keywords).x
        b = sampler(data.eps_fn(schedule), schedule, (8, 2), generator=seeded(7), **keywords).x
        c = sampler(data.eps_fn(schedule), schedule, (8, 2), generator=seeded(8), **keywords).x
        assert torch.equal(a, b) and not torch.equal(a, c), name


# ================================================================================================
# Every sampler on every schedule; precision; errors
# ================================================================================================
@pytest.mark.parametrize("schedule_name", sorted(SCHEDULES))
@pytest.mark.parametrize("sampler_name", sorted(SAMPLERS))
def test_every_sampler_runs_on_every_schedule(sampler_name, schedule_name):
    schedule = get_schedule(schedule_name)
    data = mixture()

    def eps_fn(x, t):  # a float32 caller of the float64 oracle
        return data.eps(x, t, schedule).float()

    keywords = dict(steps=4, steps_per_level=2) if sampler_name == "langevin" else dict(steps=4)
    if sampler_name == "langevin" and schedule_name in ("edm", "subvp"):
        # NCSN's rule a_i = step_size sigma_i^2 / sigma_L^2 assumes sigma_1 / sigma_L ~ 100; these span 1e4-1e5
        keywords["step_size"] = 1e-10
    result = get_sampler(sampler_name)(eps_fn, schedule, (6, 2, 1, 1), generator=seeded(0), **keywords)
    assert result.x.shape == (6, 2, 1, 1) and result.x.dtype == torch.float32
    assert bool(torch.isfinite(result.x).all())


def test_samplers_run_under_bf16_autocast():
    torch.manual_seed(0)
    net = nn.Linear(3, 3)
    schedule = EDMSchedule()

    def eps_fn(x, t):
        return net(x) * 0.1

    with torch.autocast("cpu", dtype=torch.bfloat16):
        for name in ("ddim", "heun", "euler_maruyama"):
            result = get_sampler(name)(eps_fn, schedule, (4, 3), steps=3, generator=seeded(0))
            assert result.x.dtype == torch.float32 and bool(torch.isfinite(result.x).all())


def test_configuration_errors_name_the_fix():
    data, schedule = mixture(), VPSDE()
    eps_fn = data.eps_fn(schedule)
    with pytest.raises(ConfigError, match="'ancestral'"):
        get_sampler("dpm-solver")
    with pytest.raises(ConfigError, match="eta"):
        ddim_sample(eps_fn, schedule, (2, 2), eta=1.5)
    with pytest.raises(ConfigError, match="decreasing"):
        ddim_sample(eps_fn, schedule, (2, 2), times=torch.tensor([0.1, 0.5]))
    with pytest.raises(ConfigError, match="shape"):
        ddim_sample(eps_fn, schedule)
    with pytest.raises(ConfigError, match="t_start"):
        ddim_sample(eps_fn, schedule, (2, 2), times=torch.tensor([0.5, 0.1]), t_start=0.7)
    with pytest.raises(ConfigError, match="trace"):
        ode_log_likelihood(eps_fn, schedule, torch.zeros(2, 2), trace="skilling")
    with pytest.raises(ConfigError, match="predictor"):
        predictor_corrector_sample(eps_fn, schedule, (2, 2), predictor="heun")
    with pytest.raises(ConfigError, match="clip_denoised"):
        ancestral_sample(eps_fn, schedule, (2, 2), clip_denoised=(1.0, -1.0))


# ================================================================================================
# The analytic denoiser
# ================================================================================================
@pytest.mark.parametrize("schedule_name", sorted(SCHEDULES))
def test_analytic_score_is_the_gradient_of_the_marginal_log_density(schedule_name):
    schedule, data = get_schedule(schedule_name), mixture()
    g = seeded(0)
    x = 2 * torch.randn(16, 2, generator=g, dtype=F64)
    t = schedule.t_max * torch.rand(16, generator=g, dtype=F64).clamp(0.01, 0.99)
    x.requires_grad_(True)
    (gradient,) = torch.autograd.grad(data.marginal_log_prob(x, t, schedule).sum(), x)
    torch.testing.assert_close(data.score(x.detach(), t, schedule), gradient, rtol=1e-9, atol=1e-10)
    torch.testing.assert_close(data.eps(x.detach(), t, schedule), -schedule.sigma(t)[:, None] * gradient, rtol=1e-9, atol=1e-10)


def test_analytic_log_prob_matches_torch_distributions():
    data = mixture()
    reference = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=data.weights),
        torch.distributions.MultivariateNormal(data.means, covariance_matrix=data.covariances),
    )
    x = torch.randn(32, 2, dtype=F64)
    torch.testing.assert_close(data.log_prob(x), reference.log_prob(x))
    # at time t, each component is N(alpha m_k, alpha^2 C_k + sigma^2 I)
    schedule, t = VPSDE(), torch.full((32,), 0.4, dtype=F64)
    alpha, sigma = schedule.alpha(t[:1]), schedule.sigma(t[:1])
    noised = torch.distributions.MixtureSameFamily(
        torch.distributions.Categorical(probs=data.weights),
        torch.distributions.MultivariateNormal(alpha * data.means, covariance_matrix=alpha**2 * data.covariances + sigma**2 * torch.eye(2, dtype=F64)),
    )
    torch.testing.assert_close(data.marginal_log_prob(x, t, schedule), noised.log_prob(x))


def test_analytic_samples_have_the_stated_moments():
    data = mixture()
    x, components = data.sample(20_000, seeded(0), return_components=True)
    assert_matches_mixture(x, data, bias=0.0)
    assert float(components.double().mean()) == pytest.approx(0.7, abs=Z * math.sqrt(0.21 / 20_000))


def test_analytic_isotropic_and_diagonal_stds_are_diagonal_covariances():
    means, weights = torch.tensor([[0.0, 1.0], [2.0, -1.0]], dtype=F64), torch.tensor([1.0, 3.0], dtype=F64)
    stds = torch.tensor([[0.5, 0.2], [0.3, 0.4]], dtype=F64)
    diagonal = GaussianMixtureData(weights, means, stds=stds)
    full = GaussianMixtureData(weights, means, covariances=torch.diag_embed(stds**2))
    isotropic = GaussianMixtureData(weights, means, stds=torch.tensor([0.5, 0.3], dtype=F64))
    torch.testing.assert_close(isotropic.covariances, torch.diag_embed(torch.tensor([[0.25, 0.25], [0.09, 0.09]], dtype=F64)))
    x, t, schedule = torch.randn(8, 2, dtype=F64), torch.full((8,), 0.3, dtype=F64), VESDE()
    torch.testing.assert_close(diagonal.eps(x, t, schedule), full.eps(x, t, schedule))
    torch.testing.assert_close(diagonal.weights, torch.tensor([0.25, 0.75], dtype=F64))
    with pytest.raises(ConfigError, match="exactly one"):
        GaussianMixtureData(weights, means)
    with pytest.raises(ConfigError, match="positive definite"):
        GaussianMixtureData(weights, means, covariances=-torch.eye(2, dtype=F64).expand(2, 2, 2))


def test_default_steps_fit_a_short_ddpm_grid_and_explicit_ones_are_refused():
    from genlab.models.diffusion.samplers import get_sampler

    schedule = DiscreteSchedule.linear(steps=30)
    zero_eps = lambda x, t: torch.zeros_like(x)  # noqa: E731
    nfe = {name: get_sampler(name)(zero_eps, schedule, (4, 2), generator=torch.Generator().manual_seed(0)).nfe
           for name in ("ddim", "dpm_solver", "dpm_solver_sde")}  # fmt: skip
    assert nfe == {"ddim": 30, "dpm_solver": 20, "dpm_solver_sde": 30}  # defaults 50, 20, 50 capped at the grid's 30
    with pytest.raises(ConfigError, match="more than the 30 grid steps"):
        get_sampler("dpm_solver_sde")(zero_eps, schedule, (4, 2), steps=50)


# ================================================================================================
# The registry: one driver, names derived from it
# ================================================================================================
def test_a_new_sampler_is_one_step_rule_and_one_registry_entry():
    # the probability-flow ODE by Euler's method; for data N(0, I) under VP the exact eps is sigma x,
    # the drift f x + g^2 eps / (2 sigma) = (-beta / 2 + beta / 2) x vanishes and the flow is the identity
    from genlab.models.diffusion.samplers import StepRule, register_sampler

    @register_sampler("test_euler_ode", summary="The probability-flow ODE by Euler's method", default_steps=7)
    class EulerODEStep(StepRule):
        def step(self, denoiser, x, t, s, generator):
            return x + (s - t)[:, None] * denoiser.ode_drift(x, t)

    try:
        schedule = VPSDE()
        eps_fn, calls = counting(lambda x, t: schedule.sigma(t)[:, None] * x)
        x_start = torch.randn(8, 2, generator=seeded(0), dtype=F64)
        seen = []
        result = get_sampler("test_euler_ode")(
            eps_fn, schedule, x_start=x_start, denoise_final=False, return_trajectory=True,
            after_step=lambda x, t: seen.append(float(t[0])) or x,
        )  # fmt: skip
        torch.testing.assert_close(result.x, x_start, rtol=0, atol=1e-12)
        times = schedule.sampling_times(7, dtype=F64)
        assert result.nfe == len(calls) == 7 and len(result.trajectory) == 8
        assert seen == pytest.approx(times[1:].tolist())
    finally:
        del SAMPLERS["test_euler_ode"]


def test_cli_choices_reexports_and_registry_are_the_same_samplers():
    import argparse

    import genlab.models.diffusion as diffusion
    from genlab.cli.main import build_parser

    parser = build_parser()
    commands = next(a for a in parser._actions if isinstance(a, argparse._SubParsersAction)).choices
    options = {command: a for command, p in commands.items() for a in p._actions if "--sampler" in a.option_strings}
    assert "sample" in options
    for command, option in options.items():
        assert set(option.choices) == {"auto", *SAMPLERS}, command
    reexported = {name for name in diffusion.__all__ if isinstance(getattr(diffusion, name), type(SAMPLERS["ddim"]))}
    assert {getattr(diffusion, name).name for name in reexported} == set(SAMPLERS)
    assert all(getattr(diffusion, name) is SAMPLERS[getattr(diffusion, name).name] for name in reexported)


def test_derived_sampler_sets_follow_each_samplers_declared_properties():
    import dataclasses
    import inspect

    from genlab.apps.editing import RESAMPLING_SAMPLERS
    from genlab.models.diffusion.model import DiffusionConfig

    assert RESAMPLING_SAMPLERS == tuple(name for name, sampler in SAMPLERS.items() if sampler.resamples)
    assert "ancestral" in RESAMPLING_SAMPLERS and "dpm_solver" not in RESAMPLING_SAMPLERS  # multistep: keeps x0_hat
    fields = {f.name for f in dataclasses.fields(DiffusionConfig)}
    for name, sampler in SAMPLERS.items():
        rule_options = set(inspect.signature(sampler.rule).parameters)
        assert set(sampler.config_options) <= fields & rule_options, name
        assert set(sampler.defaults) <= rule_options, name
        # an option fixed by the entry (the SDE variant's eta = 1) is never overwritten from the config
        assert not set(sampler.defaults) & set(sampler.config_options), name
