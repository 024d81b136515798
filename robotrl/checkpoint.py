"""Crash-safe checkpoints: write to a temp dir, fsync, rename, then move the `latest` pointer.

Layout of ``<run_dir>/checkpoints``::

    latest                  text file naming the newest complete checkpoint dir (replaced atomically; for people
                            and tools: resume does not trust it, see below)
    frame_000010000/
        state.pt            agent + optimisers + counters + RNG states + config (torch.load(weights_only=True))
        replay/             the replay buffer (ReplayBuffer.save), optional
        manifest.json       every file's size and sha256, written last inside the temp dir

A checkpoint directory only ever appears under its final name once everything inside it is on disk, so a crash,
a SIGKILL, a full disk or Ctrl-C leaves the previous checkpoint intact (a failed save removes its temp dir).
Resuming takes the newest checkpoint whose every file matches its manifest, whatever `latest` says (a kill between
the rename and the `latest` write leaves `latest` one checkpoint behind); a corrupted newer one is skipped with a
loud warning naming the file, never a silent fresh start.
"""

from __future__ import annotations

import errno
import hashlib
import json
import logging
import os
import re
import shutil
from pathlib import Path
from typing import Any

import torch

from robotrl.atomic import atomic_write_text, fsync_dir
from robotrl.errors import CheckpointError

log = logging.getLogger(__name__)
FORMAT_VERSION = 1
_FRAME = re.compile(r"(\d+)$")  # the trainer's names, frame_<N>: the newest is the largest N


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
    try:
        _write_tmp(tmp, state, replay)
    except BaseException as e:  # a failed save must not leave a partial temp dir filling the disk
        shutil.rmtree(tmp, ignore_errors=True)
        if _disk_full(e):
            raise CheckpointError(f"checkpoint {final} could not be written: no space left on device "
                                  f"({ckpt_root}); the previous checkpoint is intact, free space and resume "
                                  f"with resume=true") from e
        raise
    if final.exists():  # same name rewritten (e.g. a resumed run reaching the same frame): replace it whole
        shutil.rmtree(final)
    os.replace(tmp, final)
    fsync_dir(ckpt_root)
    atomic_write_text(ckpt_root / "latest", name + "\n")
    _prune(ckpt_root, keep)
    return final


def _write_tmp(tmp: Path, state: dict[str, Any], replay: Any) -> None:
    """Every file of the checkpoint, then the manifest (each file's size and sha256), all fsynced."""
    tmp.mkdir()
    with open(tmp / "state.pt", "wb") as f:  # a file object: torch's write error then chains the OSError (ENOSPC)
        torch.save({"format": FORMAT_VERSION, **state}, f)
    if replay is not None:
        replay.save(tmp / "replay")
    files = {str(p.relative_to(tmp)): {"size": p.stat().st_size, "sha256": _sha256(p)}
             for p in sorted(tmp.rglob("*")) if p.is_file()}
    manifest = {"format": FORMAT_VERSION, "files": files}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    _fsync_tree(tmp)


def _disk_full(error: BaseException | None) -> bool:
    """``error`` or one it was raised from is ENOSPC/EDQUOT (torch.save raises a RuntimeError from it)."""
    while error is not None:
        if isinstance(error, OSError) and error.errno in (errno.ENOSPC, errno.EDQUOT):
            return True
        error = error.__cause__ or error.__context__
    return False


def _prune(ckpt_root: Path, keep: int) -> None:
    for old in _newest_first(ckpt_root)[keep:]:
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
    files = manifest.get("files") if isinstance(manifest, dict) else None
    if not isinstance(files, dict) or "state.pt" not in files:
        raise CheckpointError(f"checkpoint {path}: manifest.json lists no state.pt (expected a robotrl manifest)")
    for rel, entry in files.items():
        # format of a489bdc and before: {file: size} and the sha256 of state.pt alone
        size, digest = (entry["size"], entry["sha256"]) if isinstance(entry, dict) else (entry, None)
        if rel == "state.pt" and digest is None:
            digest = manifest.get("state_sha256")
        file = path / rel
        if not file.is_file() or file.stat().st_size != size:
            actual = file.stat().st_size if file.is_file() else "missing"
            raise CheckpointError(f"checkpoint file {file} is corrupted: size {actual}, expected {size} bytes")
        if digest is not None and _sha256(file) != digest:
            raise CheckpointError(f"checkpoint file {file} is corrupted: sha256 does not match manifest.json")


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


def _newest_first(root: Path) -> list[Path]:
    """The complete checkpoint dirs of ``root`` (temp dirs start with a dot), newest first by frame number."""
    def key(p: Path) -> tuple[int, str]:
        match = _FRAME.search(p.name)
        return (int(match.group(1)) if match else -1, p.name)

    return sorted((p for p in root.iterdir() if p.is_dir() and not p.name.startswith(".")), key=key, reverse=True)


def resolve_checkpoint(path: Path) -> Path:
    """Map a run dir, a checkpoints dir or a checkpoint dir to one valid checkpoint dir.

    For a run/checkpoints dir this is the newest checkpoint that verifies, whatever `latest` names (see the
    module docstring); when newer ones fail verification a warning names them and the file that failed.
    """
    path = Path(path)
    if (path / "state.pt").exists() or (path / "manifest.json").exists():
        verify_checkpoint(path)
        return path
    root = path / "checkpoints" if (path / "checkpoints").is_dir() else path
    if not root.is_dir():
        raise CheckpointError(f"no checkpoint at {path} (expected a run dir, its checkpoints/ dir or a checkpoint)")
    candidates = _newest_first(root)
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
            log.warning("newest checkpoint is unusable (%s); falling back to %s", "; ".join(errors), candidate)
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
