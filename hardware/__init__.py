"""Hardware layer: robots behind a safety layer (``robot=`` config group).

``make_robot(cfg)`` validates the config's ``limits:`` against the robot's vendor limits *before* anything is
built or connected, builds the driver registered under ``cfg.name`` (vendor SDKs are imported only then), and
wraps it in :class:`~robotrl.hardware.safety.SafetyLayer`. ``robot=none`` means no hardware.

Adding an arm: one class (a :class:`~robotrl.hardware.robot.Robot` subclass with ``from_config``, declaring
``renders_env_scene``/``gives_reward`` if it is a simulator) registered in ``ROBOTS`` below (a
:class:`robotrl.registry.Registry`, the one registration style of name-picked plug-ins), and one
``configs/robot/<name>.yaml``.
"""

from __future__ import annotations

from typing import Any

from robotrl.config import config_dict
from robotrl.errors import ConfigError
from robotrl.registry import Registry

# imported lazily so that an arm's SDK is only needed when that arm is used
ROBOTS = Registry("robot", "robots", {
    "franka": "robotrl.hardware.franka:FrankaRobot",
    "mock": "robotrl.hardware.mock:MockRobot",
    "sim": "robotrl.hardware.sim:SimRobot",
    "so101": "robotrl.hardware.so101:SO101Robot",
})


def robot_names() -> list[str]:
    """Registered robot names (``robot=<name>``), besides ``none``."""
    return ROBOTS.names()


def robot_class(name: str) -> Any:
    """The Robot subclass registered as ``name`` (imports its module)."""
    return ROBOTS.load(name)


def _camera_rig(name: str, cfg: dict[str, Any]) -> Any:
    """Pop ``cameras`` (when a mapping) and ``max_camera_skew_ms`` from ``cfg``: a CameraRig, or None."""
    from collections.abc import Mapping

    skew = cfg.pop("max_camera_skew_ms", None)
    if "cameras" in cfg and cfg["cameras"] is None:  # null: no camera devices (franka.yaml, so101.yaml)
        del cfg["cameras"]
    cams = cfg.get("cameras")
    if not isinstance(cams, Mapping) and not (hasattr(cams, "items") and hasattr(cams, "keys")):
        if skew is not None:
            raise ConfigError(f"robot.max_camera_skew_ms={skew!r} is set but robot.cameras is not a mapping of "
                              "cameras (e.g. robot.cameras={front: {type: opencv, index: 0}})")
        return None
    cfg.pop("cameras")
    if robot_class(name).renders_env_scene:
        raise ConfigError("robot=sim renders its cameras from the Meta-World scene: robot.cameras is a list of scene "
                          "camera names (e.g. [corner2]), not camera devices")
    from robotrl.hardware.cameras import DEFAULT_MAX_SKEW_MS, make_rig

    if skew is not None and (isinstance(skew, bool) or not isinstance(skew, (int, float)) or not skew > 0):
        raise ConfigError(f"robot.max_camera_skew_ms={skew!r}, expected a number of ms > 0 (or null: "
                          f"{DEFAULT_MAX_SKEW_MS:g})")
    if name == "mock":
        cfg["cameras"] = []  # the real cameras replace the mock's generated ones
    return make_rig(cams, DEFAULT_MAX_SKEW_MS if skew is None else float(skew)) if cams else None


def make_robot(cfg: Any, **safety_kwargs: Any) -> Any:
    """Build ``SafetyLayer(driver, limits)`` from a ``robot=`` config; nothing connects until ``connect()``/``with``.

    Raises ConfigError (one line, naming the field) for an unknown robot, unknown keys, invalid limits, invalid
    cameras or an invalid ``frame_map`` (policy frame -> arm base frame; the identity when absent).

    ``cameras`` as a mapping (``robot.cameras={front: {type: opencv, index: 0, ...}}``) attaches real cameras to
    any arm but ``sim`` (a :class:`~robotrl.hardware.cameras.CameraRig`; ``max_camera_skew_ms`` flags steps whose
    frames lie further apart); as a list it names the scene cameras of ``sim`` or the generated ones of ``mock``.
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
    rig = _camera_rig(name, cfg)
    driver = cls.from_config(cfg)
    driver.validate_limits(limits)
    if rig is not None:
        driver.attach_cameras(rig)
    layer = SafetyLayer(driver, limits, **safety_kwargs)
    layer.frame_map = frame_map  # the training env's frame on this arm's (robotrl.hardware.frame_map)
    return layer
