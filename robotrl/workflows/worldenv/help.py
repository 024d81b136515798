"""``robotrl worldenv --help``: the stages and every key of ``configs/worldenv/default.yaml`` with its default and
its description, taken from the comment beside the key in that file (one place to document a setting)."""

from __future__ import annotations

import re
import textwrap
from typing import Any

from robotrl.overrides import config_dir

STAGES = {  # stage -> (module, function, one line about it)
    "collect": ("collect", "collect", "demos, noisy demos, random actions, VLA rollouts"),
    "train-vla": ("vla", "train_vla", "behaviour-clone the VLA on the demos of all tasks"),
    "train-model": ("world_model", "train_model", "the action-conditioned latent video world model"),
    "train-reflector": ("reflector", "train_reflector", "the CLIP success judge (real + model frames)"),
    "post-train": ("post_train", "post_train", "RL of the VLA in WorldEnv; sim eval before/after"),
    "fidelity": ("fidelity", "fidelity", "WorldEnv vs simulator success; the powered r >= 0.8 gate"),
}
_KEY = re.compile(r"^(?P<indent> *)(?P<key>[A-Za-z_][\w-]*):(?P<value>[^#]*)(#\s?(?P<doc>.*))?$")
_MORE = re.compile(r"^ +#\s?(?P<doc>.*)$")  # an indented comment line continues the key above it


def key_docs(text: str) -> dict[str, str]:
    """``section.key`` -> the comment beside it (and on the indented comment lines below it) in a YAML text."""
    docs: dict[str, str] = {}
    path: list[tuple[int, str]] = []
    last = None
    for line in text.splitlines():
        more = _MORE.match(line)
        if more and last is not None:
            docs[last] = f"{docs[last]} {more['doc'].strip()}".strip()
            continue
        m = _KEY.match(line)
        if not m:
            last = None
            continue
        indent = len(m["indent"])
        while path and path[-1][0] >= indent:
            path.pop()
        last = ".".join([k for _, k in path] + [m["key"]])
        path.append((indent, m["key"]))
        docs[last] = (m["doc"] or "").strip()
    return docs


def _fmt(value: Any) -> str:
    if value is None:
        return "null"
    if isinstance(value, bool):
        return str(value).lower()
    if hasattr(value, "__len__") and not isinstance(value, str):
        return "[" + ",".join(_fmt(v) for v in value) + "]"
    return str(value)


def _entry(key: str, value: str, doc: str) -> list[str]:
    return [f"  {key}={value}", *textwrap.wrap(doc or "(undocumented)", 80, initial_indent="      ",
                                               subsequent_indent="      ", break_on_hyphens=False)]


def worldenv_help() -> str:
    """The help text, every line within 80 columns."""
    from robotrl.workflows.worldenv.settings import default_config

    cfg = default_config()
    docs = key_docs((config_dir() / "worldenv" / "default.yaml").read_text())
    keys: list[str] = []
    for key, value in cfg.items():
        if key == "instructions":
            keys += _entry("instructions.<task>", "TEXT", f"{docs.get(key, '')}; {len(value)} tasks: "
                                                          f"{', '.join(value)}")
        elif hasattr(value, "items"):
            keys += [line for k, v in value.items() if not hasattr(v, "items")
                     for line in _entry(f"{key}.{k}", _fmt(v), docs.get(f"{key}.{k}", ""))]
        else:
            keys += _entry(key, _fmt(value), docs.get(key, ""))
    stages = [f"  {name:<17}{about}" for name, (_, _, about) in STAGES.items()]
    about = textwrap.fill(
        "World-Env (arXiv 2509.24948) at toy scale: every stage reads and writes under out=DIR, carries the settings "
        "in DIR/config.yaml (later stages reuse them), records the ones it ran with in its own folder's "
        "config.yaml (e.g. DIR/vla/config.yaml) and resumes from its checkpoint when run again. Order: "
        "collect, train-vla, collect (adds the VLA's rollouts), train-model, train-reflector, post-train, "
        "fidelity.", 80)
    return "\n".join([
        "usage: robotrl worldenv STAGE out=DIR [key=value ...]", "", about,
        "", "stages:", *stages, "", "keys (configs/worldenv/default.yaml; key=value or section.key=value):", *keys, "",
        "examples:",
        "  robotrl worldenv collect out=runs/worldenv/s1 seed=1 \\",
        "      tasks=[reach,drawer-close,button-press-topdown]",
        "  robotrl worldenv train-vla out=runs/worldenv/s1 vla.steps=2000",
        "  robotrl worldenv post-train out=runs/worldenv/s1 device=cuda",
        "  robotrl worldenv fidelity out=runs/worldenv/s1"])


# ------------------------------------------------------------------------------------------------ the command
# one block appended to the module (it merges cleanly with edits of the body), hence the late import
from robotrl.commands import Args, Command  # noqa: E402


def run_stage(args: Args) -> int:
    """``robotrl worldenv STAGE out=DIR key=value ...``: the stage reads its own settings (``default.yaml`` <-
    ``DIR/config.yaml`` <- the ``key=value`` arguments)."""
    import importlib
    import shlex
    import sys

    from robotrl.errors import ConfigError

    if not args.raw:
        print(worldenv_help())
        return 0
    stage, rest = args.raw[0], args.raw[1:]
    if stage not in STAGES:
        raise ConfigError(f"unknown worldenv stage {stage!r}; expected one of {', '.join(STAGES)}")
    outs = [a.partition("=")[2] for a in rest if a.startswith("out=")]
    if len(outs) != 1 or not outs[0]:
        raise ConfigError(f"robotrl worldenv {stage} needs exactly one out=DIR (the World-Env run directory)")
    bad = [a for a in rest if "=" not in a]
    if bad:
        raise ConfigError(f"unexpected argument {bad[0]!r}; expected key=value (see robotrl worldenv --help)")
    module, func, _ = STAGES[stage]
    run = getattr(importlib.import_module(f"robotrl.workflows.worldenv.{module}"), func)
    try:
        run(outs[0], [a for a in rest if not a.startswith("out=")])
    except KeyboardInterrupt:  # every stage checkpoints as it goes (state.pt, rows.json, one folder per collection)
        print(f"robotrl: interrupted; the last checkpoint in {outs[0]} is intact; continue with: "
              f"{shlex.join(['robotrl', 'worldenv', *args.raw])}", file=sys.stderr)
        return 130
    return 0


COMMAND = Command(
    name="worldenv", summary="World-Env: a VLA post-trained inside a learned video world model",
    usage="robotrl worldenv STAGE out=DIR [key=value ...]", about="World-Env stages", run=run_stage,
    text=worldenv_help)
