"""Anomaly detection from a generative model of normal data, with scikit-learn's manners.

A model p of normal data scores a sample x by how unlikely it is under p. Each score is one entry
of `SCORES` (higher means more anomalous, as PyOD's `decision_function`):

    nll             -log p(x), the exact negative log-likelihood (flows, autoregressive models);
    bound           an upper bound on -log p(x): the VAE family's -IWAE_k(x) (Burda et al. 2016),
                    any model's `nll_bound`;
    reconstruction  (1 / D) sum_i (x_i - g(f(x))_i)^2, the mean squared reconstruction error of an
                    encoder-decoder (AE, DAE, VQ-VAE, and the VAE's decoder mean at its posterior
                    mean), with the per-dimension map (x - g(f(x)))^2 showing where x is unusual;
    ode             -log p(x) of a diffusion model's probability-flow ODE density (Song et al. 2021),
                    its trace estimator's probes from the detector's seed; one ODE solve per batch.

`AnomalyDetector` follows scikit-learn's outlier detectors (e.g. IsolationForest): `fit(normal)`
sets the threshold t to the (1 - contamination) quantile of the normal samples' scores, so a share
`contamination` of normal data is flagged (the false-positive rate on normal data);
`score_samples(x)` = -score(x) (higher means more normal), `decision_function(x)` =
score_samples(x) - offset_ with offset_ = -t (negative: an anomaly), `predict(x)` in {-1, 1}.
"""

from __future__ import annotations

import dataclasses
import math
import os
from pathlib import Path
from typing import Any, Callable

import torch
from torch import Tensor

from genlab import registry
from genlab.data.dataset import Dataset
from genlab.errors import ArgumentTypeError, ConfigError, DataError
from genlab.models.base import GenerativeModel
from genlab.models.diffusion.model import DiffusionModel

__all__ = ["SCORES", "AnomalyDetector", "AnomalyScore", "ScoredData", "available_scores", "detector", "read_samples", "score_data"]

DEFAULT_CONTAMINATION = 0.05
IMAGE_READING = ("resize", "crop", "grayscale")  # the image options `genlab anomaly` takes from the run
AUTO_ORDER = ("nll", "bound", "reconstruction", "ode")  # the most principled score a model offers first


@dataclasses.dataclass(frozen=True)
class AnomalyScore:
    """name; formula: what it computes, for reports; available(model) -> bool; per_sample(model, x
    (B, *shape), generator) -> (B,), higher = more anomalous; or per_dimension(model, x, generator)
    -> (B, *shape), whose mean over the dimensions is then the per-sample score."""

    name: str
    formula: str
    available: Callable[[GenerativeModel], bool]
    per_sample: Callable[[GenerativeModel, Tensor, torch.Generator], Tensor] | None = None
    per_dimension: Callable[[GenerativeModel, Tensor, torch.Generator], Tensor] | None = None

    def __call__(self, model: GenerativeModel, x: Tensor, generator: torch.Generator) -> Tensor:
        """The per-sample scores (B,)."""
        if self.per_sample is not None:
            return self.per_sample(model, x, generator)
        return self.per_dimension(model, x, generator).flatten(1).mean(1)


def _defines(model: GenerativeModel, method: str) -> bool:
    return getattr(type(model), method, None) is not getattr(GenerativeModel, method)


def _squared_error(model: GenerativeModel, x: Tensor, generator: torch.Generator | None = None) -> Tensor:
    return (x.float() - model.reconstruct(x).float()) ** 2


SCORES: dict[str, AnomalyScore] = {
    s.name: s
    for s in (
        AnomalyScore("nll", "-log p(x), exact (nats)", lambda m: bool(m.exact_likelihood), lambda m, x, g: -m.log_prob(x)),
        AnomalyScore("bound", "an upper bound on -log p(x) (nats; the VAE's -IWAE_k)",
                     lambda m: _defines(m, "nll_bound") and not m.costly_nll_bound, lambda m, x, g: m.nll_bound(x, generator=g)),
        AnomalyScore("reconstruction", "(1/D) sum_i (x_i - g(f(x))_i)^2, the mean squared reconstruction error",
                     lambda m: callable(getattr(m, "reconstruct", None)), per_dimension=_squared_error),
        AnomalyScore("ode", "-log p(x) of the probability-flow ODE's density (nats; a diffusion model's likelihood)",
                     lambda m: isinstance(m, DiffusionModel) and m.diffusion_spec is m.spec,
                     lambda m, x, g: -m.ode_log_prob(x, generator=g)),
    )
}


def available_scores(model: GenerativeModel) -> list[str]:
    """The names of the scores `model` offers, in `AUTO_ORDER` (the first is what "auto" takes)."""
    return [name for name in AUTO_ORDER if SCORES[name].available(model)]


class AnomalyDetector:
    """An anomaly detector from a trained generative model (module docstring).

    model: a trained genlab model of normal data (`genlab.load(run)` or `fit(...).model`).
    score: a name of `SCORES`, or "auto" (the first of `available_scores(model)`).
    contamination: the share of the normal samples given to `fit` that lands above the threshold,
        in (0, 0.5]: the false-positive rate on normal data the threshold is set for.
    batch_size: samples scored per pass; seed: the seed of every random draw a score makes (the
        IWAE's latents), so scores are the same from call to call.
    """

    def __init__(self, model: GenerativeModel, score: str = "auto", *, contamination: float = DEFAULT_CONTAMINATION,
                 batch_size: int = 256, seed: int = 0) -> None:
        if not isinstance(model, GenerativeModel):
            raise ArgumentTypeError(f"AnomalyDetector needs a trained genlab model (genlab.load(RUN)), not {type(model).__name__}")
        offered = available_scores(model)
        if score == "auto":
            if not offered:
                raise ConfigError(f"'{model.name}' offers none of the anomaly scores {', '.join(SCORES)}; "
                                  "use a flow, an autoregressive model, a VAE, an autoencoder or a diffusion model")
            score = offered[0]
        if score not in SCORES:
            raise ConfigError(f"unknown anomaly score {score!r}; choose one of {', '.join(SCORES)} or auto")
        if score not in offered:
            raise ConfigError(f"'{model.name}' has no {score!r} score ({SCORES[score].formula}); "
                              f"it offers {', '.join(offered) or 'none'}")
        if not (isinstance(contamination, (int, float)) and 0 < contamination <= 0.5):
            raise ConfigError(f"contamination={contamination!r} must be in (0, 0.5], e.g. 0.05: the share of normal samples flagged")
        if batch_size < 1:
            raise ConfigError(f"batch_size={batch_size} must be >= 1")
        self.model = model.eval()
        self.score = SCORES[score]
        self.contamination = float(contamination)
        self.batch_size = batch_size
        self.seed = seed
        self.threshold_: float | None = None

    # -- scores ------------------------------------------------------------------------------
    def anomaly_scores(self, x: Tensor | Dataset) -> Tensor:
        """The score of each sample, higher = more anomalous: x (N, *shape) -> (N,), on the CPU."""
        return self._batched(self.score, x)

    def score_map(self, x: Tensor | Dataset) -> Tensor:
        """Where each sample is unusual: the score per dimension (per pixel, per encoded column),
        x (N, *shape) -> (N, *shape), on the CPU; its mean over the dimensions is `anomaly_scores`."""
        if self.score.per_dimension is None:
            raise ConfigError(f"the {self.score.name!r} score has no per-dimension map; the reconstruction score has one")
        return self._batched(self.score.per_dimension, x)

    @torch.no_grad()
    def _batched(self, fn: Callable[[GenerativeModel, Tensor, torch.Generator], Tensor], x: Tensor | Dataset) -> Tensor:
        """fn over x in batches on the model's device, one generator seeded by `seed` for them all."""
        x = self._samples(x)
        generator = torch.Generator(device=self.model.device).manual_seed(self.seed)
        parts = [fn(self.model, x[i : i + self.batch_size].to(self.model.device), generator).float().cpu()
                 for i in range(0, len(x), self.batch_size)]
        return torch.cat(parts) if parts else torch.zeros(0)

    # -- scikit-learn's interface -------------------------------------------------------------------
    def fit(self, normal: Tensor | Dataset) -> "AnomalyDetector":
        """Set the threshold from normal samples: the (1 - contamination) quantile of their scores."""
        scores = self.anomaly_scores(normal)
        if len(scores) < math.ceil(1 / self.contamination):
            raise ConfigError(f"fit got {len(scores)} normal samples; a threshold at contamination {self.contamination} "
                              f"needs at least {math.ceil(1 / self.contamination)}")
        if not torch.isfinite(scores).all():
            raise ConfigError("some normal samples score inf or NaN (outside the model's support); check the data's range")
        self.threshold_ = float(torch.quantile(scores.double(), 1 - self.contamination))
        return self

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

    def _samples(self, x: Tensor | Dataset) -> Tensor:
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
    """An `AnomalyDetector` from a run directory (loaded with `genlab.load`) or a trained model;
    options as AnomalyDetector's (contamination, batch_size, seed). Call `fit(normal)` next."""
    if isinstance(run_or_model, (str, os.PathLike)):
        run_or_model = registry.load(run_or_model)
    return AnomalyDetector(run_or_model, score, **options)


# ================================================================================================
# Scoring a dataset from the command line (`genlab anomaly`)
# ================================================================================================
@dataclasses.dataclass(frozen=True)
class ScoredData:
    """What `score_data` wrote: the CSV, how many samples, how many flagged, the threshold and score."""

    out: Path
    n: int
    flagged: int
    threshold: float
    score: str


def read_samples(run_dir: str | os.PathLike, data: str | os.PathLike, model: GenerativeModel,
                 data_options: dict[str, Any] | None = None) -> tuple[Tensor, list[str]]:
    """The samples of `data` in their own order, as the run's model reads them, and a name for each:
    for a table run, a CSV encoded by the run's encoder (names: row numbers from 1); otherwise
    `genlab.data.load(data, **data_options)`, an image run's resize, crop and grayscale options
    where data_options do not set them (names: paths inside an image folder or archive, else
    indices from 0)."""
    import pandas as pd

    from genlab.data.catalog import load
    from genlab.data.images import image_names

    options = dict(data_options or {})
    if model.spec.kind == "table":
        from genlab.train.run import read_table_encoder

        path = Path(data)
        if path.is_file():
            sep = options.pop("sep", None) or ("\t" if path.suffix.lower() == ".tsv" else ",")
            try:
                frame = pd.read_csv(path, sep=sep)
            except (ValueError, OSError) as err:
                raise DataError(f"cannot read '{path}' as a CSV table: {err}") from None
        else:
            frame = load(data, **options).frame  # a named table, e.g. breast_cancer
            if frame is None:
                raise ConfigError(f"--data {data}: a table run scores the rows of a table (a CSV, or a named table)")
        x = read_table_encoder(run_dir).encode(frame)
        return x, [str(i + 1) for i in range(len(frame))]
    if model.spec.kind == "image":  # read as the run's images were: its resize, crop and grey levels
        from genlab.train.run import read_run_config, run_data_source

        trained = run_data_source(read_run_config(run_dir))
        options = {k: trained[k] for k in IMAGE_READING if k in trained} | options
    dataset = load(data, **options)
    x = dataset.tensors()[0]
    path = Path(data)
    names = image_names(path) if dataset.spec.kind == "image" and path.exists() else [str(i) for i in range(len(x))]
    if len(names) != len(x):
        names = [str(i) for i in range(len(x))]
    return x, names


def _table_columns(model: GenerativeModel, maps: Tensor, top: int = 3) -> list[str]:
    """Each row's `top` columns of largest summed per-dimension score (a table's encoded blocks)."""
    names = model.spec.table_columns
    per_column = torch.zeros(len(maps), len(names))
    for name, _, start, stop in model.spec.table_blocks:
        per_column[:, names.index(name)] += maps[:, start:stop].sum(1)
    order = per_column.argsort(1, descending=True)[:, :top]
    return [";".join(names[j] for j in row) for row in order.tolist()]


def score_data(run_dir: str | os.PathLike, data: str | os.PathLike, out: str | os.PathLike, *,
               normal: str | os.PathLike | None = None, score: str = "auto", contamination: float = DEFAULT_CONTAMINATION,
               data_options: dict[str, Any] | None = None, device: str | None = None, seed: int = 0) -> ScoredData:
    """Score every sample of `data` with the run's model and write a CSV, one row per sample in its
    order: index, source (row number or file name), score (higher = more anomalous), anomaly (0/1)
    and, for a table with a per-dimension score, unusual_columns (its three largest). The
    threshold comes from `normal` (read as `data` is), or else from the run's own held-out
    validation split."""
    import pandas as pd

    from genlab.files import atomic_path
    from genlab.train.run import read_run_config, run_data_source

    model = registry.load(run_dir, device=device)
    found = AnomalyDetector(model, score, contamination=contamination, seed=seed)
    if normal is not None:
        reference = read_samples(run_dir, normal, model, data_options)[0]
    else:
        from genlab.data.catalog import load

        own = load(**run_data_source(read_run_config(run_dir)))
        if "val" not in own.split_names:
            raise ConfigError("the run's data has no validation split to set the threshold on; pass --normal NORMAL_DATA")
        reference = own.split("val")
    found.fit(reference)
    x, names = read_samples(run_dir, data, model, data_options)
    columns = model.spec.kind == "table" and found.score.per_dimension is not None
    maps = found.score_map(x) if columns else None  # scored once: the per-sample scores are its means
    scores = maps.flatten(1).mean(1) if columns else found.anomaly_scores(x)
    flagged = (scores > found.threshold_).long()
    frame = pd.DataFrame({"index": range(len(x)), "source": names, "score": scores.double().numpy(), "anomaly": flagged.numpy()})
    if columns:
        frame["unusual_columns"] = _table_columns(model, maps)
    out = Path(out)
    with atomic_path(out) as tmp:
        frame.to_csv(tmp, index=False)
    return ScoredData(out, len(x), int(flagged.sum()), float(found.threshold_), found.score.name)
