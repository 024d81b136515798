"""`robotrl record` and `robotrl replay` on robot=sim with a scripted teleop device (hardware/teleop/scripted.py):
episodes in the demo format through the safety layer, labels, discard / re-record, Ctrl-C + resume, the
LeRobotDataset v3 round trip, the live view, and a replay's proprioception drift."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest

from robotrl.cli import main
from robotrl.demos import load_demos

# robot=sim at 100 Hz with generous watchdog/driver bounds: the test machine is shared (see test_robot_env.FAST)
FAST = ["robot.limits.control_hz=100", "robot.limits.ee_max_velocity=1.0", "robot.limits.ee_max_acceleration=200.0",
        "robot.limits.watchdog_ms=2000", "robot.limits.driver_timeout_ms=5000",
        "robot.limits.max_consecutive_overruns=1000"]
ENV = ["env.image_size=32", "env.frame_stack=2", "env.action_repeat=2"]
X, Y, Z = [0.005, 0, 0], [0, -0.005, 0], [0, 0, 0.004]


def run(*args: str) -> int:
    with pytest.raises(SystemExit) as exit_:
        main(list(args))
    return int(exit_.value.code or 0)


def record(tmp_path: Path, name: str, steps: list[dict], *extra: str) -> int:
    script = tmp_path / f"{name}.json"
    script.write_text(json.dumps(steps))
    return run("record", "robot=sim", "teleop=scripted", f"teleop.script={script}", "reset_s=0", "steps=20",
               *FAST, *ENV, *extra)


def test_record_labels_discard_and_lerobot_round_trip(tmp_path, capsys):
    """Two kept episodes (a success, a failure), one discarded and one re-recorded between them: the session holds
    exactly the kept ones, each with frames, proprioception, commanded and executed actions, flags and labels, and
    they come back through LeRobotDataset v3 unchanged (frames within the codec's error)."""
    from robotrl.lerobot_dataset import import_lerobot

    out = tmp_path / "session"
    steps = [{"delta_m": X, "repeat": 5}, {"events": ["success"]},
             {"delta_m": Z, "repeat": 2}, {"events": ["discard"]},
             {"delta_m": [0, 0, 0.03], "repeat": 1}, {"events": ["rerecord"]},
             {"delta_m": Y, "gripper": 1.0, "repeat": 4}, {"delta_m": [0.03, 0, 0], "gripper": 1.0},
             {"events": ["failure"]}]
    assert record(tmp_path, "s", steps, "episodes=2", f"out={out}", 'task=reach the goal') == 0
    printed = capsys.readouterr().out
    summary = json.loads(printed[printed.index("{"):])
    assert summary["kept"] == 2 and summary["discarded"] == 1 and summary["rerecorded"] == 1
    assert summary["labels"] == {"success": 1, "failure": 1}
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_episodes"] == 2 and meta["episode_labels"] == ["success", "failure"]
    assert meta["episode_lengths"] == [5, 5] and meta["task"] == "reach the goal" and meta["robot"] == "sim"
    names = sorted(p.name for p in out.iterdir())
    assert names == ["episode_000000.npz", "episode_000001.npz", "lerobot", "meta.json"], names  # no trace of drops
    eps = load_demos(out)
    raw = [np.load(out / f"episode_{i:06d}.npz") for i in range(2)]
    # episode 0: +x at 0.5 units, labelled a success at its last step; every step driven by the person
    np.testing.assert_allclose(raw[0]["commanded_action"][:, :3], np.tile([0.5, 0, 0], (5, 1)), atol=1e-6)
    np.testing.assert_allclose(eps[0].action[:, :3], np.tile([0.5, 0, 0], (5, 1)), atol=1e-6)
    assert eps[0].success.tolist() == [False] * 4 + [True] and raw[0]["intervention"].all()
    moved = eps[0].obs["state"][-1, :3] - eps[0].obs["state"][0, :3]
    assert 0.02 < moved[0] < 0.06 and abs(moved[1]) < 0.01, moved  # 5 steps x 2 sends x 5 mm, tracking lag
    assert eps[0].obs["pixels"].shape == (6, 3, 32, 32) and "env_success" in raw[0].files
    # episode 1 is the failure one, not the discarded/re-recorded ones: -y with the gripper closed, then a 3-unit
    # command: commanded as given, executed as the env's [-1, 1] and the safety layer let it through
    assert not eps[1].success.any()
    np.testing.assert_allclose(raw[1]["commanded_action"][4], [3.0, 0, 0, 1.0], atol=1e-6)
    np.testing.assert_allclose(eps[1].action[4], [1.0, 0, 0, 1.0], atol=1e-6)
    np.testing.assert_allclose(eps[1].action[:4, :3], np.tile([0, -0.5, 0], (4, 1)), atol=1e-6)
    # LeRobotDataset v3 and back
    back = import_lerobot(out / "lerobot", tmp_path / "imported")
    info = json.loads((out / "lerobot" / "meta" / "info.json").read_text())
    assert info["total_episodes"] == 2 and info["fps"] == 50  # 100 Hz / action_repeat 2
    for ours, theirs in zip(eps, load_demos(back), strict=True):
        np.testing.assert_array_equal(ours.action, theirs.action)
        np.testing.assert_array_equal(ours.obs["state"], theirs.obs["state"])
        np.testing.assert_array_equal(ours.success, theirs.success)
        assert np.abs(ours.obs["pixels"].astype(int) - theirs.obs["pixels"]).mean() < 6
    for i in range(2):  # the flags and the device's commands (before the safety layer's clips) come back too
        imported = np.load(back / f"episode_{i:06d}.npz")
        np.testing.assert_array_equal(imported["intervention"], raw[i]["intervention"])
        np.testing.assert_array_equal(imported["commanded_action"], raw[i]["commanded_action"])
    assert info["features"]["action.commanded"]["shape"] == [4]


def test_ctrl_c_keeps_completed_episodes_and_resume_continues(tmp_path, capsys):
    out = tmp_path / "session"
    first = [{"delta_m": X, "repeat": 3}, {"events": ["success"]},
             {"delta_m": Z, "repeat": 2}, {"interrupt": True}]
    assert record(tmp_path, "a", first, "episodes=3", f"out={out}") == 130
    assert "1 episode(s) kept" in capsys.readouterr().err
    assert sorted(p.name for p in out.iterdir()) == ["episode_000000.npz", "meta.json"]  # no half episode, no export
    kept = (out / "episode_000000.npz").read_bytes()
    # without resume=true an existing session is not overwritten
    assert record(tmp_path, "b", first, "episodes=3", f"out={out}") == 2
    assert "resume=true continues it" in capsys.readouterr().err
    # resume=true with other settings is refused, naming the difference
    assert record(tmp_path, "c", first, "episodes=3", f"out={out}", "resume=true", "env.image_size=40") == 2
    assert "env.image_size=32" in capsys.readouterr().err
    # nor another instruction (the export labels every episode with the session's) or control rate
    assert record(tmp_path, "c", first, "episodes=3", f"out={out}", "resume=true", "task=open the drawer") == 2
    assert "was recorded with task=" in capsys.readouterr().err
    assert record(tmp_path, "c", first, "episodes=3", f"out={out}", "resume=true", "robot.limits.control_hz=50") == 2
    assert "robot.limits.control_hz=100" in capsys.readouterr().err
    second = [{"delta_m": Y, "repeat": 2}, {"events": ["failure"]}, {"delta_m": Z, "repeat": 3},
              {"events": ["success"]}]
    assert record(tmp_path, "d", second, "episodes=3", f"out={out}", "resume=true", "export=none") == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["num_episodes"] == 3 and meta["episode_labels"] == ["success", "failure", "success"]
    assert meta["episode_lengths"] == [3, 2, 3] and meta["episode_seeds"] == [0, 1, 2]
    assert (out / "episode_000000.npz").read_bytes() == kept and not (out / "lerobot").exists()
    assert len(load_demos(out)) == 3


def test_resume_drops_what_an_unfinished_write_left(tmp_path):
    """A process killed after an episode's npz but before meta.json (or mid-write) leaves files meta does not count:
    resume removes them and numbers on from meta."""
    out = tmp_path / "session"
    assert record(tmp_path, "a", [{"delta_m": X, "repeat": 2}, {"events": ["success"]}], "episodes=1",
                  f"out={out}", "export=none") == 0
    (out / "episode_000001.npz").write_bytes(b"half")
    (out / ".episode_000001.npz.abc.tmp").write_bytes(b"half")
    assert record(tmp_path, "b", [{"delta_m": Z, "repeat": 2}, {"events": ["failure"]}], "episodes=2",
                  f"out={out}", "resume=true", "export=none") == 0
    assert sorted(p.name for p in out.iterdir()) == ["episode_000000.npz", "episode_000001.npz", "meta.json"]
    assert [len(e.action) for e in load_demos(out)] == [2, 2]


def test_replay_reproduces_the_recorded_proprioception(tmp_path, capsys):
    out = tmp_path / "session"
    steps = [{"delta_m": X, "repeat": 4}, {"delta_m": Z, "gripper": 1.0, "repeat": 3}, {"delta_m": Y, "repeat": 3},
             {"events": ["success"]}]
    assert record(tmp_path, "a", steps, "episodes=1", f"out={out}", "export=none") == 0
    capsys.readouterr()
    episode = out / "episode_000000.npz"
    assert run("replay", f"episode={episode}", "robot=sim", *FAST, "max_drift_m=0.002") == 0
    report = json.loads(capsys.readouterr().out)
    assert report["steps"] == 10 and report["hand_drift_max_m"] < 1e-4 and report["safety_stop"] is None  # 0.0 measured
    # the check can fail: an episode whose actions were changed no longer matches its recorded proprioception
    arrays = dict(np.load(episode))
    np.save(tmp_path / "kept.npy", arrays["action"])
    arrays["action"][:, :3] = 0.0
    np.savez_compressed(episode, **arrays)
    assert run("replay", f"episode={episode}", "robot=sim", *FAST, "max_drift_m=0.002") == 1
    assert "drifted" in capsys.readouterr().err
    # nor does a replay a safety stop cut short pass it on the steps it made (a box it may not leave, and reject)
    np.savez_compressed(episode, **{**arrays, "action": np.asarray(np.load(tmp_path / "kept.npy"))})
    assert run("replay", f"episode={episode}", "robot=sim", *FAST, "max_drift_m=0.002", "robot.limits.on_limit=reject",
               "robot.limits.ee_max_step=0.002") == 1
    err = capsys.readouterr().err
    assert "replay stopped at step 1 of 10" in err and "checks the whole episode" in err, err


def test_reset_phase_waits_for_the_device_or_the_timeout():
    import time

    from robotrl.hardware.teleop.scripted import ScriptedTeleop, parse_steps

    from robotrl.workflows.record import wait_for_start

    silent = ScriptedTeleop(parse_steps([{"repeat": 1000}]))
    t0 = time.monotonic()
    assert wait_for_start(silent, 0.05, 0.01) == "timeout" and time.monotonic() - t0 >= 0.05
    assert silent.polls >= 2
    toggled = ScriptedTeleop(parse_steps([{}, {}, {"gripper": 1.0}, {"delta_m": X}]))
    assert wait_for_start(toggled, 60.0, 0.001) == "device" and toggled.polls == 3
    pressed = ScriptedTeleop(parse_steps([{}, {}, {"events": ["take_over"]}, {"delta_m": X}]))
    assert wait_for_start(pressed, 60.0, 0.001) == "device" and pressed.polls == 3  # the start poll is consumed
    moved = ScriptedTeleop(parse_steps([{}, {"delta_m": X}]))
    assert wait_for_start(moved, 60.0, 0.001) == "device" and moved.polls == 2


def test_bad_scripts_and_devices_are_one_line_errors(tmp_path, capsys):
    from robotrl.hardware.teleop.scripted import parse_steps

    from robotrl.errors import ConfigError

    with pytest.raises(ConfigError, match="'sucess' is not an event"):
        parse_steps([{"events": ["sucess"]}])
    with pytest.raises(ConfigError, match=r"delta_m=\[1, 2\]: expected three numbers"):
        parse_steps([{"delta_m": [1, 2]}])
    with pytest.raises(ConfigError, match="unknown key 'gripr'"):
        parse_steps([{"gripr": 1}])
    assert run("record", "robot=sim", "teleop=none", f"out={tmp_path / 'x'}", "export=none") == 2
    assert "teleop=none gives no actions" in capsys.readouterr().err
    assert run("record", "robot=sim", "teleop=scripted", "export=none") == 2
    assert "needs out=DIR" in capsys.readouterr().err
    assert run("replay", f"episode={tmp_path / 'nope.npz'}") == 2
    assert "episode_NNNNNN.npz" in capsys.readouterr().err
    session = tmp_path / "damaged"  # a meta.json cut short by a crash: one line, not a JSONDecodeError traceback
    session.mkdir()
    (session / "episode_000000.npz").write_bytes(b"PK")
    (session / "meta.json").write_text('{"format_version": ')
    assert run("replay", f"episode={session / 'episode_000000.npz'}", "robot=sim") == 2
    assert f"{session / 'meta.json'}: demo metadata is not valid JSON" in capsys.readouterr().err
    assert run("record", "--help") == 0 and "resume=true" in capsys.readouterr().out
    assert run("replay", "--help") == 0 and "max_drift_m" in capsys.readouterr().out


def test_live_view_logs_each_step(tmp_path):
    pytest.importorskip("rerun")
    from robotrl.live_view import read_rrd

    rrd = tmp_path / "record.rrd"
    steps = [{"delta_m": X, "repeat": 3}, {"events": ["success"]}]
    assert record(tmp_path, "a", steps, "episodes=1", f"out={tmp_path / 's'}", "export=none",
                  f"live_view={rrd}") == 0
    logged = read_rrd(rrd)
    assert len(logged["camera/corner2"]) == 3 and len(logged["action/executed"]) == 3
    assert len(logged["intervention"]) == 3 and len(logged["label"]) == 1


def test_a_safety_stop_ends_the_episode_unlabelled_and_keeps_it(tmp_path):
    """Pushing the hand up into the workspace box with robot.limits.on_limit=reject: the safety layer refuses the
    command and holds the arm, the episode ends there, and it is kept unlabelled with the reason."""
    out = tmp_path / "session"
    assert record(tmp_path, "a", [{"delta_m": [0, 0, 0.01], "repeat": 40}], "episodes=1", f"out={out}",
                  "export=none", "robot.limits.on_limit=reject") == 0
    meta = json.loads((out / "meta.json").read_text())
    assert meta["episode_labels"] == [None] and "workspace" in meta["episode_stops"][0], meta["episode_stops"]
    assert 3 <= meta["episode_lengths"][0] < 20
    ep = load_demos(out)[0]
    assert not ep.success.any() and ep.obs["state"][-1, 2] - ep.obs["state"][0, 2] > 0.05  # it went up


def test_a_lost_device_keeps_the_completed_episodes(tmp_path):
    """A teleop device lost mid-episode (TeleopError): one error, the arm held and disconnected, the episodes
    completed before it still load, and nothing of the one in progress is written."""
    from robotrl.hardware.teleop import TeleopError
    from robotrl.hardware.teleop.scripted import ScriptedTeleop, parse_steps

    from robotrl.workflows.record import record as run_record

    class Unplugged(ScriptedTeleop):
        def poll(self, state=None):
            if self.polls == 6:
                raise TeleopError("scripted", "unplugged")
            return super().poll(state)

    device = Unplugged(parse_steps([{"delta_m": X, "repeat": 3}, {"events": ["success"]}, {"delta_m": Z}]))
    out = tmp_path / "session"
    overrides = {"robot": dict(a.split("=", 1) for a in (x.removeprefix("robot.") for x in FAST)),
                 "env": dict(a.removeprefix("env.").split("=", 1) for a in ENV)}
    with pytest.raises(TeleopError, match="unplugged"):
        run_record(robot="sim", teleop="scripted", episodes=3, steps=20, reset_s=0, out=str(out), export="none",
                   overrides=overrides, device=device)
    assert sorted(p.name for p in out.iterdir()) == ["episode_000000.npz", "meta.json"]
    assert [len(e.action) for e in load_demos(out)] == [3]


def test_record_with_the_keyboard_on_a_terminal(tmp_path):
    """`robotrl record teleop=keyboard` on a real pseudo-terminal, as a person types: a key ends the reset phase,
    `w` drives +x through the safety layer, `y` labels the episode a success and ends the session."""
    import os
    import subprocess
    import sys
    import threading

    master, slave = os.openpty()
    out = tmp_path / "session"
    env = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}
    proc = subprocess.Popen(
        [sys.executable, "-m", "robotrl.cli", "record", "robot=sim", "teleop=keyboard",
         f"teleop.device={os.ttyname(slave)}", "episodes=1", "steps=300", "reset_s=120", f"out={out}", "export=none",
         *FAST, *ENV], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    killer = threading.Timer(240, proc.kill)  # a hung run fails the test instead of hanging it
    killer.start()
    try:
        def wait_for(text: str) -> None:
            for line in proc.stdout:
                if text in line:
                    return
            raise AssertionError(f"{text!r} never printed; stderr: {proc.stderr.read()[-2000:]}")

        wait_for("episode 0: reset")
        os.write(master, b"w")  # moving the device ends the reset phase (that poll itself moves nothing)
        wait_for("episode 0: recording")
        for _ in range(5):
            os.write(master, b"w")
            threading.Event().wait(0.05)
        threading.Event().wait(0.3)
        os.write(master, b"y")
        _, err = proc.communicate(timeout=200)
    finally:
        killer.cancel()
        os.close(master)
        os.close(slave)
    assert proc.returncode == 0, err[-2000:]
    meta = json.loads((out / "meta.json").read_text())
    assert meta["episode_labels"] == ["success"] and meta["teleop"] == "keyboard"
    ep = np.load(out / "episode_000000.npz")
    assert ep["intervention"].all() and ep["success"][-1]
    assert np.isclose(ep["action"][:, 0].max(), 0.5, atol=1e-5)  # w: +x at the keyboard's 5 mm per control step
    assert (ep["action"][:, 3] == -1.0).all()  # the gripper stayed open (g never pressed)


class _RecordedEpisode:
    """What Session.write reads of an episode buffer: its length and its arrays (here: an episode on disk)."""

    def __init__(self, arrays: dict[str, np.ndarray]) -> None:
        self._arrays = arrays

    def __len__(self) -> int:
        return len(self._arrays["action"])

    def arrays(self, label):
        return dict(self._arrays)


@pytest.mark.skipif(not hasattr(__import__("os"), "fork"), reason="needs os.fork")
def test_sigkill_at_every_line_of_an_episode_write_keeps_the_session_whole(tmp_path):
    """The session's crash-safety claim (npz, then meta.json, both atomic; meta authoritative), held by killing a
    writer at every traced line of ``Session.write`` and its atomic writes (and at random lines inside the npz's
    zip writing): reopened with resume=true, the session holds the kept episode and the new one whole, or only the
    kept one, and nothing else."""
    import os
    import random
    import signal
    import sys

    from robotrl.run_lock import LOCK_NAME, release
    from robotrl.workflows.record_session import Session
    from tests.test_checkpoint_faults import _wait_killed

    out = tmp_path / "session"
    assert record(tmp_path, "a", [{"delta_m": X, "repeat": 3}, {"events": ["success"]}], "episodes=1",
                  f"out={out}", "export=none") == 0
    meta = json.loads((out / "meta.json").read_text())
    with np.load(out / "episode_000000.npz") as f:
        episode = _RecordedEpisode({k: f[k] for k in f.files})
    files = ("workflows/record_session.py", "robotrl/atomic.py", "zipfile", "numpy/lib")

    def tracer(limit, counted, own_lines):
        def local(frame, event, arg):
            if event == "line":
                counted[0] += 1
                if any(p in frame.f_code.co_filename for p in files[:2]):
                    own_lines.append(counted[0])
                if counted[0] == limit:
                    os.kill(os.getpid(), signal.SIGKILL)
            return local
        return lambda frame, event, arg: local if any(p in frame.f_code.co_filename for p in files) else None

    def write(kill_at=None, counted=None, own_lines=None):
        session = Session.open(out, meta, resume=True)
        sys.settrace(tracer(kill_at, counted or [0], own_lines if own_lines is not None else []))
        try:
            session.write(episode, "failure", 7, None)
        finally:
            sys.settrace(None)

    counted, own_lines = [0], []
    snapshot = {p.name: p.read_bytes() for p in out.iterdir() if p.is_file()}
    write(None, counted, own_lines)  # a whole write here: how many kill points it has
    rng = random.Random(7)  # every line of the write and its atomic writes, and 20 inside numpy's zip writing
    points = sorted({*own_lines, *rng.sample(range(1, counted[0] + 1), 20), counted[0]})
    outcomes = []
    for kill_at in points:
        for p in out.iterdir():
            if p.is_file() and p.name not in snapshot:
                p.unlink()
        for name, data in snapshot.items():
            (out / name).write_bytes(data)
        pid = os.fork()
        if pid == 0:
            code = 0
            try:
                write(kill_at)
            except BaseException:  # noqa: BLE001 -- reported through the exit code
                code = 3
            finally:
                os._exit(code)
        killed = _wait_killed(pid)
        Session.open(out, meta, resume=True)  # cleans what the killed writer left
        kept = load_demos(out)
        assert len(kept) in (1, 2) and len(kept) == json.loads((out / "meta.json").read_text())["num_episodes"]
        on_disk = sorted(p.name for p in out.iterdir() if p.name != LOCK_NAME)
        assert on_disk == [f"episode_{i:06d}.npz" for i in range(len(kept))] + ["meta.json"], on_disk
        if len(kept) == 2:
            assert np.array_equal(kept[1].action, kept[0].action)
        assert killed or len(kept) == 2
        outcomes.append(len(kept))
    release(out)
    assert {1, 2} <= set(outcomes), outcomes  # kills before and after the write became an episode
    print(f"{counted[0]} kill points, {len(points)} tried; episodes after each: {outcomes}")


def test_export_never_replaces_what_robotrl_did_not_export(tmp_path, capsys):
    """export=DIR replaced whatever was at DIR (shutil.rmtree): a folder of the user's, or the session itself."""
    out = tmp_path / "session"
    theirs = tmp_path / "theirs"
    theirs.mkdir()
    (theirs / "notes.txt").write_text("keep me")
    steps = [{"delta_m": X, "repeat": 2}, {"events": ["success"]}]
    for export, needle in ((theirs, "is not a LeRobotDataset robotrl exported"), (out, "is the session"),
                           (tmp_path, "or holds it")):
        assert record(tmp_path, "a", steps, "episodes=1", f"out={out}", f"export={export}") == 2
        assert needle in capsys.readouterr().err
    assert (theirs / "notes.txt").read_text() == "keep me" and not out.exists()  # refused before anything ran


@pytest.mark.parametrize("teleop, mode", [("gamepad", "hold"), ("keyboard", "always"), ("spacemouse", "always")])
def test_record_keeps_a_dead_man_button(teleop, mode, monkeypatch):
    """record made every device drive every step (intervention=always), the gamepad too: its RB dead-man switch no
    longer stopped the arm when released, and a dropped pad with a stick deflected kept the arm moving."""
    import robotrl.hardware.teleop as teleop_pkg

    from robotrl.workflows.record import _make_device

    built = {}
    monkeypatch.setattr(teleop_pkg, "make_teleop", lambda cfg: built.update(cfg) or object())
    _make_device(teleop, {})
    assert built["intervention"] == mode


def test_a_device_not_in_control_sends_hold(tmp_path):
    """A released dead-man button (or any poll not in control) must not move the arm: the step sends hold."""
    out = tmp_path / "session"
    steps = [{"delta_m": X, "repeat": 2}, {"delta_m": X, "intervening": False, "repeat": 2}, {"events": ["success"]}]
    assert record(tmp_path, "a", steps, "episodes=1", f"out={out}", "export=none") == 0
    with np.load(out / "episode_000000.npz") as ep:
        action, intervention = ep["action"], ep["intervention"]
    assert intervention[:2].all() and not intervention[2:4].any()
    assert (action[:2, 0] > 0).all() and np.allclose(action[2:4, :3], 0.0)  # what reached the arm: no new motion


def test_an_episode_starts_from_the_scene_after_the_reset_phase(tmp_path):
    """The first stored frame came from the reset, taken before the reset phase's wait (up to reset_s: the scene
    before the person set it up), so the episode's first step spanned the whole wait."""
    out = tmp_path / "session"
    idle = [{"delta_m": [0, 0, 0], "repeat": 100}]  # nothing happens: the wait ends at reset_s
    steps = [*idle, {"delta_m": X, "repeat": 3}, {"events": ["success"]}]
    script = tmp_path / "wait.json"
    script.write_text(json.dumps(steps))
    assert run("record", "robot=sim", "teleop=scripted", f"teleop.script={script}", "reset_s=0.5", "steps=20",
               *FAST, *ENV, "episodes=1", f"out={out}", "export=none") == 0
    with np.load(out / "episode_000000.npz") as ep:
        times = ep["frame_time"][:, 0]
    gaps = np.diff(times)
    assert gaps.max() < 0.25, gaps  # one agent step apart (2 sends at 100 Hz), not the 0.5 s wait


def test_a_sigint_while_the_arm_moves_holds_and_disconnects_it(tmp_path, monkeypatch):
    """Ctrl-C as a real SIGINT at whatever point of the loop it lands (the other Ctrl-C tests raise it from the
    device's poll, between steps): exit 130, and the arm's last events are the controlled stop and the disconnect."""
    import os
    import signal
    import threading
    import time

    from robotrl.hardware.robot import RobotState

    import robotrl.workflows.run_env as run_env

    built, make = [], run_env.make_robot_env
    monkeypatch.setattr(run_env, "make_robot_env", lambda *a, **k: built.append(make(*a, **k)) or built[-1])
    out = tmp_path / "session"
    moves = [{"delta_m": X, "repeat": 10}, {"delta_m": [-0.005, 0, 0], "repeat": 10}] * 20
    def ctrl_c_once_moving():
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline and not (built and built[0].robot.steps >= 20):  # mid-episode, sending
            time.sleep(0.005)
        os.kill(os.getpid(), signal.SIGINT)

    # a user's process starts with Python's own SIGINT handler; an earlier test in the same process may have left
    # another one installed (in the full suite the signal was swallowed and the episode ran on)
    previous = signal.signal(signal.SIGINT, signal.default_int_handler)
    try:
        threading.Thread(target=ctrl_c_once_moving, daemon=True).start()
        code = record(tmp_path, "a", moves, "episodes=1", "steps=400", f"out={out}", "export=none")
    finally:
        signal.signal(signal.SIGINT, previous)
    assert code == 130
    arm = built[0].robot
    assert [e["kind"] for e in arm.events][-2:] == ["stop", "disconnect"], [e["kind"] for e in arm.events][-6:]
    assert arm.inner.state is RobotState.DISCONNECTED
