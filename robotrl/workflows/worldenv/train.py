"""``robotrl worldenv train-vla | train-model | train-reflector``: the three learned pieces of World-Env.

* VLA: behaviour cloning (L1 on action chunks, as OpenVLA-OFT) on the expert demos of all tasks at once;
  snapshots every ``vla.snapshot_every`` steps (the fidelity gate's BC policies at several stages).
* World model: AutoencoderKL latents + action-conditioned latent dynamics on all collected data
  (expert + noisy + policy rollouts), ``model.horizon`` autoregressive steps per sequence.
* Reflector: CLIP + head, BCE on per-frame simulator success labels, balanced positives/negatives, plus
  frames paired with another task's instruction as negatives (so the instruction matters).
Each resumes from its ``state.pt``; the final checkpoint (``vla/vla.pt``, ``model/model.pt``,
``reflector/reflector.pt``) is written at the end.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.errors import ConfigError
from robotrl.workflows.worldenv.common import (
    build_vla,
    load_config,
    load_data,
    save_ckpt,
    setup_torch,
    text_embeddings,
    train_loop,
    vla_payload,
    write_json,
)


# ------------------------------------------------------------------------------------------------ VLA
def bc_batch(data: list, text: dict[str, torch.Tensor], chunk: int, batch: int, rng: np.random.Generator,
             device: torch.device) -> tuple[torch.Tensor, ...]:
    """(frames, text, proprio, action chunks, mask) for ``batch`` random steps of ``load_data``'s episodes (the
    sampler of ``agent=vla``)."""
    from robotrl.agents.vla import bc_batch as sample

    return sample([(instr, ep, pidx) for _, instr, ep, pidx in data], text, chunk, batch, rng, device)


def train_vla(out: str | Path, overrides: list[str] = ()) -> dict[str, float]:
    out = Path(out)
    cfg = load_config(out, overrides)
    device = setup_torch(cfg)
    data = load_data(out, ["expert"], cfg.tasks)
    pdim, adim = len(data[0][3]), data[0][2].action.shape[1]
    policy, clip, tokenizer = build_vla(cfg, device, pdim, adim)
    text = text_embeddings(clip, tokenizer, [cfg.instructions[t] for t in cfg.tasks])
    policy.fit_normaliser(np.concatenate([ep.obs["state"][:, pidx] for _, _, ep, pidx in data]))
    opt = torch.optim.AdamW(policy.parameters(), lr=float(cfg.vla.lr), weight_decay=1e-4)
    rng = np.random.default_rng(int(cfg.seed))
    c = cfg.vla

    def loss_fn(step: int):
        f, t, p, a, m = bc_batch(data, text, int(c.chunk), int(c.batch_size), rng, device)
        return policy.bc_loss(f, t, p, a, m), {}

    metrics = train_loop("vla", out / "vla", policy, opt, int(c.steps), loss_fn,
                         lambda: vla_payload(cfg, policy, text), every=50, snapshot_every=int(c.snapshot_every))
    save_ckpt(out / "vla" / "vla.pt", vla_payload(cfg, policy, text))
    print(f"vla: BC done, final L1 {metrics.get('loss', float('nan')):.4f} -> {out / 'vla' / 'vla.pt'}")
    return metrics


# ------------------------------------------------------------------------------------------------ world model
DYNAMICS = ("latent", "diffusion")


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
                    holdout_every: int | None = None) -> list:
    """Padded (frames, actions, proprio) of the collected episodes of ``split``: ``val`` is every
    ``holdout_every``-th episode (in load order), ``train`` the rest (all of them when ``holdout_every`` is 0)."""
    every = int(cfg.model.holdout_every if holdout_every is None else holdout_every)
    data = load_data(out, tasks=cfg.tasks)
    held = [bool(every) and i % every == every - 1 for i in range(len(data))]
    seqs = [padded(ep, pidx, context) for (_, _, ep, pidx), h in zip(data, held, strict=True)
            if h == (split == "val")]
    seqs = [s for s in seqs if len(s[0]) >= length]
    if not seqs:
        raise ConfigError(f"no {split} episode has {length} frames (context + horizon); lower model.horizon or "
                          f"collect more episodes")
    return seqs


def train_model(out: str | Path, overrides: list[str] = ()) -> dict[str, float]:
    out = Path(out)
    cfg = load_config(out, overrides)
    device = setup_torch(cfg)
    m = cfg.model
    model_class(m.dynamics)  # a bad value fails before the data are loaded
    length = int(m.context) + int(m.horizon)
    seqs = model_sequences(out, cfg, int(m.context), length)
    model = build_model(cfg, device, seqs[0][2].shape[1], seqs[0][1].shape[1])
    model.fit_normaliser(np.concatenate([s[2] for s in seqs]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(m.lr), weight_decay=1e-5)
    rng = np.random.default_rng(int(cfg.seed))

    def loss_fn(step: int):
        return model.loss(*sequence_batch(seqs, length, int(m.batch_size), rng, device), float(m.kl_weight))

    metrics = train_loop("model", out / "model", model, opt, int(m.steps), loss_fn, lambda: {}, every=25)
    save_ckpt(out / "model" / "model.pt", {"kind": "world_model", "config": model.config,
                                           "holdout_every": int(m.holdout_every), "model": model.state_dict()})
    final = " ".join(f"{k} {v:.4f}" for k, v in metrics.items())
    print(f"model: trained ({m.dynamics}), final {final} -> {out / 'model' / 'model.pt'}")
    return metrics


def load_model(path: Path, device: torch.device, denoise_steps: int | None = None):
    """The world model of a ``model.pt`` (checkpoints from before ``model.dynamics`` are ``latent`` ones);
    ``denoise_steps`` overrides a diffusion model's DDIM steps (the sampler needs no retraining)."""
    from robotrl.workflows.worldenv.common import load_ckpt

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


# ------------------------------------------------------------------------------------------------ reflector
def frame_labels(data: list) -> tuple[np.ndarray, np.ndarray, list[str], np.ndarray]:
    """Every frame (HWC), its success label (frame t+1 is labelled by step t's ``success``), its instruction and
    its episode index."""
    frames, labels, instr, episode = [], [], [], []
    for e, (_, text, ep, _) in enumerate(data):
        frames.append(ep.obs["pixels"].transpose(0, 2, 3, 1))
        labels.append(np.r_[False, ep.success])
        instr += [text] * len(ep.obs["pixels"])
        episode.append(np.full(len(ep.obs["pixels"]), e))
    return np.concatenate(frames), np.concatenate(labels), instr, np.concatenate(episode)


def train_reflector(out: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    from robotrl.rewards.reflector import CLIPReflector, build_clip, save_payload
    from robotrl.workflows.worldenv.common import clip_cfg

    out = Path(out)
    cfg = load_config(out, overrides)
    device = setup_torch(cfg)
    r = cfg.reflector
    frames, labels, instr, episode = frame_labels(load_data(out, tasks=cfg.tasks))
    val = episode % 5 == 4  # every 5th episode held out
    train_idx = {b: np.flatnonzero(~val & (labels == b)) for b in (True, False)}
    if not len(train_idx[True]) or not len(train_idx[False]):
        raise ConfigError(f"reflector needs successful and failed frames; got {len(train_idx[True])} successes and "
                         f"{len(train_idx[False])} failures in the training episodes")
    clip, tokenizer, weights = build_clip(**clip_cfg(cfg))
    reflector = CLIPReflector(clip, tokenizer, int(r.hidden), float(r.threshold), bool(r.finetune_visual)).to(device)
    tasks_instr = [cfg.instructions[t] for t in cfg.tasks]
    params = [p for p in reflector.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(r.lr))
    rng = np.random.default_rng(int(cfg.seed))
    bs = int(r.batch_size)

    def loss_fn(step: int):
        idx = np.r_[rng.choice(train_idx[True], bs // 2), rng.choice(train_idx[False], bs - bs // 2)]
        y = labels[idx].astype(np.float32)
        texts = [instr[i] for i in idx]
        if len(tasks_instr) > 1:  # a quarter: another task's instruction, so never a success
            for j in rng.choice(len(idx), len(idx) // 4, replace=False):
                texts[j] = rng.choice([t for t in tasks_instr if t != texts[j]])
                y[j] = 0.0
        x = torch.as_tensor(frames[idx], device=device)
        logits = reflector.logits(x, texts)
        y_t = torch.as_tensor(y, device=device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_t)
        return loss, {"acc": ((logits > 0).float() == y_t).float().mean().item()}

    train_loop("reflector", out / "reflector", reflector, opt, int(r.steps), loss_fn, lambda: {}, every=25)
    report = reflector_report(reflector, frames[val], labels[val], [instr[i] for i in np.flatnonzero(val)])
    report["weights"] = weights
    save_ckpt(out / "reflector" / "reflector.pt", save_payload(reflector, clip_cfg(cfg), int(r.hidden)))
    write_json(out / "reflector" / "report.json", report)
    print(f"reflector: held-out accuracy {report['accuracy']:.3f}, false-positive rate {report['fpr']:.3f} "
          f"({report['n']} frames) -> {out / 'reflector' / 'reflector.pt'}")
    return report


def reflector_report(reflector: Any, frames: np.ndarray, labels: np.ndarray, instr: list[str]) -> dict[str, Any]:
    """Confusion counts on held-out frames; a false positive is the reward-hacking channel."""
    if not len(frames):
        return {"n": 0, "accuracy": float("nan"), "fpr": float("nan"), "tpr": float("nan")}
    pred = np.concatenate([reflector.score(frames[i:i + 256], instr[i:i + 256]) > reflector.threshold
                           for i in range(0, len(frames), 256)])
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    tn, fn = int((~pred & ~labels).sum()), int((~pred & labels).sum())
    return {"n": len(frames), "tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": (tp + tn) / len(frames),
            "fpr": fp / max(fp + tn, 1), "tpr": tp / max(tp + fn, 1)}
