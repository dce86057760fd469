"""ActStream and ActBatch over real gRPC: order, per-message errors, batch == unbatched,
version pinning, RESOURCE_EXHAUSTED under a full queue, and the serving metrics moving."""

from __future__ import annotations

import re
import shutil
import urllib.request
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import grpc
import numpy as np
import pytest
from artifact_cases import publish_copy

from agentserve import Client, RemoteError
from agentserve.local_server import LocalServer
from agentserve.v1 import agent_pb2, agent_pb2_grpc

CARTPOLE = "cartpole-dqn"


def observations(count: int, seed: int) -> np.ndarray:
    return np.random.default_rng(seed).uniform(-0.3, 0.3, size=(count, 4)).astype(np.float32)


def test_stream_answers_in_order_and_reports_errors_per_message(client: Client) -> None:
    obs = observations(60, seed=1)
    expected = [client.act(o, policy=CARTPOLE).action for o in obs]
    with client.stream(CARTPOLE) as session:
        for o in obs[:30]:
            session.send(o)  # pipelined: 30 requests in flight before the first answer
        got = [session.receive().action for _ in range(30)]
        session.send([0.0, 1.0])  # wrong length: an error for this message only
        with pytest.raises(RemoteError) as error:
            session.receive()
        assert error.value.code == "INVALID_ARGUMENT" and "4" in error.value.details
        got += [session.act(o).action for o in obs[30:]]
        with pytest.raises(RemoteError) as missing:
            session.act(obs[0], version=9)
        assert missing.value.code == "NOT_FOUND"
        assert session.act(obs[0]).action == expected[0]
    assert got == expected


def test_many_streams_at_once(server: LocalServer) -> None:
    def simulator(seed: int) -> list[int]:
        obs = observations(50, seed)
        with Client(server.target) as client, client.stream(CARTPOLE) as session:
            return [int(session.act(o).action) for o in obs]

    with Client(server.target) as client:
        expected = {
            s: [client.act(o, policy=CARTPOLE).action for o in observations(50, s)]
            for s in range(8)
        }
    with ThreadPoolExecutor(8) as pool:
        results = dict(zip(range(8), pool.map(simulator, range(8)), strict=True))
    assert results == expected


def test_act_batch_equals_unbatched_acts(client: Client) -> None:
    obs = observations(64, seed=2)
    rng = np.random.default_rng(2)
    masks = rng.random((64, 2)) < 0.7
    masks[np.arange(64), rng.integers(2, size=64)] = True
    batch = client.act_batch(obs, masks, policy=CARTPOLE)
    single = [client.act(o, m, policy=CARTPOLE).action for o, m in zip(obs, masks, strict=True)]
    assert batch.actions.tolist() == single
    assert batch.policy_version == 1 and (batch.propensities == 1.0).all()
    sampled = client.act_batch(obs, masks, deterministic=False, policy=CARTPOLE)
    assert masks[np.arange(64), sampled.actions].all()
    assert ((sampled.propensities > 0) & (sampled.propensities <= 1)).all()
    grid = client.act_batch(np.arange(10, dtype=np.float32)[:, None], policy="gridworld-qlearning")
    assert grid.actions.shape == (10,)
    with pytest.raises(RemoteError) as error:
        client.act_batch(np.zeros((2, 3)), policy=CARTPOLE)
    assert error.value.code == "INVALID_ARGUMENT" and "multiple of 4" in error.value.details


@pytest.fixture(scope="module")
def two_versions(bundled_repo: Path, tmp_path_factory: pytest.TempPathFactory) -> Path:
    repo = tmp_path_factory.mktemp("versions")
    shutil.copytree(bundled_repo / CARTPOLE, repo / CARTPOLE)
    publish_copy(repo, CARTPOLE, 2)
    return repo


@pytest.fixture(scope="module")
def small_queue(two_versions: Path) -> Iterator[LocalServer]:
    with LocalServer(two_versions, extra_args=("--max-queue", "1", "--max-batch", "1")) as running:
        yield running


def test_versions_can_be_pinned_per_request(small_queue: LocalServer) -> None:
    with Client(small_queue.target, policy=CARTPOLE) as client:
        client.wait_ready()
        assert client.act([0.0] * 4).policy_version == 2  # the default: the highest
        assert client.act([0.0] * 4, version=1).policy_version == 1
        assert client.act_batch(np.zeros((3, 4)), version=1).policy_version == 1
        with client.stream() as session:
            assert session.act([0.0] * 4, version=1).policy_version == 1
            assert session.act([0.0] * 4).policy_version == 2


def test_a_full_queue_answers_resource_exhausted_then_serves(small_queue: LocalServer) -> None:
    async_results: list[grpc.StatusCode] = []
    with grpc.insecure_channel(small_queue.target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        request = agent_pb2.ActRequest(policy=CARTPOLE, observation=[0.0] * 4, deterministic=True)
        futures = [stub.Act.future(request, timeout=30) for _ in range(300)]
        for future in futures:
            try:
                future.result()
                async_results.append(grpc.StatusCode.OK)
            except grpc.RpcError as error:
                async_results.append(error.code())
        assert grpc.StatusCode.RESOURCE_EXHAUSTED in async_results
        assert grpc.StatusCode.OK in async_results
        assert set(async_results) <= {grpc.StatusCode.OK, grpc.StatusCode.RESOURCE_EXHAUSTED}
        assert stub.Act(request, timeout=10).policy_version == 2  # still answering


def metric_sum(text: str, name: str) -> float:
    return sum(float(v) for v in re.findall(rf"^{name}(?:\{{[^}}]*\}})? (\S+)$", text, re.M))


def test_serving_metrics_are_present_and_moving(server: LocalServer, client: Client) -> None:
    def scrape() -> str:
        with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
            return str(response.read().decode())

    before = scrape()
    for o in observations(20, seed=5):
        client.act(o, policy=CARTPOLE)
    client.act_batch(observations(32, seed=6), policy=CARTPOLE)
    after = scrape()
    for name in (
        "agentserve_queue_seconds_count",
        "agentserve_compute_seconds_count",
        "agentserve_batch_size_count",
        "agentserve_batch_size_sum",
    ):
        assert metric_sum(after, name) > metric_sum(before, name), name
    assert (
        metric_sum(after, "agentserve_batch_size_sum")
        - metric_sum(before, "agentserve_batch_size_sum")
        >= 52
    )
    assert 'agentserve_requests_in_flight{method="Act"}' in after
    assert 'agentserve_queue_seconds_bucket{le="5e-05",policy="cartpole-dqn",version="1"}' in after
