"""A small vision-language-action policy: open_clip image features + the instruction's text embedding +
proprioception -> a chunk of ``chunk`` actions, as OpenVLA-OFT does it (continuous actions, action chunking, L1
regression), at toy scale.

The backbone is an open_clip model built by the core loader (:mod:`robotrl.open_clip_loader`): ``visual`` is
fine-tuned, the text tower is only used to embed instructions once. For RL the deterministic head is made stochastic
as in World-Env: a Laplace distribution whose location is the head's output and whose log-scale is a trained
parameter per chunk entry.

Two users: the World-Env stages (``robotrl worldenv train-vla`` ...) and :class:`VLAAgent`, ``agent=vla`` of
``robotrl train`` (behaviour cloning only). Both build the policy with :func:`build_vla`, embed instructions with
:func:`text_embeddings` and sample BC batches with :func:`bc_batch`.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F
from torch.distributions import Laplace

from robotrl.errors import CheckpointError, ConfigError, ObservationError
from robotrl.params import given, require
from robotrl.types import Capabilities

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)  # open_clip's OPENAI_DATASET_MEAN / STD
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def clip_pixels(frames: torch.Tensor, size: int) -> torch.Tensor:
    """uint8 [B, 3, H, W] -> the normalised [B, 3, size, size] float input of an open_clip vision tower."""
    x = frames.float() / 255.0
    if x.shape[-1] != size or x.shape[-2] != size:
        x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False)
    mean = torch.tensor(CLIP_MEAN, device=x.device)[:, None, None]
    std = torch.tensor(CLIP_STD, device=x.device)[:, None, None]
    return (x - mean) / std


class VLAPolicy(nn.Module):
    """image uint8 [B, 3, H, W] + instruction embedding [B, D] + proprio [B, P] -> action chunk [B, chunk, A]."""

    def __init__(self, visual: nn.Module, vision_size: int, feat_dim: int, text_dim: int, proprio_dim: int,
                 action_dim: int, chunk: int = 4, hidden: int = 256, init_log_scale: float = -1.6):
        super().__init__()
        self.visual, self.vision_size = visual, vision_size
        self.chunk, self.action_dim, self.proprio_dim = chunk, action_dim, proprio_dim
        self.head = nn.Sequential(nn.Linear(feat_dim + text_dim + proprio_dim, hidden), nn.LayerNorm(hidden), nn.GELU(),
                                  nn.Linear(hidden, hidden), nn.GELU(), nn.Linear(hidden, chunk * action_dim))
        self.log_scale = nn.Parameter(torch.full((chunk, action_dim), float(init_log_scale)))
        self.register_buffer("p_mean", torch.zeros(proprio_dim))
        self.register_buffer("p_std", torch.ones(proprio_dim))

    def fit_normaliser(self, proprio: np.ndarray) -> None:
        self.p_mean.copy_(torch.as_tensor(proprio.mean(0)))
        self.p_std.copy_(torch.as_tensor(proprio.std(0) + 1e-3))

    def forward(self, frames: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor) -> torch.Tensor:
        """The chunk's mean actions in [-1, 1]."""
        if frames.dtype != torch.uint8 or frames.ndim != 4 or frames.shape[1] != 3:
            raise ObservationError(f"VLA frames have dtype {frames.dtype} shape {tuple(frames.shape)}, expected "
                                   f"uint8 [B, 3, H, W]")
        feat = self.visual(clip_pixels(frames, self.vision_size))
        p = (proprio - self.p_mean) / self.p_std
        out = self.head(torch.cat([feat, text, p], dim=-1))
        return torch.tanh(out).view(-1, self.chunk, self.action_dim)

    @torch.no_grad()
    def plan(self, frame: np.ndarray, text: torch.Tensor, proprio: np.ndarray) -> torch.Tensor:
        """The mean action chunk [chunk, A] for one observation: ``frame`` uint8 [3, H, W] (the newest frame),
        ``text`` the instruction's embedding [D], ``proprio`` [P] (empty for a pixels-only policy)."""
        device = self.p_mean.device
        frames = torch.as_tensor(np.asarray(frame), device=device)[None]
        p = torch.as_tensor(np.asarray(proprio, np.float32), device=device)[None]
        return self(frames, text.to(device)[None], p)[0]

    def dist(self, frames: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor) -> Laplace:
        return Laplace(self(frames, text, proprio), self.log_scale.exp().expand(frames.shape[0], -1, -1))

    def bc_loss(self, frames: torch.Tensor, text: torch.Tensor, proprio: torch.Tensor, chunks: torch.Tensor,
                mask: torch.Tensor) -> torch.Tensor:
        """L1 regression to the demo's next ``chunk`` actions (``mask`` drops steps past the episode end)."""
        err = (self(frames, text, proprio) - chunks).abs().mean(-1)
        return (err * mask).sum() / mask.sum().clamp(min=1)




# ------------------------------------------------------------------------------------------------ shared pieces
def build_vla(clip_cfg: dict[str, Any], proprio_dim: int, action_dim: int, chunk: int = 4, hidden: int = 256,
              init_log_scale: float = -1.6, key: str = "clip") -> tuple[VLAPolicy, nn.Module, Any, str]:
    """(policy, its open_clip model, tokenizer, which weights were loaded), on the CPU.

    ``clip_cfg``: ``model_name``, ``pretrained`` (an open_clip tag in the local cache or a checkpoint file; null:
    none), ``allow_random_weights`` (false: no weights is a one-line ConfigError, never silently random),
    ``cache_dir``, ``model_cfg`` (a custom open_clip architecture). ``key`` names the settings in errors."""
    from robotrl.open_clip_loader import build_clip, vision_size

    known = {"model_name", "pretrained", "allow_random_weights", "cache_dir", "model_cfg"}
    unknown = sorted(set(clip_cfg) - known)
    if unknown:
        raise ConfigError(f"{key} has unknown keys {unknown}; expected some of {sorted(known)}")
    clip, tokenizer, weights = build_clip(**clip_cfg, key=key)
    text_dim = int(clip.text_projection.shape[1])
    feat_dim = int(clip.visual.output_dim)
    policy = VLAPolicy(clip.visual, vision_size(clip), feat_dim, text_dim, proprio_dim, action_dim, int(chunk),
                       int(hidden), float(init_log_scale))
    return policy, clip, tokenizer, weights


def text_embeddings(clip: nn.Module, tokenizer: Any, instructions: Sequence[str]) -> dict[str, torch.Tensor]:
    """Instruction -> its normalised CLIP text embedding (on the CPU), computed once."""
    device = next(clip.parameters()).device
    with torch.no_grad():
        emb = F.normalize(clip.encode_text(tokenizer(list(instructions)).to(device)).float(), dim=-1)
    return {t: e.cpu() for t, e in zip(instructions, emb, strict=True)}


def bc_batch(data: Sequence[tuple[str, Any, np.ndarray | None]], text: dict[str, torch.Tensor], chunk: int,
             batch: int, rng: np.random.Generator, device: torch.device | str) -> tuple[torch.Tensor, ...]:
    """(frames, text, proprio, action chunks, mask) for ``batch`` random steps of ``data``.

    ``data``: (instruction, episode, proprio index into ``obs["state"]`` or None for all of it) per episode; a
    chunk running past the episode's end is zero-padded and masked out."""
    frames, texts, props, chunks, masks = [], [], [], [], []
    for i in rng.integers(len(data), size=batch):
        instr, ep, pidx = data[i]
        t = int(rng.integers(len(ep.action)))
        a = ep.action[t:t + chunk]
        pad = chunk - len(a)
        frames.append(ep.obs["pixels"][t][-3:])
        texts.append(text[instr])
        state = ep.obs["state"][t]
        props.append(state if pidx is None else state[pidx])
        chunks.append(np.concatenate([a, np.zeros((pad, a.shape[1]), np.float32)]))
        masks.append(np.r_[np.ones(len(a)), np.zeros(pad)])
    as_t = lambda x, dt=torch.float32: torch.as_tensor(np.stack(x), dtype=dt, device=device)  # noqa: E731
    return (as_t(frames, torch.uint8), torch.stack(texts).to(device), as_t(props), as_t(chunks), as_t(masks))


def resolve_tasks(tasks: Any, env_task: str | None) -> list[str]:
    """``agent.tasks``: null -> the env's own task; ``mt10`` -> Meta-World's MT10; else a list of task names."""
    from robotrl.world import MT10

    if tasks is None:
        if not env_task:
            raise ConfigError("agent.tasks=null means the env's own task, but the env config has no task")
        return [str(env_task)]
    if tasks == "mt10" or (isinstance(tasks, list | tuple) and list(tasks) == ["mt10"]):
        return list(MT10)
    if isinstance(tasks, str):
        tasks = [tasks]
    if not isinstance(tasks, list | tuple) or not tasks or not all(isinstance(t, str) and t for t in tasks):
        raise ConfigError(f"agent.tasks={tasks!r}, expected null (the env's task), mt10 or a list of task names")
    return list(dict.fromkeys(tasks))  # each task once, in order


def resolve_instructions(tasks: Sequence[str], instructions: dict[str, Any] | None) -> dict[str, str]:
    """Task -> checked instruction: ``agent.instructions`` over the MT10 defaults of configs/worldenv/default.yaml."""
    from robotrl.world import check_instruction, default_instructions

    table: dict[str, Any] = {**default_instructions(), **dict(instructions or {})}
    missing = [t for t in tasks if t not in table]
    if missing:
        raise ConfigError(f"no instruction for task(s) {missing}; give agent.instructions.<task>='...' (known: "
                          f"{', '.join(sorted(table))})")
    out = {}
    for t in tasks:
        try:
            out[t] = check_instruction(table[t])
        except ConfigError as e:
            raise ConfigError(f"agent.instructions.{t}: {e}") from None
    return out


# ------------------------------------------------------------------------------------------------ agent=vla
def _plain(value: Any) -> Any:
    """A hydra DictConfig/ListConfig as plain dicts and lists (anything else unchanged)."""
    from omegaconf import DictConfig, ListConfig, OmegaConf

    return OmegaConf.to_container(value, resolve=True) if isinstance(value, DictConfig | ListConfig) else value


VLA_OBS_TYPES = ("pixels", "pixels_proprio")


def check_obs_type(obs_type: Any) -> None:
    """One-line ConfigError unless ``env.obs_type`` is one the VLA reads (no privileged object state)."""
    if obs_type not in VLA_OBS_TYPES:
        raise ConfigError(f"agent=vla needs env.obs_type pixels (image + instruction) or pixels_proprio (image + "
                          f"instruction + proprioception), got {obs_type!r}")


class VLAAgent:
    """``agent=vla``: the VLA trained by **pure behaviour cloning** on demos inside ``robotrl train`` (no RL: the
    env's rewards and the replay buffer the trainer fills are never learned from; the trainer's env steps only pace
    the updates and its evaluations measure the policy).

    Observations: ``env.obs_type`` pixels (image + instruction) or pixels_proprio (image + instruction +
    proprioception); the newest frame of the stack is what the policy sees. ``act`` returns the next action of
    the current chunk and re-plans when the chunk is used up; ``reset`` (every episode) drops the rest of a chunk.
    The env's task (``task``) is acted on with its instruction, also when it is not one of the demo ``tasks``.

    Demos: per task in ``tasks`` (default: the env's own task; ``mt10`` or a list of Meta-World tasks: one policy
    on all of them at once, each with its instruction from ``instructions`` over configs/worldenv/default.yaml),
    read from ``demos/<task>/`` (or ``demos/`` itself with one task) or, with ``demos=null``, from
    ``demo_cache/<task>/`` where the training workflow generates ``num_demos`` scripted-expert episodes first
    (:func:`robotrl.workflows.demos.ensure_demos`).

    ``update`` takes ``updates_per_step`` AdamW steps of L1 chunk regression (batches of ``batch_size`` steps
    drawn uniformly over all tasks' demo steps) until ``bc_steps`` in total (null: no limit), then returns ``{}``.
    """

    capabilities = Capabilities(per_task_demos=True)  # demos per task, made before it is built

    def __init__(self, observation_space: gym.spaces.Dict, action_space: gym.spaces.Box, device: str,
                 clip: dict[str, Any], obs_type: str = "pixels", task: str | None = None, tasks: Any = None,
                 instructions: dict[str, str] | None = None, demos: str | None = None, demo_cache: str | None = None,
                 num_demos: int = 5, demo_seed: int = 0, chunk: int = 4, hidden: int = 256,
                 bc_steps: int | None = 2000, updates_per_step: int = 1, batch_size: int = 64, lr: float = 3e-4,
                 weight_decay: float = 1e-4, grad_clip_norm: float = 1.0, init_log_scale: float = -1.6,
                 seed: int = 0, nstep: int = 1, discount: float = 0.99):
        require("agent", positive_int={"chunk": chunk, "batch_size": batch_size, "num_demos": num_demos,
                                       "hidden": hidden, "nstep": nstep},
                nonneg_int={"updates_per_step": updates_per_step, "demo_seed": demo_seed, **given(bc_steps=bc_steps)},
                positive={"lr": lr, "grad_clip_norm": grad_clip_norm}, nonneg={"weight_decay": weight_decay},
                finite={"init_log_scale": init_log_scale}, unit={"discount": discount})
        del nstep, discount  # the trainer's replay settings; a BC agent never reads the replay
        clip, instructions, tasks = _plain(clip), _plain(instructions), _plain(tasks)  # hydra hands DictConfigs
        check_obs_type(obs_type)
        if "pixels" not in observation_space.spaces or (obs_type == "pixels_proprio") != (
                "state" in observation_space.spaces):
            raise ConfigError(f"agent=vla: observation space {list(observation_space.spaces)} does not match "
                              f"obs_type={obs_type!r}")
        self.device = torch.device(device)
        self.obs_type = obs_type
        self.tasks = resolve_tasks(tasks, task)
        acting_task = str(task) if task else self.tasks[0]  # the env's task, acted on with its instruction
        self.instructions = resolve_instructions(list(dict.fromkeys([*self.tasks, acting_task])), instructions)
        self.instruction = self.instructions[acting_task]
        self.demos, self.demo_cache, self.num_demos = demos, demo_cache, int(num_demos)
        self.chunk, self.batch_size = int(chunk), int(batch_size)
        self.bc_steps = None if bc_steps is None else int(bc_steps)
        self.updates_per_step, self.grad_clip_norm = int(updates_per_step), float(grad_clip_norm)
        self.pixel_shape = tuple(observation_space["pixels"].shape[-2:])
        proprio_dim = int(observation_space["state"].shape[0]) if obs_type == "pixels_proprio" else 0
        action_dim = int(action_space.shape[0])
        policy, clip_model, tokenizer, self.weights = build_vla(dict(clip), proprio_dim, action_dim, self.chunk,
                                                                int(hidden), float(init_log_scale), key="agent.clip")
        self.policy = policy.to(self.device)
        self.text = text_embeddings(clip_model.to(self.device), tokenizer, list(self.instructions.values()))
        del clip_model  # the text tower is not needed again; ``policy.visual`` keeps the vision tower
        self.opt = torch.optim.AdamW(self.policy.parameters(), lr=float(lr), weight_decay=float(weight_decay))
        self.rng = np.random.default_rng(int(seed))
        self.num_updates = 0
        self.data: list[tuple[str, Any, np.ndarray | None]] | None = None
        self._plan: list[np.ndarray] = []

    # ------------------------------------------------------------------ demos
    def demo_dir(self, task: str) -> Path:
        """Where ``task``'s demos are read from (see the class docstring)."""
        if self.demos is not None:
            root = Path(self.demos)
            if (root / task / "meta.json").is_file() or len(self.tasks) > 1:
                return root / task
            return root
        if self.demo_cache is None:
            raise ConfigError("agent=vla with demos=null needs agent.demo_cache (where `robotrl train` generates "
                              "demos); or pass agent.demos=<dir>")
        return Path(self.demo_cache) / task

    def load_demos(self) -> list[tuple[str, Any, np.ndarray | None]]:
        """(instruction, episode, proprio index) for every demo of every task, checked against this agent's
        spaces (the index selects nothing for obs_type pixels; None: the whole proprio ``state``)."""
        from robotrl.demos import load_demos

        data = []
        for task in self.tasks:
            folder = self.demo_dir(task)
            if not (folder / "meta.json").is_file():
                raise ConfigError(f"agent=vla: no demos for task {task!r} in {folder} (no meta.json); with "
                                  f"agent.demos=null `robotrl train` generates them, or pass agent.demos=<dir>")
            episodes = load_demos(folder, proprio=self.obs_type == "pixels_proprio")[: self.num_demos]
            ep = episodes[0]
            if ep.obs["pixels"].shape[-2:] != self.pixel_shape or ep.action.shape[1] != self.policy.action_dim or (
                    self.policy.proprio_dim and ep.obs["state"].shape[1] != self.policy.proprio_dim):
                raise ConfigError(f"demos in {folder}: frames {ep.obs['pixels'].shape[-2:]}, state "
                                  f"{ep.obs['state'].shape[1]}, actions {ep.action.shape[1]}; the env has frames "
                                  f"{self.pixel_shape}, proprio {self.policy.proprio_dim}, actions "
                                  f"{self.policy.action_dim} (regenerate them at the env's settings)")
            keep = None if self.policy.proprio_dim else np.zeros(0, np.int64)  # obs_type pixels: no proprio
            data += [(self.instructions[task], e, keep) for e in episodes]
        return data

    def _ensure_data(self) -> list[tuple[str, Any, np.ndarray | None]]:
        if self.data is None:
            self.data = self.load_demos()
            if self.policy.proprio_dim:
                self.policy.fit_normaliser(np.concatenate([ep.obs["state"] for _, ep, _ in self.data]))
        return self.data

    # ------------------------------------------------------------------ acting
    def reset(self) -> None:
        self._plan = []

    @torch.no_grad()
    def act(self, obs: dict[str, np.ndarray], step: int, eval_mode: bool) -> np.ndarray:
        """The next action of the current chunk (the chunk's mean actions; the same in training and evaluation,
        since nothing collected is learned from); a new chunk from this observation once the last is used up."""
        if not self._plan:
            proprio = obs["state"] if self.policy.proprio_dim else np.zeros(0, np.float32)
            chunk = self.policy.plan(obs["pixels"][-3:], self.text[self.instruction], proprio)
            self._plan = list(chunk.cpu().numpy().astype(np.float32))
        return np.clip(self._plan.pop(0), -1.0, 1.0)

    # ------------------------------------------------------------------ learning
    def bc_loss(self) -> torch.Tensor:
        """L1 loss of one batch of demo steps (all tasks, each with its instruction)."""
        return self.policy.bc_loss(*bc_batch(self._ensure_data(), self.text, self.chunk, self.batch_size, self.rng,
                                             self.device))

    def update(self, replay: Any, step: int) -> dict[str, float]:
        """``updates_per_step`` BC steps on the demos (``replay``, the agent's own transitions, is not used)."""
        del replay, step
        losses = []
        for _ in range(self.updates_per_step):
            if self.bc_steps is not None and self.num_updates >= self.bc_steps:
                break
            self.policy.train()
            loss = self.bc_loss()
            self.opt.zero_grad(set_to_none=True)
            loss.backward()
            torch.nn.utils.clip_grad_norm_(self.policy.parameters(), self.grad_clip_norm)
            self.opt.step()
            self.num_updates += 1
            losses.append(loss.item())
        self.policy.eval()
        if not losses:
            return {}
        return {"bc_loss": float(np.mean(losses)), "bc_updates": float(self.num_updates)}

    # ------------------------------------------------------------------ checkpoints
    def state_dict(self) -> dict[str, Any]:
        return {"kind": "vla", "policy": self.policy.state_dict(), "opt": self.opt.state_dict(),
                "text": dict(self.text), "num_updates": self.num_updates, "rng": self.rng.bit_generator.state}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if state.get("kind") != "vla":
            raise CheckpointError(f"agent state of kind {state.get('kind')!r}, expected 'vla'")
        if set(state["text"]) != set(self.text):
            raise CheckpointError(f"checkpoint VLA was trained on instructions {sorted(state['text'])}, this agent "
                                  f"has {sorted(self.text)} (agent.tasks / agent.instructions differ)")
        self.policy.load_state_dict(state["policy"])
        self.opt.load_state_dict(state["opt"])
        self.text = {k: v.cpu() for k, v in state["text"].items()}
        self.num_updates = int(state["num_updates"])
        self.rng.bit_generator.state = state["rng"]
        self.policy.eval()


__all__ = ["VLAAgent", "VLAPolicy", "bc_batch", "build_vla", "check_obs_type", "clip_pixels", "resolve_instructions",
           "resolve_tasks", "text_embeddings"]
