"""Command-line style ``key=value`` arguments and hydra group choices, checked early with one-line errors.

Core (no plug-in or workflow imports) so that the CLI and every workflow parsing ``key=value`` options share it.
"""

from __future__ import annotations

import difflib
import math
from importlib import resources
from pathlib import Path
from typing import Any

from robotrl.errors import ConfigError

GROUPS = ("agent", "env", "reward", "robot", "teleop", "collector", "experiment")


def config_dir() -> Path:
    """The packaged hydra config folder (``robotrl.configs``)."""
    return Path(str(resources.files("robotrl.configs")))


def group_options(group: str) -> list[str]:
    """Every config name of hydra group ``group`` (e.g. ``dmc/walker_walk`` for ``env``), sorted."""
    root = config_dir() / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


# group -> (the start of a choice that moved, its new spelling with {rest} for what follows that start)
MOVED_CHOICES = {"reward": ("kagi/", "KAGI's plans are plan data, not rewards: use reward=kagi reward.plan={rest} "
                                     "(reward=kagi alone takes the env task's plan)")}


def check_moved_choices(overrides: list[str]) -> None:
    """One line naming the new spelling for a group choice spelt the old way (``reward=kagi/push``)."""
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        start, spelling = MOVED_CHOICES.get(key, (None, ""))
        for name in value.split(",") if sep and start else ():
            if name.startswith(start):
                raise ConfigError(f"{key}={name} is gone; {spelling.format(rest=name[len(start):])}")


def check_group_choices(overrides: list[str]) -> None:
    """Fail early, in one line, on `group=name` overrides naming a config that does not exist."""
    check_moved_choices(overrides)
    for item in overrides:
        key, sep, value = item.lstrip("+~").partition("=")
        if not sep or key not in GROUPS or value in ("", "null"):
            continue
        valid = group_options(key)
        for name in value.split(","):
            if name not in valid:
                close = difflib.get_close_matches(name, valid, n=3)
                hint = f"did you mean {', '.join(close)}? " if close else ""
                raise ConfigError(f"unknown {key} {name!r}; {hint}valid {key} names: {', '.join(valid)}")


def parse_kv(args: list[str], defaults: dict[str, Any]) -> dict[str, Any]:
    """Parse key=value arguments into ``defaults``' keys, converting to the default's type."""
    out = dict(defaults)
    for arg in args:
        key, sep, value = arg.partition("=")
        if not sep or key not in defaults:
            raise ConfigError(f"unexpected argument {arg!r}; expected key=value with key in {', '.join(defaults)}")
        kind = type(defaults[key]) if defaults[key] is not None else str
        if kind is bool:
            if value.lower() not in ("true", "false"):
                raise ConfigError(f"{key}={value!r}, expected true or false")
            out[key] = value.lower() == "true"
        else:
            try:
                out[key] = kind(value)
            except ValueError:
                raise ConfigError(f"{key}={value!r}, expected {_KIND_NAMES.get(kind, kind.__name__)}") from None
            if kind is float and math.isnan(out[key]):  # float("nan") parses, and then every comparison is False
                raise ConfigError(f"{key}={value!r}, expected a number, not NaN")
    return out


_KIND_NAMES = {int: "an integer", float: "a number", str: "a string"}


# ------------------------------------------------------------------------------------------------ hydra overrides
def compose_config(overrides: list[str], name: str = "config") -> Any:
    """The composed config ``name`` (the training config by default; ``worldenv/default`` for World-Env) for
    ``overrides`` (hydra's compose API), its multi-line composition errors turned into one ConfigError line."""
    from hydra import compose, initialize_config_module
    from hydra.errors import HydraException

    from robotrl.config import register_hydra

    register_hydra()
    check_moved_choices(overrides)
    try:
        with initialize_config_module("robotrl.configs", version_base="1.3"):
            return compose(name, overrides=overrides)
    except HydraException as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ConfigError(f"cannot compose the config with overrides {overrides}: {first}") from None


def _parse_overrides(overrides: list[str]) -> list[Any]:
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from hydra.errors import OverrideParseException

    try:
        return OverridesParser.create().parse_overrides(overrides)
    except OverrideParseException as e:
        first = str(e).strip().splitlines()[0]
        raise ConfigError(f"cannot parse the overrides {overrides}: {first}; expected key=value") from None


def _unknown_key(cfg: Any, key: str) -> ConfigError:
    from omegaconf import DictConfig

    if key.split(".")[0] == "robot_env" and "robot_env" not in cfg:  # it comes with an arm's robot config
        arms = ", ".join(n for n in group_options("robot") if n != "none")
        return ConfigError(f"{key} is a RobotEnv setting of a run on an arm; it needs robot=<arm> ({arms}), "
                           f"not robot={_select(cfg, 'robot.name')}")
    parent_key, _, _ = key.rpartition(".")
    parent = _select(cfg, parent_key) if parent_key else cfg
    if not isinstance(parent, DictConfig):
        return ConfigError(f"unknown config key {key!r}: {parent_key} is not a group of keys")
    valid = sorted(str(k) for k in parent)
    full = [f"{parent_key}.{k}" if parent_key else k for k in valid]
    close = difflib.get_close_matches(key, full, n=1)
    hint = f"did you mean {close[0]}? " if close else ""
    where = f"under {parent_key}" if parent_key else "at the top level"
    return ConfigError(f"unknown config key {key!r}; {hint}valid keys {where}: {', '.join(valid)} "
                       f"(`+{key}=...` adds a new key)")


_MISSING = object()
_REQUIRED = object()  # a key whose default is `???`: it exists, and the command line is where it gets its value


def _select(cfg: Any, key: str) -> Any:
    """``cfg``'s value at dotted ``key`` (interpolations resolved), ``_REQUIRED`` for a key whose default is
    ``???`` (configs/robot/franka.yaml's ``hostname``), or ``_MISSING`` for a key that does not exist."""
    from omegaconf import OmegaConf
    from omegaconf.errors import MissingMandatoryValue

    try:  # throw_on_missing: else OmegaConf answers `default` for a `???` value too, as if the key were absent
        return OmegaConf.select(cfg, key, default=_MISSING, throw_on_missing=True)
    except MissingMandatoryValue:
        return _REQUIRED

_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number"}


_EXTRA_VALUES = {"resume": ("auto",)}  # words a key takes beside its default's kind


def _check_type(key: str, default: Any, value: Any) -> None:
    """A value for a key whose default is a bool/int/float must be of that kind (hydra would keep a string)."""
    kind = type(default)  # _REQUIRED (a `???` default) has no kind to check against
    if kind not in _KIND_NAMES or value is None or value in _EXTRA_VALUES.get(key, ()):
        return
    ok = isinstance(value, bool) if kind is bool else (
        isinstance(value, int | float) and not isinstance(value, bool) and (kind is float or isinstance(value, int)))
    if not ok:
        shown = str(default).lower() if kind is bool else repr(default)  # as written in yaml
        extra = "".join(f" or {word}" for word in _EXTRA_VALUES.get(key, ()))
        raise ConfigError(f"{key}={value!r}, expected {_KIND_NAMES[kind]}{extra} (default {shown})")


def check_overrides(overrides: list[str]) -> None:
    """Validate ``robotrl train`` overrides before hydra runs (a sweep's group choices are checked at their first
    value; every value of a key's choice or range sweep is type-checked).

    Group choices are checked by :func:`check_group_choices`; every other ``key=value`` must name an existing key
    (``+key=value`` adds one) and match its default's kind (bool, int, float). Raises ConfigError in one line
    naming the bad key and the valid ones, where hydra would print a multi-line error and exit 1.
    """
    check_group_choices(overrides)
    parsed = _parse_overrides(overrides)
    groups = [o for o in parsed if o.key_or_group in GROUPS]
    first_choice = [f"{o.key_or_group}={_first(o)}" for o in groups]
    cfg = compose_config(first_choice)
    for o in parsed:
        key = o.key_or_group
        if key in GROUPS or key.startswith("hydra") or o.is_add() or o.is_force_add():
            continue
        default = _select(cfg, key)
        if default is _MISSING:
            raise _unknown_key(cfg, key)
        if o.is_delete():
            continue
        values = list(o.sweep_iterator()) if o.is_sweep_override() and _iterable_sweep(o) else (
            [] if o.is_sweep_override() else [o.value()])
        for value in values:
            _check_type(key, default, value)


def _first(override: Any) -> str:
    if override.is_sweep_override() and _iterable_sweep(override):
        return str(next(iter(override.sweep_string_iterator())))
    return str(override.value())


def _iterable_sweep(override: Any) -> bool:
    from hydra.core.override_parser.types import ChoiceSweep, RangeSweep

    return isinstance(override.value(), ChoiceSweep | RangeSweep)
