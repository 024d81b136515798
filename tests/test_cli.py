"""The `robotrl` console script: smoke training run, eval gate, envs listing, plots and one-line errors."""

from __future__ import annotations

import csv
import json
import os
import shlex
import subprocess
import sys
from types import SimpleNamespace

import numpy as np
import pytest

from tests.conftest import TINY_OVERRIDES

ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def robotrl(*args: str, cwd=None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robotrl.cli", *args], capture_output=True, text=True, env=ENV,
                          cwd=cwd, timeout=600)


@pytest.fixture(scope="module")
def trained_run(tmp_path_factory):
    """One tiny training run through the CLI, Ctrl-C'd (SIGINT) once its first checkpoint is on disk, then continued
    to its end with the command it printed: (run dir, the interrupted process's exit code and stderr, the step of
    its checkpoint, the continued process). The CLI's smoke test, the Ctrl-C test and the eval test read it."""
    import signal
    import time

    from robotrl.checkpoint import load_state, resolve_checkpoint

    run_dir = tmp_path_factory.mktemp("run") / "run"
    args = [sys.executable, "-m", "robotrl.cli", "train", *TINY_OVERRIDES, "frames=100000", f"run_dir={run_dir}"]
    proc = subprocess.Popen(args, env=ENV, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run_dir / "checkpoints" / "latest").exists() and time.time() < deadline:
        time.sleep(0.5)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    step = load_state(resolve_checkpoint(run_dir))["counters"]["step"]
    command = stderr.strip().splitlines()[-1].split("continue this run with: ")[-1]
    # the printed command, as is: it needs none of the original overrides (the run's own config is used)
    resumed = robotrl(*shlex.split(command)[1:], f"frames={step * 2 + 100}")
    return SimpleNamespace(run_dir=run_dir, returncode=proc.returncode, stderr=stderr, command=command, step=step,
                           resumed=resumed)


def test_train_smoke(trained_run):
    run_dir, proc = trained_run.run_dir, trained_run.resumed
    assert proc.returncode == 0, proc.stderr[-3000:]
    for name in ("train.csv", "eval.csv", "curve.png", "summary.json", "checkpoints/latest", ".hydra/config.yaml"):
        assert (run_dir / name).exists(), name
    assert list((run_dir / "videos").glob("*.mp4")) and list((run_dir / "tb").glob("events.*"))
    frames = json.loads((run_dir / "summary.json").read_text())["frames"]
    assert frames == trained_run.step * 2 + 100 and f"eval @ {frames} frames" in proc.stdout


def test_eval_writes_episodes_and_gates(trained_run, tmp_path, capsys):
    run_dir = trained_run.run_dir
    out = tmp_path / "eval"
    proc = robotrl("eval", f"checkpoint={run_dir}", "episodes=2", f"out={out}", "device=cpu")
    assert proc.returncode == 0, proc.stderr
    lines = [json.loads(line) for line in (out / "episodes.jsonl").read_text().splitlines()]
    assert [r["seed"] for r in lines] == [1_000_000, 1_000_001]
    assert set(lines[0]) == {"seed", "return", "success", "length"}
    summary = json.loads((out / "summary.json").read_text())
    assert summary["eval_seeds"] == [1_000_000, 1_000_001] and summary["train_seed"] == 1 and "seed" not in summary
    assert f"wrote {out}/summary.json" in proc.stdout
    assert summary["return_mean"] == pytest.approx(np.mean([r["return"] for r in lines]))
    assert (out / "video.mp4").stat().st_size > 0
    # the gates: `robotrl eval`'s main() in this process (the console script's own process is the run above)
    code, _, err = run_main(capsys, "eval", f"checkpoint={run_dir}", "episodes=1", f"out={out}", "min_return=1e9",
                            "video=false")
    assert code == 1
    assert "below the gate: return_mean" in err and "< min_return 1e+09" in err
    again = json.loads((out / "episodes.jsonl").read_text().splitlines()[0])
    assert again == lines[0]  # same seed, same checkpoint: the same episode
    code, _, err = run_main(capsys, "eval", f"checkpoint={run_dir}", "episodes=1", f"out={out}", "min_success=0.5")
    assert code == 2 and "defines no success signal" in err


def test_plot_aggregates_seeds(tmp_path):
    runs = []
    for seed, scale in enumerate([1.0, 2.0, 3.0, 10.0]):
        run = tmp_path / f"s{seed}"
        run.mkdir()
        with open(run / "eval.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["frame", "episode_return", "elapsed"])
            w.writerows([[0, 0.0, 0.0], [100, scale * 10, 5.0]])
        run_info = {"config": {"seed": seed, "agent": {"name": "drqv2"}, "env": {"name": "x"}}}
        (run / "run.json").write_text(json.dumps(run_info))
        runs.append(str(run))
    proc = robotrl("plot", *runs, "--out", str(tmp_path / "c.png"), "--reps", "200")
    assert proc.returncode == 0, proc.stderr
    # IQM of {10, 20, 30, 100}: the middle two -> 25.
    assert "4 seeds, final IQM 25 " in proc.stdout and (tmp_path / "c.png").stat().st_size > 0


def test_plot_counts_repeated_seeds_as_runs(tmp_path):
    """Three runs of seed 1 are not "3 seeds"."""
    runs = []
    for i in range(3):
        run = tmp_path / f"r{i}"
        run.mkdir()
        (run / "eval.csv").write_text(f"frame,episode_return,elapsed\n0,0,0\n100,{i},5\n")
        (run / "run.json").write_text(json.dumps({"config": {"seed": 1, "agent": {"name": "a"}, "env": {"name": "x"}}}))
        runs.append(str(run))
    proc = robotrl("plot", *runs, "--out", str(tmp_path / "c.png"), "--reps", "0")
    assert proc.returncode == 0, proc.stderr
    assert "3 runs, 1 distinct seed (1, 1, 1)" in proc.stdout and "3 seeds" not in proc.stdout


def test_plot_train_metric_interpolates_seeds(tmp_path):
    """--source train: per-episode rows at different frames per seed are interpolated onto the first run's frames."""
    rows = {"a": [(0, 0.0), (100, 1.0), (200, 2.0)], "b": [(0, 0.0), (50, 1.0), (150, 3.0), (250, 5.0)]}
    runs = []
    for name, points in rows.items():
        run = tmp_path / name
        run.mkdir()
        with open(run / "train.csv", "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["frame", "actor_dormant_ratio", "elapsed"])
            w.writerows([[frame, value, frame / 10] for frame, value in points])
        (run / "run.json").write_text(json.dumps({"config": {"agent": {"name": "drm"}, "env": {"name": "x"}}}))
        runs.append(str(run))
    proc = robotrl("plot", *runs, "--source", "train", "--metric", "actor_dormant_ratio", "--reps", "0",
                   "--out", str(tmp_path / "d.png"))
    assert proc.returncode == 0, proc.stderr
    # run b at frame 200 is 4.0 by interpolation; the mean of two seeds (IQM trims nothing) is 3.
    assert "final IQM 3 [2, 4] at 200 frames" in proc.stdout and (tmp_path / "d.png").stat().st_size > 0
    missing = robotrl("plot", runs[0], "--source", "train", "--metric", "nope", "--out", str(tmp_path / "e.png"))
    assert missing.returncode == 2 and "has no 'nope' values" in missing.stderr


def test_envs_lists_all_suites():
    proc = robotrl("envs")
    names = proc.stdout.split()
    assert "dmc/cartpole_swingup" in names and "metaworld/reach" in names and "gym/humanoid" in names
    assert len([n for n in names if n.startswith("metaworld/")]) == 50


@pytest.mark.parametrize(("args", "message"), [
    (["train", "agent=nope"], "unknown agent 'nope'"),
    (["train", "env=dmc/cartpol_swingup"], "did you mean dmc/cartpole_swingup"),
    (["train", "reward=clipp"], "unknown reward 'clipp'"),
    (["train", "foo=1"], "unknown config key 'foo'"),
    (["eval", "checkpoint=/nonexistent/run"], "no checkpoint at /nonexistent/run"),
    (["eval", "episodes=ten", "checkpoint=x"], "episodes='ten', expected an integer"),
    (["eval", "episodes=0", "checkpoint=x"], "episodes=0, expected an integer >= 1"),
    (["eval", "min_return=nan", "checkpoint=x"], "min_return='nan', expected a number, not NaN"),
    (["eval", "seed=-5", "checkpoint=x"], "seed=-5, expected an integer >= 0"),
    (["eval", "min_success=1.5", "checkpoint=x"], "min_success=1.5, expected a success rate in [0, 1]"),
    (["fly"], "unknown command 'fly'"),
])
def test_bad_input_is_one_line(capsys, args, message):
    """In this process (each console-script start costs 2-4 s); the script itself: the test below."""
    code, _, err = run_main(capsys, *args)
    assert code == 2
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], err


@pytest.mark.parametrize(("args", "message"), [
    (["train", "agent=nope"], "unknown agent 'nope'"), (["eval", "episodes=0", "checkpoint=x"], "episodes=0"),
])
def test_the_console_script_says_bad_input_in_one_line_and_exits_2(args, message):
    proc = robotrl(*args)
    assert proc.returncode == 2
    lines = [line for line in proc.stderr.strip().splitlines() if line.strip()]
    assert len(lines) == 1 and message in lines[0], proc.stderr


def test_multirun_sweeps_seeds(tmp_path):
    proc = robotrl("train", "-m", *TINY_OVERRIDES, "frames=100", "eval_episodes=0", "seed=1,2", cwd=tmp_path)
    assert proc.returncode == 0, proc.stderr[-2000:]
    for seed in (1, 2):
        run = tmp_path / "runs" / "dmc" / "cartpole_balance" / "drqv2" / f"seed{seed}"
        assert (run / "checkpoints" / "latest").exists() and (run / "train.csv").exists()


def test_ctrl_c_keeps_the_last_checkpoint_and_resume_continues(trained_run):
    """SIGINT mid-run: exit 130 with a hint, the checkpoint on disk is complete, resume=true picks it up."""
    assert trained_run.returncode == 130, trained_run.stderr[-2000:]
    assert trained_run.command == f"robotrl train resume=true run_dir={trained_run.run_dir}", trained_run.stderr[-2000:]
    assert trained_run.step > 0
    assert trained_run.resumed.returncode == 0, trained_run.resumed.stderr[-2000:]
    assert "resumed from" in trained_run.resumed.stdout


def start_tiny_run(run_dir) -> tuple[subprocess.Popen, list[str]]:
    """A tiny `robotrl train` that checkpoints only at its end, started and waited for until it logs its first
    episode (training, no checkpoint yet): (the process, its overrides)."""
    import time

    overrides = [*TINY_OVERRIDES, "frames=100000", "checkpoint_every_frames=100000", f"run_dir={run_dir}"]
    proc = subprocess.Popen([sys.executable, "-m", "robotrl.cli", "train", *overrides], env=ENV,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    deadline = time.time() + 300
    while not (run_dir / "train.csv").exists() and time.time() < deadline and proc.poll() is None:
        time.sleep(0.5)
    return proc, overrides


@pytest.mark.slow  # ~18 s; test_ctrl_c_keeps_the_last_checkpoint_and_resume_continues runs the printed command
def test_ctrl_c_before_the_first_checkpoint_prints_the_same_command(tmp_path):
    """No checkpoint yet: the hint is the command that starts this run again (not a run_dir= with other settings)."""
    import signal

    run_dir = tmp_path / "run"
    proc, overrides = start_tiny_run(run_dir)
    proc.send_signal(signal.SIGINT)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    command = stderr.strip().splitlines()[-1].split("start this run again from scratch with: ")[1]
    assert shlex.split(command) == ["robotrl", "train", *overrides]


def test_sigterm_takes_the_ctrl_c_path(tmp_path):
    """SIGTERM (docker stop, systemd, a scheduler's kill) was Python's default: the process died at once, without
    the Ctrl-C path's hint, logs or (on an arm) the hold and disconnect. Now it is that path: exit 130 and the hint."""
    import signal

    run_dir = tmp_path / "run"
    proc, overrides = start_tiny_run(run_dir)
    proc.send_signal(signal.SIGTERM)
    _, stderr = proc.communicate(timeout=120)
    assert proc.returncode == 130, stderr[-2000:]
    assert "start this run again from scratch with: robotrl train" in stderr.strip().splitlines()[-1], stderr[-2000:]


def test_a_second_process_on_a_live_run_dir_is_refused_before_it_writes(tmp_path):
    """The same `robotrl train` started twice (two terminals, a requeued job while the old one still runs): the
    second used to start too, clear the first's logs (a start with no checkpoint begins its logs clean), rewrite its
    .hydra/ record and then checkpoint into the same dir. Now it stops in one line naming the live process."""
    import signal

    from robotrl.run_lock import check_free

    run_dir = tmp_path / "run"
    first, overrides = start_tiny_run(run_dir)
    try:
        saved = (run_dir / ".hydra" / "overrides.yaml").read_text()
        second = robotrl("train", *overrides)
        assert second.returncode == 2, second.stderr[-2000:]
        lines = [line for line in second.stderr.splitlines() if line.strip()]
        assert len(lines) == 1 and "is being written by another process" in lines[0], lines
        assert f"pid {first.pid}" in lines[0], lines
        assert (run_dir / "train.csv").exists() and (run_dir / ".hydra" / "overrides.yaml").read_text() == saved
    finally:
        first.send_signal(signal.SIGINT)
        first.communicate(timeout=120)
    assert first.returncode == 130
    check_free(run_dir, "run dir")  # the lock went with the process


def test_demos_command_writes_loadable_demos(tmp_path):
    from robotrl.demos import load_demos

    out = tmp_path / "demos"
    proc = robotrl("demos", "env=metaworld/reach", "episodes=1", "image_size=32", f"out={out}")
    assert proc.returncode == 0, proc.stderr[-2000:]
    (episode,) = load_demos(out)
    assert episode.obs["pixels"].shape[1:] == (3, 32, 32) and episode.success.any()
    wrong_suite = robotrl("demos", "env=dmc/cartpole_swingup")
    assert wrong_suite.returncode == 2 and "Meta-World" in wrong_suite.stderr


# ------------------------------------------------------------------------------------------------ --help, errors
def run_main(capsys, *args: str) -> tuple[int, str, str]:
    """``robotrl.cli.main`` in-process: (exit code, stdout, stderr)."""
    from robotrl.cli import main

    with pytest.raises(SystemExit) as info:
        main(list(args))
    out = capsys.readouterr()
    return info.value.code, out.out, out.err


@pytest.mark.parametrize(("command", "defaults"), [
    (["eval"], "EVAL_DEFAULTS"), (["demos"], "DEMO_DEFAULTS"), (["goals"], "GOALS_DEFAULTS"),
    (["goals", "generate"], "GOALS_DEFAULTS"), (["reward-eval"], "REPORT_DEFAULTS"),
])
@pytest.mark.parametrize("flag", ["--help", "-h"])
def test_key_value_commands_answer_help(capsys, command, defaults, flag):
    from robotrl.workflows import demos_command, evaluate, goals
    from robotrl.workflows.reward_eval import command as reward_eval

    keys = {"EVAL_DEFAULTS": evaluate.EVAL_DEFAULTS, "DEMO_DEFAULTS": demos_command.DEMO_DEFAULTS,
            "GOALS_DEFAULTS": goals.GOALS_DEFAULTS, "REPORT_DEFAULTS": reward_eval.REPORT_DEFAULTS}[defaults]
    code, out, err = run_main(capsys, *command, flag)
    assert code == 0 and not err
    assert out.startswith(f"usage: robotrl {command[0]}") and "examples:\n  robotrl " in out
    for key, value in keys.items():  # every key with its default, as it is typed on the command line
        shown = "null" if value is None else str(value).lower() if isinstance(value, bool) else str(value)
        assert f"  {key}={shown} " in out, key


def test_envs_and_plot_answer_help(capsys):
    code, out, _ = run_main(capsys, "envs", "--help")
    assert code == 0 and "usage: robotrl envs" in out and "robotrl envs metaworld" in out
    code, out, _ = run_main(capsys, "plot", "-h")
    assert code == 0 and "usage: robotrl plot" in out and "--metric" in out and "examples:\n  robotrl plot" in out


def test_train_help_lists_groups_choices_and_keys(capsys):
    code, out, err = run_main(capsys, "train", "--help")
    assert code == 0 and not err and "powered by Hydra" not in out
    groups = dict(line.split(None, 1) for line in out.split("groups (group=choice):\n")[1].split("\n\n")[0]
                  .splitlines())
    assert set(groups) == {"agent", "env", "reward", "robot", "teleop", "collector", "experiment"}
    assert "local, ray (default local)" in groups["collector"]
    assert "dmc/<task> (51), gym/<task> (11), metaworld/<task> (50); `robotrl envs` lists them" in groups["env"]
    assert "; libero (optional: env.benchmark, env.task" in groups["env"]
    assert "drm, drqv2, modem, modem_v2, mrq, sb3_ppo, sb3_sac, tdmpc2, vla (default drqv2)" in groups["agent"]
    assert "kagi" in groups["reward"] and "quickstart" in groups["experiment"]
    assert "gamepad, keyboard, none, scripted, so101_leader, spacemouse (default none)" in groups["teleop"]
    for key in ("seed=1", "torch_threads=auto", "frames=${env.frames}", "env.image_size=84", "replay.capacity=1000000",
                "resume=false", "env.obs_type=pixels"):
        assert f"  {key} " in out or f"  {key}\n" in out, key
    assert "examples:\n  robotrl train" in out and "-m/--multirun" in out


@pytest.mark.parametrize(("args", "message"), [
    (["foo=1"], "unknown config key 'foo'; valid keys at the top level: agent, checkpoint_every_frames"),
    (["env.imagesize=64"], "unknown config key 'env.imagesize'; did you mean env.image_size? valid keys under env: "
                           "action_repeat, camera"),
    (["agent=drm", "agent.batchsize=3"], "unknown config key 'agent.batchsize'; did you mean agent.batch_size?"),
    (["agent.batch_size=abc"], "agent.batch_size='abc', expected an integer (default 256)"),
    (["agent.lr=fast"], "agent.lr='fast', expected a number (default 0.0001)"),
    (["eval_at_start=1"], "eval_at_start=1, expected true or false (default true)"),
    (["-m", "seed=1,2,x"], "seed='x', expected an integer (default 1)"),
    (["env=metaworld/reach", "env.frames=lots"], "env.frames='lots', expected an integer"),
    (["a b=1"], "cannot parse the overrides"),
])
def test_train_config_errors_are_one_robotrl_line_exit_2(capsys, args, message):
    code, _, err = run_main(capsys, "train", *args)
    lines = [line for line in err.splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("robotrl: error: ") and message in lines[0], lines[0]


def test_valid_overrides_pass_the_check():
    from robotrl.overrides import check_overrides

    check_overrides(["agent=drm", "agent.lr=3e-4", "seed=1,2", "+foo=1", "env.camera=[corner2,corner3]",
                     "torch_threads=1", "agent.batch_size=128", "hydra.verbose=true", "~env.camera",
                     "env=metaworld/reach,metaworld/push", "agent.lr=1e-4,3e-4"])


def test_agent_constructor_errors_are_config_errors():
    """hydra wraps what a constructor raises (exit 1, multi-line); make_agent gives robotrl's one line instead."""
    import gymnasium as gym
    from robotrl.agents import make_agent

    from robotrl.errors import ConfigError
    from robotrl.overrides import compose_config

    obs = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (9, 32, 32), np.uint8)})
    act = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    cfg = compose_config(["+agent.foo=1"]).agent
    with pytest.raises(ConfigError, match="agent=drqv2: .*unexpected keyword argument 'foo'"):
        make_agent(cfg, obs, act, "cpu", "dmc/cartpole_swingup")


def test_an_output_path_that_cannot_be_written_is_one_line(capsys, tmp_path):
    """A file where a directory should be (or a read-only place): one line naming the path, exit 2, no traceback;
    before, every command that writes (train's run_dir, eval/demos/report out=, plot --out) raised a traceback."""
    run = tmp_path / "run"
    run.mkdir()
    (run / "eval.csv").write_text("frame,episode_return,elapsed\n0,0.0,0.0\n100,1.0,1.0\n")
    (run / "run.json").write_text(json.dumps({"config": {"seed": 1, "agent": {"name": "drqv2"}, "env": {"name": "x"}}}))
    blocker = tmp_path / "a_file"
    blocker.write_text("")
    code, _, err = run_main(capsys, "plot", str(run), "--out", str(blocker / "sub" / "c.png"))
    lines = [line for line in err.strip().splitlines() if line.strip()]
    assert code == 2 and len(lines) == 1, err
    assert lines[0].startswith("robotrl: error: Not a directory: ") and str(blocker) in lines[0], err


def test_plot_bad_flag_is_one_line(capsys):
    code, _, err = run_main(capsys, "plot", "--bogus", "runs/x")
    assert code == 2 and err.strip().startswith("robotrl: error: robotrl plot: unrecognized arguments: --bogus")


@pytest.mark.parametrize("args", [("--help",), ("envs", "--help"), ("fly",)])
def test_main_called_in_process_gives_back_the_callers_sigterm_handler(capsys, args):
    """``main`` turns SIGTERM into Ctrl-C while it runs; called from Python (a notebook, a test, a launcher) it must
    leave the caller's own handler installed when it returns, whatever way it returns."""
    import signal

    def callers_handler(signum, frame):
        raise AssertionError("not called here")

    previous = signal.signal(signal.SIGTERM, callers_handler)
    try:
        run_main(capsys, *args)
        assert signal.getsignal(signal.SIGTERM) is callers_handler
    finally:
        signal.signal(signal.SIGTERM, previous)
