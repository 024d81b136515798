"""Test defaults: software EGL rendering, one torch thread (2 shared cores), and a tiny composed config."""

from __future__ import annotations

import os
import signal

os.environ.setdefault("MUJOCO_GL", "egl")
os.environ.setdefault("OMP_NUM_THREADS", "1")

import pytest  # noqa: E402
import torch  # noqa: E402
from robotrl.envs.rendering import preload_triton  # noqa: E402

torch.set_num_threads(1)
preload_triton()  # before any test loads a GL driver (see envs/rendering.preload_triton)


@pytest.fixture(autouse=True)
def _signal_handlers_restored():
    """Each test starts with the session's SIGINT and SIGTERM handlers: a test that runs ``robotrl.cli.main``
    in-process leaves its SIGTERM handler installed, and a later test that sends itself a signal must not depend on
    which tests ran before it (one did: a SIGINT swallowed in the full suite, not alone)."""
    saved = {s: signal.getsignal(s) for s in (signal.SIGINT, signal.SIGTERM)}
    yield
    for signum, handler in saved.items():
        if handler is not None and signal.getsignal(signum) is not handler:
            signal.signal(signum, handler)


# A tiny but complete DrQ-v2 run: 32x32 pixels, 50-step episodes, small nets.
TINY_OVERRIDES = [
    "env=dmc/cartpole_balance", "env.image_size=32", "env.max_episode_steps=100", "env.video_size=32",
    "frames=400", "seed_frames=100", "eval_every_frames=200", "eval_episodes=1", "checkpoint_every_frames=200",
    "replay.capacity=2000", "torch_threads=1", "device=cpu", "compare_baselines=false",
    "agent.batch_size=8", "agent.hidden_dim=32", "agent.feature_dim=16", "agent.num_expl_steps=50",
]


@pytest.fixture
def compose_cfg():
    """Compose the real config (configs/config.yaml) with TINY_OVERRIDES plus the test's own overrides."""
    from hydra import compose, initialize_config_module

    from robotrl.config import register_hydra

    def _compose(*overrides: str, tiny: bool = True):
        register_hydra()  # run_tag and base/*: importing robotrl registers nothing
        with initialize_config_module("robotrl.configs", version_base="1.3"):
            return compose("config", overrides=[*(TINY_OVERRIDES if tiny else []), *overrides])

    return _compose


def flat_tensors(state, prefix: str = "") -> dict[str, torch.Tensor]:
    """Every tensor in a nested state dict, keyed by its dotted path."""
    if isinstance(state, dict):
        return {k: v for key, sub in state.items() for k, v in flat_tensors(sub, f"{prefix}.{key}").items()}
    return {prefix: state} if isinstance(state, torch.Tensor) else {}


def assert_same_tensors(state_a, state_b, min_count: int = 10) -> None:
    """Two agent state dicts hold the same tensors, bit for bit (the exact-resume check)."""
    a, b = flat_tensors(state_a), flat_tensors(state_b)
    assert a.keys() == b.keys() and len(a) > min_count, (sorted(a), sorted(b))
    for key in a:
        assert torch.equal(a[key], b[key]), key
