"""Latent tools against geometry and definitions: slerp on the circle and its norms, interpolation paths
that start and end at the models' reconstructions (AE, VQ-VAE), class-mean arithmetic, PCA maps, and
rate-distortion bookkeeping."""

import math

import pytest
import torch

import genlab
from genlab.apps.latent import (
    _entropy_bits,
    attribute_shift,
    class_means,
    decode_latent,
    encode_latent,
    interpolate,
    latent_map,
    lerp,
    pca_project,
    rate_distortion,
    slerp,
    transfer_attribute,
)
from genlab.models.latent import Autoencoder, AEConfig, VQVAE, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")


def test_slerp_walks_the_great_circle_at_constant_speed():
    t = torch.linspace(0, 1, 9, dtype=torch.float64)
    path = slerp(torch.tensor([[1.0, 0.0]], dtype=torch.float64), torch.tensor([[0.0, 1.0]], dtype=torch.float64), t)
    expected = torch.stack([torch.cos(t * math.pi / 2), torch.sin(t * math.pi / 2)], dim=1)[:, None]  # (T, 1, 2)
    torch.testing.assert_close(path, expected, rtol=0, atol=1e-15)


def test_slerp_keeps_equal_norms_and_hits_the_endpoints():
    g = torch.Generator().manual_seed(0)
    z0, z1 = torch.randn(5, 3, 4, generator=g, dtype=torch.float64), torch.randn(5, 3, 4, generator=g, dtype=torch.float64)
    z1 = z1 * (z0.flatten(1).norm(dim=1) / z1.flatten(1).norm(dim=1))[:, None, None]  # equal norms per row
    path = slerp(z0, z1, 11)  # (11, 5, 3, 4)
    torch.testing.assert_close(path[0], z0, rtol=0, atol=1e-14)
    torch.testing.assert_close(path[-1], z1, rtol=1e-14, atol=1e-14)
    norms = path.flatten(2).norm(dim=2)  # (11, 5)
    torch.testing.assert_close(norms, norms[:1].expand_as(norms), rtol=1e-12, atol=0)
    # the angle between consecutive points is constant: a uniform walk along the arc
    cos = (path[1:].flatten(2) * path[:-1].flatten(2)).sum(2) / norms[1:] / norms[:-1]
    torch.testing.assert_close(cos, cos[:1].expand_as(cos), rtol=1e-10, atol=1e-10)


def test_lerp_and_the_parallel_fallback_of_slerp():
    z0 = torch.tensor([[1.0, 2.0]], dtype=torch.float64)
    torch.testing.assert_close(lerp(z0, 3 * z0, [0.5])[0], 2 * z0)
    torch.testing.assert_close(slerp(z0, 3 * z0, [0.0, 0.5, 1.0]), lerp(z0, 3 * z0, [0.0, 0.5, 1.0]))  # parallel: a line
    assert bool(torch.isfinite(slerp(z0, -z0, 5)).all())  # antiparallel: the great circle is undefined


@pytest.mark.parametrize("make", ["ae", "vq-vae"])
def test_interpolation_endpoints_decode_to_the_encoded_inputs(make):
    data = genlab.data.load("digits")
    x = data.split("test").tensors()[0][:4]
    torch.manual_seed(0)
    if make == "ae":
        model = Autoencoder(AEConfig(latent_dim=4, hidden=(32,)), data.spec).eval()
    else:
        model = VQVAE(VQVAEConfig(num_codes=8, code_dim=4, net="mlp", hidden=(32,), prior="categorical"), data.spec).eval()
    for method in ("lerp", "slerp"):
        path = interpolate(model, x[:2], x[2:], steps=6, method=method)  # (6, 2, 1, 8, 8)
        torch.testing.assert_close(path[0], model.reconstruct(x[:2]), rtol=0, atol=1e-6)
        torch.testing.assert_close(path[-1], model.reconstruct(x[2:]), rtol=0, atol=1e-6)
        assert not torch.allclose(path[0], path[-1])
    if make == "vq-vae":  # every point of a VQ-VAE path decodes a grid of codebook entries
        z = lerp(encode_latent(model, x[:2]), encode_latent(model, x[2:]), 6).flatten(0, 1)
        codes = model.quantizer.nearest(z)
        torch.testing.assert_close(decode_latent(model, z), model.decoder_mean(model.decode_indices(codes)))


def test_class_mean_arithmetic_moves_one_class_mean_onto_another():
    g = torch.Generator().manual_seed(0)
    z = torch.randn(60, 3, generator=g, dtype=torch.float64)
    labels = torch.arange(60) % 4
    means = class_means(z, labels)
    for c in range(4):
        torch.testing.assert_close(means[c], z[labels == c].mean(0))
    shifted = attribute_shift(z[labels == 1], means, source=1, target=3)
    torch.testing.assert_close(shifted.mean(0), means[3])  # the shifted class-1 codes average to class 3's mean
    assert bool(torch.isnan(class_means(z, labels, num_classes=5)[4]).all())  # no codes of class 4


def test_transfer_attribute_decodes_the_shifted_codes():
    data = genlab.data.load("digits")
    x, y = data.split("test").tensors()
    torch.manual_seed(0)
    model = Autoencoder(AEConfig(latent_dim=4, hidden=(32,)), data.spec).eval()
    out = transfer_attribute(model, x, y, source=1, target=7)
    z = encode_latent(model, x)
    expected = decode_latent(model, attribute_shift(z[y == 1], class_means(z, y), 1, 7))
    torch.testing.assert_close(out, expected)


def test_pca_recovers_a_plane_and_its_variance():
    g = torch.Generator().manual_seed(0)
    coords = torch.randn(300, 2, generator=g, dtype=torch.float64) * torch.tensor([3.0, 1.0], dtype=torch.float64)
    basis, _ = torch.linalg.qr(torch.randn(5, 2, generator=g, dtype=torch.float64))
    z = coords @ basis.T + 7.0  # a plane in 5-D, shifted
    projected, explained = pca_project(z, 2)
    assert explained == pytest.approx(1.0, abs=1e-12)
    exact = "donot_use_mm_for_euclid_dist"
    torch.testing.assert_close(torch.cdist(projected, projected, compute_mode=exact), torch.cdist(coords, coords, compute_mode=exact), rtol=1e-9, atol=1e-9)  # an isometry
    eigenvalues = torch.linalg.eigvalsh(torch.cov(z.T, correction=0)).flip(0)[:2]
    torch.testing.assert_close(projected.var(0, correction=0), eigenvalues, rtol=1e-9, atol=1e-12)


def test_latent_map_draws_labelled_codes(tmp_path):
    data = genlab.data.load("digits")
    x, y = data.split("test").tensors()
    model = Autoencoder(AEConfig(latent_dim=3, hidden=(16,)), data.spec)
    result = latent_map(model, x, y, path=tmp_path / "map.png")
    assert result.coords.shape == (len(x), 2) and 0 < result.explained <= 1
    assert (tmp_path / "map.png").stat().st_size > 1000


def test_entropy_bits_plug_in_and_cross_entropy():
    symbols = torch.tensor([[0, 5], [1, 5], [2, 5], [3, 5]])
    torch.testing.assert_close(_entropy_bits(symbols), torch.tensor([2.0, 0.0], dtype=torch.float64))
    reference = torch.tensor([[0], [0], [0], [1]])  # add-one counts over {0, 1, 2}: 4/7, 2/7, 1/7
    bits = _entropy_bits(torch.tensor([[0], [2]]), reference)
    torch.testing.assert_close(bits, torch.tensor([-(math.log2(4 / 7) + math.log2(1 / 7)) / 2], dtype=torch.float64))


def test_rate_distortion_of_discrete_and_continuous_codes():
    data = genlab.data.load("digits")
    x = data.split("test").tensors()[0][:100]
    torch.manual_seed(0)
    vq = VQVAE(VQVAEConfig(num_codes=8, code_dim=4, net="mlp", hidden=(32,), prior="categorical"), data.spec).eval()
    points = {p.method.split(" ", 1)[1]: p for p in rate_distortion(vq, x)}
    assert points["fixed-length"].bits_per_image == pytest.approx(16 * 3.0)  # a 4 x 4 grid of 8 codes
    assert points["code entropy"].bits_per_image <= points["fixed-length"].bits_per_image + 1e-9
    assert points["prior"].bits_per_image == pytest.approx(float(vq.code_length_bits(x).mean()))
    assert points["prior"].mse == pytest.approx(float((vq.reconstruct(x) - x).pow(2).mean()))
    ae = Autoencoder(AEConfig(latent_dim=4, hidden=(32,)), data.spec).eval()
    curve = rate_distortion(ae, x, steps=(0.01, 0.3, 3.0))
    rates = [p.bits_per_image for p in curve]
    assert rates[0] > rates[1] > rates[2]  # coarser steps, fewer bits
    exact = float((ae.reconstruct(x) - x).pow(2).mean())
    assert curve[0].mse == pytest.approx(exact, rel=0.01)  # a fine step barely changes the codes
    assert rates[0] <= 4 * math.log2(100) + 1e-9  # the plug-in entropy of 100 codes is at most log2(100) per dimension
