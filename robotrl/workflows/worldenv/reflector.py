"""``robotrl worldenv train-reflector``: the CLIP success judge, BCE on per-frame simulator success labels, balanced
positives/negatives, plus frames paired with another task's instruction as negatives (so the instruction matters); a
share of each batch (``reflector.imagined``) is the world model's open-loop replays of the same episodes with the
simulator's labels, since inside ``WorldEnv`` it judges the model's frames; the termination rule
(``reflector.threshold`` and ``reflector.consecutive``: frames above the threshold in a row that end an episode) is
chosen on held-out replayed episodes by balanced accuracy (``auto``). Resumes from its stage state;
``reflector/reflector.pt`` is written at the end, ``reflector/config.yaml`` records the settings it trained with."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.errors import ConfigError
from robotrl.workflows.worldenv.data import data_digest, load_data
from robotrl.workflows.worldenv.fit import file_digest, fit, save_ckpt, write_json
from robotrl.workflows.worldenv.policies import score_frames
from robotrl.workflows.worldenv.settings import clip_cfg, load_config, record_settings, setup_torch
from robotrl.workflows.worldenv.world_model import load_model, padded
from robotrl.world import fired_steps


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

    out = Path(out)
    cfg = load_config(out, overrides, "train-reflector")
    device = setup_torch(cfg)
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
    start_threshold = 0.5 if str(r.threshold) == "auto" else float(r.threshold)  # the frame metrics' threshold
    reflector = CLIPReflector(clip, tokenizer, int(r.hidden), start_threshold, bool(r.finetune_visual)).to(device)
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

    record_settings(cfg, out, "train-reflector")
    inputs = {"data": data_digest(out, tasks=cfg.tasks)}
    if share > 0:  # its replays are part of the data
        inputs["model.pt"] = file_digest(out / "model" / "model.pt")
    fit("reflector", out / "reflector", reflector, opt, int(r.steps), lambda step: [loss_fn(step)],
        clip=float(r.grad_clip), every=25, setting="reflector.steps", generator=rng, inputs=inputs)

    def held_out_report(f: np.ndarray, y: np.ndarray, ins: list[str], e: np.ndarray) -> dict[str, Any]:
        held = held_out(e)
        return reflector_report(reflector, f[held], y[held], [ins[i] for i in np.flatnonzero(held)])

    report = held_out_report(*pools["real"])
    judged = "imagined" if share > 0 else "real"  # WorldEnv judges the model's frames when there are some
    if share > 0:
        report["imagined"] = held_out_report(*pools["imagined"])
    f, y, ins, e = pools[judged]
    episodes = [np.flatnonzero(e == k) for k in np.unique(e[held_out(e)])]
    report["episodes"] = episode_agreement(
        reflector, [(f[i], y[i], ins[i[0]]) for i in episodes], judged,
        AUTO_THRESHOLDS if str(r.threshold) == "auto" else (float(r.threshold),),
        AUTO_CONSECUTIVE if str(r.consecutive) == "auto" else (int(r.consecutive),))
    rule = report["episodes"]["rules"][report["episodes"]["best"]]
    reflector.threshold, reflector.consecutive = rule["threshold"], rule["consecutive"]
    report["threshold"], report["consecutive"] = reflector.threshold, reflector.consecutive
    report["weights"] = weights
    save_ckpt(out / "reflector" / "reflector.pt", save_payload(reflector, clip_cfg(cfg), int(r.hidden)))
    write_json(out / "reflector" / "report.json", report)
    print(f"reflector: held-out accuracy {report['accuracy']:.3f}, false-positive rate {report['fpr']:.3f} "
          f"({report['n']} frames); on held-out {judged} episodes ({rule['n']}) the episode's success agrees with the "
          f"simulator's in {rule['accuracy']:.2f} (balanced {rule['balanced_accuracy']:.2f}) with "
          f"{reflector.consecutive} frame(s) in a row above {reflector.threshold:g} -> "
          f"{out / 'reflector' / 'reflector.pt'}")
    return report


AUTO_THRESHOLDS = (0.5, 0.6, 0.7, 0.8, 0.9, 0.95)  # reflector.threshold=auto: the rule's threshold among these
AUTO_CONSECUTIVE = tuple(range(1, 11))  # reflector.consecutive=auto: frames in a row among these


def rule_key(threshold: float, consecutive: int) -> str:
    return f"{threshold:g}/{consecutive}"


def episode_agreement(reflector: Any, episodes: list, source: str, thresholds: tuple[float, ...] = (0.5,),
                      consecutive: tuple[int, ...] = AUTO_CONSECUTIVE) -> dict[str, Any]:
    """Does the termination rule (k frames above a threshold in a row) call an episode a success exactly when the
    simulator did, for each (threshold, k) of the grid? ``best`` is the rule with the highest balanced accuracy
    (the mean of its hit rates on the successful and on the failed episodes), ties to the higher accuracy, then to
    the stricter rule. Balanced, because the held-out episodes are mostly successes (expert and noisy demos): by plain
    accuracy a rule that fires on nearly every episode scores well, and a false success is what post-training
    exploits (the judge alone on the gate's simulator frames: ``bench/worldenv_decompose.py``)."""
    scores = [score_frames(reflector, f, [text] * len(f)) for f, _, text in episodes]
    truth = np.array([bool(y.any()) for _, y, _ in episodes], bool)
    rules = {}
    for t in thresholds:
        for k in consecutive:
            said = np.array([fired_steps(s, t, k).any() for s in scores], bool)
            rates = [float(np.mean(said[truth == c] == c)) for c in (True, False) if (truth == c).any()]
            rules[rule_key(t, k)] = {
                "threshold": float(t), "consecutive": int(k), "n": len(episodes),
                "accuracy": float(np.mean(said == truth)) if len(truth) else float("nan"),
                "balanced_accuracy": float(np.mean(rates)) if rates else float("nan"),
                "said_success": float(np.mean(said)) if len(said) else float("nan"),
                "sim_success": float(np.mean(truth)) if len(truth) else float("nan")}
    best = max(rules.values(), key=lambda r: (np.nan_to_num(r["balanced_accuracy"], nan=-1),
                                              np.nan_to_num(r["accuracy"], nan=-1), r["threshold"], r["consecutive"]))
    return {"source": source, "rules": rules, "best": rule_key(best["threshold"], best["consecutive"])}


def reflector_report(reflector: Any, frames: np.ndarray, labels: np.ndarray, instr: list[str]) -> dict[str, Any]:
    """Confusion counts on held-out frames; a false positive is the reward-hacking channel."""
    if not len(frames):
        return {"n": 0, "accuracy": float("nan"), "fpr": float("nan"), "tpr": float("nan")}
    pred = score_frames(reflector, frames, instr) > reflector.threshold
    tp, fp = int((pred & labels).sum()), int((pred & ~labels).sum())
    tn, fn = int((~pred & ~labels).sum()), int((~pred & labels).sum())
    return {"n": len(frames), "tp": tp, "fp": fp, "tn": tn, "fn": fn, "accuracy": (tp + tn) / len(frames),
            "fpr": fp / max(fp + tn, 1), "tpr": tp / max(tp + fn, 1)}
