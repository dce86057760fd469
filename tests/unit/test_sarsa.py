"""SARSA and Expected SARSA: single table updates computed by hand.

Every case updates Q(3, 2) = 0.4 from r = 1 with alpha 0.5 and gamma 0.9, and s' = 5 holds
Q(5, .) = [10, 1, 2, -3]. With epsilon 0.2 the epsilon-greedy policy at s' is
[0.85, 0.05, 0.05, 0.05] over all four actions (expectation 8.5) and [0, 0.1, 0.9, 0] over
actions 1 and 2 alone (expectation 1.9).
"""

from __future__ import annotations

import numpy as np
import pytest
from learner_cases import make_learner

from agentserve.errors import ConfigError
from trainer.algos.qlearning import QLearning
from trainer.algos.sarsa import ExpectedSarsa, Sarsa, expected_value
from trainer.learner import TransitionBatch

ALPHA, GAMMA, EPSILON = 0.5, 0.9, 0.2
Q_NEXT = [10.0, 1.0, 2.0, -3.0]
Q_BEFORE = 0.4
ONLY_1_AND_2 = [False, True, True, False]
FIXED_EPSILON = (
    f"learning_rate={ALPHA}",
    f"gamma={GAMMA}",
    "exploration_fraction=0",
    f"exploration_final_eps={EPSILON}",
)


def learner_for(algorithm: str, extra: tuple[str, ...] = FIXED_EPSILON) -> QLearning:
    learner = make_learner(algorithm, extra=extra)
    assert isinstance(learner, QLearning)
    learner.q_table[5] = Q_NEXT
    learner.q_table[3, 2] = Q_BEFORE
    return learner


def transition(
    next_action: int | None,
    mask: list[bool] | None = None,
    terminated: bool = False,
    truncated: bool = False,
) -> TransitionBatch:
    return TransitionBatch(
        observations=np.array([[3.0]], dtype=np.float32),
        actions=np.array([2]),
        rewards=np.array([1.0], dtype=np.float32),
        next_observations=np.array([[5.0]], dtype=np.float32),
        terminated=np.array([terminated]),
        truncated=np.array([truncated]),
        next_action_masks=None if mask is None else np.array([mask]),
        next_actions=None if next_action is None else np.array([next_action], dtype=np.int64),
    )


def updated(target: float) -> float:
    return Q_BEFORE + ALPHA * (target - Q_BEFORE)


def test_registered_as_table_learners() -> None:
    assert issubclass(Sarsa, QLearning) and issubclass(ExpectedSarsa, QLearning)
    assert (Sarsa.algorithm, ExpectedSarsa.algorithm) == ("sarsa", "expected_sarsa")
    assert Sarsa.config_class is QLearning.config_class
    assert Sarsa.runtimes == ExpectedSarsa.runtimes == ("table", "onnx")


def test_fixed_epsilon_holds_from_the_first_step() -> None:
    learner = learner_for("sarsa")
    assert learner.epsilon == pytest.approx(EPSILON)
    for _ in range(10):
        learner.observe(transition(1))
    assert learner.epsilon == pytest.approx(EPSILON)
    same = learner_for(
        "sarsa", ("exploration_initial_eps=0.3", "exploration_final_eps=0.3", "total_timesteps=5")
    )
    for _ in range(10):
        assert same.epsilon == pytest.approx(0.3)
        same.observe(transition(1))


@pytest.mark.parametrize(
    ("next_action", "mask", "target"),
    [
        (1, None, 1.0 + GAMMA * 1.0),  # Q(s', a'), not the max 10
        (3, None, 1.0 + GAMMA * -3.0),
        (2, ONLY_1_AND_2, 1.0 + GAMMA * 2.0),
    ],
)
def test_sarsa_bootstraps_from_the_action_taken(
    next_action: int, mask: list[bool] | None, target: float
) -> None:
    learner = learner_for("sarsa")
    learner.observe(transition(next_action, mask))
    assert learner.q_table[3, 2] == pytest.approx(updated(target))
    assert (learner.num_steps, learner.num_updates) == (1, 1)


def test_qlearning_takes_the_max_on_the_same_transition() -> None:
    learner = learner_for("qlearning")
    learner.observe(transition(1))
    assert learner.q_table[3, 2] == pytest.approx(updated(1.0 + GAMMA * 10.0))


@pytest.mark.parametrize(
    ("mask", "expectation"),
    [
        (None, 0.85 * 10 + 0.05 * (1 + 2 - 3)),  # = 8.5
        (ONLY_1_AND_2, 0.1 * 1 + 0.9 * 2),  # = 1.9: masked actions get no probability
    ],
)
def test_sarsa_truncated_without_next_action_uses_the_epsilon_greedy_expectation(
    mask: list[bool] | None, expectation: float
) -> None:
    learner = learner_for("sarsa")
    learner.observe(transition(-1, mask, truncated=True))
    assert learner.q_table[3, 2] == pytest.approx(updated(1.0 + GAMMA * expectation))


def test_sarsa_truncated_with_a_next_action_uses_it() -> None:
    learner = learner_for("sarsa")
    learner.observe(transition(1, truncated=True))
    assert learner.q_table[3, 2] == pytest.approx(updated(1.0 + GAMMA * 1.0))


@pytest.mark.parametrize("next_action", [1, -1, None])
@pytest.mark.parametrize(
    ("mask", "expectation"),
    [(None, 8.5), (ONLY_1_AND_2, 1.9), ([False, False, False, True], -3.0)],
)
def test_expected_sarsa_uses_the_epsilon_greedy_expectation(
    next_action: int | None, mask: list[bool] | None, expectation: float
) -> None:
    learner = learner_for("expected_sarsa")
    learner.observe(transition(next_action, mask))
    assert learner.q_table[3, 2] == pytest.approx(updated(1.0 + GAMMA * expectation))


def test_expectation_follows_the_current_epsilon() -> None:
    # Epsilon decays from 1 to 0 over 100 steps: uniform at step 0, greedy from step 100 on.
    decaying = (
        f"learning_rate={ALPHA}",
        f"gamma={GAMMA}",
        "exploration_initial_eps=1.0",
        "exploration_final_eps=0.0",
        "exploration_fraction=1.0",
        "total_timesteps=100",
    )
    learner = learner_for("expected_sarsa", decaying)
    learner.observe(transition(None))
    assert learner.q_table[3, 2] == pytest.approx(updated(1.0 + GAMMA * np.mean(Q_NEXT)))
    learner.num_steps = 100
    learner.q_table[3, 2] = Q_BEFORE
    learner.observe(transition(None))
    assert learner.q_table[3, 2] == pytest.approx(updated(1.0 + GAMMA * 10.0))


@pytest.mark.parametrize("algorithm", ["sarsa", "expected_sarsa"])
@pytest.mark.parametrize("next_action", [-1, 1, None])
def test_terminal_transitions_do_not_bootstrap(algorithm: str, next_action: int | None) -> None:
    learner = learner_for(algorithm)
    learner.observe(transition(next_action, terminated=True))
    assert learner.q_table[3, 2] == pytest.approx(updated(1.0))


@pytest.mark.parametrize("truncated", [False, True])
def test_sarsa_without_next_actions_raises(truncated: bool) -> None:
    learner = learner_for("sarsa")
    before = learner.q_table.copy()
    with pytest.raises(ConfigError, match=r"needs TransitionBatch\.next_actions"):
        learner.observe(transition(None, truncated=truncated))
    np.testing.assert_array_equal(learner.q_table, before)
    assert (learner.num_steps, learner.num_updates) == (0, 0)


@pytest.mark.parametrize(
    ("next_action", "mask", "message"),
    [
        (-1, None, "neither terminated nor truncated"),
        (4, None, "not an action of this space"),
        (-2, None, "not an action of this space"),
        (0, ONLY_1_AND_2, "masked at s'"),
    ],
)
def test_sarsa_rejects_an_impossible_next_action(
    next_action: int, mask: list[bool] | None, message: str
) -> None:
    learner = learner_for("sarsa")
    with pytest.raises(ConfigError, match=message):
        learner.observe(transition(next_action, mask))


def test_sarsa_checks_the_whole_batch_before_updating() -> None:
    learner = learner_for("sarsa")
    before = learner.q_table.copy()
    good, bad = transition(1), transition(-1)
    assert good.next_actions is not None and bad.next_actions is not None
    batch = TransitionBatch(
        observations=np.concatenate([good.observations, bad.observations]),
        actions=np.concatenate([good.actions, bad.actions]),
        rewards=np.concatenate([good.rewards, bad.rewards]),
        next_observations=np.concatenate([good.next_observations, bad.next_observations]),
        terminated=np.array([False, False]),
        truncated=np.array([False, False]),
        next_actions=np.concatenate([good.next_actions, bad.next_actions]),
    )
    with pytest.raises(ConfigError, match="transition 1"):
        learner.observe(batch)
    np.testing.assert_array_equal(learner.q_table, before)


def test_sarsa_rejects_next_actions_of_the_wrong_shape() -> None:
    learner = learner_for("sarsa")
    batch = transition(1)
    wrong = TransitionBatch(
        **{**batch.__dict__, "next_actions": np.array([1, 2], dtype=np.int64)},
    )
    with pytest.raises(ConfigError, match="shape"):
        learner.observe(wrong)


def test_expected_value_with_no_allowed_action_is_zero() -> None:
    q_values = np.array(Q_NEXT, dtype=np.float32)
    assert expected_value(q_values, np.zeros(4, dtype=np.bool_), EPSILON) == 0.0
    assert expected_value(q_values, None, 0.0) == pytest.approx(10.0)
    assert expected_value(q_values, None, 1.0) == pytest.approx(np.mean(Q_NEXT))
