"""The GPU target of issue 5: `agentserve bench --gpu` (`make bench-gpu`).

On a machine with a CUDA device, in one run:

- inside one process (no gRPC): the median time of one inference of the bundled CartPole policy
  at batch 1, 64 and 4,096 for onnxruntime and torch on the CPU (1 thread and `threads`), torch
  on the device with its host<->device copies, the same with a CUDA graph captured for the
  batch, and torch on the device as the server runs it (batches under `cpu_below` rows stay on
  the CPU): the device wins at 4,096 rows and loses at one, hence `cpu_below`;
- through the server: one `agentserve serve` of the bundled repository per runtime (onnxruntime
  at its serving default of 1 thread and at `threads`, torch on the CPU at `threads`, torch on
  the device), driven in rotation by the benchmark's client processes with ActBatch of 4,096
  observations at 1 and 4 callers; the median actions/s over the repeats, the device's over the
  best CPU runtime's, and the verdict on the 5x target (stats.GPU_TARGET).

Writes OUT/serving-gpu.md and OUT/results/serving-gpu.json (after the in-process part too, so a
failed serving part keeps it); the verdicts and the page are agentserve/bench/gpu_report.py's.
`device` is a parameter throughout: the tests run the whole pipeline with "cpu" standing in for
the GPU.
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

from agentserve.bench import gpu_report, stats
from agentserve.bench.gpu_report import (
    BATCH,
    FORMAT,
    RESULTS_FILE,
    judge,
    thread_count,
    thread_counts,
)
from agentserve.bench.load import WorkerPool
from agentserve.bench.runner import (
    POLICY,
    Server,
    Settings,
    command_line,
    machine,
    measure_rotating,
    policy_shape,
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

DEVICE = "cuda"
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
    at each of `threads`, and torch on `device` (`--runtime-threads`: the most threads)."""
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
    (`cpu_below`: onnxruntime below it; graphs up to `GRAPH_BATCH` rows)."""
    from service.runtime.onnx import OnnxRuntime
    from service.runtime.torch import CPU_BELOW, GRAPH_BATCH, TorchRuntime

    def onnx(count: int) -> Callable[[int], Any]:
        return lambda _: OnnxRuntime(artifact, count)

    counts = list(dict.fromkeys((1, *threads)))
    most = max(counts)
    on = f"torch on {device}"
    found = [
        Variant(f"onnx-t{n}", f"onnxruntime, {thread_count(n)}", False, None, onnx(n))
        for n in counts
    ]
    found += [
        Variant(
            f"torch-cpu-t{n}",
            f"torch on the CPU, {thread_count(n)}",
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
            f"{on} as served (under {CPU_BELOW} rows: onnxruntime on the CPU; CUDA graphs up "
            f"to {GRAPH_BATCH:,} rows)",
            True,
            most,
            lambda _: TorchRuntime(artifact, device),
        ),
    ]


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
        f"{thread_counts(threads)}; {host['usable_cpus']} CPUs"
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


def _store(
    out: Path, data: dict[str, Any], started: float, say: Callable[[str], None]
) -> dict[str, Any]:
    """The verdicts of what `data` holds so far, then the results and the page."""
    judge(data)
    data["wall_seconds"] = time.monotonic() - started
    data["machine"]["load_average_after"] = list(os.getloadavg())
    path = write_json(out / RESULTS_FILE, data)
    page = gpu_report.write(out, data)
    say(f"wrote {path} and {page} in {data['wall_seconds']:.0f} s")
    return data
