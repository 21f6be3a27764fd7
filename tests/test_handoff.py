"""Hand-off between two diffusion models (`genlab.apps.handoff`, `genlab sample RUN --then RUN_B --at A`):
with the exact denoisers of a 2-D Gaussian under two different schedules, the first model's network
sees only times above the switch, the second's only below it, and the samples follow the data
distribution (a wrong time match or scale would not); then through the CLI on two tiny runs."""

from __future__ import annotations

import math

import pytest
import torch

import genlab
from genlab.apps.editing import strength_to_time
from genlab.apps.handoff import hand_off
from genlab.cli.main import main
from genlab.data import DataSpec
from genlab.errors import ConfigError
from genlab.models.diffusion import GaussianMixtureData
from genlab.models.diffusion.analytic import ExactDenoiserNetwork
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel

VECTOR = DataSpec("vec2", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
COVARIANCE = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)

pytestmark = pytest.mark.usefixtures("one_thread")


class _Recording(ExactDenoiserNetwork):
    def __init__(self, model, data) -> None:
        super().__init__(model, data)
        self.levels: list[float] = []

    def forward(self, x, noise_level, y=None):
        self.levels.append(float(noise_level.flatten()[0]))
        return super().forward(x, noise_level, y)


def _exact(**fields) -> DiffusionModel:
    model = DiffusionModel(DiffusionConfig(hidden=(8,), **fields), VECTOR).double()
    model.initialized_from_data.fill_(1)  # data space = normalised space
    model.net = _Recording(model, GaussianMixtureData(torch.ones(1, dtype=torch.float64), MEAN[None], covariances=COVARIANCE[None]))
    return model


@pytest.mark.parametrize("first, second", [({"schedule": "linear", "sampler": "ddim"}, {"schedule": "edm", "sampler": "heun"}),
                                           ({"schedule": "edm", "sampler": "heun"}, {"schedule": "cosine", "sampler": "ddim"})])
def test_hand_off_between_schedules_samples_the_data_and_splits_the_work_at_the_switch(first, second):
    a, b = _exact(sample_steps=30, **first), _exact(sample_steps=30, **second)
    x = hand_off(a, b, 4000, at=0.4, generator=torch.Generator().manual_seed(0)).double()
    torch.testing.assert_close(x.mean(0), MEAN, atol=0.06, rtol=0)
    torch.testing.assert_close(torch.cov(x.T), COVARIANCE, atol=0.08, rtol=0)
    t1 = strength_to_time(a.schedule, 0.4)
    level = lambda model, t: float(model.schedule.noise_conditioning(torch.tensor([t], dtype=torch.float64)))  # noqa: E731
    # the first network only above the switch, the second only at or below the matching time
    assert a.net.levels and min(a.net.levels) >= level(a, t1) - 1e-4 * (1 + abs(level(a, t1)))
    lam = a.schedule.log_snr(torch.tensor([t1], dtype=torch.float64))
    t2 = float(b.schedule.time_at_log_snr(lam))
    if b.schedule.discrete_steps:
        t2 = round(t2 * b.schedule.discrete_steps) / b.schedule.discrete_steps
    assert b.net.levels and max(b.net.levels) <= level(b, t2) + 1e-4 * (1 + abs(level(b, t2)))


def test_hand_off_refuses_what_does_not_fit():
    a = _exact(schedule="linear", sampler="ddim")
    with pytest.raises(ConfigError, match=r"--at 1.0 must lie strictly between 0"):
        hand_off(a, _exact(schedule="edm"), 4, at=1.0)
    other = DiffusionModel(DiffusionConfig(hidden=(8,)), DataSpec("vec3", kind="vector", shape=(3,), value_range=(-math.inf, math.inf)))
    with pytest.raises(ConfigError, match=r"the two runs model different data: shape \(2,\)"):
        hand_off(a, other, 4, at=0.5)
    shifted = _exact(schedule="edm")
    shifted.data_shift.fill_(3.0)
    with pytest.raises(ConfigError, match="standardise the data differently"):
        hand_off(a, shifted, 4, at=0.5)
    with pytest.raises(ConfigError, match="hand-off runs two diffusion models"):
        hand_off(a, genlab.create("vae", data=genlab.data.load("digits")), 4, at=0.5)


def test_cli_samples_with_a_hand_off(tmp_path, capsys):
    tiny = ["--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "2"]
    for name in ("ddpm", "flow-matching"):
        assert main(["train", name, "--data", "digits", "--set", "preset=tiny", "--out", str(tmp_path / name), *tiny]) == 0
    capsys.readouterr()
    out = tmp_path / "handed.npy"
    assert main(["sample", str(tmp_path / "ddpm"), "--then", str(tmp_path / "flow-matching"), "--at", "0.5", "-n", "6",
                 "--steps", "4", "--out", str(out)]) == 0
    assert "then" in capsys.readouterr().out
    import numpy as np

    samples = np.load(out)
    assert samples.shape == (6, 1, 8, 8) and 0 <= samples.min() and samples.max() <= 1
    assert main(["sample", str(tmp_path / "ddpm"), "--at", "0.5", "--out", str(out)]) == 2
    assert "--at needs --then" in capsys.readouterr().err
