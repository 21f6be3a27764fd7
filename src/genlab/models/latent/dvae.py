"""Discrete VAE with the Gumbel-softmax relaxation (Jang, Gu & Poole 2017; the Concrete distribution of
Maddison, Mnih & Teh 2017), the latent idea of DALL-E's dVAE (Ramesh et al. 2021).

The latent is N categorical variables of K categories each, z = (z_1..z_N), z_n one-hot in {0,1}^K:

    q(z|x) = prod_n Categorical(z_n; softmax(l_n(x))),   p(z) = prod_n Uniform{1..K},   p(x|z) the decoder.

Sampling a categorical has no reparameterisation; the Gumbel-softmax replaces a draw z_n =
one_hot(argmax_k (l_nk + g_nk)), g_nk ~ Gumbel(0, 1) (exactly Categorical(softmax(l_n))), by

    y_n = softmax((l_n + g_n) / tau),

a point of the simplex that tends to that one-hot draw as tau -> 0 and to the uniform (1/K..1/K) as
tau -> oo; it is differentiable in l. Training anneals tau(t) = max(tau_min, tau0 exp(-r t)) over the
steps t (Jang et al., sec. 3.1). With hard=True the decoder sees the one-hot argmax while the
gradient is that of y (the straight-through Gumbel estimator, their sec. 2.2).

The training loss is -log p(x|y) + beta KL(q(z|x) || U) with the exact KL to the uniform prior U,
sum_n sum_k q_nk log(K q_nk) (DALL-E's first stage). Codes drawn from a uniform prior decode poorly:
the posteriors use nearly all N log K nats (digits: KL ~30 of 33), so the aggregate posterior
q(z) = E_x q(z|x) occupies a sliver of the K^N codes (measured: FID 224 from uniform codes). As
DALL-E's second stage, a prior p(z) over the codes is fitted to draws z ~ q(z|x) of each training
batch, detached, in the same optimizer steps (so its gradients reach only its own parameters): a
PixelCNN over the N variables laid out on an h x w grid (h w = N), or independent categoricals;
`genlab.models.latent.vqvae.CodePrior`. It maximises E_x E_q[log p(z)], i.e. fits q(z).

Evaluation uses the discrete model that `sample` draws from, p(z) p(x|z): the ELBO
E_q[log p(x|z) + log p(z)] + H[q(z|x)] and the IWAE bound with one-hot z ~ q(z|x).
"""

from __future__ import annotations

import dataclasses
import math
from typing import NamedTuple

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.dataset import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.models.base import Loss
from genlab.models.latent.vae import VAE, VAEConfig
from genlab.nn.builders import build_decoder, build_encoder
from genlab.models.latent.vqvae import CodePrior
from genlab.registry import register

DVAE_PRIORS = ("pixelcnn", "categorical", "uniform")

__all__ = ["CategoricalPosterior", "DVAEConfig", "DiscreteVAE", "code_grid", "gumbel_softmax", "sample_gumbel"]


def sample_gumbel(shape: tuple[int, ...], *, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
    """g ~ Gumbel(0, 1) i.i.d., g = -log(-log u), u ~ U(0, 1) (kept away from 0 and 1)."""
    draw_device = device if generator is None else generator.device
    u = torch.rand(shape, generator=generator, device=draw_device, dtype=dtype or torch.get_default_dtype()).to(device)
    tiny = torch.finfo(u.dtype).tiny
    return -torch.log(-torch.log(u.clamp(tiny, 1.0 - torch.finfo(u.dtype).eps)))


def gumbel_softmax(logits: Tensor, tau: float, *, hard: bool = False, generator: torch.Generator | None = None) -> Tensor:
    """y = softmax((l + g) / tau) over the last axis, g ~ Gumbel(0, 1): a relaxed sample of
    Categorical(softmax(l)) (Jang et al. 2017, eq. 1). hard=True returns one_hot(argmax y) in value
    with y's gradient (straight-through). logits (..., K) -> (..., K)."""
    if not tau > 0:
        raise ConfigError(f"the Gumbel-softmax temperature must be > 0, got {tau}")
    g = sample_gumbel(logits.shape, generator=generator, device=logits.device, dtype=logits.dtype)
    y = torch.softmax((logits + g) / tau, dim=-1)
    if not hard:
        return y
    one_hot = F.one_hot(y.argmax(-1), logits.shape[-1]).to(y.dtype)
    return one_hot + y - y.detach()


def code_grid(n: int) -> tuple[int, int]:
    """The most nearly square (h, w) with h w = n, h <= w: the layout of N code variables for a
    PixelCNN prior (16 -> (4, 4), 12 -> (3, 4), 7 -> (1, 7))."""
    h = max(d for d in range(1, math.isqrt(n) + 1) if n % d == 0)
    return h, n // h


class CategoricalPosterior(NamedTuple):
    """q(z|x) = prod_n Categorical(softmax(l_n)), logits l (B, N, K)."""

    logits: Tensor

    @property
    def log_probs(self) -> Tensor:
        """log q_nk, (B, N, K)."""
        return torch.log_softmax(self.logits, dim=-1)

    @property
    def probs(self) -> Tensor:
        return torch.softmax(self.logits, dim=-1)

    def kl_to_uniform(self) -> Tensor:
        """KL(q || Uniform^N) = sum_n sum_k q_nk (log q_nk + log K), (B,)."""
        log_q = self.log_probs
        return (log_q.exp() * (log_q + math.log(self.logits.shape[-1]))).sum((1, 2))

    def sample(self, generator: torch.Generator | None = None) -> Tensor:
        """Discrete one-hot z ~ q(z|x) by the Gumbel-max trick, (B, N, K)."""
        g = sample_gumbel(self.logits.shape, generator=generator, device=self.logits.device, dtype=self.logits.dtype)
        return F.one_hot((self.logits + g).argmax(-1), self.logits.shape[-1]).to(self.logits.dtype)

    def log_prob(self, z: Tensor) -> Tensor:
        """log q(z|x) of one-hot z (B, N, K), (B,)."""
        return (self.log_probs * z).sum((1, 2))

    def repeat(self, k: int) -> "CategoricalPosterior":
        """k copies stacked along the batch: row j * B + b is copy j of sample b."""
        return CategoricalPosterior(self.logits.repeat(k, 1, 1))


@dataclasses.dataclass
class DVAEConfig(VAEConfig):
    """Configuration of the discrete VAE: VAEConfig's fields with these meanings and additions.

    latent_dim: N, the number of categorical latent variables.
    categories: K, the categories of each (the latent holds N log2 K bits).
    beta: weight of KL(q(z|x) || U) to the uniform prior in training (1: the relaxed ELBO).
    prior: the generative model's p(z), which `sample` and the bounds use: "pixelcnn" (over the N
        variables on a near-square h x w grid), "categorical" (independent per variable), both
        fitted to codes drawn from q(z|x), or "uniform" (p(z) = U, the training prior itself).
    prior_channels, prior_blocks: the PixelCNN prior's width and residual blocks.
    tau0, tau_min, anneal_rate: the temperature tau(t) = max(tau_min, tau0 exp(-anneal_rate t)) at
        training step t (Jang et al. 2017 anneal from 1 to 0.5; DALL-E to 1/16). The step count is a
        buffer, so a resumed run continues the schedule. The defaults reach 0.1 after ~3,800 steps:
        the decoder, trained on relaxed samples, is then close to the one-hot codes it decodes when
        sampling (digits, 3,000 steps: FID 61 annealed to 0.1, 79 stopping at 0.5).
    hard: straight-through: decode one_hot(argmax y) in the forward pass, y's gradient in the backward
        (digits, 3,000 steps, tau_min 0.5: FID 79 as without, bound 3.68 bits/dim against 3.99).
    likelihood, decoder_std, dequantize, net, hidden, channels, iw_samples: as the VAE's. The default
    likelihood "gaussian" on dequantized data makes `nll_bound` a bound on the data's log-likelihood
    (bits/dim); "bernoulli" trains a cross-entropy, not a likelihood.
    """

    latent_dim: int = 16
    categories: int = 8
    beta: float = 1.0
    prior: str = "pixelcnn"
    prior_channels: int = 64
    prior_blocks: int = 2
    likelihood: str = "gaussian"
    tau0: float = 1.0
    tau_min: float = 0.1
    anneal_rate: float = 6e-4
    hard: bool = False

    def validate(self) -> None:
        self._choice("prior", DVAE_PRIORS)
        prior, self.prior = self.prior, "standard"  # VAEConfig knows its own priors only; restored below
        try:
            super().validate()
        finally:
            self.prior = prior
        self._positive("prior_channels", "prior_blocks")
        if self.objective != "elbo":
            raise ConfigError(f"DVAEConfig.objective={self.objective!r}: the discrete VAE trains the relaxed ELBO; use objective='elbo'")
        self._positive("tau0", "tau_min")
        self._positive("anneal_rate", allow_zero=True)
        if self.categories < 2:
            raise ConfigError(f"DVAEConfig.categories={self.categories} must be >= 2")
        if self.tau_min > self.tau0:
            raise ConfigError(f"DVAEConfig.tau_min={self.tau_min} must not exceed tau0={self.tau0}: the temperature anneals down")


@register("dvae", DVAEConfig, family="latent", summary="Discrete VAE: Gumbel-softmax categorical latents, temperature annealing")
class DiscreteVAE(VAE):
    """Discrete VAE with Gumbel-softmax relaxed categorical latents; see the module docstring.

    A VAE whose hooks change: `encode` gives a CategoricalPosterior (logits (B, N, K)); the decoder
    reads z flattened to (B, N K) (one-hot, relaxed or probabilities); `prior_sample` draws uniform
    one-hot codes; `kl_divergence` is the exact KL to the uniform prior. The decoder likelihood,
    dequantization and decoder-scale initialisation are the VAE's.

    >>> import torch
    >>> from genlab.data import Batch, DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    >>> model = DiscreteVAE(DVAEConfig(latent_dim=4, categories=3, hidden=(16,), likelihood="bernoulli"), spec)
    >>> sorted(model.loss(Batch(torch.rand(5, 1, 8, 8))).terms)
    ['elbo', 'kl', 'prior_bits', 'recon', 'tau']
    >>> model.sample(2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
    """

    config: DVAEConfig
    # ema_decay 0: as for the autoencoders, averaged encoder and decoder weights stop pairing up
    # (README, "Why these defaults")
    train_defaults = {"max_steps": 6000, "lr": 2e-3, "lr_schedule": "cosine", "ema_decay": 0.0}
    cpu_train_defaults = {"max_steps": 2500}

    def __init__(self, config: DVAEConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        n, k = config.latent_dim, config.categories
        sized = self.config  # with the preset's conv sizes (VAE.__init__)
        self.encoder = build_encoder(spec, n * k, net=config.net, hidden=config.hidden, **sized.conv_options())
        self.decoder = build_decoder(n * k, spec, net=config.net, hidden=config.hidden[::-1], **sized.decoder_conv_options())
        self.register_buffer("anneal_step", torch.zeros((), dtype=torch.long))
        self.code_grid = code_grid(n)
        if config.prior != "uniform":
            self.code_prior = CodePrior(config.prior, k, self.code_grid, channels=config.prior_channels, blocks=config.prior_blocks)

    # -- the hooks ------------------------------------------------------------------------------------
    def encode(self, x: Tensor) -> CategoricalPosterior:
        """q(z|x): logits (B, N, K) from x (B, *shape)."""
        return CategoricalPosterior(self.encoder(x).view(x.shape[0], self.config.latent_dim, self.config.categories))

    def decode(self, z: Tensor) -> Tensor:
        """Decoder parameters from z (B, N, K) or (B, N K) -> (B, *shape)."""
        return self.decoder(z.reshape(z.shape[0], -1)).reshape(z.shape[0], *self.spec.shape)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z) of one-hot codes z (B, N, K), (B,): the fitted code prior's, or -N log K (uniform)."""
        if self.config.prior == "uniform":
            return z.new_full((z.shape[0],), -self.config.latent_dim * math.log(self.config.categories))
        return self.code_prior.log_prob(z.argmax(-1).view(z.shape[0], *self.code_grid)).to(z.dtype)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """One-hot codes z ~ p(z), (n, N, K)."""
        if self.config.prior == "uniform":
            device = self.device if generator is None else generator.device
            index = torch.randint(self.config.categories, (n, self.config.latent_dim), generator=generator, device=device)
        else:
            index = self.code_prior.sample(n, generator).reshape(n, self.config.latent_dim)
        return F.one_hot(index.to(self.device), self.config.categories).to(self._dtype)

    def kl_divergence(self, q_z: CategoricalPosterior, z: Tensor | None = None) -> Tensor:
        """KL(q(z|x) || U) to the uniform training prior, per sample, exact, (B,)."""
        return q_z.kl_to_uniform()

    # -- the temperature ---------------------------------------------------------------------------------
    def temperature(self, step: int | None = None) -> float:
        """tau(t) = max(tau_min, tau0 exp(-anneal_rate t)) at step t (default: the steps trained so far)."""
        t = int(self.anneal_step) if step is None else step
        c = self.config
        return max(c.tau_min, c.tau0 * math.exp(-c.anneal_rate * t))

    # -- training ------------------------------------------------------------------------------------------
    def loss(self, batch: Batch) -> Loss:
        """total = mean_b[-log p(x_b|y_b) + beta KL_b], y_b the Gumbel-softmax sample at tau(t).

        terms: recon, kl, elbo (of the relaxed sample, beta = 1), tau. In training mode the step
        counter t advances by one per call."""
        x = self.observe(batch.x)
        q_z = self.encode(x)
        tau = self.temperature()
        y = gumbel_softmax(q_z.logits, tau, hard=self.config.hard)  # (B, N, K)
        recon_ll = self.reconstruction_log_likelihood(x, self.decode(y))  # (B,)
        kl = self.kl_divergence(q_z)
        total = (self.config.beta * kl - recon_ll).mean()
        if self.training and torch.is_grad_enabled():
            self.anneal_step.add_(1)
        terms = {"recon": -recon_ll.mean().detach(), "kl": kl.mean().detach(), "elbo": (recon_ll - kl).mean().detach(),
                 "tau": torch.tensor(tau, device=x.device)}
        if self.config.prior != "uniform":  # the code prior's fit to draws of q(z|x), detached
            prior_nll = -self.prior_log_prob(q_z.sample().detach()).mean()
            total = total + prior_nll / self.config.latent_dim
            terms["prior_bits"] = prior_nll.detach() / math.log(2.0)
        return Loss(total, terms)

    # -- bounds of the discrete model ------------------------------------------------------------------------
    def elbo(self, x: Tensor, *, samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """ELBO(x) = E_{z~q}[log p(x|z) + log p(z)] + H[q(z|x)] with discrete one-hot z and the model's
        prior p(z), (B,); the expectation from `samples` draws, the entropy exact."""
        q_z = self.encode(x)
        total = 0.0
        for _ in range(samples):
            z = q_z.sample(generator)
            total = total + self.reconstruction_log_likelihood(x, self.decode(z)) + self.prior_log_prob(z)
        entropy = -(q_z.log_probs.exp() * q_z.log_probs).sum((1, 2))
        return total / samples + entropy

    def iwae_log_likelihood(self, x: Tensor, k: int, *, generator: torch.Generator | None = None, chunk_size: int | None = None) -> Tensor:
        """IWAE_k(x) = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x) one-hot (Burda et al. 2016), (B,)."""
        if k < 1:
            raise ValueError(f"the number of samples k={k} must be >= 1")
        q_z = self.encode(x)
        per_pass = chunk_size or max(1, 1024 // max(1, x.shape[0]))
        log_weights = []
        for start in range(0, k, per_pass):
            m = min(per_pass, k - start)
            q_rep, x_rep = q_z.repeat(m), x.repeat(m, *([1] * (x.dim() - 1)))
            z = q_rep.sample(generator)  # (m B, N, K)
            log_w = self.reconstruction_log_likelihood(x_rep, self.decode(z)) + self.prior_log_prob(z) - q_rep.log_prob(z)
            log_weights.append(log_w.view(m, x.shape[0]))
        return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)

    # -- inspection --------------------------------------------------------------------------------------------
    @torch.no_grad()
    def encode_mean(self, x: Tensor) -> Tensor:
        """E_q[z] = the probabilities q_nk flattened, (B, N K): the decoder's input space."""
        return self.encode(x).probs.flatten(1)

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """The decoder mean at the most probable code one_hot(argmax_k q_nk), (B, *shape)."""
        logits = self.encode(x).logits
        return self.decoder_mean(self.decode(F.one_hot(logits.argmax(-1), self.config.categories).to(logits.dtype)))

    @torch.no_grad()
    def encode_indices(self, x: Tensor) -> Tensor:
        """The most probable category of each latent variable, (B, N) long."""
        return self.encode(x).logits.argmax(-1)
