"""The policy-gradient learners fed as the service feeds them: the episodes of several simulators
interleaved in one stream (episode keys), and actions chosen by an older policy (recorded
log-probabilities, importance-weighted with the weight truncated at 1)."""

from __future__ import annotations

from dataclasses import replace

import numpy as np
import pytest
import torch
from learner_cases import make_learner, random_transitions

from trainer.algos.ppo import PPO
from trainer.algos.reinforce import Reinforce
from trainer.core.rollout import RolloutBuffer, compute_gae
from trainer.learner import TransitionBatch


def episodes(seed: int, count: int) -> list[dict[str, np.ndarray]]:
    """Random episodes: rewards, values, next values, terminated / truncated at the end (or
    neither: the episode goes on past the rollout)."""
    rng = np.random.default_rng(seed)
    out = []
    for _ in range(count):
        length = int(rng.integers(1, 12))
        ending = rng.choice(["terminated", "truncated", "open"])
        done = np.zeros(length, np.bool_)
        out.append(
            {
                "rewards": rng.normal(size=length).astype(np.float32),
                "values": rng.normal(size=length).astype(np.float32),
                "next_values": rng.normal(size=length).astype(np.float32),
                "terminated": np.concatenate([done[:-1], [ending == "terminated"]]),
                "truncated": np.concatenate([done[:-1], [ending == "truncated"]]),
            }
        )
    return out


def column_gae(episode: dict[str, np.ndarray]) -> np.ndarray:
    """GAE of one episode alone, as one env column."""
    advantages, _ = compute_gae(
        *(episode[k][:, None] for k in ("rewards", "values", "next_values")),
        episode["terminated"][:, None],
        episode["truncated"][:, None],
        gamma=0.9,
        gae_lambda=0.8,
    )
    return advantages[:, 0]


@pytest.mark.parametrize("seed", range(5))
def test_interleaved_episodes_get_the_advantages_they_would_get_alone(seed: int) -> None:
    parts = episodes(seed, count=6)
    rng = np.random.default_rng(seed + 100)
    # Interleave: repeatedly take the next step of a random episode that has steps left.
    cursors = [0] * len(parts)
    order: list[tuple[int, int]] = []
    while len(order) < sum(len(p["rewards"]) for p in parts):
        live = [i for i, p in enumerate(parts) if cursors[i] < len(p["rewards"])]
        i = int(rng.choice(live))
        order.append((i, cursors[i]))
        cursors[i] += 1
    stream = {k: np.array([parts[i][k][t] for i, t in order])[:, None] for k in parts[0]}
    keys = np.array([1000 + i for i, _ in order], np.int64)[:, None]
    advantages, returns = compute_gae(
        stream["rewards"],
        stream["values"],
        stream["next_values"],
        stream["terminated"],
        stream["truncated"],
        gamma=0.9,
        gae_lambda=0.8,
        keys_TN=keys,
    )
    alone = [column_gae(p) for p in parts]
    expected = np.array([alone[i][t] for i, t in order], np.float32)
    np.testing.assert_allclose(advantages[:, 0], expected, rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(returns, advantages + stream["values"], rtol=1e-6)


def test_keys_equal_to_the_env_columns_change_nothing() -> None:
    rng = np.random.default_rng(0)
    shape = (9, 3)
    arrays = [rng.normal(size=shape).astype(np.float32) for _ in range(3)]
    terminated = rng.random(shape) < 0.2
    truncated = rng.random(shape) < 0.1
    plain = compute_gae(*arrays, terminated, truncated, 0.99, 0.95)
    keyed = compute_gae(
        *arrays, terminated, truncated, 0.99, 0.95, keys_TN=np.tile(np.arange(3), (9, 1))
    )
    np.testing.assert_allclose(keyed[0], plain[0], rtol=1e-5, atol=1e-6)


def with_keys(batch: TransitionBatch, key: int, log_prob: float | None = None) -> TransitionBatch:
    return replace(
        batch,
        episode_keys=np.array([key], np.int64),
        log_probs=None if log_prob is None else np.array([log_prob], np.float32),
    )


def ended(batch: TransitionBatch, terminated: bool) -> TransitionBatch:
    return replace(batch, terminated=np.array([terminated]), truncated=np.array([False]))


def test_reinforce_keeps_interleaved_episodes_apart() -> None:
    """Two episodes fed in turns end with the same returns as when fed one after the other."""
    steps = random_transitions(make_learner("reinforce"), 10, seed=3)
    first = [ended(b, i == 5) for i, b in enumerate(steps[:6])]
    second = [ended(b, i == 3) for i, b in enumerate(steps[6:])]
    apart = make_learner("reinforce", extra=("batch_episodes=3",))
    assert isinstance(apart, Reinforce)
    for batch in first + second:
        apart.observe(batch)
    interleaved = make_learner("reinforce", extra=("batch_episodes=3",))
    assert isinstance(interleaved, Reinforce)
    turns = [with_keys(b, 7) for b in first]
    others = [with_keys(b, 8) for b in second]
    for i in range(6):
        interleaved.observe(turns[i])
        if i < len(others):
            interleaved.observe(others[i])
    by_length = sorted(apart.finished, key=lambda e: len(e[3]))
    for mine, theirs in zip(
        sorted(interleaved.finished, key=lambda e: len(e[3])), by_length, strict=True
    ):
        for a, b in zip(mine[:4], theirs[:4], strict=True):
            np.testing.assert_array_equal(a, b)


def ppo_after_one_update(recorded: str) -> PPO:
    """A PPO learner after one update on the same rollout of three interleaved episodes, fed with
    recorded log-probabilities that are its own ("own"), those of an acting policy that was sure
    of every action ("stale": mu(a|s) = 1), or none ("none")."""
    learner = make_learner("ppo", seed=4)
    assert isinstance(learner, PPO)
    for t, batch in enumerate(random_transitions(learner, learner.config.n_steps, seed=5)):
        log_prob = None
        if recorded == "own":
            with torch.no_grad():
                params = learner.net.policy(torch.from_numpy(batch.observations))
                masks = None if batch.action_masks is None else torch.from_numpy(batch.action_masks)
                log_prob = float(
                    learner.head.log_prob(params, torch.from_numpy(batch.actions), masks)[0]
                )
        elif recorded == "stale":
            log_prob = 0.0
        learner.observe(with_keys(batch, key=t % 3, log_prob=log_prob))
    assert learner.num_updates > 0
    return learner


def parameters(learner: PPO) -> torch.Tensor:
    return torch.cat([p.detach().reshape(-1) for p in learner.net.parameters()])


def test_ppo_with_its_own_log_probabilities_recorded_learns_as_without_them() -> None:
    """Weights min(1, pi_old / mu) are 1 when mu = pi_old: the same update as when the learner
    takes its own policy for the acting one; a stale acting policy changes the update."""
    own = parameters(ppo_after_one_update("own"))
    # (mu computed row by row, pi_old in one batch: equal up to float rounding)
    torch.testing.assert_close(own, parameters(ppo_after_one_update("none")), rtol=0, atol=1e-6)
    assert not torch.equal(own, parameters(ppo_after_one_update("stale")))


def test_behavior_weights_are_truncated_importance_ratios() -> None:
    buffer = RolloutBuffer(4, obs_size=1, mask_width=2)
    observation = np.zeros((1, 1), np.float32)
    recorded = [np.log(0.5), np.log(0.1), None, np.log(0.9)]
    for log_mu in recorded:
        buffer.add(
            observation,
            np.zeros(1, np.int64),
            np.zeros(1, np.float32),
            observation,
            np.zeros(1, np.bool_),
            np.zeros(1, np.bool_),
            np.ones((1, 2), np.bool_),
            None if log_mu is None else np.array([log_mu], np.float32),
            np.array([0], np.int64),
        )
    buffer.log_probs_TN[:, 0] = np.log([0.25, 0.4, 0.3, 0.9])  # pi_old, as evaluate fills it
    weights = buffer.behavior_weights()
    assert weights is not None
    np.testing.assert_allclose(weights, [0.5, 1.0, 1.0, 1.0], rtol=1e-6)
    buffer.reset()
    assert buffer.episode_keys() is None
