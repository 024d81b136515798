"""Agents declare what they can do (robotrl.types.Capabilities) and the workflows ask them: no config-key, class-path
or attribute sniffing. Each test below is a case a sniff got wrong."""

from __future__ import annotations

import pytest
from omegaconf import OmegaConf
from robotrl.agents import agent_capabilities
from robotrl.agents.sb3 import SB3Agent

from robotrl.errors import ConfigError
from robotrl.overrides import group_options
from robotrl.types import Capabilities, capabilities_of
from robotrl.workflows.demos import ensure_demos
from robotrl.workflows.trainer.factory import trainer_kind

BATCHED = {"batched_acting": True, "own_generator": True}
EXPECTED = {
    "drqv2": Capabilities(**BATCHED),
    "drm": Capabilities(**BATCHED),
    "tdmpc2": Capabilities(**BATCHED, distributed=True),
    "modem": Capabilities(**BATCHED, distributed=True, learns_from_demos=True),
    "modem_v2": Capabilities(**BATCHED, distributed=True, learns_from_demos=True),
    "mrq": Capabilities(**BATCHED),
    "sb3_sac": Capabilities(owns_loop=True),
    "sb3_ppo": Capabilities(owns_loop=True),
    "vla": Capabilities(per_task_demos=True),
}


class RenamedSAC(SB3Agent):
    """A plug-in's SB3 agent under its own class path: SB3 still owns its loop."""


class NoDeclaration:
    """A third-party agent that declares nothing: no capabilities."""


class BadDeclaration:
    capabilities = {"batched_acting": True}


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_every_packaged_agent_declares_its_capabilities(compose_cfg, name):
    assert sorted(EXPECTED) == group_options("agent")
    assert agent_capabilities(compose_cfg(f"agent={name}", tiny=False).agent) == EXPECTED[name]


def test_an_sb3_agent_under_another_class_path_gets_sb3s_loop(compose_cfg):
    """``is_sb3_agent`` compared ``_target_`` with one string: a subclass (or a moved class) ran in the wrong loop."""
    cfg = compose_cfg("agent=sb3_sac", f"agent._target_={__name__}.RenamedSAC", "env.obs_type=state", tiny=False)
    assert trainer_kind(cfg) == "sb3"


def test_a_tasks_key_does_not_make_an_agent_the_vla(tmp_path):
    """``"tasks" in hparams`` meant agent=vla: any other agent with a ``tasks`` key had multi-task demos made."""
    drqv2 = {"_target_": "robotrl.agents.drqv2.DrQV2Agent", "name": "drqv2", "tasks": ["reach"], "demos": None,
             "demo_cache": str(tmp_path / "demos"), "nstep": 3, "discount": 0.99}
    assert ensure_demos(drqv2, {"name": "dmc/cartpole_swingup"}) is None
    assert not (tmp_path / "demos").exists()


def test_undeclared_bad_and_unknown_declarations():
    assert capabilities_of(NoDeclaration) == Capabilities() == agent_capabilities(None)
    with pytest.raises(TypeError, match="expected a robotrl.types.Capabilities"):
        capabilities_of(BadDeclaration)
    with pytest.raises(ConfigError, match="agent._target_='robotrl.agents.nope.Agent' cannot be imported"):
        agent_capabilities(OmegaConf.create({"_target_": "robotrl.agents.nope.Agent"}))
    with pytest.raises(ConfigError, match="_target_=None"):
        agent_capabilities({"name": "x"})
