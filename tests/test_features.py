"""genlab.apps.features and `genlab encode`: the codes are the encoder's (checked by hand), each
sample keeps its label and split, a VQ-VAE's indices are its nearest codebook vectors, a table's
label column comes along, and what cannot be encoded is refused in one line."""

from __future__ import annotations

import numpy as np
import pytest
import torch

import genlab
from genlab.apps.features import encode, write_codes
from genlab.cli.main import main
from genlab.errors import ConfigError

TINY = ["--no-progress", "--no-tensorboard", "--sample-every", "0", "--num-samples", "4", "--max-steps", "3"]


def test_cli_codes_of_an_autoencoder_are_its_encoder_outputs_with_labels_and_splits(tmp_path, capsys):
    assert main(["train", "vae", "--data", "digits", "--out", str(tmp_path / "run"), "--set", "latent_dim=3", *TINY]) == 0
    out = tmp_path / "codes" / "latents.npz"
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "run"), "--data", "digits", "--out", str(out)]) == 0
    assert "codes (1797, 3) of vae, with labels, split" in capsys.readouterr().out
    saved = np.load(out, allow_pickle=False)
    data = genlab.data.load("digits")
    x, y = data.tensors()
    model = genlab.load(tmp_path / "run").eval()
    with torch.no_grad():
        expected = model.encode(x).mean  # the posterior mean of q(z | x)
    np.testing.assert_allclose(saved["codes"], expected.numpy(), rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(saved["labels"], y.numpy())
    assert saved["class_names"].tolist() == [str(c) for c in range(10)] and str(saved["model"]) == "vae"
    for split in ("train", "val", "test"):  # each row's split is the one the run trained and held out with
        np.testing.assert_array_equal(np.flatnonzero(saved["split"] == split), np.sort(data._splits[split].numpy()))
    assert "indices" not in saved.files


def test_vq_vae_indices_are_the_nearest_codebook_vectors():
    data = genlab.data.load("digits")
    torch.manual_seed(0)
    model = genlab.create("vq-vae", data=data).eval()
    x = data.tensors()[0][:50]
    codes = encode(model, x)
    with torch.no_grad():
        z_e = model.encode(x)
    assert codes.labels is None and codes.split is None
    torch.testing.assert_close(codes.codes, z_e)
    flat = z_e.movedim(1, -1).reshape(-1, z_e.shape[1])  # (B h w, D)
    by_hand = torch.cdist(flat, model.quantizer.codebook.detach()).argmin(1).reshape(codes.indices.shape)
    assert codes.indices.dtype == torch.long and codes.indices.shape == (50, *z_e.shape[2:])
    assert (codes.indices == by_hand).float().mean() > 0.99  # ties within float error may break either way


def test_a_table_run_encodes_a_csv_with_its_label_column(tmp_path, shop_table, capsys):
    frame = shop_table(300)
    frame.to_csv(tmp_path / "shop.csv", index=False)
    assert main(["train", "ae", "--data", str(tmp_path / "shop.csv"), "--out", str(tmp_path / "run"), *TINY]) == 0
    codes = encode(tmp_path / "run", tmp_path / "shop.csv", label_column="region")
    assert codes.codes.shape[0] == 300 and codes.labels.tolist() == frame["region"].astype(str).tolist()
    assert codes.names[:2] == ["1", "2"]
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "run"), "--data", str(tmp_path / "shop.csv"), "--label-column", "colour",
                 "--out", str(tmp_path / "l.npz")]) == 2
    assert "--label-column 'colour' is not a column of shop.csv" in capsys.readouterr().err


def test_what_cannot_be_encoded_is_refused(tmp_path, capsys):
    assert main(["train", "made", "--data", "digits", "--out", str(tmp_path / "made"), *TINY]) == 0
    capsys.readouterr()
    assert main(["encode", str(tmp_path / "made"), "--data", "digits", "--out", str(tmp_path / "l.npz")]) == 2
    err = capsys.readouterr().err
    assert "'made' has no encode(x) and decode(z)" in err and "Traceback" not in err
    model = genlab.create("ae", data=genlab.data.load("digits"))
    with pytest.raises(ConfigError, match=r"samples of shape \(2,\), and the model was trained on \(1, 8, 8\)"):
        encode(model, torch.zeros(4, 2))
    with pytest.raises(ConfigError, match="written as a NumPy .npz archive"):
        write_codes(encode(model, torch.zeros(4, 1, 8, 8)), tmp_path / "l.csv")
