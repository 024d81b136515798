"""``robotrl reward-eval``, the reward quality report: how well does a reward model track task progress and
success on Meta-World?

``robotrl reward-eval env=metaworld/reach reward=clip_tiny[,other] [episodes=4 seed=0 max_steps=120 ...]``

Why: learned rewards (VLM-RM, LfVoid, KAGI...) are known to over-reward near-misses and shortcuts, and a training
run takes hours to reveal it. This report rolls out policies whose quality is known (Meta-World's scripted expert,
the expert with Gaussian action noise at a few levels, a *near-miss* = the expert stopped just before its first
success, and a uniform random policy), records a rendered RGB frame, the simulator reward, ``info["success"]`` and
``info`` per step, scores the frames with every reward model, and compares each model with the simulator:

``value_order``
    mean Spearman rho of the model reward vs the time step over successful episodes, from the first step up to and
    including the first success step (the part where an ideal progress reward rises; after it the expert holds).
``kendall_tau``
    Kendall tau between the episodes' summed model reward and their summed simulator return (all episodes).
``epic``
    EPIC pseudometric (Gleave et al. 2020, "Quantifying Differences in Reward Functions") to the simulator reward
    over the collected transitions, with the sample-based canonicalisation (:func:`canonicalize`) at ``gamma``.
    0 = equivalent up to positive scaling and potential shaping, 1 = opposite (r vs -r); sqrt(1/2) = uncorrelated.
``success_f1``
    per-step F1 of ``model.predict_success`` vs ``info["success"]``; a model without ``predict_success`` is given the
    reward threshold that maximises F1 on half of the episodes (even positions in seed-major order) and is scored on
    the other half (``success_f1_source`` says which).
``near_miss``
    mean final-step reward of near-miss episodes vs expert episodes that end in success (same seeds; an expert that
    succeeded but lost it again, e.g. pushed the puck past the goal, is left out), the gap in units of the
    model's reward std over all steps (> 0: the model ranks success above the near-miss) and the fraction of seeds
    whose expert final reward beats its near-miss final reward. Over-rewarded near-misses show up here.

Undefined correlations (a constant reward) are reported as null. The simulator reward itself is always scored as the
reference row ``env``: its EPIC is 0 and its Kendall tau 1 by construction, which checks the plumbing.

Models that need the live env (they read simulator state) may define ``bind(env)``: it is called once before the
rollouts and such models are scored online, one frame at a time, during the rollouts (with the step's ``info``);
all other models score the stored frames afterwards in batches of their ``batch_size``.
"""

from robotrl.workflows.reward_eval.command import REPORT_DEFAULTS, format_summary, run_reward_eval
from robotrl.workflows.reward_eval.metrics import (
    best_threshold,
    canonicalize,
    epic_distance,
    episode_kendall_tau,
    f1_score,
    near_miss_gap,
    pearson_distance,
    value_order_correlation,
)
from robotrl.workflows.reward_eval.report import reward_metrics, run_report
from robotrl.workflows.reward_eval.rollouts import (
    Rollout,
    Settings,
    collect,
    expert_policy,
    near_miss_rollout,
    rollout,
)

__all__ = ["Rollout", "Settings", "best_threshold", "canonicalize", "collect", "epic_distance", "episode_kendall_tau",
           "expert_policy", "f1_score", "format_summary", "near_miss_gap", "near_miss_rollout", "pearson_distance",
           "REPORT_DEFAULTS", "reward_metrics", "run_reward_eval", "rollout", "run_report", "value_order_correlation"]
