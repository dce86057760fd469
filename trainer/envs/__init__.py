"""Bundled Gymnasium environments, registered under the `agentserve/` namespace on import, and
`make_env`, the one place environments are created."""

from __future__ import annotations

from typing import Any

import gymnasium as gym

from agentserve.errors import ConfigError

GRIDWORLD_ID = "agentserve/GridWorld-v0"
TESTBED_ID = "agentserve/KArmedTestbed-v0"
BERNOULLI_BANDIT_ID = "agentserve/BernoulliBandit-v0"
CONTEXTUAL_BANDIT_ID = "agentserve/ContextualBandit-v0"

if GRIDWORLD_ID not in gym.registry:
    gym.register(
        id=GRIDWORLD_ID,
        entry_point="trainer.envs.gridworld:GridWorldEnv",
        max_episode_steps=100,
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
    """`gymnasium.make` with a clear error for unknown ids or bad arguments."""
    try:
        return gym.make(env_id, **kwargs)
    except gym.error.Error as error:
        raise ConfigError(f"cannot make environment {env_id!r}: {error}") from None
    except (TypeError, ValueError) as error:  # unknown keyword, or a value the env refuses
        raise ConfigError(f"bad arguments for environment {env_id!r}: {error}") from None
