"""Every registered algorithm (each setup of tests/learner_cases.py) learns online through the
gRPC API: one server serves an untrained export of each with --online; a simulator steps each
setup's env with Act (episode ids) and Feedback; every acknowledged transition is learned from
(the updates metric reaches the count, the learner lag returns to 0), and snapshots publish new
versions that later decisions carry in `policy_version`."""

from __future__ import annotations

import re
import time
import urllib.request
from collections.abc import Iterator

import numpy as np
import pytest
from artifact_cases import untrained_policy
from learner_cases import SETUPS

from agentserve import Client
from agentserve.envtools import flat_observation, mask_from_info
from agentserve.local_server import LocalServer
from trainer.envs import make_env

STEPS = 160
SNAPSHOT_EVERY = 60


def policy_name(setup: str) -> str:
    return "online-" + re.sub(r"[^a-z0-9]+", "-", setup)


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalServer]:
    repo = tmp_path_factory.mktemp("online-every") / "models"
    args: list[str] = ["--snapshot-every", str(SNAPSHOT_EVERY), "--watch-interval", "0.2"]
    for setup, case in SETUPS.items():
        name = untrained_policy(
            repo, case.algorithm, case.env_id, *case.overrides, name=policy_name(setup)
        )
        args += ["--online", name]
    with LocalServer(repo, extra_args=tuple(args)) as server:
        yield server


def metric(text: str, name: str, policy: str) -> float:
    found = re.search(rf'^{name}{{policy="{policy}"}} ([0-9.e+-]+)$', text, re.M)
    assert found, (name, policy)
    return float(found.group(1))


@pytest.mark.parametrize("setup", list(SETUPS))
def test_every_algorithm_learns_online_through_the_api(served: LocalServer, setup: str) -> None:
    name = policy_name(setup)
    env = make_env(SETUPS[setup].env_id)
    versions = []
    with Client(served.target, policy=name, timeout=30) as client:
        observation, info = env.reset(seed=0)
        episode = 0
        for step in range(STEPS):
            episode_id = f"e{episode}"
            decision = client.act(
                flat_observation(observation),
                mask_from_info(info),
                deterministic=False,
                episode_id=episode_id,
            )
            versions.append(decision.policy_version)
            action = decision.action
            if isinstance(action, np.ndarray | list):
                space = env.action_space
                action = np.clip(np.asarray(action, np.float32), space.low, space.high)  # type: ignore[attr-defined]
            observation, reward, terminated, truncated, info = env.step(action)
            last = step == STEPS - 1
            ack = client.feedback(
                episode_id,
                float(reward),
                terminated=bool(terminated),
                truncated=bool(truncated or last),
                next_observation=flat_observation(observation),
                next_action_mask=mask_from_info(info),
                feedback_id=f"{name}-{step}",
            )
            assert ack.applied
            if terminated or truncated:
                episode += 1
                observation, info = env.reset()
    deadline = time.monotonic() + 120
    while True:  # the learner catches up in its own thread
        with urllib.request.urlopen(served.metrics_url, timeout=10) as response:
            text = response.read().decode()
        learned = metric(text, "agentserve_online_updates_total", name)
        lag = metric(text, "agentserve_online_learner_lag_transitions", name)
        if (learned, lag) == (STEPS, 0) or time.monotonic() > deadline:
            break
        time.sleep(0.2)
    assert (learned, lag) == (STEPS, 0)
    assert metric(text, "agentserve_online_snapshots_total", name) >= STEPS // SNAPSHOT_EVERY
    assert versions == sorted(versions)  # never backwards
    with Client(served.target, policy=name, timeout=30) as client:
        deadline = time.monotonic() + 120
        observation, info = env.reset(seed=1)
        while time.monotonic() < deadline:  # a snapshot's version is published and served
            decision = client.act(flat_observation(observation), mask_from_info(info))
            if decision.policy_version > 1:
                break
            time.sleep(0.2)
        assert decision.policy_version > 1
