"""`agentserve serve --runtime torch`: a real server process serving the bundled repository with
the torch runtime (on the CPU), answering like the ONNX graphs do."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest

from agentserve import Client
from agentserve.local_server import LocalServer
from agentserve.manifest import load_manifest
from service.runtime import load_runtime

CARTPOLE = "cartpole-dqn"
CARTPOLE_OBS = [0.01, -0.02, 0.03, 0.04]


@pytest.fixture(scope="module")
def torch_server(bundled_repo: Path) -> Iterator[LocalServer]:
    with LocalServer(bundled_repo, extra_args=("--runtime", "torch", "--device", "cpu")) as running:
        yield running


@pytest.fixture
def torch_client(torch_server: LocalServer) -> Iterator[Client]:
    with Client(torch_server.target) as connected:
        connected.wait_ready()
        yield connected


def test_every_bundled_policy_is_served_by_torch(torch_client: Client) -> None:
    policies = {p.name: p.runtime for p in torch_client.list_policies()}
    assert policies == {
        CARTPOLE: "torch",
        "cartpole-dqn-safe": "torch",
        "gridworld-qlearning": "torch",
    }


def test_act_on_cartpole_matches_the_onnx_graph(torch_client: Client, bundled_repo: Path) -> None:
    onnx = load_runtime(load_manifest(bundled_repo / CARTPOLE / "1"), "onnx")
    rng = np.random.default_rng(5)
    for observation in [CARTPOLE_OBS, *rng.uniform(-0.2, 0.2, size=(10, 4)).tolist()]:
        served = torch_client.act(observation, policy=CARTPOLE)
        want = onnx.infer(np.asarray([observation], np.float32), np.ones((1, 2), bool))
        assert served.action == int(want.greedy_actions[0])
        assert served.policy_version == 1
        assert served.propensity == 1.0
        np.testing.assert_allclose(served.values, want.values[0], rtol=1e-5, atol=1e-5)
        np.testing.assert_allclose(served.probabilities, want.probabilities[0], atol=1e-5)
    masked = torch_client.act(CARTPOLE_OBS, action_mask=[False, True], policy=CARTPOLE)
    assert masked.action == 1
    assert masked.probabilities[0] == 0.0


def test_act_batch_on_cartpole(torch_client: Client, bundled_repo: Path) -> None:
    onnx = load_runtime(load_manifest(bundled_repo / CARTPOLE / "1"), "onnx")
    observations = np.random.default_rng(6).uniform(-0.2, 0.2, size=(256, 4)).astype(np.float32)
    result = torch_client.act_batch(observations, policy=CARTPOLE)
    want = onnx.infer(observations, np.ones((256, 2), bool))
    np.testing.assert_array_equal(result.actions, want.greedy_actions)
