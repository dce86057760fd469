"""The rest of the online-learning API over real gRPC: FeedbackStream with per-message errors,
Update with idempotent transition ids, FAILED_PRECONDITION for a frozen policy, and `online:
true` in the service config as the alternative to --online."""

from __future__ import annotations

from collections.abc import Iterator

import grpc
import pytest
import yaml
from artifact_cases import untrained_policy

from agentserve import Client, RemoteError
from agentserve.local_server import LocalServer
from agentserve.v1 import agent_pb2, agent_pb2_grpc


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[LocalServer, str]]:
    tmp = tmp_path_factory.mktemp("online-api")
    repo = tmp / "models"
    name = untrained_policy(repo, "qlearning", "agentserve/GridWorld-v0")
    config = tmp / "service.yaml"
    config.write_text(yaml.safe_dump({"policies": {name: {"online": True}}}))
    with LocalServer(repo, extra_args=("--safety-config", str(config))) as server:
        yield server, name


def test_online_true_in_the_service_config_and_feedback_stream(
    served: tuple[LocalServer, str],
) -> None:
    server, name = served
    with Client(server.target, policy=name) as client:
        for episode in ("a", "b"):
            assert client.act([0], deterministic=False, episode_id=episode).event_id
        with grpc.insecure_channel(server.target) as channel:
            stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
            requests = [
                agent_pb2.FeedbackRequest(
                    policy=name, episode_id="a", reward=1.0, next_observation=[1], feedback_id="fa"
                ),
                agent_pb2.FeedbackRequest(
                    policy=name,
                    episode_id="nobody",
                    reward=1.0,
                    next_observation=[1],
                    feedback_id="fx",
                ),
                agent_pb2.FeedbackRequest(
                    policy=name, episode_id="b", reward=0.5, terminated=True, feedback_id="fb"
                ),
                agent_pb2.FeedbackRequest(
                    policy=name, episode_id="a", reward=1.0, next_observation=[1], feedback_id="fa"
                ),
            ]
            responses = list(stub.FeedbackStream(iter(requests), timeout=10))
    assert [r.applied for r in responses] == [True, False, True, False]
    assert responses[1].error.code == "NOT_FOUND" and not responses[0].HasField("error")
    assert responses[3].sequence == responses[0].sequence  # the retry: same record


def test_update_applies_transitions_once(served: tuple[LocalServer, str]) -> None:
    server, name = served
    transitions = [
        agent_pb2.Transition(
            policy=name,
            observation=[s],
            discrete_action=1,
            reward=-1.0,
            next_observation=[s + 1],
            transition_id=f"t{s}",
        )
        for s in range(5)
    ]
    with grpc.insecure_channel(server.target) as channel:
        stub = agent_pb2_grpc.AgentServiceStub(channel)  # type: ignore[no-untyped-call]
        first = stub.Update(iter(transitions), timeout=10)
        again = stub.Update(iter(transitions[:2]), timeout=10)
        with pytest.raises(grpc.RpcError) as bad:
            stub.Update(
                iter([agent_pb2.Transition(policy=name, observation=[0, 1], next_observation=[1])]),
                timeout=10,
            )
    assert (first.applied, first.duplicates) == (5, 0)
    assert (again.applied, again.duplicates) == (0, 2)
    assert bad.value.code() == grpc.StatusCode.INVALID_ARGUMENT


def test_feedback_for_a_frozen_policy_is_failed_precondition(client: Client) -> None:
    with pytest.raises(RemoteError) as frozen:
        client.feedback("x", 1.0, terminated=True, policy="cartpole-dqn")
    assert frozen.value.code == "FAILED_PRECONDITION"
    assert "--online cartpole-dqn" in frozen.value.details
