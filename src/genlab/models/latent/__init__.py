"""Latent-variable models."""

from genlab.models.latent.vae import VAE, VAEConfig

__all__ = ["VAE", "VAEConfig"]
