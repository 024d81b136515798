"""Teleoperation devices (``teleop=`` config group, ``configs/teleop/*.yaml``), one file per kind: ``keyboard``
(this terminal or an evdev keyboard), ``gamepad`` and ``spacemouse`` (evdev), ``so101_leader`` (a leader arm on its
own Feetech bus), ``scripted`` (a fixed list of polls: tests and CI). Each is a
:class:`~robotrl.hardware.teleop.base.Teleop` whose ``poll`` gives a
:class:`~robotrl.hardware.teleop.base.TeleopCommand` in robot ``Action`` units plus events (take-over / hand-back,
success / failure, re-record / discard). Device libraries are imported only when a device is built.
"""

from __future__ import annotations

from typing import Any

from robotrl.hardware.teleop.base import (
    INTERVENTION_MODES,
    InterventionLatch,
    Teleop,
    TeleopCommand,
    TeleopError,
    TeleopEvent,
)

from robotrl.config import config_dict
from robotrl.errors import ConfigError
from robotrl.registry import Registry

# imported when that device is built (its input library with it)
TELEOPS = Registry("teleop", "teleop devices", {
    "gamepad": "robotrl.hardware.teleop.gamepad:GamepadTeleop",
    "keyboard": "robotrl.hardware.teleop.keyboard:KeyboardTeleop",
    "scripted": "robotrl.hardware.teleop.scripted:ScriptedTeleop",
    "so101_leader": "robotrl.hardware.teleop.so101_leader:SO101LeaderTeleop",
    "spacemouse": "robotrl.hardware.teleop.spacemouse:SpaceMouseTeleop",
})


def teleop_names() -> list[str]:
    """Registered devices (``teleop=<name>``), besides ``none``."""
    return TELEOPS.names()


def make_teleop(cfg: Any, **kwargs: Any) -> Teleop | None:
    """The device a ``teleop=`` config names (not yet connected); None for ``teleop=none``. ``kwargs`` go to the
    class's ``from_config`` (tests hand in scripted sources and clocks)."""
    from omegaconf import OmegaConf

    if OmegaConf.is_config(cfg):  # a composed config: keep ``???`` (unset) values as strings for the checks below
        cfg = OmegaConf.to_container(cfg, resolve=True, throw_on_missing=False)
    cfg = config_dict(cfg, "teleop config")
    name = cfg.get("name")
    if name in (None, "none"):
        return None
    if name not in TELEOPS.entries:
        raise ConfigError(f"unknown teleop {name!r}; valid: {['none', *teleop_names()]}")
    return TELEOPS.load(name).from_config(cfg, **kwargs)


__all__ = ["INTERVENTION_MODES", "InterventionLatch", "Teleop", "TeleopCommand", "TeleopError", "TeleopEvent",
           "make_teleop", "teleop_names"]
