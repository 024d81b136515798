"""``franky-sim`` in a subprocess for the robot=franka tests (tests/test_franka.py, the deploy episode on it)."""

from __future__ import annotations

import ctypes
import os
import random
import signal
import subprocess
import sys
import threading
from pathlib import Path

import pytest

START_TIMEOUT_S = 60.0
PR_SET_PDEATHSIG = 1  # linux/prctl.h


def _die_with_parent() -> None:
    """In the child before exec: the kernel SIGKILLs franky-sim when the test process dies (a pytest killed by a
    timeout runs no fixture teardown; earlier runs leaked servers that way)."""
    if sys.platform.startswith("linux"):
        ctypes.CDLL(None, use_errno=True).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


class FrankySim:
    """``franky-sim`` (headless MuJoCo) in a subprocess on a random 127.x.y.z address (port 1337 robot, 1338
    gripper), so parallel test runs on one machine do not collide. Use as a context manager (or call ``kill``)."""

    def __init__(self) -> None:
        # SystemRandom, not the random module: trainers and tests seed that one, and two runs drawing the same
        # address would talk to each other's server.
        rng = random.SystemRandom()
        self.host = f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"
        exe = Path(sys.executable).with_name("franky-sim")
        cmd = [str(exe)] if exe.exists() else [sys.executable, "-m", "franky_sim.run_server"]
        self.proc = subprocess.Popen([*cmd, "--simulator", "mujoco", "--hostname", self.host],
                                     stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                                     env={**os.environ, "MUJOCO_GL": "egl"}, preexec_fn=_die_with_parent)
        self.output: list[str] = []
        ready = threading.Event()

        def pump() -> None:  # keep draining stdout so the server never blocks on a full pipe
            for line in self.proc.stdout:
                self.output.append(line)
                if "Connect to the server" in line:
                    ready.set()

        threading.Thread(target=pump, daemon=True).start()
        if not ready.wait(START_TIMEOUT_S):
            self.kill()
            pytest.fail(f"franky-sim did not start within {START_TIMEOUT_S} s: {''.join(self.output)[-2000:]}")

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL)
        self.proc.wait(timeout=10)

    def __enter__(self) -> FrankySim:
        return self

    def __exit__(self, *exc: object) -> None:
        # robot=franka frees franky's objects on a thread of their own after a disconnect (hardware/franka.py
        # `_release`): let that finish first, as a real arm's server outlives the program. Killed under a running
        # gripper move, libfranka polls the dead socket for ~62 s, one core busy under whatever test runs next.
        from robotrl.hardware import franka

        closing = franka._CLOSING.get(self.host)
        if closing is not None:
            closing.join(franka.RELEASE_WAIT_S)
        self.kill()
