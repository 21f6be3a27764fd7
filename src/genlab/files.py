"""Atomic file writes, used for every file genlab leaves behind (checkpoints, pictures, caches).

A file is replaced in one rename, so a reader (a resumed run, a report, a browser refreshing) sees
the old version or the new one, never half of each, and a crash mid-write loses nothing.
"""

from __future__ import annotations

import json
import os
import re
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator


TEMPORARY_SUFFIX = ".tmp"
# the temporary name atomic_path gives: .<name>.<pid of the writer>.<8 hex digits>.tmp
_TEMPORARY = re.compile(r"^\..+\.(?P<pid>\d+)\.[0-9a-f]{8}\.tmp$")


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it is synced and renamed onto
    `path`, otherwise removed. Creates missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh unique name opened by the writer (not mkstemp) keeps the umask permissions, not 0600
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}{TEMPORARY_SUFFIX}")
    try:
        yield tmp
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


def atomic_write(path: str | os.PathLike, write: Callable[[IO[bytes]], None]) -> Path:
    """Write a file through `write(fileobj)`, atomically (see `atomic_path`). Returns the path."""
    with atomic_path(path) as tmp:
        with open(tmp, "xb") as f:
            write(f)
    return Path(path)


def _process_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def remove_stale_temporaries(folder: str | os.PathLike) -> list[Path]:
    """Remove the temporary files that `atomic_path` leaves when its writer is killed mid-write,
    in `folder` and its sub-folders; files of a writer still running are kept. Returns the paths
    removed."""
    removed = []
    for path in Path(folder).rglob(f".*{TEMPORARY_SUFFIX}"):
        match = _TEMPORARY.match(path.name)
        if match and path.is_file() and not (int(match["pid"]) != os.getpid() and _process_alive(int(match["pid"]))):
            path.unlink(missing_ok=True)
            removed.append(path)
    return removed


def read_jsonl(path: str | os.PathLike) -> list[dict]:
    """The rows of a JSON-lines file, one object a line, blank lines skipped.

    A last line that does not parse is dropped: a writer killed mid-line leaves one. A line that does
    not parse, or is not an object, anywhere else raises ValueError naming its number.
    """
    lines = Path(path).read_text(errors="replace").splitlines()
    rows = []
    for number, line in enumerate(lines, 1):
        if not line.strip():
            continue
        try:
            row = json.loads(line)
        except json.JSONDecodeError:
            if number == len(lines):
                break
            raise ValueError(f"line {number} of {path} is not JSON") from None
        if not isinstance(row, dict):
            raise ValueError(f"line {number} of {path} is not a JSON object")
        rows.append(row)
    return rows
