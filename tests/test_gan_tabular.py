"""CTGAN (`genlab.models.gan.tabular`): training-by-sampling draws the categories by their
log-frequency and real rows that hold them, the condition's cross-entropy, packed critic inputs,
and rows that hold one category per group, the asked label included."""

from __future__ import annotations

import math

import numpy as np
import pandas as pd
import pytest
import torch
import torch.nn.functional as F

import genlab
from genlab.errors import ConfigError


@pytest.fixture(autouse=True)
def one_thread():
    torch.set_num_threads(1)


@pytest.fixture(scope="module")
def skewed():
    rng = np.random.default_rng(0)
    n = 400
    frame = pd.DataFrame({
        "x": rng.normal(size=n),
        "kind": np.where(np.arange(n) < 380, "common", "rare"),  # 380 / 20
        "colour": rng.choice(["red", "green", "blue"], n, p=[0.6, 0.3, 0.1]),
    })
    return genlab.data.table_dataset(frame, name="skewed", target="kind")


def _model(data, **fields):
    model = genlab.create("ctgan", data=data, hidden=(16,), latent_dim=4, pac=2, **fields)
    model.initialize(data.split("train"), torch.Generator().manual_seed(0))
    return model


def test_training_by_sampling_draws_categories_by_log_frequency(skewed):
    model = _model(skewed)
    train_rows = skewed.split("train").tensors()[0]
    counts = model.category_counts
    assert counts.sum() == len(train_rows) * len(model.groups)  # every row counted once per group
    torch.manual_seed(0)
    n = 60_000
    group, flat = model._condition(n, torch.log1p(counts))
    assert abs((group == 0).float().mean() - 1 / len(model.groups)) < 0.01  # groups uniformly
    for g, (_, start, stop) in enumerate(model.groups):
        offsets = model.group_offsets
        chosen = flat[group == g] - offsets[g]
        assert chosen.min() >= 0 and chosen.max() < stop - start  # a category of the chosen group
        expected = torch.log1p(counts[offsets[g]:offsets[g + 1]])
        frequencies = torch.bincount(chosen, minlength=stop - start).float() / len(chosen)
        torch.testing.assert_close(frequencies, expected / expected.sum(), atol=0.01, rtol=0)
    # each drawn real row holds the drawn category, and every row of it can be drawn
    rows = model._real_rows(group, flat, n)
    assert torch.equal(model._categories(rows).gather(1, group.unsqueeze(1)).squeeze(1), flat)
    rare = [i for i, (name, _, _) in enumerate(model.groups) if name == "kind"][0]
    rare_rows = rows[(group == rare) & (flat == model.group_offsets[rare] + 1)]
    assert len(torch.unique(rare_rows, dim=0)) == int(counts[model.group_offsets[rare] + 1])


def test_condition_loss_and_packed_critic(skewed):
    model = _model(skewed)
    raw = torch.randn(6, skewed.spec.dim)
    group = torch.tensor([0, 1, 0, 1, 0, 1])
    flat = model.group_offsets[group] + torch.tensor([0, 1, 1, 2, 0, 0])
    expected = []
    for g, f, r in zip(group, flat, raw):
        _, start, stop = model.groups[g]
        expected.append(F.cross_entropy(r[start:stop].unsqueeze(0), (f - model.group_offsets[g]).unsqueeze(0)))
    torch.testing.assert_close(model._condition_loss(raw, flat, group), torch.stack(expected).mean())
    packed = model._packed(raw, model._one_hot(flat, len(flat)))
    assert packed.shape == (3, 2 * (skewed.spec.dim + model.cond_dim))
    assert torch.equal(packed[1, : skewed.spec.dim], raw[2])  # rows 2 and 3 in one critic input
    with pytest.raises(ConfigError, match="pac"):
        model._pac_batch(1)


def test_samples_hold_one_category_per_group_and_the_asked_label(skewed):
    torch.manual_seed(0)
    model = _model(skewed).eval()
    x = model.sample(500, generator=torch.Generator().manual_seed(1))
    for _, start, stop in model.groups:
        assert torch.equal(x[:, start:stop].sum(1), torch.ones(500))
    rows = skewed.decode_rows(model.sample(50, cond=torch.tensor([1])))
    assert (rows["kind"] == "rare").all()
    again = model.sample(500, generator=torch.Generator().manual_seed(1))
    assert torch.equal(x, again)


def test_ctgan_trains_and_holds_its_conditions(skewed):
    torch.manual_seed(0)
    model = genlab.create("ctgan", data=skewed, hidden=(64, 64), latent_dim=16, pac=4)
    run = genlab.fit(model, skewed, max_steps=500, batch_size=64, log_every=50, progress=False, sample_every=0,
                     checkpoint_every=0)
    losses = [r["condition"] for r in run.history if r["split"] == "train" and "condition" in r]
    assert losses[-1] < 0.75 * losses[0]  # G learns to hold the category it is given (0.87 -> 0.50 seen)
    rows = skewed.decode_rows(run.sampling_model.eval().sample(2000, generator=torch.Generator().manual_seed(0)))
    assert set(rows["colour"]) == {"red", "green", "blue"} and set(rows["kind"]) == {"common", "rare"}  # none lost or invented


def test_ctgan_on_numbers_only_has_no_condition():
    data = genlab.data.table_dataset(pd.DataFrame({"a": np.arange(40.0), "b": np.arange(40.0) ** 2}), name="numbers")
    model = genlab.create("ctgan", data=data, hidden=(8,), latent_dim=4, pac=2)
    assert model.cond_dim == 0 and model.num_classes is None
    torch.manual_seed(0)
    run = genlab.fit(model, data, max_steps=3, batch_size=8, progress=False, sample_every=0, checkpoint_every=0)
    assert run.history[-1]["condition"] == 0.0
    x = run.sampling_model.sample(5, generator=torch.Generator().manual_seed(0))
    assert x.shape == (5, 2) and torch.isfinite(x).all()


def test_ctgan_refuses_what_it_cannot_model():
    with pytest.raises(ConfigError):
        genlab.create("ctgan", data=genlab.data.load("digits"))
    with pytest.raises(ConfigError, match="pac"):
        genlab.create("ctgan", data=genlab.data.load("iris"), pac=0)
    assert math.isclose(genlab.create("ctgan", data=genlab.data.load("iris")).config.gp_weight, 10.0)
