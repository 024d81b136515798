"""The README's hardware, deploy and serve commands, run as written up to where an arm would be needed.

No arm answers here, so each robot command must get as far as connecting and then stop with one line naming the
connection failure (a config error on the way means the README's own command is broken: issue 23 item 12, where
`robot.hostname=...`, a key whose default is `???`, was refused as unknown). The arm's address is an unused
loopback one (nothing listens there: connection refused at once); README placeholders (RUN, a dataset path, an
operator module) are filled with small real ones.
"""

from __future__ import annotations

import os
import random
import re
import shlex
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from robotrl.errors import ConfigError
from robotrl.overrides import check_overrides, parse_kv
from tests.deploy_helpers import train_reach_policy

ROOT = Path(__file__).resolve().parents[1]
ENV = {**os.environ, "MUJOCO_GL": "egl", "OMP_NUM_THREADS": "1", "PYTHONWARNINGS": "ignore"}


def readme_section(title: str) -> str:
    text = (ROOT / "README.md").read_text()
    start = text.index(f"\n## {title}\n")
    end = text.find("\n## ", start + 1)
    return text[start:end]


def bash_commands(section: str) -> list[str]:
    """The commands of a section's ```bash blocks: continuation lines joined, comments dropped."""
    commands = []
    for block in re.findall(r"```bash\n(.*?)```", section, re.S):
        joined = re.sub(r"\\\n\s*", " ", block)
        commands += [line.split("#")[0].strip() for line in joined.splitlines() if line.split("#")[0].strip()]
    return commands


def unused_loopback() -> str:
    """A 127.x address nothing listens on (franky-sim test servers draw random ones too: avoid theirs)."""
    rng = random.SystemRandom()
    return f"127.{rng.randint(1, 254)}.{rng.randint(1, 254)}.{rng.randint(1, 254)}"


def robotrl(args: list[str], cwd: Path, env: dict[str, str] | None = None,
            timeout: float = 600) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "robotrl.cli", *args], capture_output=True, text=True,
                          cwd=cwd, env=env or ENV, timeout=timeout)


def assert_connection_error(proc: subprocess.CompletedProcess, robot: str) -> None:
    """Exit 2 with a one-line `robotrl: error:` naming the failed connect, not a config error or a traceback."""
    last = proc.stderr.strip().splitlines()[-1] if proc.stderr.strip() else ""
    assert proc.returncode == 2 and "Traceback" not in proc.stderr, proc.stderr[-3000:]
    assert last.startswith(f"robotrl: error: {robot}: connect failed"), proc.stderr[-3000:]


@pytest.fixture(scope="module")
def proprio_run(tmp_path_factory) -> Path:
    """A tiny Meta-World reach policy on proprioception (runs on an arm without cameras, as franka here). No eval
    video: after test_policy_server.py's gRPC servers stopped in this process, an ffmpeg pipe here once broke
    (gRPC's poller logged "epoll_wait error: Bad file descriptor" just before), which is not what this file tests."""
    return train_reach_policy(tmp_path_factory.mktemp("readme") / "run", "env.obs_type=proprio", "save_video=false")


# ------------------------------------------------------------------------------------------------ `???` keys
@pytest.mark.parametrize("overrides", [
    ["robot=franka", "robot.hostname=172.16.0.2"],
    ["robot=so101", "robot.port=/dev/ttyACM0", "robot.calibration_file=cal.json"],
])
def test_keys_whose_default_is_required_can_be_set(overrides):
    check_overrides(overrides)  # raised "unknown config key 'robot.hostname'; did you mean robot.hostname?"


def test_unknown_keys_next_to_required_ones_are_still_refused():
    with pytest.raises(ConfigError, match="unknown config key 'robot.hostnme'; did you mean robot.hostname?"):
        check_overrides(["robot=franka", "robot.hostnme=172.16.0.2"])
    with pytest.raises(ConfigError, match="robot.relative_dynamics_factor='fast', expected a number"):
        check_overrides(["robot=franka", "robot.hostname=1.2.3.4", "robot.relative_dynamics_factor=fast"])


@pytest.mark.parametrize("robot, given, missing", [("so101", {"port": "/dev/ttyACM0"}, "calibration_file"),
                                                    ("so101", {"calibration_file": "cal.json"}, "port"),
                                                    ("franka", {}, "hostname")])
def test_an_unset_required_key_is_one_line_before_connecting(robot, given, missing):
    """A `???` key left unset is refused when the robot is built, naming the key (no connection attempted)."""
    from robotrl.hardware import make_robot

    from robotrl.workflows.run_env import load_robot_config

    cfg = load_robot_config(robot, given)
    with pytest.raises(ConfigError, match=rf"{missing}"):
        make_robot(cfg)


# ------------------------------------------------------------------------------------------------ train
@pytest.fixture(scope="module")
def readme_demos(tmp_path_factory) -> Path:
    """The README's own first command, `robotrl demos env=metaworld/reach ... out=demos/reach10`, at 1 episode."""
    cwd = tmp_path_factory.mktemp("readme_demos")
    demos_cmd = next(c for c in bash_commands(readme_section("Learning on the arm")) if c.startswith("robotrl demos"))
    args = [a for a in shlex.split(demos_cmd)[1:] if not a.startswith("episodes=")] + ["episodes=1"]
    proc = robotrl(args, cwd)
    assert proc.returncode == 0, proc.stderr[-3000:]
    return cwd


@pytest.mark.slow
def test_readme_train_on_franka_gets_to_the_connection(readme_demos, tmp_path):
    """`## Learning on the arm`'s robot=franka command, verbatim but for its placeholders: a success classifier is
    trained from the demos, then the arm is connected (a config error used to stop it first). ~45 s with the demos
    on a quiet 2-core machine, minutes on a busy one."""
    from robotrl.lerobot_dataset import export_lerobot

    franka_cmd = next(c for c in bash_commands(readme_section("Learning on the arm")) if "robot=franka" in c)
    (tmp_path / "demos").symlink_to(readme_demos / "demos")
    export_lerobot(readme_demos / "demos/reach10", tmp_path / "lerobot_dataset")
    (tmp_path / "mypkg").mkdir()
    (tmp_path / "mypkg/__init__.py").write_text("")
    (tmp_path / "mypkg/spacemouse.py").write_text("def operator():\n    return lambda step, obs: None\n")
    host = unused_loopback()
    args = [a.replace("172.16.0.2", host).replace("path/to/lerobot_dataset", str(tmp_path / "lerobot_dataset"))
            for a in shlex.split(franka_cmd)[1:]]
    assert f"robot.hostname={host}" in args
    proc = robotrl([*args, f"run_dir={tmp_path / 'run'}"], tmp_path, {**ENV, "PYTHONPATH": str(tmp_path)})
    assert_connection_error(proc, "franka")
    assert "success classifier:" in proc.stdout + proc.stderr  # the run got past its reward's set-up to the arm


@pytest.mark.slow
def test_train_on_so101_gets_past_its_required_keys(readme_demos, tmp_path):
    """robot=so101 with its two `???` keys set: no config-key error; the run stops in one line at the first thing
    this arm cannot do or reach (its serial port does not exist here)."""
    from tests.test_so101 import calibration_file

    port = tmp_path / "ttyACM-none"
    proc = robotrl(["train", "agent=modem_v2", "env=metaworld/reach", "env.obs_type=proprio", "robot=so101",
                    f"robot.port={port}", f"robot.calibration_file={calibration_file(tmp_path)}",
                    "reward=success_classifier", f"reward.demos={readme_demos / 'demos/reach10'}",
                    f"run_dir={tmp_path / 'run'}", "device=cpu"], tmp_path)
    last = proc.stderr.strip().splitlines()[-1]
    assert proc.returncode == 2 and "Traceback" not in proc.stderr and "config key" not in proc.stderr
    assert last.startswith("robotrl: error:") and ("so101" in last or str(port) in last), proc.stderr[-3000:]


# ------------------------------------------------------------------------------------------------ serve + deploy
def test_policy_timeout_is_settable_and_checked():
    from robotrl.workflows.deploy import DEPLOY_DEFAULTS, deploy

    assert parse_kv(["policy_timeout_s=0.5"], DEPLOY_DEFAULTS)["policy_timeout_s"] == 0.5
    with pytest.raises(ConfigError, match=r"policy_timeout_s=-1.0, expected a positive float"):
        deploy(server="127.0.0.1:1", policy_timeout_s=-1.0)
    with pytest.raises(ConfigError, match="not both; both were given"):
        deploy(checkpoint="run", server="127.0.0.1:1")
    with pytest.raises(ConfigError, match="not both; neither was given"):
        deploy()


def help_examples(command: str) -> list[str]:
    out = subprocess.run([sys.executable, "-m", "robotrl.cli", command, "--help"], capture_output=True, text=True,
                         env=ENV, timeout=120).stdout
    return [line.split("#")[0].strip() for line in out.split("examples:")[1].splitlines() if line.strip()]


def test_serve_help_deploy_example_names_the_server_only():
    """--help's deploy example gave checkpoint= and server= both, which deploy refuses ("not both")."""
    from robotrl.workflows.deploy import DEPLOY_DEFAULTS

    deploy_ex = help_examples("serve")[1]
    args = parse_kv(shlex.split(deploy_ex)[2:], DEPLOY_DEFAULTS)
    assert args["server"] == "127.0.0.1:50051" and args["checkpoint"] is None and args["token"] == "secret"


@pytest.mark.slow
def test_serve_and_deploy_as_the_readme_and_help_show(proprio_run, tmp_path):
    """`robotrl serve` as README/--help show it (port 0: parallel runs), then --help's deploy example on robot=sim,
    and the README's `robotrl deploy server=HOST:PORT token=... robot=...` on franka, up to the arm (~75 s on 2
    busy cores)."""
    serve_ex, deploy_ex = help_examples("serve")
    env_part, serve_cmd = serve_ex.split(" ", 1)
    token = env_part.split("=", 1)[1]
    args = [a.replace("runs/metaworld/reach/drqv2/seed1", str(proprio_run)) for a in shlex.split(serve_cmd)[1:]]
    server = subprocess.Popen([sys.executable, "-m", "robotrl.cli", *args, "port=0"], stdout=subprocess.PIPE,
                              stderr=subprocess.STDOUT, text=True, cwd=tmp_path,
                              env={**ENV, "ROBOTRL_POLICY_TOKEN": token})
    try:
        address = None
        for line in server.stdout:  # "robotrl serve: policy server on 127.0.0.1:PORT; stop with Ctrl-C"
            if match := re.search(r"policy server on (\S+);", line):
                address = match.group(1)
                break
        assert address and address.startswith("127.0.0.1:"), "the server did not start"
        deploy_args = [a.replace("127.0.0.1:50051", address) for a in shlex.split(deploy_ex)[1:]]
        assert not any(a.startswith("checkpoint=") for a in deploy_args)  # "not both" before
        proc = robotrl([*deploy_args, "steps=2", "robot.limits.watchdog_ms=2000", f"out={tmp_path / 'sim'}"],
                       tmp_path)
        assert proc.returncode == 0, proc.stderr[-3000:]
        assert f'"policy": "remote {address}"' in proc.stdout and '"error": null' in proc.stdout
        proc = robotrl(["deploy", f"server={address}", f"token={token}", "robot=franka",
                        f"robot.hostname={unused_loopback()}", "policy_timeout_s=5", f"out={tmp_path / 'fr'}"],
                       tmp_path)
        assert_connection_error(proc, "franka")
    finally:
        server.send_signal(signal.SIGINT)
        try:
            server.wait(timeout=30)
        except subprocess.TimeoutExpired:
            server.kill()
            server.wait()


def test_deploy_on_franka_gets_to_the_connection(proprio_run, tmp_path):
    """README: `robotrl deploy checkpoint=RUN robot=... robot.KEY=VALUE`, on franka with its required host."""
    proc = robotrl(["deploy", f"checkpoint={proprio_run}", "robot=franka", f"robot.hostname={unused_loopback()}",
                    f"out={tmp_path / 'out'}"], tmp_path)
    assert_connection_error(proc, "franka")


@pytest.mark.slow
def test_readme_sim2real_on_franka_gets_to_the_connection(proprio_run, tmp_path):
    """`robotrl sim2real checkpoint=RUN robots=sim,franka franka.hostname=ADDR episodes=5` (sim's 5 episodes run
    first: ~50 s on 2 shared cores)."""
    text = readme_section("Learning on the arm")
    command = re.search(r"`(robotrl sim2real [^`]+)`", text).group(1)
    args = [a.replace("RUN", str(proprio_run)).replace("ADDR", unused_loopback()) for a in shlex.split(command)[1:]]
    start = time.monotonic()
    proc = robotrl(args, tmp_path)
    assert_connection_error(proc, "franka")
    assert time.monotonic() - start < 600
