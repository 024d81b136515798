"""``EpisodeStreams``: one in-progress episode per env in front of a :class:`~robotrl.replay.ReplayBuffer`."""

from __future__ import annotations

import numpy as np

from robotrl.contract import check_obs
from robotrl.episodes import EpisodeBuilder
from robotrl.replay import ReplayBuffer
from robotrl.types import Obs


class EpisodeStreams:
    """One in-progress episode per env (``env.num_envs`` streams) in front of a :class:`ReplayBuffer`.

    The buffer stores each episode in consecutive slots, so steps of N interleaved envs cannot be written one by
    one. Each stream collects its episode here and adds it whole (``add_episode``) when it ends: n-step returns
    and sub-trajectories never cross streams, and an episode becomes sampleable at its end. ``discard`` drops a
    stream's episode (a crashed env worker); it never reaches the buffer.
    """

    def __init__(self, replay: ReplayBuffer, num_streams: int) -> None:
        if num_streams < 1:
            raise ValueError(f"num_streams={num_streams}, expected >= 1")
        self.replay = replay
        self._episodes: list[EpisodeBuilder | None] = [None] * int(num_streams)

    def begin(self, stream: int, obs: Obs) -> None:
        """Start ``stream``'s episode with its reset observation (an unfinished one is dropped)."""
        check_obs(obs, self.replay.observation_space)
        self._episodes[stream] = EpisodeBuilder(self.replay.frame_channels)
        self._episodes[stream].begin(obs)

    def add(self, stream: int, action: np.ndarray, reward: float, obs: Obs, terminated: bool, truncated: bool,
            success: bool = False, reward_invalid: bool = False) -> bool:
        """Record one step of ``stream`` (``reward_invalid``: a made-up reward, see ``ReplayBuffer.add``); at the
        episode's end add it to the replay. True when it was added."""
        episode = self._episodes[stream]
        if episode is None:
            raise ValueError(f"stream {stream}: add() without begin(); call begin(stream, obs) after its reset")
        episode.add(action, reward, obs, terminated, success, reward_invalid)
        if not (terminated or truncated):
            return False
        self.replay.add_episode(episode.build())
        self._episodes[stream] = None
        return True

    def discard(self, stream: int) -> int:
        """Drop ``stream``'s unfinished episode; return how many steps it had."""
        episode, self._episodes[stream] = self._episodes[stream], None
        return 0 if episode is None else len(episode)

    @property
    def pending(self) -> int:
        """Streams with an episode in progress (0 at checkpoints: they are taken between episodes)."""
        return sum(e is not None for e in self._episodes)
