"""One-line errors of sweeps and clusters (issue 25, items 9-10): SLURM launchers without SLURM, a killed submitit
job, torchrun refusals, Ray actors' episode numbers, and the shared-storage check of hydra/launcher=ray_cluster."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from types import SimpleNamespace

import pytest
from omegaconf import OmegaConf

from robotrl.errors import ConfigError, SweepJobError
from tests.conftest import TINY_OVERRIDES

ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


@pytest.mark.parametrize("launcher", ["slurm", "slurm_cpu"])
def test_slurm_launcher_without_slurm_is_one_line_and_writes_nothing(tmp_path, launcher):
    """It used to be a 41-line traceback from submitit and a stray runs/multirun.yaml."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'robotrl[slurm]'")
    env = {**ENV, "PATH": os.path.dirname(sys.executable)}  # no sbatch on it
    proc = subprocess.run([sys.executable, "-m", "robotrl.cli", "train", "-m", "seed=1,2",
                           f"hydra/launcher={launcher}"], capture_output=True, text=True, env=env, cwd=tmp_path,
                          timeout=300)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and f"hydra/launcher={launcher} submits SLURM jobs, but SLURM's sbatch is not on PATH" in \
        lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


@pytest.mark.parametrize("sweep, expected", [
    (["seed=1,2", "frames=-5"], "config frames=-5 is out of range, expected >= 1"),
    (["seed=1,2", "frames=1000,-5"], "sweep point seed=1 frames=-5: config frames=-5 is out of range, expected >= 1"),
    (["seed=1,2", "run_dir=/tmp/x"], "run_dir=/tmp/x names one run's dir; a sweep puts each of its 2 runs at "
                                     "hydra.sweep.dir/hydra.sweep.subdir"),
])
def test_a_bad_sweep_point_is_refused_before_hydra_writes_anything(tmp_path, sweep, expected):
    """Each point of a sweep was only validated by its job, after Hydra had written runs/multirun.yaml and the
    job's .hydra/ (and the jobs before it may have trained for hours); run_dir= was silently ignored."""
    tiny = [o for o in TINY_OVERRIDES if not o.startswith("frames=")]  # were a bad point run, it would be short
    proc = subprocess.run([sys.executable, "-m", "robotrl.cli", "train", "-m", *tiny, *sweep], capture_output=True,
                          text=True, env=ENV, cwd=tmp_path, timeout=300)
    assert proc.returncode == 2, proc.stderr
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and expected in lines[0], proc.stderr
    assert list(tmp_path.iterdir()) == []


def test_a_killed_submitit_job_names_its_number_run_dir_and_real_log(tmp_path):
    """Submitit's error names the job's result pickle; the line names the sweep job, its run dir and its log."""
    pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'robotrl[slurm]'")
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
    from submitit.core.utils import DelayedSubmission, UncompletedJobError

    from robotrl.workflows.train_command import launcher_failure

    folder = tmp_path / "runs/.submitit/4242"
    folder.mkdir(parents=True)
    launcher = LocalLauncher(submitit_folder=str(tmp_path / "runs/.submitit/%j"), timeout_min=60)
    launcher.config = OmegaConf.create({})
    sweep_cfg = OmegaConf.create({"hydra": {"sweep": {"dir": str(tmp_path / "runs"), "subdir": "dmc/x/drqv2/seed3"}}})
    launcher.hydra_context = SimpleNamespace(config_loader=SimpleNamespace(load_sweep_config=lambda c, o: sweep_cfg))
    DelayedSubmission(launcher, ["seed=3"], "hydra.sweep.dir", 3, "job_id_for_3", {}).dump(
        folder / "4242_submitted.pkl")
    error = UncompletedJobError(f"Job 4242 (task: 0) with path {folder}/4242_0_result.pkl\n"
                                f"has not produced any output (state: FAILED)\nError stream produced:\n----\n...")
    failure = launcher_failure(error)
    assert isinstance(failure, SweepJobError) and "\n" not in str(failure)
    assert str(failure).startswith(f"sweep job #3 ({tmp_path / 'runs/dmc/x/drqv2/seed3'}) failed under the submitit "
                                   f"launcher: it died without a result (killed, out of memory or past its time "
                                   f"limit; submitit's state: FAILED)")
    assert f"its log: {folder / '4242_0_log.err'}" in str(failure) and "resume=auto" in str(failure)


@pytest.mark.parametrize("rank, printed", [(0, True), (1, False)])
def test_torchrun_refusal_is_printed_by_rank_0_only(monkeypatch, capsys, rank, printed):
    from robotrl.cli import print_error

    monkeypatch.setenv("WORLD_SIZE", "2")
    monkeypatch.setenv("RANK", str(rank))
    print_error(ConfigError("agent=drqv2 has no data-parallel learner"))
    err = capsys.readouterr().err
    assert err == ("robotrl: error: agent=drqv2 has no data-parallel learner\n" if printed else "")
    print_error(ConfigError("diverged"), refusal=False)  # an error during training: every rank, named
    assert capsys.readouterr().err == f"robotrl: error: {f'rank {rank}: ' if rank else ''}diverged\n"


@pytest.mark.slow  # ~1 min: two torchrun ranks build a run and refuse it
def test_torchrun_refusal_is_one_line_not_one_per_rank(tmp_path):
    from tests.test_distributed import torchrun

    bad = torchrun(tmp_path, *TINY_OVERRIDES, f"run_dir={tmp_path / 'bad'}")
    assert bad.returncode != 0
    assert bad.stderr.count("robotrl: error:") == 1 and "agent=drqv2 has no data-parallel learner" in bad.stderr


def test_ray_actor_death_names_the_episode_as_the_console_counts_it():
    """The console's "episode N" counts episodes from 1; the dead actor's line said "episode N-1" for the same one."""
    from rich.console import Console

    from robotrl.workflows.ray_collector import RayCollector
    from robotrl.workflows.trainer.state import Discards

    collector = RayCollector(OmegaConf.create({}), {}, seed_steps=0)
    collector.ray = SimpleNamespace(kill=lambda actor, no_restart: None)
    collector.actors, collector.incarnations = ["actor0"], [0]
    collector._new_actor = lambda index, incarnation: f"actor{index}.{incarnation}"
    collector.begin_segment()
    # step: frames received so far (a dead actor's steps are taken back out)
    run = SimpleNamespace(state=SimpleNamespace(step=0, discards=Discards()), console=Console(record=True, width=200))
    collector.assembler.start(0, 0, episode=3)  # the 4th episode (indices count from 0)
    collector.restart_actor(0, RuntimeError("killed"), run)
    assert "rollout actor 0 died: episode 4 discarded" in run.console.export_text()
    assert collector.reissue == [3]  # the same episode index is played again


def test_ray_cluster_refuses_a_sweep_dir_a_node_cannot_see(tmp_path):
    from robotrl.workflows.sweep_launchers import check_shared_storage

    seen = []

    def probe(marker: Path) -> list[tuple[str, bool]]:
        seen.append(marker.read_text())  # the marker exists where the driver wrote it
        return [("10.0.0.1", True), ("10.0.0.2", False)]

    with pytest.raises(ConfigError, match=r"hydra.sweep.dir=.* is not on storage every Ray node shares: 10.0.0.2 "):
        check_shared_storage(tmp_path, probe)
    assert seen and list(tmp_path.iterdir()) == []  # the marker is removed
    check_shared_storage(tmp_path, lambda marker: [("10.0.0.1", True)])


def test_ray_cluster_sweep_checks_shared_storage_before_hydra_runs(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install 'robotrl[ray-sweep]'")
    from robotrl.workflows import sweep_launchers

    connected = []
    monkeypatch.setattr(sweep_launchers, "_connect_ray", lambda init: connected.append(init.address))
    sweep_dir = tmp_path / "shared-runs"
    args = ["-m", "seed=1,2", "hydra/launcher=ray_cluster", f"hydra.sweep.dir={sweep_dir}"]
    with pytest.raises(ConfigError, match="not on storage every Ray node shares: 10.0.0.2 cannot see it"):
        sweep_launchers.check_launcher(args, probe=lambda marker: [("10.0.0.1", True), ("10.0.0.2", False)])
    assert connected == ["auto"]
    ran = sweep_launchers.check_launcher(args, probe=lambda marker: [("10.0.0.1", marker.parent == sweep_dir)])
    assert ran[-1] == f"hydra.sweep.dir={sweep_dir}"
    monkeypatch.chdir(tmp_path)  # a relative sweep dir: probed, and run, as an absolute path
    ran = sweep_launchers.check_launcher(["-m", "hydra/launcher=ray_cluster"],
                                         probe=lambda marker: [("10.0.0.1", marker.parent == tmp_path / "runs")])
    assert ran == ["-m", "hydra/launcher=ray_cluster", f"hydra.sweep.dir={tmp_path / 'runs'}"]
    sweep_launchers.check_launcher(["-m", "seed=1,2", "hydra/launcher=ray_local"], probe=pytest.fail)  # one machine


@pytest.mark.slow  # ~1 min: a local Ray instance answers the probe from its one node
def test_ray_probe_on_a_local_instance_sees_the_sweep_dir(tmp_path):
    ray = pytest.importorskip("ray")
    from robotrl.workflows.sweep_launchers import check_shared_storage, ray_probe

    ray.init(num_cpus=1, include_dashboard=False, _node_ip_address="127.0.0.1")
    try:
        check_shared_storage(tmp_path, ray_probe)
    finally:
        ray.shutdown()


@pytest.mark.slow  # ~1-2 min: one sweep job through submitit's local executor, killed with SIGKILL
def test_a_sigkilled_local_job_is_one_line_with_its_run_dir_and_log(tmp_path):
    from tests.test_preemption import _rows, _task_pids

    sweep = subprocess.Popen([sys.executable, "-m", "robotrl.cli", "train", "-m", *TINY_OVERRIDES, "frames=2000",
                              "save_video=false", "seed=1", "hydra/launcher=submitit_local"], cwd=tmp_path, env=ENV,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "runs/dmc/cartpole_balance/drqv2/seed1"
    deadline = time.monotonic() + 400
    while len(_rows(run_dir / "train.csv")) < 1:
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.2)
    (task,) = _task_pids(str(tmp_path))
    os.kill(task, signal.SIGKILL)  # what the OOM killer or a node failure does
    _, err = sweep.communicate(timeout=300)
    assert sweep.returncode == 2, err[-3000:]
    last = err.strip().splitlines()[-1]
    assert last.startswith(f"robotrl: error: sweep job #0 ({run_dir}) failed under the submitit launcher:"), err
    log = Path(last.split("its log: ")[1].split(";")[0])
    assert log.is_file() and log.parent.parent == tmp_path / "runs/.submitit"


@pytest.mark.slow  # ~2-3 min: a one-node "cluster" (ray start --head) and a 1-job sweep through ray_cluster
def test_ray_cluster_sweep_joins_a_running_cluster(tmp_path):
    """hydra/launcher=ray_cluster against a running Ray head on loopback: the storage check runs and the job trains.
    (hydra-ray-launcher alone passes object_store_memory when joining, which Ray refuses.)"""
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install 'robotrl[ray-sweep]'")
    import socket

    from tests.test_distributed import free_port

    port = free_port()
    # RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0: Ray keeps 127.0.0.1 as the node address (it would replace a loopback
    # address by the machine's), so the head and the sweep meet on loopback
    # and one token, in the environment only, authenticates the sweep to this head (no token file is written)
    env = {**ENV, "RAY_USAGE_STATS_ENABLED": "0", "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "token",
           "RAY_AUTH_TOKEN": __import__("uuid").uuid4().hex}
    # --block: this process owns the head; terminating its session stops the head's processes (ours only)
    # its own --temp-dir: `ray start` records the head in <temp dir>/ray_current_cluster, which every later
    # ray.init() on this machine would try to join (short: Ray's socket paths must fit 107 characters)
    temp_dir = tempfile.mkdtemp(prefix="rayhead-", dir="/tmp")
    head = subprocess.Popen([sys.executable, "-m", "ray.scripts.scripts", "start", "--head", "--block",
                             f"--port={port}", "--num-cpus=1", "--num-gpus=0", "--node-ip-address=127.0.0.1",
                             "--include-dashboard=false", f"--temp-dir={temp_dir}"], env=env,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 300
        while socket.socket().connect_ex(("127.0.0.1", port)) != 0:
            assert head.poll() is None and time.monotonic() < deadline, "the Ray head did not start"
            time.sleep(1)
        proc = subprocess.run([sys.executable, "-m", "robotrl.cli", "train", "-m", *TINY_OVERRIDES, "frames=100",
                               "save_video=false", "seed=1", "hydra/launcher=ray_cluster",
                               f"hydra.launcher.ray.init.address=127.0.0.1:{port}",
                               "hydra.launcher.ray.remote.num_cpus=1", "hydra.launcher.ray.remote.num_gpus=0"],
                              capture_output=True, text=True, env=env, cwd=tmp_path, timeout=600)
    finally:
        os.killpg(head.pid, signal.SIGTERM)
        head.wait(timeout=120)
        shutil.rmtree(temp_dir, ignore_errors=True)
    assert not Path("/tmp/ray/ray_current_cluster").exists() or f"127.0.0.1:{port}" not in \
        Path("/tmp/ray/ray_current_cluster").read_text()
    assert proc.returncode == 0, proc.stderr[-3000:]
    assert (tmp_path / "runs/dmc/cartpole_balance/drqv2/seed1/summary.json").is_file()


def test_ray_cluster_without_a_cluster_is_one_line(tmp_path, monkeypatch):
    pytest.importorskip("hydra_plugins.hydra_ray_launcher", reason="pip install 'robotrl[ray-sweep]'")
    import ray

    from robotrl.workflows import sweep_launchers

    def refuse(**kwargs):
        raise ConnectionError(f"Could not find any running Ray instance at {kwargs['address']}")

    monkeypatch.setattr(ray, "init", refuse)
    with pytest.raises(ConfigError, match=r"could not join a Ray cluster at hydra.launcher.ray.init.address=auto .*"
                                          r"Could not find any running Ray instance"):
        sweep_launchers.check_launcher(["-m", "seed=1,2", "hydra/launcher=ray_cluster",
                                        f"hydra.sweep.dir={tmp_path}"])
