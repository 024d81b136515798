"""Crash-safe file writes: readers see the old file or the complete new one, never a partial file."""

from __future__ import annotations

import os
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import IO, Any

from robotrl.errors import ConfigError


def fsync_dir(path: Path) -> None:
    """Make a rename inside ``path`` durable (the directory entry itself must reach the disk)."""
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


@contextmanager
def atomic_write(path: str | Path, mode: str = "wb") -> Iterator[IO[Any]]:
    """Write through a temp file next to ``path``; on success flush, fsync, rename over ``path``, fsync the dir.

    On any exception (Ctrl-C included) the temp file is removed and ``path`` is left as it was.
    """
    path = Path(path)
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.", suffix=".tmp")
    try:
        os.fchmod(fd, 0o644)  # mkstemp makes 0600 files; outputs are meant to be shared
        with os.fdopen(fd, mode) as f:
            yield f
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    fsync_dir(path.parent)


def atomic_write_text(path: str | Path, text: str) -> None:
    with atomic_write(path, "w") as f:
        f.write(text)


def writable_dir(path: str | Path, key: str) -> Path:
    """``path`` as an output directory (made if missing), checked before a command's work: a file there, or a
    directory that cannot be made, is a ConfigError naming ``key`` instead of an error after the work (an arm's
    episodes) is done."""
    path = Path(path)
    if path.exists() and not path.is_dir():
        raise ConfigError(f"{key}={str(path)!r} is a file; expected a directory (made if missing)")
    try:
        path.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}={str(path)!r}: cannot make this directory ({exc.strerror})") from None
    return path


def writable_file(path: str | Path, key: str) -> Path:
    """``path`` as an output file, checked before a command's work: an existing directory there, or a folder for it
    that cannot be made, is a ConfigError naming ``key``."""
    path = Path(path)
    if path.is_dir():
        raise ConfigError(f"{key}={str(path)!r} is a directory; expected a file path")
    if path.parent.exists() and not path.parent.is_dir():
        raise ConfigError(f"{key}={str(path)!r}: {path.parent} is a file, not a folder")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ConfigError(f"{key}={str(path)!r}: cannot make its folder ({exc.strerror})") from None
    return path
