"""Remote policy over gRPC: the policy on a GPU machine, the robot client near the arm (LeRobot's async inference).

Transport: grpc generic handlers on raw bytes (no protoc, no pickle), messages in :mod:`policy_wire`'s format,
checked before any array is built, so a malformed message is one ``INVALID_ARGUMENT`` line and the server keeps
serving. Both sides set
``grpc.max_{send,receive}_message_length`` (``max_message_bytes``), so an oversized message is refused by gRPC
itself (``RESOURCE_EXHAUSTED``) before it is read. Every call carries a shared token in the ``x-robotrl-token``
metadata, compared in constant time (``UNAUTHENTICATED`` otherwise). The server binds 127.0.0.1 unless ``host``
says otherwise.

Methods of ``robotrl.PolicyService``: ``Spec`` (the checkpoint's env config and action dim, so the robot client
builds the training observation pipeline without the weights) and ``GetActions`` (an observation tagged with its
agent step -> an action chunk for that step and the following ones). Our agents (DrQ-v2, TD-MPC2...) give one
action per observation, i.e. chunks of length 1; a chunking policy returns more.

:class:`AsyncPolicyClient` keeps a queue of (step, action); when the queue falls to ``threshold`` x the last
chunk length it sends the current observation without waiting, so the next chunk is computed while the robot
executes the current one; a chunk's actions for steps already executed are dropped, later ones replace queued ones
(LeRobot's ``latest_only``). With an empty queue it waits for the server up to ``timeout_s``; meanwhile no command
reaches the robot, so the safety layer's watchdog holds the arm, and then it raises :class:`PolicyServerError`.
"""

from __future__ import annotations

import collections
import concurrent.futures
import hmac
import logging
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from robotrl.commands import Args, Command, options
from robotrl.errors import ConfigError, RobotRLError
from robotrl.workflows.policy_wire import MessageError, check_values, decode, encode

log = logging.getLogger(__name__)

SERVICE = "robotrl.PolicyService"
TOKEN_KEY = "x-robotrl-token"
DEFAULT_MAX_MESSAGE_BYTES = 4 * 2**20  # 4 MiB: a 9x84x84 uint8 frame stack is 64 KB
LOOPBACK = ("127.0.0.1", "localhost", "::1", "[::1]")
# A server reachable from the network needs a token this long (16 random characters ~ 95 bits from a password
# generator): the token is the only thing between the network and the policy that drives the arm.
MIN_TOKEN_CHARS = 16


class PolicyServerError(RobotRLError):
    """The policy server is unreachable, refused the request, or sent a malformed reply."""

    def __init__(self, message: str, code: str = "") -> None:
        super().__init__(message)
        self.code = code  # the gRPC status name, e.g. "UNAVAILABLE"


def _grpc() -> Any:
    try:
        import grpc
    except ImportError:
        raise ConfigError("the policy server needs grpcio: pip install 'robotrl[serve]'") from None
    return grpc


def _options(max_message_bytes: int) -> list[tuple[str, int]]:
    return [("grpc.max_send_message_length", max_message_bytes),
            ("grpc.max_receive_message_length", max_message_bytes)]


# ------------------------------------------------------------------------------------------------ server
ChunkPolicy = Callable[[dict[str, np.ndarray], bool], np.ndarray]  # (obs, episode_start) -> (k, A) actions


@dataclass
class ServedPolicy:
    """What the server serves: the spec a client needs, the observation check, and the chunk function."""

    spec: dict[str, Any]  # {"env": env config, "action_dim": A, "agent": name, "checkpoint": path}
    check: Callable[[dict[str, np.ndarray]], None]  # raises on a wrong-shaped observation
    act: ChunkPolicy


def served_checkpoint(checkpoint: str | Path, device: str = "cpu") -> ServedPolicy:
    """A checkpoint's agent as a :class:`ServedPolicy` (one deterministic action per observation)."""
    from omegaconf import OmegaConf

    from robotrl.workflows.policy import load_policy

    policy = load_policy(checkpoint, device)
    return served_agent(policy.agent, {"env": OmegaConf.to_container(policy.cfg.env, resolve=True),
                                       "agent": str(policy.cfg.agent.name), "checkpoint": str(policy.checkpoint)})


def served_agent(agent: Any, spec: dict[str, Any]) -> ServedPolicy:
    """A loaded agent as a :class:`ServedPolicy`; ``spec`` gets its action dim (bench/policy_server.py serves a
    random-weight agent through this)."""
    from robotrl.contract import check_obs
    from robotrl.workflows.policy import Policy

    policy = Policy(agent)  # the one deterministic action (robotrl.workflows.policy)
    lock = threading.Lock()  # one agent, several gRPC worker threads

    def act(obs: dict[str, np.ndarray], episode_start: bool) -> np.ndarray:
        with lock:
            if episode_start:
                policy.reset()
            return np.asarray(policy(obs), np.float32)[None]

    spec = {**spec, "action_dim": int(agent.action_space.shape[0])}
    return ServedPolicy(spec, lambda obs: check_obs(obs, agent.observation_space), act)


class PolicyServer:
    """A gRPC server for one :class:`ServedPolicy`; ``port=0`` picks a free port (``self.port``)."""

    def __init__(self, policy: ServedPolicy, token: str, host: str = "127.0.0.1", port: int = 0,
                 max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES, workers: int = 2) -> None:
        grpc = _grpc()
        if not token:
            raise ConfigError("the policy server needs a non-empty token (token=... or $ROBOTRL_POLICY_TOKEN)")
        if host not in LOOPBACK and len(token) < MIN_TOKEN_CHARS:
            raise ConfigError(f"host={host} is reachable from the network, but the token of {len(token)} characters "
                              f"is too short: use at least {MIN_TOKEN_CHARS} (e.g. python -c 'import secrets; "
                              f"print(secrets.token_urlsafe(24))')")
        if max_message_bytes < 1024:
            raise ConfigError(f"max_message_bytes={max_message_bytes}, expected >= 1024")
        self.policy, self.host = policy, host
        self._token = token.encode()
        self.requests = 0
        self.rejected: collections.Counter[str] = collections.Counter()
        self._server = grpc.server(concurrent.futures.ThreadPoolExecutor(workers), options=_options(max_message_bytes))
        handlers = {"Spec": grpc.unary_unary_rpc_method_handler(self._spec),
                    "GetActions": grpc.unary_unary_rpc_method_handler(self._get_actions)}
        self._server.add_generic_rpc_handlers((grpc.method_handlers_generic_handler(SERVICE, handlers),))
        address = f"[{host}]:{port}" if ":" in host and not host.startswith("[") else f"{host}:{port}"
        self.port = self._server.add_insecure_port(address)
        if self.port == 0:
            raise ConfigError(f"cannot bind the policy server to {address}")
        self.address = f"{host}:{self.port}"
        if host not in LOOPBACK:
            log.warning("policy server listens on %s: reachable from the network (token-protected, not encrypted)",
                        self.address)

    def start(self) -> PolicyServer:
        self._server.start()
        log.info("policy server on %s (%s)", self.address, self.policy.spec.get("checkpoint"))
        return self

    def stop(self, grace: float | None = 0) -> None:
        self._server.stop(grace)

    def wait(self) -> None:
        """Block until the server stops; short timed waits so that Ctrl-C reaches the main thread."""
        while self._server.wait_for_termination(timeout=0.5):  # True: timed out, still serving
            pass

    def _authorize(self, context: Any) -> None:
        grpc = _grpc()
        sent = dict(context.invocation_metadata()).get(TOKEN_KEY, "")
        if not hmac.compare_digest(str(sent).encode(), self._token):
            self.rejected["token"] += 1
            log.warning("policy server: request with a wrong or missing token from %s", context.peer())
            context.abort(grpc.StatusCode.UNAUTHENTICATED, "wrong or missing token")

    def _spec(self, request: bytes, context: Any) -> bytes:
        self._authorize(context)
        return encode({}, self.policy.spec)

    def _get_actions(self, request: bytes, context: Any) -> bytes:
        grpc = _grpc()
        self._authorize(context)
        try:
            obs, meta = decode(request)
            step = meta.get("step")
            if isinstance(step, bool) or not isinstance(step, int) or step < 0:
                raise MessageError(f"meta.step={step!r}, expected an int >= 0")
            check_values(obs)
            self.policy.check(obs)
        except (MessageError, RobotRLError) as exc:
            self.rejected["malformed"] += 1
            log.warning("policy server: rejected a request: %s", exc)
            context.abort(grpc.StatusCode.INVALID_ARGUMENT, str(exc))
        self.requests += 1
        chunk = self.policy.act(obs, bool(meta.get("episode_start", False)))
        return encode({"actions": chunk}, {"step": step})


# ------------------------------------------------------------------------------------------------ client
class PolicyClient:
    """Blocking calls to a :class:`PolicyServer` (``Spec``, ``GetActions``); errors -> PolicyServerError."""

    def __init__(self, address: str, token: str, max_message_bytes: int = DEFAULT_MAX_MESSAGE_BYTES,
                 timeout_s: float = 2.0) -> None:
        grpc = _grpc()
        self.address, self.timeout_s = address, timeout_s
        self._metadata = ((TOKEN_KEY, token),)
        self._channel = grpc.insecure_channel(address, options=_options(max_message_bytes))
        self._spec = self._channel.unary_unary(f"/{SERVICE}/Spec")
        self._get = self._channel.unary_unary(f"/{SERVICE}/GetActions")

    def close(self) -> None:
        self._channel.close()

    def _error(self, exc: Any) -> PolicyServerError:
        code = exc.code().name if hasattr(exc, "code") else type(exc).__name__
        details = exc.details() if hasattr(exc, "details") else str(exc)
        return PolicyServerError(f"policy server {self.address}: {code}: {details}", code)

    def spec(self) -> dict[str, Any]:
        grpc = _grpc()
        try:
            return decode(self._spec(b"", metadata=self._metadata, timeout=self.timeout_s))[1]
        except grpc.RpcError as exc:
            raise self._error(exc) from None

    def request(self, obs: dict[str, np.ndarray], step: int, episode_start: bool = False) -> Any:
        """Send an observation without waiting; returns a future (``.result()`` is the raw reply)."""
        # wait_for_ready: a server that is down (restarting, network blip) is waited for up to timeout_s instead of
        # failing at once; the robot gets no command meanwhile, so its watchdog holds the arm.
        return self._get.future(encode(obs, {"step": step, "episode_start": episode_start}),
                                metadata=self._metadata, timeout=self.timeout_s, wait_for_ready=True)

    def reply(self, future: Any) -> tuple[int, np.ndarray]:
        """(first step, (k, A) actions) of a reply; PolicyServerError if the call failed or the reply is bad."""
        grpc = _grpc()
        try:
            arrays, meta = decode(future.result())
        except grpc.RpcError as exc:
            raise self._error(exc) from None
        except MessageError as exc:
            raise PolicyServerError(f"policy server {self.address}: malformed reply ({exc})") from None
        actions = arrays.get("actions")
        if actions is None or actions.ndim != 2 or not np.all(np.isfinite(actions)):
            raise PolicyServerError(f"policy server {self.address}: reply has no finite (k, A) 'actions'")
        return int(meta["step"]), actions.astype(np.float32)

    def actions(self, obs: dict[str, np.ndarray], step: int, episode_start: bool = False) -> np.ndarray:
        """Blocking: the chunk for ``obs``."""
        return self.reply(self.request(obs, step, episode_start))[1]


class AsyncPolicyClient:
    """A deploy ``policy(obs) -> action`` over a :class:`PolicyClient` with an action queue (see module doc).

    ``events`` records ``server_lost`` (and is merged into deploy's events.jsonl).
    """

    def __init__(self, client: PolicyClient, threshold: float = 0.5) -> None:
        if not 0 <= threshold <= 1:
            raise ConfigError(f"threshold={threshold}, expected in [0, 1] (queue fraction that triggers a request)")
        self.client, self.threshold = client, threshold
        self.queue: collections.OrderedDict[int, np.ndarray] = collections.OrderedDict()
        self.pending: Any = None
        self.step = 0
        self.chunk_len = 1
        self.episode_start = True
        self.events: list[dict[str, Any]] = []
        self.requests = 0
        self._args: tuple[dict[str, np.ndarray], int, bool] | None = None

    def reset(self) -> None:
        """Episode start: drop queued actions; the next request tells the server (planners reset warm starts)."""
        self.queue.clear()
        if self.pending is not None:
            self.pending.cancel()
        self.pending, self.step, self.episode_start = None, 0, True

    def _send(self, obs: dict[str, np.ndarray], step: int) -> None:
        self._args = (obs, step, self.episode_start)
        self.pending = self.client.request(obs, step, self.episode_start)
        self.episode_start = False
        self.requests += 1

    def _reply(self) -> tuple[int, np.ndarray]:
        """The pending reply; a dropped connection (UNAVAILABLE: server restarting, killed mid-call) is retried
        until ``timeout_s`` has passed since the failure, then the loss is logged and raised."""
        deadline = None
        while True:
            try:
                return self.client.reply(self.pending)
            except PolicyServerError as exc:
                now = time.monotonic()
                deadline = now + self.client.timeout_s if deadline is None else deadline
                if exc.code != "UNAVAILABLE" or now >= deadline:
                    self.pending = None
                    self.events.append({"kind": "server_lost", "step": self.step, "t": now, "error": str(exc)})
                    log.error("%s; no command was sent meanwhile, so the watchdog holds the arm", exc)
                    raise
                time.sleep(0.05)
                obs, step, start = self._args
                self.pending = self.client.request(obs, step, start)

    def _merge(self) -> None:
        first, actions = self._reply()
        self.pending = None
        self.chunk_len = len(actions)
        for i, action in enumerate(actions):
            if first + i >= self.step:  # actions for steps already executed are dropped
                self.queue[first + i] = action  # latest_only: a newer chunk replaces queued actions
        self.queue = collections.OrderedDict(sorted(self.queue.items()))

    def __call__(self, obs: dict[str, np.ndarray]) -> np.ndarray:
        t = self.step
        for old in [s for s in self.queue if s < t]:
            del self.queue[old]
        if self.pending is not None and (self.pending.done() or t not in self.queue):
            self._merge()  # a finished reply, or nothing left to execute: wait for it (up to timeout_s)
        if t not in self.queue:
            self._send(obs, t)  # must-go: nothing queued for this step
            self._merge()
        action = self.queue.pop(t)
        self.step = t + 1
        # Prefetch only for chunking policies: a chunk of one would act on an observation one step old.
        if self.pending is None and self.chunk_len > 1 and len(self.queue) <= self.threshold * self.chunk_len:
            self._send(obs, t)  # the next chunk is computed while the robot executes the queued actions
        return action


SERVE_DEFAULTS: dict[str, Any] = {"checkpoint": None, "host": "127.0.0.1", "port": 50051, "token": None,
                                  "max_message_bytes": DEFAULT_MAX_MESSAGE_BYTES, "device": "auto"}


def run_server(checkpoint: str | None, host: str, port: int, token: str | None, max_message_bytes: int,
               device: str) -> None:
    """``robotrl serve``: serve a checkpoint until interrupted (token from ``token`` or $ROBOTRL_POLICY_TOKEN)."""
    import os

    if checkpoint is None:
        raise ConfigError("robotrl serve needs checkpoint=PATH (a run dir, its checkpoints/ dir or one checkpoint)")
    token = token or os.environ.get("ROBOTRL_POLICY_TOKEN", "")
    if not 0 <= port <= 65535:
        raise ConfigError(f"port={port}, expected a TCP port in [0, 65535] (0: any free port)")
    server = PolicyServer(served_checkpoint(checkpoint, device), token, host, port, max_message_bytes).start()
    print(f"robotrl serve: policy server on {server.address}; stop with Ctrl-C", flush=True)
    try:
        server.wait()
    except KeyboardInterrupt:
        server.stop(grace=1.0)


# ------------------------------------------------------------------------------------------------ the command
SERVE_DOCS = {
    "checkpoint": "a run dir, its checkpoints/ dir or one checkpoint dir (required)",
    "host": "address to bind (loopback unless you mean to expose it; beyond loopback the token needs >= 16 characters)",
    "port": "TCP port",
    "token": "shared secret clients must send (default $ROBOTRL_POLICY_TOKEN)",
    "max_message_bytes": "largest request/response accepted, both ways",
    "device": "auto | cpu | cuda | cuda:N",
}


def serve(args: Args) -> int:
    """``robotrl serve``: until interrupted."""
    run_server(**args.opts)
    return 0


# robotrl.params kinds of the numeric options, checked as the command line is parsed
SERVE_RANGES = {"port": "nonneg_int", "max_message_bytes": "positive_int"}


COMMAND = Command(
    name="serve", summary="gRPC policy server for `robotrl deploy server=HOST:PORT`",
    usage="robotrl serve checkpoint=PATH [key=value ...]",
    about="Serve a checkpointed policy over gRPC (action chunks for `robotrl deploy server=HOST:PORT`).",
    run=serve, options=options(SERVE_DEFAULTS, SERVE_DOCS, SERVE_RANGES),
    examples=("ROBOTRL_POLICY_TOKEN=secret robotrl serve checkpoint=runs/metaworld/reach/drqv2/seed1",
              "robotrl deploy server=127.0.0.1:50051 token=secret robot=sim   # the policy's checkpoint is the "
              "server's"))
