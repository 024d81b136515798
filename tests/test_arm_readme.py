"""README "A lab with a real arm": its deploy commands, run as written (placeholders filled) up to where hardware is
needed. The cameras connect before the arm, and no camera answers here, so each command must get past its config
(the `robot.cameras` override, `live_view=`, `dry_run=`) and stop with one line naming the camera it could not open."""

from __future__ import annotations

import glob
import shlex

import pytest

from tests.deploy_helpers import train_reach_policy
from tests.test_readme_commands import bash_commands, readme_section, robotrl, unused_loopback

pytest.importorskip("cv2", reason="cameras need opencv-python-headless (the cameras extra, in dev)")
pytest.importorskip("franky", reason="robot=franka needs the franka extra (franky-control)")
if glob.glob("/dev/video*"):
    pytest.skip("a camera device is present here: the commands would open it", allow_module_level=True)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return train_reach_policy(tmp_path_factory.mktemp("reach"))


def test_readme_camera_commands_get_to_the_camera(run_dir, tmp_path):
    commands = [c for c in bash_commands(readme_section("A lab with a real arm")) if c.startswith("robotrl deploy")]
    assert len(commands) == 2 and all("robot.cameras={corner2:" in c for c in commands)
    for command in commands:
        args = [a.replace("RUN", str(run_dir)).replace("172.16.0.2", unused_loopback())
                for a in shlex.split(command)[2:]]
        proc = robotrl(["deploy", *args, f"out={tmp_path / 'out'}"], cwd=tmp_path)
        last = proc.stderr.strip().splitlines()[-1]
        assert proc.returncode != 0 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
        assert "camera 'corner2'" in last and "cannot open" in last, proc.stderr[-3000:]
    # the live view was closed properly on the error: its .rrd holds the failed connect, naming the camera
    pytest.importorskip("rerun", reason="the live view needs rerun-sdk (the live extra, in dev)")
    from robotrl.live_view import read_rrd

    texts = [t for r in read_rrd(tmp_path / "deploy.rrd")["safety"] for t in r["TextLog:text"]]
    assert any(t.startswith("driver_error") and "camera 'corner2'" in t for t in texts), texts
