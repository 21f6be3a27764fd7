"""Models made for tables: `tabular`, a mixed-type diffusion model (Gaussian diffusion on numbers,
masked diffusion on categories, exact conditioning on categorical columns). Importing this package
registers it."""

from genlab.models.tabular.model import TabularConfig, TabularDiffusion

__all__ = ["TabularConfig", "TabularDiffusion"]
