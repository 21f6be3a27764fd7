"""Generative adversarial networks: one model, one training step, swappable losses and nets.

- `losses.py`: minimax, non-saturating, least-squares, Wasserstein (weight clipping or gradient
  penalty), hinge and f-GAN losses as small objects; `gradient_penalty`, `clip_weights`, and the
  f-divergence table (f, f', f*, g_f) of Nowozin et al. (2016);
- `nets.py`: MLP, DCGAN (with SAGAN's self-attention and spectral normalisation as options) and
  progressive-growing generators and discriminators, pixel norm, minibatch standard deviation,
  minibatch discrimination, the projection discriminator's head;
- `model.py`: `GAN` (registered as `gan`) with the shared adversarial step (n_critic, TTUR,
  instance noise, EMA via the engine), training diagnostics and warnings, truncation at sampling,
  and the presets `dcgan`, `wgan`, `wgan-gp`, `lsgan`, `fgan`, `sagan`, `cgan`, `progan`.
Importing this package registers them.
"""

from genlab.models.gan.losses import (
    F_DIVERGENCES,
    LOSSES,
    AdversarialLoss,
    FDivergence,
    FGANLoss,
    HingeLoss,
    LeastSquaresLoss,
    MinimaxLoss,
    NonSaturatingLoss,
    WassersteinLoss,
    build_loss,
    clip_weights,
    gradient_penalty,
)
from genlab.models.gan.model import GAN, GANConfig, GANTrainingWarning
from genlab.models.gan.nets import (
    MinibatchDiscrimination,
    MinibatchStdDev,
    PixelNorm,
    ProgressiveDiscriminatorTrunk,
    ProgressiveGenerator,
    SelfAttention2d,
    apply_spectral_norm,
)

__all__ = [
    "F_DIVERGENCES",
    "LOSSES",
    "AdversarialLoss",
    "FDivergence",
    "FGANLoss",
    "GAN",
    "GANConfig",
    "GANTrainingWarning",
    "HingeLoss",
    "LeastSquaresLoss",
    "MinibatchDiscrimination",
    "MinibatchStdDev",
    "MinimaxLoss",
    "NonSaturatingLoss",
    "PixelNorm",
    "ProgressiveDiscriminatorTrunk",
    "ProgressiveGenerator",
    "SelfAttention2d",
    "WassersteinLoss",
    "apply_spectral_norm",
    "build_loss",
    "clip_weights",
    "gradient_penalty",
]
