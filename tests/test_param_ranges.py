"""Every numeric setting of every agent and reward-model config is range-checked when it is built: NaN, a negative or a
zero value where none makes sense is one ConfigError naming the key, before any network is built or weights are
looked for. The keys come from the composed configs, so a setting added later is held to this too (or named below,
where 0 or a negative value means something)."""

from __future__ import annotations

import math
import re

import gymnasium as gym
import numpy as np
import pytest
from omegaconf import OmegaConf
from robotrl.agents import make_agent

from robotrl.errors import ConfigError
from robotrl.params import given, require, require_below

AGENTS = ("drqv2", "drm", "mrq", "tdmpc2", "modem", "modem_v2", "sb3_sac", "sb3_ppo", "vla")
# 0 is a setting, not a mistake: off switches, loss weights, noise scales, paddings, counts that may be empty
ZERO_OK = {
    "dormant_every", "dormant_threshold", "critic_dropout", "dropout", "num_expl_steps", "aug_pad", "demo_seed",
    "num_pi_trajs", "updates_per_step", "weight_decay", "enc_wd", "value_wd", "policy_wd", "exploration_noise",
    "target_policy_noise", "noise_clip", "dyn_weight", "reward_weight", "done_weight", "alpha", "pre_activ_weight",
    "stddev_clip", "enc_lr_scale", "consistency_coef", "reward_coef", "value_coef", "termination_coef",
    "entropy_coef", "bc_noise_std", "bc_noise_clip", "target_dormant_ratio", "perturb_rate", "target_lambda",
    "ent_coef", "vf_coef", "gae_lambda", "seed", "min_perturb_factor", "bc_steps",
    "num_bins",  # TD-MPC2: 0 is plain regression, 1 symlog regression (as in the reference)
    # signed values (below) whose 0 is inside their ordered pair
    "vmin", "vmax", "log_std_min", "log_std_max", "lower", "upper", "init_log_scale", "value_min_coef",
    "value_mean_coef", "value_std_coef",
}
# rewards: a blend weight or a success threshold on a reward may be 0 or negative; the rest are counts and seeds
REWARDS = ("clip", "clip_tiny", "kagi", "lfvoid", "reflector", "success_classifier")
REWARD_ZERO_OK = {"weight", "success_threshold", "seed", "updates_per_call", "shift_pad", "initial_frames",
                  "deviation_weight", "final_weight", "alpha"}
REWARD_SIGNED = {"weight", "success_threshold"}
SIGNED = {"vmin", "vmax", "log_std_min", "log_std_max", "lower", "upper", "init_log_scale", "value_min_coef",
          "value_mean_coef", "value_std_coef", "gradient_steps"}  # SB3: gradient_steps=-1 is "as many as env steps"
NOT_HYPERPARAMETERS = {"seed"}  # the run's seed (checked with the run config)


def _spaces(name: str) -> tuple[gym.spaces.Dict, gym.spaces.Box]:
    pixels = gym.spaces.Box(0, 255, (9, 84, 84), np.uint8)
    obs = {"pixels": pixels} if name in ("drqv2", "drm", "vla") else {
        "state": gym.spaces.Box(-np.inf, np.inf, (5,), np.float32)}
    return gym.spaces.Dict(obs), gym.spaces.Box(-1, 1, (2,), np.float32)


def _agent_config(name: str) -> dict:
    from robotrl.overrides import compose_config

    cfg = compose_config([f"agent={name}", "run_dir=/tmp/unused", "env=metaworld/reach"])
    return OmegaConf.to_container(cfg.agent, resolve=True)


def _bad_values(cfg: dict, zero_ok: set[str] = ZERO_OK, signed: set[str] = SIGNED,
                skip: set[str] = NOT_HYPERPARAMETERS) -> list[tuple[str, float]]:
    out = []
    for key, value in cfg.items():
        if key in skip or isinstance(value, bool) or not isinstance(value, int | float):
            continue
        out.append((key, math.nan))
        if key not in signed:
            out.append((key, -1 if isinstance(value, int) else -1.0))
        if key not in zero_ok:
            out.append((key, 0 if isinstance(value, int) else 0.0))
    return out


@pytest.mark.parametrize("name", AGENTS)
def test_every_numeric_hyperparameter_is_range_checked_at_build(name):
    base = _agent_config(name)
    obs_space, action_space = _spaces(name)
    bad = _bad_values(base)
    assert len(bad) >= 10, f"agent={name}: too few numeric hyperparameters found ({bad}); is the config composed?"
    accepted, unnamed = [], []
    for key, value in bad:
        try:
            make_agent({**base, key: value}, obs_space, action_space, "cpu")
            accepted.append(f"{key}={value}")
        except ConfigError as e:
            if not re.search(rf"\b{key}={value!r}", str(e)):
                unnamed.append(f"{key}={value}: {e}")
    assert not accepted, f"agent={name} was built with {accepted}"
    assert not unnamed, f"agent={name}: the error does not name the bad value: {unnamed}"


@pytest.mark.parametrize(("name", "values"), [
    ("tdmpc2", {"model_size": 1, "log_std_min": -20.0, "log_std_max": -20.0}),  # a fixed policy std
    ("tdmpc2", {"model_size": 1, "num_bins": 0, "num_pi_trajs": 0, "discount_min": 0.9, "discount_max": 0.9}),
    ("drm", {"target_dormant_ratio": 1.01, "num_expl_steps": 0}),  # awake from the first update
    ("sb3_sac", {"gradient_steps": -1, "ent_coef": "auto"}),  # SB3's own meanings
    ("mrq", {"num_expl_steps": 0, "alpha": 0.0, "exploration_noise": 0.0, "aug_pad": 0, "dormant_every": 0}),
])
def test_edge_values_that_mean_something_are_accepted(name, values):
    make_agent({**_agent_config(name), **values}, *_spaces(name), "cpu")


@pytest.mark.parametrize("name", REWARDS)
def test_every_numeric_reward_setting_is_range_checked_before_the_model_is_built(name):
    from robotrl.rewards import make_reward

    from robotrl.overrides import compose_config

    cfg = compose_config([f"reward={name}", "env=metaworld/reach", "run_dir=/tmp/unused"])
    base = OmegaConf.to_container(cfg.reward, resolve=True)
    bad = _bad_values(base, REWARD_ZERO_OK, REWARD_SIGNED, set())
    assert len(bad) >= 6, f"reward={name}: too few numeric settings found ({bad})"
    wrong = []
    for key, value in bad:
        try:  # most models cannot be built here (no weights, goals or demos): the range check must come first
            make_reward({**base, key: value})
            wrong.append(f"{key}={value}: accepted")
        except ConfigError as e:
            if not re.search(rf"\b{key}={value!r}", str(e)):
                wrong.append(f"{key}={value}: {e}")
    assert not wrong, f"reward={name}: {wrong}"


def test_every_ranged_schema_key_is_checked_by_validate_config(compose_cfg):
    """The shared sections (env, ray, robot_env, the reward wrapper) declare each number's range in
    robotrl/config_schema.py; validate_config refuses a value outside it before anything is built."""
    from robotrl.config import SCHEMA_SECTIONS, validate_config
    from robotrl.config_schema import SCHEMAS, ranges_of

    base = OmegaConf.to_container(compose_cfg("robot=sim", "reward=clip_tiny", "collector=ray"), resolve=False)
    validate_config(OmegaConf.create(base))
    checked = 0
    for where, schema in SCHEMA_SECTIONS.items():
        ranges = ranges_of(SCHEMAS[schema][0])
        assert ranges, schema
        for key, kind in ranges.items():
            for value in (math.nan, -1, 0.5 if kind.endswith("_int") else None):
                if value is None or (value == -1 and kind == "finite"):
                    continue
                cfg = OmegaConf.create(base)
                cfg[where][key] = value
                with pytest.raises(ConfigError, match=re.escape(f"{where}.{key}={value!r}, expected")):
                    validate_config(cfg)
                checked += 1
    assert checked >= 30


# command-line options whose number has no range: the gates (min_return=-inf, min_success<0: no gate)
FREE_OPTIONS = {("eval", "min_return"), ("eval", "min_success")}


def test_every_numeric_command_option_declares_a_range_checked_as_the_command_line_is_parsed():
    from robotrl.cli import REGISTRY, command, parse

    checked = 0
    for name in REGISTRY:
        cmd = command(name)
        for key, option in cmd.options.items():
            if isinstance(option.default, bool) or not isinstance(option.default, int | float):
                continue
            if (name, key) in FREE_OPTIONS:
                continue
            assert option.range is not None, f"robotrl {name}: option {key} declares no range"
            integer = isinstance(option.default, int)
            for value in (["-1", "0.5"] if integer else ["-1", "nan", "inf"]):
                if value == "-1" and option.range == "finite":
                    continue
                with pytest.raises(ConfigError, match=rf"^{key}="):
                    parse(cmd, [*(["x"] if cmd.positional else []), f"{key}={value}"])
                checked += 1
    assert checked >= 40
    from robotrl.cli import render_help

    assert "[an integer >= 1]" in render_help(command("eval"))  # the help says each option's range


def test_require_names_the_first_bad_value_and_its_range():
    require("agent", positive_int={"batch_size": 256, "nstep": np.int64(3)}, unit={"discount": 1.0},
            fraction={"dropout": 0.0}, finite={"vmin": np.float32(-10)})
    cases = [({"positive_int": {"batch_size": 0}}, "agent.batch_size=0, expected an integer >= 1"),
             ({"positive_int": {"batch_size": 2.5}}, "agent.batch_size=2.5, expected an integer >= 1"),
             ({"positive_int": {"batch_size": True}}, "agent.batch_size=True, expected an integer >= 1"),
             ({"positive_int": {"batch_size": 256.0}}, "agent.batch_size=256.0, expected an integer >= 1"),
             ({"positive": {"lr": math.inf}}, "agent.lr=inf, expected a finite number > 0"),
             ({"nonneg": {"alpha": math.nan}}, "agent.alpha=nan, expected a finite number >= 0"),
             ({"unit": {"discount": 0.0}}, "agent.discount=0.0, expected a number in (0, 1]"),
             ({"fraction": {"dropout": 1.0}}, "agent.dropout=1.0, expected a number in [0, 1)"),
             ({"finite": {"vmin": "low"}}, "agent.vmin='low', expected a finite number")]
    for kinds, message in cases:
        with pytest.raises(ConfigError, match=re.escape(message)):
            require("agent", **kinds)
    with pytest.raises(TypeError, match="unknown range kind 'positve'"):
        require("agent", positve={"lr": 1.0})
    with pytest.raises(ConfigError, match=re.escape("agent.vmin=10.0 must be < agent.vmax=-10.0")):
        require_below("agent", ("vmin", 10.0), ("vmax", -10.0))
    require_below("agent", ("min_std", 0.5), ("max_std", 0.5), equal_ok=True)
    assert given(a=None, b=0) == {"b": 0}
