"""Replay buffers over fixed-size numpy arrays (circular): uniform, and prioritized
(Schaul et al., 2016: proportional variant over a sum tree, importance-sampling weights).

Actions are stored as [capacity] int64 (discrete) or, when `action_size` is given, as
[capacity, action_size] float32 (continuous). The action masks at s and at s' are stored for
discrete actions ([capacity, num_actions] bools; a missing mask is stored as all allowed)."""

from __future__ import annotations

from typing import Any, NamedTuple

import numpy as np
import numpy.typing as npt
import torch

from trainer.core.sum_tree import SumTree
from trainer.learner import TransitionBatch


class ReplaySample(NamedTuple):
    observations: torch.Tensor
    actions: torch.Tensor
    """[B] int64 discrete actions, or [B, D] float32 continuous actions."""
    rewards: torch.Tensor
    """Sum of the (n-step) discounted rewards."""
    next_observations: torch.Tensor
    terminated: torch.Tensor
    action_masks: torch.Tensor
    """[B, A] actions allowed at s (the mask the action was chosen under)."""
    next_action_masks: torch.Tensor
    """[B, A] actions allowed at s'."""
    discounts: torch.Tensor
    """gamma ** (steps to next_observations): the factor of the bootstrapped value."""
    weights: torch.Tensor
    """Importance-sampling weights (all 1 for uniform replay)."""
    indices: npt.NDArray[np.int64]


class ReplayBuffer:
    """Stores transitions; `sample` draws uniformly. Truncated transitions are stored with
    terminated=False, so their targets bootstrap from s' as they should."""

    def __init__(
        self,
        capacity: int,
        observation_size: int,
        num_actions: int,
        action_size: int | None = None,
    ) -> None:
        """`num_actions`: width of the action masks (0 for continuous actions); `action_size`:
        None for discrete actions, else D of the [B, D] float32 continuous actions."""
        self.capacity = capacity
        self.observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.next_observations = np.zeros((capacity, observation_size), dtype=np.float32)
        self.actions: npt.NDArray[Any] = (
            np.zeros(capacity, dtype=np.int64)
            if action_size is None
            else np.zeros((capacity, action_size), dtype=np.float32)
        )
        self.rewards = np.zeros(capacity, dtype=np.float32)
        self.terminated = np.zeros(capacity, dtype=np.bool_)
        self.action_masks = np.ones((capacity, num_actions), dtype=np.bool_)
        self.next_action_masks = np.ones((capacity, num_actions), dtype=np.bool_)
        self.discounts = np.zeros(capacity, dtype=np.float32)
        self.position = 0
        self.size = 0

    def add(self, batch: TransitionBatch, discounts: npt.NDArray[np.float32]) -> None:
        count = len(batch.actions)
        # Consecutive slots as a slice (cheaper to write through than an index array).
        slots: slice | npt.NDArray[np.int64] = (
            slice(self.position, self.position + count)
            if self.position + count <= self.capacity
            else (self.position + np.arange(count)) % self.capacity
        )
        self.observations[slots] = batch.observations.reshape(count, -1)
        self.next_observations[slots] = batch.next_observations.reshape(count, -1)
        self.actions[slots] = batch.actions.reshape(count, *self.actions.shape[1:])
        self.rewards[slots] = batch.rewards
        self.terminated[slots] = batch.terminated
        masks, next_masks = batch.action_masks, batch.next_action_masks
        self.action_masks[slots] = True if masks is None else masks
        self.next_action_masks[slots] = True if next_masks is None else next_masks
        self.discounts[slots] = discounts
        self._on_add(slots)
        self.position = int((self.position + count) % self.capacity)
        self.size = min(self.size + count, self.capacity)

    def _on_add(self, slots: slice | npt.NDArray[np.int64]) -> None:
        """Hook for subclasses that keep per-slot state."""

    def _draw(
        self, batch_size: int, rng: np.random.Generator, progress: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        return rng.integers(self.size, size=batch_size), np.ones(batch_size, dtype=np.float32)

    def sample(
        self, batch_size: int, rng: np.random.Generator, progress: float = 0.0
    ) -> ReplaySample:
        """`progress` in [0, 1] is the fraction of training done (prioritized replay anneals its
        importance-sampling exponent with it)."""
        idx, weights = self._draw(batch_size, rng, progress)
        return ReplaySample(
            torch.from_numpy(self.observations[idx]),
            torch.from_numpy(self.actions[idx]),
            torch.from_numpy(self.rewards[idx]),
            torch.from_numpy(self.next_observations[idx]),
            torch.from_numpy(self.terminated[idx]),
            torch.from_numpy(self.action_masks[idx]),
            torch.from_numpy(self.next_action_masks[idx]),
            torch.from_numpy(self.discounts[idx]),
            torch.from_numpy(weights),
            idx,
        )

    def update_priorities(self, indices: npt.NDArray[np.int64], errors: npt.NDArray[Any]) -> None:
        """Uniform replay ignores priorities."""

    _FIELDS: tuple[str, ...] = (
        "observations",
        "next_observations",
        "actions",
        "rewards",
        "terminated",
        "action_masks",
        "next_action_masks",
        "discounts",
    )
    _OPTIONAL_FIELDS: tuple[str, ...] = ("action_masks",)
    """Fields that checkpoints written before they existed lack (loaded as all allowed)."""

    def state_tensors(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        tensors = {
            f"{prefix}{name}": getattr(self, name)[: self.size].copy() for name in self._FIELDS
        }
        tensors[f"{prefix}cursor"] = np.array([self.position, self.size], dtype=np.int64)
        return tensors

    def load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]], prefix: str) -> None:
        self.position, self.size = (int(v) for v in tensors[f"{prefix}cursor"])
        for name in self._FIELDS:
            key = f"{prefix}{name}"
            if key in tensors or name not in self._OPTIONAL_FIELDS:
                getattr(self, name)[: self.size] = tensors[key]
            else:
                getattr(self, name)[: self.size] = True


class PrioritizedReplayBuffer(ReplayBuffer):
    """Samples transition i with probability p_i^alpha / sum_k p_k^alpha, p_i = |TD error| + eps;
    new transitions get the highest priority seen. Importance weights (N * P(i))^-beta, divided
    by their batch maximum, correct the bias; beta anneals from `beta0` to 1 over training."""

    def __init__(
        self,
        capacity: int,
        observation_size: int,
        num_actions: int,
        alpha: float = 0.6,
        beta0: float = 0.4,
        eps: float = 1e-6,
        action_size: int | None = None,
    ) -> None:
        super().__init__(capacity, observation_size, num_actions, action_size)
        self.alpha, self.beta0, self.eps = alpha, beta0, eps
        self.tree = SumTree(capacity)
        self.max_priority = 1.0

    def _on_add(self, slots: slice | npt.NDArray[np.int64]) -> None:
        if isinstance(slots, slice):
            slots = np.arange(slots.start, slots.stop)
        self.tree.set(slots, np.full(len(slots), self.max_priority**self.alpha))

    def _draw(
        self, batch_size: int, rng: np.random.Generator, progress: float
    ) -> tuple[npt.NDArray[np.int64], npt.NDArray[np.float32]]:
        total = self.tree.total
        # Stratified: one draw from each of batch_size equal slices of the priority mass.
        bounds = (np.arange(batch_size) + rng.random(batch_size)) * (total / batch_size)
        idx = np.minimum(self.tree.find(bounds), self.size - 1)
        probabilities = self.tree.get(idx) / total
        beta = self.beta0 + min(1.0, max(0.0, progress)) * (1.0 - self.beta0)
        weights = (self.size * np.maximum(probabilities, 1e-12)) ** -beta
        return idx, (weights / weights.max()).astype(np.float32)

    def update_priorities(self, indices: npt.NDArray[np.int64], errors: npt.NDArray[Any]) -> None:
        priorities = np.abs(np.asarray(errors, dtype=np.float64)) + self.eps
        self.max_priority = max(self.max_priority, float(priorities.max()))
        self.tree.set(indices, priorities**self.alpha)

    def state_tensors(self, prefix: str) -> dict[str, npt.NDArray[Any]]:
        tensors = super().state_tensors(prefix)
        tensors[f"{prefix}priorities"] = self.tree.get(np.arange(self.size)).copy()
        tensors[f"{prefix}max_priority"] = np.array([self.max_priority])
        return tensors

    def load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]], prefix: str) -> None:
        super().load_state_tensors(tensors, prefix)
        self.tree = SumTree(self.capacity)
        self.tree.set(np.arange(self.size), tensors[f"{prefix}priorities"])
        self.max_priority = float(tensors[f"{prefix}max_priority"][0])
