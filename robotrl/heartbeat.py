"""A progress line every few seconds during a long phase, so no phase of a run is silent for more than ~10 s."""

from __future__ import annotations

import time
from collections.abc import Callable

EVERY_S = 5.0  # seconds between lines; a phase shorter than this prints nothing


class Heartbeat:
    """Call :meth:`tick` often (every step); it writes ``"<label>: <what> (<elapsed> s)"`` at most every
    ``every`` seconds. ``what`` is a callable so that building the text costs nothing between lines."""

    def __init__(self, label: str, every: float | None = None, write: Callable[[str], object] = print):
        self.label, self.every, self.write = label, EVERY_S if every is None else every, write
        self._start = self._last = time.perf_counter()

    def tick(self, what: Callable[[], str]) -> None:
        now = time.perf_counter()
        if now - self._last >= self.every:
            self._last = now
            self.write(f"{self.label}: {what()} ({now - self._start:.0f} s)")
