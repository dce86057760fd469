"""Continuous-action policies of every algorithm that supports Box actions, trained briefly on
Pendulum-v1, exported, and served by the real server: Act returns actions inside the box, the
deterministic action is the exported graph's, sampling explores, and bad requests get clear
statuses."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import onnxruntime as ort
import pytest

from agentserve import Client
from agentserve.client import RemoteError
from agentserve.local_server import LocalServer
from agentserve.manifest import load_manifest
from agentserve.simulate import run_episodes
from trainer import registry
from trainer.export import default_policy_name
from trainer.loop import RunOptions, train

ENV_ID = "Pendulum-v1"
LOW, HIGH = -2.0, 2.0
CONTINUOUS = [c.algorithm for c in registry.learners() if "continuous" in c.action_spaces]
OBSERVATION = (0.6, -0.8, 1.5)


def policy_name(algorithm: str) -> str:
    return default_policy_name(ENV_ID, algorithm)


@pytest.fixture(scope="module")
def repo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("continuous")
    for algorithm in CONTINUOUS:
        train(
            RunOptions(
                algorithm=algorithm,
                env_id=ENV_ID,
                seed=0,
                timesteps=400,
                overrides=("net_arch=[16, 16]",),
                run_dir=root / "runs" / algorithm,
                out_repo=root / "repo",
                eval_freq=0,
                eval_episodes=1,
                progress=False,
            )
        )
    return root / "repo"


@pytest.fixture(scope="module")
def client(repo: Path) -> Iterator[Client]:
    with LocalServer(repo) as server, Client(server.target) as connected:
        connected.wait_ready()
        yield connected


def test_there_are_continuous_algorithms() -> None:
    assert {"ppo", "a2c", "reinforce"} <= set(CONTINUOUS)


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_policy_describes_a_box_action_space(client: Client, algorithm: str) -> None:
    description = client.get_policy(policy_name(algorithm))
    assert description.action_space["type"] == "box"
    assert description.action_space["low"] == [LOW]
    assert description.action_space["high"] == [HIGH]


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_deterministic_action_is_the_exported_graphs(
    client: Client, repo: Path, algorithm: str
) -> None:
    name = policy_name(algorithm)
    result = client.act(OBSERVATION, deterministic=True, policy=name)
    assert isinstance(result.action, np.ndarray)
    assert result.action.shape == (1,)
    assert LOW <= float(result.action[0]) <= HIGH
    assert result.propensity == 1.0
    assert result.probabilities.size == 0
    artifact = load_manifest(repo / name / "1")

    session = ort.InferenceSession(str(artifact.path("policy.onnx")))
    (greedy,) = session.run(["greedy_action"], {"observation": np.array([OBSERVATION], np.float32)})
    np.testing.assert_allclose(result.action, greedy[0], rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_stochastic_actions_explore_inside_the_box(client: Client, algorithm: str) -> None:
    name = policy_name(algorithm)
    draws = [client.act(OBSERVATION, deterministic=False, policy=name) for _ in range(40)]
    actions = np.array([float(d.action[0]) for d in draws])  # type: ignore[index]
    assert ((actions >= LOW) & (actions <= HIGH)).all()
    assert len(set(actions.tolist())) > 5
    assert all(d.propensity > 0 and np.isfinite(d.propensity) for d in draws)


@pytest.mark.parametrize("algorithm", CONTINUOUS)
def test_a_mask_for_a_continuous_policy_is_invalid(client: Client, algorithm: str) -> None:
    with pytest.raises(RemoteError) as error:
        client.act(OBSERVATION, action_mask=[True], policy=policy_name(algorithm))
    assert error.value.code == "INVALID_ARGUMENT"
    assert "continuous" in error.value.details


def test_wrong_observation_size_is_invalid(client: Client) -> None:
    with pytest.raises(RemoteError) as error:
        client.act((0.0, 1.0), policy=policy_name(CONTINUOUS[0]))
    assert error.value.code == "INVALID_ARGUMENT"


def test_simulator_plays_pendulum_through_the_server(client: Client) -> None:
    returns = run_episodes(client, ENV_ID, policy_name("ppo"), 1, seed=3)
    assert len(returns) == 1 and np.isfinite(returns[0])
    assert -2000.0 < returns[0] <= 0.0
