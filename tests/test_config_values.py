"""Moving defaults between yaml files and structured configs (dataclasses in hydra's ConfigStore) changes no composed
value: representative configs compose to exactly what they composed to at 6f7d38a (``data/composed_configs.json``,
written by running this file as a script on that commit: ``python tests/test_config_values.py``)."""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

FIXTURE = Path(__file__).parent / "data" / "composed_configs.json"
AGENTS = ("drm", "drqv2", "modem", "modem_v2", "sb3_ppo", "sb3_sac", "tdmpc2", "vla")
REWARDS = ("clip", "clip_tiny", "env", "kagi", "lfvoid", "lfvoid_demo_goals", "reflector", "success_classifier")
ROBOTS = ("franka", "mock", "none", "sim", "so101")
TELEOPS = ("gamepad", "keyboard", "none", "scripted", "so101_leader", "spacemouse")
CASES: tuple[tuple[str, ...], ...] = (
    (), ("experiment=quickstart",), ("experiment=modem_paper",), ("experiment=modem_v2_paper",),
    *((f"agent={a}",) for a in AGENTS),
    ("env=dmc/walker_walk",), ("env=metaworld/reach",), ("env=gym/humanoid",), ("env=libero",),
    *(("env=metaworld/reach", f"reward={r}") for r in REWARDS), ("env=metaworld/push", "reward=kagi/push"),
    *((f"robot={r}",) for r in ROBOTS), *(("robot=sim", f"teleop={t}") for t in TELEOPS),
    ("collector=ray",), ("env.num_envs=4", "ray.num_actors=3"),
)


CHANGED_MODEM_V2 = {"_target_": "robotrl.agents.modem.ModemAgent", "agent_name": "modem_v2"}
# robot_env comes with an arm's robot config (configs/robot/<arm>.yaml), so robot=none has none; the arms keep it
REMOVED_ROBOT_ENV_WITHOUT_AN_ARM = {"home_noise_m": 0.02, "live_view": None, "operator": None}
# KAGI's plans left the reward group: `reward=kagi/push` is now spelt `reward=kagi reward.plan=push`, whose `plan` is
# the packaged plan's name (robotrl/rewards/kagi_plans/push.yaml, checked below to hold the fixture's plan)
RESPELT = {("env=metaworld/push", "reward=kagi/push"): ("env=metaworld/push", "reward=kagi", "reward.plan=push")}
# top-level keys added since, with their defaults (a new setting changes no existing value)
ADDED = {"reuse_freed_memory": True}


def composed(overrides: tuple[str, ...]) -> dict[str, Any]:
    """The composed config as plain data: interpolations as written (``${env.frames}``) and resolved."""
    from omegaconf import OmegaConf

    from robotrl.overrides import compose_config

    cfg = compose_config(list(overrides))
    return {"raw": OmegaConf.to_container(cfg, resolve=False), "resolved": OmegaConf.to_container(cfg, resolve=True)}


def _key(overrides: tuple[str, ...]) -> str:
    return " ".join(overrides) or "(defaults)"


@pytest.fixture(scope="module")
def expected() -> dict[str, Any]:
    return json.loads(FIXTURE.read_text())


@pytest.mark.parametrize("overrides", CASES, ids=_key)
def test_composed_config_is_unchanged(expected, overrides):
    got = json.loads(json.dumps(composed(RESPELT.get(overrides, overrides)), sort_keys=True, default=str))
    want = expected[_key(overrides)]
    for view in ("raw", "resolved"):
        if got["raw"]["agent"].get("agent_name") == "modem_v2":  # changed on purpose: MoDem-V2 is ModemAgent + its tag
            want[view]["agent"].update(CHANGED_MODEM_V2)
        if got["raw"]["robot"]["name"] == "none":  # changed on purpose: robot_env is the robot group's
            assert want[view].pop("robot_env") == REMOVED_ROBOT_ENV_WITHOUT_AN_ARM
        if overrides in RESPELT:  # changed on purpose: the plan is named, not inlined
            assert _packaged_plan(got[view]["reward"]["plan"]) == want[view]["reward"]["plan"]
            want[view]["reward"]["plan"] = got[view]["reward"]["plan"]
        for key, value in ADDED.items():
            assert key not in want[view]
            want[view][key] = value
    assert got == want


def _packaged_plan(name: str) -> dict[str, Any]:
    import yaml
    from robotrl.rewards.kagi_plan import plan_path

    return json.loads(json.dumps(yaml.safe_load(plan_path(name).read_text())))


def test_fixture_covers_every_case(expected):
    assert set(expected) == {_key(c) for c in CASES}


if __name__ == "__main__":  # write the fixture (on the base commit, before moving any default)
    values = {_key(c): composed(c) for c in CASES}
    FIXTURE.write_text(json.dumps(values, indent=1, sort_keys=True, default=str) + "\n")
    print(f"wrote {len(values)} configs to {FIXTURE}", file=sys.stderr)


def test_shared_defaults_live_only_in_the_structured_configs():
    """config.yaml lists no env/ray/robot_env keys and no reward config repeats the wrapper's keys: the dataclasses of
    robotrl/config_schema.py are the one place those defaults live (a yaml may still set a key that differs)."""
    from omegaconf import OmegaConf

    from robotrl.config_schema import RewardWrapperDefaults, defaults_of
    from robotrl.overrides import config_dir

    top = OmegaConf.load(config_dir() / "config.yaml")
    assert not {"env", "ray", "robot_env", "collector"} & set(top), "config.yaml re-lists a structured config's keys"
    wrapper = defaults_of(RewardWrapperDefaults)
    for path in sorted((config_dir() / "reward").glob("*.yaml")):
        raw = OmegaConf.to_container(OmegaConf.load(path), resolve=False)
        repeated = {k for k, v in raw.items() if k in wrapper and v == wrapper[k]}
        assert not repeated, f"{path.name} repeats the reward wrapper's defaults {sorted(repeated)}"
