"""Agent configs compose to what they composed before they shared their parts (snapshot of 6f7d38a), DrM takes
DrQ-v2's settings from the shared base instead of re-listing them, and MoDem-V2 is a config, not a class."""

from __future__ import annotations

import json
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import yaml
from omegaconf import OmegaConf
from robotrl.agents import make_agent

from robotrl.overrides import config_dir, group_options

SNAPSHOT = Path(__file__).parent / "data" / "agent_configs_6f7d38a.json"
# What changed on purpose since the snapshot: MoDem-V2 is ModemAgent with its checkpoint tag in the config.
CHANGED = {"modem_v2": {"_target_": "robotrl.agents.modem.ModemAgent", "agent_name": "modem_v2"}}
ADDED = ["mrq"]  # agents added after the snapshot (their own tests hold their defaults)


def _agent_node(compose_cfg, name: str) -> dict:
    return OmegaConf.to_container(compose_cfg(f"agent={name}", tiny=False).agent, resolve=False)


@pytest.mark.parametrize("name", sorted(json.loads(SNAPSHOT.read_text())))
def test_composed_agent_config_is_unchanged(compose_cfg, name):
    want = {**json.loads(SNAPSHOT.read_text())[name], **CHANGED.get(name, {})}
    assert _agent_node(compose_cfg, name) == want


def test_snapshot_covers_every_agent():
    assert sorted([*json.loads(SNAPSHOT.read_text()), *ADDED]) == group_options("agent")


def test_drm_lists_none_of_drqv2s_shared_settings():
    """DrM inherits DrQ-v2's settings (configs/agent_base/drqv2.yaml) instead of copying them."""
    drm = yaml.safe_load((config_dir() / "agent" / "drm.yaml").read_text())
    base = yaml.safe_load((config_dir() / "agent_base" / "drqv2.yaml").read_text())
    assert "/agent_base/drqv2@_here_" in drm["defaults"]
    assert not set(drm) & set(base), f"drm.yaml re-lists {sorted(set(drm) & set(base))}"


def test_modem_v2_is_modem_with_its_switches_on(compose_cfg):
    import robotrl.agents.modem as modem

    assert not hasattr(modem, "ModemV2Agent")
    cfg = compose_cfg("agent=modem_v2", "agent.demos=/nonexistent", "agent.model_size=1", "agent.latent_dim=16",
                      "agent.mlp_dim=32", "agent.enc_dim=32", tiny=False).agent
    obs = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)})
    agent = make_agent(cfg, obs, gym.spaces.Box(-1.0, 1.0, (2,), np.float32), "cpu", "metaworld/reach")
    assert type(agent) is modem.ModemAgent
    assert (agent.agent_name, agent.exploration_centering, agent.agency_handover, agent.ensemble_value,
            agent.model.num_pi) == ("modem_v2", True, True, True, 5)
    assert agent.state_dict()["agent"] == "modem_v2"  # checkpoints keep their tag
