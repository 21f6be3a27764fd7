"""The contract every registered model keeps, checked over the whole registry on tiny CPU shapes:
it builds for each kind of data it declares, trains two steps through `genlab.fit` with finite
losses, samples the data's shape and value range (on the data's levels where its likelihood is of
the discrete data), is
reproducible from a seeded generator, and saves and loads to the same samples and likelihoods.

A model added to the registry is tested here without touching this file; TINY holds the few
fields that keep a model small and its sampler short on a CPU.
"""

import math

import pytest
import torch

import genlab
from genlab.errors import ConfigError
from genlab.models.diffusion.model import DiffusionModel
from genlab.registry import entries

pytestmark = pytest.mark.usefixtures("one_thread")

DATA = {"image": ("digits", {}), "vector": ("8gaussians", {"n": 512}), "table": ("iris", {})}
# fields that make a model tiny and its default sampler short; everything else is the default
TINY = {
    "ddpm": dict(preset="tiny", hidden=(16,), sample_steps=3),
    # annealed Langevin with a two-step network diverges (its step a_1 ~ 500 for sigma_1 / sigma_L = 5000
    # trusts the score); the plumbing is checked with DDIM, Langevin itself with the exact score in
    # test_diffusion_samplers.py
    "ncsn": dict(preset="tiny", hidden=(16,), sampler="ddim", sample_steps=3),
    "score-sde": dict(preset="tiny", hidden=(16,), sample_steps=3),
    "edm": dict(preset="tiny", hidden=(16,), sample_steps=3),
    "dit": dict(preset="tiny", hidden=(16,), sample_steps=3),
    "latent-diffusion": dict(preset="tiny", hidden=(16,), sample_steps=3),
    "flow-matching": dict(preset="tiny", hidden=(16,), sample_steps=3),
    # the weightless stand-in encoder: the default one is an optional extra (tests/test_text_diffusion.py)
    "text-ddpm": dict(preset="tiny", hidden=(16,), sample_steps=3, text_encoder="hashing"),
    "sr3": dict(preset="tiny", sample_steps=3, scale=2),
    "sr-regression": dict(preset="tiny", scale=2),
    "vae": dict(hidden=(16,), channels=(8,), prior_components=4, iw_samples=4),
    "beta-vae": dict(hidden=(16,), channels=(8,), iw_samples=4),
    "aae": dict(hidden=(16,), channels=(8,), discriminator_hidden=(16,)),
    # the 2D density picture evaluates log p on a grid once per mask: 16 masks of (512, 512) took 16 s
    "made": dict(hidden=(32, 32), num_masks=2),
    "tabddpm": dict(hidden=(16,), sampling_steps=3),
    "tabular": dict(latent_dim=4, hidden=(16,), autoencoder_hidden=(16,), sample_steps=3),
    "ctgan": dict(hidden=(16,), latent_dim=8, pac=2),
}


def genlab_entries():
    """The registry's models, without those the test suite registers for itself (tests/engine_models.py)."""
    return [e for e in entries() if e.model_class.__module__.startswith("genlab.")]


def cases():
    for entry in genlab_entries():
        for kind in entry.model_class.data_kinds:
            if kind in DATA:
                yield pytest.param(entry.name, kind, id=f"{entry.name}-{kind}")


def _fields(name, kind, tmp_path_factory):
    fields = dict(TINY.get(name, {}))
    if kind != "image" or not issubclass(genlab.registry.get(name).model_class, DiffusionModel):  # a UNet/DiT preset
        fields.pop("preset", None)
    if name == "latent-diffusion":
        fields["autoencoder"] = str(_tiny_autoencoder(kind, tmp_path_factory))
    return fields


def _tiny_autoencoder(kind, tmp_path_factory):
    out = tmp_path_factory.mktemp("autoencoder") / "vae"
    data = _data(kind)
    vae = genlab.create("vae", data=data, **TINY["vae"])
    genlab.fit(vae, data, max_steps=1, batch_size=8, out=out, progress=False, sample_every=0, num_samples=4)
    return out


def _data(kind):
    name, options = DATA[kind]
    return genlab.data.load(name, **options)


def _seeded(seed=0):
    return torch.Generator().manual_seed(seed)


@pytest.mark.parametrize("name, kind", list(cases()))
def test_every_model_trains_samples_saves_and_loads(name, kind, tmp_path, tmp_path_factory):
    data = _data(kind)
    spec = data.spec
    fields = _fields(name, kind, tmp_path_factory)
    torch.manual_seed(0)  # the initial weights, whatever ran before in this process
    model = genlab.create(name, data=data, **fields)
    run = genlab.fit(model, data, max_steps=2, batch_size=8, out=tmp_path / "run", progress=False,
                     sample_every=0, num_samples=4)
    losses = [row["loss"] for row in run.history if row.get("split") == "train"]
    assert losses and all(math.isfinite(v) for v in losses), losses
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0

    model = run.sampling_model.eval()
    x = model.sample(4, generator=_seeded(0))
    assert x.shape == (4, *spec.shape) and bool(torch.isfinite(x).all())
    low, high = spec.value_range
    assert float(x.min()) >= low - 1e-6 and float(x.max()) <= high + 1e-6
    if spec.levels and model.likelihood_kind() in ("dequantized", "discrete"):  # a likelihood of the discrete data
        steps = spec.levels - 1
        torch.testing.assert_close(x * steps / (high - low), torch.round(x * steps / (high - low)))
    torch.testing.assert_close(model.sample(4, generator=_seeded(0)), x)  # same seed, same samples

    loaded = genlab.load(tmp_path / "run")
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded.sample(4, generator=_seeded(0)), x)
    if model.exact_likelihood:
        real = data.split("test").tensors()[0][:8]
        log_p = model.log_prob(real)
        assert log_p.shape == (8,) and bool(torch.isfinite(log_p).all())
        torch.testing.assert_close(loaded.log_prob(real), log_p)


@pytest.mark.parametrize("name", [e.name for e in genlab_entries()])
def test_every_model_refuses_the_data_it_is_not_built_for_by_name(name):
    entry = genlab.registry.get(name)
    for kind, (dataset, options) in DATA.items():
        if kind not in entry.model_class.data_kinds:
            with pytest.raises(ConfigError, match=f"built for .* data, and {dataset!r} is {kind} data"):
                genlab.create(name, data=genlab.data.load(dataset, **options))


# -- images of the sizes users bring: their default networks (the "cpu" size preset), 1 and 3 channels ----------
# 25x25 (the odd side of a face folder) in grey, 32x32 in colour; TINY_LARGE only shortens sampling
LARGE_SHAPES = {"grey25": (1, 25, 25), "rgb32": (3, 32, 32)}
TINY_LARGE = {name: {"sample_steps": 3} for name in ("ddpm", "ncsn", "score-sde", "edm", "dit", "flow-matching", "sr3")}
TINY_LARGE["ncsn"]["sampler"] = "ddim"
TINY_LARGE["text-ddpm"] = {"sample_steps": 3, "text_encoder": "hashing"}


# models of flattened vectors that also take images: their cost grows with the dimension (MAF, IAF
# and NSF sample one coordinate per pass), so they run on the grey 625 dimensions only; MADE's
# 16-mask ensemble and FFJORD's ODE solves take minutes there on a CPU, and EM's full covariances of
# 3,072 colour dimensions over a minute; those are left to their own tests
SOME_SHAPES_ONLY = {"maf": ("grey25",), "iaf": ("grey25",), "nsf": ("grey25",), "gmm-em": ("grey25",), "made": (), "ffjord": ()}
# super-resolution needs sides its scale (2, 4 or 8) divides, which 25 is not (tests/test_super_resolution.py has the refusal)
SOME_SHAPES_ONLY |= {"sr3": ("rgb32",), "sr-regression": ("rgb32",)}


def large_cases():
    for entry in genlab_entries():
        if "image" in entry.model_class.data_kinds and entry.name != "latent-diffusion":
            for key in SOME_SHAPES_ONLY.get(entry.name, LARGE_SHAPES):
                yield pytest.param(entry.name, key, id=f"{entry.name}-{key}")


@pytest.fixture(scope="module")
def large_images(tmp_path_factory):
    """An .npz of 48 labelled uint8 images per shape: smooth blobs, so that the models see structure."""
    folder = tmp_path_factory.mktemp("large")
    files = {}
    rng = torch.Generator().manual_seed(0)
    for key, (c, h, w) in LARGE_SHAPES.items():
        yy, xx = torch.meshgrid(torch.linspace(-1, 1, h), torch.linspace(-1, 1, w), indexing="ij")
        centres = torch.rand(48, c, 2, generator=rng) - 0.5
        blobs = torch.exp(-((yy - centres[..., :1, None]) ** 2 + (xx - centres[..., 1:, None]) ** 2) / 0.1)
        x = (255 * blobs).round().to(torch.uint8).numpy()  # (48, C, H, W)
        files[key] = folder / f"{key}.npz"
        import numpy as np

        np.savez(files[key], x=x, y=np.arange(48) % 3)
    return files


@pytest.mark.parametrize("name, key", list(large_cases()))
def test_every_image_model_trains_samples_and_loads_at_user_sizes(name, key, large_images, tmp_path):
    data = genlab.data.load(str(large_images[key]))
    assert data.spec.shape == LARGE_SHAPES[key]
    if name == "glow" and key == "grey25":  # Glow squeezes at every scale: odd sides are padded with noise unless refused
        with pytest.raises(ConfigError, match=r"25x25: resize the images to sides that 2\^2 divides, e.g. --data-option resize=24, or --set padding=noise"):
            genlab.create(name, data=data, preset="cpu", padding="none")
    torch.manual_seed(0)
    sized = {"preset": "cpu"} if "preset" in genlab.registry.get(name).config_class.field_names() else {}
    model = genlab.create(name, data=data, **sized, **TINY_LARGE.get(name, {}))
    run = genlab.fit(model, data, max_steps=2, batch_size=8, out=tmp_path / "run", progress=False, sample_every=0, num_samples=1)
    assert all(math.isfinite(row["loss"]) for row in run.history if row.get("split") == "train")
    assert (tmp_path / "run" / "samples.png").stat().st_size > 0
    model = run.sampling_model.eval()
    x = model.sample(1, generator=_seeded(0))
    assert x.shape == (1, *data.spec.shape) and bool(torch.isfinite(x).all())
    assert float(x.min()) >= 0.0 and float(x.max()) <= 1.0 + 1e-6
    loaded = genlab.load(tmp_path / "run")
    if model.exact_likelihood:  # one pass, where sampling an autoregressive model takes one per sub-pixel
        real = data.split("test").tensors()[0][:4]
        torch.testing.assert_close(loaded.log_prob(real), model.log_prob(real))
    else:
        torch.testing.assert_close(loaded.sample(1, generator=_seeded(0)), x)
