"""Images from a user's folder or tar archive, decoded once with Pillow and cached.

Layout of a folder (or of the tree inside an archive), read recursively:

- images anywhere below it; files whose names start with "." are skipped;
- a single top-level folder holding everything (e.g. `faces/` inside `faces.tar.gz`) is looked through;
- top-level folders named train / val / test (also training, valid, validation, testing) give the
  official splits; a missing val split is carved from train (10 %, seeded);
- when every image sits in a sub-folder, the sub-folder names are the classes (sorted).

Decoded images are stored as uint8 (N, C, H, W), levels 256, value range (0, 1), and cached as
an .npz in the cache folder (option `cache_dir`, else $GENLAB_CACHE, else ~/.cache/genlab), keyed
by a hash of the absolute path, the file sizes and modification times (of each image, or of the
archive) and the decoding options; a changed file gives a new key.
"""

from __future__ import annotations

import dataclasses
import hashlib
import io
import json
import os
import tarfile
from collections import Counter
from pathlib import Path
from typing import Any, Callable, Iterable

import numpy as np
import torch

from genlab.data.dataset import DataSpec, Dataset
from genlab.data.splits import carve_validation, seeded_splits
from genlab.errors import DataError
from genlab.files import atomic_write

IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".webp")
ARCHIVE_SUFFIXES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tar.xz")
SPLIT_FOLDERS = {
    "train": "train", "training": "train",
    "val": "val", "valid": "val", "validation": "val",
    "test": "test", "testing": "test",
}
_GRAY_MODES = {"1", "L", "LA", "I", "I;16", "F"}
_CACHE_VERSION = 1


def parse_flag(value: Any, option: str) -> bool:
    """A yes/no option given as a bool or as CLI text (true/false, yes/no, 1/0)."""
    if isinstance(value, str):
        lowered = value.strip().lower()
        if lowered not in ("true", "false", "yes", "no", "1", "0"):
            raise DataError(f"option {option} must be true or false, got {value!r}")
        return lowered in ("true", "yes", "1")
    return bool(value)


def is_archive(path: Path) -> bool:
    name = path.name.lower()
    return any(name.endswith(s) for s in ARCHIVE_SUFFIXES)


def archive_stem(path: Path) -> str:
    name = path.name
    for suffix in sorted(ARCHIVE_SUFFIXES, key=len, reverse=True):
        if name.lower().endswith(suffix):
            return name[: -len(suffix)]
    return path.stem


def cache_folder(cache_dir: str | os.PathLike | None = None) -> Path:
    """The folder for decoded-image caches: `cache_dir`, else $GENLAB_CACHE, else ~/.cache/genlab."""
    if cache_dir is not None:
        return Path(cache_dir).expanduser()
    if os.environ.get("GENLAB_CACHE"):
        return Path(os.environ["GENLAB_CACHE"]).expanduser()
    return Path.home() / ".cache" / "genlab"


# -- options ----------------------------------------------------------------------------------------
@dataclasses.dataclass(frozen=True)
class ImageOptions:
    """resize: output (H, W), or None to keep the size (then all images must share it).
    crop: "center" crops each image to its central square before resizing, or None.
    grayscale: True (1 channel), False (RGB, 3 channels) or None: grayscale when all images are."""

    resize: tuple[int, int] | None = None
    crop: str | None = None
    grayscale: bool | None = None

    @classmethod
    def parse(cls, resize: Any = None, crop: Any = None, grayscale: Any = None) -> "ImageOptions":
        if resize is not None:
            if isinstance(resize, str):  # CLI text: "32", "32,48" or "32x48"
                try:
                    resize = [int(v) for v in resize.strip("()[] ").replace("x", ",").split(",") if v.strip()]
                except ValueError:
                    raise DataError(f"resize must be a positive int or (height, width), got {resize!r}") from None
                resize = resize * 2 if len(resize) == 1 else resize
            if isinstance(resize, (int, np.integer)):
                resize = (int(resize), int(resize))
            resize = tuple(int(v) for v in resize)
            if len(resize) != 2 or min(resize) < 1:
                raise DataError(f"resize must be a positive int or (height, width), got {resize!r}")
        if isinstance(crop, str) and crop.lower() in ("none", ""):
            crop = None
        if crop not in (None, "center"):
            raise DataError(f"crop must be 'center' or None, got {crop!r}")
        if isinstance(grayscale, str) and grayscale.strip().lower() == "auto":
            grayscale = None
        return cls(resize, crop, None if grayscale is None else parse_flag(grayscale, "grayscale"))


@dataclasses.dataclass
class ImageArrays:
    """Decoded images x (N, C, H, W) uint8, with labels (N,) int64 and the split of each image
    ("train", "val", "test") where the layout gives them."""

    x: np.ndarray
    labels: np.ndarray | None
    class_names: tuple[str, ...] | None
    split_of: np.ndarray | None


# -- listing -----------------------------------------------------------------------------------------
@dataclasses.dataclass
class _Entry:
    parts: tuple[str, ...]  # path inside the folder or archive
    open: Callable[[], Any]  # a path or file object Pillow can open


def _is_image_name(name: str) -> bool:
    return not name.startswith(".") and name.lower().endswith(IMAGE_EXTENSIONS)


def _list_folder(folder: Path) -> tuple[list[_Entry], list[tuple[str, int, int]]]:
    entries, stats = [], []
    for dirpath, dirnames, filenames in os.walk(folder):
        dirnames[:] = sorted(d for d in dirnames if not d.startswith("."))
        for fname in sorted(filenames):
            if _is_image_name(fname):
                full = Path(dirpath) / fname
                rel = full.relative_to(folder)
                st = full.stat()
                entries.append(_Entry(rel.parts, lambda full=full: full))
                stats.append((rel.as_posix(), st.st_size, st.st_mtime_ns))
    order = sorted(range(len(entries)), key=lambda i: entries[i].parts)  # the same order as in an archive
    return [entries[i] for i in order], [stats[i] for i in order]


def _list_archive(archive: Path) -> list[_Entry]:
    entries = []
    try:
        with tarfile.open(archive, "r|*") as tar:  # streaming: one pass through the compression
            for member in tar:
                parts = tuple(p for p in member.name.split("/") if p not in ("", "."))
                if member.isfile() and parts and _is_image_name(parts[-1]) and not any(p.startswith(".") for p in parts):
                    data = tar.extractfile(member).read()
                    entries.append(_Entry(parts, lambda data=data: io.BytesIO(data)))
    except (tarfile.TarError, OSError, EOFError) as err:
        raise DataError(f"cannot read archive '{archive}': {err}") from None
    entries.sort(key=lambda e: e.parts)
    return entries


def _layout(entries: list[_Entry]) -> tuple[list[str | None], list[str | None]]:
    """Split and class of each entry from its path (see the module docstring)."""
    parts = [e.parts for e in entries]
    # look through a single top folder holding everything
    while parts and all(len(p) >= 2 for p in parts) and len({p[0] for p in parts}) == 1:
        parts = [p[1:] for p in parts]
    splits: list[str | None] = [None] * len(parts)
    tops = {p[0].lower() for p in parts if len(p) >= 2}
    if parts and all(len(p) >= 2 for p in parts) and tops <= set(SPLIT_FOLDERS) and "train" in {SPLIT_FOLDERS[t] for t in tops}:
        splits = [SPLIT_FOLDERS[p[0].lower()] for p in parts]
        parts = [p[1:] for p in parts]
    classes: list[str | None] = [None] * len(parts)
    if parts and all(len(p) >= 2 for p in parts):
        classes = [p[0] for p in parts]
    return splits, classes


# -- decoding ----------------------------------------------------------------------------------------
def _open_image(entry: _Entry):
    from PIL import Image

    try:
        return Image.open(entry.open())
    except Exception as err:  # Pillow raises several types for broken files
        raise DataError(f"cannot read image '{'/'.join(entry.parts)}': {err}") from None


def _decode_image(entry: _Entry, options: ImageOptions, gray: bool, size: tuple[int, int]) -> np.ndarray:
    """One image -> (H, W) or (H, W, 3) uint8 after optional centre crop and resize."""
    from PIL import Image

    img = _open_image(entry)
    height, width = size
    mode = "L" if gray else "RGB"
    if options.resize is not None and img.format == "JPEG":
        side = max(height, width)
        img.draft(mode, (side, side) if options.crop else (width, height))  # decode at a reduced scale
    try:
        img = img.convert(mode)
    except Exception as err:
        raise DataError(f"cannot decode image '{'/'.join(entry.parts)}': {err}") from None
    if options.crop == "center":
        w, h = img.size
        s = min(w, h)
        left, top = (w - s) // 2, (h - s) // 2
        img = img.crop((left, top, left + s, top + s))
    if img.size != (width, height):
        img = img.resize((width, height), Image.Resampling.BICUBIC)  # antialiased when shrinking
    return np.asarray(img, dtype=np.uint8)


def decode_images(entries: list[_Entry], options: ImageOptions, where: str) -> ImageArrays:
    """Decode listed images into uint8 (N, C, H, W) with labels and splits from the layout."""
    if not entries:
        raise DataError(
            f"no images in '{where}'; genlab reads {', '.join(IMAGE_EXTENSIONS)} files, in sub-folders too"
        )
    headers = []
    for entry in entries:
        img = _open_image(entry)
        headers.append((img.size, img.mode))
        img.close()
    gray = options.grayscale if options.grayscale is not None else all(m in _GRAY_MODES for _, m in headers)
    if options.resize is not None:
        size = options.resize
    else:
        sizes = Counter((min(w, h), min(w, h)) if options.crop else (h, w) for (w, h), _ in headers)
        if len(sizes) > 1:
            ordered = sorted(sizes)
            shown = ", ".join(f"{h}x{w}" for h, w in ordered[:6]) + (", ..." if len(ordered) > 6 else "")
            smallest = min(min(s) for s in sizes)
            not_square = any(h != w for h, w in sizes)
            hint = f"pass resize={smallest} (CLI: --data-option resize={smallest}) to resize them"
            if not_square:
                hint += ", with crop=center to keep their proportions"
            raise DataError(f"images in '{where}' have {len(sizes)} different sizes (height x width: {shown}); {hint}")
        size = next(iter(sizes))
    channels = 1 if gray else 3
    x = np.empty((len(entries), size[0], size[1], channels), dtype=np.uint8)
    for i, entry in enumerate(entries):
        pixels = _decode_image(entry, options, gray, size)
        x[i] = pixels.reshape(size[0], size[1], channels)
    x = np.ascontiguousarray(x.transpose(0, 3, 1, 2))  # (N, H, W, C) -> (N, C, H, W)

    splits, classes = _layout(entries)
    labels, class_names = None, None
    if classes[0] is not None:
        class_names = tuple(sorted(set(classes)))
        index = {c: k for k, c in enumerate(class_names)}
        labels = np.array([index[c] for c in classes], dtype=np.int64)
    split_of = None if splits[0] is None else np.array(splits)
    return ImageArrays(x, labels, class_names, split_of)


# -- cache -------------------------------------------------------------------------------------------
def _cache_key(path: Path, fingerprint: Any, options: ImageOptions) -> str:
    material = json.dumps(
        {"version": _CACHE_VERSION, "path": str(path), "files": fingerprint, "options": dataclasses.asdict(options)},
        sort_keys=True,
    )
    return hashlib.sha256(material.encode()).hexdigest()[:24]


def _read_cache(file: Path) -> ImageArrays | None:
    try:
        with np.load(file, allow_pickle=False) as z:
            return ImageArrays(
                z["x"],
                z["labels"] if "labels" in z else None,
                tuple(str(c) for c in z["class_names"]) if "class_names" in z else None,
                z["split_of"] if "split_of" in z else None,
            )
    except Exception:  # unreadable or partial cache: decode again
        return None


def _write_cache(file: Path, arrays: ImageArrays) -> None:
    """Write atomically (a temporary file renamed over the target), so readers never see half a file."""
    try:
        file.parent.mkdir(parents=True, exist_ok=True)
        content = {"x": arrays.x}
        if arrays.labels is not None:
            content["labels"] = arrays.labels
            content["class_names"] = np.array(arrays.class_names)
        if arrays.split_of is not None:
            content["split_of"] = arrays.split_of
        atomic_write(file, lambda f: np.savez(f, **content))
    except OSError:
        pass  # a read-only or full cache folder only costs decoding time next time


def read_images(path: Path, options: ImageOptions, *, cache_dir: str | os.PathLike | None = None,
                cache: bool = True) -> ImageArrays:
    """Decode the images of a folder or tar archive at `path`, through the cache."""
    path = path.expanduser().resolve()
    if path.is_dir():
        entries, fingerprint = _list_folder(path)
        if not entries:
            archives = sorted(p.name for p in path.iterdir() if is_archive(p))
            extra = f"; it holds archive(s) {', '.join(archives)}: pass one of them as the path" if archives else ""
            raise DataError(
                f"no images in '{path}'; genlab reads {', '.join(IMAGE_EXTENSIONS)} files, in sub-folders too{extra}"
            )
        list_entries = lambda: entries  # noqa: E731
    else:
        st = path.stat()
        fingerprint = [st.st_size, st.st_mtime_ns]
        list_entries = lambda: _list_archive(path)  # noqa: E731
    file = cache_folder(cache_dir) / f"images-{_cache_key(path, fingerprint, options)}.npz"
    if cache and file.exists():
        arrays = _read_cache(file)
        if arrays is not None:
            return arrays
    arrays = decode_images(list_entries(), options, str(path))
    if cache:
        _write_cache(file, arrays)
    return arrays


def image_names(path: str | os.PathLike) -> list[str]:
    """The images of a folder or tar archive as paths inside it ("cats/001.png"), in the order
    `load_image_folder` stores them."""
    path = Path(path).expanduser().resolve()
    entries = _list_folder(path)[0] if path.is_dir() else _list_archive(path)
    return ["/".join(e.parts) for e in entries]


# -- datasets ----------------------------------------------------------------------------------------
def image_spec(name: str, x: np.ndarray | torch.Tensor, class_names: Iterable[str] | None, levels: int | None = 256) -> DataSpec:
    class_names = None if class_names is None else tuple(class_names)
    return DataSpec(
        name=name,
        kind="image",
        shape=tuple(int(s) for s in x.shape[1:]),
        value_range=(0.0, 1.0),
        num_classes=None if class_names is None else len(class_names),
        levels=levels,
        class_names=class_names,
    )


def splits_from_folders(split_of: np.ndarray, seed: int, val_fraction: float = 0.1) -> dict[str, torch.Tensor]:
    """Index tensors of the official splits; val carved from train (seeded) when there is none."""
    splits = {s: torch.from_numpy(np.flatnonzero(split_of == s)) for s in ("train", "val", "test")}
    if len(splits["val"]) == 0:
        splits["train"], splits["val"] = carve_validation(splits["train"], round(val_fraction * len(splits["train"])), seed)
    return {k: v for k, v in splits.items() if len(v)}


def load_image_folder(path: Path, *, seed: int = 0, resize: Any = None, crop: str | None = None,
                      grayscale: Any = None, cache_dir: str | None = None, cache: bool = True) -> Dataset:
    """A folder of images or a .tar/.tar.gz/.tgz of one (see the module docstring).

    Options: resize (int or (H, W)), crop ("center" or None), grayscale (True, False, None = auto),
    cache_dir, cache (False to skip the cache). Splits: the official ones from train/val/test
    folders, else `seeded_splits(N, seed)`.
    """
    options = ImageOptions.parse(resize, crop, grayscale)
    arrays = read_images(path, options, cache_dir=cache_dir, cache=parse_flag(cache, "cache"))
    name = archive_stem(path) if is_archive(path) else path.name
    x = torch.from_numpy(arrays.x)
    labels = None if arrays.labels is None else torch.from_numpy(arrays.labels)
    splits = seeded_splits(len(x), seed) if arrays.split_of is None else splits_from_folders(arrays.split_of, seed)
    return Dataset(x, image_spec(name, x, arrays.class_names), labels, splits=splits)
