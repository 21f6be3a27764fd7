"""Atomic file writes, used for every file genlab leaves behind (checkpoints, pictures, caches).

A file is replaced in one rename, so a reader (a resumed run, a report, a browser refreshing) sees
the old version or the new one, never half of each, and a crash mid-write loses nothing.
"""

from __future__ import annotations

import os
import uuid
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Callable, Iterator


@contextmanager
def atomic_path(path: str | os.PathLike) -> Iterator[Path]:
    """Yield a temporary path beside `path`; when the block succeeds it is synced and renamed onto
    `path`, otherwise removed. Creates missing parent folders."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # a fresh unique name opened by the writer (not mkstemp) keeps the umask permissions, not 0600
    tmp = path.with_name(f".{path.name}.{os.getpid()}.{uuid.uuid4().hex[:8]}.tmp")
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
