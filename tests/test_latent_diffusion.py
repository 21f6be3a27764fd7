"""Latent diffusion: a diffusion model in the standardised latent space of a frozen genlab VAE.

The mathematical check runs it with an identity autoencoder on 2D mixture data and the exact
denoiser of the standardised mixture: its samples must have the data mixture's moments, which holds
only if the standardisation z_norm = (z - m) / s and its inverse are wired the right way round.
The rest trains a tiny VAE and a latent model on digits through `genlab.fit`."""

import math
import shutil

import pytest
import torch
from torch import nn

import genlab
from genlab.data import DataSpec
from genlab.data.dataset import Dataset
from genlab.errors import ConfigError
from genlab.models.diffusion import GaussianMixtureData
from genlab.models.diffusion.guidance import guided_generate, train_noisy_classifier
from genlab.models.diffusion.latent import LatentDiffusionConfig, LatentDiffusionModel
from genlab.train import read_run_config

VECTOR = DataSpec("vec2", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
FAST = dict(hidden=(32,), steps=50, sample_steps=5)


pytestmark = pytest.mark.usefixtures("one_thread")


@pytest.fixture(scope="module")
def digits():
    return genlab.data.load("digits")


@pytest.fixture(scope="module")
def vae_run(digits, tmp_path_factory):
    """A tiny VAE trained for 2 steps on digits, saved as a run directory (latent_dim 4)."""
    out = tmp_path_factory.mktemp("runs") / "vae-digits"
    vae = genlab.create("vae", data=digits, latent_dim=4, hidden=(32,), prior_components=10)
    genlab.fit(vae, digits, max_steps=2, batch_size=32, out=out, progress=False, sample_every=0, num_samples=4)
    return out


class IdentityAutoencoder(nn.Module):
    """E(x) = x, D(z) = z: latent diffusion with it is diffusion on the standardised data."""

    def __init__(self, spec: DataSpec) -> None:
        super().__init__()
        self.spec = spec

    def encode(self, x):
        return x

    def decode(self, z):
        return z


class ExactEps(nn.Module):
    def __init__(self, mixture: GaussianMixtureData, schedule) -> None:
        super().__init__()
        self.mixture, self.schedule = mixture, schedule
        self.anchor = nn.Parameter(torch.zeros((), dtype=torch.float64))

    def forward(self, x, noise_level, y=None):
        return self.mixture.eps(x, noise_level / 1000.0, self.schedule)  # 1000 t on discrete schedules


def test_with_an_identity_autoencoder_and_the_exact_denoiser_samples_have_the_data_moments():
    """Data far from unit scale (means up to 8, stds 0.5 to 2); the model standardises with the training
    statistics m, s, and its network is the exact eps of the standardised mixture, whose means are
    (m_k - m) / s and stds std_k / s. Sampling must undo the standardisation: moments of the samples
    within 4 standard errors (n = 6000) plus the Heun sampler's ~2 % bias of the variances."""
    weights = torch.tensor([0.3, 0.7], dtype=torch.float64)
    means = torch.tensor([[-3.0, 8.0], [2.0, 5.0]], dtype=torch.float64)
    stds = torch.tensor([[1.0, 0.5], [2.0, 1.5]], dtype=torch.float64)
    mixture = GaussianMixtureData(weights, means, stds=stds)
    train = Dataset(mixture.sample(20_000, generator=torch.Generator().manual_seed(0)).float(), VECTOR)
    config = LatentDiffusionConfig(hidden=(8,), sampler="heun", sample_steps=50)
    model = LatentDiffusionModel(config, VECTOR, autoencoder=IdentityAutoencoder(VECTOR)).double()
    model.initialize_from_data(train, torch.Generator().manual_seed(0))
    x, _ = train.tensors()
    z = model.normalize(x.double())
    torch.testing.assert_close(z.mean(0), torch.zeros(2, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(2, dtype=torch.float64), atol=1e-5, rtol=0)
    torch.testing.assert_close(model.denormalize(z), x.double(), atol=1e-5, rtol=0)

    shift, scale = model.data_shift, model.data_scale
    standardised = GaussianMixtureData(weights, (means - shift) / scale, stds=stds / scale)
    model.net = ExactEps(standardised, model.schedule)
    n = 6000
    samples = model.sample(n, generator=torch.Generator().manual_seed(1)).double()
    assert samples.shape == (n, 2) and model.generate(3).x.shape == (3, 2)
    data_std = mixture.covariance.diagonal().sqrt()
    assert torch.all((samples.mean(0) - mixture.mean).abs() < 4 * data_std / math.sqrt(n) + 0.02 * data_std), (samples.mean(0), mixture.mean)
    # the covariance in units of the data's stds: a wrong scale would show as a ratio far from 1
    normalised = torch.cov(samples.T) / torch.outer(data_std, data_std)
    torch.testing.assert_close(normalised, mixture.covariance / torch.outer(data_std, data_std), atol=0.06, rtol=0)
    share = mixture.responsibilities(samples)[:, 1].mean()
    assert abs(share - 0.7) < 0.03, share


def test_a_fixed_latent_scale_multiplies_the_latents():
    model = LatentDiffusionModel(LatentDiffusionConfig(hidden=(8,), latent_scale="0.25"), VECTOR, autoencoder=IdentityAutoencoder(VECTOR))
    x = torch.randn(16, 2)
    model.initialize_from_data(Dataset(x, VECTOR), torch.Generator().manual_seed(0))  # keeps the fixed scale
    torch.testing.assert_close(model.normalize(x), 0.25 * x)
    assert model.config.latent_scale == 0.25


def test_trains_on_a_vae_run_with_the_autoencoder_frozen_and_standardised_latents(digits, vae_run, tmp_path):
    model = genlab.create("latent-diffusion", data=digits, autoencoder=str(vae_run), **FAST)
    assert model.spec == digits.spec and model.diffusion_spec.shape == (4,)
    reference = genlab.load(vae_run)  # the VAE as its run holds it (EMA weights)
    before = {k: v.clone() for k, v in model.autoencoder.state_dict().items()}
    assert all(torch.equal(v, reference.state_dict()[k]) for k, v in before.items())
    run = genlab.fit(model, digits, max_steps=4, batch_size=32, out=tmp_path / "ld", progress=False, sample_every=0, num_samples=4)
    assert all(math.isfinite(row["loss"]) for row in run.history)
    assert not model.autoencoder.training and not any(p.requires_grad for p in model.autoencoder.parameters())
    for autoencoder in (model.autoencoder, run.ema.autoencoder):
        assert all(torch.equal(v, before[k]) for k, v in autoencoder.state_dict().items())

    x, _ = digits.train.tensors()
    z = model.normalize(x)  # (N, 4), standardised with the training split's statistics
    torch.testing.assert_close(z.mean(0), torch.zeros(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(4), atol=1e-4, rtol=0)
    torch.testing.assert_close(model.data_shift, reference.encode(x).mean.mean(0), atol=1e-5, rtol=1e-5)

    samples = model.sample(6, generator=torch.Generator().manual_seed(0))
    assert samples.shape == (6, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert torch.equal(samples * 16, torch.round(samples * 16))  # quantized to digits' 17 levels
    assert model.generate(6, generator=torch.Generator().manual_seed(0)).x.shape == (6, 4)  # latents

    # classifier guidance works in the latent space too (the classifier sees standardised latents)
    classifier = train_noisy_classifier(model, digits, steps=2, batch_size=16, hidden=(16,), embedding_dim=8)
    assert classifier.shape == (4,)
    guided = guided_generate(model, classifier, 3, y=7, steps=3, generator=torch.Generator().manual_seed(0)).x
    assert guided.shape == (3, 1, 8, 8)


def test_saved_runs_load_without_the_autoencoder_run(digits, vae_run, tmp_path):
    own_copy = tmp_path / "vae-copy"
    shutil.copytree(vae_run, own_copy)
    model = genlab.create("latent-diffusion", data=digits, autoencoder=str(own_copy), **FAST)
    genlab.fit(model, digits, max_steps=2, batch_size=32, out=tmp_path / "ld", progress=False, sample_every=0, num_samples=4)
    samples = model.sample(5, generator=torch.Generator().manual_seed(0))
    saved = read_run_config(tmp_path / "ld")["model_config"]
    # what `genlab train --resume` rebuilds from the saved config is the same model
    assert genlab.create("latent-diffusion", data=digits, **saved).config.to_dict() == saved

    loaded = genlab.load(tmp_path / "ld", ema=False)
    assert type(loaded) is LatentDiffusionModel
    torch.testing.assert_close(loaded.sample(5, generator=torch.Generator().manual_seed(0)), samples)
    shutil.rmtree(own_copy)  # the autoencoder's run is gone: its architecture is in the config, its weights in ours
    loaded = genlab.load(tmp_path / "ld", ema=False)
    torch.testing.assert_close(loaded.sample(5, generator=torch.Generator().manual_seed(0)), samples)


def test_config_errors_say_what_to_pass(digits, vae_run, tmp_path):
    with pytest.raises(ConfigError, match="autoencoder is empty.*--set autoencoder=runs/vae-digits"):
        genlab.create("latent-diffusion", data=digits)
    with pytest.raises(ConfigError, match="no run directory there.*--set autoencoder="):
        genlab.create("latent-diffusion", data=digits, autoencoder=str(tmp_path / "missing"))
    with pytest.raises(ConfigError, match="not a genlab run"):
        genlab.create("latent-diffusion", data=digits, autoencoder=str(tmp_path))
    with pytest.raises(ConfigError, match=r"shape \(1, 8, 8\).*has shape \(2,\).*--set autoencoder=runs/vae-"):
        LatentDiffusionModel(LatentDiffusionConfig(autoencoder=str(vae_run)), VECTOR)
    with pytest.raises(ConfigError, match="no encode"):
        LatentDiffusionModel(LatentDiffusionConfig(), VECTOR, autoencoder=nn.Linear(2, 2))
    with pytest.raises(ConfigError, match="latent_scale"):
        LatentDiffusionConfig(latent_scale="large")
    with pytest.raises(ConfigError, match="latent_scale"):
        LatentDiffusionConfig(latent_scale=-1.0)
    with pytest.raises(NotImplementedError, match="no likelihood bound"):
        LatentDiffusionModel(LatentDiffusionConfig(hidden=(8,)), VECTOR, autoencoder=IdentityAutoencoder(VECTOR)).nll_bound(torch.zeros(1, 2))
