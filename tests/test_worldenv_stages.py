"""World-Env's stages on the shared primitives: one ``fit()`` whose gradient clip is a setting, stage states that
are ``robotrl.checkpoint`` checkpoints (sha256-verified, the previous one used when the newest is corrupted) holding
``robotrl.rng``'s RNG format, each stage recording the settings it ran with, every setting checked before saving;
exact resume; and (slow) the whole loop from demos to a fidelity report."""

from __future__ import annotations

import json
import logging

import numpy as np
import pytest
import torch

from robotrl.cli import main
from robotrl.workflows.worldenv.fit import fit, state_dir
from robotrl.workflows.worldenv.reflector import AUTO_THRESHOLDS


def test_fit_clips_the_gradient_to_the_configured_norm(tmp_path):
    for clip in (0.25, 2.0):
        net = torch.nn.Linear(4, 1, bias=False)
        torch.nn.init.zeros_(net.weight)
        before = net.weight.detach().clone()
        opt = torch.optim.SGD(net.parameters(), lr=1.0)

        def losses(step, net=net):  # gradient norm 100: clipped to ``clip``, so the step is ``clip`` long
            return [((net(torch.full((1, 4), 50.0)) - 1.0).sum() * 1.0, {})]

        fit("toy", tmp_path / str(clip), net, opt, 1, losses, clip=clip, every=1)
        assert float((net.weight.detach() - before).norm()) == pytest.approx(clip, rel=1e-5)


def test_default_clip_is_the_constant_the_stages_used():
    from robotrl.workflows.worldenv.settings import default_config

    cfg = default_config()
    assert [cfg[s].grad_clip for s in ("vla", "model", "reflector", "post_train")] == [1.0] * 4


def run_toy(folder, steps, crash_at=None):
    torch.manual_seed(0)
    net = torch.nn.Linear(3, 1)
    opt = torch.optim.Adam(net.parameters(), 1e-2)
    sampler = np.random.default_rng(0)

    def losses(step):
        if step == crash_at:
            raise KeyboardInterrupt
        x = torch.randn(8, 3) * float(sampler.uniform(0.5, 2.0))
        return [(((net(x) - x.sum(1, keepdim=True)) ** 2).mean(), {})]

    fit("toy", folder, net, opt, steps, losses, clip=1.0, every=2, generator=sampler)
    return net


def test_a_corrupted_newest_stage_state_is_skipped_for_the_previous_one(tmp_path, caplog):
    """The stage state is a robotrl.checkpoint checkpoint: a flipped byte in the newest one is caught by its sha256,
    the stage resumes from the one before with a warning, and ends with the uninterrupted run's weights."""
    from robotrl.checkpoint import load_state, resolve_checkpoint

    ref = run_toy(tmp_path / "a", 6)
    with pytest.raises(KeyboardInterrupt):
        run_toy(tmp_path / "b", 6, crash_at=5)  # states at steps 2 and 4
    newest = state_dir(tmp_path / "b") / "step_0000004" / "state.pt"
    data = bytearray(newest.read_bytes())
    data[len(data) // 2] ^= 0xFF  # same size, other bytes: only the hash can tell
    newest.write_bytes(bytes(data))
    with caplog.at_level(logging.WARNING):
        resumed = run_toy(tmp_path / "b", 6)
    assert "step_0000004" in caplog.text and "corrupted" in caplog.text
    torch.testing.assert_close(resumed.weight, ref.weight)
    state = load_state(resolve_checkpoint(state_dir(tmp_path / "b")))
    assert state["step"] == 6 and set(state["rng"]) >= {"python", "numpy", "torch"}  # robotrl.rng's format
    steps = [line.split(",")[0] for line in (tmp_path / "b" / "train.csv").read_text().splitlines()[1:]]
    assert steps == ["2", "4", "6"]


def test_a_stage_state_of_the_old_format_is_refused_not_restarted(tmp_path):
    from robotrl.errors import CheckpointError

    (tmp_path / "state.pt").write_bytes(b"old")
    with pytest.raises(CheckpointError, match="older robotrl"):
        run_toy(tmp_path, 2)


def cli(argv, capsys) -> tuple[int, str]:
    with pytest.raises(SystemExit) as e:
        main(argv)
    return e.value.code, capsys.readouterr().err.strip()


@pytest.mark.parametrize("bad, needle", [("device=gpu", "device='gpu'"),
                                         ("instructions.reach=''", "instructions.reach=''")])
def test_settings_that_failed_stages_later_are_one_line_before_saving(tmp_path, capsys, bad, needle):
    out = tmp_path / "run"
    cli(["worldenv", "fidelity", f"out={out}", "seed=3"], capsys)  # fails on the missing model, after saving
    saved = (out / "config.yaml").read_text()
    code, err = cli(["worldenv", "fidelity", f"out={out}", bad], capsys)
    assert code == 2 and needle in err and "expected" in err and "\n" not in err, err
    assert (out / "config.yaml").read_text() == saved


def test_new_or_deleted_keys_are_refused(tmp_path, capsys):
    for bad in ("+vla.extra=1", "~seed"):
        code, err = cli(["worldenv", "collect", f"out={tmp_path}", bad], capsys)
        assert code == 2 and bad in err and "\n" not in err, err
    assert not (tmp_path / "config.yaml").exists()


def test_each_stage_records_the_settings_it_ran_with(tmp_path, capsys, monkeypatch):
    """collect's settings stay in data/config.yaml when a later command changes the run's carried ones."""
    from omegaconf import OmegaConf

    import robotrl.workflows.worldenv.collect as collect

    monkeypatch.setattr(collect, "_collect", lambda cfg, out, task, kind, *a, **k: f"{kind}/{task}: faked")
    out = tmp_path / "run"
    main_ok = ["worldenv", "collect", f"out={out}", "seed=3", "collect.noise_std=0.3", "device=cpu"]
    with pytest.raises(SystemExit) as e:
        main(main_ok)
    assert e.value.code == 0
    code, _ = cli(["worldenv", "fidelity", f"out={out}", "seed=5", "collect.noise_std=0.9"], capsys)
    assert code == 2  # no world model yet; its settings were carried all the same
    recorded = OmegaConf.load(out / "data" / "config.yaml")
    carried = OmegaConf.load(out / "config.yaml")
    assert (recorded.seed, recorded.collect.noise_std) == (3, 0.3)
    assert (carried.seed, carried.collect.noise_std) == (5, 0.9)


def test_stage_training_resumes_exactly_after_an_interrupt(tmp_path):
    """A stage killed mid-way (Ctrl-C) keeps its last state; the rerun ends with the uninterrupted run's weights."""
    from robotrl.workflows.worldenv.fit import fit

    def run(folder, crash_at=None):
        torch.manual_seed(0)
        net = torch.nn.Linear(3, 1)
        opt = torch.optim.Adam(net.parameters(), 1e-2)
        sampler = np.random.default_rng(0)  # a stage's own batch sampler, made afresh by every run

        def loss_fn(step):
            if step == crash_at:
                raise KeyboardInterrupt
            x = torch.randn(8, 3)  # the global RNG: restored from state.pt on resume
            x = x * float(sampler.uniform(0.5, 2.0))  # the sampler: restored too
            return ((net(x) - x.sum(1, keepdim=True)) ** 2).mean(), {}

        fit("toy", folder, net, opt, 6, lambda s: [loss_fn(s)], clip=1.0, every=2, generator=sampler)
        return net

    ref = run(tmp_path / "a")
    with pytest.raises(KeyboardInterrupt):
        run(tmp_path / "b", crash_at=5)
    torch.manual_seed(123)  # a different process state: only state.pt decides what happens next
    resumed = run(tmp_path / "b")
    torch.testing.assert_close(resumed.weight, ref.weight)
    steps = [line.split(",")[0] for line in (tmp_path / "b" / "train.csv").read_text().splitlines()[1:]]
    assert steps == ["2", "4", "6"]  # no duplicate rows after the resume


# ------------------------------------------------------------------------------------------------ end to end
TINY = ["image_size=32", "max_episode_steps=40", "tasks=[reach]", "device=cpu", "collect.demos_per_task=2",
        "collect.noisy_per_task=2", "collect.policy_per_task=1", "collect.random_per_task=1", "vla.steps=20",
        "vla.snapshot_every=10", "vla.batch_size=8", "model.steps=4", "model.batch_size=2", "model.horizon=3",
        "model.block_channels=[8,16]", "model.hidden=16", "reflector.steps=4", "reflector.batch_size=8",
        "post_train.iterations=2", "post_train.group=3", "post_train.horizon=6", "eval.episodes=2",
        "fidelity.episodes=1", "fidelity.noise=[0.0,1.0]", "fidelity.degrade=[0.5]", "fidelity.bootstrap=50"]


def test_a_stage_does_not_resume_on_other_inputs_than_it_was_trained_on(tmp_path):
    """A world model trained 75 steps on 60 episodes resumed on 90 as if nothing had changed (found re-collecting
    the data axis): a stage's state remembers its inputs, and other ones are refused, naming what changed."""
    from robotrl.errors import CheckpointError

    def toy(steps, inputs):
        net = torch.nn.Linear(2, 1)
        opt = torch.optim.SGD(net.parameters(), 0.1)
        fit("toy", tmp_path, net, opt, steps, lambda s: [(net(torch.ones(1, 2)).sum(), {})], clip=1.0, every=2,
            inputs=inputs)

    toy(2, {"data": "aaa", "model.pt": "bbb"})
    with pytest.raises(CheckpointError, match=r"toy: .*checkpoints.*data changed.*out=DIR"):
        toy(4, {"data": "ccc", "model.pt": "bbb"})
    toy(4, {"data": "aaa", "model.pt": "bbb"})  # the same inputs: it continues
    assert state_dir(tmp_path).joinpath("step_0000004").is_dir()


def test_data_digest_follows_the_collections_a_stage_reads(tmp_path):
    from robotrl.workflows.worldenv.data import data_digest

    def meta(kind, task, n):
        (tmp_path / "data" / kind / task).mkdir(parents=True, exist_ok=True)
        (tmp_path / "data" / kind / task / "meta.json").write_text(json.dumps({"task": task, "num_episodes": n}))

    meta("expert", "reach", 5)
    expert = data_digest(tmp_path, ["expert"], ["reach"])
    everything = data_digest(tmp_path, tasks=["reach"])
    meta("policy", "reach", 5)
    assert data_digest(tmp_path, ["expert"], ["reach"]) == expert  # BC reads expert episodes only
    assert data_digest(tmp_path, tasks=["reach"]) != everything
    now = data_digest(tmp_path, tasks=["reach"])
    meta("policy", "reach", 15)
    assert data_digest(tmp_path, tasks=["reach"]) != now
    meta("expert", "drawer-close", 5)
    assert data_digest(tmp_path, tasks=["reach"]) == data_digest(tmp_path, tasks=["reach"])
    assert data_digest(tmp_path, tasks=["reach", "drawer-close"]) != data_digest(tmp_path, tasks=["reach"])


@pytest.mark.slow
def test_end_to_end_demos_to_post_trained_checkpoint_and_fidelity_report(tmp_path, capsys):
    from robotrl.rewards.reflector import load_reflector

    from robotrl.workflows.worldenv.collect import collect
    from robotrl.workflows.worldenv.fidelity import fidelity
    from robotrl.workflows.worldenv.post_train import post_train
    from robotrl.workflows.worldenv.reflector import train_reflector
    from robotrl.workflows.worldenv.vla import train_vla
    from robotrl.workflows.worldenv.world_model import train_model

    out = tmp_path / "we"
    collect(out, TINY)
    train_vla(out, TINY)
    lines = collect(out, TINY)
    assert any(line.startswith("policy/reach: 1 episodes") for line in lines)
    assert any(line.startswith("random/reach: ") for line in lines)
    train_model(out, TINY)
    train_reflector(out, TINY)
    report = post_train(out, TINY)
    assert (out / "post" / "policy.pt").is_file() and set(report) >= {"before", "after"}
    assert {"success", "length", "reflector_length"} <= set(report["after"]["mean"])
    assert set(report["trivial"]) == {"random", "zero"} and "success" in report["trivial"]["zero"]["mean"]
    refl = json.loads((out / "reflector" / "report.json").read_text())
    assert refl["episodes"]["source"] == "imagined" and 1 <= refl["consecutive"] <= 10
    assert refl["threshold"] in AUTO_THRESHOLDS and len(refl["episodes"]["rules"]) == 60
    saved_reflector = load_reflector(out / "reflector" / "reflector.pt")
    assert (saved_reflector.threshold, saved_reflector.consecutive) == (refl["threshold"], refl["consecutive"])
    fid = fidelity(out, TINY)
    saved = json.loads((out / "fidelity" / "report.json").read_text())
    # snapshot at 10 + final BC (20) + post-trained, at 2 noise levels, the final BC holding still half the time,
    # + random and zero actions
    assert len(saved["policies"]) == 3 * 2 + 1 + 2
    assert [p["policy"] for p in saved["policies"][-3:]] == ["vla/vla.pt+hold0.5", "random", "zero"]
    assert saved["n_policies"] == 3 * 2 + 1 and saved["with_trivial"]["n_policies"] == 3 * 2 + 1 + 2  # learned only
    assert saved["checkpoints_only"]["n_policies"] == 3 * 2  # the degraded one left out
    assert saved["status"] == "underpowered"  # 1 episode per task: no verdict
    # an interrupted gate resumes: rows already measured are kept, the missing one is measured again
    rows = json.loads((out / "fidelity" / "rows.json").read_text())
    rows["rows"] = rows["rows"][:-1]
    (out / "fidelity" / "rows.json").write_text(json.dumps(rows))
    capsys.readouterr()
    again = fidelity(out, TINY)
    assert capsys.readouterr().out.count("already measured") == 3 * 2 + 1 + 1
    assert again["policies"] == fid["policies"]
    assert saved["valid"] == fid["valid"] and "pearson" in saved
    # every stage resumes: a rerun of train-vla finds its state at the last step and changes nothing
    before = (out / "vla" / "train.csv").read_text()
    train_vla(out, TINY)
    assert (out / "vla" / "train.csv").read_text() == before
    # each stage recorded the settings it ran with; its state is a verified robotrl.checkpoint checkpoint
    from omegaconf import OmegaConf

    from robotrl.checkpoint import resolve_checkpoint

    for folder in ("data", "vla", "model", "reflector", "post", "fidelity"):
        assert OmegaConf.load(out / folder / "config.yaml").image_size == 32, folder
    assert OmegaConf.load(out / "vla" / "config.yaml").vla.steps == 20
    for folder, name in (("vla", "step_0000020"), ("model", "step_0000004"), ("reflector", "step_0000004"),
                         ("post", "iteration_0000002")):
        assert resolve_checkpoint(out / folder / "checkpoints").name == name
    # more policy episodes collected after the world model trained: it is not resumed on them
    import shutil

    from robotrl.errors import CheckpointError

    shutil.rmtree(out / "data" / "policy")
    collect(out, [*TINY, "collect.policy_per_task=2"])
    with pytest.raises(CheckpointError, match="data changed"):
        train_model(out, [*TINY, "collect.policy_per_task=2", "model.steps=8"])


class ScoresInFrames:
    """A reflector whose score of a frame is written in its first pixel (score * 255)."""

    threshold = 0.5

    def score(self, frames, instructions):
        return np.asarray(frames)[:, 0, 0, 0] / 255.0


def _episode(scores, success_from=None):
    frames = np.zeros((len(scores), 2, 2, 3), np.uint8)
    frames[:, 0, 0, 0] = np.round(np.asarray(scores) * 255)
    success = np.zeros(len(scores), bool)
    if success_from is not None:
        success[success_from:] = True
    return frames, success, "x"


def test_the_termination_rule_is_chosen_by_balanced_accuracy_not_by_the_majority_of_successes():
    from robotrl.workflows.worldenv.reflector import AUTO_CONSECUTIVE, episode_agreement

    # 9 successes (scores 0.97 from step 10 on) and 3 failures: one spike of 0.9, a plateau at 0.55, three frames
    # at 0.75. Firing on everything agrees with 9 of 12 -- the old choice by plain accuracy; one rule separates all
    success = [_episode([0.1] * 10 + [0.97] * 10, success_from=10) for _ in range(9)]
    failed = [_episode([0.1] * 5 + [0.9] + [0.1] * 14), _episode([0.55] * 20),
              _episode([0.1] * 5 + [0.75] * 3 + [0.1] * 12)]
    report = episode_agreement(ScoresInFrames(), success + failed, "imagined", AUTO_THRESHOLDS, AUTO_CONSECUTIVE)
    rules = report["rules"]
    assert rules["0.5/1"]["accuracy"] == 0.75 and rules["0.5/1"]["balanced_accuracy"] == 0.5
    best = rules[report["best"]]
    assert best["balanced_accuracy"] == 1.0 and best["threshold"] >= 0.8 and best["consecutive"] >= 4
    # ties go to the stricter rule: the strictest one that still fires on every success
    assert (best["threshold"], best["consecutive"]) == (0.95, 10)
    # a fixed rule is reported as it is, never replaced
    fixed = episode_agreement(ScoresInFrames(), success + failed, "imagined", (0.5,), (1,))
    assert fixed["best"] == "0.5/1" and list(fixed["rules"]) == ["0.5/1"]
