"""Autoregressive models: p(x) = prod_i p(x_i | x_<i), exact likelihood, sequential sampling.

- `made.py`: MADE on vectors, tables and flattened images (`made`);
- `pixelcnn.py`: PixelCNN and gated PixelCNN on images (`pixelcnn`, `gated-pixelcnn`);
- `outputs.py`: the per-dimension conditionals (categorical, Bernoulli, discretized logistic
  mixture, Gaussian mixture) both use; `conditioning.py`: class labels and the class prior.
The masked layers themselves are shared building blocks in `genlab.nn.masked`.
"""

from genlab.models.autoregressive.made import MADEConfig, MADEModel
from genlab.models.autoregressive.outputs import (
    BernoulliOutput,
    CategoricalOutput,
    DiscretizedLogisticMixture,
    GaussianMixtureOutput,
    make_output,
)
from genlab.models.autoregressive.pixelcnn import GatedPixelCNN, GatedPixelCNNConfig, PixelCNN, PixelCNNConfig

__all__ = [
    "BernoulliOutput",
    "CategoricalOutput",
    "DiscretizedLogisticMixture",
    "GatedPixelCNN",
    "GatedPixelCNNConfig",
    "GaussianMixtureOutput",
    "MADEConfig",
    "MADEModel",
    "PixelCNN",
    "PixelCNNConfig",
    "make_output",
]
