"""Dequantization: the bins of the shared convention, and what evaluation reports from them."""

import math

import torch

import genlab
from genlab.data import DataSpec
from genlab.data.transforms import dequantize, levels_of, quantize
from genlab.metrics.report import likelihood_metrics

DIGITS = DataSpec("d", kind="image", shape=(1, 2, 2), value_range=(0.0, 1.0), levels=17)


def test_dequantized_values_fill_their_bins_and_quantize_back():
    v = torch.randint(0, 17, (5000, 1, 2, 2), generator=torch.Generator().manual_seed(1))
    x = v / 16.0  # stored as digits are: v / (L - 1)
    x_deq = dequantize(x, DIGITS, torch.Generator().manual_seed(0))
    width = 1 / 17
    assert torch.all(x_deq >= v * width) and torch.all(x_deq < (v + 1) * width)
    # uniform within the bin: the offset has mean 1/2 and variance 1/12 of a bin
    offset = x_deq / width - v
    assert abs(offset.mean().item() - 0.5) < 0.01 and abs(offset.var().item() - 1 / 12) < 0.005
    assert torch.equal(levels_of(quantize(x_deq, DIGITS), DIGITS), v)
    torch.testing.assert_close(quantize(x_deq, DIGITS), x)


def test_continuous_data_is_left_alone():
    spec = DataSpec("v", kind="vector", shape=(3,), value_range=(-5.0, 5.0))
    x = torch.randn(4, 3)
    assert dequantize(x, spec) is x and quantize(x, spec) is x


def test_bits_per_dim_of_the_uniform_density_is_log2_levels():
    # the uniform density on [0,1]^D gives P(v) = 17^-D to every discrete image: log2(17) bits/dim
    report = likelihood_metrics(torch.zeros(10), DIGITS, exact=True, kind="dequantized")
    assert math.isclose(report["nll_bits_per_dim"], math.log2(17), rel_tol=1e-6)
    assert "cross_entropy_bound_nats" in likelihood_metrics(torch.ones(3), DIGITS, exact=False, kind="none")


def test_vae_says_what_its_bound_measures():
    data = genlab.data.load("digits")
    assert genlab.create("vae", data=data).likelihood_kind() == "none"  # Bernoulli on 17 grey levels
    gaussian = genlab.create("vae", data=data, likelihood="gaussian")
    assert gaussian.likelihood_kind() == "dequantized"
    sample = gaussian.sample(6, generator=torch.Generator().manual_seed(0))
    assert torch.allclose(sample * 16, (sample * 16).round(), atol=1e-5)  # quantized to the data's levels
    assert genlab.create("vae", data=data, likelihood="gaussian", dequantize=False).likelihood_kind() == "continuous"



def test_gaussian_blur_is_the_normalised_gaussian_kernel():
    from genlab.data.transforms import gaussian_blur

    impulse = torch.zeros(1, 1, 15, 15)
    impulse[..., 7, 7] = 1.0
    blurred = gaussian_blur(impulse, 1.2)[0, 0]
    g = torch.exp(-0.5 * (torch.arange(-4, 5, dtype=torch.float64) / 1.2) ** 2)  # radius ceil(3 sigma) = 4
    g = g / g.sum()
    torch.testing.assert_close(blurred.double(), torch.outer(g, g).new_zeros(15, 15).index_put_(
        (torch.arange(3, 12)[:, None], torch.arange(3, 12)[None]), torch.outer(g, g)), atol=1e-6, rtol=1e-5)
    assert math.isclose(float(blurred.sum()), 1.0, rel_tol=1e-5)
    torch.testing.assert_close(gaussian_blur(torch.full((2, 3, 6, 6), 0.4), 2.0), torch.full((2, 3, 6, 6), 0.4))
    assert torch.equal(gaussian_blur(impulse, 0.0), impulse)
