"""The 10-armed testbed reference bars (slow: `make learning`; the figures: `make bench-bandits`).

Sutton & Barto, figures 2.2 and 2.4: over 2,000 runs of 1,000 steps, the mean reward over steps
500-1000 reaches 1.45 with UCB c=2 and 1.25 with epsilon-greedy epsilon=0.1.
"""

from __future__ import annotations

import pytest

from trainer.testbed import EPSILON_01, LATE_STEPS, UCB, Method, run_testbed


@pytest.mark.slow
@pytest.mark.parametrize("method", [UCB, EPSILON_01], ids=lambda m: m.algorithm)
def test_testbed_reaches_the_reference_bar(method: Method) -> None:
    curves = run_testbed(method, runs=2000, steps=1000)
    assert method.bar is not None
    assert curves.late_reward >= method.bar, (
        f"{method.label}: mean reward over steps {LATE_STEPS[0]}-{LATE_STEPS[1]} "
        f"{curves.late_reward:.3f} < {method.bar}"
    )
    assert curves.passed
    assert curves.optimal_action[-100:].mean() > 0.7  # most runs found their best arm


def test_testbed_is_deterministic_and_learns_on_a_small_batch() -> None:
    first, second = (run_testbed(UCB, runs=20, steps=LATE_STEPS[1]) for _ in range(2))
    assert (first.average_reward == second.average_reward).all()
    assert first.optimal_action[:10].mean() < first.optimal_action[-100:].mean()
