"""What a reward model can do beyond ``model(frames, info) -> rewards``, declared on its class.

Workflows ask :func:`reward_capabilities` instead of ``hasattr``: a model that declares a capability without its
method, or has the method without declaring it, is a one-line :class:`~robotrl.errors.RewardModelError` naming the
class where the model is built or first checked, not an ``AttributeError`` (or a silently skipped hook) deep in a run.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import Any

from robotrl.errors import RewardModelError


@dataclass(frozen=True)
class RewardCapabilities:
    """``capabilities = RewardCapabilities(...)`` on a reward model class; all off by default.

    ``trainable``: ``state_dict()`` / ``load_state_dict(state)``, a model that learns online (LfVoid's
    discriminators): saved in and restored from the run's checkpoints.
    ``predicts_success``: ``predict_success(frames, info) -> bool [B]``. A model whose success needs a setting (CLIP's
    and LfVoid's ``success_threshold``) says per instance whether it is on with ``success_enabled``; without it its
    ``predict_success`` is all False.
    ``binds_env``: ``bind(env)``, a model that reads the simulator it rewards (KAGI's keypoints).
    ``resets_per_episode``: ``reset(frame)``, per-episode state started on each episode's first frame (KAGI).
    """

    trainable: bool = False
    predicts_success: bool = False
    binds_env: bool = False
    resets_per_episode: bool = False


NO_REWARD_CAPABILITIES = RewardCapabilities()
# capability -> the methods a class that declares it has
METHODS: dict[str, tuple[str, ...]] = {"trainable": ("state_dict", "load_state_dict"),
                                       "predicts_success": ("predict_success",), "binds_env": ("bind",),
                                       "resets_per_episode": ("reset",)}


def reward_capabilities(model: Any) -> RewardCapabilities:
    """The capabilities a reward model (or its class) declares, checked against its methods; none for a model
    that declares nothing and has none of the methods (a plain function, a lambda)."""
    cls = model if isinstance(model, type) else type(model)
    caps = getattr(cls, "capabilities", NO_REWARD_CAPABILITIES)
    if not isinstance(caps, RewardCapabilities):
        raise RewardModelError(f"reward model {cls.__qualname__}.capabilities is {caps!r}, expected a "
                               f"robotrl.rewards.RewardCapabilities")
    legacy = vars(cls).get("predicts_success")
    if isinstance(legacy, bool):  # the old way to say it, read by nothing now: it must not pass silently
        raise RewardModelError(f"reward model {cls.__qualname__} sets predicts_success = {legacy}; declare "
                               f"capabilities = RewardCapabilities(predicts_success={legacy}) instead")
    for field in fields(RewardCapabilities):
        declared = getattr(caps, field.name)
        for method in METHODS[field.name]:
            present = callable(getattr(cls, method, None))
            if declared and not present:
                raise RewardModelError(f"reward model {cls.__qualname__} declares {field.name}=True but has no "
                                       f"{method}() method; add it or declare {field.name}=False")
            if present and not declared:
                raise RewardModelError(f"reward model {cls.__qualname__} has a {method}() method but does not "
                                       f"declare {field.name}; set capabilities = RewardCapabilities("
                                       f"{field.name}=True, ...) on the class (workflows call it only then)")
    return caps


def success_enabled(model: Any) -> bool:
    """Whether ``model``'s success prediction is on: it declares ``predicts_success`` and, if its success needs a
    setting, has it (``success_enabled``)."""
    return reward_capabilities(model).predicts_success and bool(getattr(model, "success_enabled", True))
