"""Expectation-maximisation for a full-covariance Gaussian mixture (Dempster, Laird & Rubin 1977).

The classic latent-variable model: a hidden component k ~ Categorical(pi), then x | k ~ N(mu_k, Sigma_k),

    p(x) = sum_k pi_k N(x; mu_k, Sigma_k),     x in R^D, K components.

E-step: responsibilities r_nk = p(k | x_n) = pi_k N(x_n; mu_k, Sigma_k) / p(x_n), computed in log
space with logsumexp. M-step, the closed-form maximiser of E_r[log p(x, k)] (Bishop 2006, eq. 9.24-9.27):

    N_k = sum_n r_nk,   pi_k = N_k / N,   mu_k = sum_n r_nk x_n / N_k,
    Sigma_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg_covar I.

With reg_covar = 0 no iteration lowers the log-likelihood sum_n log p(x_n) (Dempster et al. 1977,
theorem 1). The floor reg_covar I (as scikit-learn's GaussianMixture) keeps a component that
collapses onto a few points, or onto pixels that never vary, invertible; it makes the M-step an
approximate maximiser, so near convergence the log-likelihood may move down by O(reg_covar).

Here: `kmeans_plusplus` (Arthur & Vassilvitskii 2007) and Lloyd's k-means for initialisation,
`e_step`, `m_step`, `GaussianMixture` (an nn.Module whose parameters are float64 buffers, with `fit`,
`em_step`, `log_prob`, `sample`), and the registered model `gmm-em`, trained by EM through `genlab.fit`.
"""

from __future__ import annotations

import dataclasses
import math

import torch
from torch import Tensor, nn

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec
from genlab.data.transforms import dequantize, levels_of, quantize
from genlab.errors import ConfigError, DataError
from genlab.models.base import GenerativeModel, Loss
from genlab.registry import register

__all__ = [
    "GMMConfig",
    "GaussianMixture",
    "GaussianMixtureModel",
    "e_step",
    "gaussian_log_densities",
    "kmeans",
    "kmeans_plusplus",
    "m_step",
]

INITS = ("kmeans", "kmeans++", "random")
LOG_2PI = math.log(2.0 * math.pi)
# scikit-learn adds 10 machine epsilons to N_k so an empty component divides by a tiny number, not 0
_EMPTY_COMPONENT = 10.0


# ---------------------------------------------------------------------------------------------
# The pieces of EM, as functions on tensors (batched over samples and components)
# ---------------------------------------------------------------------------------------------
def gaussian_log_densities(x: Tensor, means: Tensor, scale_tril: Tensor) -> Tensor:
    """log N(x_n; mu_k, Sigma_k) for every sample and component, Sigma_k = L_k L_k^T.

    x (N, D), means (K, D), scale_tril (K, D, D) lower-triangular Cholesky factors -> (N, K):
    -1/2 |L_k^-1 (x_n - mu_k)|^2 - sum_i log L_k,ii - D/2 log 2 pi.
    """
    diff = (x[None, :, :] - means[:, None, :]).transpose(1, 2)  # (K, D, N)
    white = torch.linalg.solve_triangular(scale_tril, diff, upper=False)  # L_k^-1 (x - mu_k): (K, D, N)
    half_log_det = torch.log(torch.diagonal(scale_tril, dim1=-2, dim2=-1)).sum(-1)  # (K,)
    return (-0.5 * white.pow(2).sum(1) - half_log_det[:, None] - 0.5 * x.shape[1] * LOG_2PI).T  # (K, N) -> (N, K)


def e_step(x: Tensor, log_weights: Tensor, means: Tensor, scale_tril: Tensor) -> tuple[Tensor, Tensor]:
    """Log-responsibilities log r_nk = log pi_k + log N(x_n; mu_k, Sigma_k) - log p(x_n), (N, K),
    and the log-likelihood log p(x_n) = logsumexp_k [log pi_k + log N(x_n; mu_k, Sigma_k)], (N,)."""
    joint = gaussian_log_densities(x, means, scale_tril) + log_weights  # (N, K)
    log_px = torch.logsumexp(joint, dim=1)  # (N,)
    return joint - log_px[:, None], log_px


def m_step(x: Tensor, responsibilities: Tensor, reg_covar: float) -> tuple[Tensor, Tensor, Tensor]:
    """The closed-form M-step from responsibilities r (N, K) of x (N, D): (log pi (K,), mu (K, D),
    Sigma (K, D, D)) with N_k = sum_n r_nk, pi_k = N_k / N, mu_k = r_k^T x / N_k and
    Sigma_k = sum_n r_nk (x_n - mu_k)(x_n - mu_k)^T / N_k + reg_covar I."""
    counts = responsibilities.sum(0) + _EMPTY_COMPONENT * torch.finfo(x.dtype).eps  # (K,)
    means = responsibilities.T @ x / counts[:, None]  # (K, D)
    diff = x[None, :, :] - means[:, None, :]  # (K, N, D)
    weighted = diff * responsibilities.T[:, :, None]  # r_nk (x_n - mu_k): (K, N, D)
    covariances = weighted.transpose(1, 2) @ diff / counts[:, None, None]  # (K, D, D)
    covariances = covariances + reg_covar * torch.eye(x.shape[1], dtype=x.dtype, device=x.device)
    return torch.log(counts / x.shape[0]), means, covariances


def kmeans_plusplus(x: Tensor, k: int, generator: torch.Generator | None = None) -> Tensor:
    """k-means++ seeding (Arthur & Vassilvitskii 2007): the first centre uniformly from x (N, D), each
    next one with probability proportional to D(x)^2, the squared distance to the nearest centre
    chosen so far. Returns (k, D) rows of x."""
    n = x.shape[0]
    if not 1 <= k <= n:
        raise DataError(f"k-means++ needs 1 <= k <= N samples; got k={k} for {n} samples")
    index = torch.randint(n, (1,), generator=generator, device=_generator_device(generator, x)).to(x.device)
    centres = [x[index[0]]]
    nearest = (x - centres[0]).pow(2).sum(1)  # (N,)
    for _ in range(1, k):
        # an all-zero D^2 (every point already a centre) would make multinomial fail: fall back to uniform
        weights = nearest if float(nearest.sum()) > 0 else torch.ones_like(nearest)
        index = torch.multinomial(weights.double().to(_generator_device(generator, x)), 1, generator=generator).to(x.device)
        centres.append(x[index[0]])
        nearest = torch.minimum(nearest, (x - centres[-1]).pow(2).sum(1))
    return torch.stack(centres)


def kmeans(x: Tensor, centres: Tensor, max_iter: int = 100) -> tuple[Tensor, Tensor]:
    """Lloyd's algorithm from `centres` (K, D) on x (N, D): assign each point to its nearest centre,
    move each centre to its points' mean; stop when no assignment changes. A centre that loses all
    its points stays where it is. Returns (centres (K, D), labels (N,))."""
    labels = None
    for _ in range(max_iter):
        new_labels = torch.cdist(x, centres).argmin(1)  # (N,)
        if labels is not None and torch.equal(new_labels, labels):
            break
        labels = new_labels
        one_hot = torch.nn.functional.one_hot(labels, centres.shape[0]).to(x.dtype)  # (N, K)
        counts = one_hot.sum(0)  # (K,)
        sums = one_hot.T @ x  # (K, D)
        centres = torch.where(counts[:, None] > 0, sums / counts.clamp_min(1.0)[:, None], centres)
    return centres, labels


def _generator_device(generator: torch.Generator | None, like: Tensor) -> torch.device:
    return like.device if generator is None else generator.device


# ---------------------------------------------------------------------------------------------
# The mixture as a module: float64 buffers, fit by EM
# ---------------------------------------------------------------------------------------------
class GaussianMixture(nn.Module):
    """A K-component full-covariance Gaussian mixture in R^D whose parameters are buffers (float64 by
    default), so that they are saved in a state_dict and restored by `load_state_dict`.

    log_weights (K,) = log pi, means (K, D), covariances (K, D, D). Starts as K copies of N(0, I)
    with equal weights until `fit` or `set_parameters`.

    >>> import torch
    >>> x = torch.cat([torch.randn(200, 2) - 3, torch.randn(200, 2) + 3]).double()
    >>> gmm = GaussianMixture(2, 2)
    >>> history = gmm.fit(x, generator=torch.Generator().manual_seed(0))
    >>> all(b >= a - 1e-9 for a, b in zip(history, history[1:]))
    True
    >>> sorted(gmm.means[:, 0].round().tolist())
    [-3.0, 3.0]
    """

    def __init__(self, num_components: int, dim: int, *, dtype: torch.dtype = torch.float64) -> None:
        super().__init__()
        if num_components < 1 or dim < 1:
            raise ConfigError(f"a Gaussian mixture needs num_components >= 1 and dim >= 1; got {num_components} and {dim}")
        self.num_components, self.dim = num_components, dim
        self.register_buffer("log_weights", torch.full((num_components,), -math.log(num_components), dtype=dtype))
        self.register_buffer("means", torch.zeros(num_components, dim, dtype=dtype))
        self.register_buffer("covariances", torch.eye(dim, dtype=dtype).repeat(num_components, 1, 1))

    # -- parameters ---------------------------------------------------------------------------
    def set_parameters(self, log_weights: Tensor, means: Tensor, covariances: Tensor) -> None:
        """Copy (log pi (K,), mu (K, D), Sigma (K, D, D)) into the buffers."""
        with torch.no_grad():
            self.log_weights.copy_(log_weights)
            self.means.copy_(means)
            self.covariances.copy_(covariances)

    def scale_tril(self) -> Tensor:
        """The Cholesky factors L_k of Sigma_k = L_k L_k^T, (K, D, D)."""
        factor, info = torch.linalg.cholesky_ex(self.covariances)
        if bool((info > 0).any()):
            bad = torch.nonzero(info > 0).flatten().tolist()
            raise DataError(
                f"the covariance of mixture component(s) {bad} is not positive definite; "
                "raise reg_covar (e.g. 1e-3) or use fewer components"
            )
        return factor

    def _as_model(self, x: Tensor) -> Tensor:
        if x.dim() != 2 or x.shape[1] != self.dim:
            raise DataError(f"the mixture models vectors of dimension {self.dim}; got x of shape {tuple(x.shape)}")
        return x.to(self.means.dtype)

    # -- EM ------------------------------------------------------------------------------------
    def responsibilities(self, x: Tensor) -> Tensor:
        """p(k | x_n), x (N, D) -> (N, K), in the buffers' dtype."""
        log_r, _ = e_step(self._as_model(x), self.log_weights, self.means, self.scale_tril())
        return log_r.exp()

    @torch.no_grad()
    def em_step(self, x: Tensor, reg_covar: float = 1e-6) -> Tensor:
        """One EM iteration on x (N, D): E-step at the current parameters, then the M-step.

        Returns the mean log-likelihood (1/N) sum_n log p(x_n) at the parameters *before* the update,
        so that a sequence of calls traces the (non-decreasing, for reg_covar = 0) EM objective."""
        x = self._as_model(x)
        log_r, log_px = e_step(x, self.log_weights, self.means, self.scale_tril())
        self.set_parameters(*m_step(x, log_r.exp(), reg_covar))
        return log_px.mean()

    @torch.no_grad()
    def initialize(self, x: Tensor, init: str | Tensor = "kmeans", *, reg_covar: float = 1e-6, generator: torch.Generator | None = None) -> None:
        """Parameters from a first M-step on initial responsibilities, as scikit-learn does:

        "kmeans": hard assignments of Lloyd's k-means from k-means++ seeds; "kmeans++": hard
        assignments to the k-means++ seeds themselves; "random": responsibilities drawn uniformly
        and normalised per sample; a tensor (K, D): hard assignments to these means.
        """
        x = self._as_model(x)
        k = self.num_components
        if isinstance(init, Tensor):
            centres = init.to(x)
            if centres.shape != (k, self.dim):
                raise DataError(f"init means must have shape ({k}, {self.dim}); got {tuple(centres.shape)}")
        elif init == "random":
            u = torch.rand(x.shape[0], k, generator=generator, dtype=x.dtype, device=_generator_device(generator, x)).to(x.device)
            self.set_parameters(*m_step(x, u / u.sum(1, keepdim=True), reg_covar))
            return
        elif init in ("kmeans", "kmeans++"):
            centres = kmeans_plusplus(x, k, generator)
            if init == "kmeans":
                centres, _ = kmeans(x, centres)
        else:
            raise ConfigError(f"init={init!r} is unknown; choose one of {', '.join(map(repr, INITS))} or pass means (K, D)")
        labels = torch.cdist(x, centres).argmin(1)
        self.set_parameters(*m_step(x, torch.nn.functional.one_hot(labels, k).to(x.dtype), reg_covar))

    @torch.no_grad()
    def fit(
        self,
        x: Tensor,
        *,
        max_iter: int = 100,
        tol: float = 1e-6,
        reg_covar: float = 1e-6,
        init: str | Tensor | None = "kmeans",
        generator: torch.Generator | None = None,
    ) -> list[float]:
        """Initialise (unless init is None: start from the current parameters) and iterate EM on
        x (N, D) until the mean log-likelihood rises by less than `tol` or `max_iter` iterations.

        Returns the mean log-likelihood before each M-step, then after the last one (max_iter + 1
        values at most): the curve EM climbs.
        """
        if init is not None:
            self.initialize(x, init, reg_covar=reg_covar, generator=generator)
        history: list[float] = []
        for _ in range(max_iter):
            history.append(float(self.em_step(x, reg_covar)))
            if len(history) > 1 and abs(history[-1] - history[-2]) < tol:
                break
        history.append(float(self.log_prob(x).mean()))
        return history

    # -- the density -----------------------------------------------------------------------------
    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, Sigma_k)], x (N, D) -> (N,) in x's dtype."""
        joint = gaussian_log_densities(self._as_model(x), self.means, self.scale_tril()) + self.log_weights
        return torch.logsumexp(joint, dim=1).to(x.dtype if x.is_floating_point() else self.means.dtype)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral sampling: k ~ Categorical(pi), x = mu_k + L_k eps, eps ~ N(0, I). -> (n, D) in the
        buffers' dtype, on their device; `generator` may live on the CPU."""
        device = _generator_device(generator, self.means)
        k = torch.multinomial(self.log_weights.exp().to(device), n, replacement=True, generator=generator).to(self.means.device)
        eps = torch.randn(n, self.dim, generator=generator, dtype=self.means.dtype, device=device).to(self.means.device)
        return self.means[k] + (self.scale_tril()[k] @ eps[:, :, None])[:, :, 0]


# ---------------------------------------------------------------------------------------------
# The registered model
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class GMMConfig(Config):
    """Configuration of `gmm-em`, a Gaussian mixture fitted by EM to the flattened data.

    components: K, the number of mixture components.
    reg_covar: added to every covariance's diagonal in the M-step (data units squared), as
        scikit-learn's GaussianMixture; keeps components invertible, and on small data it is the
        main guard against overfitting (digits, validation bits/dim with K = 10: 2.70 at 1e-4,
        2.66 at 1e-3, 2.80 at 3e-3; K = 5 or 20 did no better).
    init: "kmeans" (k-means++ seeds refined by Lloyd's algorithm, scikit-learn's default),
        "kmeans++" (the seeds alone) or "random" responsibilities; drawn from the run's seed.
    dequantize: data with discrete levels (spec.levels): fit the density of uniformly dequantized
        values, so log_prob converts to bits/dim of the discrete data; samples are quantized back
        to the levels.
    """

    components: int = 10
    reg_covar: float = 1e-3
    init: str = "kmeans"
    dequantize: bool = True

    def validate(self) -> None:
        self._positive("components")
        self._positive("reg_covar", allow_zero=True)
        self._choice("init", INITS)


@register("gmm-em", GMMConfig, family="latent", summary="Gaussian mixture fitted by EM: exact likelihood, the classic latent-variable model")
class GaussianMixtureModel(GenerativeModel):
    """A full-covariance Gaussian mixture on the flattened data, trained by EM through `genlab.fit`.

    Training: `initialize_from_data` draws the initial parameters (config.init) from the training
    split; then every training step is one EM iteration (`training_step`, no gradients) on the
    step's batch. The default batch_size (100,000) exceeds every embedded dataset, so a step sees the
    whole training split and `genlab train gmm-em` runs classic EM, whose logged `log_likelihood`
    (mean log p(x) per sample, before the step's M-step) climbs from step to step (on discrete data
    every step sees the same dequantized values; see `training_step`). A smaller batch_size gives
    stochastic EM iterations on random subsets, which no longer climb monotonically. Single process
    only: under DDP each process would update from its own slice.

    log_prob is exact: log sum_k pi_k N(x; mu_k, Sigma_k) of the (dequantized) data.

    >>> import torch, genlab
    >>> data = genlab.data.load("8gaussians", n=400)
    >>> model = genlab.create("gmm-em", data=data, components=8)
    >>> run = genlab.fit(model, data, max_steps=20, batch_size=320, progress=False)  # the 320 training points
    >>> model.sample(5, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([5, 2])
    """

    initializes_once = True

    config: GMMConfig
    exact_likelihood = True
    has_custom_step = True
    # ema_decay 0: an average of EM iterates is no EM solution (and the EM parameters have no gradient)
    train_defaults = {"max_steps": 100, "batch_size": 100_000, "ema_decay": 0.0, "log_every": 5,
                      "checkpoint_every": 0, "sample_every": 0, "val_batches": 0}

    def __init__(self, config: GMMConfig, spec: DataSpec) -> None:
        super().__init__(config, spec)
        self.mixture = GaussianMixture(config.components, spec.dim)

    @property
    def dequantizes(self) -> bool:
        return self.config.dequantize and self.spec.levels is not None

    def likelihood_kind(self) -> str:
        return "dequantized" if self.dequantizes else "continuous"

    def observe(self, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
        """The flattened values the mixture models, (B, D): x, or x dequantized (see GMMConfig)."""
        values = dequantize(x, self.spec, generator) if self.dequantizes else x
        return values.reshape(values.shape[0], -1)

    # -- training ---------------------------------------------------------------------------------
    def initialize(self, train, generator: torch.Generator) -> None:
        """The initial parameters (config.init) from the (dequantized) training split; once per model."""
        x, _ = train.tensors()
        if len(x) < self.config.components:
            raise DataError(f"gmm-em with components={self.config.components} needs at least that many training samples; got {len(x)}")
        values = self.observe(x.to(self.device), generator)
        self.mixture.initialize(values, self.config.init, reg_covar=self.config.reg_covar, generator=generator)

    def configure_optimizers(self, lr: float, weight_decay: float = 0.0) -> dict[str, torch.optim.Optimizer]:
        """EM takes no gradient steps; an optimizer with no parameters keeps the engine's bookkeeping
        (learning-rate log, checkpoints) the same as for every other model."""
        return {"model": torch.optim.SGD([{"params": []}], lr=lr)}

    def training_step(self, batch: Batch, ctx) -> Loss:
        """One EM iteration on the batch. The loss logged is the negative mean log-likelihood per
        sample at the parameters before the update.

        Dequantization uses common random numbers: the noise a sample gets depends only on its rank
        among the batch's images (ranked by a fixed random projection), not on the batch's order.
        When every batch is the whole training split, EM then iterates on one fixed dequantized set
        and its log-likelihood climbs monotonically; with fresh noise at each step it would not (a
        full covariance fitted to one draw of the noise scores a fresh draw lower).
        """
        log_likelihood = self.mixture.em_step(self._fixed_dequantization(batch.x), self.config.reg_covar).float()
        return Loss(-log_likelihood, {"log_likelihood": log_likelihood})

    def _fixed_dequantization(self, x: Tensor) -> Tensor:
        """x (B, *shape) dequantized with noise assigned by the rank of each image, (B, D)."""
        if not self.dequantizes:
            return self.observe(x)
        flat = x.reshape(x.shape[0], -1).double()
        projection = torch.randn(flat.shape[1], generator=torch.Generator().manual_seed(0), dtype=torch.float64)
        rank = torch.argsort(torch.argsort(flat @ projection.to(flat.device)))  # equal images share a key, and swap freely
        noise = torch.rand(x.shape, generator=torch.Generator().manual_seed(1), dtype=x.dtype).to(x.device)[rank]
        low, high = self.spec.value_range
        return (low + (levels_of(x, self.spec).to(x.dtype) + noise) * ((high - low) / self.spec.levels)).reshape(x.shape[0], -1)

    def loss(self, batch: Batch) -> Loss:
        """Mean -log p(x) per sample (validation; no update)."""
        log_likelihood = self.mixture.log_prob(self.observe(batch.x)).mean().float()
        return Loss(-log_likelihood, {"log_likelihood": log_likelihood})

    # -- likelihood and samples -----------------------------------------------------------------------
    def log_prob(self, x: Tensor, *, generator: torch.Generator | None = None) -> Tensor:
        """Exact log p(x) in nats, (B,): of x itself, or, on discrete data, of x dequantized with one
        draw from `generator` (seeded with 0 when None, so the same x gives the same number)."""
        if self.dequantizes and generator is None:
            generator = torch.Generator(device=x.device).manual_seed(0)
        return self.mixture.log_prob(self.observe(x, generator)).to(torch.get_default_dtype())

    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Ancestral samples (n, *shape), clipped to the data's value range and, when the model
        dequantizes, quantized to the data's levels."""
        if cond is not None:
            raise ConfigError("gmm-em is unconditional; pass cond=None")
        x = self.mixture.sample(n, generator).to(torch.get_default_dtype()).reshape(n, *self.spec.shape)
        x = x.clamp(*self.spec.value_range)
        return quantize(x, self.spec) if self.dequantizes else x
