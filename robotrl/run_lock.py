"""One writer per directory: a run dir, a record session or a World-Env run is written by one process at a time.

:func:`hold` takes an exclusive ``flock`` on ``<dir>/.robotrl.lock`` and keeps it until :func:`release` or the end of
the process (whose normal end also removes the lock file): a killed process's lock goes with it (the kernel drops it;
the file it leaves is reused), so there is nothing stale to clean up. A
second writer gets one line naming the holder (its pid and command line, written into the lock file).
:func:`check_free` tests without taking it, for a command that must refuse before anything is written (``robotrl
train`` checks before Hydra writes ``.hydra/`` into the run dir; the job then holds the lock while it trains).
"""

from __future__ import annotations

import atexit
import fcntl
import os
import sys
from pathlib import Path

from robotrl.errors import RunDirBusyError

LOCK_NAME = ".robotrl.lock"
_held: dict[Path, int] = {}  # dir -> the open lock file this process holds


def _busy(path: Path, fd: int, what: str) -> RunDirBusyError:
    holder = os.pread(fd, 400, 0).decode(errors="replace").strip() or "pid unknown"
    return RunDirBusyError(f"{what} {path} is being written by another process ({holder}); wait for it to end or "
                           f"stop it (Ctrl-C), or choose another dir")


def hold(path: str | Path, what: str = "run dir") -> None:
    """Take the lock of ``path`` (created if missing) for this process; RunDirBusyError if another process has it."""
    path = Path(path).absolute()
    if path in _held:
        return
    path.mkdir(parents=True, exist_ok=True)
    fd = os.open(path / LOCK_NAME, os.O_RDWR | os.O_CREAT, 0o644)
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        error = _busy(path, fd, what)
        os.close(fd)
        raise error from None
    os.ftruncate(fd, 0)
    os.pwrite(fd, f"pid {os.getpid()}: {' '.join(sys.argv)}".encode()[:400], 0)
    if not _held:  # registered on first use: importing robotrl installs no exit hook
        atexit.unregister(_release_all)
        atexit.register(_release_all)
    _held[path] = fd


def release(path: str | Path, remove: bool = False) -> None:
    """Give the lock of ``path`` back (``remove``: delete the lock file too, for a dir about to be removed)."""
    path = Path(path).absolute()
    fd = _held.pop(path, None)
    if fd is None:
        return
    if remove:
        (path / LOCK_NAME).unlink(missing_ok=True)
    fcntl.flock(fd, fcntl.LOCK_UN)
    os.close(fd)


def _release_all() -> None:  # a process that ends normally leaves no lock file behind (a killed one: harmless)
    for path in list(_held):
        release(path, remove=True)


def check_free(path: str | Path, what: str = "run dir") -> None:
    """RunDirBusyError if another process holds the lock of ``path``; takes nothing (a missing dir is free)."""
    path = Path(path).absolute()
    if path in _held or not (path / LOCK_NAME).is_file():
        return
    fd = os.open(path / LOCK_NAME, os.O_RDONLY)
    try:
        fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
    except BlockingIOError:
        raise _busy(path, fd, what) from None
    finally:
        os.close(fd)  # closing drops a lock taken just now

