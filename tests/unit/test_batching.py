"""service.batching: concurrent requests share one runtime call and each gets its own result or
error; deadlines, a full queue, a failing runtime; ServedPolicy.decide_batch equals decide."""

from __future__ import annotations

import asyncio
import time

import numpy as np
import pytest

from agentserve.manifest import load_manifest
from service.batching import Batchers, BatchingConfig, PolicyBatcher
from service.errors import DeadlineExceeded, InvalidArgument, ResourceExhausted
from service.masking import choose, choose_batch
from service.metrics import Metrics
from service.policy import ServedPolicy
from service.server import default_model_repo

REPO = default_model_repo()


@pytest.fixture(scope="module")
def cartpole() -> ServedPolicy:
    return ServedPolicy(load_manifest(REPO / "cartpole-dqn" / "1"))


@pytest.fixture(scope="module")
def grid() -> ServedPolicy:
    return ServedPolicy(load_manifest(REPO / "gridworld-qlearning" / "1"))


def observations(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, size=(count, 4)).astype(np.float32)


def test_concurrent_requests_share_one_call_and_match_unbatched(cartpole: ServedPolicy) -> None:
    obs = observations(40, seed=0)
    expected = [cartpole.decide(o.tolist(), [], True, np.random.default_rng(0)) for o in obs]
    calls: list[int] = []
    original = cartpole.infer

    def counting(items: list) -> object:  # type: ignore[type-arg]
        calls.append(len(items))
        return original(items)

    async def scenario() -> list[object]:
        metrics = Metrics()
        batcher = PolicyBatcher(
            cartpole, BatchingConfig(max_batch=16), np.random.default_rng(0), metrics
        )
        cartpole.infer = counting  # type: ignore[method-assign]
        try:
            items = [cartpole.prepare(o.tolist(), []) for o in obs]
            return await asyncio.gather(*(batcher.decide(i, True) for i in items))
        finally:
            del cartpole.infer

    decisions = asyncio.run(scenario())
    assert calls == [16, 16, 8]
    for got, want in zip(decisions, expected, strict=True):
        assert got.action == want.action  # type: ignore[attr-defined]
        np.testing.assert_array_equal(got.probabilities, want.probabilities)  # type: ignore[attr-defined]


def test_a_full_queue_refuses_and_the_next_call_is_served(cartpole: ServedPolicy) -> None:
    async def scenario() -> tuple[list[object], object]:
        batcher = PolicyBatcher(
            cartpole, BatchingConfig(max_queue=2), np.random.default_rng(0), Metrics()
        )
        item = cartpole.prepare([0.0] * 4, [])
        results = await asyncio.gather(
            *(batcher.decide(item, True) for _ in range(3)), return_exceptions=True
        )
        return results, await batcher.decide(item, True)

    results, after = asyncio.run(scenario())
    assert isinstance(results[2], ResourceExhausted)
    assert "2 requests queued" in str(results[2])
    assert not isinstance(results[0], Exception) and not isinstance(after, Exception)


def test_requests_past_their_deadline_are_skipped(cartpole: ServedPolicy) -> None:
    async def scenario() -> list[object]:
        batcher = PolicyBatcher(cartpole, BatchingConfig(), np.random.default_rng(0), Metrics())
        item = cartpole.prepare([0.0] * 4, [])
        past, future = time.monotonic() - 1.0, time.monotonic() + 60.0
        return await asyncio.gather(
            batcher.decide(item, True, past),
            batcher.decide(item, True, future),
            return_exceptions=True,
        )

    late, on_time = asyncio.run(scenario())
    assert isinstance(late, DeadlineExceeded) and not isinstance(on_time, Exception)


def test_a_failing_runtime_fails_its_batch_not_the_worker(cartpole: ServedPolicy) -> None:
    async def scenario() -> tuple[object, object]:
        batcher = PolicyBatcher(cartpole, BatchingConfig(), np.random.default_rng(0), Metrics())
        item = cartpole.prepare([0.0] * 4, [])

        def broken(items: object) -> object:
            raise RuntimeError("onnxruntime exploded")

        cartpole.infer = broken  # type: ignore[assignment,method-assign]
        try:
            first = await asyncio.gather(batcher.decide(item, True), return_exceptions=True)
        finally:
            del cartpole.infer
        return first[0], await batcher.decide(item, True)

    failed, recovered = asyncio.run(scenario())
    assert isinstance(failed, RuntimeError) and not isinstance(recovered, Exception)


def test_batchers_follow_reloaded_policy_objects(cartpole: ServedPolicy) -> None:
    async def scenario() -> None:
        batchers = Batchers(BatchingConfig(), np.random.default_rng(0), Metrics())
        first = batchers.get(cartpole)
        assert batchers.get(cartpole) is first
        reloaded = ServedPolicy(load_manifest(REPO / "cartpole-dqn" / "1"))
        second = batchers.get(reloaded)
        assert second is not first and second.policy is reloaded
        await first.decide(cartpole.prepare([0.0] * 4, []), True)  # retired, still drains
        await batchers.close()

    asyncio.run(scenario())


@pytest.mark.parametrize("name", ["cartpole", "grid"])
def test_decide_batch_equals_decide(name: str, cartpole: ServedPolicy, grid: ServedPolicy) -> None:
    policy = {"cartpole": cartpole, "grid": grid}[name]
    rng = np.random.default_rng(3)
    count = 50
    if name == "grid":
        obs = rng.integers(0, 25, size=(count, 1)).astype(np.float32)
    else:
        obs = observations(count, seed=3)
    masks = rng.random((count, policy.num_actions)) < 0.6
    masks[np.arange(count), rng.integers(policy.num_actions, size=count)] = True
    batch = policy.decide_batch(obs.reshape(-1).tolist(), masks.reshape(-1).tolist(), True, rng)
    for i in range(count):
        single = policy.decide(obs[i].tolist(), masks[i].tolist(), True, rng)
        assert batch.actions[i] == single.action
    assert (batch.propensities == 1.0).all()
    sampled = policy.decide_batch(obs.reshape(-1).tolist(), masks.reshape(-1).tolist(), False, rng)
    assert masks[np.arange(count), sampled.actions].all()


def test_decide_batch_refuses_bad_input_naming_the_row(cartpole: ServedPolicy) -> None:
    rng = np.random.default_rng(0)
    with pytest.raises(InvalidArgument, match="positive multiple of 4"):
        cartpole.decide_batch([0.0] * 6, [], True, rng)
    with pytest.raises(InvalidArgument, match="row 1 has NaN"):
        cartpole.decide_batch([0.0] * 4 + [float("nan")] * 4, [], True, rng)
    with pytest.raises(InvalidArgument, match="row 1 allows no action"):
        cartpole.decide_batch([0.0] * 8, [True, False, False, False], True, rng)
    with pytest.raises(InvalidArgument, match="need 4"):
        cartpole.decide_batch([0.0] * 8, [True], True, rng)


def test_choose_batch_samples_like_choose() -> None:
    rng = np.random.default_rng(0)
    probabilities = np.tile(np.array([[0.2, 0.0, 0.5, 0.3]], dtype=np.float32), (20_000, 1))
    allowed = np.tile(np.array([[True, True, False, True]]), (20_000, 1))
    actions, propensities = choose_batch(
        np.zeros(20_000, dtype=np.int64), probabilities, allowed, False, rng
    )
    frequencies = np.bincount(actions, minlength=4) / 20_000
    np.testing.assert_allclose(frequencies, [0.4, 0.0, 0.0, 0.6], atol=0.015)
    np.testing.assert_array_equal(propensities, probabilities[0, actions])
    single = [choose(0, probabilities[0], allowed[0], False, rng)[0] for _ in range(2_000)]
    assert set(single) == {0, 3}
