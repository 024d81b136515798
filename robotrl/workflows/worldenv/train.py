"""``robotrl worldenv train-vla | train-model | train-reflector``: the three learned pieces of World-Env.

* VLA: behaviour cloning (L1 on action chunks, as OpenVLA-OFT) on the expert demos of all tasks at once;
  snapshots every ``vla.snapshot_every`` steps (the fidelity gate's BC policies at several stages).
* World model: AutoencoderKL latents + action-conditioned latent dynamics on all collected data
  (expert + noisy + policy rollouts), ``model.horizon`` autoregressive steps per sequence.
* Reflector: CLIP + head, BCE on per-frame simulator success labels, balanced positives/negatives, plus
  frames paired with another task's instruction as negatives (so the instruction matters); a share of each batch
  (``reflector.imagined``) is the world model's open-loop replays of the same episodes with the simulator's labels,
  since inside ``WorldEnv`` it judges the model's frames; ``reflector.consecutive`` (frames above threshold in a row
  that end an episode) is chosen on held-out replayed episodes.
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
    DYNAMICS,
    build_vla,
    check_clip,
    load_config,
    load_data,
    save_ckpt,
    score_frames,
    setup_torch,
    text_embeddings,
    train_loop,
    vla_payload,
    write_json,
)
from robotrl.world import fired_steps


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
    check_clip(cfg)
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
                         lambda: vla_payload(cfg, policy, text), every=50, snapshot_every=int(c.snapshot_every),
                         generator=rng)
    save_ckpt(out / "vla" / "vla.pt", vla_payload(cfg, policy, text))
    print(f"vla: BC done, final L1 {metrics.get('loss', float('nan')):.4f} -> {out / 'vla' / 'vla.pt'}")
    return metrics


# ------------------------------------------------------------------------------------------------ world model
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
    cfg = load_config(out, overrides)
    device = setup_torch(cfg)
    m = cfg.model
    model_class(m.dynamics)  # a bad value fails before the data are loaded
    length = int(m.context) + int(m.horizon)
    data = load_data(out, tasks=cfg.tasks)  # once: training sequences and the action report's held-out ones
    seqs = model_sequences(out, cfg, int(m.context), length, data=data)
    model = build_model(cfg, device, seqs[0][2].shape[1], seqs[0][1].shape[1])
    model.fit_normaliser(np.concatenate([s[2] for s in seqs]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(m.lr), weight_decay=1e-5)
    rng = np.random.default_rng(int(cfg.seed))

    def loss_fn(step: int):
        return model.loss(*sequence_batch(seqs, length, int(m.batch_size), rng, device), float(m.kl_weight))

    metrics = train_loop("model", out / "model", model, opt, int(m.steps), loss_fn, lambda: {}, every=25,
                         generator=rng)
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


def replay_in_model(model: Any, data: list) -> list[np.ndarray]:
    """Open-loop replays of every collected episode in the world model: from its first frame, its recorded actions;
    per episode the predicted frame after each action (uint8 [T, H, W, 3], aligned with ``ep.success``). These are
    the frames the reflector judges inside ``WorldEnv``, so it trains and is calibrated on them too."""
    c, replays = model.context, [None] * len(data)
    by_length: dict[int, list[int]] = {}
    for i, (_, _, ep, _) in enumerate(data):
        by_length.setdefault(len(ep.action), []).append(i)
    for T, idx in by_length.items():
        for j in range(0, len(idx), 32):
            group = idx[j:j + 32]
            seqs = [padded(data[i][2], data[i][3], c) for i in group]
            state = model.init(np.stack([f[:c] for f, _, _ in seqs]), np.stack([p[c - 1] for _, _, p in seqs]))
            frames = []
            for t in range(T):
                state, frame, _ = model.step(state, np.stack([a[c - 1 + t] for _, a, _ in seqs]))
                frames.append(frame.transpose(0, 2, 3, 1))
            for k, i in enumerate(group):
                replays[i] = np.stack([f[k] for f in frames])
    return replays


def held_out(episode: np.ndarray) -> np.ndarray:
    """The reflector's validation split: every 5th collected episode, by index."""
    return episode % 5 == 4


def balanced(idx: dict[bool, np.ndarray], n: int, rng: np.random.Generator) -> np.ndarray:
    """``n`` indices, half from the successes and half from the failures."""
    return np.r_[rng.choice(idx[True], n // 2), rng.choice(idx[False], n - n // 2)]


def train_reflector(out: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    from robotrl.rewards.reflector import CLIPReflector, build_clip, save_payload
    from robotrl.workflows.worldenv.common import clip_cfg

    out = Path(out)
    cfg = load_config(out, overrides)
    device = setup_torch(cfg)
    check_clip(cfg)
    r = cfg.reflector
    data = load_data(out, tasks=cfg.tasks)
    frames, labels, instr, episode = frame_labels(data)
    pools = {"real": (frames, labels, instr, episode)}
    share = float(r.imagined)  # checked by load_config
    if share > 0:  # the world model's frames of the same episodes, labelled by the simulator's success
        replays = replay_in_model(load_model(out / "model" / "model.pt", device), data)
        pools["imagined"] = (np.concatenate(replays), np.concatenate([ep.success for _, _, ep, _ in data]),
                             [text for (_, text, ep, _) in data for _ in ep.success],
                             np.concatenate([np.full(len(ep.success), e) for e, (_, _, ep, _) in enumerate(data)]))
    sizes = {"imagined": round(int(r.batch_size) * share)} if share > 0 else {}
    sizes["real"] = int(r.batch_size) - sizes.get("imagined", 0)
    train_idx = {}
    for name, (_, y, _, e) in pools.items():
        train_idx[name] = {b: np.flatnonzero(~held_out(e) & (y == b)) for b in (True, False)}
        if not len(train_idx[name][True]) or not len(train_idx[name][False]):
            raise ConfigError(f"reflector needs successful and failed frames; got {len(train_idx[name][True])} "
                              f"successes and {len(train_idx[name][False])} failures in the training episodes")
    clip, tokenizer, weights = build_clip(**clip_cfg(cfg), key="clip")
    reflector = CLIPReflector(clip, tokenizer, int(r.hidden), float(r.threshold), bool(r.finetune_visual)).to(device)
    tasks_instr = [cfg.instructions[t] for t in cfg.tasks]
    params = [p for p in reflector.parameters() if p.requires_grad]
    opt = torch.optim.AdamW(params, lr=float(r.lr))
    rng = np.random.default_rng(int(cfg.seed))

    def loss_fn(step: int):
        x, y, texts = [], [], []
        for name, n in sizes.items():
            f, lab, ins, _ = pools[name]
            idx = balanced(train_idx[name], n, rng)
            x.append(f[idx])
            y.append(lab[idx].astype(np.float32))
            texts += [ins[i] for i in idx]
        y = np.concatenate(y)
        if len(tasks_instr) > 1:  # a quarter: another task's instruction, so never a success
            for j in rng.choice(len(y), len(y) // 4, replace=False):
                texts[j] = rng.choice([t for t in tasks_instr if t != texts[j]])
                y[j] = 0.0
        logits = reflector.logits(torch.as_tensor(np.concatenate(x), device=device), texts)
        y_t = torch.as_tensor(y, device=device)
        loss = torch.nn.functional.binary_cross_entropy_with_logits(logits, y_t)
        return loss, {"acc": ((logits > 0).float() == y_t).float().mean().item()}

    train_loop("reflector", out / "reflector", reflector, opt, int(r.steps), loss_fn, lambda: {}, every=25,
               generator=rng)

    def held_out_report(f: np.ndarray, y: np.ndarray, ins: list[str], e: np.ndarray) -> dict[str, Any]:
        held = held_out(e)
        return reflector_report(reflector, f[held], y[held], [ins[i] for i in np.flatnonzero(held)])

    report = held_out_report(*pools["real"])
    judged = "imagined" if share > 0 else "real"  # WorldEnv judges the model's frames when there are some
    if share > 0:
        report["imagined"] = held_out_report(*pools["imagined"])
    f, y, ins, e = pools[judged]
    episodes = [np.flatnonzero(e == k) for k in np.unique(e[held_out(e)])]
    report["episodes"] = episode_agreement(reflector, [(f[i], y[i], ins[i[0]]) for i in episodes], judged)
    reflector.consecutive = (report["episodes"]["best_consecutive"] if str(r.consecutive) == "auto"
                             else int(r.consecutive))
    report["consecutive"] = reflector.consecutive
    report["weights"] = weights
    save_ckpt(out / "reflector" / "reflector.pt", save_payload(reflector, clip_cfg(cfg), int(r.hidden)))
    write_json(out / "reflector" / "report.json", report)
    ep = report["episodes"]["by_consecutive"][str(reflector.consecutive)]
    print(f"reflector: held-out accuracy {report['accuracy']:.3f}, false-positive rate {report['fpr']:.3f} "
          f"({report['n']} frames); on held-out {judged} episodes ({ep['n']}) the episode's success agrees with the "
          f"simulator's in {ep['accuracy']:.2f} with {reflector.consecutive} frame(s) in a row -> "
          f"{out / 'reflector' / 'reflector.pt'}")
    return report


def episode_agreement(reflector: Any, episodes: list, source: str, max_consecutive: int = 10) -> dict[str, Any]:
    """Does the reflector's termination rule (k frames above threshold in a row, k = 1..``max_consecutive``) call an
    episode a success exactly when the simulator did? The k with the best agreement is ``best_consecutive``."""
    scores = [score_frames(reflector, f, [text] * len(f)) for f, _, text in episodes]
    truth = np.array([bool(y.any()) for _, y, _ in episodes])
    by_k = {}
    for k in range(1, max_consecutive + 1):
        said = np.array([fired_steps(s, reflector.threshold, k).any() for s in scores], bool)
        by_k[str(k)] = {"n": len(episodes), "accuracy": float(np.mean(said == truth)) if len(truth) else float("nan"),
                        "said_success": float(np.mean(said)) if len(said) else float("nan"),
                        "sim_success": float(np.mean(truth)) if len(truth) else float("nan")}
    best = max(range(1, max_consecutive + 1), key=lambda k: (np.nan_to_num(by_k[str(k)]["accuracy"], nan=-1), -k))
    return {"source": source, "by_consecutive": by_k, "best_consecutive": best}


def reflector_report(reflector: Any, frames: np.ndarray, labels: np.ndarray, instr: list[str]) -> dict[str, Any]:
    """Confusion counts on held-out frames; a false positive is the reward-hacking channel."""
    if not len(frames):
        return {"n": 0, "accuracy": float("nan"), "fpr": float("nan"), "tpr": float("nan")}
    pred = score_frames(reflector, frames, instr) > reflector.threshold
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    tn, fn = int((~pred & ~labels).sum()), int((~pred & labels).sum())
    return {"n": len(frames), "tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": (tp + tn) / len(frames),
            "fpr": fp / max(fp + tn, 1), "tpr": tp / max(tp + fn, 1)}
