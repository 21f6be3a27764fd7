"""Mode coverage on the Gaussian-mixture toys: exact samples cover every mode with the high-quality
share that a 2D Gaussian gives within 3 standard deviations, 1 - exp(-9/2); samples of 5 modes
cover 5; and `genlab eval`'s sample metrics report both numbers for those toys only."""

import math

import pytest
import torch

from genlab.data import DataSpec, gaussian_mixture, sample_toy
from genlab.metrics.report import sample_metrics
from genlab.metrics.modes import default_min_samples, is_gaussian_mixture, mode_coverage, toy_mode_metrics

pytestmark = pytest.mark.usefixtures("one_thread")

# for an isotropic 2D Gaussian, ||x - mu||^2 / sigma^2 ~ chi^2_2, so P(||x - mu|| <= 3 sigma) = 1 - e^{-9/2}
WITHIN_3_STD = 1.0 - math.exp(-4.5)


@pytest.mark.parametrize("name, modes", [("grid25", 25), ("ring8", 8), ("8gaussians", 8)])
def test_exact_samples_cover_every_mode_with_the_chi2_share_of_high_quality(name, modes):
    x = sample_toy(name, 20_000, torch.Generator().manual_seed(0))
    result = mode_coverage(x, *gaussian_mixture(name))
    assert result.modes == modes
    # binomial standard error at n = 20,000: sqrt(0.011 * 0.989 / 20000) = 7e-4
    assert result.high_quality == pytest.approx(WITHIN_3_STD, abs=3e-3)
    assert int(result.counts.sum()) == round(result.high_quality * 20_000)


def test_samples_of_five_modes_cover_five():
    centers, std = gaussian_mixture("grid25")
    g = torch.Generator().manual_seed(1)
    chosen = torch.tensor([0, 6, 12, 18, 24])
    k = chosen[torch.randint(5, (2500,), generator=g)]
    x = centers[k] + std * torch.randn(2500, 2, generator=g, dtype=torch.float64)
    result = mode_coverage(x, centers, std)
    assert result.modes == 5
    assert set(torch.nonzero(result.counts).flatten().tolist()) == set(chosen.tolist())


def test_the_count_threshold_and_the_3_std_radius():
    centers = torch.tensor([[0.0, 0.0], [10.0, 0.0]])
    # PacGAN's 20 of 2,500, scaled
    assert default_min_samples(2500) == 20 and default_min_samples(1000) == 8 and default_min_samples(10) == 1
    # 7 samples at the first mode, 8 at the second: with n = 15 the threshold is 1, with min_samples=8 one mode
    x = torch.cat([torch.zeros(7, 2), torch.tensor([[10.0, 0.0]]).repeat(8, 1)])
    assert mode_coverage(x, centers, 1.0).modes == 2
    assert mode_coverage(x, centers, 1.0, min_samples=8).modes == 1
    # just inside and just outside 3 std
    edge = torch.tensor([[2.999, 0.0], [0.0, 3.001]])
    result = mode_coverage(edge, centers, 1.0, min_samples=1)
    assert result.high_quality == 0.5 and result.counts.tolist() == [1, 0]


def test_eval_reports_modes_for_the_mixture_toys_only():
    real = sample_toy("grid25", 1000, torch.Generator().manual_seed(0))
    spec = DataSpec("grid25", kind="vector", shape=(2,), value_range=(-4.5, 4.5))
    metrics = sample_metrics(real, sample_toy("grid25", 1000, torch.Generator().manual_seed(1)), spec, None, seed=0)
    assert metrics["modes"] == 25 and metrics["high_quality"] > 0.97
    assert metrics == {**metrics, **toy_mode_metrics(sample_toy("grid25", 1000, torch.Generator().manual_seed(1)), "grid25")}
    moons = DataSpec("moons", kind="vector", shape=(2,), value_range=(-4.0, 4.0))
    assert "modes" not in sample_metrics(real, real, moons, None, seed=0)
    assert is_gaussian_mixture("ring8") and not is_gaussian_mixture("checkerboard")
