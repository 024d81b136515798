"""The reward quality report on recorded episodes (a robot's: ``robotrl deploy record=``, teleoperated demos, RobotEnv
rollouts saved in the demo format), where no simulator can roll out new ones or give a ground-truth reward.

Each recording directory is one group of episodes (e.g. ``demos/`` and ``failed_rollouts/``); the models score every
post-step frame (first camera view) offline. Metrics that need only the recordings' ``success`` labels are computed:
the value-order Spearman (does the reward rise towards success), success detection (F1 of ``predict_success``, or of
a threshold tuned on half of the episodes), and per-group mean return, final and normalised reward (a reward should
rank the successful group above the others). EPIC distance and episode ranking against a simulator reward are not:
recordings have none. A model with per-episode state (``reset(frame)``: KAGI's template tracker) is reset on each
episode's first (pre-step) frame and scores that episode's frames in order.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.atomic import atomic_write_text
from robotrl.demos import load_demos
from robotrl.errors import ConfigError
from robotrl.rewards.capabilities import reward_capabilities
from robotrl.workflows.reward_eval.metrics import value_order_correlation
from robotrl.workflows.reward_eval.report import _json_safe, _per_policy, _success_detection, score_offline
from robotrl.workflows.reward_eval.rollouts import Rollout


def load_recordings(dirs: Sequence[str | Path]) -> list[Rollout]:
    """Every episode of every directory as a :class:`Rollout` (``policy`` = the directory's name)."""
    rollouts = []
    for d in dirs:
        path = Path(d)
        if not (path / "meta.json").is_file():
            raise ConfigError(f"recordings: {str(path)!r} is not a recording in the demo format (no meta.json)")
        for i, ep in enumerate(load_demos(path)):
            rgb = np.ascontiguousarray(ep.obs["pixels"][:, :3].transpose(0, 2, 3, 1))  # first camera view
            n = len(ep.action)
            rollouts.append(Rollout(path.name, i, ep.action, np.asarray(ep.reward, np.float64), ep.success,
                                    [{} for _ in range(n)], rgb[1:], first_frame=rgb[0]))
    if not rollouts:
        raise ConfigError(f"recordings={list(map(str, dirs))} hold no episodes")
    return rollouts


def score_recordings(model: Any, rollouts: Sequence[Rollout]) -> tuple[list[np.ndarray], list[np.ndarray] | None]:
    """:func:`score_offline`, or for a model with per-episode state (``reset(frame)``) episode by episode: reset on
    the episode's first frame, then its frames in order (in batches of the model's ``batch_size``)."""
    if not reward_capabilities(model).resets_per_episode:
        return score_offline(model, rollouts)
    rewards, oks = [], []
    for ep in rollouts:
        model.reset(ep.first_frame)
        r, ok = score_offline(model, [ep])
        rewards += r
        oks += ok or []
    return rewards, (oks if reward_capabilities(model).predicts_success else None)


def recorded_report(models: Mapping[str, Any], dirs: Sequence[str | Path], out_dir: str | Path | None = None,
                    extra: Mapping[str, Any] | None = None) -> dict[str, Any]:
    """Score ``models`` on the recordings in ``dirs``; write ``report.json`` to ``out_dir`` if given."""
    if not models:
        raise ConfigError("reward-eval on recordings needs reward=<model>[,<model>] (there is no env reward to score)")
    rollouts = load_recordings(dirs)
    labels = np.concatenate([ep.success for ep in rollouts])
    metrics: dict[str, Any] = {}
    for name, model in models.items():
        rewards, oks = score_recordings(model, rollouts)
        metrics[name] = {"value_order": value_order_correlation(rewards, [ep.success for ep in rollouts]),
                         **_success_detection(rewards, labels, rollouts, oks),
                         "per_recording": _per_policy(rewards, rollouts, np.concatenate(rewards))}
    groups = {}
    for name in dict.fromkeys(ep.policy for ep in rollouts):
        eps = [ep for ep in rollouts if ep.policy == name]
        groups[name] = {"episodes": len(eps), "success_rate": float(np.mean([ep.success.any() for ep in eps])),
                        "mean_length": float(np.mean([ep.length for ep in eps]))}
    report = _json_safe({"recordings": [str(d) for d in dirs], "groups": groups, "metrics": metrics,
                         "note": "recordings: no simulator reward, so no EPIC distance or episode ranking against one",
                         **dict(extra or {})})
    if out_dir is not None:
        out = Path(out_dir)
        out.mkdir(parents=True, exist_ok=True)
        atomic_write_text(out / "report.json", json.dumps(report, indent=1, allow_nan=False) + "\n")
    return report
