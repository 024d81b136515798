"""The trainer end to end on a tiny real DrQ-v2 run: files written, exact resume, bad-input errors."""

from __future__ import annotations

import csv
import json

import pytest

from robotrl.errors import CheckpointError, ConfigError
from robotrl.workflows.train import Trainer
from tests.conftest import assert_same_tensors


def _rows(path) -> list[dict[str, str]]:
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def _train(cfg, run_dir):
    return Trainer(cfg, run_dir).train()


def test_resume_is_exact(compose_cfg, tmp_path):
    """Train 400 frames in one go vs 200, stop, resume to 400: identical parameters and optimiser states. The
    uninterrupted run (with the baselines compared at its end) also shows what a run writes."""
    full = Trainer(compose_cfg("frames=400", "compare_baselines=true"), tmp_path / "full")
    summary = full.train()
    _assert_run_wrote_everything(tmp_path / "full", summary)
    _train(compose_cfg("frames=200"), tmp_path / "split")
    resumed = Trainer(compose_cfg("frames=400", "resume=true"), tmp_path / "split")
    assert resumed.step == 100
    resumed.train()
    assert_same_tensors(full.agent.state_dict(), resumed.agent.state_dict())
    rows = [r["frame"] for r in _rows(tmp_path / "split" / "eval.csv")]
    assert rows == ["0", "200", "400"]  # no duplicated rows after resume


def _assert_run_wrote_everything(run_dir, summary) -> None:
    for name in ("train.csv", "eval.csv", "run.json", "summary.json", "curve.png", "checkpoints/latest"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "tb").glob("events.out.tfevents.*"))
    assert sorted(p.name for p in (run_dir / "videos").glob("*.mp4"))  # eval videos of the agent
    evals = _rows(run_dir / "eval.csv")
    assert [int(r["frame"]) for r in evals] == [0, 200, 400]
    train_rows = _rows(run_dir / "train.csv")
    assert "critic_loss" in train_rows[-1] and float(train_rows[-1]["episode_length"]) == 50
    assert summary["frames"] == 400 and summary["baselines"]["random"]["episodes"] == 1
    info = json.loads((run_dir / "run.json").read_text())
    assert info["config"]["env"]["name"] == "dmc/cartpole_balance"
    assert info["agent"]["nstep"] == 3 and "task_overrides" not in info["agent"]  # the hyperparameters it ran with


# a run dir with checkpoints needs resume=true, a checkpoint of another agent is refused: unit tests of the parts
# (tests/test_trainer_parts.py), no 200-frame run first


def test_resume_without_checkpoint(compose_cfg, tmp_path):
    with pytest.raises(CheckpointError, match="holds no checkpoint"):
        Trainer(compose_cfg("resume=true"), tmp_path)


@pytest.mark.parametrize(("override", "message"), [
    ("frames=abc", "frames='abc'"),
    ("env.obs_type=rgb", "env.obs_type='rgb'"),
    ("seed=-1", "seed=-1 is out of range"),
    ("device=tpu", "device='tpu'"),
])
def test_bad_config_values(compose_cfg, tmp_path, override, message):
    with pytest.raises(ConfigError, match=message):
        Trainer(compose_cfg(override), tmp_path)


# the loop's part, with fakes: tests/test_trainer_loop.py::test_a_nan_update_stops_the_run_and_keeps_the_checkpoint
@pytest.mark.slow  # ~15 s; the same with a real DrQ-v2 run
def test_divergence_stops_the_run_and_keeps_checkpoints(compose_cfg, tmp_path):
    from robotrl.errors import DivergenceError

    trainer = Trainer(compose_cfg("frames=400"), tmp_path)
    original = trainer.agent.update
    trainer.agent.update = lambda replay, step: (
        {"critic_loss": float("nan")} if step >= 150 else original(replay, step))
    with pytest.raises(DivergenceError, match="critic_loss became nan"):
        trainer.train()
    assert (tmp_path / "checkpoints" / "frame_000000000200" / "state.pt").exists()


def test_ctrl_c_is_raised_at_the_next_safe_point_and_a_second_one_at_once():
    import os
    import signal

    from robotrl.workflows.train import GracefulInterrupt

    before = signal.getsignal(signal.SIGINT)
    with GracefulInterrupt() as interrupt:
        os.kill(os.getpid(), signal.SIGINT)  # delivered to this (main) thread: only sets the flag
        assert interrupt.requested
        with pytest.raises(KeyboardInterrupt):
            interrupt.check()
        with pytest.raises(KeyboardInterrupt):  # a second Ctrl-C does not wait for a safe point
            os.kill(os.getpid(), signal.SIGINT)  # (Python runs the handler right after the kill returns)
    assert signal.getsignal(signal.SIGINT) is before  # the previous handler is back
