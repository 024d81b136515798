"""The reward-model interface, frame validation, an embedding cache and the gymnasium wrapper.

A reward model maps a batch of RGB frames to one float per frame::

    model(frames: uint8 [B, H, W, 3] (numpy or torch), info: list[dict] | None) -> np.ndarray float32 [B]

and may predict success (``predict_success(frames, info) -> bool [B]``). Optional hooks the wrapper and trainer
use when a model's class declares them (``capabilities = RewardCapabilities(...)``, ``robotrl.rewards.capabilities``):
``bind(env)`` (models that read the simulator, e.g. KAGI's keypoints), ``reset(frame)`` (per-episode state, called
with the first frame of every episode), ``state_dict()``/``load_state_dict()`` (models that learn online, e.g.
LfVoid's discriminators: saved in the run's checkpoints).

:class:`RewardWrapper` puts a model on a contract env (``robotrl.envs.make_env``): it renders one dedicated RGB
frame per agent step (``render_size``, not the agent's small channels-first pixels), replaces or blends the env
reward, and keeps the ground truth in ``info``. :class:`RewardVectorWrapper` does the same for a vector env with
one batched model call per step.

A failing model never corrupts a run (:class:`GuardedModel`): a call that raises, returns a non-finite or
wrongly shaped reward, or takes longer than ``reward.timeout_s``, flags the step (``info["reward_invalid"] = True``,
``info["reward_error"]`` says why), uses a model reward of ``INVALID_MODEL_REWARD`` (0.0) for it, and never predicts
success on it (so ``terminate_on_success`` cannot end the episode there); training continues.
``reward.max_consecutive_failures`` failures in a row stop the run with a one-line :class:`RewardModelError`
naming the model. The trainer counts flagged steps per episode in ``train.csv`` (``reward_invalid``).
"""

from __future__ import annotations

import hashlib
import logging
import queue
import threading
from collections import OrderedDict
from collections.abc import Callable, Hashable, Sequence
from concurrent.futures import Future
from typing import Any, Protocol, SupportsFloat, runtime_checkable

import gymnasium as gym
import numpy as np
import torch
from robotrl.rewards.capabilities import reward_capabilities, success_enabled

from robotrl.errors import ConfigError, ObservationError, RewardModelError
from robotrl.params import given, require

log = logging.getLogger(__name__)
MODES = ("replace", "blend")
INVALID_MODEL_REWARD = 0.0  # the model reward a flagged (failed) step gets


@runtime_checkable
class RewardModel(Protocol):
    """Batched frames -> rewards. ``predict_success`` and the hooks are optional: the class declares them
    (:func:`~robotrl.rewards.capabilities.reward_capabilities`)."""

    def __call__(self, frames: np.ndarray | torch.Tensor, info: Sequence[dict[str, Any]] | None = None) -> np.ndarray:
        """uint8 [B, H, W, 3] RGB frames (and per-frame env info, or None) -> float32 [B] rewards."""


def check_frames(frames: Any, info: Sequence[Any] | None = None) -> tuple[int, int, int]:
    """Raise ObservationError (one line) unless ``frames`` is uint8 [B, H, W, 3] with B >= 1; return (B, H, W).

    uint8 already bounds the values to [0, 255]; float frames (e.g. [0, 1] images) are rejected with their range
    named, rather than silently rescaled. ``info``, if given, must hold one dict per frame.
    """
    if not isinstance(frames, np.ndarray | torch.Tensor):
        raise ObservationError(f"reward frames must be a numpy array or torch tensor, got {type(frames).__name__}")
    shape = tuple(frames.shape)
    is_uint8 = frames.dtype == (torch.uint8 if isinstance(frames, torch.Tensor) else np.uint8)
    if not is_uint8:
        rng = ""
        if frames.numel() if isinstance(frames, torch.Tensor) else frames.size:
            lo, hi = float(frames.min()), float(frames.max())
            rng = f" with values in [{lo:.3g}, {hi:.3g}]"
            if hi <= 1.0 and lo >= 0.0:
                rng += " (looks like [0, 1] floats: multiply by 255 and cast to uint8)"
        raise ObservationError(f"reward frames have dtype {frames.dtype}{rng}, expected uint8 RGB in [0, 255]")
    if len(shape) != 4:
        hint = " (a single frame: add a batch axis, frames[None])" if len(shape) == 3 else ""
        raise ObservationError(f"reward frames have shape {shape}, expected 4-D [B, H, W, 3]{hint}")
    if shape[-1] != 3:
        hint = " (looks channels-first; expected channels-last [B, H, W, 3])" if shape[1] == 3 else ""
        raise ObservationError(f"reward frames have shape {shape}, expected last dim 3 (RGB){hint}")
    if shape[0] < 1 or shape[1] < 1 or shape[2] < 1:
        raise ObservationError(f"reward frames have shape {shape}, expected a non-empty batch of non-empty images")
    if info is not None and len(info) != shape[0]:
        raise ObservationError(f"reward info has {len(info)} entries for {shape[0]} frames, expected one per frame")
    return shape[0], shape[1], shape[2]


class EmbeddingCache:
    """A small LRU cache of tensors keyed by strings/tuples (text prompts) or arrays (goal images, by content hash).

    ``hits``/``misses`` count lookups so tests and benches can see it working.
    """

    def __init__(self, maxsize: int = 256):
        self.maxsize = int(maxsize)
        self._data: OrderedDict[Hashable, torch.Tensor] = OrderedDict()
        self.hits = self.misses = 0

    @staticmethod
    def key(value: Any) -> Hashable:
        if isinstance(value, torch.Tensor):
            value = value.detach().cpu().numpy()
        if isinstance(value, np.ndarray):
            return ("array", value.shape, str(value.dtype), hashlib.sha1(np.ascontiguousarray(value)).hexdigest())
        if isinstance(value, list):
            return tuple(value)
        return value

    def get(self, value: Any, compute: Callable[[], torch.Tensor]) -> torch.Tensor:
        key = self.key(value)
        if key in self._data:
            self.hits += 1
            self._data.move_to_end(key)
            return self._data[key]
        self.misses += 1
        out = compute()
        self._data[key] = out
        if len(self._data) > self.maxsize:
            self._data.popitem(last=False)
        return out

    def clear(self) -> None:
        self._data.clear()

    def __len__(self) -> int:
        return len(self._data)


def render_rgb(env: gym.Env, size: int | None) -> np.ndarray:
    """One (size, size, 3) uint8 RGB frame of ``env``'s current state (``env.render()`` when size is None).

    robotrl's base envs expose ``render_frame(size)`` (the suite's camera at any resolution), so the reward model
    sees a dedicated image at the resolution it wants instead of the agent's small, stacked, channels-first pixels.
    """
    base = env.unwrapped
    if size is not None and hasattr(base, "render_frame"):
        return np.ascontiguousarray(base.render_frame(int(size)))
    return np.ascontiguousarray(env.render())


class _Worker:
    """One daemon thread running reward-model calls, so a call can be abandoned after ``timeout_s`` (a hung model
    then blocks neither the training loop nor the interpreter's exit, unlike a ThreadPoolExecutor's worker)."""

    def __init__(self, name: str) -> None:
        self._jobs: queue.SimpleQueue = queue.SimpleQueue()
        self._threads = torch.get_num_threads()  # the run's torch_threads; a new thread may not inherit it
        threading.Thread(target=self._run, name=f"reward-model-{name}", daemon=True).start()

    def _run(self) -> None:
        torch.set_num_threads(self._threads)
        while True:
            fn, args, future = self._jobs.get()
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn(*args))
                except BaseException as e:  # noqa: BLE001 -- handed to the caller through the future
                    future.set_exception(e)

    def submit(self, fn: Callable[..., Any], *args: Any) -> Future:
        future: Future = Future()
        self._jobs.put((fn, args, future))
        return future


class GuardedModel:
    """Calls a reward model under the failure policy of the module docstring.

    :meth:`evaluate` returns ``(rewards float32 [B], success bool [B] | None, error)``: on success ``error`` is None;
    on a failure the rewards are ``INVALID_MODEL_REWARD``, success (if predicted) all False, and ``error`` is a short
    reason. ``timeout_s`` (None: no limit) runs calls on a worker thread; while a timed-out call is still running,
    later steps fail at once rather than queue behind it. ``max_consecutive_failures`` failures in a row raise
    :class:`RewardModelError`.
    """

    def __init__(self, model: RewardModel, name: str, predicts_success: bool, timeout_s: float | None = None,
                 max_consecutive_failures: int = 10) -> None:
        require("reward", positive_int={"max_consecutive_failures": max_consecutive_failures},
                positive=given(timeout_s=timeout_s))
        self.model, self.name, self.predicts_success = model, name, predicts_success
        self.timeout_s = None if timeout_s is None else float(timeout_s)
        self.max_consecutive_failures = int(max_consecutive_failures)
        self.consecutive_failures = self.failures = 0
        self._worker = _Worker(name) if self.timeout_s is not None else None
        self._running: Future | None = None  # a call that timed out and has not returned yet

    def _call(self, frames: np.ndarray, info: Sequence[dict[str, Any]] | None) -> tuple[np.ndarray, np.ndarray | None]:
        rewards = np.asarray(self.model(frames, info), np.float32)
        success = None
        if self.predicts_success:
            success = np.asarray(self.model.predict_success(frames, info), bool)
        return rewards, success

    def _run(self, frames: np.ndarray, info: Sequence[dict[str, Any]] | None) -> tuple[np.ndarray, np.ndarray | None]:
        if self._worker is None:
            return self._call(frames, info)
        if self._running is not None and not self._running.done():
            raise TimeoutError(f"a call that exceeded reward.timeout_s={self.timeout_s:g} is still running")
        future = self._worker.submit(self._call, frames, info)
        try:
            return future.result(timeout=self.timeout_s)
        except TimeoutError:
            self._running = future
            raise TimeoutError(f"took longer than reward.timeout_s={self.timeout_s:g}") from None

    def evaluate(self, frames: np.ndarray,
                 info: Sequence[dict[str, Any]] | None) -> tuple[np.ndarray, np.ndarray | None, str | None]:
        n = len(frames)
        try:
            rewards, success = self._run(frames, info)
            if rewards.shape != (n,) or (success is not None and success.shape != (n,)):
                raise ValueError(f"returned shape {rewards.shape} for {n} frames, expected ({n},)")
            if not np.isfinite(rewards).all():
                raise ValueError(f"returned non-finite rewards {rewards[~np.isfinite(rewards)][:3].tolist()}")
        except Exception as e:  # noqa: BLE001 -- any model failure is flagged, counted, and stops the run at N
            error = " ".join(f"{type(e).__name__}: {e}".split())[:200]
            self.failures += 1
            self.consecutive_failures += 1
            if self.consecutive_failures >= self.max_consecutive_failures:
                raise RewardModelError(
                    f"reward model {self.name!r} failed {self.consecutive_failures} consecutive steps "
                    f"(reward.max_consecutive_failures={self.max_consecutive_failures}); last: {error}") from e
            log.warning("reward model %r failed (%d in a row): %s; step flagged reward_invalid", self.name,
                        self.consecutive_failures, error)
            invalid_success = np.zeros(n, bool) if self.predicts_success else None
            return np.full(n, INVALID_MODEL_REWARD, np.float32), invalid_success, error
        self.consecutive_failures = 0
        return rewards, success, None


def check_wrapper_values(mode: str = "replace", weight: float = 1.0, render_size: int | None = 224,
                         timeout_s: float | None = None, max_consecutive_failures: int = 10) -> None:
    """The wrapper settings (``reward.mode``, ``weight``, ...) in range, or one ConfigError naming the first bad one:
    ``make_reward`` checks them before building a model, the wrappers again when built in Python."""
    if mode not in MODES:
        raise ConfigError(f"reward.mode={mode!r} is not one of {', '.join(MODES)}")
    require("reward", finite={"weight": weight}, positive_int={"max_consecutive_failures": max_consecutive_failures,
                                                               **given(render_size=render_size)},
            positive=given(timeout_s=timeout_s))


def _check_wrapper_args(model: RewardModel, mode: str, weight: float, render_size: int | None,
                        terminate_on_success: bool, name: str) -> bool:
    """The wrappers' settings (GuardedModel checks its own); True if the model predicts success."""
    check_wrapper_values(mode, weight, render_size)
    predicts_success = success_enabled(model)
    if terminate_on_success and not predicts_success:
        raise ConfigError(f"reward.terminate_on_success=true but reward model {name!r} predicts no success")
    return predicts_success


class RewardWrapper(gym.Wrapper):
    """Replace (``mode="replace"``: r = weight * model) or blend (``mode="blend"``: r = gt + weight * model) the env
    reward with a reward model's output on a rendered RGB frame.

    Every step's ``info`` gets ``gt_reward`` (the env's reward, summed over action repeat), ``model_reward`` (the
    model's raw reward for the frame after the step) and keeps the env's ``success``; a model with
    ``predict_success`` adds ``model_success`` (and ends the episode on it when ``terminate_on_success``);
    ``reward_invalid`` flags a step whose model call failed (``timeout_s``, ``max_consecutive_failures``: see
    :class:`GuardedModel`).
    The simple path computes B=1 per step; :meth:`relabel` computes rewards for a stored batch of frames
    (replay-time relabelling) in chunks of the model's ``batch_size``.
    """

    def __init__(self, env: gym.Env, model: RewardModel, mode: str = "replace", weight: float = 1.0,
                 render_size: int | None = 224, terminate_on_success: bool = False, name: str = "model",
                 timeout_s: float | None = None, max_consecutive_failures: int = 10):
        super().__init__(env)
        self.predicts_success = _check_wrapper_args(model, mode, weight, render_size, terminate_on_success, name)
        self.guard = GuardedModel(model, name, self.predicts_success, timeout_s, max_consecutive_failures)
        self.model, self.mode, self.weight = model, mode, float(weight)
        caps = reward_capabilities(model)
        self.resets_model = caps.resets_per_episode
        if caps.binds_env:  # models that read the simulator (KAGI's keypoints) need the env
            model.bind(env)
        self.render_size = None if render_size is None else int(render_size)
        self.terminate_on_success = bool(terminate_on_success)
        self.batch_size = int(getattr(model, "batch_size", 64))  # relabelling chunk
        info = dict(getattr(env, "robotrl_info", {}))
        self.robotrl_info = {**info, "reward": name, "reward_mode": mode, "reward_weight": self.weight}
        self.metadata = {**env.metadata, "robotrl": self.robotrl_info}

    def render_frame(self) -> np.ndarray:
        return render_rgb(self.env, self.render_size)

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        obs, info = self.env.reset(**kwargs)
        if self.resets_model:  # per-episode model state (KAGI: a new VLM proposal, the tracker) starts on this frame
            self.model.reset(self.render_frame())
        return obs, info

    def step(self, action: Any) -> tuple[Any, SupportsFloat, bool, bool, dict[str, Any]]:
        obs, gt, terminated, truncated, info = self.env.step(action)
        frames = self.render_frame()[None]
        info = dict(info)
        rewards, success, error = self.guard.evaluate(frames, [info])
        model_reward = float(rewards[0])
        info["gt_reward"], info["model_reward"] = float(gt), model_reward
        info["reward_invalid"] = error is not None
        if error is not None:
            info["reward_error"] = error
        if success is not None:  # all False on a failed step: a failure never ends an episode as a success
            info["model_success"] = bool(success[0])
            if self.terminate_on_success and info["model_success"]:
                terminated = True
        reward = self.weight * model_reward if self.mode == "replace" else float(gt) + self.weight * model_reward
        return obs, reward, terminated, truncated, info

    def relabel(self, frames: np.ndarray | torch.Tensor, gt_reward: np.ndarray | None = None) -> np.ndarray:
        """Rewards for a batch of stored frames uint8 [N, H, W, 3] (replay-time relabelling), float32 [N].

        Computed in chunks of the model's ``batch_size``, combined with ``gt_reward`` [N] as :meth:`step` does.
        """
        n, _, _ = check_frames(frames)
        out = np.concatenate([np.asarray(self.model(frames[i:i + self.batch_size], None), np.float32)
                              for i in range(0, n, self.batch_size)])
        if self.mode == "replace":
            return (self.weight * out).astype(np.float32)
        if gt_reward is None:
            raise ValueError("relabel in mode='blend' needs gt_reward (one per frame)")
        return (np.asarray(gt_reward, np.float32).reshape(n) + self.weight * out).astype(np.float32)


class RewardVectorWrapper(gym.vector.VectorWrapper):
    """:class:`RewardWrapper` for a gymnasium vector env of robotrl contract envs: one batched model call per
    vector step (B = ``num_envs`` frames) instead of one call per sub-env.

    ``infos`` get ``gt_reward``, ``model_reward`` and ``reward_invalid`` arrays [num_envs] (failures as in
    :class:`RewardWrapper`). Works with ``autoreset_mode`` NEXT_STEP
    (gymnasium's default) or DISABLED: the step that resets a finished sub-env has reward 0 and is not scored.
    SAME_STEP is refused, because its frame after a terminal step shows the next episode's first state.
    The model gets ``info=None`` (vector infos are dicts of arrays, not one dict per frame).
    """

    def __init__(self, env: gym.vector.VectorEnv, model: RewardModel, mode: str = "replace", weight: float = 1.0,
                 render_size: int | None = 224, name: str = "model", timeout_s: float | None = None,
                 max_consecutive_failures: int = 10):
        super().__init__(env)
        _check_wrapper_args(model, mode, weight, render_size, False, name)
        self.guard = GuardedModel(model, name, False, timeout_s, max_consecutive_failures)
        autoreset = str(getattr(env.metadata.get("autoreset_mode"), "value", env.metadata.get("autoreset_mode")))
        if autoreset not in ("NextStep", "Disabled"):
            raise ConfigError(f"RewardVectorWrapper needs autoreset_mode NEXT_STEP or DISABLED, got {autoreset!r}")
        self.model, self.mode, self.weight, self.name = model, mode, float(weight), name
        self.render_size = None if render_size is None else int(render_size)
        self._resetting = np.zeros(env.num_envs, bool)  # sub-envs whose next step is an autoreset

    def reset(self, **kwargs: Any) -> tuple[Any, dict[str, Any]]:
        self._resetting[:] = False
        return self.env.reset(**kwargs)

    def render_frames(self) -> np.ndarray:
        """uint8 [num_envs, size, size, 3]: every sub-env's current state, as :func:`render_rgb` renders it."""
        if self.render_size is None:
            return np.stack(self.env.call("render"))
        return np.stack(self.env.call("render_frame", self.render_size))

    def step(self, actions: Any) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict[str, Any]]:
        obs, gt, terminated, truncated, infos = self.env.step(actions)
        gt = np.asarray(gt, np.float32)
        scored = ~self._resetting
        model_reward = np.zeros(self.num_envs, np.float32)
        invalid = np.zeros(self.num_envs, bool)
        if scored.any():
            frames = self.render_frames()[scored]
            model_reward[scored], _, error = self.guard.evaluate(frames, None)
            invalid[scored] = error is not None  # one batched call: a failure flags every scored sub-env
        reward = self.weight * model_reward if self.mode == "replace" else gt + self.weight * model_reward
        self._resetting = np.logical_or(terminated, truncated)
        infos = {**infos, "gt_reward": gt, "model_reward": model_reward, "reward_invalid": invalid}
        return obs, reward.astype(np.float32), terminated, truncated, infos
