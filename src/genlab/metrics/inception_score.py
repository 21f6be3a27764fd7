"""The Inception Score (Salimans et al. 2016): IS = exp(E_x KL(p(y|x) || p(y))), where p(y|x) is a
classifier's class distribution for a generated image and p(y) = E_x p(y|x) its marginal over the
samples. It is high when each sample is classified confidently and the samples spread over the
classes: 1 at worst, the number of classes K at best. Computed, as usual, on `splits` disjoint
parts of the samples; the mean and standard deviation over the parts are returned.

>>> import torch
>>> inception_score(torch.eye(4).repeat(25, 1), splits=1)  # confident and balanced over 4 classes
(4.0, 0.0)
"""

from __future__ import annotations

import math

import torch
from torch import Tensor

from genlab.errors import DataError


def inception_score(probabilities: Tensor, *, splits: int = 10) -> tuple[float, float]:
    """(mean, std) over `splits` parts of exp(mean_x KL(p(y|x) || p(y))); probabilities (N, K),
    rows summing to 1, N >= splits."""
    p = torch.as_tensor(probabilities, dtype=torch.float64)
    if p.ndim != 2 or p.shape[0] < splits or splits < 1:
        raise DataError(f"the Inception Score needs (N, K) class probabilities with N >= splits={splits}, got shape {tuple(p.shape)}")
    if not torch.allclose(p.sum(1), torch.ones(len(p), dtype=p.dtype), atol=1e-4) or bool((p < 0).any()):
        raise DataError("the Inception Score needs class probabilities: non-negative rows summing to 1 (apply softmax to logits)")
    scores = []
    for part in p.chunk(splits):
        marginal = part.mean(0, keepdim=True)
        # 0 log 0 = 0: a class the classifier rules out adds nothing
        kl = torch.where(part > 0, part * (torch.log(part.clamp_min(1e-300)) - torch.log(marginal.clamp_min(1e-300))), 0.0).sum(1)
        scores.append(math.exp(float(kl.mean())))
    scores_t = torch.tensor(scores, dtype=torch.float64)
    return float(scores_t.mean()), float(scores_t.std(unbiased=False)) if len(scores) > 1 else 0.0
