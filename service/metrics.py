"""Every Prometheus metric of the service, declared once, in a registry per server.

Labels are bounded: method and status code are fixed sets, `policy` is a loaded policy's name
(or `_unknown` for names the server does not have), `version` a loaded version.
"""

from __future__ import annotations

from prometheus_client import CollectorRegistry, Counter, Gauge, Histogram

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
        self.load_failures = Counter(
            "agentserve_policy_load_failures",
            "Policy versions that failed to load (the reason is in the log).",
            ["policy"],
            registry=self.registry,
        )
