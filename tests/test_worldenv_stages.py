"""World-Env's stages on the shared primitives: one ``fit()`` whose gradient clip is a setting, stage states that are
``robotrl.checkpoint`` checkpoints (sha256-verified, the previous one used when the newest is corrupted) holding
``robotrl.rng``'s RNG format, each stage recording the settings it ran with, every setting checked before saving."""

from __future__ import annotations

import logging

import numpy as np
import pytest
import torch

from robotrl.cli import main
from robotrl.workflows.worldenv.fit import fit, state_dir


def test_fit_clips_the_gradient_to_the_configured_norm(tmp_path):
    for clip in (0.25, 2.0):
        net = torch.nn.Linear(4, 1, bias=False)
        torch.nn.init.zeros_(net.weight)
        before = net.weight.detach().clone()
        opt = torch.optim.SGD(net.parameters(), lr=1.0)

        def losses(step, net=net):  # gradient norm 100: clipped to ``clip``, so the step is ``clip`` long
            return [((net(torch.full((1, 4), 50.0)) - 1.0).sum() * 1.0, {})]

        fit("toy", tmp_path / str(clip), net, opt, 1, losses, clip=clip, every=1)
        assert float((net.weight - before).norm()) == pytest.approx(clip, rel=1e-5)


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


def test_a_bad_device_is_one_line_before_anything_is_saved(tmp_path, capsys):
    out = tmp_path / "run"
    cli(["worldenv", "fidelity", f"out={out}", "seed=3"], capsys)  # fails on the missing model, after saving
    saved = (out / "config.yaml").read_text()
    code, err = cli(["worldenv", "fidelity", f"out={out}", "device=gpu"], capsys)
    assert code == 2 and "device='gpu'" in err and "expected" in err and "\n" not in err, err
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
