"""The one training loop of the World-Env stages (``fit``) and the files a stage writes.

A stage's resumable state (model, optimiser, counter, the global RNGs in ``robotrl.rng``'s format and the stage's own
batch sampler) is a checkpoint of ``robotrl.checkpoint`` under ``<folder>/checkpoints/`` (sha256 manifest, the newest
complete one that verifies is resumed from, like the trainer's); its log is ``<folder>/train.csv`` through
``robotrl.logger``'s CSV writer. The stage's products (``vla.pt``, ``model.pt``, ``reflector.pt``, snapshots) are
single files written atomically and read back with a kind check (``save_ckpt`` / ``load_ckpt``)."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.atomic import atomic_write, atomic_write_text
from robotrl.checkpoint import load_state, resolve_checkpoint, save_checkpoint
from robotrl.errors import CheckpointError, DivergenceError
from robotrl.heartbeat import Heartbeat
from robotrl.rng import get_rng_state, set_rng_state

# one gradient step's (loss, metrics); a stage's update yields one per gradient step it takes at ``step``
Losses = Callable[[int], Iterable[tuple[torch.Tensor, dict[str, float]]]]


# ------------------------------------------------------------------------------------------------ stage state
def state_dir(folder: Path) -> Path:
    return Path(folder) / "checkpoints"


def latest_state(folder: Path, kind: str) -> dict[str, Any] | None:
    """The newest stage state under ``folder/checkpoints`` that verifies (a corrupted newer one is skipped with a
    warning), None when there is none; a ``state.pt`` of the format before these checkpoints is refused."""
    root = state_dir(folder)
    if not root.is_dir() or not any(p.is_dir() and not p.name.startswith(".") for p in root.iterdir()):
        if (Path(folder) / "state.pt").is_file():
            raise CheckpointError(f"{Path(folder) / 'state.pt'}: a stage state of an older robotrl (expected "
                                  f"{root}); finish that run with the robotrl that started it, or use a new out=DIR")
        return None
    state = load_state(resolve_checkpoint(root))
    if state.get("kind") != kind:
        raise CheckpointError(f"{root}: a {state.get('kind')!r} state, expected a {kind!r} one")
    return state


def stage_counter(folder: Path, counter: str) -> int | None:
    """The step (or iteration) of the stage state under ``folder``; None when there is none or it cannot be read
    (the stage's own resume reports that)."""
    try:  # the name save_stage_state gave it (``<counter>_N``): verified, not unpickled
        root = state_dir(folder)
        name = resolve_checkpoint(root).name if root.is_dir() else ""
        return int(name.rpartition("_")[2]) if name.startswith(f"{counter}_") else None
    except (CheckpointError, ValueError):
        return None


def save_stage_state(folder: Path, kind: str, module: torch.nn.Module, opt: torch.optim.Optimizer, counter: str,
                     value: int, generator: np.random.Generator | None = None,
                     inputs: dict[str, str] | None = None) -> None:
    """What ``resume`` reads back: model, optimiser, the counter, every RNG and the digests of the inputs."""
    state = {"kind": kind, "model": module.state_dict(), "opt": opt.state_dict(), counter: value,
             "rng": get_rng_state(), **({"generator": generator.bit_generator.state} if generator is not None else {}),
             **({"inputs": dict(inputs)} if inputs else {})}
    save_checkpoint(state_dir(folder), f"{counter}_{value:07d}", state)


def file_digest(path: Path) -> str:
    """A file's sha256, first 16 hex digits: which checkpoint a stage read."""
    return hashlib.sha256(Path(path).read_bytes()).hexdigest()[:16]


def resume(name: str, folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, counter: str,
           generator: np.random.Generator | None = None, inputs: dict[str, str] | None = None) -> int:
    """Restore model, optimiser, the global RNGs and the stage's own ``generator`` (its batch sampler) from the
    stage state when there is one; the ``counter`` (step or iteration) to continue from, 0 for a fresh start. A
    state made from other ``inputs`` (name -> digest: the data, the checkpoints the stage reads) is refused: going on
    would silently train one stage on two data sets."""
    state = latest_state(folder, f"{name}-state")
    if state is None:
        return 0
    had = state.get("inputs")  # None: a state from before inputs were recorded, nothing to compare
    if had is not None and inputs is not None and had != inputs:
        changed = sorted(k for k in set(had) | set(inputs) if had.get(k) != inputs.get(k))
        raise CheckpointError(f"{name}: {state_dir(folder)} was trained on other inputs: {', '.join(changed)} "
                              f"changed since; put them back, delete {Path(folder)} to train this stage again on "
                              f"them, or use a new out=DIR")
    module.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    set_rng_state(state["rng"])
    if generator is not None:
        generator.bit_generator.state = state["generator"]
    return int(state[counter])


# ------------------------------------------------------------------------------------------------ the loop
def fit(name: str, folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, steps: int, losses: Losses, *,
        clip: float, counter: str = "step", every: int = 100, setting: str | None = None, log_loss: bool = True,
        payload_fn: Callable[[], dict[str, Any]] | None = None, snapshot_every: int = 0,
        generator: np.random.Generator | None = None, plot: Sequence[str] = (),
        inputs: dict[str, str] | None = None) -> dict[str, float]:
    """``steps`` rounds of ``losses(round)``: each loss it yields is one gradient step (gradient norm clipped to
    ``clip``, 0: not clipped); a non-finite loss stops the stage. Progress lines, a ``train.csv`` row (the
    ``counter``, the last loss when ``log_loss``, the last metrics) and a resumable stage state every ``every``
    rounds and at the end; ``payload_fn()`` to ``snapshots/<counter>_N.pt`` every ``snapshot_every`` rounds;
    ``curve.png`` of ``plot`` (else the metrics) at the end. Rerunning continues from the state as if never
    stopped; a state past ``steps`` is refused (``setting``: the key that set ``steps``, for the message), and so
    is one made from other ``inputs`` (name -> digest of what the stage reads)."""
    from robotrl.logger import CSVWriter  # here: it imports tensorboard (~2 s), which the settings' checks need not

    folder.mkdir(parents=True, exist_ok=True)
    log = CSVWriter(folder / "train.csv")
    start = resume(name, folder, module, opt, counter, generator, inputs)
    if start > steps:  # continuing would keep a longer run than asked for, silently
        raise CheckpointError(f"{name}: {state_dir(folder)} is at {counter} {start}, past "
                              f"{setting or f'{name} {counter}s'}={steps}; expected {counter}s >= {start} (the stage "
                              f"continues from there) or a new out=DIR")
    if log.path.exists():
        log.truncate_after(start, counter)  # rows past the state are logged again
    if start:
        print(f"{name}: resuming at {counter} {start}/{steps} from {state_dir(folder)}")
    beat = Heartbeat(name)
    metrics: dict[str, float] = {}
    for step in range(start + 1, steps + 1):
        for last in losses(step):  # a generator may add to its metrics after its last step (post-train)
            gradient_step(name, folder, module, opt, last[0], clip, f"{counter} {step}")
        loss, metrics = last
        if log_loss:
            metrics = {"loss": loss.item(), **metrics}
        beat.tick(lambda s=step, m=metrics: f"{counter} {s}/{steps} " + " ".join(f"{k}={v:.4g}" for k, v in m.items()))
        if payload_fn is not None and snapshot_every and step % snapshot_every == 0 and step < steps:
            save_ckpt(folder / "snapshots" / f"{counter}_{step:07d}.pt", payload_fn())  # the last: the final one
        if step % every == 0 or step == steps:
            log.write({counter: step, **metrics})
            save_stage_state(folder, f"{name}-state", module, opt, counter, step, generator, inputs)
    if log.path.exists():
        plot_csv(log.path, counter, list(plot) or [k for k in metrics if k != "loss"] or ["loss"],
                 folder / "curve.png")
    return metrics


def gradient_step(name: str, folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, loss: torch.Tensor,
                  clip: float, at: str) -> None:
    if not torch.isfinite(loss):
        raise DivergenceError(f"{name}: loss is {loss.item()} at {at}; last good state in {state_dir(folder)}")
    opt.zero_grad(set_to_none=True)
    loss.backward()
    if clip > 0:
        torch.nn.utils.clip_grad_norm_(module.parameters(), clip)
    opt.step()


# ------------------------------------------------------------------------------------------------ a stage's files
def save_ckpt(path: Path, payload: dict[str, Any]) -> None:
    """torch.save through a temp file + fsync + rename: a crash leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save(payload, f)


def load_ckpt(path: Path, kind: str) -> dict[str, Any]:
    """A stage product of ``kind`` or a one-line CheckpointError (missing, unreadable, another kind)."""
    if not path.is_file():
        raise CheckpointError(f"{path}: {kind} checkpoint not found")
    try:
        payload = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # truncated / foreign files
        raise CheckpointError(f"{path}: not a readable {kind} checkpoint ({type(e).__name__}: {str(e)[:80]})") from None
    got = payload.get("kind") if isinstance(payload, dict) else None
    if got != kind:
        raise CheckpointError(f"{path}: a {got!r} checkpoint, expected a {kind!r} one")
    return payload


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=float))


def plot_csv(path: Path, step_key: str, keys: Sequence[str], png: Path) -> None:
    """``keys`` of a stage's ``train.csv`` against its ``step_key`` column, to ``png``."""
    import matplotlib

    from robotrl.logger import CSVWriter

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = CSVWriter(path).read()
    if not rows:
        return
    fig, ax = plt.subplots(figsize=(6, 3.5))
    steps = [float(r[step_key]) for r in rows]
    for k in keys:
        ax.plot(steps, [float(r[k]) for r in rows], label=k)
    ax.set_xlabel(step_key)
    ax.set_yscale("log" if all(float(r[k]) > 0 for r in rows for k in keys) else "linear")
    ax.legend()
    fig.tight_layout()
    with atomic_write(png) as f:
        fig.savefig(f, format="png", dpi=90)
    plt.close(fig)
