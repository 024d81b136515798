"""``collector=ray``: Ray actors play episodes and stream their transitions to the learner, with backpressure.

Each :class:`RolloutWorker` actor holds a contract env (with the reward layer, so a reward model runs on the
actor's CPUs), a copy of the agent for acting, and plays the episodes the learner assigns: episode index ``k`` from
``reset(seed=episode_seed(seed, k))``, the agent's weights as of the assignment. It sends the steps in chunks of
``ray.chunk_size`` through a bounded ``ray.util.queue.Queue`` (``ray.queue_size`` chunks): when the learner falls
behind, ``put`` blocks the actor (backpressure) instead of piling transitions up in memory.

The learner (:class:`RayTrainer`) keeps the one-env trainer's replay, updates (one per received transition),
evaluation, logging and checkpoints. :class:`EpisodeAssembler` turns chunks into whole episodes for the replay:
chunks carry (actor, incarnation, episode, seq), a repeated chunk is dropped, and when an actor dies its
partial episode is discarded (never reaches the replay), counted, and assigned again from the same seed to the
restarted actor, whose chunks carry the next incarnation so late chunks of the dead one are ignored (``frames``
counts only the steps that reached the replay; ``discarded_steps`` beside it). The learner's
state is never touched by a failure. Like ``env.num_envs``, the run works in segments that drain (no episode in
flight) before an evaluation or checkpoint, so a checkpoint holds the learner's exact state and a resume continues
from it; the continuation is not bit-identical to an uninterrupted run, because the order in which actors' chunks
arrive depends on timing.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robotrl.errors import ConfigError, EnvWorkerError
from robotrl.types import Episode, capabilities_of
from robotrl.workflows.segments import SegmentedTrainer
from robotrl.workflows.train import EpisodeStats, GracefulInterrupt, episode_seed

STEP_KEYS = ("action", "reward", "terminated", "truncated", "success")


# ------------------------------------------------------------------------------------------ streaming logic
@dataclass
class _Partial:
    incarnation: int
    episode: int
    next_seq: int = 0
    first_obs: dict[str, np.ndarray] | None = None
    obs: list[dict[str, np.ndarray]] = field(default_factory=list)
    steps: dict[str, list[Any]] = field(default_factory=lambda: {k: [] for k in STEP_KEYS})
    infos: list[dict[str, Any]] = field(default_factory=list)


class EpisodeAssembler:
    """Chunks from actors -> whole episodes, exactly once each (pure Python: unit-tested without Ray).

    A chunk is a dict: ``actor``, ``incarnation``, ``episode``, ``seq`` (0, 1, ... within the episode), ``obs``
    (single-frame observations, the reset one first in seq 0), the per-step ``action``, ``reward``,
    ``terminated``, ``truncated``, ``success`` lists and ``infos``. :meth:`add` returns the finished
    ``(episode index, Episode, infos)`` or None.
    """

    def __init__(self) -> None:
        self.incarnation: dict[int, int] = {}  # the live incarnation of each actor
        self.partial: dict[int, _Partial] = {}  # per actor: the episode being received
        self.done: set[int] = set()  # episode indices already delivered
        self.ignored = 0  # chunks dropped: duplicates or from a dead incarnation

    def start(self, actor: int, incarnation: int, episode: int) -> None:
        """``actor`` (``incarnation``) was assigned ``episode``."""
        self.incarnation[actor] = incarnation
        self.partial[actor] = _Partial(incarnation, episode)

    def drop_actor(self, actor: int) -> tuple[int | None, int]:
        """``actor`` died: discard its partial episode; return (its episode index or None, steps discarded)."""
        part = self.partial.pop(actor, None)
        self.incarnation[actor] = self.incarnation.get(actor, 0) + 1  # its late chunks are now stale
        if part is None:
            return None, 0
        return part.episode, len(part.steps["action"])

    def accepts(self, chunk: dict[str, Any]) -> bool:
        """The chunk is the next one of its actor's live episode (not stale, repeated or out of order)."""
        part = self.partial.get(int(chunk["actor"]))
        return (part is not None and chunk["incarnation"] == part.incarnation and chunk["episode"] == part.episode
                and chunk["seq"] == part.next_seq and chunk["episode"] not in self.done)

    def add(self, chunk: dict[str, Any]) -> tuple[int, Episode, list[dict[str, Any]]] | None:
        if not self.accepts(chunk):
            self.ignored += 1  # stale, repeated or out of order: never stored twice
            return None
        actor = int(chunk["actor"])
        part = self.partial[actor]
        part.next_seq += 1
        part.obs.extend(chunk["obs"])
        for key in STEP_KEYS:
            part.steps[key].extend(chunk[key])
        part.infos.extend(chunk["infos"])
        if not (chunk["terminated"] and (chunk["terminated"][-1] or chunk["truncated"][-1])):
            return None
        del self.partial[actor]
        self.done.add(part.episode)
        episode = Episode(obs={k: np.stack([o[k] for o in part.obs]) for k in part.obs[0]},
                          action=np.asarray(part.steps["action"], np.float32),
                          reward=np.asarray(part.steps["reward"], np.float32),
                          terminated=np.asarray(part.steps["terminated"], bool),
                          success=np.asarray(part.steps["success"], bool),
                          reward_invalid=np.asarray([bool(i.get("reward_invalid", False)) for i in part.infos]))
        return part.episode, episode, part.infos


# ------------------------------------------------------------------------------------------ the actor
class RolloutWorker:
    """Plays assigned episodes and streams them (a plain class; :func:`remote_worker_class` makes it a Ray actor)."""

    def __init__(self, cfg: dict[str, Any], actor: int, incarnation: int, queue: Any, chunk_size: int) -> None:
        import torch

        from robotrl.agents import make_agent
        from robotrl.envs import make_env
        from robotrl.rewards import wrap_env

        torch.set_num_threads(1)
        self.cfg = OmegaConf.create(cfg)
        self.actor, self.incarnation, self.queue, self.chunk_size = actor, incarnation, queue, int(chunk_size)
        self.env = wrap_env(make_env(self.cfg.env, seed=int(self.cfg.seed) + 1000 * (actor + 1)), self.cfg.reward)
        space = self.env.observation_space
        self.frame_channels = 0 if "pixels" not in space.spaces else space["pixels"].shape[0] // int(
            self.cfg.env.frame_stack)
        self.agent = make_agent(self.cfg.agent, space, self.env.action_space, "cpu", self.cfg.env.name)

    def pid(self) -> int:
        import os

        return os.getpid()

    def _newest(self, obs: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        return {k: (np.array(v[-self.frame_channels:]) if k == "pixels" else np.array(v)) for k, v in obs.items()}

    def play(self, episode: int, seed: int, step: int, weights: dict[str, Any]) -> dict[str, Any]:
        """Play ``episode`` from ``reset(seed=seed)`` with ``weights``; stream it; return its summary."""
        import torch

        self.agent.load_state_dict(weights)
        torch.manual_seed(seed)
        if capabilities_of(self.agent).own_generator:
            self.agent.generator.manual_seed(seed)  # each episode's own exploration noise
        obs, _ = self.env.reset(seed=seed)
        self.agent.reset()
        chunk = self._chunk(episode, 0, [self._newest(obs)])
        seq, ret, length = 0, 0.0, 0
        while True:
            action = self.agent.act(obs, step + length, eval_mode=False)
            obs, reward, terminated, truncated, info = self.env.step(action)
            ret, length = ret + float(reward), length + 1
            chunk["obs"].append(self._newest(obs))
            for key, value in zip(STEP_KEYS, (action, float(reward), bool(terminated), bool(truncated),
                                              bool(info.get("success", False))), strict=True):
                chunk[key].append(value)
            chunk["infos"].append({k: float(v) for k, v in info.items() if np.isscalar(v)})
            end = terminated or truncated
            if end or len(chunk["action"]) >= self.chunk_size:
                self.queue.put(chunk, block=True)  # blocks while the learner is behind: backpressure
                if end:
                    return {"episode": episode, "return": ret, "length": length}
                seq += 1
                chunk = self._chunk(episode, seq, [])

    def _chunk(self, episode: int, seq: int, obs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        return {"actor": self.actor, "incarnation": self.incarnation, "episode": episode, "seq": seq, "obs": obs,
                **{k: [] for k in STEP_KEYS}, "infos": []}


def ray_settings(cfg: DictConfig) -> dict[str, Any]:
    """``ray.*`` validated: num_actors, chunk_size, queue_size, address, num_cpus."""
    settings = dict(OmegaConf.to_container(cfg.get("ray") or {}, resolve=True))
    for key in ("num_actors", "chunk_size", "queue_size"):
        value = settings.get(key)
        if isinstance(value, bool) or not isinstance(value, int) or value < 1:
            raise ConfigError(f"ray.{key} must be a positive int, got {value!r}")
    return settings


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("collector=ray needs Ray: pip install 'robotrl[ray]'") from e
    return ray


# ------------------------------------------------------------------------------------------ the learner
class RayTrainer(SegmentedTrainer):
    """:class:`Trainer` whose episodes are played by Ray actors (see the module docstring)."""

    def _build_envs(self) -> None:
        super()._build_envs()  # the learner keeps one env for spaces and the evaluation env
        self.settings = ray_settings(self.cfg)
        self.discarded_episodes = self.discarded_steps = 0
        self.actor_restarts = 0

    # ---------------------------------------------------------------- actors
    def _start_ray(self) -> None:
        ray = _import_ray()
        from ray.util.queue import Queue

        s = self.settings
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=s.get("address"), num_cpus=s.get("num_cpus"), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        self.ray = ray
        self.queue = Queue(maxsize=int(s["queue_size"]))
        self._actor_cls = ray.remote(num_cpus=float(s.get("cpus_per_actor", 1)))(RolloutWorker)
        self._plain_cfg = OmegaConf.to_container(self.cfg, resolve=True)
        self.actors = [self._new_actor(i, 0) for i in range(int(s["num_actors"]))]
        self.incarnations = [0] * len(self.actors)

    def _new_actor(self, index: int, incarnation: int) -> Any:
        return self._actor_cls.remote(self._plain_cfg, index, incarnation, self.queue, int(self.settings["chunk_size"]))

    def _restart_actor(self, index: int, error: Exception) -> None:
        """A failed actor: discard its partial episode (counted) and start a fresh one; the learner is untouched.
        More than ``ray.max_actor_restarts`` failures stop the run with a one-line error."""
        if self.actor_restarts >= int(self.settings.get("max_actor_restarts", 10)):
            raise EnvWorkerError(f"Ray rollout actors failed {self.actor_restarts + 1} times (ray.max_actor_restarts="
                                 f"{self.settings.get('max_actor_restarts', 10)}); last: actor {index}: "
                                 f"{' '.join(str(error).split())[:300]}")
        self.ray.kill(self.actors[index], no_restart=True)  # a live actor whose env raised: start clean
        episode, steps = self.assembler.drop_actor(index)
        self.discarded_episodes += episode is not None
        self.discarded_steps += steps
        self.step -= steps  # counted when received; frames count only the steps that reached the replay
        self.actor_restarts += 1
        self.incarnations[index] += 1
        self.actors[index] = self._new_actor(index, self.incarnations[index])
        # episode indices count from 0; the console's "episode N" lines count finished episodes from 1
        shown = "no episode" if episode is None else f"episode {episode + 1}"
        self.console.print(f"[yellow]rollout actor {index} died: {shown} discarded ({steps} steps "
                           f"received), actor restarted[/yellow]")
        if episode is not None:
            self._reissue.append(episode)

    def _assign(self, index: int, episode: int) -> None:
        self.assembler.start(index, self.incarnations[index], episode)
        self._busy[index] = (episode, self.actors[index].play.remote(
            episode, episode_seed(int(self.cfg.seed), episode), self.step, self._weights()))

    def _weights(self) -> Any:
        """The agent's state in the object store, refreshed after updates (shared by every assignment)."""
        if self._weights_ref is None or self._weights_ref[0] != self._updates:
            self._weights_ref = (self._updates, self.ray.put(self.agent.state_dict()))
        return self._weights_ref[1]

    # ---------------------------------------------------------------- loop
    def _before_segments(self) -> None:
        self._start_ray()

    def _run_segment(self, total_steps: int, seed_steps: int, interrupt: GracefulInterrupt) -> None:
        """Keep every actor busy until a drain: then wait for the episodes in flight, none left half-received."""
        self.assembler = EpisodeAssembler()
        self._busy: dict[int, tuple[int, Any]] = {}
        self._reissue: list[int] = []
        self._weights_ref, self._updates = None, 0
        self._stats_updates: list[dict[str, float]] = []
        next_episode, draining = self.episode, False
        for i in range(len(self.actors)):
            self._assign(i, next_episode)
            next_episode += 1
        progress, task = self._progress_task
        while self._busy or self.assembler.partial:
            interrupt.check()
            for chunk in self._take_chunks():
                self._receive(chunk, seed_steps, progress, task)
            draining = draining or self._due(total_steps)
            ready, _ = self.ray.wait([f for _, f in self._busy.values()], num_returns=len(self._busy), timeout=0)
            for index, (_episode, future) in list(self._busy.items()):
                if future not in ready:
                    continue
                del self._busy[index]
                try:
                    self.ray.get(future)
                except self.ray.exceptions.RayError as e:  # the actor died, or its env/agent raised
                    self._restart_actor(index, e)
                if self._reissue:
                    self._assign(index, self._reissue.pop(0))
                elif not draining:
                    self._assign(index, next_episode)
                    next_episode += 1
            for index in range(len(self.actors)):  # reissued episodes of dead actors go to any idle actor
                if self._reissue and index not in self._busy:
                    self._assign(index, self._reissue.pop(0))
            progress.update(task, completed=min(self.step, total_steps))

    def _take_chunks(self) -> list[dict[str, Any]]:
        from ray.util.queue import Empty

        try:
            return [self.queue.get(block=True, timeout=0.05)] + self.queue.get_nowait_batch(self.queue.qsize())
        except Empty:
            return []

    def _receive(self, chunk: dict[str, Any], seed_steps: int, progress: Any, task: Any) -> None:
        """One chunk: count its steps and do one update per step (once the replay holds an episode); a finished
        episode goes to the replay and train.csv."""
        if not self.assembler.accepts(chunk):
            self.assembler.add(chunk)  # counted as ignored: a stale or repeated chunk takes no step here
            return
        can_update = len(self.replay) > 0
        for _ in range(len(chunk["action"])):
            if self.step >= seed_steps and can_update:
                self._stats_updates.append(self.agent.update(self.replay, self.step))
                self._updates += 1
            self.step += 1
        finished = self.assembler.add(chunk)
        if finished is not None:
            _, episode, infos = finished
            self.replay.add_episode(episode)
            stats = EpisodeStats()
            for reward, info in zip(episode.reward, infos, strict=True):
                stats.add_step(float(reward), info)
            stats.updates, self._stats_updates = self._stats_updates, []
            stats.rewards.update(discarded_episodes=float(self.discarded_episodes),
                                 discarded_steps=float(self.discarded_steps))
            self.episode += 1
            self._log_train_episode(stats)
            progress.update(task, ret=stats.ret)

    def finish(self) -> dict[str, Any]:
        summary = super().finish()
        for actor in getattr(self, "actors", []):
            self.ray.kill(actor)
        if getattr(self, "_owns_ray", False):
            self.ray.shutdown()
        return summary
