"""Flow layers: ActNorm, permutations, the invertible 1x1 convolution, coupling layers, squeeze,
the multi-scale architecture, and the variational dequantizer.

Every layer is a `Bijection` (see `base.py`): forward(x, context) -> (y, log|det dy/dx|) in the
normalizing direction, inverse(y, context) -> (x, log|det dx/dy|). Tensors are (B, D) vectors or
(B, C, H, W) images; "features" are dimension 1 (vector entries or image channels).

References: NICE (Dinh et al. 2015, additive coupling), RealNVP (Dinh et al. 2017, affine
coupling, checkerboard/channel masks, squeeze, multi-scale), Glow (Kingma & Dhariwal 2018, ActNorm,
invertible 1x1 convolution with the LU parameterisation, learned prior on factored-out channels),
Flow++ (Ho et al. 2019, variational dequantization).
"""

from __future__ import annotations

import contextlib
from typing import Iterator, Sequence

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError
from genlab.models.flows.base import Bijection, Compose
from genlab.nn.activations import get_activation
from genlab.nn.conv import ResidualBlock
from genlab.nn.distributions import sample_standard_normal, standard_normal_log_prob, sum_except_batch
from genlab.nn.mlp import MLP

MASKS = ("checkerboard", "channel", "half", "alternating")
SCALE_FUNCTIONS = ("tanh", "sigmoid")


def _spatial_size(x: Tensor) -> int:
    """H * W for images (B, C, H, W), 1 for vectors (B, D)."""
    return x[0, 0].numel()


def _feature_view(x: Tensor, values: Tensor) -> Tensor:
    """Per-feature values (C,) shaped to broadcast along dimension 1 of x: (1, C) or (1, C, 1, 1)."""
    return values.view(1, -1, *([1] * (x.dim() - 2)))


# -- ActNorm ------------------------------------------------------------------------------------------


class ActNorm(Bijection):
    """Activation normalisation (Kingma & Dhariwal 2018, sec. 3.1): an affine map per feature,

        y = x * exp(log_scale_c) + bias_c,    log|det dy/dx| = H W sum_c log_scale_c

    (H W = 1 for vectors), on (B, C) or (B, C, H, W). It starts as the identity; data-dependent
    initialisation (`initialize`, called inside `data_initialization`) sets log_scale and bias so
    that the outputs on a batch have zero mean and unit variance per feature.
    """

    def __init__(self, features: int) -> None:
        super().__init__()
        self.log_scale = nn.Parameter(torch.zeros(features))
        self.bias = nn.Parameter(torch.zeros(features))
        self.initialize_on_next_forward = False  # set by `data_initialization`, not saved

    @torch.no_grad()
    def initialize(self, x: Tensor, eps: float = 1e-6) -> None:
        """log_scale_c = -log(std_c + eps), bias_c = -mean_c / (std_c + eps), statistics of x over
        every dimension but the features."""
        reduce = [d for d in range(x.dim()) if d != 1]
        mean = x.mean(dim=reduce)
        std = x.std(dim=reduce, unbiased=False)
        self.log_scale.copy_(-torch.log(std + eps))
        self.bias.copy_(-mean / (std + eps))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        if self.initialize_on_next_forward:
            self.initialize(x)
            self.initialize_on_next_forward = False
        y = x * _feature_view(x, self.log_scale.exp()) + _feature_view(x, self.bias)
        return y, (_spatial_size(x) * self.log_scale.sum()).expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = (y - _feature_view(y, self.bias)) * _feature_view(y, (-self.log_scale).exp())
        return x, (-_spatial_size(y) * self.log_scale.sum()).expand(y.shape[0])


@contextlib.contextmanager
def data_initialization(module: nn.Module) -> Iterator[None]:
    """Within the block, the next forward pass of every ActNorm in `module` takes its statistics
    from its input. Run one batch through the whole flow in order, so each ActNorm sees the
    outputs of the layers before it after their own initialisation:

        with torch.no_grad(), data_initialization(flow):
            flow(x_batch)
    """
    layers = [m for m in module.modules() if isinstance(m, ActNorm)]
    for layer in layers:
        layer.initialize_on_next_forward = True
    try:
        yield
    finally:
        for layer in layers:
            layer.initialize_on_next_forward = False


# -- permutations and the invertible 1x1 convolution -------------------------------------------------


class Permutation(Bijection):
    """y = x[:, perm] along the features (vector entries or image channels); log|det| = 0.

    kind="reverse" reverses the order (RealNVP alternates masks this way); kind="random" draws a
    fixed permutation from `seed` (Glow's shuffle baseline).
    """

    def __init__(self, features: int, kind: str = "reverse", seed: int = 0) -> None:
        super().__init__()
        if kind == "reverse":
            perm = torch.arange(features - 1, -1, -1)
        elif kind == "random":
            perm = torch.randperm(features, generator=torch.Generator().manual_seed(seed))
        else:
            raise ConfigError(f"Permutation kind={kind!r} is unknown; choose 'reverse' or 'random'")
        self.register_buffer("perm", perm)
        self.register_buffer("inverse_perm", torch.argsort(perm))

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x[:, self.perm], x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y[:, self.inverse_perm], y.new_zeros(y.shape[0])


class InvertibleConv1x1(Bijection):
    """The invertible 1x1 convolution of Glow (Kingma & Dhariwal 2018, sec. 3.2) with its LU
    parameterisation: y_{:, h, w} = W x_{:, h, w} for every pixel, with

        W = P L (U + diag(s)),   s = sign * exp(log_abs_s),
        log|det dy/dx| = H W sum_c log|s_c|,

    P a fixed permutation, L unit lower triangular, U strictly upper triangular (learned), and the
    sign of s fixed. W starts as a random rotation (QR of a Gaussian matrix drawn from `seed`).
    On vectors (B, C) it is the LU-parameterised linear flow y = W x (H W = 1).
    """

    def __init__(self, features: int, seed: int = 0) -> None:
        super().__init__()
        g = torch.Generator().manual_seed(seed)
        q, _ = torch.linalg.qr(torch.randn(features, features, generator=g, dtype=torch.float64))
        p, lower, upper = torch.linalg.lu(q)
        s = torch.diagonal(upper)
        self.register_buffer("permutation", p.float())
        self.register_buffer("sign_s", torch.sign(s).float())
        self.register_buffer("lower_mask", torch.tril(torch.ones(features, features), -1))
        self.register_buffer("identity", torch.eye(features))
        self.lower = nn.Parameter(torch.tril(lower, -1).float())
        self.upper = nn.Parameter(torch.triu(upper, 1).float())
        self.log_abs_s = nn.Parameter(torch.log(torch.abs(s)).float())

    def weight(self) -> Tensor:
        """W = P L (U + diag(s)), (C, C)."""
        lower = self.lower * self.lower_mask + self.identity
        upper = self.upper * self.lower_mask.T + torch.diag(self.sign_s * self.log_abs_s.exp())
        return self.permutation @ lower @ upper

    def _multiply(self, x: Tensor, matrix: Tensor) -> Tensor:
        if x.dim() == 2:
            return x @ matrix.T  # (B, C) -> (B, C)
        return F.conv2d(x, matrix[:, :, None, None])  # (B, C, H, W) -> (B, C, H, W)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_det = _spatial_size(x) * self.log_abs_s.sum()
        return self._multiply(x, self.weight()), log_det.expand(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_det = -_spatial_size(y) * self.log_abs_s.sum()
        return self._multiply(y, torch.linalg.inv(self.weight())), log_det.expand(y.shape[0])


# -- coupling layers ------------------------------------------------------------------------------------


def coupling_mask(shape: Sequence[int], kind: str, parity: int = 0) -> Tensor:
    """The binary mask b of a coupling layer, of the sample shape (1 = passed through and seen by
    the conditioner, 0 = transformed). parity 1 flips it (1 - b), so alternating layers transform
    the other part (Dinh et al. 2017, fig. 3).

    Images (C, H, W): "checkerboard" b = [(h + w) mod 2 == 0] on every channel; "channel" b = 1 on
        the first C // 2 channels.
    Vectors (D,): "half" b = 1 on the first D // 2 entries; "alternating" b = [i mod 2 == 0].
    """
    shape = tuple(shape)
    if kind not in MASKS:
        raise ConfigError(f"coupling mask {kind!r} is unknown; choose one of {', '.join(map(repr, MASKS))}")
    image = len(shape) == 3
    if image != (kind in ("checkerboard", "channel")):
        allowed = "'checkerboard' or 'channel'" if image else "'half' or 'alternating'"
        raise ConfigError(f"coupling mask {kind!r} does not fit samples of shape {shape}; use {allowed}")
    if kind == "checkerboard":
        c, h, w = shape
        mask = ((torch.arange(h)[:, None] + torch.arange(w)[None, :]) % 2 == 0).float().expand(c, h, w).clone()
    elif kind == "channel":
        if shape[0] < 2:
            raise ConfigError(f"a channel mask needs at least 2 channels, got shape {shape}; squeeze first or use 'checkerboard'")
        mask = (torch.arange(shape[0]) < shape[0] // 2).float()[:, None, None].expand(shape).clone()
    elif kind == "half":
        mask = (torch.arange(shape[0]) < shape[0] // 2).float()
    else:
        mask = (torch.arange(shape[0]) % 2 == 0).float()
    if shape[0] < 2 and kind in ("half", "alternating"):
        raise ConfigError(f"a coupling layer needs at least 2 dimensions, got shape {shape}")
    return 1.0 - mask if parity % 2 else mask


class MLPConditioner(nn.Module):
    """The conditioner of a coupling layer on vectors: [x_masked, context] (B, D + E) -> (B, out_dim),
    an MLP whose last layer starts at zero (so the coupling starts as the identity)."""

    def __init__(
        self, dim: int, out_dim: int, *, hidden: Sequence[int] = (64, 64), context_dim: int | None = None,
        activation: str = "silu", dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.context_dim = context_dim or 0
        self.net = MLP(dim + self.context_dim, out_dim, hidden=hidden, activation=activation, dropout=dropout, zero_init_last=True)

    def forward(self, x: Tensor, context: Tensor | None = None) -> Tensor:
        if self.context_dim:
            if context is None:
                raise ValueError("this conditioner was built with context_dim; pass a context (B, context_dim)")
            x = torch.cat([x, context.to(x.dtype).reshape(x.shape[0], -1)], dim=1)
        return self.net(x)


class ConvConditioner(nn.Module):
    """The conditioner of a coupling layer on images, a small residual conv net (RealNVP's choice):

        [x_masked, mask, context] (B, C + 1 + E, H, W) -> conv 3x3 -> `blocks` residual blocks of
        width `hidden` (with `dropout` inside, in training) -> act -> conv 3x3 (started at zero)
        -> (B, out_channels, H, W).

    The mask channel tells the translation-equivariant net which pixels it is given (a
    checkerboard differs between neighbours). The context enters as input channels: a vector one
    (B, E) (a class one-hot) repeated over the pixels, a spatial one (B, E, H, W) (the variational
    dequantizer's features of x) as it is. (Added inside the residual blocks instead, a per-channel
    constant would be undone by their GroupNorm when a group holds one channel.)
    """

    def __init__(
        self,
        channels: int,
        out_channels: int,
        *,
        hidden: int = 64,
        blocks: int = 2,
        context_dim: int | None = None,
        activation: str = "silu",
        norm: str = "group",
        dropout: float = 0.0,
    ) -> None:
        super().__init__()
        self.context_dim = context_dim or 0
        self.input = nn.Conv2d(channels + 1 + self.context_dim, hidden, 3, padding=1)
        self.blocks = nn.Sequential(*(ResidualBlock(hidden, activation=activation, norm=norm, dropout=dropout, max_groups=8) for _ in range(blocks)))
        self.output = nn.Sequential(get_activation(activation), nn.Conv2d(hidden, out_channels, 3, padding=1))
        nn.init.zeros_(self.output[-1].weight)
        nn.init.zeros_(self.output[-1].bias)

    def forward(self, x: Tensor, mask: Tensor, context: Tensor | None = None) -> Tensor:
        parts = [x, mask[:1].expand(x.shape[0], 1, *x.shape[2:]).to(x.dtype)]
        if self.context_dim:
            if context is None:
                raise ValueError(f"this conditioner was built with context_dim={self.context_dim}; pass a context (B, {self.context_dim}) or (B, {self.context_dim}, H, W)")
            if context.dim() == 2:
                context = context[:, :, None, None].expand(-1, -1, *x.shape[2:])
            parts.append(context.to(x.dtype))
        h = self.input(torch.cat(parts, dim=1))  # (B, C + 1 + E, H, W) -> (B, hidden, H, W)
        return self.output(self.blocks(h))  # (B, hidden, H, W) -> (B, out_channels, H, W)


def build_conditioner(
    shape: Sequence[int],
    out_factor: int,
    *,
    hidden: Sequence[int] = (64, 64),
    channels: int = 64,
    blocks: int = 2,
    context_dim: int | None = None,
    dropout: float = 0.0,
) -> nn.Module:
    """A zero-initialised conditioner with out_factor outputs per input value: an `MLPConditioner`
    (widths `hidden`) for vectors (D,), a `ConvConditioner` (width `channels`, `blocks` residual
    blocks) for images (C, H, W). context_dim: the size of the context (vector entries for an
    MLP; channels of a (B, E) or (B, E, H, W) context for a conv net). The residual blocks use
    GroupNorm, except on 1x1 images, where a group would normalise single values."""
    shape = tuple(shape)
    if len(shape) == 3:
        return ConvConditioner(
            shape[0], out_factor * shape[0], hidden=channels, blocks=blocks, context_dim=context_dim,
            norm="group" if shape[1] * shape[2] > 1 else "none", dropout=dropout,
        )
    return MLPConditioner(shape[0], out_factor * shape[0], hidden=hidden, context_dim=context_dim, dropout=dropout)


class _Coupling(Bijection):
    """Shared by the coupling layers: the mask b (a buffer of the sample shape) and the conditioner
    call on the passed-through part b * x."""

    def __init__(self, mask: Tensor, conditioner: nn.Module) -> None:
        super().__init__()
        self.register_buffer("mask", mask)
        self.conditioner = conditioner

    def _condition(self, x_given: Tensor, context: Tensor | None) -> Tensor:
        if isinstance(self.conditioner, ConvConditioner):
            return self.conditioner(x_given, self.mask, context)
        return self.conditioner(x_given, context)


class AffineCoupling(_Coupling):
    """Affine coupling layer (Dinh et al. 2017, eq. 9): with mask b and (log s, t) = NN(b * x),

        y = b * x + (1 - b) * (x * exp(log s) + t),     log|det dy/dx| = sum_i (1 - b_i) log s_i,
        x = b * y + (1 - b) * (y - t) * exp(-log s)     (the conditioner sees b * y = b * x).

    The raw output h of the conditioner is bounded for stability: scale="tanh" gives
    log s = bound * tanh(h / bound) (|log s| < bound, slope 1 at 0); scale="sigmoid" gives Glow's
    s = sigmoid(h + 2), divided by sigmoid(2) so that h = 0 is the identity. The conditioner's last
    layer starts at zero, so the layer starts as the identity. Shapes (B, D) or (B, C, H, W).
    """

    def __init__(self, mask: Tensor, conditioner: nn.Module, *, scale: str = "tanh", scale_bound: float = 3.0) -> None:
        super().__init__(mask, conditioner)
        if scale not in SCALE_FUNCTIONS:
            raise ConfigError(f"coupling scale={scale!r} is unknown; choose one of {', '.join(map(repr, SCALE_FUNCTIONS))}")
        self.scale, self.scale_bound = scale, float(scale_bound)

    def _log_scale_and_shift(self, x_given: Tensor, context: Tensor | None) -> tuple[Tensor, Tensor]:
        h = self._condition(x_given, context)  # (B, 2 C, ...) or (B, 2 D)
        raw, shift = h.chunk(2, dim=1)
        if self.scale == "tanh":
            log_s = self.scale_bound * torch.tanh(raw / self.scale_bound)
        else:
            log_s = F.logsigmoid(raw + 2.0) - F.logsigmoid(torch.tensor(2.0, dtype=raw.dtype))
        transformed = 1.0 - self.mask
        return log_s * transformed, shift * transformed

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_s, shift = self._log_scale_and_shift(x * self.mask, context)
        return x * log_s.exp() + shift, sum_except_batch(log_s)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        log_s, shift = self._log_scale_and_shift(y * self.mask, context)
        return (y - shift) * (-log_s).exp(), -sum_except_batch(log_s)


class AdditiveCoupling(_Coupling):
    """Additive coupling layer (NICE, Dinh et al. 2015, eq. 5): with mask b and t = NN(b * x),

        y = x + (1 - b) * t,   x = y - (1 - b) * t,   log|det| = 0 (volume preserving).
    """

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift = self._condition(x * self.mask, context) * (1.0 - self.mask)
        return x + shift, x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        shift = self._condition(y * self.mask, context) * (1.0 - self.mask)
        return y - shift, y.new_zeros(y.shape[0])


def coupling_layer(
    shape: Sequence[int],
    mask: str,
    parity: int = 0,
    *,
    kind: str = "affine",
    scale: str = "tanh",
    hidden: Sequence[int] = (64, 64),
    channels: int = 64,
    blocks: int = 2,
    context_dim: int | None = None,
    dropout: float = 0.0,
) -> Bijection:
    """An affine or additive coupling layer for samples of `shape` with the named mask (see
    `coupling_mask`) and a conditioner from `build_conditioner` (dropout: inside the conditioner,
    in training only; the layer stays invertible, as the conditioner sees the same b * x both ways)."""
    if kind not in ("affine", "additive"):
        raise ConfigError(f"coupling kind={kind!r} is unknown; choose 'affine' or 'additive'")
    out_factor = 2 if kind == "affine" else 1
    conditioner = build_conditioner(shape, out_factor, hidden=hidden, channels=channels, blocks=blocks, context_dim=context_dim, dropout=dropout)
    b = coupling_mask(shape, mask, parity)
    if kind == "affine":
        return AffineCoupling(b, conditioner, scale=scale)
    return AdditiveCoupling(b, conditioner)


# -- reshaping and the multi-scale architecture ------------------------------------------------------------


class Squeeze(Bijection):
    """Space-to-depth (Dinh et al. 2017, sec. 3.6): (B, C, H, W) -> (B, 4 C, H/2, W/2), each 2x2
    block of a channel becoming 4 channels; a permutation, log|det| = 0."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c, h, w = x.shape
        if h % 2 or w % 2:
            raise ConfigError(f"Squeeze needs an even height and width, got {h}x{w}; use fewer scales or pad the images")
        y = x.reshape(b, c, h // 2, 2, w // 2, 2).permute(0, 1, 3, 5, 2, 4).reshape(b, 4 * c, h // 2, w // 2)
        return y, x.new_zeros(b)

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        b, c4, h2, w2 = y.shape
        c = c4 // 4
        x = y.reshape(b, c, 2, 2, h2, w2).permute(0, 1, 4, 2, 5, 3).reshape(b, c, 2 * h2, 2 * w2)
        return x, y.new_zeros(b)


class Flatten(Bijection):
    """(B, *shape) -> (B, prod(shape)); log|det| = 0."""

    def __init__(self, shape: Sequence[int]) -> None:
        super().__init__()
        self.shape = tuple(shape)

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return x.reshape(x.shape[0], -1), x.new_zeros(x.shape[0])

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return y.reshape(y.shape[0], *self.shape), y.new_zeros(y.shape[0])


class FactorOut(Bijection):
    """One scale of the multi-scale architecture (Dinh et al. 2017, sec. 3.6; Glow, fig. 2b):

        h = block(x) (B, C, H, W);   z_1 = h[:, :k] (factored out: goes straight to the latent),
        h_2 = h[:, k:] -> y_2 = inner(h_2) (B, D_2) (the next, coarser scales, flat);
        z = [flatten(z_1), y_2] (B, C H W),   log|det| = block's + inner's.

    k = C // 2 by default. The output is flat, so a stack of FactorOut ends in a (B, D) latent whose
    first entries are the finest scale's. A block ending in a coupling that transforms z_1 given h_2
    (channel mask) is Glow's learned prior p(z_1 | h_2) = N(mu(h_2), sigma(h_2)^2).
    """

    def __init__(self, block: Bijection, inner: Bijection, shape_after_block: Sequence[int], factored_channels: int | None = None) -> None:
        super().__init__()
        self.block, self.inner = block, inner
        c, h, w = shape_after_block
        self.shape_after_block = (c, h, w)
        self.factored_channels = c // 2 if factored_channels is None else factored_channels

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        h, log_det = self.block(x, context)
        k = self.factored_channels
        y, log_det_inner = self.inner(h[:, k:], context)  # (B, C - k, H, W) -> (B, D_2)
        return torch.cat([h[:, :k].reshape(h.shape[0], -1), y], dim=1), log_det + log_det_inner

    def inverse(self, z: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        c, height, width = self.shape_after_block
        k = self.factored_channels
        z_1 = z[:, : k * height * width].reshape(z.shape[0], k, height, width)
        h_2, log_det_inner = self.inner.inverse(z[:, k * height * width :], context)
        x, log_det = self.block.inverse(torch.cat([z_1, h_2], dim=1), context)
        return x, log_det + log_det_inner


def multi_scale(shape: Sequence[int], scales: int, make_block, *, factored_channels=None) -> Bijection:
    """The multi-scale architecture from a block builder: make_block(level, shape_in) returns
    (block: Bijection, shape_out) for scale `level` (0 = finest); after every scale but the last,
    half the channels are factored out (`FactorOut`). Returns a bijection (B, C, H, W) -> (B, C H W)."""
    blocks = []
    current = tuple(shape)
    for level in range(scales):
        block, out_shape = make_block(level, current)
        blocks.append((block, tuple(out_shape)))
        current = (out_shape[0] - out_shape[0] // 2, out_shape[1], out_shape[2])
    last_block, last_shape = blocks[-1]
    transform: Bijection = Compose(last_block, Flatten(last_shape))
    for block, out_shape in reversed(blocks[:-1]):
        transform = FactorOut(block, transform, out_shape)
    return transform


# -- dequantization ---------------------------------------------------------------------------------------


class Sigmoid(Bijection):
    """y = sigmoid(x) elementwise, log|det dy/dx| = sum_i [log sigmoid(x_i) + log sigmoid(-x_i)]."""

    def forward(self, x: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        return torch.sigmoid(x), sum_except_batch(F.logsigmoid(x) + F.logsigmoid(-x))

    def inverse(self, y: Tensor, context: Tensor | None = None) -> tuple[Tensor, Tensor]:
        x = torch.log(y) - torch.log1p(-y)
        return x, -sum_except_batch(F.logsigmoid(x) + F.logsigmoid(-x))


class VariationalDequantizer(nn.Module):
    """The dequantization noise distribution q(u | x) of Flow++ (Ho et al. 2019, sec. 3.1):

        eps ~ N(0, I),  v = g(eps; x) (a conditional flow of affine couplings),  u = sigmoid(v) in (0, 1)^D,
        log q(u|x) = log N(eps; 0, I) - log|det dv/deps| - sum_i log[sigmoid(v_i) sigmoid(-v_i)].

    x enters as x_unit = v / (L - 1) in [0, 1] (levels v), through features of the same shape: a
    small conv net for images ((B, C, H, W) -> (B, channels, H, W), concatenated to each coupling's
    input), the values themselves (with the optional class one-hot) for vectors. The couplings
    start at the identity, so q starts as the logit-normal sigmoid(N(0, I)), not as U[0, 1).

    `flow` maps eps -> u (as a Bijection: forward(eps, features) -> (u, log|det du/deps|)).
    """

    def __init__(self, shape: Sequence[int], *, context_dim: int | None = None, couplings: int = 4, channels: int = 32, hidden: Sequence[int] = (64, 64)) -> None:
        super().__init__()
        self.shape = tuple(shape)
        self.context_dim = context_dim
        image = len(self.shape) == 3
        if image:
            c = self.shape[0]
            extra = context_dim or 0
            self.features = nn.Sequential(
                nn.Conv2d(c + extra, channels, 3, padding=1), get_activation("silu"), nn.Conv2d(channels, channels, 3, padding=1)
            )
            masks = ["checkerboard", "channel"] if c >= 2 else ["checkerboard"]
            layers = [
                coupling_layer(self.shape, masks[(i // 2) % len(masks)], i % 2, channels=channels, blocks=1, context_dim=channels)
                for i in range(couplings)
            ]
        else:
            self.features = None
            d = self.shape[0]
            layers = [
                coupling_layer(self.shape, "alternating", i % 2, hidden=hidden, context_dim=d + (context_dim or 0))
                for i in range(couplings)
            ]
        self.flow = Compose(*layers, Sigmoid())

    def conditioning(self, x_unit: Tensor, context: Tensor | None = None) -> Tensor:
        """The couplings' context from x_unit (B, *shape) and an optional class one-hot (B, K)."""
        if self.features is not None:
            parts = [x_unit]
            if self.context_dim:
                parts.append(context.to(x_unit.dtype)[:, :, None, None].expand(-1, -1, *x_unit.shape[2:]))
            return self.features(torch.cat(parts, dim=1))  # (B, C (+ K), H, W) -> (B, channels, H, W)
        if self.context_dim:
            return torch.cat([x_unit, context.to(x_unit.dtype)], dim=1)
        return x_unit

    def forward(self, x_unit: Tensor, context: Tensor | None = None, generator: torch.Generator | None = None) -> tuple[Tensor, Tensor]:
        """u ~ q(u|x) (B, *shape) in (0, 1) and log q(u|x) (B,) in nats."""
        eps = sample_standard_normal(x_unit.shape, generator=generator, device=x_unit.device, dtype=x_unit.dtype)
        u, log_det = self.flow(eps, self.conditioning(x_unit, context))
        return u, standard_normal_log_prob(eps) - log_det

    def log_prob(self, u: Tensor, x_unit: Tensor, context: Tensor | None = None) -> Tensor:
        """log q(u|x) (B,) at given u (B, *shape) in (0, 1): log N(g^{-1}(u)) + log|det dg^{-1}/du|."""
        eps, log_det = self.flow.inverse(u, self.conditioning(x_unit, context))
        return standard_normal_log_prob(eps) + log_det
