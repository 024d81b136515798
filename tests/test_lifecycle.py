"""The run directory's lifecycle: resume from the run's own config, refusals that touch nothing, finished runs,
restarts before the first checkpoint, run-dir names and the final evaluation (issue 16, section 2)."""

from __future__ import annotations

import csv
import json

import pytest

from robotrl.workflows.train import Trainer
from tests.conftest import TINY_OVERRIDES
from tests.test_cli import robotrl


def _snapshot(root) -> dict[str, bytes]:
    """Every file under ``root`` with its bytes (a refused or no-op command must leave this unchanged)."""
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _frames(path) -> list[int]:
    with open(path, newline="") as f:
        return [int(float(r["frame"])) for r in csv.DictReader(f)]


@pytest.fixture(scope="module")
def finished_run(tmp_path_factory):
    """A tiny run of 400 frames started with overrides that the default config does not have (32 px ...)."""
    run_dir = tmp_path_factory.mktemp("life") / "a-run-dir-name-long-enough-that-its-checkpoint-paths-pass-80-columns"
    proc = robotrl("train", *TINY_OVERRIDES, "frames=200", f"run_dir={run_dir}")
    assert proc.returncode == 0, proc.stderr[-3000:]
    # piped output (rich assumes 80 columns) keeps each path on one line, so it can be copied
    assert f"checkpoint {run_dir}/checkpoints/frame_000000000200\n" in proc.stdout, proc.stdout
    return run_dir


@pytest.mark.slow  # ~50 s with its fixture; resume from the CLI stays in the default suite (test_cli)
def test_resume_reads_the_runs_own_config(finished_run):
    """`resume=true run_dir=DIR` alone continues the run: its saved overrides (32 px, tiny nets) are used, only
    what is given now (frames) changes. Composed from the defaults instead, the 84 px agent would not load."""
    # the finished-run check needs the run at its own frames=200, so it comes first
    before = _snapshot(finished_run)
    done = robotrl("train", "resume=true", f"run_dir={finished_run}")
    assert done.returncode == 0, done.stderr[-2000:]
    assert "is complete" in done.stdout and "nothing was changed" in done.stdout
    assert _snapshot(finished_run) == before  # summary.json, .hydra/, logs: byte for byte

    resumed = robotrl("train", "resume=true", f"run_dir={finished_run}", "frames=400")
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    assert "resumed from" in resumed.stdout
    assert _frames(finished_run / "eval.csv") == [0, 200, 400]
    summary = json.loads((finished_run / "summary.json").read_text())
    assert summary["frames"] == 400 and summary["final_eval"]["frame"] == 400
    config = json.loads((finished_run / "run.json").read_text())["config"]
    assert config["env"]["image_size"] == 32 and config["frames"] == 400


def _a_run_dir(root):
    """What a run leaves on disk (a checkpoint, its ``latest`` pointer, .hydra/, logs, events, videos), written here:
    a start over it is refused from what it holds, before any training (robotrl.lifecycle.plan_train)."""
    run_dir = root / "a-run-dir-name-long-enough-that-its-checkpoint-paths-pass-80-columns"
    ckpt = run_dir / "checkpoints" / "frame_000000000200"
    for path in (ckpt / "state.pt", run_dir / ".hydra" / "config.yaml", run_dir / ".hydra" / "overrides.yaml",
                 run_dir / "train.csv", run_dir / "eval.csv", run_dir / "summary.json", run_dir / "run.json",
                 run_dir / "train.log", run_dir / "tb" / "events.out.tfevents.1", run_dir / "videos" / "eval_0.mp4"):
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(path.name.encode())
    (run_dir / "checkpoints" / "latest").write_text(ckpt.name + "\n")
    return run_dir


def test_refused_start_touches_nothing(tmp_path):
    run_dir = _a_run_dir(tmp_path)
    before = _snapshot(run_dir)
    proc = robotrl("train", *TINY_OVERRIDES, f"run_dir={run_dir}")
    assert proc.returncode == 2
    assert "already holds checkpoints" in proc.stderr and f"resume=true run_dir={run_dir}" in proc.stderr
    assert _snapshot(run_dir) == before


def test_failed_start_leaves_nothing_and_bad_camera_is_one_line(tmp_path):
    run_dir = tmp_path / "new" / "run"
    proc = robotrl("train", *TINY_OVERRIDES, "env.camera=nope", f"run_dir={run_dir}")
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and "env.camera='nope' is not a camera of dmc/cartpole_balance" in lines[0], proc.stderr
    assert not (tmp_path / "new").exists()  # no .hydra/, no empty cli.log, no empty parents


@pytest.mark.slow  # ~23 s of training
def test_restart_without_checkpoint_starts_logs_clean(compose_cfg, tmp_path):
    """A run stopped before its first checkpoint, started again: one row per frame, one eval at 0, one event file."""
    Trainer(compose_cfg("frames=200", "checkpoint_every_frames=100000"), tmp_path).train()
    import shutil

    shutil.rmtree(tmp_path / "checkpoints")  # what a Ctrl-C before the first checkpoint leaves: logs, no checkpoint
    assert (tmp_path / "train.csv").exists() and list((tmp_path / "tb").iterdir())
    Trainer(compose_cfg("frames=200", "checkpoint_every_frames=100000"), tmp_path).train()
    train_frames = _frames(tmp_path / "train.csv")
    assert train_frames == sorted(set(train_frames)) and train_frames[-1] == 200
    assert _frames(tmp_path / "eval.csv") == [0, 200]
    assert len(list((tmp_path / "tb").glob("events.*"))) == 1


# frames < eval_every_frames still ends with an eval of the final policy: a unit test of the schedule,
# tests/test_trainer_parts.py::test_the_final_policy_is_always_evaluated


@pytest.mark.parametrize(("reward", "tag"),
                         [("env", "drqv2"), ("kagi", "drqv2-kagi"), ("clip_tiny", "drqv2-clip_tiny")])
def test_run_dir_names_a_non_default_reward(compose_cfg, reward, tag):
    cfg = compose_cfg(f"reward={reward}", "env=metaworld/reach", tiny=False)
    assert cfg.run_dir == f"runs/metaworld/reach/{tag}/seed1"


def test_progress_bar_fits_80_columns():
    """At a 1.1M-frame run's counts, 5-digit fps, a 4-digit negative return and 11 hours elapsed."""
    import io
    import re

    from rich.console import Console

    from robotrl.workflows.train import make_progress

    out = io.StringIO()
    progress, task = make_progress(Console(file=out, width=80, force_terminal=True, color_system=None), 550_000)
    with progress:
        progress._tasks[task].start_time -= 40_000
        progress.update(task, completed=273_456, fps=12345.0, ret=-1234.5)
        progress.refresh()
    text = re.sub(r"\x1b\[[0-9;?]*[A-Za-z]", "", out.getvalue())
    line = [line for line in text.replace("\r", "\n").splitlines() if line.startswith("train")][-1]
    assert "273456/550000" in line and "12345 fps" in line and "-1234.5" in line and "11:06:40" in line, line
    assert "…" not in line and len(line) + 3 <= 80, line  # +3: an ETA of hours (H:MM:SS instead of MM:SS)


def test_slow_phases_print_progress():
    """Evaluation (and every Heartbeat user) prints progress lines instead of running silently: the trainer's eval
    player on a 3-step env, every tick printing (what a >5 s phase shows)."""
    from types import SimpleNamespace

    import numpy as np

    from robotrl.heartbeat import Heartbeat
    from robotrl.workflows.trainer.evaluation import one_env_player
    from tests.test_trainer_parts import _Counter

    agent = SimpleNamespace(reset=lambda: None, act=lambda obs, step, eval_mode: np.array([1.0], np.float32))
    lines: list[str] = []
    results = one_env_player(_Counter(), agent)([7], None, 0, Heartbeat("eval @ 0 frames", every=0.0,
                                                                         write=lines.append))
    assert results[0]["length"] == 3 and results[0]["seed"] == 7
    assert lines[0].startswith("eval @ 0 frames: episode 1/1, step 1 (") and len(lines) == 3


def test_heartbeat_is_quiet_within_its_interval(capsys):
    from robotrl.heartbeat import Heartbeat

    quiet, loud = Heartbeat("slow", every=3600), Heartbeat("slow", every=0)
    quiet.tick(lambda: "step 3/10")
    assert capsys.readouterr().out == ""
    loud.tick(lambda: "step 3/10")
    assert capsys.readouterr().out.startswith("slow: step 3/10 (")
