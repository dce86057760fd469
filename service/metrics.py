"""Every Prometheus metric of the service, declared once, in a registry per server.

Labels are bounded: method, status code and `source` are fixed sets, `policy` is a loaded
policy's name (or `_unknown` for names the server does not have), `version` a loaded version,
`rule` a safety rule of a loaded policy.

The serving path counts every call, so it looks each label set's child up once (`labels` costs
microseconds: label checks, string conversions, a lock) and keeps it: `in_flight_of`, `finished`,
`for_policy` and the `record_*` methods. That is safe because these metrics' children are never
removed (only `policy_loaded`'s are, and it is not cached).
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING, TypeVar

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

if TYPE_CHECKING:
    from service.decision import BatchDecision, Decision

UNKNOWN_POLICY = "_unknown"
# Sub-millisecond calls are the norm: buckets start at 50 microseconds.
LATENCY_BUCKETS = (
    0.00005,
    0.0001,
    0.00025,
    0.0005,
    0.001,
    0.0025,
    0.005,
    0.01,
    0.025,
    0.05,
    0.1,
    0.25,
    0.5,
    1.0,
    2.5,
)
_Metric = TypeVar("_Metric", Counter, Gauge, Histogram)


@dataclass(frozen=True)
class PolicyMetrics:
    """The children of one policy version's batching metrics."""

    queue_time: Histogram
    compute_time: Histogram
    batch_size: Histogram


class Metrics:
    def __init__(self) -> None:
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "agentserve_requests",
            "gRPC requests handled, by method, policy and status code.",
            ["method", "policy", "code"],
            registry=self.registry,
        )
        self.latency = Histogram(
            "agentserve_request_duration_seconds",
            "Time to handle a gRPC request, from arrival at the handler to its answer.",
            ["method", "policy"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.policy_loaded = Gauge(
            "agentserve_policy_loaded",
            "1 for every policy version the server has loaded.",
            ["policy", "version", "algorithm", "runtime"],
            registry=self.registry,
        )
        self.default_version = Gauge(
            "agentserve_policy_default_version",
            "The version served when a request asks for version 0.",
            ["policy"],
            registry=self.registry,
        )
        self.masked_actions = Counter(
            "agentserve_masked_actions",
            "Actions forbidden in Act requests, by policy and source: request (the caller's "
            "action_mask) or rule (the policy's safety rules). Training logs the env's masks.",
            ["policy", "source"],
            registry=self.registry,
        )
        self.rule_hits = Counter(
            "agentserve_safety_rule_hits",
            "Act requests in which a safety rule's condition held, by policy and rule.",
            ["policy", "rule"],
            registry=self.registry,
        )
        self.fallbacks = Counter(
            "agentserve_safety_fallbacks",
            "Act requests answered with the policy's fallback action (nothing was allowed).",
            ["policy"],
            registry=self.registry,
        )
        self.clamps = Counter(
            "agentserve_action_clamps",
            "Continuous actions clamped, by policy and source: space (the action space's "
            "bounds) or rule (a safety rule's bounds).",
            ["policy", "source"],
            registry=self.registry,
        )
        self.queue_time = Histogram(
            "agentserve_queue_seconds",
            "Time a request waited in its policy version's batching queue.",
            ["policy", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.compute_time = Histogram(
            "agentserve_compute_seconds",
            "Time of one batched runtime call and the choice of its actions.",
            ["policy", "version"],
            buckets=LATENCY_BUCKETS,
            registry=self.registry,
        )
        self.batch_size = Histogram(
            "agentserve_batch_size",
            "Requests served by one runtime call (micro-batches; ActBatch rows).",
            ["policy"],
            buckets=(1, 2, 4, 8, 16, 32, 64, 128, 256, 512, 1024, 4096),
            registry=self.registry,
        )
        self.in_flight = Gauge(
            "agentserve_requests_in_flight",
            "Requests (stream messages included) being handled now, by method.",
            ["method"],
            registry=self.registry,
        )
        self.reloads = Counter(
            "agentserve_policy_reloads",
            "Policy versions loaded while serving (hot reload), by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.unloads = Counter(
            "agentserve_policy_unloads",
            "Policy versions unloaded because their folder disappeared, by policy.",
            ["policy"],
            registry=self.registry,
        )
        self.online_updates = Counter(
            "agentserve_online_updates",
            "Transitions online-learning policies have learned from (each acknowledged and "
            "write-ahead logged first).",
            ["policy"],
            registry=self.registry,
        )
        self.online_reward = Gauge(
            "agentserve_online_reward_mean",
            "Moving average of the rewards an online policy learned from (half-life 100).",
            ["policy"],
            registry=self.registry,
        )
        self.online_awaiting = Gauge(
            "agentserve_online_awaiting_transitions",
            "Feedback received whose transition waits for the episode's next observation.",
            ["policy"],
            registry=self.registry,
        )
        self.online_lag = Gauge(
            "agentserve_online_learner_lag_transitions",
            "Learner lag: transitions acknowledged (logged) that the learner has not learned "
            "from yet (it learns in a thread of its own).",
            ["policy"],
            registry=self.registry,
        )
        self.online_snapshots = Counter(
            "agentserve_online_snapshots",
            "Snapshots of online learner state (each also publishes a policy version).",
            ["policy"],
            registry=self.registry,
        )
        self.wal_bytes = Counter(
            "agentserve_wal_bytes",
            "Bytes written to an online policy's write-ahead log.",
            ["policy"],
            registry=self.registry,
        )
        self.load_failures = Counter(
            "agentserve_policy_load_failures",
            "Policy versions that failed to load (the reason is in the log).",
            ["policy"],
            registry=self.registry,
        )
        self._children: dict[tuple[int, tuple[str, ...]], Counter | Gauge | Histogram] = {}
        self._in_flight: dict[str, Gauge] = {}
        self._finished: dict[tuple[str, str, str], tuple[Counter, Histogram]] = {}
        self._policies: dict[tuple[str, int], PolicyMetrics] = {}

    def child(self, metric: _Metric, *labels: str) -> _Metric:
        """`metric.labels(*labels)`, looked up once per label set."""
        key = (id(metric), labels)
        found = self._children.get(key)
        if found is None:
            found = self._children[key] = metric.labels(*labels)
        return found  # type: ignore[return-value]

    def in_flight_of(self, method: str) -> Gauge:
        """The `in_flight` gauge of one method."""
        gauge = self._in_flight.get(method)
        if gauge is None:
            gauge = self._in_flight[method] = self.in_flight.labels(method)
        return gauge

    def finished(self, method: str, policy: str, code: str, seconds: float) -> None:
        """One answered request (stream message): counted by status code, and timed."""
        key = (method, policy, code)
        children = self._finished.get(key)
        if children is None:
            children = self._finished[key] = (
                self.requests.labels(method, policy, code),
                self.latency.labels(method, policy),
            )
        children[0].inc()
        children[1].observe(seconds)

    def for_policy(self, name: str, version: int) -> PolicyMetrics:
        """The batching metrics of one policy version."""
        found = self._policies.get((name, version))
        if found is None:
            labels = (name, str(version))
            found = self._policies[(name, version)] = PolicyMetrics(
                self.queue_time.labels(*labels),
                self.compute_time.labels(*labels),
                self.batch_size.labels(name),
            )
        return found

    def record_decision(self, policy: str, decision: Decision) -> None:
        """The safety layer's counters for one answered Act request."""
        if decision.masked_by_request:
            self.child(self.masked_actions, policy, "request").inc(decision.masked_by_request)
        if decision.masked_by_rules:
            self.child(self.masked_actions, policy, "rule").inc(decision.masked_by_rules)
        for fired in decision.fired:
            self.child(self.rule_hits, policy, fired.rule).inc()
        if decision.fallback:
            self.child(self.fallbacks, policy).inc()
        for source in decision.clamp_sources:
            self.child(self.clamps, policy, source).inc()

    def record_batch(self, policy: str, batch: BatchDecision) -> None:
        """The safety layer's counters for one answered ActBatch request."""
        if batch.masked_by_request:
            self.child(self.masked_actions, policy, "request").inc(batch.masked_by_request)
        if batch.masked_by_rules:
            self.child(self.masked_actions, policy, "rule").inc(batch.masked_by_rules)
        for fired in batch.fired:
            self.child(self.rule_hits, policy, fired.rule).inc()
        if batch.fallbacks:
            self.child(self.fallbacks, policy).inc(batch.fallbacks)
        for source in batch.clamp_sources:
            self.child(self.clamps, policy, source).inc()
