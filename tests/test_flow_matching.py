"""Flow matching / rectified flow (Lipman et al. 2023; Liu et al. 2023) against its mathematics:
the straight path, the velocity target, the ODE whose drift is the velocity, the loss's
irreducible minimum, and sampling and likelihood driven by the exact velocity of a Gaussian
mixture."""

from __future__ import annotations

import math

import pytest
import torch

import genlab
from genlab.data import Batch, DataSpec
from genlab.metrics.report import measure_metrics
from genlab.models.diffusion import GaussianMixtureData
from genlab.models.diffusion.analytic import ExactDenoiserNetwork
from genlab.models.diffusion.model import FlowMatchingConfig, FlowMatchingModel
from genlab.models.diffusion.objectives import get_prediction
from genlab.models.diffusion.samplers import _ode_drift, get_sampler
from genlab.models.diffusion.schedules import RectifiedFlowSchedule

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
SPEC = DataSpec("vec2", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))


def _mixture() -> GaussianMixtureData:
    means = torch.tensor([[-1.5, 0.5], [1.0, -1.0]], dtype=F64)
    return GaussianMixtureData(torch.tensor([0.4, 0.6], dtype=F64), means, stds=torch.tensor([0.3, 0.5], dtype=F64))


def _exact(mixture: GaussianMixtureData, **fields) -> FlowMatchingModel:
    """flow-matching whose network is the exact velocity E[eps - x0 | x_t] of `mixture` (normalised space)."""
    model = FlowMatchingModel(FlowMatchingConfig(hidden=(8,), **fields), SPEC).double()
    model.initialized_from_data.fill_(1)  # data_shift 0, data_scale 1: the mixture is the normalised data
    model.net = ExactDenoiserNetwork(model, mixture)
    return model.eval()


def test_the_path_is_straight_from_data_to_noise():
    schedule = RectifiedFlowSchedule()
    t = torch.tensor([0.001, 0.2, 0.5, 0.9, 0.999], dtype=F64)
    x0, eps = torch.randn(5, 3, dtype=F64), torch.randn(5, 3, dtype=F64)
    torch.testing.assert_close(schedule.q_sample(x0, t, eps), (1 - t)[:, None] * x0 + t[:, None] * eps)
    # f = d log alpha / dt and g^2 = d sigma^2 / dt - 2 f sigma^2, by autograd
    tt = t.clone().requires_grad_(True)
    (d_log_alpha,) = torch.autograd.grad(schedule.log_alpha(tt).sum(), tt)
    (d_sigma2,) = torch.autograd.grad(schedule.sigma(tt).pow(2).sum(), tt)
    torch.testing.assert_close(schedule.drift(t), d_log_alpha)
    torch.testing.assert_close(schedule.diffusion_squared(t), d_sigma2 - 2 * schedule.drift(t) * schedule.sigma(t) ** 2)


def test_the_velocity_prediction_inverts_and_is_the_ode_drift():
    schedule, velocity = RectifiedFlowSchedule(), get_prediction("velocity")
    t = torch.tensor([0.05, 0.3, 0.7, 0.95], dtype=F64)
    alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
    x0, eps = torch.randn(4, 2, dtype=F64), torch.randn(4, 2, dtype=F64)
    x_t = alpha * x0 + sigma * eps
    u = velocity.target(x0, eps, alpha, sigma)
    torch.testing.assert_close(u, eps - x0)
    eps_hat, x0_hat = velocity.to_eps_and_x0(u, x_t, alpha, sigma)
    torch.testing.assert_close((eps_hat, x0_hat), (eps, x0))
    # the probability-flow drift f x + g^2 eps_hat / (2 sigma) is the velocity itself, for any output
    out = torch.randn(4, 2, dtype=F64)
    eps_out, _ = velocity.to_eps_and_x0(out, x_t, alpha, sigma)
    torch.testing.assert_close(_ode_drift(schedule, x_t, t, eps_out), out)


def test_ddim_on_the_straight_path_is_eulers_method():
    schedule = RectifiedFlowSchedule()
    velocity = lambda x, t: torch.stack([x[:, 1], -x[:, 0]], 1) * (1 + t[:, None])  # noqa: E731  any smooth field
    eps_fn = lambda x, t: velocity(x, t) * (1 - t[:, None]) + x  # noqa: E731  eps_hat = x + alpha u (alpha + sigma = 1)
    times = torch.tensor([0.999, 0.7, 0.4, 0.1], dtype=F64)
    x = torch.randn(6, 2, dtype=F64, generator=torch.Generator().manual_seed(0))
    result = get_sampler("ddim")(eps_fn, schedule, x_start=x, times=times, denoise_final=False)
    euler = x
    for t, s in zip(times[:-1], times[1:]):
        euler = euler + (s - t) * velocity(euler, t.repeat(len(euler)))
    torch.testing.assert_close(result.x, euler)


def test_the_loss_at_the_exact_velocity_is_its_irreducible_minimum():
    # x0, eps ~ N(0, I): E[eps - x0 | x_t] = (2t - 1) x_t / ((1 - t)^2 + t^2), and the per-dimension
    # residual variance is 2 - (2t - 1)^2 / ((1 - t)^2 + t^2); the loss averages it over t ~ U(t_eps, t_max)
    standard = GaussianMixtureData(torch.ones(1, dtype=F64), torch.zeros(1, 2, dtype=F64), stds=torch.ones(1, dtype=F64))
    model = _exact(standard).train()
    x0 = standard.sample(200_000, torch.Generator().manual_seed(1))
    torch.manual_seed(2)
    loss = model.loss(Batch(x0))
    grid = torch.linspace(model.schedule.t_eps, model.schedule.t_max, 20_001, dtype=F64)
    residual = 2 - (2 * grid - 1) ** 2 / ((1 - grid) ** 2 + grid**2)
    expected = float(torch.trapezoid(residual, grid) / (grid[-1] - grid[0]))
    assert float(loss.total) == pytest.approx(expected, rel=0.01)  # the mean over dimensions of the MSE
    # any other field does worse
    model.net = _Scaled(model.net, 1.2)
    torch.manual_seed(2)
    assert float(model.loss(Batch(x0)).total) > float(loss.total) + 0.01


class _Scaled(torch.nn.Module):
    def __init__(self, net, factor):
        super().__init__()
        self.net, self.factor = net, factor

    def forward(self, x, noise_level, y=None):
        return self.factor * self.net(x, noise_level, y)


@pytest.mark.parametrize("sampler, steps", [("heun", 18), ("ddim", 100)])
def test_solvers_driven_by_the_exact_velocity_reproduce_the_mixture(sampler, steps):
    mixture = _mixture()
    model = _exact(mixture)
    x = model.sample(4000, generator=torch.Generator().manual_seed(0), sampler=sampler, steps=steps).double()
    stderr = mixture.covariance.diagonal().sqrt() / math.sqrt(len(x))
    assert ((x.mean(0) - mixture.mean).abs() < 4 * stderr + 0.02).all(), (x.mean(0), mixture.mean)
    torch.testing.assert_close(torch.cov(x.T), mixture.covariance, atol=0.08, rtol=0.05)
    # the mode weights: the nearer mean decides
    nearer_first = ((x - mixture.means[0]).norm(dim=1) < (x - mixture.means[1]).norm(dim=1)).double().mean()
    assert float(nearer_first) == pytest.approx(0.4, abs=0.03)


def test_the_ode_likelihood_of_the_exact_velocity_is_the_true_density():
    mixture = _mixture()
    model = _exact(mixture)
    x = mixture.sample(200, torch.Generator().manual_seed(3))
    metrics, _ = measure_metrics(model, x, seed=0, likelihood_n=200)
    assert metrics["nll_ode_nats"] == pytest.approx(float(-mixture.log_prob(x).mean()), abs=0.01)


def test_flow_matching_trains_through_the_engine_and_cli(tmp_path, capsys):
    from genlab.cli.main import main

    out = tmp_path / "fm"
    assert main(["train", "flow-matching", "--data", "moons", "--max-steps", "200", "--batch-size", "256",
                 "--no-progress", "--no-tensorboard", "--sample-every", "0", "--out", str(out)]) == 0  # fmt: skip
    rows = [r for r in genlab.train.read_metrics(out) if r["split"] == "train"]
    assert rows[-1]["loss"] < rows[0]["loss"]  # the velocity MSE falls
    model = genlab.load(out)
    assert model.config.schedule == "rectified" and model.config.prediction == "velocity"
    assert torch.isfinite(model.sample(100, generator=torch.Generator().manual_seed(0))).all()
