"""What a ``robotrl`` command is: its name, what it does, its options (default and doc, in one place) and the callable
that runs it. Each workflow module exports its ``COMMAND`` (a block at its end); ``robotrl.cli`` is the registry that
finds them, renders their help and parses their ``key=value`` arguments.

Core (no plug-in or workflow imports): workflows build these, the CLI reads them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any


@dataclass(frozen=True)
class Option:
    """One ``key=value`` option: its default (whose type is the value's type), its one-line doc and, for a number, its
    range (a kind of :data:`robotrl.params.KINDS`, checked when the command line is parsed; None: any number)."""

    default: Any
    doc: str
    range: str | None = None


@dataclass(frozen=True)
class Args:
    """A parsed command line: every option (typed; the default where not given), the ``PREFIX.KEY=VALUE``
    arguments set aside for the command (as typed, in order), the positional arguments, and all arguments as typed."""

    opts: dict[str, Any]
    extra: list[str]
    positional: list[str]
    raw: list[str]

    def given(self) -> set[str]:
        """The option keys typed on the command line (as opposed to defaults)."""
        return {a.partition("=")[0] for a in self.raw}

    def group(self, prefix: str) -> dict[str, str]:
        """``{KEY: VALUE}`` of the ``prefix.KEY=VALUE`` arguments."""
        found = {}
        for arg in self.extra:
            key, _, value = arg.partition("=")
            head, dot, rest = key.partition(".")
            if dot and head == prefix:
                found[rest] = value
        return found


@dataclass(frozen=True)
class Command:
    """A ``robotrl NAME ...`` command.

    ``prefixes``: arguments starting with one of them (``robot.``: ``robot.hostname=...``) are handed to ``run`` in
    ``Args.extra`` instead of being options; ``("*",)`` takes every dotted key (``sim2real``'s ``ROBOT.KEY=VALUE``).
    ``positional``: the metavar of the positional arguments a command takes; ``RUN_DIR...`` (ending in ``...``):
    one or more, else any number. Such a command also takes ``--key value`` for its options.
    ``text``: a command that is not ``key=value`` (``train``: hydra; ``worldenv``: a stage's own config) gives its own
    help text, and ``run`` gets the arguments as typed.
    """

    name: str
    summary: str
    usage: str
    about: str
    run: Callable[[Args], int]
    options: Mapping[str, Option] = field(default_factory=dict)
    examples: tuple[str, ...] = ()
    footer: str = ""
    prefixes: tuple[str, ...] = ()
    positional: str | None = None
    text: Callable[[], str] | None = None

    @property
    def defaults(self) -> dict[str, Any]:
        return {k: o.default for k, o in self.options.items()}


def options(defaults: Mapping[str, Any], docs: Mapping[str, str],
            ranges: Mapping[str, str] | None = None) -> dict[str, Option]:
    """``{key: Option}`` from a defaults and a docs mapping with the same keys (a key without a doc is a bug) and the
    ranges of the numeric ones (``{"episodes": "positive_int"}``)."""
    ranges = dict(ranges or {})
    if set(defaults) != set(docs) or not set(ranges) <= set(defaults):
        raise AssertionError(f"options without a doc: {sorted(set(defaults) - set(docs))}; docs without an option: "
                             f"{sorted(set(docs) - set(defaults))}; ranges without an option: "
                             f"{sorted(set(ranges) - set(defaults))}")
    return {k: Option(v, docs[k], ranges.get(k)) for k, v in defaults.items()}


def shown(value: Any) -> str:
    """A value as it is typed on the command line (``null``, ``true``)."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    return str(value)


# ------------------------------------------------------------------------------------------------ errors
def torchrun_rank() -> int:
    """This process's rank under torchrun (0 without it)."""
    return int(os.environ.get("RANK", "0")) if int(os.environ.get("WORLD_SIZE", "1")) > 1 else 0


def print_error(error: Exception, refusal: bool = True) -> None:
    """``robotrl: error: ...`` on stderr. Under torchrun every rank meets the same refusal (a bad config, an agent
    without a data-parallel learner): rank 0 alone prints it; an error during training names its rank."""
    rank = torchrun_rank()
    if rank > 0 and refusal:
        return
    print(f"robotrl: error: {f'rank {rank}: ' if rank else ''}{error}", file=sys.stderr)
