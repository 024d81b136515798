"""Checkpoint faults (reliability case 1 and 3, issue 25 items 2-3): every file is checksummed, resume takes the
newest checkpoint that validates whatever `latest` says, and a SIGKILL at any point of a save or a full disk leaves
the previous checkpoint loadable at its step."""

from __future__ import annotations

import contextlib
import errno
import os
import random
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
import torch

from robotrl.checkpoint import load_state, resolve_checkpoint, save_checkpoint, verify_checkpoint
from robotrl.errors import CheckpointError
from robotrl.replay import ReplayBuffer

SIZE = 32  # pixels per side: 3 KiB per stored step


def _replay(steps: int) -> ReplayBuffer:
    """A replay of ``steps`` transitions (episodes of 10) with random, incompressible frames."""
    space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (3, SIZE, SIZE), np.uint8)})
    buf = ReplayBuffer(2 * steps + 10, space, 1, 1, seed=steps)
    rng = np.random.default_rng(steps)
    for t in range(steps):
        if t % 10 == 0:
            buf.add_first({"pixels": rng.integers(0, 256, (3, SIZE, SIZE), np.uint8)})
        buf.add(np.zeros(1, np.float32), 1.0, {"pixels": rng.integers(0, 256, (3, SIZE, SIZE), np.uint8)}, False,
                t % 10 == 9)
    return buf


def _save(root: Path, step: int, replay: ReplayBuffer | None = None) -> Path:
    """Checkpoint ``step``: its counters say ``step`` and its replay holds ``step`` transitions."""
    state = {"agent_name": "drqv2", "agent": {"w": torch.full((64,), float(step))}, "counters": {"step": step}}
    return save_checkpoint(root, f"frame_{step:012d}", state, replay or _replay(step), keep=3)


def _assert_loads_at(path: Path, step: int) -> None:
    """``path`` is checkpoint ``step``: it verifies, its state says ``step`` and its replay loads whole."""
    assert path.name == f"frame_{step:012d}"
    assert load_state(path)["counters"]["step"] == step
    assert len(ReplayBuffer.load(path / "replay")) == step


# ------------------------------------------------------------------------------------------ item 2: checksums
def test_a_flipped_byte_in_the_replay_falls_back_to_the_previous_checkpoint_with_a_warning(tmp_path, caplog):
    root = tmp_path / "checkpoints"
    _save(root, 20)
    newest = _save(root, 40)
    replay_file = newest / "replay"
    data = bytearray(replay_file.read_bytes())
    data[data.index(b"\x93NUMPY") + 200] ^= 0x01  # one bit of the stored frames
    replay_file.write_bytes(bytes(data))
    with pytest.raises(CheckpointError, match=f"{replay_file}.*sha256"):
        verify_checkpoint(newest)
    path = resolve_checkpoint(tmp_path)
    _assert_loads_at(path, 20)
    assert "falling back" in caplog.text and str(replay_file) in caplog.text


def test_resume_takes_the_newest_valid_checkpoint_whatever_latest_says(tmp_path):
    root = tmp_path / "checkpoints"
    _save(root, 20)
    _save(root, 40)
    (root / "latest").write_text("frame_000000000020\n")  # killed between the rename and the `latest` write
    _assert_loads_at(resolve_checkpoint(tmp_path), 40)


def test_checkpoints_of_the_previous_manifest_format_still_load(tmp_path):
    """Manifests written before every file had its sha256 ({file: size} and state_sha256) still verify."""
    import hashlib
    import json

    path = _save(tmp_path / "checkpoints", 20)
    files = {rel: entry["size"] for rel, entry in json.loads((path / "manifest.json").read_text())["files"].items()}
    old = {"format": 1, "files": files, "state_sha256": hashlib.sha256((path / "state.pt").read_bytes()).hexdigest()}
    (path / "manifest.json").write_text(json.dumps(old))
    _assert_loads_at(resolve_checkpoint(tmp_path), 20)


# ------------------------------------------------------------------------------------------ item 3: SIGKILL
KILL_FILES = ("robotrl/checkpoint.py", "robotrl/atomic.py", "robotrl/replay.py", "zipfile", "numpy/lib")


def _line_counter(limit: int | None, counted: list[int], steps: list[int] | None = None):
    """A sys.settrace function counting line events in the save's code (``KILL_FILES``); SIGKILL at ``limit``.
    ``steps`` collects the counts at the lines of ``save_checkpoint`` itself (between its steps: write, rename,
    `latest`, prune)."""
    def local(frame, event, arg):
        if event == "line":
            counted[0] += 1
            if steps is not None and frame.f_code.co_name == "save_checkpoint":
                steps.append(counted[0])
            if counted[0] == limit:
                os.kill(os.getpid(), signal.SIGKILL)
        return local

    def tracer(frame, event, arg):
        name = frame.f_code.co_filename
        return local if any(part in name for part in KILL_FILES) else None

    return tracer


def _save_in_child(root: Path, step: int, kill_at: int | None = None, ready: int | None = None) -> int:
    """Fork a child that saves checkpoint ``step`` (SIGKILLed at its ``kill_at``-th traced line); return its pid."""
    pid = os.fork()
    if pid == 0:  # the child: save, never return into pytest
        code = 0
        try:
            replay = _replay(step)  # built before the kill points start
            if ready is not None:
                os.write(ready, b"x")
            if kill_at is not None:
                sys.settrace(_line_counter(kill_at, [0]))
            _save(root, step, replay)
        except BaseException:  # noqa: BLE001 -- reported through the exit code
            code = 3
        finally:
            os._exit(code)
    return pid


def _wait_killed(pid: int) -> bool:
    """True when the child died of SIGKILL, False when it finished its save."""
    _, status = os.waitpid(pid, 0)
    if os.WIFSIGNALED(status):
        assert os.WTERMSIG(status) == signal.SIGKILL
        return True
    assert os.WEXITSTATUS(status) == 0, "the save in the child raised"
    return False


def _check_after_kill(tmp_path: Path, killed: bool) -> int:
    """The previous checkpoint (20) or, when the save got past its rename, the new one (40) resumes at its step;
    `latest` names a complete checkpoint; no temp dir is ever resolved. Returns the step resumed at."""
    root = tmp_path / "checkpoints"
    path = resolve_checkpoint(tmp_path)
    step = 40 if path.name == "frame_000000000040" else 20
    _assert_loads_at(path, step)
    verify_checkpoint(root / (root / "latest").read_text().strip())
    assert step == 40 or not (root / "frame_000000000040").exists() or not killed  # a complete 40 is never skipped
    if not killed:
        assert step == 40
    return step


@pytest.mark.skipif(not hasattr(os, "fork"), reason="needs os.fork")
def test_sigkill_at_random_points_of_a_save_leaves_a_checkpoint_that_resumes_at_its_step(tmp_path):
    """Every line of the save (checkpoint, atomic write, replay save, zip and npy writing) is a kill point: the
    child is SIGKILLed at every line of ``save_checkpoint`` (between the rename and `latest` too), at 8 random
    ones, then at random times during the save's writes."""
    counted, replay, steps = [0], _replay(40), []
    sys.settrace(_line_counter(None, counted, steps))  # how many kill points a whole save has
    try:
        _save(tmp_path / "dry", 40, replay)
    finally:
        sys.settrace(None)
    rng = random.Random(1234)
    points = sorted({*steps, *rng.sample(range(1, counted[0] + 1), 8), counted[0]})  # + the very last line
    t0 = time.perf_counter()
    _save(tmp_path / "timing", 40, replay)
    save_s = time.perf_counter() - t0
    outcomes, kills = [], 0
    for kill_at in [*points, *[None] * 3]:
        shutil.rmtree(tmp_path / "checkpoints", ignore_errors=True)
        _save(tmp_path / "checkpoints", 20)
        if kill_at is not None:
            killed = _wait_killed(_save_in_child(tmp_path / "checkpoints", 40, kill_at))
        else:  # a random moment of the save, wherever its bytes are
            read, write = os.pipe()
            pid = _save_in_child(tmp_path / "checkpoints", 40, ready=write)
            os.read(read, 1)
            time.sleep(rng.uniform(0, save_s))
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            killed = _wait_killed(pid)
            os.close(read)
            os.close(write)
        outcomes.append(_check_after_kill(tmp_path, killed))
        kills += killed
    assert kills >= len(points) and {20, 40} <= set(outcomes)  # the traced kills all landed, before and after
    print(f"{counted[0]} kill points, save {save_s * 1000:.0f} ms; resumed at steps {outcomes}")


# ------------------------------------------------------------------------------------------ item 3: full disk
@contextlib.contextmanager
def _small_tmpfs(path: Path, size: str):
    path.mkdir()
    try:
        subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(path)], check=True,
                       capture_output=True)
    except (OSError, subprocess.CalledProcessError) as e:
        pytest.skip(f"cannot mount a tmpfs here ({e}); the injected-ENOSPC variant covers the logic")
    try:
        yield path
    finally:
        subprocess.run(["umount", str(path)], check=False)


@contextlib.contextmanager
def _injected_enospc(path: Path, size: str, monkeypatch):
    """The same disk, by an injected ENOSPC: writes into ``path`` fail once more than ``size`` bytes are in it."""
    limit = int(size.rstrip("k")) * 1024
    real_open = open

    class Capped:
        def __init__(self, f):
            self._f = f

        def write(self, data):
            used = sum(p.stat().st_size for p in path.rglob("*") if p.is_file())
            if used + len(data) > limit:
                raise OSError(errno.ENOSPC, "No space left on device")
            return self._f.write(data)

        def __getattr__(self, name):
            return getattr(self._f, name)

        def __enter__(self):
            return self

        def __exit__(self, *exc):
            return self._f.__exit__(*exc)

    def capped_open(file, mode="r", *args, **kwargs):
        f = real_open(file, mode, *args, **kwargs)
        return Capped(f) if "w" in mode and str(file).startswith(str(path)) else f

    def capped_fdopen(fd, mode="r", *args, **kwargs):  # atomic_write's temp files
        target = os.readlink(f"/proc/self/fd/{fd}") if isinstance(fd, int) else ""
        f = real_os_fdopen(fd, mode, *args, **kwargs)
        return Capped(f) if "w" in mode and target.startswith(str(path)) else f

    path.mkdir()
    real_os_fdopen = os.fdopen
    import builtins

    monkeypatch.setattr(builtins, "open", capped_open)
    monkeypatch.setattr(os, "fdopen", capped_fdopen)
    yield path
    monkeypatch.undo()


@pytest.mark.parametrize("disk", ["tmpfs", "injected"])
def test_a_full_disk_keeps_the_previous_checkpoint_and_frees_the_failed_one(tmp_path, disk, monkeypatch):
    """A 400 KiB disk: checkpoint 20 (~70 KiB) fits, checkpoint 200 (~700 KiB of frames) does not. The failed save
    is a one-line CheckpointError, leaves no temp dir behind (its space is free again: checkpoint 40 fits after),
    and checkpoint 20 resumes at its step."""
    cap = _small_tmpfs(tmp_path / "disk", "400k") if disk == "tmpfs" else \
        _injected_enospc(tmp_path / "disk", "400k", monkeypatch)
    with cap as disk_dir:
        root = disk_dir / "checkpoints"
        _save(root, 20)
        with pytest.raises(CheckpointError, match="no space left on device.*previous checkpoint is intact") as e:
            _save(root, 200)
        assert "\n" not in str(e.value)
        assert sorted(p.name for p in root.iterdir()) == ["frame_000000000020", "latest"]
        _assert_loads_at(resolve_checkpoint(disk_dir), 20)
        _save(root, 40)  # the failed save's space was given back
        _assert_loads_at(resolve_checkpoint(disk_dir), 40)


def test_a_run_whose_disk_fills_resumes_at_its_last_checkpoint(compose_cfg, tmp_path, monkeypatch):
    """The trainer's second checkpoint (frame 400) hits a full disk: the run stops with the one-line error, and
    resume=true continues from frame 200's checkpoint at its step, to the end."""
    from robotrl.workflows.train import Trainer

    real_save, saves = ReplayBuffer.save, []

    def save_until_full(self, path):
        saves.append(path)
        if len(saves) == 2:
            raise OSError(errno.ENOSPC, "No space left on device")
        real_save(self, path)

    monkeypatch.setattr(ReplayBuffer, "save", save_until_full)
    overrides = ("eval_episodes=0", "save_video=false", "tensorboard=false", "env.obs_type=state")  # no rendering
    with pytest.raises(CheckpointError, match="frame_000000000400 could not be written: no space left"):
        Trainer(compose_cfg(*overrides), tmp_path).train()
    monkeypatch.undo()
    assert sorted(p.name for p in (tmp_path / "checkpoints").iterdir()) == ["frame_000000000200", "latest"]
    resumed = Trainer(compose_cfg(*overrides, "resume=true"), tmp_path)
    assert resumed.step == 100 and resumed.frame == 200 and len(resumed.replay) > 0
    assert resumed.train()["frames"] == 400


def test_a_save_fsyncs_every_file_and_dir_before_the_renames_that_publish_them(tmp_path, monkeypatch):
    """A crash loses what the page cache held, which a SIGKILL test cannot see (the kernel keeps it). So trace the
    calls: every file of the checkpoint and its directories reach the disk before the rename that makes it a
    checkpoint; the checkpoint dir's entry before `latest` names it; `latest` before and after its own rename."""
    calls: list[tuple[str, str]] = []
    fsync, replace = os.fsync, os.replace

    def traced_fsync(fd):
        calls.append(("fsync", os.readlink(f"/proc/self/fd/{fd}")))
        return fsync(fd)

    def traced_replace(src, dst):
        calls.append(("replace", f"{src} -> {dst}"))
        return replace(src, dst)

    monkeypatch.setattr(os, "fsync", traced_fsync)
    monkeypatch.setattr(os, "replace", traced_replace)
    root = tmp_path / "ckpts"
    final = _save(root, 7, _replay(30))
    tmp = root / f".tmp-{final.name}"
    files = sorted(str(p).replace(str(final), str(tmp)) for p in final.rglob("*"))
    publish = calls.index(("replace", f"{tmp} -> {final}"))
    synced_before = {path for kind, path in calls[:publish] if kind == "fsync"}
    assert set(files) <= synced_before, set(files) - synced_before  # every file and subdir of the checkpoint
    assert str(tmp) in synced_before and len(files) > 2
    latest = next(i for i, (kind, what) in enumerate(calls) if kind == "replace" and what.endswith(f"{root}/latest"))
    assert ("fsync", str(root)) in calls[publish + 1:latest]  # the checkpoint's own entry, before `latest` names it
    tmp_latest = calls[latest][1].split(" -> ")[0]
    assert ("fsync", tmp_latest) in calls[publish + 1:latest] and calls[latest + 1] == ("fsync", str(root))
