"""Env steps/s through ``make_env`` vs the bare simulator doing the same work, in the same run.

Same task, render size (84), camera and action repeat (2) on both sides; the bare side is dm_control's
``physics.render`` / Meta-World's raw env with a ``mujoco.Renderer`` (same fast-render flags, same rot90).
Measurements are interleaved in blocks (wrapped, bare, wrapped, ...) so machine load hits both alike;
the medians of the per-block rates are printed.  Run: ``MUJOCO_GL=egl OMP_NUM_THREADS=1 python
bench/env_overhead.py [--blocks 5]``.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

import numpy as np

SIZE, REPEAT = 84, 2


def _rate(step: Callable[[np.ndarray], None], actions: np.ndarray) -> float:
    start = time.perf_counter()
    for action in actions:
        step(action)
    return len(actions) / (time.perf_counter() - start)


def _wrapped(name: str, **extra: object) -> tuple[Callable[[], None], Callable[[np.ndarray], None]]:
    from robotrl.envs import make_env

    env = make_env({"name": name, "image_size": SIZE, "action_repeat": REPEAT, "obs_type": "pixels", **extra}, 0)
    return (lambda: env.reset(seed=0)), (lambda a: env.step(a))


def _bare_dmc() -> tuple[Callable[[], None], Callable[[np.ndarray], None]]:
    from dm_control import suite

    env = suite.load("cartpole", "swingup", task_kwargs={"random": 0})

    def step(action: np.ndarray) -> None:
        for _ in range(REPEAT):
            env.step(action)
        env.physics.render(SIZE, SIZE, camera_id=0)

    return env.reset, step


def _bare_metaworld(fast: bool) -> tuple[Callable[[], None], Callable[[np.ndarray], None]]:
    import mujoco
    from metaworld.env_dict import ALL_V3_ENVIRONMENTS

    raw = ALL_V3_ENVIRONMENTS["reach-v3"]()
    raw._set_task_called, raw._freeze_rand_vec = True, False
    if fast:
        raw.model.vis.quality.offsamples = 0
    renderer = mujoco.Renderer(raw.model, SIZE, SIZE)
    if fast:
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_SHADOW] = False
        renderer.scene.flags[mujoco.mjtRndFlag.mjRND_REFLECTION] = False

    def step(action: np.ndarray) -> None:
        for _ in range(REPEAT):
            raw.step(action)
        renderer.update_scene(raw.data, camera="corner2")
        np.ascontiguousarray(np.rot90(renderer.render(), 2))

    return raw.reset, step


def compare(label: str, wrapped, bare, action_dim: int, steps: int, blocks: int) -> None:
    """Interleave ``blocks`` timed blocks of ``steps`` agent steps per side and print medians."""
    rng = np.random.default_rng(0)
    rates: dict[str, list[float]] = {"make_env": [], "bare": []}
    for _ in range(blocks):
        for key, (reset, step) in (("make_env", wrapped), ("bare", bare)):
            reset()
            actions = rng.uniform(-1, 1, (steps, action_dim)).astype(np.float32)
            rates[key].append(_rate(step, actions))
    med = {k: statistics.median(v) for k, v in rates.items()}
    print(
        f"{label:<34} make_env {med['make_env']:7.1f} steps/s | bare {med['bare']:7.1f} steps/s | "
        f"overhead x{med['bare'] / med['make_env']:.3f} (bare/make_env) | {blocks} blocks x {steps} steps"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--blocks", type=int, default=5)
    args = parser.parse_args()
    os.environ.setdefault("MUJOCO_GL", "egl")
    from robotrl.envs.rendering import ensure_gl

    print(f"MUJOCO_GL={ensure_gl()}  image {SIZE}x{SIZE}  action_repeat {REPEAT}  (agent steps/s, medians)")
    compare("dmc/cartpole_swingup", _wrapped("dmc/cartpole_swingup"), _bare_dmc(), 1, 100, args.blocks)
    compare(
        "metaworld/reach fast_render=on",
        _wrapped("metaworld/reach", fast_render=True),
        _bare_metaworld(True),
        4,
        100,
        args.blocks,
    )
    compare(
        "metaworld/reach fast_render=off",
        _wrapped("metaworld/reach", fast_render=False),
        _bare_metaworld(False),
        4,
        20,
        args.blocks,
    )


if __name__ == "__main__":
    main()
