"""The safety side of `robotrl deploy`: the operator's e-stop key, and what a run writes at its end (``steps.jsonl``,
``events.jsonl``, ``summary.json``), kept honest about two things the loop cannot see by itself (issue 23):

- **The control rate the arm got**: periods between commands as they reached the driver (the safety layer times
  them on its driver thread), not the scheduled ticks; a median below the requested rate is a warning.
- **Errors after the loop**: a run whose final hold or disconnect failed, or whose driver timed out, ended in FAULT
  even if no exception reached the caller; its ``error`` names that, never ``null``.
"""

from __future__ import annotations

import json
import logging
import os
import select
import threading
from pathlib import Path
from typing import IO, Any

import numpy as np

from robotrl.atomic import atomic_write_text
from robotrl.errors import ConfigError
from robotrl.safety_events import FAILURE_EVENTS

log = logging.getLogger("robotrl.workflows.deploy")
RATE_TOLERANCE = 0.95  # an achieved rate below this fraction of the request is a warning (sleep jitter stays above)


def stop_failures(layer: Any) -> list[str]:
    """The driver failures the safety layer logged (a driver timeout, a failed hold or disconnect): each left the arm
    in FAULT, whether or not an exception reached the caller."""
    out = []
    for e in layer.events:
        if e["kind"] in FAILURE_EVENTS:
            detail = e.get("error") or f"{e.get('call')} did not return within {e.get('timeout_ms'):.0f} ms"
            out.append(f"{e['kind']}: {detail}")
    return out


def run_error(error: BaseException | None, layer: Any) -> str | None:
    """The run's error for the summary: the exception that ended it, else the first driver failure (a failed final
    hold: the run raised nothing), else an arm not disconnected, else None."""
    failures = stop_failures(layer)
    if isinstance(error, KeyboardInterrupt):
        text = "KeyboardInterrupt: interrupted (Ctrl-C)"
        return f"{text}; then {failures[0]}" if failures else text
    if error is not None:
        return f"{type(error).__name__}: {error}"
    if failures:
        return f"{failures[0]} (the run itself raised nothing)"
    if layer.state.value != "disconnected":
        return f"the arm ended in state {layer.state.value}, not disconnected"
    return None


def rate_report(layer: Any, scheduled_ms: list[float]) -> tuple[dict[str, Any], list[str]]:
    """The safety layer's measured control rate (the scheduled periods when nothing was sent: a dry run) and the
    warnings it calls for."""
    rate = dict(layer.control_rate())
    if not rate["periods"]:
        periods = np.asarray(scheduled_ms) if scheduled_ms else np.zeros(1)
        rate.update(period_ms_p50=float(np.percentile(periods, 50)), period_ms_p99=float(np.percentile(periods, 99)),
                    measured_at="schedule (nothing was sent)")
        return rate, []
    rate["measured_at"] = "driver (when commands reached it)"
    warnings = []
    if rate["achieved_hz"] is not None and rate["achieved_hz"] < RATE_TOLERANCE * rate["requested_hz"]:
        warnings.append(f"achieved control rate {rate['achieved_hz']:.1f} Hz is below the requested "
                        f"{rate['requested_hz']:g} Hz (median period at the driver {rate['period_ms_p50']:.1f} ms)")
    for warning in warnings:
        log.warning("%s", warning)
    return rate, warnings


def write_logs(out_dir: Path, result: Any, layer: Any, error: BaseException | None,
               info: dict[str, Any]) -> dict[str, Any]:
    """steps.jsonl, events.jsonl (operator + safety events, in time order) and summary.json."""
    out_dir.mkdir(parents=True, exist_ok=True)
    events = sorted(result.events + [{**e, "source": "safety"} for e in layer.events], key=lambda e: e["t"])
    atomic_write_text(out_dir / "steps.jsonl", "".join(json.dumps(r) + "\n" for r in result.log))
    atomic_write_text(out_dir / "events.jsonl", "".join(json.dumps(e, default=str) + "\n" for e in events))
    rate, warnings = rate_report(layer, result.periods_ms)
    summary = {
        **info, "episodes": result.episodes, "steps": len(result.log), "sends": result.sends,
        "intervention_steps": result.interventions,
        "period_ms_p50": rate["period_ms_p50"], "period_ms_p99": rate["period_ms_p99"], "control_rate": rate,
        "warnings": warnings, "safety_counts": dict(layer.counts), "final_state": layer.state.value,
        "out": str(out_dir), "error": run_error(error, layer), "stop_failures": stop_failures(layer),
    }
    atomic_write_text(out_dir / "summary.json", json.dumps(summary, indent=1))
    return summary


# ------------------------------------------------------------------------------------------------ key e-stop
ESTOP_KEY = "e"


class KeyEStop:
    """The operator's e-stop key: a daemon thread reads lines from ``stream`` (stdin) and calls ``layer.estop()`` on
    a line ``e`` (``e`` + Enter; any case, surrounding blanks ignored). It never re-arms: the loop's next command
    raises EStopError, the arm holds and disconnects, and the run ends; moving again is a new, explicit run.

    The fd is polled with ``select`` so :meth:`stop` ends the thread (a blocked ``readline`` could not be woken);
    end of input (a closed pipe) ends it too.
    """

    POLL_S = 0.05

    def __init__(self, layer: Any, stream: IO[str]) -> None:
        self.layer = layer
        self.fd = stream.fileno()
        self.pressed = threading.Event()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="deploy-estop-key", daemon=True)

    def start(self) -> KeyEStop:
        log.info("e-stop: type %s + Enter to stop the arm (it holds; a new run re-arms)", ESTOP_KEY)
        self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        self._thread.join(timeout=1.0)

    def _run(self) -> None:
        pending = b""
        while not self._stop.is_set():
            try:
                readable, _, _ = select.select([self.fd], [], [], self.POLL_S)
                if not readable:
                    continue
                chunk = os.read(self.fd, 1024)
            except OSError:  # the terminal went away: nothing more to read
                return
            if not chunk:  # end of input
                return
            pending += chunk
            *lines, pending = pending.split(b"\n")
            for line in lines:
                if line.strip().lower() == ESTOP_KEY.encode():
                    self.pressed.set()
                    self.layer.estop(f"key '{ESTOP_KEY}' on stdin")
                elif line.strip():
                    text = line.strip().decode(errors="replace")
                    log.warning("stdin: %r ignored; type %s + Enter for the e-stop", text, ESTOP_KEY)


def wants_estop_key(value: Any, stream: IO[str]) -> bool:
    """``estop_key``: true / false, or auto (None): on when ``stream`` is a terminal (an operator at the keyboard)."""
    if value is None or (isinstance(value, str) and value.lower() == "auto"):
        try:
            return stream.isatty()
        except (AttributeError, ValueError):  # replaced or closed stdin (pytest capture, a daemon)
            return False
    if isinstance(value, bool):
        return value
    if isinstance(value, str) and value.lower() in ("true", "false"):
        return value.lower() == "true"
    raise ConfigError(f"estop_key={value!r}, expected true, false or auto (on when stdin is a terminal)")
