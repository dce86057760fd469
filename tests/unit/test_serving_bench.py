"""The serving benchmark (`agentserve bench`): percentiles, medians, ratios and verdicts, the
scenarios, the page rendered from stored results, the echo server and the load generator
against it, and a very short end-to-end run against both servers; the hot-reload scenario's
accounting (failed calls, versions that never go backwards, pick-up), its page with and without
it, how it publishes a version, and a short run of it."""

from __future__ import annotations

import asyncio
import json
import time
from dataclasses import asdict
from pathlib import Path
from typing import Any

import grpc
import numpy as np
import pytest

from agentserve.bench import report, stats
from agentserve.bench.echo import GRACE_S, MAX_CONNECTION_AGE_S, MAX_MESSAGE_BYTES, EchoServer
from agentserve.bench.load import (
    MAX_ERRORS_KEPT,
    Job,
    LoadError,
    SimulatorLog,
    WorkerPool,
    process_cpu_seconds,
    run_job,
)
from agentserve.bench.reload import (
    WATCH_INTERVAL_S,
    ReloadRepository,
    publish_version,
    versions,
)
from agentserve.bench.runner import RESULTS_FILE, Settings, command_line
from agentserve.bench.scenarios import SCENARIOS, Scenario, select
from agentserve.cli import build_parser, main
from agentserve.errors import AgentserveError, ConfigError
from agentserve.v1 import agent_pb2, agent_pb2_grpc

# --- Statistics -------------------------------------------------------------------------------


@pytest.mark.parametrize("q", [0, 1, 25, 50, 90, 99, 99.9, 100])
def test_percentile_matches_numpys_linear_method(q: float) -> None:
    values = sorted(np.random.default_rng(0).exponential(size=1001).tolist())
    assert stats.percentile(values, q) == pytest.approx(np.percentile(values, q))


def test_percentile_edge_cases() -> None:
    assert stats.percentile([3.0], 99) == 3.0
    assert stats.percentile([1.0, 2.0], 50) == 1.5
    with pytest.raises(AgentserveError, match="no values"):
        stats.percentile([], 50)
    with pytest.raises(AgentserveError, match="within"):
        stats.percentile([1.0], 101)


def test_measurement_rates_latencies_and_cpu_per_call() -> None:
    latencies = [0.001] * 90 + [0.002] * 10
    run = stats.measurement(latencies, 2.0, 64, server_cpu_s=0.5, client_cpu_s=0.25)
    assert run["calls"] == 100
    assert run["rate"] == pytest.approx(50.0)
    assert run["actions_rate"] == pytest.approx(3200.0)
    assert run["p50_ms"] == pytest.approx(1.0)
    assert run["p99_ms"] == pytest.approx(2.0)
    assert run["mean_ms"] == pytest.approx(1.1)
    assert run["server_cores"] == pytest.approx(0.25)
    assert run["server_cpu_per_call_us"] == pytest.approx(5000.0)
    assert run["client_cpu_per_call_us"] == pytest.approx(2500.0)
    without = stats.measurement(latencies, 2.0, 1, server_cpu_s=None, client_cpu_s=0.0)
    assert without["server_cores"] is None and without["server_cpu_per_call_us"] is None
    with pytest.raises(AgentserveError, match="no call completed"):
        stats.measurement([], 1.0, 1, None, 0.0)


def _run(scenario: str, target: str, rate: float, p50: float, batch: int = 1) -> dict[str, Any]:
    return {
        "scenario": scenario,
        "target": target,
        "rate": rate,
        "actions_rate": rate * batch,
        "p50_ms": p50,
        "p90_ms": p50 * 2,
        "p99_ms": p50 * 3,
        "mean_ms": p50,
        "server_cores": 1.0,
        "server_cpu_per_call_us": 1e6 / rate,
        "client_cpu_per_call_us": 10.0,
    }


def test_summary_takes_medians_over_repeats_and_ratios_ours_over_echo() -> None:
    runs = [
        _run("act-c32", "ours", 900.0, 2.0),
        _run("act-c32", "echo", 1000.0, 1.0),
        _run("act-c32", "ours", 1000.0, 3.0),
        _run("act-c32", "echo", 1200.0, 1.0),
        _run("act-c32", "ours", 100.0, 9.0),
        _run("act-c32", "echo", 1100.0, 2.0),
    ]
    entry = stats.summarize(runs)["act-c32"]
    assert entry["ours"]["rate"] == 900.0
    assert entry["ours"]["rate_min"] == 100.0 and entry["ours"]["rate_max"] == 1000.0
    assert entry["echo"]["rate"] == 1100.0
    assert entry["ratio"]["rate"] == pytest.approx(900 / 1100)
    assert entry["ratio"]["p50_ms"] == pytest.approx(3.0)
    assert stats.ratio(1.0, 0.0) is None and stats.ratio(None, 1.0) is None


def test_verdicts_pass_fail_and_not_measured() -> None:
    runs = [
        _run("act-c32", "ours", 950.0, 1.0),
        _run("act-c32", "echo", 1000.0, 1.0),
        _run("act-c1", "ours", 100.0, 1.2),
        _run("act-c1", "echo", 120.0, 1.0),
        _run("batch64-c1", "ours", 2000.0, 1.0, batch=64),
        _run("batch64-c1", "echo", 3000.0, 1.0, batch=64),
        _run("batch64-c4", "ours", 1000.0, 1.0, batch=64),
        _run("batch64-c4", "echo", 3000.0, 1.0, batch=64),
    ]
    found = {v["label"]: v for v in stats.verdicts(stats.summarize(runs))}
    act = found["Unary Act throughput"]
    assert act["passed"] is True and act["measured"] == pytest.approx(0.95)
    latency = found["p50 latency at concurrency 1, unary Act"]
    assert latency["passed"] is False and latency["measured"] == pytest.approx(1.2)
    batch = found["ActBatch throughput"]  # the better scenario: 2000 calls/s x 64 = 128,000
    assert batch["passed"] is True and batch["scenario"] == "batch64-c1"
    assert batch["measured"] == pytest.approx(128_000.0)
    stream = found["ActStream message rate, 32 simulators"]
    assert stream["passed"] is None and stream["measured"] is None


def test_bounds_are_inclusive() -> None:
    target = stats.TARGETS[2]  # p50 ratio <= 1.15
    summary = {"act-c1": {"ours": None, "echo": None, "ratio": {"p50_ms": 1.15}}}
    assert stats.verdict(target, summary)["passed"] is True


# --- Scenarios and options --------------------------------------------------------------------


def test_scenarios_split_callers_over_processes_and_select_by_name() -> None:
    assert Scenario("x", "Act", callers=32, processes=2).split() == [16, 16]
    assert Scenario("x", "Act", callers=5, processes=2).split() == [3, 2]
    assert [s.name for s in select(["stream-s1", "act-c1"])] == ["act-c1", "stream-s1"]
    assert len(select([])) == len(SCENARIOS)
    with pytest.raises(ConfigError, match="unknown scenario nope"):
        select(["nope"])
    with pytest.raises(ConfigError, match="only ActBatch"):
        Scenario("x", "Act", callers=1, processes=1, batch_size=4)
    with pytest.raises(ConfigError, match="more client processes"):
        Scenario("x", "Act", callers=1, processes=2)


def test_settings_and_command_line() -> None:
    with pytest.raises(ConfigError, match="--repeats"):
        Settings(repeats=0)
    with pytest.raises(ConfigError, match="--seconds"):
        Settings(seconds=0)
    assert command_line(Settings(), Path("docs")) == "agentserve bench"
    settings = Settings(seconds=0.3, repeats=1, only=("act-c1",))
    assert command_line(settings, Path("/tmp/x")) == (
        "agentserve bench --seconds 0.3 --repeats 1 --only act-c1 --out /tmp/x"
    )
    args = build_parser().parse_args(["bench", "--only", "act-c1", "stream-s1", "--seconds", "2"])
    assert args.only == ["act-c1", "stream-s1"] and args.seconds == 2.0 and args.repeats == 3


def test_echo_server_uses_our_servers_limits() -> None:
    from service.server import MAX_MESSAGE_BYTES as OURS_MAX
    from service.server import ServerConfig

    config = ServerConfig(model_repo=Path("."))
    assert MAX_MESSAGE_BYTES == OURS_MAX
    assert config.max_connection_age == MAX_CONNECTION_AGE_S
    assert config.grace_seconds == GRACE_S


def test_process_cpu_seconds_of_a_missing_process_is_none() -> None:
    assert process_cpu_seconds(2**22 + 12345) is None


# --- Against the echo server ------------------------------------------------------------------


@pytest.fixture(scope="module")
def echo() -> Any:
    with EchoServer() as running:
        yield running


def _job(target: str, scenario: Scenario, seconds: float = 0.2) -> Job:
    return Job(
        target=target,
        scenario=scenario,
        callers=scenario.callers,
        policy="cartpole-dqn",
        observation_size=4,
        start_at=time.time() + 0.05,
        warmup=0.05,
        seconds=seconds,
        seed=0,
    )


@pytest.mark.parametrize("name", ["act-c1", "stream-s1", "batch64-c1"])
def test_load_generator_times_calls_against_the_echo_server(echo: EchoServer, name: str) -> None:
    scenario = select([name])[0]
    result = asyncio.run(run_job(_job(echo.target, scenario)))
    assert result.error is None
    assert len(result.latencies) > 10
    assert all(0 < x < 1 for x in result.latencies)


def test_a_wrongly_shaped_answer_is_an_error(echo: EchoServer) -> None:
    with EchoServer(observation_size=8) as other:  # answers 32 actions to 64 observations
        scenario = select(["batch64-c1"])[0]
        with pytest.raises(LoadError, match="answered with 32 discrete actions"):
            asyncio.run(run_job(_job(other.target, scenario)))


def test_worker_pool_reports_a_failed_job(echo: EchoServer) -> None:
    with EchoServer(observation_size=8) as other, WorkerPool(1) as pool:
        with pytest.raises(LoadError, match="ActBatch against"):
            pool.run([_job(other.target, select(["batch64-c1"])[0])], timeout=30)
        ok = pool.run([_job(echo.target, select(["act-c1"])[0])], timeout=30)
        assert ok[0].latencies


# --- End to end -------------------------------------------------------------------------------


def test_a_short_run_writes_the_page_and_the_results(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--seconds", "0.3", "--warmup", "0.1", "--repeats", "1"]
    argv += ["--only", "act-c1", "batch64-c4", "--out", str(tmp_path)]
    assert main(argv) == 0
    printed = capsys.readouterr().out
    assert "[1/4] repeat 1 act-c1" in printed and "wrote" in printed

    data = json.loads((tmp_path / RESULTS_FILE).read_text(encoding="utf-8"))
    assert data["command"].startswith("agentserve bench --seconds 0.3 --warmup 0.1")
    assert sorted((r["scenario"], r["target"]) for r in data["runs"]) == [
        ("act-c1", "echo"),
        ("act-c1", "ours"),
        ("batch64-c4", "echo"),
        ("batch64-c4", "ours"),
    ]
    assert all(r["calls"] > 0 and r["p50_ms"] > 0 for r in data["runs"])
    found = {v["label"]: v for v in data["verdicts"]}
    assert found["p50 latency at concurrency 1, unary Act"]["passed"] in (True, False)
    assert found["ActBatch throughput"]["scenario"] == "batch64-c4"
    assert found["Unary Act throughput"]["passed"] is None

    page = (tmp_path / report.PAGE).read_text(encoding="utf-8")
    assert "### `act-c1`: unary Act, concurrency 1" in page
    assert "### `batch64-c4`: ActBatch of 64 observations, concurrency 4" in page
    for row in ("| ours |", "| echo |", "| ours / echo |", "not measured", "actions/s"):
        assert row in page
    assert page == report.render(data)

    (tmp_path / report.PAGE).unlink()  # the page again from the stored results alone
    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / report.PAGE).read_text(encoding="utf-8") == page


def test_report_only_without_results_is_a_clear_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--report-only", "--out", str(tmp_path)]) == 2
    assert "cannot read" in capsys.readouterr().err


# --- Hot reload under load --------------------------------------------------------------------


def _simulator(*runs: tuple[int, float, int], failures: int = 0) -> dict[str, Any]:
    return {
        "versions": [{"version": v, "first_at": at, "answers": n} for v, at, n in runs],
        "failures": failures,
        "errors": [],
    }


def test_simulator_log_run_length_encodes_versions_and_keeps_a_few_errors() -> None:
    log = SimulatorLog()
    for version, at in [(1, 0.0), (1, 0.1), (2, 0.2), (2, 0.3), (2, 0.4), (1, 0.5)]:
        log.answer(version, at)
    assert [(r.version, r.first_at, r.answers) for r in log.versions] == [
        (1, 0.0, 2),
        (2, 0.2, 3),
        (1, 0.5, 1),
    ]
    for i in range(MAX_ERRORS_KEPT + 3):
        log.fail(float(i), "UNAVAILABLE: gone")
    assert log.failures == MAX_ERRORS_KEPT + 3 and len(log.errors) == MAX_ERRORS_KEPT
    assert log.errors[1] == "+1.000 s: UNAVAILABLE: gone"


def test_version_accounting_counts_failures_backwards_and_pick_up() -> None:
    simulators = [
        _simulator((1, -1.0, 50), (2, 2.1, 40)),
        _simulator((1, -1.0, 50), (2, 2.3, 30), failures=2),
        _simulator((1, -0.9, 40), (2, 2.2, 5), (1, 2.4, 3), (2, 2.5, 9)),  # went backwards
        _simulator((1, -0.9, 80)),  # never got the new version
    ]
    found = stats.version_accounting(simulators, new_version=2, published_at=2.0)
    assert found["simulators"] == 4 and found["failed_calls"] == 2
    assert found["answers"] == 50 + 40 + 50 + 30 + 40 + 5 + 3 + 9 + 80
    assert found["backwards"] == 1 and found["monotonic"] is False
    assert found["on_new_version"] == 3 and found["ended_on_new_version"] == 3
    assert found["versions_before"] == [1]
    assert found["first_new_ms"] == pytest.approx(100.0)
    assert found["all_new_ms"] is None  # one simulator never got it

    clean = stats.version_accounting(simulators[:2], new_version=2, published_at=2.0)
    assert clean["monotonic"] is True and clean["backwards"] == 0
    assert clean["on_new_version"] == 2 and clean["all_new_ms"] == pytest.approx(300.0)
    silent = stats.version_accounting([_simulator()], new_version=2, published_at=1.0)
    assert silent["monotonic"] is True and silent["on_new_version"] == 0
    assert silent["first_new_ms"] is None
    with pytest.raises(AgentserveError, match="version is >= 1"):
        stats.version_accounting(simulators, new_version=0, published_at=1.0)


def test_reload_measurement_compares_p99_before_and_after_the_publish() -> None:
    # 100 calls of 1 ms in the second before the publish (at 2 s), 100 of 1 to 100 ms after it,
    # and slow calls outside both seconds that must not count.
    completions = [1.0 + i / 100 for i in range(100)] + [2.0 + i / 100 for i in range(100)]
    latencies = [0.001] * 100 + [(i + 1) / 1000 for i in range(100)]
    completions += [0.5, 3.5]
    latencies += [5.0, 5.0]
    sims = [_simulator((1, -0.5, 100), (2, 2.05, 102))]
    run = stats.reload_measurement(sims, 2, 2.0, latencies, completions, seconds=4.0)
    assert run["new_version"] == 2 and run["published_at_s"] == 2.0
    assert run["calls_before"] == 100 and run["p99_before_ms"] == pytest.approx(1.0)
    assert run["calls_after"] == 100 and run["p99_after_ms"] == pytest.approx(99.01)
    assert run["first_new_ms"] == pytest.approx(50.0) and run["failed_calls"] == 0
    # clipped to the measured window: a publish at 0.3 s of 0.6 s leaves 0.3 s either side
    short = stats.reload_measurement(sims, 2, 0.3, [0.001, 0.002], [0.1, 0.5], seconds=0.6)
    assert short["calls_before"] == 1 and short["calls_after"] == 1
    empty = stats.reload_measurement(sims, 2, 2.0, [], [], seconds=4.0)
    assert empty["p99_before_ms"] is None and empty["calls_after"] == 0
    with pytest.raises(AgentserveError, match="completion times"):
        stats.window_p99([0.1], [], 0.0, 1.0)


def _reload_run(repeat: int, failures: int = 0, backwards: bool = False) -> dict[str, Any]:
    new = repeat + 2
    tail = ((new - 1, 2.3, 2), (new, 2.4, 5)) if backwards else ()
    sims = [
        _simulator((new - 1, -1.0, 100), (new, 2.1 + i / 100, 50), *tail, failures=failures)
        for i in range(32)
    ]
    latencies = [0.005] * 400
    completions = [i / 100 for i in range(400)]
    return {
        **_run("reload-s32", "ours", 5000.0, 5.0),
        "repeat": repeat,
        "reload": stats.reload_measurement(sims, new, 2.0, latencies, completions, 4.0),
    }


def test_reload_summary_and_verdict() -> None:
    good = [_reload_run(0), _reload_run(1)]
    entry = stats.summarize(good)["reload-s32"]
    assert entry["echo"] is None and entry["ratio"]["rate"] is None
    reload = entry["reload"]
    assert reload["repeats"] == 2 and reload["failed_calls"] == 0 and reload["monotonic"]
    assert reload["every_simulator_on_new"] and reload["on_new_version"] == 32
    assert reload["first_new_ms"] == pytest.approx(100.0)
    assert reload["all_new_ms"] == pytest.approx(410.0)
    assert reload["p99_before_ms"] == pytest.approx(5.0)
    found = {v["label"]: v for v in stats.verdicts(stats.summarize(good))}
    verdict = found["Hot reload under load"]
    assert verdict["passed"] is True and verdict["measured"] == 0.0
    assert verdict["scenario"] == "reload-s32" and verdict["reload"]["simulators"] == 32

    for bad in ([_reload_run(0), _reload_run(1, failures=1)], [_reload_run(0, backwards=True)]):
        failed = {v["label"]: v for v in stats.verdicts(stats.summarize(bad))}
        assert failed["Hot reload under load"]["passed"] is False
    lost = _reload_run(0)
    lost["reload"]["on_new_version"] = 31
    failed = {v["label"]: v for v in stats.verdicts(stats.summarize([lost]))}
    assert failed["Hot reload under load"]["passed"] is False
    assert failed["Hot reload under load"]["measured"] == 0.0

    others = stats.verdicts(stats.summarize([_run("act-c1", "ours", 1.0, 1.0)]))
    missing = {v["label"]: v for v in others}["Hot reload under load"]
    assert missing["passed"] is None and missing["measured"] is None
    with pytest.raises(AgentserveError, match="no reload runs"):
        stats.reload_summary([])


def _results(runs: list[dict[str, Any]], scenarios: list[Scenario]) -> dict[str, Any]:
    runs = [{"repeat": 0, **run} for run in runs]
    summary = stats.summarize(runs)
    return {
        "format": "agentserve.serving-benchmark/1",
        "date": "2026-01-01T00:00:00+00:00",
        "command": "agentserve bench",
        "wall_seconds": 60.0,
        "machine": {
            "cpu": "test CPU",
            "logical_cpus": 2,
            "usable_cpus": 2,
            "platform": "Linux",
            "python": "CPython 3.11",
            "grpc_runtime": "1.0",
            "packages": {"grpcio": "1.0"},
            "load_average_before": [0.5, 0.5, 0.5],
        },
        "settings": {"seconds": 4.0, "warmup": 1.0, "repeats": 2, "policy": "cartpole-dqn"},
        "client_processes": 2,
        "scenarios": [
            {**asdict(s), "title": s.title, "rate_unit": s.rate_unit, "ours_only": s.ours_only}
            for s in scenarios
        ],
        "runs": runs,
        "summary": summary,
        "verdicts": stats.verdicts(summary),
    }


def test_report_renders_the_reload_scenario() -> None:
    runs = [
        _run("stream-s32", "ours", 5000.0, 6.0),
        _run("stream-s32", "echo", 9000.0, 3.0),
        _reload_run(0),
        _reload_run(1),
    ]
    data = _results(runs, select(["stream-s32", "reload-s32"]))
    data["settings"].update(watch_interval_s=0.2, reload_window_s=1.0)
    page = report.render(data)
    row = next(line for line in page.splitlines() if line.startswith("| Hot reload under load"))
    assert "0 failed calls; versions never went backwards; 32 of 32 simulators got the new" in row
    assert row.endswith("| `reload-s32` | yes |")
    section = page[page.index("### `reload-s32`") :].split("## Every measurement")[0]
    assert "a new policy version published mid-window" in section
    assert "| echo |" not in section and "ours / echo" not in section
    assert "| 1 | 2 | 0 | yes | 32 of 32 | 100.0 | 410.0 | 5.000 | 5.000 |" in section
    assert "| 2 | 3 | 0 | yes | 32 of 32 |" in section
    assert "| all (median) |  | 0 | yes | 32 of 32 (fewest) | 100.0 | 410.0 |" in section
    assert "`agentserve serve --watch-interval 0.2`" in page
    assert "| `reload-s32` | messages/s | 5,000 | — | — |" in page

    broken = _results([_reload_run(0, failures=3, backwards=True)], select(["reload-s32"]))
    page = report.render(broken)
    assert "96 failed calls; **versions went backwards** for 32 simulators" in page
    assert "| Hot reload under load |" in page and "| **no** |" in page


def test_report_renders_results_stored_before_the_reload_scenario() -> None:
    runs = [_run("act-c1", "ours", 1000.0, 1.0), _run("act-c1", "echo", 1500.0, 0.7)]
    data = _results(runs, select(["act-c1"]))
    for scenario in data["scenarios"]:  # as stored before: no reload keys
        del scenario["reload"], scenario["ours_only"]
    data["verdicts"] = [v for v in data["verdicts"] if v["metric"] != "reload"]
    for entry in data["summary"].values():
        entry.pop("reload", None)
    page = report.render(data)
    row = next(line for line in page.splitlines() if line.startswith("| Hot reload under load"))
    assert row.endswith("| not measured | — | not measured |")
    assert "Hot reload, per repeat" not in page and "**Hot reload**" not in page
    assert "| ours / echo |" in page


def test_the_reload_scenario_and_its_settings() -> None:
    scenario = select(["reload-s32"])[0]
    assert scenario in SCENARIOS and scenario.reload and scenario.ours_only
    assert scenario.method == "ActStream" and scenario.split() == [16, 16]
    assert not select(["stream-s32"])[0].ours_only
    with pytest.raises(ConfigError, match="only an ActStream scenario can reload"):
        Scenario("x", "Act", callers=1, processes=1, reload=True)
    with pytest.raises(ConfigError, match="reload-s32 needs --seconds >= 1"):
        Settings(seconds=0.5)
    Settings(seconds=0.5, only=("act-c1",))  # no reload scenario: short windows are fine


def test_publish_version_writes_a_hidden_folder_then_renames_it(tmp_path: Path) -> None:
    source = tmp_path / "bundled"
    (source / "p" / "1").mkdir(parents=True)
    (source / "p" / "1" / "manifest.json").write_text(json.dumps({"name": "p", "version": 1}))
    (source / "p" / "1" / "policy.onnx").write_bytes(b"model")
    (source / ".state").mkdir()
    with ReloadRepository(source) as repo:
        assert repo.root != source and not (repo.root / ".state").exists()
        assert repo.latest("p") == 1
        assert repo.publish("p") == 2 and repo.publish("p") == 3
        assert versions(repo.root, "p") == [1, 2, 3]
        manifest = json.loads((repo.root / "p" / "3" / "manifest.json").read_text())
        assert manifest == {"name": "p", "version": 3}
        assert (repo.root / "p" / "3" / "policy.onnx").read_bytes() == b"model"
        assert [e.name for e in (repo.root / "p").iterdir() if e.name.startswith(".")] == []
        with pytest.raises(AgentserveError, match="exists already"):
            publish_version(repo.root, "p", 2)
        with pytest.raises(ConfigError, match="no version 9"):
            publish_version(repo.root, "p", 10, source=9)
        with pytest.raises(ConfigError, match="no policy 'q'"):
            repo.latest("q")
        root = repo.root
    assert not root.exists()
    assert sorted(p.name for p in (source / "p").iterdir()) == ["1"]  # the source is untouched
    with pytest.raises(ConfigError, match="no model repository"):
        ReloadRepository(tmp_path / "missing")


class _ScriptedStream(agent_pb2_grpc.AgentServiceServicer):
    """ActStream: the first stream answers version 1, an error answer third, and aborts at the
    fifth request; later streams answer version 2."""

    def __init__(self) -> None:
        self.streams = 0

    async def ActStream(self, request_iterator: Any, context: Any) -> Any:
        self.streams += 1
        first, count = self.streams == 1, 0
        async for _ in request_iterator:
            count += 1
            if first and count == 3:
                error = agent_pb2.ActError(code="INTERNAL", message="scripted")
                yield agent_pb2.ActResponse(error=error)
            elif first and count == 5:
                await context.abort(grpc.StatusCode.UNAVAILABLE, "scripted abort")
            else:
                yield agent_pb2.ActResponse(discrete_action=0, policy_version=1 if first else 2)


def test_a_reload_simulator_counts_failed_calls_and_opens_a_new_stream() -> None:
    scenario = Scenario("r", "ActStream", callers=1, processes=1, reload=True)
    servicer = _ScriptedStream()

    async def scenario_run() -> Any:
        server = grpc.aio.server()
        agent_pb2_grpc.add_AgentServiceServicer_to_server(servicer, server)  # type: ignore[no-untyped-call]
        port = server.add_insecure_port("127.0.0.1:0")
        await server.start()
        try:
            return await run_job(_job(f"127.0.0.1:{port}", scenario, seconds=0.3))
        finally:
            await server.stop(0)

    result = asyncio.run(scenario_run())
    assert result.error is None and servicer.streams == 2
    (log,) = result.simulators
    assert log.failures == 2
    assert "INTERNAL: scripted" in log.errors[0] and "UNAVAILABLE: scripted abort" in log.errors[1]
    assert len(log.versions) == 2 and (log.versions[0].version, log.versions[0].answers) == (1, 3)
    assert log.versions[1].version == 2 and log.versions[1].answers > 10
    assert len(result.completions) == len(result.latencies) > 10
    assert all(0 <= t <= 0.3 for t in result.completions)


def test_a_short_reload_run_publishes_a_new_version_that_every_simulator_gets(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--seconds", "1", "--warmup", "0.3", "--repeats", "1"]
    argv += ["--only", "reload-s32", "--out", str(tmp_path)]
    assert main(argv) == 0
    assert "reload to v2: 0 failed calls" in capsys.readouterr().out
    data = json.loads((tmp_path / RESULTS_FILE).read_text(encoding="utf-8"))
    assert [(r["scenario"], r["target"]) for r in data["runs"]] == [("reload-s32", "ours")]
    reload = data["runs"][0]["reload"]
    assert reload["new_version"] == 2 and reload["failed_calls"] == 0 and reload["monotonic"]
    assert reload["on_new_version"] == 32 and len(reload["simulator_logs"]) == 32
    assert 0 < reload["first_new_ms"] <= reload["all_new_ms"] < 1000
    verdict = {v["label"]: v for v in data["verdicts"]}["Hot reload under load"]
    assert verdict["passed"] is True
    assert data["settings"]["watch_interval_s"] == WATCH_INTERVAL_S
    page = (tmp_path / report.PAGE).read_text(encoding="utf-8")
    assert "Hot reload, per repeat" in page and page == report.render(data)
