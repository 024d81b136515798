"""``robotrl reward-eval``: parse its ``key=value`` options, build the reward models, run and print the report."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import replace
from pathlib import Path
from typing import Any

from robotrl.commands import Args, Command, options
from robotrl.errors import ConfigError
from robotrl.overrides import check_group_choices, compose_config
from robotrl.readers import read_json
from robotrl.workflows.reward_eval.report import run_report
from robotrl.workflows.reward_eval.rollouts import Settings

# ------------------------------------------------------------------------------------------------ options
REPORT_DEFAULTS: dict[str, Any] = {"env": None, "reward": "env", "episodes": 4, "seed": 0, "max_steps": 120,
                                   "render_size": 0, "noise": "0.1,0.5", "gamma": 0.99, "out": None,
                                   "recordings": None}
# render_size=0: the largest reward.render_size of the models asked for (64 if none). max_steps: simulator steps.
PASSTHROUGH = ("env.", "reward.", "device=")  # handed to hydra's compose (e.g. env.camera=corner, reward.alpha=0.5)


def _floats(text: str, key: str) -> tuple[float, ...]:
    try:
        return tuple(float(v) for v in text.split(",") if v.strip())
    except ValueError:
        raise ConfigError(f"{key}={text!r}, expected comma-separated numbers (e.g. 0.1,0.5)") from None


def build_models(reward_names: Sequence[str], base: list[str], passthrough: list[str]) -> tuple[dict[str, Any], int]:
    """Reward models by config name (``env`` is skipped: it is always the reference row) and the largest render
    size they ask for (``reward.render_size``, default 224).

    A ``reward.KEY=...`` override goes to every listed reward whose config has KEY (so ``reward=clip,kagi
    reward.alpha=0.5`` sets CLIP's alpha only); one that fits none of them is an error, not silently dropped.
    """
    from robotrl.rewards import is_env_reward, make_reward

    reward_over = [a for a in passthrough if a.startswith("reward.")]
    other = [a for a in passthrough if not a.startswith("reward.")]
    models: dict[str, Any] = {}
    used: set[str] = set()
    size = 0
    for name in reward_names:
        cfg = compose_config([*base, f"reward={name}", *other])
        mine = [a for a in reward_over if a.partition("=")[0].split(".")[1] in cfg.reward]
        used.update(mine)
        if mine:
            cfg = compose_config([*base, f"reward={name}", *other, *mine])
        if is_env_reward(cfg.reward):
            continue
        models[name] = make_reward(cfg.reward)
        size = max(size, int(cfg.reward.get("render_size") or 224))
    unused = [a for a in reward_over if a not in used]
    if unused:
        raise ConfigError(f"{', '.join(unused)}: no such key in the config of reward {', '.join(reward_names)}")
    return models, size


def run_reward_eval(opts: dict[str, Any], passthrough: list[str], command: list[str]) -> dict[str, Any]:
    """``robotrl reward-eval``: ``opts`` has the keys of :data:`REPORT_DEFAULTS`, ``passthrough`` the ``env.*``,
    ``reward.*`` and ``device=`` overrides (both parsed by the CLI), ``command`` is recorded in the report.
    Writes report.json and report.png, prints a summary and returns the report."""
    if opts["recordings"]:
        return _recorded(opts, passthrough, command)
    if opts["env"] is None:
        raise ConfigError("robotrl reward-eval needs env=metaworld/<task> (see `robotrl envs metaworld`)")
    reward_names = [r for r in str(opts["reward"]).split(",") if r]
    check_group_choices([f"env={opts['env']}", f"reward={','.join(reward_names)}"])
    if not opts["env"].startswith("metaworld/"):
        raise ConfigError(f"reward-eval needs a Meta-World env (it rolls out the scripted expert), got {opts['env']!r}")
    settings = Settings(episodes=opts["episodes"], seed=opts["seed"], max_steps=opts["max_steps"],
                        noise=_floats(opts["noise"], "noise"), render_size=opts["render_size"] or 64,
                        gamma=opts["gamma"])
    settings.validate()  # before any model is built
    base = [f"env={opts['env']}", f"env.max_episode_steps={opts['max_steps']}"]
    env_over = [a for a in passthrough if a.startswith("env.")]
    cfg = compose_config([*base, *env_over, "env.obs_type=state"])  # the expert reads the state, no agent pixels
    models, model_size = build_models(reward_names, base, passthrough)
    if not opts["render_size"] and model_size:
        settings = replace(settings, render_size=model_size)
    out = Path(opts["out"] or f"reward_eval/{opts['env'].replace('/', '-')}")
    report = run_report(cfg.env, models, settings, out, extra={"command": command})
    print(format_summary(report))
    print(f"wrote {out / 'report.json'} and {out / 'report.png'}")
    return report


def _recorded(opts: dict[str, Any], passthrough: list[str], command: list[str]) -> dict[str, Any]:
    """``recordings=DIR[,DIR]``: the report on recorded (robot) episodes; ``env=`` (default: the first recording's
    task) only composes the reward configs (e.g. KAGI's plan name)."""

    from robotrl.workflows.reward_eval.recorded import recorded_report

    dirs = [d for d in str(opts["recordings"]).split(",") if d]
    env = opts["env"]
    if env is None:
        meta = Path(dirs[0]) / "meta.json"
        env = read_json(meta, ConfigError, "recordings meta.json").get("name") if meta.is_file() else None
    if not env or "/" not in str(env):
        raise ConfigError("recordings=...: pass env=<suite>/<task> (the recordings' meta.json names no task)")
    reward_names = [r for r in str(opts["reward"]).split(",") if r]
    models, _ = build_models(reward_names, [f"env={env}"], passthrough)
    out = Path(opts["out"] or f"reward_eval/recordings-{Path(dirs[0]).name}")
    report = recorded_report(models, dirs, out, extra={"command": command, "env": env})
    for name, m in report["metrics"].items():
        groups = ", ".join(f"{g} {v['mean_normalised']:.2f}" for g, v in m["per_recording"].items())
        print(f"{name}: value order {m['value_order']['rho']}, success F1 {m['success_f1']}, "
              f"mean normalised reward per recording: {groups}")
    print(f"wrote {out / 'report.json'}")
    return report


def format_summary(report: Mapping[str, Any]) -> str:
    """A fixed-width table: one row per reward model."""
    def fmt(v: Any) -> str:
        return "   -  " if v is None else f"{v:6.3f}"

    lines = [f"{'reward':<16} {'spearman':>8} {'kendall':>8} {'EPIC':>8} {'F1':>8} {'nm-gap':>8} {'nm-acc':>8}"]
    for name, m in report["metrics"].items():
        vals = (m["value_order"]["rho"], m["kendall_tau"], m["epic"], m["success_f1"], m["near_miss"]["gap"],
                m["near_miss"]["pair_accuracy"])
        lines.append(f"{name:<16} " + " ".join(f"{fmt(v):>8}" for v in vals))
    pol = ", ".join(f"{k}: {v['success_rate']:.0%} success" for k, v in report["policies"].items())
    return "\n".join([*lines, f"policies ({report['env']}): {pol}"])


# ------------------------------------------------------------------------------------------------ the command
REPORT_DOCS = {
    "env": "metaworld/<task> (required: the scripted expert needs Meta-World)",
    "reward": "comma-separated reward configs to score (env, the simulator's reward, is always the reference row)",
    "episodes": "episodes per policy (expert, noisy, near-miss, random)",
    "seed": "first reset seed",
    "max_steps": "simulator steps per episode",
    "render_size": "frame size shown to the models (0: the largest reward.render_size asked for, else 64)",
    "noise": "comma-separated action-noise stddevs of the noisy experts",
    "gamma": "discount of the EPIC canonicalisation",
    "out": "output dir for report.json and report.png (default reward_eval/<env>)",
    "recordings": "comma-separated recorded episode dirs (demo format, e.g. robot runs): score those instead of "
                  "simulator rollouts",
}


def reward_eval(args: Args) -> int:
    """``robotrl reward-eval``: the reward quality report."""
    run_reward_eval(args.opts, args.extra, ["robotrl", "reward-eval", *args.raw])
    return 0


# robotrl.params kinds of the numeric options, checked as the command line is parsed
REPORT_RANGES = {
    "episodes": "positive_int", "seed": "nonneg_int", "max_steps": "positive_int", "render_size": "nonneg_int",
    "gamma": "unit"
}


COMMAND = Command(
    name="reward-eval", summary="reward quality report: expert/noisy/near-miss/random rollouts",
    usage="robotrl reward-eval env=metaworld/<task> reward=a[,b] [key=value ...] [env.*=... reward.*=... device=...]",
    about="Score reward models on rollouts of known quality (scripted expert, noisy experts, near-miss, random):\n"
          "value-order Spearman, Kendall tau, EPIC distance, success F1, near-miss gap.",
    run=reward_eval, options=options(REPORT_DEFAULTS, REPORT_DOCS, REPORT_RANGES), prefixes=PASSTHROUGH,
    examples=("robotrl reward-eval env=metaworld/push reward=kagi,clip_tiny episodes=20 out=reports/push",
              "robotrl reward-eval env=metaworld/reach reward=clip_tiny reward.alpha=0.5 env.camera=corner"),
    footer="env.KEY=..., reward.KEY=... and device=... are passed to the composed configs.")
