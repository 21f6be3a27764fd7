"""The tabular diffusion model: its samplers driven by exact predictions reproduce known
distributions, conditioning is exact, and a short training run learns a mixed-type table."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch

import genlab
from genlab.apps.sampling import draw_samples, parse_where
from genlab.cli.main import main
from genlab.data.tables import table_dataset
from genlab.errors import ConfigError

pytestmark = pytest.mark.usefixtures("one_thread")

Z = 4.0  # standard errors allowed for sampling noise


def shop_table(n: int = 1200, seed: int = 0) -> pd.DataFrame:
    """A mixed table whose columns depend on each other: region -> size -> price; missing ratings."""
    rng = np.random.default_rng(seed)
    region = rng.choice(["north", "south", "east"], n, p=[0.5, 0.3, 0.2])
    big = rng.random(n) < np.where(region == "north", 0.8, 0.2)
    price = np.where(big, rng.normal(40, 3, n), rng.normal(10, 1, n)).round(2)
    rating = pd.Series(rng.integers(1, 6, n)).astype(float)
    rating[rng.random(n) < 0.25] = np.nan
    return pd.DataFrame({"region": region, "size": np.where(big, "big", "small"), "price": price, "rating": rating})


def tiny_model(data, **fields):
    torch.manual_seed(0)
    return genlab.create("tabular", data=data, **{"hidden": (32,), "sampling_steps": 20, **fields})


def test_layout_and_conditioning_columns():
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
        genlab.create("tabular", data=genlab.data.load("digits"))
    # dropout acts in training and not in evaluation
    dropped = tiny_model(data, dropout=0.5)
    x, t = torch.randn(8, dropped.net.dim), torch.full((8,), 500.0)
    assert not torch.equal(dropped.net(x, t), dropped.net(x, t))
    dropped.eval()
    assert torch.equal(dropped.net(x, t), dropped.net(x, t))


def test_condition_frequencies_and_exact_conditioning():
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


def test_impossible_and_unknown_conditions_fail_clearly():
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


def test_training_learns_the_dependencies_between_columns():
    frame = shop_table(2000)
    data = table_dataset(frame, name="shop", target="region")
    model = tiny_model(data, hidden=(64, 64), sampling_steps=40)
    genlab.fit(model, data, max_steps=600, batch_size=256, lr=3e-3, progress=False, sample_every=0, num_samples=4)
    model.eval()
    generator = torch.Generator().manual_seed(0)
    north = data.decode_rows(model.sample_where(1000, {"region": 1}, generator=generator))
    east = data.decode_rows(model.sample_where(1000, {"region": 0}, generator=generator))
    # p(big | north) = 0.8, p(big | east) = 0.2: conditioning carries through the learned network
    assert 0.7 < (north["size"] == "big").mean() < 0.9 and 0.1 < (east["size"] == "big").mean() < 0.3
    big = north[north["size"] == "big"]["price"]
    small = north[north["size"] == "small"]["price"]
    assert abs(big.median() - 40) < 2.5 and abs(small.median() - 10) < 1.5  # price follows size
    assert 0.15 < north["rating"].isna().mean() < 0.35  # missing ratings at their rate, 25%
    assert set(north["rating"].dropna()) <= {1.0, 2.0, 3.0, 4.0, 5.0}


def test_where_from_the_cli_and_for_class_conditional_runs(tmp_path, capsys):
    frame = shop_table(300)
    frame.to_csv(tmp_path / "shop.csv", index=False)
    tiny = ["--batch-size", "64", "--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "3"]
    assert main(["train", "tabular", "--data", str(tmp_path / "shop.csv"), "--data-option", "target=region",
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
