"""Command-line style ``key=value`` arguments and hydra group choices, checked early with one-line errors.

Core (no plug-in or workflow imports) so that the CLI and every workflow parsing ``key=value`` options share it.
"""

from __future__ import annotations

import difflib
from importlib import resources
from pathlib import Path
from typing import Any

from robotrl.errors import ConfigError

GROUPS = ("agent", "env", "reward", "robot", "experiment")


def config_dir() -> Path:
    """The packaged hydra config folder (``robotrl.configs``)."""
    return Path(str(resources.files("robotrl.configs")))


def group_options(group: str) -> list[str]:
    """Every config name of hydra group ``group`` (e.g. ``dmc/walker_walk`` for ``env``), sorted."""
    root = config_dir() / group
    return sorted(str(p.relative_to(root).with_suffix("")) for p in root.rglob("*.yaml"))


def check_group_choices(overrides: list[str]) -> None:
    """Fail early, in one line, on `group=name` overrides naming a config that does not exist."""
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
                raise ConfigError(f"{key}={value!r}, expected a {kind.__name__}") from None
    return out
