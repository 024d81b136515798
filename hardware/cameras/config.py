"""Camera configs (``robot.cameras={front: {type: opencv, index: 0, width: 640, height: 480, fps: 30}}``), checked
before anything opens: every error is one line naming the key, the bad value and what was expected."""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robotrl.config import config_dict
from robotrl.errors import ConfigError

CAMERA_TYPES = ("opencv", "realsense")
ROTATIONS = (0, 90, 180, 270)  # degrees clockwise


@dataclass(frozen=True)
class CameraConfig:
    """One camera. Image keys: the device is asked for ``width x height`` at ``fps``; each frame is then rotated
    (clockwise), cropped (``[top, left, height, width]`` of the rotated image) and resized to ``resize``
    (``[height, width]``: the policy's image size), in the capture thread, so the control loop pays nothing."""

    type: str
    width: int | None = None  # None: the device's default
    height: int | None = None
    fps: float | None = None
    rotation: int = 0
    crop: tuple[int, int, int, int] | None = None
    resize: tuple[int, int] | None = None
    warmup_frames: int = 5  # the first frames after (re)connecting are dropped: auto-exposure is still settling
    connect_timeout_s: float = 5.0  # connect fails (naming the camera) without a frame after warm-up within this
    max_frame_age_ms: float = 200.0  # a read whose newest frame is older is invalid (the arm holds)
    max_repeat_reads: int = 5  # the Nth read in a row that sees no new frame is invalid (a frozen stream)
    reconnect_s: float = 3.0  # a lost camera is re-opened for this long, then it faults
    retry_interval_s: float = 0.2
    # opencv
    index: int | None = None
    path: str | None = None  # /dev/videoN, a by-id path, or a video file (played at its fps; tests, replays)
    fourcc: str | None = "MJPG"  # asked of a device before size and fps (USB-2 bandwidth); None: leave it
    loop: bool = False  # a video file restarts at its end instead of ending (which counts as an unplug)
    # realsense
    serial: str | None = None
    file: str | None = None  # a recorded .db3/.bag played back instead of a device
    use_depth: bool = False  # depth (uint16 mm) aligned to the colour image, in Frame.depth

    @property
    def output_size(self) -> tuple[int, int] | None:
        """(height, width) of the frames handed out, when the config fixes it (None: known after connect)."""
        if self.resize is not None:
            return self.resize
        if self.crop is not None:
            return self.crop[2], self.crop[3]
        if self.width is None or self.height is None:
            return None
        return (self.width, self.height) if self.rotation in (90, 270) else (self.height, self.width)


_COMMON = {"type", "width", "height", "fps", "rotation", "crop", "resize", "warmup_frames", "connect_timeout_s",
           "max_frame_age_ms", "max_repeat_reads", "reconnect_s", "retry_interval_s"}
_KEYS = {"opencv": _COMMON | {"index", "path", "fourcc", "loop"},
         "realsense": _COMMON | {"serial", "file", "use_depth"}}


def _number(where: str, value: Any, *, integer: bool = False, minimum: float = 0.0, strict: bool = True) -> Any:
    ok = not isinstance(value, bool) and isinstance(value, int if integer else (int, float))
    ok = ok and math.isfinite(value) and (value > minimum if strict else value >= minimum)
    if not ok:
        kind = "an integer" if integer else "a number"
        raise ConfigError(f"{where}={value!r}: expected {kind} {'>' if strict else '>='} {minimum:g}")
    return value


def _int_list(where: str, value: Any, n: int, what: str) -> tuple[int, ...]:
    if isinstance(value, int) and not isinstance(value, bool) and n == 2:
        value = [value, value]  # resize: 84 means 84 x 84
    items = list(value) if isinstance(value, (list, tuple)) or hasattr(value, "__iter__") else None
    if (items is None or isinstance(value, (str, Mapping)) or len(items) != n
            or any(isinstance(v, bool) or not isinstance(v, int) for v in items)):
        raise ConfigError(f"{where}={value!r}: expected {what}")
    return tuple(items)


def parse_camera(name: str, cfg: Any, where: str = "robot.cameras") -> CameraConfig:
    """One camera's config, validated; ``where`` prefixes the key in error messages."""
    where = f"{where}.{name}"
    cfg = config_dict(cfg, where)
    kind = cfg.get("type")
    if kind not in CAMERA_TYPES:
        raise ConfigError(f"{where}.type={kind!r}: expected one of {list(CAMERA_TYPES)}")
    unknown = sorted(set(cfg) - _KEYS[kind])
    if unknown:
        raise ConfigError(f"unknown key {where}.{unknown[0]} for a {kind} camera; valid: {sorted(_KEYS[kind])}")
    out: dict[str, Any] = {"type": kind}
    for key in ("width", "height"):
        if cfg.get(key) is not None:
            out[key] = _number(f"{where}.{key}", cfg[key], integer=True)
    if cfg.get("fps") is not None:
        out["fps"] = float(_number(f"{where}.fps", cfg["fps"]))
    for key in ("connect_timeout_s", "max_frame_age_ms", "reconnect_s", "retry_interval_s"):
        if key in cfg:
            out[key] = float(_number(f"{where}.{key}", cfg[key], strict=key == "max_frame_age_ms"))
    for key in ("warmup_frames", "max_repeat_reads"):
        if key in cfg:
            out[key] = _number(f"{where}.{key}", cfg[key], integer=True, strict=key == "max_repeat_reads")
    rotation = cfg.get("rotation", 0)
    if rotation not in ROTATIONS or isinstance(rotation, bool):
        raise ConfigError(f"{where}.rotation={rotation!r}: expected one of {list(ROTATIONS)} (degrees clockwise)")
    out["rotation"] = rotation
    if cfg.get("crop") is not None:
        crop = _int_list(f"{where}.crop", cfg["crop"], 4, "[top, left, height, width] in pixels")
        if crop[0] < 0 or crop[1] < 0 or crop[2] <= 0 or crop[3] <= 0:
            raise ConfigError(f"{where}.crop={list(crop)}: top/left must be >= 0 and height/width > 0")
        out["crop"] = crop
    if cfg.get("resize") is not None:
        resize = _int_list(f"{where}.resize", cfg["resize"], 2, "[height, width] in pixels, or one int for a square")
        if min(resize) <= 0:
            raise ConfigError(f"{where}.resize={list(resize)}: expected sizes > 0")
        out["resize"] = resize
    (_opencv_keys if kind == "opencv" else _realsense_keys)(where, cfg, out)
    config = CameraConfig(**out)
    _check_consistent(where, config)
    return config


def _opencv_keys(where: str, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    index, path = cfg.get("index"), cfg.get("path")
    if (index is None) == (path is None):
        raise ConfigError(f"{where}: an opencv camera needs exactly one of index (e.g. 0) or path "
                          f"(e.g. /dev/video0 or a video file); got index={index!r}, path={path!r}")
    if index is not None:
        out["index"] = _number(f"{where}.index", index, integer=True, strict=False)
    if path is not None:
        if not isinstance(path, str) or not path:
            raise ConfigError(f"{where}.path={path!r}: expected a device path or video file path")
        out["path"] = path
    fourcc = cfg.get("fourcc", "MJPG")
    if fourcc is not None and (not isinstance(fourcc, str) or len(fourcc) != 4):
        raise ConfigError(f"{where}.fourcc={fourcc!r}: expected a 4-character code such as 'MJPG', or null")
    out["fourcc"] = fourcc
    out["loop"] = _bool(f"{where}.loop", cfg.get("loop", False))


def _realsense_keys(where: str, cfg: dict[str, Any], out: dict[str, Any]) -> None:
    serial, file = cfg.get("serial"), cfg.get("file")
    if (serial is None) == (file is None):
        raise ConfigError(f"{where}: a realsense camera needs exactly one of serial (the device's serial number) or "
                          f"file (a recorded .db3/.bag); got serial={serial!r}, file={file!r}")
    if serial is not None:
        out["serial"] = str(serial)  # yaml reads an all-digit serial as an int
    if file is not None:
        out["file"] = str(file)
    out["use_depth"] = _bool(f"{where}.use_depth", cfg.get("use_depth", False))
    for key in ("width", "height", "fps"):  # pyrealsense2 needs an exact stream profile
        if out.get(key) is None:
            raise ConfigError(f"{where}.{key} is missing: a realsense camera needs width, height and fps")


def _bool(where: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise ConfigError(f"{where}={value!r}: expected true or false")
    return value


def _check_consistent(where: str, c: CameraConfig) -> None:
    """Settings that can never work together fail here, not as a hold on the first step."""
    if c.fps is not None and c.max_frame_age_ms < 1.5e3 / c.fps:
        raise ConfigError(f"{where}.max_frame_age_ms={c.max_frame_age_ms:g} is shorter than 1.5 frame periods at "
                          f"fps={c.fps:g} ({1.5e3 / c.fps:.0f} ms): every read would be stale")
    if c.crop is not None and c.width is not None and c.height is not None:
        h, w = (c.width, c.height) if c.rotation in (90, 270) else (c.height, c.width)
        top, left, ch, cw = c.crop
        if top + ch > h or left + cw > w:
            raise ConfigError(f"{where}.crop={list(c.crop)} reaches past the {h}x{w} (height x width) image "
                              f"after rotation={c.rotation}")


def parse_cameras(cfg: Any, where: str = "robot.cameras") -> dict[str, CameraConfig]:
    """``{name: CameraConfig}`` from a mapping of camera name to camera config (None or {} = no cameras)."""
    if cfg is None:
        return {}
    cfg = config_dict(cfg, where)
    out = {}
    for name, cam in cfg.items():
        if not isinstance(name, str) or not name.isidentifier():
            raise ConfigError(f"{where}: camera name {name!r} must be a word (letters, digits, _), e.g. front")
        out[name] = parse_camera(name, cam, where)
    return out


def config_keys(kind: str) -> list[str]:
    """The keys a ``kind`` camera accepts (for help texts)."""
    return sorted(_KEYS[kind])


__all__ = ["CAMERA_TYPES", "CameraConfig", "config_keys", "parse_camera", "parse_cameras"]
