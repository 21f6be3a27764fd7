"""All sample-based metrics of a set of generated images in one call."""

from __future__ import annotations

from pathlib import Path

import torch
from torch import Tensor

from genlab.metrics.features import FeatureExtractor, compute_features, get_extractor
from genlab.metrics.frechet import fid
from genlab.metrics.inception_score import inception_score
from genlab.metrics.kernels import kid
from genlab.metrics.manifold import precision_recall


def evaluate_samples(
    real: Tensor,
    fake: Tensor,
    extractor: FeatureExtractor | str | Path,
    *,
    kid_subsets: int = 100,
    kid_subset_size: int = 1000,
    k: int = 3,
    batch_size: int = 256,
    generator: torch.Generator | None = None,
) -> dict[str, float]:
    """FID, KID (mean and std over subsets) and improved precision/recall of fake images against
    real images, both (N, C, H, W) in [0, 1], in the feature space of `extractor` (a
    FeatureExtractor, a shipped name such as "digits", or a weights path; see `get_extractor`).

    Returns {"fid", "kid", "kid_std", "precision", "recall"} as floats, and, where the extractor
    has a classifier head (the shipped classifiers, Inception-v3), "inception_score" and
    "inception_score_std" of the fakes over 10 splits (`genlab.metrics.inception_score`). `generator` draws the KID
    subsets. Use the same extractor and similar sample sizes for numbers you compare.
    """
    extractor = get_extractor(extractor)
    features_real = compute_features(extractor, real, batch_size=batch_size)
    features_fake = compute_features(extractor, fake, batch_size=batch_size)
    kid_mean, kid_std = kid(
        features_real, features_fake, subsets=kid_subsets, subset_size=kid_subset_size, generator=generator
    )
    precision, recall = precision_recall(features_real, features_fake, k=k)
    scores = {
        "fid": fid(features_real, features_fake),
        "kid": kid_mean,
        "kid_std": kid_std,
        "precision": precision,
        "recall": recall,
    }
    if hasattr(extractor, "logits") and len(fake) >= 10:  # a classifier head: the Inception Score of the fakes
        probabilities = torch.softmax(compute_features(extractor, fake, batch_size=batch_size, output="logits").double(), 1)
        scores["inception_score"], scores["inception_score_std"] = inception_score(probabilities.cpu(), splits=10)
    return scores
