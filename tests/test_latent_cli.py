"""`genlab latent` end to end on a tiny trained run: the files it writes hold what the Python API of
`genlab.apps.latent` computes on the same samples (pictures pixel for pixel, numbers to float
precision), and bad requests end in one-line errors."""

from __future__ import annotations

import json

import numpy as np
import pytest
import torch
from PIL import Image

import genlab
from genlab.apps.latent import interpolate, latent_map, rate_distortion, transfer_attribute
from genlab.cli.main import main
from genlab.viz.grid import auto_upscale, save_image_grid

pytestmark = pytest.mark.usefixtures("one_thread")

TINY = ["--max-steps", "30", "--batch-size", "64", "--no-progress", "--no-tensorboard", "--sample-every", "0"]


@pytest.fixture(scope="module")
def ae_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("runs") / "ae"
    fields = ["--set", "latent_dim=4", "--set", "hidden=16", "--set", "channels=8", "--set", "latent_components=2"]
    assert main(["train", "ae", "--data", "digits", *fields, "--out", str(out), *TINY]) == 0
    return out


def _pixels(path):
    return np.asarray(Image.open(path))


def test_default_tools_write_what_the_python_api_computes(ae_run, tmp_path, capsys):
    out = tmp_path / "latent"
    assert main(["latent", str(ae_run), "--out", str(out), "--pairs", "3", "--steps", "5", "--seed", "4"]) == 0
    printed = capsys.readouterr().out
    names = sorted(p.name for p in out.iterdir())
    assert names == ["interpolate.json", "interpolate.png", "latent_map.json", "latent_map.png", "rate_distortion.json", "rate_distortion.png"]
    assert all(str(out / name) in printed for name in names)

    model = genlab.load(ae_run)
    data = genlab.data.load("digits")
    x, y = data.split("test").tensors()

    # interpolation: the pairs drawn by the seed, a row per pair from one reconstruction to the other
    record = json.loads((out / "interpolate.json").read_text())
    order = torch.randperm(len(x), generator=torch.Generator().manual_seed(4))[:6]
    assert record["pairs"] == [[int(i), int(j)] for i, j in zip(order[:3], order[3:])]
    assert (record["method"], record["steps"]) == ("slerp", 5)
    path = interpolate(model, x[order[:3]], x[order[3:]], steps=5, method="slerp")  # (5, 3, 1, 8, 8)
    reference = save_image_grid(path.transpose(0, 1).reshape(15, 1, 8, 8), tmp_path / "reference.png", nrow=5)
    picture = _pixels(out / "interpolate.png")
    np.testing.assert_array_equal(picture, _pixels(reference))
    tile = 8 * auto_upscale(15, 8, 5) + 2
    assert picture.shape == (3 * tile + 2, 5 * tile + 2)

    # latent map: the share of variance and each class's mean position on the two axes
    record = json.loads((out / "latent_map.json").read_text())
    result = latent_map(model, x, y)
    assert record["n"] == len(x) and record["explained_variance"] == pytest.approx(result.explained, rel=1e-6)
    for c in range(10):
        np.testing.assert_allclose(record["class_means"][str(c)], result.coords[y == c].mean(0).numpy(), rtol=1e-5, atol=1e-6)

    # rate against distortion, the entropy coder's frequencies from the training split's codes
    points = rate_distortion(model, x, reference=data.split("train").tensors()[0])
    recorded = json.loads((out / "rate_distortion.json").read_text())
    assert [r["setting"] for r in recorded] == [p.setting for p in points]
    for r, p in zip(recorded, points):
        assert r["bits_per_image"] == pytest.approx(p.bits_per_image, rel=1e-6) and r["mse"] == pytest.approx(p.mse, rel=1e-5)
    assert Image.open(out / "rate_distortion.png").size[0] > 0 and Image.open(out / "latent_map.png").size[0] > 0


def test_transfer_attribute_alone_on_another_split(ae_run, tmp_path):
    out = tmp_path / "shift"
    assert main(["latent", str(ae_run), "--out", str(out), "--transfer-attribute", "1", "7", "--strength", "0.5",
                 "--split", "val", "-n", "100"]) == 0
    assert sorted(p.name for p in out.iterdir()) == ["transfer_attribute.json", "transfer_attribute.png"]
    model = genlab.load(ae_run)
    x, y = genlab.data.load("digits").split("val").tensors()
    x, y = x[:100], y[:100]
    record = json.loads((out / "transfer_attribute.json").read_text())
    assert record == {"split": "val", "source": 1, "target": 7, "strength": 0.5, "shifted": int((y == 1).sum())}
    shifted = transfer_attribute(model, x, y, 1, 7, strength=0.5)
    originals = x[y == 1][:8]
    reference = save_image_grid(torch.cat([originals, shifted[:8]]), tmp_path / "reference.png", nrow=len(originals))
    np.testing.assert_array_equal(_pixels(out / "transfer_attribute.png"), _pixels(reference))


def test_bad_requests_end_in_one_line_errors(ae_run, tmp_path, capsys):
    assert main(["latent", str(ae_run), "--out", str(tmp_path / "a"), "--interpolate", "--pairs", "100"]) == 2
    assert "100 interpolation pairs need 200 samples" in capsys.readouterr().err
    assert main(["latent", str(tmp_path / "missing"), "--out", str(tmp_path / "b")]) == 2
    assert capsys.readouterr().err.startswith("genlab latent: error:")


def test_models_without_an_encoder_are_refused_by_name(tmp_path):
    from genlab.apps.latent import write_latent_tools
    from genlab.errors import ConfigError

    data = genlab.data.load("digits")
    with pytest.raises(ConfigError, match="'gmm-em' has no encode"):
        write_latent_tools(genlab.create("gmm-em", data=data), data, tmp_path)
    with pytest.raises(ConfigError, match="unknown latent tool"):
        write_latent_tools(None, data, tmp_path, tools=("histogram",))  # checked before the model
