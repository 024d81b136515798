"""Hardware layer: robots behind a safety layer (``robot=`` config group).

``make_robot(cfg)`` validates the config's ``limits:`` against the robot's vendor limits *before* anything is
built or connected, builds the driver registered under ``cfg.name`` (vendor SDKs are imported only then), and
wraps it in :class:`~robotrl.hardware.safety.SafetyLayer`. ``robot=none`` means no hardware.

Adding an arm: one class (a :class:`~robotrl.hardware.robot.Robot` subclass with ``from_config``) registered in
``_ROBOTS`` below, and one ``configs/robot/<name>.yaml``.
"""

from __future__ import annotations

import importlib
from typing import Any

from robotrl.config import config_dict
from robotrl.errors import ConfigError

# name -> (module, class); imported lazily so that an arm's SDK is only needed when that arm is used.
_ROBOTS: dict[str, tuple[str, str]] = {
    "franka": ("robotrl.hardware.franka", "FrankaRobot"),
    "mock": ("robotrl.hardware.mock", "MockRobot"),
    "sim": ("robotrl.hardware.sim", "SimRobot"),
    "so101": ("robotrl.hardware.so101", "SO101Robot"),
}


def robot_names() -> list[str]:
    """Registered robot names (``robot=<name>``), besides ``none``."""
    return sorted(_ROBOTS)


def robot_class(name: str) -> Any:
    """The Robot subclass registered as ``name`` (imports its module)."""
    if name not in _ROBOTS:
        raise ConfigError(f"unknown robot {name!r}; valid robots: {robot_names()}")
    module, cls = _ROBOTS[name]
    return getattr(importlib.import_module(module), cls)


def make_robot(cfg: Any, **safety_kwargs: Any) -> Any:
    """Build ``SafetyLayer(driver, limits)`` from a ``robot=`` config; nothing connects until ``connect()``/``with``.

    Raises ConfigError (one line, naming the field) for an unknown robot, unknown keys, invalid limits or an invalid
    ``frame_map`` (policy frame -> arm base frame; the identity when absent).
    """
    from robotrl.hardware.frame_map import parse_frame_map
    from robotrl.hardware.limits import parse_limits
    from robotrl.hardware.safety import SafetyLayer

    cfg = config_dict(cfg, "robot config")
    name = cfg.pop("name", None)
    if name in (None, "none"):
        raise ConfigError("robot=none has no hardware; choose one of robot=" + "|".join(robot_names()))
    cls = robot_class(name)
    limits = parse_limits(cfg.pop("limits", {}) or {}, cls.vendor_limits)  # before the driver exists
    frame_map = parse_frame_map(cfg.pop("frame_map", None))
    stop_ms = cfg.pop("stop_timeout_ms", None)  # null: the driver's measured default (Robot.stop_timeout_s)
    if stop_ms is not None:
        if isinstance(stop_ms, bool) or not isinstance(stop_ms, (int, float)) or not 0 < stop_ms < float("inf"):
            raise ConfigError(f"robot.stop_timeout_ms={stop_ms!r}, expected null or a number of ms > 0")
        safety_kwargs.setdefault("stop_timeout_s", stop_ms / 1000)
    driver = cls.from_config(cfg)
    driver.validate_limits(limits)
    layer = SafetyLayer(driver, limits, **safety_kwargs)
    layer.frame_map = frame_map  # the training env's frame on this arm's (robotrl.hardware.frame_map)
    return layer
