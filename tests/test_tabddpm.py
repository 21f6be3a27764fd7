"""The `tabddpm` model: its samplers driven by exact predictions reproduce known
distributions, conditioning is exact, and a short training run learns a mixed-type table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import genlab
from genlab.apps.sampling import parse_where
from genlab.cli.main import main
from genlab.data.tables import table_dataset
from genlab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

Z = 4.0  # standard errors allowed for sampling noise


def tiny_model(data, **fields):
    torch.manual_seed(0)
    return genlab.create("tabddpm", data=data, **{"hidden": (32,), "sampling_steps": 20, **fields})


def test_layout_and_conditioning_columns(shop_table):
    data = table_dataset(shop_table(), name="shop", target="region")
    model = tiny_model(data)
    assert model.condition_columns == ("region",) and model.num_classes == 3
    assert [b[0] for b in model.generated_blocks] == ["size", "rating"]  # rating's [present, missing] block
    assert len(model.continuous) == 2  # price and rating values
    assert tiny_model(data, condition_on=("region", "size")).condition_columns == ("region", "size")
    assert tiny_model(data, condition_on=("",)).condition_columns == ()
    with pytest.raises(ConfigError, match="column 'price' is numeric"):
        tiny_model(data, condition_on=("price",))
    with pytest.raises(ConfigError, match="condition_on names 'colour', not a column"):
        tiny_model(data, condition_on=("colour",))
    with pytest.raises(ConfigError, match="built for table data"):
        genlab.create("tabddpm", data=genlab.data.load("digits"))
    # dropout acts in training and not in evaluation
    dropped = tiny_model(data, dropout=0.5)
    x, t = torch.randn(8, dropped.net.dim), torch.full((8,), 500.0)
    assert not torch.equal(dropped.net(x, t), dropped.net(x, t))
    dropped.eval()
    assert torch.equal(dropped.net(x, t), dropped.net(x, t))


def test_condition_frequencies_and_exact_conditioning(shop_table):
    frame = shop_table()
    data = table_dataset(frame, name="shop", target="region")
    model = tiny_model(data, condition_on=("region", "size"))
    model.initialize(data.train, torch.Generator().manual_seed(0))
    train = data.train.frame
    joint = pd.crosstab(train["region"], train["size"], normalize=True)  # categories in sorted order
    torch.testing.assert_close(model.condition_frequencies.reshape(3, 2).double(),
                               torch.tensor(joint.to_numpy()), rtol=0, atol=1e-7)
    generator = torch.Generator().manual_seed(1)
    n = 4000
    rows = data.decode_rows(model.sample(n, generator=generator))
    # unconditional: the conditioning columns come from their training joint
    shares = pd.crosstab(rows["region"], rows["size"], normalize=True).reindex_like(joint).to_numpy()
    se = np.sqrt(joint.to_numpy() * (1 - joint.to_numpy()) / n)
    assert (np.abs(shares - joint.to_numpy()) < Z * se).all()
    # given region = north (index 1 of east, north, south): every row north, size from p(size | north)
    north = data.decode_rows(model.sample_where(n, {"region": 1}, generator=generator))
    assert (north["region"] == "north").all()
    p_big = joint.loc["north", "big"] / joint.loc["north"].sum()
    assert abs((north["size"] == "big").mean() - p_big) < Z * math.sqrt(p_big * (1 - p_big) / n)
    # labels through sample(cond=...), as `genlab sample --class` gives them
    south = data.decode_rows(model.sample(50, cond=torch.full((50,), 2), generator=generator))
    assert (south["region"] == "south").all()


def test_impossible_and_unknown_conditions_fail_clearly(shop_table):
    frame = shop_table()
    frame.loc[frame["region"] == "east", "size"] = "small"  # no big shop in the east
    data = table_dataset(frame, name="shop", target="region")
    model = tiny_model(data, condition_on=("region", "size"))
    model.initialize(data.train, torch.Generator().manual_seed(0))
    with pytest.raises(ConfigError, match="no training row has"):
        model.sample_where(5, {"region": 0, "size": 0})
    with pytest.raises(ConfigError, match="cannot condition on rating: it conditions on region, size; retrain with"):
        model.sample_where(5, {"rating": 0})


@pytest.mark.parametrize("sampler, steps", [("ddim", 200), ("ancestral", 1000)])
def test_exact_predictions_reproduce_a_gaussian_and_the_category_marginals(sampler, steps):
    """A network that returns the exact eps-prediction of N(mu, s^2) numbers and the true category
    probabilities: the samplers must give back those distributions (independent columns)."""
    rng = np.random.default_rng(0)
    frame = pd.DataFrame({"x": rng.normal(size=500), "c": rng.choice(["a", "b", "c"], 500)})
    data = table_dataset(frame, name="toy", numeric="standard")
    model = tiny_model(data, sampling_steps=steps, sampler=sampler)
    mu, s = 0.7, 0.5
    probs = torch.tensor([0.6, 0.3, 0.1])
    schedule = model.schedule

    def exact(numbers, states, t):
        alpha, sigma = schedule.alpha(t)[:, None], schedule.sigma(t)[:, None]
        # x_t ~ N(alpha mu, alpha^2 s^2 + sigma^2): E[eps | x_t] = sigma (x_t - alpha mu) / (alpha^2 s^2 + sigma^2)
        eps = sigma * (numbers - alpha * mu) / (alpha**2 * s**2 + sigma**2)
        return eps, [probs.log().expand(len(numbers), 3)]

    model._predict = exact
    n = 10_000
    x = model.sample(n, generator=torch.Generator().manual_seed(0))
    values = x[:, 0].double()
    assert abs(values.mean() - mu) < Z * s / math.sqrt(n) and abs(values.std() - s) < Z * s / math.sqrt(2 * n) + 0.003
    shares = x[:, 1:4].mean(0).double()
    assert torch.allclose(shares, probs.double(), atol=Z * math.sqrt(0.25 / n))


def test_training_learns_the_dependencies_between_columns(shop_table, check_shop_dependencies):
    data = table_dataset(shop_table(2000), name="shop", target="region")
    model = tiny_model(data, hidden=(64, 64), sampling_steps=40)
    genlab.fit(model, data, max_steps=600, batch_size=256, lr=3e-3, progress=False, sample_every=0, num_samples=4)
    check_shop_dependencies(model.eval(), data)


def test_where_from_the_cli_and_for_class_conditional_runs(shop_table, tmp_path, capsys):
    frame = shop_table(300)
    frame.to_csv(tmp_path / "shop.csv", index=False)
    tiny = ["--batch-size", "64", "--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "3"]
    assert main(["train", "tabddpm", "--data", str(tmp_path / "shop.csv"), "--data-option", "target=region",
                 "--out", str(tmp_path / "run"), "--set", "hidden=16", "--set", "sampling_steps=3", *tiny]) == 0
    assert main(["sample", str(tmp_path / "run"), "-n", "30", "--where", "region=east", "--out", str(tmp_path / "east.csv")]) == 0
    rows = pd.read_csv(tmp_path / "east.csv")
    assert list(rows.columns) == list(frame.columns) and (rows["region"] == "east").all() and len(rows) == 30
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "run"), "--where", "region=west", "--out", str(tmp_path / "x.csv")]) == 2
    assert "'west' is not a value of 'region'; its values are east, north, south" in capsys.readouterr().err
    # a class-conditional model of another family takes its label column by --where too
    assert main(["train", "cgan", "--data", str(tmp_path / "shop.csv"), "--data-option", "target=region",
                 "--out", str(tmp_path / "cgan"), "--set", "hidden=16", *tiny]) == 0
    assert main(["sample", str(tmp_path / "cgan"), "-n", "20", "--where", "region=north", "--out", str(tmp_path / "n.csv")]) == 0
    assert (pd.read_csv(tmp_path / "n.csv")["region"] == "north").all()
    assert main(["sample", str(tmp_path / "cgan"), "--where", "size=big", "--out", str(tmp_path / "x.csv")]) == 2
    assert "'cgan' cannot condition on size" in capsys.readouterr().err
    assert parse_where(["a=1,b=x y"]) == {"a": "1", "b": "x y"}
    with pytest.raises(ConfigError, match="write COLUMN=VALUE"):
        parse_where(["species"])


def test_a_run_saved_when_tabddpm_was_named_tabular_still_loads_and_resumes(tmp_path, capsys):
    tiny = ["--batch-size", "32", "--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4"]
    run = tmp_path / "run"
    assert main(["train", "tabddpm", "--data", "iris", "--out", str(run), "--set", "hidden=16", "--set", "sampling_steps=3",
                 "--max-steps", "2", *tiny]) == 0
    config = run / "config.yaml"
    config.write_text(config.read_text().replace("model: tabddpm", "model: tabular", 1))  # as such runs were saved
    old = genlab.load(run)
    assert old.name == "tabddpm" and old.config.sampling_steps == 3
    assert main(["train", "tabddpm", "--out", str(run), "--resume", "--max-steps", "4", *tiny]) == 0
    assert "model: tabddpm" in config.read_text()
    capsys.readouterr()
    assert main(["train", "tabular", "--out", str(run), "--resume", "--max-steps", "6", *tiny]) == 2
    assert "it trained tabddpm; use `genlab train tabddpm" in capsys.readouterr().err
