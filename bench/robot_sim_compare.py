"""MoDem-V2 vs MoDem vs TD-MPC2 learning online on the sim arm (robot=sim: Meta-World reach behind the safety layer,
5 ms latency, 1 mm observation noise), proprioception only, from the same 10 demos recorded on the arm and a learned
success reward (reward=success_classifier trained on those demos' frames). Evaluation success is the simulator's.

    nice -n 10 .venv/bin/python bench/robot_sim_compare.py OUT [FRAMES]

Step 1 records 10 demos on the arm: Meta-World's scripted expert drives RobotEnv (it reads the simulator's state,
as a teleoperator sees the scene), one demo per reset seed, saved in the demo format with 64 px frames. Then each
agent trains with `robotrl train` (one seed, torch_threads=1, tiny model) and the summaries are collected.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import numpy as np

# 100 Hz: the sim need not run in real time (Meta-World's own rate is 80 Hz). The machine's 2 cores are shared, so
# a 2 s watchdog, a 5 s driver timeout and overruns only past 50 periods: the interventions counted are then the
# policy's (workspace and step clips), not the CPU's.
ROBOT = ["robot=sim", "robot.limits.control_hz=100", "robot.limits.ee_max_velocity=1.0",
         "robot.limits.watchdog_ms=2000", "robot.limits.driver_timeout_ms=5000", "robot.limits.overrun_factor=50",
         "robot.faults.latency_ms=5", "robot.faults.obs_noise_std=0.001"]
ENV = ["env=metaworld/reach", "env.obs_type=proprio", "env.image_size=64", "env.max_episode_steps=200"]


def record_demos(out: Path, episodes: int = 10) -> Path:
    from robotrl.envs.demos import expert_policy

    from robotrl.demos import FORMAT_VERSION, episode_file, save_episode
    from robotrl.types import Episode
    from robotrl.workflows.run_env import load_robot_config, make_robot_env

    robot = load_robot_config("sim", {})
    robot["limits"].update(control_hz=100, ee_max_velocity=1.0, watchdog_ms=2000, driver_timeout_ms=5000,
                           overrun_factor=50)
    env_cfg = {"name": "metaworld/reach", "obs_type": "pixels_proprio", "image_size": 64, "frame_stack": 1,
               "action_repeat": 2, "max_episode_steps": 200}
    env = make_robot_env(robot, env_cfg, seed=0, home_noise_m=0.02)
    expert = expert_policy("reach")
    out.mkdir(parents=True, exist_ok=True)
    try:
        i, seed = 0, 10_000
        while i < episodes:
            seed += 1
            obs, _ = env.reset(seed=seed)
            pixels, state, actions, successes = [obs["pixels"]], [obs["state"]], [], []
            done = False
            while not done:
                raw = env.robot.inner.raw
                action = expert(raw._get_obs())
                obs, _, _, done, info = env.step(action)
                pixels.append(obs["pixels"])
                state.append(obs["state"])
                actions.append(action)
                successes.append(info["success"])
            n = len(actions)
            print(f"demo seed {seed}: {n} steps, success {any(successes)}", flush=True)
            if not any(successes) or "safety_stop" in info:
                continue  # demos are successes (a person would redo a failed one)
            save_episode(out / episode_file(i), Episode(
                {"pixels": np.stack(pixels), "state": np.stack(state)}, np.stack(actions), np.zeros(n, np.float32),
                np.zeros(n, bool), np.array(successes)))
            i += 1
    finally:
        env.close()
    meta = {"format_version": FORMAT_VERSION, "name": "metaworld/reach", "num_episodes": episodes, "image_size": 64,
            "state_dim": 8, "action_dim": 4, "camera": "corner2", "cameras": ["corner2"], "frame_stack": 3,
            "action_repeat": 2, "proprio_index": list(range(8)),
            "source": "Meta-World's scripted expert driving robot=sim through RobotEnv (bench/robot_sim_compare.py)"}
    (out / "meta.json").write_text(json.dumps(meta, indent=1))
    return out


def main() -> None:
    out = Path(sys.argv[1])
    frames = int(sys.argv[2]) if len(sys.argv) > 2 else 3000
    demos = out / "demos"
    if not (demos / "meta.json").is_file():
        record_demos(demos)
    reward = ["reward=success_classifier", f"reward.demos={demos}", "reward.image_size=64"]
    # one seed, tiny model, and MPPI at 1/8 of the papers' samples (128 samples, 3 iterations): the 2 shared cores
    # give this run ~0.3 of a core
    common = [*ENV, *ROBOT, *reward, f"frames={frames}", "seed_frames=200", f"eval_every_frames={frames}",
              "eval_episodes=3", "torch_threads=1", "device=cpu", "save_video=false", "tensorboard=false", "seed=1",
              "agent.model_size=1", "agent.num_samples=128", "agent.num_elites=16", "agent.num_pi_trajs=8",
              "agent.iterations=3"]
    agents = {"tdmpc2": [], "modem": [f"agent.demos={demos}", "agent.num_demos=10"],
              "modem_v2": [f"agent.demos={demos}", "agent.num_demos=10"]}
    summaries = {}
    for name, extra in agents.items():
        run = out / name
        if not (run / "summary.json").is_file():
            cmd = [sys.executable, "-m", "robotrl.cli", "train", f"agent={name}", *common, *extra, f"run_dir={run}"]
            print(" ".join(cmd), flush=True)
            subprocess.run(cmd, check=True)
        summaries[name] = json.loads((run / "summary.json").read_text())
    (out / "compare.json").write_text(json.dumps(summaries, indent=1))
    print(json.dumps({k: {"final": v["final_eval"], "first": v["first_eval"],
                          "baselines": {b: v.get("baselines", {}).get(b, {}).get("success_rate")
                                        for b in ("random", "constant")}} for k, v in summaries.items()}, indent=1))


if __name__ == "__main__":
    main()
