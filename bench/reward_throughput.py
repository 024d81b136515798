"""Reward images/s through robotrl's reward layer vs a bare open_clip forward of the same model, same run, interleaved.

    OMP_NUM_THREADS=1 .venv/bin/python bench/reward_throughput.py [--models tiny,ViT-B-32] [--batch 16] [--reps 5]

Paths timed on the same uint8 frames (already at the model's input size, as ``render_size`` gives them):
  bare      ``model.encode_image(x)`` + normalise on a pre-normalised float tensor (no uint8 conversion, no reward);
  relabel   ``RewardWrapper.relabel(frames)``: validation, batched torch preprocessing, encode, VLM-RM reward;
  step B=1  ``CLIPReward(frames[i:i+1])`` one frame per call, as the wrapper's per-step path does (vs bare B=1);
  no-cache  the same calls with ``cache_embeddings=False`` (goal/baseline text re-embedded every call).
Weights are random (nothing can be downloaded here); speed does not depend on the weights' values.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time

os.environ.setdefault("OMP_NUM_THREADS", "1")

import numpy as np  # noqa: E402
import torch  # noqa: E402
import torch.nn.functional as F  # noqa: E402

TINY = {
    "embed_dim": 32,
    "vision_cfg": {"image_size": 64, "layers": 2, "width": 64, "head_width": 32, "patch_size": 16},
    "text_cfg": {"context_length": 77, "vocab_size": 49408, "width": 32, "heads": 2, "layers": 2},
}


def build(name: str, cache: bool, device: str):
    from robotrl.rewards.clip import CLIPReward

    kwargs = {"model_cfg": TINY, "model_name": "robotrl-tiny-clip"} if name == "tiny" else {"model_name": name}
    torch.manual_seed(0)
    return CLIPReward(pretrained=None, allow_random_weights=True, device=device, cache_embeddings=cache, **kwargs)


def timed(fn, n_images: int) -> float:
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    if torch.cuda.is_available():
        torch.cuda.synchronize()
    return n_images / (time.perf_counter() - t0)


def bench(name: str, batch: int, reps: int, device: str, singles: int) -> None:
    import gymnasium as gym
    from robotrl.rewards.base import RewardWrapper

    reward, nocache = build(name, True, device), build(name, False, device)
    env = gym.Env()  # relabel() needs no simulator
    env.observation_space, env.action_space = gym.spaces.Box(0, 1, (1,)), gym.spaces.Box(-1, 1, (1,))
    wrapper = RewardWrapper(env, reward)
    h, w = reward.image_size
    frames = np.random.default_rng(0).integers(0, 256, (batch, h, w, 3), dtype=np.uint8)
    x = reward.preprocess(frames)  # the bare path gets its input for free
    model = reward.model

    @torch.inference_mode()
    def bare(xs=x):
        with reward._autocast():
            F.normalize(model.encode_image(xs).float(), dim=-1).cpu()

    def bare_singles():
        for i in range(singles):
            bare(x[i:i + 1])

    def singles_fn(m):
        return lambda: [m(frames[i:i + 1]) for i in range(singles)]

    paths = {"bare": (bare, batch), "relabel": (lambda: wrapper.relabel(frames), batch),
             "bare B=1": (bare_singles, singles),
             "step B=1": (singles_fn(reward), singles), "step B=1 no-cache": (singles_fn(nocache), singles),
             "relabel no-cache": (lambda: nocache(frames), batch)}
    for fn, _ in paths.values():  # warm-up
        fn()
    rates: dict[str, list[float]] = {k: [] for k in paths}
    for _ in range(reps):  # interleaved: machine load hits every path alike
        for key, (fn, n) in paths.items():
            rates[key].append(timed(fn, n))
    med = {k: statistics.median(v) for k, v in rates.items()}
    params = sum(p.numel() for p in model.parameters()) / 1e6
    print(f"\n{name} ({params:.1f} M params, {h}x{w} input, {reward.precision}, {reward.device}, "
          f"torch threads {torch.get_num_threads()}, batch {batch}, step singles {singles}, {reps} interleaved reps)")
    for key, value in med.items():
        spread = f"[{min(rates[key]):.1f}-{max(rates[key]):.1f}]"
        ref = "bare B=1" if "B=1" in key else "bare"
        ratio = f"  {value / med[ref]:.3f}x {ref}" if not key.startswith("bare") else ""
        print(f"  {key:<18} {value:9.1f} img/s  {spread}{ratio}")
    print(f"  cache effect: B=1 {med['step B=1'] / med['step B=1 no-cache']:.2f}x, "
          f"batch {med['relabel'] / med['relabel no-cache']:.2f}x (cached vs text re-embedded per call); "
          f"the cached model embedded its {reward.text_cache.misses} prompt sets once; no-cache re-embeds 2 per call")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="tiny,ViT-B-32")
    parser.add_argument("--batch", type=int, default=16)
    parser.add_argument("--singles", type=int, default=8)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--device", default="auto")
    parser.add_argument("--threads", type=int, default=1)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    import logging

    logging.disable(logging.WARNING)  # the random-weights warnings
    for name in args.models.split(","):
        bench(name, args.batch, args.reps, args.device, args.singles)


if __name__ == "__main__":
    main()
