"""The points a sweep asks for: checked before ``robotrl train -m`` lets Hydra write anything, and read back from the
``multirun.yaml`` that Hydra writes in the sweep dir.

`robotrl report` compares them with the runs it finds: a point whose run dir is missing, or holds no evaluation, is
named in the report instead of silently shrinking a group's seeds. ``multirun.yaml`` holds the last
``robotrl train -m`` of that sweep dir: its command-line overrides (``hydra.overrides.task``, with the sweeps such as
``seed=1,2,3``) and ``hydra.sweep.subdir``, the run dir of each point relative to the sweep dir.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import yaml

from robotrl.errors import ConfigError


@dataclass(frozen=True)
class SweepPoint:
    """One job of a sweep: the overrides that set it apart (e.g. ``seed=3``) and its run dir."""

    overrides: str
    run_dir: Path


def _expand(task: list[str]) -> tuple[list[list[str]], set[str]]:
    """Every combination of the sweep overrides (``a=1,2 b=x,y`` -> 4 lists, in Hydra's basic sweeper order) and
    the keys that were swept."""
    from hydra._internal.core_plugins.basic_sweeper import BasicSweeper
    from hydra.core.override_parser.overrides_parser import OverridesParser

    parsed = OverridesParser.create().parse_overrides(task)
    swept = {o.key_or_group for o in parsed if o.is_sweep_override()}
    batches = BasicSweeper.split_arguments(parsed, None)
    return [list(point) for batch in batches for point in batch], swept


def check_sweep(task: list[str]) -> None:
    """Refuse a ``robotrl train -m`` whose points are not all valid training configs (``validate_config``: the
    run's keys, env, replay; an agent's hyperparameters are checked when its job builds the agent), before Hydra
    writes ``multirun.yaml`` or any job's ``.hydra/`` (a bad last point would otherwise fail after the others
    trained), and ``run_dir=``, which Hydra ignores in a sweep. Raises a one-line ConfigError naming the point."""
    from robotrl.config import validate_config
    from robotrl.lifecycle import compose_train_config

    points, swept = _expand([o for o in task if not o.startswith(("hydra.", "hydra/"))])  # not the run's config
    run_dir = next((o for o in task if o.partition("=")[0] == "run_dir"), None)
    if run_dir is not None:
        raise ConfigError(f"{run_dir} names one run's dir; a sweep puts each of its {len(points)} runs at "
                          "hydra.sweep.dir/hydra.sweep.subdir (default runs/<env>/<agent>/seed<seed>): set "
                          f"hydra.sweep.dir={run_dir.partition('=')[2]} instead")
    for point in points:
        try:
            validate_config(compose_train_config(point))  # as a single run's pre-start check composes it
        except ConfigError as e:
            varied = " ".join(o for o in point if o.lstrip("+~").partition("=")[0] in swept)
            raise ConfigError(f"sweep point {varied}: {e}") from None


def _subdir(point: list[str], hydra_overrides: list[str]) -> str:
    """``hydra.sweep.subdir`` resolved for ``point`` (e.g. ``dmc/walker_walk/drqv2/seed3``)."""
    from hydra import compose, initialize_config_module
    from omegaconf import OmegaConf

    from robotrl.config import register_hydra

    register_hydra()  # run_tag, used by the default subdir, and base/*

    sweep_keys = [o for o in hydra_overrides if o.startswith("hydra.sweep.")]
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=[*point, *sweep_keys], return_hydra_config=True)
    return str(OmegaConf.select(cfg, "hydra.sweep.subdir"))


def sweep_points(sweep_dir: Path) -> list[SweepPoint] | None:
    """The points of the sweep in ``sweep_dir`` (None when it has no ``multirun.yaml``: not a sweep dir).

    Each point's run dir is ``sweep_dir / subdir``, wherever the sweep dir was when the sweep ran. Raises a one-line
    ConfigError when ``multirun.yaml`` cannot be read back into points.
    """
    path = Path(sweep_dir) / "multirun.yaml"
    if not path.is_file():
        return None
    try:
        overrides = (yaml.safe_load(path.read_text()) or {}).get("hydra", {}).get("overrides", {})
        task, hydra_overrides = list(overrides.get("task") or []), list(overrides.get("hydra") or [])
        points, swept = _expand(task)
        out = []
        for point in points:
            varied = [o for o in point if o.lstrip("+~").partition("=")[0] in swept] or point
            out.append(SweepPoint(" ".join(varied), Path(sweep_dir) / _subdir(point, hydra_overrides)))
    except Exception as e:  # a hand-edited or foreign multirun.yaml: say which file, not a traceback
        message = " ".join(str(e).split())[:300]
        raise ConfigError(f"{path}: cannot read the sweep's points ({type(e).__name__}: {message}); move it aside "
                          f"to report the runs without them") from None
    return out
