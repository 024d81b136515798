"""Shared pieces of the World-Env stages: the config, data loading, crash-safe stage checkpoints, the VLA and its
actor, and simulator rollouts."""

from __future__ import annotations

import csv
import json
import random
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.atomic import atomic_write, atomic_write_text
from robotrl.config import resolve_device
from robotrl.demos import _load_meta, load_demos
from robotrl.errors import CheckpointError, ConfigError
from robotrl.heartbeat import Heartbeat
from robotrl.overrides import config_dir
from robotrl.types import Episode
from robotrl.world import MT10

DYNAMICS = ("latent", "diffusion")  # model.dynamics: the world models train-model can build
KINDS = ("expert", "noisy", "policy", "random")  # data/<kind>/<task>/ in the demo format, "instruction" in meta.json


# ------------------------------------------------------------------------------------------------ config
def default_config() -> Any:
    from omegaconf import OmegaConf

    return OmegaConf.load(config_dir() / "worldenv" / "default.yaml")


def load_config(out: Path, overrides: Sequence[str] = ()) -> Any:
    """default.yaml <- out/config.yaml (a resumed run keeps its settings) <- ``key=value`` overrides; checked
    (``checks``: types, ranges, changes against what ``out`` holds), then saved back."""
    from omegaconf import OmegaConf
    from omegaconf.errors import OmegaConfBaseException

    from robotrl.workflows.worldenv.checks import check_against_run, check_config

    cfg = default_config()
    OmegaConf.set_struct(cfg, True)
    saved = out / "config.yaml"
    before = None
    try:
        if saved.is_file():
            cfg = before = OmegaConf.merge(cfg, OmegaConf.load(saved))
        cfg = OmegaConf.merge(cfg, OmegaConf.from_dotlist(list(overrides)))
    except OmegaConfBaseException as e:
        raise ConfigError(f"bad worldenv setting {list(overrides)}: {str(e).splitlines()[0]} "
                          f"(see `robotrl worldenv --help` for the keys)") from None
    if cfg.tasks == "mt10" or cfg.tasks == ["mt10"]:
        cfg.tasks = list(MT10)
    unknown = [t for t in cfg.tasks if t not in cfg.instructions]
    if unknown or not cfg.tasks:
        raise ConfigError(f"tasks={list(cfg.tasks)}: {unknown or 'empty'}; expected Meta-World tasks with an "
                          f"instruction in `instructions` ({', '.join(cfg.instructions)}) or mt10")
    check_config(cfg)
    if before is not None:
        check_against_run(out, before, cfg)
    out.mkdir(parents=True, exist_ok=True)
    atomic_write_text(saved, OmegaConf.to_yaml(cfg))
    return cfg


def setup_torch(cfg: Any) -> torch.device:
    if cfg.torch_threads:
        torch.set_num_threads(int(cfg.torch_threads))
    torch.manual_seed(int(cfg.seed))
    np.random.seed(int(cfg.seed))
    random.seed(int(cfg.seed))
    return resolve_device(str(cfg.device))


def clip_cfg(cfg: Any) -> dict[str, Any]:
    from omegaconf import OmegaConf

    return OmegaConf.to_container(cfg.clip, resolve=True)  # type: ignore[return-value]


def check_clip(cfg: Any) -> None:
    """The one-line error that missing CLIP weights would raise, naming worldenv's ``clip.*`` keys, before a stage
    loads its data."""
    from robotrl.open_clip_loader import check_clip_weights

    check_clip_weights(**clip_cfg(cfg), key="clip")


def env_cfg(cfg: Any, task: str) -> Any:
    """The Meta-World env config of ``task`` at the World-Env settings (one frame, pixels + full state)."""
    from robotrl.overrides import compose_config

    over = [f"env=metaworld/{task}", f"env.image_size={cfg.image_size}", "env.frame_stack=1",
            f"env.action_repeat={cfg.action_repeat}", "env.obs_type=pixels_state",
            f"env.max_episode_steps={cfg.max_episode_steps}"]
    if cfg.camera:
        over.append(f"env.camera={cfg.camera}")
    return compose_config(over).env


def make_sim(cfg: Any, task: str, seed: int) -> Any:
    from robotrl.envs import make_env

    return make_env(env_cfg(cfg, task), seed)


# ------------------------------------------------------------------------------------------------ data
def load_data(root: Path, kinds: Sequence[str] = KINDS, tasks: Sequence[str] | None = None,
              ) -> list[tuple[str, str, Episode, np.ndarray]]:
    """(task, instruction, episode, proprio_index) for every episode collected under ``root/data``."""
    out = []
    for kind in kinds:
        for folder in sorted((root / "data" / kind).glob("*")):
            if not (folder / "meta.json").is_file():
                continue  # a collection interrupted before its meta.json: not data yet
            meta = _load_meta(folder)
            if tasks is not None and meta["task"] not in tasks:
                continue
            pidx = np.asarray(meta["proprio_index"], np.int64)
            out.extend((meta["task"], meta["instruction"], ep, pidx) for ep in load_demos(folder))
    if not out:
        raise ConfigError(f"{root / 'data'}: no collected episodes of kinds {list(kinds)}; run "
                          f"`robotrl worldenv collect out={root}` first")
    return out


# ------------------------------------------------------------------------------------------------ checkpoints
def save_ckpt(path: Path, payload: dict[str, Any]) -> None:
    """torch.save through a temp file + fsync + rename: a crash leaves the previous file intact."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with atomic_write(path) as f:
        torch.save(payload, f)


def load_ckpt(path: Path, kind: str) -> dict[str, Any]:
    """A stage checkpoint of ``kind`` or a one-line CheckpointError (missing, unreadable, another kind)."""
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


def rng_state() -> dict[str, Any]:
    return {"torch": torch.get_rng_state(), "numpy": np.random.get_state()[1].tolist(),
            "numpy_pos": int(np.random.get_state()[2]), "python": list(random.getstate()[1])}


def set_rng_state(state: dict[str, Any]) -> None:
    torch.set_rng_state(state["torch"])
    np.random.set_state(("MT19937", np.asarray(state["numpy"], np.uint32), state["numpy_pos"], 0, 0.0))
    random.setstate((3, tuple(state["python"]), None))


def append_csv(path: Path, row: dict[str, Any]) -> None:
    new = not path.is_file()
    with open(path, "a", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(row))
        if new:
            w.writeheader()
        w.writerow(row)


def truncate_csv(path: Path, step_key: str, upto: int) -> None:
    """Drop rows past a resumed checkpoint (they are logged again)."""
    if not path.is_file():
        return
    with open(path) as f:
        rows = list(csv.DictReader(f))
    keep = [r for r in rows if int(float(r[step_key])) <= upto]
    text = ""
    if keep:
        import io

        buf = io.StringIO()
        w = csv.DictWriter(buf, fieldnames=list(keep[0]))
        w.writeheader()
        w.writerows(keep)
        text = buf.getvalue()
    atomic_write_text(path, text)


def plot_csv(path: Path, step_key: str, keys: Sequence[str], png: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    with open(path) as f:
        rows = list(csv.DictReader(f))
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


def write_json(path: Path, obj: Any) -> None:
    atomic_write_text(path, json.dumps(obj, indent=1, default=float))


# ------------------------------------------------------------------------------------------------ VLA
def build_vla(cfg: Any, device: torch.device, proprio_dim: int, action_dim: int):
    """(VLA policy, its CLIP model, tokenizer) on ``device`` (built as ``agent=vla`` builds it)."""
    from robotrl.agents.vla import build_vla as build

    v = cfg.vla
    policy, clip, tokenizer, _ = build(clip_cfg(cfg), proprio_dim, action_dim, int(v.chunk), int(v.hidden),
                                       float(v.init_log_scale))
    return policy.to(device), clip.to(device), tokenizer


def text_embeddings(clip: Any, tokenizer: Any, instructions: Sequence[str]) -> dict[str, torch.Tensor]:
    from robotrl.agents.vla import text_embeddings as embed

    return embed(clip, tokenizer, instructions)


def vla_payload(cfg: Any, policy: Any, text: dict[str, torch.Tensor], **extra: Any) -> dict[str, Any]:
    return {"kind": "vla", "cfg": {"clip": clip_cfg(cfg), "chunk": int(cfg.vla.chunk), "hidden": int(cfg.vla.hidden),
                                   "proprio_dim": policy.proprio_dim, "action_dim": policy.action_dim},
            "model": policy.state_dict(), "text": text, **extra}


def load_vla(path: Path, device: torch.device) -> tuple[Any, dict[str, torch.Tensor]]:
    """(policy, instruction -> text embedding) from a ``vla`` checkpoint."""
    from omegaconf import OmegaConf

    payload = load_ckpt(path, "vla")
    c = payload["cfg"]
    cfg = OmegaConf.create({"clip": {**c["clip"], "allow_random_weights": True},  # overwritten by the state dict
                            "vla": {"chunk": c["chunk"], "hidden": c["hidden"], "init_log_scale": 0.0}})
    policy, _, _ = build_vla(cfg, device, c["proprio_dim"], c["action_dim"])
    policy.load_state_dict(payload["model"])
    return policy, payload["text"]


class VLAActor:
    """Acts with a VLA in a contract env: one chunk per call, the Laplace sample or its mean, plus extra noise."""

    def __init__(self, policy: Any, text: dict[str, torch.Tensor], instruction: str, proprio_index: np.ndarray,
                 sample: bool = False, noise: float = 0.0, seed: int = 0):
        from robotrl.world import check_instruction

        self.policy, self.sample, self.noise = policy, sample, noise
        check_instruction(instruction, list(text))
        self.device = next(policy.parameters()).device
        self.text = text[instruction]
        self.pidx = proprio_index
        self.gen = torch.Generator().manual_seed(seed)
        self.rng = np.random.default_rng(seed)

    @torch.no_grad()
    def __call__(self, obs: dict[str, np.ndarray], proprio: np.ndarray | None = None) -> np.ndarray:
        p = obs["state"][self.pidx] if proprio is None else proprio
        mean = self.policy.plan(obs["pixels"][-3:], self.text, p)  # as agent=vla plans
        if self.sample:
            scale = self.policy.log_scale.exp()
            u = torch.rand(mean.shape, generator=self.gen).to(self.device) - 0.5  # Laplace by inverse CDF
            mean = mean - scale * torch.sign(u) * torch.log1p(-2 * u.abs())
        chunk = mean.cpu().numpy()
        if self.noise:
            chunk = chunk + self.noise * self.rng.standard_normal(chunk.shape)
        return np.clip(chunk, -1.0, 1.0).astype(np.float32)


def score_frames(reflector: Any, frames: np.ndarray, instructions: Sequence[str], batch: int = 256) -> np.ndarray:
    """A reflector's scores of any number of frames (uint8 [N, H, W, 3]), ``batch`` at a time."""
    return np.concatenate([reflector.score(frames[i:i + batch], instructions[i:i + batch])
                           for i in range(0, len(frames), batch)]) if len(frames) else np.zeros(0, np.float32)


class TrivialActor:
    """The baselines beside every World-Env success number: ``random`` (uniform actions in [-1, 1], seeded) or
    ``zero`` (the arm holds still), one chunk of ``chunk`` actions per call like a VLA."""

    KINDS = ("random", "zero")

    def __init__(self, kind: str, action_dim: int, chunk: int, seed: int = 0):
        if kind not in self.KINDS:
            raise ConfigError(f"trivial policy {kind!r}, expected one of {list(self.KINDS)}")
        self.kind, self.shape = kind, (chunk, action_dim)
        self.rng = np.random.default_rng(seed)

    def __call__(self, obs: dict[str, np.ndarray], proprio: np.ndarray | None = None) -> np.ndarray:
        if self.kind == "zero":
            return np.zeros(self.shape, np.float32)
        return self.rng.uniform(-1.0, 1.0, self.shape).astype(np.float32)


# ------------------------------------------------------------------------------------------------ rollouts
def sim_rollout(env: Any, act_chunk: Callable[[dict[str, np.ndarray]], np.ndarray], seed: int,
                stop: Callable[[np.ndarray], bool] | None = None) -> tuple[Episode, bool]:
    """One episode in a contract env, acting one chunk at a time; (episode, stopped by ``stop``).

    ``stop(frame uint8 [H, W, 3]) -> bool`` ends the episode early (a reflector's termination)."""
    obs, _ = env.reset(seed=seed)
    pixels, states, actions, rewards, terms, successes = [obs["pixels"][-3:]], [obs["state"]], [], [], [], []
    done = stopped = False
    while not done:
        for action in act_chunk(obs):
            obs, reward, terminated, truncated, info = env.step(action)
            pixels.append(obs["pixels"][-3:])
            states.append(obs["state"])
            actions.append(action)
            rewards.append(reward)
            terms.append(terminated)
            successes.append(bool(info.get("success", False)))
            done = terminated or truncated
            if not done and stop is not None and stop(obs["pixels"][-3:].transpose(1, 2, 0)):
                done = stopped = True
            if done:
                break
    ep = Episode(obs={"pixels": np.stack(pixels), "state": np.stack(states).astype(np.float32)},
                 action=np.stack(actions).astype(np.float32), reward=np.asarray(rewards, np.float32),
                 terminated=np.asarray(terms, bool), success=np.asarray(successes, bool))
    return ep, stopped


# ------------------------------------------------------------------------------------------------ training loop
def resume_state(name: str, state_path: Path, log: Path, module: torch.nn.Module, opt: torch.optim.Optimizer,
                 counter: str, generator: np.random.Generator | None = None) -> int:
    """Restore model, optimiser, the global RNGs and the stage's own ``generator`` (its batch sampler) from
    ``state_path`` when it exists and drop the log rows written after it; the ``counter`` (step or iteration) to
    continue from, 0 for a fresh start."""
    if not state_path.is_file():
        return 0
    state = load_ckpt(state_path, f"{name}-state")
    module.load_state_dict(state["model"])
    opt.load_state_dict(state["opt"])
    set_rng_state(state["rng"])
    if generator is not None and "generator" in state:  # states written before it was saved restart the sampler
        generator.bit_generator.state = state["generator"]
    start = int(state[counter])
    truncate_csv(log, counter, start)
    return start


def save_state(name: str, state_path: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, counter: str,
               value: int, generator: np.random.Generator | None = None) -> None:
    """What ``resume_state`` reads back: model, optimiser, the counter and every RNG."""
    save_ckpt(state_path, {"kind": f"{name}-state", "model": module.state_dict(), "opt": opt.state_dict(),
                           counter: value, "rng": rng_state(),
                           **({"generator": generator.bit_generator.state} if generator is not None else {})})


def train_loop(name: str, folder: Path, module: torch.nn.Module, opt: torch.optim.Optimizer, steps: int,
               loss_fn: Callable[[int], tuple[torch.Tensor, dict[str, float]]],
               payload_fn: Callable[[], dict[str, Any]], every: int = 100,
               snapshot_every: int = 0, generator: np.random.Generator | None = None) -> dict[str, float]:
    """Gradient steps with progress lines, ``train.csv``, ``curve.png`` and a resumable ``state.pt`` (model,
    optimiser, step, RNGs including ``generator``, the stage's batch sampler) every ``every`` steps;
    ``payload_fn()`` (the stage's final checkpoint) is written at the end, and to ``snapshots/step_N.pt`` every
    ``snapshot_every`` steps. Rerunning continues from ``state.pt`` as if never stopped."""
    from robotrl.errors import DivergenceError

    folder.mkdir(parents=True, exist_ok=True)
    state_path, log = folder / "state.pt", folder / "train.csv"
    start = resume_state(name, state_path, log, module, opt, "step", generator)
    if start > steps:  # continuing would keep a longer run than asked for, silently
        raise CheckpointError(f"{name}: {state_path} is at step {start}, past {name} steps={steps}; expected steps "
                              f">= {start} (the stage continues from there) or a new out=DIR")
    if start:
        print(f"{name}: resuming at step {start}/{steps} from {state_path}")
    beat = Heartbeat(name)
    metrics: dict[str, float] = {}
    for step in range(start + 1, steps + 1):
        loss, metrics = loss_fn(step)
        if not torch.isfinite(loss):
            raise DivergenceError(f"{name}: loss is {loss.item()} at step {step}; last good state in {state_path}")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(module.parameters(), 1.0)
        opt.step()
        metrics = {"loss": loss.item(), **metrics}
        beat.tick(lambda s=step, m=metrics: f"step {s}/{steps} " + " ".join(f"{k}={v:.4g}" for k, v in m.items()))
        if snapshot_every and step % snapshot_every == 0 and step < steps:  # the last one is the final checkpoint
            save_ckpt(folder / "snapshots" / f"step_{step:07d}.pt", payload_fn())
        if step % every == 0 or step == steps:
            append_csv(log, {"step": step, **metrics})
            save_state(name, state_path, module, opt, "step", step, generator)
    if log.is_file():
        plot_csv(log, "step", [k for k in metrics if k != "loss"] or ["loss"], folder / "curve.png")
    return metrics






