"""Plan parity across a refactor: the actions TD-MPC2 and MoDem(-V2) plan (plain MPPI, an actor ensemble, bf16 plans,
no MPC, exploration centering (+bf16), the ensemble value, the horizon schedule (+centering); act and act_batch,
eval and training noise, a reset in between) from fixed seeds, saved on one commit and compared bit for bit on
another, on the same machine (float results are not portable across CPUs).

Usage (issue 26: agents/mppi.py took the MPPI loop out of tdmpc2.py and modem.py):
  git stash / checkout the base;  python bench/plan_parity.py save /tmp/plans.npz
  back on the change;             python bench/plan_parity.py check /tmp/plans.npz   # prints "identical ..."
Measured: 6f7d38a vs agentcaps (agents/mppi.py): identical for all 10 variants.
"""
import sys

import gymnasium as gym
import numpy as np
import torch
from robotrl.agents.modem import ModemAgent
from robotrl.agents.tdmpc2 import TDMPC2Agent

torch.set_num_threads(1)

obs_space = gym.spaces.Dict({"state": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)})
act_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
TINY = {"model_size": 1, "latent_dim": 16, "mlp_dim": 32, "enc_dim": 32, "num_channels": 8, "batch_size": 16,
        "num_samples": 64, "num_elites": 8, "num_pi_trajs": 5, "iterations": 3, "seed": 0}
out = {}
rng = np.random.default_rng(0)
obs = [{"state": rng.standard_normal(5).astype(np.float32)} for _ in range(6)]
def run(name, cls, **kw):
    torch.manual_seed(1)
    a = cls(obs_space, act_space, "cpu", **{**TINY, **kw})
    a._num_updates = 1
    if cls is ModemAgent:
        a.bc_done = True  # planning only: skip the BC phase (and its demos)
    acts = []
    for i, o in enumerate(obs):
        if i == 3:
            a.reset()
        acts.append(a.act(o, 10 * i, eval_mode=(i % 2 == 0)))
    acts.append(a.act_batch({"state": np.stack([o["state"] for o in obs[:3]])}, 5, False).ravel())
    out[name] = np.concatenate(acts)
run("tdmpc2", TDMPC2Agent)
run("tdmpc2_pi3", TDMPC2Agent, num_pi=3)
run("tdmpc2_bf16", TDMPC2Agent, plan_bf16=True)
run("tdmpc2_nompc", TDMPC2Agent, mpc=False)
run("modem", ModemAgent)
run("modem_center", ModemAgent, exploration_centering=True)
run("modem_center_bf16", ModemAgent, exploration_centering=True, plan_bf16=True)
run("modem_ens", ModemAgent, ensemble_value=True, num_pi=2)
run("modem_sched", ModemAgent, plan_horizon_schedule="linear(1,3,40)")
run("modem_sched_center", ModemAgent, plan_horizon_schedule="linear(1,3,40)", exploration_centering=True)
if sys.argv[1] == "save":
    np.savez(sys.argv[2], **out)
else:
    ref = np.load(sys.argv[2])
    bad = [k for k in out if not np.array_equal(out[k], ref[k])]
    print("identical" if not bad else f"DIFFER: {bad}", sorted(out))
