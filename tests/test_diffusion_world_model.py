"""The diffusion world model (``model.dynamics=diffusion``): rollout contract, determinism per seed, the denoiser
learning a predictable change, the checkpoint round-trip through ``load_model`` (old checkpoints stay latent) and
the one-line errors for bad settings."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from omegaconf import OmegaConf
from robotrl.agents.diffusion_world_model import DiffusionWorldModel
from robotrl.agents.video_world_model import VideoWorldModel

from robotrl.errors import ConfigError
from robotrl.workflows.worldenv.fit import save_ckpt
from robotrl.workflows.worldenv.settings import default_config
from robotrl.workflows.worldenv.world_model import build_model, load_model, train_model

SIZE = 32


def tiny(seed: int = 0, weights: int = 0, steps: int = 2) -> DiffusionWorldModel:
    torch.manual_seed(weights)
    return DiffusionWorldModel(SIZE, 4, 8, context=2, latent_channels=4, block_channels=(8, 16), hidden=16,
                               denoise_steps=steps, seed=seed).eval()


def starts(n: int = 3) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return (rng.integers(0, 256, (n, 2, 3, SIZE, SIZE), dtype=np.uint8),
            rng.standard_normal((n, 8)).astype(np.float32))


def roll(model, n_steps: int = 4) -> tuple[np.ndarray, np.ndarray]:
    frames, prop = starts(3)
    actions = np.random.default_rng(1).uniform(-1, 1, (n_steps, 3, 4)).astype(np.float32)
    state, out, props = model.init(frames, prop), [], []
    for a in actions:
        state, f, p = model.step(state, a)
        out.append(f)
        props.append(p)
    return np.stack(out), np.stack(props)


def test_diffusion_rollout_shapes_and_determinism_per_seed():
    frames, props = roll(tiny(seed=0))
    assert frames.shape == (4, 3, 3, SIZE, SIZE) and frames.dtype == np.uint8
    assert props.shape == (4, 3, 8) and props.dtype == np.float32
    again, _ = roll(tiny(seed=0))
    other, other_props = roll(tiny(seed=1))  # same weights, other sampling noise
    np.testing.assert_array_equal(frames, again)
    assert not np.array_equal(frames, other)
    model = tiny(seed=0)
    np.testing.assert_array_equal(roll(model)[0], roll(model)[0])  # the start seeds the noise, not a call count
    assert not np.array_equal(frames[:, 0], frames[:, 1])  # batch entries draw different noise (and starts)
    np.testing.assert_array_equal(props[0], other_props[0])  # the proprio head is deterministic given the context


def test_world_env_on_the_diffusion_model_passes_gymnasiums_checker():
    from gymnasium.utils.env_checker import check_env
    from robotrl.envs.world_env import WorldEnv

    class ConstantReflector:
        threshold = 0.5

        def score(self, frames, instructions):
            return np.full(len(frames), 0.1, np.float32)

    env = WorldEnv(tiny(steps=2), ConstantReflector(), *starts(3), "reach the red goal position", max_steps=5)
    check_env(env, skip_render_check=True)  # includes: same seed + same action -> same observation


def moving_squares(n: int = 2, steps: int = 5) -> torch.Tensor:
    """A white square moving 3 pixels a step on grey: a change the context predicts."""
    f = np.full((n, steps, 3, SIZE, SIZE), 60, np.uint8)
    for i in range(n):
        for t in range(steps):
            x = 4 + 3 * t + 6 * i
            f[i, t, :, 10:18, x:x + 8] = 255
    return torch.as_tensor(f)


def test_diffusion_denoiser_learns_a_predictable_change():
    model = tiny().train()
    frames, actions = moving_squares(), torch.ones(2, 4, 4)
    prop = torch.as_tensor(np.random.default_rng(0).standard_normal((2, 5, 8)).astype(np.float32))

    def evaluate() -> tuple[float, dict[str, float]]:
        """The loss with the same diffusion timesteps and noise every time (and no running-scale update)."""
        model.eval()
        torch.manual_seed(123)
        loss, metrics = model.loss(frames, actions, prop, 1e-6)
        model.train()
        return loss.item(), metrics

    model.loss(frames, actions, prop, 1e-6)  # sets the change's scale from the batch
    first, first_m = evaluate()
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    for _ in range(40):
        loss, _ = model.loss(frames, actions, prop, 1e-6)
        opt.zero_grad()
        loss.backward()
        opt.step()
    last, last_m = evaluate()
    assert set(last_m) == {"recon", "denoise", "proprio"}
    assert last < 0.5 * first
    assert last_m["denoise"] < 0.85 * first_m["denoise"]  # predicting no change scores 1.0 in v-prediction


def test_context_noise_only_in_training():
    window = torch.randn(3, 2, 4, 16, 16)
    model = tiny()
    model.context_noise = 2.0
    assert model.corrupt(window) is window  # eval: rollouts see their own context unchanged
    model.train()
    noisy = model.corrupt(window)
    assert noisy.shape == window.shape and not torch.equal(noisy, window)
    assert (noisy - window).abs().max() < 2.0 * 6  # std at most context_noise x delta_scale (1 here)
    model.context_noise = 0.0
    assert model.corrupt(window) is window


def test_checkpoint_round_trip_and_old_checkpoints_load_as_latent(tmp_path):
    model = tiny(seed=5, steps=3)
    model.delta_scale.fill_(0.3)  # a trained buffer must come back too
    path = tmp_path / "model.pt"
    save_ckpt(path, {"kind": "world_model", "config": model.config, "model": model.state_dict()})
    loaded = load_model(path, torch.device("cpu"))
    assert isinstance(loaded, DiffusionWorldModel) and loaded.denoise_steps == 3
    assert float(loaded.delta_scale) == pytest.approx(0.3)
    np.testing.assert_array_equal(roll(loaded)[0], roll(model)[0])  # same weights and sampling seed
    assert load_model(path, torch.device("cpu"), denoise_steps=6).denoise_steps == 6

    torch.manual_seed(0)
    latent = VideoWorldModel(SIZE, 4, 8, context=2, latent_channels=4, block_channels=(8, 16), hidden=16).eval()
    assert "dynamics" not in latent.config  # the layout of checkpoints written before model.dynamics existed
    save_ckpt(path, {"kind": "world_model", "config": latent.config, "model": latent.state_dict()})
    old = load_model(path, torch.device("cpu"))
    assert type(old) is VideoWorldModel
    np.testing.assert_array_equal(roll(old)[0], roll(latent)[0])
    with pytest.raises(ConfigError, match="deterministic"):
        load_model(path, torch.device("cpu"), denoise_steps=4)


def test_build_model_picks_the_dynamics_and_rejects_bad_values(tmp_path):
    cfg = default_config()
    cfg.image_size = SIZE
    cfg.model.block_channels, cfg.model.hidden = [8, 16], 16
    assert cfg.model.dynamics == "latent"  # the default: nothing existing changes
    assert type(build_model(cfg, torch.device("cpu"), 8, 4)) is VideoWorldModel
    cfg.model.dynamics = "diffusion"
    assert isinstance(build_model(cfg, torch.device("cpu"), 8, 4), DiffusionWorldModel)
    for key, value, needle in (("dynamics", "transformer", "model.dynamics='transformer', expected one of"),
                               ("denoise_steps", 0, "model.denoise_steps=0, expected an integer >= 1"),
                               ("context_noise", -1.0, "model.context_noise=-1.0, expected a number >= 0")):
        bad = OmegaConf.merge(cfg, {"model": {key: value}})
        with pytest.raises(ConfigError, match=needle) as e:
            build_model(bad, torch.device("cpu"), 8, 4)
        assert "\n" not in str(e.value)
    with pytest.raises(ConfigError, match="model.dynamics='video'"):  # before any data is loaded
        train_model(tmp_path, ["model.dynamics=video"])
