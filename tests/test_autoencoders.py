"""Autoencoders against the mathematics: the inverse multiquadratic MMD^2 of two Gaussians against a
quadrature of its closed form, the WAE penalty moving codes onto the prior, the DAE's corruptions'
statistics, and the latent density fitted after training (closed form for one Gaussian, kept by save/load)."""

import math

import pytest
import torch
from scipy import integrate

import genlab
from genlab.data import Batch, DataSpec
from genlab.metrics.kernels import inverse_multiquadratic_kernel, squared_distances, unbiased_mmd2
from genlab.models.latent.autoencoder import AEConfig, Autoencoder, DAEConfig, DenoisingAutoencoder, WAEConfig, WassersteinAutoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


# -- the IMQ kernel's MMD ------------------------------------------------------------------------
def _expected_imq(c, d, mean_gap, var):
    """E k_C(x, y) for x - y ~ N(m, var I_d), |m| = mean_gap, from C / (C + r^2) = int_0^oo C e^{-t (C + r^2)} dt
    and E e^{-t |u|^2} = (1 + 2 t var)^{-d/2} exp(-t |m|^2 / (1 + 2 t var)) for u ~ N(m, var I_d)."""

    def integrand(t):
        s = 1.0 + 2.0 * t * var
        return c * math.exp(-t * c) * s ** (-d / 2) * math.exp(-t * mean_gap**2 / s)

    value, error = integrate.quad(integrand, 0.0, math.inf, epsabs=1e-13, epsrel=1e-12)
    assert error < 1e-9
    return value


def _imq_mmd2(c, d, shift, var_p, var_q):
    """MMD^2(N(0, var_p I), N(shift e_1, var_q I)) = E k(x, x') + E k(y, y') - 2 E k(x, y)."""
    return (_expected_imq(c, d, 0.0, 2 * var_p) + _expected_imq(c, d, 0.0, 2 * var_q)
            - 2 * _expected_imq(c, d, shift, var_p + var_q))  # fmt: skip


def test_imq_kernel_is_its_formula():
    x, y = torch.randn(4, 3, dtype=torch.float64), torch.randn(5, 3, dtype=torch.float64)
    k = inverse_multiquadratic_kernel([0.5, 2.0])
    d2 = ((x[:, None] - y[None]) ** 2).sum(-1)
    torch.testing.assert_close(k(x, y), 0.5 / (0.5 + d2) + 2.0 / (2.0 + d2))
    torch.testing.assert_close(squared_distances(x, y), d2)


@pytest.mark.parametrize("shift, var_q", [(0.0, 1.0), (0.5, 1.0), (0.0, 2.0), (2.0, 0.5)])
def test_unbiased_imq_mmd2_of_two_gaussians_matches_the_quadrature(shift, var_q):
    d, n, repeats = 2, 400, 30
    c = 2.0 * d  # Tolstikhin et al.'s C = 2 d sigma_z^2 with sigma_z = 1
    kernel = inverse_multiquadratic_kernel([c])
    g = torch.Generator().manual_seed(0)
    estimates = []
    for _ in range(repeats):
        x = torch.randn(n, d, generator=g, dtype=torch.float64)
        y = math.sqrt(var_q) * torch.randn(n, d, generator=g, dtype=torch.float64)
        y[:, 0] += shift
        estimates.append(unbiased_mmd2(x, y, kernel))
    estimates = torch.stack(estimates)
    reference = _imq_mmd2(c, d, shift, 1.0, var_q)
    standard_error = estimates.std() / math.sqrt(repeats)
    # the estimator is unbiased: the mean of the repeats within 4 standard errors of the exact value
    assert abs(float(estimates.mean()) - reference) < 4 * float(standard_error) + 1e-12, (float(estimates.mean()), reference, float(standard_error))
    if shift == 0.0 and var_q == 1.0:
        assert reference == pytest.approx(0.0, abs=1e-12)
    else:
        assert reference > 10 * float(standard_error)  # the test can tell these distributions apart


def test_mmd_penalty_moves_codes_onto_the_prior():
    """Gradient descent on MMD^2_u(codes, fresh prior draws) alone carries 256 codes started at
    N(1.5, 0.3^2 I) onto the prior N(0, I): against a large prior sample their MMD^2 ends as small as
    that of genuine prior samples (the null distribution), from ~400 times that at the start."""
    kernel = inverse_multiquadratic_kernel([s * 4.0 for s in (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)])
    g = torch.Generator().manual_seed(1)
    reference = torch.randn(2000, 2, generator=g)
    null = max(float(unbiased_mmd2(torch.randn(256, 2, generator=g), reference, kernel)) for _ in range(20))
    torch.manual_seed(0)
    z = (1.5 + 0.3 * torch.randn(256, 2)).requires_grad_(True)
    start = float(unbiased_mmd2(z.detach(), reference, kernel))
    optimizer = torch.optim.Adam([z], lr=0.03)
    for _ in range(300):
        optimizer.zero_grad()
        unbiased_mmd2(z, torch.randn(256, 2), kernel).backward()
        optimizer.step()
    z = z.detach()
    end = float(unbiased_mmd2(z, reference, kernel))
    assert start > 100 * null and end < 2 * null, (start, end, null)
    assert float(z.mean(0).abs().max()) < 0.25 and float((z.var(0) - 1.0).abs().max()) < 0.5, (z.mean(0), z.var(0))


def test_wae_loss_is_reconstruction_plus_weighted_mmd():
    spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    model = WassersteinAutoencoder(WAEConfig(latent_dim=3, hidden=(16,), mmd_weight=7.0, reconstruction="mse"), spec)
    x = torch.rand(10, 1, 8, 8)
    torch.manual_seed(5)
    loss = model.loss(Batch(x))
    z = model.encode(x)
    torch.manual_seed(5)
    prior = model.prior_sample(10)
    torch.testing.assert_close(loss.terms["mmd"], unbiased_mmd2(z, prior, model.kernel).detach())
    torch.testing.assert_close(loss.total, loss.terms["recon"] + 7.0 * loss.terms["mmd"])
    torch.testing.assert_close(loss.terms["recon"], (x - model.decode(z)).pow(2).flatten(1).sum(1).mean().detach())  # c = |x - y|^2


# -- denoising -----------------------------------------------------------------------------------------
def _dae(corruption, p):
    spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    return DenoisingAutoencoder(DAEConfig(latent_dim=2, hidden=(16,), corruption=corruption, noise_level=p), spec)


def test_corruptions_have_their_stated_statistics():
    x = torch.rand(2000, 1, 8, 8) * 0.5 + 0.25
    g = torch.Generator().manual_seed(0)
    noisy = _dae("gaussian", 0.3).corrupt(x, g) - x
    assert abs(float(noisy.mean())) < 0.003 and float(noisy.std()) == pytest.approx(0.3, rel=0.01)
    masked = _dae("masking", 0.4).corrupt(x, g)
    dropped = masked == 0
    assert float(dropped.float().mean()) == pytest.approx(0.4, abs=0.005)
    torch.testing.assert_close(masked[~dropped], x[~dropped], rtol=0, atol=0)  # survivors untouched
    dropout = _dae("dropout", 0.4).corrupt(x, g)
    kept = dropout != 0
    torch.testing.assert_close(dropout[kept], x[kept] / 0.6)  # inverted dropout: E[x~] = x
    assert float((dropout.mean(0) - x.mean(0)).abs().mean()) < 0.02


def test_denoising_trains_on_corrupted_inputs_against_clean_targets():
    model = _dae("masking", 0.5)
    x = torch.rand(6, 1, 8, 8)
    model.eval()
    clean = model.loss(Batch(x)).total
    torch.testing.assert_close(clean, model.reconstruction_cost(x, model.decode(model.encode(x))).mean())
    model.train()
    torch.manual_seed(1)
    noisy = model.loss(Batch(x)).total
    torch.manual_seed(1)
    x_tilde = model.corrupt(x)
    torch.testing.assert_close(noisy, model.reconstruction_cost(x, model.decode(model.encode(x_tilde))).mean())
    assert not torch.allclose(noisy, clean)


# -- the latent density -------------------------------------------------------------------------------------
def test_gaussian_latent_density_is_the_codes_mean_and_covariance():
    data = genlab.data.load("digits")
    model = Autoencoder(AEConfig(latent_dim=3, hidden=(16,), latent_density="gaussian", latent_reg_covar=0.0), data.spec).double()
    x = data.split("train").tensors()[0][:300].double()
    model.fit_latent_density(x, torch.Generator().manual_seed(0))
    z = model.encode_dataset(x)
    torch.testing.assert_close(model.latent_density.means[0], z.mean(0))
    torch.testing.assert_close(model.latent_density.covariances[0], torch.cov(z.T, correction=0))
    assert bool(model.latent_density_fitted)


def test_fit_end_fits_the_latent_mixture_and_load_restores_it(tmp_path):
    data = genlab.data.load("digits")
    model = genlab.create("ae", data=data, latent_dim=2, hidden=(16,), latent_components=3)
    assert not bool(model.latent_density_fitted)
    run = genlab.fit(model, data, max_steps=2, batch_size=16, out=tmp_path / "run", progress=False, tensorboard=False, num_samples=4, ema_decay=0.0)
    assert bool(run.model.latent_density_fitted)
    # the fitted mixture is (near) EM's fixed point on the training codes: one more EM step gains ~nothing
    z = run.model.encode_dataset(data.split("train").tensors()[0]).double()
    density = run.model.latent_density
    before = density.log_prob(z).mean()
    assert before > torch.distributions.MultivariateNormal(z.mean(0), torch.cov(z.T)).log_prob(z).mean()  # 3 components beat 1
    refit = type(density)(3, 2)
    refit.load_state_dict(density.state_dict())
    refit.em_step(z, reg_covar=model.config.latent_reg_covar * float(z.var(0).mean()))
    assert float(refit.log_prob(z).mean() - before) < 1e-3
    loaded = genlab.load(tmp_path / "run")
    torch.testing.assert_close(loaded.latent_density.means, run.model.latent_density.means)
    g = torch.Generator().manual_seed(0)
    torch.testing.assert_close(loaded.sample(5, generator=g), run.model.eval().sample(5, generator=torch.Generator().manual_seed(0)))
