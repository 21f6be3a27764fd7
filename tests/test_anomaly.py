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
from genlab.apps.anomaly import SCORES, AnomalyDetector, available_scores, detector
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
    model = genlab.create("vae", data=data, latent_dim=2, hidden=(16,), iw_samples=8).eval()
    found = detector(model, seed=3)
    assert found.score.name == "bound"  # the VAE's principled score first; reconstruction on request
    x = data.split("train").tensors()[0][:40]
    once, again = found.anomaly_scores(x), found.anomaly_scores(x)
    assert torch.equal(once, again)
    with torch.no_grad():
        reference = model.nll_bound(x, generator=torch.Generator().manual_seed(3))
    torch.testing.assert_close(once, reference)
    assert detector(model, "reconstruction").score.name == "reconstruction"


def test_a_diffusion_models_ode_likelihood_finds_the_ring_centre_and_its_outside():
    normal = genlab.data.load("8gaussians", n=2000)
    torch.manual_seed(0)
    model = genlab.create("ddpm", data=normal, hidden=(64, 64))
    # at 600 steps the learnt density still fills the ring's centre (AUROC 0.0 there, 1.0 outside)
    genlab.fit(model, normal, max_steps=2000, batch_size=256, progress=False, sample_every=0, checkpoint_every=0, ema_decay=0.0)
    found = detector(model, seed=5, batch_size=1000)
    assert found.score.name == "ode"
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
    with pytest.raises(ConfigError, match="unknown anomaly score 'density'; choose one of nll, bound, reconstruction, ode or auto"):
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
    gan = genlab.create("gan", data=genlab.data.load("8gaussians", n=64))
    with pytest.raises(ConfigError, match="offers none of the anomaly scores"):
        detector(gan)
    assert list(SCORES) == ["nll", "bound", "reconstruction", "ode"]


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
    assert main(["anomaly", str(tmp_path / "run"), "--data", str(tmp_path / "tested.csv"), "--out", str(out)]) == 0
    assert "100 samples scored by reconstruction" in capsys.readouterr().out
    scores = pd.read_csv(out)
    assert list(scores.columns) == ["index", "source", "score", "anomaly", "unusual_columns"]
    assert scores["index"].tolist() == list(range(100)) and scores["source"].tolist() == list(range(1, 101))
    assert set(scores["anomaly"]) <= {0, 1}
    labels = [1] * 20 + [0] * 80
    assert roc_auc_score(labels, scores["score"]) > 0.9  # a price that contradicts the size
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
