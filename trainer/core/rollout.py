"""Rollout storage for on-policy learners: [T, N] arrays (T steps of N lockstep envs), GAE(lambda).

Only what the environment gave is stored while collecting (observations, actions, rewards, the
true next observations, terminated / truncated, the action masks the actions were chosen under);
values and log-probabilities are filled in once per update, in one batched pass, by the networks
that collected the rollout (they do not change during a rollout).

Online (the service), two more things come with each transition: the log-probability the acting
policy gave its action, recorded when it acted (that policy may be an update older than the
learner's networks: the learner learns in another thread), and an episode key (the episodes of
many simulators arrive interleaved in one stream). Advantages then follow each episode's own
successor row, and `behavior_weights` gives each row its truncated importance weight.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from agentserve.errors import ConfigError
from trainer.learner import ActionArray, BoolArray, FloatArray, IntArray


class RolloutMinibatch(NamedTuple):
    """A shuffled minibatch of M transitions, flattened over steps and envs."""

    observations: torch.Tensor
    """[M, obs]"""
    actions: torch.Tensor
    """[M] int64, or [M, D] float32 continuous actions"""
    action_masks: torch.Tensor | None
    """[M, A] bool: the masks the actions were chosen under; None when no action of the rollout
    was masked (the losses then skip the masking work)."""
    old_values: torch.Tensor
    """[M] V(s) of the networks that collected the rollout."""
    old_log_probs: torch.Tensor
    """[M] log pi_old(a | s)."""
    advantages: torch.Tensor
    """[M]"""
    returns: torch.Tensor
    """[M] advantages + old values."""
    rows: torch.Tensor
    """[M] row indices into the flattened rollout (to look up per-transition data computed once)."""
    weights: torch.Tensor | None
    """[M] truncated importance weights min(1, pi_old(a|s) / mu(a|s)) of actions chosen by an
    older policy mu (`RolloutBuffer.behavior_weights`); None when every action was chosen by
    pi_old itself."""


def compute_gae(
    rewards_TN: FloatArray,
    values_TN: FloatArray,
    next_values_TN: FloatArray,
    terminated_TN: BoolArray,
    truncated_TN: BoolArray,
    gamma: float,
    gae_lambda: float,
    keys_TN: IntArray | None = None,
) -> tuple[FloatArray, FloatArray]:
    """(advantages_TN, returns_TN) by GAE(lambda) (Schulman et al., 2016).

    delta_t = r_t + gamma * (1 - terminated_t) * V(s'_t) - V(s_t), where s'_t is the true next
    observation: a truncated transition bootstraps from the value of the episode's real last
    observation, a terminated one does not bootstrap. The advantage recursion
    A_t = delta_t + gamma * lambda * A_{t+1} stops at every episode end (terminated or truncated),
    and the last step of the rollout bootstraps through V(s'_T) alone. returns = A + V.
    With `keys_TN` (episode keys, see `episode_gae`) the step after row t is the next row of its
    episode instead of row t + 1 of its env column.
    """
    steps = len(rewards_TN)
    not_terminal_TN = 1.0 - terminated_TN.astype(np.float32)
    not_done_TN = 1.0 - (terminated_TN | truncated_TN).astype(np.float32)
    deltas_TN = rewards_TN + gamma * not_terminal_TN * next_values_TN - values_TN
    if keys_TN is not None:
        advantages_TN = episode_gae(deltas_TN, not_done_TN, keys_TN, gamma * gae_lambda)
        return advantages_TN, (advantages_TN + values_TN).astype(np.float32)
    advantages_TN = np.zeros_like(deltas_TN, dtype=np.float32)
    running_N = np.zeros(deltas_TN.shape[1:], dtype=np.float32)
    for t in reversed(range(steps)):
        running_N = deltas_TN[t] + gamma * gae_lambda * not_done_TN[t] * running_N
        advantages_TN[t] = running_N
    return advantages_TN, (advantages_TN + values_TN).astype(np.float32)


def episode_gae(
    deltas_TN: FloatArray, not_done_TN: BoolArray | FloatArray, keys_TN: IntArray, decay: float
) -> FloatArray:
    """GAE's recursion A = delta + decay * not_done * A(successor) when the rows of several
    episodes are interleaved: a row's successor is the next row (in time-major order) with the
    same episode key; a row without one in the rollout bootstraps through its delta alone."""
    deltas = deltas_TN.reshape(-1)
    not_done = np.asarray(not_done_TN, dtype=np.float32).reshape(-1)
    keys = keys_TN.reshape(-1).tolist()
    advantages = np.zeros(len(deltas), dtype=np.float32)
    following: dict[int, float] = {}
    for i in reversed(range(len(deltas))):
        advantage = float(deltas[i]) + decay * float(not_done[i]) * following.get(keys[i], 0.0)
        advantages[i] = advantage
        following[keys[i]] = advantage
    return advantages.reshape(deltas_TN.shape)


def discounted_returns(rewards_T: FloatArray, gamma: float, bootstrap: float = 0.0) -> FloatArray:
    """Monte-Carlo returns G_t = r_t + gamma * G_{t+1} of one episode, G_T = `bootstrap`."""
    returns_T = np.zeros(len(rewards_T), dtype=np.float32)
    running = bootstrap
    for t in reversed(range(len(rewards_T))):
        running = float(rewards_T[t]) + gamma * running
        returns_T[t] = running
    return returns_T


class RolloutBuffer:
    """`n_steps` lockstep steps of N envs; N is fixed by the first batch of a rollout. Actions
    are stored as given: `actions_TN` is [T, N] int64 for discrete actions, [T, N, D] float32 for
    continuous ones (`action_shape` (D,), `action_dtype` float32)."""

    def __init__(
        self,
        n_steps: int,
        obs_size: int,
        mask_width: int,
        action_shape: tuple[int, ...] = (),
        action_dtype: Any = np.int64,
    ) -> None:
        self.n_steps = n_steps
        self.obs_size = obs_size
        self.mask_width = mask_width
        self.action_shape = action_shape
        self.action_dtype = action_dtype
        self.pos = 0
        self._allocate(0)

    def _allocate(self, n_envs: int) -> None:
        shape = (self.n_steps, n_envs)
        self.n_envs = n_envs
        self.observations_TNO = np.zeros((*shape, self.obs_size), dtype=np.float32)
        self.next_observations_TNO = np.zeros((*shape, self.obs_size), dtype=np.float32)
        self.actions_TN = np.zeros((*shape, *self.action_shape), dtype=self.action_dtype)
        self.rewards_TN = np.zeros(shape, dtype=np.float32)
        self.terminated_TN = np.zeros(shape, dtype=np.bool_)
        self.truncated_TN = np.zeros(shape, dtype=np.bool_)
        self.action_masks_TNA = np.ones((*shape, self.mask_width), dtype=np.bool_)
        self.values_TN = np.zeros(shape, dtype=np.float32)
        self.next_values_TN = np.zeros(shape, dtype=np.float32)
        self.log_probs_TN = np.zeros(shape, dtype=np.float32)
        self.behavior_log_probs_TN = np.full(shape, np.nan, dtype=np.float32)
        """log mu(a|s) recorded when acting; NaN where not recorded (mu = pi_old)."""
        self.keys_TN = np.zeros(shape, dtype=np.int64)
        """Episode keys; the env column index where none was given."""
        self.env_columns = np.arange(n_envs)
        self.keyed = False
        """Whether any step of the rollout came with episode keys."""

    @property
    def full(self) -> bool:
        return self.pos == self.n_steps

    def add(
        self,
        observations: FloatArray,
        actions: ActionArray,
        rewards: FloatArray,
        next_observations: FloatArray,
        terminated: BoolArray,
        truncated: BoolArray,
        action_masks: BoolArray | None,
        log_probs: FloatArray | None = None,
        keys: IntArray | None = None,
    ) -> None:
        """One lockstep step; `action_masks` None: every action was allowed."""
        n_envs = len(actions)
        if n_envs != self.n_envs:
            if self.pos > 0:
                raise ConfigError(
                    f"a rollout holds batches of {self.n_envs} envs; got a batch of {n_envs}"
                )
            self._allocate(n_envs)
        t = self.pos
        self.observations_TNO[t] = observations.reshape(n_envs, -1)
        self.next_observations_TNO[t] = next_observations.reshape(n_envs, -1)
        self.actions_TN[t] = np.asarray(actions).reshape(n_envs, *self.action_shape)
        self.rewards_TN[t] = rewards
        self.terminated_TN[t] = terminated
        self.truncated_TN[t] = truncated
        self.action_masks_TNA[t] = True if action_masks is None else action_masks
        self.behavior_log_probs_TN[t] = np.nan if log_probs is None else log_probs
        self.keys_TN[t] = self.env_columns if keys is None else keys
        self.keyed = self.keyed or keys is not None
        self.pos += 1

    def reset(self) -> None:
        self.pos = 0
        self.keyed = False

    def episode_keys(self) -> IntArray | None:
        """[T, N] episode keys of the collected steps when any were given, else None (each env
        column is one stream of consecutive steps)."""
        return self.keys_TN[: self.pos] if self.keyed else None

    def behavior_weights(self) -> FloatArray | None:
        """[T * N] truncated importance weights min(1, exp(log pi_old - log mu)) (1 where mu was
        not recorded), from `log_probs_TN` as `evaluate` filled them; None when mu was recorded
        nowhere. Truncation at 1 (as V-trace and Retrace do) bounds the variance that a stale
        action's large ratio would bring, at the price of some bias."""
        recorded = self.behavior_log_probs_TN[: self.pos].reshape(-1)
        known = ~np.isnan(recorded)
        if not known.any():
            return None
        log_ratio = self.log_probs_TN[: self.pos].reshape(-1) - np.where(known, recorded, 0.0)
        weights = np.minimum(1.0, np.exp(np.minimum(log_ratio, 0.0)))
        return np.where(known, weights, 1.0).astype(np.float32)

    def flat_masks(self) -> BoolArray | None:
        """[T * N, A] masks of the collected steps, or None when every action was allowed."""
        masks = self.action_masks_TNA[: self.pos].reshape(self.pos * self.n_envs, -1)
        return None if masks.all() else masks

    def minibatches(
        self,
        advantages_TN: FloatArray,
        returns_TN: FloatArray,
        batch_size: int,
        rng: np.random.Generator,
        epochs: int = 1,
    ) -> list[RolloutMinibatch]:
        """`epochs` passes over the rollout, each in shuffled minibatches of `batch_size` (the
        last one of a pass may be smaller). Each pass's permutation is drawn in turn (as pass by
        pass), the rows of all the passes are gathered at once, and every minibatch is a slice of
        them: a handful of array copies per update instead of a dozen per minibatch."""
        total = self.pos * self.n_envs
        flat: dict[str, npt.NDArray[Any]] = {
            "observations": self.observations_TNO[: self.pos].reshape(total, -1),
            "actions": self.actions_TN[: self.pos].reshape(total, *self.action_shape),
            "old_values": self.values_TN[: self.pos].reshape(total),
            "old_log_probs": self.log_probs_TN[: self.pos].reshape(total),
            "advantages": advantages_TN[: self.pos].reshape(total),
            "returns": returns_TN[: self.pos].reshape(total),
        }
        masks = self.flat_masks()
        weights = self.behavior_weights()
        order = np.concatenate([rng.permutation(total) for _ in range(epochs)])
        sizes = [min(batch_size, total - start) for start in range(0, total, batch_size)] * epochs

        def split(rows: npt.NDArray[Any] | None) -> Sequence[torch.Tensor | None]:
            """`rows` (in minibatch order) as one tensor view per minibatch."""
            if rows is None:
                return [None] * len(sizes)
            return torch.split(torch.from_numpy(rows), sizes)

        columns = {name: split(values[order]) for name, values in flat.items()}
        columns["action_masks"] = split(None if masks is None else masks[order])
        columns["rows"] = split(order)
        columns["weights"] = split(None if weights is None else weights[order])
        return [
            RolloutMinibatch._make(columns[name][k] for name in RolloutMinibatch._fields)
            for k in range(len(sizes))
        ]

    _STORED = (
        "observations_TNO",
        "next_observations_TNO",
        "actions_TN",
        "rewards_TN",
        "terminated_TN",
        "truncated_TN",
        "action_masks_TNA",
        "behavior_log_probs_TN",
        "keys_TN",
    )

    def state_tensors(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        """The collected part of the rollout (values and log-probabilities are recomputed)."""
        out = {f"{prefix}{name}": getattr(self, name)[: self.pos].copy() for name in self._STORED}
        out[f"{prefix}n_envs"] = np.array([self.n_envs], dtype=np.int64)
        out[f"{prefix}keyed"] = np.array([self.keyed], dtype=np.bool_)
        return out

    def load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]], prefix: str) -> None:
        self._allocate(int(tensors[f"{prefix}n_envs"][0]))
        self.pos = len(tensors[f"{prefix}actions_TN"])
        if self.pos > self.n_steps:
            raise ConfigError(f"checkpoint rollout has {self.pos} steps; n_steps is {self.n_steps}")
        for name in self._STORED:
            if prefix + name in tensors:  # (older snapshots lack the online fields)
                getattr(self, name)[: self.pos] = tensors[prefix + name]
        self.keyed = bool(tensors.get(f"{prefix}keyed", np.zeros(1, np.bool_))[0])
