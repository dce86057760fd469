"""LinUCB with disjoint linear models (Li et al., 2010, algorithm 1).

Each arm a keeps a ridge regression of its reward on the context x (the flattened observation):

    A_a = ridge * I + sum of x x^T over a's pulls,    b_a = sum of r x,    theta_a = A_a^-1 b_a

and the learner pulls the allowed arm with the highest upper confidence bound

    score_a(x) = theta_a . x + alpha * sqrt(x^T A_a^-1 x)

(ties broken uniformly at random when exploring, the first one when acting deterministically).
The exported graph computes the same scores from the A_a^-1 and theta_a of the snapshot: the
served policy is deterministic (distribution `greedy`: probabilities one-hot on the best allowed
arm) and its `values` are the UCB scores, not the bare estimates theta_a . x.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec
from trainer.core import masking
from trainer.core.bandits import argmax_random_ties, learner_rng, load_array
from trainer.learner import ActionBatch, BoolArray, FloatArray, Learner, TransitionBatch
from trainer.registry import register


@dataclass
class LinUCBConfig:
    alpha: float = 1.0
    """Width of the confidence bonus alpha * sqrt(x^T A_a^-1 x); 0 = greedy ridge regression."""
    ridge: float = 1.0
    """Ridge regularisation: every A_a starts as ridge * I."""

    def validate(self) -> None:
        if not self.alpha >= 0.0:
            raise ConfigError(f"alpha must be >= 0, got {self.alpha}")
        if not 0.0 < self.ridge < float("inf"):
            raise ConfigError(f"ridge must be a positive number, got {self.ridge}")


def ucb_scores(
    contexts_BD: torch.Tensor, theta_AD: torch.Tensor, a_inv_ADD: torch.Tensor, alpha: float
) -> torch.Tensor:
    """[B, A] theta_a . x + alpha * sqrt(x^T A_a^-1 x), shared by acting and the exported graph."""
    means_BA = contexts_BD @ theta_AD.T
    projected_ABD = contexts_BD.unsqueeze(0) @ a_inv_ADD
    quadratic_BA = (projected_ABD * contexts_BD.unsqueeze(0)).sum(dim=-1).T
    return means_BA + alpha * torch.sqrt(torch.clamp(quadratic_BA, min=0.0))


class LinUCBPolicy(nn.Module):
    """(contexts [B, *obs], mask) -> greedy head over the UCB scores (one-hot probabilities)."""

    def __init__(self, theta_AD: torch.Tensor, a_inv_ADD: torch.Tensor, alpha: float) -> None:
        super().__init__()
        self.theta = nn.Parameter(theta_AD.clone(), requires_grad=False)
        self.a_inv = nn.Parameter(a_inv_ADD.clone(), requires_grad=False)
        self.alpha = alpha

    def forward(
        self, observation: torch.Tensor, action_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        contexts_BD = observation.reshape(observation.shape[0], -1)
        scores_BA = ucb_scores(contexts_BD, self.theta, self.a_inv, self.alpha)
        return masking.epsilon_greedy_head(scores_BA, action_mask, 0.0)


@register
class LinUCB(Learner):
    algorithm = "linucb"
    distribution = "greedy"
    config_class = LinUCBConfig
    config: LinUCBConfig

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.rng = learner_rng(seed)
        assert isinstance(action_space, DiscreteSpec)
        self.num_actions = action_space.n
        self.dim = observation_space.flat_size
        self.design = np.tile(config.ridge * np.eye(self.dim), (self.num_actions, 1, 1))
        """[A, D, D] A_a = ridge * I + sum of x x^T."""
        self.response = np.zeros((self.num_actions, self.dim))
        """[A, D] b_a = sum of r x."""
        self._refresh()

    @classmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        if not isinstance(observation_space, BoxSpec):
            raise ConfigError(
                "linucb needs a Box observation space (a context vector); for Discrete "
                "observations use epsilon_greedy, ucb1 or thompson"
            )
        if not isinstance(action_space, DiscreteSpec):
            raise ConfigError("linucb needs a Discrete action space (the arms)")

    def _refresh(self) -> None:
        """Recomputes A_a^-1 and theta_a (float32, as scored and served) from A_a and b_a."""
        a_inv_ADD = np.linalg.inv(self.design)
        self.a_inv = torch.from_numpy(a_inv_ADD.astype(np.float32))
        theta_AD = np.einsum("ade,ae->ad", a_inv_ADD, self.response)
        self.theta = torch.from_numpy(theta_AD.astype(np.float32))

    @property
    def serving_epsilon(self) -> float:
        return 0.0

    def scores(self, observations: FloatArray) -> FloatArray:
        """[B, A] the UCB scores (float32, exactly as the exported graph computes them)."""
        contexts_BD = torch.as_tensor(observations, dtype=torch.float32)
        contexts_BD = contexts_BD.reshape(len(observations), -1)
        with torch.no_grad():
            return ucb_scores(contexts_BD, self.theta, self.a_inv, self.config.alpha).numpy()

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        scores_BA = self.scores(observations)
        if deterministic:
            actions_B = masking.masked_argmax(scores_BA, action_masks)
            return ActionBatch(actions_B, np.ones(len(actions_B), dtype=np.float32), scores_BA)
        actions_B, propensities_B = argmax_random_ties(self.rng, scores_BA, action_masks)
        return ActionBatch(actions_B, propensities_B, scores_BA)

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        contexts_BD = np.asarray(batch.observations, dtype=np.float64).reshape(
            len(batch.actions), -1
        )
        actions_B = np.asarray(batch.actions, dtype=np.int64)
        rewards_B = np.asarray(batch.rewards, dtype=np.float64)
        predicted_B = np.einsum("bd,bd->b", contexts_BD, self.theta.numpy()[actions_B])
        np.add.at(self.design, actions_B, contexts_BD[:, :, None] * contexts_BD[:, None, :])
        np.add.at(self.response, actions_B, rewards_B[:, None] * contexts_BD)
        self._refresh()
        self.num_steps += len(actions_B)
        self.num_updates += len(actions_B)
        return {"train/prediction_error": float(np.mean(np.abs(rewards_B - predicted_B)))}

    def policy_module(self) -> nn.Module:
        return LinUCBPolicy(self.theta, self.a_inv, self.config.alpha)

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {"design": self.design.copy(), "response": self.response.copy()}

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        load_array(tensors, "design", self.design)
        load_array(tensors, "response", self.response)
        self._refresh()
