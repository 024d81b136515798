"""World-Env: world-model rollouts, WorldEnv's contract and termination, the reflector, post-training pieces,
the fidelity statistics and bad-input errors (the stages' loop and the whole pipeline: test_worldenv_stages.py)."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from robotrl.agents.video_world_model import VideoWorldModel
from robotrl.envs.world_env import WorldEnv
from robotrl.rewards.reflector import CLIPReflector, ReflectorReward, build_clip, load_reflector, save_payload

from robotrl.errors import ActionError, CheckpointError, ConfigError, ObservationError
from robotrl.workflows.worldenv.fidelity import correlations
from robotrl.workflows.worldenv.policies import TrivialActor
from robotrl.workflows.worldenv.post_train import imagine, ppo_loss, rloo
from robotrl.world import fired_steps

SIZE = 32
TINY_CLIP = {"model_name": "robotrl-tiny-clip", "pretrained": None, "allow_random_weights": True, "cache_dir": None,
             "model_cfg": {"embed_dim": 32,
                           "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32,
                                          "patch_size": 16},
                           "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2,
                                        "layers": 2}}}


def tiny_model(seed: int = 0) -> VideoWorldModel:
    torch.manual_seed(seed)
    return VideoWorldModel(SIZE, 4, 8, context=2, latent_channels=4, block_channels=(8, 16), hidden=16).eval()


def tiny_reflector(threshold: float = 0.5) -> CLIPReflector:
    torch.manual_seed(0)
    clip, tok, _ = build_clip(**TINY_CLIP)
    return CLIPReflector(clip, tok, hidden=16, threshold=threshold)


def starts(n: int = 3, seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    return (rng.integers(0, 256, (n, 2, 3, SIZE, SIZE), dtype=np.uint8),
            rng.standard_normal((n, 8)).astype(np.float32))


class ScriptedReflector:
    """Scores 0.1 until ``success_at`` calls, then 0.9."""

    threshold = 0.5

    def __init__(self, success_at: int, consecutive: int = 1, blip_at: int | None = None):
        self.calls, self.success_at, self.consecutive, self.blip_at = 0, success_at, consecutive, blip_at

    def score(self, frames, instructions):
        self.calls += 1
        high = self.calls >= self.success_at or self.calls == self.blip_at
        return np.full(len(frames), 0.9 if high else 0.1, np.float32)


# ------------------------------------------------------------------------------------------------ world model
def test_world_model_rollout_shapes_and_determinism():
    frames, prop = starts(3)
    actions = np.random.default_rng(1).uniform(-1, 1, (5, 3, 4)).astype(np.float32)

    def roll(model):
        state, out = model.init(frames, prop), []
        for a in actions:
            state, f, p = model.step(state, a)
            assert f.shape == (3, 3, SIZE, SIZE) and f.dtype == np.uint8
            assert p.shape == (3, 8) and p.dtype == np.float32
            out.append(f)
        return np.stack(out)

    a, b, c = roll(tiny_model(0)), roll(tiny_model(0)), roll(tiny_model(1))
    np.testing.assert_array_equal(a, b)  # same seed, same rollout
    assert not np.array_equal(a, c)      # another seed, another model


def test_world_model_learns_on_a_fixed_batch():
    model = tiny_model().train()
    rng = np.random.default_rng(0)
    frames = torch.as_tensor(rng.integers(0, 256, (2, 5, 3, SIZE, SIZE), dtype=np.uint8))
    actions = torch.as_tensor(rng.uniform(-1, 1, (2, 4, 4)).astype(np.float32))
    prop = torch.as_tensor(rng.standard_normal((2, 5, 8)).astype(np.float32))
    opt = torch.optim.Adam(model.parameters(), 3e-3)
    first = None
    for _ in range(15):
        loss, metrics = model.loss(frames, actions, prop, 1e-6)
        first = first if first is not None else loss.item()
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert set(metrics) == {"recon", "latent", "pixel", "proprio"}
    assert loss.item() < 0.8 * first


def test_world_model_rejects_bad_frames():
    model = tiny_model()
    frames, prop = starts(2)
    with pytest.raises(ObservationError, match="uint8"):
        model.init(frames.astype(np.float32), prop)
    with pytest.raises(ObservationError, match="context frames"):
        model.init(frames[:, :1], prop)
    with pytest.raises(ObservationError, match="channels first"):
        model.init(frames.transpose(0, 1, 3, 4, 2), prop)


# ------------------------------------------------------------------------------------------------ WorldEnv
def test_world_env_resets_by_seed_and_rejects_bad_actions():
    # gymnasium's and SB3's checkers, warnings as errors: tests/test_worldenv_defects.py (at the default image size)
    env = WorldEnv(tiny_model(), tiny_reflector(), *starts(3), "reach the red goal position", max_steps=5)
    obs, info = env.reset(seed=3)
    assert obs["pixels"].shape == (3, SIZE, SIZE) and obs["state"].shape == (8,)
    obs2, _ = env.reset(seed=3)
    np.testing.assert_array_equal(obs["pixels"], obs2["pixels"])
    with pytest.raises(ActionError):
        env.step(np.full(4, 2.0, np.float32))
    assert env.render().shape == (SIZE, SIZE, 3)


def test_reflector_termination_ends_the_episode():
    env = WorldEnv(tiny_model(), ScriptedReflector(success_at=3), *starts(2), "close the drawer", max_steps=10)
    env.reset(seed=0)
    outcomes = [env.step(np.zeros(4, np.float32)) for _ in range(3)]
    assert [o[2] for o in outcomes] == [False, False, True]  # terminated exactly when the score passes 0.5
    assert outcomes[-1][4]["success"] and outcomes[-1][1] == pytest.approx(0.9)
    assert not outcomes[-1][3]
    # without reflector termination the same episode runs to the time limit
    env = WorldEnv(tiny_model(), ScriptedReflector(success_at=3), *starts(2), "close the drawer", max_steps=4,
                   terminate_on_success=False)
    env.reset(seed=0)
    ends = [env.step(np.zeros(4, np.float32))[2:4] for _ in range(4)]
    assert ends == [(False, False)] * 3 + [(False, True)]


def test_reflector_termination_needs_its_consecutive_frames():
    # one frame above threshold at step 2 (a world model's blurry false positive) ends nothing; 3 in a row from 5 do
    env = WorldEnv(tiny_model(), ScriptedReflector(success_at=5, consecutive=3, blip_at=2), *starts(2), "x",
                   max_steps=20)
    env.reset(seed=0)
    ends = [env.step(np.zeros(4, np.float32)) for _ in range(7)]
    assert [o[2] for o in ends] == [False] * 6 + [True] and [o[4]["success"] for o in ends][:6] == [False] * 6
    env.reset(seed=0)  # the streak starts again at reset
    assert not env.step(np.zeros(4, np.float32))[2]
    assert fired_steps(np.array([0.9, 0.1, 0.9, 0.9, 0.1]), 0.5, 2).tolist() == [False, False, False, True, True]
    assert not fired_steps(np.array([0.9, 0.1, 0.9]), 0.5, 2).any()
    # batched rollouts in the world model follow the same rule
    policy, _, _ = tiny_vla()
    frames, prop = starts(2)
    rec = imagine(policy, tiny_model(), ScriptedReflector(success_at=3, consecutive=2), torch.randn(2, 32), ["x"] * 2,
                  frames, prop, horizon=8)
    assert rec["success"].all() and (rec["length"] == 4).all()


def test_trivial_actors_and_their_errors():
    rand = TrivialActor("random", 4, 3, seed=7)
    chunk = rand({})
    assert chunk.shape == (3, 4) and chunk.dtype == np.float32 and np.abs(chunk).max() <= 1 and chunk.std() > 0.1
    np.testing.assert_array_equal(TrivialActor("random", 4, 3, seed=7)({}), chunk)  # seeded
    assert not TrivialActor("zero", 4, 3)({}).any()
    with pytest.raises(ConfigError, match="'wiggle'.*random"):
        TrivialActor("wiggle", 4, 3)


def test_world_model_replays_of_recorded_episodes():
    from robotrl.types import Episode
    from robotrl.workflows.worldenv.reflector import replay_in_model

    rng = np.random.default_rng(0)

    def episode(T):
        return Episode(obs={"pixels": rng.integers(0, 256, (T + 1, 3, SIZE, SIZE), dtype=np.uint8),
                            "state": rng.standard_normal((T + 1, 8)).astype(np.float32)},
                       action=rng.uniform(-1, 1, (T, 4)).astype(np.float32), reward=np.zeros(T, np.float32),
                       terminated=np.zeros(T, bool), success=np.zeros(T, bool))

    data = [("t", "x", episode(T), np.arange(8)) for T in (5, 3, 5)]
    model = tiny_model()
    replays = replay_in_model(model, data)
    assert [r.shape for r in replays] == [(5, SIZE, SIZE, 3), (3, SIZE, SIZE, 3), (5, SIZE, SIZE, 3)]
    # batched by length, but each replay is that episode's own open-loop rollout
    ep = data[1][2]
    state = model.init(np.repeat(ep.obs["pixels"][:1], 2, 0)[None], ep.obs["state"][:1])
    for t in range(3):
        state, frame, _ = model.step(state, ep.action[t][None])
    np.testing.assert_array_equal(replays[1][-1], frame[0].transpose(1, 2, 0))


def test_action_report_tells_a_model_that_follows_actions_from_one_that_ignores_them():
    from robotrl.workflows.worldenv.world_model import action_report

    class Integrator:  # proprio += action; frames brighten with the first action dim; optionally deaf to actions
        context, p_std = 2, torch.ones(4)

        def __init__(self, deaf):
            self.deaf = deaf

        def init(self, frames, proprio):
            return {"p": proprio.copy(), "f": frames[:, -1].astype(np.float32)}

        def step(self, state, action):
            a = np.zeros_like(action) if self.deaf else action
            p, f = state["p"] + a, state["f"] + 20 * a[:, :1, None, None]
            return {"p": p, "f": f}, np.clip(f, 0, 255).astype(np.uint8), p

    rng = np.random.default_rng(0)
    seqs = []
    for _ in range(3):
        a = rng.uniform(-1, 1, (12, 4)).astype(np.float32)
        p = np.concatenate([np.zeros((1, 4)), np.cumsum(a[1:], 0)]).astype(np.float32)  # a[c-1:] drive p[c-1:]
        p = np.concatenate([p[:1], p])
        f = np.full((13, 3, 4, 4), 100, np.float32)
        f[2:] += 20 * np.cumsum(a[1:, 0])[:, None, None, None]
        seqs.append((np.clip(f, 0, 255).astype(np.uint8), a, p))
    good = action_report(Integrator(deaf=False), seqs, 30)
    assert good["horizon"] == 11 and good["n"] == 3
    assert good["proprio_mse"]["recorded"] < 1e-6 < good["proprio_mse"]["other_episode"]
    assert good["frame_mse"]["recorded"] < 1e-4 < good["frame_mse"]["zero"]
    deaf = action_report(Integrator(deaf=True), seqs, 30)
    assert deaf["proprio_mse"]["recorded"] == deaf["proprio_mse"]["other_episode"] == deaf["proprio_mse"]["zero"]
    one = action_report(Integrator(deaf=False), seqs[:1], 30)  # no other episode to borrow actions from
    assert one["proprio_mse"]["other_episode"] is None and one["proprio_mse"]["zero"] > 1e-6


def test_world_env_bad_inputs_are_one_line_errors():
    frames, prop = starts(2)
    model, refl = tiny_model(), ScriptedReflector(1)
    for bad in ("", "   ", None, 3):
        with pytest.raises(ConfigError, match="instruction"):
            WorldEnv(model, refl, frames, prop, bad)
    with pytest.raises(ObservationError, match="initial frames"):
        WorldEnv(model, refl, frames[:, :, :, :16], prop, "x")
    with pytest.raises(ObservationError, match="proprio"):
        WorldEnv(model, refl, frames, prop[:1], "x")
    env = WorldEnv(model, refl, frames, prop, "x")
    with pytest.raises(ConfigError, match="index=5"):
        env.reset(options={"index": 5})
    for exc in (ConfigError, ObservationError):
        try:
            WorldEnv(model, refl, frames.astype(np.int64), prop, "") if exc is ConfigError else \
                WorldEnv(model, refl, frames.astype(np.int64), prop, "x")
        except exc as e:
            assert "\n" not in str(e)


# ------------------------------------------------------------------------------------------------ reflector
def test_reflector_scores_learns_and_round_trips(tmp_path):
    refl = tiny_reflector()
    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (4, SIZE, SIZE, 3), dtype=np.uint8)
    frames[2:] = 255 - frames[2:] // 4  # two bright "success" frames
    y = torch.tensor([0.0, 0.0, 1.0, 1.0])
    opt = torch.optim.Adam([p for p in refl.parameters() if p.requires_grad], 1e-3)
    instr = ["press the button"] * 4
    for _ in range(40):
        loss = torch.nn.functional.binary_cross_entropy_with_logits(refl.logits(torch.as_tensor(frames), instr), y)
        opt.zero_grad()
        loss.backward()
        opt.step()
    scores = refl.score(frames, instr)
    assert scores.shape == (4,) and scores.dtype == np.float32
    assert scores[2:].min() > 0.5 > scores[:2].max()
    path = tmp_path / "reflector.pt"
    torch.save(save_payload(refl, TINY_CLIP, 16), path)
    np.testing.assert_allclose(load_reflector(path).score(frames, instr), scores, atol=1e-5)
    reward = ReflectorReward(str(path), "press the button", device="cpu")  # reward=reflector
    np.testing.assert_allclose(reward(frames), scores, atol=1e-5)
    assert reward.predict_success(frames).tolist() == [False, False, True, True]
    with pytest.raises(ObservationError, match="float"):
        refl.score(frames.astype(np.float32) / 255, instr)
    with pytest.raises(ConfigError, match="one per frame"):
        refl.score(frames, instr[:1])
    with pytest.raises(ConfigError, match="instruction"):
        refl.score(frames, [""] * 4)


def test_bad_checkpoints_are_one_line_errors(tmp_path):
    from robotrl.workflows.worldenv.fit import load_ckpt
    from robotrl.workflows.worldenv.policies import load_vla

    with pytest.raises(CheckpointError, match="not found"):
        load_reflector(tmp_path / "missing.pt")
    broken = tmp_path / "broken.pt"
    broken.write_bytes(b"not a checkpoint")
    with pytest.raises(CheckpointError, match="not a readable"):
        load_reflector(broken)
    with pytest.raises(CheckpointError, match="not a readable"):
        load_vla(broken, torch.device("cpu"))
    other = tmp_path / "other.pt"
    torch.save({"kind": "world_model"}, other)
    with pytest.raises(CheckpointError, match="expected a 'vla' one"):
        load_ckpt(other, "vla")
    with pytest.raises(CheckpointError, match="not a reflector"):
        load_reflector(other)


# ------------------------------------------------------------------------------------------------ VLA + post-train
def tiny_vla():
    from robotrl.agents.vla import VLAPolicy

    torch.manual_seed(0)
    clip, tok, _ = build_clip(**TINY_CLIP)
    return VLAPolicy(clip.visual, 64, 32, 32, 8, 4, chunk=2, hidden=32), clip, tok


def test_vla_bc_fits_a_fixed_batch_and_rejects_bad_input():
    policy, _, _ = tiny_vla()
    rng = np.random.default_rng(0)
    frames = torch.as_tensor(rng.integers(0, 256, (6, 3, SIZE, SIZE), dtype=np.uint8))
    text, prop = torch.randn(6, 32), torch.randn(6, 8)
    chunks = torch.as_tensor(rng.uniform(-0.8, 0.8, (6, 2, 4)).astype(np.float32))
    mask = torch.ones(6, 2)
    opt = torch.optim.Adam(policy.parameters(), 1e-3)
    first = policy.bc_loss(frames, text, prop, chunks, mask).item()
    for _ in range(60):
        loss = policy.bc_loss(frames, text, prop, chunks, mask)
        opt.zero_grad()
        loss.backward()
        opt.step()
    assert loss.item() < 0.5 * first
    with pytest.raises(ObservationError, match="uint8"):
        policy(frames.float(), text, prop)


def test_vla_actor_rejects_unknown_instruction():
    from robotrl.workflows.worldenv.policies import VLAActor

    policy, _, _ = tiny_vla()
    with pytest.raises(ConfigError, match="not one this model was trained on"):
        VLAActor(policy, {"open the drawer": torch.zeros(32)}, "fly to the moon", np.arange(8))


def test_rloo_advantages():
    adv = rloo(np.array([1.0, 0.0, 0.0, 0.5, 0.5, 0.5]), 3)
    np.testing.assert_allclose(adv, [1.0, -0.5, -0.5, 0.0, 0.0, 0.0])


def test_imagined_rollouts_and_ppo_gradient():
    policy, _, _ = tiny_vla()
    frames, prop = starts(4)
    text = torch.randn(4, 32)
    rec = imagine(policy, tiny_model(), ScriptedReflector(success_at=2), text, ["x"] * 4, frames, prop, horizon=5)
    assert rec["success"].all() and (rec["length"] == 2).all()  # the reflector ended every rollout at step 2
    assert len(rec["frames"]) == 1 and rec["sample"][0].shape == (4, 2, 4)
    adv = torch.tensor([1.0, -1.0, 0.5, -0.5])
    loss = ppo_loss(policy, rec, text, adv, 0.1)
    loss.backward()
    assert loss.item() == pytest.approx(0.0, abs=1e-5)  # ratio 1 at the sampling policy, advantages sum to 0
    assert policy.log_scale.grad is not None and policy.log_scale.grad.abs().sum() > 0


# ------------------------------------------------------------------------------------------------ fidelity
def test_fidelity_correlations_and_gate_inputs():
    x = np.array([0.0, 0.2, 0.4, 0.6, 0.8, 1.0])
    good = correlations(x, x * 0.9 + 0.05, 200, 0)
    assert good["pearson"] == pytest.approx(1.0) and good["spearman"] == pytest.approx(1.0)
    assert good["pearson_ci95"][0] == pytest.approx(1.0)
    bad = correlations(x, x[::-1], 200, 0)
    assert bad["pearson"] == pytest.approx(-1.0)
    flat = correlations(x, np.zeros(6), 50, 0)  # WorldEnv never succeeds: undefined, not a pass
    assert np.isnan(flat["pearson"]) and flat["pearson_ci95"] == [None, None]


def test_cli_worldenv_ctrl_c_says_how_to_continue(tmp_path, capsys, monkeypatch):
    import robotrl.workflows.worldenv.world_model as stages
    from robotrl.cli import main

    def interrupted(out, overrides):
        raise KeyboardInterrupt

    monkeypatch.setattr(stages, "train_model", interrupted)
    with pytest.raises(SystemExit) as e:
        main(["worldenv", "train-model", f"out={tmp_path}", "model.steps=9"])
    err = capsys.readouterr().err.strip()
    assert e.value.code == 130 and "\n" not in err and "Traceback" not in err
    assert err.endswith(f"continue with: robotrl worldenv train-model out={tmp_path} model.steps=9")


def test_cli_worldenv_errors_are_one_line(tmp_path, capsys):
    from robotrl.cli import main

    for argv, needle in ((["worldenv", "fly"], "unknown worldenv stage"),
                         (["worldenv", "collect"], "out=DIR"),
                         (["worldenv", "collect", f"out={tmp_path}", "vla.nokey=1"], "nokey"),
                         (["worldenv", "collect", f"out={tmp_path}", "tasks=[fly]"], "fly"),
                         (["worldenv", "fidelity", f"out={tmp_path}"], "checkpoint not found")):
        with pytest.raises(SystemExit) as e:
            main(argv)
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and err.startswith("robotrl: error:") and needle in err and "\n" not in err
    # a bad setting is refused before it is saved: the run's config.yaml keeps the good ones
    main_ok = ["worldenv", "fidelity", f"out={tmp_path}", "seed=3"]
    with pytest.raises(SystemExit):
        main(main_ok)  # fails on the missing checkpoint, after saving its (good) settings
    capsys.readouterr()
    for bad, needle in (("reflector.imagined=2", "reflector.imagined=2.0"), ("reflector.consecutive=0", "auto"),
                        ("reflector.threshold=1.5", "reflector.threshold=1.5, expected auto or a number"),
                        ("eval.trivial=[wiggle]", "'wiggle'"), ("model.dynamics=gan", "'gan'")):
        with pytest.raises(SystemExit) as e:
            main(["worldenv", "collect", f"out={tmp_path}", bad])
        err = capsys.readouterr().err.strip()
        assert e.value.code == 2 and needle in err and "\n" not in err, err
    saved = (tmp_path / "config.yaml").read_text()
    assert "seed: 3" in saved and "imagined: 0.5" in saved and "wiggle" not in saved and "gan" not in saved
    with pytest.raises(SystemExit) as e:
        main(["worldenv", "--help"])
    out = capsys.readouterr().out
    assert e.value.code == 0 and "post-train" in out and "random_per_task" in out
    assert max(len(line) for line in out.splitlines()) <= 80, "worldenv --help must fit an 80-column terminal"


def test_reward_reflector_config_builds_from_a_checkpoint(tmp_path):
    from robotrl.rewards import make_reward

    from robotrl.overrides import compose_config

    path = tmp_path / "reflector.pt"
    torch.save(save_payload(tiny_reflector(), TINY_CLIP, 16), path)
    cfg = compose_config(["reward=reflector", f"reward.checkpoint={path}", "reward.instruction=close the drawer",
                          "device=cpu"])
    model = make_reward(cfg.reward)
    frames = np.zeros((2, SIZE, SIZE, 3), np.uint8)
    assert model(frames).shape == (2,)
