"""Exact denoisers for data drawn from a Gaussian mixture: the oracle a trained network imitates.

If x_0 ~ sum_k w_k N(m_k, C_k) and x_t = alpha x_0 + sigma eps, then x_t is again a mixture,

    p_t(x) = sum_k w_k N(x; alpha m_k, alpha^2 C_k + sigma^2 I),

whose score is the responsibility-weighted sum of the components' scores,

    grad log p_t(x) = sum_k r_k(x) (-(alpha^2 C_k + sigma^2 I)^{-1} (x - alpha m_k)),   r_k = w_k N_k(x) / p_t(x),

and the best noise prediction E[eps | x_t] is eps*(x, t) = -sigma(t) grad log p_t(x) (Vincent 2011; Tweedie's
formula). Each C_k is diagonalised once, C_k = U_k diag(lambda_k) U_k^T, so that the covariance at any
time is U_k diag(alpha^2 lambda_k + sigma^2) U_k^T and no matrix is inverted per call.

Use it to test samplers against known moments, to check a trained denoiser, and for demos.
"""

from __future__ import annotations

import math
from typing import Callable

import torch
from torch import Tensor

from genlab.errors import ConfigError
from genlab.models.diffusion.schedules import NoiseSchedule
from genlab.nn.distributions import sample_standard_normal

__all__ = ["GaussianMixtureData"]


class GaussianMixtureData:
    """p(x) = sum_k w_k N(x; m_k, C_k) in D dimensions, with its exact noised density, score and eps.

    weights: (K,) positive (normalised here); means: (K, D); exactly one of covariances: (K, D, D)
    symmetric positive definite, or stds: a float, (K,) (isotropic per component) or (K, D) (diagonal).
    Computations run in the means' dtype (use float64 for tests of precision); inputs are cast to it
    and results cast back.

    >>> gm = GaussianMixtureData(torch.tensor([0.5, 0.5]), torch.tensor([[-2.0], [2.0]]), stds=0.5)
    >>> x = gm.sample(4, generator=torch.Generator().manual_seed(0))
    >>> x.shape, gm.log_prob(x).shape
    (torch.Size([4, 1]), torch.Size([4]))
    >>> gm.mean, gm.covariance
    (tensor([0.]), tensor([[4.2500]]))
    """

    def __init__(
        self,
        weights: Tensor,
        means: Tensor,
        *,
        covariances: Tensor | None = None,
        stds: Tensor | float | None = None,
    ) -> None:
        means = torch.as_tensor(means)
        if not means.is_floating_point():
            means = means.to(torch.get_default_dtype())
        if means.dim() != 2:
            raise ConfigError(f"means must have shape (K, D), got {tuple(means.shape)}")
        k, d = means.shape
        weights = torch.as_tensor(weights, dtype=means.dtype)
        if weights.shape != (k,) or not bool((weights > 0).all()):
            raise ConfigError(f"weights must be {k} positive numbers (one per mean), got shape {tuple(weights.shape)}")
        if (covariances is None) == (stds is None):
            raise ConfigError("pass exactly one of covariances (K, D, D) or stds (float, (K,) or (K, D))")
        if covariances is not None:
            covariances = torch.as_tensor(covariances, dtype=means.dtype)
            if covariances.shape != (k, d, d):
                raise ConfigError(f"covariances must have shape ({k}, {d}, {d}), got {tuple(covariances.shape)}")
            covariances = 0.5 * (covariances + covariances.transpose(-1, -2))
            eigenvalues, eigenvectors = torch.linalg.eigh(covariances)
        else:
            stds = torch.as_tensor(stds, dtype=means.dtype)
            eigenvalues = (stds.reshape(-1, 1) if stds.dim() == 1 else stds) ** 2 * torch.ones(k, d, dtype=means.dtype)
            eigenvectors = torch.eye(d, dtype=means.dtype).expand(k, d, d).clone()
        if not bool((eigenvalues > 0).all()):
            raise ConfigError("covariances must be positive definite (every std > 0)")
        self.weights = weights / weights.sum()  # (K,)
        self.means = means  # (K, D)
        self.eigenvalues = eigenvalues  # (K, D)
        self.eigenvectors = eigenvectors  # (K, D, D), columns are the eigenvectors

    # -- the data distribution ------------------------------------------------------------------
    @property
    def dim(self) -> int:
        return self.means.shape[1]

    @property
    def covariances(self) -> Tensor:
        """C_k = U_k diag(lambda_k) U_k^T, (K, D, D)."""
        return (self.eigenvectors * self.eigenvalues.unsqueeze(1)) @ self.eigenvectors.transpose(-1, -2)

    @property
    def mean(self) -> Tensor:
        """E[x] = sum_k w_k m_k, (D,)."""
        return self.weights @ self.means

    @property
    def covariance(self) -> Tensor:
        """Cov[x] = sum_k w_k (C_k + m_k m_k^T) - E[x] E[x]^T, (D, D)."""
        second_moment = torch.einsum("k,kde->de", self.weights, self.covariances + self.means.unsqueeze(2) * self.means.unsqueeze(1))
        return second_moment - torch.outer(self.mean, self.mean)

    def sample(self, n: int, generator: torch.Generator | None = None, *, return_components: bool = False):
        """n draws, (n, D): a component k ~ Categorical(w), then m_k + U_k diag(sqrt(lambda_k)) z, z ~ N(0, I).
        With return_components, also the (n,) component index of each draw."""
        where = generator.device if generator is not None else self.means.device
        component = torch.multinomial(self.weights.to(where), n, replacement=True, generator=generator).to(self.means.device)
        z = sample_standard_normal((n, self.dim), generator=generator, device=self.means.device, dtype=self.means.dtype)
        root = self.eigenvectors[component] * self.eigenvalues[component].sqrt().unsqueeze(1)  # (n, D, D)
        x = self.means[component] + torch.einsum("nde,ne->nd", root, z)
        return (x, component) if return_components else x

    def log_prob(self, x: Tensor) -> Tensor:
        """log p(x) in nats, x: (B, D) -> (B,)."""
        ones = torch.ones(x.shape[0], dtype=self.means.dtype, device=x.device)
        return self._log_prob(x, ones, torch.zeros_like(ones)).to(x.dtype)

    def responsibilities(self, x: Tensor) -> Tensor:
        """p(k | x) under the data distribution, (B, D) -> (B, K): which mode each point belongs to."""
        ones = torch.ones(x.shape[0], dtype=self.means.dtype, device=x.device)
        return torch.softmax(self._component_log_probs(x, ones, torch.zeros_like(ones))[0], dim=1)

    # -- the noised distribution p_t ------------------------------------------------------------
    def marginal_log_prob(self, x: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
        """log p_t(x) = log sum_k w_k N(x; alpha m_k, alpha^2 C_k + sigma^2 I), x: (B, D), t: (B,) -> (B,)."""
        alpha, sigma = self._scales(x, t, schedule)
        return self._log_prob(x, alpha, sigma).to(x.dtype)

    def score(self, x: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
        """grad_x log p_t(x) in closed form, x: (B, D), t: (B,) -> (B, D)."""
        alpha, sigma = self._scales(x, t, schedule)
        return self._score(x, alpha, sigma).to(x.dtype)

    def eps(self, x: Tensor, t: Tensor, schedule: NoiseSchedule) -> Tensor:
        """E[eps | x_t = x] = -sigma(t) grad log p_t(x): the exact noise prediction, (B, ...) -> (B, ...).

        Inputs of shape (B, ...) are flattened to (B, D) and the result reshaped back.
        """
        alpha, sigma = self._scales(x, t, schedule)
        flat = x.reshape(x.shape[0], -1)
        eps = -sigma.unsqueeze(1) * self._score(flat, alpha, sigma)
        return eps.reshape(x.shape).to(x.dtype)

    def eps_fn(self, schedule: NoiseSchedule) -> Callable[[Tensor, Tensor], Tensor]:
        """The exact denoiser (x_t (B, ...), t (B,)) -> eps_hat (B, ...) under `schedule`, for any sampler.

        >>> from genlab.models.diffusion.schedules import VPSDE
        >>> gm = GaussianMixtureData(torch.ones(1), torch.zeros(1, 2), stds=1.0)
        >>> eps_fn = gm.eps_fn(VPSDE())
        >>> x = torch.tensor([[1.0, -2.0]])
        >>> torch.allclose(eps_fn(x, torch.tensor([0.5])), VPSDE().sigma(torch.tensor(0.5)) * x)  # N(0, I) stays N(0, I)
        True
        """

        def eps_fn(x_t: Tensor, t: Tensor) -> Tensor:
            return self.eps(x_t, t, schedule)

        return eps_fn

    # -- the shared computation -----------------------------------------------------------------
    def _scales(self, x: Tensor, t: Tensor, schedule: NoiseSchedule) -> tuple[Tensor, Tensor]:
        t = torch.as_tensor(t, device=x.device).to(self.means.dtype).expand(x.shape[0])
        return schedule.alpha(t).to(self.means.dtype), schedule.sigma(t).to(self.means.dtype)

    def _component_log_probs(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor, Tensor]:
        """(log w_k + log N_k(x) (B, K), y = U_k^T (x - alpha m_k) (B, K, D), variances (B, K, D))."""
        x = x.to(self.means.dtype)
        device = x.device
        means, eigenvectors = self.means.to(device), self.eigenvectors.to(device)
        diff = x.unsqueeze(1) - alpha.reshape(-1, 1, 1) * means  # (B, K, D)
        y = torch.einsum("bkd,kde->bke", diff, eigenvectors)  # coordinates in each component's eigenbasis
        variance = alpha.reshape(-1, 1, 1) ** 2 * self.eigenvalues.to(device) + sigma.reshape(-1, 1, 1) ** 2  # (B, K, D)
        log_normal = -0.5 * (y**2 / variance + torch.log(variance) + math.log(2 * math.pi)).sum(-1)  # (B, K)
        return torch.log(self.weights.to(device)) + log_normal, y, variance

    def _log_prob(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        joint, _, _ = self._component_log_probs(x, alpha, sigma)
        return torch.logsumexp(joint, dim=1)

    def _score(self, x: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        joint, y, variance = self._component_log_probs(x, alpha, sigma)
        responsibility = torch.softmax(joint, dim=1)  # (B, K)
        component_scores = -torch.einsum("bke,kde->bkd", y / variance, self.eigenvectors.to(x.device))  # (B, K, D)
        return (responsibility.unsqueeze(2) * component_scores).sum(1)

    def __repr__(self) -> str:
        return f"GaussianMixtureData(components={self.means.shape[0]}, dim={self.dim})"


class ExactDenoiserNetwork(torch.nn.Module):
    """A drop-in network for a `DiffusionModel` (`model.net = ExactDenoiserNetwork(model, data)`)
    that returns the exact prediction for Gaussian-mixture data: eps, x0 or v as the model's
    objective asks, or EDM's raw output F = (x0 - c_skip x) / c_out. It recovers t from the noise
    conditioning the model feeds it (1000 t; log(sigma)/4 for VE and EDM), so the model's own
    wiring (parameterisation, preconditioning, guidance, samplers) is what gets exercised. The data
    must live in the model's normalised space. `calls` counts its evaluations.
    """

    def __init__(self, model, data: GaussianMixtureData) -> None:
        super().__init__()
        self.model, self.data = [model], data  # a list: no submodule cycle
        self.anchor = torch.nn.Parameter(torch.zeros((), dtype=torch.float64))  # gives the model a dtype
        self.calls = 0

    def forward(self, x: Tensor, noise_level: Tensor, y: Tensor | None = None) -> Tensor:
        from genlab.models.diffusion.objectives import prediction_target
        from genlab.models.diffusion.schedules import VESDE

        self.calls += 1
        model = self.model[0]
        schedule = model.schedule
        if model.preconditioning is not None:  # EDM: c_noise = log(sigma) / 4 with sigma = t; input c_in x
            t = torch.exp(4 * noise_level)
            x_t = x / model.preconditioning.c_in(t)[:, None]
        elif isinstance(schedule, VESDE):  # c_noise = log(sigma(t)) / 4
            t = (4 * noise_level - math.log(schedule.sigma_min)) / math.log(schedule.sigma_max / schedule.sigma_min)
            x_t = x
        else:  # 1000 t for discrete and VP schedules
            t, x_t = noise_level / 1000.0, x
        eps = self.data.eps(x_t, t, schedule)
        alpha, sigma = schedule.alpha(t), schedule.sigma(t)
        x0 = (x_t - sigma[:, None] * eps) / alpha[:, None]
        if model.preconditioning is not None:
            return model.preconditioning.network_target(x0, x_t, t)
        return prediction_target(model.objective.prediction, x0, eps, alpha, sigma)
