"""Defects a new World-Env user met (issue 27 §3): each bad setting is one line, exit 2, before anything is saved;
train-model says whether the frames follow the actions; collect reports as it goes; `--help` describes every key;
WorldEnv passes gymnasium's and SB3's checkers with warnings as errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch

from robotrl.cli import main


def cli_error(argv: list[str], capsys) -> str:
    """The one-line error of a worldenv command that must fail with exit 2."""
    with pytest.raises(SystemExit) as e:
        main(argv)
    err = capsys.readouterr().err.strip()
    assert e.value.code == 2 and err.startswith("robotrl: error:") and "\n" not in err and "Traceback" not in err, err
    return err


def no_collecting(monkeypatch) -> None:
    """Collecting for real takes minutes: a setting that got through fails the test at once instead."""
    import robotrl.workflows.worldenv.collect as collect

    def ran(*args, **kwargs):
        raise AssertionError("collect started with a setting it should have refused")

    monkeypatch.setattr(collect, "_collect", ran)


def started_run(tmp_path, capsys) -> tuple[str, str]:
    """A run directory whose config.yaml holds good settings (seed=3), and that file's text."""
    out = tmp_path / "run"
    cli_error(["worldenv", "fidelity", f"out={out}", "seed=3"], capsys)  # fails on the missing model, after saving
    return str(out), (out / "config.yaml").read_text()


@pytest.mark.parametrize("bad, needle", [
    ("collect.demos_per_task=-1", "collect.demos_per_task=-1"),
    ("post_train.group=1", "post_train.group=1"),
    ("post_train.horizon=0", "post_train.horizon=0"),
    ("post_train.starts_per_iter=0", "post_train.starts_per_iter=0"),
    ("fidelity.episodes=0", "fidelity.episodes=0"),
    ("image_size=abc", "image_size='abc'"),
    ("seed=1.5", "seed=1.5"),
    ("model.holdout_every=1", "model.holdout_every=1"),
    ("fidelity.degrade=[1.5]", "fidelity.degrade"),
    ("vla.lr=-1", "vla.lr=-1"),
])
def test_bad_settings_are_one_line_errors_before_anything_is_saved(tmp_path, capsys, monkeypatch, bad, needle):
    no_collecting(monkeypatch)
    out, saved = started_run(tmp_path, capsys)
    err = cli_error(["worldenv", "collect", f"out={out}", bad], capsys)
    assert needle in err and "expected" in err, err
    assert (tmp_path / "run" / "config.yaml").read_text() == saved  # the bad value was not kept
    assert not (tmp_path / "run" / "data").exists()


def test_a_hand_edited_config_yaml_reads_1e_4_as_a_number(tmp_path, capsys):
    """yaml.safe_load (YAML 1.1) reads ``1e-4`` as a string; the run's settings are read as hydra reads them."""
    from robotrl.workflows.worldenv.settings import merged

    out, saved = started_run(tmp_path, capsys)
    (tmp_path / "run" / "config.yaml").write_text(saved.replace("lr: 0.0001", "lr: 1e-4"))
    cfg, before = merged(tmp_path / "run", [])
    assert [section for section in cfg.values() if getattr(section, "lr", None) == 1e-4]


def test_holdout_every_1_names_the_holdout_not_the_horizon(tmp_path, capsys):
    out, _ = started_run(tmp_path, capsys)
    err = cli_error(["worldenv", "train-model", f"out={out}", "model.holdout_every=1"], capsys)
    assert "every episode" in err and "horizon" not in err, err


def fake_state(folder, counter: str = "step", value: int = 200) -> None:
    """A stage state of ``folder`` at ``counter`` ``value``, as the stage writes it."""
    from robotrl.workflows.worldenv.fit import save_stage_state

    net = torch.nn.Linear(1, 1)
    save_stage_state(folder, f"{folder.name}-state", net, torch.optim.SGD(net.parameters(), 0.1), counter, value)


@pytest.mark.parametrize("stage, bad, folder, needle", [
    ("train-vla", "vla.chunk=8", "vla", "vla.chunk=8"),
    ("train-model", "model.hidden=32", "model", "model.hidden=32"),
    ("collect", "max_episode_steps=200", "data", "max_episode_steps=200"),
    ("train-vla", "vla.steps=40", "vla", "step 200"),
    ("post-train", "post_train.iterations=5", "post", "iteration 200"),
])
def test_changes_against_what_a_run_already_made_are_refused(tmp_path, capsys, monkeypatch, stage, bad, folder,
                                                            needle):
    no_collecting(monkeypatch)
    out, saved = started_run(tmp_path, capsys)
    run = tmp_path / "run"
    if folder == "data":  # one completed collection at the saved max_episode_steps
        (run / "data" / "expert" / "reach").mkdir(parents=True)
        (run / "data" / "expert" / "reach" / "meta.json").write_text("{}")
    elif folder == "post":
        fake_state(run / "post", "iteration", 200)
    else:
        fake_state(run / folder)
    err = cli_error(["worldenv", stage, f"out={out}", bad], capsys)
    assert needle in err and "out=DIR" in err, err
    assert (run / "config.yaml").read_text() == saved


def test_train_loop_refuses_a_state_past_the_requested_steps(tmp_path):
    from robotrl.errors import CheckpointError
    from robotrl.workflows.worldenv.fit import fit

    net = torch.nn.Linear(2, 1)
    opt = torch.optim.SGD(net.parameters(), 0.1)

    def loss_fn(step):
        return net(torch.ones(1, 2)).sum(), {}

    fit("toy", tmp_path, net, opt, 4, lambda s: [loss_fn(s)], clip=1.0, every=2)
    with pytest.raises(CheckpointError, match="step 4.*toy steps=2"):
        fit("toy", tmp_path, net, opt, 2, lambda s: [loss_fn(s)], clip=1.0, every=2)


def test_reflector_missing_weights_names_worldenv_keys(tmp_path, capsys):
    out, _ = started_run(tmp_path, capsys)
    for stage in ("train-reflector", "train-vla"):
        err = cli_error(["worldenv", stage, f"out={out}", "clip.allow_random_weights=false"], capsys)
        assert "clip.pretrained" in err and "reward." not in err and "agent." not in err, err


def test_model_console_line_says_whether_frames_follow_the_actions():
    from robotrl.workflows.worldenv.world_model import action_line

    def report(frames):
        return {"n": 12, "horizon": 30, "frame_mse": dict(zip(("recorded", "other_episode", "zero"), frames,
                                                                   strict=True)),
                "proprio_mse": {"recorded": 0.14, "other_episode": 1.39, "zero": 1.23}}

    ignores = action_line(report((0.0043, 0.0043, 0.0044)), "val", "out/model/report.json")
    follows = action_line(report((0.0021, 0.0055, 0.0044)), "val", "out/model/report.json")
    for line in (ignores, follows):
        assert "frame error" in line and "0.0043" in ignores and "0.0055" in follows and "\n" not in line
    assert "frames do NOT follow the actions" in ignores and "frames follow the actions" in follows
    one = action_line({**report((0.002, None, 0.004)), "n": 1}, "train", "r.json")
    assert "frames follow the actions" in one


def test_collect_prints_each_collection_as_it_finishes(tmp_path, capsys, monkeypatch):
    import robotrl.workflows.worldenv.collect as collect

    calls = []

    def fake(cfg, out, task, kind, n, act_for, seed0, keep_failures=True):
        calls.append(kind)
        if len(calls) == 3:
            raise KeyboardInterrupt
        return f"{kind}/{task}: {n} episodes"

    monkeypatch.setattr(collect, "_collect", fake)
    with pytest.raises(KeyboardInterrupt):
        collect.collect(tmp_path / "run", ["device=cpu"])
    printed = capsys.readouterr().out
    assert "expert/reach: 5 episodes" in printed and "noisy/reach: 5 episodes" in printed


def test_worldenv_help_describes_every_key(capsys):
    """Every key of configs/worldenv/default.yaml is listed as ``key=default`` with a description under it."""
    from robotrl.workflows.worldenv.settings import default_config

    with pytest.raises(SystemExit):
        main(["worldenv", "--help"])
    lines = capsys.readouterr().out.splitlines()
    assert max(len(line) for line in lines) <= 80
    cfg = default_config()
    keys = [f"{s}.{k}" for s, v in cfg.items() if s != "instructions" and hasattr(v, "items")
            for k, sub in v.items() if not hasattr(sub, "items")]
    keys += [s for s, v in cfg.items() if not hasattr(v, "items")] + ["instructions.<task>"]
    assert "collect.demos_per_task" in keys and "seed" in keys
    for key in keys:
        at = next((i for i, li in enumerate(lines) if li.startswith(f"  {key}=")), None)
        assert at is not None, f"{key} is not listed"
        below = lines[at + 1] if at + 1 < len(lines) else ""
        assert below.startswith("      ") and len(below.strip()) > 8, f"{key} has no description: {below!r}"


def test_world_env_passes_checkers_with_warnings_as_errors():
    from gymnasium.utils.env_checker import check_env
    from robotrl.agents.video_world_model import VideoWorldModel
    from robotrl.envs.world_env import WorldEnv
    from stable_baselines3.common.env_checker import check_env as sb3_check_env

    from robotrl.workflows.worldenv.settings import default_config

    size = int(default_config().image_size)
    torch.manual_seed(0)
    model = VideoWorldModel(size, 4, 8, context=2, latent_channels=4, block_channels=(8, 16), hidden=16).eval()

    class Reflector:
        threshold = 0.5

        def score(self, frames, instructions):
            return np.full(len(frames), 0.1, np.float32)

    rng = np.random.default_rng(0)
    frames = rng.integers(0, 256, (2, 2, 3, size, size), dtype=np.uint8)
    env = WorldEnv(model, Reflector(), frames, rng.standard_normal((2, 8)).astype(np.float32), "open the drawer",
                   max_steps=4)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(env)
        sb3_check_env(env, warn=True)
    assert np.isfinite(env.observation_space["state"].low).all() and env.metadata["render_fps"] > 0
    far = WorldEnv(model, Reflector(), frames, np.full((2, 8), 1e6, np.float32), "open the drawer", max_steps=4)
    obs, _ = far.reset(seed=0)
    assert far.observation_space["state"].contains(obs["state"])  # the observation stays in its space


@pytest.mark.parametrize("bad, kind", [
    ("collect.policy_per_task=15", "policy"),  # the data axis: more of the policy's episodes asked of the same run
    ("collect.demos_per_task=2", "expert"),
    ("collect.random_per_task=0", "random"),  # a kind switched off while its episodes stay in the data
])
def test_a_changed_episode_count_against_collected_data_is_refused(tmp_path, capsys, monkeypatch, bad, kind):
    """collect used to print "already collected" and keep 5 episodes where 15 were asked for."""
    import json

    no_collecting(monkeypatch)
    out, saved = started_run(tmp_path, capsys)
    folder = tmp_path / "run" / "data" / kind / "reach"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"num_episodes": 5}))
    err = cli_error(["worldenv", "collect", f"out={out}", bad], capsys)
    assert bad in err and "5 episodes" in err and str(folder) in err and "out=DIR" in err, err
    assert (tmp_path / "run" / "config.yaml").read_text() == saved


def test_the_collected_episode_count_is_accepted_as_it_was(tmp_path, capsys):
    import json

    from robotrl.workflows.worldenv.settings import load_config

    out, _ = started_run(tmp_path, capsys)
    folder = tmp_path / "run" / "data" / "policy" / "reach"
    folder.mkdir(parents=True)
    (folder / "meta.json").write_text(json.dumps({"num_episodes": 5}))
    assert load_config(tmp_path / "run", ["collect.policy_per_task=5"], "collect").collect.policy_per_task == 5
