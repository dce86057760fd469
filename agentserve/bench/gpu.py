"""The GPU target of issue 5: `agentserve bench --gpu` (`make bench-gpu`).

On a machine with a CUDA device, in one run:

- inside one process (no gRPC): the median time of one inference of the bundled CartPole policy
  at batch 1, 64 and 4,096 for onnxruntime and torch on the CPU (1 thread and `threads`), torch
  on the device with its host<->device copies, the same with a CUDA graph captured for the
  batch, and torch on the device as the server runs it (batches under `cpu_below` rows on its
  CPU copy): the device wins at 4,096 rows and loses at one, hence `cpu_below`;
- through the server: one `agentserve serve` of the bundled repository per runtime (onnxruntime
  at its serving default of 1 thread and at `threads`, torch on the CPU at `threads`, torch on
  the device), driven in rotation by the benchmark's client processes with ActBatch of 4,096
  observations at 1 and 4 callers; the median actions/s over the repeats, the device's over the
  best CPU runtime's, and the verdict on the 5x target (stats.GPU_TARGET).

Writes OUT/serving-gpu.md and OUT/results/serving-gpu.json (after the in-process part too, so a
failed serving part keeps it). `device` is a parameter throughout: the tests run the whole
pipeline with "cpu" standing in for the GPU.
"""

from __future__ import annotations

import contextlib
import dataclasses
import functools
import os
import shlex
import statistics
import subprocess
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from agentserve.bench import report, stats
from agentserve.bench.load import WorkerPool
from agentserve.bench.runner import (
    POLICY,
    Server,
    Settings,
    command_line,
    machine,
    measure_rotating,
    policy_shape,
    read_json,
    record,
    windows,
    write_json,
)
from agentserve.bench.scenarios import select
from agentserve.client import Client
from agentserve.errors import AgentserveError, ConfigError
from agentserve.local_server import LocalServer
from agentserve.manifest import Artifact, load_manifest
from agentserve.spaces import DiscreteSpec

FORMAT = report.GPU_FORMAT
RESULTS_FILE = report.GPU_RESULTS
PAGE = report.GPU_PAGE
DEVICE = "cuda"
BATCH = 4096
BASE_SCENARIOS = ("batch64-c1", "batch64-c4")
"""The main benchmark's ActBatch scenarios; SCENARIOS are the same with BATCH rows per call."""
SCENARIOS = tuple(
    dataclasses.replace(s, name=s.name.replace("64", str(BATCH), 1), batch_size=BATCH)
    for s in select(BASE_SCENARIOS)
)
BATCHES = (1, 64, BATCH)
"""Rows per call of the in-process part."""
CALLS = 300
"""Timed calls per in-process row (after WARMUP_CALLS untimed ones); the median is reported."""
WARMUP_CALLS = 30


@dataclass(frozen=True)
class Served:
    """One server of the comparison: `agentserve serve --runtime R --device D
    --runtime-threads N`."""

    name: str
    runtime: str
    device: str
    threads: int
    gpu: bool
    """The runtime on the device (measured against the best of the others)."""

    def args(self) -> tuple[str, ...]:
        threads = str(self.threads)
        return ("--runtime", self.runtime, "--device", self.device, "--runtime-threads", threads)


def servers(device: str, threads: Sequence[int]) -> list[Served]:
    """onnxruntime at 1 thread (its serving default) and at each of `threads`, torch on the CPU
    at each of `threads`, and torch on `device` (its CPU copy at the most threads)."""
    rows = [Served(f"onnx-t{n}", "onnx", "cpu", n, False) for n in dict.fromkeys((1, *threads))]
    rows += [Served(f"torch-cpu-t{n}", "torch", "cpu", n, False) for n in threads]
    rows.append(Served(f"torch-{device}", "torch", device, max(threads), True))
    return rows


def require_cuda(device: str = DEVICE) -> str:
    """`device` if torch sees it; ConfigError in one line otherwise."""
    from service.runtime import resolve_device

    try:
        return resolve_device(device)
    except ConfigError as error:
        raise ConfigError(f"--gpu measures the torch runtime on a CUDA device: {error}") from None


def default_threads(cpus: int) -> tuple[int, ...]:
    """The CPU runtimes' thread counts besides 1: half the usable CPUs and all of them (the
    client processes and the server's own threads share the machine)."""
    return tuple(dict.fromkeys((max(1, cpus // 2), cpus)))


def command(settings: Settings, out: Path, threads: Sequence[int] | None) -> str:
    """The canonical `agentserve bench --gpu` command of these settings."""
    words = command_line(settings, out, mode="gpu")
    return words if not threads else f"{words} --threads {' '.join(map(str, threads))}"


def device_info(device: str) -> dict[str, Any]:
    """The device and the torch build that ran the runtimes."""
    import torch

    info: dict[str, Any] = {
        "device": device,
        "name": None,
        "torch": torch.__version__,
        "cuda": torch.version.cuda,
        "torch_default_threads": torch.get_num_threads(),
    }
    if device != "cpu":
        props = torch.cuda.get_device_properties(torch.device(device))
        info.update(
            name=props.name,
            capability=f"{props.major}.{props.minor}",
            multiprocessors=props.multi_processor_count,
            memory_gib=props.total_memory / 2**30,
            driver=_driver_version(),
        )
    return info


def _driver_version() -> str | None:
    query = ["nvidia-smi", "--query-gpu=driver_version", "--format=csv,noheader"]
    with contextlib.suppress(OSError, subprocess.SubprocessError):
        done = subprocess.run(query, capture_output=True, text=True, timeout=10, check=True)
        return done.stdout.strip().splitlines()[0] if done.stdout.strip() else None
    return None


# --- Inside one process -------------------------------------------------------------------------


def median_seconds(call: Callable[[], Any], calls: int, warmup: int) -> float:
    """The median wall time of `calls` calls, after `warmup` untimed ones."""
    for _ in range(warmup):
        call()
    times = []
    for _ in range(calls):
        started = time.perf_counter()
        call()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def bundled_artifact() -> Artifact:
    """The highest version of POLICY in the bundled repository."""
    from service.server import default_model_repo

    folder = default_model_repo() / POLICY
    versions = sorted(int(p.name) for p in folder.iterdir() if p.name.isdigit())
    return load_manifest(folder / str(versions[-1]))


@dataclass(frozen=True)
class Variant:
    """One runtime configuration of the in-process part."""

    name: str
    label: str
    gpu: bool
    torch_threads: int | None
    """torch's thread count while it runs (None: not torch)."""
    build: Callable[[int], Any]
    """The runtime, for batches of that many rows (0: any)."""
    per_batch: bool = False
    """A runtime of its own per batch size (a CUDA graph captured for it)."""


def variants(artifact: Artifact, device: str, threads: Sequence[int]) -> list[Variant]:
    """The CPU runtimes at 1 thread and each of `threads`, then torch on `device`: every batch
    there (copies each way, no graphs), through a CUDA graph of exactly the batch, and as served
    (`cpu_below`, graphs up to `GRAPH_BATCH` rows; its CPU copy at the most threads)."""
    from service.runtime.onnx import OnnxRuntime
    from service.runtime.torch import CPU_BELOW, GRAPH_BATCH, TorchRuntime

    def onnx(count: int) -> Callable[[int], Any]:
        return lambda _: OnnxRuntime(artifact, count)

    counts = list(dict.fromkeys((1, *threads)))
    most = max(counts)
    on = f"torch on {device}"
    found = [
        Variant(f"onnx-t{n}", f"onnxruntime, {_threads(n)}", False, None, onnx(n)) for n in counts
    ]
    found += [
        Variant(
            f"torch-cpu-t{n}",
            f"torch on the CPU, {_threads(n)}",
            False,
            n,
            lambda _: TorchRuntime(artifact),
        )
        for n in counts
    ]
    return [
        *found,
        Variant(
            f"torch-{device}",
            f"{on}, every batch there (copies each way)",
            True,
            most,
            lambda _: TorchRuntime(artifact, device, cpu_below=1, graph_batch=0),
        ),
        Variant(
            f"torch-{device}-graph",
            f"{on}, a CUDA graph of the batch",
            True,
            most,
            lambda rows: TorchRuntime(artifact, device, cpu_below=rows, graph_batch=rows),
            per_batch=True,
        ),
        Variant(
            f"torch-{device}-served",
            f"{on} as served (under {CPU_BELOW} rows: its CPU copy; CUDA graphs up to "
            f"{GRAPH_BATCH:,} rows)",
            True,
            most,
            lambda _: TorchRuntime(artifact, device),
        ),
    ]


def _threads(count: int) -> str:
    return f"{count} thread{'' if count == 1 else 's'}"


def _counts(threads: Sequence[int]) -> str:
    """ "4 and 8 threads"."""
    words = [str(n) for n in threads]
    listed = words[0] if len(words) == 1 else f"{', '.join(words[:-1])} and {words[-1]}"
    return f"{listed} thread{'' if list(threads) == [1] else 's'}"


def _ran_on(runtime: Any, rows: int) -> str:
    """Where a runtime ran a batch of `rows`: "cpu", or its device."""
    device = str(getattr(runtime, "device", "cpu"))
    return "cpu" if device == "cpu" or rows < int(getattr(runtime, "cpu_below", 0)) else device


def measure_in_process(
    device: str,
    threads: Sequence[int],
    batches: Sequence[int] = BATCHES,
    calls: int = CALLS,
    warmup: int = WARMUP_CALLS,
    say: Callable[[str], None] = print,
) -> list[dict[str, Any]]:
    """One row per variant and batch: median seconds per call, actions/s, where it ran and the
    largest difference of its probabilities and Q-values from onnxruntime's (1 thread, the
    first variant). Each variant's runtime lives only while it is measured, so no idle thread
    pool of another one competes for the cores."""
    import torch

    from trainer.export import random_masks, random_observations

    artifact = bundled_artifact()
    manifest = artifact.manifest
    space = manifest.action_space
    if not isinstance(space, DiscreteSpec):
        raise AgentserveError(f"{artifact.label} is not a discrete policy")
    rng = np.random.default_rng(0)
    inputs = {
        rows: (
            random_observations(manifest.observation_space, rows, rng),
            random_masks(space.n, rows, rng),
        )
        for rows in batches
    }
    references: dict[int, Any] = {}
    found: list[dict[str, Any]] = []
    before = torch.get_num_threads()
    try:
        for variant in variants(artifact, device, threads):
            if variant.torch_threads is not None:
                torch.set_num_threads(variant.torch_threads)
            shared = None if variant.per_batch else variant.build(0)
            for rows, (observations, masks) in inputs.items():
                runtime = variant.build(rows) if shared is None else shared
                call = functools.partial(runtime.infer, observations, masks)
                seconds = median_seconds(call, calls, warmup)
                result = references.setdefault(rows, call())
                found.append(
                    {
                        "batch": rows,
                        "variant": variant.name,
                        "label": variant.label,
                        "gpu": variant.gpu,
                        "ran_on": _ran_on(runtime, rows),
                        "us_per_call": seconds * 1e6,
                        "actions_rate": rows / seconds,
                        "max_abs_diff": _difference(call(), result),
                    }
                )
                say(
                    f"in process: batch {rows:>5} {variant.name:<22} "
                    f"{seconds * 1e6:>10.1f} us/call  {rows / seconds:>14,.0f} actions/s"
                )
    finally:
        torch.set_num_threads(before)
    return sorted(found, key=lambda row: int(row["batch"]))


def _difference(result: Any, reference: Any) -> float:
    pairs = [
        (result.probabilities, reference.probabilities),
        (result.values, reference.values),
    ]
    return max(
        float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max(initial=0.0))
        for a, b in pairs
    )


# --- Through the server -------------------------------------------------------------------------


def _check_runtime(target: str, runtime: str) -> None:
    with Client(target, timeout=10.0) as client:
        serving = client.get_policy(POLICY).runtime
    if serving != runtime:
        raise AgentserveError(f"the server serves {POLICY} with {serving}, not {runtime}")


def measure_serving(
    chosen: Sequence[Served], settings: Settings, say: Callable[[str], None] = print
) -> list[dict[str, Any]]:
    """Every server started once; each repeat and scenario measures them all, the order rotating
    from repeat to repeat (runner.measure: client processes, the server's CPU time)."""
    with contextlib.ExitStack() as stack:
        targets: dict[str, Server] = {}
        sizes: set[int] = set()
        for served in chosen:
            say(f"starting agentserve serve {shlex.join(served.args())} ...")
            local = stack.enter_context(LocalServer(None, extra_args=served.args()))
            sizes.add(policy_shape(local.target)[0])
            _check_runtime(local.target, served.runtime)
            targets[served.name] = Server(served.name, local.target, local.pid)
        (size,) = sizes
        pool = stack.enter_context(WorkerPool(max(s.processes for s in SCENARIOS)))
        return measure_rotating(pool, targets, SCENARIOS, settings, size, say, _rate)


def _rate(run: Mapping[str, Any]) -> str:
    return f"{run['actions_rate']:>14,.0f} actions/s  p50 {run['p50_ms']:.3f} ms"


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, dict[str, Any]]:
    """Per scenario, per server: the medians over the repeats (stats.median_of)."""
    grouped: dict[str, dict[str, list[Mapping[str, Any]]]] = {}
    for run in runs:
        grouped.setdefault(str(run["scenario"]), {}).setdefault(str(run["target"]), []).append(run)
    return {
        scenario: {name: stats.median_of(mine) for name, mine in entry.items()}
        for scenario, entry in grouped.items()
    }


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


# --- The run ------------------------------------------------------------------------------------


def run_gpu(
    settings: Settings,
    out: Path,
    command_text: str,
    device: str = DEVICE,
    threads: Sequence[int] | None = None,
    calls: int = CALLS,
    warmup_calls: int = WARMUP_CALLS,
    say: Callable[[str], None] = print,
) -> dict[str, Any]:
    """Both parts on `device` (CPU runtimes at 1 thread and each of `threads`, default:
    `default_threads`, in-process rows timed over `calls` calls after `warmup_calls`); writes
    the results and the page after each part and returns the stored results."""
    from service.runtime.torch import CPU_BELOW

    started = time.monotonic()
    host = machine()
    host["gpu"] = device_info(device)
    threads = tuple(threads or default_threads(int(host["usable_cpus"])))
    chosen = servers(device, threads)
    say(
        f"GPU benchmark on {host['gpu']['name'] or device}: {len(chosen)} servers x "
        f"{len(SCENARIOS)} scenarios x {settings.repeats} repeats, CPU runtimes at 1 and "
        f"{_counts(threads)}; {host['usable_cpus']} CPUs"
    )
    data: dict[str, Any] = {
        **record(FORMAT, command_text, started, host),
        "settings": {
            **windows(settings),
            "device": device,
            "threads": list(threads),
            "batches": list(BATCHES),
            "calls": calls,
            "warmup_calls": warmup_calls,
            "cpu_below": CPU_BELOW,
        },
        "servers": [dataclasses.asdict(s) for s in chosen],
        "scenarios": [{"name": s.name, "title": s.title} for s in SCENARIOS],
        "in_process": measure_in_process(device, threads, BATCHES, calls, warmup_calls, say),
        "runs": [],
        "summary": {},
    }
    _store(out, data, started, say)
    data["runs"] = measure_serving(chosen, settings, say)
    data["summary"] = summarize(data["runs"])
    return _store(out, data, started, say)


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


def _store(
    out: Path, data: dict[str, Any], started: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """The verdicts of what `data` holds so far, then the results and the page."""
    judge(data)
    data["wall_seconds"] = time.monotonic() - started
    data["machine"]["load_average_after"] = list(os.getloadavg())
    path = write_json(out / RESULTS_FILE, data)
    page = write(out, data)
    say(f"wrote {path} and {page} in {data['wall_seconds']:.0f} s")
    return data


# --- The page -----------------------------------------------------------------------------------


def served_label(served: Mapping[str, Any]) -> str:
    if served["gpu"]:
        return f"torch on {served['device']} (its CPU copy: {_threads(int(served['threads']))})"
    runtime = "onnxruntime" if served["runtime"] == "onnx" else served["runtime"]
    return f"{runtime} on the CPU, {_threads(int(served['threads']))}"


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
        f"{_counts(list(dict.fromkeys([1, *settings['threads']])))}",
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
        f"≥ {stats.GPU_TARGET.bound:g}x. Batches under {settings['cpu_below']} rows run on the "
        "torch runtime's CPU copy even on a device (`cpu_below`): the in-process rows at batch 1 "
        "and 64 show why.",
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
