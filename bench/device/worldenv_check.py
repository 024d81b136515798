"""Setup check of bench/device/worldenv_64.sh, before its long run: every import the World-Env stages need, the
device, one Meta-World frame rendered through robotrl's own env path (EGL on the device machine), and one training
step of the 64x64 world model and one CLIP forward on the device. Exit 5: an import failed, 6: the render failed
or gave a blank frame, 7: the device or a model step on it failed. Prints versions and timings.

    python bench/device/worldenv_check.py cuda        # (cpu for the dry run)
"""

from __future__ import annotations

import sys
import time


def check_imports() -> dict[str, str]:
    import diffusers
    import gymnasium
    import hydra
    import metaworld  # noqa: F401
    import mujoco
    import numpy
    import omegaconf
    import open_clip
    import scipy
    import torch

    import robotrl.cli  # noqa: F401
    import robotrl.workflows.worldenv.fidelity  # noqa: F401
    import robotrl.workflows.worldenv.post_train  # noqa: F401

    return {"torch": torch.__version__, "mujoco": mujoco.__version__, "gymnasium": gymnasium.__version__,
            "diffusers": diffusers.__version__, "open_clip": open_clip.__version__, "hydra": hydra.__version__,
            "omegaconf": omegaconf.__version__, "numpy": numpy.__version__, "scipy": scipy.__version__}


def check_render() -> str:
    import numpy as np

    from robotrl.workflows.worldenv.data import make_sim
    from robotrl.workflows.worldenv.settings import default_config

    cfg = default_config()
    cfg.image_size = 64
    env = make_sim(cfg, "reach", 0)
    try:
        obs, _ = env.reset(seed=0)
        obs, *_ = env.step(np.zeros(env.action_space.shape, np.float32))
    finally:
        env.close()
    px = obs["pixels"]
    if px.shape[-2:] != (64, 64) or px.dtype != np.uint8 or float(px.std()) < 1.0:
        raise RuntimeError(f"frame {px.shape} {px.dtype} std {float(px.std()):.2f}: expected a 64x64 uint8 image")
    return f"pixels {tuple(px.shape)} mean {float(px.mean()):.1f} std {float(px.std()):.1f}"


def check_device(name: str) -> str:
    import torch
    from robotrl.agents.video_world_model import VideoWorldModel

    from robotrl.open_clip_loader import build_clip
    from robotrl.workflows.worldenv.settings import clip_cfg, default_config

    device = torch.device(name)
    if device.type == "cuda" and not torch.cuda.is_available():
        raise RuntimeError("torch.cuda.is_available() is False")
    model = VideoWorldModel(64, 4, 8, 2, 4, (16, 32, 32), 32, device=device)
    frames = torch.randint(0, 256, (2, 8, 3, 64, 64), dtype=torch.uint8, device=device)
    loss, _ = model.loss(frames, torch.rand(2, 7, 4, device=device), torch.rand(2, 8, 8, device=device), 1e-6)
    loss.backward()
    clip, tokenizer, _ = build_clip(**clip_cfg(default_config()))
    clip = clip.to(device)
    with torch.no_grad():
        img = clip.encode_image(torch.rand(2, 3, 64, 64, device=device))
        txt = clip.encode_text(tokenizer(["reach the red goal position"]).to(device))
    if device.type == "cuda":
        torch.cuda.synchronize()
    gpu = torch.cuda.get_device_name() if device.type == "cuda" else "cpu"
    return f"{gpu}: world-model loss {loss.item():.3f}, clip image {tuple(img.shape)} text {tuple(txt.shape)}"


def main() -> int:
    device = sys.argv[1] if len(sys.argv) > 1 else "cuda"
    for code, what, fn in ((5, "imports", check_imports), (6, "EGL render", check_render),
                           (7, f"{device} model step", lambda: check_device(device))):
        t = time.perf_counter()
        try:
            result = fn()
        except Exception as e:  # any failure here ends the call before the long run, with its own exit code
            print(f"check {what}: FAILED {type(e).__name__}: {e}", flush=True)
            return code
        print(f"check {what}: ok {result} ({time.perf_counter() - t:.1f} s)", flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main())
