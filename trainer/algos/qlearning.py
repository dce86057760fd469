"""Tabular Q-learning (Watkins, 1989) with epsilon-greedy exploration among allowed actions.

    Q(s, a) <- Q(s, a) + alpha * (r + gamma * max_{a' allowed at s'} Q(s', a') * (1 - terminated)
                                  - Q(s, a))

Discrete observations and discrete actions only. The policy module is a table lookup, so the same
ONNX / parity / serving path applies; the service can also serve the table directly with numpy.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agentserve.errors import ConfigError
from agentserve.spaces import DiscreteSpec, SpaceSpec
from trainer.core import masking, schedules
from trainer.learner import ActionBatch, BoolArray, FloatArray, Learner, TransitionBatch
from trainer.registry import register

TABLE_TENSOR = "q_table"


@dataclass
class QLearningConfig:
    learning_rate: float = 0.1
    """Step size alpha of each table update."""
    gamma: float = 0.99
    """Discount factor."""
    exploration_initial_eps: float = 1.0
    """Epsilon at the first step."""
    exploration_final_eps: float = 0.05
    """Epsilon after the decay; also the epsilon of the served stochastic policy."""
    exploration_fraction: float = 0.5
    """Fraction of the step budget over which epsilon decays linearly."""
    total_timesteps: int = 100_000
    """Step budget the epsilon schedule is laid over (set by the training loop)."""
    initial_q: float = 0.0
    """Initial value of every table entry (optimistic values drive exploration)."""

    def validate(self) -> None:
        if not 0 < self.learning_rate <= 1:
            raise ConfigError("learning_rate must lie in (0, 1]")
        if not 0 <= self.gamma <= 1:
            raise ConfigError("gamma must lie in [0, 1]")


class TablePolicy(nn.Module):
    """(observation [B, 1] holding state indices, mask) -> epsilon-greedy head over Q[state]."""

    def __init__(self, table: torch.Tensor, epsilon: float) -> None:
        super().__init__()
        self.q_table = nn.Parameter(table.clone(), requires_grad=False)
        self.epsilon = epsilon

    def forward(
        self, observation: torch.Tensor, action_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states_B = observation.reshape(observation.shape[0], -1)[:, 0].to(torch.int64)
        return masking.epsilon_greedy_head(self.q_table[states_B], action_mask, self.epsilon)


@register
class QLearning(Learner):
    algorithm = "qlearning"
    distribution = "epsilon_greedy"
    config_class = QLearningConfig
    runtimes = ("table", "onnx")
    config: QLearningConfig

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        assert isinstance(observation_space, DiscreteSpec)
        assert isinstance(action_space, DiscreteSpec)
        self.num_actions = action_space.n
        self.q_table = np.full(
            (observation_space.n, action_space.n), config.initial_q, dtype=np.float32
        )

    @classmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        if not isinstance(observation_space, DiscreteSpec):
            raise ConfigError(
                f"{cls.algorithm} needs a Discrete observation space (a table of states)"
            )
        if not isinstance(action_space, DiscreteSpec):
            raise ConfigError(f"{cls.algorithm} needs a Discrete action space")

    @property
    def epsilon(self) -> float:
        c = self.config
        return schedules.linear(
            c.exploration_initial_eps,
            c.exploration_final_eps,
            c.exploration_fraction,
            self.num_steps,
            c.total_timesteps,
        )

    @property
    def serving_epsilon(self) -> float:
        return self.config.exploration_final_eps

    def _states(self, observations: FloatArray) -> npt.NDArray[np.int64]:
        return np.asarray(observations, dtype=np.int64).reshape(len(observations), -1)[:, 0]

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        q_values = self.q_table[self._states(observations)]
        actions, propensities = masking.epsilon_greedy_act(
            self.rng, q_values, action_masks, self.epsilon, deterministic
        )
        return ActionBatch(actions, propensities, q_values)

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        states = self._states(batch.observations)
        next_states = self._states(batch.next_observations)
        errors = []
        for i in range(len(states)):
            bootstrap = 0.0 if batch.terminated[i] else self._next_value(batch, i, next_states[i])
            target = float(batch.rewards[i]) + c.gamma * bootstrap
            error = target - self.q_table[states[i], batch.actions[i]]
            self.q_table[states[i], batch.actions[i]] += c.learning_rate * error
            errors.append(error)
        self.num_steps += len(states)
        self.num_updates += len(states)
        return {"train/td_error": float(np.mean(np.abs(errors)))}

    def _next_value(self, batch: TransitionBatch, i: int, next_state: np.int64) -> float:
        """The value of s' that transition i (not terminated) bootstraps from: the max over the
        actions allowed at s' (0 if none is). On-policy subclasses override only this."""
        next_q = self.q_table[next_state]
        if batch.next_action_masks is not None:
            next_q = next_q[batch.next_action_masks[i]]
        return 0.0 if next_q.size == 0 else float(next_q.max())

    def extra_scalars(self) -> dict[str, float]:
        return {"rollout/exploration_rate": self.epsilon}

    def policy_module(self) -> nn.Module:
        return TablePolicy(torch.from_numpy(self.q_table), self.serving_epsilon)

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {TABLE_TENSOR: self.q_table.copy()}

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        table = tensors[TABLE_TENSOR]
        if table.shape != self.q_table.shape:
            raise ConfigError(
                f"checkpoint table has shape {table.shape}, expected {self.q_table.shape}"
            )
        self.q_table[...] = table
