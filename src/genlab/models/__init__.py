"""Model families. Importing this package registers every model."""

from genlab.models.base import GenerativeModel, Loss
from genlab.models import latent  # noqa: F401  (registers latent-variable models)

__all__ = ["GenerativeModel", "Loss"]
