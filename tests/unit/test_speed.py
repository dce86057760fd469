"""The side-by-side speed comparison: our runs stop at the threshold with honest clocks, and the
preset maps onto Stable-Baselines3's arguments."""

from __future__ import annotations

import inspect

import pytest

from trainer.speed import CASES, Outcome, SpeedCase, run_ours, sb3_kwargs

TINY = SpeedCase("dqn", "CartPole-v1", 30.0, 4_000, 1_000, "DQN")


def test_our_run_stops_at_the_first_evaluation_over_the_threshold() -> None:
    outcome = run_ours(TINY, seed=0)
    assert outcome.steps_to_threshold is not None
    assert outcome.steps_to_threshold % TINY.eval_freq == 0
    assert outcome.steps == outcome.steps_to_threshold  # stopped there
    assert outcome.seconds_to_threshold is not None
    assert 0 < outcome.seconds_to_threshold <= outcome.train_seconds + 1e-6


def test_unreachable_threshold_runs_the_whole_budget() -> None:
    outcome = run_ours(SpeedCase("dqn", "CartPole-v1", 10_000.0, 1_500, 500, "DQN"), seed=0)
    assert outcome.steps_to_threshold is None and outcome.seconds_to_threshold is None
    assert outcome.steps == 1_500


def test_steps_per_second() -> None:
    assert Outcome(None, None, 1_000, 2.0).steps_per_second == 500.0


@pytest.mark.parametrize("case", CASES, ids=[c.algorithm for c in CASES])
def test_preset_maps_onto_stable_baselines3_arguments(case: SpeedCase) -> None:
    kwargs = sb3_kwargs(case)
    assert kwargs["policy_kwargs"]["net_arch"] == [256, 256]
    sb3 = pytest.importorskip("stable_baselines3")  # a benchmark-only extra
    accepted = inspect.signature(getattr(sb3, case.sb3_class)).parameters
    assert set(kwargs) <= set(accepted)
