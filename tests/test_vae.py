"""The VAE against a linear-Gaussian model whose log p(x) and posterior are known in closed form,
plus the loss's weighting, gradients through the reparameterisation, sampling and a short training run."""

import math

import pytest
import torch
from torch import distributions as D
from torch import nn

import genlab
from genlab.data import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.models.latent import VAE, FlowPrior, VAEConfig
from genlab.nn.distributions import standard_normal_log_prob
from genlab.registry import get

IMAGE = DataSpec("toy-images", kind="image", shape=(1, 8, 8))


pytestmark = pytest.mark.usefixtures("one_thread")


# -- the linear-Gaussian oracle ----------------------------------------------------------------
# p(z) = N(0, I_d), p(x|z) = N(W z + b, s^2 I_D)  =>  p(x) = N(b, W W^T + s^2 I) and
# p(z|x) = N(S W^T (x - b) / s^2, S) with S = (I + W^T W / s^2)^-1, diagonal when W's columns are orthogonal.
class LinearGaussian:
    def __init__(self, data_dim=4, latent_dim=2, s=0.3, seed=0):
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(data_dim, latent_dim, generator=g, dtype=torch.float64))
        self.scales = torch.tensor([2.0, 3.0], dtype=torch.float64)[:latent_dim]
        self.W = q * self.scales  # orthogonal columns: W^T W = diag(scales^2)
        self.b = torch.randn(data_dim, generator=g, dtype=torch.float64)
        self.s = s
        self.spec = DataSpec("linear-gaussian", kind="vector", shape=(data_dim,), value_range=(-math.inf, math.inf))
        self.marginal = D.MultivariateNormal(self.b, self.W @ self.W.T + s**2 * torch.eye(data_dim, dtype=torch.float64))
        self.posterior_var = 1.0 / (1.0 + self.scales**2 / s**2)

    def vae(self, encoder: nn.Module | None = None) -> VAE:
        config = VAEConfig(latent_dim=len(self.scales), likelihood="gaussian", decoder_std=self.s, net="mlp", hidden=(16,), prior="standard")
        torch.manual_seed(0)
        model = VAE(config, self.spec).double()
        decoder = nn.Linear(len(self.scales), len(self.b)).double()
        with torch.no_grad():
            decoder.weight.copy_(self.W)
            decoder.bias.copy_(self.b)
        model.decoder = decoder
        if encoder is not None:
            model.encoder = encoder
        return model

    def posterior_mean(self, x):
        return self.posterior_var * ((x - self.b) @ self.W) / self.s**2

    def elbo(self, x, mean, logvar):
        """E_q[log p(x|z)] - KL in closed form for q = N(mean, diag exp(logvar))."""
        D_, var = x.shape[1], torch.exp(logvar)
        residual = x - mean @ self.W.T - self.b
        expected_sq = (residual**2).sum(1) + (var * self.scales**2).sum(1)  # tr(W diag(var) W^T)
        recon = -0.5 * D_ * math.log(2 * math.pi * self.s**2) - expected_sq / (2 * self.s**2)
        kl = 0.5 * (mean**2 + var - 1 - logvar).sum(1)
        return recon - kl

    def data(self, n, seed=1):
        torch.manual_seed(seed)
        return self.marginal.sample((n,))


class ExactPosteriorEncoder(nn.Module):
    def __init__(self, oracle: LinearGaussian):
        super().__init__()
        self.oracle = oracle

    def forward(self, x):
        mean = self.oracle.posterior_mean(x)
        return torch.cat([mean, torch.log(self.oracle.posterior_var).expand_as(mean)], dim=1)


def test_elbo_matches_closed_form_and_lies_below_log_px():
    oracle = LinearGaussian()
    model = oracle.vae()  # an untrained MLP encoder
    x = oracle.data(32)
    log_px = oracle.marginal.log_prob(x)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        exact = oracle.elbo(x, mean, logvar)
        estimate = model.elbo(x, samples=4000, generator=torch.Generator().manual_seed(0))
        draws = model.elbo(x.repeat(4000, 1), generator=torch.Generator().manual_seed(1)).view(4000, -1)
    assert torch.all(exact < log_px)
    assert (log_px - exact).mean() > 1.0  # an untrained encoder leaves a real gap
    # one-draw estimates are unbiased: both Monte Carlo means within 5 standard errors of the closed form
    standard_error = draws.std(0) / math.sqrt(4000)
    assert torch.all((estimate - exact).abs() < 5 * standard_error), ((estimate - exact) / standard_error)
    assert torch.all((draws.mean(0) - exact).abs() < 5 * standard_error), ((draws.mean(0) - exact) / standard_error)


def test_iwae_rises_toward_log_px_with_k():
    oracle = LinearGaussian()
    model = oracle.vae()
    x = oracle.data(32)
    log_px = oracle.marginal.log_prob(x)
    with torch.no_grad():
        mean, logvar = model.encode(x)
        elbo = oracle.elbo(x, mean, logvar)
        gaps = {}
        for k in (1, 10, 100, 1000):
            estimate = model.iwae_log_likelihood(x, k, generator=torch.Generator().manual_seed(k))
            gaps[k] = (log_px - estimate).mean().item()
        # IWAE_1 is an unbiased estimate of the ELBO: average 2000 independent draws per sample
        iwae1 = model.iwae_log_likelihood(x.repeat(4000, 1), 1, generator=torch.Generator().manual_seed(7)).view(4000, -1)
    assert gaps[1] > gaps[10] > gaps[100] > gaps[1000] > -0.05, gaps
    assert gaps[1000] < 0.1 * gaps[1], gaps
    standard_error = iwae1.std(0) / math.sqrt(4000)
    assert torch.all((iwae1.mean(0) - elbo).abs() < 5 * standard_error), ((iwae1.mean(0) - elbo) / standard_error)
    # nll_bound is -IWAE with config.iw_samples
    bound = model.nll_bound(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(bound, -model.iwae_log_likelihood(x, model.config.iw_samples, generator=torch.Generator().manual_seed(3)))


def test_exact_posterior_makes_the_bounds_tight():
    oracle = LinearGaussian()
    model = oracle.vae(ExactPosteriorEncoder(oracle))
    x = oracle.data(16)
    log_px = oracle.marginal.log_prob(x)
    with torch.no_grad():
        # with q = p(z|x), log p(x, z) - log q(z|x) = log p(x) for every z, so even one draw is exact
        iwae1 = model.iwae_log_likelihood(x, 1, generator=torch.Generator().manual_seed(0))
        torch.testing.assert_close(iwae1, log_px, atol=1e-9, rtol=1e-9)
        mean, logvar = model.encode(x)
        torch.testing.assert_close(oracle.elbo(x, mean, logvar), log_px, atol=1e-9, rtol=1e-9)
        estimate = model.elbo(x, samples=4000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(estimate, log_px, atol=0.05, rtol=0.0)


# -- the training loss ---------------------------------------------------------------------------
@pytest.mark.parametrize("prior", ["standard", "vamp"])
@pytest.mark.parametrize("beta", [0.0, 0.5, 4.0])
def test_total_is_recon_plus_beta_kl(beta, prior):
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, beta=beta, channels=(4, 8), prior=prior, prior_components=5), IMAGE)
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(1)
    loss = model.loss(Batch(x))
    torch.testing.assert_close(loss.total, loss.terms["recon"] + beta * loss.terms["kl"], rtol=1e-6, atol=1e-5)
    torch.testing.assert_close(loss.terms["elbo"], -(loss.terms["recon"] + loss.terms["kl"]), rtol=1e-6, atol=1e-5)
    if prior == "standard":  # the closed form is >= 0; the VampPrior's one-draw estimate need not be
        assert loss.terms["kl"] > 0


# -- the VampPrior ------------------------------------------------------------------------------------
def _vamp_model(k=4, latent_dim=2):
    torch.manual_seed(0)
    spec = DataSpec("vec", kind="vector", shape=(3,), value_range=(-5.0, 5.0))
    model = VAE(VAEConfig(latent_dim=latent_dim, likelihood="gaussian", hidden=(8,), prior_components=k), spec).double()
    with torch.no_grad():  # spread the components apart so the mixture is far from one Gaussian
        model.pseudo_inputs.mul_(10.0)
    return model


def _reference_mixture(model):
    means, logvars = model.prior_components()
    k = means.shape[0]
    return D.MixtureSameFamily(
        D.Categorical(logits=torch.zeros(k, dtype=means.dtype)), D.Independent(D.Normal(means, (0.5 * logvars).exp()), 1)
    )


def test_vamp_prior_density_is_the_mixture_of_posteriors_at_the_pseudo_inputs():
    model = _vamp_model()
    reference = _reference_mixture(model)
    z = torch.randn(50, 2, dtype=torch.float64) * 3
    with torch.no_grad():
        torch.testing.assert_close(model.prior_log_prob(z), reference.log_prob(z))


def test_vamp_prior_samples_follow_the_mixture():
    model = _vamp_model()
    reference = _reference_mixture(model)
    with torch.no_grad():
        z = model.prior_sample(200_000, generator=torch.Generator().manual_seed(0))
        truth = reference.sample((200_000,))
    torch.testing.assert_close(z.mean(0), reference.mean, atol=4 * truth.std(0).max().item() / math.sqrt(2e5), rtol=0)
    torch.testing.assert_close(z.var(0), reference.variance, rtol=0.02, atol=0)
    # the component choice is uniform: the share of draws nearest each component mean is close to truth's
    centres = reference.component_distribution.mean
    share = lambda s: torch.bincount(torch.cdist(s, centres).argmin(1), minlength=4) / len(s)  # noqa: E731
    torch.testing.assert_close(share(z), share(truth), atol=0.01, rtol=0)


def test_vamp_kl_estimate_is_unbiased():
    # E_q[-H(q) - log p(z)] = E_q[log q(z) - log p(z)] = KL(q || p) >= 0; the entropy part is exact
    model = _vamp_model()
    x = torch.randn(3, 3, dtype=torch.float64)
    with torch.no_grad():
        q = model.encode(x)
        q_rep = q.repeat(40_000)
        z = q_rep.rsample(torch.Generator().manual_seed(0))
        estimate = model.kl_divergence(q_rep, z).view(40_000, 3)
        direct = (q_rep.log_prob(z) - _reference_mixture(model).log_prob(z)).view(40_000, 3)
    standard_error = direct.std(0) / math.sqrt(40_000)
    assert torch.all((estimate.mean(0) - direct.mean(0)).abs() < 3 * standard_error)
    assert torch.all(direct.mean(0) > 0)


def test_initialize_from_data_sets_pseudo_inputs_and_decoder_scale_once():
    data = genlab.data.load("8gaussians", n=500)
    model = genlab.create("vae", data=data, likelihood="gaussian", prior_components=7, hidden=(8,))
    x, _ = data.train.tensors()
    model.initialize_from_data(data.train, torch.Generator().manual_seed(0))
    first = model.pseudo_inputs.detach().clone()
    # each pseudo-input is a distinct training sample
    assert ((first[:, None] - x[None]).abs().sum(-1).min(1).values == 0).all() and len(torch.unique(first, dim=0)) == 7
    torch.testing.assert_close(model.observation_log_scale().exp(), 0.1 * x.std(0) + 2e-3, rtol=1e-4, atol=1e-6)
    model.initialize_from_data(data.train, torch.Generator().manual_seed(1))  # a second call keeps them
    assert torch.equal(model.pseudo_inputs, first)
    other = genlab.create("vae", data=data, likelihood="gaussian", prior_components=7, hidden=(8,))
    other.initialize_from_data(data.train, torch.Generator().manual_seed(0))
    assert torch.equal(other.pseudo_inputs, first)  # the same seed picks the same samples


def test_gradients_reach_the_encoder_through_z():
    # beta = 0 leaves the reconstruction term alone: the encoder learns only through z = mu + sigma * eps
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, beta=0.0, net="conv", channels=(4, 8)), IMAGE)
    model.loss(Batch(torch.rand(4, 1, 8, 8))).total.backward()
    for name, p in model.encoder.named_parameters():
        assert p.grad is not None and torch.isfinite(p.grad).all(), name
    assert sum(p.grad.abs().sum() for p in model.encoder.parameters()) > 0
    # the log-variance half of the encoder's output gets gradient too (sigma multiplies eps)
    last = model.encoder.net[-1]
    assert last.weight.grad[3:].abs().sum() > 0


def test_loss_under_bf16_autocast_is_finite_float32():
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, channels=(4, 8)), IMAGE)
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        loss = model.loss(Batch(torch.rand(4, 1, 8, 8)))
    assert loss.total.dtype == torch.float32 and torch.isfinite(loss.total)


# -- sampling and inspection ----------------------------------------------------------------------
@pytest.mark.parametrize(
    "spec, fields",
    [
        (IMAGE, dict(channels=(4, 8))),
        (DataSpec("vec", kind="vector", shape=(3,), value_range=(-2.0, 3.0)), dict(likelihood="gaussian", hidden=(8,))),
        (DataSpec("vec", kind="vector", shape=(3,), value_range=(-1.0, 1.0)), dict(hidden=(8,))),
    ],
)
def test_samples_are_reproducible_and_in_range(spec, fields):
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=2, **fields), spec)
    with torch.no_grad():  # push decoder outputs far outside the range, so the mapping/clamp matters
        for p in model.decoder.parameters():
            p.mul_(50.0)
    a = model.sample(64, generator=torch.Generator().manual_seed(3))
    b = model.sample(64, generator=torch.Generator().manual_seed(3))
    c = model.sample(64, generator=torch.Generator().manual_seed(4))
    assert a.shape == (64, *spec.shape)
    assert torch.equal(a, b) and not torch.equal(a, c)
    low, high = spec.value_range
    assert a.min() >= low and a.max() <= high


def test_reconstruct_and_encode_mean():
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=5, channels=(4, 8)), IMAGE)
    x = torch.rand(3, 1, 8, 8)
    assert model.encode_mean(x).shape == (3, 5)
    torch.testing.assert_close(model.encode_mean(x), model.encode(x).mean)
    r = model.reconstruct(x)
    assert r.shape == x.shape and 0 <= r.min() and r.max() <= 1


# -- config and registry ---------------------------------------------------------------------------
def test_config_errors_name_the_field_and_choices():
    with pytest.raises(ConfigError, match=r"likelihood='poisson'.*'bernoulli', 'gaussian'"):
        VAEConfig(likelihood="poisson")
    with pytest.raises(ConfigError, match=r"net='resnet'.*'auto', 'mlp', 'conv'"):
        VAEConfig(net="resnet")
    with pytest.raises(ConfigError, match="latent_dim"):
        VAEConfig(latent_dim=0)
    with pytest.raises(ConfigError, match="decoder_std.*likelihood='gaussian'"):
        VAEConfig(decoder_std=0.1)
    with pytest.raises(ConfigError, match="channels"):
        VAEConfig(channels=())
    with pytest.raises(ConfigError, match="likelihood='gaussian'"):
        VAE(VAEConfig(), DataSpec("vec", kind="vector", shape=(2,), value_range=(-math.inf, math.inf)))


def test_config_from_cli_words_and_registry():
    config = VAEConfig.from_dict({"hidden": "32,16", "likelihood": "gaussian", "decoder_std": "0.5", "beta": "2"})
    assert config.hidden == (32, 16) and config.decoder_std == 0.5 and config.beta == 2.0
    assert VAEConfig.from_dict({"likelihood": "gaussian", "decoder_std": "none"}).decoder_std is None
    entry = get("vae")
    assert entry.model_class is VAE and entry.config_class is VAEConfig and entry.family == "latent"
    model = genlab.create("vae", data=IMAGE, latent_dim=4, channels=(4, 8))
    assert isinstance(model, VAE) and model.config.latent_dim == 4


# -- training ------------------------------------------------------------------------------------------
def test_training_lowers_the_negative_elbo_to_near_the_true_entropy():
    # x ~ N(m, A A^T) in 2-D; a VAE with a Gaussian decoder can represent it exactly, so -ELBO
    # should fall from its initial value to near the entropy H = -E[log p(x)].
    torch.manual_seed(0)
    A = torch.tensor([[1.0, 0.0], [0.9, 0.3]])
    m = torch.tensor([2.0, -1.0])
    truth = D.MultivariateNormal(m, A @ A.T)
    spec = DataSpec("gauss2d", kind="vector", shape=(2,), value_range=(-10.0, 10.0))
    model = VAE(VAEConfig(latent_dim=2, likelihood="gaussian", hidden=(32, 32)), spec)
    held_out = truth.sample((2000,))

    def negative_elbo():
        with torch.no_grad():
            return -model.elbo(held_out, samples=8, generator=torch.Generator().manual_seed(0)).mean().item()

    before = negative_elbo()
    optimizer = torch.optim.Adam(model.parameters(), lr=1e-2)
    for _ in range(300):
        loss = model.loss(Batch(truth.sample((256,))))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    after = negative_elbo()
    entropy = truth.entropy().item()
    assert after < before - 1.0, (before, after)
    assert entropy - 0.05 < after < entropy + 0.5, (after, entropy)


def test_loss_traces_as_one_graph():
    """No graph breaks in the training loss (torch.compile-ready); eager backend: no code generation."""
    torch._dynamo.reset()
    torch.manual_seed(0)
    model = VAE(VAEConfig(latent_dim=3, channels=(4, 8)), IMAGE)
    loss = torch.compile(model.loss, backend="eager", fullgraph=True)(Batch(torch.rand(4, 1, 8, 8)))
    assert torch.isfinite(loss.total)


class _Constant(nn.Module):
    def __init__(self, value: torch.Tensor) -> None:
        super().__init__()
        self.value = value

    def forward(self, z: torch.Tensor) -> torch.Tensor:
        return self.value.expand(z.shape[0], -1)


def test_vector_samples_are_draws_from_the_gaussian_decoder():
    # p(x|z) = N(c, 0.5^2 I) for every z: samples have mean c and std 0.5; images would get the mean
    spec = DataSpec("vec", kind="vector", shape=(3,), value_range=(-20.0, 20.0))
    model = VAE(VAEConfig(latent_dim=2, likelihood="gaussian", decoder_std=0.5, hidden=(8,)), spec)
    c = torch.tensor([1.0, -2.0, 3.0])
    model.decoder = _Constant(c)
    x = model.sample(20_000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(x.mean(0), c, atol=0.02, rtol=0)
    torch.testing.assert_close(x.std(0), torch.full((3,), 0.5), atol=0.01, rtol=0)


def test_fit_initializes_from_data_on_a_fresh_run_only(tmp_path):
    data = genlab.data.load("8gaussians", n=300)
    model = genlab.create("vae", data=data, likelihood="gaussian", prior_components=5, hidden=(8,))
    genlab.fit(model, data, max_steps=2, batch_size=16, out=tmp_path / "run", progress=False, ema_decay=0)
    assert int(model.initialized_from_data) == 1
    x, _ = data.train.tensors()
    # two Adam steps move the pseudo-inputs by about 2 lr; they started on training samples
    assert (torch.cdist(model.pseudo_inputs.detach(), x).min(1).values < 0.05).all()
    reloaded = genlab.load(tmp_path / "run")
    assert int(reloaded.initialized_from_data) == 1
    torch.testing.assert_close(reloaded.pseudo_inputs, model.pseudo_inputs)


# -- the IWAE training objective -------------------------------------------------------------------------
def test_iwae_objective_is_minus_the_iwae_bound_with_the_same_draws():
    oracle = LinearGaussian()
    model = oracle.vae()
    model.config = model.config.replace(objective="iwae", beta=1.0, train_samples=7)
    x = oracle.data(16)
    torch.manual_seed(3)
    loss = model.loss(Batch(x))
    torch.manual_seed(3)
    iwae = model.iwae_log_likelihood(x, 7)
    torch.testing.assert_close(loss.total, -iwae.mean())
    torch.testing.assert_close(loss.terms["iwae"], iwae.mean())
    # with the exact posterior every importance weight is p(x): the objective is -log p(x) for any k
    exact = oracle.vae(ExactPosteriorEncoder(oracle))
    exact.config = exact.config.replace(objective="iwae", beta=1.0, train_samples=5)
    torch.testing.assert_close(exact.loss(Batch(x)).total, -oracle.marginal.log_prob(x).mean(), rtol=1e-9, atol=1e-9)


def test_iwae_training_reaches_the_true_log_likelihood():
    """Train a VAE with a linear decoder on linear-Gaussian data by the IWAE objective (k = 8): the
    model's exact marginal N(b, W W^T + s^2 I) then scores held-out data as well as the truth."""
    oracle = LinearGaussian()
    torch.manual_seed(0)
    config = VAEConfig(latent_dim=2, likelihood="gaussian", decoder_std=oracle.s, net="mlp", hidden=(32,), prior="standard",
                       objective="iwae", beta=1.0, train_samples=8)
    model = VAE(config, oracle.spec).double()
    model.decoder = nn.Linear(2, 4).double()
    optimizer = torch.optim.Adam(model.parameters(), lr=2e-2)
    for step in range(500):  # gap 0.59 nats after 100 steps, 0.024 after 500 (ELBO training: 0.84, 0.044)
        loss = model.loss(Batch(oracle.data(256, seed=100 + step)))
        optimizer.zero_grad()
        loss.total.backward()
        optimizer.step()
    W, b = model.decoder.weight.detach(), model.decoder.bias.detach()
    learned = D.MultivariateNormal(b, W @ W.T + oracle.s**2 * torch.eye(4, dtype=torch.float64))
    held_out = oracle.data(4000, seed=1)
    gap = (oracle.marginal.log_prob(held_out) - learned.log_prob(held_out)).mean().item()
    assert abs(gap) < 0.05, gap


def test_iwae_objective_needs_beta_one():
    with pytest.raises(ConfigError, match="objective='iwae'.*set beta=1"):
        VAEConfig(objective="iwae", beta=0.5)


# -- the flow prior ------------------------------------------------------------------------------------
def _flow_vae(latent_dim=2, transforms=2, seed=0, spec=None, **fields):
    torch.manual_seed(seed)
    spec = spec or DataSpec("vec", kind="vector", shape=(3,), value_range=(-5.0, 5.0))
    config = VAEConfig(latent_dim=latent_dim, likelihood="gaussian", hidden=(8,), prior="flow",
                       prior_flow_transforms=transforms, prior_flow_hidden=(16,), **fields)
    return VAE(config, spec).double()


def _randomize_flow(model, scale=0.4, seed=1):
    """Move every MAF layer off the identity (its MADE's output layer starts at zero)."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for layer in model.prior_flow.transform:
            if hasattr(layer, "made"):
                out = layer.made.output_layer
                out.weight.copy_(scale * torch.randn(out.weight.shape, generator=g, dtype=out.weight.dtype))
                out.bias.copy_(scale * torch.randn(out.bias.shape, generator=g, dtype=out.bias.dtype))


def test_flow_prior_starts_as_the_standard_normal_prior():
    # identity-initialised MAF layers: log p(z), the draws, the KL and the IWAE bound are N(0, I)'s
    flow = _flow_vae()
    standard = VAE(flow.config.replace(prior="standard"), flow.spec).double()
    standard.load_state_dict({k: v for k, v in flow.state_dict().items() if not k.startswith("prior_flow.")})
    z = 3 * torch.randn(100, 2, dtype=torch.float64)
    with torch.no_grad():
        torch.testing.assert_close(flow.prior_log_prob(z), D.Normal(0.0, 1.0).log_prob(z).sum(1), rtol=0, atol=1e-12)
        # the draws: the same N(0, I) numbers, with the coordinates reversed once between the two layers
        torch.testing.assert_close(flow.prior_sample(50, torch.Generator().manual_seed(0)),
                                   standard.prior_sample(50, torch.Generator().manual_seed(0)).flip(1), rtol=0, atol=1e-12)
        x = torch.randn(4, 3, dtype=torch.float64)
        torch.testing.assert_close(flow.nll_bound(x, torch.Generator().manual_seed(2)),
                                   standard.nll_bound(x, torch.Generator().manual_seed(2)), rtol=0, atol=1e-9)
        # the one-draw KL estimate is unbiased for the closed form KL(q || N(0, I))
        q = flow.encode(x)
        q_rep = q.repeat(40_000)
        z = q_rep.rsample(torch.Generator().manual_seed(0))
        estimate = flow.kl_divergence(q_rep, z).view(40_000, 4)
    closed = D.kl_divergence(D.Normal(q.mean, q.std), D.Normal(0.0, 1.0)).sum(1)
    standard_error = estimate.std(0) / math.sqrt(40_000)
    assert torch.all((estimate.mean(0) - closed).abs() < 4 * standard_error), (estimate.mean(0), closed, standard_error)
    torch.testing.assert_close(standard.kl_divergence(q, z[:4]), closed)


def test_flow_prior_density_is_the_change_of_variables_and_integrates_to_one():
    model = _flow_vae(transforms=3)
    _randomize_flow(model)
    flow = model.prior_flow.transform
    z = torch.randn(6, 2, dtype=torch.float64) * 2
    with torch.no_grad():
        log_p = model.prior_log_prob(z)
    for i in range(len(z)):  # log N(f(z); 0, I) + log |det df/dz|, the Jacobian by autograd
        jac = torch.autograd.functional.jacobian(lambda v: flow(v[None])[0][0], z[i])
        u = flow(z[i : i + 1])[0][0]
        reference = D.Normal(0.0, 1.0).log_prob(u).sum() + torch.linalg.slogdet(jac)[1]
        torch.testing.assert_close(log_p[i], reference.detach(), rtol=0, atol=1e-10)
    # the density is normalised, and the samples follow it (their mean and covariance against quadrature)
    h = 0.04
    axis = torch.arange(-12.0, 12.0 + h / 2, h, dtype=torch.float64)
    grid = torch.cartesian_prod(axis, axis)
    with torch.no_grad():
        p = torch.cat([model.prior_log_prob(chunk) for chunk in grid.split(50_000)]).exp() * h * h
    assert float(p.sum()) == pytest.approx(1.0, abs=2e-3)
    mean = (p[:, None] * grid).sum(0)
    cov = (p[:, None, None] * (grid - mean)[:, :, None] * (grid - mean)[:, None, :]).sum(0)
    assert not torch.allclose(cov, torch.eye(2, dtype=torch.float64), atol=0.1)  # the randomised flow is no longer N(0, I)
    with torch.no_grad():
        draws = model.prior_sample(100_000, torch.Generator().manual_seed(0))
    standard_error = draws.std(0) / math.sqrt(len(draws))
    assert torch.all((draws.mean(0) - mean).abs() < 4 * standard_error), (draws.mean(0), mean)
    torch.testing.assert_close(torch.cov(draws.T), cov, rtol=0.03, atol=0.01)


def test_iwae_with_the_exact_posterior_under_a_flow_prior_is_log_px():
    """One MAF layer with a constant shift mu and log-scale alpha is the prior N(mu, diag e^{2 alpha});
    with p(x|z) = N(W z + b, s^2 I), p(x) = N(W mu + b, W V W^T + s^2 I) and the posterior is Gaussian.
    With that posterior as the encoder every importance weight is p(x): IWAE_k(x) = log p(x)."""
    oracle = LinearGaussian()
    mu, alpha = torch.tensor([0.7, -1.2], dtype=torch.float64), torch.tensor([0.4, -0.3], dtype=torch.float64)
    v = torch.exp(2 * alpha)
    post_var = 1.0 / (1.0 / v + oracle.scales**2 / oracle.s**2)  # W^T W = diag(scales^2): diagonal

    class Encoder(nn.Module):
        def forward(self, x):
            mean = post_var * ((x - oracle.b) @ oracle.W / oracle.s**2 + mu / v)
            return torch.cat([mean, torch.log(post_var).expand_as(mean)], dim=1)

    model = oracle.vae(Encoder())
    model.config = model.config.replace(prior="flow", prior_flow_transforms=1, prior_flow_hidden=(4,))
    model.prior_flow = FlowPrior(2, transforms=1, hidden=(4,)).double()
    layer = model.prior_flow.transform.bijections[0]
    with torch.no_grad():
        layer.made.output_layer.bias.view(2, 2).copy_(torch.stack([mu, 3.0 * torch.atanh(alpha / 3.0)], dim=1))
    x = oracle.data(8)
    marginal = D.MultivariateNormal(oracle.W @ mu + oracle.b, oracle.W @ torch.diag(v) @ oracle.W.T + oracle.s**2 * torch.eye(4, dtype=torch.float64))
    with torch.no_grad():
        torch.testing.assert_close(model.prior_log_prob(x[:, :2]), D.Normal(mu, v.sqrt()).log_prob(x[:, :2]).sum(1))
        torch.testing.assert_close(-model.nll_bound(x, torch.Generator().manual_seed(0)), marginal.log_prob(x), rtol=0, atol=1e-9)
        elbo = model.elbo(x, samples=4000, generator=torch.Generator().manual_seed(0))
    torch.testing.assert_close(elbo, marginal.log_prob(x), rtol=0, atol=0.05)  # the ELBO is tight too, in expectation


def test_flow_prior_training_lowers_the_loss_and_fits_the_codes(tmp_path):
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    model = genlab.create("vae", data=data, prior="flow", latent_dim=4, channels=(8,), hidden=(16,), prior_flow_transforms=2,
                          prior_flow_hidden=(16,), iw_samples=8)
    run = genlab.fit(model, data, max_steps=100, batch_size=64, lr=3e-3, log_every=25, out=tmp_path / "run", progress=False,
                     sample_every=0, num_samples=4, ema_decay=0.0)
    losses = [row["loss"] for row in run.history if row["split"] == "train"]
    assert losses[-1] < losses[0] - 5.0, losses
    # the prior learnt: it gives the codes of held-out digits a higher density than N(0, I), where it started
    x = data.split("test").tensors()[0]
    with torch.no_grad():
        q = model.encode(x)
        z = q.rsample(torch.Generator().manual_seed(0))
        assert float(model.prior_log_prob(z).mean() - standard_normal_log_prob(z).mean()) > 0.5
    # save and load keep the flow's density, the bound and the samples
    loaded = genlab.load(tmp_path / "run")
    with torch.no_grad():
        torch.testing.assert_close(loaded.prior_log_prob(z), model.prior_log_prob(z))
        torch.testing.assert_close(loaded.nll_bound(x[:16], torch.Generator().manual_seed(1)),
                                   model.nll_bound(x[:16], torch.Generator().manual_seed(1)))
    torch.testing.assert_close(loaded.sample(5, generator=torch.Generator().manual_seed(0)),
                               model.eval().sample(5, generator=torch.Generator().manual_seed(0)))


def test_flow_prior_config():
    assert VAEConfig.from_dict({"prior": "flow", "prior_flow_hidden": "32,32", "prior_flow_transforms": "3"}).prior_flow_hidden == (32, 32)
    with pytest.raises(ConfigError, match=r"prior='maf'.*'vamp', 'standard', 'flow'"):
        VAEConfig(prior="maf")
    with pytest.raises(ConfigError, match="prior_flow_transforms"):
        VAEConfig(prior="flow", prior_flow_transforms=0)


# -- beta-VAE ------------------------------------------------------------------------------------------
def test_beta_vae_is_the_vae_with_beta_4_a_standard_prior_and_a_gaussian_decoder():
    entry = get("beta-vae")
    assert issubclass(entry.model_class, VAE) and entry.family == "latent"
    torch.manual_seed(0)
    model = genlab.create("beta-vae", data=IMAGE, latent_dim=3, channels=(4, 8))
    assert (model.config.beta, model.config.prior, model.config.likelihood) == (4.0, "standard", "gaussian")
    # the same weights in a VAE with beta = 4, the N(0, I) prior and a Gaussian decoder give the same loss
    vae = VAE(VAEConfig(latent_dim=3, channels=(4, 8), beta=4.0, prior="standard", likelihood="gaussian"), IMAGE)
    vae.load_state_dict(model.state_dict())
    x = torch.rand(6, 1, 8, 8)
    torch.manual_seed(1)
    loss = model.loss(Batch(x))
    torch.manual_seed(1)
    assert torch.equal(loss.total, vae.loss(Batch(x)).total)
    # total = recon + 4 KL(q || N(0, I)) in closed form, the KL against torch.distributions
    q = model.encode(x)
    kl = D.kl_divergence(D.Normal(q.mean, q.std), D.Normal(0.0, 1.0)).sum(1).mean()
    torch.testing.assert_close(loss.terms["kl"], kl.detach())
    torch.testing.assert_close(loss.total, loss.terms["recon"] + 4.0 * kl.detach(), rtol=1e-6, atol=1e-5)
    assert genlab.create("beta-vae", data=IMAGE, beta=8, channels=(4, 8)).config.beta == 8.0


def test_vamp_pseudo_inputs_shrink_with_the_cpu_batch_on_large_images():
    """The encoder encodes the K pseudo-inputs at every step: 100 on MNIST-size images and on the
    paper networks, 100 x 784 / (H W) (to a multiple of 8, at least 16) on larger images for the
    CPU networks, like their batch; a given K wins, and the resolved K is what the config keeps."""
    def components(side, **fields):
        spec = DataSpec("x", kind="image", shape=(1, side, side), value_range=(0.0, 1.0), levels=256)
        model = genlab.create("vae", data=spec, **fields)
        assert model.pseudo_inputs.shape == (model.config.prior_components, 1, side, side)
        return model.config.prior_components

    assert components(28, preset="cpu") == 100 and components(8, preset="cpu") == 100
    assert components(64, preset="cpu") == 16 and components(32, preset="cpu") == 72
    assert components(64, preset="paper") == 100 and components(64, preset="cpu", prior_components=50) == 50


# -- tables: TVAE's decoder (Gaussian numbers, a softmax per one-hot group) ------------------------------
def test_table_likelihood_equals_torch_distributions():
    from genlab.nn.distributions import TableLikelihood

    blocks = (("a", "continuous", 0, 1), ("b", "categorical", 1, 4), ("c", "continuous", 4, 5), ("d", "categorical", 5, 7))
    table = TableLikelihood(blocks)
    g = torch.Generator().manual_seed(0)
    params = torch.randn(6, 7, generator=g)
    x = torch.randn(6, 7, generator=g)
    b, d = torch.randint(0, 3, (6,), generator=g), torch.randint(0, 2, (6,), generator=g)
    x[:, 1:4], x[:, 5:7] = nn.functional.one_hot(b, 3).float(), nn.functional.one_hot(d, 2).float()
    log_scale = torch.randn(7, generator=g) * 0.3
    categories = D.Categorical(logits=params[:, 1:4]).log_prob(b) + D.Categorical(logits=params[:, 5:7]).log_prob(d)
    numbers = D.Normal(params[:, [0, 4]], log_scale[[0, 4]].exp()).log_prob(x[:, [0, 4]]).sum(1)
    torch.testing.assert_close(table.log_prob(x, params, log_scale), numbers + categories)
    unit = D.Normal(params[:, [0, 4]], 1.0).log_prob(x[:, [0, 4]]).sum(1)  # a fixed scale, as decoder_std gives
    torch.testing.assert_close(table.log_prob(x, params, 0.0), unit + categories)


def test_table_likelihood_draws_follow_the_softmax_and_the_gaussian():
    from genlab.nn.distributions import TableLikelihood

    table = TableLikelihood((("a", "continuous", 0, 1), ("b", "categorical", 1, 4)))
    params = torch.tensor([[0.5, 0.0, 1.0, -1.0]]).expand(40_000, 4)
    x = table.sample(params, torch.tensor([math.log(0.2), 0.0, 0.0, 0.0]), (-6.0, 6.0), torch.Generator().manual_seed(1))
    assert torch.equal(x[:, 1:].sum(1), torch.ones(40_000)) and set(x[:, 1:].unique().tolist()) == {0.0, 1.0}
    frequencies = x[:, 1:].mean(0)
    torch.testing.assert_close(frequencies, torch.softmax(params[0, 1:], 0), atol=0.01, rtol=0)  # 4 standard errors
    assert abs(x[:, 0].mean().item() - 0.5) < 0.005 and abs(x[:, 0].std().item() - 0.2) < 0.005
    mean = table.mean(params[:2].clone(), (-6.0, 6.0))
    torch.testing.assert_close(mean[0, 1:], torch.softmax(params[0, 1:], 0))


def test_vae_on_a_table_uses_the_table_decoder():
    iris, digits = genlab.data.load("iris"), genlab.data.load("digits")
    model = genlab.create("vae", data=iris, latent_dim=2, hidden=(32,))
    assert model.config.likelihood == "table" and model.likelihood_kind() == "none"
    assert model.config.prior == "standard" and not hasattr(model, "pseudo_inputs")  # TVAE's N(0, I)
    on_images = genlab.create("vae", data=digits, latent_dim=2, hidden=(8,))
    assert (on_images.config.likelihood, on_images.config.prior) == ("bernoulli", "vamp")
    with pytest.raises(ConfigError, match="column layout"):
        genlab.create("vae", data=digits, likelihood="table")
    # trained briefly, its rows hold one category per group and the classes at their rates
    torch.manual_seed(0)
    run = genlab.fit(model, iris, max_steps=400, batch_size=64, progress=False, sample_every=0, checkpoint_every=0)
    x = run.sampling_model.eval().sample(3000, generator=torch.Generator().manual_seed(0))
    start, stop = next((a, b) for name, role, a, b in iris.spec.table_blocks if name == "target")
    assert torch.equal(x[:, start:stop].sum(1), torch.ones(3000))
    rates = x[:, start:stop].mean(0)
    assert (rates - 1 / 3).abs().max() < 0.1, rates
    rows = iris.decode_rows(x)
    assert set(rows["target"].astype(str)) <= set(iris.spec.class_names)
