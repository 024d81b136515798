"""Typed errors. Each message names the bad value and what was expected (one line)."""


class RobotRLError(Exception):
    """Base class for errors that the CLI prints as one line instead of a traceback."""


class ConfigError(RobotRLError, ValueError):
    """A config value is unknown, of the wrong type or out of range."""


class ObservationError(RobotRLError, ValueError):
    """An observation does not match the env contract (keys, shape, dtype, channel order)."""


class ActionError(RobotRLError, ValueError):
    """An action has the wrong shape, is not finite, or is outside the action bounds."""


class RunDirBusyError(RobotRLError):
    """Another process is writing the run dir (record session, World-Env run) this one was asked to write."""


class CheckpointError(RobotRLError):
    """A checkpoint is missing, corrupted, or was written by another agent/config."""


class RenderError(RobotRLError, RuntimeError):
    """The headless OpenGL backend could not be initialised."""


class DemoFormatError(RobotRLError, ValueError):
    """A demonstration file is empty, has missing keys or arrays of the wrong shape."""


class DivergenceError(RobotRLError):
    """Training produced a non-finite loss or value; the last checkpoint is kept intact."""


class RewardModelError(RobotRLError, RuntimeError):
    """A reward model failed (raised, returned NaN/inf, or timed out) on too many consecutive steps."""


class SweepJobError(RobotRLError):
    """A job of a multirun sweep (basic, submitit or Ray launcher) failed; names the job's run dir or its log."""


class EnvWorkerError(RobotRLError, RuntimeError):
    """Vector-env workers kept crashing or hanging (``env.max_worker_restarts`` exceeded)."""


class AssetError(RobotRLError, RuntimeError):
    """A simulator's scene/object assets (meshes, textures, scene XML) are missing; names the file and the fix."""
