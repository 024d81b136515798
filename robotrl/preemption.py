"""Preemption and time limits: a signal asks the run to checkpoint at its next safe point, then hand over.

A cluster scheduler warns a job before it preempts it or before its time limit (SLURM: ``--signal``; submitit sends
``SIGUSR2`` ``signal_delay_s`` seconds ahead). A checkpoint taken inside the signal handler would hold half an
episode, so the handler here only records the request while a training loop runs (:func:`cooperative`); the loop sees
:func:`requested` at its next episode end (an exact-resume point), writes a checkpoint there and calls
:func:`hand_off`, which runs the launcher's own handler (submitit: pickle the job, requeue it, exit; the requeued job
resumes from that checkpoint). A signal that arrives before the loop (building envs) is handed over at once, and the
job continues from its last checkpoint; one that arrives after the final checkpoint (final evaluation, summary) is
dropped: the run finishes, or is stopped with every checkpoint written and is then complete under ``resume``.

Nothing is installed in a plain ``robotrl train``; ``robotrl.workflows.sweep_launchers`` installs it in sweep jobs.
"""

from __future__ import annotations

import contextlib
import signal
from collections.abc import Callable, Iterator
from typing import Any

Handoff = Callable[[int], None]


class _State:
    handoff: Handoff | None = None  # the launcher's handler; None: nothing installed
    signum: int | None = None  # the signal received while a loop runs, not yet handed over
    loops: int = 0  # training loops running (cooperative contexts entered)


_state = _State()


def install(signum: int, handoff: Handoff) -> None:
    """Route ``signum`` here; ``handoff(signum)`` runs after the checkpoint (or at once when no loop runs)."""
    _state.handoff, _state.signum = handoff, None
    signal.signal(signum, _on_signal)


def uninstall() -> None:
    """Forget the handoff (the signal's handler is left to whoever installs the next one)."""
    _state.handoff, _state.signum = None, None


def _on_signal(signum: int, frame: Any) -> None:
    if _state.loops > 0:
        _state.signum = signum  # acted on at the loop's next episode end
    elif _state.handoff is not None:
        _state.handoff(signum)


def requested() -> bool:
    """A preemption/time-limit signal arrived during a training loop and is waiting for its checkpoint."""
    return _state.signum is not None and _state.handoff is not None


def hand_off() -> None:
    """Run the launcher's handler for the pending signal (submitit requeues the job and exits the process)."""
    signum, handoff = _state.signum, _state.handoff
    _state.signum = None
    if signum is not None and handoff is not None:
        handoff(signum)


@contextlib.contextmanager
def cooperative() -> Iterator[None]:
    """While this context is open, a signal waits for the loop's next checkpoint-safe point."""
    _state.loops += 1
    try:
        yield
    finally:
        _state.loops -= 1
        if _state.loops == 0:  # training is over (its final checkpoint written): the job finishes, no requeue
            _state.signum = None
