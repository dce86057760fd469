"""Renders docs/serving-benchmark.md from the stored results (docs/results/serving.json) only."""

from __future__ import annotations

import os
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentserve.bench.stats import ECHO, GPU_TARGET, OURS, TARGETS, TARGETS_ORDER

PAGE = "serving-benchmark.md"
GPU_PAGE = "serving-gpu.md"
GPU_RESULTS = Path("results") / "serving-gpu.json"
GPU_FORMAT = "agentserve.serving-gpu/1"
"""The results of `agentserve bench --gpu` (agentserve.bench.gpu), whose verdict this page
shows beside its own when they are stored next to its results."""
DASH = "—"


def fmt(value: float | None, digits: int = 0) -> str:
    """Thousands separators and `digits` decimals; a dash for a missing value."""
    return DASH if value is None else f"{value:,.{digits}f}"


def fmt_ms(value: float | None) -> str:
    """Milliseconds with three significant decimals for sub-millisecond values."""
    if value is None:
        return DASH
    return f"{value:.3f}" if value < 10 else f"{value:.2f}" if value < 100 else f"{value:.1f}"


def fmt_ratio(value: float | None) -> str:
    return DASH if value is None else f"{value:.2f}"


def verdict_text(passed: bool | None) -> str:
    return "not measured" if passed is None else "yes" if passed else "**no**"


def yes_no(value: bool) -> str:
    return "yes" if value else "**no**"


def _reload_text(reload: Mapping[str, Any]) -> str:
    """A reload summary in words: failed calls, monotonicity, simulators on the new version."""
    failed = int(reload["failed_calls"])
    backwards = int(reload.get("backwards", 0))
    order = (
        "versions never went backwards"
        if reload["monotonic"]
        else f"**versions went backwards** for {backwards} simulators"
    )
    return (
        f"{failed} failed call{'' if failed == 1 else 's'}; {order}; "
        f"{reload['on_new_version']} of {reload['simulators']} simulators got the new version"
    )


def _measured_text(verdict: Mapping[str, Any]) -> str:
    value = verdict["measured"]
    if value is None:
        return "not measured"
    if verdict["metric"] == "reload":
        reload = verdict.get("reload")
        return _reload_text(reload) if reload else f"{fmt(value)} failed calls"
    if verdict["metric"] == "actions_rate":
        return f"{fmt(value)} actions/s"
    if verdict["metric"] == "gpu_ratio":
        return _gpu_text(verdict)
    what = "throughput" if verdict["metric"] == "rate_ratio" else "p50"
    return f"{what} ratio ours/echo {fmt_ratio(value)}"


def _gpu_text(verdict: Mapping[str, Any]) -> str:
    gpu, cpu = verdict["gpu"], verdict["cpu"]
    return (
        f"{verdict['measured']:.2f}x: {fmt(gpu['actions_rate'])} actions/s ({gpu['label']}) "
        f"against {fmt(cpu['actions_rate'])} ({cpu['label']}) on a machine with "
        f"{verdict['device_name'] or 'no GPU'} ([{GPU_PAGE}]({GPU_PAGE}))"
    )


def table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    lines = ["| " + " | ".join(header) + " |", "|" + "---|" * len(header)]
    lines += ["| " + " | ".join(row) + " |" for row in rows]
    return lines


def machine_lines(
    data: Mapping[str, Any],
    how: str = "both servers were measured in alternation (see below) and the ranges show the "
    "spread",
) -> list[str]:
    """The machine section; `how` says how the measurement copes with a shared machine."""
    host = data["machine"]
    packages = host["packages"]
    versions = ", ".join(f"{name} {version}" for name, version in packages.items() if version)
    before, after = host["load_average_before"], host.get("load_average_after")
    load = f"{before[0]:.2f} / {before[1]:.2f} / {before[2]:.2f} before the run"
    if after:
        load += f", {after[0]:.2f} / {after[1]:.2f} / {after[2]:.2f} after it"
    return [
        f"- CPU: {host['cpu']}; {host['logical_cpus']} logical CPUs, "
        f"{host['usable_cpus']} usable by the benchmark",
        f"- OS: {host['platform']}",
        f"- {host['python']}; {versions} (gRPC core {host['grpc_runtime']})",
        f"- Load average (1 / 5 / 15 min): {load}. The machine is shared with other work, so "
        f"{how}.",
    ]


def _is_reload(scenario: Mapping[str, Any]) -> bool:
    """A reload scenario (results stored before they existed have no such key)."""
    return bool(scenario.get("reload", False))


def _method(data: Mapping[str, Any]) -> list[str]:
    settings = data["settings"]
    processes = data["client_processes"]
    lines = [
        f"- **Our server**: `agentserve serve --port 0 --metrics-port 0` on the bundled model "
        f"repository (`agentserve.local_server.LocalServer`, default options: dynamic "
        f"micro-batching, Prometheus metrics, health and reflection services), policy "
        f"`{settings['policy']}` (CartPole-v1, 4 floats in, 2 discrete actions, ONNX runtime).",
        "- **Echo server**: `python -m agentserve.bench.echo`, a bare grpc.aio "
        "`AgentServiceServicer` with the same server options (message size limits, connection "
        "age) that answers every call with a prebuilt response of the same shape as ours "
        "(a discrete action, two probabilities, two values, a propensity and a version; ActBatch: "
        "one action and one propensity per observation) and does nothing else.",
        f"- **Load**: {processes} client processes (spawned once, separate from both servers), "
        "each with one grpc.aio channel (one HTTP/2 connection) and closed-loop callers on the "
        "raw stubs: send a call, wait for its answer, send the next one. Concurrency N means N "
        "callers in flight, spread over the processes the scenario names (16 + 16 for 32). An "
        "ActStream caller is one simulator: one long-lived stream with one request in flight "
        "(write, read the answer, write). Requests are prebuilt (256 per process, "
        "`deterministic=true`) from random CartPole-like observations (uniform within ±2.4, ±3, "
        "±0.21, ±3.5), the same ones for both servers; every call has a 10 s deadline.",
        f"- **Schedule**: for each repeat ({settings['repeats']}) and scenario, the two servers "
        "are measured back to back, which one goes first alternating between repeats. Each "
        f"measurement is {settings['warmup']:g} s of warm-up and then {settings['seconds']:g} s "
        "measured; every call (stream message) that completes inside the measured window counts "
        "and is timed from send to answer in the client.",
        "- **Figures**: throughput = calls (messages) completed in the window / its length; "
        "latency percentiles are over every timed call of all the scenario's processes; server "
        "CPU is the server process's user + system time (all threads, from /proc) during the "
        "window, in cores (CPU seconds per second) and per call; client CPU per call is the "
        "client processes' CPU time over the same window. Each figure is the median over the "
        "repeats; *range* is the lowest and highest throughput of the repeats. Ratios are "
        "ours / echo of those medians.",
        f"- **Reading the figures**: the client processes and the server share the machine's "
        f"{data['machine']['usable_cpus']} CPUs, so a throughput is that of the whole set-up "
        "(clients included, and the same clients for both servers); the server CPU per call is "
        "the figure that isolates each server's own cost.",
    ]
    reloads = [f"`{s['name']}`" for s in data["scenarios"] if _is_reload(s)]
    if reloads:
        watch = settings.get("watch_interval_s")
        every = f"every {watch:g} s" if watch is not None else "periodically"
        window = float(settings.get("reload_window_s", 1.0))
        lines.append(
            f"- **Hot reload** ({', '.join(reloads)}, our server only: the echo server has no "
            "versions): a second instance of our server, `agentserve serve --watch-interval "
            f"{watch if watch is not None else '…'}`, on a copy of the bundled repository in a "
            f"temporary folder, which it scans for new versions {every}. In the middle of each "
            f"repeat's measured window the benchmark publishes the next version of "
            f"`{settings['policy']}` there the way exports do: a copy of its first version in a "
            "hidden folder, the manifest's version set, then one rename into place. Its "
            "simulators are the closed-loop ActStream callers above; each records the "
            "`policy_version` of every answer (warm-up included) and every failed call (an RPC "
            "error, after which it opens a new stream, or an ActResponse carrying `error`) "
            "instead of stopping at the first. Versions are *never backwards* when every "
            "simulator's sequence of versions is non-decreasing; the pick-up times run from "
            "the rename to the first answer carrying the new version, of any simulator and of "
            f"the last one; the p99 latencies are over the {window:g} s before and the "
            f"{window:g} s after the rename (within the measured window)."
        )
    return lines


def _reload_section(
    scenario: Mapping[str, Any], entry: Mapping[str, Any], runs: Sequence[Mapping[str, Any]]
) -> list[str]:
    """The reload figures of each repeat and over the repeats."""
    header = [
        "repeat",
        "new version",
        "failed calls",
        "versions never backwards",
        "simulators on the new version",
        "first answer with it, ms after publish",
        "all simulators, ms after publish",
        "p99 ms before",
        "p99 ms after",
    ]
    rows = []
    mine = [r for r in runs if r["scenario"] == scenario["name"] and r.get("reload")]
    for run in mine:
        reload = run["reload"]
        rows.append(
            [
                str(int(run["repeat"]) + 1),
                str(reload["new_version"]),
                fmt(reload["failed_calls"]),
                yes_no(bool(reload["monotonic"])),
                f"{reload['on_new_version']} of {reload['simulators']}",
                fmt(reload["first_new_ms"], 1),
                fmt(reload["all_new_ms"], 1),
                fmt_ms(reload["p99_before_ms"]),
                fmt_ms(reload["p99_after_ms"]),
            ]
        )
    summary = entry.get("reload")
    if summary:
        rows.append(
            [
                "all (median)" if len(mine) > 1 else "all",
                "",
                fmt(summary["failed_calls"]),
                yes_no(bool(summary["monotonic"])),
                f"{summary['on_new_version']} of {summary['simulators']}"
                + ("" if len(mine) <= 1 else " (fewest)"),
                fmt(summary["first_new_ms"], 1),
                fmt(summary["all_new_ms"], 1),
                fmt_ms(summary["p99_before_ms"]),
                fmt_ms(summary["p99_after_ms"]),
            ]
        )
    lines = ["", "Hot reload, per repeat:", ""]
    lines += table(header, rows)
    if summary:
        lines += ["", _reload_text(summary) + "."]
    return lines


def _scenario_section(
    scenario: Mapping[str, Any],
    entry: Mapping[str, Any],
    runs: Sequence[Mapping[str, Any]] = (),
) -> list[str]:
    ours_only = _is_reload(scenario)
    unit = scenario["rate_unit"]
    batch = int(scenario["batch_size"]) > 1
    header = ["server", unit, "range", "p50 ms", "p90 ms", "p99 ms", "mean ms"]
    per = "message" if scenario["method"] == "ActStream" else "call"
    header += ["server CPU (cores)", f"server CPU µs/{per}", f"client CPU µs/{per}"]
    if batch:
        header.insert(3, "actions/s")
    rows = []
    for target in (OURS,) if ours_only else TARGETS_ORDER:
        figures = entry.get(target)
        if figures is None:
            rows.append([target, *([DASH] * (len(header) - 1))])
            continue
        row = [
            target,
            fmt(figures["rate"]),
            f"{fmt(figures['rate_min'])} to {fmt(figures['rate_max'])}",
            fmt_ms(figures["p50_ms"]),
            fmt_ms(figures["p90_ms"]),
            fmt_ms(figures["p99_ms"]),
            fmt_ms(figures["mean_ms"]),
            fmt(figures["server_cores"], 2),
            fmt(figures["server_cpu_per_call_us"]),
            fmt(figures["client_cpu_per_call_us"]),
        ]
        if batch:
            row.insert(3, fmt(figures["actions_rate"]))
        rows.append(row)
    ratios = entry["ratio"]
    ratio_row = [
        "ours / echo",
        fmt_ratio(ratios["rate"]),
        "",
        fmt_ratio(ratios["p50_ms"]),
        "",
        fmt_ratio(ratios["p99_ms"]),
        "",
        "",
        fmt_ratio(ratios["server_cpu_per_call_us"]),
        "",
    ]
    if batch:
        ratio_row.insert(3, fmt_ratio(ratios["rate"]))
    if not ours_only:
        rows.append(ratio_row)
    lines = [f"### `{scenario['name']}`: {scenario['title']}", ""]
    lines += table(header, rows)
    if ours_only:
        return [*lines, *_reload_section(scenario, entry, runs), ""]
    ours, echo = entry.get(OURS), entry.get(ECHO)
    if ours and echo:
        mine, theirs = ours["server_cpu_per_call_us"], echo["server_cpu_per_call_us"]
        if mine is not None and theirs is not None:
            lines += [
                "",
                f"Our server used {fmt(mine)} µs of CPU per {per}, the echo server {fmt(theirs)} "
                f"µs: {fmt(mine - theirs)} µs more per {per} for our server's own work.",
            ]
    return [*lines, ""]


def _summary_table(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for scenario in data["scenarios"]:
        entry = data["summary"].get(scenario["name"])
        if entry is None:
            continue
        ours, echo = entry.get(OURS) or {}, entry.get(ECHO) or {}
        batch = int(scenario["batch_size"]) > 1
        rows.append(
            [
                f"`{scenario['name']}`",
                scenario["rate_unit"],
                fmt(ours.get("rate")),
                fmt(echo.get("rate")),
                fmt_ratio(entry["ratio"]["rate"]),
                fmt_ms(ours.get("p50_ms")),
                fmt_ms(echo.get("p50_ms")),
                fmt_ratio(entry["ratio"]["p50_ms"]),
                fmt(ours.get("actions_rate")) if batch else DASH,
            ]
        )
    header = ["scenario", "unit", "ours", "echo", "ratio", "ours p50 ms", "echo p50 ms"]
    return table([*header, "p50 ratio", "ours actions/s"], rows)


def _runs_table(data: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            f"`{run['scenario']}`",
            str(int(run["repeat"]) + 1),
            run["target"],
            fmt(run["rate"]),
            fmt_ms(run["p50_ms"]),
            fmt_ms(run["p99_ms"]),
            fmt(run["server_cores"], 2),
        ]
        for run in data["runs"]
    ]
    header = ["scenario", "repeat", "server", "rate", "p50 ms", "p99 ms", "server CPU (cores)"]
    return table(header, rows)


def _all_verdicts(stored: Sequence[Mapping[str, Any]]) -> list[Mapping[str, Any]]:
    """The stored verdicts, and a not-measured one for each target that they lack (results
    stored before it existed; the GPU target without results of `agentserve bench --gpu`)."""
    labels = {v["label"] for v in stored}
    missing = [
        {
            "label": t.label,
            "requirement": t.requirement,
            "metric": t.metric,
            "scenario": None,
            "measured": None,
            "passed": None,
        }
        for t in (*TARGETS, GPU_TARGET)
        if t.label not in labels
    ]
    return [*stored, *missing]


def render(data: Mapping[str, Any], gpu: Mapping[str, Any] | None = None) -> str:
    """The page, from stored results; `gpu`: the verdict stored by `agentserve bench --gpu`."""
    minutes = float(data["wall_seconds"]) / 60
    lines = [
        "# Serving benchmark",
        "",
        f"Written by `agentserve bench` (`make bench-serving`) on {data['date']} from "
        "[results/serving.json](results/serving.json); do not edit by hand. It compares our "
        "server with a bare gRPC echo server of the same service, measured on the same machine "
        "in the same run.",
        "",
        f"Command: `{data['command']}` ({minutes:.1f} minutes).",
        "",
        "Where the latency of one call goes, stage by stage: `agentserve bench --breakdown` "
        "([serving-breakdown.md](serving-breakdown.md)). The GPU target, torch on CUDA against "
        f"the CPU runtimes on a machine with a GPU: `agentserve bench --gpu` ([{GPU_PAGE}]"
        f"({GPU_PAGE})).",
        "",
        "## Targets",
        "",
    ]
    lines += table(
        ["target", "requirement", "measured", "scenario", "met"],
        [
            [
                v["label"],
                v["requirement"],
                _measured_text(v),
                DASH if v["scenario"] is None else f"`{v['scenario']}`",
                verdict_text(v["passed"]),
            ]
            for v in _all_verdicts([*data["verdicts"], *([gpu] if gpu else [])])
        ],
    )
    lines += ["", "## Summary", ""]
    lines += _summary_table(data)
    lines += ["", "## Machine", ""]
    lines += machine_lines(data)
    lines += ["", "## How it was measured", ""]
    lines += _method(data)
    lines += ["", "## Scenarios", ""]
    for scenario in data["scenarios"]:
        entry = data["summary"].get(scenario["name"])
        if entry is not None:
            lines += _scenario_section(scenario, entry, data["runs"])
    lines += ["## Every measurement", ""]
    lines += _runs_table(data)
    return "\n".join(lines) + "\n"


def write(out: Path, data: Mapping[str, Any]) -> Path:
    """OUT/serving-benchmark.md, replaced atomically, with the GPU verdict of
    OUT/results/serving-gpu.json where there is one (judged as serving-gpu.md judges it)."""
    from agentserve.bench import gpu_report

    stored = out / GPU_RESULTS
    gpu = gpu_report.load_results(out)["verdict"] if stored.exists() else None
    path = out / PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(render(data, gpu), encoding="utf-8")
    os.replace(tmp, path)
    return path
