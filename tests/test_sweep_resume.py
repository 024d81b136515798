"""Sweeps that resume safely (issue 25, items 6-7): under ``resume=true|auto`` a finished job changes nothing, and
``resume=auto`` continues a partly failed sweep in one command (finished jobs untouched, jobs with a checkpoint
resumed, jobs without one started again).

The fast tests run the sweep job function (``robotrl.workflows.train_command.train_task``) in this process, as
Hydra's launchers call it, with Hydra's job config set; the slow ones run whole sweeps through ``robotrl train -m``
(one of them SIGKILLed)."""

from __future__ import annotations

import csv
import json
import os
import shutil

import pytest

from robotrl.errors import CheckpointError, ConfigError
from robotrl.workflows.train import Trainer
from tests.conftest import TINY_OVERRIDES


def _snapshot(root, skip: str = "<none>") -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*"))
            if p.is_file() and skip not in p.relative_to(root).parts}


def _frames(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(float(r["frame"])) for r in csv.DictReader(f)]


def run_sweep_job(run_dir, *overrides: str) -> None:
    """Run ``robotrl.workflows.train_command.train_task`` as a job of a multirun sweep (basic launcher) whose output
    dir is ``run_dir``: the code path of every sweep job, without a subprocess."""
    from hydra import compose, initialize_config_module
    from hydra.core.hydra_config import HydraConfig
    from hydra.types import RunMode
    from omegaconf import open_dict

    from robotrl.config import register_hydra
    from robotrl.workflows.train_command import train_task

    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=[*TINY_OVERRIDES, "tensorboard=false", "save_video=false", *overrides],
                      return_hydra_config=True)
    with open_dict(cfg):
        cfg.hydra.runtime.output_dir = str(run_dir)
        cfg.hydra.mode = RunMode.MULTIRUN
        cfg.hydra.job.num = 0
    HydraConfig.instance().set_config(cfg)
    task_cfg = cfg.copy()
    with open_dict(task_cfg):
        del task_cfg["hydra"]
    train_task(task_cfg)


@pytest.fixture(scope="module")
def finished(tmp_path_factory):
    """A run that reached its frames=100 (one episode, no updates yet: a few seconds), copied for each test."""
    from hydra import compose, initialize_config_module

    from robotrl.config import register_hydra

    run_dir = tmp_path_factory.mktemp("sweep-resume") / "seed1"
    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=[*TINY_OVERRIDES, "tensorboard=false", "save_video=false", "frames=100"])
    Trainer(cfg, run_dir).train()
    return run_dir


@pytest.mark.parametrize("resume", ["true", "auto"])
def test_a_finished_sweep_job_is_a_no_op_under_resume(finished, tmp_path, resume, capsys):
    """It used to "resume", train 0 steps and rewrite summary.json with final_eval null (exit 0, no word)."""
    run_dir = tmp_path / "seed1"
    shutil.copytree(finished, run_dir)
    before = _snapshot(run_dir)
    run_sweep_job(run_dir, "frames=100", f"resume={resume}")
    assert _snapshot(run_dir) == before  # summary.json, eval.csv, checkpoints: byte for byte
    out = [line for line in capsys.readouterr().out.splitlines() if "is complete" in line]
    assert len(out) == 1 and f"run {run_dir} is complete" in out[0] and "nothing was changed" in out[0]
    assert json.loads((run_dir / "summary.json").read_text())["final_eval"]["frame"] == 100


def test_resume_auto_starts_a_job_that_died_before_its_first_checkpoint(finished, tmp_path):
    """A job killed before its first checkpoint left .hydra/, logs and rows but no checkpoint: resume=auto starts
    it from scratch (resume=true refuses it in one line that names resume=auto)."""
    run_dir = tmp_path / "seed1"
    shutil.copytree(finished, run_dir)
    shutil.rmtree(run_dir / "checkpoints")
    (run_dir / "summary.json").unlink()
    with pytest.raises(SystemExit) as refused:  # a basic-launcher job: one line on stderr, exit 2
        run_sweep_job(run_dir, "frames=100", "resume=true")
    assert refused.value.code == 2
    (run_dir / "eval.csv").write_text("frame,episode_return\n0,1.0\n100,2.0\n300,3.0\n")  # the dead start's rows
    run_sweep_job(run_dir, "frames=100", "resume=auto")
    assert _frames(run_dir / "eval.csv") == [0, 100]  # started clean: no rows of the dead start kept
    assert json.loads((run_dir / "summary.json").read_text())["final_eval"]["frame"] == 100


def test_resume_auto_resumes_a_job_with_a_checkpoint(finished, tmp_path, capsys):
    run_dir = tmp_path / "seed1"
    shutil.copytree(finished, run_dir)
    run_sweep_job(run_dir, "frames=200", "resume=auto")
    assert "resumed from" in capsys.readouterr().out
    assert _frames(run_dir / "eval.csv") == [0, 100, 200]


@pytest.mark.parametrize("resume", ["true", "auto"])
def test_a_sweep_point_never_resumes_another_points_run(finished, tmp_path, resume, capsys):
    """`-m agent.lr=1e-4,3e-4 seed=1 resume=auto`: both points map to the same run dir (it names env, agent, reward
    and seed). The second point called the first's finished run complete (its result reported as its own) or, with
    frames still to go, continued it with its own lr; now it is refused, naming the key, and nothing changes."""
    run_dir = tmp_path / "seed1"
    shutil.copytree(finished, run_dir)
    before = _snapshot(run_dir)
    for frames in (100, 200):
        with pytest.raises(SystemExit) as refused:
            run_sweep_job(run_dir, f"frames={frames}", "agent.lr=0.0003", f"resume={resume}")
        assert refused.value.code == 2
        err = capsys.readouterr().err
        assert "holds the run of agent.lr=0.0001, this sweep point has agent.lr=0.0003" in err, err
    assert _snapshot(run_dir) == before


def test_resume_takes_true_false_or_auto():
    from robotrl.lifecycle import plan_job
    from robotrl.overrides import check_overrides

    check_overrides(["resume=auto", "seed=1,2"])  # the one command that continues a sweep
    with pytest.raises(ConfigError, match=r"resume='maybe', expected true or false or auto"):
        check_overrides(["resume=maybe"])
    with pytest.raises(CheckpointError, match="resume=auto does either"):
        plan_job(__import__("pathlib").Path("/nonexistent/run"), True, 200, 2)


@pytest.mark.slow  # ~3 min: three tiny sweeps through `robotrl train -m`
def test_one_command_continues_a_partly_failed_sweep(tmp_path):
    """Seed 1 finished, seed 2 stopped after its first checkpoint, seed 3 died before its first one, seed 4 never
    ran: `robotrl train -m <the sweep> resume=auto` leaves 1 untouched, resumes 2, starts 3 and 4; the report then
    holds all four at their final frame."""
    from tests.test_sweeps import robotrl

    sweep = [*TINY_OVERRIDES, "frames=200", "checkpoint_every_frames=100", "save_video=false", "tensorboard=false"]
    first = robotrl("train", "-m", *sweep, "seed=1,2,3", cwd=tmp_path)
    assert first.returncode == 0, first.stderr[-3000:]
    runs = tmp_path / "runs/dmc/cartpole_balance/drqv2"
    # seed 2: as if killed after its frame-100 checkpoint; seed 3: as if killed before its first checkpoint
    shutil.rmtree(runs / "seed2/checkpoints/frame_000000000200")
    (runs / "seed2/checkpoints/latest").write_text("frame_000000000100\n")
    (runs / "seed2/summary.json").unlink()
    shutil.rmtree(runs / "seed3/checkpoints")
    (runs / "seed3/summary.json").unlink()
    seed1 = _snapshot(runs / "seed1", skip=".hydra")  # Hydra rewrites every sweep job's .hydra/ before it starts
    again = robotrl("train", "-m", *sweep, "seed=1,2,3,4", "resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _snapshot(runs / "seed1", skip=".hydra") == seed1 and "seed1 is complete" in again.stdout
    assert f"resumed from {runs}/seed2/checkpoints/frame_000000000100" in again.stdout
    for seed in (2, 3, 4):
        assert _frames(runs / f"seed{seed}/eval.csv") == [0, 200], seed
    report = robotrl("report", "runs", cwd=tmp_path)
    assert report.returncode == 0, report.stderr[-2000:]
    data = json.loads((tmp_path / "runs/report/report.json").read_text())
    assert data["groups"][0]["seeds"] == [1, 2, 3, 4] and data["groups"][0]["incomplete"] == 0
    assert data["missing"] == []


@pytest.mark.slow  # ~2 min: a tiny two-seed sweep killed once, then continued
def test_a_sweep_killed_with_sigkill_mid_job_continues_with_resume_auto(tmp_path):
    """`robotrl train -m` SIGKILLed (no handler runs: out of memory, a node lost) once seed 2 has a checkpoint and
    is training on: `resume=auto` leaves seed 1 as it was, continues seed 2 from its last intact checkpoint (the kill
    may land in a save), and each run's eval.csv ends with the same frames as a run never killed."""
    import signal
    import subprocess
    import sys
    import time

    from tests.test_sweeps import ENV

    sweep = [*TINY_OVERRIDES, "frames=400", "checkpoint_every_frames=100", "save_video=false", "tensorboard=false",
             "seed=1,2"]
    runs = tmp_path / "runs/dmc/cartpole_balance/drqv2"
    proc = subprocess.Popen([sys.executable, "-m", "robotrl.cli", "train", "-m", *sweep], cwd=tmp_path, env=ENV,
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
    try:
        deadline = time.monotonic() + 500
        while not (runs / "seed2/checkpoints/latest").exists():
            assert proc.poll() is None and time.monotonic() < deadline, "the sweep ended before seed 2 checkpointed"
            time.sleep(0.05)
        time.sleep(1.0)  # into the training after it (or the next save)
    finally:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait()
    assert not (runs / "seed2/summary.json").exists(), "seed 2 finished before the kill: nothing was tested"
    seed1 = _snapshot(runs / "seed1", skip=".hydra")
    from tests.test_sweeps import robotrl

    again = robotrl("train", "-m", *sweep, "resume=auto", cwd=tmp_path)
    assert again.returncode == 0, again.stderr[-3000:]
    assert _snapshot(runs / "seed1", skip=".hydra") == seed1 and "seed1 is complete" in again.stdout
    assert f"resumed from {runs}/seed2/checkpoints/frame_" in again.stdout, again.stdout[-2000:]
    for seed in (1, 2):
        assert _frames(runs / f"seed{seed}/eval.csv") == [0, 200, 400], seed
