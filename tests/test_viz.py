"""genlab.viz: grids place every pixel where it belongs, PNGs round-trip, densities are drawn from
the model's log_prob on the grid, curves split train from val, plot_samples dispatches by kind."""

import json
import math
import re

import numpy as np
import pytest
import torch
from PIL import Image

from genlab.data import DataSpec, Dataset
from genlab.viz import (
    curves_figure,
    density_figure,
    make_grid,
    pairwise_figure,
    plot_density_2d,
    plot_samples,
    plot_training_curves,
    plot_trajectory,
    save_image_grid,
    to_uint8_image,
    trajectory_figure,
)
from genlab.viz.density import GRID_BATCH
from genlab.viz.trajectory import snapshot_indices


def tile(grid, k, nrow, h, w, p):
    r, c = divmod(k, nrow)
    top, left = p + r * (h + p), p + c * (w + p)
    return grid[:, top : top + h, left : left + w]


def read_png(path):
    with Image.open(path) as im:
        im.load()
        return im.mode, np.asarray(im)


def gaussian_log_prob(mean, std):
    """log N(x; mean, diag(std^2)) for x (B, 2)."""
    mean, std = torch.tensor(mean), torch.tensor(std)

    def log_prob(x):
        z = (x - mean) / std
        return (-0.5 * z.pow(2) - torch.log(std) - 0.5 * math.log(2 * math.pi)).sum(1)

    return log_prob


class Recorder:
    """A log_prob that remembers the batch shapes it was called with."""

    def __init__(self, fn):
        self.fn, self.shapes = fn, []

    def __call__(self, x):
        self.shapes.append(tuple(x.shape))
        return self.fn(x)


# -- make_grid ---------------------------------------------------------------------------
def test_make_grid_places_each_image_in_its_tile_and_pads_the_rest():
    g = torch.Generator().manual_seed(0)
    n, c, h, w, p, nrow, pad_value = 7, 3, 4, 5, 2, 3, 0.25
    images = torch.rand(n, c, h, w, generator=g)
    grid = make_grid(images, nrow=nrow, padding=p, pad_value=pad_value)
    rows = math.ceil(n / nrow)
    assert grid.shape == (c, rows * (h + p) + p, nrow * (w + p) + p)
    covered = torch.zeros(grid.shape[1:], dtype=torch.bool)
    for k in range(rows * nrow):
        block = tile(grid, k, nrow, h, w, p)
        if k < n:
            assert torch.equal(block, images[k])
        else:  # the tiles after the last image of a short last row
            assert torch.all(block == pad_value)
        r, col = divmod(k, nrow)
        covered[p + r * (h + p) : p + r * (h + p) + h, p + col * (w + p) : p + col * (w + p) + w] = True
    assert torch.all(grid[:, ~covered] == pad_value)  # every padding pixel


def test_make_grid_default_layout_no_padding_and_value_range():
    images = torch.linspace(-2, 2, 10 * 1 * 2 * 3).reshape(10, 1, 2, 3)
    grid = make_grid(images, padding=0, value_range=(-1, 1))
    assert grid.shape == (1, 3 * 2, 4 * 3)  # nrow = ceil(sqrt(10)) = 4, three rows
    expected = ((images + 1) / 2).clamp(0, 1)
    for k in range(10):
        assert torch.allclose(tile(grid, k, 4, 2, 3, 0), expected[k])
    assert grid.min() == 0 and grid.max() == 1  # clamped outside the value range


def test_make_grid_non_finite_values_do_not_poison_the_picture():
    images = torch.full((2, 1, 2, 2), 0.5)
    images[0, 0, 0, 0], images[0, 0, 0, 1], images[1, 0, 1, 1] = float("nan"), float("inf"), -float("inf")
    grid = make_grid(images, nrow=2, padding=0)
    assert torch.isfinite(grid).all()
    assert grid[0, 0, 0] == 0 and grid[0, 0, 1] == 1 and grid[0, 1, 3] == 0


def test_to_uint8_image_layouts():
    gray = to_uint8_image(torch.tensor([[[0.0, 0.5, 1.0]]]))
    assert gray.dtype == np.uint8 and gray.shape == (1, 3) and gray.tolist() == [[0, 128, 255]]
    rgb = to_uint8_image(torch.rand(3, 2, 4))
    assert rgb.shape == (2, 4, 3)
    with pytest.raises(ValueError, match="C in 1, 3 or 4"):
        to_uint8_image(torch.rand(2, 2, 2))


# -- save_image_grid ---------------------------------------------------------------------
@pytest.mark.parametrize("channels, mode", [(1, "L"), (3, "RGB")])
def test_save_image_grid_round_trip(tmp_path, channels, mode):
    images = torch.rand(5, channels, 6, 7, generator=torch.Generator().manual_seed(1))
    path = save_image_grid(images, tmp_path / "new" / "dir" / "grid.png", nrow=2, upscale=3)
    got_mode, pixels = read_png(path)
    assert got_mode == mode
    big = images.repeat_interleave(3, 2).repeat_interleave(3, 3)  # nearest-neighbour upscaling
    expected = make_grid(big, nrow=2).numpy()
    expected = expected[0] if channels == 1 else expected.transpose(1, 2, 0)
    assert pixels.shape == expected.shape
    assert np.abs(pixels / 255.0 - expected).max() <= 1 / 255 + 1e-6
    assert [f.name for f in path.parent.iterdir()] == ["grid.png"]  # no temporary file left


def test_save_image_grid_upscales_small_digits_automatically(tmp_path):
    digits = torch.rand(16, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    _, pixels = read_png(save_image_grid(digits, tmp_path / "digits.png"))
    width = pixels.shape[1]
    assert 256 <= width < 256 + 4 * 8  # the smallest factor that reaches 256 px
    _, plain = read_png(save_image_grid(digits, tmp_path / "plain.png", upscale=1))
    assert plain.shape == (4 * 10 + 2, 4 * 10 + 2)
    with pytest.raises(ValueError, match="1 \\(grayscale\\) or 3 \\(RGB\\)"):
        save_image_grid(torch.rand(2, 2, 4, 4), tmp_path / "bad.png")


# -- plot_density_2d ---------------------------------------------------------------------
def test_density_plot_evaluates_log_prob_on_the_grid_in_few_batches(tmp_path):
    g = torch.Generator().manual_seed(3)
    data = torch.randn(300, 2, generator=g)
    samples = torch.randn(200, 2, generator=g)
    model = Recorder(gaussian_log_prob([0.0, 0.0], [1.0, 1.0]))
    truth = Recorder(gaussian_log_prob([0.0, 0.0], [1.0, 1.0]))
    res = 200
    path = plot_density_2d(samples, tmp_path / "d.png", log_prob=model, true_log_prob=truth, data=data, resolution=res, title="t")
    mode, pixels = read_png(path)
    assert mode == "RGBA" and pixels.shape[:2] == (400, 4 * 400)  # four panels of 400 x 400
    for rec in (model, truth):
        assert sum(s[0] for s in rec.shapes) == res**2
        assert len(rec.shapes) == math.ceil(res**2 / GRID_BATCH) and all(s[1] == 2 for s in rec.shapes)


def test_density_heat_map_is_exp_log_prob_with_x_across_and_y_up():
    log_prob = gaussian_log_prob([1.0, -2.0], [0.5, 2.0])  # asymmetric: a swap or flip shows
    bounds = ((-2.0, 4.0), (-10.0, 6.0))
    fig = density_figure(torch.zeros(10, 2), log_prob=log_prob, bounds=bounds, resolution=40)
    heat = fig.axes[1].images[0]
    xs, ys = torch.linspace(-2, 4, 40), torch.linspace(-10, 6, 40)
    yy, xx = torch.meshgrid(ys, xs, indexing="ij")
    expected = log_prob(torch.stack([xx.reshape(-1), yy.reshape(-1)], 1)).exp().reshape(40, 40)
    np.testing.assert_allclose(np.asarray(heat.get_array()), expected.numpy(), rtol=1e-5, atol=1e-9)
    assert heat.origin == "lower" and tuple(heat.get_extent()) == (-2.0, 4.0, -10.0, 6.0)
    mass = float(re.search(r"mass in view ~ ([0-9.e+-]+)", fig.axes[1].get_title()).group(1))
    assert abs(mass - 1.0) < 0.02  # the Gaussian's mass lies within 3 sigma of the view


def test_density_bounds_follow_the_data():
    data = torch.tensor([[0.0, 10.0], [1.0, 12.0]])
    fig = density_figure(torch.tensor([[100.0, 100.0]]), data=data)
    x_lo, x_hi = fig.axes[0].get_xlim()
    y_lo, y_hi = fig.axes[0].get_ylim()
    assert x_lo < 0 < 1 < x_hi < 1.5 and y_lo < 10 < 12 < y_hi < 13
    assert fig.axes[1].get_xlim() == (x_lo, x_hi)  # all panels share the view


def test_density_plot_survives_nan_samples(tmp_path):
    samples = torch.randn(50, 2, generator=torch.Generator().manual_seed(4))
    samples[:3, 0] = float("nan")
    samples[3, 1] = float("inf")
    fig = density_figure(samples, log_prob=lambda x: torch.full((x.shape[0],), float("nan")), resolution=20)
    assert "4 sample rows" in fig._suptitle.get_text()
    assert "no finite log_prob" in fig.axes[1].get_title()
    path = plot_density_2d(torch.full((5, 2), float("nan")), tmp_path / "nan.png", resolution=20)
    assert read_png(path)[1].shape[:2] == (400, 400)


# -- training curves ---------------------------------------------------------------------
def write_metrics(path):
    lines = []
    for step in range(0, 50):
        loss = 10.0 * 10 ** (-3 * step / 49)  # three decades: drawn on a log scale
        row = {"step": step, "loss": loss, "recon": loss - 0.01, "kl": 0.2 + 0.001 * step, "lr": 1e-3,
               "examples_per_s": 5000.0, "time": 0.1 * step, "note": "warmup", "split": "train"}
        lines.append(json.dumps(row))
        if step % 10 == 0:
            lines.append(json.dumps({"step": step, "loss": loss * 1.1, "recon": loss, "kl": 0.3, "split": "val"}))
    path.write_text("\n".join(lines) + '\n{"step": 50, "lo')  # a last line still being written
    return path


def test_training_curves_from_jsonl_with_train_and_val(tmp_path):
    metrics = write_metrics(tmp_path / "metrics.jsonl")
    fig = curves_figure(metrics)
    panels = {ax.get_title(): ax for ax in fig.axes if ax.get_visible()}
    assert list(panels) == ["loss", "recon", "kl", "lr", "examples_per_s"]  # no step, time or note
    loss = panels["loss"]
    assert [line.get_label() for line in loss.lines] == ["train", "val"]
    assert list(loss.lines[1].get_xdata()) == [0, 10, 20, 30, 40]
    np.testing.assert_allclose(loss.lines[1].get_ydata()[0], 11.0)
    assert loss.get_yscale() == "log" and panels["kl"].get_yscale() == "linear"
    assert len(panels["lr"].lines) == 1
    _, pixels = read_png(plot_training_curves(metrics, tmp_path / "curves.png"))
    assert pixels.shape[:2] == (2 * 300, 3 * 400)  # five panels, three a row


def test_training_curves_keys_and_empty_logs(tmp_path):
    rows = [{"step": 1, "loss": 2.0, "kl": 0.5}, {"step": 2, "loss": float("nan"), "kl": 0.4}]
    fig = curves_figure(rows, keys=["kl"])
    assert [ax.get_title() for ax in fig.axes] == ["kl"]
    assert list(curves_figure(rows).axes[0].lines[0].get_xdata()) == [1.0]  # the NaN loss is skipped
    with pytest.raises(ValueError, match="logged keys: \\['kl', 'loss'\\]"):
        curves_figure(rows, keys=["recon"])
    assert read_png(plot_training_curves([], tmp_path / "empty.png"))[1].shape[:2] == (300, 400)


# -- plot_samples ------------------------------------------------------------------------
def test_plot_samples_dispatches_by_kind(tmp_path):
    g = torch.Generator().manual_seed(5)
    digits = DataSpec("digits", "image", (1, 8, 8), levels=17)
    mode, pixels = read_png(plot_samples(torch.rand(16, 1, 8, 8, generator=g), digits, tmp_path / "a.png"))
    assert mode == "L" and pixels.shape[1] >= 256
    faces = DataSpec("faces", "image", (3, 4, 4), value_range=(-1.0, 1.0))
    samples = torch.rand(4, 3, 4, 4, generator=g) * 2 - 1
    mode, pixels = read_png(plot_samples(samples, faces, tmp_path / "b.png", upscale=1, nrow=4))
    expected = to_uint8_image(make_grid(samples, nrow=4, value_range=(-1, 1)))
    assert mode == "RGB" and np.abs(pixels.astype(int) - expected).max() <= 1

    moons = DataSpec("moons", "vector", (2,))
    truth = Recorder(gaussian_log_prob([0.0, 0.0], [1.0, 1.0]))
    dataset = Dataset(torch.randn(100, 2, generator=g), moons, true_log_prob=truth)
    path = plot_samples(torch.randn(64, 2, generator=g), moons, tmp_path / "c.png", data=dataset, resolution=30)
    assert read_png(path)[1].shape[:2] == (400, 3 * 400)  # data, samples, true density
    assert sum(s[0] for s in truth.shapes) == 30 * 30  # the dataset's true density was used

    blobs = DataSpec("blobs", "vector", (6,))
    path = plot_samples(torch.randn(64, 6, generator=g), blobs, tmp_path / "d.png", data=torch.randn(80, 6, generator=g))
    assert read_png(path)[1].shape[:2] == (1000, 1000)  # 4 x 4 pairs of 250 px cells
    table = DataSpec("adult", "table", (3,))
    assert read_png(plot_samples(torch.randn(64, 3, generator=g), table, tmp_path / "e.png"))[1].shape[:2] == (750, 750)


def test_plot_samples_never_raises_on_nan(tmp_path):
    digits = DataSpec("digits", "image", (1, 8, 8))
    assert read_png(plot_samples(torch.full((4, 1, 8, 8), float("nan")), digits, tmp_path / "a.png", padding=0))[1].max() == 0
    blobs = DataSpec("blobs", "vector", (3,))
    samples = torch.randn(20, 3, generator=torch.Generator().manual_seed(6))
    samples[::2, 1] = float("nan")
    fig = pairwise_figure(samples, title="step 100")
    assert fig._suptitle.get_text() == "step 100\nnon-finite, not drawn: 10 sample rows"
    assert plot_samples(torch.full((6, 3), float("nan")), blobs, tmp_path / "c.png").exists()


# -- sample histograms and trajectories ------------------------------------------------------------
def test_histogram_panel_is_a_normalised_density_of_the_samples():
    # without log_prob, >= 500 samples get a histogram panel: counts / (N * bin area), so it integrates
    # to the share of samples in view and matches the sampling density where the bins are fine
    g = torch.Generator().manual_seed(0)
    samples = torch.rand(20000, 2, generator=g) * torch.tensor([2.0, 4.0])  # uniform density 1/8
    fig = density_figure(samples, bounds=((0.0, 2.0), (0.0, 4.0)))
    heat = np.asarray(fig.axes[1].images[0].get_array())
    bins = heat.shape[0]
    assert heat.shape == (bins, bins) and 20 <= bins <= 100
    assert abs(heat.sum() * (2.0 * 4.0 / bins**2) - 1.0) < 1e-9
    assert abs(heat.mean() - 1 / 8) < 1e-9 and heat.std() < 0.5 / 8  # Poisson noise of ~4 points per bin
    few = density_figure(samples[:100], bounds=((0.0, 2.0), (0.0, 4.0)))
    assert all(not ax.images for ax in few.axes)  # 100 points: scatter only


def test_snapshot_indices_are_evenly_spaced_and_keep_both_ends():
    assert snapshot_indices(51, 6) == [0, 10, 20, 30, 40, 50]
    assert snapshot_indices(4, 8) == [0, 1, 2, 3]
    assert snapshot_indices(10, 1) == [9]
    with pytest.raises(ValueError):
        snapshot_indices(0, 3)


def test_image_trajectory_puts_each_sample_on_a_row_and_each_snapshot_in_a_column(tmp_path):
    spec = DataSpec("t", kind="image", shape=(1, 4, 4))
    # state k of sample i is the constant (k + 1) / 10 + i / 100: the tile at (row i, column k) shows it
    path = [torch.full((3, 1, 4, 4), (k + 1) / 10) + torch.arange(3.0)[:, None, None, None] / 100 for k in range(5)]
    fig = trajectory_figure(path, spec, columns=5, rows=2)
    grid = np.asarray(fig.axes[0].images[0].get_array())
    p = 2  # make_grid's padding
    for i in range(2):
        for k in range(5):
            top, left = p + i * (4 + p), p + k * (4 + p)
            expected = round(((k + 1) / 10 + i / 100) * 255)
            assert np.all(grid[top : top + 4, left : left + 4] == expected)
    assert grid.shape == (2 * (4 + p) + p, 5 * (4 + p) + p)
    out = plot_trajectory(path, spec, tmp_path / "t.png", times=[1.0, 0.75, 0.5, 0.25, 0.0], columns=3)
    assert read_png(out)[1].ndim == 3


def test_point_trajectory_draws_one_panel_per_snapshot():
    spec = DataSpec("p", kind="vector", shape=(2,), value_range=(-5.0, 5.0))
    path = [torch.randn(100, 2, generator=torch.Generator().manual_seed(k)) * (3 - k) for k in range(3)]
    fig = trajectory_figure(path, spec, columns=8)
    assert len(fig.axes) == 3
    offsets = [ax.collections[0].get_offsets() for ax in fig.axes]
    np.testing.assert_allclose(np.asarray(offsets[2]), path[2].numpy(), rtol=1e-6)
    with pytest.raises(ValueError, match="one time per state"):
        trajectory_figure(path, spec, times=[1.0, 0.0])
    with pytest.raises(ValueError, match="images and 2-D points"):
        trajectory_figure([torch.zeros(3, 5)], DataSpec("v", kind="vector", shape=(5,)))
