"""LfVoid reward: goal generation through a tiny random InstructPix2Pix pipeline (no weights, no network), the goal-set
file format, the offline goal sources, and the ensembled goal discriminator (learning, determinism, checkpointing)."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
from robotrl.rewards import lfvoid_goals
from robotrl.rewards.lfvoid import LfVoidReward, load_goal_set, save_goal_set
from robotrl.rewards.lfvoid_goals import EditSettings

from robotrl import cli
from robotrl.errors import CheckpointError, ConfigError, ObservationError
from robotrl.workflows import goals as goals_workflow

RED, BLUE = (230, 30, 30), (30, 30, 230)
# diffusers' Euler scheduler calls np.array on a tensor without copy= (numpy 2 deprecation, not ours)
pytestmark = pytest.mark.filterwarnings("ignore:__array__ implementation:DeprecationWarning")


def squares(color: tuple[int, int, int], n: int, seed: int, size: int = 32) -> np.ndarray:
    """uint8 [n, size, size, 3]: a grey background with one 10x10 square of ``color`` at a random place."""
    rng = np.random.default_rng(seed)
    images = np.full((n, size, size, 3), 128, np.uint8)
    for i in range(n):
        y, x = rng.integers(0, size - 10, 2)
        images[i, y:y + 10, x:x + 10] = color
    return images


@pytest.fixture
def red_goals(tmp_path: Path) -> Path:
    return save_goal_set(tmp_path / "goals", squares(RED, 8, seed=0), squares(BLUE, 2, seed=1), {"instruction": "red"})


def small_model(goals: Path, **overrides) -> LfVoidReward:
    """A fast configuration: 32x32 images, 3 members, an update every call after 16 negatives."""
    kwargs = {"ensemble_size": 3, "image_size": 32, "channels": 16, "lr": 1e-3, "train_batch_size": 32,
              "update_every": 1, "min_negatives": 16, "buffer_size": 256, "shift_pad": 2, "seed": 0}
    return LfVoidReward(str(goals), **{**kwargs, **overrides})


def feed(model: LfVoidReward, frames: np.ndarray, calls: int, per_call: int = 2) -> list[np.ndarray]:
    """``calls`` reward calls on consecutive (cyclic) chunks of ``frames``; the rewards returned."""
    out = []
    for i in range(calls):
        idx = [(i * per_call + j) % len(frames) for j in range(per_call)]
        out.append(model(frames[idx]))
    return out


# ------------------------------------------------------------------------------------------------ discriminator
def test_discriminator_learns_to_separate_goals_from_agent_frames(red_goals: Path):
    model = small_model(red_goals)
    red_test, blue_test = squares(RED, 16, seed=100), squares(BLUE, 16, seed=101)  # unseen square positions
    before_red, before_blue = model.score(red_test), model.score(blue_test)
    assert abs(float(before_red.mean() - before_blue.mean())) < 0.1  # untrained: no preference
    feed(model, squares(BLUE, 64, seed=2), calls=80)
    assert model.updates == 80 - 16 // 2 + 1
    red, blue = model.score(red_test), model.score(blue_test)
    assert red.dtype == np.float32 and red.shape == (16,)
    assert red.mean() > 0.8 and blue.mean() < 0.2, (red.mean(), blue.mean())
    assert red.min() > blue.max()
    assert model.last_loss < 0.3


def test_reward_types_and_success(red_goals: Path):
    model = small_model(red_goals, reward_type="logprob", success_threshold=0.5)
    feed(model, squares(BLUE, 64, seed=2), calls=60)
    red, blue = squares(RED, 4, seed=7), squares(BLUE, 4, seed=8)
    logp = model.score(red)
    assert np.all(logp <= 0) and np.allclose(np.exp(logp), model.goal_probability(red), atol=0.2)
    assert model.predict_success(red).all() and not model.predict_success(blue).any()
    with pytest.raises(ConfigError, match="reward_type='log'"):
        small_model(red_goals, reward_type="log")


def test_online_calls_store_and_train_only_when_online(red_goals: Path):
    model = small_model(red_goals, buffer_size=20, min_negatives=4, update_every=3)
    feed(model, squares(BLUE, 64, seed=2), calls=9, per_call=4)
    assert (model.calls, model.updates, model.buffer_count, model.buffer_pos) == (9, 3, 20, 36 % 20)
    model.online = False
    model(squares(BLUE, 4, seed=3))
    model.score(squares(BLUE, 4, seed=3))
    assert (model.calls, model.updates) == (9, 3)


def test_same_seed_same_rewards_other_seed_differs(red_goals: Path):
    frames = squares(BLUE, 32, seed=2)
    a, b, c = (feed(small_model(red_goals, seed=s), frames, calls=20) for s in (0, 0, 1))
    assert all(np.array_equal(x, y) for x, y in zip(a, b, strict=True))
    assert not all(np.array_equal(x, y) for x, y in zip(a, c, strict=True))


def test_members_differ_and_bootstrap(red_goals: Path):
    model = small_model(red_goals)
    w = [m[0].weight for m in model.net.members]
    assert not torch.equal(w[0], w[1]) and not torch.equal(w[1], w[2])
    assert model.bootstrap_idx.shape == (3, 8)
    assert len({tuple(row.tolist()) for row in model.bootstrap_idx}) == 3  # each member its own resample
    plain = small_model(red_goals, bootstrap=False)
    assert all(row.tolist() == list(range(8)) for row in plain.bootstrap_idx)


def test_state_dict_round_trip_gives_identical_rewards(red_goals: Path, tmp_path: Path):
    frames = squares(BLUE, 32, seed=2)
    a = small_model(red_goals)
    feed(a, frames, calls=20)
    torch.save(a.state_dict(), tmp_path / "reward.pt")
    b = small_model(red_goals, seed=5)  # other init and RNG: everything must come from the state
    b.config["seed"] = a.config["seed"]
    b.load_state_dict(torch.load(tmp_path / "reward.pt", weights_only=True))
    test = squares(RED, 6, seed=9)
    assert np.array_equal(a.score(test), b.score(test))
    for ra, rb in zip(feed(a, frames, calls=10), feed(b, frames, calls=10), strict=True):  # training goes on alike
        assert np.array_equal(ra, rb)
    with pytest.raises(CheckpointError, match="ensemble_size"):
        small_model(red_goals, ensemble_size=2).load_state_dict(a.state_dict())
    other = save_goal_set(tmp_path / "other", squares(RED, 8, seed=50), squares(BLUE, 0, seed=0), {})
    with pytest.raises(CheckpointError, match="another goal set"):
        small_model(other).load_state_dict(a.state_dict())


@pytest.mark.parametrize(("frames", "match"), [
    (np.zeros((2, 32, 32, 3), np.float32), "dtype float32"),
    (np.zeros((32, 32, 3), np.uint8), "single frame"),
    (np.zeros((2, 3, 32, 32), np.uint8), "channels-first"),
    (np.zeros((0, 32, 32, 3), np.uint8), "non-empty"),
])
def test_bad_frames_raise_observation_error(red_goals: Path, frames: np.ndarray, match: str):
    model = small_model(red_goals)
    for call in (model, model.score, model.predict_success):
        with pytest.raises(ObservationError, match=match):
            call(frames)
    assert model.calls == 0


# ------------------------------------------------------------------------------------------------ goal set files
def _write_npz(path: Path, **arrays) -> Path:
    np.savez(path, **arrays)
    return path


@pytest.mark.parametrize(("arrays", "match"), [
    ({"goals": np.zeros((2, 8, 8, 3), np.uint8), "sources": np.zeros((0, 8, 8, 3), np.uint8)}, r"missing key.*meta"),
    ({"goals": np.zeros((2, 8, 8), np.uint8), "sources": np.zeros((0, 8, 8, 3), np.uint8), "meta": "{}"},
     r"'goals' has shape \(2, 8, 8\), expected \[N, H, W, 3\]"),
    ({"goals": np.zeros((0, 8, 8, 3), np.uint8), "sources": np.zeros((0, 8, 8, 3), np.uint8), "meta": "{}"},
     "at least one"),
    ({"goals": np.zeros((2, 8, 8, 3), np.float32), "sources": np.zeros((0, 8, 8, 3), np.uint8), "meta": "{}"},
     "dtype float32, expected uint8"),
    ({"goals": np.zeros((2, 8, 8, 3), np.uint8), "sources": np.zeros((0, 8, 8, 3), np.uint8), "meta": "{nope"},
     "not valid JSON"),
])
def test_bad_goal_file_is_a_clear_error(tmp_path: Path, arrays: dict, match: str):
    path = _write_npz(tmp_path / "goals.npz", **arrays)
    with pytest.raises(ConfigError, match=match) as info:
        LfVoidReward(str(path))
    assert "\n" not in str(info.value) and str(path) in str(info.value)


def test_missing_or_null_goal_set(tmp_path: Path):
    with pytest.raises(ConfigError, match="not found"):
        LfVoidReward(str(tmp_path / "nothing"))
    with pytest.raises(ConfigError, match="reward.goals is null"):
        LfVoidReward(None)
    (tmp_path / "junk.npz").write_text("a text file, not an npz\n")
    with pytest.raises(ConfigError, match="junk.npz is not a goal set: expected a .npz") as err:
        load_goal_set(tmp_path / "junk.npz")
    assert "pickle" not in str(err.value)


def test_reward_config_builds_through_make_reward(compose_cfg, red_goals: Path):
    from robotrl.rewards import make_reward

    cfg = compose_cfg("reward=lfvoid", f"reward.goals={red_goals.parent}", "reward.image_size=32")
    model = make_reward(cfg.reward)
    assert isinstance(model, LfVoidReward) and model.k == 5 and model.batch_size == 64
    assert model.config["seed"] == cfg.seed
    assert model(squares(BLUE, 3, seed=1)).shape == (3,)
    demo_cfg = compose_cfg("reward=lfvoid_demo_goals", f"reward.goals={red_goals}")
    assert demo_cfg.reward.name == "lfvoid_demo_goals" and demo_cfg.reward.render_size == 64


# ------------------------------------------------------------------------------------------------ goal generation
def _tiny_tokenizer(folder: Path):
    """A CLIP BPE tokenizer with a character vocabulary and no merges, loaded from vocab.json/merges.txt."""
    from transformers import CLIPTokenizer

    folder.mkdir(parents=True)
    chars = [chr(i) for i in range(33, 127)]  # printable ASCII maps to itself in CLIP's byte-level alphabet
    vocab = {"<|startoftext|>": 0, "<|endoftext|>": 1}
    for token in chars + [c + "</w>" for c in chars]:
        vocab[token] = len(vocab)
    (folder / "vocab.json").write_text(json.dumps(vocab))
    (folder / "merges.txt").write_text("#version: 0.2\n")
    return CLIPTokenizer.from_pretrained(str(folder), model_max_length=16), len(vocab)


@pytest.fixture(scope="module")
def tiny_pipeline_dir(tmp_path_factory) -> Path:
    """A randomly initialised InstructPix2Pix pipeline (8-channel UNet, 1-block VAE, 1-layer CLIP text model) saved
    with save_pretrained: users' real model directories load through exactly the same from_pretrained call."""
    from diffusers import (
        AutoencoderKL,
        EulerAncestralDiscreteScheduler,
        StableDiffusionInstructPix2PixPipeline,
        UNet2DConditionModel,
    )
    from transformers import CLIPTextConfig, CLIPTextModel

    root = tmp_path_factory.mktemp("ip2p")
    tokenizer, vocab_size = _tiny_tokenizer(root / "tokenizer_src")
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(0)
        unet = UNet2DConditionModel(
            sample_size=16, in_channels=8, out_channels=4, layers_per_block=1, block_out_channels=(8, 16),
            down_block_types=("DownBlock2D", "CrossAttnDownBlock2D"),
            up_block_types=("CrossAttnUpBlock2D", "UpBlock2D"), cross_attention_dim=16, norm_num_groups=4,
            attention_head_dim=4)
        vae = AutoencoderKL(block_out_channels=(8,), in_channels=3, out_channels=3, latent_channels=4,
                            down_block_types=("DownEncoderBlock2D",), up_block_types=("UpDecoderBlock2D",),
                            norm_num_groups=4, layers_per_block=1)
        text_encoder = CLIPTextModel(CLIPTextConfig(
            vocab_size=vocab_size, hidden_size=16, intermediate_size=32, num_attention_heads=2, num_hidden_layers=1,
            max_position_embeddings=16, bos_token_id=0, eos_token_id=1, pad_token_id=1))
    pipe = StableDiffusionInstructPix2PixPipeline(
        vae=vae, text_encoder=text_encoder, tokenizer=tokenizer, unet=unet, scheduler=EulerAncestralDiscreteScheduler(),
        safety_checker=None, feature_extractor=None, requires_safety_checker=False)
    pipe.save_pretrained(root / "pipeline")
    return root / "pipeline"


TINY_SETTINGS = EditSettings(num_inference_steps=2, resolution=16, seed=0)


def test_generate_goals_end_to_end_from_env_frames(tiny_pipeline_dir: Path, tmp_path: Path):
    frames = goals_workflow.initial_frames({"name": "dmc/cartpole_balance"}, n=2, seed=0, size=24)
    assert frames.shape == (2, 24, 24, 3) and frames.dtype == np.uint8
    path = lfvoid_goals.generate_goals(frames, "make the pole red", tmp_path / "out", model=str(tiny_pipeline_dir),
                                 device="cpu", settings=TINY_SETTINGS, extra_meta={"env": "dmc/cartpole_balance"})
    assert path == tmp_path / "out" / "goals.npz"
    with np.load(path, allow_pickle=False) as data:
        assert sorted(data.files) == ["goals", "meta", "sources"]
        goals, sources, meta = data["goals"], data["sources"], json.loads(str(data["meta"]))
    assert goals.shape == (2, 24, 24, 3) and goals.dtype == np.uint8 and np.array_equal(sources, frames)
    assert not np.array_equal(goals, frames)  # the (random) editor changed them
    assert meta["instruction"] == "make the pole red" and meta["model"] == str(tiny_pipeline_dir)
    assert meta["settings"] == {"num_inference_steps": 2, "image_guidance_scale": 1.5, "guidance_scale": 7.5,
                                "seed": 0, "resolution": 16}
    assert meta["source"] == "diffusion" and meta["num_goals"] == 2 and meta["env"] == "dmc/cartpole_balance"
    assert meta["pipeline"] == "StableDiffusionInstructPix2PixPipeline"
    pngs = sorted(p.name for p in (tmp_path / "out" / "png").iterdir())
    assert pngs == ["goal_000.png", "goal_001.png", "source_000.png", "source_001.png"]
    assert not list((tmp_path / "out").glob(".*.tmp"))  # atomic writes leave no temp files
    assert LfVoidReward(str(path), image_size=16)(frames).shape == (2,)


def test_goal_generation_is_deterministic_given_a_seed(tiny_pipeline_dir: Path):
    pipe = lfvoid_goals.load_edit_pipeline(str(tiny_pipeline_dir), device="cpu")
    frames = squares(RED, 3, seed=0, size=16)
    a = lfvoid_goals.edit_frames(pipe, frames, "paint it blue", TINY_SETTINGS)
    b = lfvoid_goals.edit_frames(pipe, frames, "paint it blue", TINY_SETTINGS)
    other_seed = EditSettings(num_inference_steps=2, resolution=16, seed=1)
    c = lfvoid_goals.edit_frames(pipe, frames, "paint it blue", other_seed)
    assert a.shape == frames.shape and a.dtype == np.uint8
    assert np.array_equal(a, b) and not np.array_equal(a, c)
    first = lfvoid_goals.edit_frames(pipe, frames[:1], "paint it blue", TINY_SETTINGS)
    assert np.array_equal(first, a[:1])  # frame i is sampled with seed + i, whatever else is edited


def test_goals_cli_diffusion(tiny_pipeline_dir: Path, tmp_path: Path, capsys):
    rc = cli.run("goals", ["generate", "env=dmc/cartpole_balance", "instruction=raise the pole", "n=2",
                                    "seed=3", f"model={tiny_pipeline_dir}", "steps=2", "resolution=16", "size=16",
                                    "device=cpu", f"out={tmp_path / 'cli'}"])
    assert rc == 0 and "wrote 2 goal images" in capsys.readouterr().out
    goal_set = load_goal_set(tmp_path / "cli")
    assert goal_set.goals.shape == (2, 16, 16, 3) and goal_set.meta["env_seed"] == 3
    assert goal_set.meta["settings"]["num_inference_steps"] == 2
    before = (tmp_path / "cli" / "goals.npz").read_bytes()  # a rerun used to replace it (and mix the png/ views)
    with pytest.raises(ConfigError, match=r"out=.*cli already holds a goal set \(2 goals"):
        cli.run("goals", ["generate", "env=dmc/cartpole_balance", "instruction=lower the pole", "n=1",
                          f"model={tiny_pipeline_dir}", "steps=2", "resolution=16", "size=16", "device=cpu",
                          f"out={tmp_path / 'cli'}"])
    assert (tmp_path / "cli" / "goals.npz").read_bytes() == before
    with pytest.raises(ConfigError, match="instruction"):
        cli.run("goals", ["generate", "env=dmc/cartpole_balance", f"model={tiny_pipeline_dir}"])
    with pytest.raises(ConfigError, match="subcommand 'generate'"):
        cli.run("goals", ["make"])
    with pytest.raises(ConfigError, match="source='video'"):
        cli.run("goals", ["generate", "source=video"])
    with pytest.raises(ConfigError, match="resolution=12"):
        cli.run("goals", ["generate", "env=dmc/cartpole_balance", "instruction=x", "resolution=12"])


def test_missing_weights_is_one_line_naming_the_model(monkeypatch, tmp_path: Path):
    monkeypatch.setattr(lfvoid_goals, "_hub_reachable", lambda *a, **k: False)  # offline: never touch the network
    with pytest.raises(ConfigError) as info:
        lfvoid_goals.load_edit_pipeline("timbrooks/instruct-pix2pix", cache_dir=str(tmp_path / "empty_cache"),
                                        device="cpu")
    message = str(info.value)
    assert "\n" not in message and "'timbrooks/instruct-pix2pix'" in message
    assert "offline" in message and "Hugging Face cache" in message and "model=/path/to/pipeline_dir" in message
    with pytest.raises(ConfigError, match=r"path '/no/such/pipeline' is not a directory"):
        lfvoid_goals.load_edit_pipeline("/no/such/pipeline", device="cpu")
    with pytest.raises(ConfigError, match="'timbrooks/instruct-pix2pix'"):  # the CLI fails before rendering anything
        cli.run("goals", ["generate", "env=dmc/cartpole_balance", "instruction=x", f"cache_dir={tmp_path}"])


# ------------------------------------------------------------------------------------------------ offline sources
def _fake_demos(root: Path, lengths: list[int], success_from: list[int], size: int = 16) -> Path:
    """A demo directory in robotrl's format; pixel value = time step, so the chosen frames are identifiable."""
    from robotrl.demos import FORMAT_VERSION, episode_file, save_episode
    from robotrl.types import Episode

    root.mkdir(parents=True)
    for i, (t, s) in enumerate(zip(lengths, success_from, strict=True)):
        pixels = np.broadcast_to(np.arange(t + 1, dtype=np.uint8)[:, None, None, None], (t + 1, 3, size, size))
        success = np.arange(t) >= s
        save_episode(root / episode_file(i), Episode(
            obs={"pixels": pixels.copy(), "state": np.zeros((t + 1, 4), np.float32)},
            action=np.zeros((t, 2), np.float32), reward=np.zeros(t, np.float32), terminated=np.zeros(t, bool),
            success=success))
    meta = {"format_version": FORMAT_VERSION, "name": "metaworld/fake", "num_episodes": len(lengths),
            "image_size": size, "state_dim": 4, "action_dim": 2}
    (root / "meta.json").write_text(json.dumps(meta))
    return root


def test_demo_goals_take_frames_after_success(tmp_path: Path, capsys):
    demos = _fake_demos(tmp_path / "demos", lengths=[10, 6], success_from=[4, 5])
    goals, sources = lfvoid_goals.demo_goals(demos, frames_per_demo=2)
    assert goals.shape == (3, 16, 16, 3) and sources.shape == (2, 16, 16, 3)
    # episode 0 succeeds from step 4 (frames 5..10): its last 2; episode 1 only at its last step (frame 6)
    assert [int(g[0, 0, 0]) for g in goals] == [9, 10, 6] and int(sources.max()) == 0
    rc = cli.run("goals", ["generate", "source=demos", f"demos={demos}", f"out={tmp_path / 'g'}"])
    assert rc == 0
    goal_set = load_goal_set(tmp_path / "g")
    assert goal_set.goals.shape == (2, 16, 16, 3) and "NOT LfVoid" in goal_set.meta["note"]


def test_image_folder_goals(tmp_path: Path):
    from PIL import Image

    folder = tmp_path / "imgs"
    folder.mkdir()
    for i, image in enumerate(squares(RED, 3, seed=0)):
        Image.fromarray(image).save(folder / f"{i}.png")
    assert cli.run("goals", ["generate", "source=images", f"images={folder}", f"out={tmp_path / 'g'}"]) == 0
    goal_set = load_goal_set(tmp_path / "g")
    assert np.array_equal(goal_set.goals, squares(RED, 3, seed=0)) and goal_set.sources.shape[0] == 0
    Image.fromarray(np.zeros((8, 8, 3), np.uint8)).save(folder / "9.png")
    with pytest.raises(ConfigError, match="several sizes"):
        lfvoid_goals.image_goals(folder)
    with pytest.raises(ConfigError, match="needs images="):
        cli.run("goals", ["generate", "source=images"])


def test_demo_goals_from_metaworld_expert_drive_the_reward_wrapper(compose_cfg, tmp_path: Path):
    """Real Meta-World expert demos -> goal set -> reward=lfvoid_demo_goals on the env through RewardWrapper."""
    from robotrl.envs import make_env
    from robotrl.rewards import wrap_env

    assert cli.run("goals", ["generate", "env=metaworld/reach", "source=demos", "n=1", f"out={tmp_path}"]) == 0
    goal_set = load_goal_set(tmp_path)
    assert goal_set.goals.shape == (1, 84, 84, 3) and goal_set.sources.shape == (1, 84, 84, 3)
    cfg = compose_cfg("env=metaworld/reach", "reward=lfvoid_demo_goals", f"reward.goals={tmp_path}",
                      "reward.min_negatives=8", "reward.update_every=1", tiny=False)
    env = wrap_env(make_env(cfg.env, 0), cfg.reward)
    try:
        env.reset(seed=0)
        for _ in range(12):
            _, reward, _, _, info = env.step(env.action_space.sample())
            assert reward == info["model_reward"] and 0.0 <= reward <= 1.0 and "gt_reward" in info
        assert env.model.updates == 12 - 8 + 1
    finally:
        env.close()


@pytest.mark.slow  # ~60 s on 2 cores; exact resume of the Trainer is in the default suite via test_trainer/test_tdmpc2
def test_trainer_checkpoints_the_discriminators_and_resumes_exactly(compose_cfg, red_goals: Path, tmp_path: Path):
    """The reward model learns during training, so exact resume needs its state: 400 frames in one go equals
    200 + resume to 400, for the agent and for the discriminator ensemble."""
    from robotrl.workflows.train import Trainer
    from tests.conftest import assert_same_tensors

    reward = ["reward=lfvoid", f"reward.goals={red_goals}", "reward.render_size=32", "reward.image_size=32",
              "reward.ensemble_size=2", "reward.channels=8", "reward.min_negatives=16", "reward.update_every=4",
              "reward.train_batch_size=16", "reward.buffer_size=512", "save_video=false", "tensorboard=false"]
    full = Trainer(compose_cfg(*reward, "frames=400"), tmp_path / "full")
    full.train()
    Trainer(compose_cfg(*reward, "frames=200"), tmp_path / "split").train()
    resumed = Trainer(compose_cfg(*reward, "frames=400", "resume=true"), tmp_path / "split")
    assert resumed.reward_model.updates > 0  # restored from the checkpoint, not a fresh model
    resumed.train()
    assert_same_tensors(full.agent.state_dict(), resumed.agent.state_dict())
    assert_same_tensors(full.reward_model.state_dict(), resumed.reward_model.state_dict(), min_count=5)
    assert full.reward_model.updates == resumed.reward_model.updates
