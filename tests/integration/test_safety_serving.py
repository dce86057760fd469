"""Safety over real gRPC: the bundled `cartpole-dqn-safe` policy driven through states where its
rules fire, explanations on the wire, a `--safety-config` server (fallback and
FAILED_PRECONDITION as configured, a policy refused for an invalid rule), and the safety metrics
in a real scrape of /metrics."""

from __future__ import annotations

import math
import re
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import numpy as np
import pytest
import yaml

from agentserve import Client, RemoteError
from agentserve.local_server import LocalServer

SAFE = "cartpole-dqn-safe"
NEAR_LEFT_EDGE_MOVING_LEFT = [-1.9, -0.5, 0.0, 0.0]
NEAR_RIGHT_EDGE_MOVING_RIGHT = [1.9, 0.5, 0.0, 0.0]
CENTRE = [0.0, 0.0, 0.0, 0.0]


def metric(text: str, name: str, **labels: str) -> float:
    inner = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
    match = re.search(rf"^{name}\{{{re.escape(inner)}\}} (\S+)$", text, re.MULTILINE)
    return float(match.group(1)) if match else 0.0


def scrape(server: LocalServer) -> str:
    with urllib.request.urlopen(server.metrics_url, timeout=10) as response:
        return str(response.read().decode())


def test_bundled_safe_policy_never_pushes_off_the_track(
    server: LocalServer, client: Client
) -> None:
    before = scrape(server)
    left_hits = metric(before, "agentserve_safety_rule_hits_total", policy=SAFE, rule="left-edge")
    for obs, forbidden, rule in (
        (NEAR_LEFT_EDGE_MOVING_LEFT, 0, "left-edge"),
        (NEAR_RIGHT_EDGE_MOVING_RIGHT, 1, "right-edge"),
    ):
        for deterministic in (True, False):
            for _ in range(20):
                result = client.act(obs, policy=SAFE, deterministic=deterministic)
                assert result.action != forbidden and not result.fallback
        explained = client.act(obs, policy=SAFE, explain=True)
        assert explained.explanation is not None
        (fired,) = explained.explanation.rules_fired
        assert (fired.rule, list(fired.forbidden_actions)) == (rule, [forbidden])
        entry = explained.explanation.actions[forbidden]
        assert not entry.allowed and list(entry.forbidden_by) == [rule]
        assert entry.value_after_mask == -math.inf and entry.probability_after_mask == 0.0
        assert explained.explanation.value_kind == "q_value"
    centre = client.act(CENTRE, policy=SAFE, explain=True)
    assert centre.explanation is not None and list(centre.explanation.rules_fired) == []
    assert all(a.allowed for a in centre.explanation.actions)
    text = scrape(server)
    hits = metric(text, "agentserve_safety_rule_hits_total", policy=SAFE, rule="left-edge")
    assert hits - left_hits == 41  # 40 decisions + 1 explained
    assert metric(text, "agentserve_masked_actions_total", policy=SAFE, source="rule") >= 82


def test_bundled_safe_policy_keeps_its_rules_through_an_episode(client: Client) -> None:
    """A whole CartPole episode from a start near the left edge: whenever the cart is there and
    moving left, the policy must not push left."""
    gymnasium = pytest.importorskip("gymnasium")
    env = gymnasium.make("CartPole-v1")
    observation, _ = env.reset(seed=3)
    env.unwrapped.state = np.array([-1.85, -0.3, 0.02, 0.0])
    observation = np.array(env.unwrapped.state, dtype=np.float32)
    fired = 0
    for _ in range(200):
        result = client.act(observation, policy=SAFE, explain=True)
        assert result.explanation is not None
        rule_fires = observation[0] < -1.8 and observation[1] < 0.0
        assert bool(result.explanation.rules_fired) == rule_fires
        if rule_fires:
            fired += 1
            assert result.action == 1
        observation, _, terminated, truncated, _ = env.step(result.action)
        if terminated or truncated:
            break
    assert fired > 0


CONFIG = {
    "policies": {
        "cartpole-dqn": {
            "rules": [
                {
                    "name": "lean-right",
                    "when": {"feature": 2, "op": ">", "value": 0.1},
                    "forbid": [1],
                },
                {
                    "name": "far-right",
                    "when": {"feature": 0, "op": ">", "value": 2.0},
                    "forbid": [0],
                },
            ],
            "fallback_action": 0,
        },
        "gridworld-qlearning": {
            "rules": [{"name": "everything", "forbid": [0, 1, 2, 3]}],
        },
        "cartpole-dqn-safe": {"rules": [{"name": "broken", "forbid": [5]}]},
    }
}


@pytest.fixture(scope="module")
def configured(
    bundled_repo: Path, tmp_path_factory: pytest.TempPathFactory
) -> Iterator[LocalServer]:
    path = tmp_path_factory.mktemp("safety") / "safety.yaml"
    path.write_text(yaml.safe_dump(CONFIG), encoding="utf-8")
    with LocalServer(bundled_repo, extra_args=("--safety-config", str(path))) as running:
        yield running


def test_safety_config_fallback_failed_precondition_and_refused_policy(
    configured: LocalServer,
) -> None:
    with Client(configured.target) as client:
        client.wait_ready()
        names = [p.name for p in client.list_policies()]
        assert names == ["cartpole-dqn", "gridworld-qlearning"]  # the invalid rule refused one
        result = client.act([2.5, 0.0, 0.15, 0.0], policy="cartpole-dqn")
        assert (result.action, result.fallback, result.propensity) == (0, True, 1.0)
        assert client.act([0.0, 0.0, 0.15, 0.0], policy="cartpole-dqn").action == 0
        with pytest.raises(RemoteError) as error:
            client.act([3.0], policy="gridworld-qlearning")
        assert error.value.code == "FAILED_PRECONDITION"
        assert "rule 'everything' forbids [0, 1, 2, 3]" in error.value.details
    text = scrape(configured)
    assert metric(text, "agentserve_safety_fallbacks_total", policy="cartpole-dqn") == 1
    assert metric(text, "agentserve_policy_load_failures_total", policy="_unknown") == 1
    log = configured.log_path.read_text()
    assert "safety config of policy 'cartpole-dqn-safe'.rules[0].forbid: action 5" in log
