"""Generators and discriminators: MLP, DCGAN (with SAGAN's self-attention and spectral
normalisation as options), progressive growing, and the conditioning and minibatch layers.

A generator maps z (B, latent_dim) [and labels y (B,)] to samples in the model's space (images in
[-1, 1] as (B, C, H, W), vectors standardised as (B, D)). A discriminator is a trunk, x -> features
phi(x) (B, F), and a `DiscriminatorHead` that turns features into one score per sample (B,):
minibatch discrimination (optional), a linear map, and the projection term for labels. Feature
matching reads phi(x).

Progressive nets take (level, alpha) in their forward passes: level indexes the resolutions from
the smallest (0) up, alpha in [0, 1] fades the newest level in (Karras et al. 2018, sec. 2).

`NETWORK_KINDS` maps a config's `architecture` word to a `NetworkKind`, which builds both trunks
and says what the model around them needs to know (images only, progressive, tanh output, the
discriminator's default normalisation); a new architecture is one `register_network_kind` call.
"""

from __future__ import annotations

import dataclasses
from typing import Callable, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn
from torch.nn.utils.parametrizations import spectral_norm

from genlab.errors import ConfigError
from genlab.nn.attention import MultiHeadSelfAttention
from genlab.nn.conv import Upsample, level_widths, resolution_plan
from genlab.nn.embeddings import ClassEmbedding
from genlab.nn.mlp import MLP

LEAKY_SLOPE = 0.2  # DCGAN, ProGAN
# SAGAN puts attention on 32x32 feature maps of 128x128 images; here: the largest level with at
# most this many positions (the attention matrix is (H W)^2 per head)
MAX_ATTENTION_POSITIONS = 32 * 32
MINIBATCH_KERNEL_DIM = 5  # C in Salimans et al. (2016), sec. 3.2


# -- layers -------------------------------------------------------------------------------------------
def apply_spectral_norm(module: nn.Module) -> nn.Module:
    """Spectral normalisation (Miyato et al. 2018) of every Linear, Conv2d and ConvTranspose2d in
    `module`: W_SN = W / sigma(W), sigma the largest singular value of W reshaped to a matrix,
    estimated by one power iteration per training forward pass. Returns the module."""
    for layer in list(module.modules()):
        if isinstance(layer, (nn.Linear, nn.Conv2d, nn.ConvTranspose2d)):
            spectral_norm(layer)
    return module


class PixelNorm(nn.Module):
    """Karras et al. (2018), eq. 2: b_xy = a_xy / sqrt(1/C sum_j (a_xy^j)^2 + eps), each pixel's
    feature vector to unit mean square. (B, C, ...) -> (B, C, ...)."""

    def __init__(self, eps: float = 1e-8) -> None:
        super().__init__()
        self.eps = eps

    def forward(self, x: Tensor) -> Tensor:
        return x * torch.rsqrt(x.pow(2).mean(dim=1, keepdim=True) + self.eps)


class MinibatchStdDev(nn.Module):
    """Karras et al. (2018), sec. 3: the standard deviation of each feature at each position over a
    group of samples, averaged over features and positions, appended as one more channel.

    The batch is split into groups of `group_size` samples (sample b is in group b mod (B / G), as
    in the paper's code); B not divisible by the group size uses the whole batch as one group.
    std = sqrt(Var + eps) with the biased variance. (B, C, H, W) -> (B, C + 1, H, W).
    """

    def __init__(self, group_size: int = 4, eps: float = 1e-8) -> None:
        super().__init__()
        self.group_size, self.eps = group_size, eps

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        group = min(self.group_size, batch)
        if batch % group:
            group = batch
        y = x.reshape(group, batch // group, channels, height, width)  # (G, M, C, H, W)
        std = torch.sqrt(y.var(dim=0, unbiased=False) + self.eps)  # (M, C, H, W)
        stat = std.mean(dim=(1, 2, 3))  # (M,)
        stat = stat.repeat(group).reshape(batch, 1, 1, 1).expand(batch, 1, height, width)  # (B, 1, H, W)
        return torch.cat([x, stat.to(x.dtype)], dim=1)


class MinibatchDiscrimination(nn.Module):
    """Salimans et al. (2016), sec. 3.2: M_i = f(x_i) T in R^{K x C} (K kernels of dimension C);
    c_k(x_i, x_j) = exp(-||M_i,k - M_j,k||_1); o(x_i)_k = sum_{j != i} c_k(x_i, x_j), appended to
    the features: (B, A) -> (B, A + K). A batch of near-copies gets large o, which D learns to flag.
    """

    def __init__(self, in_features: int, kernels: int, kernel_dim: int = MINIBATCH_KERNEL_DIM) -> None:
        super().__init__()
        self.kernels, self.kernel_dim = kernels, kernel_dim
        self.T = nn.Parameter(torch.randn(in_features, kernels * kernel_dim) * 0.1)

    def forward(self, features: Tensor) -> Tensor:
        m = (features @ self.T).reshape(-1, self.kernels, self.kernel_dim)  # (B, A) -> (B, K, C)
        l1 = (m[:, None] - m[None]).abs().sum(-1)  # (B, B, K)
        o = torch.exp(-l1).sum(dim=1) - 1.0  # drop j = i, where exp(0) = 1: (B, K)
        return torch.cat([features, o], dim=1)


class SelfAttention2d(nn.Module):
    """SAGAN's attention block (Zhang et al. 2019, sec. 3): y = x + gamma o, with o the self-attention
    of the H W positions (softmax(Q K^T / sqrt(d)) V, via genlab's MultiHeadSelfAttention) and gamma
    a learned scalar starting at 0, so the block starts as the identity. (B, C, H, W) -> same."""

    def __init__(self, channels: int) -> None:
        super().__init__()
        self.attention = MultiHeadSelfAttention(channels, num_heads=1)
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, x: Tensor) -> Tensor:
        batch, channels, height, width = x.shape
        tokens = x.flatten(2).transpose(1, 2)  # (B, C, H, W) -> (B, H W, C)
        o = self.attention(tokens).transpose(1, 2).reshape(batch, channels, height, width)
        return x + self.gamma * o


def _norm2d(kind: str, channels: int) -> nn.Module:
    if kind == "batch":
        return nn.BatchNorm2d(channels)
    if kind == "layer":
        return nn.GroupNorm(1, channels)  # one group: normalise over (C, H, W) per sample
    if kind == "none":
        return nn.Identity()
    raise ConfigError(f"norm={kind!r} is unknown; choose 'batch', 'layer' or 'none'")


def _attention_level(plan: Sequence[tuple[int, int]]) -> int:
    """Index in `plan` of the largest level with at most MAX_ATTENTION_POSITIONS positions."""
    areas = [h * w for h, w in plan]
    fitting = [i for i, area in enumerate(areas) if area <= MAX_ATTENTION_POSITIONS]
    if not fitting:  # every level is larger: take the smallest
        return min(range(len(plan)), key=areas.__getitem__)
    return max(fitting, key=areas.__getitem__)


# -- generators ----------------------------------------------------------------------------------------
class MLPGenerator(nn.Module):
    """z (B, in_dim) -> MLP with ReLU -> (B, *out_shape), unbounded (the caller adds tanh for images)."""

    def __init__(self, in_dim: int, out_shape: Sequence[int], *, hidden: Sequence[int]) -> None:
        super().__init__()
        self.out_shape = tuple(out_shape)
        self.net = MLP(in_dim, int(torch.Size(out_shape).numel()), hidden=hidden, activation="relu")

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z).reshape(z.shape[0], *self.out_shape)  # (B, in_dim) -> (B, *out_shape)


class DCGANGenerator(nn.Module):
    """Radford et al. (2016): project z to the smallest feature map, then stride-2 transposed
    convolutions up the resolution plan, each followed by batch normalisation and ReLU, and a 3x3
    convolution to the image channels (tanh is the caller's). With `self_attention`, SAGAN's block
    sits at the largest level of at most 32x32 positions.

    z (B, in_dim) -> (B, C, H, W). channels: widths from the smallest level up.
    """

    def __init__(
        self, in_dim: int, out_shape: Sequence[int], *, channels: Sequence[int], norm: str = "batch", self_attention: bool = False
    ) -> None:
        super().__init__()
        out_channels, height, width = out_shape
        plan = resolution_plan(height, width)[::-1]  # smallest first
        widths = level_widths(tuple(channels)[::-1], len(plan))[::-1]
        h0, w0 = plan[0]
        layers: list[nn.Module] = [nn.Linear(in_dim, widths[0] * h0 * w0), nn.Unflatten(1, (widths[0], h0, w0)), _norm2d(norm, widths[0]), nn.ReLU()]
        attention_at = _attention_level(plan) if self_attention else -1
        for level, (size, width_l) in enumerate(zip(plan, widths)):
            if level == attention_at:
                layers.append(SelfAttention2d(width_l))
            if level + 1 < len(plan):
                layers += [Upsample(width_l, widths[level + 1], size, plan[level + 1], mode="transpose"), _norm2d(norm, widths[level + 1]), nn.ReLU()]
        layers.append(nn.Conv2d(widths[-1], out_channels, 3, padding=1))
        self.net = nn.Sequential(*layers)

    def forward(self, z: Tensor) -> Tensor:
        return self.net(z)  # (B, in_dim) -> (B, C, H, W)


class ProgressiveGenerator(nn.Module):
    """Karras et al. (2018), Table 2 (without equalised learning rate): z -> pixel norm -> a 4x4-ish
    block; each further level upsamples (nearest) and applies two 3x3 convolutions with LeakyReLU
    and pixel norm; `to_rgb[l]` is a 1x1 convolution to the image channels at level l.

    forward(z, level, alpha) -> (B, C, h_level, w_level):
        x = (1 - alpha) upsample(to_rgb[level-1](h_{level-1})) + alpha to_rgb[level](block_level(h_{level-1})),
    so alpha = 0 is the previous resolution upsampled and alpha = 1 the new block (sec. 2, Fig. 2).
    """

    def __init__(self, in_dim: int, out_shape: Sequence[int], *, channels: Sequence[int]) -> None:
        super().__init__()
        out_channels, height, width = out_shape
        self.plan = resolution_plan(height, width)[::-1]  # smallest first
        widths = level_widths(tuple(channels)[::-1], len(self.plan))[::-1]
        h0, w0 = self.plan[0]

        def conv_block(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE), PixelNorm()]

        first = nn.Sequential(
            PixelNorm(), nn.Linear(in_dim, widths[0] * h0 * w0), nn.Unflatten(1, (widths[0], h0, w0)),
            nn.LeakyReLU(LEAKY_SLOPE), PixelNorm(), *conv_block(widths[0], widths[0]),
        )
        self.blocks = nn.ModuleList([first])
        for level in range(1, len(self.plan)):
            self.blocks.append(nn.Sequential(
                nn.Upsample(size=self.plan[level], mode="nearest"),
                *conv_block(widths[level - 1], widths[level]), *conv_block(widths[level], widths[level]),
            ))
        self.to_rgb = nn.ModuleList([nn.Conv2d(w, out_channels, 1) for w in widths])

    @property
    def levels(self) -> int:
        return len(self.plan)

    def features(self, z: Tensor, level: int) -> Tensor:
        """h_level: the feature map after block `level` (fully grown up to it). (B, in_dim) -> (B, C_l, h_l, w_l)."""
        h = z
        for block in self.blocks[: level + 1]:
            h = block(h)
        return h

    def forward(self, z: Tensor, level: int, alpha: float) -> Tensor:
        if level == 0:
            return self.to_rgb[0](self.features(z, 0))
        previous = self.features(z, level - 1)
        new = self.to_rgb[level](self.blocks[level](previous))
        if alpha >= 1.0:
            return new
        old = F.interpolate(self.to_rgb[level - 1](previous), size=self.plan[level], mode="nearest")
        return old + alpha * (new - old)


# -- discriminator trunks -----------------------------------------------------------------------------
class MLPDiscriminatorTrunk(nn.Module):
    """x (B, *shape) -> flatten -> MLP with LeakyReLU(0.2) -> phi(x) (B, hidden[-1])."""

    def __init__(self, in_shape: Sequence[int], *, hidden: Sequence[int], norm: str = "none") -> None:
        super().__init__()
        if not hidden:
            raise ConfigError("the MLP discriminator needs at least one hidden width, e.g. hidden=(256, 256)")
        dim = int(torch.Size(in_shape).numel())
        self.net = nn.Sequential(
            nn.Flatten(1),
            MLP(dim, hidden[-1], hidden=hidden[:-1], activation="leaky_relu", norm="layer" if norm == "layer" else "none"),
            nn.LeakyReLU(LEAKY_SLOPE),
        )
        self.out_features = hidden[-1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)


class DCGANDiscriminatorTrunk(nn.Module):
    """Radford et al. (2016): a 3x3 convolution with LeakyReLU(0.2) and no normalisation at full
    resolution, then stride-2 convolutions down the resolution plan, each with normalisation
    (`norm`) and LeakyReLU; flattened. With `self_attention`, SAGAN's block sits at the largest
    level of at most 32x32 positions. x (B, C, H, W) -> phi(x) (B, F)."""

    def __init__(self, in_shape: Sequence[int], *, channels: Sequence[int], norm: str = "batch", self_attention: bool = False) -> None:
        super().__init__()
        in_channels, height, width = in_shape
        plan = resolution_plan(height, width)
        widths = level_widths(channels, len(plan))
        layers: list[nn.Module] = [nn.Conv2d(in_channels, widths[0], 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE)]
        attention_at = _attention_level(plan) if self_attention else -1
        for level, (size, width_l) in enumerate(zip(plan, widths)):
            if level == attention_at:
                layers.append(SelfAttention2d(width_l))
            if level + 1 < len(plan):
                stride = tuple(1 if n == s else 2 for s, n in zip(size, plan[level + 1]))
                layers += [
                    nn.Conv2d(width_l, widths[level + 1], 3, stride=stride, padding=1),
                    _norm2d(norm, widths[level + 1]),
                    nn.LeakyReLU(LEAKY_SLOPE),
                ]
        layers.append(nn.Flatten(1))
        self.net = nn.Sequential(*layers)
        self.out_features = widths[-1] * plan[-1][0] * plan[-1][1]

    def forward(self, x: Tensor) -> Tensor:
        return self.net(x)  # (B, C, H, W) -> (B, F)


class ProgressiveDiscriminatorTrunk(nn.Module):
    """The mirror of ProgressiveGenerator (Karras et al. 2018, Table 2): `from_rgb[l]` (1x1
    convolution, LeakyReLU) enters at level l; each block l >= 1 applies two 3x3 convolutions with
    LeakyReLU and average-pools to level l - 1; the last block appends the minibatch standard
    deviation, applies a 3x3 convolution and flattens.

    forward(x, level, alpha), x (B, C, h_level, w_level) -> phi(x) (B, F), with the new level faded in:
        h = (1 - alpha) from_rgb[level-1](downsample(x)) + alpha block_level(from_rgb[level](x)).
    """

    def __init__(self, in_shape: Sequence[int], *, channels: Sequence[int], group_size: int = 4) -> None:
        super().__init__()
        in_channels, height, width = in_shape
        self.plan = resolution_plan(height, width)[::-1]  # smallest first
        widths = level_widths(tuple(channels), len(self.plan))[::-1]  # channels are given full resolution first

        def conv(c_in: int, c_out: int) -> list[nn.Module]:
            return [nn.Conv2d(c_in, c_out, 3, padding=1), nn.LeakyReLU(LEAKY_SLOPE)]

        self.from_rgb = nn.ModuleList([nn.Sequential(nn.Conv2d(in_channels, w, 1), nn.LeakyReLU(LEAKY_SLOPE)) for w in widths])
        h0, w0 = self.plan[0]
        last = nn.Sequential(MinibatchStdDev(group_size), *conv(widths[0] + 1, widths[0]), nn.Flatten(1))
        self.blocks = nn.ModuleList([last])
        for level in range(1, len(self.plan)):
            self.blocks.append(nn.Sequential(
                *conv(widths[level], widths[level]), *conv(widths[level], widths[level - 1]),
                nn.AdaptiveAvgPool2d(self.plan[level - 1]),
            ))
        self.out_features = widths[0] * h0 * w0

    def forward(self, x: Tensor, level: int, alpha: float) -> Tensor:
        h = self.blocks[level](self.from_rgb[level](x))
        if level > 0 and alpha < 1.0:
            skip = self.from_rgb[level - 1](F.adaptive_avg_pool2d(x, self.plan[level - 1]))
            h = skip + alpha * (h - skip)
        for block in reversed(self.blocks[1:level]):
            h = block(h)
        return h if level == 0 else self.blocks[0](h)


# -- the wrappers the model uses -----------------------------------------------------------------------
class Generator(nn.Module):
    """A generator trunk with its conditioning and output map.

    Conditional (Mirza & Osindero 2014): z is concatenated with a learned embedding of y (genlab's
    ClassEmbedding). Output: tanh for images in [-1, 1] (DCGAN), identity otherwise (standardised
    vectors; ProGAN's linear to_rgb, clamped at sampling). forward(z, y, **growth): (B, latent) -> samples.
    """

    def __init__(self, trunk: nn.Module, *, num_classes: int | None, embedding_dim: int, tanh: bool) -> None:
        super().__init__()
        self.trunk = trunk
        self.embedding = ClassEmbedding(num_classes, embedding_dim) if num_classes else None
        self.tanh = tanh

    def forward(self, z: Tensor, y: Tensor | None = None, **growth) -> Tensor:
        if self.embedding is not None:
            if y is None:
                raise ConfigError("this generator is class-conditional; pass labels y")
            z = torch.cat([z, self.embedding(y).to(z.dtype)], dim=1)  # (B, latent) -> (B, latent + E)
        x = self.trunk(z, **growth)
        return torch.tanh(x) if self.tanh else x


class DiscriminatorHead(nn.Module):
    """phi (B, F) -> score (B,): [minibatch discrimination] -> linear psi, plus the projection term
    of Miyato & Koyama (2018), eq. 3, for labels: D(x, y) = psi(phi(x)) + embed(y)^T phi(x)."""

    def __init__(self, features: int, *, num_classes: int | None, minibatch_kernels: int = 0) -> None:
        super().__init__()
        self.minibatch = MinibatchDiscrimination(features, minibatch_kernels) if minibatch_kernels else None
        self.linear = nn.Linear(features + minibatch_kernels, 1)
        self.projection = ClassEmbedding(num_classes, features) if num_classes else None

    def forward(self, phi: Tensor, y: Tensor | None = None) -> Tensor:
        h = self.minibatch(phi) if self.minibatch is not None else phi
        out = self.linear(h).squeeze(1)  # (B, F') -> (B,)
        if self.projection is not None:
            if y is None:
                raise ConfigError("this discriminator is class-conditional; pass labels y")
            out = out + (self.projection(y).to(phi.dtype) * phi).sum(1)
        return out


class Discriminator(nn.Module):
    """trunk x -> phi(x), then the head: forward(x, y, **growth) -> (B,) scores; `features` gives phi."""

    def __init__(self, trunk: nn.Module, head: DiscriminatorHead) -> None:
        super().__init__()
        self.trunk, self.head = trunk, head

    def features(self, x: Tensor, **growth) -> Tensor:
        return self.trunk(x, **growth)

    def forward(self, x: Tensor, y: Tensor | None = None, **growth) -> Tensor:
        return self.head(self.trunk(x, **growth), y)


# -- network kinds: the architectures a config names ---------------------------------------------------
@dataclasses.dataclass(frozen=True)
class TrunkOptions:
    """What the trunks read from a config: MLP widths (`hidden`), convolution widths of D from full
    resolution down (`channels`) and of G (`generator_channels`, None: D's; generators take them
    reversed, smallest resolution first), G's and D's normalisation, and SAGAN's attention block."""

    def generator_widths(self) -> tuple[int, ...]:
        """G's convolution widths from the smallest resolution up."""
        return tuple(self.generator_channels or self.channels)[::-1]


    hidden: tuple[int, ...] = (256, 256, 256)
    channels: tuple[int, ...] = (64, 128)
    generator_channels: tuple[int, ...] | None = None
    generator_norm: str = "batch"
    discriminator_norm: str = "none"
    self_attention: bool = False


@dataclasses.dataclass(frozen=True)
class NetworkKind:
    """One architecture: `generator_trunk(in_dim, shape, options)`, z (B, in_dim) -> (B, *shape),
    and `discriminator_trunk(shape, options)`, x -> phi(x) (B, F) with an `out_features` attribute.

    images_only: the trunks need images (C, H, W); progressive: both trunks take (level, alpha)
    and the generator has a resolution `plan` (Karras et al. 2018); self_attention: SAGAN's block
    is available; batch_norm_discriminator: what discriminator_norm="auto" picks when nothing
    rules batch norm out (DCGAN's choice); tanh: images leave the generator through tanh (ProGAN's
    to_rgb is linear instead).
    """

    name: str
    generator_trunk: Callable[[int, Sequence[int], TrunkOptions], nn.Module]
    discriminator_trunk: Callable[[Sequence[int], TrunkOptions], nn.Module]
    images_only: bool = False
    progressive: bool = False
    self_attention: bool = False
    batch_norm_discriminator: bool = False
    tanh: bool = True


NETWORK_KINDS: dict[str, NetworkKind] = {}


def auto_network_kind(*, image: bool) -> str:
    """What architecture="auto" means: DCGAN's convolutions for images (C, H, W), an MLP otherwise."""
    return "dcgan" if image else "mlp"


def register_network_kind(kind: NetworkKind) -> NetworkKind:
    """Make `kind` available as `architecture=kind.name`."""
    if kind.name in NETWORK_KINDS and NETWORK_KINDS[kind.name] != kind:
        raise ConfigError(f"network kind {kind.name!r} is registered twice")
    NETWORK_KINDS[kind.name] = kind
    return kind


register_network_kind(NetworkKind(
    "mlp",
    generator_trunk=lambda in_dim, shape, o: MLPGenerator(in_dim, shape, hidden=o.hidden),
    discriminator_trunk=lambda shape, o: MLPDiscriminatorTrunk(shape, hidden=o.hidden, norm=o.discriminator_norm),
))
register_network_kind(NetworkKind(
    "dcgan",
    generator_trunk=lambda in_dim, shape, o: DCGANGenerator(
        in_dim, shape, channels=o.generator_widths(), norm=o.generator_norm, self_attention=o.self_attention
    ),
    discriminator_trunk=lambda shape, o: DCGANDiscriminatorTrunk(
        shape, channels=o.channels, norm=o.discriminator_norm, self_attention=o.self_attention
    ),
    images_only=True, self_attention=True, batch_norm_discriminator=True,
))
register_network_kind(NetworkKind(
    "progressive",
    generator_trunk=lambda in_dim, shape, o: ProgressiveGenerator(in_dim, shape, channels=o.generator_widths()),
    discriminator_trunk=lambda shape, o: ProgressiveDiscriminatorTrunk(shape, channels=o.channels),
    images_only=True, progressive=True, tanh=False,
))
