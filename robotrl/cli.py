"""`robotrl` command line: train (hydra), eval, envs, plot, report, demos, goals, reward-eval, deploy, serve,
sim2real, check-frame, record, replay, worldenv.

    robotrl train [key=value ...]            e.g. agent=drqv2 env=dmc/cartpole_swingup seed=1; -m for sweeps
    robotrl train                            (no arguments) the embedded CPU quickstart: experiment=quickstart
    robotrl eval checkpoint=PATH [episodes=10 seed=1000000 min_success=0.8 min_return=... video=true out=DIR
                                             baselines=true]
    robotrl envs [SUITE]                     list every env name
    robotrl plot RUN_DIR... [--out PNG] [--metric episode_return]
    robotrl report SWEEP_DIR... [out=DIR]     per task and agent: IQM + 95% CI over seeds, frames, wall-clock (MD + PNG)
    robotrl demos env=metaworld/reach [episodes=5 seed=0 out=DIR image_size=84 ...]
    robotrl demos libero_dataset=PATH/<task>_demo.hdf5 out=DIR [image_size=128 camera=agentview ...]
    robotrl goals generate env=metaworld/<task> instruction="..." [source=diffusion|demos|images n=8 out=DIR ...]
                                             LfVoid goal images (a diffusers editing model, or offline sources)
    robotrl reward-eval env=metaworld/<task> reward=clip,kagi [episodes=... out=DIR]
                                             reward quality report: expert/noisy/near-miss/random rollouts
    robotrl deploy checkpoint=PATH robot=sim [hz=20 episodes=1 steps=N dry_run=false record=DIR robot.KEY=VALUE]
                                             run a policy on a robot through the safety layer (--help: details)
    robotrl worldenv collect|train-vla|train-model|train-reflector|post-train|fidelity out=DIR [key=value ...]
                                             World-Env: a VLA post-trained inside a learned video world model
    robotrl serve checkpoint=PATH [host=127.0.0.1 port=50051 token=... max_message_bytes=4194304 device=auto]
                                             gRPC policy server for `robotrl deploy server=HOST:PORT`
    robotrl sim2real checkpoint=PATH [robots=sim,franka ROBOT.KEY=VALUE episodes=3 ...]
                                             sim-to-real gap report: one policy, same seeds, several robots
    robotrl check-frame robot=NAME [robot.KEY=VALUE distance_m=0.03 ...]
                                             check robot.frame_map on the arm (home + a move along each axis)
    robotrl record robot=NAME teleop=DEVICE task="..." episodes=N out=DIR [resume=true export=DIR ...]
                                             teleoperated demos through the safety layer (demo format + LeRobot v3)
    robotrl replay episode=DIR/episode_000000.npz robot=NAME
                                             play a recorded episode back; report the proprioception drift


`robotrl <command> --help` lists a command's keys with their defaults and examples. Bad input exits with code 2 and
one line `robotrl: error: ...`; a failed `eval` gate exits with 1.

This is the only module that parses a command line: it turns arguments into typed options and calls a workflow
(`robotrl.workflows.*`).
"""

from __future__ import annotations

import importlib
import signal
import sys
import textwrap
import threading
from types import MappingProxyType
from typing import Any

from robotrl.commands import Args, Command, print_error, shown
from robotrl.errors import ConfigError, RobotRLError
from robotrl.overrides import parse_kv
from robotrl.params import KINDS, require

HELP_FLAGS = ("-h", "--help")

# command -> the module whose COMMAND it is, imported when that command runs (not every workflow at start)
REGISTRY = MappingProxyType({
    "train": "robotrl.workflows.train_command", "eval": "robotrl.workflows.evaluate",
    "envs": "robotrl.workflows.envs_command", "plot": "robotrl.workflows.plot", "report": "robotrl.workflows.report",
    "demos": "robotrl.workflows.demos_command", "goals": "robotrl.workflows.goals",
    "reward-eval": "robotrl.workflows.reward_eval.command", "deploy": "robotrl.workflows.deploy",
    "serve": "robotrl.workflows.policy_server", "sim2real": "robotrl.workflows.sim2real",
    "check-frame": "robotrl.workflows.frame_check", "record": "robotrl.workflows.record",
    "replay": "robotrl.workflows.replay_episode", "worldenv": "robotrl.workflows.worldenv.help",
})


def command(name: str) -> Command:
    """The registered command ``name``; a ConfigError naming the valid ones otherwise."""
    if name not in REGISTRY:
        raise ConfigError(f"unknown command {name!r}; expected one of {', '.join(REGISTRY)}")
    found = importlib.import_module(REGISTRY[name]).COMMAND
    assert found.name == name, (REGISTRY[name], found.name)  # a registry line pointing at the wrong module
    return found


def render_help(cmd: Command) -> str:
    """Help text of a command: usage, what it does, every key with its default and doc, examples, notes."""
    if cmd.text is not None:
        return cmd.text()
    lines = [f"usage: {cmd.usage}", "", cmd.about]
    if cmd.options:
        width = max(len(f"{k}={shown(o.default)}") for k, o in cmd.options.items()) + 2
        how = "key=value or --key value" if str(cmd.positional).endswith("...") else "key=value"
        lines += ["", f"keys ({how}, shown with their defaults):"]
        for key, option in cmd.options.items():  # a long doc wraps under itself, within 120 columns
            head = f"  {f'{key}={shown(option.default)}':<{width}}"
            doc = option.doc + (f" [{KINDS[option.range][1]}]" if option.range else "")
            lines += textwrap.wrap(doc, 120, initial_indent=head, subsequent_indent=" " * (width + 2),
                                   break_on_hyphens=False) or [head.rstrip()]
    if cmd.examples:
        lines += ["", "examples:", *(f"  {e}" for e in cmd.examples)]
    if cmd.footer:
        lines += ["", cmd.footer]
    return "\n".join(lines)


def _prefixed(cmd: Command, arg: str) -> bool:
    key = arg.partition("=")[0]
    return ("*" in cmd.prefixes and "." in key) or arg.startswith(cmd.prefixes) and "*" not in cmd.prefixes


def _as_number(value: Any, kind: str) -> Any:
    """``value`` as the number a range ``kind`` checks (int for the integer kinds); text that is no number stays
    text, for the range check to name it."""
    if not isinstance(value, str):
        return value
    try:
        return int(value) if kind.endswith("_int") else float(value)
    except ValueError:
        return value


def parse(cmd: Command, args: list[str]) -> Args:
    """The one parser of ``key=value`` commands: options typed like their defaults, ``PREFIX.KEY=VALUE`` arguments
    set aside for the command, positional arguments (and ``--key value``) for commands that take them."""
    plain, extra, positional = [], [], []
    rest = list(args)
    while rest:
        arg = rest.pop(0)
        if cmd.positional and arg.startswith("-"):
            key, eq, value = arg.removeprefix("--").partition("=")
            if not arg.startswith("--") or key not in cmd.options:
                raise ConfigError(f"robotrl {cmd.name}: unrecognized arguments: {arg}")
            if not eq:
                if not rest:
                    raise ConfigError(f"robotrl {cmd.name}: argument --{key}: expected one argument")
                value = rest.pop(0)
            plain.append(f"{key}={value}")
        elif cmd.prefixes and _prefixed(cmd, arg):
            extra.append(arg)
        elif cmd.positional and arg.partition("=")[0] not in cmd.options:
            positional.append(arg)
        else:
            plain.append(arg)
    if cmd.positional and cmd.positional.endswith("...") and not positional:
        raise ConfigError(f"robotrl {cmd.name}: the following arguments are required: {cmd.positional[:-3]}")
    opts = parse_kv(plain, cmd.defaults)
    for key, option in cmd.options.items():
        if option.range is not None and opts[key] is not None:
            opts[key] = _as_number(opts[key], option.range)  # an option whose default is null arrives as text
            require("", **{option.range: {key: opts[key]}})
    return Args(opts, extra, positional, list(args))


def run(name: str, args: list[str]) -> int:
    """Run ``robotrl NAME ARGS...``: its help, or its ``run`` with the parsed arguments; the exit code. A bad input
    raises a RobotRLError (``main`` prints it on one line, exit code 2)."""
    cmd = command(name)
    if any(a in HELP_FLAGS for a in args):
        print(render_help(cmd))
        return 0
    if cmd.text is not None:  # not key=value: the command reads its arguments itself (hydra, a worldenv stage)
        return cmd.run(Args({}, [], [], list(args)))
    return cmd.run(parse(cmd, args))


def _terminate_as_ctrl_c(signum: int, frame: Any) -> None:
    """SIGTERM (docker stop, systemd, a scheduler's or a user's ``kill``) takes the Ctrl-C path instead of ending the
    process where it stands: an arm is held and disconnected, a run keeps its last checkpoint and prints how to
    continue (exit 130). Whatever handles Ctrl-C at that moment handles it (a second one stops at once)."""
    handler = signal.getsignal(signal.SIGINT)
    if callable(handler):
        handler(signal.SIGINT, frame)
    else:
        raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> None:
    argv = sys.argv[1:] if argv is None else argv
    sys.stdout.reconfigure(line_buffering=True)  # progress lines reach logs and pipes as they happen
    if threading.current_thread() is not threading.main_thread():  # signal handlers can only be set there
        _main(argv)
        return
    # called from Python (a notebook, a launcher, a test), the caller gets its own SIGTERM handler back
    callers = signal.signal(signal.SIGTERM, _terminate_as_ctrl_c)
    try:
        _main(argv)
    finally:
        if callers is not None:  # None: a handler set outside Python, which signal cannot put back
            signal.signal(signal.SIGTERM, callers)


def _main(argv: list[str]) -> None:
    if not argv or argv[0] in (*HELP_FLAGS, "help"):
        print(__doc__)
        sys.exit(0)
    try:
        sys.exit(run(argv[0], argv[1:]))
    except RobotRLError as e:
        print_error(e)
        sys.exit(2)
    except OSError as e:
        if e.filename is None:  # not about a path someone can fix: keep the traceback
            raise
        # an output dir that cannot be made, a file where a dir should be, no permission: say which path, one line
        paths = f"{e.filename}" + (f" -> {e.filename2}" if e.filename2 else "")
        print_error(RobotRLError(f"{e.strerror or type(e).__name__}: {paths} (check the path and its permissions)"),
                    refusal=False)
        sys.exit(2)


if __name__ == "__main__":
    main()
