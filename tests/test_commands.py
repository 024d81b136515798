"""The command registry: each workflow exports its ``COMMAND`` (options with defaults and docs in one place),
``robotrl.cli`` holds no state, renders every help with one function and parses every ``key=value`` command with one
parser."""

from __future__ import annotations

import ast
import importlib
from pathlib import Path
from types import MappingProxyType

import pytest

from robotrl.commands import Args, Command, Option
from robotrl.errors import ConfigError

CLI = Path(__file__).resolve().parents[1] / "robotrl" / "cli.py"
NAMES = ("train", "eval", "envs", "plot", "report", "demos", "goals", "reward-eval", "deploy", "serve", "sim2real",
         "check-frame", "record", "replay", "worldenv")


def test_every_command_is_exported_by_its_workflow():
    from robotrl import cli

    assert tuple(cli.REGISTRY) == NAMES
    for name, module in cli.REGISTRY.items():
        assert module.startswith("robotrl.workflows."), module
        cmd = importlib.import_module(module).COMMAND
        assert isinstance(cmd, Command) and cmd.name == name and cmd.summary and cmd.run
        text = cli.render_help(cmd)
        assert text.startswith(f"usage: robotrl {name}"), text[:80]
        for key, option in cmd.options.items():  # every key with its default and its doc
            assert option.doc.strip(), f"{name}: {key} has no doc"
            assert f"  {key}={cli.shown(option.default)} " in text, f"{name}: {key}"


def test_cli_holds_no_module_level_state():
    """No ``global`` anywhere, and every module-level name of cli.py is a function, a module, a class or an immutable
    value (the registry is a read-only mapping)."""
    from robotrl import cli

    tree = ast.parse(CLI.read_text())
    assert not [n for n in ast.walk(tree) if isinstance(n, ast.Global | ast.Nonlocal)]
    names = [t.id for node in tree.body if isinstance(node, ast.Assign | ast.AnnAssign)
             for t in (node.targets if isinstance(node, ast.Assign) else [node.target]) if isinstance(t, ast.Name)]
    immutable = (str, int, float, tuple, frozenset, type(None), MappingProxyType)
    mutable = {n: type(getattr(cli, n)).__name__ for n in names if not isinstance(getattr(cli, n), immutable)}
    assert not mutable, mutable


def test_cli_is_a_registry_not_a_home_for_options():
    text = CLI.read_text()
    assert len(text.splitlines()) < 450
    assert "argparse" not in text and "_DEFAULTS" not in text and "_DOCS" not in text


# ------------------------------------------------------------------------------------------------ the one parser
def _cmd(**fields) -> Command:
    base = {"name": "x", "summary": "s", "usage": "robotrl x", "about": "a", "run": lambda args: 0,
            "options": {"n": Option(1, "a number"), "out": Option(None, "a path"), "flag": Option(False, "a bool")}}
    return Command(**{**base, **fields})


def test_parser_types_options_and_sets_aside_prefixed_arguments():
    from robotrl.cli import parse

    args = parse(_cmd(prefixes=("robot.",)), ["n=3", "robot.hostname=h", "flag=true", "robot.cameras=[a]"])
    assert args == Args({"n": 3, "out": None, "flag": True}, ["robot.hostname=h", "robot.cameras=[a]"], [],
                        ["n=3", "robot.hostname=h", "flag=true", "robot.cameras=[a]"])
    assert args.group("robot") == {"hostname": "h", "cameras": "[a]"} and args.group("teleop") == {}
    assert parse(_cmd(prefixes=("*",)), ["franka.hostname=h", "n=2"]).extra == ["franka.hostname=h"]
    with pytest.raises(ConfigError, match=r"unexpected argument 'robot.x=1'; expected key=value with key in n, out"):
        parse(_cmd(), ["robot.x=1"])
    with pytest.raises(ConfigError, match=r"n='many', expected an integer"):
        parse(_cmd(), ["n=many"])


def test_parser_positional_commands_take_flags_and_need_their_arguments():
    from robotrl.cli import parse

    cmd = _cmd(positional="RUN_DIR...")
    args = parse(cmd, ["runs/a", "--n", "4", "runs/b", "--out=o.png", "flag=true"])
    assert args.positional == ["runs/a", "runs/b"] and args.opts == {"n": 4, "out": "o.png", "flag": True}
    with pytest.raises(ConfigError, match="robotrl x: unrecognized arguments: --bogus"):
        parse(cmd, ["--bogus", "runs/a"])
    with pytest.raises(ConfigError, match="robotrl x: argument --n: expected one argument"):
        parse(cmd, ["runs/a", "--n"])
    with pytest.raises(ConfigError, match="robotrl x: the following arguments are required: RUN_DIR"):
        parse(cmd, ["n=2"])
    assert parse(_cmd(positional="SUITE"), []).positional == []  # optional positionals
    with pytest.raises(ConfigError, match="unexpected argument 'runs/a'"):
        parse(_cmd(), ["runs/a"])  # a key=value command takes none


# ------------------------------------------------------------------------------------------------ exit codes
def test_interrupted_deploy_and_record_exit_130_with_one_line(monkeypatch, capsys):
    from robotrl import cli
    from robotrl.workflows import deploy, record

    def interrupted(**_):
        raise KeyboardInterrupt("interrupted; the arm holds")

    monkeypatch.setattr(deploy, "deploy", interrupted)
    monkeypatch.setattr(record, "record", interrupted)
    for name in ("deploy", "record"):
        with pytest.raises(SystemExit) as done:
            cli.main([name, "robot=mock"])
        assert done.value.code == 130 and capsys.readouterr().err == "robotrl: interrupted; the arm holds\n"


def test_unknown_command_is_one_line_exit_2(capsys):
    from robotrl import cli

    with pytest.raises(SystemExit) as done:
        cli.main(["trian"])
    err = capsys.readouterr().err
    assert done.value.code == 2
    assert err == f"robotrl: error: unknown command 'trian'; expected one of {', '.join(NAMES)}\n"
