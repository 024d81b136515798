"""Which World-Env world model: the deterministic latent dynamics vs the latent diffusion denoiser, side by side on
the same collected data, in one process (so every ratio is measured under the same machine load).

    MUJOCO_GL=egl nice -n 10 .venv/bin/python bench/world_models.py --runs runs/wm-latent runs/wm-diffusion \\
        --horizon 20 --denoise-steps 4 10 --out docs/results/worldenv/world_models_32.json

Each ``--runs`` directory is a ``robotrl worldenv`` run with ``model/model.pt`` (trained with
``model.holdout_every`` > 0, so the scored episodes are ones the model never saw) and ``reflector/reflector.pt``;
all runs must hold the same data. For every model (a diffusion model once per ``--denoise-steps``, the sampler
needs no retraining) it reports:

* quality: PSNR / SSIM at each step of open-loop rollouts with the recorded actions from the recorded start, vs the
  copy-last-frame reference on the same episodes (``bench/worldenv.py``'s ``quality``); a diffusion model is scored
  on one sample per episode, the one its seed draws;
* speed: ``WorldEnv`` steps/s (one env: model + reflector) and world-model ``step`` steps/s at batch 1 and 16,
  in ``--blocks`` blocks interleaved across the models;
* training: seconds per gradient step of a freshly built model of the run's config on the run's training batches
  (``model.batch_size``, ``model.horizon``), interleaved the same way.

Ratios are each model's median over the first (the reference, normally the latent model) measured in this run.
"""

from __future__ import annotations

import argparse
import json
import time
from pathlib import Path

import numpy as np
import torch

REPORT_STEPS = (1, 5, 10, 20)


def load_models(runs: list[Path], denoise_steps: list[int], device: torch.device) -> list[dict]:
    """One entry per model to compare: name (the run dir's name, + ``-ddimN`` for diffusion), run dir, config,
    loaded model (a diffusion model once per DDIM step count)."""
    from robotrl.workflows.worldenv.fit import load_ckpt
    from robotrl.workflows.worldenv.settings import load_config
    from robotrl.workflows.worldenv.world_model import load_model

    entries = []
    for run in runs:
        cfg = load_config(run)
        dynamics = load_ckpt(run / "model" / "model.pt", "world_model")["config"].get("dynamics", "latent")
        for steps in denoise_steps if dynamics == "diffusion" else [None]:
            model = load_model(run / "model" / "model.pt", device, steps)
            name = f"{run.name}" if steps is None else f"{run.name}-ddim{steps}"
            entries.append({"name": name, "run": run, "cfg": cfg, "model": model, "dynamics": dynamics})
    return entries


@torch.no_grad()
def autoencoder_floor(entry: dict, horizon: int) -> dict[str, float]:
    """PSNR / SSIM of the autoencoder alone (encode + decode of the true frames) on the frames ``quality`` scores:
    the ceiling of any dynamics on that latent."""
    from worldenv import psnr, ssim

    from robotrl.workflows.worldenv.fit import load_ckpt
    from robotrl.workflows.worldenv.world_model import model_sequences

    model, c = entry["model"], entry["model"].context
    every = int(load_ckpt(entry["run"] / "model" / "model.pt", "world_model").get("holdout_every", 0))
    seqs = model_sequences(entry["run"], entry["cfg"], c, c + horizon, "val" if every else "train", every)
    truth = torch.as_tensor(np.concatenate([s[0][c:c + horizon] for s in seqs]))
    recon = torch.cat([model.to_uint8(model.decode(model.encode(x)[0])) for x in truth.split(64)])
    a, b = recon.float() / 255, truth.float() / 255
    return {"psnr": psnr(a, b).mean().item(), "ssim": ssim(a, b).mean().item(), "frames": len(truth)}


def n_params(module: torch.nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


def rollout_speed(entry: dict, reflector, steps: int, rng: np.random.Generator) -> dict[str, float]:
    """WorldEnv steps/s (model + reflector, one env) and bare model steps/s at batch 1 and 16."""
    from robotrl.envs.world_env import WorldEnv

    from robotrl.workflows.worldenv.post_train import initial_states

    cfg, model = entry["cfg"], entry["model"]
    task = cfg.tasks[0]
    if "starts" not in entry:  # simulator reset frames, once per entry
        entry["starts"] = initial_states(cfg, task, list(range(16)), model.context)
    frames, prop = entry["starts"]
    env = WorldEnv(model, reflector, frames, prop, cfg.instructions[task], max_steps=10**9,
                   terminate_on_success=False)
    env.reset(seed=0)
    t0 = time.perf_counter()
    for _ in range(steps):
        env.step(rng.uniform(-1, 1, model.action_dim).astype(np.float32))
    res = {"worldenv": steps / (time.perf_counter() - t0)}
    for batch in (1, 16):
        state = model.init(frames[:batch], prop[:batch])
        n = max(1, steps // batch) if batch == 1 else max(1, steps // 4)
        t0 = time.perf_counter()
        for _ in range(n):
            state, _, _ = model.step(state, rng.uniform(-1, 1, (batch, model.action_dim)).astype(np.float32))
        res[f"model_batch{batch}"] = batch * n / (time.perf_counter() - t0)
    return res


def make_trainer(entry: dict, device: torch.device):
    """A fresh model of the run's config and a function doing one gradient step on the run's training batches."""
    from robotrl.workflows.worldenv.world_model import build_model, model_sequences, sequence_batch

    cfg = entry["cfg"]
    m = cfg.model
    length = int(m.context) + int(m.horizon)
    seqs = model_sequences(entry["run"], cfg, int(m.context), length)
    torch.manual_seed(0)
    model = build_model(cfg, device, seqs[0][2].shape[1], seqs[0][1].shape[1]).train()
    model.fit_normaliser(np.concatenate([s[2] for s in seqs]))
    opt = torch.optim.AdamW(model.parameters(), lr=float(m.lr), weight_decay=1e-5)
    rng = np.random.default_rng(0)

    def train_step() -> None:
        loss, _ = model.loss(*sequence_batch(seqs, length, int(m.batch_size), rng, device), float(m.kl_weight))
        opt.zero_grad(set_to_none=True)
        loss.backward()
        torch.nn.utils.clip_grad_norm_(model.parameters(), 1.0)
        opt.step()

    return train_step, {"batch_size": int(m.batch_size), "horizon": int(m.horizon)}


def main() -> None:
    import sys

    sys.path.insert(0, str(Path(__file__).parent))
    from robotrl.rewards.reflector import load_reflector
    from worldenv import quality

    ap = argparse.ArgumentParser()
    ap.add_argument("--runs", nargs="+", required=True, help="run dirs, the first is the reference")
    ap.add_argument("--denoise-steps", type=int, nargs="+", default=[4], help="DDIM steps to score diffusion at")
    ap.add_argument("--horizon", type=int, default=20)
    ap.add_argument("--steps", type=int, default=32, help="env steps per speed block")
    ap.add_argument("--train-steps", type=int, default=3, help="gradient steps per training-speed block")
    ap.add_argument("--blocks", type=int, default=3)
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--out", default=None)
    a = ap.parse_args()
    torch.set_num_threads(a.threads)
    device = torch.device("cpu")
    runs = [Path(r) for r in a.runs]
    entries = load_models(runs, a.denoise_steps, device)
    reflector = load_reflector(runs[0] / "reflector" / "reflector.pt", device)
    rng = np.random.default_rng(0)

    report: dict = {"device": "cpu", "threads": a.threads, "runs": [str(r) for r in runs], "horizon": a.horizon,
                    "models": {}}
    for e in entries:
        t0 = time.perf_counter()
        q = quality(e["run"], e["cfg"], e["model"], a.horizon)
        report["models"][e["name"]] = {
            "run": str(e["run"]), "params": n_params(e["model"]),
            "dynamics_params": n_params(e["model"]) - n_params(e["model"].vae),  # all but the shared autoencoder
            "image_size": e["model"].image_size, "autoencoder_floor": autoencoder_floor(e, a.horizon),
            "quality": q, "quality_s": time.perf_counter() - t0,
            "at_steps": {str(r["step"]): r for r in q["per_step"] if r["step"] in REPORT_STEPS}}
        print(f"{e['name']}: quality over {q['episodes']} held-out episodes in {time.perf_counter() - t0:.0f} s",
              flush=True)

    # speed and training cost, blocks interleaved across models so they share the machine's load
    trainers = {}
    for e in entries:
        if e["run"] not in trainers:
            trainers[e["run"]] = make_trainer(e, device)
    speed: dict[str, dict[str, list[float]]] = {e["name"]: {} for e in entries}
    train_s: dict[str, list[float]] = {str(r): [] for r in trainers}
    for b in range(a.blocks):
        for e in entries:
            for k, v in rollout_speed(e, reflector, a.steps, rng).items():
                speed[e["name"]].setdefault(k, []).append(v)
        for run, (step, _) in trainers.items():
            step()  # warm-up outside the timing
            t0 = time.perf_counter()
            for _ in range(a.train_steps):
                step()
            train_s[str(run)].append((time.perf_counter() - t0) / a.train_steps)
        print(f"speed block {b + 1}/{a.blocks} done", flush=True)

    ref = report["reference"] = entries[0]["name"]
    ref_train = float(np.median(train_s[str(entries[0]["run"])]))
    for e in entries:
        r = report["models"][e["name"]]
        r["speed_steps_per_s"] = speed[e["name"]]
        r["speed_median"] = {k: float(np.median(v)) for k, v in speed[e["name"]].items()}
        r["speed_ratio_to_reference"] = {k: float(np.median(v)) / float(np.median(speed[ref][k]))
                                      for k, v in speed[e["name"]].items()}
        r["train_s_per_step"] = train_s[str(e["run"])]
        r["train_s_per_step_median"] = float(np.median(train_s[str(e["run"])]))
        r["train_ratio_to_reference"] = r["train_s_per_step_median"] / ref_train
        r["train_batch"] = trainers[e["run"]][1]
    text = json.dumps(report, indent=1)
    print(text)
    if a.out:
        Path(a.out).parent.mkdir(parents=True, exist_ok=True)
        Path(a.out).write_text(text)


if __name__ == "__main__":
    main()
