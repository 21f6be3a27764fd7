"""Model families. Importing this package registers every model."""

from genlab.models.base import GenerativeModel, LikelihoodMeasure, Loss
from genlab.models import latent  # noqa: F401  (registers latent-variable models)
from genlab.models.diffusion import model as _diffusion  # noqa: F401  (registers diffusion models)
from genlab.models.diffusion import latent as _latent_diffusion  # noqa: F401  (registers latent diffusion)
from genlab.models.diffusion import super_resolution as _super_resolution  # noqa: F401  (registers sr3, sr-regression)
from genlab.models.diffusion import text as _text_diffusion  # noqa: F401  (registers text-ddpm)
from genlab.models import flows  # noqa: F401  (registers normalizing flows)
from genlab.models import autoregressive  # noqa: F401  (registers autoregressive models)
from genlab.models import gan  # noqa: F401  (registers GANs)
from genlab.models import tabular  # noqa: F401  (registers the tabular diffusion model)

__all__ = ["GenerativeModel", "LikelihoodMeasure", "Loss"]
