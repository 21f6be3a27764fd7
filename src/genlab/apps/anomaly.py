"""Anomaly detection from a generative model of normal data, with scikit-learn's manners.

A model p of normal data scores a sample x by how unlikely it is under p. Each score is one entry
of `SCORES` (higher means more anomalous, as PyOD's `decision_function`):

    nll             -log p(x), the exact negative log-likelihood (flows, autoregressive models,
                    `gmm-em`); per dimension -log p(x_i | x_<i) for MADE and PixelCNN;
    bound           an upper bound on -log p(x): the VAE family's -IWAE_k(x) (Burda et al. 2016;
                    k = the detector's bound_samples),
                    a DDPM's variational bound L_VLB (Ho et al. 2020, eq. 5; one network call per
                    timestep), any model's `nll_bound`;
    reconstruction  (1 / D) sum_i (x_i - g(f(x))_i)^2, the mean squared reconstruction error of an
                    encoder-decoder (AE, DAE, VQ-VAE, and the VAE's decoder mean at its posterior
                    mean), with the per-dimension map (x - g(f(x)))^2 showing where x is unusual;
    ode             -log p(x) of a diffusion model's probability-flow ODE density (Song et al. 2021),
                    its trace estimator's probes from the detector's seed; one ODE solve per batch;
    denoising       (1 / K) sum_k (x - x_hat_k(x))^2 averaged over the dimensions, x_hat_k the
                    diffusion model's DDIM reconstruction of x noised to the K strengths
                    `DENOISING_STRENGTHS` (SDEdit's regenerate; the multi-level reconstruction of
                    Graham et al. 2023), with its per-dimension map;
    discriminator   -D(x), a GAN discriminator's raw score negated (the highest over the classes
                    for a conditional one);
    inversion       (1 / D) sum_i (x_i - G(z*)_i)^2, z* = E(x) from an encoder E trained at `fit` on
                    the normal data to minimise |x - G(E(x))|^2 with G frozen (f-AnoGAN's izi
                    residual, Schlegl et al. 2019), optionally refined by Adam steps on
                    |x - G(z)|^2 (AnoGAN, Schlegl et al. 2017), with its per-dimension map.

Two corrections for likelihoods (nll, bound, ode), which famously rank simple out-of-distribution
images above the training data (Nalisnick et al. 2019):

    complexity      S(x) = -log2 p(x) - L(x) bits, L(x) the length in bits of x's lossless PNG
                    (Serra et al. 2020): what the model explains beyond what a generic compressor does;
    background      -log p(x) + log p_0(x), the likelihood ratio against a background model p_0
                    (Ren et al. 2019, who train p_0 on inputs with a share of values replaced by noise).

`AnomalyDetector` follows scikit-learn's outlier detectors (e.g. IsolationForest): `fit(normal)`
sets the threshold t to the (1 - contamination) quantile of the normal samples' scores, so a share
`contamination` of normal data is flagged (the target false-positive rate on normal data);
`score_samples(x)` = -score(x) (higher means more normal), `decision_function(x)` =
score_samples(x) - offset_ with offset_ = -t (negative: an anomaly), `predict(x)` in {-1, 1}.
Given a model *name* instead of a trained model, `fit(normal)` first trains it on the normal data's
train split and sets the threshold on its validation split (held-out normal data).
"""

from __future__ import annotations

import dataclasses
import functools
import inspect
import io
import math
import os
import zlib
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
from torch import Tensor

from genlab import registry
from genlab.apps.reading import read_samples
from genlab.data.dataset import Dataset
from genlab.errors import ArgumentTypeError, ConfigError
from genlab.models.base import GenerativeModel
from genlab.models.diffusion.model import DiffusionModel

__all__ = ["CORRECTIONS", "SCORES", "AnomalyDetector", "AnomalyScore", "ScoredData", "available_scores", "compressed_bits",
           "detector", "score_data"]

DEFAULT_CONTAMINATION = 0.05
# "auto" takes the cheapest score a model offers (`AnomalyScore.cost`), the first in this order among equals
AUTO_ORDER = ("nll", "bound", "reconstruction", "denoising", "ode", "discriminator", "inversion")
# the noise strengths (SDEdit's: the share of the way to pure noise) the denoising score averages over, and
# the DDIM steps of a full trajectory (a strength s takes ceil(s * steps) of them)
DENOISING_STRENGTHS = (0.1, 0.2, 0.3, 0.4, 0.5)
DENOISING_STEPS = 20
BOUND_SAMPLES = 8  # the IWAE's k for the bound score (README: no gain in AUROC from 8 to 64, 8x the time)
INVERSION_ENCODER_STEPS = 1000  # Adam steps training f-AnoGAN's encoder at `fit`, minibatches of 64
CORRECTIONS = ("none", "complexity")


Score = Callable[[GenerativeModel, Tensor, torch.Generator], Tensor]


@dataclasses.dataclass(frozen=True)
class AnomalyScore:
    """name; formula: what it computes, for reports; available(model) -> bool.
    per_sample(model, x (B, *shape), generator) -> (B,), higher = more anomalous; or, where it is
    None, the mean over the dimensions of per_dimension(model, x, generator) -> (B, *shape), the
    map of where x is unusual (offered for the models `has_map(model)` accepts).
    likelihood: in nats of -log p(x) or a bound on it, so that the corrections apply;
    cost(model): network evaluations per sample, roughly: 0 a few, 1 tens, 2 hundreds or more;
    "auto" takes the cheapest. prepare(model, normal (N, *shape), generator, **detector_options) ->
    keyword options of per_sample and per_dimension: what the score learns from the normal data at
    the detector's `fit` (f-AnoGAN's encoder), None where it learns nothing."""

    name: str
    formula: str
    available: Callable[[GenerativeModel], bool]
    per_sample: Score | None = None
    per_dimension: Score | None = None
    has_map: Callable[[GenerativeModel], bool] = lambda model: True
    likelihood: bool = False
    cost: Callable[[GenerativeModel], int] = lambda model: 0
    prepare: Callable[..., dict[str, Any]] | None = None

    def __call__(self, model: GenerativeModel, x: Tensor, generator: torch.Generator, **options: Any) -> Tensor:
        """The per-sample scores (B,)."""
        if self.per_sample is not None:
            return self.per_sample(model, x, generator, **options)
        return self.per_dimension(model, x, generator, **options).flatten(1).mean(1)

    def offers_map(self, model: GenerativeModel) -> bool:
        return self.per_dimension is not None and self.has_map(model)


def _defines(model: GenerativeModel, method: str) -> bool:
    return getattr(type(model), method, None) is not getattr(GenerativeModel, method)


def _squared_error(model: GenerativeModel, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    return (x.float() - model.reconstruct(x).float()) ** 2


def _has_bound(model: GenerativeModel) -> bool:
    """A bound that is defined for this model: a costly one (a DDPM's) only where it is a likelihood."""
    return _defines(model, "nll_bound") and (not model.costly_nll_bound or model.likelihood_kind() != "none")


def _bound(model: GenerativeModel, x: Tensor, generator: torch.Generator, **options: Any) -> Tensor:
    return model.nll_bound(x, generator=generator, **options)


def _is_data_space_diffusion(model: GenerativeModel) -> bool:
    """A diffusion model of p(x) in the data's own space (not a latent one, not SR3's p(x | u))."""
    return isinstance(model, DiffusionModel) and model.diffusion_spec is model.spec and not getattr(model, "needs_image_condition", False)


def _denoising_error(model: GenerativeModel, x: Tensor, generator: torch.Generator) -> Tensor:
    """(1 / K) sum_k (x - x_hat_k)^2, x_hat_k = regenerate(x, strength s_k) with DDIM, (B, *shape)."""
    from genlab.apps.editing import regenerate

    errors = [(x.float() - regenerate(model, x, strength=s, sampler="ddim", steps=DENOISING_STEPS, generator=generator).float()) ** 2
              for s in DENOISING_STRENGTHS]
    return torch.stack(errors).mean(0)


def _fit_inversion_encoder(model: GenerativeModel, normal: Tensor, generator: torch.Generator, *,
                           inversion_steps: int = 0, **unused: Any) -> dict[str, Any]:
    return {"encoder": model.fit_inverse_encoder(normal, steps=INVERSION_ENCODER_STEPS, generator=generator),
            "steps": inversion_steps}


def _inversion_error(model: GenerativeModel, x: Tensor, generator: torch.Generator, encoder: torch.nn.Module | None = None,
                     steps: int = 0) -> Tensor:
    """(x - G(z*))^2 per dimension, z* = E(x) refined by `steps` Adam steps, (B, *shape)."""
    if encoder is None:
        raise ConfigError("the inversion score's encoder is trained on normal data: call fit(normal_samples) first")
    return (x.float() - model.invert(x, steps=steps, generator=generator, encoder=encoder).float()) ** 2


SCORES: dict[str, AnomalyScore] = {
    s.name: s
    for s in (
        AnomalyScore("nll", "-log p(x), exact (nats)", lambda m: bool(m.exact_likelihood), lambda m, x, g: -m.log_prob(x),
                     per_dimension=lambda m, x, g: -m.log_prob_per_dimension(x),
                     has_map=lambda m: bool(getattr(m, "has_per_dimension_log_prob", False)), likelihood=True),
        AnomalyScore("bound", "an upper bound on -log p(x) (nats; the VAE's -IWAE_k, a DDPM's L_VLB)", _has_bound,
                     _bound, likelihood=True, cost=lambda m: 2 * m.costly_nll_bound),
        AnomalyScore("reconstruction", "(1/D) sum_i (x_i - g(f(x))_i)^2, the mean squared reconstruction error",
                     lambda m: callable(getattr(m, "reconstruct", None)), per_dimension=_squared_error),
        AnomalyScore("ode", "-log p(x) of the probability-flow ODE's density (nats; a diffusion model's likelihood)",
                     _is_data_space_diffusion, lambda m, x, g: -m.ode_log_prob(x, generator=g), likelihood=True,
                     cost=lambda m: 2),
        AnomalyScore("denoising", "(1/KD) sum_k |x - DDIM(noised_k(x))|^2, the mean squared error of reconstructions "
                     f"from {len(DENOISING_STRENGTHS)} noise strengths", _is_data_space_diffusion,
                     per_dimension=_denoising_error, cost=lambda m: 1),
        AnomalyScore("discriminator", "-D(x), the GAN discriminator's raw score negated",
                     lambda m: callable(getattr(m, "realness", None)), lambda m, x, g: -m.realness(x)),
        AnomalyScore("inversion", "(1/D) |x - G(E(x))|^2, E an encoder fitted to invert G on the normal data "
                     "(f-AnoGAN's residual; AnoGAN's with Adam steps refining E(x))",
                     lambda m: callable(getattr(m, "fit_inverse_encoder", None)), per_dimension=_inversion_error,
                     prepare=_fit_inversion_encoder),
    )
}


def available_scores(model: GenerativeModel) -> list[str]:
    """The names of the scores `model` offers, cheapest first, in `AUTO_ORDER` among equals (the
    first is what "auto" takes)."""
    offered = [name for name in AUTO_ORDER if SCORES[name].available(model)]
    return sorted(offered, key=lambda name: SCORES[name].cost(model))


def compressed_bits(x: Tensor, value_range: tuple[float, float] = (0.0, 1.0)) -> Tensor:
    """L(x): the length in bits of each image's lossless PNG (Pillow, compression level 9), images x
    (N, C, H, W) in value_range quantised to 8 bits; (N,) float64. Images of other than 1 or 3
    channels are measured by zlib (level 9) on their raw bytes. The input-complexity estimate of
    Serra et al. 2020."""
    from PIL import Image

    low, high = value_range
    pixels = ((x.detach().float().cpu() - low) / (high - low)).clamp(0, 1).mul(255).round().to(torch.uint8)
    pixels = pixels.permute(0, 2, 3, 1).numpy()  # (N, H, W, C)
    lengths = np.empty(len(pixels))
    for i, image in enumerate(pixels):  # a compressor reads one image at a time
        if image.shape[-1] in (1, 3):
            buffer = io.BytesIO()
            Image.fromarray(image[..., 0] if image.shape[-1] == 1 else image).save(buffer, format="PNG", compress_level=9)
            lengths[i] = buffer.getbuffer().nbytes
        else:
            lengths[i] = len(zlib.compress(image.tobytes(), 9))
    return torch.from_numpy(lengths * 8.0)


class AnomalyDetector:
    """An anomaly detector from a generative model (module docstring).

    model: a trained genlab model of normal data (`genlab.load(run)` or `fit(...).model`), or a
        registered model's name, trained by `fit(normal)` on the normal data first.
    score: a name of `SCORES`, or "auto" (the first of `available_scores(model)`).
    contamination: the share of the normal samples given to `fit` that lands above the threshold,
        in (0, 0.5]: the false-positive rate on normal data the threshold is set for.
    correction: "none", or "complexity" (a likelihood score in bits minus the PNG length of the
        image, Serra et al. 2020; images only).
    background: a model (or run directory) of background data whose score is subtracted from the
        model's: the likelihood ratio of Ren et al. 2019 (likelihood scores only).
    bound_samples: the IWAE's k for the VAE family's bound (None: the model's own `iw_samples`).
    inversion_steps: Adam steps refining a GAN's inversion z = E(x) (0: f-AnoGAN's E(x) alone; the
        encoder E is trained by `fit` on the normal samples given to it, or on the train split).
    batch_size: samples scored per pass; seed: the seed of every random draw a score makes (the
        IWAE's latents, the ODE's probes, the denoising noise), so scores are the same from call to call.
    model_options, train_options: for a model given by name, `genlab.create`'s and `genlab.fit`'s options.
    """

    def __init__(self, model: GenerativeModel | str, score: str = "auto", *, contamination: float = DEFAULT_CONTAMINATION,
                 correction: str = "none", background: GenerativeModel | str | os.PathLike | None = None,
                 bound_samples: int | None = BOUND_SAMPLES, inversion_steps: int = 0, batch_size: int = 256, seed: int = 0,
                 model_options: dict[str, Any] | None = None, train_options: dict[str, Any] | None = None) -> None:
        if isinstance(model, str):
            registry.get(model)  # an unknown name fails here, with the list of names
            self._untrained: tuple[str, dict[str, Any], dict[str, Any]] | None = (model, dict(model_options or {}), dict(train_options or {}))
        elif isinstance(model, GenerativeModel):
            self._untrained = None
        else:
            raise ArgumentTypeError(f"AnomalyDetector needs a trained genlab model (genlab.load(RUN)) or a model name, not {type(model).__name__}")
        if not (isinstance(contamination, (int, float)) and 0 < contamination <= 0.5):
            raise ConfigError(f"contamination={contamination!r} must be in (0, 0.5], e.g. 0.05: the share of normal samples flagged")
        if score != "auto" and score not in SCORES:  # checked before any training
            raise ConfigError(f"unknown anomaly score {score!r}; choose one of {', '.join(SCORES)} or auto")
        if correction not in CORRECTIONS:
            raise ConfigError(f"unknown correction {correction!r}; choose one of {', '.join(CORRECTIONS)}")
        if bound_samples is not None and (isinstance(bound_samples, bool) or not isinstance(bound_samples, int) or bound_samples < 1):
            raise ConfigError(f"bound_samples={bound_samples!r} must be a positive integer (the IWAE's k), or None for the model's own")
        if isinstance(inversion_steps, bool) or not isinstance(inversion_steps, int) or inversion_steps < 0:
            raise ConfigError(f"inversion_steps={inversion_steps!r} must be an integer >= 0 (Adam steps refining E(x); 0: none)")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        if isinstance(background, (str, os.PathLike)):
            background = registry.load(background)
        self.requested_score = score
        self.contamination = float(contamination)
        self.correction = correction
        self.background = None if background is None else background.eval()
        self.batch_size = batch_size
        self.bound_samples = bound_samples
        self.inversion_steps = inversion_steps
        self.seed = seed
        self.score_options_: dict[str, Any] = {}  # what the score learned at fit (`AnomalyScore.prepare`)
        self.threshold_: float | None = None
        self.normal_scores_: Tensor | None = None
        self.model: GenerativeModel | None = None
        self.score: AnomalyScore | None = None
        if isinstance(model, GenerativeModel):
            self._use(model)

    def _use(self, model: GenerativeModel) -> None:
        """Take `model`, resolve the score and check the corrections fit it."""
        offered = available_scores(model)
        score = self.requested_score
        if score == "auto":
            if not offered:
                raise ConfigError(f"'{model.name}' offers none of the anomaly scores {', '.join(SCORES)}; "
                                  "use a flow, an autoregressive model, a VAE, an autoencoder, a diffusion model or a GAN")
            score = offered[0]
        if score not in SCORES:
            raise ConfigError(f"unknown anomaly score {score!r}; choose one of {', '.join(SCORES)} or auto")
        if score not in offered:
            raise ConfigError(f"'{model.name}' has no {score!r} score ({SCORES[score].formula}); "
                              f"it offers {', '.join(offered) or 'none'}")
        chosen = SCORES[score]
        corrected = self.correction != "none" or self.background is not None
        if corrected and not chosen.likelihood:
            likelihoods = [name for name in offered if SCORES[name].likelihood]
            raise ConfigError(f"the {self.correction if self.correction != 'none' else 'background'} correction applies to a "
                              f"likelihood score ({', '.join(n for n, s in SCORES.items() if s.likelihood)}), not {score!r}; "
                              + (f"use --score {likelihoods[0]}" if likelihoods else f"'{model.name}' has none: train a flow, "
                                 "an autoregressive model or a VAE"))
        if self.correction == "complexity" and not (model.spec.kind == "image" and len(model.spec.shape) == 3):
            raise ConfigError(f"the complexity correction measures images' PNG lengths; {model.spec.name!r} is "
                              f"{model.spec.kind} data: use --correction none or a background model")
        if self.background is not None:
            if tuple(self.background.spec.shape) != tuple(model.spec.shape):
                raise ConfigError(f"the background model was trained on shape {tuple(self.background.spec.shape)} and the "
                                  f"model on {tuple(model.spec.shape)}; train both on the same kind of data")
            if not chosen.available(self.background):
                raise ConfigError(f"the background model '{self.background.name}' has no {score!r} score; "
                                  f"give it a model of the same family")
        self.model = model.eval()
        self.score = chosen

    # -- scores ------------------------------------------------------------------------------
    def anomaly_scores(self, x: Tensor | Dataset) -> Tensor:
        """The score of each sample, higher = more anomalous, corrected as the detector says:
        x (N, *shape) -> (N,), on the CPU."""
        x = self._samples(x)
        scores = self._batched(self.model, self._per_sample(self.model), x)
        if self.background is not None:
            scores = scores - self._batched(self.background, self._per_sample(self.background), x)
        if self.correction == "complexity":
            scores = scores.double() / math.log(2) - compressed_bits(x, self.model.spec.value_range)
        return scores

    def score_map(self, x: Tensor | Dataset) -> Tensor:
        """Where each sample is unusual: the score per dimension (per pixel, per encoded column),
        x (N, *shape) -> (N, *shape), on the CPU; the background model's map is subtracted where
        there is one. Its mean (sum for nll) over the dimensions is the uncorrected score."""
        self._check_ready()
        if not self.score.offers_map(self.model):
            with_maps = [n for n, s in SCORES.items() if s.per_dimension is not None]
            raise ConfigError(f"the {self.score.name!r} score of '{self.model.name}' has no per-dimension map; "
                              f"{', '.join(with_maps)} have one (nll for MADE and PixelCNN)")
        x = self._samples(x)
        maps = self._batched(self.model, functools.partial(self.score.per_dimension, **self.score_options_), x)
        if self.background is not None and self.score.offers_map(self.background):
            maps = maps - self._batched(self.background, self.score.per_dimension, x)
        return maps

    def _per_sample(self, model: GenerativeModel) -> Score:
        """The score's per-sample function, with the detector's IWAE k where the model's bound takes one
        and what the score learned at fit."""
        if self.score.name == "bound" and self.bound_samples and "samples" in inspect.signature(model.nll_bound).parameters:
            return functools.partial(_bound, samples=self.bound_samples)
        return functools.partial(self.score, **self.score_options_) if self.score_options_ else self.score

    @torch.no_grad()
    def _batched(self, model: GenerativeModel, fn: Score, x: Tensor) -> Tensor:
        """fn over x in batches on the model's device, one generator seeded by `seed` for them all."""
        generator = torch.Generator(device=model.device).manual_seed(self.seed)
        parts = [fn(model, x[i : i + self.batch_size].to(model.device), generator).float().cpu()
                 for i in range(0, len(x), self.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0)

    # -- scikit-learn's interface -------------------------------------------------------------------
    def fit(self, normal: Tensor | Dataset, learn_from: Tensor | Dataset | None = None) -> "AnomalyDetector":
        """Set the threshold from normal samples: the (1 - contamination) quantile of their scores.
        A detector built from a model name first trains the model on `normal`'s train split (a
        Dataset) and sets the threshold on its validation split. A score that learns from normal data
        (`AnomalyScore.prepare`: the inversion's encoder) learns from the train split there, else
        from `learn_from` (other normal samples than the threshold's, e.g. a run's train split) or
        `normal`."""
        if self._untrained is not None:
            learn_from, normal = self._train(normal)
        learn_from = normal if learn_from is None else learn_from
        if self.score.prepare is not None:
            generator = torch.Generator(device=self.model.device).manual_seed(self.seed)
            self.score_options_ = self.score.prepare(self.model, self._samples(learn_from), generator,
                                                     inversion_steps=self.inversion_steps)
        scores = self.anomaly_scores(normal)
        if len(scores) < math.ceil(1 / self.contamination):
            raise ConfigError(f"fit got {len(scores)} normal samples; a threshold at contamination {self.contamination} "
                              f"needs at least {math.ceil(1 / self.contamination)}")
        if not torch.isfinite(scores).all():
            raise ConfigError("some normal samples score inf or NaN (outside the model's support); check the data's range")
        self.normal_scores_ = scores  # kept for reports (the histogram of `genlab anomaly`)
        self.threshold_ = float(torch.quantile(scores.double(), 1 - self.contamination))
        return self

    def _train(self, normal: Tensor | Dataset) -> tuple[Dataset, Dataset]:
        """Train the named model on normal's train split; return it and the held-out normal samples."""
        from genlab.train.engine import fit

        name, model_options, train_options = self._untrained
        if not isinstance(normal, Dataset):
            raise ArgumentTypeError(f"a detector that trains '{name}' needs the normal data as a genlab Dataset "
                                    "(genlab.data.load(...)), with a validation split for the threshold")
        if "val" not in normal.split_names:
            raise ConfigError(f"the normal data {normal.spec.name!r} has no validation split to set the threshold on; "
                              "load it with genlab.data.load(...), which splits it")
        model = registry.create(name, data=normal.split("train"), **model_options)
        fit(model, normal.split("train"), **{"progress": False, "sample_every": 0, **train_options})
        self._untrained = None
        self._use(model)
        return normal.split("train"), normal.split("val")

    @property
    def offset_(self) -> float:
        return -self._threshold()

    def score_samples(self, x: Tensor | Dataset) -> Tensor:
        """-score(x): higher means more normal (scikit-learn's convention), (N,)."""
        return -self.anomaly_scores(x)

    def decision_function(self, x: Tensor | Dataset) -> Tensor:
        """score_samples(x) - offset_ = t - score(x): negative for anomalies, (N,)."""
        return self._threshold() - self.anomaly_scores(x)

    def predict(self, x: Tensor | Dataset) -> Tensor:
        """-1 for an anomaly (score above the threshold), 1 otherwise, (N,) long."""
        return torch.where(self.decision_function(x) < 0, -1, 1)

    # -- helpers ------------------------------------------------------------------------------------
    def _threshold(self) -> float:
        if self.threshold_ is None:
            raise ConfigError("the detector has no threshold yet; call fit(normal_samples) first")
        return self.threshold_

    def _check_ready(self) -> None:
        if self.model is None:
            raise ConfigError(f"the detector's model '{self._untrained[0]}' is not trained yet; call fit(normal_data) first")

    def _samples(self, x: Tensor | Dataset) -> Tensor:
        self._check_ready()
        if isinstance(x, Dataset):
            x = x.tensors()[0]
        if not isinstance(x, Tensor):
            raise ArgumentTypeError(f"pass samples as a tensor (N, *shape) or a genlab Dataset, not {type(x).__name__}")
        shape = tuple(self.model.spec.shape)
        if tuple(x.shape[1:]) != shape:
            raise ConfigError(f"samples of shape {tuple(x.shape[1:])}, and the model was trained on {shape} "
                              f"({self.model.spec.name!r}); load the data as the model's run did")
        return x


def detector(run_or_model: str | os.PathLike | GenerativeModel, score: str = "auto", **options) -> AnomalyDetector:
    """An `AnomalyDetector` from a run directory (loaded with `genlab.load`), a trained model, or a
    registered model's name (trained by `fit(normal)`); options as AnomalyDetector's. Call
    `fit(normal)` next."""
    if isinstance(run_or_model, os.PathLike) or (isinstance(run_or_model, str) and Path(run_or_model).exists()):
        run_or_model = registry.load(run_or_model)
    elif isinstance(run_or_model, str) and run_or_model not in {entry.name for entry in registry.entries()}:
        raise ConfigError(f"{run_or_model!r} is neither a run directory nor a model name; give a trained run's folder "
                          "or one of `genlab list`'s models")
    return AnomalyDetector(run_or_model, score, **options)


# ================================================================================================
# Scoring a dataset from the command line (`genlab anomaly`)
# ================================================================================================
@dataclasses.dataclass(frozen=True)
class ScoredData:
    """What `score_data` wrote: the CSV, how many samples, how many flagged, the threshold and score,
    the pictures, and with the truth known, the AUROC and average precision of the scores."""

    out: Path
    n: int
    flagged: int
    threshold: float
    score: str
    pictures: tuple[Path, ...] = ()
    auroc: float | None = None
    average_precision: float | None = None


def _table_columns(model: GenerativeModel, maps: Tensor, top: int = 3) -> list[str]:
    """Each row's `top` columns of largest summed per-dimension score (a table's encoded blocks)."""
    names = model.spec.table_columns
    per_column = torch.zeros(len(maps), len(names))
    for name, _, start, stop in model.spec.table_blocks:
        per_column[:, names.index(name)] += maps[:, start:stop].sum(1)
    order = per_column.argsort(1, descending=True)[:, :top]
    return [";".join(names[j] for j in row) for row in order.tolist()]


def _explainer(found: AnomalyDetector) -> AnomalyDetector | None:
    """What shows where a sample is unusual: the detector itself where its score has a map, else the
    model's reconstruction error (a VAE scored by its bound), else None."""
    if found.score.offers_map(found.model):
        return found
    if found.score.name != "reconstruction" and SCORES["reconstruction"].available(found.model):
        return AnomalyDetector(found.model, "reconstruction", batch_size=found.batch_size, seed=found.seed)
    return None


def read_truth(truth: str | os.PathLike, data: str | os.PathLike, n: int) -> Tensor:
    """The known anomalies of the n scored samples, (n,) 0/1: a column of the scored CSV named
    `truth`, or a CSV file with one row per sample (its `anomaly` column, or its only column)."""
    import pandas as pd

    path = Path(truth)
    if path.is_file():
        frame = pd.read_csv(path)
        column = "anomaly" if "anomaly" in frame.columns else (frame.columns[0] if len(frame.columns) == 1 else None)
        if column is None:
            raise ConfigError(f"--truth {path}: name the column of known anomalies 'anomaly' (it has {', '.join(map(str, frame.columns))})")
        values = frame[column]
    else:
        source = Path(data)
        columns = pd.read_csv(source, nrows=0).columns if source.is_file() and source.suffix.lower() in (".csv", ".tsv") else []
        if str(truth) not in columns:
            raise ConfigError(f"--truth {truth}: neither a file nor a column of {source.name}; give a CSV with an 'anomaly' "
                              "column (one row per sample) or the scored table's column of 0/1")
        values = pd.read_csv(source, usecols=[str(truth)])[str(truth)]
    if len(values) != n:
        raise ConfigError(f"--truth has {len(values)} rows and {n} samples were scored; give one 0/1 per sample, in order")
    numbers = pd.to_numeric(values, errors="coerce")
    if numbers.isna().any() or not set(numbers.unique()) <= {0, 1}:
        raise ConfigError("--truth must hold 0 (normal) or 1 (anomaly) for every sample")
    return torch.tensor(numbers.to_numpy(), dtype=torch.long)


def score_data(run_dir: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
               normal: str | os.PathLike | None = None, score: str = "auto", contamination: float = DEFAULT_CONTAMINATION,
               correction: str = "none", background: str | os.PathLike | None = None, truth: str | os.PathLike | None = None,
               pictures: bool = True, bound_samples: int | None = BOUND_SAMPLES, inversion_steps: int = 0,
               data_options: dict[str, Any] | None = None, device: str | None = None, seed: int = 0) -> ScoredData:
    """Score every sample of `data` with the run's model and write a CSV, one row per sample in its
    order: index, source (row number or file name), score (higher = more anomalous), anomaly (0/1)
    and, for a table, unusual_columns: the three columns of largest per-dimension score, or of
    reconstruction error where the score has no map and the model reconstructs. The
    threshold comes from `normal` (read as `data` is), or else from the run's own held-out
    validation split (a score that learns from normal data, the inversion's encoder, learns from
    `normal` or the run's train split). `truth` (a column of the scored CSV, or a CSV of 0/1 per sample) adds the
    AUROC and average precision. Pictures beside the CSV (OUT-histogram.png, OUT-extremes.png for
    images, OUT-roc.png with the truth) unless pictures=False."""
    import pandas as pd

    from genlab.files import atomic_path
    from genlab.train.run import read_run_config, run_data_source

    model = registry.load(run_dir, device=device)
    found = AnomalyDetector(model, score, contamination=contamination, correction=correction,
                            background=None if background is None else registry.load(background, device=device),
                            bound_samples=bound_samples, inversion_steps=inversion_steps, seed=seed)
    learn_from = None
    if normal is not None:
        reference = read_samples(run_dir, normal, model, data_options).x
    else:
        from genlab.data.catalog import load

        own = load(**run_data_source(read_run_config(run_dir)))
        if "val" not in own.split_names:
            raise ConfigError("the run's data has no validation split to set the threshold on; pass --normal NORMAL_DATA")
        reference = own.split("val")
        learn_from = own.split("train") if found.score.prepare is not None else None
    read = read_samples(run_dir, data, model, data_options, exclude=truth)
    x, names = read.x, read.names
    known = None if truth is None else read_truth(truth, data, len(x))
    found.fit(reference, learn_from)
    kind = model.spec.kind
    explainer = _explainer(found)
    maps = None
    if explainer is not None and (kind == "table" or (kind == "image" and pictures)):
        maps = found.score_map(x) if explainer is found else explainer.score_map(x)
    plain = maps is not None and explainer is found and found.score.per_sample is None and correction == "none" and background is None
    scores = maps.flatten(1).mean(1) if plain else found.anomaly_scores(x)  # a map is scored once
    flagged = (scores > found.threshold_).long()
    frame = pd.DataFrame({"index": range(len(x)), "source": names, "score": scores.double().numpy(), "anomaly": flagged.numpy()})
    if maps is not None and kind == "table":
        frame["unusual_columns"] = _table_columns(model, maps)
    out = Path(out)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
    auroc = precision = None
    if known is not None and 0 < int(known.sum()) < len(known):
        from sklearn.metrics import average_precision_score, roc_auc_score

        auroc = float(roc_auc_score(known.numpy(), scores.double().numpy()))
        precision = float(average_precision_score(known.numpy(), scores.double().numpy()))
    drawn: list[Path] = []
    if pictures:
        from genlab.viz.anomaly import plot_extremes, plot_roc, plot_score_histogram

        stem = out.with_suffix("")
        label = found.score.name if correction == "none" else f"{found.score.name}, {correction}-corrected"
        drawn.append(plot_score_histogram(found.normal_scores_, scores, found.threshold_, f"{stem}-histogram.png", score=label,
                                          tested_truth=known))
        if kind == "image":
            drawn.append(plot_extremes(x, scores, maps, names, f"{stem}-extremes.png", value_range=model.spec.value_range,
                                       map_name=None if explainer is None else explainer.score.name))
        if auroc is not None:
            drawn.append(plot_roc(scores, known, f"{stem}-roc.png", score=label))
    return ScoredData(out, len(x), int(flagged.sum()), float(found.threshold_), found.score.name, tuple(drawn), auroc, precision)
