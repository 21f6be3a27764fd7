"""The training objectives of the diffusion family, each written once: what the network predicts,
how the denoising error is weighted over noise levels, denoising and sliced score matching, EDM's
preconditioning, and the DDPM variational bound used for evaluation.

Notation (that of `schedules.py`; Kingma et al. 2021): x_t = alpha x_0 + sigma eps, eps ~ N(0, I),
SNR = alpha^2 / sigma^2. alpha, sigma are per-sample (B,) tensors (from `schedule.alpha(t)`,
`schedule.sigma(t)`) and broadcast over the data dimensions with `expand_like`. VE/EDM processes
are the case alpha = 1. Nothing here knows which schedule, network or sampler is used.

The three parameterisations of the network output (Ho et al. 2020; Salimans & Ho 2022):

    "eps": eps_hat                       "x0": x0_hat                   "v": v_hat, v = alpha eps - sigma x_0

and, since x_t = alpha x0_hat + sigma eps_hat holds for any prediction, the errors are tied by

    eps_hat - eps = -(alpha / sigma) (x0_hat - x0),      v_hat - v = -((alpha^2 + sigma^2) / sigma) (x0_hat - x0).

So every weighted denoising loss is w(t) * mean_i (x0_hat - x0)_i^2 for some w(t); `loss_weight`
gives w(t) for each weighting and `denoising_loss` computes the loss in the prediction's own space.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Callable, ClassVar

import torch
from torch import Tensor

from genlab.errors import ConfigError, DataError
from genlab.models.diffusion.schedules import expand_like
from genlab.nn.distributions import (
    LOG_2PI,
    at_least_float32,
    gaussian_kl,
    gaussian_log_likelihood,
    sample_standard_normal,
    sum_except_batch,
)

if TYPE_CHECKING:
    from genlab.models.diffusion.schedules import NoiseSchedule

MODEL_VARIANCES = ("beta", "beta_tilde")

EpsFunction = Callable[[Tensor, Tensor], Tensor]  # eps_hat = eps_fn(x_t (B, ...), t (B,) continuous time)
ScoreFunction = Callable[[Tensor], Tensor]  # s(x) = grad_x log p(x): (B, ...) -> (B, ...)


# -- prediction parameterisations -----------------------------------------------------------------
class Prediction:
    """What the network outputs, given x_t = alpha x0 + sigma eps: its training target, the way back
    from an output to (eps_hat, x0_hat), and the factor k(t) of its own error on the x0 error,
    ||output - target||^2 = k(t) ||x0_hat - x0||^2. alpha, sigma: (B,); tensors (B, ...)."""

    name: ClassVar[str]

    def target(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """What the network should output for x_t = alpha x0 + sigma eps; alpha, sigma expanded like x0."""
        raise NotImplementedError

    def to_eps_and_x0(self, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        """(eps_hat, x0_hat) from the output; alpha, sigma expanded like x_t."""
        raise NotImplementedError

    def error_factor(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        """k(t), (B,): the weight w(t) on the x0 error of the unweighted MSE in this space."""
        raise NotImplementedError

    def weight_ratio(self, weighting: "Weighting", alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        """r(t) = w(t) / k(t) for a weighting w = numerator / sigma^2, finite where alpha or sigma vanish."""
        return weighting.numerator(alpha, sigma, sigma_data, min_snr_gamma) / (sigma**2 * self.error_factor(alpha, sigma))


PREDICTIONS: dict[str, Prediction] = {}
WEIGHTINGS: dict[str, "Weighting"] = {}


def _register(registry: dict, name: str) -> Callable[[type], type]:
    """Class decorator: one instance of the class in `registry` under `name`."""

    def decorate(cls: type) -> type:
        cls.name = name
        registry[name] = cls()
        return cls

    return decorate


@_register(PREDICTIONS, "eps")
class EpsPrediction(Prediction):
    """eps_hat (Ho et al. 2020): x0_hat = (x_t - sigma eps_hat) / alpha; eps_hat - eps = -(alpha / sigma)
    (x0_hat - x0), so k = SNR = alpha^2 / sigma^2."""

    def target(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        return eps

    def to_eps_and_x0(self, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return output, (x_t - sigma * output) / alpha

    def error_factor(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        return alpha**2 / sigma**2

    def weight_ratio(self, weighting: "Weighting", alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        # w / SNR, written by each weighting so that alpha -> 0 stays finite
        return weighting.over_snr(alpha, sigma, sigma_data, min_snr_gamma)


@_register(PREDICTIONS, "x0")
class X0Prediction(Prediction):
    """x0_hat: eps_hat = (x_t - alpha x0_hat) / sigma (undefined at sigma = 0); k = 1."""

    def target(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        return x0

    def to_eps_and_x0(self, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return (x_t - alpha * output) / sigma, output

    def error_factor(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        return torch.ones_like(alpha)


@_register(PREDICTIONS, "v")
class VPrediction(Prediction):
    """v_hat, v = alpha eps - sigma x0 (Salimans & Ho 2022, sec. 4; for alpha^2 + sigma^2 = 1 it is
    d x_phi / d phi with alpha = cos phi, sigma = sin phi; the same formula is used unchanged for VE/EDM,
    alpha = 1): x0_hat = (alpha x_t - sigma v_hat) / (alpha^2 + sigma^2), eps_hat = (sigma x_t + alpha v_hat)
    / (alpha^2 + sigma^2); v_hat - v = -((alpha^2 + sigma^2) / sigma) (x0_hat - x0), so
    k = (alpha^2 + sigma^2)^2 / sigma^2 (SNR + 1 for VP)."""

    def target(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        return alpha * eps - sigma * x0

    def to_eps_and_x0(self, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        total = alpha**2 + sigma**2  # 1 for VP processes
        return (sigma * x_t + alpha * output) / total, (alpha * x_t - sigma * output) / total

    def error_factor(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        return (alpha**2 + sigma**2) ** 2 / sigma**2

    def weight_ratio(self, weighting: "Weighting", alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return weighting.numerator(alpha, sigma, sigma_data, min_snr_gamma) / (alpha**2 + sigma**2) ** 2


@_register(PREDICTIONS, "velocity")
class VelocityPrediction(Prediction):
    """u_hat, u = eps - x0: the conditional velocity d x_t / dt of the straight path x_t = (1 - t) x0 + t eps,
    the target of flow matching (Lipman et al. 2023, eq. 23) and rectified flow (Liu et al. 2023, eq. 1).
    For any x_t = alpha x0 + sigma eps: x0_hat = (x_t - sigma u_hat) / (alpha + sigma), eps_hat =
    (x_t + alpha u_hat) / (alpha + sigma); u_hat - u = -((alpha + sigma) / sigma) (x0_hat - x0), so
    k = (alpha + sigma)^2 / sigma^2."""

    def target(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        return eps - x0

    def to_eps_and_x0(self, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        total = alpha + sigma  # 1 on the straight path
        return (x_t + alpha * output) / total, (x_t - sigma * output) / total

    def error_factor(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        return (alpha + sigma) ** 2 / sigma**2

    def weight_ratio(self, weighting: "Weighting", alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return weighting.numerator(alpha, sigma, sigma_data, min_snr_gamma) / (alpha + sigma) ** 2


def _lookup(registry: dict, what: str, name: str) -> Any:
    """registry[name], else a ConfigError naming the allowed values."""
    if name not in registry:
        raise ConfigError(f"unknown {what} {name!r}; choose one of {', '.join(registry)}")
    return registry[name]


def get_prediction(prediction: str) -> Prediction:
    """The parameterisation registered as `prediction`, else a ConfigError naming the allowed values."""
    return _lookup(PREDICTIONS, "prediction", prediction)


def check_prediction(prediction: str) -> str:
    """`prediction` if it is one of PREDICTIONS, else a ConfigError naming the allowed values."""
    return get_prediction(prediction).name


def prediction_target(prediction: str, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """What a network of this parameterisation should output for x_t = alpha x0 + sigma eps:
    "eps": eps (Ho et al. 2020); "x0": x0; "v": v = alpha eps - sigma x0 (`VPrediction`).
    x0, eps: (B, ...); alpha, sigma: (B,).

    >>> x0, eps = torch.tensor([[1.0]]), torch.tensor([[2.0]])
    >>> prediction_target("v", x0, eps, torch.tensor([0.6]), torch.tensor([0.8]))
    tensor([[0.4000]])
    """
    return get_prediction(prediction).target(x0, eps, expand_like(alpha, x0), expand_like(sigma, x0))


def to_eps_and_x0(prediction: str, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
    """(eps_hat, x0_hat) from a network output, the exact inverse of `prediction_target`, by
    x_t = alpha x0_hat + sigma eps_hat (each `Prediction` states its formula).
    output, x_t: (B, ...); alpha, sigma: (B,). Returns two (B, ...) tensors (at least float32).

    >>> x_t = torch.tensor([[1.0]])
    >>> to_eps_and_x0("eps", torch.tensor([[0.5]]), x_t, torch.tensor([0.6]), torch.tensor([0.8]))
    (tensor([[0.5000]]), tensor([[1.]]))
    """
    parameterisation = get_prediction(prediction)
    output, x_t = at_least_float32(output), at_least_float32(x_t)
    a, s = expand_like(at_least_float32(alpha), x_t), expand_like(at_least_float32(sigma), x_t)
    return parameterisation.to_eps_and_x0(output, x_t, a, s)


# -- weighted denoising losses ----------------------------------------------------------------
class Weighting:
    """A loss weighting over noise levels: w(t) on the x0 error, and r(t) = w(t) / k(t) on the error of
    a prediction's own space (k: `Prediction.error_factor`). alpha, sigma: (B,) -> (B,)."""

    name: ClassVar[str]

    def weight(self, prediction: Prediction, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        """w(t): numerator / sigma^2."""
        return self.numerator(alpha, sigma, sigma_data, min_snr_gamma) / sigma**2

    def ratio(self, prediction: Prediction, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        """r(t) = w(t) / k(t), as the prediction writes it."""
        return prediction.weight_ratio(self, alpha, sigma, sigma_data, min_snr_gamma)

    def numerator(self, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        """sigma^2 w(t), finite at sigma = 0."""
        raise NotImplementedError

    def over_snr(self, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        """w(t) / SNR = numerator / alpha^2, finite at alpha = 0."""
        raise NotImplementedError


@_register(WEIGHTINGS, "simple")
class SimpleWeighting(Weighting):
    """The unweighted MSE in the prediction's own space (DDPM's L_simple for eps): w = k(t), r = 1."""

    def weight(self, prediction: Prediction, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return prediction.error_factor(alpha, sigma)

    def ratio(self, prediction: Prediction, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return torch.ones_like(alpha)


@_register(WEIGHTINGS, "snr")
class SNRWeighting(Weighting):
    """w = SNR = alpha^2 / sigma^2: the eps-MSE, whatever the prediction."""

    def numerator(self, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return alpha**2

    def over_snr(self, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return torch.ones_like(alpha)


@_register(WEIGHTINGS, "min_snr")
class MinSNRWeighting(Weighting):
    """w = min(SNR, gamma) (Hang et al. 2023, "Min-SNR")."""

    def numerator(self, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return torch.minimum(alpha**2, min_snr_gamma * sigma**2)

    def over_snr(self, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return torch.clamp(min_snr_gamma * sigma**2 / alpha**2, max=1.0)


@_register(WEIGHTINGS, "edm")
class EDMWeighting(Weighting):
    """w = SNR + 1 / sigma_data^2 (Karras et al. 2022, sec. 5)."""

    def numerator(self, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return alpha**2 + sigma**2 / sigma_data**2

    def over_snr(self, alpha: Tensor, sigma: Tensor, sigma_data: float, min_snr_gamma: float) -> Tensor:
        return 1.0 + sigma**2 / (sigma_data**2 * alpha**2)


@_register(WEIGHTINGS, "ncsn")
class NCSNWeighting(SNRWeighting):
    """w = SNR under the name the NCSN papers use: lambda(sigma) = sigma^2 on the score error (Song & Ermon 2019)."""


def get_weighting(weighting: str) -> Weighting:
    """The weighting registered as `weighting`, else a ConfigError naming the allowed values."""
    return _lookup(WEIGHTINGS, "loss weighting", weighting)


def check_weighting(weighting: str) -> str:
    """`weighting` if it is one of WEIGHTINGS, else a ConfigError naming the allowed values."""
    return get_weighting(weighting).name


def loss_weight(
    weighting: str,
    alpha: Tensor,
    sigma: Tensor,
    *,
    prediction: str = "eps",
    sigma_data: float = 0.5,
    min_snr_gamma: float = 5.0,
) -> Tensor:
    """w(t), the weight on the x0 error: every weighted loss is w(t) * mean_i (x0_hat - x0)_i^2.

        "simple"   the unweighted MSE in the prediction's own space (DDPM's L_simple for eps):
                   w = SNR for "eps", 1 for "x0", (alpha^2 + sigma^2)^2 / sigma^2 for "v" (= SNR + 1 if VP)
        "snr"      w = SNR = alpha^2 / sigma^2: the x0-MSE times the SNR, i.e. the eps-MSE, whatever
                   the prediction. The ELBO weights the x0 error by the SNR's decrease over a step
                   (Kingma et al. 2021, eq. 13), which this follows up to a factor per noise level.
        "min_snr"  w = min(SNR, gamma), gamma = min_snr_gamma = 5 (Hang et al. 2023, "Min-SNR").
        "edm"      w = lambda(sigma') = (sigma'^2 + sigma_data^2) / (sigma' sigma_data)^2 = SNR + 1 / sigma_data^2
                   (Karras et al. 2022, sec. 5), with sigma' = sigma / alpha EDM's noise level of x_t / alpha.
        "ncsn"     w = SNR: lambda(sigma) = sigma^2 on the score error (Song & Ermon 2019, eq. 6), since
                   sigma^2 ||s_hat - grad log q(x_t|x0)||^2 = ||eps_hat - eps||^2 = SNR ||x0_hat - x0||^2.
                   The same w as "snr", kept under the name the NCSN papers use.

    alpha, sigma: (B,) -> (B,), at least float32.

    >>> loss_weight("min_snr", torch.tensor([1.0, 1.0]), torch.tensor([0.1, 1.0]))
    tensor([5., 1.])
    """
    weights = get_weighting(weighting)
    alpha, sigma = at_least_float32(alpha), at_least_float32(sigma)
    return weights.weight(get_prediction(prediction), alpha, sigma, sigma_data, min_snr_gamma)


def denoising_loss(
    output: Tensor,
    x0: Tensor,
    eps: Tensor,
    alpha: Tensor,
    sigma: Tensor,
    *,
    prediction: str = "eps",
    weighting: str = "simple",
    sigma_data: float = 0.5,
    min_snr_gamma: float = 5.0,
) -> Tensor:
    """The weighted denoising loss per sample, (B,):

        loss = w(t) * mean_i (x0_hat - x0)_i^2 = r(t) * mean_i (output - target)_i^2,

    w(t) from `loss_weight`, target from `prediction_target`, x0_hat from `to_eps_and_x0`, and
    r(t) = w(t) / k(t) with k the factor of the prediction's own error (k = SNR for "eps", 1 for "x0",
    (alpha^2 + sigma^2)^2 / sigma^2 for "v"; r = 1 for "simple"). It is computed in the own space so
    that no division by alpha or sigma amplifies the error where they vanish. The mean runs over every
    data dimension (not the sum), so the scale does not grow with the image size; DDPM's L_simple
    (Ho et al. 2020, eq. 14) is prediction="eps", weighting="simple".

    output, x0, eps: (B, ...) with x_t = alpha x0 + sigma eps; alpha, sigma: (B,). At least float32.

    >>> x0, eps = torch.zeros(2, 3), torch.ones(2, 3)
    >>> denoising_loss(torch.zeros(2, 3), x0, eps, torch.ones(2), torch.ones(2))
    tensor([1., 1.])
    """
    parameterisation, weights = get_prediction(prediction), get_weighting(weighting)
    output, x0, eps = at_least_float32(output), at_least_float32(x0), at_least_float32(eps)
    alpha, sigma = at_least_float32(alpha), at_least_float32(sigma)
    target = parameterisation.target(x0, eps, expand_like(alpha, x0), expand_like(sigma, x0))
    squared_error = (output - target).pow(2).flatten(1).mean(1)  # (B, ...) -> (B,)
    return weights.ratio(parameterisation, alpha, sigma, sigma_data, min_snr_gamma) * squared_error


@dataclass(frozen=True)
class DenoisingLoss:
    """A denoising objective with its options fixed (and checked) at construction, for a model's config.

    `loss(output, x0, eps, alpha, sigma)` is `denoising_loss` with these options; `target` and
    `to_eps_and_x0` use this prediction. See `denoising_loss` for the mathematics.

    >>> objective = DenoisingLoss(prediction="v", weighting="min_snr")
    >>> objective.loss(torch.zeros(1, 2), torch.zeros(1, 2), torch.zeros(1, 2), torch.ones(1), torch.ones(1))
    tensor([0.])
    """

    prediction: str = "eps"
    weighting: str = "simple"
    sigma_data: float = 0.5
    min_snr_gamma: float = 5.0

    def __post_init__(self) -> None:
        check_prediction(self.prediction)
        check_weighting(self.weighting)
        if not self.sigma_data > 0:
            raise ConfigError(f"sigma_data must be > 0 (the data's standard deviation), got {self.sigma_data}")
        if not self.min_snr_gamma > 0:
            raise ConfigError(f"min_snr_gamma must be > 0, got {self.min_snr_gamma}")

    def target(self, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        return prediction_target(self.prediction, x0, eps, alpha, sigma)

    def to_eps_and_x0(self, output: Tensor, x_t: Tensor, alpha: Tensor, sigma: Tensor) -> tuple[Tensor, Tensor]:
        return to_eps_and_x0(self.prediction, output, x_t, alpha, sigma)

    def weight(self, alpha: Tensor, sigma: Tensor) -> Tensor:
        """w(t) on the x0 error, (B,); see `loss_weight`."""
        return loss_weight(
            self.weighting, alpha, sigma, prediction=self.prediction, sigma_data=self.sigma_data, min_snr_gamma=self.min_snr_gamma
        )

    def loss(self, output: Tensor, x0: Tensor, eps: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
        """Per-sample loss (B,); see `denoising_loss`."""
        return denoising_loss(
            output,
            x0,
            eps,
            alpha,
            sigma,
            prediction=self.prediction,
            weighting=self.weighting,
            sigma_data=self.sigma_data,
            min_snr_gamma=self.min_snr_gamma,
        )


# -- denoising score matching -----------------------------------------------------------------
def dsm_score_target(x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """grad_{x_t} log q(x_t | x0) = -(x_t - alpha x0) / sigma^2 = -eps / sigma, the denoising score
    matching target (Vincent 2011). Its conditional mean E[target | x_t] is the marginal score
    grad log q_t(x_t), so minimising E||s(x_t) - target||^2 trains s toward it.
    x_t, x0: (B, ...); alpha, sigma: (B,). Returns (B, ...).

    >>> dsm_score_target(torch.tensor([[1.0]]), torch.tensor([[0.0]]), torch.ones(1), torch.tensor([0.5]))
    tensor([[-4.]])
    """
    x_t, x0 = at_least_float32(x_t), at_least_float32(x0)
    a, s = expand_like(at_least_float32(alpha), x_t), expand_like(at_least_float32(sigma), x_t)
    return -(x_t - a * x0) / s**2


def ncsn_loss(score: Tensor, x_t: Tensor, x0: Tensor, alpha: Tensor, sigma: Tensor) -> Tensor:
    """The NCSN loss of a score network's output, per sample (B,) (Song & Ermon 2019, eq. 5-6):

        lambda(sigma) mean_i (score - grad_{x_t} log q(x_t | x0))_i^2,  lambda(sigma) = sigma^2,

    with the mean over dimensions (the paper's 1/2 and sum are a constant factor away). It equals
    denoising_loss(-sigma * score, x0, eps, alpha, sigma, prediction="eps", weighting="ncsn"):
    a score network is an eps network with eps_hat = -sigma s.
    score, x_t, x0: (B, ...); alpha, sigma: (B,).

    >>> x_t, x0 = torch.tensor([[1.0]]), torch.tensor([[0.0]])
    >>> ncsn_loss(torch.tensor([[-1.0]]), x_t, x0, torch.ones(1), torch.ones(1))
    tensor([0.])
    """
    score = at_least_float32(score)
    target = dsm_score_target(x_t, x0, alpha, sigma)
    return at_least_float32(sigma) ** 2 * (score - target).pow(2).flatten(1).mean(1)


# -- EDM preconditioning ----------------------------------------------------------------------
class EDMPreconditioning:
    """The network preconditioning of Karras et al. 2022 ("EDM", table 1 and sec. 5), for alpha = 1:

        D(x; sigma) = c_skip(sigma) x + c_out(sigma) F(c_in(sigma) x, c_noise(sigma))
        c_skip = sigma_data^2 / (sigma^2 + sigma_data^2)     c_out = sigma sigma_data / sqrt(sigma^2 + sigma_data^2)
        c_in   = 1 / sqrt(sigma^2 + sigma_data^2)             c_noise = log(sigma) / 4
        lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 = 1 / c_out^2

    With sigma_data the data's standard deviation, the network input c_in x and its training target
    F_target = (x0 - c_skip x) / c_out both have unit variance at every sigma, and
    lambda ||D - x0||^2 = ||F - F_target||^2. D is an x0 prediction: train it with
    `denoising_loss(D, ..., prediction="x0", weighting="edm")`; eps_hat = (x - D) / sigma.
    sigma: (B,); coefficients are (B,).

    >>> pre = EDMPreconditioning(sigma_data=0.5)
    >>> pre.c_skip(torch.tensor([0.5])), pre.c_in(torch.tensor([0.0]))
    (tensor([0.5000]), tensor([2.]))
    """

    def __init__(self, sigma_data: float = 0.5) -> None:
        if not sigma_data > 0:
            raise ConfigError(f"sigma_data must be > 0 (the data's standard deviation), got {sigma_data}")
        self.sigma_data = float(sigma_data)

    def __repr__(self) -> str:
        return f"EDMPreconditioning(sigma_data={self.sigma_data})"

    def c_skip(self, sigma: Tensor) -> Tensor:
        sigma = at_least_float32(sigma)
        return self.sigma_data**2 / (sigma**2 + self.sigma_data**2)

    def c_out(self, sigma: Tensor) -> Tensor:
        sigma = at_least_float32(sigma)
        return sigma * self.sigma_data / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_in(self, sigma: Tensor) -> Tensor:
        sigma = at_least_float32(sigma)
        return 1.0 / torch.sqrt(sigma**2 + self.sigma_data**2)

    def c_noise(self, sigma: Tensor) -> Tensor:
        return torch.log(at_least_float32(sigma)) / 4.0

    def loss_weight(self, sigma: Tensor) -> Tensor:
        """lambda(sigma) = (sigma^2 + sigma_data^2) / (sigma sigma_data)^2 on ||D - x0||^2, (B,)."""
        sigma = at_least_float32(sigma)
        return (sigma**2 + self.sigma_data**2) / (sigma * self.sigma_data) ** 2

    def network_target(self, x0: Tensor, x: Tensor, sigma: Tensor) -> Tensor:
        """F_target = (x0 - c_skip x) / c_out, what the raw network F is trained toward (EDM eq. 8). (B, ...)."""
        x0, x = at_least_float32(x0), at_least_float32(x)
        return (x0 - expand_like(self.c_skip(sigma), x) * x) / expand_like(self.c_out(sigma), x)

    def denoise(self, network: Callable[..., Tensor], x: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        """D(x; sigma) = c_skip x + c_out F(c_in x, c_noise[, y]). network is called as
        network(c_in x (B, ...), c_noise (B,)) or, with labels, network(c_in x, c_noise, y).
        x: (B, ...); sigma: (B,). Returns (B, ...), at least float32.

        >>> pre = EDMPreconditioning()
        >>> pre.denoise(lambda x, c_noise: torch.zeros_like(x), torch.ones(1, 2), torch.tensor([0.5]))
        tensor([[0.5000, 0.5000]])
        """
        x = at_least_float32(x)
        x_in = expand_like(self.c_in(sigma), x).to(x.dtype) * x
        c_noise = self.c_noise(sigma)
        raw = network(x_in, c_noise) if y is None else network(x_in, c_noise, y)  # (B, ...)
        return expand_like(self.c_skip(sigma), x) * x + expand_like(self.c_out(sigma), x) * at_least_float32(raw)

    def eps(self, network: Callable[..., Tensor], x: Tensor, sigma: Tensor, y: Tensor | None = None) -> Tensor:
        """eps_hat = (x - D(x; sigma)) / sigma, the same model as an eps prediction (alpha = 1). (B, ...)."""
        x = at_least_float32(x)
        return (x - self.denoise(network, x, sigma, y)) / expand_like(at_least_float32(sigma), x)


# -- sliced score matching --------------------------------------------------------------------
def sliced_score_matching_loss(
    score_fn: ScoreFunction,
    x: Tensor,
    *,
    projections: int = 1,
    generator: torch.Generator | None = None,
    variance_reduction: bool = True,
) -> Tensor:
    """Sliced score matching (Song et al. 2019, eq. 7-8), per sample (B,):

        SSM:     E_v[ v^T grad_x(v^T s(x)) + 1/2 (v^T s(x))^2 ] = E_v[ v^T (grad_x s(x)) v + 1/2 (v^T s(x))^2 ]
        SSM-VR:  E_v[ v^T (grad_x s(x)) v ] + 1/2 ||s(x)||^2       (variance_reduction=True)

    v ~ N(0, I), `projections` draws per sample averaged. Since E[v v^T] = I, the expectation is
    Hyvarinen's score matching objective tr(grad_x s(x)) + 1/2 ||s(x)||^2 (which is, up to a constant
    independent of s, 1/2 E||s(x) - grad log p(x)||^2). The Hessian-vector term is taken with
    create_graph=True, so the loss can be backpropagated into score_fn's parameters.
    score_fn: (B, ...) -> (B, ...); x: (B, ...). Returns (B,), at least float32.

    >>> loss = sliced_score_matching_loss(lambda x: -x, torch.zeros(2, 3), generator=torch.Generator().manual_seed(0))
    >>> bool((loss < 0).all())
    True
    """
    if projections < 1:
        raise ConfigError(f"projections must be >= 1, got {projections}")
    batch = x.shape[0]
    x_rep = x.repeat(projections, *([1] * (x.dim() - 1)))  # (B, ...) -> (P * B, ...), row p * B + b is row b
    if not x_rep.requires_grad:
        x_rep = x_rep.detach().requires_grad_(True)
    v = sample_standard_normal(x_rep.shape, generator=generator, device=x.device, dtype=x_rep.dtype)
    score = score_fn(x_rep)  # (P * B, ...)
    v_dot_score = sum_except_batch(at_least_float32(v) * at_least_float32(score))  # (P * B,)
    (grad_v_dot_score,) = torch.autograd.grad(v_dot_score.sum(), x_rep, create_graph=True)  # v^T grad_x s, (P * B, ...)
    curvature = sum_except_batch(at_least_float32(v) * at_least_float32(grad_v_dot_score))  # v^T (grad_x s) v
    if variance_reduction:
        energy = 0.5 * sum_except_batch(at_least_float32(score) ** 2)
    else:
        energy = 0.5 * v_dot_score**2
    return (curvature + energy).reshape(projections, batch).mean(0)  # (P * B,) -> (B,)


# -- the DDPM variational bound ---------------------------------------------------------------
def _log1mexp(x: Tensor) -> Tensor:
    """log(1 - exp(x)) for x <= 0, accurate near 0 and for large -x (Maechler 2012)."""
    return torch.where(x > -math.log(2.0), torch.log(-torch.expm1(x)), torch.log1p(-torch.exp(x)))


def _log_normal_interval(lower: Tensor, upper: Tensor) -> Tensor:
    """log(Phi(upper) - Phi(lower)) elementwise for lower < upper (either may be infinite)."""
    # intervals right of 0 are reflected into the left tail, where log_ndtr keeps its precision
    flip = (lower + upper) > 0
    low, high = torch.where(flip, -upper, lower), torch.where(flip, -lower, upper)
    log_high, log_low = torch.special.log_ndtr(high), torch.special.log_ndtr(low)
    return log_high + _log1mexp(torch.clamp(log_low - log_high, max=0.0))


def discretized_gaussian_log_likelihood(
    x: Tensor,
    mean: Tensor,
    log_scale: Tensor | float,
    *,
    levels: int = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
) -> Tensor:
    """log P(x) under N(mean, exp(log_scale)^2) integrated over x's bin, summed over dims (B,):

        P(x) = Phi((x + delta - mean) / scale) - Phi((x - delta - mean) / scale),   delta = (b - a) / (2 (L - 1)),

    with the lower edge at -inf for the lowest level and the upper at +inf for the highest, so the
    L probabilities sum to one (Ho et al. 2020, eq. 13). x holds L-level data stored, as in genlab,
    at a + v (b - a) / (L - 1), v = 0..L-1, data_range = (a, b); values are snapped to the nearest
    level first. Bins under 0.01 scales wide use the midpoint rule (with its second-order term).
    x: (B, ...); mean, log_scale broadcastable to x.

    >>> x = torch.tensor([[-1.0], [0.0], [1.0]])
    >>> round(float(discretized_gaussian_log_likelihood(x, torch.zeros(3, 1), 0.0, levels=3).exp().sum()), 6)
    1.0
    """
    if levels < 2:
        raise ConfigError(f"levels must be >= 2, got {levels}")
    low, high = data_range
    if not high > low:
        raise ConfigError(f"data_range must be (low, high) with high > low, got {data_range}")
    x, mean = at_least_float32(x), at_least_float32(mean)
    if not isinstance(log_scale, Tensor):
        log_scale = torch.tensor(float(log_scale), dtype=x.dtype, device=x.device)
    log_scale = at_least_float32(log_scale)
    step = (high - low) / (levels - 1)
    level = torch.round((x - low) / step).clamp_(0, levels - 1)
    inv_scale = torch.exp(-log_scale)
    z = (low + level * step - mean) * inv_scale  # the bin's centre, standardised
    width = step * inv_scale  # the bin's width, standardised
    lower = torch.where(level == 0, -math.inf, z - 0.5 * width)
    upper = torch.where(level == levels - 1, math.inf, z + 0.5 * width)
    log_prob = _log_normal_interval(lower, upper)
    # bins under 0.01 scales wide: Phi(upper) - Phi(lower) cancels in float32, while the midpoint rule with
    # its second-order term, P = w phi(z) (1 + w^2 (z^2 - 1) / 24 + O(w^4)), is accurate
    narrow = (level > 0) & (level < levels - 1) & (width < 1e-2)
    midpoint = -0.5 * (LOG_2PI + z**2) + torch.log(width) + torch.log1p(width**2 * (z**2 - 1.0) / 24.0)
    return sum_except_batch(torch.where(narrow, midpoint, log_prob))


@dataclass(frozen=True)
class VLBResult:
    """The DDPM variational bound on -log p(x0) per sample, in nats (Ho et al. 2020, eq. 5):

        total = prior + diffusion + decoder = L_T + sum_{t=2}^{N} L_{t-1} + L_0.

    prior, diffusion, decoder: (B,). per_step: (B, N) with column t - 1 holding L_{t-1} for t = 1..N
    (column 0 is L_0) when every step was evaluated, else None. dim: the number of data dimensions D.
    With levels set, it bounds the NLL of the discrete L-level data itself, so bits/dim is
    total / (D ln 2) without a dequantization correction (genlab.nn.likelihood.bits_per_dim with
    levels=None); it is comparable with a continuous density's bits_per_dim(nll, D, levels=L).
    """

    prior: Tensor
    diffusion: Tensor
    decoder: Tensor
    dim: int
    per_step: Tensor | None = None

    @property
    def total(self) -> Tensor:
        """The bound on -log p(x0) in nats, (B,)."""
        return self.prior + self.diffusion + self.decoder

    @property
    def bits_per_dim(self) -> Tensor:
        """total / (D ln 2), (B,)."""
        return self.total / (self.dim * math.log(2.0))


def _per_sample(variance: Tensor, batch: int) -> Tensor:
    """A variance given per sample (B,), or broadcast to the data's shape, as (B,)."""
    if variance.dim() == 0:
        return variance.expand(batch)
    return variance.reshape(variance.shape[0], -1)[:, 0] if variance.dim() > 1 else variance


def _uniform(shape: tuple[int, ...], generator: torch.Generator | None, device: torch.device) -> Tensor:
    if generator is None:
        return torch.rand(shape, device=device)
    return torch.rand(shape, generator=generator, device=generator.device).to(device)


@torch.no_grad()
def ddpm_vlb(
    eps_fn: EpsFunction,
    schedule: NoiseSchedule,
    x0: Tensor,
    *,
    levels: int | None = 256,
    data_range: tuple[float, float] = (-1.0, 1.0),
    timesteps: int | None = None,
    model_variance: str = "beta",
    generator: torch.Generator | None = None,
    max_batch: int = 4096,
) -> VLBResult:
    """The DDPM variational bound on -log p(x0) (Ho et al. 2020, eq. 5 and sec. 3.3), per sample.

        L_T     = KL(q(x_N | x0) || N(0, I)) = 1/2 sum_i (alpha_N^2 x0_i^2 + sigma_N^2 - 1 - log sigma_N^2)
        L_{t-1} = E_{x_t ~ q(x_t|x0)} KL(q(x_{t-1} | x_t, x0) || p(x_{t-1} | x_t)),  t = 2..N
        L_0     = -log p(x0 | x1)

    p(x_{t-1} | x_t) = N(mu_tilde(x_t, x0_hat), v_t I) with x0_hat from eps_hat = eps_fn(x_t, t) and
    v_t = beta_t (model_variance="beta") or beta_tilde_t = posterior variance ("beta_tilde"); both are
    Ho et al.'s choices. The expectation over x_t is one draw of q(x_t | x0) per sample and step, so
    the result is an unbiased estimate of the bound. The decoder p(x0 | x1) has mean x0_hat(x1)
    (= mu_theta(x1, 1)) and variance beta_1 for either model_variance (beta_tilde_1 = 0): with levels=L
    a discretized Gaussian over the L levels in data_range (see `discretized_gaussian_log_likelihood`;
    x0 is snapped to the levels, so the bound is on the data quantized to L levels, e.g. 17 for
    digits, 256 for 8-bit images); with levels=None a Gaussian density (a bound for continuous data).

    timesteps=None evaluates every t = 2..N, in batches of at most max_batch rows (samples x steps) per
    eps_fn call. timesteps=k draws, for each sample, one t uniformly from each of k strata of nearly
    equal size that partition {2..N} and weights its L_{t-1} by its stratum's size: an unbiased,
    stratified estimate of sum_t L_{t-1} from k network calls per sample. L_T and L_0 are always exact.

    eps_fn(x_t (B, ...), t (B,)) -> eps_hat, t the continuous times i / N of `schedule` (a schedule with
    discrete_steps = N; a model wraps its network as eps_fn = lambda x, t: net(x, schedule.noise_conditioning(t))).
    x0: (B, ...) in data_range. Returns a VLBResult of (B,) tensors in nats. Runs under torch.no_grad()
    (an evaluation: N network calls per sample).

    >>> from genlab.models.diffusion.schedules import DiscreteSchedule
    >>> schedule = DiscreteSchedule.linear(steps=10)
    >>> eps_fn = lambda x_t, t: torch.zeros_like(x_t)
    >>> result = ddpm_vlb(eps_fn, schedule, torch.zeros(2, 3), levels=17, generator=torch.Generator().manual_seed(0))
    >>> result.total.shape, result.per_step.shape
    (torch.Size([2]), torch.Size([2, 10]))
    """
    steps = schedule.discrete_steps
    if steps is None:
        raise ConfigError(f"ddpm_vlb needs a discrete schedule (such as 'linear' or 'cosine'); {schedule.name!r} is continuous")
    if model_variance not in MODEL_VARIANCES:
        raise ConfigError(f"unknown model_variance {model_variance!r}; choose one of {', '.join(MODEL_VARIANCES)}")
    if timesteps is not None and timesteps < 1:
        raise ConfigError(f"timesteps must be >= 1 (or None for every step), got {timesteps}")
    if max_batch < 1:
        raise ConfigError(f"max_batch must be >= 1, got {max_batch}")
    x0 = at_least_float32(x0)
    if levels is not None:
        if levels < 2:
            raise ConfigError(f"levels must be >= 2 (or None for continuous data), got {levels}")
        low, high = data_range
        if not high > low:
            raise ConfigError(f"data_range must be (low, high) with high > low, got {data_range}")
        level_step = (high - low) / (levels - 1)
        smallest, largest = float(x0.min()), float(x0.max())
        if smallest < low - 0.5 * level_step or largest > high + 0.5 * level_step:
            raise DataError(
                f"x0 has values in [{smallest:.3g}, {largest:.3g}], outside data_range={data_range}; "
                "pass the range the model's data lives in (e.g. (-1, 1) after scaling images from [0, 1])"
            )
        x0 = low + torch.round((x0 - low) / level_step).clamp(0, levels - 1) * level_step
    batch, device, dtype = x0.shape[0], x0.device, x0.dtype
    dim = x0[0].numel()

    def times(step: Tensor) -> Tensor:  # integer steps -> the grid times t_i = i / N
        return step.to(dtype) / steps

    # L_T, in closed form
    t_max = times(torch.full((batch,), steps, device=device))
    alpha_max, sigma_max = at_least_float32(schedule.alpha(t_max)), at_least_float32(schedule.sigma(t_max))
    prior = gaussian_kl(expand_like(alpha_max, x0) * x0, expand_like(2.0 * torch.log(sigma_max), x0))

    # L_0 = -log p(x0 | x1)
    t_one = times(torch.ones(batch, device=device))
    zero = torch.zeros_like(t_one)
    x_one = schedule.q_sample(x0, t_one, sample_standard_normal(x0.shape, generator=generator, device=device, dtype=dtype))
    alpha_one, sigma_one = at_least_float32(schedule.alpha(t_one)), at_least_float32(schedule.sigma(t_one))
    _, x0_hat = to_eps_and_x0("eps", eps_fn(x_one, t_one), x_one, alpha_one, sigma_one)
    beta_one = _per_sample(at_least_float32(schedule.transition(zero, t_one)[1]), batch)
    log_scale = expand_like(0.5 * torch.log(beta_one), x0)
    if levels is None:
        decoder = -gaussian_log_likelihood(x0, x0_hat, log_scale)
    else:
        decoder = -discretized_gaussian_log_likelihood(x0, x0_hat, log_scale, levels=levels, data_range=data_range)

    # L_{t-1}, t = 2..N: the steps to evaluate, (B, K), and the weight of each column, (K,)
    every_step = timesteps is None or timesteps >= steps - 1
    if every_step:
        step_grid = torch.arange(2, steps + 1, device=device).expand(batch, -1)
        weights = torch.ones(steps - 1, device=device, dtype=dtype)
    else:
        edges = torch.div(torch.arange(timesteps + 1) * (steps - 1), timesteps, rounding_mode="floor").to(device)
        sizes = edges[1:] - edges[:-1]  # (k,) stratum j holds t = 2 + edges[j] .. 1 + edges[j + 1]
        offsets = torch.floor(_uniform((batch, timesteps), generator, device) * sizes).long().clamp_(max=sizes - 1)
        step_grid = 2 + edges[:-1] + offsets  # (B, k)
        weights = sizes.to(dtype)
    columns_per_call = max(1, max_batch // batch)
    chunks = [torch.zeros(batch, 0, device=device, dtype=dtype)]  # N = 1 has no L_{t-1} terms
    for start in range(0, step_grid.shape[1], columns_per_call):
        step = step_grid[:, start : start + columns_per_call]  # (B, c)
        width = step.shape[1]
        x0_rows = x0.unsqueeze(1).expand(batch, width, *x0.shape[1:]).reshape(batch * width, *x0.shape[1:])  # (B * c, ...)
        step = step.reshape(-1)  # (B * c,), row b * c + j is sample b
        t, s = times(step), times(step - 1)
        noise = sample_standard_normal(x0_rows.shape, generator=generator, device=device, dtype=dtype)
        x_t = schedule.q_sample(x0_rows, t, noise)
        alpha_t, sigma_t = at_least_float32(schedule.alpha(t)), at_least_float32(schedule.sigma(t))
        _, x0_hat = to_eps_and_x0("eps", eps_fn(x_t, t), x_t, alpha_t, sigma_t)
        # mu_tilde(x_t, x0) is linear, so mu_tilde(x_t, x0) - mu_tilde(x_t, x0_hat) = mu_tilde(0, x0 - x0_hat): no cancellation
        mean_difference, var_q = schedule.posterior(torch.zeros_like(x_t), x0_rows - x0_hat, t, s)
        var_q = _per_sample(at_least_float32(var_q), batch * width)
        var_p = var_q if model_variance == "beta_tilde" else _per_sample(at_least_float32(schedule.transition(s, t)[1]), batch * width)
        # KL(N(mu_tilde, var_q I) || N(mu_theta, var_p I)) = sum_i [(mu_tilde - mu_theta)_i^2 / (2 var_p) + (r - 1 - log r) / 2], r = var_q / var_p
        ratio = var_q / var_p
        kl = sum_except_batch(at_least_float32(mean_difference) ** 2) / (2.0 * var_p) + 0.5 * dim * (ratio - 1.0 - torch.log(ratio))
        chunks.append(kl.reshape(batch, width))
    terms = torch.cat(chunks, dim=1)  # (B, K)
    diffusion = (terms * weights).sum(1)
    per_step = torch.cat([decoder[:, None], terms], dim=1) if every_step else None  # (B, N)
    return VLBResult(prior=prior, diffusion=diffusion, decoder=decoder, dim=dim, per_step=per_step)
