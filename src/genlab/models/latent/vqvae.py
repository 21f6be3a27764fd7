"""VQ-VAE (van den Oord, Vinyals & Kavukcuoglu 2017): a convolutional encoder to an h x w grid of
D-dimensional vectors, each replaced by its nearest entry of a learned codebook {e_1..e_K}, and a
decoder from the quantized grid; generation draws a grid of code indices from a prior over codes.

    z_e = E(x) (B, D, h, w),   k_ij = argmin_k |z_e,ij - e_k|^2,   z_q,ij = e_{k_ij},   x^ = G(z_q)
    loss = c(x, x^) + |sg[z_e] - e|^2 + beta |z_e - sg[e]|^2          (their eq. 3)

The decoder's input is z_e + sg[z_q - z_e] (the straight-through estimator: the value is z_q, the
gradient reaches z_e unchanged). The codebook term can be replaced by exponential moving averages of
each code's assigned vectors (their appendix A.1), with Laplace smoothing of the counts; codes unused
for `restart_after` training steps are restarted at random encoder outputs of the current batch (a
common remedy for dead codes; e.g. Dhariwal et al. 2020, Jukebox, sec. 3.2). The perplexity
exp(H(p)) of the batch's code usage p is logged: K when every code is used equally, 1 at collapse.

The prior p(k) over code grids is trained on the codes of each training batch, detached, in the same
optimizer steps as the autoencoder (so its own gradients touch only its own parameters): "pixelcnn", a
PixelCNN (`genlab.models.autoregressive`) over the h x w grid with a K-way softmax and one-hot input,
or "categorical", an independent categorical per grid position. As the codes move while the
autoencoder learns, the prior chases them; they settle as the learning rate decays. Its negative
log-likelihood of the codes, in bits per image, is the rate an entropy coder driven by it would reach
(`code_length_bits`), logged as `prior_bits`.
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any, ClassVar

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.config import Config
from genlab.data.dataset import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel, LikelihoodMeasure, Loss
from genlab.models.latent.autoencoder import Reconstructs
from genlab.nn.activations import get_activation
from genlab.nn.conv import Upsample, conv_norm, level_body
from genlab.nn.builders import NETS, build_decoder, build_encoder, resolve_net
from genlab.nn.presets import SIZE_PRESETS, size_config
from genlab.nn.distributions import bernoulli_log_likelihood
from genlab.nn.masked import check_dilations
from genlab.registry import register

__all__ = ["CodePrior", "QuantizerOutput", "VQVAE", "VQVAEConfig", "VectorQuantizer", "code_pixelcnn", "perplexity"]

CODEBOOK_UPDATES = ("ema", "loss")
PRIORS = ("pixelcnn", "categorical")
RECONSTRUCTIONS = ("auto", "bernoulli", "mse")


def perplexity(indices: Tensor, num_codes: int) -> Tensor:
    """exp(H(p)), p the empirical frequencies of `indices` (any shape, long) over num_codes codes:
    exp(-sum_k p_k log p_k), between 1 (one code) and num_codes (uniform use). A 0-d float tensor."""
    p = torch.bincount(indices.flatten(), minlength=num_codes).float() / indices.numel()
    return torch.exp(-(p * torch.log(p.clamp_min(1e-12))).sum())


@dataclasses.dataclass
class QuantizerOutput:
    """What `VectorQuantizer.forward` returns.

    quantized: z_e + sg[z_q - z_e], the straight-through z_q, z_e's shape; indices: the nearest
    codes, z_e's shape without the code axis (long); codebook_loss: mean |sg[z_e] - z_q|^2 (0 with EMA
    updates); commitment_loss: mean |z_e - sg[z_q]|^2 (unweighted); perplexity: of the indices.
    """

    quantized: Tensor
    indices: Tensor
    codebook_loss: Tensor
    commitment_loss: Tensor
    perplexity: Tensor


class VectorQuantizer(nn.Module):
    """Nearest-neighbour quantization with a codebook of K vectors e_k in R^D (van den Oord et al. 2017).

    Input z_e (B, D, *spatial) (the code axis second, as a conv output) or (N, D). In training mode
    (and with gradients enabled) a forward pass also updates the codebook when codebook_update="ema":

        N_k <- gamma N_k + (1 - gamma) n_k,     m_k <- gamma m_k + (1 - gamma) sum_{i: k_i = k} z_e,i,
        e_k = m_k / N~_k,   N~_k = (N_k + eps) / (n + K eps) n,   n = sum_k N_k   (Laplace smoothing)

    with n_k the batch's count of vectors assigned to k, and restarts dead codes: a code unused for
    `restart_after` consecutive training passes is moved to a random vector of the batch's z_e (its
    EMA statistics reset to N_k = 1, m_k = that vector). restart_after = 0 never restarts.

    >>> import torch
    >>> vq = VectorQuantizer(4, 2, codebook_update="loss")
    >>> out = vq(torch.randn(3, 2, 5, 5))
    >>> out.quantized.shape, out.indices.shape
    (torch.Size([3, 2, 5, 5]), torch.Size([3, 5, 5]))
    """

    def __init__(
        self,
        num_codes: int,
        code_dim: int,
        *,
        codebook_update: str = "ema",
        decay: float = 0.99,
        epsilon: float = 1e-5,
        restart_after: int = 0,
    ) -> None:
        super().__init__()
        if codebook_update not in CODEBOOK_UPDATES:
            raise ConfigError(f"codebook_update={codebook_update!r} is unknown; choose one of {', '.join(map(repr, CODEBOOK_UPDATES))}")
        self.num_codes, self.code_dim = num_codes, code_dim
        self.codebook_update, self.decay, self.epsilon, self.restart_after = codebook_update, decay, epsilon, restart_after
        initial = torch.empty(num_codes, code_dim).uniform_(-1.0 / num_codes, 1.0 / num_codes)
        if codebook_update == "ema":
            self.register_buffer("codebook", initial)
            self.register_buffer("ema_cluster_size", torch.ones(num_codes))
            self.register_buffer("ema_embed_sum", initial.clone())
        else:
            self.codebook = nn.Parameter(initial)
        self.register_buffer("unused_steps", torch.zeros(num_codes, dtype=torch.long))

    # -- assignment ------------------------------------------------------------------------------
    @staticmethod
    def _flatten(z: Tensor) -> Tensor:
        """(B, D, *spatial) -> (B * prod(spatial), D); (N, D) unchanged."""
        return z if z.dim() == 2 else z.movedim(1, -1).reshape(-1, z.shape[1])

    @staticmethod
    def _unflatten(flat: Tensor, like: Tensor) -> Tensor:
        """The inverse of `_flatten` for vectors (N, D) or indices (N,), into `like`'s layout."""
        if like.dim() == 2:
            return flat
        spatial = (like.shape[0], *like.shape[2:])
        if flat.dim() == 1:
            return flat.view(spatial)
        return flat.view(*spatial, flat.shape[1]).movedim(-1, 1)

    def nearest(self, z: Tensor) -> Tensor:
        """argmin_k |z_i - e_k|^2 for z (B, D, *spatial) or (N, D) -> indices (B, *spatial) or (N,)."""
        flat = self._flatten(z)
        e = self.codebook.to(flat.dtype)
        d2 = flat.pow(2).sum(1, keepdim=True) - 2.0 * flat @ e.T + e.pow(2).sum(1)  # (N, K)
        return self._unflatten(d2.argmin(1), z)

    def lookup(self, indices: Tensor) -> Tensor:
        """e_k for indices (B, *spatial) -> (B, D, *spatial) (code axis second), or (N,) -> (N, D)."""
        vectors = self.codebook[indices]  # (B, *spatial, D)
        return vectors if indices.dim() == 1 else vectors.movedim(-1, 1)

    # -- forward ---------------------------------------------------------------------------------------
    def forward(self, z_e: Tensor) -> QuantizerOutput:
        indices = self.nearest(z_e.detach())
        z_q = self.lookup(indices).to(z_e.dtype)
        if self.training and torch.is_grad_enabled():
            self.update(z_e.detach(), indices)  # after the lookup: this pass decodes the codes it was assigned to
        commitment = (z_e - z_q.detach()).pow(2).mean()
        codebook_loss = (z_e.detach() - z_q).pow(2).mean() if self.codebook_update == "loss" else z_e.new_zeros(())
        quantized = z_e + (z_q - z_e).detach()  # straight-through: value z_q, gradient to z_e
        return QuantizerOutput(quantized, indices, codebook_loss, commitment, perplexity(indices, self.num_codes))

    @torch.no_grad()
    def update(self, z_e: Tensor, indices: Tensor) -> None:
        """One training pass's codebook bookkeeping: the EMA update (codebook_update="ema"), then the
        dead-code restarts (restart_after > 0). z_e (B, D, *spatial) or (N, D) detached; indices its codes."""
        flat, idx = self._flatten(z_e).to(self.codebook.dtype), indices.flatten()
        one_hot = F.one_hot(idx, self.num_codes).to(flat.dtype)  # (N, K)
        counts = one_hot.sum(0)  # n_k, (K,)
        if self.codebook_update == "ema":
            self.ema_cluster_size.lerp_(counts, 1.0 - self.decay)
            self.ema_embed_sum.lerp_(one_hot.T @ flat, 1.0 - self.decay)
            n = self.ema_cluster_size.sum()
            smoothed = (self.ema_cluster_size + self.epsilon) / (n + self.num_codes * self.epsilon) * n
            self.codebook.copy_(self.ema_embed_sum / smoothed[:, None])
        if self.restart_after > 0:
            self.unused_steps.add_(1).masked_fill_(counts > 0, 0)
            dead = torch.nonzero(self.unused_steps >= self.restart_after).flatten()
            if dead.numel() > 0:
                self.restart(dead, flat)

    @torch.no_grad()
    def restart(self, codes: Tensor, candidates: Tensor, generator: torch.Generator | None = None) -> None:
        """Move `codes` (long indices) to vectors drawn uniformly (with replacement) from candidates (N, D)."""
        device = candidates.device if generator is None else generator.device
        pick = torch.randint(candidates.shape[0], (codes.numel(),), generator=generator, device=device).to(candidates.device)
        new = candidates[pick].to(self.codebook.dtype)
        self.codebook[codes] = new
        if self.codebook_update == "ema":
            self.ema_cluster_size[codes] = 1.0
            self.ema_embed_sum[codes] = new
        self.unused_steps[codes] = 0

    @torch.no_grad()
    def initialize_codebook(self, candidates: Tensor, generator: torch.Generator | None = None) -> None:
        """Every code set to a vector drawn from candidates (N, D) (e.g. the initial encoder's outputs),
        without replacement when N >= K; the EMA statistics start at N_k = 1, m_k = e_k."""
        n = candidates.shape[0]
        device = candidates.device if generator is None else generator.device
        order = torch.randperm(n, generator=generator, device=device).to(candidates.device)
        pick = order[: self.num_codes] if n >= self.num_codes else order[torch.arange(self.num_codes, device=candidates.device) % n]
        self.codebook.copy_(candidates[pick].to(self.codebook.dtype))
        if self.codebook_update == "ema":
            self.ema_cluster_size.fill_(1.0)
            self.ema_embed_sum.copy_(self.codebook)
        self.unused_steps.zero_()


# ---------------------------------------------------------------------------------------------
# The grid encoder and decoder
# ---------------------------------------------------------------------------------------------
def grid_sides(height: int, width: int, downsamples: int) -> list[tuple[int, int]]:
    """(h, w) after 0..downsamples stride-2 convolutions (3x3, padding 1: n -> ceil(n / 2))."""
    sides = [(height, width)]
    for _ in range(downsamples):
        h, w = sides[-1]
        sides.append(((h + 1) // 2, (w + 1) // 2))
    return sides


class GridEncoder(nn.Module):
    """Image (B, C, H, W) -> grid (B, D, h, w): a 3x3 stem, `blocks` residual blocks per level (none:
    an activation) with a stride-2 convolution between levels, then norm, activation and a 1x1
    convolution to D channels."""

    def __init__(self, in_channels: int, code_dim: int, channels: tuple[int, ...], activation: str = "silu", *, blocks: int = 1) -> None:
        super().__init__()
        layers: list[nn.Module] = [nn.Conv2d(in_channels, channels[0], 3, padding=1)]
        for level, width in enumerate(channels):
            layers += level_body(width, blocks, activation)
            if level + 1 < len(channels):
                layers.append(nn.Conv2d(width, channels[level + 1], 3, stride=2, padding=1))
        layers += [conv_norm(channels[-1]), get_activation(activation), nn.Conv2d(channels[-1], code_dim, 1)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, D, h, w)


class GridDecoder(nn.Module):
    """Grid (B, D, h, w) -> image (B, C, H, W), the encoder's mirror: a 1x1 convolution, `blocks`
    residual blocks per level (none: an activation) with an `Upsample` (`upsample` mode) to the next
    larger side, then norm, activation, 3x3 conv."""

    def __init__(self, code_dim: int, out_channels: int, channels: tuple[int, ...], sides: list[tuple[int, int]], activation: str = "silu",
                 *, blocks: int = 1, upsample: str = "nearest") -> None:  # fmt: skip
        super().__init__()
        widths, sides = channels[::-1], sides[::-1]  # smallest level first
        layers: list[nn.Module] = [nn.Conv2d(code_dim, widths[0], 1)]
        for level, width in enumerate(widths):
            layers += level_body(width, blocks, activation)
            if level + 1 < len(widths):
                layers.append(Upsample(width, widths[level + 1], sides[level], sides[level + 1], mode=upsample))
        layers += [conv_norm(widths[-1]), get_activation(activation), nn.Conv2d(widths[-1], out_channels, 3, padding=1)]
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (B, D, h, w) -> (B, C, H, W)


# ---------------------------------------------------------------------------------------------
# Priors over the code grid
# ---------------------------------------------------------------------------------------------
def code_pixelcnn(num_codes: int, side: tuple[int, int], channels: int, blocks: int, dilations: tuple[int, ...] = (1,)) -> GenerativeModel:
    """A PixelCNN (`genlab.models.autoregressive`) over an h x w grid of code indices: a K-way softmax
    per position, the codes fed in one-hot (codes have no order, which the scalar level input of an
    image PixelCNN would impose). Its spec: images (1, h, w) with K levels on the value range [0, K-1]."""
    from genlab.models.autoregressive.pixelcnn import PixelCNN, PixelCNNConfig
    from genlab.nn.masked import MaskedConv2d

    class CodePixelCNN(PixelCNN):
        def __init__(self, config: PixelCNNConfig, spec: DataSpec) -> None:
            super().__init__(config, spec)
            self.first = MaskedConv2d(num_codes, config.channels, config.first_kernel_size, mask_type="A", groups=1)

        def network_input(self, values: Tensor) -> Tensor:
            """Codes (B, 1, h, w) long -> one-hot (B, K, h, w)."""
            return F.one_hot(values[:, 0], num_codes).movedim(-1, 1).to(self.head[0].weight.dtype)

    spec = DataSpec("codes", kind="image", shape=(1, *side), value_range=(0.0, float(num_codes - 1)), levels=num_codes)
    # a 3x3 first layer: each 3x3 block widens the view by a row, and a 7x7 one costs ~1.6x on a 4x4 grid
    # codes have no order, so a softmax over them whatever the size preset
    config = PixelCNNConfig(channels=channels, blocks=blocks, kernel_size=3, dilations=tuple(dilations), first_kernel_size=3, head_channels=channels, output="categorical")
    return CodePixelCNN(config, spec)


class CodePrior(nn.Module):
    """A prior p(k) over grids of code indices k (B, h, w) in {0..K-1}:

    "pixelcnn": autoregressive in raster order, p(k) = prod_ij p(k_ij | k_<ij) (`code_pixelcnn`);
    "categorical": independent positions, p(k) = prod_ij softmax(l_ij)_{k_ij} with logits l (h, w, K).

    Both start uniform-ish and are fitted by maximum likelihood on codes (their NLL as a loss term).

    >>> import torch
    >>> prior = CodePrior("categorical", 4, (2, 3))
    >>> round(float(prior.log_prob(torch.zeros(5, 2, 3, dtype=torch.long))[0].detach()), 4)  # uniform at the start: -6 log 4
    -8.3178
    """

    def __init__(self, kind: str, num_codes: int, side: tuple[int, int], *, channels: int = 64, blocks: int = 2, dilations: tuple[int, ...] = (1,)) -> None:
        super().__init__()
        if kind not in PRIORS:
            raise ConfigError(f"code prior {kind!r} is unknown; choose one of {', '.join(map(repr, PRIORS))}")
        self.kind, self.num_codes, self.side = kind, num_codes, tuple(side)
        if kind == "pixelcnn":
            self.pixelcnn = code_pixelcnn(num_codes, self.side, channels, blocks, dilations)
        else:
            self.logits = nn.Parameter(torch.zeros(*self.side, num_codes))

    def log_prob(self, indices: Tensor) -> Tensor:
        """log p(k) in nats of code grids (B, h, w) long, (B,)."""
        if self.kind == "pixelcnn":
            return self.pixelcnn.log_prob(indices[:, None].to(self.pixelcnn.head[0].weight.dtype))
        log_p = torch.log_softmax(self.logits, -1).expand(indices.shape[0], *self.logits.shape)
        return log_p.gather(-1, indices[..., None])[..., 0].flatten(1).sum(1)

    @torch.no_grad()
    def sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Code grids k ~ p(k), (n, h, w) long, on the prior's device."""
        if self.kind == "categorical":
            from genlab.models.autoregressive.outputs import sample_categorical

            return sample_categorical(self.logits.detach().expand(n, *self.logits.shape), generator)
        was_training = self.pixelcnn.training
        self.pixelcnn.eval()
        try:
            grids = self.pixelcnn.sample(n, generator=generator)  # (n, 1, h, w) float codes
        finally:
            self.pixelcnn.train(was_training)
        return grids[:, 0].round().long().to(self.pixelcnn.head[0].weight.device)


# ---------------------------------------------------------------------------------------------
# The model
# ---------------------------------------------------------------------------------------------
@dataclasses.dataclass
class VQVAEConfig(Config):
    """Configuration of the VQ-VAE.

    num_codes: K, the codebook size.
    code_dim: D, the dimension of each code vector.
    downsamples: stride-2 convolutions of the encoder: the grid is about H / 2^downsamples on a side
        (8 x 8 digits, 1: a 4 x 4 grid).
    net: "conv" (residual conv blocks, stride-2 convolutions down to the grid), "mlp" (an MLP to
        the h x w x D grid, reshaped: no spatial locality, but ~10x cheaper on tiny images), or
        "auto": conv for images of side >= 16, mlp below (as `genlab.nn.builders.resolve_net`).
    channels: conv widths, full resolution first, one per level (downsamples + 1 of them).
    preset: "auto", "cpu" or "paper": the size of the conv networks on images of side >= 16
        (`genlab.nn.presets`); downsamples, channels and the prior_ sizes left None take the preset's:
        "cpu" codes a 28x28 image as a 7x7 grid through widths (16, 32, 64) without residual blocks
        (transposed-convolution upsampling), "paper" as 14x14 through (32, 64) with a residual block per level.
    blocks_per_level: residual blocks at each resolution of the conv nets (None: the preset's).
    hidden: MLP widths of the encoder (net="mlp"); the decoder uses them reversed.
    commitment_cost: beta, the weight of |z_e - sg[e]|^2 (0.25 in the paper).
    codebook_update: "ema" (moving averages, their appendix A.1) or "loss" (the codebook term
        |sg[z_e] - e|^2 and the optimizer).
    ema_decay: gamma of the EMA updates (0.99 in the paper).
    ema_epsilon: Laplace smoothing of the EMA counts.
    restart_after: restart a code unused for this many training steps at a random encoder output
        (0 never restarts).
    reconstruction: "bernoulli" (cross-entropy, data mapped to [0, 1]), "mse" (squared error summed
        over pixels) or "auto" (bernoulli when the value range is finite).
    prior: the prior over code grids for `sample`: "pixelcnn" or "categorical" (independent per
        position); trained alongside the autoencoder on its detached codes.
    prior_channels, prior_blocks: the PixelCNN prior's width and residual blocks (None: the preset's).
    prior_dilations: the dilations of its blocks' 3x3 convolutions, cycled (`PixelCNNConfig.dilations`;
        None: the preset's). "cpu" takes 4 blocks of 64 dilated (1, 2, 1, 2), so a code in a 7x7 grid's
        last row reads its first (2 undilated blocks reach 3 rows up); "paper" 2 undilated blocks of 64.
    """

    # runs saved before `prior_dilations` existed had undilated priors
    added_fields: ClassVar[dict[str, Any]] = {"prior_dilations": (1,)}

    num_codes: int = 32
    code_dim: int = 16
    preset: str = "auto"
    downsamples: int | None = None
    net: str = "auto"
    channels: tuple[int, ...] | None = None
    blocks_per_level: int | None = None
    hidden: tuple[int, ...] = (256, 256)
    commitment_cost: float = 0.25
    codebook_update: str = "ema"
    ema_decay: float = 0.99
    ema_epsilon: float = 1e-5
    restart_after: int = 100
    reconstruction: str = "auto"
    prior: str = "pixelcnn"
    prior_channels: int | None = None
    prior_blocks: int | None = None
    prior_dilations: tuple[int, ...] | None = None

    def validate(self) -> None:
        self._choice("preset", SIZE_PRESETS)
        self._positive("num_codes", "code_dim", *(f for f in ("prior_channels", "prior_blocks") if getattr(self, f) is not None))
        check_dilations("VQVAEConfig", "prior_dilations", self.prior_dilations)
        optional = [f for f in ("downsamples", "blocks_per_level") if getattr(self, f) is not None]
        self._positive("restart_after", "commitment_cost", "ema_epsilon", *optional, allow_zero=True)
        self._in_range("ema_decay", 0.0, 0.99999)
        self._choice("codebook_update", CODEBOOK_UPDATES)
        self._choice("reconstruction", RECONSTRUCTIONS)
        self._choice("prior", PRIORS)
        self._choice("net", NETS)
        self.hidden = tuple(self.hidden)
        if not self.hidden or any(not isinstance(w, int) or w <= 0 for w in self.hidden):
            raise ConfigError(f"VQVAEConfig.hidden={self.hidden!r} must be one or more positive integer widths, e.g. (256, 256)")
        if self.num_codes < 2:
            raise ConfigError(f"VQVAEConfig.num_codes={self.num_codes} must be >= 2")
        if self.prior == "pixelcnn" and self.prior_channels is not None and self.prior_channels % 2:
            raise ConfigError(f"VQVAEConfig.prior_channels={self.prior_channels} must be even (the PixelCNN halves it in its blocks)")
        if self.channels is None or self.downsamples is None:
            return  # sized by the preset (`sized`)
        widths = tuple(self.channels)
        if len(widths) != self.downsamples + 1 or any(not isinstance(w, int) or w <= 0 for w in widths):
            raise ConfigError(
                f"VQVAEConfig.channels={widths!r} must give downsamples + 1 = {self.downsamples + 1} positive widths, "
                "one per resolution, e.g. (32, 64) for downsamples=1"
            )
        self.channels = widths


# the networks of each size preset (genlab.nn.presets); "paper" keeps the sizes measured on digits
VQVAE_PRESETS = {
    "cpu": {"downsamples": 2, "channels": (16, 32, 64), "blocks_per_level": 0, "prior_channels": 64, "prior_blocks": 4, "prior_dilations": (1, 2, 1, 2)},
    "paper": {"downsamples": 1, "channels": (32, 64), "blocks_per_level": 1, "prior_channels": 64, "prior_blocks": 2, "prior_dilations": (1,)},
}


@register("vq-vae", VQVAEConfig, family="latent", summary="VQ-VAE: codebook with straight-through gradients, EMA updates and a PixelCNN prior")
class VQVAE(Reconstructs, GenerativeModel):
    """VQ-VAE (van den Oord et al. 2017) with a prior over code grids; see the module docstring.

    encode(x) -> z_e (B, D, h, w); quantize(z_e) -> QuantizerOutput; decode(z) -> decoder output
    (B, *shape) of the nearest codes of z (so decode(z_q) = G(z_q) and decode(z_e) = G(quantized z_e));
    decode_indices(k) -> G(e_k); sample -> codes from the prior, decoded.

    >>> import torch
    >>> from genlab.data import Batch, DataSpec
    >>> spec = DataSpec("toy", kind="image", shape=(1, 8, 8), levels=17)
    >>> model = VQVAE(VQVAEConfig(num_codes=8, code_dim=4, channels=(8, 8), prior_channels=8, prior_blocks=1), spec)
    >>> sorted(model.loss(Batch(torch.rand(5, 1, 8, 8))).terms)
    ['codes_used', 'commitment', 'perplexity', 'prior_bits', 'recon']
    >>> model.sample(2, generator=torch.Generator().manual_seed(0)).shape
    torch.Size([2, 1, 8, 8])
    """

    initializes_once = True

    config: VQVAEConfig
    data_kinds = ("image",)
    # max_steps: the reconstruction error and the prior's bits still fall at the end of shorter runs.
    # ema_decay 0: the engine's weight average would average each code's vector across its dead-code
    # restarts, and the prior's meaning of an index with it (README, "Why these defaults")
    train_defaults = {"max_steps": 5000, "lr": 2e-3, "lr_schedule": "cosine", "ema_decay": 0.0}
    cpu_train_defaults = {"max_steps": 2700}

    def __init__(self, config: VQVAEConfig, spec: DataSpec) -> None:
        config = size_config(config, VQVAE_PRESETS, sized_data=resolve_net(spec, config.net) == "conv")
        super().__init__(config, spec)
        if spec.kind != "image" or len(spec.shape) != 3:
            raise ConfigError(f"vq-vae encodes images (C, H, W) to a grid of codes; {spec.name!r} is {spec.kind} of shape {spec.shape}")
        low, high = spec.value_range
        finite = math.isfinite(low) and math.isfinite(high) and high > low
        self.reconstruction = config.reconstruction if config.reconstruction != "auto" else ("bernoulli" if finite else "mse")
        if self.reconstruction == "bernoulli" and not finite:
            raise ConfigError(f"reconstruction='bernoulli' needs a finite value range; data {spec.name!r} has {spec.value_range}; use 'mse'")
        c, height, width = spec.shape
        sides = grid_sides(height, width, config.downsamples)
        self.grid_side = sides[-1]
        if resolve_net(spec, config.net) == "conv":
            self.encoder = GridEncoder(c, config.code_dim, config.channels, blocks=config.blocks_per_level)
            upsample = "transpose" if config.blocks_per_level == 0 else "nearest"
            self.decoder = GridDecoder(config.code_dim, c, config.channels, sides, blocks=config.blocks_per_level, upsample=upsample)
        else:
            grid = (config.code_dim, *self.grid_side)
            cells = math.prod(grid)
            self.encoder = nn.Sequential(build_encoder(spec, cells, net="mlp", hidden=config.hidden), nn.Unflatten(1, grid))
            self.decoder = nn.Sequential(nn.Flatten(1), build_decoder(cells, spec, net="mlp", hidden=config.hidden[::-1]))
        self.quantizer = VectorQuantizer(
            config.num_codes, config.code_dim, codebook_update=config.codebook_update, decay=config.ema_decay,
            epsilon=config.ema_epsilon, restart_after=config.restart_after,
        )  # fmt: skip
        self.prior = CodePrior(config.prior, config.num_codes, self.grid_side, channels=config.prior_channels, blocks=config.prior_blocks, dilations=config.prior_dilations)

    # -- the autoencoder ----------------------------------------------------------------------------
    def encode(self, x: Tensor) -> Tensor:
        """z_e = E(x), x (B, *shape) -> (B, D, h, w)."""
        return self.encoder(x)

    def quantize(self, z_e: Tensor) -> QuantizerOutput:
        """The vector quantizer on z_e (B, D, h, w); updates the codebook in training mode."""
        return self.quantizer(z_e)

    def decode(self, z: Tensor) -> Tensor:
        """G(nearest codes of z): decoder output (logits or mean), z (B, D, h, w) -> (B, *shape)."""
        return self.decoder(self.quantizer.lookup(self.quantizer.nearest(z)).to(z.dtype))

    def decode_indices(self, indices: Tensor) -> Tensor:
        """G(e_k) for code grids indices (B, h, w) long -> decoder output (B, *shape)."""
        return self.decoder(self.quantizer.lookup(indices).to(self._dtype))

    @torch.no_grad()
    def encode_indices(self, x: Tensor) -> Tensor:
        """The code grid of x: (B, *shape) -> (B, h, w) long."""
        return self.quantizer.nearest(self.encode(x))

    def reconstruction_cost(self, x: Tensor, params: Tensor) -> Tensor:
        """c(x, x^) per image (B,): Bernoulli cross-entropy (x mapped to [0, 1]) or summed squared error."""
        if self.reconstruction == "bernoulli":
            low, high = self.spec.value_range
            return -bernoulli_log_likelihood(((x - low) / (high - low)).clamp(0.0, 1.0), params)
        return (x - params).pow(2).flatten(1).sum(1)

    # -- the prior ---------------------------------------------------------------------------------------
    def prior_log_prob(self, indices: Tensor) -> Tensor:
        """log p(k) of code grids (B, h, w) long, in nats, (B,)."""
        return self.prior.log_prob(indices)

    @torch.no_grad()
    def code_length_bits(self, x: Tensor) -> Tensor:
        """-log2 p(k(x)): the bits per image an entropy coder driven by the prior spends on x's codes, (B,)."""
        return -self.prior_log_prob(self.encode_indices(x)) / math.log(2.0)

    def prior_sample(self, n: int, generator: torch.Generator | None = None) -> Tensor:
        """Code grids k ~ p(k), (n, h, w) long."""
        return self.prior.sample(n, generator).to(self.device)

    # -- training ------------------------------------------------------------------------------------------
    def initialize(self, train, generator: torch.Generator) -> None:
        """The codebook starts at encoder outputs of up to 1,024 training images (at random grid
        positions), so every code starts where the encoder puts vectors."""
        x, _ = train.tensors()
        index = torch.randperm(len(x), generator=generator)[:1024]
        with torch.no_grad():
            z_e = self.encode(x[index.to(x.device)].to(self.device))
            self.quantizer.initialize_codebook(VectorQuantizer._flatten(z_e), generator)

    def loss(self, batch: Batch) -> Loss:
        """total = mean c(x, G(z_q)) + codebook term (codebook_update="loss") + beta commitment
        + the prior's mean -log p(k) per grid position (its gradients reach only the prior).

        terms: recon, commitment (unweighted), codebook (with "loss" updates), perplexity, codes_used
        (the share of the K codes in the batch), prior_bits (-log2 p(k) per image)."""
        x = batch.x
        out = self.quantize(self.encode(x))
        cost = self.reconstruction_cost(x, self.decoder(out.quantized)).mean()
        prior_nll = -self.prior_log_prob(out.indices.detach()).mean()
        positions = out.indices[0].numel()
        total = cost + self.config.commitment_cost * out.commitment_loss + out.codebook_loss + prior_nll / positions
        used = torch.unique(out.indices).numel() / self.config.num_codes
        terms = {
            "recon": cost.detach(),
            "commitment": out.commitment_loss.detach(),
            "perplexity": out.perplexity,
            "codes_used": torch.tensor(float(used), device=x.device),
            "prior_bits": prior_nll.detach() / math.log(2.0),
        }
        if self.config.codebook_update == "loss":
            terms["codebook"] = out.codebook_loss.detach()
        return Loss(total, terms)

    # -- generation -----------------------------------------------------------------------------------------
    @torch.no_grad()
    def sample(self, n: int, cond: Tensor | None = None, generator: torch.Generator | None = None) -> Tensor:
        """Code grids k ~ p(k), decoded: G(e_k) in the data's space, (n, *shape)."""
        if cond is not None:
            raise ConfigError("vq-vae is unconditional; pass cond=None")
        return self.decoder_mean(self.decode_indices(self.prior_sample(n, generator)))

    def likelihood_kind(self) -> str:
        return "none"

    def likelihood_measures(self) -> list[LikelihoodMeasure]:
        """"code_length": -log p(k(x)) of x's code grid under the prior, in nats (the report gives
        bits per image, `code_length_bits`, and per pixel). A rate, not a likelihood of x: the
        codes keep only what the decoder reconstructs, so it is no bits/dim of the data."""
        h, w = self.grid_side
        description = f"code length of x's {h}x{w} code grid under the {self.config.prior} prior, -log2 p(codes)"
        return [LikelihoodMeasure(
            "code_length", lambda x, generator: -self.prior_log_prob(self.encode_indices(x)), kind="code", description=description,
        )]  # fmt: skip

    @property
    def _dtype(self) -> torch.dtype:
        return next(self.decoder.parameters()).dtype
