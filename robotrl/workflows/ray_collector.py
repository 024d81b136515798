"""``collector=ray``: Ray actors play episodes and stream their transitions to the learner, with backpressure.

Each :class:`RolloutWorker` actor holds a contract env (with the reward layer, so a reward model runs on the
actor's CPUs), a copy of the agent for acting, and plays the episodes the learner assigns: episode index ``k`` from
``reset(seed=episode_seed(seed, k))``, the agent's weights as of the assignment. It sends the steps in chunks of
``ray.chunk_size`` through a bounded ``ray.util.queue.Queue`` (``ray.queue_size`` chunks): when the learner falls
behind, ``put`` blocks the actor (backpressure) instead of piling transitions up in memory.

The learner (:class:`RayCollector` in the trainer) keeps the one-env trainer's replay, updates (one per received
transition), evaluation, logging and checkpoints. :class:`EpisodeAssembler` turns chunks into whole episodes for
the replay: chunks carry (actor, incarnation, episode, seq), a repeated chunk is dropped, and when an actor dies its
partial episode is discarded (never reaches the replay), counted, and assigned again from the same seed to the
restarted actor, whose chunks carry the next incarnation so late chunks of the dead one are ignored (``frames``
counts only the steps that reached the replay; ``discarded_steps`` beside it). The learner's
state is never touched by a failure. Like ``env.num_envs``, the run works in segments that drain (no episode in
flight) before an evaluation or checkpoint, so a checkpoint holds the learner's exact state and a resume continues
from it; the continuation is not bit-identical to an uninterrupted run, because the order in which actors' chunks
arrive depends on timing.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import numpy as np
from omegaconf import DictConfig, OmegaConf

from robotrl.episodes import EpisodeBuilder, record_episode
from robotrl.errors import ConfigError, EnvWorkerError
from robotrl.types import Episode, capabilities_of
from robotrl.workflows.trainer.console import GracefulInterrupt
from robotrl.workflows.trainer.run import Run
from robotrl.workflows.trainer.schedule import episode_seed
from robotrl.workflows.trainer.stats import EpisodeStats

STEP_KEYS = ("action", "reward", "terminated", "truncated", "success")


# ------------------------------------------------------------------------------------------ streaming logic
@dataclass
class _Partial:
    incarnation: int
    episode: int
    next_seq: int = 0
    builder: EpisodeBuilder = field(default_factory=EpisodeBuilder)  # chunks carry single frames already
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
        return part.episode, len(part.builder)

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
        obs = list(chunk["obs"])
        if chunk["seq"] == 0:
            part.builder.begin(obs.pop(0))
        for k, info in enumerate(chunk["infos"]):
            part.builder.add(chunk["action"][k], chunk["reward"][k], obs[k], chunk["terminated"][k],
                             chunk["success"][k], bool(info.get("reward_invalid", False)))
        part.infos.extend(chunk["infos"])
        if not (chunk["terminated"] and (chunk["terminated"][-1] or chunk["truncated"][-1])):
            return None
        del self.partial[actor]
        self.done.add(part.episode)
        return part.episode, part.builder.build(), part.infos


# ------------------------------------------------------------------------------------------ the actor
class RolloutWorker:
    """Plays assigned episodes and streams them (a plain class; :class:`RayCollector` makes it a Ray actor)."""

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
        self.frames = EpisodeBuilder(0 if "pixels" not in space.spaces else space["pixels"].shape[0] // int(
            self.cfg.env.frame_stack))  # only its newest(): what a chunk carries of an observation
        self.agent = make_agent(self.cfg.agent, space, self.env.action_space, "cpu", self.cfg.env.name)

    def pid(self) -> int:
        import os

        return os.getpid()

    def play(self, episode: int, seed: int, step: int, weights: dict[str, Any]) -> dict[str, Any]:
        """Play ``episode`` from ``reset(seed=seed)`` with ``weights``; stream it; return its summary."""
        import torch

        self.agent.load_state_dict(weights)
        torch.manual_seed(seed)
        if capabilities_of(self.agent).own_generator:
            self.agent.generator.manual_seed(seed)  # each episode's own exploration noise
        sent = {"seq": 0, "length": 0, "chunk": None}

        def on_reset(obs: dict[str, np.ndarray]) -> None:
            self.agent.reset()
            sent["chunk"] = self._chunk(episode, 0, [self.frames.newest(obs)])

        def policy(obs: dict[str, np.ndarray]) -> np.ndarray:
            return self.agent.act(obs, step + sent["length"], eval_mode=False)

        def on_step(action: np.ndarray, reward: float, obs: dict[str, np.ndarray], terminated: bool,
                    truncated: bool, info: dict[str, Any]) -> None:
            sent["length"] += 1
            chunk = sent["chunk"]
            chunk["obs"].append(self.frames.newest(obs))
            for key, value in zip(STEP_KEYS, (action, float(reward), bool(terminated), bool(truncated),
                                              bool(info.get("success", False))), strict=True):
                chunk[key].append(value)
            chunk["infos"].append({k: float(v) for k, v in info.items() if np.isscalar(v)})
            end = terminated or truncated
            if end or len(chunk["action"]) >= self.chunk_size:
                self.queue.put(chunk, block=True)  # blocks while the learner is behind: backpressure
                sent["seq"] += 1
                sent["chunk"] = self._chunk(episode, sent["seq"], [])

        played = record_episode(self.env, policy, seed, on_reset=on_reset, on_step=on_step)
        return {"episode": episode, "return": played.ret, "length": played.length}

    def _chunk(self, episode: int, seq: int, obs: list[dict[str, np.ndarray]]) -> dict[str, Any]:
        return {"actor": self.actor, "incarnation": self.incarnation, "episode": episode, "seq": seq, "obs": obs,
                **{k: [] for k in STEP_KEYS}, "infos": []}


def ray_settings(cfg: DictConfig) -> dict[str, Any]:
    """``ray.*`` as a plain dict; num_actors, chunk_size and queue_size set (their ranges: ``validate_config``, which
    ``make_trainer`` runs first, from the ``RayCollector`` schema)."""
    settings = dict(OmegaConf.to_container(cfg.get("ray") or {}, resolve=True))
    for key in ("num_actors", "chunk_size", "queue_size"):  # no default below: these must be set
        if settings.get(key) is None:
            raise ConfigError(f"ray.{key} is null, expected an integer >= 1")
    return settings


def _import_ray() -> Any:
    try:
        import ray
    except ImportError as e:
        raise ConfigError("collector=ray needs Ray: pip install 'robotrl[ray]'") from e
    return ray


# ------------------------------------------------------------------------------------------ the learner's side
class RayCollector:
    """The collector whose episodes Ray actors play (see the module docstring); the learner's replay, updates and
    counters stay in this process and are never touched by an actor's failure."""

    def __init__(self, cfg: DictConfig, settings: dict[str, Any], seed_steps: int) -> None:
        self.cfg, self.settings, self.seed_steps = cfg, settings, seed_steps
        self.actor_restarts = 0
        self.actors: list[Any] = []
        self.incarnations: list[int] = []
        self._owns_ray = False
        self.ray: Any = None

    # ---------------------------------------------------------------- actors
    def start(self, run: Run) -> None:
        ray = _import_ray()
        from ray.util.queue import Queue

        s = self.settings
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            ray.init(address=s.get("address"), num_cpus=s.get("num_cpus"), include_dashboard=False,
                     log_to_driver=False, configure_logging=False)
        self.ray, self.console = ray, run.console
        run.closers.append(self.close)
        self.queue = Queue(maxsize=int(s["queue_size"]))
        self._actor_cls = ray.remote(num_cpus=float(s.get("cpus_per_actor", 1)))(RolloutWorker)
        self._plain_cfg = OmegaConf.to_container(run.cfg, resolve=True)
        self.actors = [self._new_actor(i, 0) for i in range(int(s["num_actors"]))]
        self.incarnations = [0] * len(self.actors)

    def _new_actor(self, index: int, incarnation: int) -> Any:
        return self._actor_cls.remote(self._plain_cfg, index, incarnation, self.queue, int(self.settings["chunk_size"]))

    def restart_actor(self, index: int, error: Exception, run: Run) -> None:
        """A failed actor: discard its partial episode (counted) and start a fresh one; the learner is untouched.
        More than ``ray.max_actor_restarts`` failures stop the run with a one-line error."""
        if self.actor_restarts >= int(self.settings.get("max_actor_restarts", 10)):
            raise EnvWorkerError(f"Ray rollout actors failed {self.actor_restarts + 1} times (ray.max_actor_restarts="
                                 f"{self.settings.get('max_actor_restarts', 10)}); last: actor {index}: "
                                 f"{' '.join(str(error).split())[:300]}")
        self.ray.kill(self.actors[index], no_restart=True)  # a live actor whose env raised: start clean
        episode, steps = self.assembler.drop_actor(index)
        run.state.discards.episodes += episode is not None
        run.state.discards.steps += steps
        run.state.step -= steps  # counted when received; frames count only the steps that reached the replay
        self.actor_restarts += 1
        self.incarnations[index] += 1
        self.actors[index] = self._new_actor(index, self.incarnations[index])
        # episode indices count from 0; the console's "episode N" lines count finished episodes from 1
        shown = "no episode" if episode is None else f"episode {episode + 1}"
        run.console.print(f"[yellow]rollout actor {index} died: {shown} discarded ({steps} steps "
                          f"received), actor restarted[/yellow]")
        if episode is not None:
            self.reissue.append(episode)

    def _assign(self, index: int, episode: int, run: Run) -> None:
        self.assembler.start(index, self.incarnations[index], episode)
        self._busy[index] = (episode, self.actors[index].play.remote(
            episode, episode_seed(int(run.cfg.seed), episode), run.state.step, self._weights(run.agent)))

    def _weights(self, agent: Any) -> Any:
        """The agent's state in the object store, refreshed after updates (shared by every assignment)."""
        if self._weights_ref is None or self._weights_ref[0] != self._updates:
            self._weights_ref = (self._updates, self.ray.put(agent.state_dict()))
        return self._weights_ref[1]

    # ---------------------------------------------------------------- segments
    def begin_segment(self) -> None:
        self.assembler = EpisodeAssembler()
        self._busy: dict[int, tuple[int, Any]] = {}
        self.reissue: list[int] = []
        self._weights_ref: tuple[int, Any] | None = None
        self._updates = 0
        self._updates_since: list[dict[str, float]] = []

    def collect(self, run: Run, interrupt: GracefulInterrupt) -> Iterator[EpisodeStats]:
        """Keep every actor busy until a drain: then wait for the episodes in flight, none left half-received."""
        self.begin_segment()
        next_episode, draining = run.state.episode, False
        for i in range(len(self.actors)):
            self._assign(i, next_episode, run)
            next_episode += 1
        while self._busy or self.assembler.partial:
            interrupt.check()
            for chunk in self._take_chunks():
                with interrupt.anytime():  # its updates
                    stats = self.receive(chunk, run)
                if stats is not None:
                    yield stats
            draining = draining or run.drain_due()
            ready, _ = self.ray.wait([f for _, f in self._busy.values()], num_returns=len(self._busy), timeout=0)
            for index, (_episode, future) in list(self._busy.items()):
                if future not in ready:
                    continue
                del self._busy[index]
                try:
                    self.ray.get(future)
                except self.ray.exceptions.RayError as e:  # the actor died, or its env/agent raised
                    self.restart_actor(index, e, run)
                if self.reissue:
                    self._assign(index, self.reissue.pop(0), run)
                elif not draining:
                    self._assign(index, next_episode, run)
                    next_episode += 1
            for index in range(len(self.actors)):  # reissued episodes of dead actors go to any idle actor
                if self.reissue and index not in self._busy:
                    self._assign(index, self.reissue.pop(0), run)
            run.progress.steps(run.state.step)

    def _take_chunks(self) -> list[dict[str, Any]]:
        from ray.util.queue import Empty

        try:
            return [self.queue.get(block=True, timeout=0.05)] + self.queue.get_nowait_batch(self.queue.qsize())
        except Empty:
            return []

    def receive(self, chunk: dict[str, Any], run: Run) -> EpisodeStats | None:
        """One chunk: count its steps and do one update per step (once the replay holds an episode); a finished
        episode goes to the replay and its stats are returned."""
        if not self.assembler.accepts(chunk):
            self.assembler.add(chunk)  # counted as ignored: a stale or repeated chunk takes no step here
            return None
        state, can_update = run.state, len(run.replay) > 0
        for _ in range(len(chunk["action"])):
            if state.step >= self.seed_steps and can_update:
                self._updates_since.append(run.agent.update(run.replay, state.step))
                self._updates += 1
            state.step += 1
        finished = self.assembler.add(chunk)
        if finished is None:
            return None
        _, episode, infos = finished
        run.replay.add_episode(episode)
        stats = EpisodeStats()
        for reward, info in zip(episode.reward, infos, strict=True):
            stats.add_step(float(reward), info)
        stats.updates, self._updates_since = self._updates_since, []
        return stats

    def close(self) -> None:
        for actor in self.actors:
            self.ray.kill(actor)
        if self._owns_ray:
            self.ray.shutdown()
