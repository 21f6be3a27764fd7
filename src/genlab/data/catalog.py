"""`load` a dataset by name or path, and the catalogue of names (`list_datasets`).

A path is read by what it is: a folder of images or a .tar(.gz) of one, a .npy / .npz array,
an idx file (gzipped or not), a .csv / .tsv table. Options are keywords of the loader that reads
it (listed in each DataError about an unknown option). The dataset's `source` records the name
or absolute path, the seed and the options given, so `load(**dataset.source)` loads it again.
"""

from __future__ import annotations

import dataclasses
import difflib
import functools
import inspect
import os
from pathlib import Path
from typing import Any, Callable

from genlab.data import embedded, standard, toy
from genlab.data.dataset import Dataset
from genlab.data.files import is_idx_name, load_array_file, load_csv, load_idx_file
from genlab.data.images import IMAGE_EXTENSIONS, is_archive, load_image_folder
from genlab.config import parse_value
from genlab.errors import ArgumentTypeError, DataError, DataNotFoundError

# options that change how data is read or cached, not what it is: not recorded in `source`
_NOT_RECORDED = ("cache_dir", "cache")


@dataclasses.dataclass(frozen=True)
class CatalogEntry:
    name: str
    description: str
    loader: Callable[..., Dataset]


_CATALOG: dict[str, CatalogEntry] = {}


def _add(name: str, description: str, loader: Callable[..., Dataset]) -> None:
    _CATALOG[name] = CatalogEntry(name, description, loader)


_add("digits", "images: 1,797 handwritten digits, 8x8, 17 grey levels, 10 classes (scikit-learn)", embedded.load_digits)
for _name in toy.TOY_NAMES:
    _add(_name, toy.DESCRIPTIONS[_name], functools.partial(toy.load_toy, _name))
for _name, _description in embedded.TABLE_DESCRIPTIONS.items():
    _add(_name, _description, functools.partial(embedded.load_sklearn_table, _name))
_add("mnist", "images: MNIST 70,000 digits, 28x28 (your idx files under the data root)",
     functools.partial(standard.load_idx_dataset, "mnist"))
_add("fashion_mnist", "images: Fashion-MNIST 70,000 clothes, 28x28, 10 classes (your idx files under the data root)",
     functools.partial(standard.load_idx_dataset, "fashion_mnist"))
_add("cifar10", "images: CIFAR-10 60,000 32x32 RGB, 10 classes (your image folders or archives under the data root)",
     standard.load_cifar10)

_ALIASES = {"fashion-mnist": "fashion_mnist", "fashionmnist": "fashion_mnist", "cifar-10": "cifar10"}

_PATH_KINDS = (
    "a folder of images (" + ", ".join(IMAGE_EXTENSIONS) + ") or a .tar/.tar.gz/.tgz of one, "
    "a .npy/.npz array, an idx file (e.g. train-images-idx3-ubyte.gz) or a .csv table"
)


def list_datasets() -> list[tuple[str, str]]:
    """(name, one-line description) of every dataset known by name.

    >>> ("digits" in dict(list_datasets()), "8gaussians" in dict(list_datasets()))
    (True, True)
    """
    return [(e.name, e.description) for e in _CATALOG.values()]


def _options_of(loader: Callable[..., Dataset]) -> list[str]:
    return [p for p in inspect.signature(loader).parameters if p not in ("seed", "root")]


def _call(loader: Callable[..., Dataset], what: str, seed: int, root: Any, options: dict[str, Any]) -> Dataset:
    allowed = _options_of(loader)
    unknown = sorted(set(options) - set(allowed))
    if unknown:
        takes = f"its options are {', '.join(allowed)}" if allowed else "it takes no options"
        raise DataError(f"{what} has no option {', '.join(map(repr, unknown))}; {takes}")
    kwargs = dict(options)
    if "root" in inspect.signature(loader).parameters:
        kwargs["root"] = root
    return loader(seed=seed, **kwargs)


def _path_loader(path: Path) -> Callable[..., Dataset]:
    suffix = path.suffix.lower()
    if path.is_dir() or is_archive(path):
        return functools.partial(load_image_folder, path)
    if suffix in (".npy", ".npz"):
        return functools.partial(load_array_file, path)
    if suffix in (".csv", ".tsv"):
        return functools.partial(load_csv, path)
    if is_idx_name(path):
        return functools.partial(load_idx_file, path)
    raise DataError(f"cannot tell how to read '{path}'; genlab reads {_PATH_KINDS}")


def _plain(value: Any) -> Any:
    """Option values as JSON/YAML-safe types, so a run's config can record its data source."""
    if isinstance(value, (tuple, list)):
        return [_plain(v) for v in value]
    if isinstance(value, os.PathLike):
        return os.fspath(value)
    return value


def _looks_like_path(text: str) -> bool:
    return os.sep in text or "/" in text or text.startswith((".", "~")) or Path(text).suffix != ""


def load(name_or_path: str | os.PathLike | None = None, *, name: str | os.PathLike | None = None,
         root: str | os.PathLike | None = None, seed: int = 0, **options: Any) -> Dataset:
    """Load a dataset by catalogue name (see `list_datasets`) or by path.

    name_or_path: "digits", "8gaussians", "mnist", ... or a path (see the module docstring);
        `name=` is the same argument under the key `source` records it.
    root: where standard datasets (mnist, fashion_mnist, cifar10) are looked up, else
        $GENLAB_DATA, else ./data; recorded in `source` when given; unused by other datasets.
        A catalogue name wins over a file of that name: write "./digits" for the file.
    seed: seeds the samples of toy densities and every split drawn at random.
    options: the loader's own, e.g. n=50_000 for toys; resize=32, crop="center", grayscale=True,
        cache_dir for images; target="label" for CSV tables.

    >>> data = load("digits")
    >>> data.spec.shape, len(data.train), len(data.val), len(data.test)
    ((1, 8, 8), 1437, 180, 180)
    >>> data.source
    {'name': 'digits', 'seed': 0}
    """
    if name_or_path is not None and name is not None:
        raise DataError("give the dataset once: load(name_or_path) or load(name=...), not both")
    target = name_or_path if name_or_path is not None else name
    if target is None:
        raise DataError("load() needs a dataset name or a path; known names: " + ", ".join(_CATALOG))
    if not isinstance(target, (str, os.PathLike)):
        raise ArgumentTypeError(f"load() takes a dataset name or a path, not {type(target).__name__} {target!r}; e.g. load('digits')")
    text = os.fspath(target)
    seed = parse_value(seed, int, "load(seed=...)")
    key = _ALIASES.get(text.lower(), text.lower()) if isinstance(target, str) else None

    if key in _CATALOG:
        entry = _CATALOG[key]
        dataset = _call(entry.loader, f"dataset {entry.name!r}", seed, root, options)
        source: dict[str, Any] = {"name": entry.name, "seed": seed}
        if root is not None and "root" in inspect.signature(entry.loader).parameters:
            source["root"] = str(Path(root).expanduser().resolve())
    else:
        path = Path(text).expanduser()
        if not path.exists():
            if not _looks_like_path(text):
                close = difflib.get_close_matches(text.lower(), list(_CATALOG) + list(_ALIASES), n=3)
                hint = f" (did you mean {' or '.join(close)}?)" if close else ""
                raise DataError(
                    f"unknown dataset {text!r}{hint}; known names: {', '.join(_CATALOG)}; "
                    f"or give the path of {_PATH_KINDS} (no file or folder '{path}' exists)"
                )
            where = f" (relative to {Path.cwd()})" if not path.is_absolute() else ""
            raise DataNotFoundError(f"no file or folder at '{path}'{where}")
        path = path.resolve()  # root= only applies to named datasets; a path is read as given
        dataset = _call(_path_loader(path), f"'{path.name}'", seed, None, options)
        source = {"name": str(path), "seed": seed}
    source.update({k: _plain(v) for k, v in options.items() if k not in _NOT_RECORDED})
    if dataset.encoder is not None:  # a table's encoding, recorded so that a later default cannot change it
        source.setdefault("numeric", dataset.encoder.numeric)
    dataset.source = source
    return dataset
