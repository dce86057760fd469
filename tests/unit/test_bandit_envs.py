"""trainer.envs.bandits: the testbed, Bernoulli and contextual bandit environments."""

from __future__ import annotations

import warnings
from typing import Any

import gymnasium as gym
import numpy as np
import pytest
from gymnasium.utils.env_checker import check_env

from agentserve.errors import ConfigError
from trainer.envs import (
    BERNOULLI_BANDIT_ID,
    CONTEXTUAL_BANDIT_ID,
    TESTBED_ID,
    make_env,
)
from trainer.envs.bandits import (
    CONTEXT_BOUND,
    BernoulliBanditEnv,
    ContextualBanditEnv,
    KArmedTestbedEnv,
)

BANDITS = [TESTBED_ID, BERNOULLI_BANDIT_ID, CONTEXTUAL_BANDIT_ID]


@pytest.mark.parametrize("env_id", BANDITS)
@pytest.mark.parametrize("render_mode", [None, "ansi"])
def test_check_env_passes_without_warnings(env_id: str, render_mode: str | None) -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        check_env(gym.make(env_id, render_mode=render_mode).unwrapped)


@pytest.mark.parametrize(
    ("env_id", "observation_space", "arms"),
    [
        (TESTBED_ID, gym.spaces.Discrete(1), 10),
        (BERNOULLI_BANDIT_ID, gym.spaces.Discrete(1), 10),
        (
            CONTEXTUAL_BANDIT_ID,
            gym.spaces.Box(-CONTEXT_BOUND, CONTEXT_BOUND, (5,), np.float32),
            5,
        ),
    ],
)
def test_spaces_and_defaults(env_id: str, observation_space: gym.Space[Any], arms: int) -> None:
    env = make_env(env_id)
    assert env.observation_space == observation_space
    assert env.action_space == gym.spaces.Discrete(arms)


@pytest.mark.parametrize("env_id", BANDITS)
def test_episode_is_steps_pulls_ended_by_truncation(env_id: str) -> None:
    env = make_env(env_id, steps=7)
    env.reset(seed=0)
    ends = []
    for _ in range(7):
        _, reward, terminated, truncated, _ = env.step(env.action_space.sample())
        assert isinstance(reward, float)
        assert not terminated
        ends.append(truncated)
    assert ends == [False] * 6 + [True]


def rollout(env: gym.Env[Any, Any], seed: int, actions: list[int]) -> list[Any]:
    observation, info = env.reset(seed=seed)
    trace: list[Any] = [np.asarray(observation).tolist(), info["expected_rewards"].tolist()]
    for action in actions:
        observation, reward, _, _, info = env.step(action)
        trace += [np.asarray(observation).tolist(), reward, info["regret"]]
    return trace


@pytest.mark.parametrize("env_id", BANDITS)
def test_same_seed_same_problem_and_rewards(env_id: str) -> None:
    actions = [0, 1, 2, 1, 0] * 4
    first = rollout(make_env(env_id), 5, actions)
    assert first == rollout(make_env(env_id), 5, actions)
    assert first != rollout(make_env(env_id), 6, actions)


PROBLEM = {TESTBED_ID: "q_star", BERNOULLI_BANDIT_ID: "probs", CONTEXTUAL_BANDIT_ID: "theta"}


@pytest.mark.parametrize("env_id", BANDITS)
def test_problem_redrawn_at_every_reset_by_default(env_id: str) -> None:
    env = make_env(env_id).unwrapped
    problems = []
    for seed in (1, 2, None):
        env.reset(seed=seed)
        problems.append(np.copy(getattr(env, PROBLEM[env_id])))
    assert not np.array_equal(problems[0], problems[1])
    assert not np.array_equal(problems[1], problems[2])


@pytest.mark.parametrize("env_id", BANDITS)
def test_problem_seed_fixes_the_problem_not_the_rewards(env_id: str) -> None:
    env = make_env(env_id, problem_seed=3).unwrapped
    problems = []
    for seed in (1, 2, None):
        env.reset(seed=seed)
        problems.append(np.copy(getattr(env, PROBLEM[env_id])))
    for problem in problems[1:]:
        np.testing.assert_array_equal(problem, problems[0])
    actions = [0, 1] * 5
    fixed = [rollout(make_env(env_id, problem_seed=3), seed, actions) for seed in (1, 2)]
    assert fixed[0] != fixed[1]


@pytest.mark.parametrize("env_id", BANDITS)
def test_info_names_the_optimal_action_and_the_regret(env_id: str) -> None:
    env = make_env(env_id, k=4)
    _, info = env.reset(seed=0)
    for step in range(40):
        expected = info["expected_rewards"]
        assert expected.shape == (4,)
        assert info["optimal_action"] == int(np.argmax(expected))
        action = step % 4
        _, _, _, _, info = env.step(action)
        assert info["regret"] == pytest.approx(expected.max() - expected[action])
        assert info["regret"] >= 0.0
        assert (info["regret"] == 0.0) == (action == int(np.argmax(expected)))


def test_testbed_rewards_are_gaussian_around_q_star() -> None:
    env = KArmedTestbedEnv(k=3, steps=100_000)
    env.reset(seed=4)
    for arm in range(3):
        rewards = np.array([env.step(np.int64(arm))[1] for _ in range(20_000)])
        assert rewards.mean() == pytest.approx(env.q_star[arm], abs=0.03)
        assert rewards.std() == pytest.approx(1.0, abs=0.03)
    q_stars = np.concatenate([env.reset(seed=s)[1]["expected_rewards"] for s in range(2000)])
    assert q_stars.mean() == pytest.approx(0.0, abs=0.05)
    assert q_stars.std() == pytest.approx(1.0, abs=0.05)


def test_bernoulli_rewards_are_successes_at_the_arm_rate() -> None:
    env = BernoulliBanditEnv(k=3, steps=100_000)
    env.reset(seed=5)
    for arm in range(3):
        rewards = np.array([env.step(np.int64(arm))[1] for _ in range(20_000)])
        assert set(rewards.tolist()) <= {0.0, 1.0}
        assert rewards.mean() == pytest.approx(env.probs[arm], abs=0.015)
    rates = np.concatenate([env.reset(seed=s)[1]["expected_rewards"] for s in range(2000)])
    assert rates.min() >= 0.0 and rates.max() <= 1.0
    assert rates.mean() == pytest.approx(0.5, abs=0.02)


def test_contextual_rewards_are_linear_in_the_context_plus_noise() -> None:
    env = ContextualBanditEnv(k=3, d=4, steps=100_000, noise_std=0.5)
    context, _ = env.reset(seed=6)
    contexts, residuals = [], []
    for step in range(20_000):
        arm = step % 3
        mean = float(env.theta[arm] @ context.astype(np.float64))
        contexts.append(context)
        context, reward, _, _, _ = env.step(np.int64(arm))
        residuals.append(reward - mean)
    assert np.mean(residuals) == pytest.approx(0.0, abs=0.02)
    assert np.std(residuals) == pytest.approx(0.5, abs=0.02)
    assert np.mean(contexts, axis=0) == pytest.approx(np.zeros(4), abs=0.03)
    assert np.std(contexts, axis=0) == pytest.approx(np.ones(4), abs=0.03)
    assert np.abs(contexts).max() <= CONTEXT_BOUND
    thetas = []
    for seed in range(500):
        env.reset(seed=seed)
        thetas.append(env.theta.copy())
    assert np.std(thetas) == pytest.approx(0.5, abs=0.03)  # N(0, 1/d) with d = 4


def test_render_ansi_reports_the_last_pull() -> None:
    env = KArmedTestbedEnv(k=3, steps=5, render_mode="ansi")
    env.reset(seed=0)
    assert env.render() == "pull 0/5\n"
    _, reward, _, _, _ = env.step(np.int64(2))
    assert env.render() == f"pull 1/5: arm 2 paid {reward:.3f}\n"
    assert KArmedTestbedEnv().render() is None


@pytest.mark.parametrize("env_id", BANDITS)
def test_invalid_arm_is_refused(env_id: str) -> None:
    env = make_env(env_id, k=3).unwrapped
    env.reset(seed=0)
    with pytest.raises(ValueError, match="invalid arm"):
        env.step(np.int64(3))


@pytest.mark.parametrize(
    ("env_id", "kwargs", "fragment"),
    [
        (TESTBED_ID, {"k": 0}, "k >= 1"),
        (BERNOULLI_BANDIT_ID, {"steps": 0}, "steps >= 1"),
        (CONTEXTUAL_BANDIT_ID, {"d": 0}, "d >= 1"),
        (CONTEXTUAL_BANDIT_ID, {"noise_std": -1.0}, "noise_std >= 0"),
        (TESTBED_ID, {"arms": 3}, "arms"),
    ],
)
def test_bad_arguments_are_config_errors(
    env_id: str, kwargs: dict[str, Any], fragment: str
) -> None:
    with pytest.raises(ConfigError, match=fragment):
        make_env(env_id, **kwargs)
