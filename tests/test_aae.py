"""The adversarial autoencoder and WAE-GAN against the mathematics of their game: the latent
discriminator's losses are the GAN losses with prior draws as the real side, its optimum is the
log density ratio log p(z) / q(z), one training step equals the papers' algorithms written out by
hand (Makhzani et al. 2015, sec. 2; Tolstikhin et al. 2018, Algorithm 1), and a short training run
carries the codes onto the prior."""

import contextlib
import copy
import math

import pytest
import torch
import torch.nn.functional as F
from torch import distributions as D

import genlab
from genlab.data import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.metrics.kernels import inverse_multiquadratic_kernel, unbiased_mmd2
from genlab.models.latent import AAEConfig, AdversarialAutoencoder, LatentAdversary, WAEConfig, WassersteinAutoencoder

pytestmark = pytest.mark.usefixtures("one_thread")


def test_latent_adversary_losses_are_the_non_saturating_gan_losses():
    torch.manual_seed(0)
    adversary = LatentAdversary(2, hidden=(16,), loss="non-saturating").double()
    prior = torch.randn(64, 2, dtype=torch.float64)
    codes = (0.5 * torch.randn(64, 2, dtype=torch.float64) + 1.0).requires_grad_(True)
    d_loss, terms = adversary.discriminator_loss(prior, codes)
    # -E log sigma(D(z_prior)) - E log(1 - sigma(D(f(x)))): prior draws are the real side
    expected = -F.logsigmoid(adversary(prior)).mean() - torch.log1p(-torch.sigmoid(adversary(codes))).mean()
    torch.testing.assert_close(d_loss, expected)
    d_loss.backward()
    assert codes.grad is None  # D's loss does not reach the encoder
    torch.testing.assert_close(terms["d_acc_prior"], (adversary(prior) > 0).double().mean().float(), check_dtype=False)
    torch.testing.assert_close(terms["d_acc_codes"], (adversary(codes) <= 0).double().mean().float(), check_dtype=False)
    # the encoder's (generator's) side: -E log sigma(D(f(x))), differentiable in the codes
    g_loss = adversary.encoder_loss(codes)
    torch.testing.assert_close(g_loss, -F.logsigmoid(adversary(codes)).mean())
    g_loss.backward()
    assert codes.grad is not None and codes.grad.abs().sum() > 0


def test_trained_discriminator_is_the_log_density_ratio_of_prior_to_codes():
    """At the optimum of the GAN loss, sigma(D(z)) = p(z) / (p(z) + q(z)), i.e. D(z) = log p(z) - log q(z)
    (Goodfellow et al. 2014, Prop. 1), p the prior and q the codes' distribution."""
    torch.manual_seed(0)
    adversary = LatentAdversary(1, hidden=(32, 32), loss="non-saturating")
    p, q = D.Normal(0.0, 1.0), D.Normal(0.5, 0.8)
    optimizer = torch.optim.Adam(adversary.parameters(), lr=3e-3)
    for _ in range(1500):
        loss, _ = adversary.discriminator_loss(p.sample((512, 1)), q.sample((512, 1)))
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    z = torch.linspace(-1.5, 2.5, 41)[:, None]
    with torch.no_grad():
        learned = adversary(z)
    truth = (p.log_prob(z) - q.log_prob(z)).squeeze(1)
    assert float((learned - truth).abs().max()) < 0.2, (learned, truth)


class _Context:
    """The engine's StepContext, reduced to what a training step uses."""

    def __init__(self, optimizers):
        self.optimizers, self.step = optimizers, 0

    def autocast(self):
        return contextlib.nullcontext()

    def backward(self, loss):
        loss.backward()

    def optimizer_step(self, name):
        self.optimizers[name].step()
        self.optimizers[name].zero_grad(set_to_none=True)


def _model(name, **fields):
    torch.manual_seed(0)
    spec = DataSpec("vec", kind="vector", shape=(4,), value_range=(-math.inf, math.inf))
    common = dict(latent_dim=2, hidden=(8,), discriminator_hidden=(8,), prior_std=1.5, adversarial_weight=3.0)
    if name == "aae":
        return AdversarialAutoencoder(AAEConfig(**common, **fields), spec).double()
    return WassersteinAutoencoder(WAEConfig(**common, penalty="gan", **fields), spec).double()


@pytest.mark.parametrize("name, fields, update", [
    ("aae", {}, "separate"),
    ("aae", {"adversarial_update": "joint"}, "joint"),
    ("wae", {}, "joint"),
])
def test_training_steps_are_the_papers_algorithms(name, fields, update):
    """Two engine steps against the algorithms written out: D on the non-saturating loss with prior
    draws as real samples; then (joint, WAE-GAN's Algorithm 1) encoder and decoder on
    |x - g(f(x))|^2 - lambda log sigma(D(f(x))), or (separate, the AAE's phases) encoder and decoder
    on the reconstruction, then the encoder alone on -lambda log sigma(D(f(x)))."""
    model = _model(name, **fields)
    assert model.config.adversarial_update == update and model.has_custom_step
    reference = copy.deepcopy(model)
    lr, lam, sigma_z = 1e-2, 3.0, 1.5
    x = torch.randn(16, 4, dtype=torch.float64)

    context = _Context(model.configure_optimizers(lr))
    assert sorted(context.optimizers) == sorted(["autoencoder", "discriminator"] + (["encoder"] if update == "separate" else []))
    returned = []
    for step in range(2):
        torch.manual_seed(10 + step)
        returned.append(model.training_step(Batch(x), context))

    f, g, d = reference.encoder, reference.decoder, reference.latent_adversary.discriminator
    adam = lambda params: torch.optim.Adam(params, lr=lr, betas=(0.5, 0.999))  # noqa: E731
    opt_d, opt_ae, opt_f = adam(d.parameters()), adam([*f.parameters(), *g.parameters()]), adam(f.parameters())
    for step in range(2):
        torch.manual_seed(10 + step)
        z_prior = sigma_z * torch.randn(16, 2, dtype=torch.float64)
        d_loss = F.softplus(-d(z_prior)).mean() + F.softplus(d(f(x).detach())).mean()
        opt_d.zero_grad()
        d_loss.backward()
        opt_d.step()
        torch.testing.assert_close(returned[step].terms["d_loss"], d_loss.detach().float(), check_dtype=False)
        if update == "joint":
            z = f(x)
            loss = (x - g(z)).pow(2).sum(1).mean() + lam * F.softplus(-d(z)).mean()
            opt_ae.zero_grad()
            loss.backward()
            opt_ae.step()
        else:
            recon = (x - g(f(x))).pow(2).sum(1).mean()
            opt_ae.zero_grad()
            recon.backward()
            opt_ae.step()
            penalty = lam * F.softplus(-d(f(x))).mean()
            opt_f.zero_grad()
            penalty.backward()
            opt_f.step()
    expected = dict(reference.named_parameters())
    for key, value in model.named_parameters():
        torch.testing.assert_close(value, expected[key], rtol=1e-10, atol=1e-12, msg=key)
    assert all(p.grad is None for p in model.latent_adversary.parameters())  # no gradient left in D


def test_adversarial_training_carries_the_codes_onto_the_prior():
    """A short run on digits in 2-D codes: the held-out codes end as N(0, I) to within the sampling
    noise of the MMD (MMD^2 to prior draws within twice the largest of 20 between prior samples of their
    size), with mean 0 and unit variance; the encoder starts them near 0 with a spread of ~0.1. (After
    300 to 600 steps they are not there yet.)"""
    data = genlab.data.load("digits")
    x = data.split("test").tensors()[0]
    torch.manual_seed(0)
    model = genlab.create("aae", data=data, latent_dim=2, channels=(8,), hidden=(32,), discriminator_hidden=(32, 32))
    kernel = inverse_multiquadratic_kernel([4.0 * s for s in (0.2, 1.0, 5.0)])
    g = torch.Generator().manual_seed(0)
    reference = torch.randn(2000, 2, generator=g)
    null = max(float(unbiased_mmd2(torch.randn(len(x), 2, generator=g), reference, kernel)) for _ in range(20))
    start = float(unbiased_mmd2(model.encode_dataset(x), reference, kernel))
    genlab.fit(model, data, max_steps=1000, batch_size=64, lr=2e-3, progress=False, ema_decay=0.0, log_every=500)
    z = model.encode_dataset(x)
    end = float(unbiased_mmd2(z, reference, kernel))
    assert start > 50 * null and end < 2 * null, (start, end, null)
    assert float(z.mean(0).abs().max()) < 0.2 and float((z.std(0) - 1.0).abs().max()) < 0.15, (z.mean(0), z.std(0))


def test_wae_penalty_choice_and_config_errors():
    spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    mmd = WassersteinAutoencoder(WAEConfig(latent_dim=2, hidden=(16,)), spec)
    assert not mmd.has_custom_step and mmd.latent_adversary is None and list(mmd.configure_optimizers(1e-3)) == ["model"]
    gan = genlab.create("wae", data=spec, latent_dim=2, hidden=(16,), penalty="gan", discriminator_hidden=(16,))
    assert gan.has_custom_step and isinstance(gan.latent_adversary, LatentAdversary)
    loss = gan.loss(Batch(torch.rand(5, 1, 8, 8)))  # training mode: the autoencoder's objective
    torch.testing.assert_close(loss.total, loss.terms["recon"] + gan.config.adversarial_weight * loss.terms["adversarial"])
    assert "d_loss" in gan.eval().loss(Batch(torch.rand(5, 1, 8, 8))).terms  # validation also logs D's side
    with pytest.raises(ConfigError, match=r"penalty='kl'.*'mmd', 'gan'"):
        WAEConfig(penalty="kl")
    with pytest.raises(ConfigError, match=r"adversarial_loss='wasserstein'.*'non-saturating'"):
        AAEConfig(adversarial_loss="wasserstein")
    with pytest.raises(ConfigError, match="discriminator_hidden"):
        AAEConfig(discriminator_hidden=())
    with pytest.raises(ConfigError, match=r"adversarial_update='both'"):
        AAEConfig(adversarial_update="both")
    assert AAEConfig().adversarial_update == "separate" and WAEConfig().adversarial_update == "joint"


def test_wae_gan_fits_saves_and_loads(tmp_path):
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    model = genlab.create("wae", data=data, penalty="gan", latent_dim=3, hidden=(16,), channels=(8,), discriminator_hidden=(16,))
    run = genlab.fit(model, data, max_steps=3, batch_size=16, out=tmp_path / "run", progress=False, sample_every=0, num_samples=4)
    row = next(r for r in run.history if r["split"] == "train")
    assert {"recon", "adversarial", "d_loss", "d_acc_prior", "d_acc_codes"} <= set(row)
    loaded = genlab.load(tmp_path / "run", ema=False)
    assert loaded.has_custom_step and loaded.config.penalty == "gan"
    for key, value in model.latent_adversary.state_dict().items():
        torch.testing.assert_close(loaded.latent_adversary.state_dict()[key], value)
    torch.testing.assert_close(loaded.sample(4, generator=torch.Generator().manual_seed(0)),
                               model.eval().sample(4, generator=torch.Generator().manual_seed(0)))


def test_the_latent_adversary_takes_every_gan_loss_that_needs_no_regulariser():
    from genlab.models.gan.losses import LOSS_REGISTRY, build_loss
    from genlab.models.latent.autoencoder import adversarial_losses

    expected = {name for name in LOSS_REGISTRY if not build_loss(name).regularizers()}
    assert set(adversarial_losses()) == expected and "wasserstein-gp" not in expected and "f-gan" in expected
    with pytest.raises(ConfigError, match="adversarial_loss='wasserstein'"):
        genlab.create("aae", data=genlab.data.load("8gaussians"), adversarial_loss="wasserstein")
