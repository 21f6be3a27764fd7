"""Reverse KL against known answers: the energies of Rezende & Mohamed (2015) at points worked out by
hand, a flow fitted by reverse KL to a Gaussian known up to its normaliser (KL -> 0, moments match),
and forward vs reverse KL on a two-mode mixture (mode covering vs mode seeking)."""

import math

import pytest
import torch

import genlab
from genlab.errors import ConfigError
from genlab.models.flows.energy import (
    ENERGY_NAMES,
    GaussianMixture2D,
    energy,
    energy_spec,
    fit_forward_kl,
    fit_reverse_kl,
    grid_log_normalizer,
    plot_kl_comparison,
    sample_with_log_prob,
)

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64


def _grid(bound=4.0, n=201):
    axis = torch.linspace(-bound, bound, n, dtype=F64)
    yy, xx = torch.meshgrid(axis, axis, indexing="ij")
    return torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)


# -- the energies -------------------------------------------------------------------------------------
def test_energies_at_hand_computed_points():
    pts = torch.tensor([[2.0, 0.0], [0.0, 2.0], [1.0, 1.0], [1.0, -2.0], [-1.0, -1.0]], dtype=F64)
    # U1(2, 0): on the ring, at the right bump: 0 - ln(1 + e^{-(4/0.6)^2/2})
    assert energy("U1", pts[:1]).item() == pytest.approx(-math.log1p(math.exp(-0.5 * (4 / 0.6) ** 2)), abs=1e-12)
    # U1(0, 2): on the ring, between the bumps: -ln(2 e^{-(2/0.6)^2/2})
    assert energy("U1", pts[1:2]).item() == pytest.approx(0.5 * (2 / 0.6) ** 2 - math.log(2), abs=1e-12)
    # w1(1, .) = sin(pi / 2) = 1, so U2(1, 1) = 0, and w2(1, .) = 3 gives U3(1, -2) = -ln(e^{-(3/0.35)^2/2} + 1)
    assert energy("U2", pts[2:3]).item() == pytest.approx(0.0, abs=1e-12)
    assert energy("U3", pts[3:4]).item() == pytest.approx(-math.log1p(math.exp(-0.5 * (3 / 0.35) ** 2)), abs=1e-12)
    # w1(-1, .) = -1, w3(-1, .) = 3 sigmoid(-2 / 0.3): U4(-1, -1) = -ln(1 + e^{-(w3/0.35)^2/2})
    w3 = 3 / (1 + math.exp(2 / 0.3))
    assert energy("U4", pts[4:5]).item() == pytest.approx(-math.log1p(math.exp(-0.5 * (w3 / 0.35) ** 2)), abs=1e-12)


def test_energies_are_finite_and_have_the_papers_shapes():
    z = _grid()
    for name in ENERGY_NAMES:
        u = energy(name, z)
        assert u.shape == (len(z),) and torch.all(torch.isfinite(u)), name
        assert torch.isfinite(torch.tensor(grid_log_normalizer(lambda x: -energy(name, x)))), name
    # U1: symmetric in z1 and z2, two modes at (+-2, 0)
    u1 = energy("U1", z)
    mirrored = energy("U1", z * torch.tensor([-1.0, 1.0], dtype=F64))
    torch.testing.assert_close(u1, mirrored)
    torch.testing.assert_close(u1, energy("U1", z * torch.tensor([1.0, -1.0], dtype=F64)))
    right, left = z[:, 0] > 0, z[:, 0] < 0
    for half, sign in ((right, 1.0), (left, -1.0)):
        argmin = z[half][u1[half].argmin()]
        assert abs(argmin[0] - 2.0 * sign) < 0.1 and abs(argmin[1]) < 0.1, argmin
    # U2: zero exactly on the sine wave z2 = sin(pi z1 / 2) (the density's ridge), positive off it
    z1 = torch.linspace(-4, 4, 50, dtype=F64)
    ridge = torch.stack([z1, torch.sin(math.pi * z1 / 2)], 1)
    torch.testing.assert_close(energy("U2", ridge, wall=None), torch.zeros(50, dtype=F64))
    assert torch.all(energy("U2", ridge + torch.tensor([0.0, 0.3], dtype=F64), wall=None) > 0.25)
    # U3, U4: two ridges, the second split from the first by w2 (a bump at z1 = 1) / w3 (a step up at z1 = 1)
    for name, z1_split in (("U3", 1.0), ("U4", 3.0)):
        lower = torch.tensor([[z1_split, math.sin(math.pi * z1_split / 2) - 3.0]], dtype=F64)
        assert energy(name, lower, wall=None).item() < 0.01, name  # on the second ridge
    with pytest.raises(ConfigError, match="U1"):
        energy("U5", z)


def test_wall_makes_the_energies_integrable():
    far = torch.tensor([[10.0, math.sin(5 * math.pi)], [20.0, math.sin(10 * math.pi)]], dtype=F64)
    assert torch.all(energy("U2", far, wall=None) < 1e-20)  # the paper's U2 is flat along its ridge: no normaliser
    assert torch.all(energy("U2", far) > 1000)
    # the wall changes U1's normaliser by less than its mass beyond |z1| = 4 (tiny)
    with_wall = grid_log_normalizer(lambda x: -energy("U1", x))
    without = grid_log_normalizer(lambda x: -energy("U1", x, wall=None))
    assert abs(with_wall - without) < 1e-6


def test_grid_log_normalizer_of_a_gaussian():
    # log of the integral of exp(-|x|^2 / (2 s^2)) = log(2 pi s^2)
    s = 0.7
    assert grid_log_normalizer(lambda x: -0.5 * (x**2).sum(1) / s**2) == pytest.approx(math.log(2 * math.pi * s**2), abs=1e-6)


# -- reverse KL -------------------------------------------------------------------------------------------
def test_reverse_kl_to_a_gaussian_goes_to_zero_and_matches_moments():
    """p~(x) = exp(-(x - m)^T S^-1 (x - m) / 2), log Z = log(2 pi) + log det(S) / 2: an affine
    autoregressive flow can represent p exactly, so the fitted KL must approach 0 and the moments match.
    After 400 steps the KL is ~0.01 nats; for a Gaussian q that close the means differ by ~0.1 std at most."""
    mean = torch.tensor([1.0, -0.5], dtype=F64)
    cov = torch.tensor([[0.5, 0.4], [0.4, 0.5]], dtype=F64)
    precision = torch.linalg.inv(cov)

    def log_target(x):
        d = x - mean
        return -0.5 * ((d @ precision) * d).sum(1)

    log_z = math.log(2 * math.pi) + 0.5 * math.log(torch.linalg.det(cov).item())
    torch.manual_seed(0)
    flow = genlab.create("iaf", data=energy_spec(), transforms=2, hidden=(16,)).double()
    history = fit_reverse_kl(flow, log_target, steps=400, batch=256, generator=torch.Generator().manual_seed(0), lr=1e-2, log_normalizer=log_z)
    assert history[0] > 2.0  # N(0, I) starts far from p
    x, log_q = sample_with_log_prob(flow, 20_000, generator=torch.Generator().manual_seed(1))
    with torch.no_grad():
        kl = (log_q - log_target(x)).mean().item() + log_z
        # the sampling path's log q is the density the model reports
        torch.testing.assert_close(flow.log_prob(x), log_q, atol=1e-9, rtol=0)
    assert 0.0 <= kl < 0.03, kl
    x = x.detach()
    assert (x.mean(0) - mean).abs().max() < 0.05, x.mean(0)
    assert (torch.cov(x.T) - cov).abs().max() < 0.05, torch.cov(x.T)


def test_forward_kl_covers_modes_and_reverse_kl_seeks_one():
    """Two equal modes at (-1, 0) and (3, 0), std 0.5; a one-layer IAF is Gaussian in x1. Maximum
    likelihood (forward KL) must spread over both modes and the gap between them; reverse KL,
    started at N(0, I) on the first mode, stays on it (KL ~ log 2, the price of a missing mode)."""
    target = GaussianMixture2D(torch.tensor([[-1.0, 0.0], [3.0, 0.0]]), 0.5)
    fitted = {}
    for kind in ("forward", "reverse"):
        torch.manual_seed(0)
        flow = genlab.create("iaf", data=energy_spec(), transforms=1, hidden=(16,)).double()
        g = torch.Generator().manual_seed(0)
        if kind == "forward":
            fit_forward_kl(flow, target.sample, steps=300, batch=256, generator=g, lr=1e-2)
        else:
            history = fit_reverse_kl(flow, target.log_prob, steps=300, batch=256, generator=g, lr=1e-2)
        fitted[kind] = flow
    near = {}
    for kind, flow in fitted.items():
        x = flow.sample(20_000, generator=torch.Generator().manual_seed(5))
        near[kind] = ((x[:, None, :] - target.centers[None]).norm(dim=-1) < 1.5).double().mean(0)
        near[kind + " gap"] = ((x[:, 0] > 0.5) & (x[:, 0] < 1.5)).double().mean()  # p puts 0.3% there
    assert near["forward"].min() > 0.3 and near["forward gap"] > 0.1, near
    assert near["reverse"][0] > 0.95 and near["reverse"][1] < 0.01 and near["reverse gap"] < 0.01, near
    assert abs(sum(history[-20:]) / 20 - math.log(2)) < 0.05


def test_plot_kl_comparison_writes_a_png(tmp_path):
    target = GaussianMixture2D(torch.tensor([[-1.0, 0.0], [1.0, 0.0]]), 0.5)
    flow = genlab.create("maf", data=energy_spec(), transforms=1, hidden=(8,))
    path = plot_kl_comparison(target.log_prob, {"untrained": flow}, tmp_path / "kl.png", resolution=40)
    assert path.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
