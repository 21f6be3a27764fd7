"""The Gumbel-softmax relaxation against its distribution theory (Jang et al. 2017; Maddison et al.
2017), and the discrete VAE against exact enumeration of a latent space small enough to sum over."""

import itertools
import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

import genlab
from genlab.data import Batch, DataSpec
from genlab.models.latent.dvae import CategoricalPosterior, DiscreteVAE, DVAEConfig, gumbel_softmax, sample_gumbel

pytestmark = pytest.mark.usefixtures("one_thread")

PI = torch.tensor([0.5, 0.25, 0.15, 0.1], dtype=torch.float64)


def _draws(tau, n=20_000, seed=0, hard=False):
    logits = PI.log().expand(n, 4)
    return gumbel_softmax(logits, tau, hard=hard, generator=torch.Generator().manual_seed(seed))


def test_samples_approach_one_hot_as_the_temperature_falls():
    taus = [5.0, 1.0, 0.5, 0.1, 0.01]
    largest = [float(_draws(tau).max(1).values.mean()) for tau in taus]
    assert all(a < b for a, b in zip(largest, largest[1:])), largest
    assert largest[-1] > 0.98, largest
    # and the mean of the relaxed samples approaches pi (their one-hot limit is Categorical(pi))
    y = _draws(0.01)
    torch.testing.assert_close(y.mean(0), PI, atol=5 * (PI * (1 - PI) / len(y)).sqrt().max().item() + 1e-3, rtol=0)


def test_argmax_is_exactly_categorical_pi_at_every_temperature():
    """argmax_k (log pi_k + g_k) ~ Categorical(pi) (the Gumbel-max trick), and the softmax at any tau
    keeps that argmax: the same noise gives the same category at every temperature."""
    n = 40_000
    picks = {tau: _draws(tau, n=n, seed=3).argmax(1) for tau in (10.0, 1.0, 0.1)}
    assert torch.equal(picks[10.0], picks[1.0]) and torch.equal(picks[1.0], picks[0.1])
    share = torch.bincount(picks[1.0], minlength=4).double() / n
    assert bool(((share - PI).abs() < 5 * (PI * (1 - PI) / n).sqrt()).all()), share


def test_binary_concrete_matches_its_closed_form_cdf():
    """K = 2: y_1 = sigmoid((l_1 - l_2 + L) / tau), L = g_1 - g_2 ~ Logistic(0, 1), so
    P(y_1 <= s) = sigmoid(tau logit(s) - (l_1 - l_2))  (Maddison et al. 2017, the binary Concrete)."""
    n, tau = 50_000, 0.7
    logits = torch.tensor([0.8, -0.4], dtype=torch.float64)
    y1 = gumbel_softmax(logits.expand(n, 2), tau, generator=torch.Generator().manual_seed(1))[:, 0]
    for s in (0.05, 0.2, 0.5, 0.8, 0.95):
        expected = torch.sigmoid(torch.tensor(tau * math.log(s / (1 - s)) - 1.2, dtype=torch.float64)).item()
        empirical = float((y1 <= s).double().mean())
        assert abs(empirical - expected) < 5 * math.sqrt(expected * (1 - expected) / n), (s, empirical, expected)


def test_gumbel_noise_has_the_gumbel_distribution():
    g = sample_gumbel((100_000,), generator=torch.Generator().manual_seed(0), dtype=torch.float64)
    for value in (-1.0, 0.0, 1.0, 3.0):
        expected = math.exp(-math.exp(-value))  # the Gumbel(0, 1) CDF
        assert abs(float((g <= value).double().mean()) - expected) < 5 * math.sqrt(expected * (1 - expected) / 1e5)


def test_straight_through_is_one_hot_forward_and_soft_backward():
    logits = torch.randn(6, 5, dtype=torch.float64, requires_grad=True)
    w = torch.randn(6, 5, dtype=torch.float64)
    hard = gumbel_softmax(logits, 0.5, hard=True, generator=torch.Generator().manual_seed(2))
    torch.testing.assert_close(hard.detach(), F.one_hot(hard.detach().argmax(1), 5).double(), rtol=0, atol=1e-15)
    (hard * w).sum().backward()
    grad_hard = logits.grad.clone()
    logits.grad = None
    soft = gumbel_softmax(logits, 0.5, generator=torch.Generator().manual_seed(2))
    (soft * w).sum().backward()
    torch.testing.assert_close(grad_hard, logits.grad)
    torch.testing.assert_close(hard.argmax(1), soft.argmax(1))


def test_kl_to_the_uniform_prior_matches_torch_distributions():
    logits = torch.randn(3, 4, 6, dtype=torch.float64)
    q = CategoricalPosterior(logits)
    expected = D.kl_divergence(D.Categorical(logits=logits), D.Categorical(logits=torch.zeros_like(logits))).sum(1)
    torch.testing.assert_close(q.kl_to_uniform(), expected)


# -- the model against enumeration ---------------------------------------------------------------
def _tiny_dvae(prior="uniform"):
    spec = DataSpec("toy", kind="vector", shape=(3,), value_range=(-math.inf, math.inf))
    torch.manual_seed(0)
    config = DVAEConfig(latent_dim=2, categories=3, likelihood="gaussian", decoder_std=0.7, net="mlp", hidden=(8,), prior=prior)
    return DiscreteVAE(config, spec).double()


def _exact(model, x):
    """log p(x) = logsumexp_z [log p(x|z) + log p(z)] over all 3^2 codes, the exact ELBO
    sum_z q(z|x) [log p(x|z) + log p(z) - log q(z|x)], and p(z) of the 9 codes."""
    codes = torch.tensor(list(itertools.product(range(3), repeat=2)))  # (9, 2)
    one_hot = F.one_hot(codes, 3).double()  # (9, 2, 3)
    b = x.shape[0]
    z = one_hot.repeat_interleave(b, 0)  # (9 B, 2, 3): code j for every sample
    log_prior = model.prior_log_prob(one_hot)  # (9,)
    log_joint = model.reconstruction_log_likelihood(x.repeat(9, 1), model.decode(z)).view(9, b) + log_prior[:, None]  # (9, B)
    log_px = torch.logsumexp(log_joint, dim=0)
    q = model.encode(x)
    log_q = (q.log_probs[:, None] * one_hot[None]).sum((2, 3))  # (B, 9)
    elbo = (log_q.exp() * (log_joint.T - log_q)).sum(1)
    return log_px, elbo, log_prior


@pytest.mark.parametrize("prior", ["uniform", "categorical", "pixelcnn"])
def test_bounds_against_exact_enumeration_of_the_codes(prior):
    model = _tiny_dvae(prior).eval()
    x = torch.randn(5, 3, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    with torch.no_grad():
        if prior == "categorical":  # a non-uniform prior, so the test sees which one is used
            model.code_prior.logits.copy_(torch.tensor([[[1.0, -0.5, 0.2], [0.0, 0.7, -1.0]]]))
        log_px, elbo, log_prior = _exact(model, x)
        torch.testing.assert_close(log_prior.logsumexp(0), torch.zeros((), dtype=torch.float64), rtol=0, atol=1e-6)  # p(z) sums to 1
        assert bool((elbo < log_px).all())
        # the ELBO estimate with discrete draws is unbiased for the exact ELBO
        n = 4000
        draws = model.elbo(x.repeat(n, 1), generator=torch.Generator().manual_seed(0)).view(n, -1)
        assert bool(((draws.mean(0) - elbo).abs() < 5 * draws.std(0) / math.sqrt(n)).all())
        # E[IWAE_k] rises to log p(x) with k: each expectation from 4,000 / k repeats (8,000 at k = 1)
        gaps = {}
        for k, repeats in ((1, 8000), (4, 1000), (40, 100), (2000, 4)):
            estimate = model.iwae_log_likelihood(x.repeat(repeats, 1), k, generator=torch.Generator().manual_seed(k))
            gaps[k] = float((log_px - estimate.view(repeats, -1).mean(0)).mean())
    assert gaps[1] > gaps[4] > gaps[40] > gaps[2000] > -0.01, gaps
    assert gaps[2000] < 0.01, gaps  # 9 codes: 2,000 draws see every one many times


def test_temperature_anneals_with_the_step_and_survives_resume(tmp_path):
    data = genlab.data.load("digits")  # an image grid is quicker to draw than 2,000 points of a 2-D dataset
    model = genlab.create("dvae", data=data, latent_dim=2, categories=4, hidden=(16,), tau0=2.0, tau_min=0.5, anneal_rate=0.1)
    assert model.temperature() == 2.0
    genlab.fit(model, data, max_steps=3, batch_size=32, out=tmp_path / "run", progress=False, checkpoint_every=3, val_batches=1,
                tensorboard=False, num_samples=4)
    assert int(model.anneal_step) == 3  # validation passes do not count
    assert model.temperature() == pytest.approx(2.0 * math.exp(-0.3))
    resumed = genlab.create("dvae", data=data, latent_dim=2, categories=4, hidden=(16,), tau0=2.0, tau_min=0.5, anneal_rate=0.1)
    genlab.fit(resumed, data, max_steps=5, batch_size=32, out=tmp_path / "run", resume=True, progress=False, tensorboard=False)
    assert int(resumed.anneal_step) == 5
    assert resumed.temperature(100) == 0.5  # floored at tau_min
    terms = resumed.loss(Batch(data.split("train").tensors()[0][:8])).terms
    assert float(terms["tau"]) == pytest.approx(2.0 * math.exp(-0.5))


def test_samples_decode_uniform_discrete_codes():
    model = _tiny_dvae()
    z = model.prior_sample(30_000, torch.Generator().manual_seed(0))
    assert torch.equal(z.sum(-1), torch.ones(30_000, 2, dtype=z.dtype))  # one-hot per variable
    share = z.mean(0)  # (2, 3): each category 1/3
    assert bool(((share - 1 / 3).abs() < 5 * math.sqrt(2 / 9 / 30_000)).all()), share
