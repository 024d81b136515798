"""World-Env benchmark: WorldEnv steps/s vs the Meta-World simulator with rendering (same run, interleaved blocks),
and the world model's prediction quality (PSNR, SSIM vs ground truth) over the rollout horizon, against the
"frame never changes" baseline (copy of the last real frame) measured on the same episodes.

    MUJOCO_GL=egl .venv/bin/python bench/worldenv.py --run runs/worldenv/s1 [--steps 200 --blocks 3 --horizon 30]

``--run`` is a ``robotrl worldenv`` directory with model/model.pt and reflector/reflector.pt (its collected
episodes are the ground truth). Without ``--run``, only the speed is measured, with randomly initialised networks of
configs/worldenv/default.yaml's sizes at ``--size`` pixels (speed does not depend on the weights):

    MUJOCO_GL=egl .venv/bin/python bench/worldenv.py --size 64

Prints a JSON report (and writes it with --out).
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F


def ssim(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    """Mean SSIM per image (Wang et al. 2004: 11x11 gaussian window, sigma 1.5, K1 0.01, K2 0.03) of float [N, 3,
    H, W] images in [0, 1]."""
    g = torch.exp(-((torch.arange(11) - 5.0) ** 2) / (2 * 1.5**2))
    w = (g[:, None] * g[None, :] / g.sum() ** 2).expand(3, 1, 11, 11)
    mu_a, mu_b = F.conv2d(a, w, groups=3), F.conv2d(b, w, groups=3)
    saa = F.conv2d(a * a, w, groups=3) - mu_a**2
    sbb = F.conv2d(b * b, w, groups=3) - mu_b**2
    sab = F.conv2d(a * b, w, groups=3) - mu_a * mu_b
    c1, c2 = 0.01**2, 0.03**2
    s = ((2 * mu_a * mu_b + c1) * (2 * sab + c2)) / ((mu_a**2 + mu_b**2 + c1) * (saa + sbb + c2))
    return s.mean(dim=(1, 2, 3))


def psnr(a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
    mse = ((a - b) ** 2).mean(dim=(1, 2, 3)).clamp(min=1e-10)
    return 10 * torch.log10(1.0 / mse)


def quality(out: Path, cfg, model, horizon: int) -> dict:
    """PSNR/SSIM at each step 1..horizon of open-loop rollouts with the recorded actions from the recorded start."""
    from robotrl.workflows.worldenv.fit import load_ckpt
    from robotrl.workflows.worldenv.world_model import model_sequences

    every = int(load_ckpt(out / "model" / "model.pt", "world_model").get("holdout_every", 0))
    c = model.context
    # the episodes the model never saw when it holds some out; otherwise (older runs) all of them, said so
    seqs = model_sequences(out, cfg, c, c + horizon, "val" if every else "train", every)
    frames = np.stack([s[0][:c + horizon] for s in seqs])
    actions = np.stack([s[1][c - 1:c - 1 + horizon] for s in seqs])
    prop = np.stack([s[2][c - 1] for s in seqs])
    state = model.init(frames[:, :c], prop)
    rows = []
    last = torch.as_tensor(frames[:, c - 1]).float() / 255
    for t in range(horizon):
        state, pred, _ = model.step(state, actions[:, t])
        truth = torch.as_tensor(frames[:, c + t]).float() / 255
        p = torch.as_tensor(pred).float() / 255
        rows.append({"step": t + 1, "psnr": psnr(p, truth).mean().item(), "ssim": ssim(p, truth).mean().item(),
                     "copy_psnr": psnr(last, truth).mean().item(), "copy_ssim": ssim(last, truth).mean().item()})
    return {"episodes": len(seqs), "held_out": bool(every), "per_step": rows}


def speed(cfg, model, reflector, steps: int, blocks: int) -> dict:
    from robotrl.envs.world_env import WorldEnv

    from robotrl.workflows.worldenv.data import make_sim
    from robotrl.workflows.worldenv.post_train import initial_states

    task = cfg.tasks[0]
    sim = make_sim(cfg, task, 0)
    wenv = WorldEnv(model, reflector, *initial_states(cfg, task, [0, 1], model.context), cfg.instructions[task],
                    max_steps=10**9)
    rng = np.random.default_rng(0)

    def run(env) -> float:
        env.reset(seed=0)
        t0 = time.perf_counter()
        for _ in range(steps):
            _, _, term, trunc, _ = env.step(rng.uniform(-1, 1, 4).astype(np.float32))
            if term or trunc:
                env.reset()
        return steps / (time.perf_counter() - t0)

    frames0, prop0 = initial_states(cfg, task, list(range(16)), model.context)

    def run_batched() -> float:
        """Post-training's path: 16 rollouts at once through model + reflector; env steps/s summed over the batch."""
        state = model.init(frames0, prop0)
        t0 = time.perf_counter()
        n = max(1, steps // 16)
        for _ in range(n):
            state, frame, _ = model.step(state, rng.uniform(-1, 1, (16, 4)).astype(np.float32))
            reflector.score(frame.transpose(0, 2, 3, 1), [cfg.instructions[task]] * 16)
        return 16 * n / (time.perf_counter() - t0)

    res = {"sim": [], "world": [], "world_batch16": []}
    for _ in range(blocks):  # interleaved, so both sides see the same machine load
        res["sim"].append(run(sim))
        res["world"].append(run(wenv))
        res["world_batch16"].append(run_batched())
    ratio = [w / s for w, s in zip(res["world"], res["sim"], strict=True)]
    ratio16 = [w / s for w, s in zip(res["world_batch16"], res["sim"], strict=True)]
    return {"task": task, "steps_per_block": steps, "sim_steps_per_s": res["sim"], "world_steps_per_s": res["world"],
            "world_batch16_steps_per_s": res["world_batch16"],
            "ratio_world_over_sim_median": float(np.median(ratio)), "ratio_min_max": [min(ratio), max(ratio)],
            "ratio_batch16_over_sim_median": float(np.median(ratio16)), "ratio16_min_max": [min(ratio16), max(ratio16)],
            "note": "sim: Meta-World, action_repeat, one rendered frame per agent step; world: model + reflector"}


def random_pieces(size: int, device: torch.device):
    """The default config at ``size`` pixels with untrained world model and reflector (speed only)."""
    from robotrl.rewards.reflector import CLIPReflector, build_clip

    from robotrl.workflows.worldenv.settings import clip_cfg, default_config
    from robotrl.workflows.worldenv.world_model import build_model

    cfg = default_config()
    cfg.image_size = size
    clip, tok, _ = build_clip(**clip_cfg(cfg))
    reflector = CLIPReflector(clip, tok, int(cfg.reflector.hidden)).to(device)
    return cfg, build_model(cfg, device, 8, 4).eval(), reflector


def main() -> None:
    from robotrl.rewards.reflector import load_reflector

    from robotrl.workflows.worldenv.settings import load_config
    from robotrl.workflows.worldenv.world_model import load_model

    ap = argparse.ArgumentParser()
    ap.add_argument("--run", default=None)
    ap.add_argument("--size", type=int, default=64)
    ap.add_argument("--steps", type=int, default=200)
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--horizon", type=int, default=30)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--device", default="cpu")
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device(a.device)
    if a.run:
        out = Path(a.run)
        cfg = load_config(out)
        model = load_model(out / "model" / "model.pt", device)
        reflector = load_reflector(out / "reflector" / "reflector.pt", device)
    else:
        cfg, model, reflector = random_pieces(a.size, device)
    report = {"device": str(device), "threads": a.threads, "image_size": int(cfg.image_size), "trained": bool(a.run),
              "speed": speed(cfg, model, reflector, a.steps, a.blocks)}
    if a.run:
        report["quality"] = quality(out, cfg, model, a.horizon)
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
