"""``RobotEnv``: the robotrl env contract over any :class:`~robotrl.hardware.robot.Robot` behind its safety layer.

Why it lives in ``hardware/`` and not in ``envs/``: ``robot=sim`` already builds its MuJoCo scene through
``robotrl.envs.make_env`` (the one allowed hardware -> envs edge), so an ``envs -> hardware`` import would make the
two plug-in kinds depend on each other. ``RobotEnv`` needs only the core contract (``robotrl.contract``) and the
hardware layer's own ``Robot`` / ``SafetyLayer``; the workflows, which may see every plug-in, pick it when
``robot=`` names an arm (``robotrl.workflows.run_env.make_run_env``), and everything downstream of an env (agents,
reward wrappers, replay, checkpoints, evaluation) sees a plain ``gymnasium.Env``.

The contract, as ``make_env``'s: observations ``{"pixels": uint8 (3 * views * frame_stack, H, W), "state": float32
(8,)}`` per ``obs_type`` (``pixels``, ``proprio``, ``pixels_proprio``; ``state``/``pixels_state`` are refused: no
arm measures object or goal positions), the state being Meta-World's 8-d proprioception (hand xyz, finger
opening, and the same for the previous env step, as ``robotrl deploy`` computes it); actions float32 in [-1, 1]^4 =
(dx, dy, dz, gripper) at ``metres_per_unit`` (Meta-World's 0.01 m), each sent ``action_repeat`` times one control
period apart; ``truncated`` at ``max_agent_steps``; ``info["success"]`` when a detector gives one.

Safety: every command goes through the :class:`~robotrl.hardware.safety.SafetyLayer`. A command it refuses or
that ends in HOLD (a rejected action, e-stop, watchdog, measured joint limit, rate fault) ends the episode with
``truncated=True`` and ``info["safety_stop"]`` = the reason, logged as a warning; clipped commands (the layer's
default) continue and are counted as ``info["interventions"]``. A driver fault (``DriverError``) is not an
episode end: it propagates and the run stops. An episode end and a reset put the arm in HOLD on purpose (the first
step resumes it), so the time the learner spends between episodes or over its first action never trips the watchdog.

Control rate: sends are at least one period (``1 / limits.control_hz``) apart, measured from the previous send, so
the agent's own compute time between steps counts; a step whose first send comes later than
``overrun_factor`` periods is an overrun (``info["overrun_ms"]``, counted in :attr:`RobotEnv.stats`; the safety
layer also logs it and holds the arm after too many in a row).

Human interventions (SERL's): an ``operator`` callable ``(step, obs) -> action or None`` is asked before every
step; an action it returns replaces the policy's for that step (``info["intervention"] = True`` and
``info["executed_action"]``, what the arm was sent: replay stores that, the trainer keeps the segments as demos);
take-over and hand-back are logged. ``info["sent_action"]`` is what the safety layer let reach the driver (its clips
applied; the mean over the action repeat, in policy units): what ``robotrl record`` stores as executed.

Options for the commands that share this loop (``robotrl.workflows.control_loop``): ``cameras`` picks and orders the
robot's cameras a policy sees (default all); ``dry_run`` reads observations and keeps the control rate, but nothing
reaches the driver (no homing, random start, hold, resume or send; ``info["sent_actions"]`` stays empty) until
``close``, whose disconnect still makes the safety layer's controlled stop;
``stop_error`` is the exception a safety stop ended the last episode with (``robotrl deploy`` ends its run with it).
The observation pipeline itself is :class:`robotrl.hardware.robot_obs.ObservationPipeline`.

Bounded calls: with ``env.num_envs=1`` (the only choice on an arm) nothing above this env times out a step, so
``step`` and ``reset`` run on a worker thread and wait at most ``step_timeout_s`` / ``reset_timeout_s``; one that
does not return (a stuck operator device, a driver that ignores its timeouts) stops the arm through the safety
layer's ``stop_motion`` (HOLD; FAULT if the driver does not answer) and raises :class:`EnvTimeoutError`, one line
naming the phase it was in. Ctrl-C while waiting asks a running homing to stop before it propagates.

Reset: ``reset_to_home`` (``robot=sim`` also restores its scene), then a randomised start: the hand moves by an
offset drawn uniformly from ``[-home_noise_m, home_noise_m]^3`` with the reset seed, through the safety layer.
Rewards: a real arm has none (0.0; ``reward=`` models provide one). A simulated arm that exposes
``ground_truth(action) -> (reward, success)`` (``robot=sim``: Meta-World's reward and success on the true scene
state) gives them, for CI runs and ground-truth evaluation.
"""

from __future__ import annotations

import logging
import time
from dataclasses import dataclass, field
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np
from robotrl.hardware.driver_thread import DriverCallTimeout, DriverThread
from robotrl.hardware.obs_checks import CameraError, check_frame
from robotrl.hardware.robot import (
    ActionMode,
    EStopError,
    MotionPreempted,
    Observation,
    RobotError,
    RobotState,
    RobotStateError,
    UnsafeActionError,
    ee_action_from_policy,
)
from robotrl.hardware.robot_obs import ObservationPipeline, proprio
from robotrl.hardware.safety import ControlRateError

from robotrl.contract import OBS_TYPES, check_action
from robotrl.errors import ConfigError
from robotrl.safety_events import INTERVENTIONS, SafetyEvent

log = logging.getLogger(__name__)

METAWORLD_METRES_PER_UNIT = 0.01  # SawyerXYZEnv.action_scale
ROBOT_OBS_TYPES = ("pixels", "proprio", "pixels_proprio")
SAFETY_STOPS = (UnsafeActionError, EStopError, ControlRateError, RobotStateError)
STEP_TIMEOUT_S = 10.0  # plus the sends' own bounds (driver timeout and stop time each); see RobotEnv.step_timeout_s
RESET_MARGIN_S = 10.0  # reset: the safety layer's home_timeout_s plus this


class EnvTimeoutError(RobotError):
    """A RobotEnv step or reset did not return in time; the arm was stopped (HOLD, or FAULT if its driver hung)."""


@dataclass
class EpisodeSafety:
    """Safety and timing counts of one episode (``RobotEnv.stats``; the last finished one in ``last_episode``)."""

    steps: int = 0
    interventions: int = 0  # safety-layer events that changed or stopped a command
    overruns: int = 0  # agent steps whose first send came later than overrun_factor periods
    stop: str | None = None  # why the safety layer ended the episode, if it did
    achieved_hz: float | None = None  # commands per second as they reached the driver (1 / median period)
    period_ms_p99: float | None = None  # the 99th percentile of those periods
    events: list[dict[str, Any]] = field(default_factory=list)  # the intervention events themselves


class RobotEnv(gym.Env):
    """The env contract over a connected (or connectable) SafetyLayer ``robot``; see the module docstring."""

    metadata = {"render_modes": ["rgb_array"]}
    action_mode = ActionMode.EE_DELTA  # what the robot must accept: each step is sent as this kind of Action

    def __init__(self, robot: Any, *, obs_type: str = "pixels", image_size: int = 84, frame_stack: int = 3,
                 action_repeat: int = 2, max_agent_steps: int = 100, home_noise_m: float = 0.0,
                 metres_per_unit: float = METAWORLD_METRES_PER_UNIT, info: dict[str, Any] | None = None,
                 operator: Any = None, live: Any = None, cameras: tuple[str, ...] | None = None,
                 dry_run: bool = False) -> None:
        if obs_type not in ROBOT_OBS_TYPES:
            raise ConfigError(f"env.obs_type={obs_type!r} on a robot: expected one of {list(ROBOT_OBS_TYPES)} "
                              f"(an arm measures no object or goal state)")
        if self.action_mode not in robot.action_modes:  # (JointRobotEnv: joint space, robot_env_joint.py)
            raise ConfigError(f"robot={robot.inner.name} takes no end-effector actions; RobotEnv drives the hand "
                              f"in (dx, dy, dz, gripper) as Meta-World policies do")
        if home_noise_m < 0 or not np.isfinite(home_noise_m):
            raise ConfigError(f"robot home_noise_m={home_noise_m!r}, expected a finite number >= 0 (metres)")
        self.robot = robot
        self.obs_type, self.keys = obs_type, OBS_TYPES[obs_type]
        self.image_size, self.frame_stack, self.action_repeat = image_size, frame_stack, action_repeat
        self.max_agent_steps, self.home_noise_m, self.metres_per_unit = max_agent_steps, home_noise_m, metres_per_unit
        self.cameras = tuple(robot.camera_names) if cameras is None else tuple(cameras)
        unknown = [c for c in self.cameras if c not in robot.camera_names]
        if unknown:
            raise ConfigError(f"camera {unknown[0]!r} is not one of robot={robot.inner.name}'s cameras "
                              f"{list(robot.camera_names)}")
        self.dry_run = dry_run  # observe and pace, but nothing reaches the driver: no homing, hold, resume or send
        if "pixels" in self.keys and not self.cameras:
            raise ConfigError(f"env.obs_type={obs_type!r} needs a camera; robot={robot.inner.name} has none "
                              f"(use env.obs_type=proprio)")
        spaces: dict[str, gym.Space] = {}
        if "pixels" in self.keys:
            channels = 3 * len(self.cameras) * frame_stack
            spaces["pixels"] = gym.spaces.Box(0, 255, (channels, image_size, image_size), np.uint8)
        if "state" in self.keys:
            spaces["state"] = gym.spaces.Box(-np.inf, np.inf, (8,), np.float32)
        self.observation_space = gym.spaces.Dict(spaces)
        self.action_space = gym.spaces.Box(-1.0, 1.0, (4,), np.float32)
        self.robotrl_info = {**(info or {}), "robot": robot.inner.name, "obs_type": obs_type,
                             "cameras": list(self.cameras), "max_agent_steps": max_agent_steps}
        self.period = 1.0 / float(robot.limits.control_hz)
        self.pipeline = ObservationPipeline(obs_type, self.cameras, image_size, frame_stack, robot.frame_map,
                                             proprio_fn=self._proprio)
        self.stop_error: Exception | None = None  # what ended the last episode early, for callers that stop on it
        self.send_times: list[float] = []  # when the last step's sends returned (a dry run's: its ticks)
        self._last_send: float | None = None
        self._last_frame: np.ndarray | None = None
        self._steps = 0
        self._events_seen = 0
        self.stats = EpisodeSafety()
        self.last_episode: EpisodeSafety | None = None
        self._ground_truth = robot.inner.ground_truth if robot.inner.gives_reward else None  # simulated arms only
        self.operator = operator
        self.live = live  # a robotrl.live_view.ArmLog (robot_env.live_view): frames, actions, events per step
        self._last_observation: Observation | None = None  # the last valid one (a frozen camera's step reuses it)
        self._obs_now: dict[str, np.ndarray] | None = None
        self._taken_over = False
        self._resume_on_step = False
        limits = robot.limits
        per_call = limits.driver_timeout_ms / 1000 + robot.stop_timeout_s
        self.step_timeout_s = STEP_TIMEOUT_S + (2 * action_repeat + 1) * per_call  # sends, reads, the observation
        self.reset_timeout_s = robot.home_timeout_s + RESET_MARGIN_S
        self._phase = "idle"  # what the worker is doing, for the timeout's message
        self._worker: DriverThread | None = None

    # ------------------------------------------------------------------------------------------ observations
    def _keep_frame(self, observation: Observation) -> None:
        """Keep the camera image(s) for :meth:`render` whatever ``obs_type`` is: reward models read frames
        (``reward=success_classifier``, ``reward=kagi``) also when the agent sees only proprioception."""
        if self.cameras:
            self._last_frame = np.concatenate(
                [check_frame(cam, observation.frames[cam].image) for cam in self.cameras], axis=1)

    @property
    def last_observation(self) -> Observation | None:
        """The robot observation the last step or reset ended on (recorders read its frames and joints)."""
        return self._last_observation

    # ------------------------------------------------------------------------------------------ safety bookkeeping
    def _new_interventions(self) -> int:
        events = self.robot.events
        new = [e for e in events[self._events_seen:] if e["kind"] in INTERVENTIONS]
        self._events_seen = len(events)
        self.stats.events.extend(new)
        return len(new)

    def _report_rate(self, info: dict[str, Any]) -> None:
        """The episode's achieved control rate, measured where its commands reached the driver (the layer's window
        restarts at each homing), into ``info`` and :attr:`stats`; nothing in a dry run (no command was sent)."""
        rate = self.robot.control_rate()
        if rate["achieved_hz"] is not None:
            self.stats.achieved_hz = info["achieved_hz"] = rate["achieved_hz"]
            self.stats.period_ms_p99 = info["period_ms_p99"] = rate["period_ms_p99"]

    def _end_episode(self) -> None:
        """Hold the arm deliberately (the learner may now take a while) and close the episode's counts."""
        if self.robot.state in (RobotState.READY, RobotState.MOVING) and not self.dry_run:
            self.robot.hold()
        self._new_interventions()
        self.last_episode = self.stats

    # ------------------------------------------------------------------------------------------ gymnasium API
    # ------------------------------------------------------------------------------------------ bounded calls
    def _bounded(self, what: str, timeout: float, fn: Any, *args: Any) -> Any:
        """``fn(*args)`` on the worker thread, at most ``timeout`` s; then the arm is stopped and EnvTimeoutError
        names the phase the call was stuck in."""
        if self._worker is None:
            self._worker = DriverThread("robot-env")
        try:
            return self._worker.call(fn, args, timeout, on_interrupt=self.robot.inner.request_stop,
                                     grace_s=self.robot.stop_timeout_s)
        except DriverCallTimeout:
            phase = self._phase
            self._worker.close(wait=False)  # stuck: never used again
            self._worker = None
            self.robot.stop_motion(SafetyEvent.ENV_TIMEOUT, f"{what} stuck in {phase} for {timeout:g} s")
            raise EnvTimeoutError(f"robot env {what} did not return within {timeout:g} s (stuck in {phase}); "
                                  f"the arm is in {self.robot.state.value}") from None

    def reset(self, *, seed: int | None = None, options: dict[str, Any] | None = None):
        return self._bounded("reset", self.reset_timeout_s, self._reset, seed, options)

    def step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        return self._bounded("step", self.step_timeout_s, self._step, action)

    def _reset(self, seed: int | None, options: dict[str, Any] | None):
        super().reset(seed=seed)
        self._phase = "connect"
        if self.robot.state is RobotState.DISCONNECTED:
            self.robot.connect()
        self._phase = "reset_to_home"
        if not self.dry_run:  # homing moves the arm: a dry run sends nothing at all
            try:
                self.robot.reset_to_home()  # also from HOLD after a safety stop; an engaged e-stop raises
            except MotionPreempted as exc:  # stop_motion from another thread: it says why
                raise EStopError(f"{self.robot.name}: homing stopped ({self.robot.hold_reason})") from exc
        self._phase = "random start"
        self._events_seen = len(self.robot.events)
        self.stats = EpisodeSafety()
        self._steps, self._last_send, self.stop_error = 0, None, None
        if self.home_noise_m > 0 and not self.dry_run:
            self._random_start()
        self._taken_over = False
        self._reobserve()
        # Hold until the first step: the agent may take long over its first action (MoDem's BC pretraining, the
        # first planning call), and a moving arm waiting that long is what the watchdog stops.
        if not self.dry_run:
            self._phase = "hold"
            self.robot.hold()
            self._resume_on_step = True
        self._phase = "idle"
        return self._obs_now, {"success": False} if self._ground_truth else {}

    def reobserve(self) -> dict[str, np.ndarray]:
        """The reset observation taken again, now: nothing is sent, the arm holds where reset left it. For a reset
        phase that waits (``robotrl record``: a person sets the scene up), so the episode starts from the scene as
        it is when the episode starts, not from before the wait."""
        return self._bounded("reset", self.reset_timeout_s, self._reobserve)

    def _reobserve(self) -> dict[str, np.ndarray]:
        self._phase = "observe"
        observation = self._last_observation = self.robot.get_observation()
        self._keep_frame(observation)
        self._obs_now = self.pipeline.reset(observation)
        self._phase = "idle"
        return self._obs_now

    def _random_start(self) -> None:
        """Move the hand by a seeded uniform offset, in steps the safety layer allows, at the control rate."""
        offset = self.np_random.uniform(-self.home_noise_m, self.home_noise_m, 3)
        n = max(1, int(np.ceil(np.abs(offset).max() / self.robot.limits.ee_step_from_rest())))
        for _ in range(n):
            self._wait_period()
            self.robot.send_action(ee_action_from_policy(np.append(offset / n / self.metres_per_unit, -1.0),
                                                         self.metres_per_unit, self.robot.frame_map))
            self._last_send = time.monotonic()
        self._new_interventions()  # a start offset clipped at the workspace box is not the policy's doing
        self.stats = EpisodeSafety()

    def _wait_period(self) -> float:
        """Sleep until one period after the previous send returned (so the safety layer's velocity limit always
        sees at least one period: the same clipping, run to run); returns the lateness in s (0 when on time)."""
        now = time.monotonic()
        if self._last_send is None:
            return 0.0
        due = self._last_send + self.period
        if now < due:
            time.sleep(due - now)
            return 0.0
        return now - self._last_send

    def _step(self, action: Any) -> tuple[dict[str, np.ndarray], SupportsFloat, bool, bool, dict[str, Any]]:
        action = policy_action = check_action(action, self.action_space)
        info: dict[str, Any] = {"sent_actions": []}  # what reached the driver per send, in policy units
        self.send_times = []
        self._phase = "operator"
        human = None if self.operator is None else self.operator(self._steps, self._obs_now)
        if (human is not None) != self._taken_over:
            self._taken_over = human is not None
            log.info("operator %s at step %d", "takes over" if self._taken_over else "hands back", self._steps)
        if human is not None:  # a person's command: in [-1, 1] like the policy's (a raw device may overshoot)
            action = np.clip(np.asarray(human, np.float32).reshape(self.action_space.shape), -1.0, 1.0)
            info.update(intervention=True, executed_action=action)
        reward, success = 0.0, False
        observation = None
        try:
            if self._resume_on_step:  # out of the hold reset() left the arm in (an e-stop meanwhile raises here)
                self._phase = "resume"
                self._resume_on_step = False
                self.robot.resume()
            reward, success = self._send_repeats(action, info)
            self._phase = "observe"
            self._wait_period()  # the observation one period after the last send, as the sim's env step
            observation = self.robot.get_observation()
            if self.robot.state is RobotState.HOLD and not self.dry_run:  # the measurement held the arm (joint limit)
                raise self._held_error()
        except (*SAFETY_STOPS, CameraError) as exc:
            self.stop_error = exc
            self.stats.stop = self.robot.hold_reason or str(exc)
            info["safety_stop"] = self.stats.stop
            log.warning("episode ended by the safety layer at step %d: %s", self._steps + 1, self.stats.stop)
            observation = self._observation_after_stop(exc, observation, info)
        self._last_observation = observation
        self._steps += 1
        self.stats.steps = self._steps
        info.update(self._sent_info(info["sent_actions"]))
        info["interventions"] = self._new_interventions()
        self.stats.interventions += info["interventions"]
        self._keep_frame(observation)
        obs = self._obs_now = self.pipeline.step(observation)
        if self._ground_truth is not None:
            info["success"] = bool(success)
        truncated = "safety_stop" in info or self._steps >= self.max_agent_steps
        if truncated:
            self._report_rate(info)  # (before the hold, which restarts the layer's rate window)
            self._phase = "end of episode hold"
            self._end_episode()
        self._log_live(observation, policy_action, info["sent_actions"], float(reward), info)
        self._phase = "idle"
        return obs, float(reward), False, truncated, info

    def _send_repeats(self, action: np.ndarray, info: dict[str, Any]) -> tuple[float, bool]:
        """Send ``action`` ``action_repeat`` times one period apart (a dry run only keeps the time); returns the
        simulator's summed reward and success, if it has them."""
        reward, success = 0.0, False
        for repeat in range(self.action_repeat):
            self._phase = f"send {repeat + 1} of {self.action_repeat}"
            since = self._wait_period()
            # (not the episode's first step: the reset's homing and first frame are not the agent's time)
            if repeat == 0 and self._steps and since > self.robot.limits.overrun_factor * self.period:
                info["overrun_ms"] = round(since * 1e3, 2)  # the agent's compute time included
                self.stats.overruns += 1
            if self.dry_run:
                self._last_send = time.monotonic()
                self.send_times.append(self._last_send)
                continue
            if repeat:  # the arm after the previous send: Meta-World's "previous" proprioception
                self.pipeline.between_sends(self.robot.get_state())
            sent = self.robot.send_action(self._robot_action(action))
            self._last_send = time.monotonic()
            self.send_times.append(self._last_send)
            info["sent_actions"].append(self._policy_units(sent))
            if self._ground_truth is not None:
                self._phase = "ground truth"
                r, s = self._ground_truth(action)
                reward, success = reward + r, success or s
            if self.robot.state is RobotState.HOLD:  # e.g. the watchdog fired during a long step
                raise self._held_error()
        return reward, success

    def _held_error(self) -> RobotError:
        """Why the arm holds in the middle of a step. An e-stop from another thread (a key, a signal) is an
        EStopError wherever the step notices it, so the run ends with the same error whatever the timing."""
        if self.robot.estopped:
            return EStopError(f"{self.robot.name}: e-stop engaged ({self.robot.hold_reason}); the arm holds")
        return RobotStateError(f"{self.robot.name}: arm holds ({self.robot.hold_reason})")

    def _observation_after_stop(self, exc: Exception, observation: Observation | None,
                                info: dict[str, Any]) -> Observation:
        """The observation a step the safety layer stopped ends on: a camera gave no valid frame (the arm holds) ->
        the last valid observation, flagged ``info["stale_observation"]``; else this step's, read now if missing."""
        if isinstance(exc, CameraError):
            info["stale_observation"] = True
            assert self._last_observation is not None  # reset() read one
            return self._last_observation
        return self.robot.get_observation() if observation is None else observation

    def _log_live(self, observation: Observation, policy_action: np.ndarray, sent_units: list[np.ndarray],
                  reward: float, info: dict[str, Any]) -> None:
        """One step in the live view: frames (only when they are this step's), the policy's vs the executed action
        (the sends' mean, in policy units), the safety events, the simulator's reward and success if it has them."""
        if self.live is None:
            return
        truth = {"reward": reward, "success": info["success"]} if self._ground_truth is not None else {}
        self.live.log(None if info.get("stale_observation") else observation.frames, policy_action=policy_action,
                      executed_action=np.mean(sent_units, axis=0) if sent_units else None,
                      intervention=bool(info.get("intervention")), **truth)

    def _proprio(self, state: Any) -> np.ndarray:
        """The current half of the ``state`` observation (Meta-World's hand xyz + finger opening)."""
        return proprio(state, self.robot.frame_map)

    def _robot_action(self, action: np.ndarray) -> Any:
        """A (checked) policy action as the :class:`Action` the safety layer gets."""
        return ee_action_from_policy(action, self.metres_per_unit, self.robot.frame_map)

    @staticmethod
    def _sent_info(sent_units: list[np.ndarray]) -> dict[str, np.ndarray]:
        """``sent_action``: what the safety layer let reach the driver (the mean over the action repeat, policy
        units); absent when nothing was sent."""
        return {"sent_action": np.mean(sent_units, axis=0).astype(np.float32)} if sent_units else {}

    def _policy_units(self, sent: Any) -> np.ndarray:
        """A sent :class:`Action` back in the policy's [-1, 1] units and frame (gripper +1 = closed)."""
        delta = self.robot.frame_map.delta_to_policy(sent.delta) / self.metres_per_unit
        return np.append(delta, 2.0 * sent.gripper - 1.0)

    @property
    def scene(self) -> Any:
        """The simulator behind a simulated arm (``robot=sim``: its Meta-World env), None on a real arm: what reward
        models may read to annotate a first frame (KAGI's keypoints), never the agent's observation."""
        return getattr(self.robot.inner, "scene", None)

    def intervention_total(self) -> int:
        """Safety-layer interventions on this arm since it was built (all episodes, start moves included)."""
        return sum(e["kind"] in INTERVENTIONS for e in self.robot.events)

    def render(self) -> np.ndarray:
        """The newest camera frame(s) side by side (H, W * views, 3), for eval videos and reward models (black
        before the first observation, and always on an arm without cameras)."""
        if self._last_frame is None:
            return np.zeros((self.image_size, self.image_size * max(len(self.cameras), 1), 3), np.uint8)
        return self._last_frame

    def close(self) -> None:
        """Hold and disconnect the arm (idempotent); close the live view."""
        self.robot.disconnect()
        if self.live is not None:
            self.live.flush()
            self.live.view.close()
            self.live = None
        self.stop_worker()

    def stop_worker(self) -> None:
        """End the worker thread that runs steps and resets (a later call starts a new one); the arm is untouched."""
        if self._worker is not None:
            self._worker.close(wait=False)
            self._worker = None
