"""Masked training end to end: PPO and DQN trained through `trainer.loop.train` on the maze never
send the env an action its mask rules out, in training or in evaluation, with the mask in
`info["action_mask"]` or in a PettingZoo-style dict observation; with `ignore_env_mask` they do.
Also `trainer.envs.masking` (dict observations) and the collector's mask checks."""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import gymnasium as gym
import numpy as np
import pytest

import trainer.loop
from agentserve.errors import ConfigError
from trainer.collector import Collector, _masks
from trainer.envs import MAZE_ID, MAZE_MAX_EPISODE_STEPS, make_env
from trainer.envs.gridworld import MAZE_LAYOUT, GridWorldEnv
from trainer.envs.masking import ActionMaskInInfo
from trainer.evaluation import evaluate
from trainer.loop import RunOptions, RunResult, train

SPY_ID = "agentserve-test/SpyMaze-v0"
BOTH_MASKS_ID = "agentserve-test/BothMasks-v0"
DICT = {"mask_in_observation": True}
SHORT_RUNS = {
    "ppo": ("n_envs=4", "n_steps=64", "batch_size=64", "n_epochs=2", "ent_coef=0.01"),
    "dqn": ("learning_starts=500", "exploration_fraction=0.5", "target_update_interval=250"),
}
"""Settings for runs of a few thousand steps: enough updates that the policy moves off its
initial state, exploration included."""


@dataclass
class Recorder:
    """Every action the spied maze received, with the moves its model allowed at that step."""

    phase: str = "training"
    actions: list[tuple[str, int, tuple[bool, ...]]] = field(default_factory=list)
    """(phase, action, allowed moves) of every step."""

    def invalid(self, phase: str) -> int:
        return sum(1 for p, a, allowed in self.actions if p == phase and not allowed[a])

    def count(self, phase: str) -> int:
        return sum(1 for p, _, _ in self.actions if p == phase)


RECORDER = Recorder()


class ActionSpy(gym.Wrapper[Any, np.int64, Any, np.int64]):
    """Records, before each step, the action and the grid world's own mask for its state (the
    ground truth, whatever the env reports)."""

    def step(self, action: np.int64) -> tuple[Any, Any, bool, bool, dict[str, Any]]:
        grid = self.env.unwrapped
        assert isinstance(grid, GridWorldEnv)
        allowed = tuple(bool(m) for m in grid.action_mask(grid.state))
        RECORDER.actions.append((RECORDER.phase, int(action), allowed))
        return self.env.step(action)


def spied_maze(**kwargs: Any) -> gym.Env[Any, np.int64]:
    return ActionSpy(GridWorldEnv(MAZE_LAYOUT, observation="onehot", **kwargs))


class BothMasksEnv(gym.Env[Any, np.int64]):
    """One state, three actions; the dict observation allows {0, 1}, `info` allows {1, 2}. Any
    action ends the episode. `mask_length` and `info_mask_length` bend the masks out of shape."""

    def __init__(self, mask_length: int = 3, info_mask_length: int = 3) -> None:
        self.observation_space = gym.spaces.Dict(
            {
                "observation": gym.spaces.Box(0.0, 1.0, (1,), np.float32),
                "action_mask": gym.spaces.Box(0, 1, (mask_length,), np.int8),
            }
        )
        self.action_space = gym.spaces.Discrete(3)
        self.info_mask = np.array([0, 1, 1, 1][:info_mask_length], dtype=np.int8)

    def observe(self) -> tuple[dict[str, Any], dict[str, Any]]:
        mask = np.array([1, 1, 0, 0][: self.observation_space["action_mask"].shape[0]], np.int8)
        observation = np.zeros(1, np.float32)
        return {"observation": observation, "action_mask": mask}, {
            "action_mask": self.info_mask.copy()
        }

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[dict[str, Any], dict[str, Any]]:
        super().reset(seed=seed)
        return self.observe()

    def step(self, action: np.int64) -> tuple[dict[str, Any], float, bool, bool, dict[str, Any]]:
        observation, info = self.observe()
        return observation, 1.0, True, False, info


for _id, _entry in ((SPY_ID, spied_maze), (BOTH_MASKS_ID, BothMasksEnv)):
    if _id not in gym.registry:
        gym.register(id=_id, entry_point=_entry, max_episode_steps=MAZE_MAX_EPISODE_STEPS)


@pytest.fixture
def spy(monkeypatch: pytest.MonkeyPatch) -> Iterator[Recorder]:
    """A fresh recorder whose phase is "evaluation" while the loop evaluates."""
    RECORDER.phase = "training"
    RECORDER.actions.clear()

    def phased(*args: Any, **kwargs: Any) -> Any:
        RECORDER.phase = "evaluation"
        try:
            return evaluate(*args, **kwargs)
        finally:
            RECORDER.phase = "training"

    monkeypatch.setattr(trainer.loop, "evaluate", phased)
    yield RECORDER
    RECORDER.actions.clear()


def train_spied(
    tmp_path: Path, algorithm: str, env_kwargs: dict[str, Any], ignore_env_mask: bool = False
) -> RunResult:
    overrides = [*SHORT_RUNS[algorithm]]
    if env_kwargs:
        overrides.append(f"env_kwargs={env_kwargs}")
    return train(
        RunOptions(
            algorithm=algorithm,
            env_id=SPY_ID,
            timesteps=3_000,
            overrides=tuple(overrides),
            run_dir=tmp_path,
            eval_freq=1_000,
            eval_episodes=1,
            progress=False,
            ignore_env_mask=ignore_env_mask,
        )
    )


@pytest.mark.parametrize("env_kwargs", [{}, DICT], ids=["info-mask", "dict-observation"])
@pytest.mark.parametrize("algorithm", ["ppo", "dqn"])
def test_masked_training_never_takes_an_invalid_action(
    tmp_path: Path, spy: Recorder, algorithm: str, env_kwargs: dict[str, Any]
) -> None:
    result = train_spied(tmp_path, algorithm, env_kwargs)
    assert spy.count("training") == result.timesteps == 3_000
    assert spy.count("evaluation") > 0
    assert spy.invalid("training") == 0
    assert spy.invalid("evaluation") == 0
    assert result.invalid_actions == 0


@pytest.mark.parametrize("env_kwargs", [{}, DICT], ids=["info-mask", "dict-observation"])
def test_ignoring_the_mask_takes_invalid_actions(
    tmp_path: Path, spy: Recorder, env_kwargs: dict[str, Any]
) -> None:
    """The spy sees the wall bumps of an unmasked run, and the collector counts the same."""
    result = train_spied(tmp_path, "ppo", env_kwargs, ignore_env_mask=True)
    assert spy.invalid("training") > 100  # about half of all moves bump into a wall
    assert result.invalid_actions == spy.invalid("training")


def test_ignore_env_mask_is_recorded_in_the_run_config(tmp_path: Path, spy: Recorder) -> None:
    train_spied(tmp_path, "ppo", {}, ignore_env_mask=True)
    assert '"ignore_env_mask": true' in (tmp_path / "config.json").read_text()


def test_unmasked_evaluation_gets_no_mask() -> None:
    seen: list[object] = []

    def act(observation: np.ndarray, mask: np.ndarray | None) -> int:
        seen.append(mask)
        return 1

    evaluate(act, MAZE_ID, 1, use_masks=False, max_steps=3)
    assert seen == [None, None, None]
    seen.clear()
    evaluate(act, MAZE_ID, 1, max_steps=1)
    assert [np.asarray(m).tolist() for m in seen] == [[False, True, False, False]]


# --- PettingZoo-style dict observations ------------------------------------------------------


def test_dict_observation_is_unwrapped_for_the_learner() -> None:
    env = make_env(MAZE_ID, **DICT)
    assert isinstance(env, ActionMaskInInfo)
    assert env.observation_space == gym.spaces.Box(0.0, 1.0, (63,), np.float32)
    observation, info = env.reset(seed=0)
    assert observation.shape == (63,) and observation[0] == 1.0
    assert info["action_mask"].tolist() == [0, 1, 0, 0]
    observation, _, _, _, info = env.step(np.int64(1))
    assert observation[1] == 1.0 and info["action_mask"].tolist() == [0, 1, 0, 1]
    collector = Collector(MAZE_ID, 2, DICT, seed=0)
    try:
        assert collector.envs.single_observation_space == env.observation_space
        observations, masks = collector.reset()
        assert observations.shape == (2, 63)
        assert masks is not None and masks.tolist() == [[False, True, False, False]] * 2
    finally:
        collector.close()


def test_masks_in_info_and_observation_are_anded() -> None:
    env = make_env(BOTH_MASKS_ID)
    _, info = env.reset(seed=0)
    assert info["action_mask"].tolist() == [0, 1, 0]
    _, _, _, _, info = env.step(np.int64(1))
    assert info["action_mask"].tolist() == [0, 1, 0]


def test_training_with_both_masks_takes_only_the_common_action(tmp_path: Path) -> None:
    result = train(
        RunOptions(
            algorithm="ppo",
            env_id=BOTH_MASKS_ID,
            timesteps=64,
            overrides=("n_steps=16", "batch_size=16"),
            run_dir=tmp_path,
            eval_freq=0,
            eval_episodes=2,
            progress=False,
        )
    )
    assert result.invalid_actions == 0
    assert result.final_eval is not None and result.final_eval.returns == (1.0, 1.0)


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"mask_length": 4}, r"shape \(4,\); 3 actions need shape \(3,\)"),
        ({"info_mask_length": 2}, r"info\['action_mask'\] has 2 entries; the env has 3 actions"),
    ],
)
def test_mask_of_the_wrong_length_is_a_config_error(
    tmp_path: Path, kwargs: dict[str, int], message: str
) -> None:
    with pytest.raises(ConfigError, match=message):
        make_env(BOTH_MASKS_ID, **kwargs).reset(seed=0)
    with pytest.raises(ConfigError, match=message):
        train(
            RunOptions(
                algorithm="ppo",
                env_id=BOTH_MASKS_ID,
                timesteps=16,
                overrides=(f"env_kwargs={kwargs}",),
                run_dir=tmp_path,
                progress=False,
            )
        )


class ShortMaskEnv(BothMasksEnv):
    """Declares a 3-entry mask, observes a 5-entry one (an env's bug)."""

    def observe(self) -> tuple[dict[str, Any], dict[str, Any]]:
        return {"observation": np.zeros(1, np.float32), "action_mask": np.ones(5, np.int8)}, {}


def test_mask_value_of_the_wrong_length_is_a_config_error() -> None:
    with pytest.raises(ConfigError, match="observation's 'action_mask' has 5 entries"):
        ActionMaskInInfo(ShortMaskEnv()).reset(seed=0)


def test_dict_with_other_keys_or_continuous_actions_is_a_config_error() -> None:
    env = BothMasksEnv()
    env.observation_space = gym.spaces.Dict(
        {**env.observation_space.spaces, "extra": gym.spaces.Discrete(2)}
    )
    with pytest.raises(ConfigError, match="exactly the keys"):
        ActionMaskInInfo(env)
    env = BothMasksEnv()
    env.action_space = gym.spaces.Box(-1.0, 1.0, (3,), np.float32)
    with pytest.raises(ConfigError, match="needs Discrete actions"):
        ActionMaskInInfo(env)


def test_info_mask_of_the_wrong_length_is_a_config_error_in_the_collector() -> None:
    info = {"action_mask": [np.ones(5, np.int8)], "_action_mask": np.ones(1, np.bool_)}
    with pytest.raises(ConfigError, match="5 entries; the env has 4 actions"):
        _masks(info, 1, 4)
