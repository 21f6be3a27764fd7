"""Models made for tables, both conditioning exactly on categorical columns
(`conditions.ConditionColumns`): `tabular`, latent diffusion in a table VAE's latent space
(TabSyn), and `tabddpm`, Gaussian diffusion on the numbers with masked diffusion on the categories
(TabDDPM). Importing this package registers them."""

from genlab.models.tabular.latent import TabularLatentConfig, TabularLatentDiffusion
from genlab.models.tabular.tabddpm import TabDDPM, TabDDPMConfig

__all__ = ["TabDDPM", "TabDDPMConfig", "TabularLatentConfig", "TabularLatentDiffusion"]
