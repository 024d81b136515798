"""Imports go one way: core <- plug-ins <- workflows <- cli (docs/architecture.md, "Layers").

Every module of the installed package is parsed with ``ast`` (imports inside functions and ``TYPE_CHECKING`` blocks
count too) and each ``robotrl`` import is checked against the importing module's layer:

- layer 0, core: ``robotrl.*`` except the modules below (types, errors, config, overrides, replay, checkpoint,
  logger, augment, demos, ...); ``robotrl.configs`` holds only yaml and counts as core.
- layer 1, plug-ins: ``robotrl.envs``, ``robotrl.agents``, ``robotrl.rewards``, ``robotrl.hardware``. A plug-in may
  import the core and its own kind, not another kind (except the pairs in :data:`ALLOWED`, each with its reason).
- layer 2, workflows: ``robotrl.workflows.*``; they may import everything below.
- layer 3: ``robotrl.cli``, the only module that parses a command line; nothing imports it.
"""

from __future__ import annotations

import ast
import tomllib
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PLUGINS = ("envs", "agents", "rewards", "hardware")
LAYER_NAMES = ("core", "plug-in", "workflow", "cli")

# (importing module, imported module or package): why this plug-in may use another plug-in kind. Keep it short.
ALLOWED: dict[tuple[str, str], str] = {
    ("robotrl.agents.modem", "robotrl.envs"): "MoDem generates Meta-World scripted demos on first use "
                                               "(agent.demos=null); the generator needs the env",
}


def layer(module: str) -> tuple[int, str] | None:
    """(layer, kind) of a ``robotrl`` module; None for anything outside robotrl (third-party, stdlib)."""
    parts = module.split(".")
    if parts[0] != "robotrl":
        return None
    if len(parts) == 1:
        return 0, "core"
    if parts[1] == "cli":
        return 3, "cli"
    if parts[1] == "workflows":
        return 2, "workflows"
    if parts[1] in PLUGINS:
        return 1, parts[1]
    return 0, "core"


def imported_modules(source: str, module: str, is_package: bool) -> list[tuple[int, str]]:
    """(line, dotted target) for every import in ``source``; ``from X import name`` gives ``X.name`` (so that
    ``from robotrl import cli`` is seen as importing ``robotrl.cli``); relative imports are resolved."""
    package = module if is_package else module.rpartition(".")[0]
    found = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(node.lineno, alias.name) for alias in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                parts = package.split(".")
                base = ".".join(parts[: len(parts) - node.level + 1])
                target = f"{base}.{node.module}" if node.module else base
            else:
                target = node.module or ""
            found += [(node.lineno, f"{target}.{alias.name}") for alias in node.names]
    return found


def violations(modules: dict[str, tuple[str, bool]], allowed: dict[tuple[str, str], str] | None = None) -> list[str]:
    """One line per forbidden import in ``modules`` (name -> (source, is_package))."""
    allowed = ALLOWED if allowed is None else allowed
    out = []
    for module, (source, is_package) in sorted(modules.items()):
        own = layer(module)
        assert own is not None, module
        for line, target in imported_modules(source, module, is_package):
            theirs = layer(target)
            if theirs is None:
                continue
            if theirs[0] > own[0]:
                out.append(f"{module}:{line} imports {target}: a {LAYER_NAMES[own[0]]} module may not import a "
                           f"{LAYER_NAMES[theirs[0]]} ({theirs[1]})")
            elif own[0] == theirs[0] == 1 and own[1] != theirs[1]:
                if any(module == src and (target == dst or target.startswith(dst + ".")) for src, dst in allowed):
                    continue
                out.append(f"{module}:{line} imports {target}: plug-in kind {own[1]} may not import plug-in kind "
                           f"{theirs[1]}; move the shared piece into the core or let a workflow pass it in")
    return out


def package_dirs(root: Path = ROOT) -> dict[str, Path]:
    """pyproject's package-dir mapping (robotrl.envs -> envs/ ...), so the test sees what gets installed."""
    config = tomllib.loads((root / "pyproject.toml").read_text())["tool"]["setuptools"]
    return {name: root / path for name, path in config["package-dir"].items()}


def collect(dirs: dict[str, Path]) -> dict[str, tuple[str, bool]]:
    """Module name -> (source, is_package) for every .py file under the mapped folders."""
    modules: dict[str, tuple[str, bool]] = {}
    for package, folder in dirs.items():
        for path in sorted(folder.rglob("*.py")):
            rel = path.relative_to(folder).with_suffix("").parts
            is_package = rel[-1] == "__init__"
            name = ".".join((package, *(rel[:-1] if is_package else rel)))
            modules[name] = (path.read_text(), is_package)
    return modules


# ------------------------------------------------------------------------------------------------ the repo
def test_repo_has_no_upward_or_cross_plugin_imports():
    modules = collect(package_dirs())
    assert {"robotrl.cli", "robotrl.workflows.train", "robotrl.agents.drqv2", "robotrl.replay"} <= set(modules)
    assert not violations(modules), "\n".join(violations(modules))


def test_allowed_exceptions_are_still_needed():
    """An exception that no import uses any more is stale: delete it from ALLOWED."""
    modules = collect(package_dirs())
    for (src, dst), reason in ALLOWED.items():
        assert violations({src: modules[src]}, allowed={}), f"ALLOWED[{src}, {dst}] ({reason}) is not used"


# ------------------------------------------------------------------------------------------------ the checker
@pytest.mark.parametrize(("module", "source", "expected"), [
    ("robotrl.replay", "from robotrl.workflows.train import Trainer",
     "robotrl.replay:1 imports robotrl.workflows.train.Trainer: a core module may not import a workflow"),
    ("robotrl.rewards.lfvoid", "def goals():\n    from robotrl import cli\n",
     "robotrl.rewards.lfvoid:2 imports robotrl.cli: a plug-in module may not import a cli"),
    ("robotrl.agents.sb3", "import robotrl.workflows.train as t",
     "robotrl.agents.sb3:1 imports robotrl.workflows.train: a plug-in module may not import a workflow"),
    ("robotrl.rewards.lfvoid", "from robotrl.agents.nets import random_shift",
     "robotrl.rewards.lfvoid:1 imports robotrl.agents.nets.random_shift: plug-in kind rewards may not import "
     "plug-in kind agents"),
    ("robotrl.rewards.kagi", "from ..envs import metaworld",
     "robotrl.rewards.kagi:1 imports robotrl.envs.metaworld: plug-in kind rewards may not import plug-in kind envs"),
    ("robotrl.workflows.goals", "from robotrl.cli import parse_kv",
     "robotrl.workflows.goals:1 imports robotrl.cli.parse_kv: a workflow module may not import a cli"),
])
def test_checker_names_module_and_import(module, source, expected):
    (found,) = violations({module: (source, False)}, allowed={})
    assert found.startswith(expected), found


@pytest.mark.parametrize(("module", "source", "is_package"), [
    ("robotrl.workflows.train", "from robotrl.agents import make_agent\nfrom robotrl.replay import ReplayBuffer",
     False),
    ("robotrl.cli", "def f():\n    from robotrl.workflows.train import Trainer", False),
    ("robotrl.agents.drm", "from .drqv2 import DrQV2Agent\nfrom . import nets", False),
    ("robotrl.agents", "from .nets import schedule\nfrom robotrl.types import Agent", True),
    ("robotrl.rewards.clip", "import numpy as np\nfrom robotrl.config import resolve_device", False),
])
def test_checker_accepts_downward_and_same_kind_imports(module, source, is_package):
    assert violations({module: (source, is_package)}, allowed={}) == []


def test_checker_finds_a_violation_planted_in_a_file(tmp_path):
    (tmp_path / "core").mkdir()
    (tmp_path / "plug").mkdir()
    (tmp_path / "core" / "__init__.py").write_text("")
    (tmp_path / "core" / "replay.py").write_text("import numpy\n\n\ndef f():\n    from robotrl.agents import nets\n")
    (tmp_path / "plug" / "__init__.py").write_text("from robotrl.replay import f\n")
    modules = collect({"robotrl": tmp_path / "core", "robotrl.agents": tmp_path / "plug"})
    assert set(modules) == {"robotrl", "robotrl.replay", "robotrl.agents"}
    assert violations(modules, allowed={}) == [
        "robotrl.replay:5 imports robotrl.agents.nets: a core module may not import a plug-in (agents)"]


def test_allowed_pair_silences_only_that_pair():
    source = "from robotrl.envs.demos import generate_demos"
    allowed = {("robotrl.agents.modem", "robotrl.envs"): "test"}
    assert violations({"robotrl.agents.modem": (source, False)}, allowed=allowed) == []
    assert len(violations({"robotrl.agents.tdmpc2": (source, False)}, allowed=allowed)) == 1
