"""Epsilon-greedy action-value bandit (Sutton & Barto, sections 2.2-2.6).

With probability epsilon pull a uniformly random allowed arm, otherwise the allowed arm with the
highest estimate (first one on ties). After pulling arm a and receiving reward R:

    N(a) <- N(a) + 1
    Q(a) <- Q(a) + step * (R - Q(a)),   step = 1 / N(a) (sample average) or a constant alpha

Every estimate starts at `initial_value` (optimistic initial values, S&B 2.6, drive early
exploration; with sample averages the first pull of an arm replaces it). One independent bandit
per discrete observation. The served policy is epsilon-greedy over the estimates (distribution
`epsilon_greedy`, `values` = the estimates); tables are served by numpy (`table`) or ONNX.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agentserve.errors import ConfigError
from agentserve.spaces import SpaceSpec
from trainer.algos.qlearning import TABLE_TENSOR, TablePolicy
from trainer.core import masking
from trainer.core.bandits import TableBandit, load_array, unique_runs
from trainer.learner import ActionBatch, BoolArray, FloatArray, TransitionBatch
from trainer.registry import register


@dataclass
class EpsilonGreedyConfig:
    epsilon: float = 0.1
    """Probability of pulling a uniformly random allowed arm; also the served policy's epsilon."""
    step_size: float | None = None
    """None: sample averages (step 1 / N(a)); a number in (0, 1]: that constant step size
    (recency-weighted averages, for nonstationary problems)."""
    initial_value: float = 0.0
    """Initial estimate of every arm (e.g. 5 for optimistic initial values)."""

    def validate(self) -> None:
        if not 0.0 <= self.epsilon <= 1.0:
            raise ConfigError(f"epsilon must lie in [0, 1], got {self.epsilon}")
        if self.step_size is not None and not 0.0 < self.step_size <= 1.0:
            raise ConfigError(
                f"step_size must lie in (0, 1], or be null for sample averages; got "
                f"{self.step_size}"
            )


@register
class EpsilonGreedy(TableBandit):
    algorithm = "epsilon_greedy"
    distribution = "epsilon_greedy"
    config_class = EpsilonGreedyConfig
    runtimes = ("table", "onnx")
    config: EpsilonGreedyConfig

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.estimates = np.full(
            (self.num_states, self.num_actions), config.initial_value, dtype=np.float64
        )
        """[S, A] action-value estimates Q."""

    @property
    def serving_epsilon(self) -> float:
        return self.config.epsilon

    def values(self, states_B: npt.NDArray[np.int64]) -> FloatArray:
        """[B, A] the estimates as served (float32)."""
        return self.estimates[states_B].astype(np.float32)

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        values_BA = self.values(self.states(observations))
        actions_B, propensities_B = masking.epsilon_greedy_act(
            self.rng, values_BA, action_masks, self.config.epsilon, deterministic
        )
        return ActionBatch(actions_B, propensities_B, values_BA)

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        states_B = self.states(batch.observations)
        actions_B = np.asarray(batch.actions, dtype=np.int64)
        rewards_B = np.asarray(batch.rewards, dtype=np.float64)
        errors_B = np.empty(len(states_B))
        # Within a run no (state, arm) repeats, so the vectorised update equals the sequential one.
        for run in unique_runs(states_B * self.num_actions + actions_B):
            s, a = states_B[run], actions_B[run]
            self.counts[s, a] += 1
            step = (
                1.0 / self.counts[s, a] if self.config.step_size is None else self.config.step_size
            )
            errors_B[run] = rewards_B[run] - self.estimates[s, a]
            self.estimates[s, a] += step * errors_B[run]
        self.num_steps += len(states_B)
        self.num_updates += len(states_B)
        return {"train/prediction_error": float(np.mean(np.abs(errors_B)))}

    def extra_scalars(self) -> dict[str, float]:
        return {"rollout/exploration_rate": self.config.epsilon}

    def policy_module(self) -> nn.Module:
        table = self.values(np.arange(self.num_states))
        return TablePolicy(torch.from_numpy(table), self.config.epsilon)

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {TABLE_TENSOR: self.estimates.copy(), "counts": self.counts.copy()}

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        load_array(tensors, TABLE_TENSOR, self.estimates)
        load_array(tensors, "counts", self.counts)
