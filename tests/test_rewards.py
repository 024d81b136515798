"""Reward models: VLM-RM projection math, batching, caches, preprocessing, the wrapper, weights errors, trainer."""

from __future__ import annotations

import csv

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from robotrl.rewards import RewardWrapper, check_frames, make_reward, wrap_env
from robotrl.rewards.clip import CLIPReward

from robotrl.errors import ConfigError, ObservationError

TINY_CFG = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}
GOAL, BASELINE = ("a humanoid robot kneeling",), ("a humanoid robot",)


def tiny_clip(**kwargs) -> CLIPReward:
    args = {"model_name": "robotrl-tiny-clip", "pretrained": None, "allow_random_weights": True,
            "model_cfg": TINY_CFG, "device": "cpu", "goal_prompts": GOAL, "baseline_prompts": BASELINE}
    with torch.random.fork_rng():
        torch.manual_seed(0)
        return CLIPReward(**{**args, **kwargs})


@pytest.fixture(scope="module")
def clip() -> CLIPReward:
    return tiny_clip(alpha=0.5)


def frames(n: int, h: int = 64, w: int = 64, seed: int = 0) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, (n, h, w, 3), dtype=np.uint8)


def _text(model: CLIPReward, prompts) -> torch.Tensor:
    with torch.no_grad():
        return F.normalize(model.model.encode_text(model.tokenizer(list(prompts))).float(), dim=-1).mean(0)


def test_custom_model_cfg_leaves_no_temp_folder(tmp_path, monkeypatch):
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    tiny_clip(model_name="robotrl-tiny-clip-tmpcheck")
    tiny_clip(model_name="robotrl-tiny-clip-tmpcheck")  # registered once, still resolvable after its folder went
    assert not list(tmp_path.glob("robotrl_open_clip_cfg_*"))


# ------------------------------------------------------------------------------------------ the VLM-RM formula
@pytest.mark.parametrize("alpha", [0.0, 0.3, 1.0])
def test_projection_matches_hand_computation(clip, alpha):
    clip.set_prompts(alpha=alpha)
    x = clip.embed_images(frames(4))
    g, b = _text(clip, GOAL), _text(clip, BASELINE)
    d = (g - b)[:, None]
    P = alpha * (d @ d.T) / d.norm() ** 2 + (1 - alpha) * torch.eye(len(g))
    expected = 1 - 0.5 * ((x - g) @ P).norm(dim=-1) ** 2
    got = clip(frames(4))
    np.testing.assert_allclose(got, expected.numpy(), atol=1e-5)
    if alpha == 0.0:  # plain CLIP reward: the cosine similarity with the (single, normalised) goal prompt
        np.testing.assert_allclose(got, (x @ g).numpy(), atol=1e-5)
    if alpha == 1.0:  # fully projected: only the component along the goal - baseline direction counts
        u = (g - b) / (g - b).norm()
        np.testing.assert_allclose(got, (1 - 0.5 * ((x - g) @ u) ** 2).numpy(), atol=1e-5)
    clip.set_prompts(alpha=0.5)


def test_batched_equals_one_by_one(clip):
    batch = frames(7, 80, 96)
    one_by_one = np.concatenate([clip(batch[i:i + 1]) for i in range(7)])
    assert clip(batch).dtype == np.float32 and clip(batch).shape == (7,)
    np.testing.assert_allclose(clip(batch), one_by_one, atol=1e-5)
    chunked = tiny_clip(alpha=0.5, batch_size=3)  # same seed, same weights; 7 frames in chunks of 3
    np.testing.assert_allclose(chunked(batch), one_by_one, atol=1e-5)
    np.testing.assert_allclose(clip(torch.from_numpy(batch)), one_by_one, atol=1e-5)  # torch input too


def test_embedding_cache_hits(clip):
    misses = clip.text_cache.misses
    for _ in range(3):
        clip(frames(2))
    assert clip.text_cache.misses == misses  # rewards reuse the goal/baseline embeddings
    clip.set_prompts(goal_prompts=["a humanoid robot doing splits"])
    assert clip.text_cache.misses == misses + 1
    clip.set_prompts(goal_prompts=list(GOAL))  # back to the first task: nothing is embedded again
    assert clip.text_cache.misses == misses + 1
    hits = clip.text_cache.hits
    assert torch.equal(clip.text_embedding(GOAL), _text(clip, GOAL)) and clip.text_cache.hits == hits + 1
    goal = frames(1)[0]
    e1, e2 = clip.goal_image_embedding(goal), clip.goal_image_embedding(goal.copy())
    assert clip.goal_image_cache.hits == 1 and clip.goal_image_cache.misses == 1 and torch.equal(e1, e2)


def test_no_cache_gives_the_same_rewards(clip):
    uncached = tiny_clip(alpha=0.5, cache_embeddings=False)
    np.testing.assert_allclose(uncached(frames(3)), clip(frames(3)), atol=1e-6)
    assert len(uncached.text_cache) == 0


def test_preprocessing_matches_open_clip_pil_transform(clip):
    """resize_mode=crop: batched torch resize/crop/normalise vs open_clip's own eval transform per PIL image."""
    from open_clip.transform import PreprocessCfg, image_transform_v2
    from PIL import Image

    assert clip.resize_mode == "shortest"  # the constructor's default resize_mode="crop"
    transform = image_transform_v2(PreprocessCfg(**clip.model.visual.preprocess_cfg), is_train=False)
    for h, w in ((64, 64), (100, 120), (128, 96), (40, 60)):
        batch = frames(2, h, w, seed=h)
        ours = clip.preprocess(batch)
        ref = torch.stack([transform(Image.fromarray(f)) for f in batch])
        assert ours.shape == ref.shape == (2, 3, 64, 64)
        # PIL rounds the resized image to uint8 (<= 0.5/255/std ~ 0.008) and its bicubic filter differs slightly
        assert (ours - ref).abs().mean() < 0.02, (h, w)


def vlmrm_transform(size: int):
    """vlmrm's own preprocessing (vlmrm/contrib/open_clip/transform.py) on uint8 channels-first tensors, plus the
    [0, 1] clamp after resizing that robotrl adds in both modes."""
    from torchvision import transforms as T

    return T.Compose([lambda x: x.float() / 255.0,
                      T.Resize((size, size), interpolation=T.InterpolationMode.BICUBIC, antialias=True),
                      lambda x: x.clamp(0.0, 1.0), T.CenterCrop(size),
                      T.Normalize((0.48145466, 0.4578275, 0.40821073), (0.26862954, 0.26130258, 0.27577711))])


def test_squash_preprocessing_matches_vlmrm_transform():
    squash = tiny_clip(resize_mode="squash")
    transform = vlmrm_transform(64)
    for h, w in ((64, 64), (40, 60), (160, 96)):
        batch = frames(3, h, w, seed=h + w)
        ref = transform(torch.from_numpy(batch).permute(0, 3, 1, 2))
        ours = squash.preprocess(batch)
        assert ours.shape == ref.shape == (3, 3, 64, 64)
        torch.testing.assert_close(ours, ref, atol=2e-5, rtol=0)


def test_resize_modes_agree_on_square_frames_only(clip):
    squash = tiny_clip(alpha=0.5, resize_mode="squash")
    square, wide = frames(4, 96, 96, seed=1), frames(4, 40, 60, seed=2)
    np.testing.assert_allclose(squash(square), clip(square), atol=1e-6)
    assert (squash.preprocess(wide) - clip.preprocess(wide)).abs().max() > 0.5  # different pixels, not rounding
    with pytest.raises(ConfigError, match="reward.resize_mode='stretch'"):
        tiny_clip(resize_mode="stretch")


def test_resize_clamps_bicubic_overshoot(clip):
    """A sharp black/white edge overshoots [0, 255] under bicubic resizing: clamped in both modes."""
    edge = np.zeros((1, 50, 70, 3), np.uint8)
    edge[:, :, 35:] = 255
    lo, hi = clip._shift.flatten(), (255 * clip._scale + clip._shift).flatten()  # normalised 0 and 255
    for model in (clip, tiny_clip(resize_mode="squash")):
        x = model.preprocess(edge)[0]
        for c in range(3):
            assert x[c].min() >= lo[c] - 1e-5 and x[c].max() <= hi[c] + 1e-5
            assert torch.isclose(x[c].min(), lo[c], atol=1e-5) and torch.isclose(x[c].max(), hi[c], atol=1e-5)


# ------------------------------------------------------------------------------------------ bad inputs
@pytest.mark.parametrize("bad, message", [
    (np.zeros((2, 8, 8, 3), np.float32), "dtype float32"),
    (np.full((2, 8, 8, 3), 0.5, np.float32), "multiply by 255"),
    (np.zeros((8, 8, 3), np.uint8), "add a batch axis"),
    (np.zeros((2, 3, 8, 8), np.uint8), "channels-first"),
    (np.zeros((2, 8, 8, 4), np.uint8), "last dim 3"),
    (np.zeros((0, 8, 8, 3), np.uint8), "non-empty"),
    ([[1, 2, 3]], "numpy array or torch tensor"),
])
def test_bad_frames_get_one_line_errors(clip, bad, message):
    with pytest.raises(ObservationError, match=message) as e:
        clip(bad)
    assert "\n" not in str(e.value)


def test_info_must_match_batch():
    with pytest.raises(ObservationError, match="2 entries for 3 frames"):
        check_frames(frames(3, 8, 8), [{}, {}])


# ------------------------------------------------------------------------------------------ weights
def test_missing_weights_is_one_line_and_says_how(tmp_path, monkeypatch):
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    with pytest.raises(ConfigError) as e:
        CLIPReward(model_name="ViT-B-32", pretrained="laion2b_s34b_b79k", cache_dir=str(tmp_path), device="cpu")
    msg = str(e.value)
    assert "\n" not in msg
    for part in ("ViT-B-32", "laion2b_s34b_b79k", "reward.pretrained=/path", "HF_HOME", "allow_random_weights=true"):
        assert part in msg, part


def test_bad_tag_and_unknown_model(tmp_path):
    with pytest.raises(ConfigError, match="neither a file nor an open_clip tag"):
        CLIPReward(model_name="ViT-B-32", pretrained="no_such_tag", device="cpu")
    with pytest.raises(ConfigError, match="unknown open_clip model"):
        CLIPReward(model_name="ViT-Nope", device="cpu")
    with pytest.raises(ConfigError, match="reward.pretrained is null"):
        tiny_clip(allow_random_weights=False)


def test_local_checkpoint_file_loads(clip, tmp_path):
    path = tmp_path / "tiny.pt"
    torch.save(clip.model.state_dict(), path)
    loaded = tiny_clip(alpha=0.5, pretrained=str(path), allow_random_weights=False)
    assert loaded.weights == str(path)
    np.testing.assert_allclose(loaded(frames(2)), clip(frames(2)), atol=1e-6)


def test_make_reward_from_config(compose_cfg, tmp_path, monkeypatch):
    assert make_reward(compose_cfg().reward) is None  # reward=env: the env's own reward
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path))
    with pytest.raises(ConfigError, match="no weights for reward model 'ViT-B-32'"):
        make_reward(compose_cfg("reward=clip").reward)
    state = torch.get_rng_state()
    model = make_reward(compose_cfg("reward=clip_tiny").reward)
    assert isinstance(model, CLIPReward) and model.weights == "random"
    assert torch.equal(torch.get_rng_state(), state)  # building a reward model leaves the global RNG alone


# ------------------------------------------------------------------------------------------ the wrapper
def _env(**overrides):
    from robotrl.envs import make_env

    cfg = {"name": "dmc/cartpole_balance", "image_size": 32, "video_size": 32, "max_episode_steps": 20, **overrides}
    return make_env(cfg, seed=3)


def test_wrapper_keeps_ground_truth_in_info(clip):
    plain, env = _env(), RewardWrapper(_env(), clip, mode="replace", weight=2.0, render_size=64)
    assert env.robotrl_info["reward"] == "model" and env.robotrl_info["name"] == "dmc/cartpole_balance"
    plain.reset(seed=5)
    env.reset(seed=5)
    action = np.zeros(env.action_space.shape, np.float32)
    rendered = []
    for _ in range(3):
        _, gt, *_ = plain.step(action)
        obs, reward, _, _, info = env.step(action)
        rendered.append(env.render_frame())
        assert rendered[-1].shape == (64, 64, 3) and obs["pixels"].shape == (9, 32, 32)
        assert info["gt_reward"] == pytest.approx(gt)
        assert reward == pytest.approx(2.0 * info["model_reward"])
        assert info["model_reward"] == pytest.approx(float(clip(rendered[-1][None])[0]), abs=1e-6)
    relabelled = env.relabel(np.stack(rendered))  # replay-time relabelling gives the step rewards again
    np.testing.assert_allclose(relabelled, 2.0 * clip(np.stack(rendered)), atol=1e-6)


def test_wrapper_blend_and_bad_mode(clip):
    env = wrap_env(_env(), {"name": "clip", "mode": "blend", "weight": 0.5, "render_size": 48}, model=clip)
    env.reset(seed=1)
    _, reward, _, _, info = env.step(np.zeros(env.action_space.shape, np.float32))
    assert reward == pytest.approx(info["gt_reward"] + 0.5 * info["model_reward"])
    assert wrap_env(_env(), {"name": "env"}).__class__.__name__ == "RobotRLInfo"  # reward=env: untouched
    with pytest.raises(ConfigError, match="reward.mode='mix'"):
        RewardWrapper(_env(), clip, mode="mix")
    with pytest.raises(ConfigError, match="predicts no success"):
        RewardWrapper(_env(), clip, terminate_on_success=True)


class CountingModel:
    """A cheap deterministic reward (mean red intensity) that counts its calls and batch sizes."""

    def __init__(self):
        self.batches: list[int] = []

    def __call__(self, frames, info=None):
        check_frames(frames, info)
        self.batches.append(len(frames))
        return frames[..., 0].mean(axis=(1, 2)).astype(np.float32) / 255.0


def test_vector_wrapper_batches_and_matches_the_single_env_wrapper():
    import gymnasium as gym
    from robotrl.rewards import RewardVectorWrapper

    n, steps = 3, 12  # max_episode_steps=20 with action_repeat 2: the episodes end at step 10, step 11 resets
    model = CountingModel()
    venv = RewardVectorWrapper(gym.vector.SyncVectorEnv([_env for _ in range(n)]), model, mode="blend", weight=0.5,
                               render_size=32)
    singles = [RewardWrapper(_env(), CountingModel(), mode="blend", weight=0.5, render_size=32) for _ in range(n)]
    venv.reset(seed=[11, 12, 13])
    for i, env in enumerate(singles):
        env.reset(seed=11 + i)
    actions = np.random.default_rng(0).uniform(-1, 1, (steps, n, *singles[0].action_space.shape)).astype(np.float32)
    done, episode = np.zeros(n, bool), np.zeros(n, int)
    for t in range(steps):
        _, reward, terminated, truncated, infos = venv.step(actions[t])
        assert model.batches[-1] == n or done.all()  # one model call for all sub-envs
        for i, env in enumerate(singles):
            if done[i]:  # NEXT_STEP autoreset: this step only reset sub-env i; nothing to score
                assert reward[i] == 0.0 and infos["model_reward"][i] == 0.0
                episode[i] += 1
            elif episode[i] == 0:  # the first episodes: exactly what the single-env wrapper gives
                _, r, *_, info = env.step(actions[t, i])
                assert reward[i] == pytest.approx(r, abs=1e-6)
                assert infos["model_reward"][i] == pytest.approx(info["model_reward"], abs=1e-6)
                assert infos["gt_reward"][i] == pytest.approx(info["gt_reward"], abs=1e-6)
            else:  # the autoreset episodes are scored again, on their own frames
                expected = CountingModel()(venv.render_frames()[i:i + 1])[0]
                assert infos["model_reward"][i] == pytest.approx(expected, abs=1e-6) and expected > 0
        done = np.logical_or(terminated, truncated)
    assert episode.min() == 1
    same_step = gym.vector.SyncVectorEnv([_env], autoreset_mode="SameStep")
    with pytest.raises(ConfigError, match="autoreset_mode"):
        RewardVectorWrapper(same_step, model)


# ------------------------------------------------------------------------------------------ the trainer
def test_the_training_env_gets_the_model_reward_and_the_eval_env_the_ground_truth(compose_cfg):
    """The trainer's envs (``factory.build_one_env``) and one-env collector: the training episode's return is the
    model's reward, its train.csv row keeps the ground truth beside it, and evaluation plays the env's own reward."""
    from robotrl.replay import ReplayBuffer
    from robotrl.workflows.trainer.factory import build_one_env
    from robotrl.workflows.trainer.stats import train_row
    from tests.test_reward_faults import Actor, collect_episodes

    cfg = compose_cfg("reward=clip_tiny", "env.max_episode_steps=40")
    envs = build_one_env(cfg, make_reward(cfg.reward), run_dir=None)
    env, eval_env = envs["env"], envs["eval_env"]
    replay = ReplayBuffer(500, env.observation_space, 1, 3, nstep=1, discount=0.99, seed=0)
    stats, = collect_episodes(env, Actor(1), replay, episodes=1)
    row = train_row(stats, {"episode_return": stats.ret}, None, False, "")
    assert stats.length == 20 and row["model_reward"] and row["gt_reward"]
    # replace mode: the agent's return is the model's reward, the ground truth is logged beside it
    assert row["episode_return"] == pytest.approx(row["model_reward"], rel=1e-5)
    assert row["gt_reward"] != pytest.approx(row["model_reward"])
    eval_env.reset(seed=0)
    *_, info = eval_env.step(np.zeros(eval_env.action_space.shape, np.float32))
    assert "model_reward" not in info and "gt_reward" not in info  # evaluation returns are the env's own
    env.close()
    eval_env.close()


@pytest.mark.slow  # a trainer run (~15 s); the envs-and-collector test above holds what it asserts
def test_trainer_logs_model_and_ground_truth_reward(compose_cfg, tmp_path):
    from robotrl.workflows.train import Trainer

    summary = Trainer(compose_cfg("reward=clip_tiny", "frames=200", "save_video=false", "tensorboard=false"),
                      tmp_path).train()
    with open(tmp_path / "train.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    assert rows and all(r["model_reward"] and r["gt_reward"] for r in rows)
    for r in rows:  # replace mode: the agent's return is the model's reward, the ground truth is logged beside it
        assert float(r["episode_return"]) == pytest.approx(float(r["model_reward"]), rel=1e-5)
    assert summary["final_eval"] is not None and summary["frames"] == 200


def test_trainer_fails_fast_without_weights(compose_cfg, tmp_path, monkeypatch):
    from robotrl.workflows.train import Trainer

    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setenv("HF_HOME", str(tmp_path / "hf"))
    with pytest.raises(ConfigError, match="allow_random_weights=true"):
        Trainer(compose_cfg("reward=clip"), tmp_path / "run")
    assert not (tmp_path / "run").exists()
