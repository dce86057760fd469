"""A real server process on port 0, a real client, real HTTP scrapes of /metrics."""

from __future__ import annotations

import re
import urllib.request

import grpc
import numpy as np
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from agentserve import Client, RemoteError
from agentserve.local_server import LocalServer
from agentserve.simulate import run_episodes
from agentserve.v1 import agent_pb2, agent_pb2_grpc

CARTPOLE = "cartpole-dqn"
SAFE = "cartpole-dqn-safe"
GRID = "gridworld-qlearning"
CARTPOLE_OBS = [0.01, -0.02, 0.03, 0.04]


def scrape(server: LocalServer) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return str(response.read().decode())


def counter(text: str, method: str, policy: str, code: str) -> float:
    pattern = (
        rf'^agentserve_requests_total\{{code="{code}",method="{method}",policy="{policy}"\}} (\S+)$'
    )
    match = re.search(pattern, text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def test_health_is_serving(server: LocalServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        for service in ("", "agentserve.v1.AgentService"):
            status = stub.Check(health_pb2.HealthCheckRequest(service=service), timeout=5).status
            assert status == health_pb2.HealthCheckResponse.SERVING


def test_reflection_lists_the_service(server: LocalServer) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        (response,) = list(stub.ServerReflectionInfo(iter([request]), timeout=5))
        names = {s.name for s in response.list_services_response.service}
    assert {"agentserve.v1.AgentService", "grpc.health.v1.Health"} <= names


def test_list_and_get_policies(client: Client) -> None:
    policies = {p.name: p for p in client.list_policies()}
    assert set(policies) == {CARTPOLE, SAFE, GRID}
    cart = policies[CARTPOLE]
    assert (cart.algorithm, cart.env_id, cart.runtime) == ("dqn", "CartPole-v1", "onnx")
    assert cart.observation_shape == (4,)
    assert cart.action_space == {"type": "discrete", "n": 2}
    assert cart.versions == (1,) and cart.default_version == 1
    grid = client.get_policy(GRID)
    assert (grid.algorithm, grid.runtime, grid.observation_shape) == ("qlearning", "table", (1,))
    assert grid.action_space == {"type": "discrete", "n": 4}


@pytest.mark.parametrize(("policy", "observation"), [(CARTPOLE, CARTPOLE_OBS), (GRID, [0.0])])
def test_act_on_each_bundled_policy(client: Client, policy: str, observation: list[float]) -> None:
    greedy = client.act(observation, policy=policy)
    n = len(greedy.probabilities)
    assert isinstance(greedy.action, int) and 0 <= greedy.action < n
    assert greedy.policy_version == 1
    assert greedy.propensity == 1.0
    assert greedy.probabilities.sum() == pytest.approx(1.0, abs=1e-5)
    assert len(greedy.values) == n  # both bundled policies learn Q-values
    assert greedy.action == int(np.argmax(greedy.values))
    sampled = client.act(observation, policy=policy, deterministic=False)
    assert sampled.propensity == pytest.approx(sampled.probabilities[sampled.action])


def test_cartpole_over_grpc_reaches_475(client: Client) -> None:
    returns = run_episodes(client, "CartPole-v1", CARTPOLE, episodes=3)
    assert np.mean(returns) >= 475


def test_gridworld_over_grpc_is_optimal(client: Client) -> None:
    from trainer.envs.gridworld import GridWorldEnv, optimal_return

    returns = run_episodes(client, "agentserve/GridWorld-v0", GRID, episodes=2)
    assert returns == [optimal_return(GridWorldEnv(), 100)] * 2


BAD_REQUESTS = [
    ("unknown policy", dict(policy="no-such", observation=CARTPOLE_OBS), "NOT_FOUND", "no-such"),
    (
        "unknown version",
        dict(policy=CARTPOLE, version=7, observation=CARTPOLE_OBS),
        "NOT_FOUND",
        "version 7",
    ),
    (
        "short observation",
        dict(policy=CARTPOLE, observation=CARTPOLE_OBS[:3]),
        "INVALID_ARGUMENT",
        "expects 4",
    ),
    (
        "long observation",
        dict(policy=CARTPOLE, observation=CARTPOLE_OBS * 2),
        "INVALID_ARGUMENT",
        "expects 4",
    ),
    (
        "NaN",
        dict(policy=CARTPOLE, observation=[0.0, float("nan"), 0.0, 0.0]),
        "INVALID_ARGUMENT",
        "observation[1]",
    ),
    (
        "Inf",
        dict(policy=CARTPOLE, observation=[0.0, 0.0, float("inf"), 0.0]),
        "INVALID_ARGUMENT",
        "observation[2]",
    ),
    (
        "mask too short",
        dict(policy=CARTPOLE, observation=CARTPOLE_OBS, action_mask=[True]),
        "INVALID_ARGUMENT",
        "1 flags",
    ),
    (
        "all-false mask",
        dict(policy=CARTPOLE, observation=CARTPOLE_OBS, action_mask=[False, False]),
        "INVALID_ARGUMENT",
        "no action",
    ),
    ("state out of range", dict(policy=GRID, observation=[40.0]), "INVALID_ARGUMENT", "[0, 40)"),
    ("fractional state", dict(policy=GRID, observation=[1.5]), "INVALID_ARGUMENT", "state index"),
]


@pytest.mark.parametrize(
    ("label", "fields", "code", "message"), BAD_REQUESTS, ids=[b[0] for b in BAD_REQUESTS]
)
def test_bad_input_gets_a_clear_status(
    server: LocalServer, label: str, fields: dict[str, object], code: str, message: str
) -> None:
    with grpc.insecure_channel(server.target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)
        with pytest.raises(grpc.RpcError) as raised:
            stub.Act(agent_pb2.ActRequest(**fields), timeout=5)  # type: ignore[arg-type]
    error = raised.value
    assert error.code().name == code
    details = error.details()
    assert message in details
    assert "Traceback" not in details and "default_models" not in details and ".py" not in details


def test_get_unknown_policy_is_not_found(client: Client) -> None:
    with pytest.raises(RemoteError) as raised:
        client.get_policy("nope")
    assert raised.value.code == "NOT_FOUND"


@pytest.mark.parametrize(("policy", "n", "size"), [(CARTPOLE, 2, 4), (GRID, 4, 1)])
def test_masked_actions_are_never_returned(client: Client, policy: str, n: int, size: int) -> None:
    rng = np.random.default_rng(0)
    for i in range(300):
        mask = rng.random(n) < 0.5
        if not mask.any():
            mask[rng.integers(n)] = True
        observation = rng.integers(40, size=1) if size == 1 else rng.uniform(-2, 2, size)
        result = client.act(observation, action_mask=mask, policy=policy, deterministic=bool(i % 2))
        assert mask[result.action], (i, mask, result)
        assert np.all(result.probabilities[~mask] == 0.0)


def test_request_counter_rises_by_exactly_the_calls_made(
    server: LocalServer, client: Client
) -> None:
    before = scrape(server)
    ok_before = counter(before, "Act", GRID, "OK")
    bad_before = counter(before, "Act", GRID, "INVALID_ARGUMENT")
    unknown_before = counter(before, "Act", "_unknown", "NOT_FOUND")
    for state in range(17):
        client.act([float(state)], policy=GRID)
    for _ in range(3):
        with pytest.raises(RemoteError):
            client.act([99.0], policy=GRID)
    with pytest.raises(RemoteError):
        client.act([0.0], policy="who-knows")
    after = scrape(server)
    assert counter(after, "Act", GRID, "OK") - ok_before == 17
    assert counter(after, "Act", GRID, "INVALID_ARGUMENT") - bad_before == 3
    assert counter(after, "Act", "_unknown", "NOT_FOUND") - unknown_before == 1
    assert "who-knows" not in after  # client-chosen names never become labels


def test_metrics_expose_latency_buckets_and_loaded_policies(
    server: LocalServer, client: Client
) -> None:
    client.act(CARTPOLE_OBS, policy=CARTPOLE)
    text = scrape(server)
    assert re.search(
        r'agentserve_request_duration_seconds_bucket\{le="5e-05",method="Act",policy="cartpole-dqn"\}',
        text,
    )
    assert re.search(
        r'agentserve_policy_loaded\{algorithm="dqn",policy="cartpole-dqn",'
        r'runtime="onnx",version="1"\} 1.0',
        text,
    )
    assert 'agentserve_policy_default_version{policy="gridworld-qlearning"} 1.0' in text
