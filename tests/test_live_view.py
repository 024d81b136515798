"""robotrl.live_view: a control session's frames, actions, rewards, labels and safety events in a rerun .rrd file,
read back as written."""

from __future__ import annotations

import numpy as np
import pytest

from robotrl.errors import ConfigError

rerun = pytest.importorskip("rerun", reason="the live view needs rerun-sdk (the live extra, in dev)")

from robotrl.live_view import LiveView, event_level, read_rrd  # noqa: E402


def test_rrd_round_trip(tmp_path):
    path = tmp_path / "live" / "session.rrd"
    frames = [np.random.default_rng(i).integers(0, 256, (12, 16, 3), dtype=np.uint8) for i in range(4)]
    with LiveView(rrd=path) as view:
        for step, frame in enumerate(frames):
            view.step(step, frames={"front": frame}, policy_action=[1.0, 0.0, -0.5, 1.0],
                      executed_action=[0.4, 0.0, -0.5, 1.0], reward=0.25 * step, success=step == 3,
                      intervention=step >= 2,
                      events=[{"kind": "workspace", "axis": "x", "requested": 0.8, "t": 1.0, "step": step}]
                      if step == 1 else [{"kind": "watchdog", "detail": "no command"}] if step == 2 else [])
        view.step(4, label=True)
    data = read_rrd(path)
    assert [r["step"] for r in data["camera/front"]] == [0, 1, 2, 3]
    for row, frame in zip(data["camera/front"], frames, strict=True):
        np.testing.assert_array_equal(np.asarray(row["Image:buffer"][0], np.uint8).reshape(12, 16, 3), frame)
    assert data["action/policy"][0]["Scalars:scalars"] == [1.0, 0.0, -0.5, 1.0]
    assert data["action/executed"][0]["Scalars:scalars"] == [0.4, 0.0, -0.5, 1.0]
    assert [r["Scalars:scalars"] for r in data["reward"]] == [[0.0], [0.25], [0.5], [0.75]]
    assert [r["Scalars:scalars"] for r in data["success"]] == [[0.0], [0.0], [0.0], [1.0]]
    assert [r["Scalars:scalars"] for r in data["intervention"]] == [[0.0], [0.0], [1.0], [1.0]]
    assert data["label"] == [{"step": 4, "Scalars:scalars": [1.0]}]
    texts = [(r["step"], r["TextLog:text"], r["TextLog:level"]) for r in data["safety"]]
    assert texts == [(1, ["workspace axis=x requested=0.8"], ["INFO"]), (2, ["watchdog detail=no command"], ["WARN"])]


def test_levels_and_bad_input(tmp_path):
    assert (event_level("workspace"), event_level("estop"), event_level("driver_timeout")) == ("INFO", "WARN", "ERROR")
    with pytest.raises(ConfigError, match="exactly one of rrd=FILE or viewer=HOST:PORT"):
        LiveView()
    with LiveView(rrd=tmp_path / "x.rrd") as view, pytest.raises(ValueError, match="camera 'front' frame has dtype "
                                                                                   "float32"):
        view.step(0, frames={"front": np.zeros((4, 4, 3), np.float32)})
