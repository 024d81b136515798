"""Preemption and time limits (issue 25, item 9): a job signalled before its limit checkpoints at its next episode
end, requeues itself (submitit's checkpointing protocol) and the requeued job resumes exactly from there."""

from __future__ import annotations

import csv
import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robotrl import preemption
from robotrl.workflows.train import Trainer
from tests.conftest import TINY_OVERRIDES, assert_same_tensors

pytest.importorskip("hydra_plugins.hydra_submitit_launcher", reason="pip install 'robotrl[slurm]'")


def _signal_self_at_step(trainer: Trainer, step: int) -> None:
    """SIGUSR2 to this process while the agent acts at training step ``step`` (mid-episode)."""
    act = trainer.agent.act

    def acting(obs, at, eval_mode=False):
        if at == step and not eval_mode:
            os.kill(os.getpid(), signal.SIGUSR2)
        return act(obs, at, eval_mode=eval_mode)

    trainer.agent.act = acting


@pytest.fixture
def submitit_job(tmp_path, monkeypatch):
    """This process as a submitit job of hydra-submitit-launcher's local launcher: submitit's own SIGUSR2 handler
    (pickle the job again, requeue it, exit 144) set as submitit's ``process_job`` sets it."""
    from hydra_plugins.hydra_submitit_launcher.submitit_launcher import LocalLauncher
    from submitit.core.utils import DelayedSubmission, JobPaths
    from submitit.local.local import LocalJobEnvironment

    monkeypatch.setenv("SUBMITIT_LOCAL_JOB_ID", "123")
    monkeypatch.setenv("SUBMITIT_FOLDER", str(tmp_path / ".submitit/123"))
    paths = JobPaths(tmp_path / ".submitit/123", job_id="123", task_id=0)
    paths.folder.mkdir(parents=True)
    launcher = LocalLauncher(submitit_folder=str(paths.folder), timeout_min=60)
    delayed = DelayedSubmission(launcher, ["seed=1"], "hydra.sweep.dir", 0, "job_id_for_0", {})
    delayed.set_timeout(60, 3)
    LocalJobEnvironment()._handle_signals(paths, delayed)
    yield paths
    preemption.uninstall()
    for signum in (signal.SIGUSR2, signal.SIGTERM, signal.SIGCONT):
        signal.signal(signum, signal.SIG_DFL)


def test_a_signal_mid_episode_checkpoints_at_its_end_then_submitit_requeues(tmp_path, submitit_job, capsys):
    """The loop of real parts around a fake agent on 3-step episodes (tests/trainer_fakes.py): SIGUSR2 at step 4,
    mid-episode 2: nothing happens there; at the episode's end (frame 12) a checkpoint is written, then submitit's
    handler pickles the job and exits 144 (the local executor's requeue); the next start resumes (resume=auto)."""
    from submitit.core.utils import DelayedSubmission

    from robotrl.workflows.sweep_launchers import REQUEUE_MARKER, submitit_resume
    from robotrl.workflows.trainer.local import LocalCollector
    from tests.trainer_fakes import CounterEnv, FakeAgent, FakeReplay, parts_loop

    run_dir = tmp_path / "run"
    assert submitit_resume(run_dir, False) is False  # a first start: as asked; installs the checkpoint-first handler
    agent = FakeAgent()
    act = agent.act

    def acting(obs, step, eval_mode=False):
        if step == 4 and not eval_mode:
            os.kill(os.getpid(), signal.SIGUSR2)
        return act(obs, step, eval_mode)

    agent.act = acting
    loop = parts_loop(run_dir, CounterEnv(), LocalCollector(seed_steps=0, update_at="step"), agent, FakeReplay(),
                      frames=60, checkpoint_every=100_000)
    with pytest.raises(SystemExit) as stopped:
        loop.train()
    assert stopped.value.code == 144  # submitit's local executor starts the job again on this code
    assert agent.updated == [0, 1, 2, 3, 4, 5]  # episode 2 was played to its end after the signal, no further
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("f")) == \
        ["frame_000000000012"]  # written at the episode end, before submitit was handed the signal
    assert (run_dir / REQUEUE_MARKER).is_file() and not (run_dir / "summary.json").exists()
    requeued = DelayedSubmission.load(submitit_job.submitted_pickle)
    assert requeued.args[0] == ["seed=1"] and requeued.args[2] == 0  # the same sweep point, requeued
    assert submitit_resume(run_dir, False) == "auto" and not (run_dir / REQUEUE_MARKER).exists()
    assert "requeued after a preemption or time-limit signal" in capsys.readouterr().out


@pytest.mark.slow  # ~5 s: the same with a tiny DrQ-v2 run (the test above holds it in the default suite)
def test_signal_checkpoints_at_the_episode_end_then_submitit_requeues_and_the_job_resumes(compose_cfg, tmp_path,
                                                                                          submitit_job, capsys):
    """SIGUSR2 at step 30 of a 50-step episode: nothing happens mid-episode; at the episode's end (frame 100) a
    checkpoint is written, then submitit's handler pickles the job and exits 144 (the local executor's requeue). The
    job's next start resumes from that checkpoint (resume=auto), whatever its own overrides say."""
    from submitit.core.utils import DelayedSubmission

    from robotrl.workflows.sweep_launchers import REQUEUE_MARKER, submitit_resume

    run_dir = tmp_path / "run"
    assert submitit_resume(run_dir, False) is False  # a first start: as asked; installs the checkpoint-first handler
    trainer = Trainer(compose_cfg("frames=400", "checkpoint_every_frames=100000", "tensorboard=false",
                                  "save_video=false"), run_dir)
    _signal_self_at_step(trainer, 30)
    with pytest.raises(SystemExit) as stopped:
        trainer.train()
    assert stopped.value.code == 144  # submitit's local executor starts the job again on this code
    assert sorted(p.name for p in (run_dir / "checkpoints").iterdir() if p.name.startswith("f")) == \
        ["frame_000000000100"]  # written at the episode end, before submitit was handed the signal
    assert (run_dir / REQUEUE_MARKER).is_file() and not (run_dir / "summary.json").exists()
    requeued = DelayedSubmission.load(submitit_job.submitted_pickle)
    assert requeued.args[0] == ["seed=1"] and requeued.args[2] == 0  # the same sweep point, requeued
    assert submitit_resume(run_dir, False) == "auto" and not (run_dir / REQUEUE_MARKER).exists()
    assert "requeued after a preemption or time-limit signal" in capsys.readouterr().out


def test_a_signal_before_the_training_loop_is_handed_over_at_once(tmp_path, submitit_job):
    """Nothing to checkpoint yet (building envs): the job requeues now and its next start resumes what it has."""
    from robotrl.workflows.sweep_launchers import submitit_resume

    submitit_resume(tmp_path / "run", False)
    with pytest.raises(SystemExit) as stopped:
        os.kill(os.getpid(), signal.SIGUSR2)
        time.sleep(5)  # the handler runs at the next bytecode; never reached
    assert stopped.value.code == 144 and submitit_job.submitted_pickle.exists()
    assert submitit_resume(tmp_path / "run", False) == "auto"


def _task_pids(marker: str) -> list[int]:
    """The submitit task processes (``python -m submitit.core._submit <folder>``) whose folder contains ``marker``."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            cmdline = (proc / "cmdline").read_bytes().decode(errors="replace").split("\0")
        except OSError:
            continue
        if proc.name.isdigit() and "submitit.core._submit" in cmdline and any(marker in a for a in cmdline):
            pids.append(int(proc.name))
    return pids


def _rows(path: Path) -> list[dict[str, str]]:
    if not path.is_file():
        return []
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


@pytest.mark.slow  # ~2-4 min: a sweep job through submitit's local executor and an uninterrupted reference run
def test_signalled_local_submitit_job_requeues_and_resumes_exactly(compose_cfg, tmp_path):
    overrides = [*TINY_OVERRIDES, "frames=600", "checkpoint_every_frames=100000", "save_video=false",
                 "tensorboard=false"]
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    sweep = subprocess.Popen([sys.executable, "-m", "robotrl.cli", "train", "-m", *overrides, "seed=1",
                              "hydra/launcher=submitit_local"], cwd=tmp_path, env=env, stdout=subprocess.PIPE,
                             stderr=subprocess.PIPE, text=True)
    run_dir = tmp_path / "runs/dmc/cartpole_balance/drqv2/seed1"
    deadline = time.monotonic() + 400
    while len(_rows(run_dir / "train.csv")) < 1:  # the first episode is over: training is under way
        assert sweep.poll() is None and time.monotonic() < deadline, sweep.communicate()
        time.sleep(0.2)
    (task,) = _task_pids(str(tmp_path))
    os.kill(task, signal.SIGUSR2)  # what SLURM sends signal_delay_s before a preemption or the time limit
    out, err = sweep.communicate(timeout=600)
    assert sweep.returncode == 0, err[-3000:]
    (log,) = (tmp_path / "runs/.submitit").glob("*/*_0_log.out")
    text = log.read_text()
    assert "preemption signal: checkpoint at frame" in text and "resumed from" in text, text[-3000:]
    frames = [int(float(r["frame"])) for r in _rows(run_dir / "train.csv")]
    assert frames == list(range(100, 700, 100))  # every episode once, none lost or repeated across the requeue
    summary = json.loads((run_dir / "summary.json").read_text())
    assert summary["final_eval"]["frame"] == 600
    # exact: the requeued job ends with the parameters of a run that was never interrupted
    from robotrl.checkpoint import load_state, resolve_checkpoint

    reference = Trainer(compose_cfg("frames=600", "checkpoint_every_frames=100000", "save_video=false",
                                    "tensorboard=false"), tmp_path / "reference")
    reference.train()
    assert_same_tensors(load_state(resolve_checkpoint(run_dir))["agent"], reference.agent.state_dict())


def test_a_signalled_sb3_job_requeues_at_once_and_resumes_from_its_last_checkpoint(compose_cfg, tmp_path,
                                                                                    submitit_job):
    """SB3 runs its own loop (no episode-end hand-off): the signal requeues the job at once, and the requeued start
    resumes from the last checkpoint the job wrote (README: "a signalled SB3 job requeues at once")."""
    from robotrl.checkpoint import resolve_checkpoint
    from robotrl.workflows.sweep_launchers import REQUEUE_MARKER, submitit_resume
    from tests.test_sb3 import AGENTS, SB3_TINY

    run_dir = tmp_path / "run"
    assert submitit_resume(run_dir, False) is False
    cfg = [*SB3_TINY, *AGENTS["sb3_sac"], "eval_every_frames=100000", "tensorboard=false"]
    trainer = Trainer(compose_cfg(*cfg, tiny=False), run_dir)
    save = trainer.run.save

    def save_then_signal():
        path = save()
        os.kill(os.getpid(), signal.SIGUSR2)  # right after the first checkpoint: the next bytecode hands over
        return path

    trainer.run.save = save_then_signal
    with pytest.raises(SystemExit) as stopped:
        trainer.train()
    assert stopped.value.code == 144 and submitit_job.submitted_pickle.exists()
    assert (run_dir / REQUEUE_MARKER).is_file() and not (run_dir / "summary.json").exists()
    assert resolve_checkpoint(run_dir / "checkpoints").name == "frame_000000000200"
    assert submitit_resume(run_dir, False) == "auto"
    resumed = Trainer(compose_cfg(*cfg, "resume=auto", tiny=False), run_dir)
    assert resumed.run.frame == 200
    assert resumed.train()["frames"] >= 400
