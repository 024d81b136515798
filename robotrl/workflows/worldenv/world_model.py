"""``robotrl worldenv train-model``: the action-conditioned video world model (AutoencoderKL latents + latent
dynamics) on all collected data (expert + noisy + policy rollouts), ``model.horizon`` autoregressive steps per
sequence; then whether its frames follow the actions (``model/report.json``). Resumes from its stage state;
``model/model.pt`` is written at the end, ``model/config.yaml`` records the settings it trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.errors import ConfigError
from robotrl.workflows.worldenv.checks import DYNAMICS
from robotrl.workflows.worldenv.data import data_digest, load_data
from robotrl.workflows.worldenv.fit import fit, load_ckpt, save_ckpt, write_json
from robotrl.workflows.worldenv.settings import load_config, record_settings, setup_torch


def model_class(dynamics: Any):
    """The world-model class of ``model.dynamics`` (``latent``: deterministic FiLM net, ``diffusion``: latent
    denoiser), or a one-line ConfigError."""
    if dynamics == "latent":
        from robotrl.agents.video_world_model import VideoWorldModel

        return VideoWorldModel
    if dynamics == "diffusion":
        from robotrl.agents.diffusion_world_model import DiffusionWorldModel

        return DiffusionWorldModel
    raise ConfigError(f"model.dynamics={dynamics!r}, expected one of {list(DYNAMICS)}")


def build_model(cfg: Any, device: torch.device, pdim: int, adim: int):
    m = cfg.model
    dynamics = m.get("dynamics", "latent")
    cls = model_class(dynamics)
    extra: dict[str, Any] = {}
    if dynamics == "diffusion":
        steps = m.get("denoise_steps", 4)
        if not isinstance(steps, int) or isinstance(steps, bool) or steps < 1:
            raise ConfigError(f"model.denoise_steps={steps!r}, expected an integer >= 1 (DDIM steps per frame)")
        noise = m.get("context_noise", 0.0)
        if isinstance(noise, bool) or not isinstance(noise, int | float) or noise < 0:
            raise ConfigError(f"model.context_noise={noise!r}, expected a number >= 0 (0: off)")
        extra = {"denoise_steps": steps, "seed": int(cfg.seed), "context_noise": float(noise)}
    return cls(int(cfg.image_size), adim, pdim, int(m.context), int(m.latent_channels), tuple(m.block_channels),
               int(m.hidden), device=device, **extra)


def padded(ep: Any, pidx: np.ndarray, context: int) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(frames, actions, proprio) with ``context - 1`` copies of the first frame in front (as at reset, where
    the simulator gives one frame) and zero actions under them (never a prediction target)."""
    pad = context - 1
    frames = np.concatenate([np.repeat(ep.obs["pixels"][:1], pad, 0), ep.obs["pixels"]])
    prop = ep.obs["state"][:, pidx]
    prop = np.concatenate([np.repeat(prop[:1], pad, 0), prop])
    actions = np.concatenate([np.zeros((pad, ep.action.shape[1]), np.float32), ep.action])
    return frames, actions, prop


def sequence_batch(seqs: list, length: int, batch: int, rng: np.random.Generator, device: torch.device):
    frames, actions, props = [], [], []
    for i in rng.integers(len(seqs), size=batch):
        f, a, p = seqs[i]
        s = int(rng.integers(len(f) - length + 1))
        frames.append(f[s:s + length])
        actions.append(a[s:s + length - 1])
        props.append(p[s:s + length])
    return (torch.as_tensor(np.stack(frames), device=device), torch.as_tensor(np.stack(actions), device=device),
            torch.as_tensor(np.stack(props), device=device))


def model_sequences(out: Path, cfg: Any, context: int, length: int, split: str = "train",
                    holdout_every: int | None = None, data: list | None = None) -> list:
    """Padded (frames, actions, proprio) of the collected episodes of ``split``: ``val`` is every
    ``holdout_every``-th episode (in load order), ``train`` the rest (all of them when ``holdout_every`` is 0).
    ``data`` is ``load_data``'s episodes when the caller has them already."""
    every = int(cfg.model.holdout_every if holdout_every is None else holdout_every)
    data = load_data(out, tasks=cfg.tasks) if data is None else data
    held = [bool(every) and i % every == every - 1 for i in range(len(data))]
    seqs = [padded(ep, pidx, context) for (_, _, ep, pidx), h in zip(data, held, strict=True)
            if h == (split == "val")]
    if not seqs:
        raise ConfigError(f"no {split} episodes among the {len(data)} collected (model.holdout_every={every}); "
                          f"collect more episodes or change model.holdout_every")
    seqs = [s for s in seqs if len(s[0]) >= length]
    if not seqs:
        raise ConfigError(f"no {split} episode has {length} frames (context + horizon); lower model.horizon or "
                          f"collect more episodes")
    return seqs


def train_model(out: str | Path, overrides: list[str] = ()) -> dict[str, float]:
    out = Path(out)
    cfg = load_config(out, overrides, "train-model")
    device = setup_torch(cfg)
    m = cfg.model
    length = int(m.context) + int(m.horizon)
    data = load_data(out, tasks=cfg.tasks)  # once: training sequences and the action report's held-out ones
    seqs = model_sequences(out, cfg, int(m.context), length, data=data)
    model = build_model(cfg, device, seqs[0][2].shape[1], seqs[0][1].shape[1])
    model.fit_normaliser(np.concatenate([s[2] for s in seqs]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(m.lr), weight_decay=1e-5)
    rng = np.random.default_rng(int(cfg.seed))

    def loss_fn(step: int):
        return model.loss(*sequence_batch(seqs, length, int(m.batch_size), rng, device), float(m.kl_weight))

    record_settings(cfg, out, "train-model")
    metrics = fit("model", out / "model", model, opt, int(m.steps), lambda step: [loss_fn(step)],
                  clip=float(m.grad_clip), every=25, setting="model.steps", generator=rng,
                  inputs={"data": data_digest(out, tasks=cfg.tasks)})
    save_ckpt(out / "model" / "model.pt", {"kind": "world_model", "config": model.config,
                                           "holdout_every": int(m.holdout_every), "model": model.state_dict()})
    final = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    print(f"model: trained ({m.dynamics}), final {final} -> {out / 'model' / 'model.pt'}")
    split = "val" if int(m.holdout_every) else "train"
    report = action_report(model.eval(), model_sequences(out, cfg, model.context, model.context + 1, split,
                                                         data=data), 30)
    report["frames_follow_actions"] = frames_follow(report["frame_mse"])[0]
    write_json(out / "model" / "report.json", {"episodes": split, **report})
    print(action_line(report, split, out / "model" / "report.json"))
    return metrics


FOLLOW_RATIO = 0.8  # frames follow the actions when their error with the recorded actions is under 0.8x another's


def frames_follow(frame_mse: dict[str, float | None]) -> tuple[bool, float, str]:
    """(do the predicted frames follow the actions, recorded-action frame error / the other actions', which other):
    the other episode's actions when there is one, else zero actions."""
    other = "other_episode" if frame_mse.get("other_episode") is not None else "zero"
    ratio = frame_mse["recorded"] / max(float(frame_mse[other]), 1e-12)
    return bool(ratio < FOLLOW_RATIO), float(ratio), other


def action_line(report: dict[str, Any], split: str, path: Any) -> str:
    """train-model's console line: the frame errors (what WorldEnv's success depends on) and the proprioception
    errors with recorded / another episode's / zero actions, and plainly whether the frames follow the actions."""
    f, p = report["frame_mse"], report["proprio_mse"]
    follows, ratio, other = frames_follow(f)

    def fmt(d: dict[str, float | None], spec: str) -> str:
        return " / ".join("n/a" if d.get(k) is None else format(d[k], spec) for k in ("recorded", "other_episode",
                                                                                       "zero"))

    said = (f"the frames follow the actions (frame error with the recorded actions x{ratio:.2f} of that with "
            f"{other.replace('_', ' ')}'s)" if follows else
            f"the frames do NOT follow the actions (frame error with the recorded actions x{ratio:.2f} of that with "
            f"{other.replace('_', ' ')}'s, not under x{FOLLOW_RATIO}): WorldEnv success will not depend on what a "
            f"policy does; train longer (model.steps)")
    return (f"model: {said}; on {report['n']} {split} episodes, {report['horizon']}-step open-loop frame error "
            f"{fmt(f, '.4f')}, proprio error (normalised) {fmt(p, '.3f')} with recorded / another episode's / zero "
            f"actions -> {path}")


def action_report(model: Any, seqs: list, horizon: int) -> dict[str, Any]:
    """Does the world model follow the actions? Open-loop rollouts from each episode's start with its recorded
    actions, with another episode's actions and with zero actions: frame and proprio errors against the recorded
    episode, averaged over ``horizon`` steps (capped by the shortest episode). A model that ignores actions scores
    the same with all three."""
    c = model.context
    horizon = min(horizon, min(len(f) for f, _, _ in seqs) - c)
    frames = np.stack([f[:c + horizon] for f, _, _ in seqs])
    actions = np.stack([a[c - 1:c - 1 + horizon] for _, a, _ in seqs])
    props = np.stack([p[c - 1:c + horizon] for _, _, p in seqs])
    std = model.p_std.cpu().numpy()
    out: dict[str, Any] = {"n": len(seqs), "horizon": horizon, "frame_mse": {}, "proprio_mse": {}}
    variants = [("recorded", actions), ("other_episode", np.roll(actions, 1, axis=0)), ("zero", np.zeros_like(actions))]
    if len(seqs) < 2:  # one episode has no other episode's actions: rolling would hand it its own
        variants.pop(1)
        out["frame_mse"]["other_episode"] = out["proprio_mse"]["other_episode"] = None
    for name, acts in variants:
        state = model.init(frames[:, :c], props[:, 0])
        f_err, p_err = [], []
        for t in range(horizon):
            state, frame, prop = model.step(state, acts[:, t])
            f_err.append(np.mean((frame.astype(np.float32) - frames[:, c + t]) ** 2) / 255.0**2)
            p_err.append(np.mean(((prop - props[:, t + 1]) / std) ** 2))
        out["frame_mse"][name], out["proprio_mse"][name] = float(np.mean(f_err)), float(np.mean(p_err))
    return out


def load_model(path: Path, device: torch.device, denoise_steps: int | None = None):
    """The world model of a ``model.pt`` (checkpoints from before ``model.dynamics`` are ``latent`` ones);
    ``denoise_steps`` overrides a diffusion model's DDIM steps (the sampler needs no retraining)."""
    payload = load_ckpt(path, "world_model")
    c = dict(payload["config"])
    cls = model_class(c.pop("dynamics", "latent"))
    if denoise_steps is not None:
        if "denoise_steps" not in c:
            raise ConfigError(f"denoise_steps={denoise_steps} given for {path}, a deterministic (latent) world model")
        c["denoise_steps"] = denoise_steps
    model = cls(c.pop("image_size"), c.pop("action_dim"), c.pop("proprio_dim"), device=device,
                **{**c, "block_channels": tuple(c["block_channels"])})
    model.load_state_dict(payload["model"])
    return model.eval()


