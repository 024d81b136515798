"""Numerical parity of agent=mrq with facebookresearch/MRQ: same weights, same batch -> same losses and parameters.

    python bench/mrq_parity.py --ref /work/.mirror/facebookresearch+MRQ/repo [--batch 64]

``--ref`` is a git directory (or a checkout) of the reference, fetched outside this repository; its ``MRQ/*.py``
are read from HEAD into a temporary directory and imported from there (nothing of it is copied into robotrl).
For state (dim 24, 6 actions) and pixels (3 stacked 84x84 RGB frames), both agents get the reference's initial
weights (mapped one-to-one by parameter order), the same reward scales, the same random batch and the same
target-noise draw; then each takes ``--steps`` rounds of one encoder step (``enc_horizon`` 5) and one value +
policy step (n-step 3) on fresh batches, and the script prints the largest absolute difference of every loss,
Q target and LAP priority over the rounds and of every parameter at the end (after one Adam step a parameter moves
by ~lr * sign(grad), which hides gradient differences; later steps do not).
By default robotrl runs with ``channels_last=False, fast_elu=False, fused_adam=False`` (the reference's exact ops);
``--defaults`` compares the agent as configured (NHWC convs, ELU via exp - 1, fused AdamW), where float rounding
differs.
Augmentation is off on both sides (the shift draws come from different generators); ``robotrl.augment``'s tests
show the integer shift equals the reference's grid_sample shift. Exit status 1 if a difference exceeds --tol.
"""

from __future__ import annotations

import argparse
import importlib
import subprocess
import sys
import tempfile
from pathlib import Path

import gymnasium as gym
import numpy as np
import torch
from robotrl.agents.mrq import MRQAgent

from robotrl.priority import LapPriority


def load_reference(ref: Path, into: Path, module: str = "MRQ"):
    """Import the reference's ``module`` (MRQ, env_preprocessing, main) from ``ref`` (git dir or checkout) via a temp
    copy in ``into``."""
    for name in ("MRQ.py", "models.py", "buffer.py", "utils.py", "env_preprocessing.py", "main.py"):
        path = ref / "MRQ" / name
        text = path.read_text() if path.exists() else subprocess.run(
            ["git", f"--git-dir={ref}", "show", f"HEAD:MRQ/{name}"], check=True, capture_output=True, text=True).stdout
        (into / name).write_text(text)
    sys.path.insert(0, str(into))
    torch.cuda.mem_get_info = lambda *a: (0, 0)  # the reference's buffer asks CUDA for free memory; keep it on CPU
    return importlib.import_module(module)


def copy_weights(src: torch.nn.Module, dst: torch.nn.Module) -> None:
    """Parameters in creation order; shapes must agree one-to-one."""
    pairs = list(zip(src.parameters(), dst.parameters(), strict=True))
    with torch.no_grad():
        for a, b in pairs:
            if a.shape != b.shape:
                raise SystemExit(f"parameter shapes differ: reference {tuple(a.shape)} vs robotrl {tuple(b.shape)}")
            b.copy_(a)


class LossRecorder:
    """Records the value of every tensor ``backward()`` is called on (the reference does not return its losses)."""

    def __enter__(self):
        self.values, self._orig = [], torch.Tensor.backward

        def backward(tensor, *args, **kwargs):
            self.values.append(float(tensor.detach()))
            return self._orig(tensor, *args, **kwargs)

        torch.Tensor.backward = backward
        return self

    def __exit__(self, *exc):
        torch.Tensor.backward = self._orig


def max_diff(a: torch.nn.Module, b: torch.nn.Module) -> float:
    return max(float((x - y).detach().abs().max()) for x, y in zip(a.parameters(), b.parameters(), strict=True))


def run_case(mrq, pixels: bool, batch: int, seed: int, steps: int, defaults: bool) -> dict[str, float]:
    torch.manual_seed(seed)
    obs_shape, history, action_dim = ((3, 84, 84), 3, 6) if pixels else ((24,), 1, 6)
    ref = mrq.Agent(obs_shape, action_dim, 1.0, pixels, False, torch.device("cpu"), history,
                    hp={"buffer_size": 1000, "pixel_augs": False})
    space = gym.spaces.Dict({"pixels": gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)} if pixels else
                            {"state": gym.spaces.Box(-np.inf, np.inf, (24,), np.float32)})
    mine = MRQAgent(space, gym.spaces.Box(-1, 1, (action_dim,), np.float32), "cpu", pixel_augs=False,
                    channels_last=defaults, fast_elu=defaults, fused_adam=defaults, seed=0)
    for name in ("encoder", "encoder_target", "policy", "policy_target", "value", "value_target"):
        copy_weights(getattr(ref, name), getattr(mine, name))
    ref.reward_scale, ref.target_reward_scale = mine.reward_scale, mine.target_reward_scale = 1.7, 1.3

    g = torch.Generator().manual_seed(seed + 1)
    out: dict[str, float] = {}
    for step in range(steps):
        for name, value in one_step(ref, mine, g, pixels, batch, action_dim, seed + 2 + step).items():
            out[name] = max(out.get(name, 0.0), value)
    for name in ("encoder", "value", "policy"):
        out[f"{name} params"] = max_diff(getattr(ref, name), getattr(mine, name))
    return out


def one_step(ref, mine: MRQAgent, g: torch.Generator, pixels: bool, batch: int, action_dim: int,
             noise_seed: int) -> dict[str, float]:
    """One encoder step and one value + policy step on both agents, on the same fresh random batch."""
    H, shape = 5, (9, 84, 84) if pixels else (24,)
    frames = (torch.randint(0, 256, (batch, H + 1, *shape), generator=g).float() if pixels
              else torch.randn(batch, H + 1, *shape, generator=g))
    action = torch.rand(batch, H, action_dim, generator=g) * 2 - 1
    reward = torch.randn(batch, H, 1, generator=g) * 3
    not_done = (torch.rand(batch, H, 1, generator=g) > 0.1).float()
    out: dict[str, float] = {}

    # encoder step: reference (B, H, ...) batch-major; robotrl (H+1, B, ...) time-major
    key = "pixels" if pixels else "state"
    with LossRecorder() as rec:
        ref.train_encoder(frames[:, :-1], action, frames[:, 1:], reward, not_done, True)
    mine_enc = mine.encoder_step({key: frames.transpose(0, 1).contiguous()}, action.transpose(0, 1),
                                 reward.transpose(0, 1), 1.0 - not_done.transpose(0, 1), True)
    out["encoder_loss"] = abs(rec.values[0] - mine_enc["encoder_loss"])

    # value + policy step on an n-step batch (reward already summed, discount gamma^3 * not_done)
    state, next_state = frames[:, 0], frames[:, 3]
    r3 = reward[:, 0] + 0.99 * reward[:, 1] + 0.99**2 * reward[:, 2]
    nd = torch.ones(batch, 1)
    torch.manual_seed(noise_seed)
    mine.generator.manual_seed(noise_seed)  # the same target-noise draw on both sides
    with LossRecorder() as rec:
        q_ref, q_target_ref = ref.train_rl(state, action[:, 0], next_state, r3, nd, ref.reward_scale,
                                           ref.target_reward_scale)
    metrics, td, _ = mine.rl_step({key: state}, action[:, 0], r3, nd * 0.99**3, {key: next_state})
    out["value_loss"] = abs(rec.values[0] - metrics["value_loss"])
    out["policy_loss"] = abs(rec.values[1] - metrics["policy_loss"])
    out["q_target (mean)"] = abs(float(q_target_ref.mean()) - metrics["q_target"])
    ref_priority = (q_ref - q_target_ref.expand(-1, 2)).abs().max(1).values.clamp(min=1.0).pow(0.4)
    lap = LapPriority(batch, alpha=0.4, min_priority=1.0)
    out["LAP priority"] = float(np.abs(lap.priority_of(td.numpy()) - ref_priority.detach().double().numpy()).max())
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--ref", type=Path, required=True, help="facebookresearch/MRQ git dir or checkout")
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--steps", type=int, default=3, help="encoder + value/policy steps on each side")
    parser.add_argument("--defaults", action="store_true",
                        help="robotrl's fast defaults (channels_last, fast_elu, fused AdamW) instead of the exact ops")
    parser.add_argument("--tol", type=float, default=1e-4)
    args = parser.parse_args()
    torch.set_num_threads(1)
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        mrq = load_reference(args.ref, Path(tmp))
        for pixels in (False, True):
            result = run_case(mrq, pixels, args.batch, args.seed, args.steps, args.defaults)
            print(f"{'pixels' if pixels else 'state'}: max |robotrl - reference| over {args.steps} updates")
            for name, value in result.items():
                print(f"  {name:18s} {value:.3e}")
                worst = max(worst, value)
    print(f"worst difference {worst:.3e} (tolerance {args.tol:g})")
    sys.exit(0 if worst <= args.tol else 1)


if __name__ == "__main__":
    main()
