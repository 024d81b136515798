"""The World-Env settings: hydra's composition of ``configs/worldenv/default.yaml`` with a command's ``key=value``
overrides, on top of the run's carried settings (``out/config.yaml``), every value checked before anything is saved;
and what a stage records (``<stage folder>/config.yaml``: the settings that stage actually ran with)."""

from __future__ import annotations

import copy
import functools
import random
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.atomic import atomic_write_text
from robotrl.config import resolve_device
from robotrl.errors import ConfigError
from robotrl.readers import read_yaml
from robotrl.run_lock import check_free, hold
from robotrl.world import MT10

CONFIG = "worldenv/default"  # the hydra config every stage composes
# stage -> the folder it writes under out/ (its config.yaml goes there)
FOLDERS = {"collect": "data", "train-vla": "vla", "train-model": "model", "train-reflector": "reflector",
           "post-train": "post", "fidelity": "fidelity"}
CLIP_STAGES = ("train-vla", "train-reflector")  # the stages that build a CLIP model from the clip.* settings


def compose(overrides: Sequence[str] = ()) -> Any:
    """``configs/worldenv/default.yaml`` with ``overrides`` (hydra's grammar), or a one-line ConfigError."""
    return copy.deepcopy(_composed(tuple(overrides)))  # a copy: callers change theirs


@functools.lru_cache(maxsize=16)  # hydra takes ~0.4 s per composition; a command composes the defaults ~6 times
def _composed(overrides: tuple[str, ...]) -> Any:
    from robotrl.overrides import compose_config

    bad = [o for o in overrides if o.startswith(("+", "~"))]
    if bad:  # a new or deleted key would be saved into the run and trip every later stage
        raise ConfigError(f"bad worldenv setting {bad[0]!r}: expected key=value with an existing key "
                          f"(see `robotrl worldenv --help` for the keys)")
    try:
        return compose_config(list(overrides), name=CONFIG)
    except ConfigError as e:
        raise ConfigError(f"bad worldenv setting: {e} (see `robotrl worldenv --help` for the keys)") from None


def default_config() -> Any:
    return compose()


def merged(out: Path, overrides: Sequence[str]) -> tuple[Any, Any]:
    """(settings, the run's saved ones or None): defaults <- ``out/config.yaml`` <- ``overrides``."""
    from hydra.core.override_parser.overrides_parser import OverridesParser
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    compose(overrides)  # hydra's parse and composition errors, in one line, before the run's settings are read
    cfg = compose()
    saved = out / "config.yaml"
    before = None
    try:
        if saved.is_file():
            loaded = read_yaml(saved, ConfigError, "the run's World-Env settings", parse=OmegaConf.create)
            cfg = before = OmegaConf.merge(cfg, loaded)
        cfg = OmegaConf.merge(cfg, {})  # a copy: `before` stays what the run holds
        for o in OverridesParser.create().parse_overrides(list(overrides)):  # as hydra applies them
            OmegaConf.update(cfg, o.key_or_group, o.value(), merge=True)
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad worldenv setting in {saved}: {str(e).splitlines()[0]}; expected the keys of "
                          f"`robotrl worldenv --help` (or a new out=DIR)") from None
    return cfg, before


def check_runtime(cfg: Any, stage: str | None) -> None:
    """The device's name (whether this machine has it is the stage's check: a run directory may move to another
    machine) and, for a stage that builds CLIP, its weights."""
    try:
        if str(cfg.device) != "auto":
            torch.device(str(cfg.device))
    except RuntimeError:  # torch.device's own parse error is multi-line
        raise ConfigError(f"device={cfg.device!r}, expected auto, cpu, cuda or cuda:N") from None
    if stage in CLIP_STAGES:
        check_clip(cfg)


def load_config(out: Path, overrides: Sequence[str] = (), stage: str | None = None) -> Any:
    """defaults <- out/config.yaml (the settings the run carries from command to command) <- ``key=value``
    overrides; every value checked (``checks``: types, ranges, changes against what ``out`` holds; the device and
    the CLIP weights of ``stage``) before the result is saved back to ``out/config.yaml``."""
    from omegaconf import OmegaConf

    from robotrl.workflows.worldenv.checks import check_against_run, check_config

    out = Path(out)
    if stage is not None:  # a stage writes the run: not while another process's stage does
        check_free(out, "World-Env run")
    cfg, before = merged(out, overrides)
    if cfg.tasks == "mt10" or cfg.tasks == ["mt10"]:
        cfg.tasks = list(MT10)
    unknown = [t for t in cfg.tasks if t not in cfg.instructions]
    if unknown or not cfg.tasks:
        raise ConfigError(f"tasks={list(cfg.tasks)}: {unknown or 'empty'}; expected Meta-World tasks with an "
                          f"instruction in `instructions` ({', '.join(cfg.instructions)}) or mt10")
    check_config(cfg)
    check_runtime(cfg, stage)
    check_against_run(out, before, cfg, recorded_settings)
    if stage is not None:
        hold(out, "World-Env run")  # until this process ends
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(out / "config.yaml", OmegaConf.to_yaml(cfg))
    return cfg


def record_settings(cfg: Any, out: Path, stage: str) -> None:
    """``out/<stage folder>/config.yaml``: the settings ``stage`` runs with, written as it starts writing there (a
    later command with other settings does not change it)."""
    from omegaconf import OmegaConf

    folder = Path(out) / FOLDERS[stage]
    folder.mkdir(parents=True, exist_ok=True)
    atomic_write_text(folder / "config.yaml", OmegaConf.to_yaml(cfg))


def recorded_settings(out: Path, folder: str) -> Any:
    """What ``out/<folder>/config.yaml`` recorded (over the defaults), or None."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    path = Path(out) / folder / "config.yaml"
    try:
        return OmegaConf.merge(compose(), OmegaConf.load(path)) if path.is_file() else None
    except OmegaConfBaseException as e:
        raise ConfigError(f"{path}: {str(e).splitlines()[0]}; expected the settings of `robotrl worldenv --help` "
                          f"(or a new out=DIR)") from None


def setup_torch(cfg: Any) -> torch.device:
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed))
    random.seed(int(cfg.seed))
    return resolve_device(str(cfg.device))


def clip_cfg(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.clip, resolve=True)  # type: ignore[return-value]


def check_clip(cfg: Any) -> None:
    """The one-line error that missing CLIP weights would raise, naming worldenv's ``clip.*`` keys, before a stage
    loads its data."""
    from robotrl.open_clip_loader import check_clip_weights

    check_clip_weights(**clip_cfg(cfg), key="clip")
