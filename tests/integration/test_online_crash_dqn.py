"""Durability for a neural learner: DQN learning CartPole online through gRPC while the server
is killed with SIGKILL at random moments, ten times. After recovery, the replay buffer holds
exactly the acknowledged transitions (observation, action, reward, next observation, terminal),
each once."""

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
from trainer.envs import make_env

ROUNDS = 10
Row = tuple[tuple[float, ...], int, float, tuple[float, ...], bool]


def test_replay_holds_exactly_the_acknowledged_transitions(tmp_path: Path) -> None:
    repo = tmp_path / "models"
    # learning_starts beyond the run: no gradient steps, a faster test.
    name = untrained_policy(repo, "dqn", "CartPole-v1", "learning_starts=100000")
    args = ("--online", name, "--snapshot-every", "60", "--watch-interval", "0")
    chance = random.Random(11)
    env = make_env("CartPole-v1")
    acknowledged: dict[str, Row] = {}
    pending: dict[str, tuple[str, Row]] = {}  # feedback id -> (episode, row)
    episode_counter = 0
    # One more start after the last kill, only to retry what the kill left unacknowledged (the
    # server may have made it durable just before dying: the retry settles which).
    for round_ in range(ROUNDS + 1):
        with (
            LocalServer(repo, extra_args=args) as server,
            Client(server.target, policy=name, timeout=5) as client,
        ):
            for feedback_id, (episode, row) in list(pending.items()):
                try:
                    client.feedback(
                        episode,
                        row[2],
                        terminated=row[4],
                        next_observation=row[3],
                        feedback_id=feedback_id,
                    )
                    acknowledged[feedback_id] = row
                except RemoteError as error:
                    assert error.code == "NOT_FOUND", error  # noqa: PT017 (the decision died)
                del pending[feedback_id]
            if round_ == ROUNDS:
                break
            observation, _ = env.reset(seed=round_)
            episode = f"r{round_}-e{episode_counter}"
            killer = threading.Timer(chance.uniform(0.4, 1.5), server.kill)
            killer.start()
            step = 0
            try:
                while True:
                    decision = client.act(observation, deterministic=False, episode_id=episode)
                    following, reward, terminated, truncated, _ = env.step(decision.action)
                    row: Row = (
                        tuple(np.float32(observation).tolist()),
                        int(decision.action),
                        float(reward),
                        tuple(np.float32(following).tolist()),
                        bool(terminated),
                    )
                    feedback_id = f"{episode}-{step}"
                    pending[feedback_id] = (episode, row)
                    client.feedback(
                        episode,
                        float(reward),
                        terminated=terminated,
                        truncated=truncated,
                        next_observation=following,
                        feedback_id=feedback_id,
                    )
                    acknowledged[feedback_id] = row
                    del pending[feedback_id]
                    step += 1
                    observation = following
                    if terminated or truncated:
                        episode_counter += 1
                        episode = f"r{round_}-e{episode_counter}"
                        observation, _ = env.reset()
            except RemoteError:
                pass  # the kill
            killer.join()
    assert len(acknowledged) > 100
    versions = [p for p in (repo / name).iterdir() if p.name.isdigit()]
    manifest = load_manifest(max(versions, key=lambda p: int(p.name))).manifest
    recovered = OnlinePolicy(manifest, repo / ".state", repo, Metrics())
    try:
        replay = recovered.learner.replay  # type: ignore[attr-defined]
        size = replay.size
        stored = sorted(
            (
                tuple(replay.observations[i].tolist()),
                int(replay.actions[i]),
                float(replay.rewards[i]),
                tuple(replay.next_observations[i].tolist()),
                bool(replay.terminated[i]),
            )
            for i in range(size)
        )
    finally:
        recovered.close()
    assert stored == sorted(acknowledged.values())
