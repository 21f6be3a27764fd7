"""The denoising networks (UNet, DiT, TimeConditionedMLP) and their parts: parameter counts against the
papers, zero-initialised starts, attention and embeddings against their formulas, conditioning,
gradients, memory formats, bf16 autocast, and a short overfit of a fixed denoising target."""

import math

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from genlab.errors import ConfigError
from genlab.nn import (
    DIT_PRESETS,
    UNET_PRESETS,
    ClassEmbedding,
    DiT,
    MultiHeadSelfAttention,
    NoiseLevelEmbedding,
    ResidualBlock,
    SpatialSelfAttention,
    TimeConditionedMLP,
    UNet,
    patchify,
    sinusoidal_embedding,
    unpatchify,
)


pytestmark = pytest.mark.usefixtures("one_thread")


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def perturb(module: nn.Module, scale: float = 0.1, seed: int = 0) -> nn.Module:
    """Move every parameter off its (often zero) initial value, so every path carries signal."""
    g = torch.Generator().manual_seed(seed)
    with torch.no_grad():
        for p in module.parameters():
            p.add_(scale * torch.randn(p.shape, generator=g))
    return module


def tiny_unet(**overrides) -> UNet:
    config = dict(
        in_channels=1, out_channels=1, base_channels=8, channel_mults=(1, 2), num_res_blocks=1,
        attention_resolutions=(4,), dropout=0.0, image_size=8, num_heads=2, num_classes=3,
    )  # fmt: skip
    torch.manual_seed(0)
    return UNet(**{**config, **overrides})


def tiny_dit(**overrides) -> DiT:
    config = dict(input_size=8, patch_size=2, in_channels=1, hidden_size=32, depth=2, num_heads=2, num_classes=3)
    torch.manual_seed(0)
    return DiT(**{**config, **overrides})


def tiny_mlp(**overrides) -> TimeConditionedMLP:
    torch.manual_seed(0)
    return TimeConditionedMLP(**{**dict(dim=2, hidden=(32, 32), num_classes=3, embedding_dim=16), **overrides})


def inputs(batch: int = 4, shape=(1, 8, 8), seed: int = 1):
    g = torch.Generator().manual_seed(seed)
    x = torch.randn(batch, *shape, generator=g)
    noise_level = torch.rand(batch, generator=g) * 1000
    y = torch.randint(0, 3, (batch,), generator=g)
    return x, noise_level, y


# -- embeddings ----------------------------------------------------------------------------------
@pytest.mark.parametrize("dim", [6, 7, 1])
def test_sinusoidal_embedding_matches_its_formula(dim):
    values = torch.tensor([0.0, 1.0, 37.5, 999.0, -2.3, math.log(80.0) / 4])
    got = sinusoidal_embedding(values, dim, max_period=10000.0)
    half = dim // 2
    expected = torch.zeros(len(values), dim, dtype=torch.float64)
    for i in range(half):  # e_i = sin(v * 10000^(-i / half)), e_{half + i} = cos(...)
        frequency = 10000.0 ** (-i / half)
        expected[:, i] = torch.sin(values.double() * frequency)
        expected[:, half + i] = torch.cos(values.double() * frequency)
    assert got.shape == (len(values), dim) and got.dtype == torch.float32
    torch.testing.assert_close(got.double(), expected, atol=2e-5, rtol=0)  # float32 phases of values ~1000


def test_noise_level_embedding_is_an_mlp_of_the_sinusoid():
    embed = NoiseLevelEmbedding(8)
    values = torch.tensor([3.0, 500.0])
    expected = embed.mlp[2](F.silu(embed.mlp[0](sinusoidal_embedding(values, 8))))
    assert embed.hidden == 32
    torch.testing.assert_close(embed(values), expected)
    assert NoiseLevelEmbedding(8, hidden=5)(values).shape == (2, 5)


def test_class_embedding_has_a_no_label_row():
    embed = ClassEmbedding(4, 3)
    assert embed.embedding.num_embeddings == 5 and embed.null_label == 4
    torch.testing.assert_close(embed(None, batch_size=2), embed.embedding.weight[[4, 4]])
    torch.testing.assert_close(embed(torch.tensor([0, 4])), embed.embedding.weight[[0, 4]])
    with pytest.raises(ValueError, match="batch_size"):
        embed(None)


# -- attention -----------------------------------------------------------------------------------
def naive_attention(tokens, qkv: nn.Linear, proj: nn.Linear, heads: int):
    """softmax(Q K^T / sqrt(d)) V per head, written out with matmuls; tokens (B, T, D)."""
    q, k, v = qkv(tokens).chunk(3, dim=-1)  # 3 x (B, T, D)
    d = q.shape[-1] // heads
    outputs = []
    for h in range(heads):
        qh, kh, vh = (m[..., h * d : (h + 1) * d] for m in (q, k, v))
        weights = torch.softmax(qh @ kh.transpose(1, 2) / math.sqrt(d), dim=-1)  # (B, T, T)
        outputs.append(weights @ vh)
    return proj(torch.cat(outputs, dim=-1))


def test_multi_head_attention_matches_the_naive_formula():
    torch.manual_seed(0)
    attention = MultiHeadSelfAttention(12, num_heads=3)
    tokens = torch.randn(2, 5, 12)
    torch.testing.assert_close(attention(tokens), naive_attention(tokens, attention.qkv, attention.proj, 3))
    with pytest.raises(ConfigError, match="num_heads"):
        MultiHeadSelfAttention(12, num_heads=5)


def test_spatial_attention_is_identity_at_init_then_the_naive_formula():
    torch.manual_seed(0)
    block = SpatialSelfAttention(16, num_heads=2, groups=4)
    x = torch.randn(2, 16, 3, 5)
    assert torch.equal(block(x), x)  # zero-initialised output map
    perturb(block)
    normed = F.group_norm(x, 4, block.norm.weight, block.norm.bias, block.norm.eps)
    tokens = normed.flatten(2).transpose(1, 2)  # (B, H * W, C)
    h = naive_attention(tokens, block.attention.qkv, block.attention.proj, 2)
    expected = x + h.transpose(1, 2).reshape(x.shape)
    torch.testing.assert_close(block(x), expected)
    # channels_last input, and bf16 autocast
    torch.testing.assert_close(block(x.to(memory_format=torch.channels_last)), expected)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = block(x)
    torch.testing.assert_close(low.float(), expected, atol=0.1, rtol=0.05)


# -- the residual block --------------------------------------------------------------------------
def test_residual_block_defaults_are_the_plain_block():
    torch.manual_seed(0)
    block = ResidualBlock(8)
    assert sorted(block.state_dict()) == sorted(f"body.{i}.{n}" for i in (0, 2, 3, 5) for n in ("weight", "bias"))
    x = torch.randn(2, 8, 4, 4)
    torch.testing.assert_close(block(x), x + block.body(x))


def test_time_conditioned_residual_block_starts_as_its_skip_and_uses_the_embedding():
    torch.manual_seed(0)
    block = ResidualBlock(8, out_channels=16, embedding_dim=6, max_groups=32, zero_init_last=True)
    x, e = torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    torch.testing.assert_close(block(x, e), block.skip(x))
    perturb(block)
    assert not torch.allclose(block(x, e), block(x, e + 1.0))
    with pytest.raises(ValueError, match="embedding"):
        block(x)


@pytest.mark.parametrize("training", [False, True])
def test_time_conditioned_residual_block_is_the_ddpm_block(training):
    # skip(x) + conv2(dropout(act(norm2(conv1(act(norm1(x))) + proj(act(e)))))), Ho et al. 2020, app. B;
    # written with the body's slices, as the block computed it before it unpacked them
    torch.manual_seed(0)
    block = perturb(ResidualBlock(8, out_channels=16, embedding_dim=6, dropout=0.3, max_groups=32, zero_init_last=True))
    block.train(training)
    x, e = torch.randn(2, 8, 4, 4), torch.randn(2, 6)
    torch.manual_seed(1)
    h = block.body[:3](x) + block.embedding_proj(e)[:, :, None, None]
    expected = block.skip(x) + block.body[5](F.dropout(block.body[3:5](h), 0.3, training))
    torch.manual_seed(1)
    assert torch.equal(block(x, e), expected)


# -- parameter counts against the papers (meta device: no memory, no time) -------------------------
def test_ddpm_cifar10_unet_has_35_7m_parameters():
    with torch.device("meta"):
        net = UNet.from_preset("ddpm-cifar10", in_channels=3, out_channels=3)
    assert UNET_PRESETS["ddpm-cifar10"]["base_channels"] == 128
    assert count_parameters(net) == pytest.approx(35.7e6, rel=0.01)  # Ho et al. 2020, sec. 4
    assert {m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)} == {32}


def test_narrow_unets_keep_several_channels_per_group():
    # one channel per group would centre away the per-channel time embedding added before the norm
    net = tiny_unet()
    assert min(m.num_channels // m.num_groups for m in net.modules() if isinstance(m, nn.GroupNorm)) >= 4


@pytest.mark.parametrize("name, millions", [("DiT-XL/2", 675), ("DiT-S/2", 33), ("DiT-B/4", 130), ("DiT-L/8", 458)])
def test_dit_parameter_counts_match_the_paper(name, millions):
    # Peebles & Xie 2023, table 1: 256x256 ImageNet = 32x32x4 latents, 1000 classes, learned sigma
    with torch.device("meta"):
        net = DiT.from_preset(name, input_size=32, in_channels=4, out_channels=8, num_classes=1000)
    assert count_parameters(net) == pytest.approx(millions * 1e6, rel=0.01)


def test_presets_build_small_sizes():
    with torch.device("meta"):
        small = UNet.from_preset("small", in_channels=1, out_channels=1)
    assert 0.5e6 < count_parameters(small) < 0.8e6
    assert {"DiT-S/2", "DiT-B/4", "DiT-L/8", "DiT-XL/2"} <= set(DIT_PRESETS)


# -- shared behaviour of the three networks ------------------------------------------------------
NETWORKS = {
    "unet": (tiny_unet, (1, 8, 8)),
    "dit": (tiny_dit, (1, 8, 8)),
    "mlp": (tiny_mlp, (2,)),
}


@pytest.mark.parametrize("name", NETWORKS)
def test_conditioning_changes_the_output_and_gradients_reach_every_parameter(name):
    build, shape = NETWORKS[name]
    net = perturb(build())
    x, noise_level, y = inputs(shape=shape)
    out = net(x, noise_level, y)
    assert out.shape == x.shape
    assert not torch.allclose(out, net(x, noise_level + 100.0, y), atol=1e-4)  # time
    assert not torch.allclose(out, net(x, noise_level, (y + 1) % 3), atol=1e-4)  # class
    # y=None is the classifier-free "no label" token
    torch.testing.assert_close(net(x, noise_level, None), net(x, noise_level, torch.full_like(y, 3)))
    out.square().mean().backward()
    silent = [n for n, p in net.named_parameters() if p.grad is None or p.grad.abs().max() == 0]
    assert silent == []


@pytest.mark.parametrize("name", NETWORKS)
def test_unconditional_networks_reject_labels(name):
    build, shape = NETWORKS[name]
    net = build(num_classes=None)
    x, noise_level, y = inputs(shape=shape)
    assert net(x, noise_level).shape == x.shape
    with pytest.raises(ConfigError, match="num_classes"):
        net(x, noise_level, y)


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_output_is_exactly_zero_at_init(name):
    build, shape = NETWORKS[name]
    x, noise_level, y = inputs(shape=shape)
    assert torch.equal(build()(x, noise_level, y), torch.zeros_like(x))


@pytest.mark.parametrize("name", ["unet", "dit"])
def test_channels_last_and_bf16_autocast(name):
    build, shape = NETWORKS[name]
    net = perturb(build()).eval()
    x, noise_level, y = inputs(shape=shape)
    reference = net(x, noise_level, y)
    torch.testing.assert_close(net(x.to(memory_format=torch.channels_last), noise_level, y), reference, atol=1e-5, rtol=1e-5)
    with torch.autocast("cpu", dtype=torch.bfloat16):
        low = net(x, noise_level, y)
    assert low.dtype == torch.bfloat16
    assert (low.float() - reference).abs().max() < 0.05 * reference.abs().max()


# -- the UNet ------------------------------------------------------------------------------------
def test_unet_res_blocks_and_attention_start_as_identity_maps():
    net = tiny_unet()
    x, noise_level, y = inputs()
    e = net.embed(noise_level, y)
    h = torch.randn(4, 16, 4, 4)
    stage = net.middle[0]  # ResidualBlock (16 -> 16) then SpatialSelfAttention
    assert isinstance(stage.attention, SpatialSelfAttention)
    assert torch.equal(stage(h, e), h)


@pytest.mark.parametrize("size, mults", [((28, 28), (1, 2, 2)), ((7, 13), (1, 2, 2)), ((8, 8), (1, 2, 2, 2))])
def test_unet_handles_odd_and_small_sizes(size, mults):
    net = perturb(tiny_unet(image_size=size, channel_mults=mults, attention_resolutions=()))
    x = torch.randn(2, 1, *size)
    assert net(x, torch.tensor([1.0, 2.0])).shape == x.shape


def test_unet_dropout_acts_only_in_training():
    net = perturb(tiny_unet(dropout=0.5))
    x, noise_level, y = inputs()
    assert not torch.allclose(net(x, noise_level, y), net(x, noise_level, y))
    net.eval()
    assert torch.equal(net(x, noise_level, y), net(x, noise_level, y))


def test_unet_config_errors_name_the_field_and_the_fix():
    with pytest.raises(ConfigError, match=r"attention_resolutions.*\[28, 14, 7\]"):
        UNet(in_channels=1, out_channels=1, channel_mults=(1, 2, 2), attention_resolutions=(16,), image_size=28)
    with pytest.raises(ConfigError, match="at most 4 channel_mults"):
        UNet(in_channels=1, out_channels=1, base_channels=8, channel_mults=(1, 1, 1, 1, 1), attention_resolutions=(), image_size=8)
    with pytest.raises(ConfigError, match="preset"):
        UNet.from_preset("huge", in_channels=1, out_channels=1)
    with pytest.raises(ConfigError, match="image_size"):
        tiny_unet()(torch.randn(1, 1, 16, 16), torch.zeros(1))


# -- the DiT -------------------------------------------------------------------------------------
def test_patchify_cuts_patches_and_unpatchify_inverts_it():
    x = torch.randn(2, 3, 6, 8)
    tokens = patchify(x, 2)  # (2, 3 * 4, 2 * 2 * 3)
    assert tokens.shape == (2, 12, 12)
    # token (row 1, col 2) is the patch x[:, :, 2:4, 4:6], flattened in (p_row, p_col, channel) order
    torch.testing.assert_close(tokens[:, 1 * 4 + 2], x[:, :, 2:4, 4:6].permute(0, 2, 3, 1).reshape(2, -1))
    assert torch.equal(unpatchify(tokens, 2, (3, 4)), x)


def test_dit_blocks_start_as_identity_and_positions_are_fixed():
    net = tiny_dit()
    tokens, c = torch.randn(2, 16, 32), torch.randn(2, 32)
    assert torch.equal(net.blocks[0](tokens, c), tokens)
    assert "position_embedding" not in dict(net.named_parameters())
    assert net.position_embedding.shape == (1, 16, 32)
    # row 0, column 0 embeds position (0, 0): sin(0) = 0 and cos(0) = 1 in each half
    torch.testing.assert_close(net.position_embedding[0, 0], torch.tensor([0.0] * 8 + [1.0] * 8 + [0.0] * 8 + [1.0] * 8))
    with pytest.raises(ConfigError, match="patch_size"):
        tiny_dit(patch_size=3)


# -- learning: each network fits a fixed denoising target ---------------------------------------
@pytest.mark.parametrize("name, steps, lr", [("unet", 60, 1e-2), ("dit", 100, 3e-3), ("mlp", 150, 1e-2)])
def test_networks_overfit_a_fixed_denoising_batch(name, steps, lr):
    build, shape = NETWORKS[name]
    net = build()
    g = torch.Generator().manual_seed(0)
    x0, noise = torch.randn(8, *shape, generator=g), torch.randn(8, *shape, generator=g)
    steps_t = torch.linspace(10, 990, 8)
    alpha_bar = torch.cos(steps_t / 1000 * math.pi / 2) ** 2
    x_t = alpha_bar.sqrt().view(-1, *[1] * len(shape)) * x0 + (1 - alpha_bar).sqrt().view(-1, *[1] * len(shape)) * noise
    y = torch.arange(8) % 3
    optimizer = torch.optim.Adam(net.parameters(), lr=lr)
    losses = []
    for _ in range(steps):
        loss = (net(x_t, steps_t, y) - noise).square().mean()  # epsilon prediction (Ho et al. 2020, eq. 14)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
    assert losses[-1] < losses[0] / 50
