"""Files a crash or a second process could damage. A JSON or YAML file cut short (or edited by hand) is one line naming
it, wherever robotrl reads one: a run's run.json/summary.json (report, plot), a LeRobotDataset's info.json (import), a
demo or record session's meta.json, a run's saved overrides (before, each was a decoder's traceback). A dir is written
by one process at a time (robotrl.run_lock)."""

from __future__ import annotations

import json

import pytest

from robotrl.errors import ConfigError, DemoFormatError
from robotrl.readers import read_json

CUT_SHORT = '{"config": {"seed": 1, "agent": '


def test_read_json_names_the_file_and_what_it_is(tmp_path):
    path = tmp_path / "x.json"
    with pytest.raises(ConfigError, match=rf"^{path}: run.json missing$"):
        read_json(path, ConfigError, "run.json")
    path.write_text(CUT_SHORT)
    with pytest.raises(DemoFormatError, match=rf"^{path}: demo metadata is not valid JSON \(Expecting value"):
        read_json(path, DemoFormatError, "demo metadata")
    path.write_bytes(b"\xff\xfe\x00")
    with pytest.raises(ConfigError, match="is not valid JSON"):
        read_json(path, ConfigError)
    path.write_text('{"a": [1, 2]}')
    assert read_json(path, ConfigError) == {"a": [1, 2]}


def _run(root, name, run_json):
    run = root / name
    run.mkdir(parents=True)
    (run / "eval.csv").write_text("frame,episode_return,elapsed\n0,0.0,0.0\n100,1.0,1.0\n")
    (run / "run.json").write_text(run_json)
    return run


@pytest.mark.parametrize("command", ["report", "plot"])
def test_report_and_plot_name_a_damaged_run_json(tmp_path, capsys, command):
    from robotrl.cli import main

    good = json.dumps({"config": {"seed": 1, "agent": {"name": "drqv2"}, "env": {"name": "x"}}})
    _run(tmp_path / "runs", "seed1", good)
    bad = _run(tmp_path / "runs", "seed2", CUT_SHORT)
    args = ([str(tmp_path / "runs"), f"out={tmp_path / 'report'}"] if command == "report"
            else [str(tmp_path / "runs" / "seed1"), str(bad), "--out", str(tmp_path / "c.png")])
    with pytest.raises(SystemExit) as exit_:
        main([command, *args])
    err = capsys.readouterr().err.strip().splitlines()
    assert exit_.value.code == 2 and len(err) == 1, err
    assert f"{bad / 'run.json'}: run.json is not valid JSON" in err[0]


def test_lerobot_import_names_a_damaged_info_json(tmp_path):
    from robotrl.lerobot_dataset import import_lerobot

    (tmp_path / "ds" / "meta").mkdir(parents=True)
    (tmp_path / "ds" / "meta" / "info.json").write_text('{"codebase_version": "v3.')
    with pytest.raises(DemoFormatError, match="info.json: LeRobotDataset info.json is not valid JSON"):
        import_lerobot(tmp_path / "ds", tmp_path / "out")


def test_a_damaged_saved_overrides_yaml_is_one_line(tmp_path):
    from robotrl.lifecycle import saved_overrides

    (tmp_path / ".hydra").mkdir()
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=1\n- 'env=dmc\n")  # cut short mid-write
    with pytest.raises(ConfigError, match=r"overrides.yaml: the run's saved overrides is not valid YAML"):
        saved_overrides(tmp_path)
    (tmp_path / ".hydra" / "overrides.yaml").write_text("- seed=1\n")
    assert saved_overrides(tmp_path) == ["seed=1"]


# ------------------------------------------------------------------------------------------ one writer per dir
def _hold_and_wait(path: str, ready) -> None:
    import time

    from robotrl.run_lock import hold

    hold(path, "record session")
    ready.set()
    time.sleep(120)


def test_a_dir_lock_names_its_holder_and_goes_with_a_killed_process(tmp_path):
    import multiprocessing as mp
    import os
    import signal

    from robotrl.errors import RunDirBusyError
    from robotrl.run_lock import LOCK_NAME, check_free, hold, release

    ctx = mp.get_context("spawn")
    ready = ctx.Event()
    child = ctx.Process(target=_hold_and_wait, args=(str(tmp_path / "d"), ready))
    child.start()
    try:
        assert ready.wait(120)
        for attempt in (check_free, hold):
            with pytest.raises(RunDirBusyError, match=rf"record session {tmp_path / 'd'} is being written by another "
                                                      rf"process \(pid {child.pid}: "):
                attempt(tmp_path / "d", "record session")
    finally:
        os.kill(child.pid, signal.SIGKILL)
        child.join(30)
    check_free(tmp_path / "d")  # the kernel dropped the killed holder's lock: nothing stale
    hold(tmp_path / "d")
    hold(tmp_path / "d")  # this process again: already held, not busy
    release(tmp_path / "d", remove=True)
    assert not (tmp_path / "d" / LOCK_NAME).exists()


def test_record_and_world_env_stages_refuse_a_dir_another_process_writes(tmp_path):
    import multiprocessing as mp
    import os
    import signal

    from robotrl.errors import RunDirBusyError
    from robotrl.workflows.record_session import Session
    from robotrl.workflows.worldenv.settings import load_config

    ctx = mp.get_context("spawn")
    children = []
    try:
        for name in ("session", "worldenv"):
            ready = ctx.Event()
            children.append(ctx.Process(target=_hold_and_wait, args=(str(tmp_path / name), ready)))
            children[-1].start()
            assert ready.wait(120)
        (tmp_path / "session" / "episode_000000.npz").write_bytes(b"a live writer's episode")
        with pytest.raises(RunDirBusyError, match="is being written by another process"):
            Session.open(tmp_path / "session", {}, resume=True)
        assert (tmp_path / "session" / "episode_000000.npz").exists()  # not cleaned away as a stray file
        with pytest.raises(RunDirBusyError, match=r"World-Env run .* is being written by another process"):
            load_config(tmp_path / "worldenv", [], "collect")
        assert not (tmp_path / "worldenv" / "config.yaml").exists()
    finally:
        for child in children:
            os.kill(child.pid, signal.SIGKILL)
            child.join(30)


def test_a_damaged_world_env_config_is_one_line(tmp_path):
    from robotrl.workflows.worldenv.settings import load_config

    (tmp_path / "config.yaml").write_text("tasks: [reach\nseed: 1\n")  # cut short mid-write or edited by hand
    with pytest.raises(ConfigError, match=rf"{tmp_path / 'config.yaml'}: the run's World-Env settings is not valid "
                                          r"YAML \(while parsing"):
        load_config(tmp_path, [], "collect")
