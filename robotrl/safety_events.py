"""The kinds of event the hardware safety layer logs (``SafetyLayer.events[i]["kind"]``), as one enum.

A :class:`SafetyEvent` is a ``StrEnum``: its value is the string logs, ``events.jsonl``, summaries and ``.rrd``
files have always held, and a member compares equal to that string, so readers of old logs keep working. It lives
in the core (not in ``hardware/``) because core readers (``robotrl.live_view``) sort events by kind too, and the
core may not import a plug-in. ``SafetyLayer._event`` converts every kind it logs with ``SafetyEvent(kind)``: a
misspelt kind is a ValueError where it is emitted, not an event no reader recognises.
"""

from __future__ import annotations

from enum import StrEnum


class SafetyEvent(StrEnum):
    # life cycle
    CONNECT = "connect"
    DISCONNECT = "disconnect"
    HOME = "home"
    HOLD = "hold"  # a hold that was asked for (RobotEnv between episodes, a user)
    RESUME = "resume"
    REARM = "rearm"
    STOP = "stop"  # the controlled stop before a disconnect
    # per-command limits (limit_check.py): the layer clipped (or, with on_limit=reject, refused) the command
    EE_STEP = "ee_step"
    EE_ACCEL = "ee_accel"
    WORKSPACE = "workspace"
    JOINT_STEP = "joint_step"
    JOINT_ACCEL = "joint_accel"
    JOINT_LIMIT = "joint_limit"
    GRIPPER = "gripper"
    NONFINITE = "nonfinite"
    BAD_ACTION = "bad_action"
    # measured state and observations: the arm holds
    JOINT_LIMIT_MEASURED = "joint_limit_measured"
    JOINT_LIMIT_BRAKING = "joint_limit_braking"  # end-effector mode: a measured joint could not stop before its limit
    WORKSPACE_MEASURED = "workspace_measured"
    STALE_STATE = "stale_state"
    STALE_FRAME = "stale_frame"  # counted, no hold: a camera gave the frame it gave last time
    CAMERA_ERROR = "camera_error"
    # stops from outside the command path
    ESTOP = "estop"
    WATCHDOG = "watchdog"
    OVERRUN = "overrun"  # counted; too many in a row is a RATE_FAULT
    RATE_FAULT = "rate_fault"
    ENV_TIMEOUT = "env_timeout"  # RobotEnv's step or reset did not return in time
    # the driver failed: the robot is in FAULT
    DRIVER_ERROR = "driver_error"
    DRIVER_TIMEOUT = "driver_timeout"
    HOLD_FAILED = "hold_failed"
    DISCONNECT_FAILED = "disconnect_failed"
    SHUTDOWN = "shutdown"


E = SafetyEvent
# The layer changed or stopped what the policy asked for (RobotEnv's info["interventions"]).
INTERVENTIONS = frozenset({E.EE_STEP, E.WORKSPACE, E.JOINT_STEP, E.JOINT_LIMIT, E.GRIPPER, E.JOINT_LIMIT_MEASURED,
                           E.JOINT_LIMIT_BRAKING,
                           E.WATCHDOG, E.ESTOP, E.RATE_FAULT, E.NONFINITE, E.BAD_ACTION, E.EE_ACCEL, E.JOINT_ACCEL,
                           E.WORKSPACE_MEASURED, E.STALE_STATE, E.CAMERA_ERROR})
# The arm holds after these (the live view's warning level).
HOLD_EVENTS = frozenset({E.WATCHDOG, E.ESTOP, E.RATE_FAULT, E.NONFINITE, E.BAD_ACTION, E.JOINT_LIMIT_MEASURED, E.HOLD,
                         E.JOINT_LIMIT_BRAKING,
                         E.STALE_STATE, E.STALE_FRAME, E.CAMERA_ERROR})
# The driver failed: the robot ended in FAULT whether or not an exception reached the caller.
FAULT_EVENTS = frozenset({E.DRIVER_TIMEOUT, E.DRIVER_ERROR, E.HOLD_FAILED, E.SHUTDOWN})
FAILURE_EVENTS = (E.DRIVER_TIMEOUT, E.DRIVER_ERROR, E.HOLD_FAILED, E.DISCONNECT_FAILED)
