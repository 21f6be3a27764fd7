"""Feature extractors for sample-based metrics (FID, KID, precision/recall), and how to find them.

FID-like metrics compare two image sets in the feature space of a fixed network. Inception-v3
features are the convention for natural 299x299 images; for small datasets such as 8x8 digits a
classifier trained on the dataset itself gives features that see what matters there (common
practice for MNIST-sized data, where Inception features of upscaled digits say little). genlab ships
them for the datasets listed by `shipped_extractors()`; `scripts/train_feature_extractor.py` trains
one for any labelled image dataset.

Numbers are comparable only between evaluations that used the same extractor.
"""

from __future__ import annotations

import json
import math
from collections.abc import Callable
from importlib import resources
from pathlib import Path
from typing import Any

import safetensors.torch
import torch
import torch.nn.functional as F
from torch import Tensor, nn

from genlab.errors import ConfigError, DataError, RunError
from genlab.weights import first_line, read_metadata

FORMAT = "genlab.classifier_features/1"


class FeatureExtractor(nn.Module):
    """What the metrics need of a feature network.

    Attributes: `name` (str, recorded next to the numbers it produced), `input_shape` (C, H, W)
    it was made for, `feature_dim` D. Method `features(x)`: images x (B, C, H, W) with values in
    [0, 1] -> features (B, D). Any nn.Module with these works with `compute_features`; this base
    class only makes `forward` call `features`.
    """

    name: str
    input_shape: tuple[int, int, int]
    feature_dim: int

    def features(self, x: Tensor) -> Tensor:
        raise NotImplementedError

    def forward(self, x: Tensor) -> Tensor:
        return self.features(x)


# --------------------------------------------------------------------------------------------
# A small CNN classifier whose penultimate layer gives the features
# --------------------------------------------------------------------------------------------


class ClassifierFeatures(FeatureExtractor):
    """A small CNN classifier trained on one dataset; its penultimate layer (after ReLU) is the
    feature vector.

    One conv3x3 [BatchNorm] ReLU per entry of `widths`, a 2x2 max pooling after the convolutions
    whose index is in `pool_after`, then adaptive-avgpool(2x2) -> linear(4 widths[-1] ->
    feature_dim) ReLU = features -> dropout -> linear(feature_dim -> num_classes) = logits.
    The defaults are the original design (digits, mnist):
    conv(C->32) ReLU conv(32->64) ReLU maxpool conv(64->64) ReLU avgpool(2) linear ReLU; a deeper
    VGG-style stack with batch norm, e.g. widths=(32, 32, 64, 64, 128, 128), pool_after=(1, 3, 5),
    batch_norm=True, serves natural images such as CIFAR-10. The adaptive pooling makes one design
    fit 8x8 digits and 28x28 or 32x32 images alike. `config()` (the architecture) and `info`
    (dataset, test accuracy, how it was trained) are saved as metadata; files written before
    `pool_after` and `batch_norm` existed load with their defaults.
    """

    def __init__(
        self,
        *,
        input_shape: tuple[int, int, int],
        num_classes: int,
        feature_dim: int = 128,
        widths: tuple[int, ...] = (32, 64, 64),
        pool_after: tuple[int, ...] = (1,),
        batch_norm: bool = False,
        dropout: float = 0.3,
        info: dict[str, Any] | None = None,
    ) -> None:
        super().__init__()
        widths, pool_after = tuple(widths), tuple(pool_after)
        if len(input_shape) != 3:
            raise ConfigError(f"input_shape must be (C, H, W), got {tuple(input_shape)}")
        if num_classes < 2:
            raise ConfigError(f"num_classes must be >= 2, got {num_classes}")
        if not widths or any(int(w) < 1 for w in widths):
            raise ConfigError(f"widths must be a non-empty list of positive channel counts, got {widths}")
        if len(set(pool_after)) != len(pool_after) or any(not 0 <= int(i) < len(widths) for i in pool_after):
            raise ConfigError(
                f"pool_after must list distinct convolution indices in 0..{len(widths) - 1} (one 2x2 max pooling "
                f"after each), got {pool_after}"
            )
        smallest = 2 ** (len(pool_after) + 1)
        if min(input_shape[1:]) < smallest:
            raise ConfigError(
                f"input_shape {tuple(input_shape)} is too small for {len(pool_after)} poolings: H, W must be >= {smallest}"
            )
        if not isinstance(batch_norm, bool):
            raise ConfigError(f"batch_norm must be true or false, got {batch_norm!r}")
        self.input_shape = tuple(int(s) for s in input_shape)
        self.num_classes = int(num_classes)
        self.feature_dim = int(feature_dim)
        self.widths = tuple(int(w) for w in widths)
        self.pool_after = tuple(sorted(int(i) for i in pool_after))
        self.batch_norm = batch_norm
        self.dropout = float(dropout)
        self.info = dict(info or {})
        self.name = f"{self.info.get('dataset', 'custom')}-classifier"
        layers: list[nn.Module] = []
        channels = self.input_shape[0]
        for index, width in enumerate(self.widths):
            # a conv's bias is redundant before batch norm, which adds its own shift
            layers.append(nn.Conv2d(channels, width, 3, padding=1, bias=not batch_norm))
            layers += [nn.BatchNorm2d(width), nn.ReLU()] if batch_norm else [nn.ReLU()]
            if index in self.pool_after:
                layers.append(nn.MaxPool2d(2))
            channels = width
        # the default design's module indices (body.0, body.2, body.5, body.9) are those of the
        # files shipped before the options existed, so their state dicts load unchanged
        layers += [nn.AdaptiveAvgPool2d(2), nn.Flatten(), nn.Linear(4 * channels, self.feature_dim), nn.ReLU()]
        self.body = nn.Sequential(*layers)
        self.head = nn.Linear(self.feature_dim, self.num_classes)

    def _check(self, x: Tensor) -> None:
        if x.ndim != 4 or tuple(x.shape[1:]) != self.input_shape:
            raise DataError(
                f"extractor {self.name!r} takes images of shape (B, {', '.join(map(str, self.input_shape))}), "
                f"got {tuple(x.shape)}; use an extractor trained on this data "
                f"(scripts/train_feature_extractor.py) or pass an Inception weights file"
            )

    def features(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> penultimate activations (B, feature_dim)."""
        self._check(x)
        return self.body(2.0 * x - 1.0)

    def logits(self, x: Tensor) -> Tensor:
        """Images (B, C, H, W) in [0, 1] -> class logits (B, num_classes)."""
        return self.head(F.dropout(self.features(x), self.dropout, self.training))

    # -- files ------------------------------------------------------------------------------
    def config(self) -> dict[str, Any]:
        return {
            "input_shape": list(self.input_shape),
            "num_classes": self.num_classes,
            "feature_dim": self.feature_dim,
            "widths": list(self.widths),
            "pool_after": list(self.pool_after),
            "batch_norm": self.batch_norm,
            "dropout": self.dropout,
        }

    def save(self, path: str | Path) -> None:
        """Weights as safetensors; architecture and `info` as JSON in the file's metadata."""
        state = {k: v.detach().cpu().contiguous() for k, v in self.state_dict().items()}
        metadata = {"format": FORMAT, "config": json.dumps(self.config()), "info": json.dumps(self.info)}
        Path(path).parent.mkdir(parents=True, exist_ok=True)
        safetensors.torch.save_file(state, str(path), metadata=metadata)

    @classmethod
    def load(cls, path: str | Path, *, device: torch.device | str | None = None) -> "ClassifierFeatures":
        path = Path(path)
        if not path.is_file():
            raise DataError(f"feature extractor file {str(path)!r} does not exist")
        try:
            metadata = read_metadata(path)
        except RunError as exc:
            raise DataError(f"{exc}; make a feature extractor with scripts/train_feature_extractor.py") from None
        if metadata.get("format") != FORMAT:
            raise DataError(
                f"{str(path)!r} is not a genlab classifier feature extractor (no {FORMAT!r} metadata); "
                f"make one with scripts/train_feature_extractor.py"
            )
        try:
            config = json.loads(metadata["config"])
            config["input_shape"] = tuple(config["input_shape"])
            config["widths"] = tuple(config["widths"])
            if "pool_after" in config:
                config["pool_after"] = tuple(config["pool_after"])
            model = cls(**config, info=json.loads(metadata.get("info", "{}")))
        except (KeyError, TypeError, ValueError, ConfigError) as exc:
            raise DataError(f"{str(path)!r} has a damaged feature-extractor config ({first_line(exc)}); remake it with "
                            "scripts/train_feature_extractor.py") from None  # fmt: skip
        try:
            model.load_state_dict(safetensors.torch.load_file(str(path)))
        except (safetensors.SafetensorError, RuntimeError) as exc:
            raise DataError(f"{str(path)!r} holds weights that do not fit its own config ({first_line(exc, skip='Error(s) in loading')}); "
                            "remake it with scripts/train_feature_extractor.py") from None  # fmt: skip
        return model.eval().requires_grad_(False).to(device or "cpu")


def _random_shift(x: Tensor, max_shift: int, generator: torch.Generator) -> Tensor:
    """Translate each image (B, C, H, W) by its own random offset in [-max_shift, max_shift]^2,
    filling the border by replication."""
    b, _, h, w = x.shape
    padded = F.pad(x, (max_shift,) * 4, mode="replicate")
    offsets = torch.randint(0, 2 * max_shift + 1, (2, b), generator=generator)
    rows = offsets[0][:, None] + torch.arange(h)  # (B, H)
    cols = offsets[1][:, None] + torch.arange(w)  # (B, W)
    batch = torch.arange(b)[:, None, None]
    out = padded[batch, :, rows[:, :, None], cols[:, None, :]]  # (B, H, W, C)
    return out.permute(0, 3, 1, 2)


def _random_hflip(x: Tensor, generator: torch.Generator) -> Tensor:
    """Mirror each image (B, C, H, W) left-right with probability 1/2 (right for natural images,
    wrong for digits and letters, whose mirror images are other shapes)."""
    flip = torch.rand(x.shape[0], generator=generator) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


@torch.no_grad()
def classifier_accuracy(model: ClassifierFeatures, x: Tensor, y: Tensor, *, batch_size: int = 1024) -> float:
    """Fraction of x (N, C, H, W) whose argmax logit equals y (N,)."""
    was_training = model.training
    model.eval()
    device = next(model.parameters()).device
    correct = 0
    for start in range(0, x.shape[0], batch_size):
        logits = model.logits(x[start : start + batch_size].to(device))
        correct += (logits.argmax(1).cpu() == y[start : start + batch_size]).sum().item()
    model.train(was_training)
    return correct / max(1, x.shape[0])


def train_feature_classifier(
    x: Tensor,
    y: Tensor,
    *,
    epochs: int = 40,
    seed: int = 0,
    batch_size: int = 64,
    lr: float = 2e-3,
    weight_decay: float = 1e-4,
    max_shift: int = 1,
    hflip: bool = False,
    val: tuple[Tensor, Tensor] | None = None,
    test: tuple[Tensor, Tensor] | None = None,
    num_classes: int | None = None,
    feature_dim: int = 128,
    widths: tuple[int, ...] = (32, 64, 64),
    pool_after: tuple[int, ...] = (1,),
    batch_norm: bool = False,
    info: dict[str, Any] | None = None,
    device: torch.device | str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[ClassifierFeatures, float]:
    """Train a `ClassifierFeatures` on images x (N, C, H, W) in [0, 1] with labels y (N,).

    AdamW with a cosine learning-rate decay over `epochs`, cross-entropy, random translations of up
    to `max_shift` pixels (the border replicated) and, with `hflip`, random left-right mirroring.
    `widths`, `pool_after`, `batch_norm` and `feature_dim` choose the architecture (see
    `ClassifierFeatures`). With `val` = (x_val, y_val) the weights of the epoch with the best
    validation accuracy are kept (early stopping by selection). Returns (model in eval mode,
    accuracy on `test`), the accuracy being NaN without a test set; it is also stored in
    `model.info["test_accuracy"]` with the seed and epochs. Deterministic on the CPU for a given
    seed: initialisation and dropout draw from a forked, seeded global generator (the caller's
    global random state is left untouched), batches and shifts from a seeded torch.Generator.
    """
    if x.ndim != 4:
        raise DataError(f"a feature classifier needs images (N, C, H, W), got shape {tuple(x.shape)}")
    if y is None or y.shape[0] != x.shape[0]:
        raise DataError("a feature classifier needs one class label per image")
    y = y.long()
    num_classes = int(num_classes or (int(y.max()) + 1))
    device = torch.device(device or "cpu")
    generator = torch.Generator().manual_seed(seed)
    info = {**(info or {}), "seed": seed, "epochs": epochs, "train_size": int(x.shape[0])}
    if hflip:
        info["hflip"] = True
    steps_per_epoch = math.ceil(x.shape[0] / batch_size)

    with torch.random.fork_rng(devices=[] if device.type == "cpu" else [device]):
        torch.manual_seed(seed)
        model = ClassifierFeatures(
            input_shape=tuple(x.shape[1:]),
            num_classes=num_classes,
            feature_dim=feature_dim,
            widths=widths,
            pool_after=pool_after,
            batch_norm=batch_norm,
            info=info,
        ).to(device)
        optimizer = torch.optim.AdamW(model.parameters(), lr=lr, weight_decay=weight_decay)
        schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimizer, T_max=epochs * steps_per_epoch)
        best_accuracy, best_state = -1.0, None
        for epoch in range(epochs):
            model.train()
            order = torch.randperm(x.shape[0], generator=generator)
            for start in range(0, x.shape[0], batch_size):
                index = order[start : start + batch_size]
                xb = x[index]
                if max_shift > 0:
                    xb = _random_shift(xb, max_shift, generator)
                if hflip:
                    xb = _random_hflip(xb, generator)
                loss = F.cross_entropy(model.logits(xb.to(device)), y[index].to(device))
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                schedule.step()
            if val is not None:
                accuracy = classifier_accuracy(model, *val)
                if accuracy > best_accuracy:
                    best_accuracy = accuracy
                    best_state = {k: v.detach().clone() for k, v in model.state_dict().items()}
                if log is not None:
                    log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}, val accuracy {accuracy:.4f}")
            elif log is not None:
                log(f"epoch {epoch + 1}/{epochs}: loss {loss.item():.4f}")
    if best_state is not None:
        model.load_state_dict(best_state)
        model.info["val_accuracy"] = best_accuracy
    test_accuracy = classifier_accuracy(model, *test) if test is not None else math.nan
    model.info["test_accuracy"] = test_accuracy
    return model.eval().requires_grad_(False), test_accuracy


# --------------------------------------------------------------------------------------------
# Finding an extractor by name or path, and computing features with it
# --------------------------------------------------------------------------------------------


def shipped_extractors() -> list[str]:
    """Names of the feature extractors shipped with genlab (files in genlab/metrics/weights/)."""
    folder = resources.files("genlab.metrics") / "weights"
    if not folder.is_dir():
        return []
    return sorted(p.name.removesuffix(".safetensors") for p in folder.iterdir() if p.name.endswith(".safetensors"))


def get_extractor(
    name_or_path: str | Path | FeatureExtractor, *, device: torch.device | str | None = None
) -> FeatureExtractor:
    """The feature extractor named `name_or_path`, in eval mode on `device` (default CPU).

    - a shipped name ("digits"): the classifier trained by scripts/train_feature_extractor.py;
    - a path ending in .safetensors: a `ClassifierFeatures` saved by that script;
    - a path ending in .pth or .pt: `InceptionV3Features` with pytorch-fid's Inception weights;
    - a FeatureExtractor: returned as is, moved to `device` if one is given.
    """
    if isinstance(name_or_path, nn.Module):
        return name_or_path if device is None else name_or_path.to(device)
    text = str(name_or_path)
    if text in shipped_extractors():
        ref = resources.files("genlab.metrics") / "weights" / f"{text}.safetensors"
        with resources.as_file(ref) as path:
            return ClassifierFeatures.load(path, device=device)
    if text.endswith(".safetensors"):
        return ClassifierFeatures.load(text, device=device)
    if text.endswith((".pth", ".pt")):
        from genlab.metrics.inception import InceptionV3Features

        return InceptionV3Features(text).eval().to(device or "cpu")
    options = ", ".join(repr(n) for n in shipped_extractors()) or "none shipped"
    hint = ""
    if text.lower().startswith("inception"):
        hint = (
            " Inception-v3 features need pytorch-fid's weights file pt_inception-2015-12-05-6726825d.pth, "
            "which genlab never downloads: fetch it yourself and pass its path."
        )
    raise ConfigError(
        f"unknown feature extractor {text!r}; use a shipped name ({options}), a classifier saved by "
        f"scripts/train_feature_extractor.py (path ending in .safetensors) or an Inception-v3 weights "
        f"file (path ending in .pth).{hint}"
    )


def compute_features(extractor: nn.Module, images: Tensor, *, batch_size: int = 256, output: str = "features") -> Tensor:
    """Features (N, D) of images (N, C, H, W) in [0, 1], in batches, without gradients, in eval
    mode, on the extractor's device; returned as float32 on that device. output="logits": the
    extractor's class logits (N, K) instead (extractors with a classifier head).

    uint8 images are scaled by 1/255. Float values are clamped to [0, 1], as when saving samples as
    pictures; values far outside (below -0.5 or above 1.5) are an error, since they mean the
    samples live in another range (e.g. [-1, 1]) and must be rescaled first.
    """
    if images.ndim != 4:
        raise DataError(f"compute_features needs images (N, C, H, W), got shape {tuple(images.shape)}")
    if images.shape[0] == 0:
        raise DataError("compute_features got no images")
    if images.dtype == torch.uint8:
        images = images.float() / 255.0
    else:
        low, high = images.min().item(), images.max().item()
        if not (math.isfinite(low) and math.isfinite(high)):
            raise DataError("images contain NaN or infinite values")
        if low < -0.5 or high > 1.5:
            raise DataError(
                f"images must have values in [0, 1], got values in [{low:.3g}, {high:.3g}]; rescale them "
                f"(e.g. (x + 1) / 2 for samples in [-1, 1])"
            )
    parameter = next(extractor.parameters(), None)
    device = parameter.device if parameter is not None else torch.device("cpu")
    was_training = extractor.training
    extractor.eval()
    chunks = []
    with torch.no_grad():
        for start in range(0, images.shape[0], batch_size):
            batch = images[start : start + batch_size].to(device, torch.float32).clamp(0.0, 1.0)
            chunks.append(getattr(extractor, output)(batch).float())
    extractor.train(was_training)
    return torch.cat(chunks)
