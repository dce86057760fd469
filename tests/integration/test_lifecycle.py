"""Server start-up and shutdown as an operator sees them: bad repositories, SIGTERM, the CLI."""

from __future__ import annotations

import asyncio
import shutil
import subprocess
import sys
import threading
import urllib.request
from collections import Counter
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from agentserve import Client
from agentserve.local_server import LocalServer
from agentserve.v1 import agent_pb2, agent_pb2_grpc

CLI = [sys.executable, "-m", "agentserve.cli"]


def health(target: str) -> int:
    with grpc.insecure_channel(target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        return int(stub.Check(health_pb2.HealthCheckRequest(), timeout=5).status)


def test_sigterm_drains_and_exits_zero(bundled_repo: Path) -> None:
    server = LocalServer(bundled_repo).start()
    outcomes: Counter[str] = Counter()
    stop = threading.Event()

    def hammer() -> None:
        with grpc.insecure_channel(server.target) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            request = agent_pb2.ActRequest(policy="cartpole-dqn", observation=[0.0] * 4)
            while not stop.is_set():
                try:
                    stub.Act(request, timeout=5)
                    outcomes["OK"] += 1
                except grpc.RpcError as error:
                    outcomes[error.code().name] += 1
                    if error.code() == grpc.StatusCode.UNAVAILABLE:
                        return

    threads = [threading.Thread(target=hammer) for _ in range(4)]
    for thread in threads:
        thread.start()
    while outcomes["OK"] < 200:
        pass
    code = server.terminate(timeout=30)
    stop.set()
    for thread in threads:
        thread.join(10)
    assert code == 0, server.log()
    # Calls either completed, or were refused once the server stopped taking new calls (gRPC
    # cancels calls still on the wire at that moment, then connections are refused). None failed
    # inside the server.
    assert outcomes["OK"] >= 200
    assert set(outcomes) <= {"OK", "UNAVAILABLE", "CANCELLED"}, outcomes
    assert "draining" in server.log() and "stopped" in server.log()


def test_in_flight_call_finishes_during_shutdown(
    bundled_repo: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A call the server is still working on when the stop begins completes with OK; health
    turns NOT_SERVING as the stop begins."""
    from service.server import AgentServer, ServerConfig
    from service.servicer import AgentServicer

    original = AgentServicer.Act
    entered = asyncio.Event()

    async def slow_act(self: AgentServicer, request: Any, context: Any) -> Any:
        entered.set()
        await asyncio.sleep(0.5)
        return await original(self, request, context)

    monkeypatch.setattr(AgentServicer, "Act", slow_act)

    async def scenario() -> tuple[agent_pb2.ActResponse, int]:
        server = AgentServer(ServerConfig(bundled_repo, port=0, metrics_port=-1, grace_seconds=5))
        await server.start()
        async with grpc.aio.insecure_channel(f"127.0.0.1:{server.port}") as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)
            request = agent_pb2.ActRequest(policy="cartpole-dqn", observation=[0.0] * 4)
            call = asyncio.ensure_future(stub.Act(request, timeout=10))
            await entered.wait()
            stopping = asyncio.ensure_future(server.stop())
            await asyncio.sleep(0.05)
            status = (await server.health.Check(health_pb2.HealthCheckRequest(), None)).status
            response = await call
            await stopping
        return response, int(status)

    response, status = asyncio.run(scenario())
    assert response.policy_version == 1
    assert status == health_pb2.HealthCheckResponse.NOT_SERVING


def test_tampered_policy_is_refused_and_the_rest_serve(bundled_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "models"
    shutil.copytree(bundled_repo, repo)
    onnx = repo / "cartpole-dqn" / "1" / "policy.onnx"
    data = bytearray(onnx.read_bytes())
    data[-1] ^= 0xFF
    onnx.write_bytes(bytes(data))
    with LocalServer(repo) as server, Client(server.target) as client:
        served = [p.name for p in client.list_policies()]
        assert served == ["cartpole-dqn-safe", "gridworld-qlearning"]
        assert health(server.target) == health_pb2.HealthCheckResponse.SERVING
        with urllib.request.urlopen(server.metrics_url, timeout=5) as response:
            text = response.read().decode()
        assert 'agentserve_policy_load_failures_total{policy="_unknown"} 1.0' in text
        assert "sha256" in server.log()


def test_repository_without_policies_is_not_serving(tmp_path: Path) -> None:
    with LocalServer(tmp_path) as server:
        assert health(server.target) == health_pb2.HealthCheckResponse.NOT_SERVING


def test_missing_repository_is_a_clear_error(tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, "serve", "--model-repo", str(tmp_path / "absent"), "--port", "0"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "is not a folder" in result.stderr
    assert "Traceback" not in result.stderr


def test_simulate_cli_prints_returns(server: LocalServer) -> None:
    result = subprocess.run(
        [
            *CLI,
            "simulate",
            "--env",
            "CartPole-v1",
            "--policy",
            "cartpole-dqn",
            "--episodes",
            "2",
            "--target",
            server.target,
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert result.stdout.count("episode ") == 2
    assert "mean return 500.00" in result.stdout


def test_simulate_cli_reports_unknown_policy(server: LocalServer) -> None:
    result = subprocess.run(
        [
            *CLI,
            "simulate",
            "--env",
            "CartPole-v1",
            "--policy",
            "nope",
            "--episodes",
            "1",
            "--target",
            server.target,
        ],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "NOT_FOUND" in result.stderr and "Traceback" not in result.stderr


def test_demo_runs_end_to_end() -> None:
    """What `make run` runs: serve the bundled repo, simulate, show metrics, stop cleanly."""
    result = subprocess.run(
        [*CLI, "demo", "--episodes", "2"], capture_output=True, text=True, timeout=300
    )
    assert result.returncode == 0, result.stdout + result.stderr
    assert "cartpole-dqn v1" in result.stdout and "mean return 500.0" in result.stdout
    assert "agentserve_requests_total" in result.stdout
    assert "server stopped cleanly" in result.stdout


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["train", "--algo", "nope", "--env", "CartPole-v1"], "unknown algorithm 'nope'"),
        (
            ["train", "--algo", "dqn", "--env", "NoSuchEnv-v0", "--timesteps", "10"],
            "cannot make environment",
        ),
        (["train", "--algo", "dqn", "--env", "CartPole-v1", "-p", "batch_size=abc"], "batch_size"),
        (
            ["train", "--algo", "dqn", "--env", "CartPole-v1", "-p", "nonsense=1"],
            "unknown hyperparameter",
        ),
        (
            ["train", "--algo", "qlearning", "--env", "CartPole-v1", "--timesteps", "10"],
            "Discrete observation",
        ),
        (["evaluate", "/nonexistent/folder"], "neither a policy version folder"),
    ],
)
def test_cli_errors_are_clear(args: list[str], message: str, tmp_path: Path) -> None:
    result = subprocess.run(
        [*CLI, *args, *(["--run-dir", str(tmp_path)] if args[0] == "train" else [])],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 2, result.stderr
    assert message in result.stderr
    assert "Traceback" not in result.stderr


def test_evaluate_cli_on_the_bundled_grid_world_policy() -> None:
    result = subprocess.run(
        [*CLI, "evaluate", "--policy", "gridworld-qlearning", "--episodes", "3"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stderr
    assert "mean 10.00 +- 0.00" in result.stdout
