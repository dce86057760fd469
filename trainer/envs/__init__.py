"""Bundled Gymnasium environments, registered under the `agentserve/` namespace on import, and
`make_env`, the one place environments are created."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from agentserve.errors import ConfigError

GRIDWORLD_ID = "agentserve/GridWorld-v0"

if GRIDWORLD_ID not in gym.registry:
    gym.register(
        id=GRIDWORLD_ID,
        entry_point="trainer.envs.gridworld:GridWorldEnv",
        max_episode_steps=100,
    )


def make_env(env_id: str, **kwargs: Any) -> gym.Env[Any, Any]:
    """`gymnasium.make` with a clear error for unknown ids or bad arguments."""
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as error:
        raise ConfigError(f"cannot make environment {env_id!r}: {error}") from None
    except TypeError as error:
        raise ConfigError(f"bad arguments for environment {env_id!r}: {error}") from None
