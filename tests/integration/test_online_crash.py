"""Durability of online learning: the server is killed with SIGKILL at random moments while a
simulator streams decisions and feedback, then restarted, ten times. Every feedback the server
acknowledged must be in the learner afterwards, exactly once: the simulator retries what was not
acknowledged with the same feedback_id, and the recovered bandit's pull counts must equal the
acknowledged pulls arm by arm."""

from __future__ import annotations

import random
import threading
from pathlib import Path

import numpy as np
from artifact_cases import untrained_policy

from agentserve import Client, RemoteError
from agentserve.local_server import LocalServer
from agentserve.manifest import load_manifest
from service.metrics import Metrics
from service.online.host import OnlinePolicy

ROUNDS = 10


def test_every_acknowledged_feedback_survives_sigkill(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    name = untrained_policy(repo, "ucb1", "agentserve/BernoulliBandit-v0")
    args = ("--online", name, "--snapshot-every", "40", "--watch-interval", "0")
    chance = random.Random(7)
    acknowledged: dict[str, int] = {}  # feedback id -> arm
    unacknowledged: dict[str, tuple[str, int]] = {}  # feedback id -> (episode, arm)
    retry_errors: list[str] = []
    crash_errors: list[str] = []
    # One more start after the last kill, only to retry what the kill left unacknowledged (the
    # server may have made it durable just before dying: the retry settles which).
    for round_ in range(ROUNDS + 1):
        with (
            LocalServer(repo, extra_args=args) as server,
            Client(server.target, policy=name, timeout=5) as client,
        ):
            for feedback_id, (episode, arm) in list(unacknowledged.items()):
                try:
                    client.feedback(
                        episode, 1.0, terminated=True, next_observation=[0], feedback_id=feedback_id
                    )
                    acknowledged[feedback_id] = arm
                except RemoteError as error:  # the decision died with the crash: never applied
                    retry_errors.append(error.code)
                del unacknowledged[feedback_id]
            if round_ == ROUNDS:
                break
            killer = threading.Timer(chance.uniform(0.3, 1.5), server.kill)
            killer.start()
            step = 0
            try:
                while True:
                    episode = f"round{round_}-{step}"
                    decision = client.act([0], deterministic=False, episode_id=episode)
                    unacknowledged[episode] = (episode, int(decision.action))
                    client.feedback(
                        episode, 1.0, terminated=True, next_observation=[0], feedback_id=episode
                    )
                    acknowledged[episode] = int(decision.action)
                    del unacknowledged[episode]
                    step += 1
            except RemoteError as error:
                crash_errors.append(error.code)
            killer.join()
    assert set(retry_errors) <= {"NOT_FOUND"}
    assert len(crash_errors) == ROUNDS
    assert set(crash_errors) <= {"UNAVAILABLE", "DEADLINE_EXCEEDED", "CANCELLED"}
    assert len(acknowledged) > 100
    expected = np.bincount(list(acknowledged.values()), minlength=10)
    manifest = load_manifest(
        max((repo / name).iterdir(), key=lambda p: int(p.name) if p.name.isdigit() else 0)
    ).manifest
    recovered = OnlinePolicy(manifest, repo / ".state", repo, Metrics())
    try:
        counts = recovered.learner.counts[0]  # type: ignore[attr-defined]
        np.testing.assert_array_equal(counts, expected)
    finally:
        recovered.close()
