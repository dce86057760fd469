"""PettingZoo-style action masks: an observation `{"observation": ..., "action_mask": ...}`.

`make_env` wraps every env whose observation space is such a `Dict` in `ActionMaskInInfo`: the
learner, the collector and evaluation see only the `"observation"` part (the wrapper's
observation space is that sub-space), and the mask moves into `info["action_mask"]`, where
Gymnasium's convention (Taxi, the bundled grid world) already puts it. An env that reports a mask
in both places allows the actions that both allow.
"""

from __future__ import annotations

from typing import Any

import gymnasium as gym
import numpy as np
import numpy.typing as npt

from agentserve.errors import ConfigError

OBSERVATION_KEY = "observation"
MASK_KEY = "action_mask"


def has_mask_in_observation(space: gym.Space[Any]) -> bool:
    """A `Dict` observation space with an `"action_mask"` entry."""
    return isinstance(space, gym.spaces.Dict) and MASK_KEY in space.spaces


class ActionMaskInInfo(gym.Wrapper[Any, Any, Any, Any], gym.utils.RecordConstructorArgs):
    """Turns `{"observation": o, "action_mask": m}` into the observation `o` with
    `info["action_mask"] = m` (AND the env's own `info["action_mask"]`, if it has one), as an
    int8 array of 0/1 per action. Raises `ConfigError` for a dict with other keys, actions that
    are not `Discrete`, or a mask whose length is not the number of actions."""

    def __init__(self, env: gym.Env[Any, Any]) -> None:
        gym.utils.RecordConstructorArgs.__init__(self)
        gym.Wrapper.__init__(self, env)
        space = env.observation_space
        if not isinstance(space, gym.spaces.Dict) or set(space.spaces) != {
            OBSERVATION_KEY,
            MASK_KEY,
        }:
            raise ConfigError(
                f"a masked observation must be a Dict with exactly the keys {OBSERVATION_KEY!r} "
                f"and {MASK_KEY!r}, got {space}"
            )
        if not isinstance(env.action_space, gym.spaces.Discrete):
            raise ConfigError(f"an action mask needs Discrete actions, got {env.action_space}")
        self.num_actions = int(env.action_space.n)
        mask_shape = space.spaces[MASK_KEY].shape
        if mask_shape != (self.num_actions,):
            raise ConfigError(
                f"the {MASK_KEY!r} space has shape {mask_shape}; {self.num_actions} actions need "
                f"shape ({self.num_actions},)"
            )
        self.observation_space = space.spaces[OBSERVATION_KEY]

    def _checked(self, mask: Any, where: str) -> npt.NDArray[np.bool_]:
        flat = np.asarray(mask).reshape(-1).astype(np.bool_)
        if flat.shape != (self.num_actions,):
            raise ConfigError(
                f"the action mask in {where} has {flat.size} entries; the env has "
                f"{self.num_actions} actions"
            )
        return flat

    def _split(self, observation: Any, info: dict[str, Any]) -> tuple[Any, dict[str, Any]]:
        allowed = self._checked(observation[MASK_KEY], f"the observation's {MASK_KEY!r}")
        if MASK_KEY in info:
            allowed &= self._checked(info[MASK_KEY], f"info[{MASK_KEY!r}]")
        return observation[OBSERVATION_KEY], {**info, MASK_KEY: allowed.astype(np.int8)}

    def reset(
        self, *, seed: int | None = None, options: dict[str, Any] | None = None
    ) -> tuple[Any, dict[str, Any]]:
        observation, info = self.env.reset(seed=seed, options=options)
        return self._split(observation, info)

    def step(self, action: Any) -> tuple[Any, float, bool, bool, dict[str, Any]]:
        observation, reward, terminated, truncated, info = self.env.step(action)
        observation, info = self._split(observation, info)
        return observation, float(reward), terminated, truncated, info
