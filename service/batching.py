"""Dynamic micro-batching: concurrent requests for one policy version share one runtime call.

Each policy version has a queue on the server's event loop. A request is validated in its
handler (`ServedPolicy.prepare`), queued with its own future, and awaited. The first request into
an empty queue schedules a drain with `call_soon`, so it runs after every callback already ready
on the loop (the handlers of requests that arrived together enqueue first) — or `max_wait`
seconds later when configured. The drain takes up to `max_batch` requests, runs the runtime
once, and resolves each future with its own decision or its own error; what is left is drained
next. No worker task, no extra wake-up: a queued request costs one turn of the loop. Draining
what is queued beats a fixed window for a lone caller: on these machines a fixed 1 ms window made
a lone simulator's latency 4x worse, so the window applies only under concurrent load (below).

A request that is alone is decided inline, in its own handler, with no future and no turn of the
loop: nothing is queued or scheduled for its policy version and no other callback is ready on the
loop (so no other handler could run, and enqueue, before the drain would: the drain runs before
the callbacks of the next poll for I/O). With `max_wait` 0 the drain would then find exactly this
request, so the decision, the deadline check, the errors and the metrics are the same as the
batched path's; only the wait is gone. That is the common case of a lone caller (one simulator,
one unary client), where the future, the drain and the extra turn of the loop cost more than the
inference. With `max_wait` > 0 the window is adaptive: a request that is alone still goes
inline (a lone simulator never waits for company that cannot come), and only requests that find
others around (queued, or other callbacks ready: concurrent load) wait up to `max_wait` for more.
Measured on these machines (32 concurrent unary callers, bundled CartPole DQN): `max_wait` 0:
2,687 calls/s; 1 ms: 4,535 calls/s, with a lone caller's p50 0.84 → 0.90 ms; hence the default
of 1 ms (`agentserve bench`, docs/serving-benchmark.md: unary concurrency 32 went from 0.55 to
0.84 of the echo server's calls/s; 32 streams 0.64 → 0.57).

A request whose deadline has passed when its batch forms is skipped (DEADLINE_EXCEEDED); a full
queue refuses new requests (RESOURCE_EXHAUSTED), so memory stays bounded under overload.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections import deque
from dataclasses import dataclass

import numpy as np

from agentserve.errors import ConfigError
from service.decision import Decision
from service.errors import DeadlineExceeded, ResourceExhausted, ServiceError
from service.metrics import Metrics
from service.policy import Prepared, ServedPolicy
from service.runtime import ContinuousInference, Inference

log = logging.getLogger("agentserve.batching")


@dataclass(frozen=True)
class BatchingConfig:
    max_batch: int = 64
    """Most requests in one runtime call."""
    max_wait: float = 0.001
    """Seconds a batch of concurrent requests may wait for more after the queue is drained
    (0 = never; a lone request never waits)."""
    max_queue: int = 1024
    """Requests waiting per policy version before new ones get RESOURCE_EXHAUSTED."""

    def __post_init__(self) -> None:
        if self.max_batch < 1 or self.max_queue < 1:
            raise ConfigError("max_batch and max_queue must be >= 1")
        if self.max_wait < 0:
            raise ConfigError("max_wait must be >= 0 seconds")


@dataclass(slots=True)
class _Pending:
    item: Prepared
    deterministic: bool
    deadline: float | None
    """time.monotonic() after which the caller no longer waits."""
    future: asyncio.Future[Decision]
    enqueued: float


class PolicyBatcher:
    """The queue and worker of one policy version."""

    def __init__(
        self,
        policy: ServedPolicy,
        config: BatchingConfig,
        rng: np.random.Generator,
        metrics: Metrics,
    ) -> None:
        self.policy = policy
        self.config = config
        self.rng = rng
        self.metrics = metrics
        self.labels = (policy.name, str(policy.version))
        self._metrics = metrics.for_policy(policy.name, policy.version)
        self._queue: deque[_Pending] = deque()
        self._loop = asyncio.get_running_loop()
        self._scheduled: asyncio.Handle | asyncio.TimerHandle | None = None
        # The loop's queue of ready callbacks (CPython's asyncio keeps it in `_ready`); a loop
        # without one never decides inline.
        ready = getattr(self._loop, "_ready", None)
        self._ready: deque[object] | None = ready if isinstance(ready, deque) else None

    async def decide(
        self,
        item: Prepared,
        deterministic: bool,
        deadline: float | None = None,
    ) -> Decision:
        ready = self._ready
        if ready is not None and not ready and self._scheduled is None:
            # Nothing queued (a queue always has its drain scheduled) and no other callback ready
            # to run: the drain would take this request alone.
            return self._decide_alone(item, deterministic, deadline)
        if len(self._queue) >= self.config.max_queue:
            raise ResourceExhausted(
                f"policy {self.policy.name!r} has {len(self._queue)} requests queued; retry later"
            )
        future: asyncio.Future[Decision] = self._loop.create_future()
        self._queue.append(_Pending(item, deterministic, deadline, future, time.monotonic()))
        if self._scheduled is None:
            self._schedule()
        return await future

    def _schedule(self) -> None:
        """The drain runs after every callback already ready on the loop (the handlers of
        requests that arrived with this one enqueue first), or `max_wait` later."""
        if self.config.max_wait > 0 and len(self._queue) < self.config.max_batch:
            self._scheduled = self._loop.call_later(self.config.max_wait, self._drain)
        else:
            self._scheduled = self._loop.call_soon(self._drain)

    def _drain(self) -> None:
        self._scheduled = None
        batch = [self._queue.popleft() for _ in range(min(self.config.max_batch, len(self._queue)))]
        if self._queue:  # more than one batch was waiting: the rest goes next
            self._schedule()
        try:
            self._process(batch)
        except Exception as error:  # a runtime failure fails this batch, not the batcher
            log.exception("batch of %s/%s failed", *self.labels)
            for pending in batch:
                if not pending.future.done():
                    pending.future.set_exception(error)

    async def close(self) -> None:
        """Requests still queued fail with RESOURCE_EXHAUSTED (the server is stopping)."""
        if self._scheduled is not None:
            self._scheduled.cancel()
            self._scheduled = None
        for pending in self._queue:
            if not pending.future.done():
                pending.future.set_exception(ResourceExhausted("the server is shutting down"))
        self._queue.clear()

    def _process(self, batch: list[_Pending]) -> None:
        now = time.monotonic()
        live: list[_Pending] = []
        for pending in batch:
            if pending.future.done():  # the caller went away (cancelled)
                continue
            if pending.deadline is not None and now >= pending.deadline:
                pending.future.set_exception(
                    DeadlineExceeded("deadline passed while queued; the request was skipped")
                )
                continue
            self._metrics.queue_time.observe(now - pending.enqueued)
            live.append(pending)
        if not live:
            return
        started = time.perf_counter()
        result = self.policy.infer([p.item for p in live])
        for row, pending in enumerate(live):
            try:
                decision = self.policy.finish(
                    pending.item, result, row, pending.deterministic, self.rng
                )
            except ServiceError as error:
                pending.future.set_exception(error)
            else:
                pending.future.set_result(decision)
        self._metrics.compute_time.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(len(live))

    def _decide_alone(
        self, item: Prepared, deterministic: bool, deadline: float | None
    ) -> Decision:
        """`_drain` and `_process` for a batch of this one request, in the caller's task."""
        if deadline is not None and time.monotonic() >= deadline:
            raise DeadlineExceeded("deadline passed while queued; the request was skipped")
        self._metrics.queue_time.observe(0.0)
        started = time.perf_counter()
        try:
            result: Inference | ContinuousInference = self.policy.infer([item])
            try:
                decision = self.policy.finish(item, result, 0, deterministic, self.rng)
            except ServiceError as error:
                failed: ServiceError | None = error
            else:
                failed = None
        except Exception:  # a runtime failure fails this batch, as in `_drain`
            log.exception("batch of %s/%s failed", *self.labels)
            raise
        self._metrics.compute_time.observe(time.perf_counter() - started)
        self._metrics.batch_size.observe(1)
        if failed is not None:
            raise failed
        return decision


class Batchers:
    """One PolicyBatcher per loaded policy version, created on first use."""

    def __init__(self, config: BatchingConfig, rng: np.random.Generator, metrics: Metrics):
        self.config = config
        self.rng = rng
        self.metrics = metrics
        self._batchers: dict[tuple[str, int], PolicyBatcher] = {}

    def get(self, policy: ServedPolicy) -> PolicyBatcher:
        key = (policy.name, policy.version)
        batcher = self._batchers.get(key)
        if batcher is None or batcher.policy is not policy:  # new, or a reloaded version
            # A replaced batcher keeps draining what it has queued (its drain is scheduled).
            batcher = PolicyBatcher(policy, self.config, self.rng, self.metrics)
            self._batchers[key] = batcher
        return batcher

    async def close(self) -> None:
        for batcher in self._batchers.values():
            await batcher.close()
        self._batchers.clear()
