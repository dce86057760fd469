"""The numbers of the serving benchmark: one measurement's statistics, medians over repeats,
ratios ours/echo, the hot-reload accounting, and the targets of issue 5 with their verdicts.

Every function here works on plain dicts of floats, the form stored in docs/results/serving.json,
so the page can be rendered from the stored results alone.
"""

from __future__ import annotations

import itertools
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


RELOAD_WINDOW_S = 1.0
"""The latency p99 of a reload run is compared over this long before and after the publish."""


def version_accounting(
    simulators: Sequence[Mapping[str, Any]], new_version: int, published_at: float
) -> dict[str, Any]:
    """What the simulators of one reload run saw. Each simulator is a stored `SimulatorLog`:
    {"versions": [{"version", "first_at", "answers"}, ...] (its answers' versions in order,
    run-length encoded), "failures": n}; times are seconds from the start of the measured window,
    as is `published_at`, when the new version's folder was renamed into place.

    Returns: simulators, answers, failed_calls (over all simulators), backwards (simulators
    whose versions ever went down), monotonic (none did), on_new_version (simulators that got at
    least one answer carrying `new_version`), ended_on_new_version (whose last answer carried
    it), versions_before (the versions answered before the new one), and first_new_ms /
    all_new_ms: from the publish to the first answer carrying the new version, of any simulator
    and of the last simulator to get one (None unless every simulator got one)."""
    if new_version < 1:
        raise AgentserveError(f"a policy version is >= 1, got {new_version}")
    failed = answers = backwards = on_new = ended_on_new = 0
    before: set[int] = set()
    firsts: list[float] = []
    for simulator in simulators:
        failed += int(simulator["failures"])
        runs = simulator["versions"]
        versions = [int(run["version"]) for run in runs]
        answers += sum(int(run["answers"]) for run in runs)
        if any(later < earlier for earlier, later in itertools.pairwise(versions)):
            backwards += 1
        new = [float(run["first_at"]) for run in runs if int(run["version"]) == new_version]
        if new:
            on_new += 1
            firsts.append(min(new))
        if versions and versions[-1] == new_version:
            ended_on_new += 1
        before.update(v for v in versions if v < new_version)
    count = len(simulators)
    return {
        "simulators": count,
        "answers": answers,
        "failed_calls": failed,
        "backwards": backwards,
        "monotonic": backwards == 0,
        "on_new_version": on_new,
        "ended_on_new_version": ended_on_new,
        "versions_before": sorted(before),
        "first_new_ms": (min(firsts) - published_at) * 1e3 if firsts else None,
        "all_new_ms": (max(firsts) - published_at) * 1e3 if firsts and on_new == count else None,
    }


def window_p99(
    latencies: Sequence[float], completions: Sequence[float], begin: float, end: float
) -> tuple[float | None, int]:
    """The p99 latency (ms) of the calls that completed in [begin, end) (seconds, the clock of
    `completions`, which pairs with `latencies`), and how many did; None if none did."""
    if len(latencies) != len(completions):
        raise AgentserveError(f"{len(latencies)} latencies but {len(completions)} completion times")
    inside = sorted(x for x, t in zip(latencies, completions, strict=True) if begin <= t < end)
    return (percentile(inside, 99) * 1e3 if inside else None), len(inside)


def reload_measurement(
    simulators: Sequence[Mapping[str, Any]],
    new_version: int,
    published_at: float,
    latencies: Sequence[float],
    completions: Sequence[float],
    seconds: float,
) -> dict[str, Any]:
    """The reload figures of one run: `version_accounting`, and the latency p99 over the
    RELOAD_WINDOW_S before the publish and over the one after it (both within the measured
    window of `seconds`)."""
    figures: dict[str, Any] = {"new_version": new_version, "published_at_s": published_at}
    figures.update(version_accounting(simulators, new_version, published_at))
    window = RELOAD_WINDOW_S
    p99_before, calls_before = window_p99(
        latencies, completions, max(0.0, published_at - window), published_at
    )
    p99_after, calls_after = window_p99(
        latencies, completions, published_at, min(seconds, published_at + window)
    )
    figures.update(
        p99_before_ms=p99_before,
        calls_before=calls_before,
        p99_after_ms=p99_after,
        calls_after=calls_after,
    )
    return figures


def _median(values: Sequence[float | None]) -> float | None:
    """The median, None if any value is missing (or there are none)."""
    present = [float(v) for v in values if v is not None]
    return statistics.median(present) if present and len(present) == len(values) else None


def reload_summary(reloads: Sequence[Mapping[str, Any]]) -> dict[str, Any]:
    """Over the repeats of a reload scenario (their `reload_measurement`s): failed calls summed,
    monotonic and every_simulator_on_new only if so in every repeat, the fewest simulators on the
    new version, and the medians of the times and p99 latencies."""
    if not reloads:
        raise AgentserveError("no reload runs to summarize")
    return {
        "repeats": len(reloads),
        "failed_calls": sum(int(r["failed_calls"]) for r in reloads),
        "monotonic": all(bool(r["monotonic"]) for r in reloads),
        "backwards": sum(int(r["backwards"]) for r in reloads),
        "simulators": min(int(r["simulators"]) for r in reloads),
        "on_new_version": min(int(r["on_new_version"]) for r in reloads),
        "every_simulator_on_new": all(
            int(r["simulators"]) > 0 and int(r["on_new_version"]) == int(r["simulators"])
            for r in reloads
        ),
        "first_new_ms": _median([r["first_new_ms"] for r in reloads]),
        "all_new_ms": _median([r["all_new_ms"] for r in reloads]),
        "p99_before_ms": _median([r["p99_before_ms"] for r in reloads]),
        "p99_after_ms": _median([r["p99_after_ms"] for r in reloads]),
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
        reloads = [r["reload"] for r in runs if r["scenario"] == name and r.get("reload")]
        if reloads:
            entry["reload"] = reload_summary(reloads)
        summary[name] = entry
    return summary


@dataclass(frozen=True)
class Target:
    """One target of issue 5, checked on the medians of the named scenarios."""

    label: str
    requirement: str
    scenarios: tuple[str, ...]
    metric: str
    """"rate_ratio", "p50_ratio" (ours/echo), "actions_rate" (ours, absolute), "reload" (no
    failed call, versions never backwards, every simulator on the new version) or "gpu_ratio"
    (the torch CUDA runtime's actions/s over the best CPU runtime's, `agentserve bench --gpu`)."""
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
    Target(
        "Hot reload under load",
        "32 simulators streaming: 0 failed calls, versions never go backwards, the new version "
        "picked up by every simulator",
        ("reload-s32",),
        "reload",
        0.0,
        False,
    ),
)


GPU_TARGET = Target(
    "ActBatch of 4,096 on an NVIDIA GPU",
    "the torch CUDA runtime ≥ 5x the actions/s of the best CPU runtime on the same machine",
    ("batch4096-c1", "batch4096-c4"),
    "gpu_ratio",
    5.0,
    True,
)
"""Measured on a machine with a GPU by `agentserve bench --gpu` (agentserve.bench.gpu), which
stores its verdict apart (results/serving-gpu.json); `verdicts` leaves it out."""


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


def _reload_verdict(target: Target, summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """`measured` is the failed calls of the first of the target's scenarios that was run, and
    `reload` that scenario's reload summary; passed needs no failed call, versions that never
    went backwards and every simulator on the new version, in every repeat."""
    found = next(
        (
            (name, summary[name]["reload"])
            for name in target.scenarios
            if summary.get(name, {}).get("reload")
        ),
        None,
    )
    result: dict[str, Any] = {
        "label": target.label,
        "requirement": target.requirement,
        "metric": target.metric,
        "bound": target.bound,
        "scenario": None,
        "measured": None,
        "passed": None,
    }
    if found is not None:
        name, reload = found
        failed = float(reload["failed_calls"])
        result.update(
            scenario=name,
            measured=failed,
            passed=failed <= target.bound
            and bool(reload["monotonic"])
            and bool(reload["every_simulator_on_new"]),
            reload=dict(reload),
        )
    return result


def verdict(target: Target, summary: Mapping[str, Mapping[str, Any]]) -> dict[str, Any]:
    """{label, requirement, scenario, measured, passed}: `measured` is the best value among the
    target's scenarios that were run, `passed` None when none was (not measured)."""
    if target.metric == "reload":
        return _reload_verdict(target, summary)
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
