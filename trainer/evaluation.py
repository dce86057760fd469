"""Deterministic evaluation of any acting function on a Gymnasium env."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import numpy as np

from agentserve.envtools import flat_observation, mask_from_info
from trainer.envs import make_env
from trainer.learner import BoolArray, FloatArray

MAX_EPISODE_STEPS = 10_000
"""Evaluation episodes are cut after this many steps."""

ActFn = Callable[[FloatArray, BoolArray | None], Any]
"""(flat observation, allowed-action mask or None) -> action: an int (discrete), or a float array
(continuous; clipped to the action box here before the env sees it)."""


@dataclass(frozen=True)
class EvalResult:
    returns: tuple[float, ...]
    lengths: tuple[int, ...]

    @property
    def mean(self) -> float:
        return float(np.mean(self.returns))

    @property
    def std(self) -> float:
        return float(np.std(self.returns))

    @property
    def success_rate(self) -> float:
        """Fraction of episodes with a positive return (the goal rate of sparse-reward tasks)."""
        return float(np.mean([r > 0 for r in self.returns]))

    def to_json(self) -> dict[str, Any]:
        return {
            "episodes": len(self.returns),
            "mean_reward": self.mean,
            "std_reward": self.std,
            "mean_length": float(np.mean(self.lengths)),
            "success_rate": self.success_rate,
        }


def evaluate(
    act: ActFn,
    env_id: str,
    episodes: int,
    seed: int = 0,
    env_kwargs: dict[str, Any] | None = None,
    max_steps: int = MAX_EPISODE_STEPS,
    use_masks: bool = True,
) -> EvalResult:
    """Runs `episodes` episodes, episode i reset with seed `seed + i`. An episode that has not
    ended after `max_steps` steps is cut there (envs without a time limit, such as
    CliffWalking-v1, would otherwise loop forever under a greedy policy that walks into a wall).
    `use_masks` False: `act` is never given the env's action mask (None: every action allowed)."""
    env = make_env(env_id, **(env_kwargs or {}))
    space: Any = env.action_space
    continuous = not hasattr(space, "n")
    returns, lengths = [], []
    try:
        for episode in range(episodes):
            observation, info = env.reset(seed=seed + episode)
            total, length, done = 0.0, 0, False
            while not done:
                mask = mask_from_info(info) if use_masks else None
                action = act(flat_observation(observation), mask)
                if continuous:
                    action = np.clip(
                        np.asarray(action, dtype=np.float32).reshape(space.shape),
                        space.low,
                        space.high,
                    )
                observation, reward, terminated, truncated, info = env.step(action)
                total += float(reward)
                length += 1
                done = terminated or truncated or length >= max_steps
            returns.append(total)
            lengths.append(length)
    finally:
        env.close()
    return EvalResult(tuple(returns), tuple(lengths))
