"""TD-MPC2: two-hot math, world-model shapes and losses, MPPI on a known reward, checkpoints, trainer runs."""

from __future__ import annotations

import gymnasium as gym
import numpy as np
import pytest
import torch
from robotrl.agents import tdmpc2_math as tm
from robotrl.agents.tdmpc2 import TDMPC2Agent
from robotrl.agents.world_model import MODEL_SIZE, EnsembleMLP, SimNorm, WorldModel, mlp

from robotrl.errors import CheckpointError, ConfigError
from robotrl.types import Trajectories
from robotrl.workflows.train import Trainer
from tests.conftest import assert_same_tensors

TINY = {"model_size": 1, "latent_dim": 16, "mlp_dim": 32, "enc_dim": 32, "num_channels": 8, "batch_size": 16,
        "num_samples": 64, "num_elites": 8, "num_pi_trajs": 4, "iterations": 3, "seed": 0}
TINY_CFG = [
    "agent=tdmpc2", "env=dmc/cartpole_balance", "env.image_size=32", "env.max_episode_steps=100",
    "env.video_size=32", "frames=200", "seed_frames=100", "eval_every_frames=200", "eval_episodes=1",
    "checkpoint_every_frames=200", "replay.capacity=2000", "torch_threads=1", "device=cpu", "compare_baselines=false",
    "agent.latent_dim=16", "agent.mlp_dim=32", "agent.enc_dim=32", "agent.num_channels=8", "agent.batch_size=8",
    "agent.num_samples=32", "agent.num_elites=4", "agent.num_pi_trajs=4", "agent.iterations=2",
]


def _spaces(obs: str, size: int = 32, state_dim: int = 5, action_dim: int = 2):
    spaces = {}
    if "pixels" in obs:
        spaces["pixels"] = gym.spaces.Box(0, 255, (9, size, size), np.uint8)
    if "state" in obs:
        spaces["state"] = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
    return gym.spaces.Dict(spaces), gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)


def _batch(obs_space, horizon: int, batch: int, action_dim: int, seed: int = 0) -> Trajectories:
    g = torch.Generator().manual_seed(seed)
    obs = {}
    for key, space in obs_space.spaces.items():
        shape = (horizon + 1, batch, *space.shape)
        obs[key] = (torch.randint(0, 256, shape, generator=g, dtype=torch.uint8) if key == "pixels"
                    else torch.randn(shape, generator=g))
    return Trajectories(obs, torch.rand(horizon, batch, action_dim, generator=g) * 2 - 1,
                        torch.randn(horizon, batch, 1, generator=g), torch.zeros(horizon, batch, 1))


# ---------------------------------------------------------------------------------------------------- math
def test_symlog_two_hot_round_trip():
    x = torch.tensor([-2000.0, -37.5, -1.0, -0.01, 0.0, 0.3, 1.0, 5.0, 123.4, 5000.0])[:, None]
    torch.testing.assert_close(tm.symexp(tm.symlog(x)), x)
    th = tm.TwoHot(101, -10, 10)
    enc = th.encode(x)
    assert enc.shape == (10, 101) and torch.allclose(enc.sum(-1), torch.ones(10))
    assert (enc > 0).sum(-1).max() <= 2  # two-hot
    # decoding the two-hot probabilities (as logits via log) recovers the value (inside symlog [-10, 10])
    back = th.decode(torch.log(enc.clamp_min(1e-30)))
    torch.testing.assert_close(back, x, rtol=1e-4, atol=1e-4)
    # leading dims and the cross-entropy's minimum at the target
    y = torch.randn(3, 4, 1) * 5
    assert th.encode(y).shape == (3, 4, 101)
    ce_true = th.soft_ce(torch.log(th.encode(y).clamp_min(1e-30)), y)
    ce_other = th.soft_ce(torch.log(th.encode(y + 1).clamp_min(1e-30)), y)
    assert ce_true.shape == (3, 4, 1) and (ce_true < ce_other).all()


def test_discount_heuristic():
    assert tm.heuristic_discount(500) == pytest.approx(0.99)
    assert tm.heuristic_discount(1000) == pytest.approx(0.995)
    assert tm.heuristic_discount(50) == pytest.approx(0.95)


def test_ensemble_matches_separate_mlps():
    """The stacked ensemble computes exactly what num independent reference MLPs would (dropout off)."""
    torch.manual_seed(0)
    ens = EnsembleMLP(3, 7, [16, 16], 5, dropout=0.01).eval()
    with torch.no_grad():
        for p in ens.parameters():
            p.normal_()
    x = torch.randn(4, 6, 7)
    out = ens(x)
    assert out.shape == (3, 4, 6, 5)
    for e in range(3):
        ref = mlp(7, [16, 16], 5, dropout=0.01).eval()
        with torch.no_grad():
            for i in range(2):
                ref[i].weight.copy_(getattr(ens, f"weight_{i}")[e])
                ref[i].bias.copy_(getattr(ens, f"bias_{i}")[e])
                ref[i].ln.weight.copy_(getattr(ens, f"ln_weight_{i}")[e])
                ref[i].ln.bias.copy_(getattr(ens, f"ln_bias_{i}")[e])
            ref[2].weight.copy_(ens.weight_2[e])
            ref[2].bias.copy_(ens.bias_2[e])
        torch.testing.assert_close(out[e], ref(x), rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(ens(x, torch.tensor([2, 0])), out[[2, 0]])


# --------------------------------------------------------------------------------------------- world model
@pytest.mark.parametrize("obs", ["state", "pixels", "pixels_state"])
def test_world_model_shapes(obs):
    obs_space, act_space = _spaces(obs)
    model = WorldModel({k: s.shape for k, s in obs_space.spaces.items()}, 2, latent_dim=16, mlp_dim=32, enc_dim=32,
                       num_channels=8, num_q=5)
    b = _batch(obs_space, 3, 4, 2)
    z = model.encode(b.obs)
    assert z.shape == (4, 4, 16)
    torch.testing.assert_close(z.view(4, 4, 2, 8).sum(-1), torch.ones(4, 4, 2))  # SimNorm groups of 8
    assert model.next(z[:-1], b.action).shape == (3, 4, 16)
    assert model.reward(z[:-1], b.action).shape == (3, 4, 101)
    a, info = model.pi(z)
    assert a.shape == (4, 4, 2) and a.abs().max() <= 1 and info["mean"].shape == (4, 4, 2)
    assert model.Q(z[:-1], b.action, "all").shape == (5, 3, 4, 101)
    assert model.Q(z[:-1], b.action, "min").shape == (3, 4, 1)
    assert model.Q(z[:-1], b.action, "avg", target=True).shape == (3, 4, 1)


def test_multi_view_encoder_keeps_each_view_in_its_own_conv_stack():
    """MoDem-V2's per-camera encoders: 2 views x frame stack 3 = 18 channels laid out per frame as [view0, view1];
    changing view 1 only changes the output through view 1's stack, and the sum of the two stacks is the latent."""
    obs_shapes = {"pixels": (18, 32, 32)}
    model = WorldModel(obs_shapes, 2, latent_dim=16, mlp_dim=32, enc_dim=32, num_channels=8, pixel_views=2)
    enc = model._encoder["pixels"]
    assert len(enc.encoders) == 2 and enc.stack == 3
    x = torch.randint(0, 256, (4, 18, 32, 32), dtype=torch.uint8)
    frames = x.float().div(255).sub(0.5).view(4, 3, 2, 3, 32, 32)  # (N, frame, view, rgb, H, W)
    per_view = [enc.encoders[v](frames[:, :, v].reshape(4, 9, 32, 32)) for v in range(2)]
    torch.testing.assert_close(model.encode({"pixels": x}), enc.simnorm(per_view[0] + per_view[1]))
    y = x.clone().view(4, 3, 2, 3, 32, 32)
    y[:, :, 1] = 255 - y[:, :, 1]  # only view 1 changes
    y = y.view(4, 18, 32, 32)
    assert not torch.allclose(model.encode({"pixels": y}), model.encode({"pixels": x}))
    one = WorldModel(obs_shapes, 2, latent_dim=16, mlp_dim=32, enc_dim=32, num_channels=8)
    assert not hasattr(one._encoder["pixels"], "encoders")  # pixel_views=None: one stack over all channels
    obs_space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (18, 32, 32), np.uint8)})
    act_space = gym.spaces.Box(-1.0, 1.0, (2,), np.float32)
    with pytest.raises(ConfigError, match="pixel_views=4"):
        TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "pixel_views": 4})
    a = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "pixel_views": 2})
    b = TDMPC2Agent(obs_space, act_space, "cpu", **TINY)
    with pytest.raises(CheckpointError, match="pixel_views"):
        b.load_state_dict(a.state_dict())
    old = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "seed": 3}).state_dict()
    old["config"] = {k: v for k, v in old["config"].items() if k != "pixel_views"}  # saved before the key existed
    b.load_state_dict(old)


def test_pixels_and_state_are_fused_as_in_modem():
    """MoDem's TOLD.h: conv features (summed over views) + state-MLP features -> fuse MLP -> SimNorm; each modality
    moves the latent; a checkpoint from the earlier averaging encoder is refused by name, not by a missing key."""
    obs_space, act_space = _spaces("pixels_state")
    model = WorldModel({k: s.shape for k, s in obs_space.spaces.items()}, 2, latent_dim=16, mlp_dim=32, enc_dim=32,
                       num_channels=8)
    b = _batch(obs_space, 0, 4, 2).obs
    pix, state = b["pixels"][0], b["state"][0]
    pix_feat = model._encoder["pixels"](pix.float().div(255).sub(0.5))
    state_feat = model._encoder["state"](state)
    assert pix_feat.shape == state_feat.shape == (4, 16)
    torch.testing.assert_close(model.encode({"pixels": pix, "state": state}), model._fuse(pix_feat + state_feat))
    assert isinstance(model._fuse[-1].act, SimNorm)
    z = model.encode({"pixels": pix, "state": state})
    assert not torch.allclose(model.encode({"pixels": pix, "state": state + 1}), z)
    assert not torch.allclose(model.encode({"pixels": 255 - pix, "state": state}), z)
    agent = TDMPC2Agent(obs_space, act_space, "cpu", **TINY)
    assert agent.config["obs_fusion"] == "sum_mlp"
    optimised = [id(p) for opt in (agent.optim, agent.pi_optim) for g in opt.param_groups for p in g["params"]]
    trainable = {id(p) for p in agent.model.parameters() if p.requires_grad}
    assert len(optimised) == len(set(optimised)) and set(optimised) == trainable  # the fuse MLP is trained too
    old = agent.state_dict()
    old["config"] = {k: v for k, v in old["config"].items() if k != "obs_fusion"}  # saved by the averaging encoder
    with pytest.raises(CheckpointError, match="obs_fusion"):
        agent.load_state_dict(old)
    assert TDMPC2Agent(*_spaces("state"), "cpu", **TINY).config["obs_fusion"] == "none"


def test_model_size_presets():
    """Parameter counts of the presets on a reference-like task (state 39, action 6): 1M and 5M."""
    obs_space, act_space = _spaces("state", state_dim=39, action_dim=6)
    counts = {}
    for size in (1, 5):
        agent = TDMPC2Agent(obs_space, act_space, "cpu", model_size=size, seed=0)
        counts[size] = agent.model.total_params
    assert 0.9e6 < counts[1] < 1.5e6 and 4.5e6 < counts[5] < 5.5e6, counts
    assert MODEL_SIZE[48]["mlp_dim"] == 1792


@pytest.mark.parametrize("obs", ["state", "pixels"])
def test_losses_go_down_on_a_fixed_batch(obs):
    obs_space, act_space = _spaces(obs)
    agent = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "lr": 1e-3})
    batch = _batch(obs_space, 3, 16, 2)
    first = agent.update_from(batch)
    for _ in range(30):
        last = agent.update_from(batch)
    for key in ("consistency_loss", "reward_loss", "value_loss", "pi_loss", "grad_norm"):
        assert np.isfinite(first[key]) and np.isfinite(last[key]), key
    assert last["total_loss"] < 0.7 * first["total_loss"], (first, last)
    assert last["reward_loss"] < first["reward_loss"]


def test_updates_and_acts_on_pixels_from_the_replay():
    """What the trainer hands TD-MPC2 on pixels: stacked frames rebuilt by the replay (time-major trajectories),
    the seed-phase burst at the first update, then planning on a pixel observation."""
    from robotrl.replay import ReplayBuffer

    obs_space, act_space = _spaces("pixels")
    rng = np.random.default_rng(0)
    replay = ReplayBuffer(200, obs_space, 2, frame_stack=3, nstep=1, discount=0.99, seed=0)
    for _ in range(2):
        stack = np.tile(rng.integers(0, 256, (3, 32, 32), np.uint8), (3, 1, 1))  # reset: copies of frame 0
        replay.add_first({"pixels": stack})
        for t in range(20):
            stack = np.concatenate([stack[3:], rng.integers(0, 256, (3, 32, 32), np.uint8)])  # oldest -> newest
            replay.add(rng.uniform(-1, 1, 2).astype(np.float32), float(rng.normal()), {"pixels": stack}, False,
                       t == 19)
    agent = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "batch_size": 8})
    metrics = agent.update(replay, 40)
    assert agent._num_updates == 40  # the burst: one update per step collected
    for key in ("consistency_loss", "reward_loss", "value_loss", "pi_loss"):
        assert np.isfinite(metrics[key]), key
    action = agent.act({"pixels": rng.integers(0, 256, (9, 32, 32), np.uint8)}, 40, eval_mode=False)
    assert action.shape == (2,) and np.abs(action).max() <= 1


# ---------------------------------------------------------------------------------------------------- MPPI
class _QuadraticModel(torch.nn.Module):
    """A toy latent world: z never changes, reward = -|a - target|^2 (scalar, no bins), Q = 0, random policy."""

    def __init__(self, target: torch.Tensor):
        super().__init__()
        self.target = target
        self.two_hot = tm.TwoHot(0)
        self._termination = None
        self.num_pi = 1

    def encode(self, obs):
        return obs["state"].float()

    def next(self, z, a):
        return z

    def reward(self, z, a):
        return -((a - self.target) ** 2).sum(-1, keepdim=True)

    def pi(self, z, generator=None, member=0):
        a = torch.rand(*z.shape[:-1], self.target.shape[0], generator=generator) * 2 - 1
        return a, {"mean": a}

    def Q(self, z, a, return_type="min", generator=None, **_):
        return torch.zeros(*z.shape[:-1], 1)


def test_mppi_finds_quadratic_optimum():
    obs_space, act_space = _spaces("state", action_dim=3)
    agent = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "num_samples": 512, "num_elites": 64,
                                                         "num_pi_trajs": 24, "iterations": 6})
    target = torch.tensor([0.4, -0.7, 0.1])
    agent.model = _QuadraticModel(target)
    agent._num_updates = 1
    obs = {"state": np.zeros(5, np.float32)}
    actions = [agent.act(obs, 0, eval_mode=True) for _ in range(5)]
    np.testing.assert_allclose(np.mean(actions, 0), target.numpy(), atol=0.05)
    assert agent._prev_mean is not None and agent._prev_mean.shape == (3, 3)
    # the warm-started mean is the optimum at every step of the horizon; reset() drops it
    np.testing.assert_allclose(agent._prev_mean.numpy(), np.tile(target.numpy(), (3, 1)), atol=0.1)
    agent.reset()
    assert agent._prev_mean is None
    noisy = agent.act(obs, 0, eval_mode=False)  # training adds the final std as noise, still in bounds
    assert noisy.shape == (3,) and np.abs(noisy).max() <= 1


def test_seed_phase_is_random_then_plans():
    obs_space, act_space = _spaces("state")
    agent = TDMPC2Agent(obs_space, act_space, "cpu", **TINY)
    obs = {"state": np.zeros(5, np.float32)}
    a = agent.act(obs, 0, eval_mode=False)
    assert agent._prev_mean is None and a.dtype == np.float32  # random: no plan was made
    agent.act(obs, 0, eval_mode=True)
    assert agent._prev_mean is not None  # evaluation always plans


# ------------------------------------------------------------------------------------------------ checkpoints
def test_state_dict_round_trip_and_mismatch(tmp_path):
    obs_space, act_space = _spaces("pixels")
    a = TDMPC2Agent(obs_space, act_space, "cpu", **TINY)
    a.update_from(_batch(obs_space, 3, 16, 2))
    torch.save(a.state_dict(), tmp_path / "a.pt")
    state = torch.load(tmp_path / "a.pt", weights_only=True)
    b = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "seed": 1})
    b.load_state_dict(state)
    batch = _batch(obs_space, 3, 16, 2, seed=1)
    torch.manual_seed(0)
    ma = a.update_from(batch)
    torch.manual_seed(0)
    mb = b.update_from(batch)
    assert ma == mb  # same generator, same dropout masks: bit-identical continuation
    obs = {"pixels": np.zeros((9, 32, 32), np.uint8)}
    np.testing.assert_array_equal(a.act(obs, 0, True), b.act(obs, 0, True))
    with pytest.raises(CheckpointError, match="expected 'tdmpc2'"):
        b.load_state_dict({**state, "agent": "drqv2"})
    c = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "mlp_dim": 48})
    with pytest.raises(CheckpointError, match="mlp_dim"):
        c.load_state_dict(state)
    d = TDMPC2Agent(*_spaces("state"), "cpu", **TINY)
    with pytest.raises(CheckpointError, match="shapes"):
        d.load_state_dict(state)


# ---------------------------------------------------------------------------------------------------- trainer
@pytest.fixture
def tdmpc2_cfg(compose_cfg):
    return lambda *overrides: compose_cfg(*TINY_CFG, *overrides, tiny=False)


# pixels: ~17 s; test_updates_and_acts_on_pixels_from_the_replay holds TD-MPC2's part of it
@pytest.mark.parametrize("obs_type", ["state", pytest.param("pixels", marks=pytest.mark.slow)])
def test_trainer_smoke(tdmpc2_cfg, tmp_path, obs_type):
    summary = Trainer(tdmpc2_cfg(f"env.obs_type={obs_type}"), tmp_path).train()
    assert summary["frames"] == 200 and summary["agent"] == "tdmpc2"
    train_csv = (tmp_path / "train.csv").read_text()
    assert "consistency_loss" in train_csv and "pi_loss" in train_csv
    assert (tmp_path / "checkpoints" / "latest").exists() and (tmp_path / "eval.csv").exists()


@pytest.mark.slow  # ~36 s; the TD-MPC2 family's exact resume stays in the default suite (MoDem-V2 on robot=sim)
def test_resume_is_exact(tdmpc2_cfg, tmp_path):
    """300 frames in one go vs 200 + resume to 300: identical parameters, optimiser states and generator."""
    full = Trainer(tdmpc2_cfg("env.obs_type=state", "frames=300", "eval_every_frames=100"), tmp_path / "full")
    full.train()
    Trainer(tdmpc2_cfg("env.obs_type=state", "frames=200", "eval_every_frames=100"), tmp_path / "split").train()
    resumed = Trainer(tdmpc2_cfg("env.obs_type=state", "frames=300", "eval_every_frames=100", "resume=true"),
                      tmp_path / "split")
    assert resumed.step == 100
    resumed.train()
    assert_same_tensors(full.agent.state_dict(), resumed.agent.state_dict(), min_count=20)
    assert full.agent._num_updates == resumed.agent._num_updates > 50


def test_fast_mish_matches_torch():
    from robotrl.agents.world_model import mish

    x = (torch.randn(257, 33, dtype=torch.float64) * 8).requires_grad_()
    torch.testing.assert_close(mish(x), torch.nn.functional.mish(x))
    torch.autograd.gradcheck(mish, (x[:4, :5].detach().clone().requires_grad_(),))
    with torch.no_grad():
        torch.testing.assert_close(mish(x), torch.nn.functional.mish(x))


def test_simnorm_matches_grouped_softmax():
    from robotrl.agents.world_model import SimNorm

    norm = SimNorm(8)
    x = (torch.randn(3, 57, 64, dtype=torch.float64) * 30).requires_grad_()  # large logits: max-subtraction
    want = torch.nn.functional.softmax(x.view(3, 57, 8, 8), dim=-1).view(3, 57, 64)
    torch.testing.assert_close(norm(x), want)
    torch.autograd.gradcheck(norm, (x[:1, :3].detach().clone().requires_grad_(),))
    with torch.inference_mode():
        xb = x.detach().bfloat16()
        got = norm(xb)
        assert got.dtype == torch.bfloat16
        torch.testing.assert_close(got, torch.nn.functional.softmax(xb.view(3, 57, 8, 8), -1).view(3, 57, 64))


def test_plan_bf16_runs_and_keeps_training_fp32():
    obs_space, act_space = _spaces("state")
    agent = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "plan_bf16": True})
    a = agent.act({"state": np.zeros(5, np.float32)}, 0, eval_mode=True)
    assert a.dtype == np.float32 and np.abs(a).max() <= 1 and agent._prev_mean.dtype == torch.float32
    agent.update_from(_batch(obs_space, 3, 16, 2))
    assert next(agent.model.parameters()).dtype == torch.float32
    agent.act({"state": np.zeros(5, np.float32)}, 0, eval_mode=False)
    assert agent._plan_copy[0] == agent._num_updates  # refreshed after the update


@pytest.mark.slow  # opt-in (agent.compile=true); the first calls compile: 30-80 s on 2 cores
def test_compiled_kernels_match_eager_and_train():
    """agent.compile: the fused LayerNorm + Mish kernel gives the eager model's outputs and gradients, and an
    update + a plan run through it (the first calls compile: ~30-60 s on 2 cores)."""
    obs_space, act_space = _spaces("state")
    eager = TDMPC2Agent(obs_space, act_space, "cpu", **TINY)
    fused = TDMPC2Agent(obs_space, act_space, "cpu", **{**TINY, "compile": True})
    fused.model.load_state_dict(eager.model.state_dict())
    assert fused.model._dynamics[0].fused is not None and fused.model._Qs.fused is not None
    # the SimNorm layers keep their own activation: inductor's kernel for softmax over groups of 8 was ~2x slower
    assert fused.model._dynamics[-1].fused is None and fused.model._encoder["state"][-1].fused is None
    batch = _batch(obs_space, 3, 16, 2)
    grads, latents = [], []
    for agent in (eager, fused):
        z = agent.model.encode({k: v[0] for k, v in batch.obs.items()})
        z_next = agent.model.next(z, batch.action[0])
        out = z_next.square().sum() + agent.model.Q(z, batch.action[0], "all").square().sum()
        out.backward()
        grads.append({n: p.grad.clone() for n, p in agent.model.named_parameters() if p.grad is not None})
        latents.append(z_next.detach())
        agent.model.zero_grad()
    torch.testing.assert_close(latents[1], latents[0], rtol=1e-5, atol=1e-6)
    torch.testing.assert_close(latents[1].view(16, -1, 8).sum(-1), torch.ones(16, 2))  # still SimNorm groups
    assert grads[0].keys() == grads[1].keys() and "_encoder.state.1.ln.weight" in grads[0]
    for name in grads[0]:
        torch.testing.assert_close(grads[1][name], grads[0][name], rtol=1e-3, atol=1e-5)
    metrics = fused.update_from(batch)
    assert all(np.isfinite(v) for v in metrics.values())
    fused._num_updates = 1
    action = fused.act({"state": np.zeros(5, np.float32)}, 0, eval_mode=True)
    assert action.shape == (2,) and np.abs(action).max() <= 1
