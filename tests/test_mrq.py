"""MR.Q (agent=mrq): loss pieces, frozen regression numbers, acting, checkpoints with exact resume, dormant ratios.

Parity with facebookresearch/MRQ itself is shown by ``bench/mrq_parity.py`` (it needs the reference's source, which
tests must not); the frozen numbers below hold robotrl's implementation to what that script compared.
"""

from __future__ import annotations

import copy

import gymnasium as gym
import numpy as np
import pytest
import torch
import torch.nn.functional as F
from robotrl.agents import make_agent
from robotrl.agents.mrq import MRQAgent
from robotrl.agents.mrq_nets import TwoHot, fast_elu

from robotrl.errors import CheckpointError, ConfigError
from robotrl.replay import ReplayBuffer
from robotrl.workflows.evaluate import evaluate_checkpoint
from robotrl.workflows.train import Trainer
from tests.conftest import assert_same_tensors

TINY = {"zs_dim": 16, "zsa_dim": 16, "za_dim": 8, "enc_hdim": 32, "value_hdim": 32, "policy_hdim": 32,
        "batch_size": 8, "target_update_freq": 3, "num_expl_steps": 0, "seed": 0}


def _spaces(obs: str, size: int = 36, state_dim: int = 5, action_dim: int = 2):
    spaces = {}
    if "pixels" in obs:
        spaces["pixels"] = gym.spaces.Box(0, 255, (9, size, size), np.uint8)
    if "state" in obs:
        spaces["state"] = gym.spaces.Box(-np.inf, np.inf, (state_dim,), np.float32)
    return gym.spaces.Dict(spaces), gym.spaces.Box(-1.0, 1.0, (action_dim,), np.float32)


def _agent(obs: str = "state", **kwargs) -> MRQAgent:
    return MRQAgent(*_spaces(obs), "cpu", **{**TINY, **kwargs})


def _replay(obs_space, episodes: int = 3, steps: int = 30, seed: int = 0) -> ReplayBuffer:
    replay = ReplayBuffer(1000, obs_space, 2, 3, nstep=3, seed=seed, check_stack=False)
    rng = np.random.default_rng(seed)

    def obs():
        return {k: rng.integers(0, 256, s.shape, dtype=np.uint8) if k == "pixels" else
                rng.normal(size=s.shape).astype(np.float32) for k, s in obs_space.spaces.items()}

    for e in range(episodes):
        replay.add_first(obs())
        for t in range(steps):
            replay.add(rng.uniform(-1, 1, 2).astype(np.float32), float(rng.normal()), obs(),
                       terminated=e == 1 and t == steps - 1, truncated=t == steps - 1)
    return replay


# ---------------------------------------------------------------------------------------------------- pieces
def test_two_hot_symexp_round_trip():
    th = TwoHot(-10.0, 10.0, 65, torch.device("cpu"))
    assert th.bins[0] == pytest.approx(-(np.exp(10) - 1)) and th.bins[32] == 0.0  # symexp-spaced, 0 in the middle
    x = torch.tensor([-20000.0, -37.5, -1.0, -0.01, 0.0, 0.3, 1.0, 5.0, 123.4, 20000.0])[:, None]
    enc = th.encode(x)
    assert enc.shape == (10, 65) and torch.allclose(enc.sum(-1), torch.ones(10))
    assert (enc > 0).sum(-1).max() <= 2
    torch.testing.assert_close((enc * th.bins).sum(-1, keepdim=True), x)  # the two-hot's mean is the value
    torch.testing.assert_close(th.decode(torch.log(enc.clamp_min(1e-30))), x, rtol=1e-4, atol=1e-4)
    # the cross-entropy is smallest at the target's own two-hot
    logits = torch.log(enc.clamp_min(1e-30))
    assert torch.all(th.cross_entropy(logits, x) < th.cross_entropy(logits.roll(1, 0), x) + 1e-6)
    # out of range: clamped to the edge bin (the reference divides by zero there)
    assert th.encode(torch.tensor([[1e9]]))[0, -1] == 1.0


def test_target_noise_is_clipped_gaussian():
    agent = _agent()
    noise = agent.target_noise(torch.Size([20000, 2]))
    assert noise.abs().max() <= agent.noise_clip == 0.3
    assert (noise.abs() == 0.3).float().mean() == pytest.approx(2 * 0.0668, abs=0.01)  # P(|N(0,.2)| > .3)
    assert noise.mean().abs() < 0.01


def test_encoder_losses_are_masked_after_a_termination():
    agent = _agent()
    g = torch.Generator().manual_seed(0)
    obs = {"state": torch.randn(6, 8, 5, generator=g)}
    action, reward = torch.rand(5, 8, 2, generator=g), torch.randn(5, 8, 1, generator=g)
    done = torch.zeros(5, 8, 1)
    done[1] = 1.0  # every sub-trajectory ends at its second step
    before = copy.deepcopy(agent.encoder.state_dict())
    a = agent.encoder_step(obs, action, reward, done, True)
    agent.encoder.load_state_dict(before)
    agent.encoder_opt = torch.optim.AdamW(agent.encoder.parameters(), lr=1e-4, weight_decay=1e-4)
    obs2, reward2 = {"state": obs["state"].clone()}, reward.clone()
    obs2["state"][3:], reward2[2:] = 100.0, 100.0  # what lies after the termination cannot matter
    b = agent.encoder_step(obs2, action, reward2, done, True)
    assert a == pytest.approx(b)
    no_done = agent.encoder_step(obs, action, reward, done, False)
    assert no_done["done_loss"] == 0.0  # the done head trains only once the replay holds a termination


FROZEN = {  # robotrl's own numbers (TINY dims, seeds below); bench/mrq_parity.py compares the same code paths
    "state": {"encoder_loss": 14.17526, "value_loss": 2.15364, "policy_loss": -0.3682406, "q_target": -1.130022,
              "encoder_param_sum": 19.78136, "value_param_sum": 18.9074, "policy_param_sum": 6.102731},
    "pixels": {"encoder_loss": 9.71721, "value_loss": 0.8115812, "policy_loss": -0.4325961, "q_target": 0.1261229,
               "encoder_param_sum": -28.9009, "value_param_sum": 11.17802, "policy_param_sum": 15.43879},
}


def _frozen_run(obs: str, **kwargs) -> dict[str, float]:
    torch.manual_seed(0)
    agent = _agent(obs, channels_last=False, pixel_augs=False, **kwargs)
    agent.reward_scale, agent.target_reward_scale = 1.7, 1.3
    g = torch.Generator().manual_seed(1)
    key, shape = ("pixels", (9, 36, 36)) if obs == "pixels" else ("state", (5,))
    frames = (torch.randint(0, 256, (6, 8, *shape), generator=g, dtype=torch.uint8) if obs == "pixels"
              else torch.randn(6, 8, *shape, generator=g))
    action, reward = torch.rand(5, 8, 2, generator=g) * 2 - 1, torch.randn(5, 8, 1, generator=g)
    out = agent.encoder_step({key: frames}, action, reward, torch.zeros(5, 8, 1), True)
    metrics, _, _ = agent.rl_step({key: frames[0]}, action[0], reward[0], torch.full((8, 1), 0.99**3), {key: frames[3]})
    sums = {f"{name}_param_sum": float(sum(p.detach().sum() for p in getattr(agent, name).parameters()))
            for name in ("encoder", "value", "policy")}
    return {"encoder_loss": out["encoder_loss"], **{k: metrics[k] for k in ("value_loss", "policy_loss", "q_target")},
            **sums}


@pytest.mark.parametrize("obs", ["state", "pixels"])
def test_frozen_regression_numbers(obs):
    got = _frozen_run(obs)
    assert got == pytest.approx(FROZEN[obs], rel=1e-4, abs=1e-6), got


def test_fast_elu_matches_f_elu_forward_and_backward():
    x = torch.cat([torch.linspace(-20, 20, 4001), torch.linspace(-1e-3, 1e-3, 2001), torch.tensor([0.0, -0.0])])
    x = x.requires_grad_()
    y = fast_elu(x)
    ref_x = x.detach().clone().requires_grad_()
    ref = F.elu(ref_x)
    torch.testing.assert_close(y, ref, atol=1e-7, rtol=0)
    grad = torch.randn_like(x)
    y.backward(grad)
    ref.backward(grad)
    torch.testing.assert_close(x.grad, ref_x.grad, atol=1e-6, rtol=0)


def test_fused_adamw_is_the_default_and_trains_like_foreach_to_float_rounding():
    runs = {}
    for fused in (True, False):  # False: foreach, the reference's op order (bench/mrq_parity.py's exact ops)
        torch.manual_seed(0)
        agent, replay = _agent("state", fused_adam=fused), _replay(_spaces("state")[0])
        start = copy.deepcopy(agent.value.state_dict())
        for step in range(4):
            agent.update(replay, step)
        runs[fused] = agent
    assert _agent().value_opt.defaults["fused"] and not runs[False].value_opt.defaults["fused"]
    for name in ("encoder", "value", "policy"):
        for a, b in zip(getattr(runs[True], name).parameters(), getattr(runs[False], name).parameters(), strict=True):
            torch.testing.assert_close(a, b, atol=1e-6, rtol=0)  # seen: 3e-8; 4 AdamW steps move weights by ~1e-3
    moved = max(float((v - runs[True].value.state_dict()[k]).abs().max()) for k, v in start.items())
    assert moved > 5e-4


@pytest.mark.parametrize("obs", ["state", "pixels"])
def test_bf16_precision_is_opt_in_and_trains_close_to_fp32(obs):
    assert _agent().low_precision is None  # fp32 is the default
    with pytest.raises(ConfigError, match="precision='fp16'"):
        _agent(precision="fp16")
    seen = []

    def hook(module, args, out):
        if isinstance(module, torch.nn.Linear | torch.nn.Conv2d):
            seen.append(out.dtype)

    handle = torch.nn.modules.module.register_module_forward_hook(hook)
    try:
        low = _frozen_run(obs, precision="bf16")
    finally:
        handle.remove()
    assert torch.bfloat16 in seen and torch.float32 not in seen  # every Linear/Conv2d of the update ran in bf16
    assert low == pytest.approx(_frozen_run(obs), rel=1e-1, abs=1e-2), low  # seen: <= 3%


# ---------------------------------------------------------------------------------------------------- acting
def test_act_batch_shapes_bounds_noise_and_uniform_exploration():
    agent = _agent("pixels_state", num_expl_steps=10)
    rng = np.random.default_rng(0)
    obs = {"pixels": rng.integers(0, 256, (4, 9, 36, 36), dtype=np.uint8),
           "state": rng.normal(size=(4, 5)).astype(np.float32)}
    explore = agent.act_batch(obs, 0, eval_mode=False)
    assert explore.shape == (4, 2) and explore.dtype == np.float32 and np.abs(explore).max() <= 1.0
    greedy = agent.act_batch(obs, 20, eval_mode=True)
    np.testing.assert_array_equal(greedy, agent.act_batch(obs, 20, eval_mode=True))
    np.testing.assert_allclose(agent.act({k: v[1] for k, v in obs.items()}, 20, True), greedy[1], atol=1e-6)
    noisy = agent.act_batch(obs, 20, eval_mode=False)
    assert not np.array_equal(noisy, greedy) and np.abs(noisy).max() <= 1.0
    with pytest.raises(Exception, match="state"):
        agent.act_batch({"pixels": obs["pixels"], "state": obs["state"][:, :3]}, 20, True)


# ---------------------------------------------------------------------------------------------------- learning
@pytest.mark.parametrize("obs", ["state", "pixels"])
def test_updates_train_encoder_value_policy_and_priorities(obs):
    agent = _agent(obs, dormant_every=2)
    replay = _replay(_spaces(obs)[0])
    enc0 = copy.deepcopy(agent.encoder.state_dict())
    metrics = [agent.update(replay, step) for step in range(4)]
    assert "encoder_loss" in metrics[0] and "encoder_loss" in metrics[3] and "encoder_loss" not in metrics[1]
    assert {"value_loss", "policy_loss", "q"} <= set(metrics[1])
    assert 0.0 <= metrics[2]["actor_dormant_ratio"] <= 1.0 and "critic_dormant_ratio" in metrics[2]
    assert "actor_dormant_ratio" not in metrics[1]
    assert agent.reward_scale == pytest.approx(replay.mean_abs_reward())
    assert replay.prioritized and replay._priority.max_priority > 1.0  # LAP priorities moved with the TD errors
    assert any(not torch.equal(v, agent.encoder.state_dict()[k]) for k, v in enc0.items())


def test_dormant_diagnostic_does_not_change_training():
    obs_space = _spaces("pixels")[0]
    runs = []
    for every in (1, 0):
        torch.manual_seed(0)  # the nets' initialisation
        agent, replay = _agent("pixels", dormant_every=every), _replay(obs_space)
        metrics = [agent.update(replay, step) for step in range(4)]
        runs.append((agent, metrics))
    assert all("actor_dormant_ratio" in m for m in runs[0][1])
    assert not any("actor_dormant_ratio" in m for m in runs[1][1])
    assert_same_tensors(runs[0][0].state_dict(), runs[1][0].state_dict(), min_count=40)


def test_no_updates_before_num_expl_steps():
    agent = _agent(num_expl_steps=5)
    replay = _replay(_spaces("state")[0])
    assert agent.update(replay, 4) == {} and agent.num_updates == 0
    assert agent.update(replay, 5) and agent.num_updates == 1


def test_state_dict_roundtrip_continues_identically():
    obs_space = _spaces("pixels")[0]
    agent, replay = _agent("pixels"), _replay(obs_space)
    for step in range(4):
        agent.update(replay, step)
    saved = torch.load(_saved(agent.state_dict()), weights_only=True)
    replay_state = copy.deepcopy(replay.state_dict())
    twin, twin_replay = _agent("pixels", seed=123), _replay(obs_space, seed=9)
    twin.load_state_dict(saved)
    twin_replay.load_state_dict(replay_state)
    for step in range(4, 8):
        assert agent.update(replay, step) == twin.update(twin_replay, step)
    assert_same_tensors(agent.state_dict(), twin.state_dict(), min_count=40)


def _saved(state):
    import io

    buf = io.BytesIO()
    torch.save(state, buf)
    buf.seek(0)
    return buf


def test_loading_another_agent_or_shape_is_refused():
    agent = _agent()
    with pytest.raises(CheckpointError, match="expected 'mrq'"):
        agent.load_state_dict({**agent.state_dict(), "agent": "drqv2"})
    with pytest.raises(CheckpointError, match="shapes"):
        _agent("pixels").load_state_dict(agent.state_dict())
    with pytest.raises(CheckpointError, match="zs_dim"):
        _agent(zs_dim=32).load_state_dict(agent.state_dict())


@pytest.mark.parametrize("kwargs, match", [({"enc_activ": "nope"}, "'nope'"), ({"num_bins": 1}, "num_bins=1"),
                                           ({"discount": 1.5}, "discount=1.5"), ({"dormant_every": -1}, "dormant")])
def test_bad_config_values_are_named(kwargs, match):
    with pytest.raises(ConfigError, match=match):
        _agent(**kwargs)


def test_make_agent_builds_the_reference_defaults_for_84px_pixels(compose_cfg):
    cfg = compose_cfg("agent=mrq", tiny=False)
    agent = make_agent(cfg.agent, *_spaces("pixels", size=84), "cpu", "dmc/walker_walk")
    assert agent.encoder.zs_lin.in_features == 1568  # 32 x 7 x 7: the reference's conv output for 84x84
    assert (agent.target_update_freq, agent.enc_horizon, agent.nstep, agent.batch_size) == (250, 5, 3, 256)
    assert agent.encoder_opt.defaults["weight_decay"] == 1e-4 and agent.value_opt.defaults["lr"] == 3e-4


def test_trainer_smoke_state_then_eval_with_baselines(compose_cfg, tmp_path):
    overrides = ["agent=mrq", "env=dmc/cartpole_balance", "env.obs_type=state", "env.max_episode_steps=60",
                 "frames=120", "seed_frames=0", "eval_every_frames=120", "eval_episodes=1", "replay.capacity=1000",
                 "checkpoint_every_frames=120", "torch_threads=1", "device=cpu", "compare_baselines=false",
                 *[f"agent.{k}={v}" for k, v in TINY.items() if k != "seed"], "agent.num_expl_steps=40"]
    summary = Trainer(compose_cfg(*overrides, tiny=False), tmp_path).train()
    assert summary["agent"] == "mrq" and summary["frames"] == 120  # 2 episodes, updates from agent step 40
    train_csv = (tmp_path / "train.csv").read_text()
    assert "value_loss" in train_csv and "encoder_loss" in train_csv
    assert (tmp_path / "checkpoints" / "latest").exists()
    summary = evaluate_checkpoint(str(tmp_path), 2, 1_000_000, -1.0, float("-inf"), video=False, out=None,
                                  device="cpu")  # robotrl eval: the MR.Q policy beside random/constant actions
    assert summary["agent"] == "mrq" and {"random", "constant"} <= set(summary["baselines"])


@pytest.mark.parametrize("env", [
    ["env=metaworld/reach", "env.image_size=36"],  # pixels
    ["env=gym/hopper"],  # state, an env that terminates
    ["env=gym/hopper", "env.obs_type=pixels", "env.image_size=36"],
    # act_batch over vector envs; the replay's episodes end together at 20 steps, so 3 rounds of them
    ["env=dmc/cartpole_swingup", "env.image_size=36", "env.num_envs=2", "frames=200"],
])
def test_trainer_runs_on_every_env_family_from_pixels_and_state(compose_cfg, tmp_path, env):
    frames = [] if any(o.startswith("frames=") for o in env) else ["frames=80"]
    overrides = ["agent=mrq", *env, *frames, "env.max_episode_steps=40", "seed_frames=0", "eval_every_frames=80",
                 "eval_episodes=1", "replay.capacity=500", "checkpoint_every_frames=80", "torch_threads=1",
                 "device=cpu", "compare_baselines=false", "save_video=false",
                 *[f"agent.{k}={v}" for k, v in TINY.items() if k != "seed"], "agent.num_expl_steps=10"]
    summary = Trainer(compose_cfg(*overrides, tiny=False), tmp_path).train()
    assert summary["agent"] == "mrq" and summary["frames"] >= 80
    assert "value_loss" in (tmp_path / "train.csv").read_text()  # it updated, not only acted


@pytest.mark.slow  # ~60 s on a loaded 2-core machine
def test_trainer_resume_is_exact_with_lap_replay(compose_cfg, tmp_path):
    """240 frames in one go vs 120 + resume to 240: identical nets, optimisers, generator and LAP priorities."""
    base = ["agent=mrq", "env=dmc/cartpole_balance", "env.obs_type=state", "env.max_episode_steps=30",
            "seed_frames=0", "eval_every_frames=1000", "eval_episodes=1", "replay.capacity=1000", "eval_at_start=false",
            "checkpoint_every_frames=60", "torch_threads=1", "device=cpu", "compare_baselines=false",
            *[f"agent.{k}={v}" for k, v in TINY.items() if k != "seed"], "agent.num_expl_steps=20"]
    full = Trainer(compose_cfg(*base, "frames=240", tiny=False), tmp_path / "full")
    full.train()
    Trainer(compose_cfg(*base, "frames=120", tiny=False), tmp_path / "split").train()
    resumed = Trainer(compose_cfg(*base, "frames=240", "resume=true", tiny=False), tmp_path / "split")
    assert resumed.step == 60  # 120 frames at action repeat 2: restored from the checkpoint, not started over
    resumed.train()
    assert_same_tensors(full.agent.state_dict(), resumed.agent.state_dict(), min_count=40)
    assert full.agent.num_updates == resumed.agent.num_updates > 50
    assert resumed.replay.prioritized
    np.testing.assert_array_equal(full.replay._priority._tree, resumed.replay._priority._tree)


def test_deploy_drives_the_sim_arm_through_the_safety_layer(tmp_path):
    """A tiny pixel MR.Q checkpoint for Meta-World reach (the run's checkpoint format, ``save_run``: deploy reads
    nothing else of a run) drives robot=sim; that a trained run's checkpoint deploys is test_deploy's."""
    from hydra import compose, initialize_config_module
    from robotrl.envs import make_env

    from robotrl.config import register_hydra
    from robotrl.workflows.deploy import deploy
    from robotrl.workflows.trainer.schedule import Schedule
    from robotrl.workflows.trainer.state import RunState, save_run
    from tests.deploy_helpers import REACH_OVERRIDES, SLOW_CPU

    overrides = [o for o in REACH_OVERRIDES if not o.startswith("agent.")] + [
        "agent=mrq", "seed_frames=0", *[f"agent.{k}={v}" for k, v in TINY.items() if k != "seed"],
        "agent.num_expl_steps=50"]
    register_hydra()  # run_tag and base/*: importing robotrl registers nothing
    with initialize_config_module("robotrl.configs", version_base="1.3"):
        cfg = compose("config", overrides=overrides)
    env = make_env(cfg.env, seed=0)
    agent = make_agent(cfg.agent, env.observation_space, env.action_space, "cpu", cfg.env.name)
    assert "pixels" in env.observation_space.spaces
    save_run(tmp_path / "run", cfg, RunState(Schedule.from_config(cfg, 2), 2, step=100, episode=2), agent, None,
             None, dict(env.robotrl_info))
    env.close()
    summary = deploy(str(tmp_path / "run"), robot="sim", hz=50, robot_overrides=SLOW_CPU, steps=4,
                     out=str(tmp_path / "out"))
    assert summary["steps"] == 4 and summary["sends"] == 8  # action repeat 2, every send through the safety layer
    assert summary["final_state"] == "disconnected"
