"""Inception-v3 pool3 features as used for FID (Szegedy et al. 2016; Heusel et al. 2017).

The network is the one TensorFlow's FID code used (inception-2015-12-05), in the PyTorch port of
pytorch-fid (mseitzer/pytorch-fid), whose weights file is

    pt_inception-2015-12-05-6726825d.pth
    https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/pt_inception-2015-12-05-6726825d.pth

genlab never downloads it: fetch it once and pass its path (`--extractor PATH`,
`get_extractor(PATH)`). Parameter names follow that state dict exactly, so it loads with
`strict=True`. The FID network differs from the ImageNet Inception-v3 in three places, kept here:
the average pools inside the A, C and first E blocks do not count padded zeros
(count_include_pad=False, TensorFlow's behaviour), the last E block pools its branch with a max
pool instead of an average pool, and the classifier has 1008 outputs.
"""

from __future__ import annotations

from pathlib import Path

import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import DataError
from genlab.weights import first_line
from genlab.metrics.features import FeatureExtractor

WEIGHTS_FILE = "pt_inception-2015-12-05-6726825d.pth"
WEIGHTS_URL = f"https://github.com/mseitzer/pytorch-fid/releases/download/fid_weights/{WEIGHTS_FILE}"


class BasicConv2d(nn.Module):
    """Convolution without bias, batch norm (eps 1e-3, TensorFlow's), ReLU."""

    def __init__(self, in_channels: int, out_channels: int, **conv_options) -> None:
        super().__init__()
        self.conv = nn.Conv2d(in_channels, out_channels, bias=False, **conv_options)
        self.bn = nn.BatchNorm2d(out_channels, eps=0.001)

    def forward(self, x: Tensor) -> Tensor:
        return F.relu(self.bn(self.conv(x)))


def _tf_avg_pool(x: Tensor) -> Tensor:
    # TensorFlow's 3x3 average pool divides by the number of real (unpadded) inputs
    return F.avg_pool2d(x, kernel_size=3, stride=1, padding=1, count_include_pad=False)


class FIDInceptionA(nn.Module):
    """35x35 block: 1x1, 5x5, double 3x3 and pooled branches -> 224 + pool_features channels."""

    def __init__(self, in_channels: int, pool_features: int) -> None:
        super().__init__()
        self.branch1x1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch5x5_1 = BasicConv2d(in_channels, 48, kernel_size=1)
        self.branch5x5_2 = BasicConv2d(48, 64, kernel_size=5, padding=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, padding=1)
        self.branch_pool = BasicConv2d(in_channels, pool_features, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch5x5 = self.branch5x5_2(self.branch5x5_1(x))
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch5x5, branch3x3dbl, branch_pool], 1)


class InceptionB(nn.Module):
    """Grid reduction 35 -> 17: strided 3x3, strided double 3x3, max pool -> 480 + in channels."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3 = BasicConv2d(in_channels, 384, kernel_size=3, stride=2)
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 64, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(64, 96, kernel_size=3, padding=1)
        self.branch3x3dbl_3 = BasicConv2d(96, 96, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3dbl = self.branch3x3dbl_3(self.branch3x3dbl_2(self.branch3x3dbl_1(x)))
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([self.branch3x3(x), branch3x3dbl, branch_pool], 1)


class FIDInceptionC(nn.Module):
    """17x17 block with factorised 7x7 convolutions (1x7 then 7x1) -> 768 channels."""

    def __init__(self, in_channels: int, channels_7x7: int) -> None:
        super().__init__()
        c7 = channels_7x7
        row, col = {"kernel_size": (1, 7), "padding": (0, 3)}, {"kernel_size": (7, 1), "padding": (3, 0)}
        self.branch1x1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7_2 = BasicConv2d(c7, c7, **row)
        self.branch7x7_3 = BasicConv2d(c7, 192, **col)
        self.branch7x7dbl_1 = BasicConv2d(in_channels, c7, kernel_size=1)
        self.branch7x7dbl_2 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_3 = BasicConv2d(c7, c7, **row)
        self.branch7x7dbl_4 = BasicConv2d(c7, c7, **col)
        self.branch7x7dbl_5 = BasicConv2d(c7, 192, **row)
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch7x7 = self.branch7x7_3(self.branch7x7_2(self.branch7x7_1(x)))
        branch7x7dbl = self.branch7x7dbl_1(x)
        for layer in (self.branch7x7dbl_2, self.branch7x7dbl_3, self.branch7x7dbl_4, self.branch7x7dbl_5):
            branch7x7dbl = layer(branch7x7dbl)
        branch_pool = self.branch_pool(_tf_avg_pool(x))
        return torch.cat([self.branch1x1(x), branch7x7, branch7x7dbl, branch_pool], 1)


class InceptionD(nn.Module):
    """Grid reduction 17 -> 8: strided 3x3 and strided 7x7x3 branches, max pool -> 512 + in."""

    def __init__(self, in_channels: int) -> None:
        super().__init__()
        self.branch3x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch3x3_2 = BasicConv2d(192, 320, kernel_size=3, stride=2)
        self.branch7x7x3_1 = BasicConv2d(in_channels, 192, kernel_size=1)
        self.branch7x7x3_2 = BasicConv2d(192, 192, kernel_size=(1, 7), padding=(0, 3))
        self.branch7x7x3_3 = BasicConv2d(192, 192, kernel_size=(7, 1), padding=(3, 0))
        self.branch7x7x3_4 = BasicConv2d(192, 192, kernel_size=3, stride=2)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_2(self.branch3x3_1(x))
        branch7x7x3 = self.branch7x7x3_1(x)
        for layer in (self.branch7x7x3_2, self.branch7x7x3_3, self.branch7x7x3_4):
            branch7x7x3 = layer(branch7x7x3)
        branch_pool = F.max_pool2d(x, kernel_size=3, stride=2)
        return torch.cat([branch3x3, branch7x7x3, branch_pool], 1)


class FIDInceptionE(nn.Module):
    """8x8 block with split 1x3 / 3x1 branches -> 2048 channels. `pool` is "avg" (TensorFlow's
    average pool, Mixed_7b) or "max" (Mixed_7c of the FID network)."""

    def __init__(self, in_channels: int, pool: str) -> None:
        super().__init__()
        self.pool = pool
        self.branch1x1 = BasicConv2d(in_channels, 320, kernel_size=1)
        self.branch3x3_1 = BasicConv2d(in_channels, 384, kernel_size=1)
        self.branch3x3_2a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3_2b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch3x3dbl_1 = BasicConv2d(in_channels, 448, kernel_size=1)
        self.branch3x3dbl_2 = BasicConv2d(448, 384, kernel_size=3, padding=1)
        self.branch3x3dbl_3a = BasicConv2d(384, 384, kernel_size=(1, 3), padding=(0, 1))
        self.branch3x3dbl_3b = BasicConv2d(384, 384, kernel_size=(3, 1), padding=(1, 0))
        self.branch_pool = BasicConv2d(in_channels, 192, kernel_size=1)

    def forward(self, x: Tensor) -> Tensor:
        branch3x3 = self.branch3x3_1(x)
        branch3x3 = torch.cat([self.branch3x3_2a(branch3x3), self.branch3x3_2b(branch3x3)], 1)
        branch3x3dbl = self.branch3x3dbl_2(self.branch3x3dbl_1(x))
        branch3x3dbl = torch.cat([self.branch3x3dbl_3a(branch3x3dbl), self.branch3x3dbl_3b(branch3x3dbl)], 1)
        if self.pool == "max":
            # the FID network max-pools here where other Inception-v3s average (pytorch-fid notes it)
            pooled = F.max_pool2d(x, kernel_size=3, stride=1, padding=1)
        else:
            pooled = _tf_avg_pool(x)
        return torch.cat([self.branch1x1(x), branch3x3, branch3x3dbl, self.branch_pool(pooled)], 1)


class InceptionV3Features(FeatureExtractor):
    """Inception-v3 pool3 features (B, 2048) of images (B, C, H, W) in [0, 1], for FID.

    weights_path: pytorch-fid's pt_inception-2015-12-05-6726825d.pth (see the module docstring),
    loaded with strict=True. None builds the network with random weights, which is only useful for
    tests. Grayscale inputs are repeated to 3 channels; images are resized to 299x299 (bilinear,
    align_corners=False) and mapped from [0, 1] to [-1, 1], as pytorch-fid does. `fc` (1008
    classes) is kept so the state dict matches; features do not use it, `logits` (the Inception Score) does.
    """

    name = "inception-v3-fid"
    input_shape = (3, 299, 299)
    feature_dim = 2048

    def __init__(self, weights_path: str | Path | None, *, resize: bool = True) -> None:
        super().__init__()
        # read the file first, so a missing one fails before 24M parameters are initialised
        state = None if weights_path is None else load_inception_weights(weights_path)
        self.resize = resize
        self.Conv2d_1a_3x3 = BasicConv2d(3, 32, kernel_size=3, stride=2)
        self.Conv2d_2a_3x3 = BasicConv2d(32, 32, kernel_size=3)
        self.Conv2d_2b_3x3 = BasicConv2d(32, 64, kernel_size=3, padding=1)
        self.Conv2d_3b_1x1 = BasicConv2d(64, 80, kernel_size=1)
        self.Conv2d_4a_3x3 = BasicConv2d(80, 192, kernel_size=3)
        self.Mixed_5b = FIDInceptionA(192, pool_features=32)
        self.Mixed_5c = FIDInceptionA(256, pool_features=64)
        self.Mixed_5d = FIDInceptionA(288, pool_features=64)
        self.Mixed_6a = InceptionB(288)
        self.Mixed_6b = FIDInceptionC(768, channels_7x7=128)
        self.Mixed_6c = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6d = FIDInceptionC(768, channels_7x7=160)
        self.Mixed_6e = FIDInceptionC(768, channels_7x7=192)
        self.Mixed_7a = InceptionD(768)
        self.Mixed_7b = FIDInceptionE(1280, pool="avg")
        self.Mixed_7c = FIDInceptionE(2048, pool="max")
        self.fc = nn.Linear(2048, 1008)
        if state is not None:
            try:
                self.load_state_dict(state, strict=True)
            except RuntimeError as error:  # missing or unexpected keys, wrong shapes
                raise DataError(
                    f"{str(weights_path)!r} does not fit the FID Inception-v3 network; it must be pytorch-fid's "
                    f"{WEIGHTS_FILE} ({WEIGHTS_URL}). {error}"
                ) from error
        self.eval().requires_grad_(False)

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1], C in {1, 3} -> pool3 features (B, 2048)."""
        if x.ndim != 4 or x.shape[1] not in (1, 3):
            raise DataError(f"Inception features need images (B, 1 or 3, H, W), got shape {tuple(x.shape)}")
        if x.shape[1] == 1:
            x = x.expand(-1, 3, -1, -1)
        if self.resize:
            x = F.interpolate(x, size=(299, 299), mode="bilinear", align_corners=False)
        x = 2.0 * x - 1.0
        x = self.Conv2d_1a_3x3(x)  # (B, 3, 299, 299) -> (B, 32, 149, 149)
        x = self.Conv2d_2a_3x3(x)  # -> (B, 32, 147, 147)
        x = self.Conv2d_2b_3x3(x)  # -> (B, 64, 147, 147)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # -> (B, 64, 73, 73)
        x = self.Conv2d_3b_1x1(x)  # -> (B, 80, 73, 73)
        x = self.Conv2d_4a_3x3(x)  # -> (B, 192, 71, 71)
        x = F.max_pool2d(x, kernel_size=3, stride=2)  # -> (B, 192, 35, 35)
        x = self.Mixed_5d(self.Mixed_5c(self.Mixed_5b(x)))  # -> (B, 288, 35, 35)
        x = self.Mixed_6a(x)  # -> (B, 768, 17, 17)
        x = self.Mixed_6e(self.Mixed_6d(self.Mixed_6c(self.Mixed_6b(x))))  # -> (B, 768, 17, 17)
        x = self.Mixed_7a(x)  # -> (B, 1280, 8, 8)
        x = self.Mixed_7c(self.Mixed_7b(x))  # -> (B, 2048, 8, 8)
        return x.mean(dim=(2, 3))  # pool3: (B, 2048)

    def logits(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> the 1008 class logits of `fc` (B, 1008), for the Inception Score."""
        return self.fc(self.features(x))


def load_inception_weights(path: str | Path) -> dict[str, Tensor]:
    """The state dict in pytorch-fid's weights file, with a message that says what to do when the
    file is missing or is not that file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(
            f"Inception weights not found at {str(path)!r}. FID with Inception-v3 needs pytorch-fid's "
            f"{WEIGHTS_FILE}; genlab never downloads it. Get it from {WEIGHTS_URL} and pass its path "
            f"(--extractor PATH, or get_extractor(PATH))."
        )
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # a truncated download, an HTML page saved as .pth
        message = f"cannot read Inception weights {str(path)!r} ({first_line(error)}); download {WEIGHTS_FILE} again"
        raise DataError(message) from None
    if not isinstance(state, dict) or "Mixed_7c.branch_pool.conv.weight" not in state:
        raise DataError(f"{str(path)!r} is not pytorch-fid's Inception state dict ({WEIGHTS_FILE} from {WEIGHTS_URL})")
    return state
