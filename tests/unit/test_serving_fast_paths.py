"""The serving path's shortcuts give what the general path gives: a lone request decided inline
by its batcher (same decision, deadline, errors and metrics as a batch of one), validation with
few numpy calls, the masked-action counts of `prepare`, ActBatch without safety rules, the
compact ActResponse, and cached Prometheus children."""

from __future__ import annotations

import asyncio
import math
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import pytest

from agentserve.manifest import load_manifest
from agentserve.v1 import agent_pb2
from service.batching import BatchingConfig, PolicyBatcher
from service.decision import Decision
from service.errors import DeadlineExceeded, FailedPrecondition, InvalidArgument
from service.metrics import Metrics
from service.policy import Prepared, ServedPolicy
from service.server import default_model_repo
from service.servicer import explanation_message, response_message

REPO = default_model_repo()


@pytest.fixture(scope="module")
def cartpole() -> ServedPolicy:
    return ServedPolicy(load_manifest(REPO / "cartpole-dqn" / "1"))


@pytest.fixture(scope="module")
def safe() -> ServedPolicy:
    return ServedPolicy(load_manifest(REPO / "cartpole-dqn-safe" / "1"))


def sample(metrics: Metrics, name: str, labels: dict[str, str]) -> float:
    value = metrics.registry.get_sample_value(name, labels)
    return 0.0 if value is None else value


BATCH_LABELS = {"policy": "cartpole-dqn", "version": "1"}


def batching_samples(metrics: Metrics) -> tuple[float, ...]:
    return (
        sample(metrics, "agentserve_queue_seconds_count", BATCH_LABELS),
        sample(metrics, "agentserve_compute_seconds_count", BATCH_LABELS),
        sample(metrics, "agentserve_batch_size_count", {"policy": "cartpole-dqn"}),
        sample(metrics, "agentserve_batch_size_sum", {"policy": "cartpole-dqn"}),
    )


def counting_infer(policy: ServedPolicy, calls: list[int]) -> Callable[[Any], Any]:
    original = policy.infer

    def counting(items: Any) -> Any:
        calls.append(len(items))
        return original(items)

    return counting


@pytest.mark.parametrize("deterministic", [True, False])
def test_a_lone_request_is_decided_inline_like_a_batch_of_one(
    cartpole: ServedPolicy, deterministic: bool
) -> None:
    observation = [0.03, -0.2, 0.01, 0.3]
    want = cartpole.decide(observation, [], deterministic, np.random.default_rng(5))
    metrics = Metrics()
    calls: list[int] = []

    async def alone() -> tuple[Decision, bool]:
        batcher = PolicyBatcher(cartpole, BatchingConfig(), np.random.default_rng(5), metrics)
        loop = asyncio.get_running_loop()
        scheduled: list[object] = []
        original = loop.call_soon

        def spy(*args: Any, **kwargs: Any) -> Any:
            scheduled.append(args[0])
            return original(*args, **kwargs)

        loop.call_soon = spy  # type: ignore[assignment,method-assign]
        try:
            decision = await batcher.decide(cartpole.prepare(observation, []), deterministic)
        finally:
            del loop.call_soon
        return decision, batcher._drain in scheduled

    cartpole.infer = counting_infer(cartpole, calls)  # type: ignore[assignment,method-assign]
    try:
        got, drained = asyncio.run(alone())
    finally:
        del cartpole.infer
    assert not drained and calls == [1]
    assert got.action == want.action and got.propensity == want.propensity
    np.testing.assert_array_equal(got.probabilities, want.probabilities)
    np.testing.assert_array_equal(got.values, want.values)
    assert batching_samples(metrics) == (1.0, 1.0, 1.0, 1.0)


def test_requests_that_arrive_together_are_still_batched(cartpole: ServedPolicy) -> None:
    calls: list[int] = []

    async def together() -> list[Decision]:
        batcher = PolicyBatcher(cartpole, BatchingConfig(), np.random.default_rng(0), Metrics())
        items = [cartpole.prepare([0.01 * i, 0.0, 0.0, 0.0], []) for i in range(5)]
        return await asyncio.gather(*(batcher.decide(item, True) for item in items))

    cartpole.infer = counting_infer(cartpole, calls)  # type: ignore[assignment,method-assign]
    try:
        asyncio.run(together())
    finally:
        del cartpole.infer
    assert calls == [5]


def test_max_wait_holds_concurrent_requests_for_company_but_not_a_lone_one(
    cartpole: ServedPolicy,
) -> None:
    calls: list[int] = []

    async def scenario() -> tuple[float, float]:
        batcher = PolicyBatcher(
            cartpole, BatchingConfig(max_wait=0.05), np.random.default_rng(0), Metrics()
        )
        started = time.monotonic()
        await batcher.decide(cartpole.prepare([0.0] * 4, []), True)  # alone: inline
        alone = time.monotonic() - started
        started = time.monotonic()
        await asyncio.gather(
            *(batcher.decide(cartpole.prepare([0.0] * 4, []), True) for _ in range(5))
        )
        return alone, time.monotonic() - started

    cartpole.infer = counting_infer(cartpole, calls)  # type: ignore[assignment,method-assign]
    try:
        alone, together = asyncio.run(scenario())
    finally:
        del cartpole.infer
    assert alone < 0.04  # no company can come for a lone caller: it never waits
    assert together >= 0.04 and calls == [1, 5]  # the five waited and went as one batch


def test_an_inline_request_past_its_deadline_is_skipped(cartpole: ServedPolicy) -> None:
    metrics = Metrics()

    async def late() -> None:
        batcher = PolicyBatcher(cartpole, BatchingConfig(), np.random.default_rng(0), metrics)
        await batcher.decide(cartpole.prepare([0.0] * 4, []), True, time.monotonic() - 1.0)

    with pytest.raises(DeadlineExceeded, match="deadline passed while queued"):
        asyncio.run(late())
    assert batching_samples(metrics) == (0.0, 0.0, 0.0, 0.0)


def test_an_inline_runtime_failure_is_logged_and_raised(
    cartpole: ServedPolicy, caplog: pytest.LogCaptureFixture
) -> None:
    metrics = Metrics()

    def broken(items: object) -> object:
        raise RuntimeError("onnxruntime exploded")

    async def failing() -> None:
        batcher = PolicyBatcher(cartpole, BatchingConfig(), np.random.default_rng(0), metrics)
        await batcher.decide(cartpole.prepare([0.0] * 4, []), True)

    cartpole.infer = broken  # type: ignore[assignment,method-assign]
    try:
        with pytest.raises(RuntimeError, match="exploded"):
            asyncio.run(failing())
    finally:
        del cartpole.infer
    assert "batch of cartpole-dqn/1 failed" in caplog.text
    assert batching_samples(metrics)[1:] == (0.0, 0.0, 0.0)


OBSERVATIONS = [
    [0.0, 0.0, 0.0, 0.0],
    [-2.0, -0.5, 0.0, 0.0],  # left-edge fires in cartpole-dqn-safe
    [2.0, 0.5, 0.1, 0.0],  # right-edge fires
]
MASKS: list[list[bool]] = [[], [True, True], [True, False], [False, True]]


def reference_counts(policy: ServedPolicy, item: Prepared) -> tuple[int, int]:
    assert item.request is not None and item.verdict is not None
    verdict = policy.safety.verdict(np.asarray(item.observation).reshape(-1), policy.num_actions)
    np.testing.assert_array_equal(item.verdict.allowed, verdict.allowed)
    assert item.verdict.fired == verdict.fired
    np.testing.assert_array_equal(item.allowed, item.request & verdict.allowed)
    return int((~item.request).sum()), int((~verdict.allowed).sum())


@pytest.mark.parametrize("name", ["cartpole", "safe"])
def test_prepare_counts_masked_actions_like_the_masks(
    name: str, cartpole: ServedPolicy, safe: ServedPolicy
) -> None:
    policy = {"cartpole": cartpole, "safe": safe}[name]
    rng = np.random.default_rng(0)
    for observation in OBSERVATIONS:
        for mask in MASKS:
            request = np.asarray(mask or [True, True])
            verdict = policy.safety.verdict(np.asarray(observation, np.float32), 2)
            if not (request & verdict.allowed).any():  # no fallback_action: refused
                with pytest.raises(FailedPrecondition, match="every action is forbidden"):
                    policy.prepare(observation, mask)
                continue
            item = policy.prepare(observation, mask)
            assert (item.masked_by_request, item.masked_by_rules) == reference_counts(policy, item)
            decision = policy.finish(item, policy.infer([item]), 0, True, rng)
            assert decision.masked_by_request == item.masked_by_request
            assert decision.masked_by_rules == item.masked_by_rules
            counted = Prepared(item.observation, item.allowed, item.request, item.verdict)
            again = policy.finish(counted, policy.infer([counted]), 0, True, rng)
            assert (again.masked_by_request, again.masked_by_rules) == (
                decision.masked_by_request,
                decision.masked_by_rules,
            )


def test_the_shared_no_rules_verdict_is_read_only(cartpole: ServedPolicy) -> None:
    item = cartpole.prepare([0.0] * 4, [])
    assert item.verdict is not None and not item.verdict.allowed.flags.writeable
    assert item.allowed is not None and item.allowed.flags.writeable
    assert item.request is not None and item.request.flags.writeable
    assert item.allowed is not item.request


def test_float32_overflow_is_caught_as_inf(cartpole: ServedPolicy) -> None:
    with pytest.raises(InvalidArgument, match=r"observation\[2\] is inf: NaN or Inf"):
        cartpole.prepare([0.0, 0.0, 1e39, 0.0], [])
    # Finite float32 values whose sum would overflow float32 are fine.
    cartpole.prepare([3e38, 3e38, 0.0, 0.0], [])
    with pytest.raises(InvalidArgument, match="row 1 has NaN"):
        cartpole.decide_batch([0.0] * 4 + [0.0, -1e39, 0.0, 0.0], [], True, np.random.default_rng())
    cartpole.decide_batch([3e38] * 8, [], True, np.random.default_rng())


def test_batched_rows_equal_single_rows(cartpole: ServedPolicy) -> None:
    observations = np.random.default_rng(1).uniform(-0.5, 0.5, size=(9, 4)).astype(np.float32)
    items = [cartpole.prepare(o.tolist(), []) for o in observations]
    together = cartpole.infer(items)
    for row, item in enumerate(items):
        alone = cartpole.infer([item])
        assert together.greedy_actions[row] == alone.greedy_actions[0]
        np.testing.assert_allclose(together.probabilities[row], alone.probabilities[0])  # type: ignore[union-attr]


@pytest.mark.parametrize("name", ["cartpole", "safe"])
def test_decide_batch_counts_masks(name: str, cartpole: ServedPolicy, safe: ServedPolicy) -> None:
    policy = {"cartpole": cartpole, "safe": safe}[name]
    observations = [v for o in OBSERVATIONS for v in o]
    masks = [True, True, False, True, True, False]
    batch = policy.decide_batch(observations, masks, True, np.random.default_rng(0))
    single = [
        policy.decide(o, masks[2 * i : 2 * i + 2], True, np.random.default_rng(0))
        for i, o in enumerate(OBSERVATIONS)
    ]
    assert batch.actions.tolist() == [d.action for d in single]
    assert batch.masked_by_request == sum(d.masked_by_request for d in single) == 2
    unmasked = policy.decide_batch(observations, [], True, np.random.default_rng(0))
    assert unmasked.masked_by_request == 0


def full_response(decision: Decision, version: int) -> agent_pb2.ActResponse:
    """response_message as it was: every field passed."""
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


def test_response_message_equals_the_full_message(cartpole: ServedPolicy) -> None:
    rng = np.random.default_rng(0)
    plain = cartpole.decide([0.0] * 4, [], True, rng)
    decisions = [
        plain,
        cartpole.decide([0.0] * 4, [True, False], False, rng),
        cartpole.decide([0.0] * 4, [], True, rng, explain=True),
        Decision(1, 1.0, np.array([0.0, 1.0], np.float32), None, fallback=True),
        Decision(
            np.array([0.5], np.float32),
            0.3,
            np.zeros(0, np.float32),
            None,
            clamp_sources=("space",),
        ),
    ]
    for decision in decisions:
        got, want = response_message(decision, 7), full_response(decision, 7)
        assert got == want
        assert got.SerializeToString(deterministic=True) == want.SerializeToString(
            deterministic=True
        )


def test_metrics_children_are_looked_up_once_and_count_like_labels() -> None:
    metrics = Metrics()
    assert metrics.child(metrics.fallbacks, "p") is metrics.fallbacks.labels("p")
    assert metrics.in_flight_of("Act") is metrics.in_flight.labels("Act")
    assert metrics.for_policy("p", 3) is metrics.for_policy("p", 3)
    assert metrics.for_policy("p", 3).compute_time is metrics.compute_time.labels("p", "3")
    metrics.finished("Act", "p", "OK", 0.002)
    metrics.finished("Act", "p", "OK", 0.004)
    metrics.finished("Act", "p", "NOT_FOUND", 0.001)
    requests = {"method": "Act", "policy": "p"}
    assert sample(metrics, "agentserve_requests_total", {**requests, "code": "OK"}) == 2.0
    assert sample(metrics, "agentserve_requests_total", {**requests, "code": "NOT_FOUND"}) == 1.0
    assert sample(metrics, "agentserve_request_duration_seconds_count", requests) == 3.0
    assert math.isclose(sample(metrics, "agentserve_request_duration_seconds_sum", requests), 0.007)
