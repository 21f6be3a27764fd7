"""Generative adversarial networks: one model, one training step, registered losses and nets.

- `losses.py`: minimax, non-saturating, least-squares, Wasserstein (weight clipping or gradient
  penalty), hinge and f-GAN losses as small objects registered by name (`register_loss`,
  `LOSS_REGISTRY`, `LOSSES`), each with the regularisers of D it needs; the regularisers
  (`GradientPenalty`, `R1Penalty`, `DriftPenalty`, `WeightClipping`) and their functions
  (`gradient_penalty`, `r1_penalty`, `clip_weights`); the f-divergence table (f, f', f*, g_f) of
  Nowozin et al. (2016);
- `nets.py`: MLP, DCGAN (with SAGAN's self-attention and spectral normalisation as options) and
  progressive-growing generators and discriminators, pixel norm, minibatch standard deviation,
  minibatch discrimination, the projection discriminator's head, and the registry of network
  kinds (`NETWORK_KINDS`);
- `model.py`: `GAN` (registered as `gan`) with the shared adversarial step (n_critic, TTUR,
  instance noise, EMA via the engine), training diagnostics and warnings, truncation at sampling,
  and the presets `dcgan`, `wgan`, `wgan-gp`, `lsgan`, `fgan`, `sagan`, `cgan`, `progan`, each a
  written-out config and model subclass (`DCGANConfig` and `DCGAN`, ...);
- `tabular.py`: `CTGAN` (registered as `ctgan`): the same GAN on a table's encoded rows with CTGAN's
  conditional vector, training-by-sampling, Gumbel-softmax groups and PacGAN.
Importing this package registers them.
"""

from genlab.models.gan.losses import (
    F_DIVERGENCES,
    LOSS_REGISTRY,
    LOSSES,
    AdversarialLoss,
    CriticLoss,
    DiscriminatorRegularizer,
    DriftPenalty,
    FDivergence,
    FGANLoss,
    GradientPenalty,
    HingeLoss,
    LeastSquaresLoss,
    LossOptions,
    MinimaxLoss,
    NonSaturatingLoss,
    R1Penalty,
    WassersteinGPLoss,
    WassersteinLoss,
    WeightClipping,
    build_loss,
    clip_weights,
    gradient_penalty,
    r1_penalty,
    register_loss,
)
from genlab.models.gan.model import GAN, GANConfig, GANTrainingWarning
from genlab.models.gan.tabular import CTGAN, CTGANConfig
from genlab.models.gan.nets import (
    NETWORK_KINDS,
    MinibatchDiscrimination,
    MinibatchStdDev,
    PixelNorm,
    ProgressiveDiscriminatorTrunk,
    ProgressiveGenerator,
    NetworkKind,
    SelfAttention2d,
    TrunkOptions,
    apply_spectral_norm,
    register_network_kind,
)

__all__ = [
    "F_DIVERGENCES",
    "LOSSES",
    "LOSS_REGISTRY",
    "NETWORK_KINDS",
    "AdversarialLoss",
    "CTGAN",
    "CTGANConfig",
    "CriticLoss",
    "DiscriminatorRegularizer",
    "DriftPenalty",
    "FDivergence",
    "FGANLoss",
    "GAN",
    "GANConfig",
    "GANTrainingWarning",
    "GradientPenalty",
    "HingeLoss",
    "LeastSquaresLoss",
    "LossOptions",
    "MinibatchDiscrimination",
    "MinibatchStdDev",
    "MinimaxLoss",
    "NetworkKind",
    "NonSaturatingLoss",
    "PixelNorm",
    "ProgressiveDiscriminatorTrunk",
    "ProgressiveGenerator",
    "R1Penalty",
    "SelfAttention2d",
    "TrunkOptions",
    "WassersteinGPLoss",
    "WassersteinLoss",
    "WeightClipping",
    "apply_spectral_norm",
    "build_loss",
    "clip_weights",
    "gradient_penalty",
    "r1_penalty",
    "register_loss",
    "register_network_kind",
]
