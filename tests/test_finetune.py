"""Fine-tuning (`init`, `freeze`, `lora_rank`): a run starts from another run's weights, refuses
weights that do not fit with the layers named, holds frozen parts fixed, and LoRA's adapters are
the low-rank update of Hu et al. 2022, merged into weights that `genlab.load` reads."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

import genlab
from genlab.cli.main import main
from genlab.errors import ConfigError
from genlab.nn.lora import LoRA, add_lora, lora_layers, merge_lora_, plain_state_dict
from genlab.train.finetune import load_initial_weights
from genlab.train.run import read_metrics

QUIET = {"progress": False, "sample_every": 0, "tensorboard": False}


@pytest.fixture(scope="module")
def pretrained(tmp_path_factory):
    out = tmp_path_factory.mktemp("pretrained") / "vae"
    torch.manual_seed(0)
    data = genlab.data.load("digits")
    genlab.fit(genlab.create("vae", data=data, latent_dim=4), data, max_steps=150, ema_decay=0.0, out=out, **QUIET)
    return out


def test_a_fine_tuned_model_starts_from_the_runs_ema_weights(pretrained):
    data = genlab.data.load("digits")
    model = genlab.create("vae", data=data, latent_dim=4)
    load_initial_weights(model, pretrained)
    expected = genlab.load(pretrained).state_dict()  # the weights the run samples with (its last: no EMA here)
    assert all(torch.equal(v, expected[k]) for k, v in model.state_dict().items())
    torch.manual_seed(1)
    tuned = genlab.fit(genlab.create("vae", data=data, latent_dim=4), data, max_steps=2, log_every=1, init=pretrained, **QUIET)
    torch.manual_seed(1)
    scratch = genlab.fit(genlab.create("vae", data=data, latent_dim=4), data, max_steps=2, log_every=1, **QUIET)
    first = [next(r["loss"] for r in run.history if r["split"] == "train") for run in (tuned, scratch)]
    ended = [r["loss"] for r in read_metrics(pretrained) if r["split"] == "train"][-1]
    assert first[0] < 1.1 * ended and first[0] < 0.7 * first[1]  # it goes on from where the run ended


def test_weights_that_do_not_fit_are_refused_with_the_layers_named(pretrained, tmp_path):
    data = genlab.data.load("digits")
    with pytest.raises(ConfigError, match=r"its weights do not fit this vae \(\d+ layer\(s\) differ: .*run \(\d+, \d+\), model \(\d+, \d+\)"):
        load_initial_weights(genlab.create("vae", data=data, latent_dim=6), pretrained)
    with pytest.raises(ConfigError, match="that run trained vae, not ae; fine-tune it as `genlab train vae --init"):
        load_initial_weights(genlab.create("ae", data=data), pretrained)
    np.savez(tmp_path / "big.npz", x=np.random.default_rng(0).random((40, 1, 12, 12)).astype(np.float32))
    faces = genlab.data.load(str(tmp_path / "big.npz"))
    with pytest.raises(ConfigError, match=r"trained on samples of shape \(1, 8, 8\), and the data has \(1, 12, 12\); .*resize=8"):
        load_initial_weights(genlab.create("vae", data=faces, latent_dim=4), pretrained)


def test_frozen_parameters_stay_fixed_and_an_unknown_prefix_is_refused(pretrained):
    data = genlab.data.load("digits")
    model = genlab.create("vae", data=data, latent_dim=4)
    load_initial_weights(model, pretrained)
    before = {k: v.clone() for k, v in model.named_parameters()}
    genlab.fit(model, data, max_steps=5, freeze=("encoder",), ema_decay=0.0, **QUIET)
    moved = {k for k, v in model.named_parameters() if not torch.equal(v, before[k])}
    assert moved and all(not k.startswith("encoder.") for k in moved)
    assert all(not p.requires_grad for k, p in model.named_parameters() if k.startswith("encoder."))
    with pytest.raises(ConfigError, match=r"--freeze encodr: no parameters of vae are named so; its modules are .*encoder"):
        genlab.fit(genlab.create("vae", data=data), data, max_steps=1, freeze=("encodr",), **QUIET)


@pytest.mark.parametrize("layer", [nn.Linear(6, 5), nn.Conv2d(3, 4, 3, stride=2, padding=1)])
def test_lora_is_the_low_rank_update_and_merges_exactly(layer):
    torch.manual_seed(0)
    x = torch.randn(2, 6) if isinstance(layer, nn.Linear) else torch.randn(2, 3, 9, 9)
    model = nn.Sequential(layer)
    expected = layer(x).detach()
    assert add_lora(model, rank=2, alpha=3.0) == 1
    adapted = model[0]
    assert isinstance(adapted, LoRA) and adapted.scale == 1.5
    torch.testing.assert_close(model(x), expected)  # B = 0 at the start: the pretrained function
    trainable = [p for p in model.parameters() if p.requires_grad]
    if isinstance(layer, nn.Linear):
        assert sum(p.numel() for p in trainable) == 2 * (6 + 5)  # r (in + out)
    nn.init.normal_(adapted.up.weight)
    with torch.no_grad():
        by_hand = expected + 1.5 * adapted.up(adapted.down(x))
        merged = type(layer)(*((6, 5) if isinstance(layer, nn.Linear) else (3, 4, 3)),
                             **({} if isinstance(layer, nn.Linear) else {"stride": 2, "padding": 1}))
        merged.load_state_dict({k.removeprefix("0."): v for k, v in plain_state_dict(model).items()})
        torch.testing.assert_close(model(x), by_hand)
        torch.testing.assert_close(merged(x), by_hand, atol=1e-5, rtol=1e-5)
        merge_lora_(model)
    assert not list(lora_layers(model)) and type(model[0]) is type(layer)
    torch.testing.assert_close(model(x), by_hand, atol=1e-5, rtol=1e-5)


def test_lora_leaves_masked_layers_alone_and_a_lora_run_saves_plain_weights(pretrained, tmp_path):
    made = genlab.create("made", data=genlab.data.load("digits"))
    masked = [m for m in made.modules() if isinstance(m, nn.Linear) and type(m) is not nn.Linear]
    plain = sum(1 for m in made.modules() if type(m) is nn.Linear)
    assert masked and add_lora(made, rank=2) == plain  # the masked layers are not adapted: an update would break the order
    assert all(type(layer.base) is nn.Linear for _, layer in lora_layers(made))
    assert all(not isinstance(m, LoRA) for m in made.modules() if any(m is child for child in masked))
    assert sum(1 for m in made.modules() if isinstance(m, nn.Linear) and type(m) is not nn.Linear) == len(masked)
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    run = genlab.fit(genlab.create("vae", data=data, latent_dim=4), data, max_steps=20, init=pretrained, lora_rank=2,
                     out=tmp_path / "lora", **QUIET)
    assert not list(lora_layers(run.model))  # merged at the end
    loaded = genlab.load(tmp_path / "lora")
    x = data.tensors()[0][:8]
    with torch.no_grad():
        torch.testing.assert_close(loaded.encode(x).mean, run.sampling_model.eval().encode(x).mean)
        moved = (loaded.encode(x).mean - genlab.load(pretrained).encode(x).mean).abs().max()
    assert moved > 1e-4  # the adapters trained
    with pytest.raises(ConfigError, match="cannot resume with lora_rank=4 .*adapters of the run's rank"):
        genlab.fit(genlab.create("vae", data=data, latent_dim=4), data, max_steps=30, out=tmp_path / "lora", resume=True,
                   lora_rank=4, **QUIET)
    resumed = genlab.fit(genlab.create("vae", data=data, latent_dim=4), data, max_steps=30, out=tmp_path / "lora", resume=True, **QUIET)
    assert resumed.step == 30 and not list(lora_layers(resumed.model))


def test_cli_fine_tunes_with_the_runs_architecture(pretrained, tmp_path, capsys):
    tiny = ["--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "3"]
    assert main(["train", "vae", "--data", "digits", "--init", str(pretrained), "--lora-rank", "2",
                 "--out", str(tmp_path / "tuned"), *tiny]) == 0
    assert genlab.load(tmp_path / "tuned").config.latent_dim == 4  # taken from the run, not the default
    capsys.readouterr()
    assert main(["train", "vae", "--data", "digits", "--init", str(pretrained), "--set", "latent_dim=3",
                 "--out", str(tmp_path / "bad"), *tiny]) == 2
    err = capsys.readouterr().err
    assert "its weights do not fit this vae" in err and "Traceback" not in err
    assert main(["train", "ae", "--data", "digits", "--init", str(pretrained), "--out", str(tmp_path / "bad2"), *tiny]) == 2
    assert "that run trained vae, not ae" in capsys.readouterr().err
