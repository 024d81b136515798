"""``env.num_envs=N``: N contract envs in N worker processes through gymnasium's ``AsyncVectorEnv``.

Observations come back through shared memory and every worker renders its own pixels. Autoreset is DISABLED: the
caller resets finished sub-envs itself (``reset(seed=[...], options={"reset_mask": mask})``) so that every episode
starts from the seed the caller chose, exactly as with one env (``reset(seed=s)`` fully determines an episode).

A worker that crashes (an exception in ``step``/``reset``, a killed process, a dead EGL context) or hangs longer
than ``timeout_s`` is killed and started again (spawn context: a fresh GL context) and reset; the step reports it
in ``infos["worker_restarted"]`` with ``truncated=True`` and reward 0, so the caller discards that episode and
counts it (reliability cases 14-15). After ``max_restarts`` restarts in one vector env the run stops with a
one-line :class:`~robotrl.errors.EnvWorkerError` that names ``MUJOCO_GL``.
"""

from __future__ import annotations

import contextlib
import functools
import logging
import multiprocessing
import os
import time
from collections.abc import Sequence
from copy import deepcopy
from typing import Any

import gymnasium.vector.async_vector_env as gav
import numpy as np
from gymnasium.vector import AsyncVectorEnv, AutoresetMode
from gymnasium.vector.async_vector_env import AsyncState, _async_worker
from gymnasium.vector.utils import CloudpickleWrapper

from robotrl.config import config_dict
from robotrl.errors import EnvWorkerError
from robotrl.params import require

log = logging.getLogger(__name__)
RESTARTED = "worker_restarted"  # infos key: bool [num_envs], True where the worker was restarted during this call


def num_envs_of(cfg: Any) -> int:
    """``env.num_envs`` (default 1), validated."""
    value = config_dict(cfg, "env config").get("num_envs", 1)
    value = 1 if value is None else value
    require("env", positive_int={"num_envs": value})
    return int(value)


def _build(cfg: dict[str, Any], seed: int, caller_pid: int) -> Any:
    """Worker-side env builder (a module-level function: picklable for the spawn context). gymnasium also calls it
    once in the caller's process (``caller_pid``) to read the spaces."""
    import signal

    from robotrl.envs import make_env

    # Ctrl-C reaches the whole process group: the trainer stops at its next safe point and closes the workers;
    # a worker dying of the same SIGINT first would be taken for a crash and restarted. The caller keeps its own.
    if os.getpid() != caller_pid:
        signal.signal(signal.SIGINT, signal.SIG_IGN)

    return make_env(cfg, seed)


class ResilientVectorEnv(AsyncVectorEnv):
    """``AsyncVectorEnv`` (shared memory, spawn, autoreset DISABLED) whose crashed or hung workers are restarted.

    ``step``/``reset`` never raise for one worker's failure: the worker is replaced, reset with no seed, and its
    entry comes back with ``truncated=True``, reward 0 and ``infos["worker_restarted"][i] = True``. ``restarts``
    counts replacements; more than ``max_restarts`` raise :class:`EnvWorkerError`.
    """

    def __init__(self, env_fns: Sequence[Any], timeout_s: float = 120.0, max_restarts: int = 10,
                 context: str = "spawn", start_timeout_s: float = 300.0) -> None:
        """``timeout_s``: the longest a step/reset may take; ``start_timeout_s``: a replacement worker's first
        reset (it imports the simulator and builds the env first)."""
        require("env", positive={"worker_timeout_s": timeout_s}, nonneg_int={"max_worker_restarts": max_restarts})
        # A replacement worker needs the shared-memory buffer, which gymnasium keeps in a local of __init__ only
        # (and Process drops its args once started): catch it as gymnasium creates it.
        created: list[Any] = []
        original = gav.create_shared_memory

        def capture(*args: Any, **kwargs: Any) -> Any:
            created.append(original(*args, **kwargs))
            return created[-1]

        gav.create_shared_memory = capture
        try:
            super().__init__(list(env_fns), shared_memory=True, context=context, daemon=True,
                             autoreset_mode=AutoresetMode.DISABLED)
        finally:
            gav.create_shared_memory = original
        self.timeout_s, self.max_restarts, self.restarts = float(timeout_s), int(max_restarts), 0
        self.start_timeout_s = max(float(start_timeout_s), self.timeout_s)
        self._ctx = multiprocessing.get_context(context)
        self._shm = created[0]

    # ------------------------------------------------------------------ failure handling
    def _recv(self, index: int, deadline: float) -> tuple[Any, bool]:
        """One worker's reply, or (None, False) if it died, raised or missed the deadline."""
        pipe = self.parent_pipes[index]
        try:
            if not pipe.poll(max(deadline - time.monotonic(), 0.0)):
                log.warning("env worker %d gave no answer within %.0f s: restarting it", index, self.timeout_s)
                return None, False
            result, ok = pipe.recv()
        except (EOFError, ConnectionError, OSError) as e:
            log.warning("env worker %d died (%s): restarting it", index, type(e).__name__)
            return None, False
        if not ok:
            _, exctype, value, _ = self.error_queue.get(timeout=5)
            log.warning("env worker %d raised %s: %s; restarting it", index, exctype.__name__, value)
        return result, ok

    def restart_worker(self, index: int) -> None:
        """Kill worker ``index`` (if alive) and start a fresh one, reset with no seed, on the same shared memory."""
        self.restarts += 1
        if self.restarts > self.max_restarts:
            raise EnvWorkerError(
                f"env workers were restarted {self.restarts - 1} times (env.max_worker_restarts="
                f"{self.max_restarts}); the last one was worker {index}. Renderer crashes usually mean the GL "
                f"backend fails in subprocesses: check MUJOCO_GL (egl, osmesa) and the GPU driver")
        old = self.processes[index]
        if old.is_alive():
            old.kill()
        old.join(5)
        with contextlib.suppress(OSError, AttributeError):
            self.parent_pipes[index].close()
        parent, child = self._ctx.Pipe()
        args = (index, CloudpickleWrapper(self.env_fns[index]), child, parent, self._shm, self.error_queue,
                self.autoreset_mode, None)
        process = self._ctx.Process(target=_async_worker, name=f"Worker<{type(self).__name__}>-{index}",
                                    args=args, daemon=True)
        process.start()
        child.close()
        self.parent_pipes[index], self.processes[index] = parent, process
        parent.send(("reset", {"seed": None, "options": None}))
        _, ok = self._recv(index, time.monotonic() + self.start_timeout_s)
        if not ok:
            self.restart_worker(index)

    # ------------------------------------------------------------------ step / reset
    def step_wait(self, timeout: float | None = None) -> tuple[Any, np.ndarray, np.ndarray, np.ndarray, dict]:
        self._assert_is_running()
        deadline = time.monotonic() + (self.timeout_s if timeout is None else timeout)
        rewards = np.zeros(self.num_envs, np.float64)
        terminated = np.zeros(self.num_envs, np.bool_)
        truncated = np.zeros(self.num_envs, np.bool_)
        restarted = np.zeros(self.num_envs, np.bool_)
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            result, ok = self._recv(i, deadline)
            if ok:
                _, rewards[i], terminated[i], truncated[i], info = result
                infos = self._add_info(infos, info, i)
            else:
                restarted[i] = truncated[i] = True
        self._state = AsyncState.DEFAULT
        for i in np.flatnonzero(restarted):
            self.restart_worker(int(i))
        infos[RESTARTED] = restarted
        return deepcopy(self.observations), rewards, terminated, truncated, infos

    def reset_async(self, seed: Any = None, options: dict[str, Any] | None = None) -> None:
        """As gymnasium's, remembering the seeds and mask: a worker that fails its reset is restarted and
        reset again with the same seed."""
        seeds = seed if isinstance(seed, (list, tuple)) else [None if seed is None else seed + i
                                                               for i in range(self.num_envs)]
        mask = None if options is None else options.get("reset_mask")
        self._pending_reset = (list(seeds), None if mask is None else np.asarray(mask, bool).copy())
        super().reset_async(seed=list(seeds), options=None if options is None else dict(options))

    def reset_wait(self, timeout: float | None = None) -> tuple[Any, dict[str, Any]]:
        self._assert_is_running()
        deadline = time.monotonic() + (self.timeout_s if timeout is None else timeout)
        seeds, mask = self._pending_reset
        restarted = np.zeros(self.num_envs, np.bool_)
        infos: dict[str, Any] = {}
        for i in range(self.num_envs):
            result, ok = self._recv(i, deadline)
            if ok:
                infos = self._add_info(infos, result[1], i)
            else:
                restarted[i] = True
        self._state = AsyncState.DEFAULT
        for i in np.flatnonzero(restarted):
            self._reset_one(int(i), seeds[i])
        infos[RESTARTED] = restarted
        return deepcopy(self.observations), infos

    def _reset_one(self, index: int, seed: int | None) -> None:
        """Restart worker ``index`` and reset it with ``seed`` (its failed reset's seed), retrying on failure."""
        while True:
            self.restart_worker(index)
            self.parent_pipes[index].send(("reset", {"seed": seed, "options": None}))
            if self._recv(index, time.monotonic() + self.timeout_s)[1]:
                return

    def call_at(self, index: int, name: str, *args: Any, **kwargs: Any) -> Any:
        """``name(*args, **kwargs)`` on sub-env ``index`` only (e.g. ``render`` for the eval video)."""
        self._assert_is_running()
        self.parent_pipes[index].send(("_call", (name, args, kwargs)))
        result, ok = self._recv(index, time.monotonic() + self.timeout_s)
        if not ok:
            raise EnvWorkerError(f"env worker {index} failed during call {name!r}")
        return result


def make_vector_env(cfg: Any, seed: int, num_envs: int | None = None) -> ResilientVectorEnv:
    """``num_envs`` (default ``env.num_envs``) contract envs of ``cfg`` in worker processes; worker i is built with
    seed ``seed + i`` (every episode is then reset with an explicit seed by the caller)."""
    plain = config_dict(cfg, "env config")
    n = num_envs_of(plain) if num_envs is None else int(num_envs)
    timeout = plain.get("worker_timeout_s")  # null: the default
    max_restarts = plain.get("max_worker_restarts")
    from robotrl.envs.rendering import ensure_gl

    ensure_gl()  # MUJOCO_GL is set here, so spawned workers inherit it
    fns = [functools.partial(_build, plain, int(seed) + i, os.getpid()) for i in range(n)]
    return ResilientVectorEnv(fns, timeout_s=120.0 if timeout is None else timeout,
                              max_restarts=10 if max_restarts is None else max_restarts)


__all__ = ["RESTARTED", "ResilientVectorEnv", "make_vector_env", "num_envs_of"]
