"""The training config's shared defaults as structured configs: dataclasses, each field with its default and its doc,
stored in hydra's ConfigStore as ``base/<name>`` and composed from ``configs/config.yaml``'s (and the reward and
robot configs') defaults lists. The one place these defaults live: yaml files keep only what differs per choice.

``register_configs`` stores them; ``robotrl.config.register_hydra()`` calls it, and whatever composes a config calls
that first (a sweep job's process too: its task registers when it is unpickled, ``train_command.TrainJob``).
"""

from __future__ import annotations

from dataclasses import MISSING, dataclass, field, fields
from typing import Any


def _doc(default: Any, doc: str = "", range: str | None = None) -> Any:
    """A field with its doc and, for a number, its range: a kind of :data:`robotrl.params.KINDS` that
    ``robotrl.config.validate_config`` checks before anything is built (null values are not checked)."""
    return field(default=default, metadata={"doc": doc, "range": range})


@dataclass
class EnvDefaults:
    """``env:`` keys shared by every suite; ``env/<suite>/<task>.yaml`` adds name, suite, task, frames... An open
    set (a suite adds its own keys), so it is stored untyped."""

    image_size: int = _doc(84, range="positive_int")
    frame_stack: int = _doc(3, range="positive_int")
    action_repeat: int = _doc(2, range="positive_int")
    obs_type: str = _doc("pixels", "pixels | state | pixels_state")
    camera: Any = _doc(None, "null: the suite's default camera")
    max_episode_steps: Any = _doc(None, "null: the suite's default episode length (in env steps)", "positive_int")
    video_size: int = _doc(128, range="positive_int")
    fast_render: bool = _doc(True, "Meta-World: no shadows/reflections/multisampling (16x faster, same layout)")
    num_envs: int = _doc(1, ">1: that many envs in worker processes (gymnasium AsyncVectorEnv), acting on batches",
                         "positive_int")
    worker_timeout_s: int = _doc(120, "num_envs>1: a worker silent this long is killed and restarted (episode "
                                      "discarded)", "positive")
    max_worker_restarts: int = _doc(10, "num_envs>1: more restarts than this stop the run", "nonneg_int")


@dataclass
class RayCollector:
    """``ray:``, read when ``collector=ray`` (Ray rollout actors)."""

    num_actors: int = _doc(2, "rollout actors, one env each", "positive_int")
    chunk_size: int = _doc(50, "steps per message from an actor to the learner", "positive_int")
    queue_size: int = _doc(8, "chunks in flight; a full queue blocks the actors (backpressure)", "positive_int")
    address: str | None = _doc(None, "null: start a local Ray instance; \"auto\" or ray://host:port: join a cluster")
    num_cpus: int | None = _doc(None, "local instance only: CPUs Ray may use (null: all)", "positive_int")
    cpus_per_actor: int = _doc(1, range="nonneg_int")
    max_actor_restarts: int = _doc(10, "more failed actors than this stop the run", "nonneg_int")


@dataclass
class RobotEnvDefaults:
    """``robot_env:``, read on ``robot=<arm>`` runs (robotrl.hardware.robot_env.RobotEnv): each arm's
    ``configs/robot/<arm>.yaml`` pulls it (robot=none has none)."""

    home_noise_m: float = _doc(0.02, "randomised start: hand offset from home uniform in [-x, x]^3 m, drawn per "
                                     "reset seed", "nonneg")
    operator: str | None = _doc(None, "module:function -> Operator ((step, obs) -> action or None): a person who "
                                      "may take over; the steps they drive are stored as executed and added to the "
                                      "agent's demos")
    live_view: str | None = _doc(None, "FILE.rrd (open with `rerun FILE.rrd`) or HOST:PORT of a running rerun "
                                       "viewer: camera frames, policy vs executed actions, safety events, rewards "
                                       "per step")


@dataclass
class RewardWrapperDefaults:
    """The ``RewardWrapper`` keys of every reward model's config (not passed to the model); each model's yaml adds
    its own keys and ``render_size``. Untyped: a model config is an open set of keys."""

    mode: str = _doc("replace", "replace: r = weight * model | blend: r = env reward + weight * model")
    weight: float = _doc(1.0, range="finite")
    terminate_on_success: bool = _doc(False, "true: end the episode when the model says the task is done")
    timeout_s: Any = _doc(60, "a model call that raises, returns NaN/inf or takes over timeout_s seconds flags the "
                              "step (info reward_invalid, model reward 0.0, never a success); null: no limit (the "
                              "call then runs on the training thread)", "positive")
    max_consecutive_failures: int = _doc(10, "that many failed model calls in a row stop the run "
                                             "(RewardModelError)", "positive_int")


# name in ConfigStore (group "base") -> (dataclass, typed: hydra checks types and keys; else a plain mapping)
SCHEMAS: dict[str, tuple[type, bool]] = {
    "env": (EnvDefaults, False), "ray": (RayCollector, True), "robot_env": (RobotEnvDefaults, True),
    "reward_wrapper": (RewardWrapperDefaults, False),
}


def defaults_of(schema: type) -> dict[str, Any]:
    """``{field: default}`` of a schema dataclass, in field order."""
    return {f.name: f.default for f in fields(schema) if f.default is not MISSING}


def ranges_of(schema: type) -> dict[str, str]:
    """``{field: range kind}`` of a schema dataclass's numeric fields (robotrl.params.KINDS)."""
    return {f.name: f.metadata["range"] for f in fields(schema) if f.metadata.get("range")}


def docs_of(schema: type) -> dict[str, str]:
    """``{field: doc}`` of a schema dataclass (empty for a field whose name says it all)."""
    return {f.name: f.metadata.get("doc", "") for f in fields(schema)}


def register_configs() -> None:
    """Store every schema as ``base/<name>`` in hydra's ConfigStore (idempotent: a second call stores the same)."""
    from hydra.core.config_store import ConfigStore

    store = ConfigStore.instance()
    for name, (schema, typed) in SCHEMAS.items():
        store.store(group="base", name=name, node=schema if typed else defaults_of(schema))
