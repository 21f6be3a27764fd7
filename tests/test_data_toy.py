"""2D toy densities: samples against their definitions, densities against quadrature and torch.distributions."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import distributions as D

import genlab.data as gd
from genlab.data import toy
from genlab.errors import DataError


def gen(seed: int = 0) -> torch.Generator:
    return torch.Generator().manual_seed(seed)


def reference_mixture(name: str) -> D.MixtureSameFamily:
    centers, std = gd.gaussian_mixture(name)
    k = len(centers)
    return D.MixtureSameFamily(
        D.Categorical(probs=torch.full((k,), 1.0 / k, dtype=torch.float64)),
        D.Independent(D.Normal(centers, torch.full_like(centers, std)), 1),
    )


def test_mixture_constants_follow_the_papers():
    centers, std = gd.gaussian_mixture("8gaussians")
    assert torch.allclose(centers.norm(dim=1), torch.full((8,), 4 / 1.414, dtype=torch.float64))
    assert std == pytest.approx(0.5 / 1.414)
    angles = torch.atan2(centers[:, 1], centers[:, 0]).sort().values
    assert torch.allclose(angles.diff(), torch.full((7,), math.pi / 4, dtype=torch.float64))
    centers, std = gd.gaussian_mixture("grid25")
    assert std == 0.05
    assert sorted(map(tuple, centers.tolist())) == [(a, b) for a in (-4, -2, 0, 2, 4) for b in (-4, -2, 0, 2, 4)]
    centers, std = gd.gaussian_mixture("ring8")
    assert std == 0.02 and torch.allclose(centers.norm(dim=1), torch.full((8,), 2.0, dtype=torch.float64))
    assert gd.mode_centers("ring8").dtype == torch.float32 and gd.mode_std("grid25") == 0.05
    with pytest.raises(DataError, match="8gaussians, grid25, ring8"):
        gd.mode_centers("moons")


@pytest.mark.parametrize("name", ["8gaussians", "grid25", "ring8"])
def test_mixture_samples_match_components(name):
    centers, std = gd.gaussian_mixture(name)
    x, y = gd.sample_toy(name, 20_000, gen(1), return_labels=True)
    counts = torch.bincount(y, minlength=len(centers)).double()
    expected = 20_000 / len(centers)
    assert ((counts - expected).abs() < 5 * math.sqrt(expected)).all()  # equal weights
    for k in range(len(centers)):
        xk = x[y == k].double()
        assert torch.allclose(xk.mean(0), centers[k], atol=5 * std / math.sqrt(len(xk)) + 1e-6)
        assert torch.allclose(xk.std(0), torch.full((2,), std, dtype=torch.float64), rtol=0.1)
    # whole-mixture covariance: E[mu mu^T] - E[mu] E[mu]^T + std^2 I
    mean = centers.mean(0)
    cov = (centers - mean).T @ (centers - mean) / len(centers) + std**2 * torch.eye(2, dtype=torch.float64)
    assert torch.allclose(torch.cov(x.double().T), cov, atol=0.05 * cov.diagonal().max())


@pytest.mark.parametrize("name", ["8gaussians", "grid25", "ring8"])
def test_mixture_log_prob_matches_torch_distributions(name):
    x = gd.sample_toy(name, 500, gen(2)).double()
    x = torch.cat([x, 3 * torch.randn(100, 2, generator=gen(3), dtype=torch.float64)])  # also points between modes
    ours = gd.toy_log_prob(name, x)
    assert torch.allclose(ours, reference_mixture(name).log_prob(x), rtol=1e-9, atol=1e-9)
    data = gd.load(name, n=100)
    assert torch.allclose(data.true_log_prob(data.storage), gd.toy_log_prob(name, data.storage))


@pytest.mark.parametrize(
    "name, box, step",
    [("8gaussians", 6.0, 0.1), ("grid25", 4.6, 0.02), ("ring8", 2.3, 0.008), ("checkerboard", 5.0, 0.05)],
)
def test_true_density_integrates_to_one(name, box, step):
    """Midpoint rule over [-box, box]^2. For a Gaussian of std s the rule's error falls like
    exp(-2 pi^2 s^2 / step^2), so step = 0.4 s is already exact to ~1e-50; the checkerboard's
    edges fall on cell boundaries, so the rule is exact there too."""
    ticks = torch.arange(-box + step / 2, box, step, dtype=torch.float64)
    grid = torch.cartesian_prod(ticks, ticks)
    mass = sum(gd.toy_log_prob(name, chunk).exp().sum() for chunk in grid.split(200_000)) * step**2
    assert mass.item() == pytest.approx(1.0, abs=1e-6)


def test_checkerboard_density_and_samples_agree():
    x = gd.sample_toy("checkerboard", 40_000, gen(4)).double()
    log_p = gd.toy_log_prob("checkerboard", x)
    assert torch.isfinite(log_p).all() and torch.allclose(log_p, torch.full_like(log_p, -math.log(32)))
    cell = torch.floor(x / 2).long() + 2  # 0..3 per axis
    counts = torch.bincount(cell[:, 0] * 4 + cell[:, 1], minlength=16).reshape(4, 4)
    dark = (torch.arange(4)[:, None] + torch.arange(4)[None]) % 2 == 0
    assert (counts[~dark] == 0).all()
    assert ((counts[dark].double() - 5000).abs() < 5 * math.sqrt(5000)).all()  # uniform over the 8 squares
    assert gd.toy_log_prob("checkerboard", torch.tensor([[1.0, 1.0], [1.0, -1.0], [4.5, 0.0]])).tolist()[1:] == [-math.inf] * 2


def test_circles_rings_and_moons_radii():
    x, y = gd.sample_toy("circles", 20_000, gen(5), return_labels=True)
    r = x.double().norm(dim=1)
    assert r[y == 0].mean().item() == pytest.approx(3.0, abs=0.02)
    assert r[y == 1].mean().item() == pytest.approx(1.5, abs=0.02)
    assert r[y == 1].std().item() == pytest.approx(0.24, rel=0.1)  # noise 0.08 scaled by 3

    x, y = gd.sample_toy("rings", 20_000, gen(6), return_labels=True)
    r = x.double().norm(dim=1)
    for k, radius in enumerate([3.0, 2.25, 1.5, 0.75]):
        assert r[y == k].mean().item() == pytest.approx(radius, abs=0.01)
        assert r[y == k].std().item() == pytest.approx(0.08, rel=0.1)

    # moons: outer arc of radius 2 about (-1, -0.2) (upper half), inner about (1, 0.8) (lower half)
    x, y = gd.sample_toy("moons", 20_000, gen(7), return_labels=True)
    x = x.double()
    outer = x[y == 0] - torch.tensor([-1.0, -0.2], dtype=torch.float64)
    inner = x[y == 1] - torch.tensor([1.0, 0.8], dtype=torch.float64)
    assert outer.norm(dim=1).mean().item() == pytest.approx(2.0, abs=0.02)
    assert inner.norm(dim=1).mean().item() == pytest.approx(2.0, abs=0.02)
    assert outer[:, 1].mean() > 1.0 and inner[:, 1].mean() < -1.0


def test_swissroll_radius_is_uniform_in_its_angle():
    x = gd.sample_toy("swissroll", 20_000, gen(8)).double() * 5  # t (cos t, sin t) + N(0, I)
    r = x.norm(dim=1)
    lo, hi = 1.5 * math.pi, 4.5 * math.pi
    assert r.mean().item() == pytest.approx((lo + hi) / 2, abs=0.1)
    assert r.var().item() == pytest.approx((hi - lo) ** 2 / 12 + 1.0, rel=0.05)


def test_pinwheel_matches_ffjord_construction():
    """Compare with FFJORD's recipe written with numpy and per-sample rotation matrices (einsum)."""
    n = 20_000
    x, y = gd.sample_toy("pinwheel", n, gen(9), return_labels=True)
    assert torch.bincount(y).tolist() == [n // 5] * 5

    rng = np.random.default_rng(0)
    labels = np.repeat(np.arange(5), n // 5)
    features = rng.standard_normal((n, 2)) * np.array([0.3, 0.1])
    features[:, 0] += 1.0
    angles = np.linspace(0, 2 * np.pi, 5, endpoint=False)[labels] + 0.25 * np.exp(features[:, 0])
    rotations = np.stack([np.cos(angles), -np.sin(angles), np.sin(angles), np.cos(angles)]).T.reshape(-1, 2, 2)
    reference = 2 * np.einsum("ti,tij->tj", features, rotations)

    ours = x.double().numpy()
    for k in range(5):
        a, b = ours[y.numpy() == k], reference[labels == k]
        ra, rb = np.linalg.norm(a, axis=1), np.linalg.norm(b, axis=1)
        standard_error = math.sqrt(ra.var() / len(ra) + rb.var() / len(rb))
        assert ra.mean() == pytest.approx(rb.mean(), abs=4 * standard_error)
        direction = lambda p: np.angle(np.exp(1j * np.arctan2(p[:, 1], p[:, 0])).mean())  # noqa: E731
        assert abs(np.angle(np.exp(1j * (direction(a) - direction(b))))) < 0.03


@pytest.mark.parametrize("name", gd.TOY_NAMES)
def test_toy_dataset_contract(name):
    data = gd.load(name, n=2_000, seed=3)
    again = gd.load(**data.source)
    assert torch.equal(data.storage, again.storage)
    assert data.source == {"name": name, "seed": 3, "n": 2_000}
    assert not torch.equal(data.storage, gd.load(name, n=2_000, seed=4).storage)
    assert data.storage.shape == (2_000, 2) and data.storage.dtype == torch.float32
    assert data.spec.kind == "vector" and data.spec.levels is None
    lo, hi = data.spec.value_range
    assert (data.storage >= lo).all() and (data.storage <= hi).all()
    assert [len(data.split(s)) for s in ("train", "val", "test")] == [1600, 200, 200]
    assert (data.true_log_prob is not None) == (name in ("8gaussians", "grid25", "ring8", "checkerboard"))
    if data.spec.num_classes is not None:
        assert data.labels.max().item() == data.spec.num_classes - 1
    # a prefix of a draw is a fair sample: the first points are not all of one class
    if data.labels is not None:
        assert len(data.labels[:50].unique()) > 1
    x = gd.sample_toy(name, 7, gen(0))
    assert x.shape == (7, 2) and torch.equal(x, gd.sample_toy(name, 7, gen(0)))


def test_unknown_toy_and_bad_sizes():
    with pytest.raises(DataError, match="known: moons"):
        gd.sample_toy("spirals", 3, gen())
    with pytest.raises(DataError, match="too small"):
        gd.load("moons", n=3)
    with pytest.raises(DataError, match="no option 'resize'; its options are n"):
        gd.load("moons", resize=3)
    assert toy.has_density("checkerboard") and not toy.has_density("moons")
