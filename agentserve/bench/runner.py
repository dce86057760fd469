"""Runs the serving benchmark: starts our server and the echo server, measures every scenario
against both in alternation, and stores the results and the page.

Both servers and the client processes are started once and kept for the whole run. For each
repeat and scenario the two servers are measured back to back, the first one alternating from
repeat to repeat, so slow drifts of the (shared) machine hit both alike; the page reports the
median of the repeats.

A reload scenario is measured against a second instance of our server, started only when such a
scenario is selected, on a private copy of the bundled repository that it scans every
WATCH_INTERVAL_S: in the middle of each repeat's measured window a new version of the benchmark
policy is published into that copy (`reload.ReloadRepository.publish`).
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
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import grpc

from agentserve.bench import report, stats
from agentserve.bench.echo import EchoServer
from agentserve.bench.load import Job, WorkerPool, WorkerResult, process_cpu_seconds
from agentserve.bench.reload import WATCH_INTERVAL_S, ReloadRepository
from agentserve.bench.scenarios import Scenario, select
from agentserve.client import Client
from agentserve.errors import AgentserveError, ConfigError
from agentserve.local_server import LocalServer

FORMAT = "agentserve.serving-benchmark/1"
RESULTS_FILE = Path("results") / "serving.json"
POLICY = "cartpole-dqn"
LEAD_S = 0.3
"""Seconds between handing out a measurement's jobs and the callers' start."""
RELOAD_MIN_SECONDS = 1.0
"""The shortest measured window of a reload scenario: the new version is published in its
middle and must reach the simulators (a scan every WATCH_INTERVAL_S, then a load) before it ends."""
SETTLE_TIMEOUT_S = 30.0
"""How long a reload repeat waits for the server to serve the latest published version."""


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
        reloads = [s.name for s in select(self.only) if s.reload]
        if reloads and self.seconds < RELOAD_MIN_SECONDS:
            raise ConfigError(
                f"{', '.join(reloads)} needs --seconds >= {RELOAD_MIN_SECONDS:g} (a new version "
                f"is published mid-window and must be picked up before its end), got "
                f"{self.seconds:g}; leave it out with --only"
            )


@dataclass(frozen=True)
class Server:
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


def _jobs(
    server: Server,
    scenario: Scenario,
    settings: Settings,
    seed: int,
    observation_size: int,
    start_at: float,
) -> list[Job]:
    return [
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


def _figures(
    results: list[WorkerResult],
    scenario: Scenario,
    settings: Settings,
    cpu_before: float | None,
    cpu_after: float | None,
) -> dict[str, Any]:
    server_cpu = None if cpu_before is None or cpu_after is None else cpu_after - cpu_before
    return stats.measurement(
        (x for r in results for x in r.latencies),
        settings.seconds,
        scenario.batch_size,
        server_cpu,
        sum(r.cpu_seconds for r in results),
    )


def measure(
    pool: WorkerPool,
    server: Server,
    scenario: Scenario,
    settings: Settings,
    seed: int,
    observation_size: int,
) -> dict[str, Any]:
    """One measurement: the scenario's client processes against one server, the server's CPU
    time sampled at the bounds of the measured window."""
    start_at = time.time() + LEAD_S
    jobs = _jobs(server, scenario, settings, seed, observation_size, start_at)
    pool.submit(jobs)
    _sleep_until(start_at + settings.warmup)
    cpu_before = process_cpu_seconds(server.pid)
    _sleep_until(start_at + settings.warmup + settings.seconds)
    cpu_after = process_cpu_seconds(server.pid)
    results = pool.collect(len(jobs), timeout=60.0)
    return _figures(results, scenario, settings, cpu_before, cpu_after)


def measure_rotating(
    pool: WorkerPool,
    servers: Mapping[str, Server],
    scenarios: Sequence[Scenario],
    settings: Settings,
    observation_size: int,
    say: Callable[[str], None],
    describe: Callable[[dict[str, Any]], str],
) -> list[dict[str, Any]]:
    """For each repeat and scenario, one `measure` of every server, the order rotating from
    scenario to scenario and repeat to repeat; the stored runs (scenario, target, repeat and the
    figures), each said as it ends, its figures in `describe`'s words."""
    names = list(servers)
    total = settings.repeats * len(scenarios) * len(names)
    runs: list[dict[str, Any]] = []
    for repeat in range(settings.repeats):
        for index, scenario in enumerate(scenarios):
            shift = (repeat + index) % len(names)
            for name in names[shift:] + names[:shift]:
                run = measure(
                    pool, servers[name], scenario, settings, 1000 * repeat, observation_size
                )
                runs.append({"scenario": scenario.name, "target": name, "repeat": repeat, **run})
                say(
                    f"[{len(runs)}/{total}] repeat {repeat + 1} {scenario.name:<12} {name:<14} "
                    + describe(run)
                )
    return runs


def _wait_serving(target: str, version: int, timeout: float) -> None:
    """Waits until our server's default version of POLICY is `version`."""
    deadline = time.monotonic() + timeout
    with Client(target, timeout=10.0) as client:
        while (serving := client.get_policy(POLICY).default_version) != version:
            if time.monotonic() > deadline:
                raise AgentserveError(
                    f"our reload server still serves {POLICY} version {serving}, not the "
                    f"published version {version}, after {timeout:g} s"
                )
            time.sleep(0.05)


def measure_reload(
    pool: WorkerPool,
    server: Server,
    repo: ReloadRepository,
    scenario: Scenario,
    settings: Settings,
    seed: int,
    observation_size: int,
) -> dict[str, Any]:
    """One measurement of a reload scenario: `measure`'s, with a new version of POLICY published
    into `repo` (which `server` watches) in the middle of the measured window, and the reload
    figures (`stats.reload_measurement`) of what the simulators saw under the key "reload"."""
    _wait_serving(server.target, repo.latest(POLICY), SETTLE_TIMEOUT_S)
    start_at = time.time() + LEAD_S
    begin = start_at + settings.warmup
    jobs = _jobs(server, scenario, settings, seed, observation_size, start_at)
    pool.submit(jobs)
    _sleep_until(begin)
    cpu_before = process_cpu_seconds(server.pid)
    _sleep_until(begin + settings.seconds / 2)
    new_version = repo.publish(POLICY)
    published_at = time.time() - begin
    _sleep_until(begin + settings.seconds)
    cpu_after = process_cpu_seconds(server.pid)
    results = pool.collect(len(jobs), timeout=60.0)
    run = _figures(results, scenario, settings, cpu_before, cpu_after)
    simulators = [asdict(log) for r in results for log in r.simulators]
    run["reload"] = {
        **stats.reload_measurement(
            simulators,
            new_version,
            published_at,
            [x for r in results for x in r.latencies],
            [t for r in results for t in r.completions],
            settings.seconds,
        ),
        "simulator_logs": simulators,
    }
    return run


def _progress_line(step: str, scenario: Scenario, target: str, run: dict[str, Any]) -> str:
    line = (
        f"{step} {scenario.name:<11} {target:<4} {run['rate']:>9,.0f} {scenario.rate_unit}"
        f"  p50 {run['p50_ms']:.3f} ms  p99 {run['p99_ms']:.3f} ms"
    )
    if scenario.batch_size > 1:
        line += f"  {run['actions_rate']:,.0f} actions/s"
    if run["server_cores"] is not None:
        line += f"  server CPU {run['server_cores']:.2f} cores"
    reload = run.get("reload")
    if reload:
        line += (
            f"\n    reload to v{reload['new_version']}: {reload['failed_calls']} failed calls, "
            f"versions {'never backwards' if reload['monotonic'] else 'WENT BACKWARDS'}, "
            f"{reload['on_new_version']}/{reload['simulators']} simulators on the new version, "
            f"first after {_ms(reload['first_new_ms'])}, all after {_ms(reload['all_new_ms'])}, "
            f"p99 {_ms(reload['p99_before_ms'])} before / {_ms(reload['p99_after_ms'])} after"
        )
    return line


def _ms(value: float | None) -> str:
    return "-" if value is None else f"{value:.1f} ms"


def policy_shape(target: str) -> tuple[int, int]:
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
    plan = [
        (scenario, [stats.OURS] if scenario.ours_only else list(stats.TARGETS_ORDER))
        for scenario in scenarios
    ]
    per_repeat = sum(len(targets) for _, targets in plan)
    say(
        f"serving benchmark: {len(scenarios)} scenarios, {per_repeat} measurements x "
        f"{settings.repeats} repeats, {settings.warmup:g} s warm-up + {settings.seconds:g} s each; "
        f"{host['usable_cpus']} CPUs, load average {host['load_average_before'][0]:.2f}"
    )
    runs: list[dict[str, Any]] = []
    with contextlib.ExitStack() as stack:
        servers: dict[str, Server] = {}
        shapes: list[tuple[int, int]] = []
        compared = any(not s.ours_only for s in scenarios)
        if compared:
            say("starting our server (agentserve serve, bundled repository) ...")
            ours = stack.enter_context(LocalServer(None))
            shapes.append(policy_shape(ours.target))
            servers[stats.OURS] = Server(stats.OURS, ours.target, ours.pid)
        repo: ReloadRepository | None = None
        reloader: Server | None = None
        if any(s.reload for s in scenarios):
            repo = stack.enter_context(ReloadRepository())
            say(
                f"starting our reload server (agentserve serve --watch-interval "
                f"{WATCH_INTERVAL_S:g}, on a copy of the bundled repository) ..."
            )
            extra = ("--watch-interval", f"{WATCH_INTERVAL_S:g}")
            local = stack.enter_context(LocalServer(repo.root, extra_args=extra))
            reloader = Server(stats.OURS, local.target, local.pid)
            shapes.append(policy_shape(reloader.target))
        observation_size, actions = shapes[0]
        if compared:
            say("starting the echo server (python -m agentserve.bench.echo) ...")
            echo = stack.enter_context(
                EchoServer(actions=actions, observation_size=observation_size)
            )
            servers[stats.ECHO] = Server(stats.ECHO, echo.target, echo.pid)
        pool = stack.enter_context(WorkerPool(max(s.processes for s in scenarios)))
        client_processes = pool.size
        total, done = per_repeat * settings.repeats, 0
        for repeat in range(settings.repeats):
            for index, (scenario, targets) in enumerate(plan):
                order = list(targets)
                if (repeat + index) % 2:
                    order.reverse()
                for name in order:
                    seed = 1000 * repeat
                    if scenario.reload and repo is not None and reloader is not None:
                        run = measure_reload(
                            pool, reloader, repo, scenario, settings, seed, observation_size
                        )
                    else:
                        run = measure(
                            pool, servers[name], scenario, settings, seed, observation_size
                        )
                    done += 1
                    step = f"[{done}/{total}] repeat {repeat + 1}"
                    say(_progress_line(step, scenario, name, run))
                    key = {"scenario": scenario.name, "target": name, "repeat": repeat}
                    runs.append({**key, **run})
    host["load_average_after"] = list(os.getloadavg())
    summary = stats.summarize(runs)
    settings_stored: dict[str, Any] = {
        **asdict(settings),
        "only": list(settings.only),
        "policy": POLICY,
    }
    if any(s.reload for s in scenarios):
        settings_stored["watch_interval_s"] = WATCH_INTERVAL_S
        settings_stored["reload_window_s"] = stats.RELOAD_WINDOW_S
    data: dict[str, Any] = {
        **record(FORMAT, command, started, host),
        "settings": settings_stored,
        "client_processes": client_processes,
        "scenarios": [
            {**asdict(s), "title": s.title, "rate_unit": s.rate_unit, "ours_only": s.ours_only}
            for s in scenarios
        ],
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
    return write_json(out / RESULTS_FILE, data)


def load_results(out: Path) -> dict[str, Any]:
    return read_json(out / RESULTS_FILE, FORMAT)


def write_json(path: Path, data: Mapping[str, Any]) -> Path:
    """`data` as JSON at `path`, replaced atomically (a benchmark's stored results)."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    tmp.write_text(json.dumps(data, indent=2, sort_keys=False) + "\n", encoding="utf-8")
    os.replace(tmp, path)
    return path


def read_json(path: Path, format_name: str) -> dict[str, Any]:
    """Stored results of format `format_name`; AgentserveError names what is wrong."""
    try:
        data: dict[str, Any] = json.loads(path.read_text(encoding="utf-8"))
    except OSError as error:
        raise AgentserveError(f"cannot read {path}: {error.strerror}") from None
    except ValueError as error:
        raise AgentserveError(f"{path} is not JSON: {error}") from None
    if not isinstance(data, dict) or data.get("format") != format_name:
        raise AgentserveError(f"{path} is not a {format_name} file")
    return data


def record(format_name: str, command: str, started: float, host: dict[str, Any]) -> dict[str, Any]:
    """The fields every stored benchmark run begins with (`started`: its time.monotonic())."""
    return {
        "format": format_name,
        "date": datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds"),
        "command": command,
        "wall_seconds": time.monotonic() - started,
        "machine": host,
    }


def windows(settings: Settings) -> dict[str, Any]:
    """The stored settings of a run: its measured windows, warm-up, repeats and policy."""
    return {
        "seconds": settings.seconds,
        "warmup": settings.warmup,
        "repeats": settings.repeats,
        "policy": POLICY,
    }


def command_line(
    settings: Settings, out: Path, defaults: Settings | None = None, mode: str | None = None
) -> str:
    """The canonical `agentserve bench` command of these settings (defaults left out); `mode`:
    "breakdown" or "gpu" for `--breakdown` or `--gpu`, whose scenarios are their own."""
    import shlex

    base = defaults or Settings()
    words = ["agentserve", "bench", *([f"--{mode}"] if mode else [])]
    if settings.seconds != base.seconds:
        words += ["--seconds", f"{settings.seconds:g}"]
    if settings.warmup != base.warmup:
        words += ["--warmup", f"{settings.warmup:g}"]
    if settings.repeats != base.repeats:
        words += ["--repeats", str(settings.repeats)]
    if settings.only and not mode:
        words += ["--only", *settings.only]
    if out != Path("docs"):
        words += ["--out", str(out)]
    return shlex.join(words)
