"""Control-period jitter through the arm path with cameras attached by config: ``robot=mock`` behind its
``SafetyLayer`` with one or two ``opencv`` cameras on 640x480 MJPG files played at 30 fps (resized to 84x84 in their
capture threads), at 10 and 20 Hz; the reference is the same mock arm in the same run without cameras.

A step is what ``robotrl deploy`` does per send: ``get_observation()`` (state + every camera's newest frame, on the
driver thread, freshness checks) then ``send_action`` (a zero end-effector delta), on an absolute schedule. ``period``
is the time between sends where they reached the driver (the safety layer's ``ArrivalRate``), ``observe`` the time
``get_observation`` took; ``holds`` counts camera holds (a stale or frozen frame; the run resumes after each).

Run: ``OMP_NUM_THREADS=1 nice -n 19 .venv/bin/python bench/arm_cameras.py [--seconds 5]``; one JSON line per case.
"""

from __future__ import annotations

import argparse
import json
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robotrl.hardware import make_robot  # noqa: E402
from robotrl.hardware.obs_checks import CameraError  # noqa: E402
from robotrl.hardware.robot import Action  # noqa: E402

from bench.cameras import pct, write_video  # noqa: E402
from robotrl.workflows.run_env import load_robot_config  # noqa: E402


def make_arm(videos: list[Path], rate: float) -> object:
    cameras = {f"cam{i}": {"type": "opencv", "path": str(v), "loop": True, "resize": 84}
               for i, v in enumerate(videos)}
    cfg = load_robot_config("mock", {"limits.control_hz": rate, "limits.watchdog_ms": 2000},
                            {"cameras": cameras} if videos else {"cameras": []})
    return make_robot(cfg)


def run(layer: object, rate: float, seconds: float) -> dict[str, object]:
    period = 1.0 / rate
    observe, holds = [], 0
    with layer:
        layer.arrival.restart()
        deadline = time.monotonic()
        end = deadline + seconds
        while deadline < end:
            now = time.monotonic()
            if deadline > now:
                time.sleep(deadline - now)
            t0 = time.perf_counter()
            try:
                layer.get_observation()
            except CameraError:
                holds += 1
                layer.resume()
            observe.append((time.perf_counter() - t0) * 1e3)
            layer.send_action(Action.ee(np.zeros(3)))
            deadline = max(deadline + period, time.monotonic() - period)
        rate_summary = layer.control_rate()
        periods = [p * 1e3 for p in layer.arrival.periods]
    out = {"steps": len(observe), "observe_p50": pct(observe, 50), "observe_p99": pct(observe, 99), "holds": holds,
           "achieved_hz": rate_summary.get("achieved_hz")}
    if periods:
        out.update(period_p50=pct(periods, 50), period_p99=pct(periods, 99), period_max=max(periods),
                   jitter_p99=pct([abs(p - period * 1e3) for p in periods], 99))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        videos = [write_video(Path(tmp) / f"cam{i}.avi") for i in range(2)]
        for rate in (10.0, 20.0):
            for n in (0, 1, 2):
                out = run(make_arm(videos[:n], rate), rate, args.seconds)
                print(json.dumps({"cameras": n, "rate_hz": rate, **out}), flush=True)


if __name__ == "__main__":
    main()
