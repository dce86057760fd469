"""The verdicts and the page of `agentserve bench --gpu` (agentserve/bench/gpu.py measures):
docs/serving-gpu.md from docs/results/serving-gpu.json, the verdicts taken from the stored
figures, so `--report-only` judges them by the rules of the code that renders them."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

from agentserve.bench import report, stats
from agentserve.bench.runner import read_json

FORMAT = report.GPU_FORMAT
RESULTS_FILE = report.GPU_RESULTS
PAGE = report.GPU_PAGE
BATCH = 4096
"""Rows per ActBatch call of the target."""


def thread_count(count: int) -> str:
    """ "1 thread", "8 threads"."""
    return f"{count} thread{'' if count == 1 else 's'}"


def thread_counts(threads: Sequence[int]) -> str:
    """ "4 and 8 threads"."""
    words = [str(n) for n in threads]
    listed = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
    return f"{listed} thread{'' if list(threads) == [1] else 's'}"


# --- Verdicts -----------------------------------------------------------------------------------


def best_served(
    summary: Mapping[str, Mapping[str, Any]], chosen: Sequence[Mapping[str, Any]], gpu: bool
) -> dict[str, Any] | None:
    """The highest median actions/s of the servers on the device (`gpu`) or on the CPU, over
    the scenarios: {server, label, scenario, actions_rate}; None when none was measured."""
    labels = {s["name"]: served_label(s) for s in chosen if bool(s["gpu"]) == gpu}
    found = [
        (float(figures["actions_rate"]), name, scenario)
        for scenario, entry in summary.items()
        for name, figures in entry.items()
        if name in labels and figures.get("actions_rate") is not None
    ]
    if not found:
        return None
    rate, name, scenario = max(found)
    return {"server": name, "label": labels[name], "scenario": scenario, "actions_rate": rate}


def best_in_process(
    rows: Sequence[Mapping[str, Any]], batch: int, gpu: bool, variant: str | None = None
) -> dict[str, Any] | None:
    """The fastest in-process row at `batch` on the device (`gpu`) or on the CPU (or the row of
    `variant`), in best_served's form."""
    found = [
        r
        for r in rows
        if r["batch"] == batch
        and bool(r["gpu"]) == gpu
        and (variant is None or r["variant"] == variant)
    ]
    if not found:
        return None
    row = max(found, key=lambda r: float(r["actions_rate"]))
    return {
        "server": row["variant"],
        "label": row["label"],
        "scenario": f"batch {batch}",
        "actions_rate": float(row["actions_rate"]),
        "us_per_call": float(row["us_per_call"]),
    }


def verdict(
    gpu: Mapping[str, Any] | None, cpu: Mapping[str, Any] | None, device_name: str | None
) -> dict[str, Any]:
    """stats.GPU_TARGET on these best figures, in the form of stats.verdict (plus the two
    figures compared and the device's name); passed None when either is missing."""
    target = stats.GPU_TARGET
    measured = stats.ratio(
        None if gpu is None else float(gpu["actions_rate"]),
        None if cpu is None else float(cpu["actions_rate"]),
    )
    return {
        "label": target.label,
        "requirement": target.requirement,
        "metric": target.metric,
        "bound": target.bound,
        "scenario": None if gpu is None else gpu["scenario"],
        "measured": measured,
        "passed": None if measured is None else measured >= target.bound,
        "gpu": None if gpu is None else dict(gpu),
        "cpu": None if cpu is None else dict(cpu),
        "device_name": device_name,
    }


def judge(data: dict[str, Any]) -> None:
    """Sets the verdicts of what `data` holds: "verdict" through the server (the target) and
    "in_process_verdict" for the runtimes alone (torch on the device as the server runs it:
    its copies, CUDA graphs)."""
    name = data["machine"]["gpu"]["name"]
    rows = data["in_process"]
    data["verdict"] = verdict(
        best_served(data["summary"], data["servers"], gpu=True),
        best_served(data["summary"], data["servers"], gpu=False),
        name,
    )
    served = f"torch-{data['settings']['device']}-served"
    data["in_process_verdict"] = verdict(
        best_in_process(rows, BATCH, gpu=True, variant=served),
        best_in_process(rows, BATCH, gpu=False),
        name,
    )


# --- The page -----------------------------------------------------------------------------------


def served_label(served: Mapping[str, Any]) -> str:
    if served["gpu"]:
        return f"torch on {served['device']} (--runtime-threads {int(served['threads'])})"
    runtime = "onnxruntime" if served["runtime"] == "onnx" else served["runtime"]
    return f"{runtime} on the CPU, {thread_count(int(served['threads']))}"


def verdict_text(found: Mapping[str, Any]) -> str:
    """The two figures compared and their ratio, in words."""
    gpu, cpu = found.get("gpu"), found.get("cpu")
    if gpu is None or cpu is None or found["measured"] is None:
        return "not measured"
    return (
        f"{report.fmt(gpu['actions_rate'])} actions/s ({gpu['label']}, {gpu['scenario']}) "
        f"against {report.fmt(cpu['actions_rate'])} ({cpu['label']}, {cpu['scenario']}): "
        f"{found['measured']:.2f}x"
    )


def _targets(data: Mapping[str, Any]) -> list[str]:
    rows = [
        [
            f"ActBatch of {BATCH:,} through the server (the target)",
            data["verdict"]["requirement"],
            verdict_text(data["verdict"]),
            report.verdict_text(data["verdict"]["passed"]),
        ],
        [
            f"{BATCH:,} rows inside one process (no gRPC; for comparison)",
            "the same ratio for the runtimes alone (torch on the device as served: its copies "
            "each way, CUDA graphs)",
            verdict_text(data["in_process_verdict"]),
            report.verdict_text(data["in_process_verdict"]["passed"]),
        ],
    ]
    return report.table(["measurement", "requirement", "measured", "met"], rows)


def _serving_tables(data: Mapping[str, Any]) -> list[str]:
    labels = {s["name"]: served_label(s) for s in data["servers"]}
    best_cpu = (data["verdict"].get("cpu") or {}).get("actions_rate")
    lines: list[str] = []
    for scenario in data["scenarios"]:
        entry = data["summary"].get(scenario["name"], {})
        rows = []
        for name, label in labels.items():
            figures = entry.get(name)
            if figures is None:
                rows.append([f"`{name}`: {label}", *([report.DASH] * 8)])
                continue
            rows.append(
                [
                    f"`{name}`: {label}",
                    report.fmt(figures["actions_rate"]),
                    report.fmt_ratio(stats.ratio(figures["actions_rate"], best_cpu)),
                    report.fmt(figures["rate"]),
                    f"{report.fmt(figures['rate_min'])} to {report.fmt(figures['rate_max'])}",
                    report.fmt_ms(figures["p50_ms"]),
                    report.fmt_ms(figures["p99_ms"]),
                    report.fmt(figures["server_cores"], 2),
                    report.fmt(figures["server_cpu_per_call_us"]),
                ]
            )
        header = ["server", "actions/s", "/ best CPU", "calls/s", "range", "p50 ms", "p99 ms"]
        header += ["server CPU (cores)", "server CPU µs/call"]
        lines += [f"### `{scenario['name']}`: {scenario['title']}", ""]
        lines += [*report.table(header, rows), ""]
    return lines


def _in_process_table(data: Mapping[str, Any]) -> list[str]:
    rows = []
    for batch in data["settings"]["batches"]:
        best = best_in_process(data["in_process"], batch, gpu=False)
        for row in (r for r in data["in_process"] if r["batch"] == batch):
            rows.append(
                [
                    report.fmt(batch),
                    f"`{row['variant']}`: {row['label']}",
                    report.fmt(row["us_per_call"], 1),
                    report.fmt(row["actions_rate"]),
                    report.fmt_ratio(
                        None
                        if best is None
                        else stats.ratio(row["actions_rate"], best["actions_rate"])
                    ),
                    row["ran_on"],
                    f"{row['max_abs_diff']:.1e}",
                ]
            )
    header = ["batch", "runtime", "µs/call", "actions/s", "/ best CPU", "ran on", "max abs diff"]
    return report.table(header, rows)


def _machine(data: Mapping[str, Any]) -> list[str]:
    gpu = data["machine"]["gpu"]
    settings = data["settings"]
    if gpu["name"]:
        memory = f", {gpu['memory_gib']:.0f} GiB" if gpu.get("memory_gib") else ""
        driver = f", driver {gpu['driver']}" if gpu.get("driver") else ""
        line = (
            f"- GPU: {gpu['name']} (`{gpu['device']}`, compute capability "
            f"{gpu['capability']}, {gpu['multiprocessors']} multiprocessors{memory}{driver})"
        )
    else:
        line = f"- GPU: none; `{gpu['device']}` stood in for it (a test run, not a measurement)"
    how = "the servers were measured in rotation, the order changing from repeat to repeat"
    return [
        line,
        f"- torch {gpu['torch']} (CUDA {gpu['cuda'] or 'none'}); torch's default thread count "
        f"here: {gpu['torch_default_threads']}; CPU runtimes measured at "
        f"{thread_counts(list(dict.fromkeys([1, *settings['threads']])))}",
        *report.machine_lines(data, how),
    ]


def _method(data: Mapping[str, Any]) -> list[str]:
    settings = data["settings"]
    device = settings["device"]
    return [
        f"- **Inside one process**: the runtimes of `service.runtime` built from the bundled "
        f"`{settings['policy']}` (CartPole-v1, 4 floats in, 2 actions), each timed on the same "
        f"random observations and masks: the median of {settings['calls']} calls of "
        f"`infer` after {settings['warmup_calls']} untimed ones, wall time around the whole "
        "call (the device runtimes copy their inputs in and their outputs out and synchronise "
        "inside it). torch's thread count is set before each torch row; onnxruntime's "
        "intra-op threads are a session option. *max abs diff* is the largest difference of the "
        "probabilities and Q-values from onnxruntime's (1 thread).",
        f"- **Through the server**: one `agentserve serve --runtime R --device D "
        f"--runtime-threads N` per row on the bundled repository (`agentserve serve` keeps "
        "onnxruntime at 1 intra-op thread and torch at its default unless "
        "`--runtime-threads` says otherwise), all started once and measured in rotation; "
        "load from the client processes of `agentserve bench` (closed-loop ActBatch callers, "
        f"requests of {BATCH:,} random CartPole-like observations prebuilt, `deterministic`); "
        f"{settings['warmup']:g} s of warm-up and {settings['seconds']:g} s measured per run, "
        f"the median of {settings['repeats']} repeats. Server CPU is the server process's "
        "user + system time over the measured window.",
        f"- **Verdict**: the highest median actions/s of torch on `{device}` over the "
        f"scenarios, divided by the highest of the CPU runtimes; the target is "
        f"≥ {stats.GPU_TARGET.bound:g}x. Batches under {settings['cpu_below']} rows stay on "
        "the CPU even on a device (`cpu_below`; each in-process row's label says how it ran "
        "them): the in-process rows at batch 1 and 64 show why.",
    ]


def render(data: Mapping[str, Any]) -> str:
    """The page, from stored results."""
    lines = [
        f"# The GPU target: ActBatch of {BATCH:,} observations on the GPU",
        "",
        f"Written by `{data['command']}` on {data['date'][:10]} from "
        f"[{RESULTS_FILE.as_posix()}]({RESULTS_FILE.as_posix()}); do not edit by hand. The "
        "target of issue 5 (`make bench-gpu`; the CPU serving benchmark is "
        "[serving-benchmark.md](serving-benchmark.md)).",
        "",
        "## Targets",
        "",
        *_targets(data),
        "",
        "## Through the server",
        "",
    ]
    if data["runs"]:
        lines += _serving_tables(data)
    else:
        lines += ["Not measured (the run stopped before this part).", ""]
    lines += ["## Inside one process", "", *_in_process_table(data), ""]
    lines += ["## Machine", "", *_machine(data), ""]
    lines += ["## How it was measured", "", *_method(data), ""]
    return "\n".join(lines)


def load_results(out: Path) -> dict[str, Any]:
    """The stored results, their verdicts taken again by today's rules (`judge`)."""
    data = read_json(out / RESULTS_FILE, FORMAT)
    judge(data)
    return data


def write(out: Path, data: Mapping[str, Any]) -> Path:
    """OUT/serving-gpu.md."""
    path = out / PAGE
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(render(data), encoding="utf-8")
    return path
