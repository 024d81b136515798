"""Bad input a user types, found by an audit of every command: one `robotrl: error:` line, exit 2, before any arm
connects or any output is written (each case used to be a traceback, silently accepted, or refused only after
the arm had run)."""

from __future__ import annotations

import pytest

from robotrl.cli import main
from robotrl.errors import ConfigError


def refused(argv: list[str], capsys) -> str:
    with pytest.raises(SystemExit) as stop:
        main(argv)
    err = capsys.readouterr().err.strip().splitlines()[-1]
    assert stop.value.code == 2 and err.startswith("robotrl: error:"), err
    return err


def test_an_unknown_device_name_is_one_line():
    from robotrl.config import resolve_device

    with pytest.raises(ConfigError, match=r"device='gpu', expected auto, cpu, cuda or cuda:N"):
        resolve_device("gpu")


@pytest.mark.parametrize("argv, needle", [
    (["replay", "episode=x.npz", "max_drift_m=abc"], "max_drift_m='abc', expected a finite number > 0"),
    (["replay", "episode=x.npz", "max_drift_m=inf"], "max_drift_m=inf, expected a finite number > 0"),
    (["sim2real", "checkpoint=nowhere", "robots=sim,mock", "steps=abc"], "steps='abc', expected an integer >= 1"),
    (["check-frame", "robot=sim", "distance_m=5"], "distance_m=5.0, expected at most 0.1 m"),
    (["check-frame", "robot=sim", "policy_home=0,0.6"], "policy_home='0,0.6', expected three finite numbers"),
])
def test_bad_values_are_refused_before_the_arm_connects(argv, needle, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert needle in refused(argv, capsys)


def test_output_paths_are_checked_before_the_work(tmp_path, capsys):
    a_file, a_dir = tmp_path / "afile", tmp_path / "adir"
    a_file.write_text("x")
    a_dir.mkdir()
    assert "is a directory; expected a file path" in refused(["check-frame", "robot=sim", f"out={a_dir}"], capsys)
    assert "is a directory; expected a file path" in refused(["replay", "episode=x.npz", f"out={a_dir}"], capsys)
    assert "is a file; expected the session's directory" in refused(
        ["record", "robot=sim", "teleop=scripted", "teleop.steps=[]", f"out={a_file}"], capsys)
    assert "holds no record session" in refused(
        ["record", "robot=sim", "teleop=scripted", "teleop.steps=[]", f"out={a_dir}", "resume=true"], capsys)
    (a_dir / "checkpoints").mkdir()  # a training run's directory
    assert "holds other files (checkpoints...)" in refused(
        ["record", "robot=sim", "teleop=scripted", "teleop.steps=[]", f"out={a_dir}"], capsys)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["adir", "afile"] and a_file.read_text() == "x"


def test_a_record_dir_that_cannot_be_a_session_is_refused_before_the_arm_is_built(tmp_path, capsys, monkeypatch):
    """Episode files without a meta.json were refused only once the arm was built and connected (Session.open)."""
    import robotrl.workflows.run_env as run_env

    monkeypatch.setattr(run_env, "make_robot_env", lambda *a, **k: pytest.fail("the arm was built"))
    record = ["record", "robot=sim", "teleop=scripted", "teleop.steps=[]", f"out={tmp_path}"]
    (tmp_path / "episode_000000.npz").write_bytes(b"")
    assert "holds episode files but no meta.json" in refused(record, capsys)
    (tmp_path / "meta.json").write_text("{}")
    assert "already holds a recording" in refused(record, capsys)


def test_writable_dir_and_file():
    from robotrl.atomic import writable_dir, writable_file

    with pytest.raises(ConfigError, match="out='/etc/passwd' is a file; expected a directory"):
        writable_dir("/etc/passwd", "out")
    with pytest.raises(ConfigError, match="/etc/passwd is a file, not a folder"):
        writable_file("/etc/passwd/report.json", "out")


def test_a_numeric_option_without_a_default_is_read_as_a_number():
    """Options whose default is null arrive as text; their range check read every value as "not a number"."""
    from robotrl.cli import command, parse

    assert parse(command("replay"), ["episode=x.npz", "max_drift_m=0.002"]).opts["max_drift_m"] == 0.002
    assert parse(command("sim2real"), ["checkpoint=c", "steps=5"]).opts["steps"] == 5


def test_a_watchdog_that_never_fires_and_infinite_faults_are_refused():
    """robot.limits.watchdog_ms=1e9 (11 days: the watchdog off) and robot.faults.latency_ms=inf were accepted."""
    from robotrl.hardware import make_robot

    from tests.test_hardware import robot_cfg

    with pytest.raises(ConfigError, match=r"robot.limits.watchdog_ms=1e\+09, expected at most 10000 ms"):
        make_robot(robot_cfg("mock", limits={"watchdog_ms": 1e9}))
    with pytest.raises(ConfigError, match=r"robot.faults.latency_ms=inf, expected a finite number >= 0"):
        make_robot(robot_cfg("mock", faults={"latency_ms": float("inf")}))
