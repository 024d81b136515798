"""How long franky's blocking stop (``move(JointStopMotion())``, what ``FrankaRobot._hold`` does) takes on franky-sim:
arm still, and arm moving (0.5 s into a joint move), at two dynamics factors. These numbers size
``FrankaRobot.stop_timeout_s`` (the safety layer's timeout for holds). The machine's load average is printed with
them: on a loaded machine franky-sim falls behind real time and the stops take longer (no load is generated here).

    .venv/bin/python bench/franky_stop.py --repeats 5

Prints one line per (dynamics factor, case): median and max over the repeats, in seconds.
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from tests.franky_helpers import FrankySim  # noqa: E402

SIM_START = (0.0, 0.0, 0.0, -1.57, 0.0, 1.57, 0.785)
FAR = (0.0, -0.785398, 0.0, -2.356194, 0.0, 1.570796, 0.785398)  # franka.yaml's home: ~1.1 rad away


def timed_stop(arm: object, franky: object) -> float:
    t0 = time.monotonic()
    arm.move(franky.JointStopMotion())  # type: ignore[attr-defined]
    return time.monotonic() - t0


def measure(arm: object, franky: object, repeats: int) -> dict[str, list[float]]:
    out: dict[str, list[float]] = {"still": [], "moving": []}
    for _ in range(repeats):
        arm.move(franky.JointMotion(np.array(SIM_START), franky.ReferenceType.Absolute))  # type: ignore[attr-defined]
        out["still"].append(timed_stop(arm, franky))
        arm.move(franky.JointMotion(np.array(FAR), franky.ReferenceType.Absolute),  # type: ignore[attr-defined]
                 asynchronous=True)
        time.sleep(0.5)
        out["moving"].append(timed_stop(arm, franky))
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--repeats", type=int, default=5)
    parser.add_argument("--rdf", type=float, nargs="+", default=[0.1, 0.3])
    args = parser.parse_args()
    import franky

    with FrankySim() as sim:
        arm = franky.Robot(sim.host, realtime_config=franky.RealtimeConfig.Ignore)  # one client: libfranka takes one
        try:
            for rdf in args.rdf:
                arm.relative_dynamics_factor = rdf
                load = os.getloadavg()[0]
                for case, values in measure(arm, franky, args.repeats).items():
                    print(f"rdf {rdf}: stop {case}: median {np.median(values):.3f} s, max {np.max(values):.3f} s "
                          f"({len(values)} stops, load average {load:.1f} on {os.cpu_count()} cores)", flush=True)
        finally:
            del arm


if __name__ == "__main__":
    main()
