"""The offline driver: run folders, resume, budgets, determinism of whole runs."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from agentserve.errors import ConfigError
from trainer.core.checkpoint import load_checkpoint
from trainer.loop import RunOptions, train

GRID = "agentserve/GridWorld-v0"


def run(tmp: Path, steps: int, **extra: object) -> object:
    options = RunOptions(
        algorithm="qlearning",
        env_id=GRID,
        timesteps=steps,
        run_dir=tmp,
        eval_freq=0,
        eval_episodes=1,
        progress=False,
        **extra,  # type: ignore[arg-type]
    )
    return train(options)


def test_run_folder_holds_config_monitor_and_checkpoints(tmp_path: Path) -> None:
    run(tmp_path, 500, overrides=("learning_rate=0.3",))
    config = json.loads((tmp_path / "config.json").read_text())
    assert config["hyperparameters"]["learning_rate"] == 0.3
    assert config["timesteps"] == 500 and config["env_id"] == GRID
    rows = (tmp_path / "monitor.csv").read_text().splitlines()
    assert rows[0] == "r,l,t" and len(rows) > 1
    assert load_checkpoint(tmp_path / "checkpoints" / "last.safetensors").meta["num_steps"] == 500


def test_resume_continues_the_step_count(tmp_path: Path) -> None:
    first = tmp_path / "first"
    run(first, 300)
    second = tmp_path / "second"
    result = run(second, 800, resume=first / "checkpoints" / "last.safetensors")
    assert result.timesteps == 800  # type: ignore[attr-defined]
    state = load_checkpoint(second / "checkpoints" / "last.safetensors")
    assert state.meta["num_steps"] == 800


def test_same_seed_same_run(tmp_path: Path) -> None:
    a = load_checkpoint(_last(tmp_path / "a"))
    b = load_checkpoint(_last(tmp_path / "b"))
    assert (a.tensors["q_table"] == b.tensors["q_table"]).all()


def _last(folder: Path) -> Path:
    run(folder, 1_000, seed=3)
    return folder / "checkpoints" / "last.safetensors"


def test_negative_budget_is_refused(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="timesteps"):
        run(tmp_path, -1)


def test_zero_steps_exports_an_untrained_policy(tmp_path: Path) -> None:
    result = run(tmp_path / "run", 0, out_repo=tmp_path / "repo")
    artifact = result.artifact  # type: ignore[attr-defined]
    assert artifact == tmp_path / "repo" / "gridworld-qlearning" / "1"
    manifest = json.loads((artifact / "manifest.json").read_text())
    assert manifest["training"]["timesteps"] == 0


def test_evaluation_of_a_looping_policy_ends() -> None:
    from trainer.evaluation import evaluate

    # CliffWalking-v1 has no time limit; always "up" ends against the top wall forever.
    result = evaluate(lambda obs, mask: 0, "CliffWalking-v1", episodes=2, max_steps=50)
    assert result.lengths == (50, 50)
    assert result.returns == (-50.0, -50.0)
