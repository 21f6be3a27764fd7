"""Standard image datasets read from files the user already has; genlab never downloads data.

They are looked up under a data root: the `root` option (CLI: --data-root), else $GENLAB_DATA,
else ./data.

- mnist: the four official idx files (gzipped or not) in <root>/mnist/ (or MNIST/, MNIST/raw/).
- fashion_mnist: the same four file names in <root>/fashion-mnist/ (or fashion_mnist/,
  FashionMNIST/, FashionMNIST/raw/).
- cifar10: <root>/cifar10/ or <root>/cifar10-jpeg75/ holding either image folders
  train/<class>/*.png|jpg and test/<class>/..., or two archives of them whose names contain
  "train" and "test" (e.g. cifar10-jpeg75-train.tar.gz, cifar10-jpeg75-test.tar.gz);
  the archives may also sit in <root> itself.

All keep the official train/test split, with a seeded 5,000 of train as val (10 % of train when
that is fewer): train 55,000, val 5,000, test 10,000 (cifar10: 45,000 / 5,000 / 10,000).
Storage uint8 (N, C, H, W), levels 256.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from genlab.data.dataset import Dataset
from genlab.data.files import read_idx
from genlab.data.images import ImageOptions, image_spec, is_archive, parse_flag, read_images
from genlab.data.splits import carve_validation
from genlab.errors import DataError

N_VAL = 5_000

FASHION_CLASSES = ("T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot")
IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}
FOLDERS = {
    "mnist": ("mnist", "MNIST", "MNIST/raw"),
    "fashion_mnist": ("fashion-mnist", "fashion_mnist", "FashionMNIST", "FashionMNIST/raw"),
    "cifar10": ("cifar10", "cifar10-jpeg75", "cifar-10"),
}
_ROOT_HELP = "The data root is the root option (CLI: --data-root), else $GENLAB_DATA, else ./data; genlab never downloads data."


def data_root(root: str | os.PathLike | None = None) -> Path:
    """Where standard datasets are looked up: `root`, else $GENLAB_DATA, else ./data (absolute)."""
    if root is not None:
        return Path(root).expanduser().resolve()
    if os.environ.get("GENLAB_DATA"):
        return Path(os.environ["GENLAB_DATA"]).expanduser().resolve()
    return Path("data").resolve()


def _official_splits(n_train: int, n_test: int, seed: int) -> dict[str, torch.Tensor]:
    """Official train then test indices; val = a seeded min(5,000, 10 % of train) carved from train."""
    train, val = carve_validation(torch.arange(n_train), min(N_VAL, round(0.1 * n_train)), seed)
    return {"train": train, "val": val, "test": torch.arange(n_train, n_train + n_test)}


# -- MNIST and Fashion-MNIST -------------------------------------------------------------------------------------
def _find_idx(folder: Path, stem: str) -> Path | None:
    dotted = stem.replace("-idx", ".idx")  # as unpacked by some tools: train-images.idx3-ubyte
    for name in (stem + ".gz", stem, dotted + ".gz", dotted):
        if (folder / name).is_file():
            return folder / name
    return None


def _missing_idx_message(name: str, root: Path, partial: dict[Path, list[str]]) -> str:
    folders = [root / f for f in FOLDERS[name]]
    files = ", ".join(s + ".gz" for s in IDX_FILES.values())
    message = (f"{name} not found: put the four official files {files} (gzipped or not) in "
               f"'{folders[0]}/' (looked in {', '.join(repr(str(f)) for f in folders)}).")
    for folder, missing in partial.items():
        message += f" '{folder}' lacks {', '.join(missing)}."
    return f"{message} {_ROOT_HELP}"


def load_idx_dataset(name: str, *, seed: int = 0, root: str | None = None) -> Dataset:
    """mnist or fashion_mnist: (70000, 1, 28, 28) uint8, official train then test, 10 classes."""
    base = data_root(root)
    partial: dict[Path, list[str]] = {}
    for sub in FOLDERS[name]:
        folder = base / sub
        if not folder.is_dir():
            continue
        found = {key: _find_idx(folder, stem) for key, stem in IDX_FILES.items()}
        if all(found.values()):
            break
        if any(found.values()):
            partial[folder] = [IDX_FILES[k] + "[.gz]" for k, v in found.items() if v is None]
    else:
        raise DataError(_missing_idx_message(name, base, partial))

    arrays = {key: read_idx(path) for key, path in found.items()}
    for part in ("train", "test"):
        images, labels = arrays[f"{part}_images"], arrays[f"{part}_labels"]
        if images.ndim != 3 or labels.shape != (len(images),):
            raise DataError(f"{name} {part} files in '{folder}' disagree: images {images.shape}, labels {labels.shape}")
    x = torch.from_numpy(np.concatenate([arrays["train_images"], arrays["test_images"]]).astype(np.uint8)[:, None])
    y = torch.from_numpy(np.concatenate([arrays["train_labels"], arrays["test_labels"]]).astype(np.int64))
    class_names = FASHION_CLASSES if name == "fashion_mnist" else tuple(str(k) for k in range(10))
    spec = image_spec(name, x, class_names)
    return Dataset(x, spec, y, splits=_official_splits(len(arrays["train_images"]), len(arrays["test_images"]), seed))


# -- CIFAR-10 -------------------------------------------------------------------------------------------------------
def _cifar_sources(base: Path) -> tuple[Path, Path] | Path | None:
    """A folder with train/ and test/, or (train archive, test archive)."""
    candidates = [base / sub for sub in FOLDERS["cifar10"]] + [base]
    for folder in candidates:
        if not folder.is_dir():
            continue
        if folder is not base and (folder / "train").is_dir() and (folder / "test").is_dir():
            return folder
        archives = sorted(p for p in folder.iterdir() if is_archive(p))
        if folder is base:  # the root holds other things too: only archives named after cifar
            archives = [p for p in archives if "cifar" in p.name.lower()]
        train = [p for p in archives if "train" in p.name.lower()]
        test = [p for p in archives if "test" in p.name.lower()]
        if len(train) == 1 and len(test) == 1:
            return train[0], test[0]
    return None


def load_cifar10(*, seed: int = 0, root: str | None = None, cache_dir: str | None = None, cache: bool = True) -> Dataset:
    """CIFAR-10 as (60000, 3, 32, 32) uint8: official train (50,000) then test (10,000), classes
    from the folder names (sorted: airplane, automobile, bird, ...). Decoding 60,000 images takes
    a while the first time; later loads read the cache (see `genlab.data.images`)."""
    base = data_root(root)
    found = _cifar_sources(base)
    if found is None:
        raise DataError(
            f"cifar10 not found: put the archives cifar10-jpeg75-train.tar.gz and cifar10-jpeg75-test.tar.gz "
            f"(or any .tar.gz with 'train' / 'test' in its name, holding train/<class>/*.png|jpg and "
            f"test/<class>/...) in '{base / 'cifar10'}/', or unpack them there as folders train/ and test/. "
            f"{_ROOT_HELP}"
        )
    options = ImageOptions(grayscale=False)
    cache = parse_flag(cache, "cache")
    if isinstance(found, Path):
        arrays = read_images(found, options, cache_dir=cache_dir, cache=cache)
        if arrays.split_of is None or arrays.labels is None:
            raise DataError(f"'{found}' must hold train/<class>/ and test/<class>/ image folders")
        parts = [(arrays.x[arrays.split_of == s], arrays.labels[arrays.split_of == s]) for s in ("train", "test")]
        class_names = arrays.class_names
    else:
        parts, names = [], []
        for archive in found:
            arrays = read_images(archive, options, cache_dir=cache_dir, cache=cache)
            if arrays.labels is None:
                raise DataError(f"'{archive}' must hold images in one folder per class")
            parts.append((arrays.x, arrays.labels))
            names.append(arrays.class_names)
        if names[0] != names[1]:
            raise DataError(f"the classes of '{found[0].name}' and '{found[1].name}' differ: {names[0]} vs {names[1]}")
        class_names = names[0]
    (x_train, y_train), (x_test, y_test) = parts
    x = torch.from_numpy(np.concatenate([x_train, x_test]))
    y = torch.from_numpy(np.concatenate([y_train, y_test]).astype(np.int64))
    spec = image_spec("cifar10", x, class_names)
    return Dataset(x, spec, y, splits=_official_splits(len(x_train), len(x_test), seed))
