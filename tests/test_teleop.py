"""Teleop devices (hardware/teleop) from scripted event streams, no hardware and no display: the keyboard through a
real pseudo-terminal (cbreak mode, as on an SSH session), the gamepad and SpaceMouse from evdev event triples (and
evdev's own InputEvent objects through the device adapter). Each asserts the command in robot Action units, who is
in control, and the events (take-over / hand-back, success / failure, re-record / discard)."""

from __future__ import annotations

import errno
import os
import termios

import numpy as np
import pytest
from robotrl.hardware.robot import ActionMode
from robotrl.hardware.teleop import TeleopError, TeleopEvent, make_teleop
from robotrl.hardware.teleop.inputs import EvdevInput, decode_tty

from robotrl.errors import ConfigError
from tests.camera_helpers import FakeClock

E = TeleopEvent


class ScriptedSource:
    """A device's event stream, fed by the test: ``feed(...)`` queues what the next ``read`` returns."""

    def __init__(self, releases: bool = False, ranges: dict[int, tuple[int, int]] | None = None) -> None:
        self.releases, self.ranges, self.queue, self.opened = releases, ranges or {}, [], False

    def feed(self, *items):
        self.queue.extend(items)

    def open(self):
        self.opened = True

    def read(self):
        out, self.queue = self.queue, []
        return out

    def absinfo(self, code):
        return self.ranges[code]

    def close(self):
        self.opened = False


# ------------------------------------------------------------------------------------------------ keyboard
@pytest.fixture
def pty():
    master, slave = os.openpty()
    yield master, os.ttyname(slave)
    os.close(master)
    os.close(slave)


def test_keyboard_on_a_terminal_moves_labels_and_takes_over(pty):
    master, path = pty
    clock = FakeClock()
    keyboard = make_teleop({"name": "keyboard", "device": path, "step_m": 0.005, "key_hold_s": 0.15}, clock=clock)
    keyboard.connect()
    try:
        assert not termios.tcgetattr(os.open(path, os.O_RDONLY | os.O_NOCTTY))[3] & termios.ICANON  # cbreak
        idle = keyboard.poll()
        assert idle.action.mode is ActionMode.EE_DELTA and not idle.action.delta.any() and not idle.intervening
        os.write(master, b"wa")  # forward and left at once
        cmd = keyboard.poll()
        np.testing.assert_allclose(cmd.action.delta, [0.005, 0.005, 0.0])
        clock.t += 0.1
        np.testing.assert_allclose(keyboard.poll().action.delta, [0.005, 0.005, 0.0])  # still within key_hold_s
        clock.t += 0.1
        assert not keyboard.poll().action.delta.any()  # no auto-repeat arrived: the key was let go
        os.write(master, b" ")
        cmd = keyboard.poll()
        assert cmd.events == (E.TAKE_OVER,) and cmd.intervening
        os.write(master, b"gfy")
        cmd = keyboard.poll()
        assert cmd.action.gripper == 1.0 and cmd.action.delta[2] == pytest.approx(-0.005)
        assert cmd.events == (E.SUCCESS,) and cmd.intervening
        os.write(master, b"nbx ")
        cmd = keyboard.poll()
        assert cmd.events == (E.HAND_BACK, E.FAILURE, E.RERECORD, E.DISCARD) and not cmd.intervening
    finally:
        keyboard.disconnect()
    fd = os.open(path, os.O_RDONLY | os.O_NOCTTY)
    assert termios.tcgetattr(fd)[3] & termios.ICANON  # the terminal is restored
    os.close(fd)


def test_terminal_bytes_decode_to_key_names():
    assert decode_tty(b"W \r\x7f\x1b[A\x1b[D\x1bq\x01") == ["w", "space", "enter", "backspace", "up", "left", "esc",
                                                             "q"]


def test_keyboard_with_releases_moves_while_held():
    source, clock = ScriptedSource(releases=True), FakeClock()
    keyboard = make_teleop({"name": "keyboard", "intervention": "hold", "keys": {"z+": "up", "z-": "down"}},
                           source=source, clock=clock)
    source.feed(("up", True), ("space", True))
    cmd = keyboard.poll()
    assert cmd.action.delta[2] == pytest.approx(0.005) and cmd.events == (E.TAKE_OVER,)
    clock.t += 5.0
    assert keyboard.poll().action.delta[2] == pytest.approx(0.005)  # held for 5 s: still moving
    source.feed(("up", False), ("space", False))
    cmd = keyboard.poll()
    assert not cmd.action.delta.any() and cmd.events == (E.HAND_BACK,)  # the dead-man let go


@pytest.mark.parametrize(("cfg", "message"), [
    ({"intervention": "hold"}, "intervention=hold needs key releases, which a terminal does not report"),
    ({"keys": {"success": "w"}}, r"teleop.keys: 'w' is bound to more than one action"),
    ({"keys": {"jump": "j"}}, r"teleop.keys.jump is not an action"),
    ({"step_m": -1}, r"teleop.step_m=-1, expected a finite number > 0"),
    ({"source": "x11"}, r"teleop.source='x11': expected tty"),
    ({"colour": 1}, r"unknown key teleop.colour for teleop=keyboard"),
    ({"intervention": "sometimes"}, r"teleop.intervention='sometimes': expected one of"),
])  # fmt: skip
def test_bad_keyboard_configs_are_one_line_errors(cfg, message):
    with pytest.raises(ConfigError, match=message):
        make_teleop({"name": "keyboard", **cfg})


def test_a_missing_terminal_is_a_teleop_error(tmp_path):
    not_a_tty = tmp_path / "file"
    not_a_tty.write_text("")
    keyboard = make_teleop({"name": "keyboard", "device": str(not_a_tty)})
    with pytest.raises(TeleopError, match="teleop keyboard: .*is not a terminal; run in a terminal or use"):
        keyboard.connect()


# ------------------------------------------------------------------------------------------------ gamepad
evdev = pytest.importorskip("evdev", reason="gamepad/spacemouse need the teleop extra (evdev)")
ec = evdev.ecodes


def test_gamepad_sticks_deadzone_and_dead_man_take_over():
    source = ScriptedSource(ranges={ec.ABS_X: (-32768, 32767), ec.ABS_Y: (-32768, 32767), ec.ABS_RY: (0, 255)})
    pad = make_teleop({"name": "gamepad", "step_m": 0.01}, source=source, clock=FakeClock())
    source.feed((ec.EV_ABS, ec.ABS_Y, -32768), (ec.EV_ABS, ec.ABS_X, 1500), (ec.EV_ABS, ec.ABS_RY, 255))
    cmd = pad.poll()
    # stick fully forward = +x; a small x deflection is inside the deadzone; right stick fully back = -z
    np.testing.assert_allclose(cmd.action.delta, [0.01, 0.0, -0.01], atol=1e-6)
    assert not cmd.intervening and cmd.events == ()
    source.feed((ec.EV_KEY, ec.BTN_TR, 1), (ec.EV_KEY, ec.BTN_TL, 1), (ec.EV_KEY, ec.BTN_TL, 0))
    cmd = pad.poll()
    assert cmd.intervening and cmd.events == (E.TAKE_OVER,) and cmd.action.gripper == 1.0
    np.testing.assert_allclose(pad.poll().action.delta, [0.01, 0.0, -0.01], atol=1e-6)  # held sticks keep going
    source.feed((ec.EV_KEY, ec.BTN_NORTH, 1), (ec.EV_KEY, ec.BTN_NORTH, 0), (ec.EV_KEY, ec.BTN_SOUTH, 1),
                (ec.EV_KEY, ec.BTN_WEST, 1), (ec.EV_KEY, ec.BTN_EAST, 1), (ec.EV_KEY, ec.BTN_TR, 0))
    cmd = pad.poll()
    assert cmd.events == (E.HAND_BACK, E.SUCCESS, E.FAILURE, E.RERECORD, E.DISCARD) and not cmd.intervening
    source.feed((ec.EV_ABS, ec.ABS_Y, 0), (ec.EV_ABS, ec.ABS_RY, 128))
    assert not pad.poll().action.delta.any()  # centred sticks: no motion


def test_gamepad_config_names_bad_codes():
    with pytest.raises(ConfigError, match=r"teleop.buttons.success='BTN_SMILE' is not an evdev code name"):
        make_teleop({"name": "gamepad", "buttons": {"success": "BTN_SMILE"}})
    with pytest.raises(ConfigError, match=r"teleop.axes.z=\['ABS_RY', 2\]: expected \[CODE_NAME, 1 or -1\]"):
        make_teleop({"name": "gamepad", "axes": {"z": ["ABS_RY", 2]}})


class FakeEvdevDevice:
    """What evdev.InputDevice offers the adapter: read() (BlockingIOError when empty), absinfo, close; ``lost``
    makes read raise ENODEV as an unplugged device does."""

    path = "/dev/input/event7"

    def __init__(self, events):
        self.events, self.lost = list(events), False

    def read(self):
        if self.lost:
            raise OSError(errno.ENODEV, "No such device")
        if not self.events:
            raise BlockingIOError
        out, self.events = self.events, []
        return iter(out)

    def absinfo(self, code):
        return evdev.AbsInfo(value=0, min=-32768, max=32767, fuzz=0, flat=0, resolution=0)

    def close(self):
        pass


def test_evdev_adapter_reads_input_events_and_a_lost_device_is_a_teleop_error():
    device = FakeEvdevDevice([evdev.InputEvent(0, 0, ec.EV_ABS, ec.ABS_Y, 32767),
                              evdev.InputEvent(0, 0, ec.EV_SYN, ec.SYN_REPORT, 0)])
    source = EvdevInput("/dev/input/event7", "gamepad")
    source.device = device  # opened
    pad = make_teleop({"name": "gamepad"}, source=source)
    assert pad.poll().action.delta[0] == pytest.approx(-0.01, abs=1e-6)  # stick fully back
    assert pad.poll().action.delta[0] == pytest.approx(-0.01, abs=1e-6)  # nothing new (BlockingIOError): held
    device.lost = True
    with pytest.raises(TeleopError, match=r"teleop gamepad: /dev/input/event7 was lost \(No such device\)"):
        pad.poll()


# ------------------------------------------------------------------------------------------------ spacemouse
def test_spacemouse_rel_or_abs_axes_auto_take_over_idle_centring_and_terminal_labels():
    source, labels, clock = ScriptedSource(), ScriptedSource(), FakeClock()
    mouse = make_teleop({"name": "spacemouse", "step_m": 0.01}, source=source, labels=labels, clock=clock)
    mouse.connect()
    assert source.opened and labels.opened
    source.feed((ec.EV_REL, ec.REL_Y, -350), (ec.EV_REL, ec.REL_Z, 175))  # pushed away, pressed down halfway
    cmd = mouse.poll()
    np.testing.assert_allclose(cmd.action.delta, [0.01, 0.0, -0.01 * (0.5 - 0.05) / 0.95], atol=1e-6)
    assert cmd.events == (E.TAKE_OVER,) and cmd.intervening  # SERL: moving it takes over
    clock.t += 0.2  # no event for longer than idle_timeout_s: centred, still in control for auto_hold_s
    cmd = mouse.poll()
    assert not cmd.action.delta.any() and cmd.intervening and cmd.events == ()
    clock.t += 0.4
    assert mouse.poll().events == (E.HAND_BACK,)
    source.feed((ec.EV_ABS, ec.ABS_X, 350), (ec.EV_KEY, ec.BTN_0, 1))  # a kernel reporting ABS axes; left button
    labels.feed(("y", None))
    cmd = mouse.poll()
    assert cmd.action.delta[1] == pytest.approx(-0.01) and cmd.action.gripper == 1.0
    assert cmd.events == (E.TAKE_OVER, E.SUCCESS)
    mouse.disconnect()
    assert not labels.opened


def test_teleop_config_group_composes_and_builds(compose_cfg):
    from robotrl.overrides import check_group_choices

    assert make_teleop(compose_cfg().teleop) is None  # teleop=none by default
    keyboard = make_teleop(compose_cfg("teleop=keyboard", "teleop.step_m=0.002").teleop, source=ScriptedSource())
    assert keyboard.name == "keyboard" and keyboard.step_m == 0.002 and keyboard.keys["take_over"] == "space"
    pad = make_teleop(compose_cfg("teleop=gamepad").teleop, source=ScriptedSource())
    assert pad.latch.mode == "hold" and pad.step_m == 0.01
    mouse = make_teleop(compose_cfg("teleop=spacemouse").teleop, source=ScriptedSource(), labels=ScriptedSource())
    assert mouse.latch.mode == "auto" and mouse.full_scale == 350
    with pytest.raises(ConfigError, match="teleop.port='\\?\\?\\?': teleop=so101_leader needs it"):
        make_teleop(compose_cfg("teleop=so101_leader").teleop)
    with pytest.raises(ConfigError, match="unknown teleop 'joystick'; valid teleop names: gamepad, keyboard"):
        check_group_choices(["teleop=joystick"])
