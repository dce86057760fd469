"""Neural learners learned purely online through the gRPC API (slow; `make learning`): an
untrained export served with --online, simulators stepping CartPole-v1 with Act (episode ids)
and Feedback, until the greedy policy served by the same learner reaches the issue's bar over 10
evaluation episodes. Prints the env steps and wall time it took.

PPO is driven by four simulators taking turns, so the episodes of all four arrive interleaved in
one feedback stream while the learner updates in its own thread: its advantages must follow each
episode, and actions chosen by the policy before an update are importance-weighted."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pytest
from artifact_cases import untrained_policy

from agentserve import Client
from agentserve.local_server import LocalServer
from trainer.envs import make_env

BUDGET = 150_000
EVAL_EVERY = 5_000
CASES = {
    # algorithm: (preset overrides, simulators, greedy mean to reach)
    "dqn": ((), 1, 475.0),
    # One stream of feedback: longer rollouts than the 8-env preset's.
    "ppo": (("n_steps=512", "batch_size=64", "n_epochs=10"), 4, 400.0),
}


def greedy_return(client: Client, episodes: int, seed: int) -> float:
    env = make_env("CartPole-v1")
    returns = []
    for episode in range(episodes):
        observation, _ = env.reset(seed=seed + episode)
        total, done = 0.0, False
        while not done:
            action = client.act(observation).action  # no episode id: nothing recorded
            observation, reward, terminated, truncated, _ = env.step(action)
            total += float(reward)
            done = terminated or truncated
        returns.append(total)
    return float(np.mean(returns))


@pytest.mark.slow
@pytest.mark.parametrize("algorithm", list(CASES))
def test_learns_cartpole_online(algorithm: str, tmp_path: Path) -> None:
    overrides, simulators, bar = CASES[algorithm]
    repo = tmp_path / "models"
    name = untrained_policy(repo, algorithm, "CartPole-v1", *overrides)
    args = ("--online", name, "--snapshot-every", "10000", "--watch-interval", "0")
    started = time.monotonic()
    with (
        LocalServer(repo, extra_args=args) as server,
        Client(server.target, policy=name, timeout=60) as client,
    ):
        initial = greedy_return(client, 10, seed=0)
        print(f"untrained greedy mean {initial:.1f}")
        envs = [make_env("CartPole-v1") for _ in range(simulators)]
        observations = [env.reset(seed=i)[0] for i, env in enumerate(envs)]
        episodes = [f"sim{i}-ep0" for i in range(simulators)]
        finished, reached, best = 0, None, 0.0
        for step in range(1, BUDGET + 1):
            i = step % simulators  # the simulators take turns: their episodes interleave
            decision = client.act(observations[i], deterministic=False, episode_id=episodes[i])
            observations[i], reward, terminated, truncated, _ = envs[i].step(decision.action)
            client.feedback(
                episodes[i],
                float(reward),
                terminated=terminated,
                truncated=truncated,
                next_observation=observations[i],
            )
            if terminated or truncated:
                finished += 1
                episodes[i] = f"sim{i}-ep{finished}"
                observations[i], _ = envs[i].reset()
            if step % EVAL_EVERY == 0:
                best = max(best, greedy_return(client, 10, seed=10_000 + step))
                print(f"step {step}: greedy mean {best:.1f} ({time.monotonic() - started:.0f} s)")
                if best >= bar:
                    reached = step
                    break
    wall = time.monotonic() - started
    print(f"{algorithm} online: reached {best:.1f} at {reached} env steps in {wall:.0f} s")
    assert initial < 100, f"the untrained policy already scores {initial:.1f}"
    assert reached is not None, f"best greedy mean {best:.1f} after {BUDGET} steps"
