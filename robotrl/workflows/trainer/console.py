"""The run's console side: the live progress bar, Ctrl-C at safe points, the versions written to run.json."""

from __future__ import annotations

import contextlib
import platform
import signal
import threading
import time
from collections.abc import Iterator
from importlib import metadata
from typing import Any

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

from robotrl.heartbeat import Heartbeat


class GracefulInterrupt:
    """Ctrl-C (SIGINT) during training, delivered at a safe point.

    The first Ctrl-C only sets a flag; :meth:`check`, called at every env step (training and evaluation: see
    :func:`stop_point`), raises KeyboardInterrupt there. So the interrupt never lands inside a library's internals
    (a tensorboard writer's lock, the GL context, a checkpoint being written), which can hang the process at exit or
    leave state half-written. Inside :meth:`anytime` (an agent's update: pure computation that a stopped run throws
    away) it raises at once, since an update can run for minutes. A second Ctrl-C interrupts immediately. Outside
    the main thread (no signal handlers there) it does nothing.
    """

    def __init__(self) -> None:
        self.requested = False
        self._anytime = False
        self._previous: Any = None

    def _handler(self, signum: int, frame: Any) -> None:
        if self.requested or self._anytime:
            raise KeyboardInterrupt
        self.requested = True

    def check(self) -> None:
        if self.requested:
            raise KeyboardInterrupt

    @contextlib.contextmanager
    def anytime(self) -> Iterator[None]:
        """A Ctrl-C inside stops at once (MR.Q's encoder phase runs 10-30 minutes from pixels on a CPU)."""
        self.check()
        self._anytime = True
        try:
            yield
        finally:
            self._anytime = False

    def __enter__(self) -> GracefulInterrupt:
        global _active
        if threading.current_thread() is threading.main_thread():
            self._previous = signal.signal(signal.SIGINT, self._handler)
            _active = self
        return self

    def __exit__(self, *exc: object) -> None:
        global _active
        if self._previous is not None:
            signal.signal(signal.SIGINT, self._previous)
            self._previous = None
            _active = None


_active: GracefulInterrupt | None = None  # the training loop's, while it runs


def stop_point() -> None:
    """A safe point of the running training loop (an evaluation env step): a pending Ctrl-C stops the run here.
    Nothing outside a training loop."""
    if _active is not None:
        _active.check()


def versions() -> dict[str, str]:
    out = {"python": platform.python_version()}
    for pkg in ("robotrl", "torch", "mujoco", "dm-control", "metaworld", "gymnasium"):
        try:
            out[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            out[pkg] = "not installed"
    return out


def make_progress(console: Console, total_steps: int, completed: int = 0) -> tuple[Progress, Any]:
    """The live training bar (agent steps done/total, frames per second, last episode return, elapsed, ETA). It fits
    80 columns at a 1.1M-frame run's counts and 10+ hour times; the env name is printed once before it."""
    progress = Progress(
        TextColumn("[bold]train"), BarColumn(bar_width=10), MofNCompleteColumn(),  # agent steps
        TextColumn("{task.fields[fps]:>5.0f} fps ret {task.fields[ret]:<7.1f}"),
        TimeElapsedColumn(), TextColumn("ETA"), TimeRemainingColumn(compact=True),
        console=console, refresh_per_second=2)
    task = progress.add_task("train", total=total_steps, completed=completed, fps=0.0, ret=float("nan"))
    return progress, task


LOG_EVERY_S = 300.0  # without a terminal: a step line at most this often between the per-episode lines


class ProgressBar:
    """The bar of one run and its frames-per-second meter (frames since the previous episode end). Logs and pipes
    (no terminal, no live bar) get a plain step line at most every ``LOG_EVERY_S`` within an episode, so a slow
    run (MR.Q from pixels on a CPU: ~40 min per episode) is never silent for long."""

    def __init__(self, console: Console, total_steps: int, step: int, frame: int) -> None:
        self.total_steps = total_steps
        self.progress, self.task = make_progress(console, total_steps, step)
        self._mark = (time.perf_counter(), frame)
        self._beat = None if console.is_terminal else Heartbeat("train", LOG_EVERY_S, console.print)

    def steps(self, step: int) -> None:
        self.progress.update(self.task, completed=min(step, self.total_steps))
        if self._beat is not None:
            self._beat.tick(lambda: f"step {step}/{self.total_steps}")

    def episode(self, step: int, ret: float) -> None:
        self.progress.update(self.task, completed=min(step, self.total_steps), ret=ret)

    def fps(self, frame: int) -> float:
        now = time.perf_counter()
        t0, f0 = self._mark
        self._mark = (now, frame)
        fps = (frame - f0) / max(now - t0, 1e-9)
        self.progress.update(self.task, fps=fps)
        return fps

    def __enter__(self) -> ProgressBar:
        self.progress.__enter__()
        return self

    def __exit__(self, *exc: object) -> None:
        self.progress.__exit__(*exc)
