"""Fast learning smoke tests, one per registered algorithm (default suite, seconds each)."""

from __future__ import annotations

from pathlib import Path

import pytest

from trainer import registry
from trainer.loop import RunOptions, train

# algorithm -> (env id, steps, overrides, evaluation the best checkpoint must reach)
SMOKE = {
    "dqn": ("CartPole-v1", 10_000, (), 100.0),
    "qlearning": ("agentserve/GridWorld-v0", 6_000, (), 10.0),
}


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
    assert ("train/loss" in tags) == (algorithm == "dqn"), tags


def tensorboard_tags(folder: Path) -> set[str]:
    from tensorboard.backend.event_processing.event_accumulator import EventAccumulator

    accumulator = EventAccumulator(str(folder))
    accumulator.Reload()
    return set(accumulator.Tags()["scalars"])
