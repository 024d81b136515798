"""Camera reads in a control loop: frame age p50/p99, read cost and control-period jitter with one and two cameras
fed from video files at 30 fps, polled at 10 and 20 Hz; the freshness checks' cost as a ratio against the same run's
bare reads, and a blocking reference (wait for a new frame each step, as LeRobot's ``async_read``) beside them.

Each camera is an ``opencv`` camera on a 640x480 MJPG file played at 30 fps (``loop: true``), resized to 84x84 in
its capture thread, as a policy would get it. A step reads the rig (``CameraRig.read``: newest frames, freshness and
skew checks); ``age`` is the read time minus each frame's capture time, ``read`` the time the read took, ``period``
the time between step starts (the loop sleeps to an absolute schedule). The cost block alternates ``rig.read()`` with
bare ``cam.read()`` calls (newest frame, no checks) on the same cameras. A last case puts a 5 fps camera beside a
30 fps one at 20 Hz (LeRobot #1356: a slow camera stalled the control loop).

Run: ``OMP_NUM_THREADS=1 .venv/bin/python bench/cameras.py [--seconds 5] [--rates 10,20] [--cameras 1,2]``; one JSON
line per case.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from robotrl.hardware.cameras import CameraRig, make_camera  # noqa: E402


def write_video(path: Path, seconds: float = 5.0, fps: float = 30.0) -> Path:
    """A 640x480 MJPG AVI at ``fps`` (played at that rate by the camera's thread)."""
    import cv2

    writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*"MJPG"), fps, (640, 480))
    rng = np.random.default_rng(0)
    for i in range(int(seconds * fps)):
        frame = np.full((480, 640, 3), (i * 3) % 256, np.uint8)
        frame[100:200, 100:300] = rng.integers(0, 255, (100, 200, 3), np.uint8)  # texture: a realistic decode cost
        writer.write(frame)
    writer.release()
    return path


def pct(values: list[float], q: float) -> float:
    return float(np.percentile(values, q)) if values else float("nan")


def make_rig(videos: list[Path]) -> CameraRig:
    cams = [make_camera(f"cam{i}", {"type": "opencv", "path": str(v), "loop": True, "resize": 84,
                                    "max_frame_age_ms": 100, "max_repeat_reads": 3}) for i, v in enumerate(videos)]
    return CameraRig(cams, max_skew_ms=50)


def loop(rig: CameraRig, rate: float, seconds: float, blocking: bool) -> dict[str, object]:
    period = 1.0 / rate
    ages, reads, starts, invalid, repeated, flagged = [], [], [], 0, 0, 0
    last = {name: cam.seq for name, cam in rig.cameras.items()}
    deadline = time.monotonic()
    end = deadline + seconds
    while deadline < end:
        now = time.monotonic()
        if deadline > now:
            time.sleep(deadline - now)
        starts.append(time.monotonic())
        t0 = time.perf_counter()
        if blocking:  # the reference: wait for a frame newer than the last one read, from every camera
            for name, cam in rig.cameras.items():
                cam.wait_for_frame(last[name], 1.0)
        read = rig.read()
        reads.append((time.perf_counter() - t0) * 1e3)
        t_read = time.monotonic()
        for name, frame in read.frames.items():
            ages.append((t_read - frame.timestamp) * 1e3)
            last[name] = frame.seq
        invalid += not read.valid
        repeated += bool(read.repeated)
        flagged += bool(read.flags)
        deadline = max(deadline + period, time.monotonic() - period)  # re-anchor after an overrun
    periods = list(np.diff(starts) * 1e3)
    return {"steps": len(starts), "age_p50": pct(ages, 50), "age_p99": pct(ages, 99), "read_p50": pct(reads, 50),
            "read_p99": pct(reads, 99), "period_p50": pct(periods, 50), "period_p99": pct(periods, 99),
            "invalid_steps": invalid, "steps_with_a_repeat": repeated, "skew_flagged": flagged}


def check_cost(rig: CameraRig, blocks: int = 7, per_block: int = 2000) -> dict[str, float]:
    """Per-step cost of rig.read() (checks) vs bare cam.read() of every camera, interleaved blocks, medians."""
    checked, bare = [], []
    cams = list(rig.cameras.values())
    for _ in range(blocks):
        t0 = time.perf_counter()
        for _ in range(per_block):
            rig.read()
        checked.append((time.perf_counter() - t0) / per_block * 1e6)
        t0 = time.perf_counter()
        for _ in range(per_block):
            for cam in cams:
                cam.read()
        bare.append((time.perf_counter() - t0) / per_block * 1e6)
    c, b = statistics.median(checked), statistics.median(bare)
    return {"checked_us": c, "bare_us": b, "ratio": c / b, "checks_us": c - b}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--seconds", type=float, default=5.0)
    parser.add_argument("--rates", default="10,20")
    parser.add_argument("--cameras", default="1,2")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        videos = [write_video(Path(tmp) / f"cam{i}.avi") for i in range(2)]
        for n in (int(x) for x in args.cameras.split(",")):
            rig = make_rig(videos[:n])
            with rig:
                cost = check_cost(rig)
                print(json.dumps({"case": "check_cost", "cameras": n, **cost}), flush=True)
                for rate in (float(r) for r in args.rates.split(",")):
                    for blocking in (False, True):
                        out = loop(rig, rate, args.seconds, blocking)
                        print(json.dumps({"case": "loop", "cameras": n, "rate_hz": rate,
                                          "read": "blocking" if blocking else "newest", **out}), flush=True)
        # a 30 fps camera beside a 5 fps one (LeRobot #1356) at 20 Hz: newest-frame reads vs waiting for new frames
        rig = make_rig([videos[0], write_video(Path(tmp) / "slow.avi", fps=5.0)])
        with rig:
            for blocking in (False, True):
                out = loop(rig, 20.0, args.seconds, blocking)
                print(json.dumps({"case": "loop", "cameras": "30fps+5fps", "rate_hz": 20.0,
                                  "read": "blocking" if blocking else "newest", **out}), flush=True)


if __name__ == "__main__":
    main()
