"""Config dataclasses: defaults that work, validated at construction, settable from strings (CLI `--set`)."""

from __future__ import annotations

import dataclasses
import math
import re
import types
import typing
from typing import Any, Iterable, Mapping, TypeVar

from genlab.errors import ConfigError

C = TypeVar("C", bound="Config")

# TrainConfig's batch size, here so that the models' CPU defaults can scale it without importing
# the training layer above them
DEFAULT_BATCH_SIZE = 128


@dataclasses.dataclass
class Config:
    """Base of every model and training config.

    Subclasses are dataclasses whose fields have defaults; they override `validate()` and call
    the helpers below, so that a wrong value fails at construction with the field's name.
    """

    def __post_init__(self) -> None:
        self.validate()

    def validate(self) -> None:
        """Raise ConfigError on an impossible value. Subclasses extend this."""

    # -- helpers for validate() ---------------------------------------------------------
    def _choice(self, field: str, allowed: Iterable[Any]) -> None:
        allowed = tuple(allowed)
        value = getattr(self, field)
        if value not in allowed:
            raise ConfigError(
                f"{type(self).__name__}.{field}={value!r} is not allowed; choose one of {', '.join(map(repr, allowed))}"
            )

    def _positive(self, *fields: str, allow_zero: bool = False) -> None:
        for field in fields:
            value = getattr(self, field)
            ok = value >= 0 if allow_zero else value > 0
            if not ok:
                bound = ">= 0" if allow_zero else "> 0"
                raise ConfigError(f"{type(self).__name__}.{field}={value!r} must be {bound}")

    def _in_range(self, field: str, low: float, high: float) -> None:
        value = getattr(self, field)
        if not (low <= value <= high):
            raise ConfigError(f"{type(self).__name__}.{field}={value!r} must lie in [{low}, {high}]")

    # -- conversion -----------------------------------------------------------------------
    def to_dict(self) -> dict[str, Any]:
        return {f.name: _plain(getattr(self, f.name)) for f in dataclasses.fields(self)}

    @classmethod
    def field_names(cls) -> list[str]:
        return [f.name for f in dataclasses.fields(cls)]

    @classmethod
    def field_docs(cls) -> dict[str, str]:
        """One line of text per field, from the class docstrings where they document it in the
        `name: text` (or `name_a, name_b: text`) style, the first sentence of the text; "" where none
        does. Walks the bases, so a preset's config (a subclass without docs) gets its base's.

        >>> import dataclasses
        >>> @dataclasses.dataclass
        ... class Toy(Config):
        ...     '''A toy.
        ...
        ...     width, depth: sizes of the net; both positive.
        ...     rate: step size.'''
        ...     width: int = 1
        ...     depth: int = 2
        ...     rate: float = 0.1
        ...     seed: int = 0
        >>> Toy.field_docs()
        {'width': 'sizes of the net', 'depth': 'sizes of the net', 'rate': 'step size', 'seed': ''}
        """
        names = cls.field_names()
        docs: dict[str, str] = {}
        for klass in cls.__mro__:
            if "__doc__" in vars(klass) and klass.__doc__:
                for field, text in _documented_fields(klass.__doc__, set(names)):
                    docs.setdefault(field, text)
        return {name: docs.get(name, "") for name in names}

    @classmethod
    def from_dict(cls: type[C], values: Mapping[str, Any]) -> C:
        """Build from keyword values; strings are parsed by the field's type (so CLI words work)."""
        hints = typing.get_type_hints(cls)
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(
                f"{cls.__name__} has no field {', '.join(map(repr, unknown))}; its fields are: {', '.join(sorted(known))}"
            )
        parsed = {k: parse_value(v, hints[k], f"{cls.__name__}.{k}") for k, v in values.items()}
        return cls(**parsed)

    def replace(self: C, **changes: Any) -> C:
        return type(self).from_dict({**self.to_dict(), **changes})


_DOC_ENTRY = re.compile(r"^([A-Za-z_]\w*(?:\s*,\s*[A-Za-z_]\w*)*)\s*:\s+(\S.*)$")


def _documented_fields(doc: str, names: set[str]) -> list[tuple[str, str]]:
    """(field, first sentence) for each `name[, name]: text` entry of a docstring whose names are all
    fields. An entry's text runs on over the more indented lines below it; its first sentence ends at
    a full stop or semicolon outside brackets, and another entry may follow a semicolon
    (`sample_steps: ...; eta: ...`)."""
    lines = doc.expandtabs().splitlines()
    found: list[tuple[str, str]] = []
    i = 0
    while i < len(lines):
        match = _DOC_ENTRY.match(lines[i].strip())
        indent = len(lines[i]) - len(lines[i].lstrip())
        i += 1
        if not match:
            continue
        text = [lines[i - 1].strip()]
        while i < len(lines) and lines[i].strip() and len(lines[i]) - len(lines[i].lstrip()) > indent:
            text.append(lines[i].strip())
            i += 1
        for segment in _top_level_segments(" ".join(text)):
            entry = _DOC_ENTRY.match(segment)
            fields = [f.strip() for f in entry.group(1).split(",")] if entry else []
            if not fields or not set(fields) <= names:
                break
            sentence = _top_level_segments(entry.group(2), ".;")[0]
            found += [(f, sentence) for f in fields]
    return found


def _top_level_segments(text: str, stops: str = ";") -> list[str]:
    """`text` cut at each of `stops` followed by a space (or the end) outside brackets."""
    segments, depth, start = [], 0, 0
    for k, ch in enumerate(text):
        depth += (ch in "([{") - (ch in ")]}")
        if depth == 0 and ch in stops and (k + 1 == len(text) or text[k + 1] == " "):
            segments.append(text[start:k].strip())
            start = k + 1
    return [*segments, text[start:].strip()] if text[start:].strip() else segments or [""]


def _plain(value: Any) -> Any:
    if isinstance(value, tuple):
        return list(value)
    return value


def parse_value(value: Any, annotation: Any, where: str) -> Any:
    """Convert `value` (often a string from the command line or YAML) to the annotated type."""
    origin = typing.get_origin(annotation)
    args = typing.get_args(annotation)
    if origin in (typing.Union, types.UnionType):
        if value is None or (isinstance(value, str) and value.lower() in ("none", "null")):
            if type(None) in args:
                return None
        errors = []
        for arg in args:
            if arg is type(None):
                continue
            try:
                return parse_value(value, arg, where)
            except ConfigError as exc:
                errors.append(str(exc))
        raise ConfigError(errors[0] if errors else f"{where}: cannot parse {value!r}")
    if origin in (tuple, list):
        if isinstance(value, str):
            value = [v for v in value.replace("(", "").replace(")", "").replace("[", "").replace("]", "").split(",") if v.strip()]
        item_type = args[0] if args else str
        items = [parse_value(v.strip() if isinstance(v, str) else v, item_type, where) for v in value]
        return tuple(items) if origin is tuple else items
    if origin is typing.Literal:
        if value not in args:
            raise ConfigError(f"{where}={value!r} is not allowed; choose one of {', '.join(map(repr, args))}")
        return value
    if annotation is bool:
        if isinstance(value, bool):
            return value
        if isinstance(value, str) and value.lower() in ("1", "true", "yes", "on"):
            return True
        if isinstance(value, str) and value.lower() in ("0", "false", "no", "off"):
            return False
        raise ConfigError(f"{where}={value!r} is not a boolean; use true or false")
    if annotation in (int, float):
        if isinstance(value, bool):
            raise ConfigError(f"{where}={value!r} must be a number")
        try:
            number = float(value)
        except (TypeError, ValueError, OverflowError):
            raise ConfigError(f"{where}={value!r} must be {'an integer' if annotation is int else 'a number'}") from None
        if not math.isfinite(number):
            raise ConfigError(f"{where}={value!r} must be a finite number")
        if annotation is int:
            if number != int(number):
                raise ConfigError(f"{where}={value!r} must be an integer")
            return int(number)
        return number
    if annotation is str:
        return str(value)
    return value


def parse_assignments(pairs: Iterable[str], *, flag: str = "--set", example: str = "latent_dim=16") -> dict[str, str]:
    """Parse CLI `--set key=value` (or another `flag`'s) words into a dict of strings."""
    out: dict[str, str] = {}
    for pair in pairs:
        if "=" not in pair:
            raise ConfigError(f"{flag} {pair!r} must look like key=value, e.g. {flag} {example}")
        key, value = pair.split("=", 1)
        out[key.strip()] = value.strip()
    return out
