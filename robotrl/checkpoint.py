"""Crash-safe checkpoints: write to a temp dir, fsync, rename, then move the `latest` pointer.

Layout of ``<run_dir>/checkpoints``::

    latest                  text file naming the newest complete checkpoint dir (replaced atomically)
    frame_000010000/
        state.pt            agent + optimisers + counters + RNG states + config (torch.load(weights_only=True))
        replay/             the replay buffer (ReplayBuffer.save), optional
        manifest.json       file sizes and the sha256 of state.pt, written last inside the temp dir

A checkpoint directory only ever appears under its final name once everything inside it is on disk, so a crash
or Ctrl-C leaves the previous checkpoint and the `latest` pointer intact. Loading verifies the manifest; if the
newest checkpoint is corrupted the previous valid one is used with a loud warning, never a silent fresh start.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import shutil
from pathlib import Path
from typing import Any

import torch

from robotrl.atomic import atomic_write_text, fsync_dir
from robotrl.errors import CheckpointError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1


def _fsync_tree(path: Path) -> None:
    for root, _, files in os.walk(path):
        for name in files:
            with open(Path(root) / name, "rb") as f:
                os.fsync(f.fileno())
        fsync_dir(Path(root))


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def save_checkpoint(ckpt_root: Path, name: str, state: dict[str, Any], replay: Any = None, keep: int = 2) -> Path:
    """Write ``state`` (and ``replay`` via its ``save(dir)``) as checkpoint ``name``; keep the newest ``keep``."""
    ckpt_root.mkdir(parents=True, exist_ok=True)
    final = ckpt_root / name
    tmp = ckpt_root / f".tmp-{name}"
    if tmp.exists():
        shutil.rmtree(tmp)
    tmp.mkdir()
    torch.save({"format": FORMAT_VERSION, **state}, tmp / "state.pt")
    if replay is not None:
        replay.save(tmp / "replay")
    files = {str(p.relative_to(tmp)): p.stat().st_size for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {"format": FORMAT_VERSION, "files": files, "state_sha256": _sha256(tmp / "state.pt")}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    _fsync_tree(tmp)
    if final.exists():  # same name rewritten (e.g. a resumed run reaching the same frame): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(ckpt_root)
    atomic_write_text(ckpt_root / "latest", name + "\n")
    _prune(ckpt_root, keep)
    return final


def _prune(ckpt_root: Path, keep: int) -> None:
    complete = sorted(p for p in ckpt_root.iterdir() if p.is_dir() and not p.name.startswith("."))
    for old in complete[:-keep]:
        shutil.rmtree(old, ignore_errors=True)


def verify_checkpoint(path: Path) -> None:
    """Raise CheckpointError naming the file unless ``path`` is a complete, uncorrupted checkpoint."""
    manifest_path = path / "manifest.json"
    if not path.is_dir():
        raise CheckpointError(f"checkpoint {path} does not exist (expected a directory with state.pt)")
    try:
        manifest = json.loads(manifest_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"checkpoint {path}: missing or unreadable manifest.json ({e})") from None
    for rel, size in manifest["files"].items():
        file = path / rel
        if not file.is_file() or file.stat().st_size != size:
            actual = file.stat().st_size if file.is_file() else "missing"
            raise CheckpointError(f"checkpoint file {file} is corrupted: size {actual}, expected {size} bytes")
    if _sha256(path / "state.pt") != manifest["state_sha256"]:
        raise CheckpointError(f"checkpoint file {path / 'state.pt'} is corrupted: sha256 does not match manifest")


def load_state(path: Path) -> dict[str, Any]:
    """Verify and load ``path/state.pt`` with the safe (weights-only) unpickler."""
    verify_checkpoint(path)
    try:
        state = torch.load(path / "state.pt", map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises several types for truncated/garbled zips
        raise CheckpointError(f"checkpoint file {path / 'state.pt'} cannot be loaded: {e}".splitlines()[0]) from e
    if state.get("format") != FORMAT_VERSION:
        raise CheckpointError(f"checkpoint {path}: format {state.get('format')}, expected {FORMAT_VERSION}")
    return state


def resolve_checkpoint(path: Path) -> Path:
    """Map a run dir, a checkpoints dir or a checkpoint dir to one valid checkpoint dir.

    For a run/checkpoints dir this is the one named by `latest`; if that one fails verification, the newest
    older valid checkpoint is returned and a warning is logged.
    """
    path = Path(path)
    if (path / "state.pt").exists() or (path / "manifest.json").exists():
        verify_checkpoint(path)
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not root.is_dir():
        raise CheckpointError(f"no checkpoint at {path} (expected a run dir, its checkpoints/ dir or a checkpoint)")
    latest = root / "latest"
    candidates = sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), reverse=True)
    if latest.exists():
        named = root / latest.read_text().strip()
        candidates = [named] + [c for c in candidates if c != named]
    if not candidates:
        raise CheckpointError(f"no checkpoint in {root}")
    errors = []
    for candidate in candidates:
        try:
            verify_checkpoint(candidate)
        except CheckpointError as e:
            errors.append(str(e))
            continue
        if errors:
            log.warning("newest checkpoint is unusable (%s); falling back to %s", errors[0], candidate)
        return candidate
    raise CheckpointError(f"no valid checkpoint in {root}: {errors[0]}")


def check_agent_state(state: Any, agent_name: str, shapes: dict[str, Any], config: dict[str, Any],
                      keys: tuple[str, ...]) -> None:
    """Raise CheckpointError (one line) unless ``state`` is an agent state dict of ``agent_name`` with the same
    observation/action ``shapes`` and the same values of the architecture ``keys`` in ``config``."""
    if not isinstance(state, dict) or state.get("agent") != agent_name:
        name = state.get("agent") if isinstance(state, dict) else type(state).__name__
        raise CheckpointError(f"checkpoint is for agent {name!r}, expected {agent_name!r}")
    if state.get("shapes") != shapes:
        raise CheckpointError(f"checkpoint shapes {state.get('shapes')} != this agent's {shapes}")
    saved = state.get("config", {})
    for key in keys:
        if saved.get(key) != config[key]:
            raise CheckpointError(f"checkpoint {key}={saved.get(key)} != this agent's {config[key]}")
