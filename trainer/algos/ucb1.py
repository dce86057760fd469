"""UCB1 upper-confidence-bound action selection (Auer et al., 2002; Sutton & Barto, eq. 2.10).

    A_t = argmax over allowed a of  Q_t(a) + c * sqrt(ln t / N_t(a))

where Q_t(a) is the sample average of arm a's rewards, N_t(a) its pull count and t the current
step (1 at the first pull). Untried allowed arms count as maximising and are pulled first; ties
are broken uniformly at random. One independent bandit per discrete observation.

Acting deterministically (evaluation, serving) exploits: the allowed arm with the highest
estimate Q, first one on ties. The exported policy is that greedy choice: distribution `greedy`
(probabilities one-hot on the greedy arm), `values` = the estimates Q (0 for untried arms).
A frozen confidence bonus would keep pulling whichever arm UCB1 meant to try next, so the bonus
is for learning only.
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
from trainer.algos.qlearning import TablePolicy
from trainer.core import masking
from trainer.core.bandits import TableBandit, argmax_random_ties, load_array
from trainer.learner import ActionBatch, BoolArray, FloatArray, TransitionBatch
from trainer.registry import register


@dataclass
class UCB1Config:
    c: float = 2.0
    """Exploration weight c of the confidence bonus c * sqrt(ln t / N(a)); 0 = greedy."""

    def validate(self) -> None:
        if not self.c >= 0.0:
            raise ConfigError(f"c must be >= 0, got {self.c}")


@register
class UCB1(TableBandit):
    algorithm = "ucb1"
    distribution = "greedy"
    config_class = UCB1Config
    runtimes = ("table", "onnx")
    config: UCB1Config

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.reward_sums = np.zeros((self.num_states, self.num_actions), dtype=np.float64)
        """[S, A] total reward of each arm in each state."""

    @property
    def serving_epsilon(self) -> float:
        return 0.0

    def estimates(self, states_B: npt.NDArray[np.int64]) -> FloatArray:
        """[B, A] sample averages Q as served (float32; 0 for untried arms)."""
        counts_BA = self.counts[states_B]
        means_BA = self.reward_sums[states_B] / np.maximum(counts_BA, 1)
        return means_BA.astype(np.float32)

    def ucb_scores(self, states_B: npt.NDArray[np.int64]) -> npt.NDArray[np.float64]:
        """[B, A] Q + c * sqrt(ln t / N), +inf for untried arms."""
        counts_BA = self.counts[states_B]
        t_B1 = counts_BA.sum(axis=1, keepdims=True) + 1
        means_BA = self.reward_sums[states_B] / np.maximum(counts_BA, 1)
        with np.errstate(divide="ignore", invalid="ignore"):
            bonus_BA = self.config.c * np.sqrt(np.log(t_B1) / counts_BA)
        return np.where(counts_BA > 0, means_BA + bonus_BA, np.inf)

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        states_B = self.states(observations)
        values_BA = self.estimates(states_B)
        if deterministic:
            actions_B = masking.masked_argmax(values_BA, action_masks)
            return ActionBatch(actions_B, np.ones(len(actions_B), dtype=np.float32), values_BA)
        actions_B, propensities_B = argmax_random_ties(
            self.rng, self.ucb_scores(states_B), action_masks
        )
        return ActionBatch(actions_B, propensities_B, values_BA)

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        states_B = self.states(batch.observations)
        actions_B = np.asarray(batch.actions, dtype=np.int64)
        rewards_B = np.asarray(batch.rewards, dtype=np.float64)
        before_B = self.reward_sums[states_B, actions_B] / np.maximum(
            self.counts[states_B, actions_B], 1
        )
        # Sums and counts do not depend on order: repeated (state, arm) pairs add up correctly.
        np.add.at(self.counts, (states_B, actions_B), 1)
        np.add.at(self.reward_sums, (states_B, actions_B), rewards_B)
        self.num_steps += len(states_B)
        self.num_updates += len(states_B)
        return {"train/prediction_error": float(np.mean(np.abs(rewards_B - before_B)))}

    def policy_module(self) -> nn.Module:
        table = self.estimates(np.arange(self.num_states))
        return TablePolicy(torch.from_numpy(table), 0.0)

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {"reward_sums": self.reward_sums.copy(), "counts": self.counts.copy()}

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        load_array(tensors, "reward_sums", self.reward_sums)
        load_array(tensors, "counts", self.counts)
