"""bench/device/worldenv_64.sh (World-Env at 64x64 on a lent GPU, one call that cannot be retried cheaply): its
settings must still be valid `robotrl worldenv` settings of this checkout."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from robotrl.errors import ConfigError
from robotrl.workflows.worldenv.settings import load_config

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
    if not dry:  # the CPU curve's powered gate: 12 episodes per task (4 left a perfect model passing in 2-35%)
        assert cfg.fidelity.episodes == 12 and list(cfg.fidelity.noise) == [0.0, 1.0]


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
