"""Reward models declare what they can do (``capabilities = RewardCapabilities(...)``) instead of workflows
sniffing ``hasattr``: a declaration that does not match the class's methods fails where the model is built or
first checked, naming the class, not as an AttributeError (or a silently skipped hook) deep in a run."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import gymnasium as gym
import numpy as np
import pytest
from robotrl.rewards import RewardWrapper, make_reward

from robotrl.errors import RewardModelError

CONFIGS = Path(__file__).resolve().parents[1] / "configs" / "reward"


class _Env(gym.Env):
    observation_space = gym.spaces.Box(0, 1, (1,), np.float32)
    action_space = gym.spaces.Box(-1, 1, (1,), np.float32)

    def reset(self, *, seed=None, options=None):
        return np.zeros(1, np.float32), {}

    def step(self, action):
        return np.zeros(1, np.float32), 0.0, False, False, {}

    def render(self):
        return np.zeros((8, 8, 3), np.uint8)


class _Base:
    def __init__(self, **_: object) -> None:
        pass

    def __call__(self, frames, info=None):
        return np.zeros(len(frames), np.float32)


class SaysSuccessOldStyle(_Base):
    """The old declaration (a ``predicts_success`` flag the wrapper read) without the method: every step's
    ``predict_success`` raised inside the guard, flagged as a reward failure, until the run stopped."""

    predicts_success = True


class BindsWithoutSaying(_Base):
    """Has ``bind`` but declares nothing: the hook must not be called (or skipped) by guesswork."""

    def bind(self, env) -> None:
        self.env = env


class LearnsWithoutSaying(_Base):
    """Learns online but does not say so: its state would silently be left out of the run's checkpoints."""

    def state_dict(self):
        return {}

    def load_state_dict(self, state) -> None:
        pass


@pytest.mark.parametrize("cls, needle", [
    (SaysSuccessOldStyle, "SaysSuccessOldStyle sets predicts_success = True; declare capabilities"),
    (BindsWithoutSaying, "BindsWithoutSaying has a bind() method but does not declare binds_env"),
    (LearnsWithoutSaying, "LearnsWithoutSaying has a state_dict() method but does not declare trainable"),
])
def test_a_mismatched_model_is_refused_where_it_is_built_and_wrapped(cls, needle):
    with pytest.raises(RewardModelError, match=re.escape(needle)):
        make_reward({"name": "x", "_target_": f"{__name__}.{cls.__name__}"})
    with pytest.raises(RewardModelError, match=re.escape(needle)):
        RewardWrapper(_Env(), cls(), render_size=None)


def test_a_declared_capability_without_its_method_is_refused():
    from robotrl.rewards import RewardCapabilities, reward_capabilities

    class DeclaresBind(_Base):
        capabilities = RewardCapabilities(binds_env=True, trainable=True)

        def state_dict(self):
            return {}

        def load_state_dict(self, state) -> None:
            pass

    with pytest.raises(RewardModelError, match=r"DeclaresBind declares binds_env=True but has no bind\(\) method"):
        RewardWrapper(_Env(), DeclaresBind(), render_size=None)

    class NotADeclaration(_Base):
        capabilities = {"binds_env": True}

    with pytest.raises(RewardModelError, match=r"NotADeclaration.capabilities is \{'binds_env': True\}, expected"):
        reward_capabilities(NotADeclaration)


def test_a_plain_function_has_no_capabilities_and_still_works():
    from robotrl.rewards import reward_capabilities

    def red(frames, info=None):
        return frames[..., 0].mean(axis=(1, 2)).astype(np.float32)

    assert reward_capabilities(red) == reward_capabilities(_Base)
    env = RewardWrapper(_Env(), red, render_size=None)
    env.reset(seed=0)
    assert env.step(np.zeros(1, np.float32))[4]["model_reward"] == 0.0


def _reward_classes() -> dict[str, type]:
    targets = {}
    for path in sorted(CONFIGS.rglob("*.yaml")):
        match = re.search(r"^_target_:\s*(\S+)", path.read_text(), re.M)
        if match:
            module, name = match.group(1).rsplit(".", 1)
            targets[match.group(1)] = getattr(importlib.import_module(module), name)
    return targets


def test_every_configured_reward_class_declares_its_capabilities_consistently():
    from robotrl.rewards import reward_capabilities

    classes = _reward_classes()
    assert len(classes) >= 5, sorted(classes)  # clip, kagi, lfvoid, reflector, success_classifier
    for target, cls in classes.items():
        assert "capabilities" in vars(cls), f"{target} declares no capabilities"
        reward_capabilities(cls)  # raises on a mismatch with the class's methods
    declared = {t.rsplit(".", 1)[1]: reward_capabilities(c) for t, c in classes.items()}
    assert declared["KAGIReward"].binds_env and declared["KAGIReward"].resets_per_episode
    assert declared["LfVoidReward"].trainable and declared["SuccessClassifier"].trainable
    assert not declared["CLIPReward"].trainable and declared["CLIPReward"].predicts_success
