"""Size presets (genlab.nn.presets): "auto" picks by the device, the word a model resolved is kept in
its run, fields the user gave win, the CPU networks are cheaper where they apply and identical where
they do not, runs saved before presets existed rebuild with their own networks, and the help says
what "auto" picked."""

import subprocess
import sys

import pytest
import torch
import yaml
from torch.utils.flop_counter import FlopCounterMode

import genlab
from genlab.data import Batch, DataSpec
from genlab.nn.presets import resolve_size_preset, saved_config_values

pytestmark = pytest.mark.usefixtures("one_thread")

MNIST_LIKE = DataSpec("mnist-like", kind="image", shape=(1, 28, 28), value_range=(0.0, 1.0), levels=256, num_classes=10)
# every family whose image networks the presets size
SIZED = ["vae", "ae", "dvae", "vq-vae", "dcgan", "wgan-gp", "realnvp", "glow", "pixelcnn", "gated-pixelcnn", "ddpm", "edm"]


def _training_flops(name, spec, preset, batch=4):
    """FLOPs of one loss evaluation and its backward pass on a batch of `batch` images."""
    torch.manual_seed(0)
    model = genlab.create(name, data=spec, preset=preset)
    x = torch.rand(batch, *spec.shape)
    x = torch.round(x * 255) / 255
    batch_ = Batch(x, torch.arange(batch) % 10)
    with FlopCounterMode(display=False) as counter:
        if model.has_custom_step:  # GANs: a discriminator and a generator pass
            z = torch.randn(batch, model.latent_dim)
            fake = model.generator(z)
            (model.discriminator(fake).sum() + model.discriminator(x).sum()).backward()
        else:
            model.loss(batch_).total.backward()
    return counter.get_total_flops()


def test_auto_is_paper_with_a_cuda_gpu_and_cpu_without(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    assert resolve_size_preset("auto") == "cpu"
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)
    assert resolve_size_preset("auto") == "paper"
    assert resolve_size_preset("cpu") == "cpu" and resolve_size_preset("paper") == "paper"


@pytest.mark.parametrize("name", SIZED)
def test_the_cpu_networks_cost_at_most_a_third_of_the_paper_ones_on_mnist_size_images(name):
    cpu, paper = _training_flops(name, MNIST_LIKE, "cpu"), _training_flops(name, MNIST_LIKE, "paper")
    assert 0 < cpu <= paper / 3, (name, cpu, paper)


@pytest.mark.parametrize("name", SIZED)
def test_small_images_get_the_same_networks_under_both_presets(name):
    digits = genlab.data.load("digits").spec
    shapes = [{k: v.shape for k, v in genlab.create(name, data=digits, preset=p).state_dict().items()} for p in ("cpu", "paper")]
    assert shapes[0] == shapes[1]


def test_the_resolved_preset_is_kept_and_a_given_field_wins(monkeypatch):
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = genlab.create("vae", data=MNIST_LIKE)
    assert (model.config.preset, model.config.channels, model.config.blocks_per_level) == ("cpu", (16, 32, 64), 0)
    mine = genlab.create("vae", data=MNIST_LIKE, channels=(8, 8))
    assert mine.config.channels == (8, 8) and mine.config.blocks_per_level == 0
    assert genlab.create("ddpm", data=MNIST_LIKE).config.preset == "cpu"  # the UNet preset of that name
    assert genlab.create("ddpm", data=MNIST_LIKE, preset="paper").config.preset == "mnist"  # DDPM's layout for 28x28


def test_cpu_training_defaults_apply_only_to_networks_the_cpu_preset_sized():
    vae = genlab.create("vae", data=MNIST_LIKE, preset="cpu")
    assert vae.training_defaults()["max_steps"] == type(vae).cpu_train_defaults["max_steps"] < type(vae).train_defaults["max_steps"]
    assert genlab.create("vae", data=MNIST_LIKE, preset="paper").training_defaults() == type(vae).train_defaults
    assert genlab.create("vae", data=genlab.data.load("digits"), preset="cpu").training_defaults() == type(vae).train_defaults


def test_a_run_keeps_its_networks_on_a_machine_where_auto_means_another_preset(tmp_path, monkeypatch):
    data = genlab.data.load("digits")
    spec = DataSpec("tiny-rgb", kind="image", shape=(3, 16, 16), value_range=(0.0, 1.0), levels=256)
    x = torch.rand(40, 3, 16, 16)
    dataset = genlab.data.Dataset(torch.round(x * 255).to(torch.uint8), spec, None, splits={
        "train": torch.arange(32), "val": torch.arange(32, 36), "test": torch.arange(36, 40)})
    del data
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    model = genlab.create("vae", data=dataset, prior_components=4)
    genlab.fit(model, dataset, max_steps=1, batch_size=8, out=tmp_path / "run", progress=False, num_samples=2)
    saved = yaml.safe_load((tmp_path / "run" / "config.yaml").read_text())["model_config"]
    assert saved["preset"] == "cpu" and saved["channels"] == [16, 32, 64]
    monkeypatch.setattr(torch.cuda, "is_available", lambda: True)  # "auto" would now be "paper"
    loaded = genlab.load(tmp_path / "run")
    assert loaded.config.preset == "cpu"
    torch.testing.assert_close(loaded.sample(2, generator=torch.Generator().manual_seed(0)),
                               genlab.load(tmp_path / "run").sample(2, generator=torch.Generator().manual_seed(0)))


def test_a_run_saved_before_presets_existed_loads_with_the_networks_it_was_trained_with(tmp_path):
    data = genlab.data.load("digits")
    spec = DataSpec("tiny", kind="image", shape=(1, 16, 16), value_range=(0.0, 1.0), levels=256)
    images = torch.round(torch.rand(40, 1, 16, 16) * 255).to(torch.uint8)
    dataset = genlab.data.Dataset(images, spec, None, splits={"train": torch.arange(32), "val": torch.arange(32, 36), "test": torch.arange(36, 40)})
    del data
    for name, legacy_word in (("vae", None), ("ddpm", "auto")):
        run = tmp_path / name
        extra = {"prior_components": 4} if name == "vae" else {"sample_steps": 2}
        model = genlab.create(name, data=dataset, preset="paper", **extra)
        genlab.fit(model, dataset, max_steps=1, batch_size=8, out=run, progress=False, num_samples=2)
        before = genlab.load(run).sample(2, generator=torch.Generator().manual_seed(0))
        config = yaml.safe_load((run / "config.yaml").read_text())
        if legacy_word is None:
            del config["model_config"]["preset"]  # as written before presets existed
        else:
            config["model_config"]["preset"] = legacy_word
        if name == "vae":  # fields that were plain defaults then
            config["model_config"].update(channels=[32, 64])
            for field in ("blocks_per_level", "upsample"):
                del config["model_config"][field]
        (run / "config.yaml").write_text(yaml.safe_dump(config))
        torch.testing.assert_close(genlab.load(run).sample(2, generator=torch.Generator().manual_seed(0)), before)
        assert saved_config_values(type(model.config), config["model_config"])["preset"] == "paper"


@pytest.mark.parametrize("name,field", [("pixelcnn", "dilations"), ("vq-vae", "prior_dilations"), ("dcgan", "generator_channels")])
def test_a_run_saved_before_a_sized_field_existed_loads_with_the_networks_it_was_trained_with(name, field, tmp_path):
    """A cpu-preset run written before `field` existed must not take today's preset value for it: the
    PixelCNN's blocks and the VQ-VAE prior's were undilated (same weight shapes, so a wrong load would
    be silent), the GANs' generator had the discriminator's widths (a wrong load fails on the shapes)."""
    spec = DataSpec("tiny", kind="image", shape=(1, 16, 16), value_range=(0.0, 1.0), levels=256)
    images = torch.round(torch.rand(40, 1, 16, 16) * 255).to(torch.uint8)
    dataset = genlab.data.Dataset(images, spec, None, splits={"train": torch.arange(32), "val": torch.arange(32, 36), "test": torch.arange(36, 40)})
    legacy = {"dilations": (1,), "prior_dilations": (1,), "generator_channels": (16, 32, 64)}
    legacy = {field: legacy[field]}
    model = genlab.create(name, data=dataset, preset="cpu", **legacy)
    run = tmp_path / "run"
    genlab.fit(model, dataset, max_steps=1, batch_size=8, out=run, progress=False, num_samples=2)
    before = genlab.load(run)
    config = yaml.safe_load((run / "config.yaml").read_text())
    del config["model_config"][field]  # as written before the field existed
    (run / "config.yaml").write_text(yaml.safe_dump(config))
    loaded = genlab.load(run)
    assert tuple(getattr(loaded.config, field)) == legacy[field] != tuple(getattr(genlab.create(name, data=dataset, preset="cpu").config, field))
    x = dataset.train.get_batch(torch.arange(4)).x
    if name == "pixelcnn":
        torch.testing.assert_close(loaded.log_prob(x), before.log_prob(x))
    else:
        torch.testing.assert_close(loaded.sample(2, generator=torch.Generator().manual_seed(0)), before.sample(2, generator=torch.Generator().manual_seed(0)))


def test_train_help_shows_what_the_defaults_resolved_to_and_why():
    out = subprocess.run([sys.executable, "-m", "genlab", "train", "vae", "--data", "digits", "--help"],
                         capture_output=True, text=True, check=True).stdout
    assert "preset=auto (cpu)" in out or "preset=auto (paper)" in out
    assert "preset auto -> " in out and ("sized for a CPU" in out or "CUDA GPU" in out)


@pytest.mark.parametrize("name", ["dcgan", "ddpm"])
def test_cpu_default_batch_shrinks_with_the_pixels_so_a_step_costs_what_it_does_on_mnist(name):
    """On 64x64 images the CPU default batch is the MNIST one times 784 / 4096 (to a multiple of 8,
    at least 16), so one default step's FLOPs stay within 1.5x of a default step on 28x28 (times
    what the floor of 16 adds); the paper preset and MNIST-size images keep their batch."""
    faces = DataSpec("faces-like", kind="image", shape=(1, 64, 64), value_range=(0.0, 1.0), levels=256, num_classes=10)
    mnist_batch = genlab.create(name, data=MNIST_LIKE, preset="cpu").training_defaults()["batch_size"]
    faces_batch = genlab.create(name, data=faces, preset="cpu").training_defaults()["batch_size"]
    assert faces_batch == max(16, mnist_batch * 784 // 4096 // 8 * 8) < mnist_batch
    assert genlab.create(name, data=faces, preset="paper").training_defaults().get("batch_size") == genlab.create(
        name, data=MNIST_LIKE, preset="paper").training_defaults().get("batch_size")  # fmt: skip
    per_image_mnist = _training_flops(name, MNIST_LIKE, "cpu") / 4
    per_image_faces = _training_flops(name, faces, "cpu") / 4
    ratio = (faces_batch * per_image_faces) / (mnist_batch * per_image_mnist)
    floor = max(1.0, faces_batch / (mnist_batch * 784 / 4096))  # where the floor of 16 binds, it costs that much more
    assert 0.7 < ratio < 1.5 * floor, (ratio, floor)
