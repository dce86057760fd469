"""Where the latency of one Act call goes: `agentserve bench --breakdown`.

The bare echo server, our server cut short after each stage of its Act path
(agentserve.bench.stages: `answer`, `validate`, `infer`) and the whole server are measured side
by side with one closed-loop caller (unary Act, and one ActStream simulator), in alternation,
the order rotating from repeat to repeat. Each stage's p50 is reported with its ratio to the echo
server's and what it adds to the stage before it. Writes OUT/serving-breakdown.md and
OUT/results/serving-breakdown.json.
"""

from __future__ import annotations

import contextlib
import os
import statistics
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from agentserve.bench import report, stats
from agentserve.bench.echo import EchoServer
from agentserve.bench.load import WorkerPool
from agentserve.bench.runner import (
    Server,
    Settings,
    machine,
    measure_rotating,
    policy_shape,
    read_json,
    record,
    windows,
    write_json,
)
from agentserve.bench.scenarios import select
from agentserve.bench.stages import ANSWER, INFER, VALIDATE, StageServer
from agentserve.errors import AgentserveError
from agentserve.local_server import LocalServer

FORMAT = "agentserve.serving-breakdown/1"
RESULTS_FILE = Path("results") / "serving-breakdown.json"
PAGE = "serving-breakdown.md"
SCENARIOS = ("act-c1", "stream-s1")
STAGES = (
    (stats.ECHO, "bare grpc.aio echo server (the floor)"),
    (ANSWER, "our server, Act answers a stored response (gRPC wiring, method metrics)"),
    (VALIDATE, "+ policy lookup and request validation (`ServedPolicy.prepare`)"),
    (INFER, "+ the runtime's inference of the request alone (one onnxruntime run)"),
    (stats.OURS, "+ micro-batcher, action choice, decision metrics, response"),
)
"""(target, what it runs), cheapest first."""


def run_breakdown(
    settings: Settings, out: Path, command: str, say: Callable[[str], None] = print
) -> dict[str, Any]:
    """Measures every stage in every breakdown scenario and writes the results and the page."""
    scenarios = select(SCENARIOS)
    started = time.monotonic()
    host = machine()
    with contextlib.ExitStack() as stack:
        say("starting our server, the stage servers and the echo server ...")
        ours = stack.enter_context(LocalServer(None))
        observation_size, actions = policy_shape(ours.target)
        servers = {stats.OURS: Server(stats.OURS, ours.target, ours.pid)}
        for stage in (ANSWER, VALIDATE, INFER):
            child = stack.enter_context(StageServer(stage))
            servers[stage] = Server(stage, child.target, child.pid)
        echo = stack.enter_context(EchoServer(actions=actions, observation_size=observation_size))
        servers[stats.ECHO] = Server(stats.ECHO, echo.target, echo.pid)
        pool = stack.enter_context(WorkerPool(1))
        ordered = {name: servers[name] for name, _ in STAGES}
        runs = measure_rotating(pool, ordered, scenarios, settings, observation_size, say, _rate)
    host["load_average_after"] = list(os.getloadavg())
    data: dict[str, Any] = {
        **record(FORMAT, command, started, host),
        "settings": windows(settings),
        "scenarios": [{"name": s.name, "title": s.title} for s in scenarios],
        "runs": runs,
        "summary": summarize(runs),
    }
    path = write_json(out / RESULTS_FILE, data)
    page = write(out, data)
    say(f"wrote {path} and {page} in {data['wall_seconds']:.0f} s")
    return data


def _rate(run: Mapping[str, Any]) -> str:
    return f"p50 {run['p50_ms']:.3f} ms  {run['rate']:,.0f}/s"


def summarize(runs: Sequence[Mapping[str, Any]]) -> dict[str, list[dict[str, Any]]]:
    """Per scenario, per stage (cheapest first): median p50, rate and server CPU per call over
    the repeats, the p50 ratio to the echo server's and the p50 added to the previous stage."""
    summary: dict[str, list[dict[str, Any]]] = {}
    for scenario in dict.fromkeys(r["scenario"] for r in runs):
        rows: list[dict[str, Any]] = []
        for name, _ in STAGES:
            mine = [r for r in runs if r["scenario"] == scenario and r["target"] == name]
            if not mine:
                raise AgentserveError(f"no {name} runs of {scenario} in the results")
            p50 = statistics.median(float(r["p50_ms"]) for r in mine)
            cpu = [r["server_cpu_per_call_us"] for r in mine]
            rows.append(
                {
                    "target": name,
                    "p50_ms": p50,
                    "p50_ratio": p50 / rows[0]["p50_ms"] if rows else 1.0,
                    "added_us": (p50 - rows[-1]["p50_ms"]) * 1e3 if rows else None,
                    "rate": statistics.median(float(r["rate"]) for r in mine),
                    "server_cpu_per_call_us": (
                        None if None in cpu else statistics.median(float(c) for c in cpu)
                    ),
                }
            )
        summary[scenario] = rows
    return summary


def render(data: Mapping[str, Any]) -> str:
    settings = data["settings"]
    what = dict(STAGES)
    lines = [
        "# Where the latency of an Act call goes",
        "",
        f"Written by `{data['command']}` on {data['date'][:10]} from "
        f"[{RESULTS_FILE.as_posix()}]({RESULTS_FILE.as_posix()}); do not edit by hand.",
        "",
        "One closed-loop caller in its own process (the caller of `agentserve bench`'s act-c1 "
        f"and stream-s1) against {len(STAGES)} servers, measured in alternation (order "
        f"rotating each repeat): {settings['warmup']:g} s warm-up and {settings['seconds']:g} s "
        f"measured per run, median of {settings['repeats']} repeats, policy "
        f"`{settings['policy']}`. The stage servers are `agentserve serve` with the decision "
        "behind `Act` cut short (`agentserve.bench.stages`); everything else of the server runs.",
        "",
    ]
    titles = {s["name"]: s["title"] for s in data["scenarios"]}
    units = {s.name: s.rate_unit for s in select(SCENARIOS)}
    for scenario, rows in data["summary"].items():
        lines += [f"## {titles.get(scenario, scenario)}", ""]
        table = [
            [
                f"`{row['target']}`: {what.get(row['target'], '')}",
                report.fmt_ms(row["p50_ms"]),
                report.fmt_ratio(row["p50_ratio"]),
                "" if row["added_us"] is None else f"{row['added_us']:+.0f}",
                report.fmt(row["rate"]),
                report.fmt(row["server_cpu_per_call_us"]),
            ]
            for row in rows
        ]
        unit = units.get(scenario, "calls/s")
        header = ["server", "p50 ms", "p50 / echo", "added µs", unit, "server CPU µs/call"]
        lines += [*report.table(header, table), ""]
    how = "the servers were measured in alternation, the order rotating from repeat to repeat"
    lines += ["## Machine", "", *report.machine_lines(data, how), ""]
    return "\n".join(lines)


def load_results(out: Path) -> dict[str, Any]:
    return read_json(out / RESULTS_FILE, FORMAT)


def write(out: Path, data: Mapping[str, Any]) -> Path:
    path = out / PAGE
    path.write_text(render(data), encoding="utf-8")
    return path
