"""Fast learning smoke tests, one per registered algorithm (default suite, seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer import registry
from trainer.loop import RunOptions, train

BANDIT_ENV = "env_kwargs={problem_seed: 0, steps: 200}"
# algorithm -> (env id, steps, overrides, evaluation the best checkpoint must reach)
SMOKE = {
    "dqn": ("CartPole-v1", 10_000, (), 100.0),
    "qlearning": ("agentserve/GridWorld-v0", 6_000, (), 10.0),
    # On-policy: with epsilon still 0.05 SARSA may keep a safer path past the lava (return 4,
    # the goal reached; 10 is optimal, random play about -100).
    "sarsa": ("agentserve/GridWorld-v0", 8_000, (), 4.0),
    "expected_sarsa": ("agentserve/GridWorld-v0", 6_000, (), 10.0),
    # Bandits: one fixed problem (problem_seed 0, as the presets), 200-pull episodes. Uniformly
    # random arms return 17 (testbed; best arm 261), 110 (Bernoulli; best 187), 0 (contextual;
    # best arms 205).
    "epsilon_greedy": ("agentserve/KArmedTestbed-v0", 3_000, (BANDIT_ENV,), 240.0),
    "ucb1": ("agentserve/KArmedTestbed-v0", 3_000, (BANDIT_ENV,), 240.0),
    "thompson": ("agentserve/BernoulliBandit-v0", 3_000, (BANDIT_ENV,), 170.0),
    "linucb": ("agentserve/ContextualBandit-v0", 3_000, (BANDIT_ENV,), 170.0),
    # Policy gradients on their CartPole presets (8 lockstep envs); the initial, near-uniform
    # policy's greedy action scores about 10.
    "reinforce": ("CartPole-v1", 20_000, (), 75.0),
    "a2c": ("CartPole-v1", 12_000, (), 100.0),
    "ppo": ("CartPole-v1", 12_000, (), 100.0),
    # SAC on its presets. Pendulum-v1: random play scores about -1200, and seed 0 evaluates about
    # -170 after 3,000 steps. CartPole-v1: random play about 20, seed 0 about 370 at 10,000.
    "sac": ("Pendulum-v1", 4_000, (), -400.0),
    "sac_discrete": ("CartPole-v1", 10_000, (), 200.0),
}


LOGS_LOSS = ("dqn", "reinforce", "a2c", "ppo", "sac", "sac_discrete")
"""Algorithms that log `train/loss` (gradient-based learners)."""


def test_every_algorithm_has_a_smoke_test() -> None:
    assert set(SMOKE) == set(registry.names())


@pytest.mark.parametrize("algorithm", registry.names())
def test_learns_something_quickly(algorithm: str, tmp_path: Path) -> None:
    env_id, steps, overrides, bar = SMOKE[algorithm]
    result = train(
        RunOptions(
            algorithm=algorithm,
            env_id=env_id,
            seed=0,
            timesteps=steps,
            overrides=overrides,
            run_dir=tmp_path / "run",
            out_repo=tmp_path / "repo",
            eval_freq=steps // 4,
            eval_episodes=5,
            progress=False,
        )
    )
    assert result.best_eval is not None and result.best_eval.mean >= bar, result.evaluations
    assert result.timesteps == steps
    assert result.artifact is not None and (result.artifact / "policy.onnx").is_file()
    run = tmp_path / "run"
    assert (run / "checkpoints" / "best.safetensors").is_file()
    assert (run / "monitor.csv").read_text().startswith("r,l,t\n")
    tags = tensorboard_tags(run / "tensorboard")
    assert {"rollout/ep_rew_mean", "eval/mean_reward", "time/fps"} <= tags, tags
    assert ("train/loss" in tags) == (algorithm in LOGS_LOSS), tags


def tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])
