"""Bundled Gymnasium environments, registered under the `agentserve/` namespace on import, and
`make_env`, the one place environments are created (the collector's copies included)."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from agentserve.errors import ConfigError
from trainer.envs.gridworld import MAZE_LAYOUT
from trainer.envs.masking import ActionMaskInInfo, has_mask_in_observation

GRIDWORLD_ID = "agentserve/GridWorld-v0"
MAZE_ID = "agentserve/MazeGridWorld-v0"
MAZE_MAX_EPISODE_STEPS = 200
TESTBED_ID = "agentserve/KArmedTestbed-v0"
BERNOULLI_BANDIT_ID = "agentserve/BernoulliBandit-v0"
CONTEXTUAL_BANDIT_ID = "agentserve/ContextualBandit-v0"

if GRIDWORLD_ID not in gym.registry:
    gym.register(
        id=GRIDWORLD_ID,
        entry_point="trainer.envs.gridworld:GridWorldEnv",
        max_episode_steps=100,
    )

# The grid world's maze layout with one-hot observations; `mask_in_observation=True` gives the
# PettingZoo-style dict observation.
if MAZE_ID not in gym.registry:
    gym.register(
        id=MAZE_ID,
        entry_point="trainer.envs.gridworld:GridWorldEnv",
        max_episode_steps=MAZE_MAX_EPISODE_STEPS,
        kwargs={"layout": MAZE_LAYOUT, "observation": "onehot"},
    )

# Bandits end their episodes themselves (after `steps` pulls, a constructor argument).
for _bandit_id, _bandit_class in (
    (TESTBED_ID, "KArmedTestbedEnv"),
    (BERNOULLI_BANDIT_ID, "BernoulliBanditEnv"),
    (CONTEXTUAL_BANDIT_ID, "ContextualBanditEnv"),
):
    if _bandit_id not in gym.registry:
        gym.register(id=_bandit_id, entry_point=f"trainer.envs.bandits:{_bandit_class}")


def make_env(env_id: str, **kwargs: Any) -> gym.Env[Any, Any]:
    """`gymnasium.make` with a clear error for unknown ids or bad arguments. An env with
    PettingZoo-style observations (`{"observation", "action_mask"}`) comes wrapped in
    `ActionMaskInInfo`, so its mask is in `info["action_mask"]` like every other env's."""
    try:
        env = gym.make(env_id, **kwargs)
    except gym.error.Error as error:
        raise ConfigError(f"cannot make environment {env_id!r}: {error}") from None
    except (TypeError, ValueError) as error:  # unknown keyword, or a value the env refuses
        raise ConfigError(f"bad arguments for environment {env_id!r}: {error}") from None
    if not has_mask_in_observation(env.observation_space):
        return env
    try:
        return ActionMaskInInfo(env)
    except ConfigError as error:
        env.close()
        raise ConfigError(f"environment {env_id!r}: {error}") from None
