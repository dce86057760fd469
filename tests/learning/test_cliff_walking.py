"""Sutton & Barto's Example 6.6 (slow: `make learning`; the full report: `make bench-cliff`).

On CliffWalking-v1 with a fixed epsilon = 0.1 and alpha = 0.5, over 500 episodes, SARSA's online
return is above Q-learning's, SARSA's greedy path keeps away from the cliff and Q-learning's runs
right along it (the benchmark uses 50 runs; 20 keep the claims with margin).
"""

from __future__ import annotations

import numpy as np
import pytest

from trainer.cliff_walking import (
    COLUMNS,
    GOAL,
    OPTIMAL_LENGTH,
    START,
    GreedyPath,
    claims,
    greedy_path,
    make_learner,
    run_method,
    run_one,
)

UP, RIGHT, DOWN, LEFT = range(4)


@pytest.mark.slow
@pytest.mark.timeout(600)
def test_example_6_6_claims_hold() -> None:
    sarsa, qlearning = run_method("sarsa", runs=20), run_method("qlearning", runs=20)
    checked = claims(sarsa, qlearning)
    assert all(claim.holds for claim in checked), [c for c in checked if not c.holds]
    assert sarsa.late_return > -35.0 and qlearning.late_return < -40.0  # the book: -25 and -50
    assert sarsa.fraction("optimal") == 0.0
    assert all(run.truncated == 0 for run in (*sarsa.runs, *qlearning.runs))


def path_of(actions: dict[tuple[int, int], int]) -> GreedyPath:
    """The greedy path of a Q-table whose best action in (row, column) is `actions[...]`, or
    "left" where none is given."""
    learner = make_learner("qlearning", seed=0)
    learner.q_table[:] = 0.0
    learner.q_table[:, LEFT] = 1.0
    for (row, column), action in actions.items():
        learner.q_table[row * COLUMNS + column, action] = 2.0
    return greedy_path(learner)


def test_greedy_path_along_the_cliff_is_the_optimal_one() -> None:
    along = {(3, 0): UP, **{(2, c): RIGHT for c in range(11)}, (2, 11): DOWN}
    path = path_of(along)
    assert (path.states[0], path.states[-1]) == (START, GOAL)
    assert path.reaches_goal and path.optimal and path.length == OPTIMAL_LENGTH
    assert path.touches_cliff_row and path.cliff_distance == 1 and not path.safe
    assert path.grid().splitlines()[2] == "*" * COLUMNS


def test_greedy_path_along_the_top_is_safe() -> None:
    top = {(3, 0): UP, (2, 0): UP, (1, 0): UP, **{(0, c): RIGHT for c in range(11)}}
    path = path_of({**top, (0, 11): DOWN, (1, 11): DOWN, (2, 11): DOWN})
    assert path.reaches_goal and path.safe and not path.optimal
    assert (path.length, path.cliff_distance) == (17, 3)
    assert path.describe() == "17 steps"


def test_greedy_path_that_loops_does_not_reach_the_goal() -> None:
    path = path_of({(3, 0): UP})  # then left forever against the wall
    assert not path.reaches_goal and not path.safe and not path.optimal
    assert "loops" in path.describe()


def test_episode_loop_is_seeded_and_feeds_sarsa_its_next_actions() -> None:
    first, second = run_one("sarsa", seed=3, episodes=20), run_one("sarsa", seed=3, episodes=20)
    np.testing.assert_array_equal(first.returns, second.returns)
    assert first.returns.shape == (20,) and first.steps >= 20 * OPTIMAL_LENGTH
    assert (first.returns <= -OPTIMAL_LENGTH).all() and first.returns.sum() <= -first.steps
    other = run_one("qlearning", seed=3, episodes=20)
    assert not np.array_equal(first.q_table, other.q_table)
