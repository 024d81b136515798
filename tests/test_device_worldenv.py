"""bench/device/worldenv_64.sh (World-Env at 64x64 on a lent GPU, one call that cannot be retried cheaply): its
settings must still be valid `robotrl worldenv` settings of this checkout, and bench/worldenv_ceiling.py (the gate's
noise ceiling, issue 27 §1) must reproduce the issue's numbers."""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest

from robotrl.errors import ConfigError
from robotrl.workflows.worldenv.common import load_config

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "bench" / "device" / "worldenv_64.sh"


def script_settings(tmp_path: Path, dry: bool, extra: str = "") -> list[str]:
    env = {**os.environ, "OUT": str(tmp_path / "out"), "PRINT_SETTINGS": "1", "DRY": "1" if dry else "0",
           "EXTRA": extra}
    proc = subprocess.run(["bash", str(SCRIPT)], env=env, cwd=tmp_path, capture_output=True, text=True, timeout=60,
                          check=True)
    assert not (tmp_path / "out").exists(), "PRINT_SETTINGS must stop before anything is written"
    return proc.stdout.split()


@pytest.mark.parametrize("dry", [False, True])
def test_device_script_settings_are_valid_worldenv_settings(tmp_path, dry):
    settings = script_settings(tmp_path, dry)
    assert "image_size=64" in settings and "model.block_channels=[16,32,32]" in settings
    device = "device=cpu" if dry else "device=cuda"
    assert device in settings
    # every stage the script runs merges these (and model.steps, seed); a renamed key would fail each stage there
    cfg = load_config(tmp_path / "run", [*settings, "seed=1", "model.steps=300"])
    assert cfg.image_size == 64 and list(cfg.model.block_channels) == [16, 32, 32]
    assert list(cfg.tasks) == ["reach", "drawer-close", "button-press-topdown"]


def test_extra_settings_win(tmp_path):
    cfg = load_config(tmp_path / "run", script_settings(tmp_path, False, "fidelity.episodes=16 model.batch_size=16"))
    assert cfg.fidelity.episodes == 16 and cfg.model.batch_size == 16 and cfg.image_size == 64


def test_a_renamed_setting_is_caught(tmp_path):
    """What the test above guards against: load_config rejects a key the config does not have."""
    with pytest.raises(ConfigError, match="bad worldenv setting"):
        load_config(tmp_path / "run", [*script_settings(tmp_path, False), "model.block_chanels=[16,32,32]"])


@pytest.mark.parametrize("script", ["worldenv_64.sh", "worldenv_prepare.sh"])
def test_device_scripts_parse(script):
    subprocess.run(["bash", "-n", str(ROOT / "bench" / "device" / script)], check=True, timeout=30)


def ceiling_module():
    spec = importlib.util.spec_from_file_location("worldenv_ceiling", ROOT / "bench" / "worldenv_ceiling.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_ceiling_reproduces_issue_27():
    """Issue 27 §1: a perfect world model on the published runs' learned policies (12 episodes each) gives a median r
    of 0.75 / 0.14 / 0.71 and P(r >= 0.8) of 0.37 / 0.02 / 0.27."""
    ceiling = ceiling_module().ceiling
    expected = {1: (0.75, 0.37), 2: (0.14, 0.02), 3: (0.71, 0.27)}
    for seed, (median, p_pass) in expected.items():
        rep = json.loads((ROOT / f"docs/results/worldenv/longer_model/seed{seed}/fidelity_report.json").read_text())
        p = np.array([r["sim_success"] for r in rep["policies"] if r["policy"] not in ("random", "zero")])
        c = ceiling(p, rep["episodes_per_task"] * len(rep["tasks"]), rep["min_r"], 20000)
        assert c["median_r"] == pytest.approx(median, abs=0.04)
        assert c["p_pass"] == pytest.approx(p_pass, abs=0.04)


def test_ceiling_limits():
    ceiling = ceiling_module().ceiling
    spread = np.linspace(0.05, 0.95, 8)
    assert ceiling(spread, 200, 0.8, 4000)["p_pass"] > 0.99  # many episodes, wide spread: a perfect model passes
    assert ceiling(spread, 2, 0.8, 4000)["p_pass"] < 0.5  # two episodes per policy: it mostly cannot
    const = ceiling(np.full(8, 0.5), 12, 0.8, 2000)
    assert const["p_pass"] < 0.05  # equal policies: nothing to rank, a perfect model fails the gate
    assert ceiling(np.zeros(8), 12, 0.8, 100) == {"median_r": pytest.approx(float("nan"), nan_ok=True),
                                                  "p_pass": 0.0, "p_undefined": 1.0}
