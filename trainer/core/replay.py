"""A uniform replay buffer over fixed-size numpy arrays (circular)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from trainer.learner import TransitionBatch


class ReplaySample(NamedTuple):
    observations: torch.Tensor
    actions: torch.Tensor
    rewards: torch.Tensor
    next_observations: torch.Tensor
    terminated: torch.Tensor
    next_action_masks: torch.Tensor


class ReplayBuffer:
    """Stores transitions; `sample` draws uniformly. Truncated transitions are stored with
    terminated=False, so their targets bootstrap from s' as they should."""

    def __init__(self, capacity: int, observation_size: int, num_actions: int) -> None:
        self.capacity = capacity
        self.observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.next_observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.actions = np.zeros(capacity, dtype=np.int64)
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.next_action_masks = np.ones((capacity, num_actions), dtype=np.bool_)
        self.position = 0
        self.size = 0

    def add(self, batch: TransitionBatch) -> None:
        for i in range(len(batch.actions)):
            p = self.position
            self.observations[p] = batch.observations[i].reshape(-1)
            self.next_observations[p] = batch.next_observations[i].reshape(-1)
            self.actions[p] = batch.actions[i]
            self.rewards[p] = batch.rewards[i]
            self.terminated[p] = batch.terminated[i]
            masks = batch.next_action_masks
            self.next_action_masks[p] = True if masks is None else masks[i]
            self.position = (p + 1) % self.capacity
            self.size = min(self.size + 1, self.capacity)

    def sample(self, batch_size: int, rng: np.random.Generator) -> ReplaySample:
        idx = rng.integers(self.size, size=batch_size)
        return ReplaySample(
            torch.from_numpy(self.observations[idx]),
            torch.from_numpy(self.actions[idx]),
            torch.from_numpy(self.rewards[idx]),
            torch.from_numpy(self.next_observations[idx]),
            torch.from_numpy(self.terminated[idx]),
            torch.from_numpy(self.next_action_masks[idx]),
        )

    _FIELDS = (
        "observations",
        "next_observations",
        "actions",
        "rewards",
        "terminated",
        "next_action_masks",
    )

    def state_tensors(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        tensors = {
            f"{prefix}{name}": getattr(self, name)[: self.size].copy() for name in self._FIELDS
        }
        tensors[f"{prefix}cursor"] = np.array([self.position, self.size], dtype=np.int64)
        return tensors

    def load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]], prefix: str) -> None:
        self.position, self.size = (int(v) for v in tensors[f"{prefix}cursor"])
        for name in self._FIELDS:
            getattr(self, name)[: self.size] = tensors[f"{prefix}{name}"]
