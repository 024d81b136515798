"""MoDem / MoDem-V2: BC pretraining, demo oversampling, handover schedule, exploration centering, the ensemble value,
checkpoints (exact resume through the trainer), the agent's handling of bad demo files and a trainer smoke run."""

from __future__ import annotations

import functools
import json
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from robotrl.agents.modem import ModemAgent
from robotrl.agents.mppi import split_evenly
from robotrl.agents.nets import schedule
from robotrl.envs import make_env
from robotrl.envs.demos import generate_demos

from robotrl.demos import episode_file
from robotrl.errors import CheckpointError, ConfigError, DemoFormatError, RobotRLError
from robotrl.replay import ReplayBuffer
from robotrl.workflows.demos import ensure_demos, pretrain_on_demos
from robotrl.workflows.train import Trainer
from tests.conftest import assert_same_tensors

ENV = {"name": "metaworld/reach", "image_size": 32, "video_size": 32, "max_episode_steps": 120}
TINY = {"model_size": 1, "latent_dim": 32, "mlp_dim": 64, "enc_dim": 64, "num_channels": 8, "batch_size": 64,
        "num_samples": 64, "num_elites": 8, "num_pi_trajs": 4, "iterations": 2, "seed": 0, "frame_stack": 3}
# MoDem-V2 = MoDem with configs/agent/modem_v2.yaml's switches on (test_agent_configs checks the yaml builds this)
V2 = {"exploration_centering": True, "agency_handover": True, "ensemble_value": True, "num_pi": 5,
      "agent_name": "modem_v2"}
ModemV2Agent = functools.partial(ModemAgent, **V2)
MODEM = "robotrl.agents.modem.ModemAgent"
TINY_CFG = [
    "env=metaworld/reach", "env.image_size=32", "env.max_episode_steps=120", "env.video_size=32",
    "env.obs_type=state", "frames=240", "seed_frames=120", "eval_every_frames=240", "eval_episodes=1",
    "checkpoint_every_frames=120", "replay.capacity=2000", "torch_threads=1", "device=cpu", "compare_baselines=false",
    "agent.latent_dim=16", "agent.mlp_dim=32", "agent.enc_dim=32", "agent.num_channels=8", "agent.batch_size=8",
    "agent.num_samples=32", "agent.num_elites=4", "agent.num_pi_trajs=4", "agent.iterations=2",
    "agent.bc_steps=20", "agent.num_demos=2", "agent.model_size=1",
]


@pytest.fixture(scope="module")
def demo_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_demos(ENV, num_episodes=2, seed=3, out_dir=tmp_path_factory.mktemp("modem") / "reach")


@pytest.fixture(scope="module")
def env():
    e = make_env({**ENV, "obs_type": "state"}, seed=0)
    yield e
    e.close()


def _agent(env, demo_dir, cls=ModemAgent, **kw):
    return cls(env.observation_space, env.action_space, "cpu", demos=str(demo_dir), **{**TINY, **kw})


def _ready(agent):
    """What the trainer does once before training: the demos read from disk handed to the agent (BC runs)."""
    agent.pretrain(agent.load_demos())
    return agent


# -------------------------------------------------------------------------------------------- phase 1: BC
def test_bc_reaches_high_success_on_the_demos_own_states(env, demo_dir):
    torch.manual_seed(0)  # network init draws from torch's global generator: the same init in any test order
    agent = _agent(env, demo_dir, bc_steps=800, bc_lr=1e-3)
    metrics = agent.pretrain(agent.load_demos())
    assert metrics["bc_loss_last"] < 0.05 * metrics["bc_loss_first"]
    # the BC policy reproduces the demo actions on the demo states ...
    demos = agent.load_demos()
    states = torch.as_tensor(np.concatenate([ep.obs["state"][:-1] for ep in demos]))
    actions = np.concatenate([ep.action for ep in demos])
    with torch.no_grad():
        _, info = agent.model.pi(agent.model.encode({"state": states}))
    assert float(((info["mean"].numpy() - actions) ** 2).mean()) < 2e-3
    # ... and solves the demos' own episodes (same reset seeds) when it acts alone
    for seed in json.loads((demo_dir / "meta.json").read_text())["episode_seeds"]:
        obs, _ = env.reset(seed=seed)
        done, success = False, False
        while not done:
            obs, _, terminated, truncated, info = env.step(agent.bc_action(obs, eval_mode=True))
            done, success = terminated or truncated, success or bool(info["success"])
        assert success, seed


def test_bc_pretraining_and_demo_generation_print_progress(env, tmp_path, monkeypatch, capsys):
    """Both phases take minutes on a CPU; they print progress lines (here at every tick) instead of staying silent."""
    import robotrl.heartbeat

    monkeypatch.setattr(robotrl.heartbeat, "EVERY_S", 0.0)
    generate_demos(ENV, num_episodes=1, seed=3, out_dir=tmp_path / "demos")
    _ready(_agent(env, tmp_path / "demos", bc_steps=3))
    out = capsys.readouterr().out
    assert "demos metaworld/reach: 0/1 successful episodes saved (0 rolled out) (" in out
    assert "MoDem BC pretraining: step 2/3, loss " in out


def test_seed_phase_acts_with_the_bc_policy(env, demo_dir):
    agent = _ready(_agent(env, demo_dir, bc_steps=5))
    obs, _ = env.reset(seed=0)
    a = agent.act(obs, 0, eval_mode=False)
    assert agent.bc_done and agent._prev_mean is None  # no plan: the BC policy acted
    mean = agent.bc_action(obs, eval_mode=True)
    assert np.abs(a - mean).max() <= agent.bc_noise_clip + 1e-6 and not np.array_equal(a, mean)


# ------------------------------------------------------------------------------------ phase 3: oversampling
def test_demo_oversampling_ratio_is_exact_per_batch(env, demo_dir):
    agent = _agent(env, demo_dir, bc_steps=1, batch_size=16, demo_schedule="linear(0.5,0.25,50000)")
    agent._num_updates = 1  # past the burst: one update per call
    replay = ReplayBuffer(500, env.observation_space, agent.action_dim, 3, nstep=1, discount=0.99)
    obs, _ = env.reset(seed=5)
    replay.add_first(obs)
    for _ in range(30):
        action = env.action_space.sample()
        obs, r, te, tr, _ = env.step(action)
        replay.add(action, r, obs, te, tr)
    _ready(agent)
    calls: dict[str, list[int]] = {"demo": [], "main": []}

    def spy(name, orig):
        def sample_trajectories(batch_size, horizon):
            calls[name].append(batch_size)
            return orig(batch_size, horizon)

        return sample_trajectories

    for name, buf in (("demo", agent.demo_replay), ("main", replay)):
        buf.sample_trajectories = spy(name, buf.sample_trajectories)
    for step, n_demo in ((0, 8), (25_000, 6), (50_000, 4), (90_000, 4)):
        calls["demo"].clear()
        calls["main"].clear()
        metrics = agent.update(replay, step)
        assert calls == {"demo": [n_demo], "main": [16 - n_demo]}, step
        assert metrics["demo_batch_size"] == n_demo and metrics["demo_ratio"] == pytest.approx(n_demo / 16)


def test_first_update_is_a_burst_with_the_schedule_at_step_plus_i(env, demo_dir):
    agent = _agent(env, demo_dir, bc_steps=1, batch_size=8, demo_schedule="linear(1.0,0.0,10)")
    _ready(agent)
    ratios = []
    orig = agent.mixed_replay

    def spy(replay):
        mixed = orig(replay)
        sample = mixed.sample_trajectories

        def sample_trajectories(batch_size, horizon, step):
            ratios.append(mixed.num_demo(batch_size, step))
            return sample(batch_size, horizon, step)

        mixed.sample_trajectories = sample_trajectories
        return mixed

    agent.mixed_replay = spy
    replay = ReplayBuffer(500, env.observation_space, agent.action_dim, 3, nstep=1)
    for ep in agent.load_demos():
        replay.add_episode(ep)
    agent.update(replay, 5)
    assert agent._num_updates == 5 and ratios == [4, 3, 2, 2, 1]  # round(8 * (1 - (5 + i) / 10))


# ------------------------------------------------------------------------------------------- MoDem-V2 options
def test_handover_schedule_values():
    spec = "linear(0.0,1.0,5000,105000)"
    for step, p in ((0, 0.0), (5000, 0.0), (30_000, 0.25), (55_000, 0.5), (105_000, 1.0), (300_000, 1.0)):
        assert schedule(spec, step) == pytest.approx(p)
    assert schedule("linear(0.75,0.25,50000)", 25_000) == pytest.approx(0.5)  # 3-argument form
    with pytest.raises(ConfigError):
        schedule("linear(0,1,10,5)", 0)


@pytest.mark.parametrize("centering", [False, True])
def test_plan_horizon_schedule_grows_the_plan_and_keeps_the_warm_start(env, demo_dir, centering):
    """The reference's horizon_schedule: MPPI plans over int(schedule(step)) steps, capped at the model's horizon;
    the warm start keeps the overlap when the horizon changes between two calls."""
    agent = _agent(env, demo_dir, bc_steps=5, horizon=3, plan_horizon_schedule="linear(1,5,100)",
                   exploration_centering=centering)
    assert [agent.planning_horizon(s) for s in (0, 24, 25, 50, 75, 100, 10_000)] == [1, 1, 2, 3, 3, 3, 3]
    assert _agent(env, demo_dir, bc_steps=5).planning_horizon(0) == 3  # no schedule: the model's horizon
    _ready(agent)
    agent._num_updates = 1
    obs, _ = env.reset(seed=0)
    for step, horizon in ((0, 1), (0, 1), (30, 2), (60, 3), (60, 3)):
        a = agent.act(obs, step, eval_mode=False)
        assert agent._prev_mean.shape == (horizon, agent.action_dim) and np.all(np.abs(a) <= 1)
    with pytest.raises(ConfigError, match="expected >= 1"):
        _agent(env, demo_dir, plan_horizon_schedule="linear(0,3,100)")


def test_agency_handover_picks_bc_or_planner(env, demo_dir):
    obs, _ = env.reset(seed=1)
    bc = _ready(_agent(env, demo_dir, ModemV2Agent, bc_steps=5, handover_schedule=0.0))
    a = bc.act(obs, 10, eval_mode=True)
    np.testing.assert_array_equal(a, bc.bc_action(obs, eval_mode=True, frozen=True))
    assert bc._prev_mean is None and bc.bc_model is not None
    planner = _ready(_agent(env, demo_dir, ModemV2Agent, bc_steps=5, handover_schedule=1.0))
    planner.act(obs, 10, eval_mode=True)
    assert planner._prev_mean is not None
    # the frozen BC copy does not move with the online model
    half = _agent(env, demo_dir, ModemV2Agent, bc_steps=5, handover_schedule="linear(0.0,1.0,0,100)")
    _ready(half)
    with torch.no_grad():
        for p in half.model._pi.parameters():
            p.add_(1.0)
    assert not torch.equal(half.bc_model._pi[0].weight, half.model._pi[0].weight)
    planned = sum(half.act(obs, 50, eval_mode=True) is not None and half._prev_mean is not None for _ in range(200))
    assert 70 < planned < 130  # p = 0.5


def test_exploration_centering_stays_within_the_bound(env, demo_dir):
    agent = _agent(env, demo_dir, ModemV2Agent, bc_steps=5, agency_handover=False, centering_bound=0.05)
    _ready(agent)
    agent._num_updates = 1
    for seed in range(5):
        obs, _ = env.reset(seed=seed)
        with torch.no_grad():
            _, info = agent.model.pi(agent.model.encode({"state": torch.as_tensor(obs["state"])[None]}))
        prior = info["mean"][0].numpy()
        for eval_mode in (True, False):
            a = agent.act(obs, 10, eval_mode)
            assert np.abs(a - prior).max() <= 0.05 + 1e-5
    wide = _ready(_agent(env, demo_dir, ModemAgent, bc_steps=5))  # MoDem: no bound
    wide._num_updates = 1
    gaps = [np.abs(wide.act(obs, 10, False) - wide.bc_action(obs, True)).max() for _ in range(5)]
    assert max(gaps) > 0.05


@pytest.mark.parametrize("num_pi", [1, 3])
def test_ensemble_value_is_conservative(env, demo_dir, num_pi):
    agent = _agent(env, demo_dir, ModemV2Agent, bc_steps=1, num_pi=num_pi)
    m = agent.model
    with torch.no_grad():
        for p in [*m._Qs.parameters(), *(p for net in m.pi_nets() for p in net.parameters())]:
            p.normal_(0, 0.5)
        z = m.encode({"state": torch.randn(7, 39)})
        state = agent.generator.get_state()
        value = agent._terminal_value(m, z)
        agent.generator.set_state(state)  # by hand: each critic's value of the best actor's action, then combined
        per_actor = torch.stack([m.two_hot.decode(m.Q(z, m.pi(z, agent.generator, member=k)[0], "all"))
                                 for k in range(num_pi)])  # (num_pi, num_q, 7, 1)
        qs = per_actor.max(0).values
    torch.testing.assert_close(value, qs.mean(0) - 10 * qs.std(0))
    assert (value <= qs.mean(0)).all()
    if num_pi > 1:  # the actors disagree, and the max over them is what each critic sees
        assert (per_actor.max(0).values > per_actor[0]).any()


def test_split_evenly():
    assert split_evenly(24, 5) == [(0, 5), (5, 10), (10, 14), (14, 19), (19, 24)]
    assert split_evenly(24, 1) == [(0, 24)]
    assert split_evenly(2, 3) == [(0, 1), (1, 1), (1, 2)]


def test_actor_ensemble_starts_from_bc_then_each_actor_learns(env, demo_dir):
    agent = _agent(env, demo_dir, ModemV2Agent, bc_steps=5, num_pi=3)
    m = agent.model
    _ready(agent)
    bc = [p.clone() for p in m._pi.parameters()]
    for net in m.pi_nets()[1:]:  # every actor is the BC policy after phase 1 (modemv2 post_bc_load)
        for p, q in zip(net.parameters(), bc, strict=True):
            assert torch.equal(p, q)
    demos = agent.demo_replay
    metrics = agent.update_from(demos.sample_trajectories(16, agent.horizon))
    assert np.isfinite(metrics["pi_loss"]) and metrics["pi_grad_norm"] > 0
    after = [torch.cat([p.flatten() for p in net.parameters()]) for net in m.pi_nets()]
    start = torch.cat([p.flatten() for p in bc])
    assert all(not torch.equal(a, start) for a in after)  # each actor took its own step ...
    assert not torch.equal(after[1], after[2])  # ... on its own draw of critics and noise
    obs, _ = env.reset(seed=0)
    a = agent.act(obs, 10**6, eval_mode=False)  # planning with the policy trajectories split among the actors
    assert a.shape == env.action_space.shape and np.abs(a).max() <= 1
    with pytest.raises(ConfigError, match="num_pi=0"):
        _agent(env, demo_dir, ModemV2Agent, num_pi=0)


# ------------------------------------------------------------------------------------------------ demo files
def test_bad_demo_files_give_a_clear_error_from_the_agent(env, demo_dir, tmp_path):
    root = tmp_path / "bad"
    shutil.copytree(demo_dir, root)
    with np.load(root / episode_file(0)) as data:
        arrays = {k: data[k] for k in data.files if k != "action"}
    np.savez(root / episode_file(0), **arrays)  # missing key (the loader's cases are in test_demos.py)
    agent = _agent(env, root)
    with pytest.raises(DemoFormatError, match="'action'"):
        agent.load_demos()
    with pytest.raises(DemoFormatError, match="not found"):
        _agent(env, tmp_path / "nowhere").load_demos()
    pix_env = make_env({**ENV, "image_size": 48}, seed=0)  # demos are 32x32
    pix = ModemAgent(pix_env.observation_space, pix_env.action_space, "cpu", demos=str(demo_dir), **TINY)
    with pytest.raises(DemoFormatError, match=r"'pixels' frames are \(3, 32, 32\), this env needs \(3, 48, 48\)"):
        pix.load_demos()
    pix_env.close()
    with pytest.raises(ConfigError, match="Meta-World only"):  # the workflow generates demos, for Meta-World only
        ensure_demos({"_target_": MODEM, "demos": None, "demo_cache": str(tmp_path / "gen")},
                     {"name": "dmc/cartpole_swingup"})
    assert ensure_demos({"_target_": MODEM, "demos": str(demo_dir), "demo_cache": str(tmp_path / "gen")}, ENV) is None
    empty = ModemAgent(env.observation_space, env.action_space, "cpu", demo_cache=str(tmp_path / "gen"), **TINY)
    with pytest.raises(ConfigError, match="no demos in demo_cache="):  # the agent only reads them
        empty.load_demos()


def test_demos_are_handed_in_before_acting_never_read_inside_act(env, demo_dir, tmp_path):
    """The trainer reads the demos and calls pretrain(demos) once; act/update read no file (the demo folder may be
    gone by then) and refuse to run before the BC phase instead of running it lazily."""
    obs, _ = env.reset(seed=0)
    with pytest.raises(RobotRLError, match=r"pretrain\(demos\)"):
        _agent(env, demo_dir, bc_steps=2).act(obs, 0, eval_mode=False)
    copy = tmp_path / "demos"
    shutil.copytree(demo_dir, copy)
    agent = _agent(env, copy, bc_steps=2)
    demos = agent.load_demos()
    shutil.rmtree(copy)
    assert agent.pretrain(demos)["bc_steps"] == 2 and agent.bc_done
    replay = ReplayBuffer(500, env.observation_space, agent.action_dim, 3, nstep=1)
    for ep in demos:
        replay.add_episode(ep)
    agent.act(obs, 0, eval_mode=False)
    assert np.isfinite(agent.update(replay, 1)["total_loss"])


# ----------------------------------------------------------------------------------------------- checkpoints
def test_state_dict_round_trip(env, demo_dir, tmp_path):
    a = _ready(_agent(env, demo_dir, ModemV2Agent, bc_steps=3))
    obs, _ = env.reset(seed=0)
    a.act(obs, 0, eval_mode=False)
    torch.save(a.state_dict(), tmp_path / "a.pt")
    b = _agent(env, demo_dir, ModemV2Agent, bc_steps=3, seed=1)
    b.load_state_dict(torch.load(tmp_path / "a.pt", weights_only=True))
    assert b.bc_done and b.bc_model is not None
    for x, y in zip(a.act(obs, 50, False), b.act(obs, 50, False), strict=True):
        assert x == y
    b.pretrain_bc = lambda: pytest.fail("the restored agent ran its BC phase again")
    assert b.pretrain(b.load_demos()) == a.bc_metrics  # resumed: the demos are only handed back
    assert a.demo_replay.rng.bit_generator.state == b.demo_replay.rng.bit_generator.state
    with pytest.raises(CheckpointError, match="expected 'modem'"):
        _agent(env, demo_dir).load_state_dict(a.state_dict())


@pytest.fixture
def modem_cfg(compose_cfg, demo_dir):
    return lambda *o: compose_cfg("agent=modem", *TINY_CFG, f"agent.demos={demo_dir}", *o, tiny=False)


@pytest.mark.slow  # ~25 s; MoDem-V2's exact resume on robot=sim runs in the default suite
def test_resume_is_exact(modem_cfg, tmp_path):
    """360 frames in one go vs 240 + resume to 360: identical parameters, optimiser states and generators."""
    full = Trainer(modem_cfg("frames=360"), tmp_path / "full")
    full.train()
    Trainer(modem_cfg("frames=240"), tmp_path / "split").train()
    resumed = Trainer(modem_cfg("frames=360", "resume=true"), tmp_path / "split")
    assert resumed.step == 120
    resumed.train()
    sa, sb = full.agent.state_dict(), resumed.agent.state_dict()
    assert_same_tensors(sa, sb, min_count=20)
    assert sa["demo_rng"] == sb["demo_rng"] and full.agent._num_updates == resumed.agent._num_updates > 60


@pytest.mark.parametrize("variant", ["modem_state_generated_demos", "modem_v2_pixels"])
def test_the_factory_builds_pretrains_and_trains_modem(compose_cfg, demo_dir, tmp_path, variant):
    """The trainer's parts for MoDem, without the rest of the run: ``build_agent`` (demos=null: generated into the
    run dir first), ``pretrain_on_demos`` (BC once), a training episode by the one-env collector, then the first
    update (the burst): its metrics are the train.csv columns the run logs."""
    from robotrl.workflows.trainer.factory import build_agent
    from tests.test_reward_faults import collect_episodes

    if variant == "modem_v2_pixels":
        cfg = compose_cfg("agent=modem_v2", *TINY_CFG, "env.obs_type=pixels", f"agent.demos={demo_dir}",
                          "agent.handover_schedule='linear(0.0,1.0,0,240)'", tiny=False)
    else:
        cfg = compose_cfg("agent=modem", *TINY_CFG, f"run_dir={tmp_path}", tiny=False)
    env = make_env(cfg.env, seed=0)
    agent, replay = build_agent(cfg, env.observation_space, env.action_space, torch.device("cpu"))
    assert agent.agent_name == cfg.agent.name
    if variant != "modem_v2_pixels":  # demos=null: generated into the run dir before the agent was built
        assert json.loads((tmp_path / "demos" / "meta.json").read_text())["num_episodes"] == 2
    assert pretrain_on_demos(agent)["bc_steps"] == 20 and agent.bc_done
    stats, = collect_episodes(env, agent, replay, episodes=1)  # the seed phase: the BC policy acts
    metrics = agent.update(replay, 2)
    assert stats.length == 60 and len(replay) == 60
    assert {"demo_batch_size", "bc_loss_last", "consistency_loss"} <= set(metrics)
    assert ("handover_prob" in metrics) == (variant == "modem_v2_pixels")
    env.close()


@pytest.mark.slow  # ~9 s; test_the_factory_builds_pretrains_and_trains_modem holds what it asserts
def test_trainer_smoke_generates_demos(compose_cfg, tmp_path):
    """agent=modem on metaworld/reach (state) with demos=null: demos are generated into the run dir."""
    cfg = compose_cfg("agent=modem", *TINY_CFG, f"run_dir={tmp_path}", tiny=False)
    summary = Trainer(cfg, tmp_path).train()
    assert summary["frames"] == 240 and summary["agent"] == "modem"
    assert json.loads((tmp_path / "demos" / "meta.json").read_text())["num_episodes"] == 2
    train_csv = (tmp_path / "train.csv").read_text()
    assert "demo_batch_size" in train_csv and "bc_loss_last" in train_csv and "consistency_loss" in train_csv
    assert (tmp_path / "checkpoints" / "latest").exists() and (tmp_path / "eval.csv").exists()


@pytest.mark.slow  # ~15 s; test_the_factory_builds_pretrains_and_trains_modem[modem_v2_pixels] holds it
def test_trainer_smoke_modem_v2_pixels(compose_cfg, demo_dir, tmp_path):
    cfg = compose_cfg("agent=modem_v2", *TINY_CFG, "env.obs_type=pixels", f"agent.demos={demo_dir}",
                      "agent.handover_schedule='linear(0.0,1.0,0,240)'", tiny=False)
    summary = Trainer(cfg, tmp_path).train()
    assert summary["agent"] == "modem_v2" and "handover_prob" in (tmp_path / "train.csv").read_text()


@pytest.mark.slow  # ~22 s; the pixels MoDem-V2 smoke stays in the default suite
def test_trainer_smoke_two_cameras_and_proprio(compose_cfg, tmp_path):
    """MoDem-V2's sensor setting: two camera views (one conv stack each) + proprioception, demos generated to fit."""
    cams = "env.camera=[corner2,corner3]"
    cfg = compose_cfg("agent=modem_v2", *TINY_CFG, "env.obs_type=pixels_proprio", cams, "agent.pixel_views=2",
                      f"run_dir={tmp_path}", "agent.handover_schedule='linear(0.0,1.0,0,240)'", tiny=False)
    trainer = Trainer(cfg, tmp_path)
    assert trainer.agent.model._encoder["pixels"].views == 2
    assert trainer.agent.observation_space["state"].shape == (8,)
    summary = trainer.train()
    assert summary["frames"] == 240 and summary["agent"] == "modem_v2"
    demo, = trainer.agent.load_demos()[:1]
    assert demo.obs["pixels"].shape[1:] == (6, 32, 32) and demo.obs["state"].shape[1:] == (8,)
    with pytest.raises(ConfigError, match="pixel_views=3"):
        Trainer(compose_cfg("agent=modem_v2", *TINY_CFG, "env.obs_type=pixels_proprio", cams, "agent.pixel_views=3",
                            tiny=False), tmp_path / "bad")


@pytest.mark.parametrize("experiment, views, demos", [("modem_paper", 1, 5), ("modem_v2_paper", 2, 10)])
def test_paper_experiment_configs_build(compose_cfg, experiment, views, demos):
    """configs/experiment/modem*_paper.yaml compose, validate, and give the papers' sensors: 224x224 pixels with
    frame stack 2 from ``views`` cameras plus 8-d proprioception."""
    from robotrl.agents import make_agent

    from robotrl.config import validate_config

    cfg = compose_cfg(f"experiment={experiment}", "env=metaworld/reach", "device=cpu", tiny=False)
    validate_config(cfg)
    env = make_env(cfg.env, seed=0)
    space = env.observation_space
    assert space["pixels"].shape == (3 * views * 2, 224, 224) and space["state"].shape == (8,)
    agent = make_agent(cfg.agent, space, env.action_space, "cpu", env_name=cfg.env.name)
    assert agent.num_demos == demos and agent.arch["pixel_views"] == views
    obs, _ = env.reset(seed=0)
    assert agent.model.encode({k: torch.as_tensor(v)[None] for k, v in obs.items()}).shape == (1, 512)
    env.close()
