"""MoDem's demos: where they are (a directory, or the cache the training workflow generates) and reading them in
the agent's observation format, every shape checked against the env before the first BC step."""

from __future__ import annotations

from pathlib import Path

import gymnasium as gym

from robotrl.demos import META, load_demos
from robotrl.errors import ConfigError, DemoFormatError
from robotrl.types import Episode


def demo_dir(demos: str | None, demo_cache: str | None) -> Path:
    """``demos`` when given; else ``demo_cache``, where ``robotrl.workflows.demos.ensure_demos`` generated them."""
    if demos is not None:
        return Path(demos)
    if demo_cache is None:
        raise ConfigError("demos=null needs demo_cache (where the training workflow generates demos); "
                          "pass demos=<dir>")
    out = Path(demo_cache)
    if not (out / META).is_file():
        raise ConfigError(f"demos=null and no demos in demo_cache={str(out)!r}: `robotrl train` generates "
                          "Meta-World demos there before building the agent (robotrl.workflows.demos), or pass "
                          "demos=<dir> (e.g. from `robotrl demos`)")
    return out


def read_demos(root: Path, observation_space: gym.spaces.Dict, action_dim: int, frame_stack: int, proprio: bool,
               limit: int | None = None) -> list[Episode]:
    """The first ``limit`` (all: None) episodes of ``root`` with the observation keys of ``observation_space``;
    DemoFormatError for a bad file or a shape that does not fit the env (pixels are single frames: the replay
    rebuilds the ``frame_stack``)."""
    episodes = load_demos(root, proprio=proprio)
    if limit is not None:
        episodes = episodes[:limit]
    keys = sorted(observation_space.spaces)
    out = []
    for i, ep in enumerate(episodes):
        obs = {}
        for key in keys:
            want = observation_space[key].shape
            have = ep.obs[key].shape[1:]
            if key == "pixels":  # single frames (every camera view), stacks are rebuilt by the replay
                want = (want[0] // frame_stack, *want[1:])
            if tuple(have) != tuple(want):
                raise DemoFormatError(f"{root}: episode {i} {key!r} frames are {tuple(have)}, this env needs "
                                      f"{tuple(want)} (regenerate the demos with the env's image size/state)")
            obs[key] = ep.obs[key]
        if ep.action.shape[1] != action_dim:
            raise DemoFormatError(f"{root}: episode {i} actions have dim {ep.action.shape[1]}, "
                                  f"this env needs {action_dim}")
        out.append(ep._replace(obs=obs))  # the loaded episode with this agent's observation keys
    return out
