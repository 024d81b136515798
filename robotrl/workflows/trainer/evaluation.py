"""Evaluation of the training policy: one env's eval episodes, the eval.csv row, the curve, and the final
comparison with trivial policies on the same seeds."""

from __future__ import annotations

import logging
from pathlib import Path
from typing import TYPE_CHECKING, Any

from robotrl.heartbeat import Heartbeat
from robotrl.workflows.baselines import compare, comparison_table, trivial_baselines, trivial_baselines_for
from robotrl.workflows.rollout import run_episodes
from robotrl.workflows.trainer.console import stop_point
from robotrl.workflows.trainer.schedule import eval_seeds

if TYPE_CHECKING:
    from robotrl.workflows.trainer.state import RunState

log = logging.getLogger(__name__)


def one_env_player(env: Any, agent: Any) -> Any:
    """The eval player of one env: the agent's deterministic policy, one seed after the other."""

    def play(seeds: list[int], video: Path | None, step: int, beat: Heartbeat) -> list[dict[str, Any]]:
        where = {"episode": 0, "step": 0}

        def on_reset() -> None:
            where["episode"], where["step"] = where["episode"] + 1, 0
            agent.reset()

        def policy(obs: dict[str, Any]) -> Any:
            stop_point()
            where["step"] += 1
            beat.tick(lambda: f"episode {where['episode']}/{len(seeds)}, step {where['step']}")
            return agent.act(obs, step, eval_mode=True)

        return run_episodes(env, policy, seeds, video, on_reset=on_reset)

    return play


def eval_row(summary: dict[str, Any], state: RunState, env_info: dict[str, Any]) -> dict[str, Any]:
    """The eval.csv row of one evaluation (before ``state`` records it)."""
    row = {"step": state.step, "episode": state.episode, "episode_return": summary["return_mean"],
           "episode_return_std": summary["return_std"], "episode_length": summary["length_mean"],
           "elapsed": state.elapsed()}
    if summary["success_rate"] is not None:
        row["success"] = summary["success_rate"]
    if "interventions_per_episode" in summary:
        row["interventions_per_episode"] = summary["interventions_per_episode"]
    row.update({k: v for k, v in env_info.items() if k.endswith("version")})
    return row


def plot(run_dir: Path) -> None:
    """The learning curve so far (``curve.png``); none before the first eval row."""
    from robotrl.workflows.plot import plot_runs

    try:
        plot_runs([run_dir], run_dir / "curve.png", reps=0)
    except ValueError as e:  # e.g. no eval rows yet
        log.debug("no curve: %s", e)


def compare_with_baselines(run: Any) -> dict[str, Any]:
    """Random, best-constant and first-eval baselines beside the final eval; warn when it beats none of them.
    ``run``: the :class:`~robotrl.workflows.trainer.run.Run` (not imported: run.py imports this module)."""
    cfg, state, console = run.cfg, run.state, run.console
    seeds = eval_seeds(int(cfg.eval_episodes))
    console.print(f"evaluating trivial policies on the same {len(seeds)} eval seeds (random, constant actions)...")
    if run.robot is not None:  # the same arm and seeds (no simulator copy of a robot to play them on)
        with run.policy_only():
            baselines = trivial_baselines(run.eval_env, seeds, int(cfg.seed))
    else:
        baselines = trivial_baselines_for(cfg.env, seeds, int(cfg.seed))
    out: dict[str, Any] = {"baselines": baselines}
    if state.last_eval is None:
        return out
    against = {"random": baselines["random"], "constant": baselines["constant"]}
    if state.first_eval is not None and state.first_eval["frame"] != state.last_eval["frame"]:
        against["first_eval"] = state.first_eval
    verdict = compare(state.last_eval, against)
    out["vs_baselines"] = verdict
    console.print(f"[bold]final eval on {cfg.env.name} at {run.frame} frames, {len(seeds)} episodes each, "
                  f"same seeds:[/bold]", soft_wrap=True)
    console.print(comparison_table(state.last_eval, against, label="trained agent"), soft_wrap=True,
                  highlight=False)
    if verdict["beats_all"]:
        console.print("the trained agent beats every trivial policy (by > 2 standard errors)")
    else:
        message = (f"the final eval is not clearly above {', '.join(verdict['not_beaten'])}: the policy may be "
                   f"saturated or stuck, not learning")
        log.warning(message)
        console.print(f"[bold yellow]WARNING: {message}[/bold yellow]", soft_wrap=True)
    return out
