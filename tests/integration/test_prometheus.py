"""A real Prometheus against a real agentserve: promtool checks the shipped scrape configuration
and a live scrape, a Prometheus started from the shipped configuration (pointed at the test
server) scrapes it, and every query of the Grafana dashboard is valid PromQL that it evaluates.

Needs `prometheus` and `promtool` (Debian's `prometheus` package; `.ci/run` installs it): the
tests skip when they are absent.
"""

from __future__ import annotations

import json
import shutil
import socket
import subprocess
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml

from agentserve import Client
from agentserve.local_server import LocalServer

ROOT = Path(__file__).resolve().parents[2]
SCRAPE_CONFIG = ROOT / "deploy" / "compose" / "prometheus.yml"
DASHBOARD = ROOT / "deploy" / "compose" / "grafana" / "dashboards" / "agentserve.json"
START_TIMEOUT = 60.0  # seconds for Prometheus to answer /-/ready
SCRAPE_TIMEOUT = 60.0  # seconds for the Act calls to show up in a query
ACT_CALLS = 5


def binary(name: str) -> str:
    path = shutil.which(name)
    if path is None:
        pytest.skip(f"{name} not installed (Debian: apt-get install prometheus; .ci/run does)")
    return path


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def dashboard_queries() -> list[str]:
    """The dashboard's PromQL with Grafana's variables given concrete values."""
    dashboard = json.loads(DASHBOARD.read_text(encoding="utf-8"))
    queries = [
        target["expr"]
        for panel in dashboard["panels"]
        for target in panel.get("targets", [])
        if target.get("expr")
    ]
    assert queries, "the dashboard has no queries"
    return [q.replace("$__rate_interval", "1m").replace("$policy", ".*") for q in queries]


def get_json(url: str) -> Any:
    with urllib.request.urlopen(url, timeout=10) as response:
        return json.loads(response.read())


def test_promtool_accepts_the_shipped_scrape_config() -> None:
    result = subprocess.run(
        [binary("promtool"), "check", "config", str(SCRAPE_CONFIG)],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_a_live_scrape(server: LocalServer) -> None:
    promtool = binary("promtool")
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        exposition = response.read()
    assert b"agentserve_requests_total" in exposition or b"agentserve_policy_loaded" in exposition
    result = subprocess.run(
        [promtool, "check", "metrics"], input=exposition, capture_output=True, timeout=60
    )
    problems = (result.stdout + result.stderr).decode(errors="replace")
    assert result.returncode == 0 and not problems.strip(), problems


def test_dashboard_queries_are_valid_promql(tmp_path: Path) -> None:
    """`promtool check rules` parses each query as a recording rule's expression."""
    promtool = binary("promtool")
    rules = {
        "groups": [
            {
                "name": "dashboard",
                "rules": [
                    {"record": f"dashboard:query_{i}", "expr": expr}
                    for i, expr in enumerate(dashboard_queries())
                ],
            }
        ]
    }
    path = tmp_path / "dashboard-rules.yml"
    path.write_text(yaml.safe_dump(rules), encoding="utf-8")
    result = subprocess.run(
        [promtool, "check", "rules", str(path)], capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr


def scrape_config_for(metrics_address: str, interval: str = "1s") -> dict[str, Any]:
    """The shipped configuration, its agentserve job pointed at `metrics_address` and scraped
    every `interval` (the test waits for scrapes)."""
    config: dict[str, Any] = yaml.safe_load(SCRAPE_CONFIG.read_text(encoding="utf-8"))
    config["global"]["scrape_interval"] = interval
    config["global"]["scrape_timeout"] = interval
    jobs = [job for job in config["scrape_configs"] if job["job_name"] == "agentserve"]
    assert len(jobs) == 1, "the shipped configuration has no (single) agentserve job"
    jobs[0]["scrape_interval"] = jobs[0]["scrape_timeout"] = interval
    for static in jobs[0]["static_configs"]:
        static["targets"] = [metrics_address]
    return config


@pytest.fixture
def prometheus(server: LocalServer, tmp_path: Path) -> Iterator[str]:
    """A real Prometheus on 127.0.0.1 scraping the test server; yields its base URL."""
    executable = binary("prometheus")
    config = tmp_path / "prometheus.yml"
    config.write_text(
        yaml.safe_dump(scrape_config_for(f"{server.host}:{server.metrics_port}")), encoding="utf-8"
    )
    log_path = tmp_path / "prometheus.log"
    for _attempt in range(3):  # the free port may be taken before Prometheus binds it
        port = free_port()
        with log_path.open("wb") as log:
            process = subprocess.Popen(
                [
                    executable,
                    f"--config.file={config}",
                    f"--storage.tsdb.path={tmp_path / 'data'}",
                    f"--web.listen-address=127.0.0.1:{port}",
                    "--log.level=warn",
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                cwd=tmp_path,
            )
        url = f"http://127.0.0.1:{port}"
        deadline = time.monotonic() + START_TIMEOUT
        while process.poll() is None and time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"{url}/-/ready", timeout=2) as response:
                    if response.status == 200:
                        break
            except (urllib.error.URLError, ConnectionError):
                pass
            time.sleep(0.2)
        if process.poll() is None:
            break
        if "address already in use" not in log_path.read_text(errors="replace"):
            break
    try:
        if process.poll() is not None:
            pytest.fail(f"prometheus exited at start-up:\n{log_path.read_text(errors='replace')}")
        if time.monotonic() >= deadline:
            pytest.fail(f"prometheus not ready in {START_TIMEOUT:g} s:\n{log_path.read_text()}")
        yield url
    finally:
        if process.poll() is None:
            process.terminate()
            try:
                process.wait(30)
            except subprocess.TimeoutExpired:
                process.kill()
                process.wait()


def query(url: str, promql: str) -> list[dict[str, Any]]:
    answer = get_json(f"{url}/api/v1/query?" + urllib.parse.urlencode({"query": promql}))
    assert answer["status"] == "success", f"{promql}: {answer}"
    result: list[dict[str, Any]] = answer["data"]["result"]
    return result


@pytest.mark.timeout(240)
def test_prometheus_scrapes_agentserve(server: LocalServer, prometheus: str) -> None:
    with Client(server.target, policy="cartpole-dqn") as client:
        client.wait_ready()
        for step in range(ACT_CALLS):
            client.act([0.01 * step, 0.0, 0.0, 0.0])

    deadline = time.monotonic() + SCRAPE_TIMEOUT
    while True:
        series = query(prometheus, "agentserve_requests_total")
        acts = [
            s
            for s in series
            if s["metric"].get("policy") == "cartpole-dqn"
            and s["metric"].get("method") == "Act"
            and s["metric"].get("code") == "OK"
        ]
        if acts and float(acts[0]["value"][1]) >= ACT_CALLS:
            break
        assert time.monotonic() < deadline, (
            f"no scrape with the {ACT_CALLS} Act calls within {SCRAPE_TIMEOUT:g} s: {series}\n"
            f"targets: {get_json(prometheus + '/api/v1/targets')}"
        )
        time.sleep(0.5)
    labels = acts[0]["metric"]
    assert labels["job"] == "agentserve" and labels["service"] == "agentserve"
    assert labels["instance"] == f"{server.host}:{server.metrics_port}"
    up = query(prometheus, 'up{job="agentserve"}')
    assert [s["value"][1] for s in up] == ["1"]
    loaded = query(prometheus, "agentserve_policy_loaded")
    assert {s["metric"]["policy"] for s in loaded} >= {"cartpole-dqn", "gridworld-qlearning"}

    # Every dashboard query evaluates (the online-learning ones to nothing here).
    for promql in dashboard_queries():
        query(prometheus, promql)
