"""Cluster sweeps: the shipped hydra launcher configs compose with their plugins, and 2-job sweeps run end to end
under submitit's local executor and a local Ray instance on loopback, then `robotrl report` summarises them."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import TINY_OVERRIDES

ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore",
       "RAY_USAGE_STATS_ENABLED": "0"}
SWEEP = [*TINY_OVERRIDES, "frames=200", "eval_every_frames=200", "save_video=false", "seed=1,2"]


def robotrl(*args: str, cwd) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robotrl.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)


def compose_launcher(name: str, *overrides: str):
    from hydra import compose, initialize_config_module

    from robotrl.config import register_hydra

    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=[f"hydra/launcher={name}", *overrides], return_hydra_config=True)
    return cfg.hydra.launcher


@pytest.mark.parametrize("name, target, resources", [
    ("slurm", "SlurmLauncher", {"gpus_per_node": 1, "cpus_per_task": 8, "mem_gb": 48, "timeout_min": 1440}),
    ("slurm_cpu", "SlurmLauncher", {"gpus_per_node": 0, "cpus_per_task": 4, "mem_gb": 16, "timeout_min": 1440}),
])
def test_slurm_launcher_configs(name, target, resources):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'robotrl[slurm]'")
    launcher = compose_launcher(name, "hydra.launcher.partition=gpu")
    assert launcher._target_.endswith(target) and launcher.partition == "gpu"
    assert {k: launcher[k] for k in resources} == resources
    assert "export MUJOCO_GL=egl" in launcher.setup


@pytest.mark.parametrize("name, init, remote", [
    ("ray_local", {"address": None, "_node_ip_address": "127.0.0.1"}, {"num_cpus": 1, "num_gpus": 0}),
    ("ray_cluster", {"address": "auto"}, {"num_cpus": 8, "num_gpus": 1}),
])
def test_ray_launcher_configs(name, init, remote):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install 'robotrl[ray-sweep]'")
    launcher = compose_launcher(name, "hydra.launcher.ray.remote.num_cpus=3")
    assert launcher._target_.endswith("RayLauncher")
    assert {k: launcher.ray.init[k] for k in init} == init
    assert {k: launcher.ray.remote[k] for k in remote} == {**remote, "num_cpus": 3}


def check_sweep_and_report(tmp_path, proc: subprocess.CompletedProcess) -> None:
    assert proc.returncode == 0, proc.stderr[-3000:]
    runs = tmp_path / "runs" / "dmc" / "cartpole_balance" / "drqv2"
    for seed in (1, 2):
        summary = json.loads((runs / f"seed{seed}" / "summary.json").read_text())
        assert summary["seed"] == seed and summary["frames"] >= 200
    report = robotrl("report", "runs", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-3000:]
    data = json.loads((tmp_path / "runs" / "report" / "report.json").read_text())
    (group,) = data["groups"]
    assert group["env"] == "dmc/cartpole_balance" and sorted(group["seeds"]) == [1, 2] and group["incomplete"] == 0
    finals = sorted(r["final_return"] for r in data["runs"])
    assert group["return"]["iqm"] == pytest.approx(sum(finals) / 2)  # IQM of 2 seeds = their mean
    assert "| drqv2 | 1, 2 |" in (tmp_path / "runs" / "report" / "report.md").read_text()


@pytest.mark.slow
def test_submitit_local_sweep_then_report(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'robotrl[slurm]'")
    proc = robotrl("train", "-m", *SWEEP, "hydra/launcher=submitit_local", cwd=tmp_path)
    check_sweep_and_report(tmp_path, proc)
    assert list((tmp_path / "runs" / ".submitit").iterdir())  # the jobs ran through submitit
    # the same sweep again: every job refuses to overwrite its checkpoints; the error comes back as one line, exit 2
    again = robotrl("train", "-m", *SWEEP, "hydra/launcher=submitit_local", cwd=tmp_path)
    assert again.returncode == 2
    last = again.stderr.strip().splitlines()[-1]
    assert last.startswith("robotrl: error: sweep job #") and "already holds checkpoints" in last, again.stderr


@pytest.mark.slow
def test_ray_local_sweep_then_report(tmp_path):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install 'robotrl[ray-sweep]'")
    proc = robotrl("train", "-m", *SWEEP, "hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2",
                   cwd=tmp_path)
    check_sweep_and_report(tmp_path, proc)
    assert "Ray Launcher is launching 2 jobs" in proc.stdout + proc.stderr


@pytest.mark.slow  # ~2 min: Ray's start, two tiny jobs, one SIGKILLed, then the sweep again
def test_a_ray_sweep_job_killed_mid_run_is_one_line_then_resume_auto_continues_it(tmp_path):
    """A Ray sweep job's process SIGKILLed (out of memory, a lost node) once it has a checkpoint: the sweep ends in one
    error line with exit 2 (not a traceback, not a hang), and the same sweep with resume=auto continues it."""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install 'robotrl[ray-sweep]'")
    import os
    import signal
    import time

    from robotrl.run_lock import LOCK_NAME

    sweep = [*TINY_OVERRIDES, "frames=400", "checkpoint_every_frames=100", "save_video=false", "tensorboard=false",
             "seed=1,2", "hydra/launcher=ray_local", "hydra.launcher.ray.init.num_cpus=2"]
    run = tmp_path / "runs/dmc/cartpole_balance/drqv2/seed2"
    proc = subprocess.Popen([sys.executable, "-m", "robotrl.cli", "train", "-m", *sweep], cwd=tmp_path, env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, start_new_session=True)
    try:
        deadline = time.monotonic() + 500
        while not (run / "checkpoints/latest").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before seed 2 checkpointed"
            time.sleep(0.05)
        pid = int((run / LOCK_NAME).read_text().split()[1].rstrip(":"))  # the Ray worker running seed 2's job
        os.kill(pid, signal.SIGKILL)
        _, stderr = proc.communicate(timeout=300)
    finally:
        if proc.poll() is None:
            os.killpg(proc.pid, signal.SIGKILL)
    assert proc.returncode == 2, stderr[-3000:]
    last = stderr.strip().splitlines()[-1]
    assert last.startswith("robotrl: error:") and "ray" in last.lower(), stderr[-3000:]
    again = robotrl("train", "-m", *sweep, "resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    for seed in (1, 2):
        frames = json.loads((run.parent / f"seed{seed}/summary.json").read_text())["frames"]
        assert frames == 400, (seed, frames)


def test_a_job_that_died_is_one_line_naming_the_launcher_and_its_log():
    pytest.importorskip("submitit")
    from submitit.core.utils import FailedJobError

    from robotrl.errors import SweepJobError
    from robotrl.workflows.train_command import launcher_failure

    error = launcher_failure(FailedJobError("Job (task=0) failed during processing with trace:\n----\nTraceback ..."))
    assert isinstance(error, SweepJobError) and "\n" not in str(error)
    assert str(error).startswith("a sweep job failed under the submitit launcher: FailedJobError: Job (task=0) failed")
    assert ".submitit/<job id>/" in str(error)
    assert launcher_failure(ValueError("a bug")) is None  # anything else keeps its traceback


def test_unknown_launcher_is_one_line(tmp_path):
    proc = robotrl("train", "-m", "seed=1,2", "hydra/launcher=slurmm", cwd=tmp_path)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "Could not find 'hydra/launcher/slurmm'" in lines[0], proc.stderr
    assert "slurm slurm_cpu" in lines[0] and not (tmp_path / "runs").exists()
