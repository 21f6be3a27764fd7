"""The FID Inception-v3 matches pytorch-fid's state dict layout, so its weights file loads strictly.

The real weights (pt_inception-2015-12-05-6726825d.pth, ~95 MB) are never downloaded; the layout is
checked against a table written from the published architecture (torchvision's Inception3 with
num_classes=1008 and no auxiliary classifier, as pytorch-fid builds it), and loading is checked
with a random state dict saved as .pth.
"""

from __future__ import annotations

import pytest
import torch

from genlab.errors import DataError
from genlab.metrics import InceptionV3Features, get_extractor
from genlab.metrics.inception import WEIGHTS_FILE


def conv(cin: int, cout: int, kh: int, kw: int | None = None) -> tuple[int, int, int, int]:
    return (cout, cin, kh, kh if kw is None else kw)


def block_a(cin, pool):
    return {"branch1x1": conv(cin, 64, 1), "branch5x5_1": conv(cin, 48, 1), "branch5x5_2": conv(48, 64, 5),
            "branch3x3dbl_1": conv(cin, 64, 1), "branch3x3dbl_2": conv(64, 96, 3), "branch3x3dbl_3": conv(96, 96, 3),
            "branch_pool": conv(cin, pool, 1)}  # fmt: skip


def block_b(cin):
    return {"branch3x3": conv(cin, 384, 3), "branch3x3dbl_1": conv(cin, 64, 1), "branch3x3dbl_2": conv(64, 96, 3),
            "branch3x3dbl_3": conv(96, 96, 3)}  # fmt: skip


def block_c(cin, c7):
    return {"branch1x1": conv(cin, 192, 1), "branch7x7_1": conv(cin, c7, 1), "branch7x7_2": conv(c7, c7, 1, 7),
            "branch7x7_3": conv(c7, 192, 7, 1), "branch7x7dbl_1": conv(cin, c7, 1), "branch7x7dbl_2": conv(c7, c7, 7, 1),
            "branch7x7dbl_3": conv(c7, c7, 1, 7), "branch7x7dbl_4": conv(c7, c7, 7, 1),
            "branch7x7dbl_5": conv(c7, 192, 1, 7), "branch_pool": conv(cin, 192, 1)}  # fmt: skip


def block_d(cin):
    return {"branch3x3_1": conv(cin, 192, 1), "branch3x3_2": conv(192, 320, 3), "branch7x7x3_1": conv(cin, 192, 1),
            "branch7x7x3_2": conv(192, 192, 1, 7), "branch7x7x3_3": conv(192, 192, 7, 1),
            "branch7x7x3_4": conv(192, 192, 3)}  # fmt: skip


def block_e(cin):
    return {"branch1x1": conv(cin, 320, 1), "branch3x3_1": conv(cin, 384, 1), "branch3x3_2a": conv(384, 384, 1, 3),
            "branch3x3_2b": conv(384, 384, 3, 1), "branch3x3dbl_1": conv(cin, 448, 1),
            "branch3x3dbl_2": conv(448, 384, 3), "branch3x3dbl_3a": conv(384, 384, 1, 3),
            "branch3x3dbl_3b": conv(384, 384, 3, 1), "branch_pool": conv(cin, 192, 1)}  # fmt: skip


def expected_layout() -> dict[str, tuple[int, ...]]:
    """Every key of pytorch-fid's state dict with its shape, from the architecture table."""
    convs = {"Conv2d_1a_3x3": conv(3, 32, 3), "Conv2d_2a_3x3": conv(32, 32, 3), "Conv2d_2b_3x3": conv(32, 64, 3),
             "Conv2d_3b_1x1": conv(64, 80, 1), "Conv2d_4a_3x3": conv(80, 192, 3)}  # fmt: skip
    blocks = {"Mixed_5b": block_a(192, 32), "Mixed_5c": block_a(256, 64), "Mixed_5d": block_a(288, 64),
              "Mixed_6a": block_b(288), "Mixed_6b": block_c(768, 128), "Mixed_6c": block_c(768, 160),
              "Mixed_6d": block_c(768, 160), "Mixed_6e": block_c(768, 192), "Mixed_7a": block_d(768),
              "Mixed_7b": block_e(1280), "Mixed_7c": block_e(2048)}  # fmt: skip
    for block, branches in blocks.items():
        convs.update({f"{block}.{branch}": shape for branch, shape in branches.items()})
    layout: dict[str, tuple[int, ...]] = {}
    for name, shape in convs.items():  # BasicConv2d: bias-free conv + batch norm
        layout[f"{name}.conv.weight"] = shape
        for stat in ("weight", "bias", "running_mean", "running_var"):
            layout[f"{name}.bn.{stat}"] = (shape[0],)
        layout[f"{name}.bn.num_batches_tracked"] = ()
    layout["fc.weight"] = (1008, 2048)
    layout["fc.bias"] = (1008,)
    return layout


@pytest.fixture(scope="module")
def random_inception():
    torch.manual_seed(0)
    return InceptionV3Features(None)


def test_state_dict_layout_matches_pytorch_fid(random_inception):
    state = random_inception.state_dict()
    got = {k: tuple(v.shape) for k, v in state.items()}
    assert got == expected_layout()
    # spot checks of well-known entries
    assert got["Conv2d_1a_3x3.conv.weight"] == (32, 3, 3, 3)
    assert got["Mixed_6b.branch7x7_2.conv.weight"] == (128, 128, 1, 7)
    assert got["Mixed_7c.branch_pool.conv.weight"] == (192, 2048, 1, 1)
    assert got["Mixed_7c.branch3x3dbl_3b.conv.weight"] == (384, 384, 3, 1)
    assert got["fc.weight"] == (1008, 2048)
    # torchvision's inception_v3 has 27,161,264 parameters, 3,326,696 of them in AuxLogits (absent
    # here); the FID network's fc has 8 more classes (1008 x 2048 weights + 1008 biases)
    n_parameters = sum(p.numel() for p in random_inception.parameters())
    assert n_parameters == 27_161_264 - 3_326_696 + 8 * 2048 + 8
    # batch norms use TensorFlow's epsilon
    assert random_inception.Mixed_5b.branch1x1.bn.eps == 1e-3


def test_pth_round_trip_loads_strictly_and_features_have_2048_dims(random_inception, tmp_path):
    path = tmp_path / WEIGHTS_FILE
    # perturb the batch-norm statistics so loading has something to restore
    state = {k: (v + torch.rand_like(v) if v.is_floating_point() and "running_var" in k else v) for k, v in random_inception.state_dict().items()}
    torch.save(state, path)
    loaded = get_extractor(str(path))
    assert isinstance(loaded, InceptionV3Features)
    for key, value in state.items():
        assert torch.equal(loaded.state_dict()[key], value), key
    gray = torch.rand(1, 1, 8, 8, generator=torch.Generator().manual_seed(0))
    features = loaded.features(gray)  # one forward at 299x299
    assert features.shape == (1, 2048) and torch.isfinite(features).all()
    assert (features >= 0).all()  # pool3 averages ReLU outputs
    # grayscale is the image repeated on three channels
    assert torch.allclose(loaded.features(gray.expand(-1, 3, -1, -1)), features, atol=1e-5)


def test_missing_or_wrong_weights_say_what_to_do(tmp_path):
    with pytest.raises(DataError, match=rf"{WEIGHTS_FILE}.*--extractor PATH"):
        InceptionV3Features(tmp_path / "nowhere.pth")
    bad = tmp_path / "other.pth"
    torch.save({"Mixed_7c.branch_pool.conv.weight": torch.zeros(1)}, bad)
    with pytest.raises(DataError, match="does not fit"):
        InceptionV3Features(bad)
    garbage = tmp_path / "garbage.pth"
    garbage.write_text("<html>not found</html>")
    with pytest.raises(DataError, match="cannot read"):
        InceptionV3Features(garbage)


def pooled_branch(block, x: torch.Tensor, channel_offset: int) -> torch.Tensor:
    """Make the block's pool-branch 1x1 conv copy input channel 0 to its output channel 0 (batch
    norm at identity statistics) and return that output channel."""
    with torch.no_grad():
        block.branch_pool.conv.weight.zero_()
        block.branch_pool.conv.weight[0, 0] = 1.0
        bn = block.branch_pool.bn
        bn.running_mean.zero_(), bn.running_var.fill_(1.0 - bn.eps), bn.weight.fill_(1.0), bn.bias.zero_()
        return block.eval()(x)[:, channel_offset]


def test_tensorflow_pooling_differences():
    from genlab.metrics.inception import FIDInceptionA, FIDInceptionE

    g = torch.Generator().manual_seed(0)
    x = torch.rand(1, 2048, 4, 4, generator=g)
    # Mixed_7c (FID variant): max pool 3x3, stride 1, padding 1
    out = pooled_branch(FIDInceptionE(2048, pool="max"), x, 320 + 768 + 768)
    expected = torch.stack([x[0, 0, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].max() for i in range(4) for j in range(4)])
    assert torch.allclose(out.flatten(), expected, atol=1e-6)
    # Mixed_7b: average over the real inputs only (count_include_pad=False): a corner averages 4 values
    out = pooled_branch(FIDInceptionE(2048, pool="avg"), x, 320 + 768 + 768)
    expected = torch.stack([x[0, 0, max(i - 1, 0) : i + 2, max(j - 1, 0) : j + 2].mean() for i in range(4) for j in range(4)])
    assert torch.allclose(out.flatten(), expected, atol=1e-6)
    # the A blocks pool the same way
    x = torch.rand(1, 192, 3, 3, generator=g)
    out = pooled_branch(FIDInceptionA(192, pool_features=32), x, 64 + 64 + 96)
    assert torch.allclose(out[0, 0, 0], x[0, 0, :2, :2].mean(), atol=1e-6)
