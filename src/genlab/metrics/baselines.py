"""Classical baselines fitted to the same training data, so a deep model's numbers have a yardstick."""

from __future__ import annotations

import numpy as np
import torch
from torch import Tensor

from genlab.data.dataset import Dataset


class SklearnGaussianMixture:
    """A K-component full-covariance Gaussian mixture fitted by EM (scikit-learn) to flattened samples.

    log p(x) = logsumexp_k [log pi_k + log N(x; mu_k, Sigma_k)]  (exact, in nats, on the data's scale).
    """

    name = "gmm"

    def __init__(self, n_components: int = 10, seed: int = 0) -> None:
        from sklearn.mixture import GaussianMixture

        self.n_components = n_components
        # reg_covar: pixels that never vary (digit borders) make a covariance singular
        self._gmm = GaussianMixture(n_components=n_components, covariance_type="full", reg_covar=1e-3, random_state=seed)
        self._shape: tuple[int, ...] = ()
        self._range: tuple[float, float] = (-np.inf, np.inf)

    def fit(self, data: Dataset) -> "SklearnGaussianMixture":
        x, _ = data.tensors()
        self._shape = tuple(x.shape[1:])
        self._range = data.spec.value_range
        self._gmm.fit(x.reshape(len(x), -1).double().numpy())
        return self

    def sample(self, n: int, seed: int = 0) -> Tensor:
        """n samples (n, *shape), clipped to the data's value range (as pixels are)."""
        self._gmm.random_state = seed
        x, _ = self._gmm.sample(n)
        rng = np.random.default_rng(seed)
        x = x[rng.permutation(n)]  # sklearn returns samples grouped by component
        return torch.from_numpy(x).float().clamp(*self._range).reshape(n, *self._shape)

    def log_prob(self, x: Tensor) -> Tensor:
        return torch.from_numpy(self._gmm.score_samples(x.reshape(len(x), -1).double().numpy())).float()


BASELINES = {"gmm": SklearnGaussianMixture}
