"""Diffusion objectives against closed forms: the prediction parameterisations and their inverses, the
weighting identity loss = w(t) ||x0_hat - x0||^2, the DSM target's conditional mean (Gaussian and
Gaussian-mixture data), EDM's unit-variance design, sliced score matching on a Gaussian, and the DDPM
bound (exact for unit-Gaussian data, above the entropy of quantized data, unbiased when subsampled)."""

import math

import numpy as np
import pytest
import torch
from scipy import stats
from torch import distributions as D
from torch import nn

from genlab.errors import ConfigError, DataError
from genlab.models.diffusion.objectives import (
    PREDICTIONS,
    WEIGHTINGS,
    DenoisingLoss,
    EDMPreconditioning,
    ddpm_vlb,
    denoising_loss,
    discretized_gaussian_log_likelihood,
    dsm_score_target,
    loss_weight,
    ncsn_loss,
    prediction_target,
    sliced_score_matching_loss,
    to_eps_and_x0,
)
from genlab.models.diffusion.analytic import GaussianMixtureData
from genlab.models.diffusion.schedules import VPSDE, DiscreteSchedule


pytestmark = pytest.mark.usefixtures("one_thread")


def noise_levels(process: str, batch: int, generator: torch.Generator) -> tuple[torch.Tensor, torch.Tensor]:
    """Random (alpha, sigma), (B,) float64: variance preserving, variance exploding (alpha = 1), or neither."""
    u = torch.rand(batch, generator=generator, dtype=torch.float64)
    if process == "vp":
        phi = 0.02 + u * (math.pi / 2 - 0.04)
        return torch.cos(phi), torch.sin(phi)
    if process == "ve":
        return torch.ones(batch, dtype=torch.float64), 0.01 * 5000.0**u
    return 0.1 + 2 * u, 0.05 + 3 * torch.rand(batch, generator=generator, dtype=torch.float64)


# -- prediction parameterisations ------------------------------------------------------------
@pytest.mark.parametrize("process", ["vp", "ve", "general"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_prediction_target_and_to_eps_and_x0_are_inverse(prediction, process):
    g = torch.Generator().manual_seed(0)
    alpha, sigma = noise_levels(process, 16, g)
    x0, eps = torch.randn(16, 3, 2, generator=g, dtype=torch.float64), torch.randn(16, 3, 2, generator=g, dtype=torch.float64)
    a, s = alpha[:, None, None], sigma[:, None, None]
    x_t = a * x0 + s * eps
    target = prediction_target(prediction, x0, eps, alpha, sigma)
    expected = {"eps": eps, "x0": x0, "v": a * eps - s * x0, "velocity": eps - x0}[prediction]  # v: Salimans & Ho 2022; velocity: Lipman et al. 2023
    torch.testing.assert_close(target, expected)
    eps_hat, x0_hat = to_eps_and_x0(prediction, target, x_t, alpha, sigma)
    torch.testing.assert_close(eps_hat, eps)
    torch.testing.assert_close(x0_hat, x0)
    # the other way round: any output is the target of the (eps_hat, x0_hat) it implies, consistent with x_t
    output = torch.randn(16, 3, 2, generator=g, dtype=torch.float64)
    eps_hat, x0_hat = to_eps_and_x0(prediction, output, x_t, alpha, sigma)
    torch.testing.assert_close(a * x0_hat + s * eps_hat, x_t)
    torch.testing.assert_close(prediction_target(prediction, x0_hat, eps_hat, alpha, sigma), output)


def test_v_is_the_angular_velocity_for_vp():
    # alpha = cos phi, sigma = sin phi: v = d x_phi / d phi (Salimans & Ho 2022, sec. 4)
    phi = torch.tensor([0.3, 1.1], dtype=torch.float64, requires_grad=True)
    x0, eps = torch.randn(2, 4, dtype=torch.float64), torch.randn(2, 4, dtype=torch.float64)
    x_phi = torch.cos(phi)[:, None] * x0 + torch.sin(phi)[:, None] * eps
    velocity = torch.stack([torch.autograd.grad(x_phi[:, i].sum(), phi, retain_graph=True)[0] for i in range(4)], 1)
    v = prediction_target("v", x0, eps, torch.cos(phi).detach(), torch.sin(phi).detach())
    torch.testing.assert_close(v, velocity)


# -- weighted denoising losses ----------------------------------------------------------------
def expected_weight(weighting, prediction, alpha, sigma, sigma_data=0.5, gamma=5.0):
    """w(t) on ||x0_hat - x0||^2, written from the papers' own formulas."""
    snr = alpha**2 / sigma**2
    if weighting == "simple":
        return {"eps": snr, "x0": torch.ones_like(snr), "v": (alpha**2 + sigma**2) ** 2 / sigma**2,
                "velocity": (alpha + sigma) ** 2 / sigma**2}[prediction]
    if weighting in ("snr", "ncsn"):
        return snr
    if weighting == "min_snr":
        return torch.clamp(snr, max=gamma)
    edm_sigma = sigma / alpha  # EDM's noise level of x_t / alpha
    return (edm_sigma**2 + sigma_data**2) / (edm_sigma * sigma_data) ** 2


@pytest.mark.parametrize("process", ["vp", "ve", "general"])
@pytest.mark.parametrize("weighting", WEIGHTINGS)
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_every_weighting_is_w_times_the_x0_error(prediction, weighting, process):
    g = torch.Generator().manual_seed(1)
    alpha, sigma = noise_levels(process, 32, g)
    x0, eps = torch.randn(32, 5, generator=g, dtype=torch.float64), torch.randn(32, 5, generator=g, dtype=torch.float64)
    x_t = alpha[:, None] * x0 + sigma[:, None] * eps
    output = torch.randn(32, 5, generator=g, dtype=torch.float64)
    loss = denoising_loss(output, x0, eps, alpha, sigma, prediction=prediction, weighting=weighting, sigma_data=0.7)
    _, x0_hat = to_eps_and_x0(prediction, output, x_t, alpha, sigma)
    x0_error = (x0_hat - x0).pow(2).mean(1)
    w = expected_weight(weighting, prediction, alpha, sigma, sigma_data=0.7)
    torch.testing.assert_close(loss, w * x0_error)
    torch.testing.assert_close(loss_weight(weighting, alpha, sigma, prediction=prediction, sigma_data=0.7), w)
    objective = DenoisingLoss(prediction=prediction, weighting=weighting, sigma_data=0.7)
    torch.testing.assert_close(objective.loss(output, x0, eps, alpha, sigma), loss)
    if weighting == "simple":  # the plain MSE in the prediction's own space
        target = prediction_target(prediction, x0, eps, alpha, sigma)
        torch.testing.assert_close(loss, (output - target).pow(2).mean(1))


def test_named_weightings_in_the_papers_spaces():
    g = torch.Generator().manual_seed(2)
    alpha, sigma = noise_levels("vp", 64, g)
    x0, eps, output = (torch.randn(64, 3, generator=g, dtype=torch.float64) for _ in range(3))
    x_t = alpha[:, None] * x0 + sigma[:, None] * eps
    snr = alpha**2 / sigma**2
    # Min-SNR (Hang et al. 2023): eps-MSE times min(SNR, 5) / SNR; v-MSE times min(SNR, 5) / (SNR + 1)
    eps_mse = (output - eps).pow(2).mean(1)
    torch.testing.assert_close(
        denoising_loss(output, x0, eps, alpha, sigma, prediction="eps", weighting="min_snr"), torch.clamp(snr, max=5) / snr * eps_mse
    )
    v = alpha[:, None] * eps - sigma[:, None] * x0
    torch.testing.assert_close(
        denoising_loss(output, x0, eps, alpha, sigma, prediction="v", weighting="min_snr"),
        torch.clamp(snr, max=5) / (snr + 1) * (output - v).pow(2).mean(1),
    )
    # NCSN (Song & Ermon 2019): sigma^2 ||s_hat - grad log q(x_t|x0)||^2, a score net being an eps net with eps = -sigma s
    score = torch.randn(64, 3, generator=g, dtype=torch.float64)
    torch.testing.assert_close(
        ncsn_loss(score, x_t, x0, alpha, sigma),
        denoising_loss(-sigma[:, None] * score, x0, eps, alpha, sigma, prediction="eps", weighting="ncsn"),
    )


def test_losses_are_float32_under_bf16():
    g = torch.Generator().manual_seed(3)
    x0, eps, output = (torch.randn(4, 8, generator=g) for _ in range(3))
    alpha, sigma = torch.rand(4, generator=g) + 0.5, torch.rand(4, generator=g) + 0.5
    for prediction in PREDICTIONS:
        for weighting in WEIGHTINGS:
            loss = denoising_loss(
                output.bfloat16(), x0.bfloat16(), eps.bfloat16(), alpha.bfloat16(), sigma.bfloat16(), prediction=prediction, weighting=weighting
            )
            assert loss.dtype == torch.float32 and loss.shape == (4,) and torch.isfinite(loss).all()


def test_unknown_names_are_config_errors_listing_the_known_ones():
    x = torch.zeros(2, 3)
    with pytest.raises(ConfigError, match="eps, x0, v"):
        prediction_target("score", x, x, torch.ones(2), torch.ones(2))
    with pytest.raises(ConfigError, match="simple, snr, min_snr, edm, ncsn"):
        denoising_loss(x, x, x, torch.ones(2), torch.ones(2), weighting="elbo")
    with pytest.raises(ConfigError, match="weighting"):
        DenoisingLoss(weighting="p2")
    with pytest.raises(ConfigError, match="sigma_data"):
        EDMPreconditioning(sigma_data=0.0)
    with pytest.raises(ConfigError, match="beta, beta_tilde"):
        ddpm_vlb(lambda x, t: x, DiscreteSchedule.linear(steps=4), x, model_variance="learned")
    with pytest.raises(ConfigError, match="discrete"):
        ddpm_vlb(lambda x, t: x, VPSDE(), x)
    with pytest.raises(DataError, match="data_range"):
        ddpm_vlb(lambda x, t: x, DiscreteSchedule.linear(steps=4), x + 5.0, levels=256)


# -- denoising score matching -----------------------------------------------------------------
@pytest.mark.parametrize("alpha, sigma", [(0.95, 0.3), (0.6, 0.8), (1.0, 2.0)])
def test_dsm_target_regresses_onto_the_gaussian_score(alpha, sigma):
    # data N(m, s^2): q_t = N(alpha m, alpha^2 s^2 + sigma^2), score (alpha m - x) / (alpha^2 s^2 + sigma^2), linear in x,
    # so the least-squares fit of the DSM target on (x_t, 1) is the score's slope and intercept
    g = torch.Generator().manual_seed(4)
    n, m, s = 100_000, torch.tensor([0.5, -1.0], dtype=torch.float64), torch.tensor([0.7, 1.5], dtype=torch.float64)
    x0 = m + s * torch.randn(n, 2, generator=g, dtype=torch.float64)
    x_t = alpha * x0 + sigma * torch.randn(n, 2, generator=g, dtype=torch.float64)
    ones = torch.full((n,), 1.0, dtype=torch.float64)
    target = dsm_score_target(x_t, x0, alpha * ones, sigma * ones)
    variance = alpha**2 * s**2 + sigma**2
    for i in range(2):
        design = torch.stack([x_t[:, i], ones], 1)  # (n, 2)
        coefficients = torch.linalg.lstsq(design, target[:, i : i + 1]).solution[:, 0]
        residual_variance = (target[:, i] - design @ coefficients).var()
        stderr = (residual_variance * torch.linalg.inv(design.T @ design).diagonal()).sqrt()  # OLS standard errors
        truth = torch.stack([-1 / variance[i], alpha * m[i] / variance[i]])
        assert ((coefficients - truth).abs() < 4 * stderr).all(), (coefficients, truth, stderr)
        assert (stderr < 0.03 * truth.abs().max()).all(), stderr  # and the check is sharp


def mixture_score(x, alpha, sigma, weights, means, stds):
    """grad log q_t(x) for 1-D data sum_k pi_k N(mu_k, s_k^2): q_t = sum_k pi_k N(alpha mu_k, alpha^2 s_k^2 + sigma^2)."""
    variances = alpha**2 * stds**2 + sigma**2  # (K,)
    log_components = torch.log(weights) - 0.5 * torch.log(2 * math.pi * variances) - (x[:, None] - alpha * means) ** 2 / (2 * variances)
    responsibilities = torch.softmax(log_components, dim=1)  # (n, K)
    return (responsibilities * (alpha * means - x[:, None]) / variances).sum(1)


def test_dsm_target_has_the_mixture_score_as_its_conditional_mean():
    # E[target | x_t] = score(x_t) <=> target - score(x_t) is orthogonal to every function of x_t
    g = torch.Generator().manual_seed(5)
    weights, means, stds = torch.tensor([0.3, 0.7], dtype=torch.float64), torch.tensor([-2.0, 1.0], dtype=torch.float64), torch.tensor([0.3, 0.5], dtype=torch.float64)
    n, alpha, sigma = 200_000, 0.8, 0.6
    component = torch.multinomial(weights, n, replacement=True, generator=g)
    x0 = means[component] + stds[component] * torch.randn(n, generator=g, dtype=torch.float64)
    x_t = alpha * x0 + sigma * torch.randn(n, generator=g, dtype=torch.float64)
    target = dsm_score_target(x_t[:, None], x0[:, None], torch.full((n,), alpha), torch.full((n,), sigma))[:, 0]
    features = torch.stack([torch.ones_like(x_t), x_t, torch.tanh(2 * x_t), torch.exp(-(x_t**2))], 1)

    def worst_t_statistic(score):
        products = (target - score)[:, None] * features
        return float((products.mean(0) / (products.std(0) / n**0.5)).abs().max())

    assert worst_t_statistic(mixture_score(x_t, alpha, sigma, weights, means, stds)) < 4.0
    # the score of a single Gaussian with the same mean and variance is detectably wrong: the test has power
    mean = float((weights * means).sum())
    variance = float((weights * (stds**2 + means**2)).sum()) - mean**2
    assert worst_t_statistic((alpha * mean - x_t) / (alpha**2 * variance + sigma**2)) > 20.0


def two_dimensional_mixture():
    return GaussianMixtureData(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[-1.0, 0.5], [0.8, -0.3]], dtype=torch.float64),
        covariances=torch.tensor([[[0.2, 0.05], [0.05, 0.1]], [[0.1, -0.03], [-0.03, 0.15]]], dtype=torch.float64),
    )


def test_dsm_target_matches_the_analytic_mixture_score_in_2d():
    # the same orthogonality check against genlab's GaussianMixtureData oracle (full covariances), on a VP SDE
    mixture, schedule, n = two_dimensional_mixture(), VPSDE(), 100_000
    g = torch.Generator().manual_seed(17)
    x0 = mixture.sample(n, generator=g)
    t = torch.full((n,), 0.3, dtype=torch.float64)
    alpha, sigma = schedule.alpha(t), schedule.sigma(t)
    x_t = schedule.q_sample(x0, t, torch.randn(n, 2, generator=g, dtype=torch.float64))
    residual = dsm_score_target(x_t, x0, alpha, sigma) - mixture.score(x_t, t, schedule)  # (n, 2)
    features = torch.stack([torch.ones(n, dtype=torch.float64), x_t[:, 0], x_t[:, 1], torch.tanh(x_t[:, 0] * x_t[:, 1])], 1)
    products = residual[:, :, None] * features[:, None, :]  # (n, 2, 4)
    t_statistics = products.mean(0) / (products.std(0) / n**0.5)
    assert float(t_statistics.abs().max()) < 4.0


# -- EDM preconditioning ----------------------------------------------------------------------
def test_edm_coefficients_match_table_1():
    pre, sigma_data = EDMPreconditioning(sigma_data=0.5), 0.5
    sigma = torch.tensor([0.002, 0.1, 0.5, 3.0, 80.0], dtype=torch.float64)
    total = sigma**2 + sigma_data**2
    torch.testing.assert_close(pre.c_skip(sigma), sigma_data**2 / total)
    torch.testing.assert_close(pre.c_out(sigma), sigma * sigma_data / total.sqrt())
    torch.testing.assert_close(pre.c_in(sigma), 1 / total.sqrt())
    torch.testing.assert_close(pre.c_noise(sigma), sigma.log() / 4)
    torch.testing.assert_close(pre.loss_weight(sigma) * pre.c_out(sigma) ** 2, torch.ones_like(sigma))  # lambda = 1 / c_out^2
    torch.testing.assert_close(pre.loss_weight(sigma), loss_weight("edm", torch.ones_like(sigma), sigma, sigma_data=0.5))


@pytest.mark.parametrize("sigma", [0.002, 0.2, 0.5, 2.0, 80.0])
def test_edm_network_input_and_target_have_unit_variance(sigma):
    # Karras et al. 2022, appendix B.6: with sigma_data the data std, Var(c_in x) = Var(F_target) = 1 at every sigma
    g = torch.Generator().manual_seed(6)
    pre, n = EDMPreconditioning(sigma_data=0.5), 100_000
    x0 = 0.5 * (2.0 * torch.randint(0, 2, (n, 1), generator=g, dtype=torch.float64) - 1.0)  # +-0.5: std 0.5, not Gaussian
    x = x0 + sigma * torch.randn(n, 1, generator=g, dtype=torch.float64)
    sigmas = torch.full((n,), sigma, dtype=torch.float64)
    assert float((pre.c_in(sigmas)[:, None] * x).var()) == pytest.approx(1.0, rel=0.02)
    assert float(pre.network_target(x0, x, sigmas).var()) == pytest.approx(1.0, rel=0.02)


def test_edm_denoiser_wraps_the_network_and_its_loss_is_the_raw_mse():
    g = torch.Generator().manual_seed(7)
    pre = EDMPreconditioning(sigma_data=0.5)
    weight = torch.randn(3, 3, generator=g, dtype=torch.float64)
    calls = {}

    def network(x_in, c_noise, y=None):
        calls["x_in"], calls["c_noise"], calls["y"] = x_in, c_noise, y
        return x_in @ weight + c_noise[:, None]

    x0 = 0.5 * torch.randn(8, 3, generator=g, dtype=torch.float64)
    sigma = torch.exp(torch.randn(8, generator=g, dtype=torch.float64))
    eps = torch.randn(8, 3, generator=g, dtype=torch.float64)
    x = x0 + sigma[:, None] * eps
    labels = torch.arange(8)
    denoised = pre.denoise(network, x, sigma, labels)
    torch.testing.assert_close(calls["x_in"], x / (sigma**2 + 0.25).sqrt()[:, None])
    torch.testing.assert_close(calls["c_noise"], sigma.log() / 4)
    assert calls["y"] is labels
    raw = network(calls["x_in"], calls["c_noise"])
    torch.testing.assert_close(denoised, pre.c_skip(sigma)[:, None] * x + pre.c_out(sigma)[:, None] * raw)
    torch.testing.assert_close(pre.eps(network, x, sigma), (x - denoised) / sigma[:, None])
    # lambda ||D - x0||^2 = ||F - F_target||^2: the EDM loss is the x0 prediction under the "edm" weighting
    loss = denoising_loss(denoised, x0, eps, torch.ones_like(sigma), sigma, prediction="x0", weighting="edm", sigma_data=0.5)
    torch.testing.assert_close(loss, (raw - pre.network_target(x0, x, sigma)).pow(2).mean(1))
    # for Gaussian data N(0, sigma_data^2) the ideal denoiser is c_skip x (the Wiener filter): F = 0
    torch.testing.assert_close(pre.denoise(lambda x_in, c_noise: torch.zeros_like(x_in), x, sigma), x * 0.25 / (sigma**2 + 0.25)[:, None])


# -- sliced score matching --------------------------------------------------------------------
def gaussian_2d():
    mean = torch.tensor([1.0, -0.5], dtype=torch.float64)
    covariance = torch.tensor([[1.0, 0.6], [0.6, 0.8]], dtype=torch.float64)
    return mean, covariance


def gaussian_draws(mean, covariance, n, seed):
    z = torch.randn(n, mean.numel(), generator=torch.Generator().manual_seed(seed), dtype=torch.float64)
    return mean + z @ torch.linalg.cholesky(covariance).T


@pytest.mark.parametrize("variance_reduction", [True, False])
def test_sliced_score_matching_of_the_true_gaussian_score(variance_reduction):
    # E[v^T (grad s) v] + 1/2 E||s||^2 = -tr(C^-1) + 1/2 tr(C^-1) = -1/2 tr(C^-1) for s(x) = -C^-1 (x - m)
    mean, covariance = gaussian_2d()
    precision = torch.linalg.inv(covariance)
    g = torch.Generator().manual_seed(8)
    x = gaussian_draws(mean, covariance, 20_000, seed=19)
    loss = sliced_score_matching_loss(
        lambda x: -(x - mean) @ precision, x, projections=4, generator=g, variance_reduction=variance_reduction
    )
    assert loss.shape == (20_000,)
    expected = -0.5 * float(torch.trace(precision))
    loss = loss.detach()
    assert float(loss.mean()) == pytest.approx(expected, abs=4 * float(loss.std()) / 20_000**0.5)


def test_sliced_score_matching_minimiser_over_linear_scores_is_the_precision():
    mean, covariance = gaussian_2d()
    x = gaussian_draws(mean, covariance, 4000, seed=20)
    score = nn.Linear(2, 2).double()
    with torch.no_grad():  # start from s = 0 (no global random state); the minimiser does not depend on it
        score.weight.zero_()
        score.bias.zero_()
    optimizer = torch.optim.LBFGS(score.parameters(), lr=1.0, max_iter=200, line_search_fn="strong_wolfe")

    def closure():
        optimizer.zero_grad()
        # the same projections at every evaluation: a fixed quadratic objective in (A, b)
        loss = sliced_score_matching_loss(score, x, projections=8, generator=torch.Generator().manual_seed(9)).mean()
        loss.backward()  # through create_graph: the Hessian-vector term trains A
        return loss

    optimizer.step(closure)
    precision = torch.linalg.inv(covariance)
    torch.testing.assert_close(score.weight.detach(), -precision, atol=0.1, rtol=0.05)
    torch.testing.assert_close(score.bias.detach(), precision @ mean, atol=0.1, rtol=0.05)


# -- the DDPM variational bound ---------------------------------------------------------------
def test_prior_term_is_the_kl_to_the_standard_normal():
    schedule = DiscreteSchedule.linear(steps=20, beta_end=0.1)
    x0 = torch.randn(5, 2, 3, generator=torch.Generator().manual_seed(10))
    result = ddpm_vlb(lambda x, t: torch.zeros_like(x), schedule, x0, levels=None)
    t_max = torch.ones(1)
    q = D.Normal(schedule.alpha(t_max) * x0, schedule.sigma(t_max))
    expected = D.kl_divergence(q, D.Normal(0.0, 1.0)).flatten(1).sum(1)
    torch.testing.assert_close(result.prior, expected)
    assert result.dim == 6 and result.total.shape == (5,)


@pytest.mark.parametrize("mean, log_scale", [(0.0, 0.0), (0.3, -3.0), (-0.99, -6.0), (5.0, -1.0), (0.2, 3.0), (0.007, -9.0)])
def test_discretized_gaussian_probabilities_sum_to_one(mean, log_scale):
    levels = 17  # scikit-learn's digits
    x = torch.linspace(-1, 1, levels)[:, None]  # every level, stored as a + v (b - a) / (L - 1)
    log_p = discretized_gaussian_log_likelihood(x, torch.full_like(x, mean), log_scale, levels=levels)
    assert float(log_p.exp().sum()) == pytest.approx(1.0, abs=1e-5)
    # against scipy's normal in float64, each bin's probability taken in the tail it lies in (no 1 - 1 cancellation)
    scale = math.exp(log_scale)
    centers = torch.linspace(-1, 1, levels).double()
    lower = torch.where(centers > -1, centers - 1 / 16, -math.inf).numpy()
    upper = torch.where(centers < 1, centers + 1 / 16, math.inf).numpy()
    left = stats.norm.cdf(upper, mean, scale) - stats.norm.cdf(lower, mean, scale)
    right = stats.norm.sf(lower, mean, scale) - stats.norm.sf(upper, mean, scale)
    probabilities = torch.from_numpy(np.where(centers.numpy() < mean, left, right))
    significant = probabilities > 1e-300
    assert significant.any()
    torch.testing.assert_close(log_p[significant].double(), probabilities[significant].log(), rtol=1e-5, atol=1e-4)


def unit_gaussian_eps(x_t, t, schedule=None):
    """E[eps | x_t] for data N(0, I): sigma x_t / (alpha^2 + sigma^2) = sigma x_t under a VP schedule."""
    return schedule.sigma(t)[:, None] * x_t / (schedule.alpha(t) ** 2 + schedule.sigma(t) ** 2)[:, None]


def test_vlb_is_exact_for_unit_gaussian_data_and_the_exact_denoiser():
    # For data N(0, I) and model variance beta_t, p(x_{t-1} | x_t) = q(x_{t-1} | x_t) exactly and p(x_T) = q(x_T),
    # so the bound equals -log q(x0) in expectation over the noise draws (for any schedule)
    schedule = DiscreteSchedule.linear(steps=40, beta_start=1e-3, beta_end=0.2)
    x0 = torch.tensor([[0.0, 0.5], [1.5, -1.0], [-2.0, 0.3]], dtype=torch.float64)
    replicas = 3000
    rows = x0.repeat_interleave(replicas, 0)
    result = ddpm_vlb(
        lambda x, t: unit_gaussian_eps(x, t, schedule), schedule, rows, levels=None, generator=torch.Generator().manual_seed(11), max_batch=20_000
    )
    estimate = result.total.reshape(3, replicas)
    exact = -D.Normal(0.0, 1.0).log_prob(x0).sum(1)
    stderr = estimate.std(1) / replicas**0.5
    assert ((estimate.mean(1) - exact).abs() < 4 * stderr + 1e-6).all(), (estimate.mean(1), exact)
    # a worse model variance or a worse denoiser only loosens the bound
    tilde = ddpm_vlb(
        lambda x, t: unit_gaussian_eps(x, t, schedule),
        schedule,
        rows,
        levels=None,
        model_variance="beta_tilde",
        generator=torch.Generator().manual_seed(11),
        max_batch=20_000,
    )
    assert float(tilde.total.mean()) > float(result.total.mean()) + 0.05
    worse = ddpm_vlb(
        lambda x, t: 0.8 * unit_gaussian_eps(x, t, schedule), schedule, rows, levels=None, generator=torch.Generator().manual_seed(11), max_batch=20_000
    )
    assert float(worse.total.mean()) > float(result.total.mean()) + 0.05


def test_vlb_bounds_the_entropy_of_quantized_gaussian_data():
    # data N(m, s^2) per dimension quantized to 256 levels on [-1, 1]; eps_hat the continuous data's exact denoiser.
    # E_data[bound] >= cross-entropy >= entropy H of the quantized data, and is close to it.
    m, s, levels, dim, n = 0.1, 0.3, 256, 4, 1500
    schedule = DiscreteSchedule.linear(steps=100, beta_end=0.1)
    normal = D.Normal(torch.tensor(m, dtype=torch.float64), s)
    edges = torch.cat([torch.tensor([-math.inf]), torch.linspace(-1, 1, levels)[:-1] + 1 / (levels - 1), torch.tensor([math.inf])]).double()
    probabilities = normal.cdf(edges[1:]) - normal.cdf(edges[:-1])
    entropy = float(-(probabilities * probabilities.clamp(min=1e-300).log()).sum())  # nats per dimension
    g = torch.Generator().manual_seed(12)
    levels_drawn = torch.multinomial(probabilities, n * dim, replacement=True, generator=g).reshape(n, dim)
    x0 = (-1 + 2 * levels_drawn / (levels - 1)).float()

    def gaussian_eps(x_t, t, scale=s):
        alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        return sigma * (x_t - alpha * m) / (alpha**2 * scale**2 + sigma**2)

    result = ddpm_vlb(gaussian_eps, schedule, x0, levels=levels, generator=torch.Generator().manual_seed(13), max_batch=40_000)
    per_dim = result.total / dim
    bound, stderr = float(per_dim.mean()), float(per_dim.std()) / n**0.5
    assert bound > entropy - 3 * stderr
    assert bound < entropy + 0.1, (bound, entropy)
    torch.testing.assert_close(result.bits_per_dim, result.total / (dim * math.log(2)))
    # the same noise draws (common random numbers) with the denoiser of a wider Gaussian: a looser bound
    worse = ddpm_vlb(
        lambda x, t: gaussian_eps(x, t, scale=0.45), schedule, x0, levels=levels, generator=torch.Generator().manual_seed(13), max_batch=40_000
    )
    assert float(worse.total.mean()) / dim > bound + 0.05


def test_vlb_bounds_the_mixture_log_likelihood():
    # continuous 2-D mixture data, the exact denoiser: E[bound + log p(x0)] >= 0 (a KL), and small
    mixture, schedule, n = two_dimensional_mixture(), DiscreteSchedule.linear(steps=100, beta_end=0.2), 2000
    g = torch.Generator().manual_seed(18)
    x0 = mixture.sample(n, generator=g)
    result = ddpm_vlb(mixture.eps_fn(schedule), schedule, x0, levels=None, generator=g, max_batch=50_000)
    slack = result.total + mixture.log_prob(x0)  # (n,) nats
    mean, stderr = float(slack.mean()), float(slack.std()) / n**0.5
    assert -3 * stderr < mean < 0.4, (mean, stderr)


def test_vlb_timestep_subsampling_is_unbiased():
    # eps_hat - eps = 0.3 t whatever the noise (data a point mass at c): every L_{t-1} is deterministic,
    # so the only randomness of the k-step estimate is the stratified draw of t
    schedule = DiscreteSchedule.linear(steps=50, beta_end=0.05)
    point = torch.tensor([[0.2, -0.4]])

    def biased_eps(x_t, t):
        return (x_t - schedule.alpha(t)[:, None] * point) / schedule.sigma(t)[:, None] + 0.3 * t[:, None]

    full = ddpm_vlb(biased_eps, schedule, point, levels=None, generator=torch.Generator().manual_seed(13))
    assert full.per_step.shape == (1, 50)
    torch.testing.assert_close(full.per_step[:, 0], full.decoder)
    torch.testing.assert_close(full.per_step[:, 1:].sum(1), full.diffusion)
    chunked = ddpm_vlb(biased_eps, schedule, point, levels=None, max_batch=1)  # 49 calls of one row each
    torch.testing.assert_close(chunked.per_step, full.per_step)
    rows = point.expand(20_000, 2)
    estimate = ddpm_vlb(biased_eps, schedule, rows, levels=None, timesteps=3, generator=torch.Generator().manual_seed(14))
    assert estimate.per_step is None
    stderr = float(estimate.diffusion.std()) / 20_000**0.5
    assert float(estimate.diffusion.std()) > 0
    assert float(estimate.diffusion.mean()) == pytest.approx(float(full.diffusion), abs=4 * stderr)
    torch.testing.assert_close(estimate.prior, full.prior.expand(20_000))
    every = ddpm_vlb(biased_eps, schedule, point, levels=None, timesteps=49)
    torch.testing.assert_close(every.diffusion, full.diffusion)


def test_vlb_is_reproducible_with_a_generator():
    schedule = DiscreteSchedule.cosine(steps=30)
    x0 = torch.rand(4, 1, 3, 3, generator=torch.Generator().manual_seed(15)) * 2 - 1

    def eps_fn(x_t, t):
        return 0.5 * x_t

    first = ddpm_vlb(eps_fn, schedule, x0, levels=17, timesteps=5, generator=torch.Generator().manual_seed(16))
    second = ddpm_vlb(eps_fn, schedule, x0, levels=17, timesteps=5, generator=torch.Generator().manual_seed(16))
    torch.testing.assert_close(first.total, second.total)
    assert torch.isfinite(first.total).all() and first.dim == 9


@pytest.mark.parametrize("process", ["vp", "ve", "general"])
@pytest.mark.parametrize("prediction", PREDICTIONS)
def test_each_prediction_knows_the_factor_of_its_own_error_on_the_x0_error(prediction, process):
    # ||output - target||^2 = k(t) ||x0_hat - x0||^2 for any output, with k the prediction's error_factor
    from genlab.models.diffusion.objectives import get_prediction

    g = torch.Generator().manual_seed(1)
    alpha, sigma = noise_levels(process, 16, g)
    x0, eps, output = (torch.randn(16, 3, generator=g, dtype=torch.float64) for _ in range(3))
    x_t = alpha[:, None] * x0 + sigma[:, None] * eps
    _, x0_hat = to_eps_and_x0(prediction, output, x_t, alpha, sigma)
    own_error = (output - prediction_target(prediction, x0, eps, alpha, sigma)).pow(2).sum(1)
    k = get_prediction(prediction).error_factor(alpha, sigma)
    torch.testing.assert_close(own_error, k * (x0_hat - x0).pow(2).sum(1))


def test_the_model_asks_the_schedule_for_its_steps_and_preconditioning():
    from genlab.models.diffusion.schedules import SCHEDULES, get_schedule, schedule_parameters

    for name in SCHEDULES:
        schedule = get_schedule(name)
        # a schedule built with a number of steps is a discrete one, with N = that number
        assert ("steps" in schedule_parameters(name)) == (schedule.discrete_steps is not None), name
        # EDM's preconditioning assumes alpha = 1 and sigma(t) = t
        if schedule.edm_preconditioning:
            t = torch.tensor([0.1, 1.0, 10.0], dtype=torch.float64)
            torch.testing.assert_close(schedule.alpha(t), torch.ones_like(t))
            torch.testing.assert_close(schedule.sigma(t), t)
    assert [name for name in SCHEDULES if get_schedule(name).edm_preconditioning] == ["edm"]
