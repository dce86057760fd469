"""`agentserve demo`: serve the bundled policies, drive them with the reference simulator, show
returns and metrics, stop the server cleanly."""

from __future__ import annotations

import statistics
import urllib.request
from pathlib import Path

from agentserve.client import Client
from agentserve.errors import AgentserveError
from agentserve.local_server import LocalServer
from agentserve.simulate import run_episodes

SHOWN_METRICS = (
    "agentserve_requests_total",
    "agentserve_request_duration_seconds_count",
    "agentserve_request_duration_seconds_sum",
    "agentserve_policy_loaded",
)


def scrape(url: str) -> str:
    with urllib.request.urlopen(url, timeout=10) as response:
        return str(response.read().decode("utf-8"))


def run_demo(model_repo: Path | None, episodes: int) -> int:
    print(f"starting agentserve on {model_repo or 'the bundled model repository'} ...")
    server = LocalServer(model_repo).start()
    try:
        print(f"serving on {server.target}, metrics at {server.metrics_url}")
        client = Client(server.target)
        client.wait_ready()
        means = {}
        for policy in client.list_policies():
            print(
                f"\n{policy.name} v{policy.default_version} ({policy.algorithm}) "
                f"on {policy.env_id}:"
            )
            returns = run_episodes(
                client,
                policy.env_id,
                policy.name,
                episodes,
                on_episode=lambda i, ret, n: print(f"  episode {i}: return {ret:g} in {n} steps"),
            )
            means[policy.name] = statistics.fmean(returns)
            print(f"  mean return {means[policy.name]:.1f} over {episodes} episodes")
        client.close()
        print("\nmetrics (excerpt):")
        for line in scrape(server.metrics_url).splitlines():
            if line.startswith(SHOWN_METRICS):
                print(f"  {line}")
    finally:
        code = server.terminate()
    if code != 0:
        raise AgentserveError(f"server exited with {code}:\n{server.log()}")
    print("\nserver stopped cleanly (SIGTERM, exit 0)")
    return 0
