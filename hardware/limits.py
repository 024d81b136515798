"""Safety limits from a robot's config, validated on load (before anything connects).

Every check raises :class:`~robotrl.errors.ConfigError` naming the field (``robot.limits.<key>[i]``), the bad value
and what was expected: lower < upper, every value finite, joint and workspace limits inside the vendor's limits,
velocities and accelerations at most the vendor's (Polymetis' practice: configure inside the vendor limits so that
the vendor's own reflexes stay a last line of defence, not the everyday one).
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass, fields
from typing import Any

import numpy as np
from robotrl.hardware.robot import VendorLimits

from robotrl.errors import ConfigError
from robotrl.params import require

ON_LIMIT = ("clip", "reject")
JOINT_MARGIN_RAD = 0.1  # default joint limits: vendor limits minus this (Polymetis franka_hardware.yaml uses 0.1)


@dataclass(frozen=True)
class SafetyLimits:
    """Validated limits for :class:`~robotrl.hardware.safety.SafetyLayer` (arrays are float64)."""

    control_hz: float  # nominal control rate; the rate monitor flags periods > overrun_factor / control_hz
    watchdog_ms: float  # no fresh command within this -> HOLD
    driver_timeout_ms: float  # a driver call taking longer -> FAULT (typed DriverError)
    on_limit: str  # "clip" (SERL's box clip; default) or "reject" (hold and raise)
    workspace_lower: np.ndarray  # (3,) m
    workspace_upper: np.ndarray  # (3,) m
    ee_max_step: float  # m per command
    ee_max_velocity: float  # m/s
    joint_lower: np.ndarray  # (n,) rad
    joint_upper: np.ndarray  # (n,) rad
    joint_max_step: float  # rad per command
    joint_max_velocity: np.ndarray  # (n,) rad/s
    overrun_factor: float = 2.0  # a period longer than this many nominal periods is an overrun
    max_consecutive_overruns: int = 5  # this many in a row -> HOLD and an error (the loop cannot keep up)
    # Defaults below are for SafetyLimits built by hand; parse_limits derives them from the vendor's limits.
    joint_max_acceleration: np.ndarray | None = None  # (n,) rad/s^2 on commanded joint targets (None: unlimited)
    ee_max_acceleration: float = math.inf  # m/s^2 on commanded end-effector targets, per axis
    workspace_margin_m: float = 0.0  # commanded targets stay this far inside the box (the arm's braking distance)
    max_state_age_ms: float = math.inf  # a robot reading older than this holds the arm

    def ee_step_from_rest(self) -> float:
        """The longest end-effector step per axis that the layer passes unclipped every period from rest: inside
        ``ee_max_step``, the velocity limit over one period and the acceleration limit's first period. A planned
        move made of such steps is where it was planned, not where the layer cut it short."""
        period = 1.0 / self.control_hz
        return min(self.ee_max_step, self.ee_max_velocity * period, self.ee_max_acceleration * period * period)


def _mapping(cfg: Any, where: str) -> dict[str, Any]:
    if isinstance(cfg, Mapping):
        return dict(cfg)
    if hasattr(cfg, "items"):  # OmegaConf DictConfig
        return dict(cfg.items())
    raise ConfigError(f"{where} must be a mapping, got {type(cfg).__name__}")


def _positive(cfg: dict[str, Any], key: str, where: str) -> float:
    value = cfg.get(key)
    require(where, positive={key: value})
    return float(value)


def _vector(cfg: dict[str, Any], key: str, where: str, n: int, default: Any = None) -> np.ndarray:
    value = cfg.get(key)
    value = default if value is None else value
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        value = [value] * n
    try:
        arr = np.asarray(list(value), dtype=np.float64)
    except (TypeError, ValueError):
        raise ConfigError(f"{where}.{key}={value!r}, expected a list of {n} numbers") from None
    if arr.shape != (n,):
        raise ConfigError(f"{where}.{key} has {arr.size} values, expected {n}")
    bad = np.flatnonzero(~np.isfinite(arr))
    if bad.size:
        raise ConfigError(f"{where}.{key}[{bad[0]}]={arr[bad[0]]} is not finite")
    return arr


def _check_range(name: str, lower: np.ndarray, upper: np.ndarray, vlow: Any, vhigh: Any, unit: str) -> None:
    vlow, vhigh = np.asarray(vlow, np.float64), np.asarray(vhigh, np.float64)
    for i, (lo, hi) in enumerate(zip(lower, upper, strict=True)):
        if not lo < hi:
            raise ConfigError(f"{name}_lower[{i}]={lo} must be < {name}_upper[{i}]={hi} {unit}")
        if lo < vlow[i] or hi > vhigh[i]:
            raise ConfigError(
                f"{name}[{i}] range [{lo}, {hi}] {unit} is outside the vendor range [{vlow[i]}, {vhigh[i]}] {unit}"
            )


def _acceleration(cfg: dict[str, Any], key: str, where: str, n: int, vendor: Any, unit: str) -> np.ndarray:
    """An acceleration limit per joint/axis: the configured value (at most the vendor's), or half the vendor's."""
    if cfg.get(key) is None and vendor is None:
        raise ConfigError(f"{where}.{key} is required: this robot's driver states no vendor limit to derive it from "
                          f"({unit})")
    arr = _vector(cfg, key, where, n, None if vendor is None else [0.5 * v for v in vendor])
    for i, value in enumerate(arr):
        vmax = math.inf if vendor is None else vendor[i]
        if not 0 < value <= vmax:
            raise ConfigError(f"{where}.{key}[{i}]={value} {unit}, expected in (0, {vmax}] (vendor limit)")
    return arr


def _workspace_margin(cfg: dict[str, Any], where: str, vel: float, acc: float, lo: np.ndarray,
                      hi: np.ndarray) -> float:
    """How far inside the box commanded targets stay: by default the distance the hand needs to stop from
    ``ee_max_velocity`` at ``ee_max_acceleration`` (v^2 / 2a), so an arm lagging its target stops inside the box."""
    value = cfg.get("workspace_margin_m")
    margin = vel * vel / (2 * acc) if value is None else value
    half = float(np.min(hi - lo)) / 2
    if isinstance(margin, bool) or not isinstance(margin, (int, float)) or not 0 <= margin < half:
        raise ConfigError(f"{where}.workspace_margin_m={margin!r} m, expected a number in [0, {half:.4g}) "
                          "(half the box's smallest side)")
    return float(margin)


MAX_WATCHDOG_MS = 10_000.0  # a silence this long is no watchdog: an arm moving on a stale command for 10 s


def _watchdog_ms(cfg: dict[str, Any], where: str) -> float:
    value = _positive(cfg, "watchdog_ms", where)
    if value > MAX_WATCHDOG_MS:
        raise ConfigError(f"{where}.watchdog_ms={value:g}, expected at most {MAX_WATCHDOG_MS:g} ms (the arm holds when "
                          f"no command came for this long)")
    return value


def parse_limits(cfg: Any, vendor: VendorLimits, where: str = "robot.limits") -> SafetyLimits:
    """Validate ``cfg`` (the ``limits:`` mapping of a robot config) against ``vendor``; raise ConfigError."""
    cfg = _mapping(cfg, where)
    known = {f.name for f in fields(SafetyLimits)}
    unknown = sorted(set(cfg) - known)
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]}; valid keys: {sorted(known)}")
    n = len(vendor.joint_lower)
    on_limit = cfg.get("on_limit", "clip")
    if on_limit not in ON_LIMIT:
        raise ConfigError(f"{where}.on_limit={on_limit!r}, expected one of {list(ON_LIMIT)}")
    ws_lo = _vector(cfg, "workspace_lower", where, 3, vendor.workspace_lower)
    ws_hi = _vector(cfg, "workspace_upper", where, 3, vendor.workspace_upper)
    _check_range(f"{where}.workspace", ws_lo, ws_hi, vendor.workspace_lower, vendor.workspace_upper, "m")
    j_lo = _vector(cfg, "joint_lower", where, n, [v + JOINT_MARGIN_RAD for v in vendor.joint_lower])
    j_hi = _vector(cfg, "joint_upper", where, n, [v - JOINT_MARGIN_RAD for v in vendor.joint_upper])
    _check_range(f"{where}.joint", j_lo, j_hi, vendor.joint_lower, vendor.joint_upper, "rad")
    j_vel = _vector(cfg, "joint_max_velocity", where, n, [0.5 * v for v in vendor.joint_max_velocity])
    for i, (v, vmax) in enumerate(zip(j_vel, vendor.joint_max_velocity, strict=True)):
        if not 0 < v <= vmax:
            raise ConfigError(f"{where}.joint_max_velocity[{i}]={v} rad/s, expected in (0, {vmax}] (vendor limit)")
    ee_vel = _positive(cfg, "ee_max_velocity", where)
    if ee_vel > vendor.ee_max_velocity:
        raise ConfigError(f"{where}.ee_max_velocity={ee_vel} m/s exceeds the vendor limit {vendor.ee_max_velocity}")
    j_acc = _acceleration(cfg, "joint_max_acceleration", where, n, vendor.joint_max_acceleration, "rad/s^2")
    ee_acc = float(_acceleration(cfg, "ee_max_acceleration", where, 1, None if vendor.ee_max_acceleration is None
                                 else (vendor.ee_max_acceleration,), "m/s^2")[0])
    margin = _workspace_margin(cfg, where, ee_vel, ee_acc, ws_lo, ws_hi)
    overruns = cfg.get("max_consecutive_overruns", 5)
    require(where, positive_int={"max_consecutive_overruns": overruns})
    return SafetyLimits(
        control_hz=_positive(cfg, "control_hz", where),
        watchdog_ms=_watchdog_ms(cfg, where),
        driver_timeout_ms=_positive(cfg, "driver_timeout_ms", where),
        on_limit=on_limit,
        workspace_lower=ws_lo,
        workspace_upper=ws_hi,
        ee_max_step=_positive(cfg, "ee_max_step", where),
        ee_max_velocity=ee_vel,
        joint_lower=j_lo,
        joint_upper=j_hi,
        joint_max_step=_positive(cfg, "joint_max_step", where),
        joint_max_velocity=j_vel,
        overrun_factor=_positive({"overrun_factor": cfg.get("overrun_factor", 2.0)}, "overrun_factor", where),
        max_consecutive_overruns=overruns,
        joint_max_acceleration=j_acc,
        ee_max_acceleration=ee_acc,
        workspace_margin_m=margin,
        max_state_age_ms=_positive({"max_state_age_ms": cfg.get("driver_timeout_ms") if cfg.get("max_state_age_ms")
                                    is None else cfg["max_state_age_ms"]}, "max_state_age_ms", where),
    )
