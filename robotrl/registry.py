"""One way to register a plug-in chosen by name: a table of ``name -> "package.module:Attribute"``, imported only
when that name is used (an arm's SDK, dm_control or metaworld is needed only by what uses it). Robots, teleop
devices, camera types and env suites register this way; agents and reward models are hydra ``_target_`` classes
named in their config group's yaml, and say what they can do through their class (``robotrl.types.Capabilities``).

Nothing is registered at import time: a table is a literal in its package's ``__init__``, so reading it (names,
``--help``) imports no plug-in.
"""

from __future__ import annotations

import importlib
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from robotrl.errors import ConfigError


def load_entry(entry: str) -> Any:
    """The attribute ``entry`` (``"package.module:Attribute"``) names, importing its module."""
    module, sep, attr = entry.partition(":")
    if not sep or not module or not attr:
        raise ValueError(f"registry entry {entry!r}, expected 'package.module:Attribute'")
    return getattr(importlib.import_module(module), attr)


@dataclass(frozen=True)
class Registry:
    """A plug-in group: ``entries`` maps each name to ``"package.module:Attribute"``; ``kind`` and ``plural`` word
    the one-line error for an unknown name (e.g. ``unknown robot 'ur5'; valid robots: [...]``)."""

    kind: str
    plural: str
    entries: Mapping[str, str]

    def names(self) -> list[str]:
        return sorted(self.entries)

    def load(self, name: str) -> Any:
        """The class (or builder) registered as ``name``; ConfigError naming the valid names otherwise."""
        if name not in self.entries:
            raise ConfigError(f"unknown {self.kind} {name!r}; valid {self.plural}: {self.names()}")
        return load_entry(self.entries[name])
