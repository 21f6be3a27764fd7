"""genlab.nn: exact shapes of the conv encoder/decoder, net selection, and the distribution formulas
checked against torch.distributions and Monte Carlo."""

import math

import pytest
import torch
from torch import distributions as D

from genlab.data import DataSpec
from genlab.errors import ConfigError
from genlab.nn.builders import resolve_net
from genlab.nn import (
    MLP,
    ConvDecoder,
    ConvEncoder,
    DiagonalGaussian,
    bernoulli_log_likelihood,
    build_decoder,
    build_encoder,
    diagonal_gaussian_log_prob,
    downsample_plan,
    gaussian_kl,
    gaussian_log_likelihood,
    resolution_plan,
    sample_standard_normal,
    standard_normal_log_prob,
)

pytestmark = pytest.mark.usefixtures("one_thread")


IMAGE_SHAPES = [(1, 8, 8), (1, 28, 28), (3, 32, 32), (2, 7, 13), (1, 5, 5), (1, 1, 1), (3, 9, 30)]


# -- resolution plan ---------------------------------------------------------------------------
def test_downsample_plan_halves_while_half_side_stays_at_least_4():
    assert downsample_plan(8) == [8, 4]
    assert downsample_plan(28) == [28, 14, 7]
    assert downsample_plan(32) == [32, 16, 8, 4]
    assert downsample_plan(64) == [64, 32, 16, 8, 4]
    assert downsample_plan(13) == [13, 7]
    assert downsample_plan(7) == [7]
    assert downsample_plan(1) == [1]
    for side in range(1, 80):
        plan = downsample_plan(side)
        # each step is what a 3x3 stride-2 padding-1 conv produces: floor((n + 2 - 3) / 2) + 1
        assert all(b == (a - 1) // 2 + 1 for a, b in zip(plan, plan[1:]))
        assert min(plan) >= min(side, 4)


def test_resolution_plan_keeps_a_finished_axis():
    assert resolution_plan(32, 8) == [(32, 8), (16, 4), (8, 4), (4, 4)]


# -- conv encoder / decoder ----------------------------------------------------------------
@pytest.mark.parametrize("shape", IMAGE_SHAPES)
@pytest.mark.parametrize("upsample", ["nearest", "transpose"])
def test_conv_encoder_decoder_exact_shapes(shape, upsample):
    encoder = ConvEncoder(shape, 6, channels=(4, 8))
    decoder = ConvDecoder(6, shape, channels=(8, 4), upsample=upsample)
    x = torch.randn(2, *shape)
    h = encoder(x)
    assert h.shape == (2, 6)
    assert decoder(h).shape == (2, *shape)


def test_conv_encoder_strides_follow_the_plan():
    encoder = ConvEncoder((1, 28, 28), 5, channels=(4, 8, 16))
    strided = [m for m in encoder.modules() if isinstance(m, torch.nn.Conv2d) and m.stride == (2, 2)]
    assert [m.out_channels for m in strided] == [8, 16]  # 28 -> 14 -> 7: two downsamplings
    head = encoder.net[-1]
    assert head.in_features == 16 * 7 * 7


def test_conv_networks_agree_under_channels_last():
    torch.manual_seed(0)
    encoder, decoder = ConvEncoder((3, 12, 12), 4, channels=(8, 16)), ConvDecoder(4, (3, 12, 12), channels=(16, 8))
    x = torch.randn(3, 3, 12, 12)
    expected = decoder(encoder(x))
    encoder, decoder = encoder.to(memory_format=torch.channels_last), decoder.to(memory_format=torch.channels_last)
    got = decoder(encoder(x.contiguous(memory_format=torch.channels_last)))
    torch.testing.assert_close(got, expected, rtol=1e-4, atol=1e-5)


def test_forward_under_bf16_autocast():
    torch.manual_seed(0)
    encoder, decoder, mlp = ConvEncoder((1, 8, 8), 6, channels=(8, 16)), ConvDecoder(6, (1, 8, 8), channels=(16, 8)), MLP(6, 3, hidden=(16,))
    with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
        h = encoder(torch.rand(4, 1, 8, 8))
        out, y = decoder(h), mlp(h)
    assert out.shape == (4, 1, 8, 8) and y.shape == (4, 3)
    assert torch.isfinite(out.float()).all() and torch.isfinite(y.float()).all()


def test_conv_decoder_traces_as_one_graph():
    """No data-dependent Python control flow: dynamo captures the whole forward (eager backend: no codegen)."""
    torch._dynamo.reset()
    decoder = ConvDecoder(4, (1, 7, 13), channels=(8, 4))
    z = torch.randn(2, 4)
    compiled = torch.compile(decoder, backend="eager", fullgraph=True)
    torch.testing.assert_close(compiled(z), decoder(z))


# -- MLP -------------------------------------------------------------------------------------
def test_mlp_shapes_layers_and_zero_init():
    mlp = MLP(5, 3, hidden=(16, 8), activation="gelu", norm="layer")
    assert mlp(torch.randn(7, 2, 5)).shape == (7, 2, 3)
    linears = [m for m in mlp.modules() if isinstance(m, torch.nn.Linear)]
    assert [(m.in_features, m.out_features) for m in linears] == [(5, 16), (16, 8), (8, 3)]
    assert torch.equal(MLP(5, 3, hidden=(4,), zero_init_last=True)(torch.randn(2, 5)), torch.zeros(2, 3))
    linear = MLP(5, 3, hidden=())
    x = torch.randn(4, 5)
    torch.testing.assert_close(linear(x), x @ linear.net[0].weight.T + linear.net[0].bias)


def test_unknown_activation_names_the_choices():
    with pytest.raises(ConfigError, match="silu"):
        MLP(2, 2, activation="swishy")


# -- builders ----------------------------------------------------------------------------------
def test_build_picks_conv_for_images_and_mlp_for_vectors():
    image = DataSpec("img", kind="image", shape=(1, 16, 16))
    vector = DataSpec("vec", kind="vector", shape=(5,))
    enc = build_encoder(image, 7, channels=(4, 8))
    dec = build_decoder(7, image, channels=(8, 4))
    assert isinstance(enc, ConvEncoder) and isinstance(dec, ConvDecoder)
    assert dec(enc(torch.rand(2, 1, 16, 16))).shape == (2, 1, 16, 16)
    # below 16 pixels "auto" takes the MLP (a conv sees the whole image anyway, at ~15x the cost)
    tiny = DataSpec("img", kind="image", shape=(1, 8, 8))
    assert resolve_net(tiny) == "mlp" and resolve_net(tiny, "conv") == "conv"
    enc, dec = build_encoder(vector, 7, hidden=(16,)), build_decoder(7, vector, hidden=(16,))
    assert any(isinstance(m, MLP) for m in enc.modules()) and not any(isinstance(m, torch.nn.Conv2d) for m in enc.modules())
    assert dec(enc(torch.randn(3, 5))).shape == (3, 5)
    # an MLP on images flattens and unflattens
    enc, dec = build_encoder(image, 7, net="mlp", hidden=(16,)), build_decoder(7, image, net="mlp", hidden=(16,))
    assert not any(isinstance(m, torch.nn.Conv2d) for m in enc.modules())
    assert dec(enc(torch.rand(2, 1, 16, 16))).shape == (2, 1, 16, 16)


def test_build_conv_on_vectors_says_what_to_do():
    with pytest.raises(ConfigError, match="net='mlp'"):
        build_encoder(DataSpec("vec", kind="vector", shape=(5,)), 3, net="conv")
    with pytest.raises(ConfigError, match="'auto'"):
        build_encoder(DataSpec("vec", kind="vector", shape=(5,)), 3, net="transformer")


# -- distributions -----------------------------------------------------------------------------
def test_gaussian_kl_matches_torch_and_monte_carlo():
    g = torch.Generator().manual_seed(0)
    mean = torch.randn(4, 3, generator=g, dtype=torch.float64)
    logvar = torch.randn(4, 3, generator=g, dtype=torch.float64)
    kl = gaussian_kl(mean, logvar)
    q = D.Independent(D.Normal(mean, torch.exp(0.5 * logvar)), 1)
    p = D.Independent(D.Normal(torch.zeros_like(mean), torch.ones_like(mean)), 1)
    torch.testing.assert_close(kl, D.kl_divergence(q, p))
    # Monte Carlo: KL = E_q[log q(z) - log p(z)]
    z = q.sample((200_000,))  # (S, 4, 3)
    mc = (q.log_prob(z) - p.log_prob(z)).mean(0)
    assert torch.allclose(kl, mc, atol=0.03, rtol=0.02), (kl, mc)
    assert torch.all(gaussian_kl(torch.zeros(2, 5), torch.zeros(2, 5)) == 0)


def test_gaussian_log_densities_match_torch():
    g = torch.Generator().manual_seed(1)
    x, mean, logvar = (torch.randn(5, 2, 3, generator=g, dtype=torch.float64) for _ in range(3))
    reference = D.Normal(mean, torch.exp(0.5 * logvar)).log_prob(x).sum((1, 2))
    torch.testing.assert_close(diagonal_gaussian_log_prob(x, mean, logvar), reference)
    torch.testing.assert_close(gaussian_log_likelihood(x, mean, 0.5 * logvar), reference)
    # a fixed scale given as a float
    fixed = D.Normal(mean, 0.3).log_prob(x).sum((1, 2))
    torch.testing.assert_close(gaussian_log_likelihood(x, mean, math.log(0.3)), fixed)
    torch.testing.assert_close(standard_normal_log_prob(x), D.Normal(0.0, 1.0).log_prob(x).sum((1, 2)))
    # q.log_prob is a proper density: the full-covariance reference with a diagonal covariance
    q = DiagonalGaussian(mean[:, 0], logvar[:, 0])
    mvn = D.MultivariateNormal(mean[:, 0], torch.diag_embed(torch.exp(logvar[:, 0])))
    torch.testing.assert_close(q.log_prob(x[:, 0]), mvn.log_prob(x[:, 0]))


def test_bernoulli_log_likelihood_binary_and_continuous_targets():
    g = torch.Generator().manual_seed(2)
    logits = torch.randn(6, 1, 4, 4, generator=g, dtype=torch.float64)
    binary = (torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64) > 0.5).to(torch.float64)
    torch.testing.assert_close(bernoulli_log_likelihood(binary, logits), D.Bernoulli(logits=logits).log_prob(binary).sum((1, 2, 3)))
    u = torch.rand(6, 1, 4, 4, generator=g, dtype=torch.float64)
    p = torch.sigmoid(logits)
    cross_entropy = (u * torch.log(p) + (1 - u) * torch.log1p(-p)).sum((1, 2, 3))
    torch.testing.assert_close(bernoulli_log_likelihood(u, logits), cross_entropy)
    # extreme logits stay finite (log-sigmoid, not log of a rounded probability)
    assert torch.isfinite(bernoulli_log_likelihood(torch.zeros(1, 3), torch.tensor([[200.0, -200.0, 0.0]]))).all()


def test_low_precision_inputs_are_summed_in_float32():
    x = torch.rand(2, 64, dtype=torch.bfloat16)
    assert bernoulli_log_likelihood(x, torch.zeros_like(x)).dtype == torch.float32
    assert gaussian_kl(x, x).dtype == torch.float32
    torch.testing.assert_close(bernoulli_log_likelihood(x, torch.zeros_like(x)), torch.full((2,), -64 * math.log(2.0)))


def test_diagonal_gaussian_reparameterised_draws():
    mean = torch.tensor([[1.0, -2.0]], requires_grad=True)
    logvar = torch.tensor([[0.0, math.log(0.25)]], requires_grad=True)
    q = DiagonalGaussian(mean, logvar)
    z = q.repeat(100_000).rsample(torch.Generator().manual_seed(0))  # (100000, 2)
    torch.testing.assert_close(z.mean(0), torch.tensor([1.0, -2.0]), atol=0.02, rtol=0)
    torch.testing.assert_close(z.std(0), torch.tensor([1.0, 0.5]), atol=0.02, rtol=0)
    # d E[z^2] / d mean = 2 mean, d E[z^2] / d logvar = exp(logvar): gradients flow through the draw
    (z**2).mean(0).sum().backward()
    torch.testing.assert_close(mean.grad, torch.tensor([[2.0, -4.0]]), atol=0.05, rtol=0)
    torch.testing.assert_close(logvar.grad, torch.tensor([[1.0, 0.25]]), atol=0.05, rtol=0)


def test_standard_normal_draws_follow_the_generator():
    a = sample_standard_normal((3, 4), generator=torch.Generator().manual_seed(5))
    b = sample_standard_normal((3, 4), generator=torch.Generator().manual_seed(5), device="cpu", dtype=torch.float64)
    torch.testing.assert_close(a.double(), b)
    assert b.dtype == torch.float64


# -- frozen -------------------------------------------------------------------------------------------
def test_frozen_stops_gradients_and_restores_each_flag_also_after_an_error_and_when_nested():
    from genlab.nn import frozen

    net = torch.nn.Sequential(torch.nn.Linear(3, 4), torch.nn.Linear(4, 1))
    net[1].bias.requires_grad_(False)  # frozen before: must stay frozen after
    before = {name: p.requires_grad for name, p in net.named_parameters()}
    x = torch.randn(5, 3, requires_grad=True)
    with frozen(net) as same:
        assert same is net and not any(p.requires_grad for p in net.parameters())
        net(x).sum().backward()  # gradients still reach the input through the frozen net
    assert x.grad is not None and all(p.grad is None for p in net.parameters())
    assert {name: p.requires_grad for name, p in net.named_parameters()} == before

    with pytest.raises(RuntimeError, match="inside"):
        with frozen(net):
            raise RuntimeError("an error inside the block")
    assert {name: p.requires_grad for name, p in net.named_parameters()} == before

    with frozen(net):
        with frozen(net[0]):
            assert not any(p.requires_grad for p in net.parameters())
        assert not any(p.requires_grad for p in net.parameters())  # the inner block restores the outer's state
    assert {name: p.requires_grad for name, p in net.named_parameters()} == before
