"""Inpainting and SDEdit regeneration (`genlab.apps.editing`), checked with the exact denoiser of a 2-D
Gaussian in place of the network, so that what they generate can be compared with the exact conditional
p(x_2 | x_1); then on a tiny trained DDPM on digits, and through `genlab inpaint`."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.apps.editing import inpaint, read_image, read_mask, regenerate, seam_energy, soft_keep_mask, step_to_strength, strength_to_time
from genlab.cli.main import main
from genlab.data import DataSpec
from genlab.errors import ConfigError, DataError
from genlab.models.diffusion import DiscreteSchedule, EDMSchedule, GaussianMixtureData, VPSDE
from genlab.models.diffusion.analytic import ExactDenoiserNetwork
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel

VECTOR = DataSpec("vec2", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
MEAN = torch.tensor([0.5, -1.0], dtype=torch.float64)
COVARIANCE = torch.tensor([[1.0, 0.8], [0.8, 1.0]], dtype=torch.float64)
KNOWN_X1 = 1.5
# p(x_2 | x_1) = N(mu_2 + C21 / C11 (x_1 - mu_1), C22 - C21^2 / C11) = N(-0.2, 0.36) at x_1 = 1.5
CONDITIONAL_MEAN = float(MEAN[1] + COVARIANCE[1, 0] / COVARIANCE[0, 0] * (KNOWN_X1 - MEAN[0]))
CONDITIONAL_VARIANCE = float(COVARIANCE[1, 1] - COVARIANCE[1, 0] ** 2 / COVARIANCE[0, 0])
KEEP_X1 = torch.tensor([[1.0, 0.0]])  # (1, D): x_1 known, x_2 generated, for every example


pytestmark = pytest.mark.usefixtures("one_thread")


def _gaussian() -> GaussianMixtureData:
    return GaussianMixtureData(torch.ones(1, dtype=torch.float64), MEAN[None], covariances=COVARIANCE[None])


def _exact_model(**fields) -> DiffusionModel:
    model = DiffusionModel(DiffusionConfig(hidden=(8,), **fields), VECTOR).double()
    model.initialized_from_data.fill_(1)  # data space = normalised space (shift 0, scale 1)
    model.net = ExactDenoiserNetwork(model, _gaussian())
    return model


def _inpainted_x2(model: DiffusionModel, n: int, seed: int = 0, **options) -> torch.Tensor:
    """x_2 (n,) generated given x_1 = KNOWN_X1, after checking that x_1 comes back exactly."""
    x = torch.tensor([[KNOWN_X1, 0.0]], dtype=torch.float64).expand(n, 2)  # the given x_2 = 0 is ignored
    y = inpaint(model, x, KEEP_X1, generator=torch.Generator().manual_seed(seed), **options)
    assert torch.equal(y[:, 0], x[:, 0])
    return y[:, 1]


def _kl_from_exact_conditional(x2: torch.Tensor) -> float:
    """KL(N(mean, var of x2) || p(x_2 | x_1)): one number for the error in mean and variance."""
    ratio = float(x2.var()) / CONDITIONAL_VARIANCE
    return 0.5 * (ratio - 1 - math.log(ratio) + (float(x2.mean()) - CONDITIONAL_MEAN) ** 2 / CONDITIONAL_VARIANCE)


# -- inpainting against the exact conditional ---------------------------------------------------------
def test_replacement_inpainting_of_a_gaussian_goes_part_of_the_way_to_the_exact_conditional():
    # The replacement method is approximate. Measured with the exact denoiser, ancestral DDPM sampling:
    # 20,000 samples at 100, 200 and 1,000 steps give a mean of -0.51, -0.50, -0.50 (exact -0.20, marginal
    # -1.0) and a variance of 0.46, 0.46, 0.49 (exact 0.36): more steps do not shrink the error, the bias of
    # the method (x_2 follows a noised x_1 that carries little of x_1 at large t). Here, 4,000 samples and 50
    # steps, over 3 seeds: mean error -0.32 +- 0.01 (0.60 of the way from the marginal to the conditional
    # mean), variance ratio 1.18-1.21. The bounds below leave 5 standard errors (0.01 each) of room.
    model = _exact_model(schedule="linear", sampler="ancestral")
    x2 = _inpainted_x2(model, 4000, steps=50)
    share_of_the_way = (float(x2.mean()) - float(MEAN[1])) / (CONDITIONAL_MEAN - float(MEAN[1]))
    assert 0.5 < share_of_the_way < 0.7, share_of_the_way
    assert 1.05 * CONDITIONAL_VARIANCE < float(x2.var()) < 1.35 * CONDITIONAL_VARIANCE < float(COVARIANCE[1, 1]), x2.var()
    assert model.net.calls == 50


def test_inpainting_with_langevin_correctors_matches_the_exact_conditional():
    # The predictor-corrector sampler (Song et al. 2021 inpaint with it) lets x_2 settle given the noised x_1 at
    # every level. Measured, 4,000 samples, VE, 200 steps, 3 seeds: mean error -0.009, +0.006, -0.009
    # (standard error 0.0095), variance ratio 0.97-1.06 (standard error 0.022); at 100 steps the mean error
    # grows to -0.02..-0.05 (discretisation).
    model = _exact_model(schedule="ve", sampler="pc", sample_steps=200)
    x2 = _inpainted_x2(model, 4000)
    standard_error = math.sqrt(CONDITIONAL_VARIANCE / 4000)
    assert abs(float(x2.mean()) - CONDITIONAL_MEAN) < 4 * standard_error, x2.mean()
    assert abs(float(x2.var()) / CONDITIONAL_VARIANCE - 1) < 0.12, x2.var()


def test_repaint_resampling_brings_inpainting_closer_to_the_exact_conditional():
    # Measured, 4,000 samples, 50 ancestral steps, 3 seeds: KL to the exact conditional 0.145-0.156 without
    # resampling, 0.022-0.026 with resample=5 (mean error -0.07, variance ratio 0.77: resampling with jump
    # length 1 overshoots the variance a little; at resample=20, mean error -0.02 and ratio 0.72).
    model = _exact_model(schedule="linear", sampler="ancestral")
    plain = _kl_from_exact_conditional(_inpainted_x2(model, 2000, steps=50))
    model.net.calls = 0
    resampled = _kl_from_exact_conditional(_inpainted_x2(model, 2000, steps=50, resample=5))
    assert model.net.calls == 5 * 50
    assert resampled < plain / 3, (plain, resampled)


@pytest.mark.parametrize("schedule, sampler", [("cosine", "ddim"), ("vp", "euler_maruyama"), ("edm", "heun"), ("ve", "ode")])
def test_inpainting_keeps_the_known_values_exactly_for_any_sampler(schedule, sampler):
    model = _exact_model(schedule=schedule, sampler=sampler, sample_steps=4)
    x = _gaussian().sample(16, generator=torch.Generator().manual_seed(1))
    keep = torch.rand(16, 2, generator=torch.Generator().manual_seed(2)) < 0.5  # a mask per example
    y = inpaint(model, x, keep, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[keep], x[keep]) and not torch.equal(y[~keep], x[~keep])
    assert torch.isfinite(y).all()


# -- SDEdit ----------------------------------------------------------------------------------------
def test_regenerate_at_strength_0_returns_the_input_without_calling_the_network():
    model = _exact_model(schedule="linear", sampler="ddim")
    x = _gaussian().sample(8, generator=torch.Generator().manual_seed(1))
    assert torch.equal(regenerate(model, x, strength=0.0), x)
    assert torch.equal(regenerate(model, x, strength=0, mask=KEEP_X1), x)
    assert model.net.calls == 0


def test_regenerate_at_strength_1_is_a_fresh_sample_of_the_data_distribution():
    # Measured, 4,000 samples, EDM, 40 Heun steps, 3 seeds: mean within 2 standard errors, covariance
    # entries within 0.04 (their standard error is about 0.02).
    model = _exact_model(schedule="edm", sampler="heun", sample_steps=40)
    far_away = torch.full((4000, 2), 4.0, dtype=torch.float64)  # the input must not matter
    x = regenerate(model, far_away, strength=1.0, generator=torch.Generator().manual_seed(0))
    assert torch.equal(x, model.sample(4000, generator=torch.Generator().manual_seed(0)))
    standard_error = (COVARIANCE.diagonal() / 4000).sqrt()
    assert torch.all((x.mean(0) - MEAN).abs() < 4 * standard_error), x.mean(0)
    torch.testing.assert_close(torch.cov(x.T), COVARIANCE, atol=0.08, rtol=0.0)


@pytest.mark.parametrize(
    "fields",
    [
        dict(schedule="linear", sampler="ddim", sample_steps=50),
        dict(schedule="vp", sampler="euler_maruyama", sample_steps=100),
        dict(schedule="edm", sampler="heun", sample_steps=18),
    ],
    ids=["ddpm-ddim", "vp-euler_maruyama", "edm-heun"],
)
def test_regenerate_changes_more_as_the_strength_grows(fields):
    # Mean distance |y - x| over 1,000 data points, measured at strengths 0.02, 0.1, 0.25, 0.5 and 1:
    # ddpm-ddim 0.09, 0.38, 0.81, 1.34, 1.62; vp-euler_maruyama 0.15, 0.56, 1.11, 1.59, 1.68;
    # edm-heun 0.004, 0.02, 0.21, 1.29, 1.69 (1.6-1.7 is the distance between independent draws).
    model = _exact_model(**fields)
    x = _gaussian().sample(1000, generator=torch.Generator().manual_seed(1))
    distances = [
        float((regenerate(model, x, strength=s, generator=torch.Generator().manual_seed(0)) - x).norm(dim=1).mean())
        for s in (0.02, 0.1, 0.25, 0.5, 1.0)
    ]
    assert all(a < b for a, b in zip(distances, distances[1:4])), distances
    assert distances[0] < 0.1 * distances[-1], distances


def test_regenerate_with_a_mask_changes_only_the_masked_out_region():
    model = _exact_model(schedule="linear", sampler="ancestral", sample_steps=20)
    x = _gaussian().sample(64, generator=torch.Generator().manual_seed(1))
    y = regenerate(model, x, strength=0.5, mask=KEEP_X1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(y[:, 0], x[:, 0]) and (y[:, 1] != x[:, 1]).all()
    # at strength 1 the masked regeneration is inpainting, draw for draw
    full = regenerate(model, x, strength=1.0, mask=KEEP_X1, generator=torch.Generator().manual_seed(0))
    assert torch.equal(full, inpaint(model, x, KEEP_X1, generator=torch.Generator().manual_seed(0)))


def test_strength_maps_to_a_time_of_each_schedule():
    assert strength_to_time(DiscreteSchedule.linear(steps=1000), 0.3004) == 0.3  # on the grid
    assert strength_to_time(DiscreteSchedule.linear(steps=10), 0.01) == 0.1  # at least one step
    assert strength_to_time(VPSDE(), 0.5) == 0.5
    edm = EDMSchedule()
    assert strength_to_time(edm, 1.0) == 80.0
    assert edm.sigma_min < strength_to_time(edm, 0.01) < strength_to_time(edm, 0.5) < 5.0  # along EDM's ramp
    with pytest.raises(ConfigError, match="t_min"):
        strength_to_time(VPSDE(), 0.0005)


def test_regenerate_takes_the_strengths_share_of_the_steps():
    model = _exact_model(schedule="linear", sampler="ddim", sample_steps=20)
    x = _gaussian().sample(4, generator=torch.Generator().manual_seed(1))
    regenerate(model, x, strength=0.3, generator=torch.Generator().manual_seed(0))
    assert model.net.calls == 6  # ceil(0.3 * 20)
    model.net.calls = 0
    regenerate(model, x, strength=0.3, steps=1000, generator=torch.Generator().manual_seed(0))
    assert model.net.calls == 300  # ceil(0.3 * 1000) = the grid steps below t = 0.3


# -- errors that say what to do ---------------------------------------------------------------------
@pytest.mark.parametrize(
    "call, error, message",
    [
        (lambda m, x: inpaint(m, x, torch.tensor([[1.0, 0.5]])), DataError, "only 0 .* and 1"),
        (lambda m, x: inpaint(m, x, torch.ones(3)), DataError, r"does not broadcast to x's shape \(4, 2\)"),
        (lambda m, x: inpaint(m, x[0], KEEP_X1), DataError, r"takes \(B, 2\); add the batch dimension"),
        (lambda m, x: inpaint(m, torch.ones(4, 3), KEEP_X1), DataError, r"takes \(B, 2\)"),
        (lambda m, x: inpaint(m, x, KEEP_X1, resample=0), ConfigError, "resample"),
        (lambda m, x: inpaint(m, x, KEEP_X1, resample=2, sampler="heun"), ConfigError, "'ancestral'"),
        (lambda m, x: regenerate(m, x, strength=1.5), ConfigError, r"strength=1.5 must lie in \[0, 1\]"),
        (lambda m, x: regenerate(m, x, strength=-0.1), ConfigError, "must lie in"),
        (lambda m, x: regenerate(m, x, strength=float("nan")), ConfigError, "must lie in"),
        (lambda m, x: regenerate(m, x, strength=0.5, mask=torch.full((4, 2), 2.0)), DataError, "only 0"),
    ],
)
def test_bad_inputs_raise_errors_that_say_what_to_do(call, error, message):
    model = _exact_model(schedule="linear", sampler="ddim", sample_steps=2)
    x = torch.zeros(4, 2, dtype=torch.float64)
    with pytest.raises(error, match=message):
        call(model, x)
    assert model.net.calls == 0


def test_editing_needs_a_diffusion_model_and_data_in_its_range():
    digits = genlab.data.load("digits")
    vae = genlab.create("vae", data=digits, latent_dim=2)
    with pytest.raises(ConfigError, match="needs a diffusion model"):
        inpaint(vae, torch.zeros(1, 1, 8, 8), torch.ones(1, 1, 8, 8))
    with pytest.raises(ConfigError, match="needs a diffusion model"):
        regenerate(vae, torch.zeros(1, 1, 8, 8), strength=0.5)
    model = genlab.create("ddpm", data=digits, preset="tiny", sample_steps=2)
    with pytest.raises(DataError, match=r"outside the data's range \[0, 1\].*/ 255"):
        regenerate(model, torch.full((1, 1, 8, 8), 255.0), strength=0.5)


# -- a trained DDPM on digits, and the command line ---------------------------------------------------
@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    data = genlab.data.load("digits")
    model = genlab.create("ddpm", data=data, preset="tiny", sample_steps=3)
    out = tmp_path_factory.mktemp("runs") / "run"
    genlab.fit(model, data, max_steps=2, batch_size=8, out=out, progress=False, sample_every=0, tensorboard=False)
    return out


def test_a_trained_ddpm_inpaints_and_regenerates_digits(digits_run):
    model = genlab.load(digits_run)
    x = genlab.data.load("digits").test.tensors()[0][:5]  # (5, 1, 8, 8), 17 levels in [0, 1]
    keep = torch.ones(1, 1, 8, 8)
    keep[..., 4:, :] = 0  # generate the lower half
    for y in (
        inpaint(model, x, keep, generator=torch.Generator().manual_seed(0)),
        regenerate(model, x, strength=0.6, mask=keep, generator=torch.Generator().manual_seed(0)),
        regenerate(model, x, strength=0.6, generator=torch.Generator().manual_seed(0)),
    ):
        assert y.shape == (5, 1, 8, 8) and y.dtype == x.dtype
        assert 0 <= y.min() and y.max() <= 1
        torch.testing.assert_close(y * 16, (y * 16).round(), atol=1e-5, rtol=0)  # on the data's 17 levels
    inpainted = inpaint(model, x, keep, generator=torch.Generator().manual_seed(0))
    assert torch.equal(inpainted[..., :4, :], x[..., :4, :])
    assert torch.equal(inpainted, inpaint(model, x, keep, generator=torch.Generator().manual_seed(0)))  # same seed


def _write_png(path, pixels: np.ndarray) -> None:
    Image.fromarray(pixels.astype(np.uint8)).save(path)


def test_image_files_are_read_into_the_models_shape_and_range(tmp_path):
    spec = genlab.data.load("digits").spec
    picture = np.zeros((16, 24), dtype=np.uint8)
    picture[:, 12:] = 255  # right half white
    _write_png(tmp_path / "half.png", picture)
    x = read_image(tmp_path / "half.png", spec)
    assert x.shape == (1, 1, 8, 8)
    assert torch.equal(x[..., :3], torch.zeros(1, 1, 8, 3)) and torch.equal(x[..., 5:], torch.ones(1, 1, 8, 3))
    keep = read_mask(tmp_path / "half.png", spec)  # white = regenerate
    assert keep.shape == (1, 1, 8, 8) and keep.dtype == torch.bool
    assert keep[..., :4].all() and not keep[..., 4:].any()
    rgb = np.stack([picture] * 3, axis=-1)
    _write_png(tmp_path / "rgb.png", rgb)
    torch.testing.assert_close(read_image(tmp_path / "rgb.png", spec), x)  # RGB to the model's 1 channel
    _write_png(tmp_path / "black.png", np.zeros((8, 8)))
    with pytest.raises(DataError, match="no white pixel"):
        read_mask(tmp_path / "black.png", spec)
    with pytest.raises(DataError, match="image files need a model of grayscale or RGB images"):
        read_image(tmp_path / "half.png", VECTOR)


def test_cli_inpaint_writes_a_grid_and_says_where(digits_run, tmp_path, capsys):
    picture = np.tile(np.linspace(0, 255, 32), (32, 1))
    _write_png(tmp_path / "digit.png", picture)
    mask = np.zeros((32, 32))
    mask[8:24, 8:24] = 255
    _write_png(tmp_path / "mask.png", mask)
    common = ["inpaint", str(digits_run), "--image", str(tmp_path / "digit.png"), "-n", "3", "--steps", "3"]
    assert main([*common, "--mask", str(tmp_path / "mask.png"), "--out", str(tmp_path / "inpaint.png")]) == 0
    assert str(tmp_path / "inpaint.png") in capsys.readouterr().out
    grid = Image.open(tmp_path / "inpaint.png")
    assert grid.mode == "L" and grid.size[0] > grid.size[1]  # one row: input | mask | 3 results
    assert main([*common, "--mask", str(tmp_path / "mask.png"), "--strength", "0.5", "--out", str(tmp_path / "masked.png")]) == 0
    assert main([*common, "--strength", "0.3"]) == 0  # SDEdit of the whole image, written into the run
    assert (digits_run / "inpaint.png").is_file()


def test_cli_inpaint_reports_a_bad_mask_path_in_one_line(digits_run, tmp_path, capsys):
    _write_png(tmp_path / "digit.png", np.zeros((8, 8)))
    code = main(["inpaint", str(digits_run), "--image", str(tmp_path / "digit.png"), "--mask", str(tmp_path / "missing.png")])
    err = capsys.readouterr().err
    assert code == 2
    assert err.count("\n") == 1 and "missing.png" in err and "does not exist" in err


def test_soft_mask_is_one_far_away_zero_on_the_region_and_smooth_between():
    spec = DataSpec("img", kind="image", shape=(1, 16, 16), value_range=(0.0, 1.0))
    keep = torch.ones(1, 1, 16, 16, dtype=torch.bool)
    keep[..., 6:10, 6:10] = False
    soft = soft_keep_mask(keep, 1.0, spec)
    assert soft.shape == keep.shape and float(soft[~keep].max()) == 0.0  # the region is regenerated whole
    assert float(soft[..., 0, 0]) == 1.0 and float(soft[..., 6, 4]) > 0.9  # 2 px out: almost the input
    assert 0.0 < float(soft[..., 6, 5]) < 1.0  # the border's neighbour: blended
    row = soft[0, 0, 8, :6]  # moving away from the region, the weight of the input only grows
    assert bool((row[:-1] >= row[1:]).all())
    assert torch.equal(soft_keep_mask(keep, 0.0, spec), keep.float())
    with pytest.raises(ConfigError, match="mask_blur softens an image mask's edge"):
        soft_keep_mask(torch.ones(1, 2, dtype=torch.bool), 1.0, VECTOR)


def test_seam_energy_of_a_step_and_of_the_same_step_spread():
    keep = torch.ones(1, 1, 12, 12, dtype=torch.bool)
    keep[..., :, 6:] = False
    step = torch.zeros(1, 1, 12, 12)
    step[..., 6:] = 1.0
    ramp = torch.zeros(1, 1, 12, 12)
    ramp[..., 4:8] = torch.tensor([0.25, 0.5, 0.75, 1.0])
    ramp[..., 8:] = 1.0
    band = 2 * 3  # columns 3..8 are within 3 px of the border (between columns 5 and 6); the last row and column are dropped
    torch.testing.assert_close(seam_energy(step, keep), torch.tensor([1.0 / band]))  # one jump of 1 per row
    torch.testing.assert_close(seam_energy(ramp, keep), torch.tensor([4 * 0.25**2 / band]))  # d^2 / k with k = 4
    assert float(seam_energy(torch.full((1, 1, 12, 12), 0.3), keep)) == 0.0


def test_a_blurred_mask_keeps_far_pixels_and_from_step_starts_at_the_grid_step(digits_run, tmp_path, capsys):
    model = genlab.load(digits_run)
    x = genlab.data.load("digits").tensors()[0][:4]
    keep = torch.ones(1, 1, 8, 8, dtype=torch.bool)
    keep[..., 5:7, 5:7] = False
    soft = soft_keep_mask(keep, 0.7, model.spec)
    y = inpaint(model, x, keep, mask_blur=0.7, generator=torch.Generator().manual_seed(0))
    far = (soft == 1).expand_as(x)
    assert far.any() and torch.equal(y[far], x[far])
    edge = ((soft > 0) & (soft < 1)).expand_as(x)
    assert edge.any() and not torch.equal(y[edge], x[edge])  # blended with generated values
    assert step_to_strength(model, 100) == 100 / model.schedule.discrete_steps
    with pytest.raises(ConfigError, match=r"--from-step 0 must be a step in 1\.\."):
        step_to_strength(model, 0)
    _write_png(tmp_path / "digit.png", np.tile(np.linspace(0, 255, 8), (8, 1)))
    mask = np.zeros((8, 8))
    mask[2:6, 2:6] = 255
    _write_png(tmp_path / "mask.png", mask)
    common = ["inpaint", str(digits_run), "--image", str(tmp_path / "digit.png"), "--mask", str(tmp_path / "mask.png"),
              "-n", "2", "--steps", "3", "--out", str(tmp_path / "o.png")]
    assert main([*common, "--from-step", "30", "--mask-blur", "1"]) == 0
    capsys.readouterr()
    assert main([*common, "--from-step", "30", "--strength", "0.2"]) == 2
    assert "give --strength or --from-step, not both" in capsys.readouterr().err
