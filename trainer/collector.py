"""Steps n copies of an env in lockstep and turns each step into a `TransitionBatch`.

The envs live in a Gymnasium `SyncVectorEnv` (spaces, seeding, reset, close), stepped the way it
steps them with same-step autoreset: an env whose episode ends is reset inside the same `step`,
and the new episode's first observation is where that env now is. The collector steps the copies
itself rather than through `SyncVectorEnv.step`, whose batching of every info dict cost more than
a CartPole step; it puts the true last observation (and its action mask) into the transition, so
targets bootstrap from where the episode really was, and hands the reset observation to the
learner for its next action.

Continuous actions are clipped to the action box before they reach the env; the transition keeps
the action as the learner drew it (its log-probability is the one the learner computed).

The env's action masks reach the learner unless the collector is told to ignore them (to train
as if the env had none); either way it counts the actions taken that the env's mask did not
allow (`invalid_actions`).
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import partial
from typing import Any, SupportsFloat

import gymnasium as gym
import numpy as np

from agentserve.errors import ConfigError
from trainer.envs import make_env
from trainer.learner import ActionArray, BoolArray, FloatArray, TransitionBatch


def _flat(observations: Any, count: int) -> FloatArray:
    return np.asarray(observations, dtype=np.float32).reshape(count, -1)


def _masks(info: dict[str, Any], count: int, num_actions: int | None) -> BoolArray | None:
    """`info["action_mask"]` of a vector env as [n, A] bool; envs without one allow all."""
    if "action_mask" not in info or num_actions is None:
        return None
    present = np.asarray(info.get("_action_mask", np.ones(count, dtype=np.bool_)), dtype=np.bool_)
    return _env_masks(
        [{"action_mask": info["action_mask"][i]} if present[i] else {} for i in range(count)],
        num_actions,
    )


def _env_masks(infos: list[dict[str, Any]], num_actions: int | None) -> BoolArray | None:
    """The `"action_mask"` of each env's own info dict as [n, A] bool (an env without one allows
    all); None when no env reports one."""
    if num_actions is None or not any("action_mask" in info for info in infos):
        return None
    masks = np.ones((len(infos), num_actions), dtype=np.bool_)
    for i, info in enumerate(infos):
        if "action_mask" not in info:
            continue
        mask = np.asarray(info["action_mask"]).astype(np.bool_).reshape(-1)
        if mask.size != num_actions:
            raise ConfigError(
                f'info["action_mask"] has {mask.size} entries; the env has {num_actions} actions'
            )
        masks[i] = mask
    return masks


@dataclass(slots=True)
class Step:
    """One lockstep step: what the learner observes, and where each env now is."""

    observations: FloatArray
    masks: BoolArray | None
    """Actions allowed at `observations`, as the learner is told (None = all)."""
    actions: ActionArray
    rewards: FloatArray
    final_observations: FloatArray
    """s' of each transition: the true last observation where an episode ended."""
    final_masks: BoolArray | None
    terminated: BoolArray
    truncated: BoolArray
    next_observations: FloatArray
    """Where each env is now (a new episode's first observation where one ended)."""
    next_masks: BoolArray | None
    finished: tuple[tuple[float, int], ...]
    """(return, length) of every episode that ended in this step."""

    def transitions(self, next_actions: ActionArray) -> TransitionBatch:
        """The transitions, with the discrete action the learner chose at s' (-1 where s' ended
        the episode; not recorded for continuous actions)."""
        done = self.terminated | self.truncated
        discrete = self.actions.dtype.kind in "iu"  # (np.issubdtype(.., np.integer), faster)
        return TransitionBatch(
            observations=self.observations,
            actions=self.actions,
            rewards=self.rewards,
            next_observations=self.final_observations,
            terminated=self.terminated,
            truncated=self.truncated,
            action_masks=self.masks,
            next_action_masks=self.final_masks,
            next_actions=np.where(done, -1, next_actions).astype(np.int64) if discrete else None,
        )


class Collector:
    def __init__(
        self,
        env_id: str,
        n_envs: int,
        env_kwargs: dict[str, Any],
        seed: int,
        use_masks: bool = True,
    ) -> None:
        if n_envs < 1:
            raise ConfigError("n_envs must be >= 1")
        self.envs = gym.vector.SyncVectorEnv(
            [partial(make_env, env_id, **env_kwargs) for _ in range(n_envs)],
            autoreset_mode=gym.vector.AutoresetMode.SAME_STEP,
        )
        self.n = n_envs
        self.use_masks = use_masks
        """False: the learner is told nothing about the env's masks (every action allowed)."""
        self.invalid_actions = 0
        """Actions taken so far that the env's mask did not allow."""
        self.seed = seed
        action_space: Any = self.envs.single_action_space
        self.num_actions = int(action_space.n) if hasattr(action_space, "n") else None
        self._low: FloatArray | None = None
        self._high: FloatArray | None = None
        if self.num_actions is None:
            self._low = np.asarray(action_space.low, dtype=np.float32).reshape(-1)
            self._high = np.asarray(action_space.high, dtype=np.float32).reshape(-1)
            self._action_shape: tuple[int, ...] = tuple(action_space.shape)
        self._obs_dtype = getattr(self.envs.single_observation_space, "dtype", None)
        self._masks: BoolArray | None = None
        self._returns = np.zeros(n_envs)
        self._lengths = np.zeros(n_envs, dtype=np.int64)
        self._observations: FloatArray = np.zeros((n_envs, 0), dtype=np.float32)

    def _told(self, masks: BoolArray | None) -> BoolArray | None:
        """The env's masks as the learner is told them."""
        return masks if self.use_masks else None

    def reset(self) -> tuple[FloatArray, BoolArray | None]:
        observations, info = self.envs.reset(seed=self.seed)
        self.envs.action_space.seed(self.seed)
        self._observations = _flat(observations, self.n)
        self._masks = _masks(info, self.n, self.num_actions)
        return self._observations, self._told(self._masks)

    def env_actions(self, actions: ActionArray) -> ActionArray:
        """What the env is stepped with: discrete actions as they are, continuous ones clipped
        to the action box."""
        if self._low is None or self._high is None:
            return np.asarray(actions, dtype=np.int64)
        flat = np.asarray(actions, dtype=np.float32).reshape(self.n, -1)
        return np.clip(flat, self._low, self._high).reshape(self.n, *self._action_shape)

    def step(self, actions: ActionArray) -> Step:
        env_actions = self.env_actions(actions)
        if self._masks is not None:
            self.invalid_actions += int(
                np.count_nonzero(~self._masks[np.arange(self.n), env_actions])
            )
        observations: list[Any] = []
        rewards_: list[SupportsFloat] = []
        terminated_: list[bool] = []
        truncated_: list[bool] = []
        infos: list[dict[str, Any]] = []
        ended: dict[int, tuple[FloatArray, dict[str, Any]]] = {}
        """Env index -> (true last observation, info) of the episodes that ended."""
        for i, env in enumerate(self.envs.envs):  # SyncVectorEnv.step, same-step autoreset
            observation, reward, term, trunc, info = env.step(env_actions[i])
            if term or trunc:
                ended[i] = (np.asarray(observation, np.float32).reshape(-1), info)
                observation, info = env.reset()
            observations.append(observation)
            rewards_.append(reward)
            terminated_.append(term)
            truncated_.append(trunc)
            infos.append(info)
        # As SyncVectorEnv batches them: in the observation space's dtype, then float32.
        next_observations = np.asarray(
            np.asarray(observations, self._obs_dtype).reshape(self.n, -1), np.float32
        )
        rewards = np.asarray(rewards_, dtype=np.float32)
        terminated = np.asarray(terminated_, dtype=np.bool_)
        truncated = np.asarray(truncated_, dtype=np.bool_)
        next_masks = _env_masks(infos, self.num_actions)
        final_observations = next_observations.copy()
        final_masks = None if next_masks is None else next_masks.copy()
        for i, (last_observation, _) in ended.items():
            final_observations[i] = last_observation
        last_masks = _env_masks([info for _, info in ended.values()], self.num_actions)
        if final_masks is not None and last_masks is not None:
            final_masks[list(ended)] = last_masks
        self._returns += rewards
        self._lengths += 1
        finished = tuple((float(self._returns[i]), int(self._lengths[i])) for i in ended)
        if ended:
            self._returns[list(ended)] = 0.0
            self._lengths[list(ended)] = 0
        step = Step(
            observations=self._observations,
            masks=self._told(self._masks),
            actions=np.asarray(actions, dtype=np.int64 if self._low is None else np.float32),
            rewards=rewards,
            final_observations=final_observations,
            final_masks=self._told(final_masks),
            terminated=terminated,
            truncated=truncated,
            next_observations=next_observations,
            next_masks=self._told(next_masks),
            finished=finished,
        )
        self._observations = next_observations
        self._masks = next_masks
        return step

    def close(self) -> None:
        self.envs.close()
