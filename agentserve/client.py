"""The simulator-side client: `Client(target, policy).act(observation)`.

Torch-free: grpcio, protobuf and numpy only. Results come back as numpy-friendly values.
"""

from __future__ import annotations

import os
import queue
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any

import grpc
import numpy as np
import numpy.typing as npt

from agentserve.errors import AgentserveError
from agentserve.v1 import agent_pb2, agent_pb2_grpc


class RemoteError(AgentserveError):
    """The server answered with a non-OK status; `code` is its name, e.g. "INVALID_ARGUMENT"."""

    def __init__(self, code: str, details: str) -> None:
        super().__init__(f"{code}: {details}")
        self.code = code
        self.details = details


@dataclass(frozen=True)
class ActResult:
    """One served decision."""

    action: int | npt.NDArray[np.float32]
    """An int for discrete policies, a float32 array for continuous ones."""
    policy_version: int
    propensity: float
    """Probability of `action` under the served policy (1.0 when deterministic)."""
    probabilities: npt.NDArray[np.float32]
    """Every action's probability (discrete policies), empty otherwise."""
    values: npt.NDArray[np.float32]
    """Q-values (value-based algorithms), empty otherwise."""
    fallback: bool = False
    """Nothing was allowed (mask AND safety rules): `action` is the policy's fallback."""
    clamped: bool = False
    """Continuous policies: the policy's own action was clamped (action space or safety bounds)."""
    explanation: agent_pb2.Explanation | None = None
    """Present when asked for with `explain=True` (see protos/agentserve/v1/agent.proto)."""
    event_id: str = ""
    """Online learning: the recorded decision's id (when an episode_id was sent)."""


@dataclass(frozen=True)
class PolicyDescription:
    name: str
    versions: tuple[int, ...]
    default_version: int
    algorithm: str
    env_id: str
    runtime: str
    observation_shape: tuple[int, ...]
    action_space: dict[str, Any]
    """{"type": "discrete", "n": N} or {"type": "box", "shape": [...], "low": [...], ...}."""


def _space_dict(space: agent_pb2.Space) -> dict[str, Any]:
    if space.WhichOneof("kind") == "discrete":
        return {"type": "discrete", "n": int(space.discrete.n)}
    box = space.box
    return {"type": "box", "shape": list(box.shape), "low": list(box.low), "high": list(box.high)}


def describe(info: agent_pb2.PolicyInfo) -> PolicyDescription:
    return PolicyDescription(
        name=info.name,
        versions=tuple(info.versions),
        default_version=info.default_version,
        algorithm=info.algorithm,
        env_id=info.env_id,
        runtime=info.runtime,
        observation_shape=tuple(info.observation_shape),
        action_space=_space_dict(info.action_space),
    )


class Client:
    """A synchronous client of one agentserve server.

    >>> with Client("127.0.0.1:50051", policy="cartpole-dqn") as client:
    ...     result = client.act(observation)
    ...     env.step(result.action)
    """

    def __init__(
        self,
        target: str = "127.0.0.1:50051",
        policy: str | None = None,
        *,
        timeout: float = 10.0,
        channel: grpc.Channel | None = None,
        tls_ca: str | os.PathLike[str] | bytes | None = None,
        tls_cert: str | os.PathLike[str] | bytes | None = None,
        tls_key: str | os.PathLike[str] | bytes | None = None,
        token: str | None = None,
    ) -> None:
        """TLS when any `tls_*` is given (a PEM file's path, or its bytes): `tls_ca` is the CA of
        the server's certificate (default: the system's roots); `tls_cert` and `tls_key` the
        client's certificate for mutual TLS. `token`: sent as `authorization: Bearer <token>` on
        every call (servers started with --feedback-token-file require it for feedback)."""
        from agentserve.channel import open_channel

        self.policy = policy
        self.timeout = timeout
        if channel is not None and (tls_ca, tls_cert, tls_key, token) != (None, None, None, None):
            raise AgentserveError("give either channel or tls_*/token arguments, not both")
        self._channel = channel or open_channel(
            target, tls_ca=tls_ca, tls_cert=tls_cert, tls_key=tls_key, token=token
        )
        self._stub = agent_pb2_grpc.AgentServiceStub(self._channel)  # type: ignore[no-untyped-call]

    def wait_ready(self, timeout: float = 30.0) -> None:
        """Blocks until the channel connects, or raises RemoteError("UNAVAILABLE")."""
        try:
            grpc.channel_ready_future(self._channel).result(timeout=timeout)
        except grpc.FutureTimeoutError:
            raise RemoteError("UNAVAILABLE", f"no server answered within {timeout:g} s") from None

    def act(
        self,
        observation: npt.ArrayLike,
        action_mask: Sequence[bool] | npt.NDArray[np.bool_] | None = None,
        deterministic: bool = True,
        *,
        policy: str | None = None,
        version: int = 0,
        episode_id: str = "",
        explain: bool = False,
    ) -> ActResult:
        """Asks the server for an action for one observation (any shape; flattened row-major).
        `explain`: also return why (every action before and after masking, the rules fired)."""
        request = act_request(
            self._name(policy), observation, action_mask, deterministic, version, episode_id
        )
        request.explain = explain
        return act_result(self._call(self._stub.Act, request))

    def act_batch(
        self,
        observations: npt.ArrayLike,
        action_masks: npt.ArrayLike | None = None,
        deterministic: bool = True,
        *,
        policy: str | None = None,
        version: int = 0,
    ) -> BatchResult:
        """Actions for N observations in one call (`observations` [N, ...], masks [N, A])."""
        batch = np.asarray(observations, dtype=np.float32)
        masks = [] if action_masks is None else np.asarray(action_masks, bool).ravel().tolist()
        request = agent_pb2.ActBatchRequest(
            policy=self._name(policy),
            version=version,
            observations=batch.ravel().tolist(),
            action_masks=masks,
            deterministic=deterministic,
        )
        response = self._call(self._stub.ActBatch, request)
        actions: npt.NDArray[Any]
        if len(response.continuous_actions):
            flat = np.asarray(response.continuous_actions, dtype=np.float32)
            actions = flat.reshape(len(batch), -1)
        else:
            actions = np.asarray(response.discrete_actions, dtype=np.int64)
        propensities = np.asarray(response.propensities, dtype=np.float32)
        return BatchResult(actions, propensities, int(response.policy_version))

    def feedback(
        self,
        episode_id: str,
        reward: float,
        *,
        terminated: bool = False,
        truncated: bool = False,
        next_observation: npt.ArrayLike | None = None,
        next_action_mask: Sequence[bool] | None = None,
        event_id: str = "",
        feedback_id: str = "",
        policy: str | None = None,
    ) -> FeedbackResult:
        """Reports what followed the episode's last decision (online learning). Give each
        feedback a `feedback_id` to make retries safe: a repeated id is never applied twice."""
        request = agent_pb2.FeedbackRequest(
            policy=self._name(policy),
            episode_id=episode_id,
            reward=float(reward),
            terminated=terminated,
            truncated=truncated,
            next_observation=(
                []
                if next_observation is None
                else np.asarray(next_observation, np.float32).ravel().tolist()
            ),
            next_action_mask=[]
            if next_action_mask is None
            else [bool(m) for m in next_action_mask],
            event_id=event_id,
            feedback_id=feedback_id,
        )
        response = self._call(self._stub.Feedback, request)
        return FeedbackResult(
            bool(response.applied), int(response.sequence), int(response.policy_version)
        )

    def stream(self, policy: str | None = None) -> ActStream:
        """A long-lived ActStream: `session.act(observation)` per step, answers in order."""
        return ActStream(self._stub, self._name(policy))

    def _name(self, policy: str | None) -> str:
        name = policy or self.policy
        if not name:
            raise ValueError("no policy named: pass policy= here or to Client(...)")
        return name

    def list_policies(self) -> list[PolicyDescription]:
        response = self._call(self._stub.ListPolicies, agent_pb2.ListPoliciesRequest())
        return [describe(p) for p in response.policies]

    def get_policy(self, name: str | None = None, version: int = 0) -> PolicyDescription:
        policy = name or self.policy or ""
        request = agent_pb2.GetPolicyRequest(name=policy, version=version)
        return describe(self._call(self._stub.GetPolicy, request))

    def _call(self, method: Any, request: Any) -> Any:
        try:
            return method(request, timeout=self.timeout)
        except grpc.RpcError as error:
            code = error.code()
            raise RemoteError(code.name if code else "UNKNOWN", error.details() or "") from None

    def close(self) -> None:
        self._channel.close()

    def __enter__(self) -> Client:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


@dataclass(frozen=True)
class FeedbackResult:
    applied: bool
    """False: this feedback_id had been applied before (a retry)."""
    sequence: int
    policy_version: int


@dataclass(frozen=True)
class BatchResult:
    actions: npt.NDArray[Any]
    """[N] int64 action indices, or [N, D] float32 continuous actions."""
    propensities: npt.NDArray[np.float32]
    policy_version: int


def act_request(
    policy: str,
    observation: npt.ArrayLike,
    action_mask: Sequence[bool] | npt.NDArray[np.bool_] | None,
    deterministic: bool,
    version: int = 0,
    episode_id: str = "",
) -> agent_pb2.ActRequest:
    return agent_pb2.ActRequest(
        policy=policy,
        version=version,
        observation=np.asarray(observation, dtype=np.float32).ravel().tolist(),
        action_mask=[] if action_mask is None else [bool(m) for m in action_mask],
        deterministic=deterministic,
        episode_id=episode_id,
    )


def act_result(response: agent_pb2.ActResponse) -> ActResult:
    """An ActResponse as an ActResult; an in-stream error raises RemoteError."""
    if response.HasField("error"):
        raise RemoteError(response.error.code, response.error.message)
    action: int | npt.NDArray[np.float32]
    if response.WhichOneof("action") == "continuous_action":
        action = np.asarray(response.continuous_action.values, dtype=np.float32)
    else:
        action = int(response.discrete_action)
    return ActResult(
        action=action,
        policy_version=int(response.policy_version),
        propensity=float(response.propensity),
        probabilities=np.asarray(response.probabilities, dtype=np.float32),
        values=np.asarray(response.values, dtype=np.float32),
        fallback=bool(response.fallback),
        clamped=bool(response.clamped),
        explanation=response.explanation if response.HasField("explanation") else None,
        event_id=response.event_id,
    )


class ActStream:
    """One ActStream call: requests go out through a queue, answers come back in order.

    >>> with client.stream("cartpole-dqn") as session:
    ...     result = session.act(observation)
    """

    _END = object()

    def __init__(self, stub: Any, policy: str) -> None:
        self.policy = policy
        self._requests: queue.Queue[Any] = queue.Queue()
        self._responses = stub.ActStream(iter(self._requests.get, self._END))

    def act(
        self,
        observation: npt.ArrayLike,
        action_mask: Sequence[bool] | npt.NDArray[np.bool_] | None = None,
        deterministic: bool = True,
        *,
        version: int = 0,
        episode_id: str = "",
    ) -> ActResult:
        self.send(observation, action_mask, deterministic, version=version, episode_id=episode_id)
        return self.receive()

    def send(
        self,
        observation: npt.ArrayLike,
        action_mask: Sequence[bool] | npt.NDArray[np.bool_] | None = None,
        deterministic: bool = True,
        *,
        version: int = 0,
        episode_id: str = "",
    ) -> None:
        """Queues one request without waiting (pipelining); `receive` answers in order."""
        request = act_request(
            self.policy, observation, action_mask, deterministic, version, episode_id
        )
        self._requests.put(request)

    def receive(self) -> ActResult:
        try:
            response = next(self._responses)
        except grpc.RpcError as error:
            code = error.code()
            raise RemoteError(code.name if code else "UNKNOWN", error.details() or "") from None
        return act_result(response)

    def close(self) -> None:
        self._requests.put(self._END)
        try:
            for _ in self._responses:  # drain until the server ends the call
                pass
        except grpc.RpcError:
            pass  # the call already failed; `receive` reported it

    def __enter__(self) -> ActStream:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
