"""``robotrl worldenv post-train``: RL of the BC VLA inside the world model, then evaluation in the simulator.

World-Env's recipe at toy scale: per initial state ``post_train.group`` imagined rollouts (batched through the world
model), the reflector's score as reward and its threshold as termination; the return of a rollout is its highest
reflector score (continuous, so an all-fail or all-success group still has a signal); leave-one-out (RLOO)
advantages; PPO's clipped ratio (``clip_eps`` 0.1) under the policy's Laplace distribution; plus a behaviour-cloning
anchor on the demos (``bc_weight``), our proxy for a KL to the BC policy. A checkpoint per iteration
(``post/checkpoints/``): a rerun resumes. The result, ``post/policy.pt``, is evaluated in the simulator against the BC
policy on fixed seeds (``post/report.json``): success, success at the final step (no success termination), and the
episode length with the simulator's success termination and with the reflector's.
"""

from __future__ import annotations

import copy
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import torch

from robotrl.heartbeat import Heartbeat
from robotrl.workflows.worldenv.data import data_digest, load_data, make_sim, sim_rollout
from robotrl.workflows.worldenv.fit import file_digest, fit, load_ckpt, save_ckpt, write_json
from robotrl.workflows.worldenv.policies import TrivialActor, VLAActor, load_vla, score_frames
from robotrl.workflows.worldenv.settings import load_config, record_settings, setup_torch
from robotrl.workflows.worldenv.vla import bc_batch
from robotrl.workflows.worldenv.world_model import load_model
from robotrl.world import fired_steps, success_streak, termination_rule

TRAIN_SEED = 2_000_000  # initial states for post-training; evaluation uses eval.eval_seed + i (disjoint)


def initial_states(cfg: Any, task: str, seeds: list[int], context: int) -> tuple[np.ndarray, np.ndarray]:
    """Real initial frames of the simulator (``context`` copies of the reset frame) and proprioception."""
    from robotrl.envs.metaworld import PROPRIO_INDEX

    env = make_sim(cfg, task, seeds[0])
    frames, props = [], []
    try:
        for s in seeds:
            obs, _ = env.reset(seed=s)
            frames.append(np.repeat(obs["pixels"][-3:][None], context, 0))
            props.append(obs["state"][PROPRIO_INDEX])
    finally:
        env.close()
    return np.stack(frames), np.stack(props).astype(np.float32)


def imagine(policy: Any, model: Any, reflector: Any, text: torch.Tensor, instructions: list[str], frames0: np.ndarray,
            proprio0: np.ndarray, horizon: int) -> dict[str, Any]:
    """Batched rollouts in the world model with Laplace-sampled chunks; per-chunk inputs, samples and log-probs, and
    per-rollout best reflector score, reflector success and length."""
    device = next(policy.parameters()).device
    B = len(frames0)
    state = model.init(frames0, proprio0)
    frame, prop = frames0[:, -1], proprio0
    alive, success, streak = np.ones(B, bool), np.zeros(B, bool), np.zeros(B, np.int64)
    best, length = np.zeros(B, np.float32), np.full(B, horizon)
    rec: dict[str, list] = {"frames": [], "proprio": [], "sample": [], "logp": [], "alive": []}
    t = 0
    while t < horizon and alive.any():
        f_t = torch.as_tensor(frame, device=device)
        p_t = torch.as_tensor(prop, device=device)
        with torch.no_grad():
            dist = policy.dist(f_t, text, p_t)
            sample = dist.sample()
            logp = dist.log_prob(sample).sum((1, 2))
        for key, value in (("frames", f_t), ("proprio", p_t), ("sample", sample), ("logp", logp),
                           ("alive", torch.as_tensor(alive.copy()))):
            rec[key].append(value)
        actions = sample.clamp(-1, 1).cpu().numpy()
        for k in range(actions.shape[1]):
            if t >= horizon:
                break
            state, frame, prop = model.step(state, actions[:, k])
            score = reflector.score(frame.transpose(0, 2, 3, 1), instructions)
            best = np.where(alive, np.maximum(best, score), best)
            streak, done = success_streak(streak, score, *termination_rule(reflector))
            done &= alive
            success |= done
            length[done] = t + 1
            alive &= ~done
            t += 1
    return {**rec, "best": best, "success": success, "length": length}


def rloo(returns: np.ndarray, group: int) -> np.ndarray:
    """Leave-one-out advantages within consecutive groups of ``group`` rollouts."""
    r = returns.reshape(-1, group)
    baseline = (r.sum(1, keepdims=True) - r) / (group - 1)
    return (r - baseline).reshape(-1)


def ppo_loss(policy: Any, rec: dict[str, Any], text: torch.Tensor, adv: torch.Tensor, eps: float) -> torch.Tensor:
    losses = []
    for f, p, s, lp, alive in zip(rec["frames"], rec["proprio"], rec["sample"], rec["logp"], rec["alive"],
                                  strict=True):
        if not alive.any():
            continue
        m = alive.to(f.device)
        new = policy.dist(f[m], text[m], p[m]).log_prob(s[m]).sum((1, 2))
        ratio = (new - lp[m]).exp()
        a = adv[m]
        losses.append(-torch.min(ratio * a, ratio.clamp(1 - eps, 1 + eps) * a))
    return torch.cat(losses).mean()


def sim_eval(cfg: Any, make_actor: Callable[[str, int], Any], reflector: Any = None,
             episodes: int | None = None) -> dict[str, Any]:
    """An actor (``make_actor(task, episode)``) in the simulator on seeds ``eval_seed + i``, per task: success (any
    step), success at the final step, length to the simulator's success, and with the reflector's termination its
    length and the simulator success up to it (the episodes are deterministic, so the reflector-stopped one is a
    prefix)."""
    n = int(episodes or cfg.eval.episodes)
    per_task: dict[str, Any] = {}
    beat = Heartbeat("sim eval")
    for task in cfg.tasks:
        instr = cfg.instructions[task]
        env = make_sim(cfg, task, int(cfg.eval.eval_seed))
        rows = []
        try:
            for i in range(n):
                beat.tick(lambda t=task, i=i: f"{t} episode {i + 1}/{n}")
                ep, _ = sim_rollout(env, make_actor(task, i), int(cfg.eval.eval_seed) + i)
                T = len(ep.action)
                first = int(np.argmax(ep.success)) + 1 if ep.success.any() else T
                row = {"success": bool(ep.success.any()), "success_final": bool(ep.success[-1]), "length": first}
                if reflector is not None:
                    frames = ep.obs["pixels"][1:].transpose(0, 2, 3, 1)
                    done = fired_steps(score_frames(reflector, frames, [instr] * T), *termination_rule(reflector))
                    stop = int(np.argmax(done)) + 1 if done.any() else T
                    row.update(reflector_length=stop, reflector_success=bool(ep.success[:stop].any()))
                rows.append(row)
        finally:
            env.close()
        per_task[task] = {k: float(np.mean([r[k] for r in rows])) for k in rows[0]}
    keys = next(iter(per_task.values())).keys()
    return {"tasks": per_task, "mean": {k: float(np.mean([v[k] for v in per_task.values()])) for k in keys},
            "episodes_per_task": n}


def vla_actors(cfg: Any, policy: Any, text: dict[str, torch.Tensor]) -> Callable[[str, int], Any]:
    """``make_actor`` for ``sim_eval``: the policy's chunk means."""
    from robotrl.envs.metaworld import PROPRIO_INDEX

    return lambda task, i: VLAActor(policy, text, cfg.instructions[task], PROPRIO_INDEX)


def trivial_actors(cfg: Any, kind: str, action_dim: int, chunk: int) -> Callable[[str, int], Any]:
    """``make_actor`` for ``sim_eval``: a random or zero-action baseline, seeded per episode."""
    return lambda task, i: TrivialActor(kind, action_dim, chunk, seed=int(cfg.eval.eval_seed) + i)


def post_train(out: str | Path, overrides: list[str] = ()) -> dict[str, Any]:
    from robotrl.rewards.reflector import load_reflector

    out = Path(out)
    cfg = load_config(out, overrides, "post-train")
    device = setup_torch(cfg)
    pt = cfg.post_train
    policy, text = load_vla(out / "vla" / "vla.pt", device)
    bc_policy = copy.deepcopy(policy).eval()
    model = load_model(out / "model" / "model.pt", device)
    reflector = load_reflector(out / "reflector" / "reflector.pt", device)
    demos = load_data(out, ["expert"], cfg.tasks)
    n_starts = max(int(pt.starts_per_iter), 4)
    starts = {t: initial_states(cfg, t, [TRAIN_SEED + 1000 * i + j for j in range(n_starts)], model.context)
              for i, t in enumerate(cfg.tasks)}
    # the Laplace scale head trains at its own rate (World-Env: heads 1e-5, LoRA 1e-4), a shared lr here
    opt = torch.optim.Adam(policy.parameters(), lr=float(pt.lr))
    folder = out / "post"
    rng = np.random.default_rng(int(cfg.seed))
    G = int(pt.group)

    def iteration(it: int) -> Iterator[tuple[torch.Tensor, dict[str, float]]]:
        """One RL iteration: ``group`` imagined rollouts from each of ``starts_per_iter`` initial states, then
        ``epochs`` gradient steps of PPO + the BC anchor on them."""
        picks = [(cfg.tasks[int(rng.integers(len(cfg.tasks)))], int(rng.integers(n_starts)))
                 for _ in range(int(pt.starts_per_iter))]
        frames0 = np.concatenate([np.repeat(starts[t][0][j][None], G, 0) for t, j in picks])
        prop0 = np.concatenate([np.repeat(starts[t][1][j][None], G, 0) for t, j in picks])
        instrs = [cfg.instructions[t] for t, _ in picks for _ in range(G)]
        text_b = torch.stack([text[i] for i in instrs]).to(device)
        rec = imagine(policy, model, reflector, text_b, instrs, frames0, prop0, int(pt.horizon))
        adv = torch.as_tensor(rloo(rec["best"], G), device=device)
        row = {"world_success": float(rec["success"].mean()), "world_best_score": float(rec["best"].mean()),
               "world_length": float(rec["length"].mean())}
        for _ in range(int(pt.epochs)):
            rl = ppo_loss(policy, rec, text_b, adv, float(pt.clip_eps))
            bc = policy.bc_loss(*bc_batch(demos, text, policy.chunk, 32, rng, device))
            row.update(ppo_loss=rl.item(), bc_loss=bc.item())
            yield rl + float(pt.bc_weight) * bc, row
        row["log_scale"] = policy.log_scale.mean().item()  # after the last step: fit asks for more, then logs row

    record_settings(cfg, out, "post-train")
    fit("post", folder, policy, opt, int(pt.iterations), iteration, clip=float(pt.grad_clip), counter="iteration",
        every=1, setting="post_train.iterations", log_loss=False, generator=rng,
        plot=["world_success", "world_best_score"],
        inputs={"data (expert)": data_digest(out, ["expert"], cfg.tasks),
                **{f: file_digest(out / f) for f in ("vla/vla.pt", "model/model.pt", "reflector/reflector.pt")}})
    payload = load_ckpt(out / "vla" / "vla.pt", "vla")
    payload.update(model=policy.state_dict(), post_trained=True)
    save_ckpt(folder / "policy.pt", payload)
    policy.eval()
    # the trivial policies on the same seeds: a BC number means little if holding still scores the same
    trivial = {k: sim_eval(cfg, trivial_actors(cfg, k, policy.action_dim, policy.chunk), reflector)
               for k in cfg.eval.trivial}
    report = {"before": sim_eval(cfg, vla_actors(cfg, bc_policy, text), reflector),
              "after": sim_eval(cfg, vla_actors(cfg, policy, text), reflector), "trivial": trivial,
              "iterations": int(pt.iterations), "seed": int(cfg.seed), "tasks": list(cfg.tasks)}
    write_json(folder / "report.json", report)
    b, a = report["before"]["mean"], report["after"]["mean"]
    print(f"post-train: simulator success {b['success']:.3f} (BC) -> {a['success']:.3f} (post-trained); "
          f"length {b['length']:.1f} -> {a['length']:.1f}, with reflector termination "
          f"{b['reflector_length']:.1f} -> {a['reflector_length']:.1f}; trivial policies "
          + ", ".join(f"{k} {v['mean']['success']:.3f}" for k, v in trivial.items()) + f"; {folder / 'report.json'}")
    return report
