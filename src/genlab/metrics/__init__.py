"""Evaluation of generative models: sample-based metrics in a feature space (FID, KID, improved
precision/recall, the Inception Score), kernel two-sample distances (MMD), likelihood units (bits per dimension), and
the feature extractors they use.

>>> import torch
>>> from genlab.metrics import frechet_distance
>>> frechet_distance(torch.zeros(2), torch.eye(2), torch.ones(2), 4 * torch.eye(2))  # |1|^2 * 2 + (2-1)^2 * 2
4.0
"""

from genlab.metrics.evaluate import evaluate_samples
from genlab.metrics.features import (
    ClassifierFeatures,
    FeatureExtractor,
    compute_features,
    get_extractor,
    shipped_extractors,
    train_feature_classifier,
)
from genlab.metrics.frechet import fid, frechet_distance, gaussian_statistics
from genlab.metrics.inception import InceptionV3Features
from genlab.metrics.inception_score import inception_score
from genlab.nn.likelihood import bits_per_dim, nats_to_bits_per_dim
from genlab.metrics.kernels import kid, mmd
from genlab.metrics.manifold import precision_recall

__all__ = [
    "ClassifierFeatures",
    "FeatureExtractor",
    "InceptionV3Features",
    "bits_per_dim",
    "compute_features",
    "evaluate_samples",
    "fid",
    "frechet_distance",
    "gaussian_statistics",
    "get_extractor",
    "inception_score",
    "kid",
    "mmd",
    "nats_to_bits_per_dim",
    "precision_recall",
    "shipped_extractors",
    "train_feature_classifier",
]
