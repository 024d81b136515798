"""``LiveView``: what a control loop on an arm does, step by step, in rerun (rerun-sdk, the ``live`` extra).

One entity per kind of signal, on a ``step`` timeline (and rerun's own log time):

- ``camera/<name>``: each camera's frame (``rr.Image``);
- ``action/policy`` and ``action/executed``: what the policy asked for and what the safety layer let reach the driver,
  in the policy's units, side by side so a clipped axis shows as two diverging lines;
- ``reward``, ``success``, ``label``: a reward model's output, the simulator's or a person's success flag;
- ``safety``: each safety-layer event as a text line with its level (clips INFO, holds WARN, faults ERROR);
- ``intervention``: 1 while a person drives the arm.

With ``viewer="HOST:PORT"`` it streams to a running rerun viewer (``rerun`` started by hand); otherwise, the usual case
on a robot PC without a display, it writes ``rrd`` (an ``.rrd`` file that ``rerun FILE`` opens later).
:func:`read_rrd` reads such a file back (what the tests and a notebook use).
"""

from __future__ import annotations

import logging
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.errors import ConfigError
from robotrl.safety_events import FAULT_EVENTS, HOLD_EVENTS

EVENT_LEVELS = {logging.DEBUG: "DEBUG", logging.INFO: "INFO", logging.WARNING: "WARN", logging.ERROR: "ERROR"}
# (one set of kinds for the layer and its readers: robotrl.safety_events)


def _rerun() -> Any:
    try:
        import rerun
    except ImportError as exc:
        raise ConfigError(f"live_view needs rerun-sdk: pip install 'robotrl[live]' ({exc})") from None
    return rerun


def event_level(kind: str) -> str:
    """The rerun text-log level of a safety event kind."""
    if kind in FAULT_EVENTS:
        return "ERROR"
    return "WARN" if kind in HOLD_EVENTS else "INFO"


class LiveView:
    """A rerun recording of one control session (see the module doc). Use as a context manager or call close()."""

    def __init__(self, name: str = "robotrl", *, rrd: str | Path | None = None, viewer: str | None = None) -> None:
        if (rrd is None) == (viewer is None):
            raise ConfigError(f"live_view: give exactly one of rrd=FILE or viewer=HOST:PORT (got rrd={rrd!r}, "
                              f"viewer={viewer!r})")
        rr = _rerun()
        self._rr = rr
        self.rec = rr.RecordingStream(name)
        self.path = None if rrd is None else Path(rrd)
        if self.path is not None:
            self.path.parent.mkdir(parents=True, exist_ok=True)
            self.rec.save(str(self.path))
        else:
            self.rec.connect_grpc(f"rerun+http://{viewer}/proxy")
        # Build one of each archetype now (nothing is logged): the first construction costs ~1 s of lazy set-up on a
        # loaded machine, which in the first step would fall between two commands to a moving arm (the watchdog's
        # window: franky-sim's deploy test held the arm after a 2.3 s gap).
        rr.Image(np.zeros((1, 1, 3), np.uint8)), rr.Scalars(np.zeros(1)), rr.TextLog("", level="INFO")

    def step(self, step: int, *, frames: Mapping[str, np.ndarray] | None = None, policy_action: Any = None,
             executed_action: Any = None, reward: float | None = None, success: bool | None = None,
             label: bool | None = None, intervention: bool | None = None,
             events: Iterable[Mapping[str, Any]] = ()) -> None:
        """Log one control step; any argument left out is simply not logged for this step."""
        rr, rec = self._rr, self.rec
        rec.set_time("step", sequence=int(step))
        for name, image in (frames or {}).items():
            image = np.asarray(image)
            if image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
                raise ValueError(f"live_view: camera {name!r} frame has dtype {image.dtype} shape {image.shape}, "
                                 f"expected uint8 (H, W, 3)")
            rec.log(f"camera/{name}", rr.Image(image))
        for path, value in (("action/policy", policy_action), ("action/executed", executed_action)):
            if value is not None:
                rec.log(path, rr.Scalars(np.asarray(value, np.float64).ravel()))
        for path, value in (("reward", reward), ("success", success), ("label", label),
                            ("intervention", intervention)):
            if value is not None:
                rec.log(path, rr.Scalars(float(value)))
        for event in events:
            kind = str(event.get("kind", "event"))
            detail = " ".join(f"{k}={v}" for k, v in event.items() if k not in ("kind", "t", "step"))
            rec.log("safety", rr.TextLog(f"{kind} {detail}".strip(), level=event_level(kind)))

    def close(self) -> None:
        """Flush and close the recording (the .rrd file is complete after this)."""
        self.rec.flush()
        self.rec.disconnect()

    def __enter__(self) -> LiveView:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class ArmLog:
    """Feeds a :class:`LiveView` from a control loop on an arm behind its safety layer (``robotrl deploy``, a
    ``RobotEnv``): one :meth:`log` per agent step with the camera frames, the policy's and the executed action, and
    every safety-layer event since the previous step (``robot.events``); :meth:`flush` logs the events of a step
    that ended in an error (a camera that froze, a hold) before the view closes."""

    def __init__(self, view: LiveView, robot: Any) -> None:
        self.view, self.robot = view, robot
        self.step = 0
        self._seen = len(robot.events)

    def _new_events(self) -> list[dict[str, Any]]:
        events = self.robot.events[self._seen:]
        self._seen += len(events)
        return events

    def log(self, frames: Mapping[str, Any] | None = None, **values: Any) -> None:
        """One step: ``frames`` are the observation's (``Frame`` objects or images); ``values`` as
        :meth:`LiveView.step` takes them (policy_action, executed_action, reward, success, intervention)."""
        images = {name: getattr(f, "image", f) for name, f in (frames or {}).items()}
        self.view.step(self.step, frames=images, events=self._new_events(), **values)
        self.step += 1

    def flush(self) -> None:
        """Log the safety events not logged yet (at the current step)."""
        events = self._new_events()
        if events:
            self.view.step(self.step, events=events)


def open_live_view(target: str | Path | None, robot: Any, name: str = "robotrl") -> ArmLog | None:
    """An :class:`ArmLog` on ``robot`` writing ``target`` (a path ending in ``.rrd``) or streaming to a viewer
    (``HOST:PORT``); None for no live view. Anything else is a one-line ConfigError."""
    if target in (None, "", "none", "null"):
        return None
    text = str(target)
    if text.endswith(".rrd"):
        return ArmLog(LiveView(name, rrd=text), robot)
    host, sep, port = text.rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigError(f"live_view={text!r}: expected a FILE.rrd to write or HOST:PORT of a running rerun viewer")
    return ArmLog(LiveView(name, viewer=text), robot)


def read_rrd(path: str | Path) -> dict[str, list[dict[str, Any]]]:
    """An ``.rrd`` written by :class:`LiveView` as ``{entity: [row, ...]}``, each row ``{"step": int, column: value}``
    with rerun's component columns (e.g. ``"Scalars:scalars"``, ``"TextLog:text"``)."""
    from rerun.chunk import RrdReader

    _rerun()
    out: dict[str, list[dict[str, Any]]] = {}
    for chunk in RrdReader(str(path)).stream():
        entity = chunk.entity_path.lstrip("/")
        if entity.startswith("__"):
            continue
        batch = chunk.to_record_batch()
        columns = {name: batch.column(i).to_pylist() for i, name in enumerate(batch.schema.names)
                   if name not in ("rerun.controls.RowId", "log_time")}
        for i in range(batch.num_rows):
            out.setdefault(entity, []).append({name: values[i] for name, values in columns.items()})
    for rows in out.values():
        rows.sort(key=lambda row: row.get("step") or 0)
    return out
