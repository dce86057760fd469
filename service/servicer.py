"""The gRPC servicer: protobuf <-> numpy, nothing else. Errors are mapped to status codes and
requests counted and timed in one place, `_rpc`."""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any, TypeVar

import grpc
import numpy as np

from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec
from agentserve.v1 import agent_pb2, agent_pb2_grpc
from service.batching import Batchers, BatchingConfig
from service.decision import Decision, Explanation
from service.errors import FailedPrecondition, ServiceError
from service.metrics import Metrics
from service.online.host import OnlinePolicy
from service.policy import ServedPolicy
from service.repository import PolicyRepository

log = logging.getLogger("agentserve.servicer")
Request = TypeVar("Request")
Response = TypeVar("Response")
Handler = Callable[[Any, Request, grpc.aio.ServicerContext], Awaitable[Response]]
_OK = grpc.StatusCode.OK


def _code_name(code: grpc.StatusCode) -> str:
    return "OK" if code is _OK else code.name


def _rpc(method: str, policy_field: str) -> Callable[[Handler[Any, Any]], Handler[Any, Any]]:
    """Counts, times and maps errors of one RPC method. Clients see a status and a message for
    every failure, never a traceback or a file path; unexpected errors are logged here."""

    def wrap(handler: Handler[Any, Any]) -> Handler[Any, Any]:
        @functools.wraps(handler)
        async def run(self: AgentServicer, request: Any, context: grpc.aio.ServicerContext) -> Any:
            start = time.perf_counter()
            code, details = _OK, ""
            in_flight = self.metrics.in_flight_of(method)
            in_flight.inc()
            try:
                return await handler(self, request, context)
            except ServiceError as error:
                code, details = error.code, str(error)
            except Exception:
                log.exception("%s failed", method)
                code, details = grpc.StatusCode.INTERNAL, "internal error (see the server log)"
            finally:
                in_flight.dec()
                name = getattr(request, policy_field) if policy_field else None
                label = "" if name is None else self.repository.metric_label(name)
                self.metrics.finished(method, label, _code_name(code), time.perf_counter() - start)
            await context.abort(code, details)

        return run

    return wrap


def space_message(space: SpaceSpec) -> agent_pb2.Space:
    if isinstance(space, DiscreteSpec):
        return agent_pb2.Space(discrete=agent_pb2.DiscreteSpace(n=space.n))
    assert isinstance(space, BoxSpec)
    return agent_pb2.Space(
        box=agent_pb2.BoxSpace(shape=list(space.shape), low=list(space.low), high=list(space.high))
    )


def explanation_message(explanation: Explanation) -> agent_pb2.Explanation:
    return agent_pb2.Explanation(
        actions=[
            agent_pb2.ActionExplanation(
                action=a.action,
                allowed=a.allowed,
                value_before_mask=a.value_before_mask,
                value_after_mask=a.value_after_mask,
                probability_before_mask=a.probability_before_mask,
                probability_after_mask=a.probability_after_mask,
                forbidden_by=list(a.forbidden_by),
            )
            for a in explanation.actions
        ],
        rules_fired=[
            agent_pb2.RuleFired(
                rule=f.rule,
                forbidden_actions=list(f.forbidden_actions),
                low=list(f.low),
                high=list(f.high),
            )
            for f in explanation.fired
        ],
        value_kind=explanation.value_kind,
        unclamped_action=(
            [] if explanation.unclamped_action is None else explanation.unclamped_action.tolist()
        ),
    )


def response_message(decision: Decision, version: int) -> agent_pb2.ActResponse:
    if (
        decision.explanation is None
        and not decision.fallback
        and not decision.clamp_sources
        and not isinstance(decision.action, np.ndarray)
    ):  # the common answer: only the fields it sets (the others keep their defaults)
        return agent_pb2.ActResponse(
            discrete_action=decision.action,
            policy_version=version,
            probabilities=decision.probabilities.tolist(),
            propensity=decision.propensity,
            values=[] if decision.values is None else decision.values.tolist(),
        )
    if isinstance(decision.action, np.ndarray):
        action: dict[str, Any] = {
            "continuous_action": agent_pb2.ContinuousAction(values=decision.action.tolist())
        }
    else:
        action = {"discrete_action": decision.action}
    return agent_pb2.ActResponse(
        **action,
        policy_version=version,
        probabilities=decision.probabilities.tolist(),
        propensity=decision.propensity,
        values=[] if decision.values is None else decision.values.tolist(),
        fallback=decision.fallback,
        clamped=decision.clamped,
        explanation=(
            None if decision.explanation is None else explanation_message(decision.explanation)
        ),
    )


class AgentServicer(agent_pb2_grpc.AgentServiceServicer):
    def __init__(
        self,
        repository: PolicyRepository,
        metrics: Metrics,
        seed: int | None = None,
        batching: BatchingConfig | None = None,
    ):
        self.repository = repository
        self.metrics = metrics
        self.rng = np.random.default_rng(seed)
        self.batchers = Batchers(batching or BatchingConfig(), self.rng, metrics)
        self.online: dict[str, OnlinePolicy] = {}
        """Policies learning online, by name (their Act goes to the learner)."""

    async def _act(
        self, request: agent_pb2.ActRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ActResponse:
        """One ActRequest (unary or a stream message): validated in this task, decided in its
        policy version's micro-batch (explanations are computed unbatched)."""
        policy = self.repository.get(request.policy, request.version)
        online = self.online.get(policy.name)
        if online is not None and request.version in (0, online.version):
            return self._act_online(online, policy, request)
        if request.explain:
            decision = policy.decide(
                request.observation, request.action_mask, request.deterministic, self.rng, True
            )
        else:
            item = policy.prepare(request.observation, request.action_mask)
            if item.ready is not None:
                decision = item.ready
            else:
                remaining = context.time_remaining()
                deadline = None if remaining is None else time.monotonic() + remaining
                batcher = self.batchers.get(policy)
                decision = await batcher.decide(item, request.deterministic, deadline)
        self.metrics.record_decision(policy.name, decision)
        return response_message(decision, policy.version)

    def _act_online(
        self, online: OnlinePolicy, policy: ServedPolicy, request: agent_pb2.ActRequest
    ) -> agent_pb2.ActResponse:
        """The learner decides (validation and safety rules as for frozen policies)."""
        item = policy.prepare(request.observation, request.action_mask)
        if item.ready is not None:  # nothing allowed: the fallback, not recorded
            return response_message(item.ready, online.version)
        decision = online.act(
            item.observation[None], item.allowed, request.deterministic, request.episode_id
        )
        action: dict[str, Any] = (
            {"discrete_action": decision.action}
            if isinstance(decision.action, int)
            else {"continuous_action": agent_pb2.ContinuousAction(values=decision.action.tolist())}
        )
        return agent_pb2.ActResponse(
            **action,
            policy_version=decision.version,
            propensity=decision.propensity,
            event_id=decision.event_id,
        )

    def _online(self, name: str) -> OnlinePolicy:
        online = self.online.get(name)
        if online is None:
            self.repository.get(name)  # NOT_FOUND for unknown policies
            raise FailedPrecondition(
                f"policy {name!r} is not learning online (serve it with --online {name})"
            )
        return online

    async def _feedback(self, request: agent_pb2.FeedbackRequest) -> agent_pb2.FeedbackResponse:
        online = self._online(request.policy)
        await online.wait_for_learner()
        applied, sequence = online.feedback(
            request.episode_id,
            request.reward,
            request.terminated,
            request.truncated,
            list(request.next_observation),
            request.event_id,
            request.feedback_id,
            list(request.next_action_mask),
        )
        await online.durable(sequence)
        return agent_pb2.FeedbackResponse(
            applied=applied, sequence=sequence, policy_version=online.version
        )

    @_rpc("Feedback", "policy")
    async def Feedback(
        self, request: agent_pb2.FeedbackRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.FeedbackResponse:
        return await self._feedback(request)

    async def FeedbackStream(
        self,
        request_iterator: AsyncIterator[agent_pb2.FeedbackRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.FeedbackResponse]:
        """One response per request, in order; a failed one carries `error`."""
        async for request in request_iterator:
            try:
                response = await self._feedback(request)
            except ServiceError as error:
                response = agent_pb2.FeedbackResponse(
                    error=agent_pb2.ActError(code=error.code.name, message=str(error))
                )
            label = self.repository.metric_label(request.policy)
            code = response.error.code if response.HasField("error") else "OK"
            self.metrics.requests.labels("FeedbackStream", label, code).inc()
            yield response

    @_rpc("Update", "")
    async def Update(
        self,
        request_iterator: AsyncIterator[agent_pb2.Transition],
        context: grpc.aio.ServicerContext,
    ) -> agent_pb2.UpdateSummary:
        logged: dict[OnlinePolicy, int] = {}
        applied = duplicates = 0
        version = 0
        async for transition in request_iterator:
            online = self._online(transition.policy)
            await online.wait_for_learner()
            action: int | list[float] = (
                list(transition.continuous_action)
                if len(transition.continuous_action)
                else int(transition.discrete_action)
            )
            done, sequence = online.update(
                {
                    "observation": list(transition.observation),
                    "action": action,
                    "reward": float(transition.reward),
                    "next_observation": list(transition.next_observation),
                    "terminated": transition.terminated,
                    "truncated": transition.truncated,
                    "mask": list(transition.action_mask) or None,
                    "next_mask": list(transition.next_action_mask) or None,
                    "id": transition.transition_id,
                    "propensity": float(transition.propensity),
                }
            )
            logged[online] = max(logged.get(online, 0), sequence)
            applied += done
            duplicates += not done
            version = online.version
        for online, sequence in logged.items():  # one group commit for the stream
            await online.durable(sequence)
        return agent_pb2.UpdateSummary(
            applied=applied, duplicates=duplicates, policy_version=version
        )

    @_rpc("Act", "policy")
    async def Act(
        self, request: agent_pb2.ActRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ActResponse:
        return await self._act(request, context)

    async def ActStream(
        self,
        request_iterator: AsyncIterator[agent_pb2.ActRequest],
        context: grpc.aio.ServicerContext,
    ) -> AsyncIterator[agent_pb2.ActResponse]:
        """Responses in request order, one message at a time (a simulator waits for each answer;
        batching happens across streams, in the policy's micro-batcher). A failed message gets a
        response carrying its `error`, and the stream goes on."""
        async for request in request_iterator:
            yield await self._stream_one(request, context)

    async def _stream_one(
        self, request: agent_pb2.ActRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ActResponse:
        start = time.perf_counter()
        code, details = _OK, ""
        in_flight = self.metrics.in_flight_of("ActStream")
        in_flight.inc()
        try:
            return await self._act(request, context)
        except ServiceError as error:
            code, details = error.code, str(error)
        except Exception:
            log.exception("ActStream message failed")
            code, details = grpc.StatusCode.INTERNAL, "internal error (see the server log)"
        finally:
            in_flight.dec()
            label = self.repository.metric_label(request.policy)
            self.metrics.finished("ActStream", label, _code_name(code), time.perf_counter() - start)
        return agent_pb2.ActResponse(error=agent_pb2.ActError(code=code.name, message=details))

    @_rpc("ActBatch", "policy")
    async def ActBatch(
        self, request: agent_pb2.ActBatchRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ActBatchResponse:
        policy = self.repository.get(request.policy, request.version)
        started = time.perf_counter()
        batch = policy.decide_batch(
            request.observations, request.action_masks, request.deterministic, self.rng
        )
        metrics = self.metrics.for_policy(policy.name, policy.version)
        metrics.compute_time.observe(time.perf_counter() - started)
        metrics.batch_size.observe(len(batch.propensities))
        self.metrics.record_batch(policy.name, batch)
        actions: dict[str, Any] = (
            {"continuous_actions": batch.actions.reshape(-1).tolist()}
            if batch.actions.dtype == np.float32
            else {"discrete_actions": batch.actions.tolist()}
        )
        return agent_pb2.ActBatchResponse(
            **actions, propensities=batch.propensities.tolist(), policy_version=policy.version
        )

    @_rpc("ListPolicies", "")
    async def ListPolicies(
        self, request: agent_pb2.ListPoliciesRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.ListPoliciesResponse:
        return agent_pb2.ListPoliciesResponse(
            policies=[self._info(self.repository.get(name)) for name in self.repository.names()]
        )

    @_rpc("GetPolicy", "name")
    async def GetPolicy(
        self, request: agent_pb2.GetPolicyRequest, context: grpc.aio.ServicerContext
    ) -> agent_pb2.PolicyInfo:
        return self._info(self.repository.get(request.name, request.version))

    def _info(self, policy: ServedPolicy) -> agent_pb2.PolicyInfo:
        manifest = policy.manifest
        observation_shape = (
            [1]
            if isinstance(manifest.observation_space, DiscreteSpec)
            else manifest.observation_space.shape
        )
        return agent_pb2.PolicyInfo(
            name=policy.name,
            versions=self.repository.versions(policy.name),
            default_version=self.repository.get(policy.name).version,
            algorithm=manifest.algorithm,
            observation_shape=list(observation_shape),
            action_space=space_message(manifest.action_space),
            observation_space=space_message(manifest.observation_space),
            env_id=manifest.env_id,
            runtime=policy.runtime.name,
        )
