"""The diffusion model class: its wiring of schedule, objective, network and sampler checked with
the exact denoiser of a Gaussian mixture in place of the network, plus the contract every
registered diffusion model keeps (builds, trains a step, samples in range, saves and loads)."""

import math

import pytest
import torch
from torch import nn

import genlab
from genlab.data import Batch, DataSpec
from genlab.errors import ConfigError
from genlab.models.diffusion import GaussianMixtureData
from genlab.models.diffusion.analytic import ExactDenoiserNetwork
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel
from genlab.train.engine import write_model_figures
from genlab.models.diffusion.objectives import ddpm_vlb
from genlab.registry import entries

VECTOR = DataSpec("vec2", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
# latent diffusion needs a trained autoencoder run: tests/test_latent_diffusion.py covers it
DIFFUSION_MODELS = [e.name for e in entries() if issubclass(e.model_class, DiffusionModel) and e.name != "latent-diffusion"]
# what a model needs beyond the tiny network: text-ddpm the weightless encoder (its default is an optional extra), sr3 a scale
EXTRA_FIELDS = {"text-ddpm": {"text_encoder": "hashing"}, "sr3": {"scale": 2}}


pytestmark = pytest.mark.usefixtures("one_thread")


def _mixture() -> GaussianMixtureData:
    return GaussianMixtureData(
        torch.tensor([0.3, 0.7], dtype=torch.float64),
        torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=torch.float64),
        stds=torch.tensor([0.3, 0.5], dtype=torch.float64),
    )


def _exact_model(**fields) -> DiffusionModel:
    model = DiffusionModel(DiffusionConfig(hidden=(8,), **fields), VECTOR).double()
    model.initialized_from_data.fill_(1)  # data space = normalised space (shift 0, scale 1)
    model.net = ExactDenoiserNetwork(model, _mixture())
    return model


@pytest.mark.parametrize("prediction", ["eps", "x0", "v"])
def test_model_eps_is_the_exact_eps_whatever_the_network_predicts(prediction):
    model = _exact_model(prediction=prediction, schedule="cosine")
    x = torch.randn(64, 2, dtype=torch.float64)
    t = torch.rand(64, dtype=torch.float64) * 0.98 + 0.01
    torch.testing.assert_close(model.eps(x, t), _mixture().eps(x, t, model.schedule))


@pytest.mark.parametrize(
    "fields",
    [
        dict(schedule="linear", sampler="ddim", sample_steps=100),
        dict(schedule="cosine", prediction="v", sampler="ancestral", sample_steps=200),
        dict(schedule="edm", sampler="heun", sample_steps=40),
    ],
    ids=["ddpm-ddim", "cosine-v-ancestral", "edm-heun"],
)
def test_sampling_through_the_model_reproduces_the_mixture(fields):
    model = _exact_model(**fields)
    mixture = _mixture()
    x = model.sample(6000, generator=torch.Generator().manual_seed(0))
    x = x.double()
    standard_error = (mixture.covariance.diagonal() / 6000).sqrt()
    assert torch.all((x.mean(0) - mixture.mean).abs() < 4 * standard_error + 0.01), (x.mean(0), mixture.mean)
    torch.testing.assert_close(torch.cov(x.T), mixture.covariance, atol=0.04, rtol=0.0)
    # the share of samples on the right-hand mode (weight 0.7)
    share = (mixture.responsibilities(x)[:, 1]).mean()
    assert abs(share - 0.7) < 0.03, share


def test_generate_reports_network_evaluations_and_trajectories():
    model = _exact_model(sampler="ddim", sample_steps=10)
    result = model.generate(5, generator=torch.Generator().manual_seed(0), return_trajectory=True)
    assert result.nfe == 10 and len(result.trajectory) == 11
    heun = model.generate(5, sampler="heun", steps=6, generator=torch.Generator().manual_seed(0))
    assert heun.nfe == 2 * 6 - 1  # Heun: 2 per step but the last (the discrete grid ends at t = 0: no final denoising)


def test_trajectory_ends_at_the_sample_and_fit_writes_its_picture(tmp_path):
    model = _exact_model(sampler="ddim", sample_steps=10)
    path = model.sample_trajectory(7, generator=torch.Generator().manual_seed(0))
    final = model.sample(7, generator=torch.Generator().manual_seed(0))
    assert len(path) == 11 and all(x.shape == (7, 2) for x in path)
    torch.testing.assert_close(path[-1], final)  # the same draws: the path ends at the sample
    assert path[0].std() > final.std()  # vectors are not clamped: the start is the broad prior, in data units
    (written,) = write_model_figures(model, tmp_path, torch.Generator().manual_seed(0))
    assert written == tmp_path / "trajectory.png" and written.stat().st_size > 0


def test_vectors_are_standardised_with_the_training_statistics():
    data = genlab.data.load("8gaussians", n=2000)
    model = genlab.create("ddpm", data=data, hidden=(8,))
    model.initialize_from_data(data.train, torch.Generator().manual_seed(0))
    x, _ = data.train.tensors()
    torch.testing.assert_close(model.data_shift, x.mean(0))
    torch.testing.assert_close(model.data_scale, x.std(0))
    torch.testing.assert_close(model.denormalize(model.normalize(x)), x)
    images = genlab.create("ddpm", data=genlab.data.load("digits"), preset="tiny")
    img = torch.rand(2, 1, 8, 8)
    torch.testing.assert_close(images.normalize(img), 2 * img - 1)  # [0, 1] -> [-1, 1]


class _LabelEcho(nn.Module):
    """eps = x + label (the no-label token counts as 0): makes the guidance formula visible."""

    def __init__(self, null: int) -> None:
        super().__init__()
        self.null = null
        self.anchor = nn.Parameter(torch.zeros(()))

    def forward(self, x, noise_level, y=None):
        value = torch.where(y == self.null, torch.zeros_like(y), y).to(x.dtype)
        return x + value.view(-1, *([1] * (x.dim() - 1)))


def test_classifier_free_guidance_mixes_conditional_and_unconditional_predictions():
    spec = DataSpec("lab", kind="vector", shape=(2,), value_range=(-math.inf, math.inf), num_classes=3)
    model = DiffusionModel(DiffusionConfig(hidden=(8,), class_conditional=True, guidance_scale=2.0), spec)
    model.net = _LabelEcho(null=3)
    x, t, y = torch.randn(4, 2), torch.full((4,), 0.5), torch.tensor([0, 1, 2, 2])
    guided = model.eps_fn(y)(x, t)
    conditional, unconditional = model.eps(x, t, y), model.eps(x, t, torch.full_like(y, 3))
    torch.testing.assert_close(guided, 3.0 * conditional - 2.0 * unconditional)
    torch.testing.assert_close(guided, x + 3.0 * y[:, None].float())
    torch.testing.assert_close(model.eps_fn(y, guidance_scale=0.0)(x, t), conditional)


def test_label_dropout_replaces_the_stated_share_of_labels():
    spec = DataSpec("lab", kind="vector", shape=(2,), value_range=(-math.inf, math.inf), num_classes=3)
    model = DiffusionModel(DiffusionConfig(hidden=(8,), class_conditional=True, label_dropout=0.25), spec)
    torch.manual_seed(0)
    y = model.training_condition(Batch(torch.zeros(40_000, 2), torch.ones(40_000, dtype=torch.long)))
    share = (y == 3).float().mean().item()
    assert abs(share - 0.25) < 0.01 and set(y.unique().tolist()) == {1, 3}


def test_nll_bound_is_the_ddpm_variational_bound_on_the_discrete_data():
    data = genlab.data.load("digits")
    model = genlab.create("ddpm", data=data, preset="tiny", steps=20)
    x = data.test.tensors()[0][:4]
    bound = model.nll_bound(x, generator=torch.Generator().manual_seed(0))
    reference = ddpm_vlb(lambda x_t, t: model.eps(x_t, t), model.schedule, 2 * x - 1, levels=17,
                         generator=torch.Generator().manual_seed(0)).total
    torch.testing.assert_close(bound, reference)
    assert model.likelihood_kind() == "discrete" and torch.all(bound > 0)
    assert genlab.create("edm", data=data, preset="tiny").likelihood_kind() == "none"


def test_config_errors_say_what_to_do():
    with pytest.raises(ConfigError, match="guidance_scale.*class_conditional=True"):
        DiffusionConfig(guidance_scale=1.0)
    with pytest.raises(ConfigError, match="schedule='quadratic'"):
        DiffusionConfig(schedule="quadratic")
    with pytest.raises(ConfigError, match="sampler"):
        DiffusionConfig(sampler="euler")
    with pytest.raises(ConfigError, match="labelled data"):
        DiffusionModel(DiffusionConfig(class_conditional=True), VECTOR)
    with pytest.raises(ConfigError, match="net='mlp'"):
        DiffusionModel(DiffusionConfig(net="unet"), VECTOR)
    with pytest.raises(ConfigError, match="unconditional"):
        DiffusionModel(DiffusionConfig(hidden=(8,)), VECTOR).sample(2, cond=torch.tensor([0, 1]))


@pytest.mark.parametrize("name", DIFFUSION_MODELS)
def test_every_diffusion_model_trains_samples_saves_and_loads(name, tmp_path):
    data = genlab.data.load("digits")
    fields = dict(preset="tiny", sample_steps=3) if name != "dit" else dict(sample_steps=3)
    model = genlab.create(name, data=data, **fields, **EXTRA_FIELDS.get(name, {}))
    run = genlab.fit(model, data, max_steps=2, batch_size=8, out=tmp_path / name, progress=False,
                     sample_every=0, num_samples=4)
    assert all(math.isfinite(row["loss"]) for row in run.history)
    assert (tmp_path / name / "trajectory.png").stat().st_size > 0  # the sampling path, beside samples.png
    options = dict(steps=3) if name != "ncsn" else dict(steps=2, steps_per_level=2)
    x = model.sample(4, generator=torch.Generator().manual_seed(0), **options)
    assert x.shape == (4, 1, 8, 8) and 0 <= x.min() and x.max() <= 1
    assert torch.equal(x * 16, torch.round(x * 16))  # quantized to digits' 17 levels
    loaded = genlab.load(tmp_path / name, ema=False)
    assert type(loaded) is type(model)
    torch.testing.assert_close(loaded.sample(4, generator=torch.Generator().manual_seed(0), **options), x)


def test_every_diffusion_preset_is_a_written_out_definition():
    # presets are classes in the source (found by grep), not generated at import
    import inspect

    import genlab.models.diffusion.model as module
    from genlab.registry import get

    source = inspect.getsource(module)
    for name in ("ddpm", "ncsn", "score-sde", "edm", "dit"):
        entry = get(name)
        for cls in (entry.model_class, entry.config_class):
            assert f"\nclass {cls.__name__}(" in source and cls.__module__ == module.__name__, (name, cls)


def test_network_kinds_come_from_the_registry(monkeypatch):
    from genlab.models.diffusion import model as diffusion_model

    with pytest.raises(ConfigError, match="'auto', 'mlp', 'unet', 'dit'"):
        DiffusionConfig(net="nosuch")
    built = []

    def zero_network(config, spec, num_classes):  # a network registered here, without touching model.py
        built.append((spec.shape, num_classes))
        return diffusion_model._Flatten(nn.Linear(spec.dim, spec.dim), spec.shape)

    monkeypatch.setitem(diffusion_model.NETWORKS, "zero", zero_network)
    model = DiffusionModel(DiffusionConfig(net="zero"), DataSpec("v", kind="vector", shape=(3,), value_range=(-math.inf, math.inf)))
    assert built == [((3,), None)] and isinstance(model.net.net, nn.Linear)
