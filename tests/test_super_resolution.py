"""Super-resolution: PSNR and SSIM against scikit-image, SR3's conditioning by concatenation, a short
regression run beating bicubic on held-out digits, `genlab upscale` on a file and a folder, and the
refusals."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.apps.anomaly import detector
from genlab.apps.editing import inpaint
from genlab.cli.main import main
from genlab.data.dataset import Batch
from genlab.errors import ConfigError, DataError
from genlab.metrics.image_quality import psnr, ssim
from genlab.models.diffusion.super_resolution import degrade, upsample

TINY = ["--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4"]


def test_psnr_and_ssim_equal_scikit_images():
    metrics = pytest.importorskip("skimage.metrics")
    g = torch.Generator().manual_seed(0)
    x = torch.rand(3, 3, 24, 24, generator=g, dtype=torch.float64)
    y = (x + 0.1 * torch.randn(x.shape, generator=g, dtype=torch.float64)).clamp(0, 1)
    expected_ssim = [metrics.structural_similarity(a.numpy(), b.numpy(), data_range=1.0, gaussian_weights=True, sigma=1.5,
                                                   use_sample_covariance=False, channel_axis=0) for a, b in zip(x, y)]
    expected_psnr = [metrics.peak_signal_noise_ratio(a.numpy(), b.numpy(), data_range=1.0) for a, b in zip(x, y)]
    torch.testing.assert_close(ssim(x, y), torch.tensor(expected_ssim, dtype=torch.float64))
    torch.testing.assert_close(psnr(x, y), torch.tensor(expected_psnr, dtype=torch.float64))
    assert torch.equal(ssim(x, x), torch.ones(3, dtype=torch.float64)) and torch.isinf(psnr(x, x)).all()
    with pytest.raises(DataError, match="window does not fit"):
        ssim(x[..., :8, :8], y[..., :8, :8])


def test_degrade_is_the_block_mean_and_sr3_sees_the_upsampled_image_beside_x_t(tmp_path):
    x = torch.arange(16.0).view(1, 1, 4, 4) / 16
    torch.testing.assert_close(degrade(x, 2), torch.tensor([[[[2.5, 4.5], [10.5, 12.5]]]]) / 16)
    torch.testing.assert_close(upsample(torch.full((1, 1, 2, 2), 0.3), (8, 8), (0.0, 1.0)), torch.full((1, 1, 8, 8), 0.3))
    data = genlab.data.load("digits")
    model = genlab.create("sr3", data=data, scale=2, preset="tiny")
    seen = {}
    unet = model.net.unet
    def record(module, args) -> None:
        seen.setdefault("input", args[0].detach())

    hook = unet.register_forward_pre_hook(record)
    x = data.tensors()[0][:4]
    model.loss(Batch(x))
    hook.remove()
    assert seen["input"].shape == (4, 2, 8, 8)  # [x_t, u] on the channel axis
    torch.testing.assert_close(seen["input"][:, 1:], model.normalize(upsample(degrade(x, 2), (8, 8), (0.0, 1.0))))
    with pytest.raises(DataError, match=r"this sr3 upscales \(1, 4, 4\) by 2 to \(1, 8, 8\)"):
        model.upscale(torch.rand(2, 1, 8, 8))
    with pytest.raises(ConfigError, match="scale=3 is not allowed; choose one of 2, 4, 8"):
        genlab.create("sr3", data=data, scale=3)
    np.savez(tmp_path / "six.npz", x=np.zeros((20, 1, 6, 6), np.float32))
    with pytest.raises(ConfigError, match=r"scale=4 must divide the image's sides \(6x6\); choose a scale of 2"):
        genlab.create("sr3", data=genlab.data.load(str(tmp_path / "six.npz")), scale=4, preset="tiny")
    for refusal in (lambda: detector(model, "denoising"), lambda: inpaint(model, x, torch.ones(1, 1, 8, 8))):
        with pytest.raises(ConfigError):
            refusal()


def test_a_short_regression_run_beats_bicubic_on_held_out_digits():
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    model = genlab.create("sr-regression", data=data, scale=2, preset="tiny")
    genlab.fit(model, data, max_steps=80, batch_size=32, ema_decay=0.0, progress=False, sample_every=0, tensorboard=False)
    x = data.split("test").tensors()[0]
    low = degrade(x, 2)
    bicubic = upsample(low, (8, 8), (0.0, 1.0))
    predicted = model.eval().upscale(low)
    assert float(psnr(predicted, x).mean()) > float(psnr(bicubic, x).mean()) + 1.5  # dB


def test_cli_upscales_a_file_and_a_folder(tmp_path, capsys):
    assert main(["train", "sr3", "--data", "digits", "--set", "scale=2", "--set", "preset=tiny", "--max-steps", "2",
                 "--out", str(tmp_path / "sr3"), *TINY]) == 0
    folder = tmp_path / "low"
    (folder / "a").mkdir(parents=True)
    rng = np.random.default_rng(0)
    for name in ("a/1.png", "2.jpg"):
        Image.fromarray(rng.integers(0, 256, (4, 4), dtype=np.uint8)).save(folder / name)
    capsys.readouterr()
    assert main(["upscale", str(tmp_path / "sr3"), "--image", str(folder / "2.jpg"), "--out", str(tmp_path / "high.png"),
                 "--steps", "3"]) == 0
    assert "upscaled x2 to 8x8" in capsys.readouterr().out
    assert Image.open(tmp_path / "high.png").size == (8, 8)
    assert main(["upscale", str(tmp_path / "sr3"), "--image", str(folder), "--out", str(tmp_path / "highs"), "--steps", "3"]) == 0
    assert sorted(p.relative_to(tmp_path / "highs").as_posix() for p in (tmp_path / "highs").rglob("*.png")) == ["2.png", "a/1.png"]
    assert main(["upscale", str(tmp_path / "sr3"), "--image", str(folder / "2.jpg"), "--out", str(tmp_path / "high.jpg")]) == 2
    assert "written as a PNG" in capsys.readouterr().err
    assert main(["train", "sr-regression", "--data", "digits", "--set", "scale=2", "--set", "preset=tiny", "--max-steps", "2",
                 "--out", str(tmp_path / "reg"), *TINY]) == 0
    capsys.readouterr()
    assert main(["upscale", str(tmp_path / "reg"), "--image", str(folder / "2.jpg"), "--out", str(tmp_path / "r.png"), "--steps", "3"]) == 2
    assert "one deterministic pass; --steps are for sr3's sampler" in capsys.readouterr().err
    assert main(["train", "ae", "--data", "digits", "--max-steps", "2", "--out", str(tmp_path / "ae"), *TINY]) == 0
    capsys.readouterr()
    assert main(["upscale", str(tmp_path / "ae"), "--image", str(folder / "2.jpg"), "--out", str(tmp_path / "r.png")]) == 2
    assert "'ae' does not upscale" in capsys.readouterr().err
