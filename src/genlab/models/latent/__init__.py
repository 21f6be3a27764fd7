"""Latent-variable models: the VAE (and beta-VAE), EM for Gaussian mixtures, autoencoders (AE, DAE, WAE,
AAE), VQ-VAE and the Gumbel-softmax discrete VAE. Importing this package registers them."""

from genlab.models.latent.vae import VAE, BetaVAE, BetaVAEConfig, FlowPrior, VAEConfig
from genlab.models.latent.em import GaussianMixture, GaussianMixtureModel, GMMConfig
from genlab.models.latent.autoencoder import (
    AAEConfig,
    AdversarialAutoencoder,
    AEConfig,
    Autoencoder,
    DAEConfig,
    DenoisingAutoencoder,
    LatentAdversary,
    WAEConfig,
    WassersteinAutoencoder,
)
from genlab.models.latent.dvae import DVAEConfig, DiscreteVAE
from genlab.models.latent.vqvae import VQVAE, VQVAEConfig, VectorQuantizer

__all__ = [
    "AAEConfig",
    "AEConfig",
    "AdversarialAutoencoder",
    "BetaVAE",
    "BetaVAEConfig",
    "Autoencoder",
    "DAEConfig",
    "DVAEConfig",
    "DenoisingAutoencoder",
    "DiscreteVAE",
    "FlowPrior",
    "GMMConfig",
    "GaussianMixture",
    "GaussianMixtureModel",
    "LatentAdversary",
    "VAE",
    "VAEConfig",
    "VQVAE",
    "VQVAEConfig",
    "VectorQuantizer",
    "WAEConfig",
    "WassersteinAutoencoder",
]
