"""genlab: deep generative models under one API.

>>> import genlab
>>> data = genlab.data.load("digits")
>>> model = genlab.create("vae", data=data, latent_dim=8)
>>> model.sample(4).shape
torch.Size([4, 1, 8, 8])
"""

from genlab import data
from genlab.errors import ConfigError, DataError, GenlabError, RunError, RunNotFoundError, TrainingError
from genlab.registry import create, load, register

__version__ = "0.1.0"


def fit(model, data, **options):
    """Train `model` on `data` with the one training engine; see `genlab.train.fit`."""
    from genlab.train.engine import fit as _fit

    return _fit(model, data, **options)


__all__ = ["ConfigError", "DataError", "GenlabError", "RunError", "RunNotFoundError", "TrainingError", "create", "data", "fit", "load", "register"]
