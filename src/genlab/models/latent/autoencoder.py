"""Deterministic autoencoders: the plain autoencoder, the denoising autoencoder (Vincent et al. 2008), the
Wasserstein autoencoder with the MMD or the GAN penalty (Tolstikhin et al. 2018) and the adversarial
autoencoder (Makhzani et al. 2015).

Notation: x data (B, *spec.shape) in spec.value_range, z = f(x) the code (B, D) of a deterministic
encoder f, g(z) the decoder's output (B, *spec.shape): Bernoulli logits or a mean in data units.

    ae:  min E_x[c(x, g(f(x)))]
    dae: min E_x E_{x~ ~ C(x~|x)}[c(x, g(f(x~)))],  C a corruption: additive Gaussian noise, masking
         noise (a random share of pixels set to 0) or dropout noise (the same, survivors scaled by 1/(1-p))
    wae: min E_x[c(x, g(f(x)))] + lambda MMD^2(q(z), p(z)),  q(z) = E_x[delta(z - f(x))] the aggregate
         posterior, p(z) = N(0, sigma_z^2 I), MMD with the inverse multiquadratic kernel (their Algorithm 2);
         or, penalty="gan", lambda times the encoder's adversarial loss against a discriminator D(z)
         that tells z ~ p(z) from z ~ q(z) (WAE-GAN, their Algorithm 1)
    aae: the same adversarial game on the codes, trained in Makhzani et al.'s phases: D, then the
         reconstruction cost (encoder and decoder), then the adversarial loss (encoder alone)

c is the Bernoulli cross-entropy (images with a finite value range; x mapped to [0, 1]) or the squared
error |x - g(f(x))|^2 summed over dimensions.

An autoencoder is not a generative model until something gives its codes a density. AE and DAE fit
one after training (`on_fit_end`): a full-covariance Gaussian, or a K-component Gaussian mixture by EM
(`genlab.models.latent.em`), to the codes of the training split; `sample` draws z from it and decodes.
The WAE and the AAE sample their prior, which the penalty matched to q(z) during training (or, as an
option, a mixture fitted the same way); the discriminator they share is `LatentAdversary`, and the
two-player step with its named optimizers is `PriorMatchingAutoencoder.training_step`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from genlab.data.dataset import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.nn.kernels import inverse_multiquadratic_kernel, unbiased_mmd2
from genlab.models.base import GenerativeModel, Loss
from genlab.models.gan.losses import LOSS_REGISTRY, build_loss
from genlab.models.gan.nets import Discriminator, DiscriminatorHead, MLPDiscriminatorTrunk
from genlab.models.latent.em import GaussianMixture
from genlab.nn.builders import NETS, ConvNetConfig, build_decoder, build_encoder
from genlab.nn.distributions import at_least_float32, bernoulli_log_likelihood, decoder_mean, sample_standard_normal
from genlab.nn.frozen import frozen
from genlab.registry import register

__all__ = [
    "AAEConfig",
    "AEConfig",
    "AdversarialAutoencoder",
    "Autoencoder",
    "DAEConfig",
    "DenoisingAutoencoder",
    "LatentAdversary",
    "PriorMatchingAutoencoder",
    "PriorMatchingConfig",
    "WAEConfig",
    "WassersteinAutoencoder",
]

RECONSTRUCTIONS = ("auto", "bernoulli", "mse")
LATENT_DENSITIES = ("gmm", "gaussian")
CORRUPTIONS = ("gaussian", "masking", "dropout")
# codes of the training split are encoded this many at a time when the latent density is fitted
_ENCODE_CHUNK = 1024


@dataclasses.dataclass
class AEConfig(ConvNetConfig):
    """Configuration of the autoencoder.

    latent_dim: size D of the code z = f(x).
    reconstruction: the cost c(x, g(z)): "bernoulli" (cross-entropy of logits against x mapped from
        value_range to [0, 1]), "mse" (squared error summed over dimensions, in data units), or "auto":
        bernoulli for images with a finite value range, mse otherwise.
    net: "auto" (conv for images of side >= 16, MLP otherwise), "mlp" or "conv".
    hidden: MLP widths of the encoder; the decoder uses them reversed.
    latent_density: the density fitted to the training codes after training, which `sample` draws
        from: "gmm", a mixture of latent_components full-covariance Gaussians fitted by EM, or
        "gaussian", one full-covariance Gaussian (the mixture with K = 1).
    latent_components: K of the "gmm" latent density.
    latent_reg_covar: the covariance floor of the latent density's EM, as a share of the codes'
        mean variance (the codes' scale is whatever training made it).
    """

    latent_dim: int = 8
    reconstruction: str = "auto"
    net: str = "auto"
    hidden: tuple[int, ...] = (256, 256)
    latent_density: str = "gmm"
    latent_components: int = 10
    latent_reg_covar: float = 1e-3

    def validate(self) -> None:
        super().validate()
        self._positive("latent_dim", "latent_components")
        self._positive("latent_reg_covar", allow_zero=True)
        self._choice("reconstruction", RECONSTRUCTIONS)
        self._choice("net", NETS)
        self._choice("latent_density", self.latent_densities())
        widths = tuple(self.hidden)
        if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
            raise ConfigError(f"{type(self).__name__}.hidden={widths!r} must be one or more positive integer widths, e.g. (256, 256)")
        self.hidden = widths

    @classmethod
    def latent_densities(cls) -> tuple[str, ...]:
        return LATENT_DENSITIES


class Reconstructs:
    """What the latent tools ask of a deterministic encoder-decoder model with `encode(x)`,
    `decode(z)` (decoder parameters), a `reconstruction` kind and a `spec`: the decoder's mean, the
    code and the reconstruction, in the data's space."""

    def decoder_mean(self, params: Tensor) -> Tensor:
        """sigmoid(logits) mapped to value_range, or the mean clamped to it. params (B, *shape) -> (B, *shape)."""
        return decoder_mean(params, self.reconstruction, self.spec.value_range)

    @torch.no_grad()
    def encode_mean(self, x: Tensor) -> Tensor:
        """The code f(x) (the name the latent tools use for every encoder model)."""
        return self.encode(x)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """g(f(x)) in the data's space, (B, *shape)."""
        return self.decoder_mean(self.decode(self.encode(x)))


@register("ae", AEConfig, family="latent", summary="Autoencoder; generates by a Gaussian mixture fitted to its codes")
class Autoencoder(Reconstructs, GenerativeModel):
    """Deterministic autoencoder z = f(x), x^ = g(z), trained on the reconstruction cost alone; it
    generates by decoding draws from a density fitted to the training codes after training.

    Hooks a variant overrides: `corrupt` (the encoder's input in training), `regularizer` (a penalty
    on the batch's codes), `latent_sample` (where generated codes come from).
    The fitted latent density is `self.latent_density`, a `GaussianMixture` whose float64 buffers
    travel in the state_dict, so `genlab.load` restores it; `latent_density_fitted` says whether
    `on_fit_end` has run (before that, sampling uses N(0, I)).

    >>> import torch
    >>> from genlab.data import Batch, DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    >>> model = Autoencoder(AEConfig(latent_dim=2, hidden=(16,)), spec)
    >>> sorted(model.loss(Batch(torch.rand(5, 1, 8, 8))).terms)
    ['recon']
    >>> model.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
    """

    config: AEConfig
    # max_steps: longer runs brought no clear gain. ema_decay 0: the code space drifts along
    # directions the cost does not see (an invertible map applied by the encoder and undone by the
    # decoder), so separately averaged encoder and decoder weights no longer pair up (README, "Why
    # these defaults")
    train_defaults = {"max_steps": 3000, "lr": 2e-3, "lr_schedule": "cosine", "ema_decay": 0.0}

    def __init__(self, config: AEConfig, spec: DataSpec) -> None:
        config = config.sized(spec)
        super().__init__(config, spec)
        low, high = spec.value_range
        finite = math.isfinite(low) and math.isfinite(high) and high > low
        reconstruction = config.reconstruction
        if reconstruction == "auto":
            reconstruction = "bernoulli" if spec.kind == "image" and finite else "mse"
        if reconstruction == "bernoulli" and not finite:
            raise ConfigError(
                f"reconstruction='bernoulli' maps the data's value_range to [0, 1], but data {spec.name!r} has "
                f"value_range {spec.value_range}; use reconstruction='mse'"
            )
        self.reconstruction = reconstruction
        d = config.latent_dim
        self.encoder = build_encoder(spec, d, net=config.net, hidden=config.hidden, **config.conv_options())
        self.decoder = build_decoder(d, spec, net=config.net, hidden=config.hidden[::-1], **config.decoder_conv_options())
        # "gaussian" is the mixture with one component (and so is the unused density of a WAE's "prior")
        components = config.latent_components if config.latent_density == "gmm" else 1
        self.latent_density = GaussianMixture(components, d)
        self.register_buffer("latent_density_fitted", torch.zeros((), dtype=torch.uint8))

    # -- the networks -----------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """z = f(x): x (B, *shape) in value_range -> (B, D)."""
        return self.encoder(x)  # (B, *shape) -> (B, D)

    def decode(self, z: Tensor) -> Tensor:
        """g(z): Bernoulli logits or the mean in data units, z (B, D) -> (B, *shape)."""
        return self.decoder(z).reshape(z.shape[0], *self.spec.shape)

    # -- the objective ----------------------------------------------------------------------------
    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The encoder's input in training; the identity for the plain autoencoder."""
        return x

    def reconstruction_cost(self, x: Tensor, params: Tensor) -> Tensor:
        """c(x, g(z)) per sample, (B,): Bernoulli cross-entropy -sum_i [u_i log s_i + (1-u_i) log(1-s_i)]
        with u = x mapped to [0, 1] and s = sigmoid(logits), or the squared error sum_i (x_i - g_i)^2."""
        if self.reconstruction == "bernoulli":
            low, high = self.spec.value_range
            return -bernoulli_log_likelihood(((x - low) / (high - low)).clamp(0.0, 1.0), params)
        return (x - params).pow(2).flatten(1).sum(1)

    def regularizer(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """A penalty on the batch's codes z (B, D) added to the mean cost, and terms to log: none here."""
        return z.new_zeros(()), {}

    def loss(self, batch: Batch) -> Loss:
        """total = mean_b c(x_b, g(f(C(x_b)))) + regularizer(z); C = `corrupt` in training only.
        terms: recon = the mean cost, plus the regularizer's terms."""
        x = batch.x
        z = self.encode(self.corrupt(x) if self.training else x)  # (B, D)
        cost = self.reconstruction_cost(x, self.decode(z)).mean()
        penalty, terms = self.regularizer(z)
        return Loss(cost + penalty, {"recon": cost.detach(), **terms})

    # -- the latent density and generation ------------------------------------------------------------
    @torch.no_grad()
    def encode_dataset(self, x: Tensor) -> Tensor:
        """f(x) of many samples, encoded in chunks in eval mode: (N, *shape) -> (N, D)."""
        was_training = self.training
        self.eval()
        try:
            return torch.cat([self.encode(x[i : i + _ENCODE_CHUNK].to(self.device)) for i in range(0, len(x), _ENCODE_CHUNK)])
        finally:
            self.train(was_training)

    @torch.no_grad()
    def fit_latent_density(self, x: Tensor, generator: torch.Generator | None = None) -> list[float]:
        """Fit `latent_density` by EM (k-means init from `generator`) to the codes f(x) of x (N, *shape).
        Returns EM's mean log-likelihood per iteration."""
        z = self.encode_dataset(x).double()
        if z.shape[0] < self.latent_density.num_components:
            raise ConfigError(
                f"the latent density has {self.latent_density.num_components} components but only {z.shape[0]} "
                "codes to fit; set latent_components lower"
            )
        reg = self.config.latent_reg_covar * float(z.var(0).mean())
        history = self.latent_density.fit(z, reg_covar=reg, max_iter=200, tol=1e-6, generator=generator)
        self.latent_density_fitted.fill_(1)
        return history

    def on_fit_end(self, train, generator: torch.Generator) -> None:
        """After training: fit the latent density to the training split's codes."""
        x, _ = train.tensors()
        self.fit_latent_density(x, generator)

    def latent_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ the fitted latent density (N(0, I) before `on_fit_end`), (n, D) in the decoder's dtype."""
        return self.latent_density.sample(n, generator).to(self.device, self._dtype)

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z ~ `latent_sample`, x = the decoded mean g(z) in the data's space, (n, *shape)."""
        if cond is not None:
            raise ConfigError(f"{self.name or 'the autoencoder'} is unconditional; pass cond=None")
        return self.decoder_mean(self.decode(self.latent_sample(n, generator)))

    def likelihood_kind(self) -> str:
        return "none"

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype


# ---------------------------------------------------------------------------------------------
# Denoising autoencoder
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class DAEConfig(AEConfig):
    """Configuration of the denoising autoencoder: AEConfig's fields, plus

    corruption: C(x~|x) applied to the encoder's input in training (the target stays x):
        "gaussian": x~ = x + noise_level * (high - low) * eps, eps ~ N(0, I) (in data units of unit
            range: noise_level * 1 for data in [0, 1]; data with an infinite range use noise_level);
        "masking": each dimension set to 0 with probability noise_level (Vincent et al. 2008's
            masking noise);
        "dropout": as masking, and the survivors scaled by 1 / (1 - noise_level) (inverted dropout
            on the input, so E[x~] = x).
    noise_level: the noise's standard deviation (as a share of the value range), or the share of
        dimensions dropped.
    """

    corruption: str = "gaussian"
    noise_level: float = 0.25

    def validate(self) -> None:
        super().validate()
        self._choice("corruption", CORRUPTIONS)
        if self.corruption == "gaussian":
            self._positive("noise_level")
        else:
            if not 0.0 < self.noise_level < 1.0:
                raise ConfigError(f"DAEConfig.noise_level={self.noise_level!r} is the share of dimensions {self.corruption!r} drops; it must lie in (0, 1)")


@register("dae", DAEConfig, family="latent", summary="Denoising autoencoder (Gaussian, masking or dropout corruption)")
class DenoisingAutoencoder(Autoencoder):
    """Denoising autoencoder (Vincent et al. 2008): the autoencoder trained to reconstruct x from a
    corrupted copy x~ ~ C(x~|x) (see DAEConfig.corruption); generation as the autoencoder's.

    >>> import torch
    >>> from genlab.data import DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    >>> model = DenoisingAutoencoder(DAEConfig(latent_dim=2, hidden=(16,), corruption="masking", noise_level=0.5), spec)
    >>> x = torch.ones(1, 1, 8, 8)
    >>> float(model.corrupt(x, torch.Generator().manual_seed(0)).mean())  # about half the pixels kept
    0.453125
    """

    config: DAEConfig

    def corrupt(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x~ ~ C(x~|x), x (B, *shape) -> (B, *shape), drawn from `generator` (the global RNG if None)."""
        device = x.device if generator is None else generator.device
        p = self.config.noise_level
        if self.config.corruption == "gaussian":
            low, high = self.spec.value_range
            scale = (high - low) if math.isfinite(high - low) else 1.0
            eps = torch.randn(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device)
            return x + p * scale * eps
        keep = torch.rand(x.shape, generator=generator, device=device, dtype=x.dtype).to(x.device) >= p
        x_kept = torch.where(keep, x, torch.zeros_like(x))
        return x_kept / (1.0 - p) if self.config.corruption == "dropout" else x_kept


# ---------------------------------------------------------------------------------------------
# Autoencoders whose codes are matched to a prior: WAE (MMD or GAN penalty) and AAE
# ---------------------------------------------------------------------------------------------
PENALTIES = ("mmd", "gan")


def adversarial_losses() -> tuple[str, ...]:
    """The GAN losses (`genlab.models.gan.losses`) whose discriminator needs no regulariser: the
    latent adversary applies none (the Wasserstein losses need clipping or a gradient penalty)."""
    return tuple(name for name in LOSS_REGISTRY if not build_loss(name).regularizers())
ADVERSARIAL_UPDATES = ("joint", "separate")


class LatentAdversary(nn.Module):
    """The adversary of the adversarial autoencoder and of WAE-GAN, in the latent space: a
    discriminator D(z) (B, D) -> (B,) (the GAN's MLP discriminator, `genlab.models.gan.nets`) and an
    adversarial loss of `genlab.models.gan.losses`, with

        prior draws z ~ p(z) as D's "real" samples and the codes z = f(x), x ~ data, draws from the
            aggregate posterior q(z) = E_x[q(z|x)], as its "fake" ones;
        D minimises   loss.discriminator_loss(D(z_prior), D(f(x)))
        f minimises   loss.generator_loss(D(f(x)))

    so the encoder plays the generator and drives q(z) toward p(z) (for the minimax loss at the
    optimal D, the encoder's objective is 2 JSD(p(z), q(z)) - log 4; Goodfellow et al. 2014, Thm. 1).

    >>> import torch
    >>> adversary = LatentAdversary(2, hidden=(16,), loss="non-saturating")
    >>> adversary(torch.zeros(5, 2)).shape
    torch.Size([5])
    """

    def __init__(self, latent_dim: int, *, hidden: tuple[int, ...], loss: str = "non-saturating") -> None:
        super().__init__()
        trunk = MLPDiscriminatorTrunk((latent_dim,), hidden=hidden)
        self.discriminator = Discriminator(trunk, DiscriminatorHead(trunk.out_features, num_classes=None))
        self.adversarial_loss = build_loss(loss)

    def forward(self, z: Tensor) -> Tensor:
        """D(z): codes (B, D) -> raw scores (B,)."""
        return self.discriminator(z)

    def discriminator_loss(self, prior_z: Tensor, codes: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """D's loss on prior draws (real) and codes (fake, detached: no gradient into the encoder),
        both (B, D); and terms to log: d_loss, and D's accuracy on each side (d_acc_prior, d_acc_codes)."""
        real_out, fake_out = at_least_float32(self(prior_z)), at_least_float32(self(codes.detach()))
        loss = self.adversarial_loss.discriminator_loss(real_out, fake_out)
        terms = {"d_loss": loss.detach()}
        says_real, says_fake = self.adversarial_loss.real_decision(real_out.detach()), self.adversarial_loss.real_decision(fake_out.detach())
        if says_real is not None:
            terms["d_acc_prior"] = says_real.float().mean()
            terms["d_acc_codes"] = 1.0 - says_fake.float().mean()
        return loss, terms

    def encoder_loss(self, codes: Tensor) -> Tensor:
        """The generator's side, on codes (B, D) (differentiable in them): loss.generator_loss(D(codes))."""
        return self.adversarial_loss.generator_loss(at_least_float32(self(codes)))


@dataclasses.dataclass
class PriorMatchingConfig(AEConfig):
    """AEConfig's fields, plus those of the autoencoders that match their codes to a prior
    p(z) = N(0, sigma_z^2 I) in training (`wae`, `aae`):

    prior_std: sigma_z of the prior.
    latent_density: what `sample` draws codes from: "prior" (p(z), what training matched the codes
        to), or a density fitted to the training codes afterwards as the autoencoder's ("gmm",
        "gaussian").
    Used where the penalty is adversarial (`LatentAdversary`):
    adversarial_weight: lambda, the weight of the encoder's adversarial loss in the autoencoder's
        objective c(x, g(f(x))) + lambda loss.generator_loss(D(f(x))) ("joint" update).
    adversarial_loss: "non-saturating" (default), or another GAN loss whose discriminator needs no
        regulariser (`adversarial_losses()`: minimax, least-squares, hinge, f-gan).
    adversarial_update: "joint": one step of encoder and decoder on the weighted sum above (WAE-GAN,
        Tolstikhin et al. 2018, Algorithm 1, whose D objective is also weighted by lambda: a scale
        Adam undoes, so D's loss is unweighted here); "separate": Makhzani et al.'s two phases, a step of
        encoder and decoder on the reconstruction cost, then a step of the encoder alone on the
        adversarial loss with its own optimizer (lambda then scales that loss, which with Adam
        changes almost nothing).
    discriminator_hidden: the widths of D's MLP (LeakyReLU(0.2)).
    lr_discriminator: D's learning rate; None takes the training lr.
    betas: Adam's (beta1, beta2) for every optimizer of the adversarial training (Tolstikhin et al.
        and DCGAN: beta1 = 0.5).
    """

    latent_density: str = "prior"
    prior_std: float = 1.0
    adversarial_weight: float = 1.0
    adversarial_loss: str = "non-saturating"
    adversarial_update: str = "joint"
    discriminator_hidden: tuple[int, ...] = (256, 256)
    lr_discriminator: float | None = None
    betas: tuple[float, float] = (0.5, 0.999)

    def validate(self) -> None:
        super().validate()
        self._positive("prior_std")
        self._positive("adversarial_weight", allow_zero=True)
        self._choice("adversarial_loss", adversarial_losses())
        self._choice("adversarial_update", ADVERSARIAL_UPDATES)
        if self.lr_discriminator is not None:
            self._positive("lr_discriminator")
        widths = tuple(self.discriminator_hidden)
        if not widths or any(not isinstance(w, int) or w <= 0 for w in widths):
            raise ConfigError(f"{type(self).__name__}.discriminator_hidden={widths!r} must be one or more positive integer widths, e.g. (256, 256)")
        self.discriminator_hidden = widths
        self.betas = tuple(float(b) for b in self.betas)
        if len(self.betas) != 2 or not all(0.0 <= b < 1.0 for b in self.betas):
            raise ConfigError(f"{type(self).__name__}.betas={self.betas!r} must be two numbers in [0, 1), e.g. (0.5, 0.999)")

    @classmethod
    def latent_densities(cls) -> tuple[str, ...]:
        return ("prior",) + LATENT_DENSITIES


class PriorMatchingAutoencoder(Autoencoder):
    """Base of the autoencoders that match the aggregate posterior q(z) of their codes to a prior
    p(z) = N(0, sigma_z^2 I) in training and generate by decoding z ~ p(z) (WAE, AAE).

    Where `uses_adversary()` holds it owns a `LatentAdversary` and trains by its own step with
    named optimizers (`has_custom_step`, as the GAN model): per engine step,

    1. discriminator: codes f(x) of the batch (no gradient into f) against as many prior draws,
       one step of D's optimizer ("discriminator");
    2. with D frozen, "joint": one step of encoder and decoder ("autoencoder") on
       c(x, g(f(x))) + lambda loss.generator_loss(D(f(x))); or "separate": a step of "autoencoder"
       on the cost c alone, then a step of the encoder alone ("encoder") on the adversarial loss.
    """

    config: PriorMatchingConfig

    def __init__(self, config: PriorMatchingConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.latent_adversary: LatentAdversary | None = None
        if self.uses_adversary():
            self.latent_adversary = LatentAdversary(
                config.latent_dim, hidden=config.discriminator_hidden, loss=config.adversarial_loss
            )
        # an instance attribute, read by the engine: only the adversarial variants have two players
        self.has_custom_step = self.latent_adversary is not None

    def uses_adversary(self) -> bool:
        """Whether the penalty is adversarial (a `LatentAdversary` and the two-player step)."""
        return True

    # -- the prior ----------------------------------------------------------------------------
    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z) = N(0, sigma_z^2 I), (n, D), on the model's device in the decoder's dtype."""
        eps = sample_standard_normal((n, self.config.latent_dim), generator=generator, device=self.device, dtype=self._dtype)
        return self.config.prior_std * eps

    def on_fit_end(self, train, generator: torch.Generator) -> None:
        if self.config.latent_density != "prior":
            super().on_fit_end(train, generator)

    def latent_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        if self.config.latent_density == "prior":
            return self.prior_sample(n, generator)
        return super().latent_sample(n, generator)

    # -- the adversarial penalty and its training step -------------------------------------------
    def adversarial_penalty(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """lambda loss.generator_loss(D(z)) on the batch's codes z (B, D); logs `adversarial`, the
        unweighted generator loss."""
        g_loss = self.latent_adversary.encoder_loss(z)
        return self.config.adversarial_weight * g_loss, {"adversarial": g_loss.detach()}

    def regularizer(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        return self.adversarial_penalty(z)

    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """With the adversary: Adam(betas) for "autoencoder" (encoder and decoder), "discriminator"
        (lr_discriminator or lr) and, for the "separate" update, "encoder"; else one AdamW."""
        if self.latent_adversary is None:
            return super().configure_optimizers(lr, weight_decay)
        cfg = self.config

        def adam(params, rate):
            return torch.optim.Adam(params, lr=rate, betas=cfg.betas, weight_decay=weight_decay)

        optimizers = {
            "autoencoder": adam([*self.encoder.parameters(), *self.decoder.parameters()], lr),
            "discriminator": adam(self.latent_adversary.parameters(), cfg.lr_discriminator or lr),
        }
        if cfg.adversarial_update == "separate":
            optimizers["encoder"] = adam(self.encoder.parameters(), lr)
        return optimizers

    def loss(self, batch: Batch) -> Loss:
        """The autoencoder's objective c + regularizer (see `Autoencoder.loss`); with the adversary,
        in eval mode (the engine's validation), also D's loss and accuracies on the batch, logged only."""
        loss = super().loss(batch)
        if self.latent_adversary is None or self.training:
            return loss
        with torch.no_grad():
            codes = self.encode(batch.x)
            _, d_terms = self.latent_adversary.discriminator_loss(self.prior_sample(codes.shape[0]).to(codes.dtype), codes)
        return Loss(loss.total, {**loss.terms, **d_terms})

    def training_step(self, batch: Batch, ctx) -> Loss:
        """One discriminator step, then the autoencoder's (see the class docstring). Returns
        Loss(total = c + lambda generator loss, terms = recon, adversarial and D's terms)."""
        cfg, adversary = self.config, self.latent_adversary
        x = batch.x

        # Discriminator step: prior draws are "real", the codes of the batch "fake".
        with ctx.autocast():
            with torch.no_grad():
                codes = self.encode(self.corrupt(x))  # (B, *shape) -> (B, D)
            d_loss, d_terms = adversary.discriminator_loss(self.prior_sample(x.shape[0]).to(codes.dtype), codes)
        ctx.backward(d_loss)
        ctx.optimizer_step("discriminator")

        # Autoencoder step(s), with D frozen (no gradients accumulate in its parameters).
        with frozen(adversary):
            if cfg.adversarial_update == "joint":
                with ctx.autocast():
                    loss = self.loss(batch)  # c + lambda generator loss
                ctx.backward(loss.total)
                ctx.optimizer_step("autoencoder")
                terms = loss.terms
            else:
                # Reconstruction phase, then regularisation phase (Makhzani et al. 2015, sec. 2).
                with ctx.autocast():
                    cost = self.reconstruction_cost(x, self.decode(self.encode(self.corrupt(x)))).mean()
                ctx.backward(cost)
                ctx.optimizer_step("autoencoder")
                with ctx.autocast():
                    penalty, terms = self.adversarial_penalty(self.encode(self.corrupt(x)))
                ctx.backward(penalty)
                ctx.optimizer_step("encoder")
                loss = Loss(cost.detach() + penalty.detach(), {"recon": cost.detach(), **terms})
                terms = loss.terms
        return Loss(loss.total.detach(), {**terms, **d_terms})


@dataclasses.dataclass
class WAEConfig(PriorMatchingConfig):
    """Configuration of the WAE: PriorMatchingConfig's fields, plus

    penalty: the divergence between q(z) and p(z) that the objective penalises: "mmd" (WAE-MMD, the
        inverse multiquadratic MMD^2, weighted by mmd_weight) or "gan" (WAE-GAN: a latent
        discriminator and the adversarial loss, weighted by adversarial_weight; Tolstikhin et al.
        2018, Algorithm 1, which is adversarial_update="joint").
    mmd_weight: lambda of the MMD penalty, MMD^2(q(z), p(z)) (10 in Tolstikhin et al.'s MNIST runs,
        with the squared error; the default is larger because the cross-entropy cost here is an
        order of magnitude larger than the squared error, and the sample quality changes little
        over a wide range of lambda).
    kernel_scales: the IMQ kernel is the sum over s of k_s(x, y) = s C / (s C + |x - y|^2) with
        C = 2 D sigma_z^2 (the paper's choice; summing over scales, as their experiments do, keeps
        a useful gradient whatever the distance between q(z) and p(z)).
    reconstruction: as the autoencoder's ("auto": the Bernoulli cross-entropy for images). The
        paper's c(x, y) = |x - y|^2 is "mse"; its decoder means are blurrier on binary-like images,
        whose pixels the Bernoulli likelihood models better than a Gaussian of fixed variance.
    """

    penalty: str = "mmd"
    mmd_weight: float = 100.0
    kernel_scales: tuple[float, ...] = (0.1, 0.2, 0.5, 1.0, 2.0, 5.0, 10.0)

    def validate(self) -> None:
        super().validate()
        self._choice("penalty", PENALTIES)
        self._positive("mmd_weight", allow_zero=True)
        scales = tuple(float(s) for s in self.kernel_scales)
        if not scales or any(not (s > 0) for s in scales):
            raise ConfigError(f"WAEConfig.kernel_scales={self.kernel_scales!r} must be one or more positive numbers, e.g. (0.5, 1, 2)")
        self.kernel_scales = scales


@register("wae", WAEConfig, family="latent", summary="Wasserstein autoencoder: MMD (inverse multiquadratic kernel) or GAN penalty in latent space")
class WassersteinAutoencoder(PriorMatchingAutoencoder):
    """Wasserstein autoencoder (Tolstikhin et al. 2018): a deterministic encoder and the objective
    E_x c(x, g(f(x))) + lambda D_Z(q(z), p(z)) with D_Z either

    - penalty="mmd" (WAE-MMD, their Algorithm 2): lambda MMD^2_u between the batch's codes
      and as many prior draws, with the unbiased estimator (`genlab.nn.kernels.unbiased_mmd2`)
      and the inverse multiquadratic kernel; one optimizer, the engine's step;
    - penalty="gan" (WAE-GAN, their Algorithm 1): a latent discriminator (`LatentAdversary`), D
      trained to tell prior draws from codes, the encoder and decoder on
      c + lambda loss.generator_loss(D(f(x))) (-lambda log D(f(x)) for the non-saturating loss).

    Samples decode z ~ p(z).

    >>> import torch
    >>> from genlab.data import Batch, DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    >>> model = WassersteinAutoencoder(WAEConfig(latent_dim=2, hidden=(16,)), spec)
    >>> sorted(model.loss(Batch(torch.rand(5, 1, 8, 8))).terms)
    ['mmd', 'recon']
    >>> gan = WassersteinAutoencoder(WAEConfig(latent_dim=2, hidden=(16,), penalty="gan", discriminator_hidden=(16,)), spec)
    >>> gan.has_custom_step, sorted(gan.configure_optimizers(1e-3))
    (True, ['autoencoder', 'discriminator'])
    """

    config: WAEConfig

    def __init__(self, config: WAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        c = 2.0 * config.latent_dim * config.prior_std**2
        self.kernel = inverse_multiquadratic_kernel([s * c for s in config.kernel_scales])

    def uses_adversary(self) -> bool:
        return self.config.penalty == "gan"

    def regularizer(self, z: Tensor) -> tuple[Tensor, dict[str, Tensor]]:
        """mmd: lambda MMD^2_u({z_b}, {z~_b}), z~_b ~ p(z) drawn with the global RNG, logging `mmd` =
        MMD^2_u; gan: the adversarial penalty (`adversarial_penalty`)."""
        if self.config.penalty == "gan":
            return self.adversarial_penalty(z)
        mmd2 = unbiased_mmd2(z, self.prior_sample(z.shape[0]).to(z.dtype), self.kernel)
        return self.config.mmd_weight * mmd2, {"mmd": mmd2.detach()}


@dataclasses.dataclass
class AAEConfig(PriorMatchingConfig):
    """Configuration of the adversarial autoencoder: PriorMatchingConfig's fields, with Makhzani et
    al.'s update, adversarial_update="separate" (reconstruction phase, then regularisation phase)."""

    adversarial_update: str = "separate"


@register("aae", AAEConfig, family="latent", summary="Adversarial autoencoder: a latent discriminator matches q(z) to N(0, I)")
class AdversarialAutoencoder(PriorMatchingAutoencoder):
    """Adversarial autoencoder (Makhzani et al. 2015): a deterministic encoder z = f(x) and decoder
    g, trained on the reconstruction cost, while a discriminator on the codes (`LatentAdversary`)
    learns to tell z ~ p(z) = N(0, sigma_z^2 I) from the codes f(x), and the encoder, as its
    generator, learns to fool it; so the aggregate posterior q(z) = E_x[delta(z - f(x))] is matched
    to p(z) and samples decode z ~ p(z). Each engine step is one training iteration of their sec. 2:
    the discriminator's step, the reconstruction phase, the encoder's regularisation phase
    (adversarial_update="separate"; "joint" makes it WAE-GAN's step).

    >>> import torch
    >>> from genlab.data import DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    >>> model = AdversarialAutoencoder(AAEConfig(latent_dim=2, hidden=(16,), discriminator_hidden=(16,)), spec)
    >>> sorted(model.configure_optimizers(1e-3))
    ['autoencoder', 'discriminator', 'encoder']
    >>> model.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
    """

    config: AAEConfig
