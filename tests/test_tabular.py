"""Latent diffusion for tables (`tabular`, TabSyn's design): stage 1 trains the VAE once and freezes it, the
latents are standardised, the loss is the diffusion's on those latents with the rows' cells as
labels, conditioning is exact, a short run learns the columns' dependencies, and a saved run
samples as the trained one."""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import pandas as pd
import pytest
import torch

import genlab
from genlab.cli.main import main
from genlab.data.dataset import Batch
from genlab.data.tables import table_dataset
from genlab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

Z = 4.0  # standard errors allowed for sampling noise


def tiny_model(data, **fields):
    torch.manual_seed(0)
    small = {"latent_dim": 6, "hidden": (32,), "autoencoder_hidden": (32,), "autoencoder_steps": 200, "sample_steps": 10}
    return genlab.create("tabular", data=data, **{**small, **fields})


def test_stage_one_trains_the_autoencoder_then_freezes_it_and_standardises_its_latents(shop_table):
    data = table_dataset(shop_table(), name="shop", target="region")
    model = tiny_model(data, condition_on=("region", "size"))
    x = data.train.tensors()[0]
    before = [p.clone() for p in model.autoencoder.parameters()]

    def size_recovered() -> float:  # the share of rows whose decoded mean row has their own size
        with torch.no_grad():
            decoded = model.autoencoder.decoder_mean(model.autoencoder.decode(model.autoencoder.encode(x).mean))
        start, stop = next((s, e) for name, s, e in model.categorical if name == "size")
        return (decoded[:, start:stop].argmax(1) == x[:, start:stop].argmax(1)).double().mean().item()

    untrained = size_recovered()
    run = genlab.fit(model, data, max_steps=20, progress=False, sample_every=0, checkpoint_every=0)
    assert size_recovered() > 0.97 and untrained < 0.9  # stage 1 trained the VAE
    assert not any(p.requires_grad for p in model.autoencoder.parameters())
    # z_norm = (mu(x) - m) / s over the training rows: mean 0, std 1 per latent dimension
    z = model.diffusion.normalize(model.encode(x))
    torch.testing.assert_close(z.mean(0), torch.zeros(6), atol=1e-4, rtol=0)
    torch.testing.assert_close(z.std(0), torch.ones(6), atol=1e-4, rtol=0)
    # the conditioning cells' frequencies are the training rows' joint of region and size
    train = data.train.frame
    joint = pd.crosstab(train["region"], train["size"], normalize=True)
    torch.testing.assert_close(model.condition_frequencies.reshape(3, 2).double(), torch.tensor(joint.to_numpy()), atol=1e-7, rtol=0)
    # the EMA copy holds the same VAE; a second fit trains the denoiser alone, the VAE stays stage 1's
    trained = [p.clone() for p in model.autoencoder.parameters()]
    assert any(not torch.equal(a, b) for a, b in zip(before, trained))
    assert all(torch.equal(a, b) for a, b in zip(trained, run.sampling_model.autoencoder.parameters()))
    denoiser = [p.clone() for p in model.diffusion.parameters()]
    genlab.fit(model, data, max_steps=20, progress=False, sample_every=0, checkpoint_every=0)
    assert all(torch.equal(a, b) for a, b in zip(trained, model.autoencoder.parameters()))
    assert any(not torch.equal(a, b) for a, b in zip(denoiser, model.diffusion.parameters()))
    assert math.isfinite(run.history[-1]["loss"])
    # the anomaly detector's reconstruction score reads the stage-1 VAE
    from genlab.apps.anomaly import available_scores

    assert available_scores(model) == ["reconstruction"]
    torch.testing.assert_close(model.reconstruct(x[:5]), model.autoencoder.reconstruct(x[:5]))


def test_the_loss_is_the_denoising_loss_on_the_standardised_latents_with_the_cells_as_labels(shop_table):
    """By hand: x0 = (mu(x) - m) / s, x_t = alpha x0 + sigma eps, |eps_theta(x_t, t, cell) - eps|^2."""
    data = table_dataset(shop_table(300), name="shop", target="region")
    model = tiny_model(data, condition_on=("region", "size"), autoencoder_steps=5, label_dropout=0.0)
    model.initialize_from_data(data.train, torch.Generator().manual_seed(0))
    x = data.train.tensors()[0][:64]
    frame = data.train.frame.iloc[:64]
    regions, sizes = ["east", "north", "south"], ["big", "small"]
    cells = torch.tensor([regions.index(r) * 2 + sizes.index(s) for r, s in zip(frame["region"], frame["size"])])
    torch.manual_seed(3)
    ours = model.loss(Batch(x)).total
    diffusion = model.diffusion
    with torch.no_grad():
        mu = model.autoencoder.encode(x).mean
    x0 = (mu - diffusion.data_shift) / diffusion.data_scale
    torch.manual_seed(3)
    t = diffusion.schedule.training_times(64, device=x.device)
    eps = torch.randn_like(x0)
    x_t = diffusion.schedule.alpha(t)[:, None] * x0 + diffusion.schedule.sigma(t)[:, None] * eps
    eps_hat = diffusion.net(x_t, diffusion.schedule.noise_conditioning(t), cells)
    torch.testing.assert_close(ours, ((eps_hat - eps) ** 2).mean())


def test_conditioning_is_exact_and_unconditional_cells_follow_the_training_joint(shop_table):
    data = table_dataset(shop_table(), name="shop", target="region")
    model = tiny_model(data, condition_on=("region", "size"), autoencoder_steps=5)
    model.initialize_from_data(data.train, torch.Generator().manual_seed(0))
    generator = torch.Generator().manual_seed(1)
    n = 3000
    train = data.train.frame
    joint = pd.crosstab(train["region"], train["size"], normalize=True)
    rows = data.decode_rows(model.sample(n, generator=generator))
    shares = pd.crosstab(rows["region"], rows["size"], normalize=True).reindex_like(joint).fillna(0).to_numpy()
    se = np.sqrt(joint.to_numpy() * (1 - joint.to_numpy()) / n)
    assert (np.abs(shares - joint.to_numpy()) < Z * se).all()
    north = data.decode_rows(model.sample_where(500, {"region": 1}, generator=generator))
    assert (north["region"] == "north").all()
    south = data.decode_rows(model.sample(40, cond=torch.full((40,), 2), generator=generator))
    assert (south["region"] == "south").all()
    encoded = model.sample(10, generator=generator)  # every block one-hot
    for _, start, stop in model.categorical:
        assert torch.equal(encoded[:, start:stop].sum(1), torch.ones(10))
    with pytest.raises(ConfigError, match="cannot condition on rating: it conditions on region, size; retrain with"):
        model.sample_where(5, {"rating": 0})
    with pytest.raises(ConfigError, match="column 'price' is numeric"):
        tiny_model(data, condition_on=("price",))
    with pytest.raises(ConfigError, match="combinations of their values"):
        wide = pd.DataFrame({"a": np.arange(200) % 100, "b": np.arange(200) % 101, "x": np.arange(200.0)}).astype({"a": str, "b": str})
        tiny_model(table_dataset(wide, name="wide"), condition_on=("a", "b"))
    with pytest.raises(ConfigError, match="built for table data"):
        genlab.create("tabular", data=genlab.data.load("digits"))


def test_training_learns_the_dependencies_between_columns(shop_table, check_shop_dependencies):
    data = table_dataset(shop_table(2000), name="shop", target="region")
    model = tiny_model(data, latent_dim=8, hidden=(64, 64), autoencoder_hidden=(64, 64), autoencoder_steps=1500, sample_steps=25)
    genlab.fit(model, data, max_steps=600, batch_size=256, lr=3e-3, progress=False, sample_every=0, checkpoint_every=0)
    check_shop_dependencies(model.eval(), data)  # the condition reaches the latents, the decoder the rest


def test_a_saved_run_samples_as_the_trained_model_and_the_cli_writes_rows(shop_table, tmp_path, capsys):
    frame = shop_table(300)
    frame.to_csv(tmp_path / "shop.csv", index=False)
    assert main(["train", "tabular", "--data", str(tmp_path / "shop.csv"), "--data-option", "target=region",
                 "--out", str(tmp_path / "run"), "--set", "hidden=16", "--set", "autoencoder_hidden=16", "--set", "latent_dim=4",
                 "--set", "autoencoder_steps=20", "--set", "sample_steps=3", "--batch-size", "64", "--no-progress",
                 "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "5"]) == 0
    assert f"next: genlab sample {tmp_path / 'run'} -n 1000 --out synth.csv" in capsys.readouterr().out
    loaded = genlab.load(tmp_path / "run")
    again = genlab.load(tmp_path / "run")
    a = loaded.sample(20, generator=torch.Generator().manual_seed(0))
    assert torch.equal(a, again.sample(20, generator=torch.Generator().manual_seed(0)))
    assert bool(loaded.initialized_from_data)
    # a resumed run keeps stage 1's VAE and trains the denoiser on
    assert main(["train", "tabular", "--out", str(tmp_path / "run"), "--resume", "--max-steps", "8", "--no-progress",
                 "--no-tensorboard", "--sample-every", "0", "--num-samples", "4"]) == 0
    resumed = genlab.load(tmp_path / "run")
    assert all(torch.equal(a, b) for a, b in zip(loaded.autoencoder.state_dict().values(), resumed.autoencoder.state_dict().values()))
    assert any(not torch.equal(a, b) for a, b in zip(loaded.diffusion.state_dict().values(), resumed.diffusion.state_dict().values()))
    assert main(["sample", str(tmp_path / "run"), "-n", "25", "--where", "region=east", "--out", str(tmp_path / "east.csv")]) == 0
    rows = pd.read_csv(tmp_path / "east.csv")
    assert list(rows.columns) == list(frame.columns) and (rows["region"] == "east").all() and len(rows) == 25
    capsys.readouterr()
    assert main(["train", "tabular", "--data", "digits", "--max-steps", "1", "--no-progress"]) == 2
    assert "built for table data" in capsys.readouterr().err


def test_default_budget_follows_the_tables_size(shop_table):
    data = table_dataset(shop_table(300), name="shop", target="region")
    small = genlab.create("tabular", data=data)
    assert small.training_defaults()["max_steps"] == 3000 and small.training_defaults()["batch_size"] == 128
    (vae, options), = small.pretraining(data.train, 3000)
    assert vae is small.autoencoder and options["max_steps"] == 3000 and options["batch_size"] == 128
    for rows, steps in ((10_000, 3000), (20_000, 4000), (53_940, 8000), (1_000_000, 8000)):
        spec = dataclasses.replace(data.spec, rows=rows)
        defaults = genlab.create("tabular", data=spec).training_defaults()
        assert (defaults["max_steps"], defaults["batch_size"]) == (steps, 1024)
    # stage 1 follows the run's own length unless told; pretraining is asked for once
    tiny = tiny_model(data, autoencoder_steps=None)
    (_, options), = tiny.pretraining(data.train, 17)
    assert options["max_steps"] == 17 and options["batch_size"] == 128
    genlab.fit(tiny, data, max_steps=2, progress=False, sample_every=0, checkpoint_every=0)
    assert tiny.pretraining(data.train, 17) == []
