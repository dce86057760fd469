"""Hot reload under load over real gRPC: 32 simulators stream while a new version is published;
every call succeeds, each simulator's versions never go backwards, and all reach the new one. A
broken new version leaves the old one serving."""

from __future__ import annotations

import asyncio
import shutil
import time
import urllib.request
from pathlib import Path

import grpc
from artifact_cases import publish_copy

from agentserve import Client
from agentserve.local_server import LocalServer
from agentserve.v1 import agent_pb2, agent_pb2_grpc

CARTPOLE = "cartpole-dqn"
SIMULATORS = 32


async def simulate(target: str, stop: asyncio.Event, seen: list[int]) -> int:
    """One simulator: request, wait for the answer, repeat, on one stream. Returns failures."""
    failures = 0
    async with grpc.aio.insecure_channel(target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        call = stub.ActStream()
        request = agent_pb2.ActRequest(policy=CARTPOLE, observation=[0.01, 0.0, 0.02, 0.0])
        while not stop.is_set():
            await call.write(request)
            response = await call.read()
            if response.HasField("error"):
                failures += 1
            else:
                seen.append(response.policy_version)
        await call.done_writing()
        while await call.read() != grpc.aio.EOF:
            pass
    return failures


def test_new_version_under_streaming_load(bundled_repo: Path, tmp_path: Path) -> None:
    repo = tmp_path / "repo"
    shutil.copytree(bundled_repo / CARTPOLE, repo / CARTPOLE)
    with LocalServer(repo, extra_args=("--watch-interval", "0.2")) as server:

        async def scenario() -> tuple[list[int], list[list[int]]]:
            stop = asyncio.Event()
            seen: list[list[int]] = [[] for _ in range(SIMULATORS)]
            tasks = [
                asyncio.ensure_future(simulate(server.target, stop, seen[i]))
                for i in range(SIMULATORS)
            ]
            await asyncio.sleep(1.0)
            await asyncio.to_thread(publish_copy, repo, CARTPOLE, 2)
            deadline = time.monotonic() + 30
            while time.monotonic() < deadline and not all(s and s[-1] == 2 for s in seen):
                await asyncio.sleep(0.1)
            await asyncio.sleep(0.5)
            stop.set()
            return list(await asyncio.gather(*tasks)), seen

        failures, seen = asyncio.run(scenario())
        assert failures == [0] * SIMULATORS
        for versions in seen:
            assert versions[0] == 1 and versions[-1] == 2
            assert versions == sorted(versions)  # never backwards
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            text = response.read().decode()
        assert f'agentserve_policy_reloads_total{{policy="{CARTPOLE}"}} 1.0' in text

        publish_copy(repo, CARTPOLE, 3, broken=True)
        time.sleep(1.0)
        with Client(server.target, policy=CARTPOLE) as client:
            assert client.act([0.0] * 4).policy_version == 2  # the broken one is not served
        assert "policy cartpole-dqn/3 not loaded" in server.log_path.read_text()
