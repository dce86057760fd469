"""The serving benchmark (`agentserve bench`): percentiles, medians, ratios and verdicts, the
scenarios, the page rendered from stored results, the echo server and the load generator
against it, and a very short end-to-end run against both servers."""

from __future__ import annotations

import asyncio
import json
import time
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from agentserve.bench import report, stats
from agentserve.bench.echo import GRACE_S, MAX_CONNECTION_AGE_S, MAX_MESSAGE_BYTES, EchoServer
from agentserve.bench.load import Job, LoadError, WorkerPool, process_cpu_seconds, run_job
from agentserve.bench.runner import RESULTS_FILE, Settings, command_line
from agentserve.bench.scenarios import SCENARIOS, Scenario, select
from agentserve.cli import build_parser, main
from agentserve.errors import AgentserveError, ConfigError

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
