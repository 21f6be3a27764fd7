"""Class labels for the autoregressive models: checks, the class prior p(y), and marginal likelihoods."""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F
from torch import Tensor

from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError
from genlab.models.autoregressive.outputs import sample_categorical


def one_hot(labels: Tensor | None, num_classes: int | None, dtype: torch.dtype) -> Tensor | None:
    """(B,) labels -> (B, num_classes) one-hot rows in dtype; None for unconditional models or no labels."""
    return None if num_classes is None or labels is None else F.one_hot(labels.long(), num_classes).to(dtype)


class ClassConditionalMixin:
    """Labels for class-conditional autoregressive models: checks, a class prior p(y) learned from the
    training labels' frequencies, and log p(x) = log sum_y p(y) p(x|y) when no label is given."""

    num_classes: int | None
    spec: DataSpec

    def _init_class_prior(self, config) -> None:
        if config.class_conditional and not self.spec.num_classes:
            raise ConfigError(f"class_conditional=True needs labelled data; {self.spec.name!r} has no labels")
        self.num_classes = self.spec.num_classes if config.class_conditional else None
        if self.num_classes is not None:
            # uniform until `initialize` counts the training labels
            self.register_buffer("class_log_prior", torch.full((self.num_classes,), -math.log(self.num_classes)))

    def _set_class_prior(self, train) -> None:
        if self.num_classes is None:
            return
        _, labels = train.tensors()
        if labels is None:
            raise ConfigError("class_conditional=True but the training data has no labels; load labelled data")
        counts = torch.bincount(labels.long().cpu(), minlength=self.num_classes).double() + 1.0  # add-one: no class impossible
        self.class_log_prior.copy_(torch.log(counts / counts.sum()).to(self.class_log_prior))

    def _sample_labels(self, n: int, cond: Tensor | None, generator: torch.Generator | None) -> Tensor | None:
        """The labels to sample with: `cond` checked, or y ~ p(y) when a conditional model gets none."""
        if cond is not None or self.num_classes is None:
            return self.check_labels(cond, n, self.num_classes)
        return sample_categorical(self.class_log_prior.expand(n, -1), generator).to(self.device)

    def _marginalise_labels(self, x: Tensor, conditional_log_prob) -> Tensor:
        """log p(x) = logsumexp_y [log p(y) + log p(x | y)]: one pass per class. x: (B, ...) -> (B,)."""
        per_class = [conditional_log_prob(x, torch.full((x.shape[0],), y, device=x.device, dtype=torch.long)) for y in range(self.num_classes)]
        # renormalised in the working dtype: a float32 log-prior read in float64 sums to 1 only to ~1e-8
        log_prior = torch.log_softmax(self.class_log_prior.to(per_class[0]), dim=0)
        return torch.logsumexp(torch.stack(per_class, dim=1) + log_prior, dim=1)
