"""The bandit learners' own rules: sample averages, UCB1's index, Thompson's probabilities,
LinUCB's ridge regressions (the generic learner tests in test_learners.py cover the rest)."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from learner_cases import CASES, make_learner, module_outputs

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, DiscreteSpec
from trainer import registry
from trainer.algos.epsilon_greedy import EpsilonGreedy
from trainer.algos.linucb import LinUCB
from trainer.algos.thompson import Thompson, best_arm_probabilities_np
from trainer.algos.ucb1 import UCB1
from trainer.core.bandits import TableBandit, argmax_random_ties, unique_runs
from trainer.core.config import resolve
from trainer.envs import make_env
from trainer.learner import Learner, TransitionBatch

ONE_STATE = np.zeros((1, 1), dtype=np.float32)


def pull(
    learner: Learner, actions: list[int], rewards: list[float], states: list[int] | None = None
) -> dict[str, float]:
    """One batch of transitions (bandits ignore the next observation)."""
    n = len(actions)
    observations = np.array(states or [0] * n, dtype=np.float32).reshape(n, 1)
    return learner.observe(
        TransitionBatch(
            observations=observations,
            actions=np.array(actions, dtype=np.int64),
            rewards=np.array(rewards, dtype=np.float32),
            next_observations=observations,
            terminated=np.zeros(n, dtype=np.bool_),
            truncated=np.zeros(n, dtype=np.bool_),
        )
    )


def table_learner(algorithm: str, *overrides: str, states: int = 1, arms: int = 4) -> TableBandit:
    cls = registry.get(algorithm)
    spec = resolve(algorithm, cls.config_class, "agentserve/KArmedTestbed-v0", list(overrides))
    learner = cls(DiscreteSpec(states), DiscreteSpec(arms), spec.config, seed=0)
    assert isinstance(learner, TableBandit)
    return learner


def epsilon_greedy(*overrides: str, states: int = 1) -> EpsilonGreedy:
    learner = table_learner("epsilon_greedy", *overrides, states=states)
    assert isinstance(learner, EpsilonGreedy)
    return learner


# -- epsilon-greedy ------------------------------------------------------------------------------


def test_epsilon_greedy_sample_averages() -> None:
    learner = epsilon_greedy("initial_value=5.0")
    np.testing.assert_array_equal(learner.estimates[0], 5.0)  # optimistic start
    for reward in (1.0, 2.0, 3.0, 6.0):
        pull(learner, [2], [reward])
    assert learner.estimates[0, 2] == pytest.approx(3.0)  # the first pull replaced the 5
    assert learner.counts[0].tolist() == [0, 0, 4, 0]
    np.testing.assert_array_equal(learner.estimates[0, [0, 1, 3]], 5.0)


def test_epsilon_greedy_constant_step_size_weights_recent_rewards() -> None:
    learner = epsilon_greedy("step_size=0.5", "initial_value=4.0")
    for reward in (0.0, 2.0):
        pull(learner, [1], [reward])
    assert learner.estimates[0, 1] == pytest.approx((4.0 * 0.5 + 0.0) * 0.5 + 2.0 * 0.5)


def test_epsilon_greedy_batch_with_repeats_equals_one_by_one() -> None:
    batched = epsilon_greedy("step_size=0.3", states=2)
    single = epsilon_greedy("step_size=0.3", states=2)
    actions, rewards, states = (
        [1, 1, 0, 1, 1, 2],
        [1.0, -2.0, 0.5, 4.0, 3.0, 1.0],
        [0, 0, 1, 1, 0, 0],
    )
    pull(batched, actions, rewards, states)
    for a, r, s in zip(actions, rewards, states, strict=True):
        pull(single, [a], [r], [s])
    np.testing.assert_allclose(batched.estimates, single.estimates, rtol=1e-12)
    runs = unique_runs(np.array([3, 3, 1, 4, 3, 1]))
    assert [(r.start, r.stop) for r in runs] == [(0, 1), (1, 4), (4, 6)]


def test_epsilon_greedy_propensities_follow_epsilon_over_allowed_arms() -> None:
    learner = table_learner("epsilon_greedy", "epsilon=0.3")
    pull(learner, [3], [1.0])
    mask = np.array([[True, False, True, True]])
    batch = learner.act(np.repeat(ONE_STATE, 6000, axis=0), np.repeat(mask, 6000, axis=0), False)
    assert not (batch.actions == 1).any()
    expected = {0: 0.1, 2: 0.1, 3: 0.8}
    for arm, probability in expected.items():
        assert np.mean(batch.actions == arm) == pytest.approx(probability, abs=0.02)
        np.testing.assert_allclose(batch.propensities[batch.actions == arm], probability, 1e-6)


# -- UCB1 ----------------------------------------------------------------------------------------


def test_ucb1_pulls_every_untried_allowed_arm_first() -> None:
    learner = table_learner("ucb1", arms=6)
    mask = np.array([[True, True, False, True, True, True]])
    pulled: list[int] = []
    for _ in range(5):
        batch = learner.act(ONE_STATE, mask, deterministic=False)
        assert batch.propensities[0] == pytest.approx(1.0 / (5 - len(pulled)))
        pulled.append(int(batch.actions[0]))
        pull(learner, pulled[-1:], [10.0])  # a high reward must not keep it from moving on
    assert sorted(pulled) == [0, 1, 3, 4, 5]


def test_ucb1_breaks_ties_between_untried_arms_at_random() -> None:
    learner = table_learner("ucb1", arms=6)
    pull(learner, [1], [0.0])
    mask = np.array([[True, True, False, True, True, True]])
    many = np.repeat(ONE_STATE, 8000, axis=0)
    batch = learner.act(many, np.repeat(mask, len(many), axis=0), deterministic=False)
    frequencies = np.bincount(batch.actions, minlength=6) / len(many)
    np.testing.assert_allclose(frequencies, [0.25, 0.0, 0.0, 0.25, 0.25, 0.25], atol=0.025)
    np.testing.assert_array_equal(batch.propensities, 0.25)


def test_ucb1_index_is_sutton_barto_equation_2_10() -> None:
    learner = table_learner("ucb1", "c=2.0", arms=3)
    assert isinstance(learner, UCB1)
    pull(learner, [0, 0, 0, 1, 2, 2], [1.0, 2.0, 3.0, 1.5, 0.0, 0.5])
    t = 7  # six pulls made: the next is step 7
    expected = [
        2.0 + 2 * math.sqrt(math.log(t) / 3),
        1.5 + 2 * math.sqrt(math.log(t) / 1),
        0.25 + 2 * math.sqrt(math.log(t) / 2),
    ]
    np.testing.assert_allclose(learner.ucb_scores(np.array([0]))[0], expected)
    assert learner.act(ONE_STATE, None, deterministic=False).actions[0] == 1  # the bonus wins
    greedy = learner.act(ONE_STATE, None, deterministic=True)
    assert greedy.actions[0] == 0  # exploiting: the best estimate
    assert greedy.values is not None
    np.testing.assert_allclose(greedy.values, np.array([[2.0, 1.5, 0.25]]))
    allowed = np.array([[True, False, True]])
    assert learner.act(ONE_STATE, allowed, deterministic=False).actions[0] == 0


def test_ucb1_serves_the_greedy_arm_of_its_estimates() -> None:
    learner = table_learner("ucb1", arms=3)
    pull(learner, [0, 1, 2], [0.5, 2.0, 1.0])
    masks = np.array([[True, True, True], [True, False, True], [False, False, True]])
    greedy, probabilities, values = module_outputs(
        learner.policy_module(), np.zeros((3, 1), np.float32), masks
    )
    assert greedy.tolist() == [1, 2, 2]
    np.testing.assert_array_equal(probabilities, np.eye(3, dtype=np.float32)[[1, 2, 2]])
    np.testing.assert_allclose(values, [[0.5, 2.0, 1.0]] * 3)


def test_argmax_random_ties_is_uniform_over_tied_allowed_arms() -> None:
    rng = np.random.default_rng(0)
    scores = np.repeat([[1.0, 3.0, 3.0, np.inf, np.inf, 0.0]], 6000, axis=0)
    masks = np.repeat([[True, True, True, True, True, False]], 6000, axis=0)
    actions, propensities = argmax_random_ties(rng, scores, masks)
    assert set(actions.tolist()) == {3, 4}
    assert np.mean(actions == 3) == pytest.approx(0.5, abs=0.03)
    np.testing.assert_array_equal(propensities, 0.5)
    masks[:, 3:5] = False
    actions, propensities = argmax_random_ties(rng, scores, masks)
    assert set(actions.tolist()) == {1, 2}
    masks[:, :5] = False
    masks[:, 5] = True
    assert set(argmax_random_ties(rng, scores, masks)[0].tolist()) == {5}


# -- Thompson sampling ---------------------------------------------------------------------------


def thompson(*overrides: str, arms: int = 5) -> Thompson:
    learner = table_learner("thompson", *overrides, arms=arms)
    assert isinstance(learner, Thompson)
    return learner


def monte_carlo_best(draws_MA: np.ndarray, mask_A: np.ndarray) -> np.ndarray:
    draws_MA = np.where(mask_A, draws_MA, -np.inf)
    return np.bincount(draws_MA.argmax(axis=1), minlength=draws_MA.shape[1]) / len(draws_MA)


@pytest.mark.parametrize("prior", ["gaussian", "beta"])
def test_thompson_probabilities_match_posterior_sampling(prior: str) -> None:
    learner = thompson(f"prior={prior}", "prior_std=1.0", "reward_std=1.0")
    rng = np.random.default_rng(1)
    counts = np.array([3, 10, 30, 0, 12])
    successes = np.array([1, 6, 16, 0, 7])
    rewards = [float(i < s) for c, s in zip(counts, successes, strict=True) for i in range(c)]
    pull(learner, [a for a, c in enumerate(counts) for _ in range(c)], rewards)
    if prior == "beta":
        draws = rng.beta(1 + successes, 1 + counts - successes, size=(400_000, 5))
        np.testing.assert_allclose(
            learner.posterior_means(np.array([0]))[0], (1 + successes) / (2 + counts), rtol=1e-6
        )
    else:
        precision = 1.0 + counts
        means = successes / precision
        np.testing.assert_allclose(learner.posterior_means(np.array([0]))[0], means, rtol=1e-6)
        draws = rng.normal(means, 1 / np.sqrt(precision), size=(400_000, 5))
    module = learner.policy_module()
    for mask in ([True] * 5, [True, False, True, False, True], [False, True, False, False, False]):
        mask_A = np.array(mask)
        _, probabilities, _ = module_outputs(module, ONE_STATE, mask_A[None])
        np.testing.assert_allclose(probabilities[0], monte_carlo_best(draws, mask_A), atol=4e-3)
        assert (probabilities[0][~mask_A] == 0).all()
        assert probabilities[0].sum() == pytest.approx(1.0, abs=1e-6)
        acting = best_arm_probabilities_np(learner.posterior_mass(np.array([0])), mask_A[None])
        np.testing.assert_allclose(acting[0], probabilities[0], atol=1e-6)


def test_thompson_acts_with_the_probability_each_arm_is_best() -> None:
    learner = thompson(arms=4)
    pull(learner, [0, 1, 1, 2, 3], [0.2, 0.9, 1.1, 0.1, -1.0])
    mask = np.array([[True, True, False, True]])
    many = np.repeat(ONE_STATE, 20_000, axis=0)
    batch = learner.act(many, np.repeat(mask, len(many), axis=0), deterministic=False)
    _, probabilities, means = module_outputs(learner.policy_module(), ONE_STATE, mask)
    assert not (batch.actions == 2).any()
    frequencies = np.bincount(batch.actions, minlength=4) / len(many)
    np.testing.assert_allclose(frequencies, probabilities[0], atol=0.015)
    np.testing.assert_allclose(batch.propensities, probabilities[0][batch.actions], atol=1e-6)
    deterministic = learner.act(ONE_STATE, mask, deterministic=True)
    assert deterministic.actions[0] == int(np.argmax(np.where(mask[0], means[0], -np.inf)))


def test_thompson_beta_prior_refuses_rewards_outside_0_1() -> None:
    learner = thompson("prior=beta")
    pull(learner, [0, 1], [0.0, 1.0])
    with pytest.raises(ConfigError, match=r"prior=beta needs rewards in \[0, 1\]"):
        pull(learner, [0], [1.5])
    assert learner.num_steps == 2


def test_thompson_sharp_posteriors_still_give_a_distribution() -> None:
    learner = thompson(arms=3)
    pull(learner, [0] * 5000 + [1] * 5000 + [2], [0.30] * 5000 + [0.31] * 5000 + [5.0])
    masks = np.array([[True, True, True], [True, True, False], [True, False, False]])
    _, probabilities, _ = module_outputs(
        learner.policy_module(), np.zeros((3, 1), np.float32), masks
    )
    assert np.isfinite(probabilities).all()
    np.testing.assert_allclose(probabilities.sum(axis=1), 1.0, atol=1e-6)
    assert probabilities[0, 2] > 0.9  # one pull of 5.0 under a N(0, 1) prior: most likely best
    assert probabilities[1, 1] > 0.6  # 0.31 vs 0.30 with std ~0.014 each
    assert probabilities[2].tolist() == [1.0, 0.0, 0.0]


# -- LinUCB --------------------------------------------------------------------------------------


def observe_context(learner: LinUCB, context_D: np.ndarray, action: int, reward: float) -> None:
    context_1D = np.asarray(context_D, dtype=np.float32).reshape(1, -1)
    learner.observe(
        TransitionBatch(
            observations=context_1D,
            actions=np.array([action], dtype=np.int64),
            rewards=np.array([reward], dtype=np.float32),
            next_observations=context_1D,
            terminated=np.zeros(1, dtype=np.bool_),
            truncated=np.zeros(1, dtype=np.bool_),
        )
    )


def linucb(*overrides: str, dim: int = 3, arms: int = 3) -> LinUCB:
    cls = registry.get("linucb")
    spec = resolve("linucb", cls.config_class, "agentserve/ContextualBandit-v0", list(overrides))
    space = BoxSpec((dim,), (-5.0,) * dim, (5.0,) * dim)
    learner = cls(space, DiscreteSpec(arms), spec.config, seed=0)
    assert isinstance(learner, LinUCB)
    return learner


def test_linucb_scores_are_ridge_estimate_plus_bonus() -> None:
    learner = linucb("alpha=0.7", "ridge=2.0")
    rng = np.random.default_rng(2)
    contexts = rng.normal(size=(40, 3)).astype(np.float32)
    actions = rng.integers(3, size=40)
    rewards = rng.normal(size=40).astype(np.float32)
    for x, a, r in zip(contexts, actions, rewards, strict=True):
        observe_context(learner, x, int(a), float(r))
    probe = rng.normal(size=(5, 3)).astype(np.float32)
    expected = np.empty((5, 3))
    for arm in range(3):
        chosen = actions == arm
        design = 2.0 * np.eye(3) + contexts[chosen].T.astype(np.float64) @ contexts[chosen]
        theta = np.linalg.solve(design, contexts[chosen].T @ rewards[chosen].astype(np.float64))
        bonus = np.sqrt(np.einsum("bd,de,be->b", probe, np.linalg.inv(design), probe))
        expected[:, arm] = probe @ theta + 0.7 * bonus
    np.testing.assert_allclose(learner.scores(probe), expected, rtol=1e-4, atol=1e-5)
    _, _, values = module_outputs(learner.policy_module(), probe, np.ones((5, 3), bool))
    np.testing.assert_allclose(values, expected, rtol=1e-4, atol=1e-5)


def test_linucb_learns_the_best_arm_of_a_fixed_context() -> None:
    learner = linucb(dim=2)
    theta = np.array([[1.0, 0.0], [0.0, 1.0], [0.7, 0.7]])
    context = np.array([[0.6, 0.8]], dtype=np.float32)  # arm rewards 0.6, 0.8, 0.98
    rng = np.random.default_rng(3)
    for noise in rng.normal(0.0, 0.1, size=300):
        action = int(learner.act(context, None, deterministic=False).actions[0])
        observe_context(learner, context[0], action, float(theta[action] @ context[0]) + noise)
    assert learner.act(context, None, deterministic=True).actions[0] == 2
    predictions = (context.astype(np.float64) @ learner.theta.numpy().T.astype(np.float64))[0]
    assert predictions[2] == pytest.approx(0.98, abs=0.05)
    allowed = np.array([[True, True, False]])
    masked = learner.act(context, allowed, deterministic=True)
    assert masked.actions[0] == int(np.argmax(learner.scores(context)[0, :2]))
    greedy, probabilities, _ = module_outputs(learner.policy_module(), context, allowed)
    assert greedy[0] == masked.actions[0]
    assert probabilities[0].tolist() == np.eye(3)[masked.actions[0]].tolist()


# -- spaces and configs --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("algorithm", "observation_space", "fragment"),
    [
        ("epsilon_greedy", BoxSpec((2,), (0.0, 0.0), (1.0, 1.0)), "Discrete observation"),
        ("ucb1", BoxSpec((2,), (0.0, 0.0), (1.0, 1.0)), "use linucb"),
        ("thompson", DiscreteSpec(100_000), "too large"),
        ("linucb", DiscreteSpec(1), "Box observation"),
    ],
)
def test_unsupported_spaces_are_config_errors(
    algorithm: str, observation_space: BoxSpec | DiscreteSpec, fragment: str
) -> None:
    cls = registry.get(algorithm)
    with pytest.raises(ConfigError, match=fragment):
        cls(observation_space, DiscreteSpec(4), cls.config_class(), seed=0)
    good_observation_space = BoxSpec((1,), (0.0,), (1.0,)) if algorithm == "linucb" else None
    with pytest.raises(ConfigError, match="Discrete action"):
        cls.check_spaces(good_observation_space or DiscreteSpec(1), BoxSpec((1,), (0.0,), (1.0,)))


@pytest.mark.parametrize(
    ("algorithm", "override", "fragment"),
    [
        ("epsilon_greedy", "epsilon=1.5", "epsilon"),
        ("epsilon_greedy", "step_size=0", "step_size"),
        ("ucb1", "c=-1", "c must be"),
        ("thompson", "prior=poisson", "prior must be one of gaussian, beta"),
        ("thompson", "reward_std=0", "reward_std"),
        ("linucb", "ridge=0", "ridge"),
        ("linucb", "alpha=-0.1", "alpha"),
    ],
)
def test_bad_hyperparameters_are_config_errors(
    algorithm: str, override: str, fragment: str
) -> None:
    cls = registry.get(algorithm)
    with pytest.raises(ConfigError, match=fragment):
        resolve(algorithm, cls.config_class, "agentserve/KArmedTestbed-v0", [override])


def test_independent_states_do_not_share_statistics() -> None:
    wide = table_learner("ucb1", states=3, arms=2)
    pull(wide, [0, 1, 0], [1.0, 2.0, 3.0], states=[2, 2, 0])
    assert wide.counts.tolist() == [[1, 0], [0, 0], [1, 1]]
    values = wide.act(np.array([[0.0], [1.0], [2.0]], np.float32), None, True).values
    assert values is not None
    np.testing.assert_allclose(values, [[3.0, 0.0], [0.0, 0.0], [1.0, 2.0]])
    table = wide.policy_module().state_dict()["q_table"]
    assert torch.equal(table, torch.tensor([[3.0, 0.0], [0.0, 0.0], [1.0, 2.0]]))


@pytest.mark.parametrize("algorithm", ["epsilon_greedy", "ucb1", "thompson", "linucb"])
def test_learner_draws_differ_from_the_env_draws_of_the_same_seed(algorithm: str) -> None:
    # default_rng(seed) would replay an env's draws after reset(seed): Thompson's arm choice and
    # a Bernoulli reward would then share one uniform number, and learning would go wrong.
    learner = make_learner(algorithm, seed=3)
    env = make_env(CASES[algorithm].env_id)
    env.reset(seed=3)
    env_draws = env.unwrapped.np_random.random(8)
    assert not np.isin(learner.rng.random(8), env_draws).any()
