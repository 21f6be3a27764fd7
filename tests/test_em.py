"""EM for Gaussian mixtures against the mathematics and against scikit-learn: the E-step against
torch.distributions, the log-likelihood non-decreasing over iterations, the same iterates as
scikit-learn's GaussianMixture from the same initialisation, ancestral samples with the mixture's
moments, and the registered `gmm-em` trained by `genlab.fit` reaching the true log-likelihood."""

import warnings

import pytest
import torch
from torch import distributions as D

import genlab
from genlab.data import Batch
from genlab.models.latent.em import GaussianMixture, e_step, kmeans_plusplus, m_step

pytestmark = pytest.mark.usefixtures("one_thread")


def _mixture_data(n=600, seed=0):
    """Three anisotropic Gaussians in 2-D, float64, and the true mixture."""
    g = torch.Generator().manual_seed(seed)
    means = torch.tensor([[-4.0, 0.0], [3.0, 3.0], [2.0, -3.0]], dtype=torch.float64)
    covs = torch.stack([torch.tensor([[1.0, 0.5], [0.5, 0.8]]), torch.tensor([[0.5, -0.2], [-0.2, 1.5]]), torch.eye(2) * 0.3]).double()
    weights = torch.tensor([0.5, 0.3, 0.2], dtype=torch.float64)
    true = D.MixtureSameFamily(D.Categorical(weights), D.MultivariateNormal(means, covs))
    k = torch.multinomial(weights, n, replacement=True, generator=g)
    eps = torch.randn(n, 2, generator=g, dtype=torch.float64)
    x = means[k] + (torch.linalg.cholesky(covs)[k] @ eps[:, :, None])[:, :, 0]
    return x, true


def test_e_step_and_log_prob_match_torch_distributions():
    x, _ = _mixture_data(50)
    gmm = GaussianMixture(3, 2)
    g = torch.Generator().manual_seed(1)
    a = torch.randn(3, 2, 2, generator=g, dtype=torch.float64)
    gmm.set_parameters(torch.log(torch.tensor([0.2, 0.5, 0.3], dtype=torch.float64)),
                       torch.randn(3, 2, generator=g, dtype=torch.float64), a @ a.transpose(1, 2) + 0.1 * torch.eye(2))
    reference = D.MixtureSameFamily(D.Categorical(logits=gmm.log_weights), D.MultivariateNormal(gmm.means, gmm.covariances))
    torch.testing.assert_close(gmm.log_prob(x), reference.log_prob(x), rtol=1e-12, atol=1e-12)
    joint = D.MultivariateNormal(gmm.means, gmm.covariances).log_prob(x[:, None, :]) + gmm.log_weights  # (N, K)
    log_r, log_px = e_step(x, gmm.log_weights, gmm.means, gmm.scale_tril())
    torch.testing.assert_close(log_r, joint - joint.logsumexp(1, keepdim=True), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_px, reference.log_prob(x), rtol=1e-12, atol=1e-12)
    torch.testing.assert_close(log_r.exp().sum(1), torch.ones(50, dtype=torch.float64))


def test_m_step_with_hard_assignments_is_per_cluster_mean_and_biased_covariance():
    x, _ = _mixture_data(90)
    labels = torch.arange(90) % 3
    log_w, means, covs = m_step(x, torch.nn.functional.one_hot(labels, 3).double(), reg_covar=0.0)
    for k in range(3):
        xs = x[labels == k]
        torch.testing.assert_close(means[k], xs.mean(0))
        torch.testing.assert_close(covs[k], torch.cov(xs.T, correction=0))
    torch.testing.assert_close(log_w.exp(), torch.full((3,), 1 / 3, dtype=torch.float64))


@pytest.mark.parametrize("init", ["kmeans", "kmeans++", "random"])
def test_log_likelihood_never_decreases(init):
    x, _ = _mixture_data()
    gmm = GaussianMixture(3, 2)
    history = gmm.fit(x, max_iter=60, tol=0.0, reg_covar=0.0, init=init, generator=torch.Generator().manual_seed(3))
    steps = torch.tensor(history).diff()
    assert bool((steps >= -1e-12).all()), steps.min()
    assert history[-1] > history[0] or init != "random"  # random responsibilities start far from a fit


def test_agrees_with_scikit_learn_from_the_same_initialisation():
    mixture = pytest.importorskip("sklearn.mixture")
    g = torch.Generator().manual_seed(0)
    x = torch.cat([torch.randn(150, 4, generator=g, dtype=torch.float64) * s + c for s, c in ((0.5, -2.0), (1.0, 0.0), (0.7, 2.5))])
    gmm = GaussianMixture(3, 4)
    gmm.initialize(x, "kmeans++", reg_covar=1e-6, generator=torch.Generator().manual_seed(5))
    start = [t.clone() for t in (gmm.log_weights, gmm.means, gmm.covariances)]
    iterations = 7
    history = gmm.fit(x, max_iter=iterations, tol=-1.0, reg_covar=1e-6, init=None)
    sk = mixture.GaussianMixture(
        3, covariance_type="full", reg_covar=1e-6, max_iter=iterations, tol=0.0, n_init=1,
        weights_init=start[0].exp().numpy(), means_init=start[1].numpy(), precisions_init=torch.linalg.inv(start[2]).numpy(),
    )  # fmt: skip
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # "did not converge": we stop it after `iterations` on purpose
        sk.fit(x.numpy())
    assert sk.n_iter_ == iterations
    torch.testing.assert_close(gmm.log_weights.exp(), torch.from_numpy(sk.weights_), rtol=1e-10, atol=1e-12)
    torch.testing.assert_close(gmm.means, torch.from_numpy(sk.means_), rtol=1e-10, atol=1e-10)
    torch.testing.assert_close(gmm.covariances, torch.from_numpy(sk.covariances_), rtol=1e-10, atol=1e-10)
    # scikit-learn's lower_bound_ is the mean log-likelihood at its last E-step, before the last M-step
    assert history[iterations - 1] == pytest.approx(sk.lower_bound_, rel=1e-12, abs=1e-12)
    torch.testing.assert_close(gmm.log_prob(x), torch.from_numpy(sk.score_samples(x.numpy())), rtol=1e-10, atol=1e-10)


def test_samples_have_the_mixture_moments():
    _, true = _mixture_data()
    gmm = GaussianMixture(3, 2)
    gmm.set_parameters(true.mixture_distribution.logits.log_softmax(0), true.component_distribution.mean, true.component_distribution.covariance_matrix)
    n = 40_000
    x = gmm.sample(n, torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), true.mean, atol=5 * (true.variance / n).sqrt().max().item(), rtol=0)
    torch.testing.assert_close(torch.cov(x.T), _mixture_cov(true), atol=0.1, rtol=0)  # entries ~ 8, their MC error ~ 0.03
    # and the component shares: how often each component is drawn, within 5 binomial standard errors
    k = gmm.responsibilities(x).argmax(1)  # well separated: the most responsible component is the one drawn
    share = torch.bincount(k, minlength=3).double() / n
    p = true.mixture_distribution.probs
    assert bool(((share - p).abs() < 5 * (p * (1 - p) / n).sqrt() + 0.01).all()), share


def _mixture_cov(true):
    w, mu, cov = true.mixture_distribution.probs, true.component_distribution.mean, true.component_distribution.covariance_matrix
    mean = (w[:, None] * mu).sum(0)
    second = (w[:, None, None] * (cov + mu[:, :, None] * mu[:, None, :])).sum(0)
    return second - mean[:, None] * mean[None, :]


def test_kmeans_plusplus_seeds_every_well_separated_cluster():
    g = torch.Generator().manual_seed(0)
    centres = torch.tensor([[0.0, 0.0], [100.0, 0.0], [0.0, 100.0], [100.0, 100.0]])
    x = (centres.repeat_interleave(50, 0) + 0.1 * torch.randn(200, 2, generator=g)).double()
    for seed in range(5):
        seeds = kmeans_plusplus(x, 4, torch.Generator().manual_seed(seed))
        assert all(any(bool(torch.equal(s, row)) for row in x) for s in seeds)  # seeds are data points
        nearest = torch.cdist(seeds.float(), centres).argmin(1)
        assert sorted(nearest.tolist()) == [0, 1, 2, 3]  # D^2 sampling: a far cluster is all but certain


def test_registered_model_climbs_monotonically_to_the_true_log_likelihood():
    data = genlab.data.load("8gaussians", n=3000)
    model = genlab.create("gmm-em", data=data, components=8, reg_covar=1e-6)
    n_train = len(data.split("train"))
    run = genlab.fit(model, data, max_steps=25, batch_size=n_train, log_every=1, progress=False)
    curve = torch.tensor([row["log_likelihood"] for row in run.history if row["split"] == "train"])
    assert bool((curve.diff() >= -1e-5).all()), curve.diff().min()  # float32 logging of a float64 curve
    x_test = data.split("test").tensors()[0]
    gap = (data.true_log_prob(x_test) - model.log_prob(x_test)).mean().item()
    # the mixture is the true family: on held-out points it is within sampling error of the truth
    assert abs(gap) < 0.05, gap
    assert model.likelihood_kind() == "continuous" and model.exact_likelihood


def test_dequantized_em_steps_do_not_depend_on_the_batch_order():
    data = genlab.data.load("digits")
    x = data.split("train").tensors()[0][:200]
    a, b = (genlab.create("gmm-em", data=data, components=2) for _ in range(2))
    a.initialize_from_data(data.split("train"), torch.Generator().manual_seed(0))
    b.load_state_dict(a.state_dict())
    perm = torch.randperm(200, generator=torch.Generator().manual_seed(1))
    la, lb = a.training_step(Batch(x), None), b.training_step(Batch(x[perm]), None)
    torch.testing.assert_close(la.total, lb.total, rtol=1e-6, atol=1e-6)
    torch.testing.assert_close(a.mixture.means, b.mixture.means, rtol=1e-9, atol=1e-9)
    # the noise is a dequantization: every value lies in its level's bin
    values = a._fixed_dequantization(x)
    bins = torch.floor(values * 17).clamp(max=16)
    torch.testing.assert_close(bins, torch.round(x.reshape(200, -1) * 16))
