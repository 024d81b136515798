"""A trained agent as a deterministic policy: the one loader for ``robotrl eval``, ``robotrl deploy``,
``robotrl sim2real`` and the policy server (``robotrl serve``).

:func:`load_policy` restores a checkpoint's agent and returns a :class:`Policy`: ``policy(obs) -> action`` is the
agent's evaluation action (``eval_mode=True``) at :data:`DETERMINISTIC_STEP`, and ``policy.reset()`` starts an
episode (an agent's own ``reset``: TD-MPC2/MoDem drop their warm-started plan; a no-op for agents without one).
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from omegaconf import OmegaConf

from robotrl.errors import CheckpointError

# The agent step a loaded policy acts at: past the end of every exploration and planning schedule (DrQ-v2's
# stddev_schedule, MoDem's plan-horizon and hand-over schedules all saturate long before), so the action is the
# final, deterministic one. 2**62 rather than int64's maximum: an agent that adds to its step in int64 arithmetic
# (numpy, torch) cannot overflow into a negative step. (eval and the server used int64's maximum, sim2real 2**62:
# the same actions, since every schedule has saturated at both.)
DETERMINISTIC_STEP = 2**62


def load_agent(checkpoint: str | Path, device: str = "auto") -> tuple[Any, Any, Path]:
    """(config, agent with the checkpoint's weights, checkpoint dir) from a run dir, its checkpoints/ dir or one
    checkpoint."""
    from robotrl.agents import make_agent
    from robotrl.checkpoint import load_state, resolve_checkpoint
    from robotrl.config import resolve_device
    from robotrl.envs import make_env
    from robotrl.workflows.demos import ensure_demos

    path = resolve_checkpoint(Path(checkpoint))
    state = load_state(path)
    cfg = OmegaConf.create(state["config"])
    if state["agent_name"] != cfg.agent.name:
        raise CheckpointError(f"checkpoint {path}: agent {state['agent_name']!r} does not match its config "
                              f"({cfg.agent.name!r})")
    env = make_env(cfg.env, seed=int(cfg.seed))  # the spaces the agent was built for
    ensure_demos(cfg.agent, cfg.env)  # MoDem's demo cache, regenerated if the run dir moved without it
    agent = make_agent(cfg.agent, env.observation_space, env.action_space, str(resolve_device(device)), cfg.env.name)
    env.close()
    agent.load_state_dict(state["agent"])
    return cfg, agent, path


@dataclass
class Policy:
    """A loaded agent acting deterministically; ``cfg`` is its training run's config, ``checkpoint`` its dir."""

    agent: Any
    cfg: Any = None
    checkpoint: Path | None = None

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        return self.agent.act(obs, DETERMINISTIC_STEP, eval_mode=True)

    def reset(self) -> None:
        reset = getattr(self.agent, "reset", None)
        if reset is not None:
            reset()

    @property
    def action_dim(self) -> int:
        return int(self.agent.action_space.shape[0])


def load_policy(checkpoint: str | Path, device: str = "auto") -> Policy:
    """The checkpoint's agent as a deterministic :class:`Policy` (see the module doc)."""
    cfg, agent, path = load_agent(checkpoint, device)
    return Policy(agent, cfg, path)
