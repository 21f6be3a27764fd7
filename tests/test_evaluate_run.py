"""What `genlab eval` reports beyond samples: the models' likelihood measures, checked against the
mathematics. A diffusion model driven by the exact denoiser of a Gaussian mixture must report that
mixture's true density (continuous data) or its true discrete probability (quantized data, through
the dequantization correction); a VQ-VAE must report -log2 p(codes) as its own parts give it."""

from __future__ import annotations

import math

import pytest
import torch
import torch.nn.functional as F

import genlab
from genlab.data import DataSpec
from genlab.metrics.report import format_report, held_out_subset, measure_metrics, model_likelihood
from genlab.models.diffusion import GaussianMixtureData
from genlab.models.diffusion.analytic import ExactDenoiserNetwork
from genlab.models.diffusion.model import DiffusionConfig, DiffusionModel
from genlab.models.latent.vqvae import VQVAE, VQVAEConfig

pytestmark = pytest.mark.usefixtures("one_thread")

F64 = torch.float64
Z = 4.0  # standard errors allowed for sampling noise


def _mixture(dim: int = 2) -> GaussianMixtureData:
    if dim == 2:
        means = torch.tensor([[-1.0, 0.5], [1.0, -0.5]], dtype=F64)
    else:
        means = torch.randn(2, dim, generator=torch.Generator().manual_seed(3), dtype=F64)
    return GaussianMixtureData(torch.tensor([0.3, 0.7], dtype=F64), means, stds=torch.tensor([0.3, 0.5], dtype=F64))


def _exact_model(spec: DataSpec, mixture: GaussianMixtureData, *, shift=None, scale=None, **fields) -> DiffusionModel:
    """A diffusion model whose network is the exact denoiser of `mixture` in its normalised space,
    which maps to the data as x = shift + scale x_norm."""
    model = DiffusionModel(DiffusionConfig(hidden=(8,), **fields), spec).double()
    if shift is not None:
        model.data_shift.copy_(shift)
        model.data_scale.copy_(scale)
    model.initialized_from_data.fill_(1)
    model.net = ExactDenoiserNetwork(model, mixture)
    return model.eval()


def _gaussian_cdf(z: torch.Tensor) -> torch.Tensor:
    return 0.5 * torch.erfc(-z / math.sqrt(2.0))


@pytest.mark.parametrize("schedule", ["vp", "ve", "edm"])
def test_eval_reports_the_true_density_as_the_ode_likelihood(schedule):
    mixture = _mixture()
    spec = DataSpec("vec2", kind="vector", shape=(2,), value_range=(-math.inf, math.inf))
    shift, scale = torch.tensor([0.5, -1.0], dtype=F64), torch.tensor([2.0, 0.25], dtype=F64)
    model = _exact_model(spec, mixture, shift=shift, scale=scale, schedule=schedule)
    x = shift + scale * mixture.sample(200, torch.Generator().manual_seed(0))
    metrics, notes = measure_metrics(model, x, seed=0, likelihood_n=200)
    # the density of x = shift + scale x_norm: the change of variables divides by prod(scale)
    true_nll = -(mixture.log_prob((x - shift) / scale) - torch.log(scale).sum())
    assert metrics["nll_ode_nats"] == pytest.approx(float(true_nll.mean()), abs=0.005)
    assert metrics["nll_ode_bits_per_dim"] == pytest.approx(float(true_nll.mean()) / (2 * math.log(2)), abs=0.005)
    assert notes == [{"name": "nll_ode", "description": notes[0]["description"], "samples": 200, "of": 200, "unit": "samples"}]
    assert "exact trace" in notes[0]["description"] and "dequantized" not in notes[0]["description"]
    # the cost bound: a costly measure runs on likelihood_n of the held-out samples
    _, notes = measure_metrics(model, x, seed=0, likelihood_n=20)
    assert (notes[0]["samples"], notes[0]["of"]) == (20, 200)


def test_eval_ode_likelihood_of_quantized_data_is_the_true_discrete_nll():
    mixture = _mixture()
    levels, (low, high) = 64, (-3.5, 3.5)
    spec = DataSpec("quantized", kind="vector", shape=(2,), value_range=(low, high), levels=levels)
    model = _exact_model(spec, mixture, schedule="vp")
    width = (high - low) / levels
    v = torch.floor((mixture.sample(400, torch.Generator().manual_seed(1)) - low) / width).clamp(0, levels - 1)
    x = low + v * (high - low) / (levels - 1)  # the stored values of the levels
    metrics, notes = measure_metrics(model, x, seed=0, likelihood_n=400)
    # P(v) = sum_k w_k prod_d [Phi((b - m) / s) - Phi((a - m) / s)] over the bin [a, b) of each v_d
    lower, upper = (low + v * width)[:, None, :], (low + (v + 1) * width)[:, None, :]  # (N, 1, D)
    means, stds = mixture.means[None], torch.tensor([0.3, 0.5], dtype=F64)[None, :, None]  # (1, K, D), (1, K, 1)
    mass = (_gaussian_cdf((upper - means) / stds) - _gaussian_cdf((lower - means) / stds)).prod(-1)  # (N, K)
    true_bits = -torch.log2((mixture.weights[None] * mass).sum(1)) / 2  # (N,) bits per dimension
    # one dequantization draw per point: its noise within a bin is what the tolerance allows for
    assert metrics["nll_ode_bits_per_dim"] == pytest.approx(float(true_bits.mean()), abs=0.03)
    assert "uniformly dequantized" in notes[0]["description"]
    # without the correction D log(L / (b - a)) the figure would be off by log2(64 / 7) = 3.2 bits/dim
    uncorrected = metrics["nll_ode_nats"] / (2 * math.log(2))
    assert metrics["nll_ode_bits_per_dim"] - uncorrected == pytest.approx(math.log2(levels / (high - low)))


def test_eval_ode_likelihood_of_quantized_data_is_a_bound_even_where_the_density_spikes_at_the_levels():
    # a model that learnt quantized data closely puts narrow spikes at the stored values; only the
    # density of the dequantized points (not of the stored points) then bounds the discrete NLL
    levels, (low, high), spike = 4, (0.0, 1.0), 0.05
    grid = torch.cartesian_prod(*[torch.arange(levels, dtype=F64)] * 2)  # (16, 2) levels v
    weights = torch.rand(len(grid), generator=torch.Generator().manual_seed(4), dtype=F64) + 0.5
    mixture = GaussianMixtureData(weights, low + grid * (high - low) / (levels - 1), stds=spike)
    spec = DataSpec("spiky", kind="vector", shape=(2,), value_range=(low, high), levels=levels)
    model = _exact_model(spec, mixture, schedule="vp")
    v = grid[torch.multinomial(mixture.weights, 400, replacement=True, generator=torch.Generator().manual_seed(5))]
    x = low + v * (high - low) / (levels - 1)
    metrics, _ = measure_metrics(model, x, seed=0, likelihood_n=400)
    # the density the ODE gives is the data's noised to t_min: N(alpha m_k, (alpha^2 s^2 + sigma^2) I)
    t_min = torch.tensor([model.schedule.t_min], dtype=F64)
    alpha, sigma = float(model.schedule.alpha(t_min)), float(model.schedule.sigma(t_min))
    std = math.sqrt(alpha**2 * spike**2 + sigma**2)
    width = (high - low) / levels
    lower, upper = (low + v * width)[:, None, :], (low + (v + 1) * width)[:, None, :]
    mass = (_gaussian_cdf((upper - alpha * mixture.means[None]) / std) - _gaussian_cdf((lower - alpha * mixture.means[None]) / std)).prod(-1)
    discrete_bits = float((-torch.log2((mixture.weights[None] * mass).sum(1)) / 2).mean())
    # E_u[-log p(x')] - D log w, by 64 dequantization draws per point
    u = torch.rand(64, *x.shape, generator=torch.Generator().manual_seed(6), dtype=F64)
    density_nll = -mixture.marginal_log_prob((low + (v + u) * width).reshape(-1, 2), t_min.expand(64 * 400), model.schedule).view(64, 400)
    expected = (density_nll - 2 * math.log(width)) / (2 * math.log(2))  # (draws, N) bits/dim
    standard_error = float(expected.std()) / math.sqrt(400)  # of the one-draw mean the report holds
    assert metrics["nll_ode_bits_per_dim"] == pytest.approx(float(expected.mean()), abs=Z * standard_error + 0.01)
    assert metrics["nll_ode_bits_per_dim"] > discrete_bits + 0.5  # a valid bound, and a loose one here
    # the stored points' density would claim far less than the data's discrete NLL: no bound at all
    stored_bits = float(((-mixture.marginal_log_prob(x, t_min.expand(400), model.schedule) - 2 * math.log(width)) / (2 * math.log(2))).mean())
    assert stored_bits < discrete_bits - 0.5


def test_eval_ode_likelihood_in_higher_dimensions_uses_hutchinson_and_is_unbiased():
    dim = 20
    mixture = _mixture(dim)
    spec = DataSpec("vec20", kind="vector", shape=(dim,), value_range=(-math.inf, math.inf))
    model = _exact_model(spec, mixture, schedule="vp")
    x = mixture.sample(200, torch.Generator().manual_seed(2))
    metrics, notes = measure_metrics(model, x, seed=0, likelihood_n=200)
    assert "Hutchinson trace" in notes[0]["description"]
    true_nll = -mixture.log_prob(x)
    # the spread of one-probe estimates around the truth, from an independent set of probes
    spread = float((-model.ode_log_prob(x, torch.Generator().manual_seed(9)) - true_nll).std())
    assert metrics["nll_ode_nats"] == pytest.approx(float(true_nll.mean()), abs=Z * spread / math.sqrt(200) + 0.02)


def test_which_diffusion_models_report_the_ode_likelihood():
    digits = DataSpec("digits", kind="image", shape=(1, 8, 8), levels=17)
    offered = {name: [m.name for m in genlab.create(name, data=digits).likelihood_measures()]
               for name in ("score-sde", "edm", "ncsn", "ddpm", "dit")}  # fmt: skip
    assert offered == {"score-sde": ["nll_ode"], "edm": ["nll_ode"], "ncsn": ["nll_ode"], "ddpm": [], "dit": []}
    continuous_ddpm = genlab.create("ddpm", data=digits, schedule="subvp").likelihood_measures()
    assert [(m.name, m.kind, m.costly) for m in continuous_ddpm] == [("nll_ode", "dequantized", True)]
    assert "Hutchinson" in continuous_ddpm[0].description  # 64 dimensions


def test_eval_computes_a_ddpm_variational_bound_on_likelihood_n_held_out_images():
    """The DDPM bound costs one network evaluation per timestep, so evaluation takes likelihood_n of
    the held-out images (seeded, without replacement), as for the ODE likelihood, and says so."""
    digits = DataSpec("digits", kind="image", shape=(1, 8, 8), levels=17)
    torch.manual_seed(0)
    model = genlab.create("ddpm", data=digits, net="mlp", hidden=(32,), steps=20).eval()
    assert model.costly_nll_bound and not genlab.create("vae", data=digits).costly_nll_bound
    x = torch.randint(0, 17, (40, 1, 8, 8)).float() / 16
    metrics, notes = model_likelihood(model, x, seed=3, likelihood_n=8)
    assert [(n["name"], n["samples"], n["of"]) for n in notes] == [("nll_bound", 8, 40)]
    subset = held_out_subset(x, 8, seed=3)
    assert len(subset) == 8 and len({tuple(row.flatten().tolist()) for row in subset}) == 8  # no image twice
    with torch.no_grad():
        expected = model.nll_bound(subset, generator=torch.Generator().manual_seed(3)).mean()
    assert metrics["nll_bound_nats"] == pytest.approx(float(expected), rel=1e-6)
    # at most likelihood_n images: every one, in order
    assert torch.equal(held_out_subset(x[:8], 8, seed=3), x[:8])


def test_eval_reports_the_vq_vae_code_length_of_its_prior():
    data = genlab.data.load("digits")
    x = data.split("test").tensors()[0]
    torch.manual_seed(0)
    config = VQVAEConfig(num_codes=8, code_dim=4, channels=(8, 8), prior="pixelcnn", prior_channels=8, prior_blocks=1)
    model = VQVAE(config, data.spec).eval()
    metrics, notes = measure_metrics(model, x, seed=0)
    # independently: nearest codes by distance to the codebook, then the PixelCNN's softmax at each position
    with torch.no_grad():
        z_e = model.encoder(x)  # (B, D, 4, 4)
        flat = z_e.movedim(1, -1).reshape(-1, config.code_dim)
        codes = torch.cdist(flat, model.quantizer.codebook).argmin(1).view(len(x), 4, 4)
        logits = model.prior.pixelcnn.network(codes[:, None], None)[:, 0]  # (B, 4, 4, K)
        log_p = F.log_softmax(logits, -1).gather(-1, codes[..., None]).flatten(1).sum(1)
    bits = -log_p / math.log(2)
    assert 16 * math.log2(8) * 0.5 < float(bits.mean()) < 16 * math.log2(8) * 1.5  # an untrained prior: about 3 bits a position
    assert metrics["code_length_bits_per_image"] == pytest.approx(float(bits.mean()), rel=1e-5)
    assert metrics["code_length_bits_per_pixel"] == pytest.approx(float(bits.mean()) / 64, rel=1e-5)
    assert not any("bits_per_dim" in k for k in metrics)  # a rate, not a likelihood of x
    assert (notes[0]["samples"], notes[0]["of"], notes[0]["unit"]) == (len(x), len(x), "images")  # cheap: every image


def test_format_report_names_each_measure_and_its_sample_count():
    report = {"split": "test", "n_real": 180, "n_fake": 1000, "extractor": "digits",
              "model": {"fid": 20.0, "nll_ode_nats": 100.0, "nll_ode_bits_per_dim": 2.5},
              "likelihoods": [{"name": "nll_ode", "description": "probability-flow ODE likelihood (Hutchinson trace)",
                               "samples": 180, "of": 180, "unit": "images"}]}  # fmt: skip
    lines = format_report(report).splitlines()
    assert "nll_ode_bits_per_dim" in lines[1] and "2.5" in lines[2]
    assert lines[3] == "nll_ode: probability-flow ODE likelihood (Hutchinson trace); on 180 of 180 test images"
