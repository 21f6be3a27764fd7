"""Variational autoencoder (Kingma & Welling 2014) with the importance-weighted bound (Burda et al. 2016).

Notation: x data (B, *spec.shape) in spec.value_range, z latent (B, D) with D = latent_dim,
q(z|x) = N(mu(x), diag sigma(x)^2) the encoder, p(x|z) the decoder, p(z) the prior: N(0, I), the
VampPrior 1/K sum_k q(z|u_k) with learned pseudo-inputs u_k (Tomczak & Welling 2018), or a learned
flow prior p(z) = N(f(z); 0, I) |det df/dz| with f a stack of MAF layers (as in Chen et al. 2017,
"Variational Lossy Autoencoder", whose autoregressive-flow prior is this one).

    ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z))  <=  log p(x)
    IWAE_k(x) = log (1/k) sum_i p(x, z_i) / q(z_i|x),  z_i ~ q(z|x);   E[IWAE_k] <= E[IWAE_k+1] <= log p(x)

The training loss weights the KL by beta (beta = 1 is the ELBO; beta != 1 the beta-VAE of
Higgins et al. 2017, registered with its defaults as `beta-vae`). Hooks a variant overrides: `encode`, `decode`, `reconstruction_log_likelihood`,
`decoder_mean`, `prior_log_prob`, `prior_sample`, `kl_divergence`, `regularizer`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.data.dataset import Batch, DataSpec
from genlab.data.transforms import dequantize, quantize

from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, Loss, cpu_batch_size, cpu_sized_pixels
from genlab.models.flows.autoregressive import MaskedAutoregressiveTransform
from genlab.models.flows.base import Bijection, Compose
from genlab.models.flows.layers import Permutation
from genlab.nn.builders import NETS, ConvNetConfig, build_decoder, build_encoder
from genlab.nn.distributions import (
    DiagonalGaussian,
    TableLikelihood,
    bernoulli_log_likelihood,
    decoder_mean,
    diagonal_gaussian_mixture_log_prob,
    gaussian_log_likelihood,
    sample_standard_normal,
    standard_normal_log_prob,
)
from genlab.registry import register

LIKELIHOODS = ("auto", "bernoulli", "gaussian", "table")
PRIORS = ("auto", "vamp", "standard", "flow")
OBJECTIVES = ("elbo", "iwae")
# the VampPrior's pseudo-inputs where the config leaves prior_components None (Tomczak & Welling 2018
# used 500 on MNIST; 100 keeps a step of 128 images from encoding more pseudo-inputs than images)
PSEUDO_INPUTS = 100

# A learned Gaussian scale is kept above this (smoothly): on discrete data (pixels with a few
# levels) the density of p(x|z) grows without bound as sigma -> 0, and training would chase it.
_MIN_LEARNED_DECODER_STD = 1e-3
# encoder log-variances are clamped here: exp(logvar) overflows in bf16/fp16 long before float32
_LOGVAR_RANGE = (-30.0, 20.0)
# rows (samples x batch) per decoder pass in the multi-sample estimates, to bound memory
_ROWS_PER_PASS = 1024

@dataclasses.dataclass
class VAEConfig(ConvNetConfig):
    """Configuration of the VAE.

    latent_dim: size D of the latent z.
    beta: weight of KL(q(z|x) || p(z)) in the training loss (1 gives the ELBO; Higgins et al. 2017).
        The default 0.5 lets the codes carry more about each image, and the decoder's means are
        sharper for it (digits, 1,000 samples: FID 18 against 25 with beta = 1; the bound on
        -log p(x) is 0.4 nats looser). The logged `elbo` and the IWAE bound always use beta = 1.
    likelihood: the decoder p(x|z): "bernoulli" (logits; data mapped from value_range to [0, 1]),
        "gaussian" (mean in the data's units), "table" (TVAE's decoder, Xu et al. 2019: Gaussian on a
        table's numbers, a softmax on each one-hot group, `TableLikelihood`), or "auto": table on
        tables, bernoulli otherwise.
    decoder_std: gaussian and table: a fixed standard deviation of p(x|z) in data units, or None
        to learn one log-scale per data dimension.
    net: "auto" (conv for images, MLP otherwise), "mlp" or "conv".
    hidden: MLP widths of the encoder; the decoder uses them reversed.
    prior: p(z): "vamp", the VampPrior p(z) = 1/K sum_k q(z|u_k) over K learned pseudo-inputs u_k
        (Tomczak & Welling 2018), "standard", N(0, I) with the KL in closed form, or "flow", a learned
        flow p(z) = N(f(z); 0, I) |det df/dz| (`FlowPrior`: prior_flow_transforms MAF layers, starting
        as the identity, i.e. at N(0, I)), trained with the rest by the ELBO; "auto" (the default):
        "vamp" on images and vectors: with N(0, I) the decoder is asked to make digits from regions
        of z that no training image encodes to (the "holes" of the aggregate posterior), and on
        `digits` its samples' FID is twice the VampPrior's (README's table); "standard" on tables,
        as TVAE: pseudo-inputs that start as training rows make a small table's samples copies of
        its rows (README, "Tables").
    prior_components: K, the number of pseudo-inputs of the VampPrior, which the encoder encodes at
        every step beside the batch; None: 100, fewer on images larger than MNIST's for the "cpu"
        networks, in proportion to the pixels like the CPU batch (`cpu_batch_size`: 16 at 64x64).
    prior_flow_transforms: flow prior: the number of MAF layers of f (a reversal of the
        coordinates between consecutive ones).
    prior_flow_hidden: flow prior: the hidden widths of each layer's MADE.
    iw_samples: number k of importance samples in `nll_bound` (the IWAE estimate).
    objective: the training loss: "elbo" (-log p(x|z) + beta KL, one draw of z), or "iwae", the
        negative IWAE bound -IWAE_k(x) with k = train_samples reparameterised draws (Burda et al.
        2016), tighter than the ELBO for k > 1; it has no beta (set beta=1).
    train_samples: k of the "iwae" objective.
    dequantize: gaussian only, data with discrete levels (spec.levels): model uniformly
        dequantized values (`genlab.data.transforms.dequantize`), so the bound is on a density and
        converts to bits/dim of the discrete data; samples are quantized back to the data's levels.
    """

    latent_dim: int = 8
    beta: float = 0.5
    likelihood: str = "auto"
    decoder_std: float | None = None
    prior: str = "auto"
    prior_components: int | None = None
    prior_flow_transforms: int = 4
    prior_flow_hidden: tuple[int, ...] = (64, 64)
    net: str = "auto"
    hidden: tuple[int, ...] = (256, 256)
    iw_samples: int = 64
    dequantize: bool = True
    objective: str = "elbo"
    train_samples: int = 5

    def validate(self) -> None:
        super().validate()
        self._positive("latent_dim", "iw_samples", "train_samples", "prior_flow_transforms")
        if self.prior_components is not None:
            self._positive("prior_components")
        self._choice("objective", OBJECTIVES)
        if self.objective == "iwae" and self.beta != 1.0:
            raise ConfigError(
                f"VAEConfig.objective='iwae' trains the IWAE bound, which has no KL weight, but beta={self.beta!r}; "
                "set beta=1 (or objective='elbo' for the beta-weighted ELBO)"
            )
        self._choice("prior", PRIORS)
        self._positive("beta", allow_zero=True)
        self._choice("likelihood", LIKELIHOODS)
        self._choice("net", NETS)
        if self.decoder_std is not None:
            if self.likelihood not in ("gaussian", "table"):
                raise ConfigError(
                    f"VAEConfig.decoder_std={self.decoder_std!r} applies only to likelihood='gaussian' "
                    f"(likelihood={self.likelihood!r}); drop it or set likelihood='gaussian'"
                )
            self._positive("decoder_std")
        for field in ("hidden", "prior_flow_hidden"):
            widths = tuple(getattr(self, field))
            if any(not isinstance(w, int) or w <= 0 for w in widths):
                raise ConfigError(f"VAEConfig.{field}={widths!r} must be positive integer widths, e.g. (32, 64)")
            setattr(self, field, widths)

class FlowPrior(nn.Module):
    """A learned prior over z (B, D) by a normalizing flow f: z -> u with base N(0, I):

        log p(z) = log N(f(z); 0, I) + log |det df/dz|    (change of variables)
        z ~ p(z):  u ~ N(0, I), z = f^{-1}(u)

    f = [MAF layer -> reversal] x K (Papamakarios et al. 2017; `genlab.models.flows`), each MAF layer
    z_i -> (z_i - mu_i(z_<i)) exp(-alpha_i(z_<i)). The density takes one MADE pass per layer (it is
    evaluated on every training step), sampling D passes per layer (cheap for a latent of a few
    dimensions). Every MAF layer starts as the identity, so the prior starts as N(0, I).

    >>> import torch
    >>> prior = FlowPrior(3, transforms=2, hidden=(8,))
    >>> z = torch.randn(4, 3)
    >>> bool(torch.allclose(prior.log_prob(z), torch.distributions.Normal(0.0, 1.0).log_prob(z).sum(1)))
    True
    """

    def __init__(self, dim: int, *, transforms: int, hidden: tuple[int, ...]) -> None:
        super().__init__()
        self.dim = int(dim)
        parts: list[Bijection] = []
        for k in range(transforms):
            parts.append(MaskedAutoregressiveTransform(self.dim, tuple(hidden), seed=k))
            if k < transforms - 1 and self.dim > 1:
                parts.append(Permutation(self.dim, "reverse"))
        self.transform = Compose(*parts)

    def log_prob(self, z: Tensor) -> Tensor:
        """log p(z), z (B, D) -> (B,)."""
        u, log_det = self.transform(z)  # (B, D) -> (B, D), (B,)
        return standard_normal_log_prob(u) + log_det

    def sample(self, n: int, *, generator: torch.Generator | None = None, device=None, dtype=None) -> Tensor:
        """z = f^{-1}(u), u ~ N(0, I) drawn from `generator`: (n, D)."""
        u = sample_standard_normal((n, self.dim), generator=generator, device=device, dtype=dtype)
        z, _ = self.transform.inverse(u)
        return z


@register("vae", VAEConfig, family="latent", summary="Variational autoencoder: ELBO training, IWAE likelihood bound")
class VAE(GenerativeModel):
    """Variational autoencoder: Gaussian encoder q(z|x), Bernoulli or Gaussian decoder p(x|z), and a
    VampPrior, N(0, I) or learned flow prior p(z).

    `self.encoder` maps x (B, *shape) to (B, 2 D) = (mu, log sigma^2); `self.decoder` maps z (B, D)
    to (B, *shape) decoder parameters (Bernoulli logits or the Gaussian mean). Either can be
    replaced by any module with those shapes.

    With likelihood="bernoulli" on non-binary data (grey levels), log p(x|z) is a cross-entropy
    against the Bernoulli(x) targets, not a normalised density over [0, 1]^D, so the ELBO and the
    IWAE numbers are not log-likelihoods comparable with other models' (use "gaussian" with
    dequantized data for that).

    >>> import torch
    >>> from genlab.data import Batch, DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8))
    >>> model = VAE(VAEConfig(latent_dim=4, channels=(8, 16)), spec)
    >>> loss = model.loss(Batch(torch.rand(5, 1, 8, 8)))
    >>> sorted(loss.terms), loss.total.shape
    (['elbo', 'kl', 'recon'], torch.Size([]))
    >>> model.sample(3, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([3, 1, 8, 8])
    """

    initializes_once = True

    config: VAEConfig
    # max_steps: FID still falls at the end of shorter runs at this rate (the README's VAE row)
    train_defaults = {"max_steps": 6000, "lr": 2e-3, "lr_schedule": "cosine"}
    cpu_train_defaults = {"max_steps": 2500, "ema_decay": 0.995}

    def __init__(self, config: VAEConfig, spec: DataSpec) -> None:
        config = config.sized(spec)
        if config.likelihood == "auto":  # resolved once, so config.yaml records it and a loaded run keeps it
            config = dataclasses.replace(config, likelihood="table" if spec.table_blocks else "bernoulli")
        if config.prior == "auto":
            config = dataclasses.replace(config, prior="standard" if spec.table_blocks else "vamp")
        if config.likelihood == "table" and not spec.table_blocks:
            raise ConfigError(f"likelihood='table' reads a table's column layout, and {spec.name!r} ({spec.kind}) has none; "
                              "use likelihood='gaussian' or 'bernoulli' (or load a CSV table)")
        if config.prior_components is None:
            config = dataclasses.replace(config, prior_components=cpu_batch_size(PSEUDO_INPUTS, cpu_sized_pixels(config, spec)))
        super().__init__(config, spec)
        low, high = spec.value_range
        if config.likelihood == "bernoulli" and not (math.isfinite(low) and math.isfinite(high) and high > low):
            raise ConfigError(
                f"likelihood='bernoulli' maps the data's value_range to [0, 1], but data {spec.name!r} has "
                f"value_range {spec.value_range}; use likelihood='gaussian'"
            )
        d = config.latent_dim
        self.encoder = build_encoder(spec, 2 * d, net=config.net, hidden=config.hidden, **config.conv_options())
        self.decoder = build_decoder(d, spec, net=config.net, hidden=config.hidden[::-1], **config.decoder_conv_options())
        self.table = TableLikelihood(spec.table_blocks) if config.likelihood == "table" else None
        if config.likelihood in ("gaussian", "table") and config.decoder_std is None:
            # unconstrained; mapped by `observation_log_scale`, which starts at sigma ~ 1
            self.decoder_log_scale = nn.Parameter(torch.zeros(spec.shape))
        if config.prior == "vamp":
            # random values in the data's range until `initialize_from_data` sets training images,
            # which start the prior's components where the data is (docs/architecture.md)
            low, high = (0.0, 1.0) if not (math.isfinite(low) and math.isfinite(high)) else (low, high)
            self.pseudo_inputs = nn.Parameter(low + (high - low) * torch.rand(config.prior_components, *spec.shape))
        if config.prior == "flow":
            self.prior_flow = FlowPrior(d, transforms=config.prior_flow_transforms, hidden=config.prior_flow_hidden)

    # -- the model's parts (the hooks a variant overrides) -------------------------------
    def encode(self, x: Tensor) -> DiagonalGaussian:
        """q(z|x) = N(mu, diag exp(logvar)). x: (B, *shape) in value_range -> mean, logvar (B, D)."""
        h = self.encoder(x)  # (B, *shape) -> (B, 2 D)
        mean, logvar = h.chunk(2, dim=-1)
        return DiagonalGaussian(mean, logvar.clamp(*_LOGVAR_RANGE))

    def decode(self, z: Tensor) -> Tensor:
        """Parameters of p(x|z): Bernoulli logits or the Gaussian mean. z: (B, D) -> (B, *shape)."""
        return self.decoder(z).reshape(z.shape[0], *self.spec.shape)

    def observation_log_scale(self) -> Tensor | float:
        """log sigma of the Gaussian p(x|z): the fixed float log(decoder_std), or the learned
        per-dimension (*shape,) tensor kept smoothly above log(1e-3)."""
        if self.config.decoder_std is not None:
            return math.log(self.config.decoder_std)  # a float: exact in any dtype
        floor = math.log(_MIN_LEARNED_DECODER_STD)
        return floor + F.softplus(self.decoder_log_scale - floor)

    def reconstruction_log_likelihood(self, x: Tensor, params: Tensor) -> Tensor:
        """log p(x|z) per sample, (B,), from x (B, *shape) in value_range and params = decode(z).

        bernoulli: sum_i [u_i log sigmoid(l_i) + (1 - u_i) log(1 - sigmoid(l_i))], u = x mapped to [0, 1];
        gaussian: sum_i log N(x_i; mean_i, sigma_i^2) in the data's units;
        table: Gaussian on the numbers, categorical on each one-hot group (`TableLikelihood`).
        """
        if self.config.likelihood == "bernoulli":
            return bernoulli_log_likelihood(self._to_unit(x).clamp(0.0, 1.0), params)
        if self.table is not None:
            return self.table.log_prob(x, params, self.observation_log_scale())
        return gaussian_log_likelihood(x, params, self.observation_log_scale())

    def decoder_mean(self, params: Tensor) -> Tensor:
        """E[x|z] in the data's value range: sigmoid(logits) mapped from [0, 1], or the Gaussian mean
        clamped to value_range (a table's groups: their probabilities). params: (B, *shape) -> (B, *shape)."""
        if self.table is not None:
            return self.table.mean(params, self.spec.value_range)
        return decoder_mean(params, self.config.likelihood, self.spec.value_range)

    def initialize(self, train, generator: torch.Generator) -> None:
        """Once per model, before training:

        - a learned Gaussian decoder scale starts at a tenth of each dimension's standard deviation
          in the data: starting at the data's own spread, a decoder that ignores z already
          explains the data and the KL term pulls q(z|x) onto the prior for good ("posterior
          collapse", measured on digits: every reconstruction the same mean digit);
        - VampPrior: the pseudo-inputs start as K training samples drawn without replacement
          (repeated when there are fewer than K), as Tomczak & Welling suggest.
        """
        x, _ = train.tensors()
        with torch.no_grad():
            if hasattr(self, "decoder_log_scale"):
                floor = math.log(_MIN_LEARNED_DECODER_STD)
                target = torch.log(0.1 * x.float().std(0) + 2 * _MIN_LEARNED_DECODER_STD) - floor  # > 0
                self.decoder_log_scale.copy_(floor + target + torch.log(-torch.expm1(-target)))  # softplus^-1
        if self.config.prior != "vamp":
            return
        k = self.config.prior_components
        index = torch.randperm(len(x), generator=generator)[:k].repeat(-(-k // len(x)))[:k]
        with torch.no_grad():
            self.pseudo_inputs.copy_(x[index.to(x.device)].to(self.pseudo_inputs))

    def prior_components(self) -> DiagonalGaussian:
        """The VampPrior's K components q(z|u_k), u_k the learned pseudo-inputs (K, *shape):
        means and log-variances (K, D)."""
        return self.encode(self.pseudo_inputs)

    def prior_log_prob(self, z: Tensor) -> Tensor:
        """log p(z), z: (B, D) -> (B,): log N(z; 0, I); for the VampPrior
        log (1/K) sum_k N(z; mu(u_k), diag sigma(u_k)^2); for the flow prior
        log N(f(z); 0, I) + log |det df/dz|."""
        if self.config.prior == "standard":
            return standard_normal_log_prob(z)
        if self.config.prior == "flow":
            return self.prior_flow.log_prob(z)
        components = self.prior_components()
        log_weights = torch.full((components.mean.shape[0],), -math.log(components.mean.shape[0]), device=z.device)
        return diagonal_gaussian_mixture_log_prob(z, components.mean, components.logvar, log_weights)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z), (n, D), on the model's device: N(0, I); for the VampPrior a uniformly chosen
        component k, then z ~ q(z|u_k); for the flow prior z = f^{-1}(u), u ~ N(0, I)."""
        if self.config.prior == "flow":
            return self.prior_flow.sample(n, generator=generator, device=self.device, dtype=self._dtype)
        eps = sample_standard_normal((n, self.config.latent_dim), generator=generator, device=self.device, dtype=self._dtype)
        if self.config.prior == "standard":
            return eps
        components = self.prior_components()
        k = components.mean.shape[0]
        if generator is None:
            index = torch.randint(k, (n,), device=self.device)
        else:
            index = torch.randint(k, (n,), generator=generator, device=generator.device).to(self.device)
        return components.mean[index] + components.std[index] * eps

    def kl_divergence(self, q_z: DiagonalGaussian, z: Tensor) -> Tensor:
        """KL(q(z|x) || p(z)) per sample, (B,): in closed form for N(0, I) (z unused); for the
        VampPrior and the flow prior, which have none, the one-draw estimate -H[q(z|x)] - log p(z)
        at z ~ q(z|x): unbiased, as the estimate log q(z|x) - log p(z) is, with the entropy part
        exact. Of the two it has the smaller variance for posteriors narrower than sqrt(1/2) of the
        prior, the usual case: at p = N(0, I) their variances per dimension are
        sigma^4 / 2 + mu^2 sigma^2 against (1 - sigma^2)^2 / 2 + mu^2 sigma^2."""
        if self.config.prior == "standard":
            return q_z.kl_to_standard_normal()
        return -q_z.entropy() - self.prior_log_prob(z)

    def regularizer(self, q_z: DiagonalGaussian, z: Tensor) -> Tensor:
        """The penalty added to -log p(x|z) in training, (B,): beta * KL(q(z|x) || p(z))."""
        return self.config.beta * self.kl_divergence(q_z, z)

    # -- training ---------------------------------------------------------------------------
    @property
    def dequantizes(self) -> bool:
        return self.config.likelihood == "gaussian" and self.config.dequantize and self.spec.levels is not None

    def likelihood_kind(self) -> str:
        if self.config.likelihood == "bernoulli":
            return "discrete" if self.spec.levels == 2 else "none"
        if self.config.likelihood == "table":  # a density in the numbers times probabilities: not comparable
            return "none"
        return "dequantized" if self.dequantizes else "continuous"

    def observe(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The values the decoder's density is over: x itself, or x dequantized (see VAEConfig)."""
        return dequantize(x, self.spec, generator) if self.dequantizes else x

    def loss(self, batch: Batch) -> Loss:
        """total = mean_b[-log p(x_b|z_b) + beta KL_b], one z_b ~ q(z|x_b) each (default RNG).

        terms: recon = mean -log p(x|z); kl = mean KL; elbo = mean ELBO (with beta = 1).
        """
        x = self.observe(batch.x)
        if self.config.objective == "iwae":
            return self.iwae_loss(x)
        q_z = self.encode(x)
        z = q_z.rsample()  # (B, D)
        recon_ll = self.reconstruction_log_likelihood(x, self.decode(z))  # (B,)
        kl = self.kl_divergence(q_z, z)  # (B,)
        total = (self.regularizer(q_z, z) - recon_ll).mean()
        terms = {"recon": -recon_ll.mean().detach(), "kl": kl.mean().detach(), "elbo": (recon_ll - kl).mean().detach()}
        return Loss(total, terms)

    def iwae_loss(self, x: Tensor) -> Loss:
        """total = -mean_b IWAE_k(x_b), k = train_samples draws z_i ~ q(z|x) (default RNG), reparameterised,
        so the gradient is sum_i w~_i grad log w_i with w~ the normalised importance weights (Burda et
        al. 2016, eq. 8). x: the observed (dequantized) values, (B, *shape).

        terms: iwae = mean IWAE_k; elbo, recon and kl the means over the k draws of the one-draw
        estimates (kl as log q(z|x) - log p(z))."""
        q_z = self.encode(x)
        log_w, recon = [], []
        for m, x_rep, q_rep, z in self._posterior_draws(x, q_z, self.config.train_samples, None, None):
            recon_ll = self.reconstruction_log_likelihood(x_rep, self.decode(z))  # (m * B,)
            log_w.append((recon_ll + self.prior_log_prob(z) - q_rep.log_prob(z)).view(m, x.shape[0]))
            recon.append(recon_ll.view(m, x.shape[0]))
        log_w, recon_ll = torch.cat(log_w), torch.cat(recon)  # (k, B)
        iwae = torch.logsumexp(log_w, dim=0) - math.log(self.config.train_samples)  # (B,)
        terms = {"iwae": iwae.mean().detach(), "elbo": log_w.mean().detach(), "recon": -recon_ll.mean().detach(),
                 "kl": (recon_ll - log_w).mean().detach()}
        return Loss(-iwae.mean(), terms)

    # -- bounds on log p(x) ---------------------------------------------------------------------
    def elbo(self, x: Tensor, *, samples: int = 1, generator: torch.Generator | None = None) -> Tensor:
        """ELBO(x) = E_q[log p(x|z)] - KL(q(z|x) || p(z)) <= log p(x), per sample in nats, (B,).

        The expectation is estimated with `samples` draws of z ~ q(z|x) (beta is not applied).
        """
        q_z = self.encode(x)
        total = 0.0
        for m, x_rep, q_rep, z in self._posterior_draws(x, q_z, samples, generator, chunk_size=None):
            values = self.reconstruction_log_likelihood(x_rep, self.decode(z)) - self.kl_divergence(q_rep, z)
            total = total + values.view(m, x.shape[0]).sum(0)  # (m * B,) -> (B,)
        return total / samples

    def iwae_log_likelihood(
        self, x: Tensor, k: int, *, generator: torch.Generator | None = None, chunk_size: int | None = None
    ) -> Tensor:
        """IWAE_k(x) = log (1/k) sum_i p(x|z_i) p(z_i) / q(z_i|x), z_i ~ q(z|x) (Burda et al. 2016), (B,).

        A stochastic lower bound: E[IWAE_k] <= E[IWAE_k+1] <= log p(x), tending to log p(x) as k grows;
        IWAE_1 is a one-sample ELBO estimate. chunk_size: draws per decoder pass (default: as many as
        fit in about 1024 rows).
        """
        q_z = self.encode(x)
        log_weights = []
        for m, x_rep, q_rep, z in self._posterior_draws(x, q_z, k, generator, chunk_size):
            log_w = self.reconstruction_log_likelihood(x_rep, self.decode(z)) + self.prior_log_prob(z) - q_rep.log_prob(z)
            log_weights.append(log_w.view(m, x.shape[0]))  # (m * B,) -> (m, B)
        return torch.logsumexp(torch.cat(log_weights), dim=0) - math.log(k)  # (k, B) -> (B,)

    @torch.no_grad()
    def nll_bound(self, x: Tensor, generator: torch.Generator | None = None, samples: int | None = None) -> Tensor:
        """-IWAE_k(x) with k = samples, else config.iw_samples, per sample in nats, (B,).

        An estimate of an upper bound: E[-IWAE_k] >= -log p(x) (one draw may fall below it).
        For the Bernoulli decoder on non-binary data it bounds a cross-entropy, not a density.
        With dequantization, x is dequantized with one draw of u from `generator` first.
        """
        return -self.iwae_log_likelihood(self.observe(x, generator), samples or self.config.iw_samples, generator=generator)

    # -- generation and inspection ---------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """z ~ p(z), then (n, *shape) in the data's space:

        images: x = E[x|z], the decoder mean, as is customary (independent pixel noise only adds
            grain), quantized to the data's levels when the model dequantizes;
        vectors and tables with the Gaussian decoder: x ~ p(x|z) = N(mu(z), sigma^2), a draw from the
            model, whose spread the observation noise is part of (clipped to the data's value_range);
        tables with the table decoder: numbers drawn so, each one-hot group's category drawn from its softmax.
        """
        if cond is not None:
            raise ConfigError("the VAE is unconditional; pass cond=None (class-conditional models take cond)")
        return self.sample_given(self.prior_sample(n, generator), generator)

    @torch.no_grad()
    def sample_given(self, z: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """x from the decoder at latents z (B, latent_dim), by the rules of `sample`: (B, *shape)."""
        params = self.decode(z)
        if self.table is not None:
            return self.table.sample(params, self.observation_log_scale(), self.spec.value_range, generator)
        mean = self.decoder_mean(params)
        if self.config.likelihood == "gaussian" and self.spec.kind != "image":
            scale = torch.as_tensor(self.observation_log_scale(), dtype=mean.dtype, device=mean.device).exp()
            noise = sample_standard_normal(mean.shape, generator=generator, device=mean.device, dtype=mean.dtype)
            return (mean + scale * noise).clamp(*self.spec.value_range)
        return quantize(mean, self.spec) if self.dequantizes else mean

    @torch.no_grad()
    def reconstruct(self, x: Tensor) -> Tensor:
        """E[x | z = mu(x)]: the decoder mean at the encoder mean, (B, *shape) in value_range."""
        return self.decoder_mean(self.decode(self.encode(x).mean))

    @torch.no_grad()
    def encode_mean(self, x: Tensor) -> Tensor:
        """The posterior means mu(x), (B, D) (for latent maps and interpolation)."""
        return self.encode(x).mean

    # -- helpers -----------------------------------------------------------------------------------
    @property
    def _dtype(self) -> torch.dtype:
        return next(self.decoder.parameters(), next(self.parameters())).dtype

    def _to_unit(self, x: Tensor) -> Tensor:
        low, high = self.spec.value_range
        return (x - low) / (high - low)

    def _posterior_draws(self, x: Tensor, q_z: DiagonalGaussian, k: int, generator: torch.Generator | None, chunk_size: int | None):
        """Yield (m, x_rep, q_rep, z) for the k draws z ~ q(z|x), m draws at a time, flattened to
        m * B rows (row j * B + b is draw j for sample b)."""
        if k < 1:
            raise ValueError(f"the number of samples k={k} must be >= 1")
        per_pass = chunk_size or max(1, _ROWS_PER_PASS // max(1, x.shape[0]))
        for start in range(0, k, per_pass):
            m = min(per_pass, k - start)
            q_rep = q_z.repeat(m)
            z = q_rep.rsample(generator)  # (m * B, D)
            yield m, x.repeat(m, *([1] * (x.dim() - 1))), q_rep, z


# ---------------------------------------------------------------------------------------------
# beta-VAE: the same model with the paper's defaults
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class BetaVAEConfig(VAEConfig):
    """VAEConfig with the beta-VAE's defaults (Higgins et al. 2017): beta = 4, p(z) = N(0, I), and a
    Gaussian decoder.

    beta = 4 is the paper's value for dSprites, the setting closest to digits' (10 latents there, 8
    here). In the paper's normalised units, beta_norm = beta M / N with M latents and N pixels, it is
    4 * 8 / 64 = 0.5 on digits, a much heavier weight per latent than dSprites' 4 * 10 / 4096 ~ 0.01.
    The paper's factorised prior N(0, I) replaces the VAE's VampPrior default: the pressure of beta
    towards independent latents is pressure towards that prior.

    likelihood="gaussian" (on dequantized pixels) replaces the VAE's Bernoulli default, because with
    the Bernoulli cross-entropy of grey levels beta = 4 empties the latents: most of that cost is the
    targets' own entropy, which no code can remove, so a nat of KL buys less than beta nats of it.
    Measured on digits (6,000 steps, one seed each, N(0, I) prior): Bernoulli, beta = 1, 2, 3, 4: KL
    4.1, 1.7, 0.07, 0.0001 nats, FID 50, 134, 527, 622 (posterior collapse from beta = 3); Gaussian,
    beta = 1: KL 17.1 nats, FID 135, bound 2.86 bits/dim; beta = 4, two runs of the same command:
    KL 8.7 and 8.5 nats, FID 100 and 117, bound 2.90 and 2.84 bits/dim.
    """

    beta: float = 4.0
    prior: str = "standard"
    likelihood: str = "gaussian"


@register("beta-vae", BetaVAEConfig, family="latent",
          summary="beta-VAE (Higgins et al. 2017): the VAE with beta = 4, an N(0, I) prior, a Gaussian decoder")
class BetaVAE(VAE):
    """beta-VAE (Higgins et al. 2017): the VAE trained on E_q[log p(x|z)] - beta KL(q(z|x) || p(z))
    with beta > 1, which trades reconstruction for latents that follow the factorised prior more
    closely (and, on data with independent factors of variation, disentangle them). The model is the
    VAE itself (`VAE.regularizer` applies beta); only the config's defaults differ (`BetaVAEConfig`).
    The logged `elbo` and the IWAE bound are those of beta = 1.

    >>> import torch, genlab
    >>> model = genlab.create("beta-vae", data=genlab.data.load("digits"), channels=(8,))
    >>> model.config.beta, model.config.prior, model.config.likelihood
    (4.0, 'standard', 'gaussian')
    """

    config: BetaVAEConfig
