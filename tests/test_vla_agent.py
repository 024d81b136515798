"""agent=vla: the World-Env VLA trained by behaviour cloning inside ``robotrl train`` (multi-task demos, chunked
acting, exact resume through the trainer) and its one-line errors."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robotrl.agents import make_agent
from robotrl.agents.vla import VLAAgent
from robotrl.envs import make_env

from robotrl.errors import CheckpointError, ConfigError
from robotrl.workflows.demos import ensure_demos
from robotrl.workflows.train import Trainer
from tests.conftest import assert_same_tensors

VLA = "robotrl.agents.vla.VLAAgent"  # ensure_demos reads what the agent class declares (per-task demos)
TASKS = ["reach", "drawer-close"]
# its own name: open_clip keeps one config per name per process, and configs/reward/clip_tiny.yaml (64 px) owns
# robotrl-tiny-clip
TINY_CLIP = {"model_name": "robotrl-vla-clip32", "pretrained": None, "allow_random_weights": True, "cache_dir": None,
             "model_cfg": {"embed_dim": 32,
                           "vision_cfg": {"image_size": 32, "layers": 1, "width": 32, "head_width": 16,
                                          "patch_size": 8},
                           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                        "layers": 1}}}
ENV = {"name": "metaworld/reach", "suite": "metaworld", "task": "reach", "image_size": 32, "video_size": 32,
       "max_episode_steps": 120, "obs_type": "pixels_proprio", "frame_stack": 2}
TINY = {"clip": TINY_CLIP, "num_demos": 2, "batch_size": 16, "hidden": 64, "chunk": 4, "seed": 0}
TRAIN_CFG = [
    "agent=vla", "env=metaworld/reach", "env.image_size=32", "env.video_size=32", "env.max_episode_steps=60",
    "env.obs_type=pixels_proprio", "env.frame_stack=2", "seed_frames=0", "eval_every_frames=120",
    "eval_episodes=1", "eval_at_start=false", "checkpoint_every_frames=60", "replay.capacity=1000", "torch_threads=1",
    "device=cpu", "compare_baselines=false", "save_video=false", "tensorboard=false", "agent.num_demos=2",
    "agent.batch_size=8", "agent.hidden=64", "agent.clip.model_name=robotrl-vla-clip32", "agent.clip.pretrained=null",
    "agent.clip.allow_random_weights=true", f"agent.tasks=[{','.join(TASKS)}]",
    "+agent.clip.model_cfg={embed_dim: 32, vision_cfg: {image_size: 32, layers: 1, width: 32, head_width: 16, "
    "patch_size: 8}, text_cfg: {context_length: 77, vocab_size: 49408, width: 32, heads: 2, layers: 1}}",
]


@pytest.fixture(scope="module")
def demo_root(tmp_path_factory):
    """2 scripted-expert demos of each task, made the way `robotrl train` makes them (ensure_demos)."""
    root = tmp_path_factory.mktemp("vla") / "demos"
    made = ensure_demos({"_target_": VLA, "tasks": TASKS, "demos": None, "demo_cache": str(root), "num_demos": 2}, ENV)
    assert made == root and all((root / t / "meta.json").is_file() for t in TASKS)
    return root


@pytest.fixture(scope="module")
def env():
    e = make_env(ENV, seed=0)
    yield e
    e.close()


def _agent(env, demo_root, **kw) -> VLAAgent:
    torch.manual_seed(0)
    args = {**TINY, "obs_type": "pixels_proprio", "task": "reach", "tasks": TASKS, "demos": str(demo_root), **kw}
    return VLAAgent(env.observation_space, env.action_space, "cpu", **args)


def test_bc_loss_falls_on_the_demos_of_all_tasks(env, demo_root):
    agent = _agent(env, demo_root, updates_per_step=10, bc_steps=80, lr=1e-3)
    assert len({instr for instr, _, _ in agent._ensure_data()}) == 2  # one instruction per task
    assert agent.instruction == "reach the red goal position"  # the env's task
    assert _agent(env, demo_root, tasks=TASKS[::-1]).instruction == agent.instruction
    torch.manual_seed(1)
    held = [agent.bc_loss().item() for _ in range(5)]  # loss before training, same sampler
    metrics = [agent.update(None, i) for i in range(8)]
    assert agent.num_updates == 80 and agent.update(None, 8) == {}  # bc_steps reached: nothing more
    first, last = np.mean(held), np.mean([m["bc_loss"] for m in metrics[-3:]])
    assert last < 0.6 * first, (first, last)


def test_act_executes_chunks_and_replans_after_reset(env, demo_root):
    agent = _agent(env, demo_root)
    calls = []
    forward = agent.policy.forward
    agent.policy.forward = lambda *a: calls.append(1) or forward(*a)
    obs, _ = env.reset(seed=0)
    actions = [agent.act(obs, i, eval_mode=True) for i in range(6)]  # chunk 4: plans at steps 0 and 4
    assert len(calls) == 2 and all(a.shape == (4,) and a.dtype == np.float32 for a in actions)
    agent.act(obs, 6, eval_mode=True)
    agent.reset()  # the rest of the chunk is dropped: a new episode plans at once
    agent.act(obs, 0, eval_mode=True)
    assert len(calls) == 3


def test_pixels_only_obs_type_learns_and_acts(demo_root):
    """env.obs_type=pixels: image + instruction only (the demos' state is not read)."""
    env = make_env({**ENV, "obs_type": "pixels"}, seed=0)
    try:
        agent = VLAAgent(env.observation_space, env.action_space, "cpu", **{**TINY, "obs_type": "pixels",
                                                                            "task": "reach", "demos": str(demo_root)})
        assert agent.policy.proprio_dim == 0 and np.isfinite(agent.update(None, 0)["bc_loss"])
        obs, _ = env.reset(seed=0)
        assert agent.act(obs, 0, eval_mode=True).shape == (4,)
    finally:
        env.close()


def test_state_dict_round_trip(env, demo_root, tmp_path):
    a = _agent(env, demo_root)
    a.update(None, 0)
    torch.save(a.state_dict(), tmp_path / "a.pt")
    b = _agent(env, demo_root, seed=5)
    b.load_state_dict(torch.load(tmp_path / "a.pt", weights_only=True))
    assert_same_tensors(a.state_dict(), b.state_dict())
    obs, _ = env.reset(seed=0)
    np.testing.assert_array_equal(a.act(obs, 0, True), b.act(obs, 0, True))
    np.testing.assert_array_equal(a.bc_loss().detach(), b.bc_loss().detach())  # same batch generator
    with pytest.raises(CheckpointError, match="instructions"):
        _agent(env, demo_root, tasks=["reach"]).load_state_dict(a.state_dict())


def test_a_resumed_agent_continues_bit_for_bit(env, demo_root, tmp_path):
    """What the trainer's exact resume needs of agent=vla: 4 act+update steps in one go == 2, a checkpoint round
    trip (torch.save, weights only) into an agent of another seed, then 2 more: weights, optimiser, sampler and
    update count; the update metrics (train.csv's bc_loss) agree step by step."""
    obs, _ = env.reset(seed=0)

    def play(agent: VLAAgent, steps: range) -> list[dict]:
        out = []
        for step in steps:
            agent.act(obs, step, eval_mode=False)
            out.append(agent.update(None, step))
        return out

    full = _agent(env, demo_root)
    full_metrics = play(full, range(4))
    split = _agent(env, demo_root)
    play(split, range(2))
    torch.save(split.state_dict(), tmp_path / "agent.pt")
    resumed = _agent(env, demo_root, seed=5)
    resumed.load_state_dict(torch.load(tmp_path / "agent.pt", weights_only=True))
    assert play(resumed, range(2, 4)) == full_metrics[2:] and "bc_loss" in full_metrics[-1]
    sa, sb = full.state_dict(), resumed.state_dict()
    assert_same_tensors(sa, sb, min_count=20)
    assert sa["rng"] == sb["rng"] and sa["num_updates"] == sb["num_updates"] == 4


@pytest.mark.slow  # ~13 s; test_a_resumed_agent_continues_bit_for_bit holds the agent's part, test_trainer the run's
def test_train_writes_eval_and_checkpoint_and_resumes_exactly(compose_cfg, demo_root, tmp_path):
    """120 frames (2 episodes) in one go vs 60 + resume to 120 through the Trainer: identical weights, optimiser and
    sampler."""
    cfg = lambda *o: compose_cfg(*TRAIN_CFG, f"agent.demos={demo_root}", *o, tiny=False)  # noqa: E731
    full = Trainer(cfg("frames=120"), tmp_path / "full")
    summary = full.train()
    assert summary["agent"] == "vla" and summary["final_eval"]["episodes"] == 1
    assert (tmp_path / "full" / "eval.csv").is_file() and (tmp_path / "full" / "checkpoints" / "latest").exists()
    assert "bc_loss" in (tmp_path / "full" / "train.csv").read_text()
    Trainer(cfg("frames=60"), tmp_path / "split").train()
    resumed = Trainer(cfg("frames=120", "resume=true"), tmp_path / "split")
    assert resumed.step == 30
    resumed.train()
    sa, sb = full.agent.state_dict(), resumed.agent.state_dict()
    assert_same_tensors(sa, sb, min_count=20)
    assert sa["rng"] == sb["rng"] and sa["num_updates"] == sb["num_updates"] == 60


@pytest.mark.parametrize(("kw", "match"), [
    ({"obs_type": "state"}, "agent=vla needs env.obs_type pixels .* got 'state'"),
    ({"instructions": {"reach": "  "}}, "agent.instructions.reach: instruction='  ', expected a non-empty text"),
    ({"tasks": ["reach", "no-such-task"]}, r"no instruction for task\(s\) \['no-such-task'\]"),
    ({"tasks": 7}, "agent.tasks=7, expected null"),
    ({"chunk": 0}, "agent.chunk=0, expected an integer >= 1"),
])
def test_bad_settings_are_one_line_errors(env, demo_root, kw, match):
    with pytest.raises(ConfigError, match=match) as e:
        _agent(env, demo_root, **kw)
    assert "\n" not in str(e.value)


def test_missing_demos_and_no_weights_are_one_line_errors(env, demo_root, tmp_path):
    agent = _agent(env, demo_root, demos=str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="no demos for task 'reach' in .*nothing/reach") as e:
        agent.update(None, 0)
    assert "\n" not in str(e.value)
    no_weights = {**TINY_CLIP, "allow_random_weights": False}
    with pytest.raises(ConfigError, match="agent.clip.pretrained is null.*agent.clip.allow_random_weights") as e:
        _agent(env, demo_root, clip=no_weights)
    assert "\n" not in str(e.value)


def test_make_agent_and_demo_generation_check_inputs_before_any_demo(tmp_path):
    with pytest.raises(ConfigError, match="no instruction for task"):
        ensure_demos({"_target_": VLA, "tasks": ["reach", "nope"], "demos": None, "demo_cache": str(tmp_path)}, ENV)
    dmc = {"name": "dmc/cartpole_swingup"}
    with pytest.raises(ConfigError, match="Meta-World only"):
        ensure_demos({"_target_": VLA, "tasks": ["reach"], "demos": None, "demo_cache": str(tmp_path)}, dmc)
    with pytest.raises(ConfigError, match="needs env.obs_type pixels .* got 'state'"):
        ensure_demos({"_target_": VLA, "tasks": ["reach"], "demos": None, "demo_cache": str(tmp_path)},
                     {**ENV, "obs_type": "state"})
    assert not any(tmp_path.iterdir())
    env = make_env({**ENV, "obs_type": "pixels_state"}, seed=0)
    try:
        with pytest.raises(ConfigError, match="got 'pixels_state'"):
            make_agent({"_target_": "robotrl.agents.vla.VLAAgent", "name": "vla", "clip": TINY_CLIP,
                        "obs_type": "pixels_state"}, env.observation_space, env.action_space, "cpu")
    finally:
        env.close()


def test_train_without_clip_weights_fails_before_generating_demos(compose_cfg, tmp_path, monkeypatch):
    """The default agent=vla (ViT-B-32, laion2b tag) offline with no cached weights: one line, no demos made."""
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    cfg = compose_cfg("agent=vla", "env=metaworld/reach", "env.obs_type=pixels_proprio", "device=cpu",
                      f"run_dir={tmp_path / 'run'}", tiny=False)
    with pytest.raises(ConfigError, match="no weights for agent.clip model 'ViT-B-32'.*agent.clip.pretrained=") as e:
        Trainer(cfg, tmp_path / "run")
    assert "\n" not in str(e.value) and not (tmp_path / "run" / "demos").exists()
