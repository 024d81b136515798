"""The run's state: counters, first/last evaluation, the schedule's next frames; saved in and restored from a
checkpoint together with the global RNGs, the agent, a learned reward model and the replay."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from omegaconf import DictConfig, OmegaConf

from robotrl.checkpoint import load_state, save_checkpoint
from robotrl.errors import CheckpointError
from robotrl.rewards.capabilities import reward_capabilities
from robotrl.rng import get_rng_state, set_rng_state
from robotrl.workflows.trainer.schedule import Schedule


@dataclass
class Discards:
    """Episodes of a crashed env worker / dead Ray actor: never in the replay, counted beside the frames."""

    episodes: int = 0
    steps: int = 0

    def columns(self) -> dict[str, float]:
        """The train.csv columns (cumulative)."""
        return {"discarded_episodes": float(self.episodes), "discarded_steps": float(self.steps)}

    def counters(self) -> dict[str, int]:
        """The checkpoint's and summary.json's counters."""
        return {"discarded_episodes": self.episodes, "discarded_steps": self.steps}


@dataclass
class RunState:
    """Counters of one run. ``step`` counts agent steps that reached the replay; frames = step x action_repeat.
    ``discards`` is None for collectors that never discard an episode (one env in this process)."""

    schedule: Schedule
    action_repeat: int
    step: int = 0
    episode: int = 0
    elapsed_before: float = 0.0  # training time of the runs this one resumed
    first_eval: dict[str, Any] | None = None  # a trivial baseline too: the untrained policy
    last_eval: dict[str, Any] | None = None
    discards: Discards | None = None
    started: float = field(default_factory=time.perf_counter)

    @property
    def frame(self) -> int:
        return self.step * self.action_repeat

    def elapsed(self) -> float:
        return self.elapsed_before + time.perf_counter() - self.started

    def evaluated(self, summary: dict[str, Any]) -> None:
        """An evaluation at this frame: it is the last one, the first one if none came before."""
        self.schedule.evaluated(self.frame)
        self.last_eval = {"frame": self.frame, **summary}
        if self.first_eval is None:
            self.first_eval = self.last_eval

    def counters(self) -> dict[str, Any]:
        """Plain types for the checkpoint."""
        return {"step": self.step, "episode": self.episode, "next_eval_frame": self.schedule.next_eval_frame,
                "next_ckpt_frame": self.schedule.next_ckpt_frame, "elapsed": self.elapsed(),
                "first_eval": json.dumps(self.first_eval),
                **(self.discards.counters() if self.discards is not None else {})}

    def restore(self, counters: dict[str, Any]) -> None:
        self.step, self.episode = int(counters["step"]), int(counters["episode"])
        self.schedule.next_eval_frame = int(counters["next_eval_frame"])
        self.schedule.next_ckpt_frame = int(counters["next_ckpt_frame"])
        self.elapsed_before = float(counters["elapsed"])
        self.first_eval = json.loads(counters.get("first_eval", "null"))
        if self.discards is not None:
            self.discards.episodes = int(counters.get("discarded_episodes", 0))
            self.discards.steps = int(counters.get("discarded_steps", 0))


def save_run(run_dir: Path, cfg: DictConfig, state: RunState, agent: Any, reward_model: Any, replay: Any,
             env_info: dict[str, Any]) -> Path:
    """One atomic checkpoint ``frame_<frame>`` of the run (the replay when ``cfg.checkpoint_replay``)."""
    payload = {
        "agent_name": cfg.agent.name,
        "agent": agent.state_dict(),
        "counters": state.counters(),
        "rng": get_rng_state(),
        "config": OmegaConf.to_yaml(cfg, resolve=True),
        "env_info": json.dumps(env_info),
    }
    # reward models that learn online (LfVoid's discriminators) are saved with the run
    if reward_model is not None and reward_capabilities(reward_model).trainable:
        payload["reward_model"] = reward_model.state_dict()
    return save_checkpoint(run_dir / "checkpoints", f"frame_{state.frame:012d}", payload,
                           replay if cfg.checkpoint_replay else None, keep=int(cfg.checkpoint_keep))


def restore_run(path: Path, cfg: DictConfig, state: RunState, agent: Any, reward_model: Any,
                load_replay: Callable[[Path], None]) -> None:
    """Read back what :func:`save_run` wrote (``load_replay(path)`` restores the replay its own way), the global
    RNGs last: nothing built after a restore may draw from them before training continues."""
    payload = load_state(path)
    if payload["agent_name"] != cfg.agent.name:
        raise CheckpointError(f"checkpoint {path} was written by agent {payload['agent_name']!r}, "
                              f"expected {cfg.agent.name!r}")
    agent.load_state_dict(payload["agent"])
    if "reward_model" in payload:
        if reward_model is None or not reward_capabilities(reward_model).trainable:  # see save_run
            raise CheckpointError(f"checkpoint {path} holds a learned reward model's state, but reward="
                                  f"{cfg.reward.get('name')!r} has none to load it into")
        reward_model.load_state_dict(payload["reward_model"])
    load_replay(path)
    state.restore(payload["counters"])
    set_rng_state(payload["rng"])
