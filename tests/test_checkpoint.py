"""Checkpoints are atomic, verified on load, loaded with the safe unpickler, and fall back when corrupted."""

from __future__ import annotations

import os

import pytest
import torch

from robotrl.checkpoint import load_state, resolve_checkpoint, save_checkpoint, verify_checkpoint
from robotrl.errors import CheckpointError


def _state(value: float) -> dict:
    return {"agent_name": "drqv2", "agent": {"w": torch.full((4,), value)}, "counters": {"step": int(value)}}


def test_round_trip_and_latest(tmp_path):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, "frame_000000000010", _state(1.0))
    save_checkpoint(root, "frame_000000000020", _state(2.0))
    path = resolve_checkpoint(tmp_path)
    assert path.name == "frame_000000000020"
    assert torch.equal(load_state(path)["agent"]["w"], torch.full((4,), 2.0))


def test_keeps_only_newest(tmp_path):
    root = tmp_path / "checkpoints"
    for i in range(1, 5):
        save_checkpoint(root, f"frame_{i:012d}", _state(i), keep=2)
    assert sorted(p.name for p in root.iterdir() if p.is_dir()) == ["frame_000000000003", "frame_000000000004"]


@pytest.mark.parametrize("damage", ["truncate", "flip", "delete_manifest"])
def test_corrupted_latest_falls_back_to_previous(tmp_path, damage, caplog):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, "frame_000000000010", _state(1.0))
    newest = save_checkpoint(root, "frame_000000000020", _state(2.0))
    state_file = newest / "state.pt"
    data = state_file.read_bytes()
    if damage == "truncate":
        state_file.write_bytes(data[: len(data) // 2])
    elif damage == "flip":
        state_file.write_bytes(data[:100] + bytes([data[100] ^ 0xFF]) + data[101:])
    else:
        (newest / "manifest.json").unlink()
    with pytest.raises(CheckpointError, match="frame_000000000020"):
        verify_checkpoint(newest)
    assert resolve_checkpoint(tmp_path).name == "frame_000000000010"
    assert "falling back" in caplog.text


def test_crash_during_save_keeps_previous(tmp_path, monkeypatch):
    root = tmp_path / "checkpoints"
    save_checkpoint(root, "frame_000000000010", _state(1.0))

    def boom(*args, **kwargs):
        raise OSError("disk full")

    monkeypatch.setattr(os, "replace", boom)
    with pytest.raises(OSError):
        save_checkpoint(root, "frame_000000000020", _state(2.0))
    monkeypatch.undo()
    path = resolve_checkpoint(tmp_path)
    assert path.name == "frame_000000000010" and load_state(path)["counters"]["step"] == 1


def test_missing_checkpoint_is_one_line_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint") as info:
        resolve_checkpoint(tmp_path / "nope")
    assert "\n" not in str(info.value)


class _Payload:
    def __reduce__(self):
        return (os.system, ("touch PWNED",))


def test_untrusted_pickle_is_refused(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    root = tmp_path / "checkpoints"
    path = save_checkpoint(root, "frame_000000000010", _state(1.0))
    # Replace state.pt by a malicious pickle and fix the manifest so only the unpickler stands in the way.
    with open(path / "state.pt", "wb") as f:
        torch.save({"format": 1, "x": _Payload()}, f)
    import hashlib
    import json

    manifest = json.loads((path / "manifest.json").read_text())
    manifest["files"]["state.pt"] = (path / "state.pt").stat().st_size
    manifest["state_sha256"] = hashlib.sha256((path / "state.pt").read_bytes()).hexdigest()
    (path / "manifest.json").write_text(json.dumps(manifest))
    with pytest.raises(CheckpointError, match="cannot be loaded"):
        load_state(path)
    assert not (tmp_path / "PWNED").exists()


def test_every_torch_load_is_weights_only():
    """Static check: no torch.load in the package may run the unrestricted unpickler."""
    import ast
    import pathlib

    repo = pathlib.Path(__file__).resolve().parents[1]
    for folder in ("robotrl", "envs", "agents", "rewards", "hardware"):
        for file in (repo / folder).rglob("*.py"):
            for node in ast.walk(ast.parse(file.read_text())):
                if isinstance(node, ast.Call) and getattr(node.func, "attr", "") == "load" and \
                        getattr(node.func.value, "id", "") == "torch":
                    kw = {k.arg: k.value for k in node.keywords}
                    assert "weights_only" in kw and getattr(kw["weights_only"], "value", None) is True, file
