"""Anomaly detection from generative models (`genlab.apps.anomaly`): each score is what its formula
says, computed by hand; the threshold is the normal scores' quantile; scikit-learn's conventions
hold; a model of normal data tells a shifted cluster apart."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
from sklearn.metrics import roc_auc_score

import genlab
from genlab.apps import anomaly
from genlab.apps.anomaly import DENOISING_STEPS, DENOISING_STRENGTHS, SCORES, AnomalyDetector, available_scores, compressed_bits, detector
from genlab.data.dataset import DataSpec
from genlab.errors import ConfigError
from genlab.models.base import GenerativeModel

pytestmark = pytest.mark.usefixtures("one_thread")


class StandardNormal(GenerativeModel):
    """log p(x) = -|x|^2 / 2 - (D / 2) log 2 pi, exactly: the reference the scores are checked on."""

    exact_likelihood = True

    def __init__(self, dim: int = 2) -> None:
        super().__init__(genlab.config.Config(), DataSpec("normal", kind="vector", shape=(dim,), value_range=(-math.inf, math.inf)))
        self.name = "standard-normal"

    def log_prob(self, x):
        return -0.5 * (x**2).sum(1) - 0.5 * x.shape[1] * math.log(2 * math.pi)


class IndependentPixels(GenerativeModel):
    """log p(x) = sum_i log N(x_i; 0.5, sigma^2) over the pixels of (1, 8, 8) images: a likelihood that
    ranks the simplest image, a constant 0.5, above every noisy training image (Nalisnick et al.'s failure)."""

    exact_likelihood = True

    def __init__(self, sigma: float = 0.2) -> None:
        super().__init__(genlab.config.Config(), DataSpec("noise", kind="image", shape=(1, 8, 8), value_range=(0.0, 1.0)))
        self.name, self.sigma = "independent-pixels", sigma

    def log_prob(self, x):
        z = (x - 0.5) / self.sigma
        return (-0.5 * z**2 - math.log(self.sigma) - 0.5 * math.log(2 * math.pi)).flatten(1).sum(1)


def test_nll_score_threshold_and_sklearn_conventions():
    model = StandardNormal()
    normal = torch.randn(2000, 2, generator=torch.Generator().manual_seed(0))
    found = AnomalyDetector(model, contamination=0.1).fit(normal)
    assert found.score.name == "nll"
    expected = 0.5 * (normal**2).sum(1) + math.log(2 * math.pi)
    torch.testing.assert_close(found.anomaly_scores(normal), expected)
    torch.testing.assert_close(found.score_samples(normal), -expected)
    # -log p is monotone in |x|^2 ~ chi^2_2, whose 0.9 quantile is -2 log 0.1: the threshold on |x|^2
    radius2 = 2 * (found.threshold_ - math.log(2 * math.pi))
    assert abs(radius2 - (-2 * math.log(0.1))) < 0.35
    flagged = found.predict(normal)
    assert set(flagged.tolist()) <= {-1, 1} and abs((flagged == -1).double().mean().item() - 0.1) <= 0.001
    decision = found.decision_function(normal)
    torch.testing.assert_close(decision, found.score_samples(normal) - found.offset_)
    assert torch.equal(flagged == -1, decision < 0)
    far = torch.full((5, 2), 4.0)
    assert (found.predict(far) == -1).all()


def test_reconstruction_score_and_its_map_by_hand():
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    model = genlab.create("ae", data=data, latent_dim=4)
    found = detector(model)
    assert found.score.name == "reconstruction" and available_scores(model) == ["reconstruction"]
    x = data.split("test").tensors()[0][:20]
    with torch.no_grad():
        squared = (x - model.reconstruct(x)) ** 2
    torch.testing.assert_close(found.score_map(x), squared)
    torch.testing.assert_close(found.anomaly_scores(x), squared.flatten(1).mean(1))
    with pytest.raises(ConfigError, match="has no per-dimension map"):
        detector(StandardNormal()).score_map(torch.zeros(3, 2))


def test_vae_bound_is_seeded_and_equals_the_models_iwae():
    data = genlab.data.load("8gaussians", n=256)
    torch.manual_seed(0)
    model = genlab.create("vae", data=data, latent_dim=2, hidden=(16,), iw_samples=5).eval()
    found = detector(model, seed=3, bound_samples=None)  # the model's own k
    assert found.score.name == "bound"  # the VAE's principled score first; reconstruction on request
    x = data.split("train").tensors()[0][:40]
    once, again = found.anomaly_scores(x), found.anomaly_scores(x)
    assert torch.equal(once, again)
    with torch.no_grad():
        reference = model.nll_bound(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(once, reference)
    with torch.no_grad():  # the detector's k (8 by default), not the model's
        eight = model.nll_bound(x, generator=torch.Generator().manual_seed(3), samples=8)
    torch.testing.assert_close(detector(model, seed=3).anomaly_scores(x), eight)
    assert not torch.allclose(eight, reference)
    assert detector(model, "reconstruction").score.name == "reconstruction"


def test_a_diffusion_models_ode_likelihood_finds_the_ring_centre_and_its_outside():
    normal = genlab.data.load("8gaussians", n=2000)
    torch.manual_seed(0)
    model = genlab.create("ddpm", data=normal, hidden=(64, 64))
    # at 600 steps the learnt density still fills the ring's centre (AUROC 0.0 there, 1.0 outside)
    genlab.fit(model, normal, max_steps=2000, batch_size=256, progress=False, sample_every=0, checkpoint_every=0, ema_decay=0.0)
    assert detector(model).score.name == "denoising"  # the cheapest of a diffusion model's scores
    found = detector(model, "ode", seed=5, batch_size=1000)
    test_normal = normal.split("test").tensors()[0]
    x = test_normal[:20]
    with torch.no_grad():
        torch.testing.assert_close(found.anomaly_scores(x), -model.ode_log_prob(x, generator=torch.Generator().manual_seed(5)))
    # the centre of the ring (the mean of the eight modes) and points outside it
    angle = torch.rand(100, generator=torch.Generator().manual_seed(1)) * 2 * math.pi
    outside = 4.5 * torch.stack([angle.cos(), angle.sin()], 1)
    centre = 0.3 * torch.randn(100, 2, generator=torch.Generator().manual_seed(1))
    scores = found.anomaly_scores(torch.cat([test_normal, centre, outside]))
    labels = [0] * len(test_normal) + [1] * 200
    assert roc_auc_score(labels, scores.numpy()) > 0.95


def test_a_flow_of_normal_data_finds_a_shifted_cluster(tmp_path):
    normal = genlab.data.load("8gaussians", n=2000)
    torch.manual_seed(0)
    model = genlab.create("realnvp", data=normal)
    genlab.fit(model, normal, max_steps=300, out=tmp_path / "run", progress=False, sample_every=0, tensorboard=False)
    found = detector(tmp_path / "run", contamination=0.05).fit(normal.split("val"))
    test_normal = normal.split("test").tensors()[0]
    # anomalies: points at the centre of the ring, where the eight Gaussians leave no mass
    anomalies = 0.3 * torch.randn(len(test_normal), 2, generator=torch.Generator().manual_seed(1))
    scores = torch.cat([found.anomaly_scores(test_normal), found.anomaly_scores(anomalies)])
    labels = [0] * len(test_normal) + [1] * len(anomalies)
    assert roc_auc_score(labels, scores.numpy()) > 0.95
    assert (found.predict(anomalies) == -1).double().mean() > 0.8
    assert (found.predict(test_normal) == -1).double().mean() < 0.15


def test_bad_input_fails_clearly():
    model = StandardNormal()
    with pytest.raises(ConfigError, match="unknown anomaly score 'density'; choose one of nll, bound, reconstruction, ode, denoising, discriminator, inversion or auto"):
        AnomalyDetector(model, "density")
    with pytest.raises(ConfigError, match="has no 'reconstruction' score"):
        AnomalyDetector(model, "reconstruction")
    with pytest.raises(ConfigError, match="contamination=0.7 must be in"):
        AnomalyDetector(model, contamination=0.7)
    with pytest.raises(ConfigError, match="call fit"):
        AnomalyDetector(model).predict(torch.zeros(3, 2))
    with pytest.raises(ConfigError, match="samples of shape \\(3,\\), and the model was trained on \\(2,\\)"):
        AnomalyDetector(model).anomaly_scores(torch.zeros(4, 3))
    with pytest.raises(ConfigError, match="needs at least 20"):
        AnomalyDetector(model).fit(torch.zeros(5, 2))
    class SamplerOnly(StandardNormal):
        exact_likelihood = False

    with pytest.raises(ConfigError, match="offers none of the anomaly scores"):
        detector(SamplerOnly())
    assert list(SCORES) == ["nll", "bound", "reconstruction", "ode", "denoising", "discriminator", "inversion"]
    with pytest.raises(ConfigError, match="the complexity correction applies to a likelihood score .* not 'reconstruction'"):
        AnomalyDetector(genlab.create("ae", data=genlab.data.load("digits")), correction="complexity")
    with pytest.raises(ConfigError, match="measures images' PNG lengths; 'normal' is vector data"):
        AnomalyDetector(model, correction="complexity")
    with pytest.raises(ConfigError, match="unknown correction 'zip'"):
        AnomalyDetector(model, correction="zip")
    with pytest.raises(ConfigError, match="background model was trained on shape \\(3,\\)"):
        AnomalyDetector(model, background=StandardNormal(3))
    with pytest.raises(ConfigError, match="neither a run directory nor a model name"):
        detector("no-such-model-or-run")
    with pytest.raises(ConfigError, match="unknown anomaly score 'density'"):
        detector("ae", "density")  # before any training
    with pytest.raises(ConfigError, match="bound_samples=0 must be a positive integer"):
        AnomalyDetector(model, bound_samples=0)
    with pytest.raises(ConfigError, match="'ae' is not trained yet; call fit"):
        detector("ae").anomaly_scores(torch.zeros(2, 1, 8, 8))


def test_cli_scores_a_csv_in_its_order_and_names_the_unusual_columns(tmp_path, shop_table, capsys):
    frame = shop_table(1200).drop(columns="rating")  # its ratings are noise no code can hold
    frame.iloc[:1000].to_csv(tmp_path / "normal.csv", index=False)
    tested = frame.iloc[1000:1100].copy()
    broken = tested.index[:20]
    tested.loc[broken, "price"] = np.where(tested.loc[broken, "size"] == "big", 10.0, 40.0)  # price of the other size
    tested.to_csv(tmp_path / "tested.csv", index=False)
    from genlab.cli.main import main

    tiny = ["--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4"]
    assert main(["train", "ae", "--data", str(tmp_path / "normal.csv"), "--out", str(tmp_path / "run"), "--set", "latent_dim=2",
                 "--max-steps", "800", *tiny]) == 0
    out = tmp_path / "scores.csv"
    tested.assign(known=[1] * 20 + [0] * 80).to_csv(tmp_path / "tested.csv", index=False)  # the truth: a column left out
    assert main(["anomaly", str(tmp_path / "run"), "--data", str(tmp_path / "tested.csv"), "--out", str(out), "--truth", "known"]) == 0
    printed = capsys.readouterr().out
    assert "100 samples scored by reconstruction" in printed
    assert (tmp_path / "scores-histogram.png").is_file() and (tmp_path / "scores-roc.png").is_file()
    assert not (tmp_path / "scores-extremes.png").exists()  # images only
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["index", "source", "score", "anomaly", "unusual_columns"]
    assert scores["index"].tolist() == list(range(100)) and scores["source"].tolist() == list(range(1, 101))
    assert set(scores["anomaly"]) <= {0, 1}
    labels = [1] * 20 + [0] * 80
    assert roc_auc_score(labels, scores["score"]) > 0.9  # a price that contradicts the size
    assert f"AUROC {roc_auc_score(labels, scores['score']):.4f}" in printed
    top = scores["unusual_columns"].str.split(";").str[0]
    assert top.iloc[:20].isin(["price", "size"]).mean() > 0.8
    # the threshold came from the run's own validation rows: about 5% of normal rows flagged
    assert scores["anomaly"].iloc[20:].mean() < 0.2 and scores["anomaly"].iloc[:20].mean() > 0.5


def test_cli_names_images_by_file_and_refuses_what_it_cannot_do(tmp_path, capsys):
    from PIL import Image

    from genlab.cli.main import main

    folder = tmp_path / "photos"
    (folder / "b").mkdir(parents=True)
    (folder / "a").mkdir()
    rng = np.random.default_rng(0)
    for name in ("a/2.png", "b/1.png", "a/10.png"):
        Image.fromarray(rng.integers(0, 256, (8, 8), dtype=np.uint8)).save(folder / name)
    tiny = ["--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "2"]
    assert main(["train", "ae", "--data", "digits", "--out", str(tmp_path / "run"), "--set", "latent_dim=2", *tiny]) == 0
    out = tmp_path / "scores.csv"
    assert main(["anomaly", str(tmp_path / "run"), "--data", str(folder), "--normal", "digits", "--out", str(out)]) == 0
    scores = pd.read_csv(out)
    assert scores["source"].tolist() == ["a/10.png", "a/2.png", "b/1.png"]  # the order the folder is read in
    assert (tmp_path / "scores-extremes.png").is_file() and (tmp_path / "scores-histogram.png").is_file()
    np.savez(tmp_path / "arrays.npz", x=rng.random((5, 1, 8, 8)))  # an array file: its samples named by index
    assert main(["anomaly", str(tmp_path / "run"), "--data", str(tmp_path / "arrays.npz"), "--normal", "digits", "--out", str(out)]) == 0
    assert pd.read_csv(out)["source"].tolist() == [0, 1, 2, 3, 4]
    assert "unusual_columns" not in scores.columns
    # a run trained on resized images reads the scored folder with the same resize
    large = tmp_path / "large"
    large.mkdir()
    for i in range(30):
        Image.fromarray(rng.integers(0, 256, (16, 16), dtype=np.uint8)).save(large / f"{i:02d}.png")
    assert main(["train", "ae", "--data", str(large), "--data-option", "resize=8", "--out", str(tmp_path / "resized"),
                 "--set", "latent_dim=2", *tiny]) == 0
    assert main(["anomaly", str(tmp_path / "resized"), "--data", str(large), "--normal", str(large), "--out", str(out)]) == 0
    assert pd.read_csv(out)["source"].tolist() == [f"{i:02d}.png" for i in range(30)]
    capsys.readouterr()
    assert main(["anomaly", str(tmp_path / "run"), "--data", "digits", "--score", "nll", "--out", str(out)]) == 2
    assert "has no 'nll' score" in capsys.readouterr().err
    assert main(["anomaly", str(tmp_path / "run"), "--data", "8gaussians", "--out", str(out)]) == 2
    assert "samples of shape (2,), and the model was trained on (1, 8, 8)" in capsys.readouterr().err


def test_autoregressive_per_dimension_scores_are_conditionals_that_sum_to_the_nll():
    data = genlab.data.load("digits")
    x = data.split("test").tensors()[0][:6]
    torch.manual_seed(0)
    for model in (genlab.create("pixelcnn", data=data, channels=8, blocks=2),
                  genlab.create("made", data=data, hidden=(64,), num_masks=1)):  # both in raster order
        found = detector(model.eval())
        maps = found.score_map(x)
        assert maps.shape == x.shape
        torch.testing.assert_close(maps.flatten(1).sum(1), found.anomaly_scores(x), rtol=1e-5, atol=1e-3)
        # -log p(x_i | x_<i): changing pixel j moves the terms of j and of later pixels only
        j = 27
        changed = x.clone()
        changed.view(6, -1)[:, j] = 1.0 - changed.view(6, -1)[:, j]
        moved = (found.score_map(changed) - maps).flatten(1).abs().amax(0) > 1e-6
        assert not moved[:j].any() and moved[j] and moved[j + 1 :].any()
    made = genlab.create("made", data=data, hidden=(64,), num_masks=2)
    assert not detector(made).score.offers_map(made)


def test_denoising_score_is_the_mean_error_of_reconstructions_from_each_strength():
    from genlab.apps.editing import regenerate

    data = genlab.data.load("8gaussians", n=256)
    torch.manual_seed(0)
    model = genlab.create("ddpm", data=data, hidden=(16,)).eval()
    assert available_scores(model) == ["denoising", "ode"]  # the cheaper first
    found = detector(model, "denoising", seed=4)
    x = data.split("train").tensors()[0][:10]
    generator = torch.Generator().manual_seed(4)
    by_hand = torch.stack([(x - regenerate(model, x, strength=s, sampler="ddim", steps=DENOISING_STEPS, generator=generator)) ** 2
                           for s in DENOISING_STRENGTHS]).mean(0)
    torch.testing.assert_close(found.score_map(x), by_hand)
    torch.testing.assert_close(found.anomaly_scores(x), by_hand.mean(1))


def test_discriminator_score_is_minus_d_of_the_model_space_input():
    data = genlab.data.load("digits")
    x = data.split("test").tensors()[0][:5]
    torch.manual_seed(0)
    gan = genlab.create("dcgan", data=data).eval()
    found = detector(gan)
    assert found.score.name == "discriminator"
    with torch.no_grad():
        torch.testing.assert_close(found.anomaly_scores(x), -gan.discriminator(2 * x - 1, None).reshape(5))
    cgan = genlab.create("cgan", data=data).eval()
    with torch.no_grad():
        per_class = torch.stack([cgan.discriminator(2 * x - 1, torch.full((5,), y)).reshape(5) for y in range(10)], 1)
    torch.testing.assert_close(detector(cgan).anomaly_scores(x), -per_class.amax(1))


def test_compressed_bits_are_the_png_lengths():
    import io

    from PIL import Image

    rng = np.random.default_rng(0)
    noise = torch.from_numpy(rng.random((2, 1, 8, 8))).float()
    flat = torch.full((1, 1, 8, 8), 0.5)
    bits = compressed_bits(torch.cat([noise, flat]))
    buffer = io.BytesIO()
    Image.fromarray((noise[0, 0] * 255).round().to(torch.uint8).numpy()).save(buffer, format="PNG", compress_level=9)
    assert bits[0] == 8 * buffer.getbuffer().nbytes
    assert bits[2] < bits[0] - 8 * 40  # a constant image compresses far better than noise
    colour = compressed_bits(torch.rand(1, 3, 8, 8)), compressed_bits(torch.rand(1, 2, 8, 8))  # PNG (RGB) and zlib
    assert colour[0] > colour[1] > 0


def test_complexity_correction_fixes_a_likelihood_that_prefers_simple_images():
    model = IndependentPixels()
    generator = torch.Generator().manual_seed(0)
    normal = (0.5 + 0.2 * torch.randn(400, 1, 8, 8, generator=generator)).clamp(0, 1)
    simple = (0.5 + 0.02 * torch.randn(100, 1, 8, 8, generator=generator)).round(decimals=1)  # near-constant images
    x = torch.cat([normal[200:], simple])
    labels = [0] * 200 + [1] * 100
    raw = detector(model).anomaly_scores(x)
    corrected = detector(model, correction="complexity").anomaly_scores(x)
    torch.testing.assert_close(corrected, raw.double() / math.log(2) - compressed_bits(x))
    assert roc_auc_score(labels, raw.numpy()) < 0.05  # the failure: simple images look the most normal
    assert roc_auc_score(labels, corrected.numpy()) > 0.95  # the fix


def test_background_correction_is_the_likelihood_ratio():
    class Scaled(StandardNormal):
        def log_prob(self, x):
            return super().log_prob(x / 2) - x.shape[1] * math.log(2)

    x = torch.randn(50, 2, generator=torch.Generator().manual_seed(0))
    found = detector(StandardNormal(), background=Scaled())
    torch.testing.assert_close(found.anomaly_scores(x), -StandardNormal().log_prob(x) + Scaled().log_prob(x))


def test_a_detector_given_a_model_name_trains_it_and_sets_the_threshold_on_held_out_normal_data():
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    found = detector("ae", contamination=0.1, model_options={"latent_dim": 4}, train_options={"max_steps": 300}).fit(data)
    assert found.model.name == "ae" and found.score.name == "reconstruction"
    val = data.split("val").tensors()[0]
    assert found.threshold_ == pytest.approx(float(torch.quantile(found.anomaly_scores(val).double(), 0.9)))
    torch.testing.assert_close(found.normal_scores_, found.anomaly_scores(val))
    untrained = genlab.create("ae", data=data, latent_dim=4)
    assert found.anomaly_scores(val).mean() < 0.5 * detector(untrained).anomaly_scores(val).mean()  # it trained
    with pytest.raises(genlab.errors.ArgumentTypeError, match="needs the normal data as a genlab Dataset"):
        detector("ae").fit(val)


def test_a_vae_scored_by_its_bound_names_columns_by_reconstruction_and_tables_refuse_the_png_correction(tmp_path, shop_table, capsys):
    from genlab.apps.anomaly import score_data
    from genlab.cli.main import main

    frame = shop_table(600).drop(columns="rating")
    frame.to_csv(tmp_path / "normal.csv", index=False)
    assert main(["train", "vae", "--data", str(tmp_path / "normal.csv"), "--out", str(tmp_path / "run"), "--max-steps", "200",
                 "--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4"]) == 0
    found = score_data(tmp_path / "run", tmp_path / "normal.csv", tmp_path / "scores.csv", pictures=False)
    assert found.score == "bound" and found.pictures == ()
    scores = pd.read_csv(tmp_path / "scores.csv")
    assert scores["unusual_columns"].str.split(";").str.len().eq(3).all()
    assert set(scores["unusual_columns"].str.split(";").explode()) <= set(frame.columns)
    capsys.readouterr()
    assert main(["anomaly", str(tmp_path / "run"), "--data", str(tmp_path / "normal.csv"), "--correction", "complexity"]) == 2
    assert "measures images' PNG lengths" in capsys.readouterr().err


def test_gan_latent_inversion_reconstructs_the_generators_own_images_and_not_noise(monkeypatch):
    monkeypatch.setattr(anomaly, "INVERSION_ENCODER_STEPS", 300)
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    gan = genlab.create("dcgan", data=data).eval()
    weights = {k: v.clone() for k, v in gan.state_dict().items()}
    normal = gan.sample(500, generator=torch.Generator().manual_seed(1))  # in G's range: z* exists
    made = gan.sample(20, generator=torch.Generator().manual_seed(4))
    noise = torch.rand(20, 1, 8, 8, generator=torch.Generator().manual_seed(2))
    tested = torch.cat([made, noise])
    with pytest.raises(ConfigError, match=r"encoder is trained on normal data: call fit"):
        detector(gan, "inversion").anomaly_scores(tested)
    with torch.no_grad():  # what a random z misses by: the residual of an unfitted inversion
        unfitted = (gan.sample(20, generator=torch.Generator().manual_seed(9)) - made).pow(2).flatten(1).mean(1).median()
    encoded = detector(gan, "inversion", seed=3).fit(normal)  # f-AnoGAN: z* = E(x)
    refined = detector(gan, "inversion", seed=3, inversion_steps=100).fit(normal)  # AnoGAN's Adam steps from E(x)
    for found in (encoded, refined):
        maps = found.score_map(tested)
        torch.testing.assert_close(found.anomaly_scores(tested), maps.flatten(1).mean(1))
    residual, closer = encoded.anomaly_scores(tested), refined.anomaly_scores(tested)
    assert residual[:20].mean() < unfitted / 2 and residual[:20].max() < 1e-3 < 1e-2 < residual[20:].min()
    assert closer[:20].max() < 1e-4 and closer[:20].mean() < residual[:20].mean() / 5
    assert all(torch.equal(v, gan.state_dict()[k]) for k, v in weights.items())  # only E and z were fitted
    assert all(p.requires_grad for p in gan.generator.parameters())


def test_cli_inversion_learns_its_encoder_on_the_runs_train_split_and_thresholds_on_val(tmp_path, monkeypatch, capsys):
    from genlab.cli.main import main
    from genlab.models.gan.model import GAN

    monkeypatch.setattr(anomaly, "INVERSION_ENCODER_STEPS", 5)
    seen = {}
    original = GAN.fit_inverse_encoder

    def spy(self, x, *args, **kwargs):
        seen["rows"] = len(x)
        return original(self, x, *args, **kwargs)

    monkeypatch.setattr(GAN, "fit_inverse_encoder", spy)
    tiny = ["--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "2"]
    assert main(["train", "dcgan", "--data", "digits", "--out", str(tmp_path / "run"), *tiny]) == 0
    out = tmp_path / "scores.csv"
    capsys.readouterr()
    assert main(["anomaly", str(tmp_path / "run"), "--data", "digits", "--score", "inversion", "--inversion-steps", "2",
                 "--no-pictures", "--out", str(out)]) == 0
    digits = genlab.data.load("digits")
    assert seen["rows"] == len(digits.split("train"))
    assert "scored by inversion" in capsys.readouterr().out
    scores = pd.read_csv(out)
    assert len(scores) == len(digits) and np.isfinite(scores["score"]).all()
    assert main(["anomaly", str(tmp_path / "run"), "--data", "digits", "--score", "inversion", "--inversion-steps", "-1",
                 "--out", str(out)]) == 2
    assert "inversion_steps=-1 must be an integer >= 0" in capsys.readouterr().err
