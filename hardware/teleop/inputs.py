"""Input sources, none of which needs a display: this terminal's keys (``TtyKeys``: cbreak mode, so Ctrl-C still
interrupts; works over SSH), and Linux input devices through evdev (``EvdevKeys`` for a keyboard with real key
releases, ``EvdevInput`` for a gamepad or SpaceMouse's raw (type, code, value) events; the user needs read access to
``/dev/input/event*``: the ``input`` group). Devices take any object with the same methods, so tests script them.
"""

from __future__ import annotations

import errno
import os
import select
import sys
from typing import Any

from robotrl.hardware.teleop.base import TeleopError

KeyPress = tuple[str, bool | None]  # (key name, True down / False up / None: a terminal press, no release known)

_ESCAPES = {b"[A": "up", b"[B": "down", b"[C": "right", b"[D": "left", b"OA": "up", b"OB": "down",
            b"OC": "right", b"OD": "left"}
_SPECIAL = {b" ": "space", b"\r": "enter", b"\n": "enter", b"\x7f": "backspace", b"\x08": "backspace",
            b"\t": "tab"}


def decode_tty(data: bytes) -> list[str]:
    """Key names from a terminal's bytes: printable keys lower-cased, arrows as up/down/left/right, space, enter,
    backspace, tab, esc; anything else is dropped."""
    names, i = [], 0
    while i < len(data):
        byte = data[i : i + 1]
        if byte == b"\x1b":
            seq = data[i + 1 : i + 3]
            if seq in _ESCAPES:
                names.append(_ESCAPES[seq])
                i += 3
                continue
            names.append("esc")
        elif byte in _SPECIAL:
            names.append(_SPECIAL[byte])
        elif 0x21 <= data[i] < 0x7F:
            names.append(byte.decode().lower())
        i += 1
    return names


class TtyKeys:
    """Key presses from a terminal (``path``, default this process's stdin), read without blocking."""

    releases = False

    def __init__(self, path: str | None = None) -> None:
        self.path, self._fd, self._saved, self._own = path, -1, None, False

    def open(self) -> None:
        import termios
        import tty

        if self.path is not None:
            self._fd, self._own = os.open(self.path, os.O_RDONLY | os.O_NOCTTY), True
        else:
            self._fd = sys.stdin.fileno()
        if not os.isatty(self._fd):
            self.close()
            raise TeleopError("keyboard", f"{self.path or 'stdin'} is not a terminal; run in a terminal or use "
                                          "teleop.source=evdev")
        self._saved = termios.tcgetattr(self._fd)
        tty.setcbreak(self._fd)  # keys arrive one by one, unechoed; Ctrl-C still raises KeyboardInterrupt

    def read(self) -> list[KeyPress]:
        data = b""
        while select.select([self._fd], [], [], 0)[0]:
            chunk = os.read(self._fd, 1024)
            if not chunk:
                break
            data += chunk
        return [(name, None) for name in decode_tty(data)]

    def close(self) -> None:
        if self._saved is not None:
            import termios

            termios.tcsetattr(self._fd, termios.TCSADRAIN, self._saved)
            self._saved = None
        if self._own and self._fd >= 0:
            os.close(self._fd)
        self._fd, self._own = -1, False


def _open_evdev(path: str | None, want: str, matches: Any) -> Any:
    try:
        import evdev
    except ImportError as exc:
        raise TeleopError(want, f"needs evdev (pip install robotrl[teleop]): {exc}") from exc
    if path is None:
        devices = [evdev.InputDevice(p) for p in evdev.list_devices()]
        found = [d for d in devices if matches(d, evdev.ecodes)]
        for d in devices:
            if not found or d is not found[0]:
                d.close()
        if not found:
            raise TeleopError(want, f"no {want} among the readable /dev/input devices ({len(devices)} found); plug "
                                    "it in, add yourself to the input group, or set teleop.device")
        return found[0]
    try:
        return evdev.InputDevice(path)
    except OSError as exc:
        raise TeleopError(want, f"cannot open {path} ({exc.strerror})") from exc


class EvdevInput:
    """Raw (type, code, value) events of one evdev device, read without blocking; ``absinfo(code)`` is an axis's
    (min, max). A device that disappears raises :class:`TeleopError`."""

    def __init__(self, path: str | None, want: str, matches: Any = None) -> None:
        self.path, self.want, self._matches, self.device = path, want, matches or (lambda d, e: True), None

    def open(self) -> None:
        self.device = _open_evdev(self.path, self.want, self._matches)

    def read(self) -> list[tuple[int, int, int]]:
        try:
            return [(e.type, e.code, e.value) for e in self.device.read()]
        except BlockingIOError:
            return []
        except OSError as exc:  # ENODEV: unplugged
            if exc.errno == errno.EAGAIN:
                return []
            raise TeleopError(self.want, f"{self.device.path} was lost ({exc.strerror or exc})") from exc

    def absinfo(self, code: int) -> tuple[int, int]:
        info = self.device.absinfo(code)
        return info.min, info.max

    def close(self) -> None:
        if self.device is not None:
            self.device.close()
            self.device = None


class EvdevKeys:
    """Key presses and releases of an evdev keyboard (held keys are known, unlike on a terminal)."""

    releases = True

    def __init__(self, path: str | None = None) -> None:
        self.input = EvdevInput(path, "keyboard", lambda d, e: e.KEY_SPACE in d.capabilities().get(e.EV_KEY, []))

    def open(self) -> None:
        self.input.open()

    def read(self) -> list[KeyPress]:
        from evdev import ecodes

        out: list[KeyPress] = []
        for kind, code, value in self.input.read():
            if kind != ecodes.EV_KEY or value == 2:  # 2: auto-repeat of a key already down
                continue
            out.append((evdev_name(ecodes.KEY.get(code) or ecodes.BTN.get(code, str(code))), value == 1))
        return out

    def close(self) -> None:
        self.input.close()


def evdev_name(code_name: Any) -> str:
    """``KEY_SPACE`` -> ``space`` (the first name when evdev lists aliases)."""
    if isinstance(code_name, (list, tuple)):
        code_name = code_name[0]
    return str(code_name).removeprefix("KEY_").lower()
