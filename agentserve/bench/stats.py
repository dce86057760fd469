"""The numbers of the serving benchmark: one measurement's statistics, medians over repeats,
ratios ours/echo, and the targets of issue 5 with their verdicts.

Every function here works on plain dicts of floats, the form stored in docs/results/serving.json,
so the page can be rendered from the stored results alone.
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from agentserve.errors import AgentserveError

OURS, ECHO = "ours", "echo"
TARGETS_ORDER = (OURS, ECHO)
METRICS = (
    "rate",
    "actions_rate",
    "p50_ms",
    "p90_ms",
    "p99_ms",
    "mean_ms",
    "server_cores",
    "server_cpu_per_call_us",
    "client_cpu_per_call_us",
)
"""The per-measurement figures whose median over repeats is reported."""


def percentile(sorted_values: Sequence[float], q: float) -> float:
    """The q-th percentile (0 <= q <= 100) of ascending values, linearly interpolated between
    the two nearest ranks (numpy's default method)."""
    if not sorted_values:
        raise AgentserveError("no values to take a percentile of")
    if not 0.0 <= q <= 100.0:
        raise AgentserveError(f"percentile must be within [0, 100], got {q}")
    position = (len(sorted_values) - 1) * q / 100.0
    low = math.floor(position)
    high = min(low + 1, len(sorted_values) - 1)
    fraction = position - low
    return sorted_values[low] + (sorted_values[high] - sorted_values[low]) * fraction


def measurement(
    latencies: Iterable[float],
    seconds: float,
    batch_size: int,
    server_cpu_s: float | None,
    client_cpu_s: float,
) -> dict[str, float | None]:
    """The figures of one measurement: `latencies` (seconds) of the calls that completed inside
    a window of `seconds`, with the CPU time the server and the clients used in it."""
    ordered = sorted(latencies)
    if not ordered:
        raise AgentserveError(f"no call completed within the {seconds:g} s measured")
    calls = len(ordered)
    rate = calls / seconds
    return {
        "calls": float(calls),
        "seconds": seconds,
        "rate": rate,
        "actions_rate": rate * batch_size,
        "p50_ms": percentile(ordered, 50) * 1e3,
        "p90_ms": percentile(ordered, 90) * 1e3,
        "p99_ms": percentile(ordered, 99) * 1e3,
        "mean_ms": statistics.fmean(ordered) * 1e3,
        "server_cpu_s": server_cpu_s,
        "server_cores": None if server_cpu_s is None else server_cpu_s / seconds,
        "server_cpu_per_call_us": None if server_cpu_s is None else server_cpu_s / calls * 1e6,
        "client_cpu_per_call_us": client_cpu_s / calls * 1e6,
    }


def median_of(runs: Sequence[Mapping[str, Any]]) -> dict[str, float | None]:
    """The median over repeats of each figure in METRICS (None where a run lacks it), and the
    lowest and highest rate."""
    summary: dict[str, float | None] = {}
    for key in METRICS:
        values = [float(r[key]) for r in runs if r.get(key) is not None]
        summary[key] = statistics.median(values) if len(values) == len(runs) and runs else None
    rates = [float(r["rate"]) for r in runs]
    summary["rate_min"] = min(rates) if rates else None
    summary["rate_max"] = max(rates) if rates else None
    summary["repeats"] = float(len(runs))
    return summary


def ratio(ours: float | None, echo: float | None) -> float | None:
    """ours / echo; None when either is missing or echo is zero."""
    if ours is None or echo is None or echo == 0:
        return None
    return ours / echo


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per scenario: the medians of each target's runs, and the ratios ours/echo of throughput,
    p50 latency and server CPU per call. `runs` are stored runs (keys scenario, target, ...)."""
    summary: dict[str, dict[str, Any]] = {}
    scenarios = list(dict.fromkeys(str(r["scenario"]) for r in runs))
    for name in scenarios:
        entry: dict[str, Any] = {}
        for target in TARGETS_ORDER:
            mine = [r for r in runs if r["scenario"] == name and r["target"] == target]
            entry[target] = median_of(mine) if mine else None
        ours, echo = entry[OURS] or {}, entry[ECHO] or {}
        entry["ratio"] = {
            key: ratio(ours.get(key), echo.get(key))
            for key in ("rate", "p50_ms", "p99_ms", "server_cpu_per_call_us")
        }
        summary[name] = entry
    return summary


@dataclass(frozen=True)
class Target:
    """One target of issue 5, checked on the medians of the named scenarios."""

    label: str
    requirement: str
    scenarios: tuple[str, ...]
    metric: str
    """"rate_ratio", "p50_ratio" (ours/echo) or "actions_rate" (ours, absolute)."""
    bound: float
    at_least: bool
    """True: measured >= bound passes; False: measured <= bound passes."""


TARGETS: tuple[Target, ...] = (
    Target(
        "Unary Act throughput",
        "≥ 90% of echo's calls/s (concurrency 32)",
        ("act-c32",),
        "rate_ratio",
        0.90,
        True,
    ),
    Target(
        "ActStream message rate, 32 simulators",
        "≥ 90% of echo's messages/s",
        ("stream-s32",),
        "rate_ratio",
        0.90,
        True,
    ),
    Target(
        "p50 latency at concurrency 1, unary Act",
        "within 15% of echo's (ours/echo ≤ 1.15)",
        ("act-c1",),
        "p50_ratio",
        1.15,
        False,
    ),
    Target(
        "p50 latency at concurrency 1, ActStream with 1 simulator",
        "within 15% of echo's (ours/echo ≤ 1.15)",
        ("stream-s1",),
        "p50_ratio",
        1.15,
        False,
    ),
    Target(
        "ActBatch throughput",
        "≥ 100,000 actions/s (the better ActBatch scenario)",
        ("batch64-c1", "batch64-c4"),
        "actions_rate",
        100_000.0,
        True,
    ),
)


def _measured(target: Target, entry: Mapping[str, Any]) -> float | None:
    if target.metric == "rate_ratio":
        value = entry["ratio"]["rate"]
    elif target.metric == "p50_ratio":
        value = entry["ratio"]["p50_ms"]
    elif target.metric == "actions_rate":
        value = None if entry[OURS] is None else entry[OURS]["actions_rate"]
    else:
        raise AgentserveError(f"unknown target metric {target.metric!r}")
    return None if value is None else float(value)


def verdict(target: Target, summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """{label, requirement, scenario, measured, passed}: `measured` is the best value among the
    target's scenarios that were run, `passed` None when none was (not measured)."""
    best: tuple[float, str] | None = None
    for name in target.scenarios:
        if name not in summary:
            continue
        value = _measured(target, summary[name])
        if value is None:
            continue
        better = best is None or (value > best[0] if target.at_least else value < best[0])
        if better:
            best = (value, name)
    passed = None
    if best is not None:
        passed = best[0] >= target.bound if target.at_least else best[0] <= target.bound
    return {
        "label": target.label,
        "requirement": target.requirement,
        "metric": target.metric,
        "bound": target.bound,
        "scenario": None if best is None else best[1],
        "measured": None if best is None else best[0],
        "passed": passed,
    }


def verdicts(summary: Mapping[str, Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [verdict(target, summary) for target in TARGETS]
