"""envs/ agents/ rewards/ hardware/ configs/ install as robotrl.* sub-packages, never as top-level names."""

from __future__ import annotations

import subprocess
import sys
import zipfile

SUBPACKAGES = ("robotrl.workflows", "robotrl.workflows.reward_eval", "robotrl.workflows.worldenv",
               "robotrl.envs", "robotrl.agents",
               "robotrl.rewards",
               "robotrl.hardware", "robotrl.hardware.cameras", "robotrl.hardware.teleop", "robotrl.configs")


def test_import_from_outside_the_repo(tmp_path):
    code = (
        "import importlib.util, robotrl.agents, robotrl.envs, robotrl.rewards, robotrl.hardware;"
        "assert all(importlib.util.find_spec(n) is None for n in ('envs', 'agents', 'rewards', 'hardware'));"
        "import robotrl.envs as e; print(e.__file__)"
    )
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert proc.stdout.strip().endswith("envs/__init__.py")


def test_wheel_maps_folders_into_robotrl(tmp_path):
    """A normal (non-editable) install gets robotrl/envs/... and the yaml configs, and no top-level envs/."""
    repo = __import__("pathlib").Path(__file__).resolve().parents[1]
    proc = subprocess.run([sys.executable, "-m", "pip", "wheel", "--no-deps", "--no-build-isolation", "-q",
                           "-w", str(tmp_path), str(repo)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    (wheel,) = tmp_path.glob("robotrl-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    top_level = {n.split("/")[0] for n in names if not n.startswith("robotrl-")}
    assert top_level == {"robotrl"}, top_level
    for package in SUBPACKAGES:
        assert f"{package.replace('.', '/')}/__init__.py" in names, package
    assert "robotrl/configs/config.yaml" in names and "robotrl/configs/env/dmc/cartpole_swingup.yaml" in names
    assert "robotrl/configs/agent/drqv2.yaml" in names and "robotrl/configs/teleop/keyboard.yaml" in names
    assert "robotrl/rewards/kagi_plans/push.yaml" in names  # KAGI's plans ship beside rewards/kagi.py
    # Install the wheel itself (not editable) into a fresh target and import it from outside the repo.
    target = tmp_path / "site"
    proc = subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--target", str(target),
                           str(wheel)], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    code = "import robotrl.agents, robotrl.envs, robotrl.configs as c; print(robotrl.envs.__file__, c.__file__)"
    env = {**__import__("os").environ, "PYTHONPATH": str(target)}
    proc = subprocess.run([sys.executable, "-c", code], cwd=tmp_path, env=env, capture_output=True, text=True,
                          timeout=120)
    assert proc.returncode == 0, proc.stderr
    assert all(path.startswith(str(target)) for path in proc.stdout.split()), proc.stdout
