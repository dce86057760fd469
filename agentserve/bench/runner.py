"""Runs the serving benchmark: starts our server and the echo server, measures every scenario
against both in alternation, and stores the results and the page.

Both servers and the client processes are started once and kept for the whole run. For each
repeat and scenario the two servers are measured back to back, the first one alternating from
repeat to repeat, so slow drifts of the (shared) machine hit both alike; the page reports the
median of the repeats.
"""

from __future__ import annotations

import contextlib
import datetime
import importlib.metadata
import json
import math
import os
import platform
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from agentserve.bench import report, stats
from agentserve.bench.echo import EchoServer
from agentserve.bench.load import Job, WorkerPool, process_cpu_seconds
from agentserve.bench.scenarios import Scenario, select
from agentserve.client import Client
from agentserve.errors import AgentserveError, ConfigError
from agentserve.local_server import LocalServer

FORMAT = "agentserve.serving-benchmark/1"
RESULTS_FILE = Path("results") / "serving.json"
POLICY = "cartpole-dqn"
LEAD_S = 0.3
"""Seconds between handing out a measurement's jobs and the callers' start."""


@dataclass(frozen=True)
class Settings:
    seconds: float = 5.0
    """Measured seconds per scenario, target and repeat."""
    warmup: float = 1.0
    """Seconds of load before the measured window."""
    repeats: int = 3
    only: tuple[str, ...] = ()
    """Scenario names to run (empty: all)."""

    def __post_init__(self) -> None:
        if not (self.seconds > 0 and math.isfinite(self.seconds)):
            raise ConfigError(f"--seconds must be a positive number, got {self.seconds}")
        if not (self.warmup >= 0 and math.isfinite(self.warmup)):
            raise ConfigError(f"--warmup must be >= 0, got {self.warmup}")
        if self.repeats < 1:
            raise ConfigError(f"--repeats must be >= 1, got {self.repeats}")


@dataclass(frozen=True)
class _Server:
    name: str
    target: str
    pid: int


def machine() -> dict[str, Any]:
    """What the numbers were measured on."""
    model = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text(encoding="utf-8").splitlines():
            if line.startswith("model name"):
                model = line.split(":", 1)[1].strip()
                break
    affinity = getattr(os, "sched_getaffinity", None)
    versions: dict[str, str | None] = {}
    for package in ("grpcio", "protobuf", "numpy", "onnxruntime"):
        try:
            versions[package] = importlib.metadata.version(package)
        except importlib.metadata.PackageNotFoundError:
            versions[package] = None
    return {
        "cpu": model,
        "logical_cpus": os.cpu_count(),
        "usable_cpus": len(affinity(0)) if affinity is not None else os.cpu_count(),
        "platform": platform.platform(),
        "python": f"{platform.python_implementation()} {platform.python_version()}",
        "grpc_runtime": grpc.__version__,
        "packages": versions,
        "load_average_before": list(os.getloadavg()),
    }


def _sleep_until(wall: float) -> None:
    while (left := wall - time.time()) > 0:
        time.sleep(left)


def measure(
    pool: WorkerPool,
    server: _Server,
    scenario: Scenario,
    settings: Settings,
    seed: int,
    observation_size: int,
) -> dict[str, Any]:
    """One measurement: the scenario's client processes against one server, the server's CPU
    time sampled at the bounds of the measured window."""
    start_at = time.time() + LEAD_S
    jobs = [
        Job(
            target=server.target,
            scenario=scenario,
            callers=callers,
            policy=POLICY,
            observation_size=observation_size,
            start_at=start_at,
            warmup=settings.warmup,
            seconds=settings.seconds,
            seed=seed + i,
        )
        for i, callers in enumerate(scenario.split())
    ]
    pool.submit(jobs)
    _sleep_until(start_at + settings.warmup)
    cpu_before = process_cpu_seconds(server.pid)
    _sleep_until(start_at + settings.warmup + settings.seconds)
    cpu_after = process_cpu_seconds(server.pid)
    results = pool.collect(len(jobs), timeout=60.0)
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return stats.measurement(
        (x for r in results for x in r.latencies),
        settings.seconds,
        scenario.batch_size,
        server_cpu,
        sum(r.cpu_seconds for r in results),
    )


def _progress_line(step: str, scenario: Scenario, target: str, run: dict[str, Any]) -> str:
    line = (
        f"{step} {scenario.name:<11} {target:<4} {run['rate']:>9,.0f} {scenario.rate_unit}"
        f"  p50 {run['p50_ms']:.3f} ms  p99 {run['p99_ms']:.3f} ms"
    )
    if scenario.batch_size > 1:
        line += f"  {run['actions_rate']:,.0f} actions/s"
    if run["server_cores"] is not None:
        line += f"  server CPU {run['server_cores']:.2f} cores"
    return line


def _policy_shape(target: str) -> tuple[int, int]:
    """Observation size and number of actions of POLICY on our server; errors if unsuitable."""
    with Client(target, timeout=10.0) as client:
        client.wait_ready(30.0)
        try:
            info = client.get_policy(POLICY)
        except AgentserveError as error:
            raise AgentserveError(f"our server does not serve {POLICY}: {error}") from None
    if info.action_space.get("type") != "discrete":
        raise AgentserveError(f"{POLICY} is not a discrete policy")
    return math.prod(info.observation_shape), int(info.action_space["n"])


def run_benchmark(
    settings: Settings, out: Path, command: str, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measures every selected scenario, writes OUT/results/serving.json and
    OUT/serving-benchmark.md, and returns the stored results."""
    scenarios = select(settings.only)
    started = time.monotonic()
    host = machine()
    say(
        f"serving benchmark: {len(scenarios)} scenarios x 2 servers x {settings.repeats} "
        f"repeats, {settings.warmup:g} s warm-up + {settings.seconds:g} s each; "
        f"{host['usable_cpus']} CPUs, load average {host['load_average_before'][0]:.2f}"
    )
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        say("starting our server (agentserve serve, bundled repository) ...")
        ours = stack.enter_context(LocalServer(None))
        observation_size, actions = _policy_shape(ours.target)
        say("starting the echo server (python -m agentserve.bench.echo) ...")
        echo = stack.enter_context(EchoServer(actions=actions, observation_size=observation_size))
        pool = stack.enter_context(WorkerPool(max(s.processes for s in scenarios)))
        client_processes = pool.size
        servers = {
            stats.OURS: _Server(stats.OURS, ours.target, ours.pid),
            stats.ECHO: _Server(stats.ECHO, echo.target, echo.pid),
        }
        total, done = len(scenarios) * 2 * settings.repeats, 0
        for repeat in range(settings.repeats):
            for index, scenario in enumerate(scenarios):
                order = list(stats.TARGETS_ORDER)
                if (repeat + index) % 2:
                    order.reverse()
                for name in order:
                    run = measure(
                        pool, servers[name], scenario, settings, 1000 * repeat, observation_size
                    )
                    done += 1
                    step = f"[{done}/{total}] repeat {repeat + 1}"
                    say(_progress_line(step, scenario, name, run))
                    key = {"scenario": scenario.name, "target": name, "repeat": repeat}
                    runs.append({**key, **run})
    host["load_average_after"] = list(os.getloadavg())
    summary = stats.summarize(runs)
    data: dict[str, Any] = {
        "format": FORMAT,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "wall_seconds": time.monotonic() - started,
        "machine": host,
        "settings": {**asdict(settings), "only": list(settings.only), "policy": POLICY},
        "client_processes": client_processes,
        "scenarios": [{**asdict(s), "title": s.title, "rate_unit": s.rate_unit} for s in scenarios],
        "runs": runs,
        "summary": summary,
        "verdicts": stats.verdicts(summary),
    }
    write_results(out, data)
    page = report.write(out, data)
    say(f"wrote {out / RESULTS_FILE} and {page} in {data['wall_seconds']:.0f} s")
    return data


def write_results(out: Path, data: dict[str, Any]) -> Path:
    """OUT/results/serving.json, replaced atomically."""
    path = out / RESULTS_FILE
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def load_results(out: Path) -> dict[str, Any]:
    path = out / RESULTS_FILE
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AgentserveError(f"cannot read {path}: {error.strerror}") from None
    if data.get("format") != FORMAT:
        raise AgentserveError(f"{path} is not a {FORMAT} file")
    return data


def command_line(settings: Settings, out: Path, defaults: Settings | None = None) -> str:
    """The canonical `agentserve bench` command of these settings (defaults left out)."""
    import shlex

    base = defaults or Settings()
    words = ["agentserve", "bench"]
    if settings.seconds != base.seconds:
        words += ["--seconds", f"{settings.seconds:g}"]
    if settings.warmup != base.warmup:
        words += ["--warmup", f"{settings.warmup:g}"]
    if settings.repeats != base.repeats:
        words += ["--repeats", str(settings.repeats)]
    if settings.only:
        words += ["--only", *settings.only]
    if out != Path("docs"):
        words += ["--out", str(out)]
    return shlex.join(words)
