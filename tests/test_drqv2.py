"""DrQ-v2 agent: acting, exploration, schedule, augmentation, learning, checkpoints, config (fast, CPU)."""

from __future__ import annotations

import io

import gymnasium as gym
import numpy as np
import pytest
import torch
from robotrl.agents import make_agent
from robotrl.agents.drqv2 import DrQV2Agent
from robotrl.agents.nets import schedule

from robotrl.augment import random_shift, random_shift_grid_sample, sample_shifts
from robotrl.errors import CheckpointError, ObservationError
from robotrl.types import Batch

torch.set_num_threads(1)

H = 32
B = 16
ACTION = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)


def space(pixels: bool = True, state: bool = False, h: int = H) -> gym.spaces.Dict:
    spaces = {}
    if pixels:
        spaces["pixels"] = gym.spaces.Box(0, 255, (9, h, h), np.uint8)
    if state:
        spaces["state"] = gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)
    return gym.spaces.Dict(spaces)


def make(obs_space: gym.spaces.Dict | None = None, **kw) -> DrQV2Agent:
    args = {"lr": 1e-3, "feature_dim": 16, "hidden_dim": 32, "critic_target_tau": 0.01, "num_expl_steps": 10,
            "update_every_steps": 1, "stddev_schedule": "linear(1.0,0.1,100)", "stddev_clip": 0.3,
            "batch_size": B, "nstep": 3, "discount": 0.99, "seed": 0, **kw}
    return DrQV2Agent(obs_space or space(), ACTION, "cpu", **args)


def random_obs(obs_space: gym.spaces.Dict, rng: np.random.Generator, batch: int | None = None) -> dict:
    lead = () if batch is None else (batch,)
    out = {}
    for key, sub in obs_space.spaces.items():
        if key == "pixels":
            out[key] = rng.integers(0, 256, lead + sub.shape, dtype=np.uint8)
        else:
            out[key] = rng.normal(size=lead + sub.shape).astype(np.float32)
    return out


class FixedReplay:
    """Returns the same batch every time (so the critic loss should fall as it fits it)."""


    def __init__(self, obs_space: gym.spaces.Dict, seed: int = 0):
        rng = np.random.default_rng(seed)
        action = torch.as_tensor(rng.uniform(-1, 1, (B, 2)).astype(np.float32))
        self.batch = Batch(
            obs={k: torch.as_tensor(v) for k, v in random_obs(obs_space, rng, B).items()},
            action=action,
            reward=3.0 * action[:, :1],  # learnable from the action alone, whatever the augmentation does
            discount=torch.full((B, 1), 0.99**3),
            next_obs={k: torch.as_tensor(v) for k, v in random_obs(obs_space, rng, B).items()},
        )
        self.calls = 0

    def sample(self, batch_size: int) -> Batch:
        assert batch_size == B
        self.calls += 1
        return self.batch


def test_act_shape_dtype_bounds_and_eval_determinism():
    agent = make()
    obs = random_obs(space(), np.random.default_rng(1))
    for step, eval_mode in [(0, False), (50, False), (1000, False), (5, True)]:
        a = agent.act(obs, step, eval_mode)
        assert a.shape == (2,) and a.dtype == np.float32
        assert np.all(np.abs(a) <= 1.0)
    np.testing.assert_array_equal(agent.act(obs, 500, True), agent.act(obs, 7, True))


def test_exploration_is_uniform_before_num_expl_steps():
    agent = make(num_expl_steps=10_000)
    obs = random_obs(space(), np.random.default_rng(1))
    actions = np.stack([agent.act(obs, step, False) for step in range(400)])
    # Uniform on [-1, 1]: mean 0, variance 1/3, and fills the range (a policy with std<=1 around a fixed
    # mean would not spread this evenly).
    assert abs(actions.mean()) < 0.1
    assert abs(actions.var() - 1 / 3) < 0.05
    hist, _ = np.histogram(actions, bins=4, range=(-1, 1))
    assert hist.min() > 0.15 * actions.size


def test_schedule_formula():
    assert schedule("linear(1.0,0.1,100)", 0) == pytest.approx(1.0)
    assert schedule("linear(1.0,0.1,100)", 50) == pytest.approx(0.55)
    assert schedule("linear(1.0,0.1,100)", 100) == pytest.approx(0.1)
    assert schedule("linear(1.0,0.1,100)", 10_000) == pytest.approx(0.1)
    assert schedule(" linear(1.0, 0.1, 2000000) ", 500_000) == pytest.approx(1.0 - 0.25 * 0.9)
    assert schedule(0.2, 123) == 0.2
    assert schedule("0.3", 5) == 0.3
    with pytest.raises(ValueError):
        schedule("cosine(1,0,10)", 0)


def test_crop_aug_equals_grid_sample_aug():
    torch.manual_seed(0)
    x = torch.randint(0, 256, (8, 9, H, H), dtype=torch.uint8)
    shifts = sample_shifts(8, 4, "cpu")
    shifts[0] = torch.tensor([0, 8])  # extreme shifts exercise the replicate padding on every side
    shifts[1] = torch.tensor([8, 0])
    crop = random_shift(x, 4, shifts)
    assert crop.dtype == torch.uint8 and crop.shape == x.shape
    ref = random_shift_grid_sample(x, 4, shifts)
    # grid_sample lands on pixel centres up to float rounding of the grid: same values within 1e-3.
    torch.testing.assert_close(crop.float(), ref, atol=1e-3, rtol=0)
    centre = random_shift(x, 4, torch.full((8, 2), 4))
    torch.testing.assert_close(centre, x, atol=0, rtol=0)


@pytest.mark.parametrize("dtype", [torch.uint8, torch.float32])
@pytest.mark.parametrize("channels_last", [False, True])
def test_the_cpu_copies_and_the_gather_give_the_same_images(dtype, channels_last):
    """random_shift copies one crop per image on a CPU and gathers on a GPU: the same pixels either way."""
    from robotrl.augment import _shift_by_copies, _shift_by_gather

    x = torch.randint(0, 256, (16, 9, H, H + 4)).to(dtype)  # not square: rows and columns cannot be swapped
    if channels_last:
        x = x.contiguous(memory_format=torch.channels_last)
    shifts = sample_shifts(16, 4, "cpu")
    shifts[:4] = torch.tensor([[0, 8], [8, 0], [0, 0], [8, 8]])
    copies, gather = _shift_by_copies(x, 4, shifts), _shift_by_gather(x, 4, shifts)
    assert copies.dtype == dtype and copies.is_contiguous(memory_format=torch.channels_last)
    torch.testing.assert_close(copies, gather, atol=0, rtol=0)


def test_update_reduces_critic_loss_on_fixed_batch():
    torch.manual_seed(0)
    agent = make(stddev_schedule=0.1, lr=3e-3)
    replay = FixedReplay(space())
    losses = [agent.update(replay, step)["critic_loss"] for step in range(30)]
    assert replay.calls == 30
    assert np.mean(losses[-5:]) < 0.5 * np.mean(losses[:5]), losses
    metrics = agent.update(replay, 30)
    for key in ("critic_loss", "critic_q1", "critic_q2", "critic_target_q", "actor_loss", "actor_ent",
                "actor_logprob", "batch_reward"):
        assert np.isfinite(metrics[key]), key


def test_update_every_steps_skips_updates():
    agent = make(update_every_steps=2)
    replay = FixedReplay(space())
    assert agent.update(replay, 1) == {}
    assert replay.calls == 0
    assert "critic_loss" in agent.update(replay, 2)


def test_target_soft_update_formula():
    agent = make(critic_target_tau=0.25)
    with torch.no_grad():
        for p in agent.critic.parameters():
            p.normal_()
    online = [p.detach().clone() for p in agent.critic.parameters()]
    target = [p.detach().clone() for p in agent.critic_target.parameters()]
    agent.soft_update_target()
    for o, t, new in zip(online, target, agent.critic_target.parameters(), strict=True):
        torch.testing.assert_close(new, 0.25 * o + 0.75 * t)


def test_encoder_is_trained_only_through_the_critic():
    agent = make()
    obs = random_obs(space(), np.random.default_rng(0), B)
    features = agent.encoder({k: torch.as_tensor(v) for k, v in obs.items()})
    agent.update_actor(features.detach(), 100)
    assert all(p.grad is None for p in agent.encoder.parameters())
    assert all(p.grad is None for p in agent.critic.parameters())  # frozen for the actor step
    assert all(p.requires_grad for p in agent.critic.parameters())


def _roundtrip(state: dict) -> dict:
    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return torch.load(buf, weights_only=True)


def test_state_dict_roundtrip_continues_identically():
    replay = FixedReplay(space())
    a = make(seed=1)
    for step in range(3):
        a.update(replay, step)
    state = _roundtrip(a.state_dict())
    b = make(seed=99)
    b.load_state_dict(state)
    obs = random_obs(space(), np.random.default_rng(3))
    np.testing.assert_array_equal(a.act(obs, 500, True), b.act(obs, 500, True))
    np.testing.assert_array_equal(a.act(obs, 500, False), b.act(obs, 500, False))  # same generator state
    ma, mb = a.update(replay, 3), b.update(replay, 3)
    assert ma == mb
    for pa, pb in zip(a.critic.parameters(), b.critic.parameters(), strict=True):
        torch.testing.assert_close(pa, pb, atol=0, rtol=0)


@pytest.mark.parametrize(
    "bad, match",
    [
        (lambda o: {"pixels": o["pixels"][:3]}, "shape"),
        (lambda o: {"pixels": np.ascontiguousarray(o["pixels"].transpose(1, 2, 0))}, "channels-last"),
        (lambda o: {"pixels": o["pixels"].astype(np.float32)}, "dtype"),
        (lambda o: {"pixels": o["pixels"], "extra": np.zeros(1)}, "keys"),
    ],
)
def test_bad_observations_raise(bad, match):
    agent = make()
    obs = random_obs(space(), np.random.default_rng(0))
    with pytest.raises(ObservationError, match=match):
        agent.act(bad(obs), 0, True)


def test_loading_other_agent_or_shape_raises():
    state = make().state_dict()
    with pytest.raises(CheckpointError, match="agent"):
        make().load_state_dict({**state, "agent": "drm"})
    with pytest.raises(CheckpointError, match="shapes"):
        make(space(h=40)).load_state_dict(state)
    with pytest.raises(CheckpointError, match="feature_dim"):
        make(feature_dim=8).load_state_dict(state)
    with pytest.raises(CheckpointError):
        make().load_state_dict({k: v for k, v in state.items() if k != "critic"})


@pytest.mark.parametrize("pixels, state", [(False, True), (True, True)])
def test_state_only_and_pixels_plus_state(pixels, state):
    obs_space = space(pixels=pixels, state=state)
    agent = make(obs_space)
    assert agent.encoder.repr_dim == (5 if not pixels else 32 * 9 * 9 + 5)
    obs = random_obs(obs_space, np.random.default_rng(0))
    assert agent.act(obs, 100, False).shape == (2,)
    replay = FixedReplay(obs_space)
    losses = [agent.update(replay, s)["critic_loss"] for s in range(15)]
    assert np.mean(losses[-3:]) < np.mean(losses[:3])
    make(obs_space).load_state_dict(_roundtrip(agent.state_dict()))


def test_make_agent_applies_task_overrides(compose_cfg):
    root = compose_cfg("agent=drqv2", "env=dmc/cheetah_run", tiny=False)  # (the yaml's defaults list composed)
    root.agent.hidden_dim = 32  # keep the test fast
    plain = make_agent(root.agent, space(), ACTION, "cpu", env_name="dmc/cheetah_run")
    assert isinstance(plain, DrQV2Agent)
    assert plain.lr == pytest.approx(1e-4) and plain.config["feature_dim"] == 50
    assert plain.stddev_schedule == "linear(1.0,0.1,500000)"
    assert (plain.nstep, plain.discount, plain.batch_size, plain.update_every_steps) == (3, 0.99, 256, 2)
    walker = make_agent(root.agent, space(), ACTION, "cpu", env_name="dmc/walker_walk")
    assert (walker.nstep, walker.batch_size, walker.lr) == (1, 512, pytest.approx(1e-4))  # drqv2 walker_walk.yaml
    human = make_agent(root.agent, space(), ACTION, "cpu", env_name="dmc/humanoid_run")
    assert human.lr == pytest.approx(8e-5) and human.config["feature_dim"] == 100


def test_dormant_ratio_diagnostic_every_n_updates_without_changing_training():
    torch.manual_seed(0)
    plain = make(dormant_every=0)
    torch.manual_seed(0)
    diag = make(dormant_every=3)
    replay = FixedReplay(space())
    for step in range(7):
        m0, m1 = plain.update(replay, step), diag.update(replay, step)
        assert "actor_dormant_ratio" not in m0
        assert ("actor_dormant_ratio" in m1) == (step % 3 == 0)
        assert {k: v for k, v in m1.items() if not k.startswith("actor_dormant_ratio")} == m0
    assert 0.0 <= m1["actor_dormant_ratio"] <= 1.0  # step 6
    assert {"actor_dormant_ratio/trunk.0", "actor_dormant_ratio/policy.4"} <= set(m1)
    for a, b in zip(plain.critic.parameters(), diag.critic.parameters(), strict=True):
        assert torch.equal(a, b)
    assert torch.equal(plain.generator.get_state(), diag.generator.get_state())
