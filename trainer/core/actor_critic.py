"""What the policy-gradient learners (reinforce, a2c, ppo) share: a policy head (masked softmax
for Discrete actions, Gaussian for Box actions; trainer.core.policy_heads) over an actor-critic
network with optional observation normalization, acting with the learner's generator, the
exported policy module, optimizers, learning-rate schedules, and (for a2c and ppo) rollout
collection with GAE.

Action masks: the masks at s come with each `TransitionBatch` (`action_masks`); none means every
action was allowed.
"""

from __future__ import annotations

from abc import abstractmethod
from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec
from trainer.core import normalization
from trainer.core.checkpoint import load_module_tensors, module_tensors
from trainer.core.flat_optim import FlatOptimizer
from trainer.core.networks import ActorCritic
from trainer.core.policy_heads import (  # SoftmaxPolicy: re-exported
    CategoricalHead,
    GaussianHead,
    PolicyHead,
    SoftmaxPolicy,
)
from trainer.core.rollout import RolloutBuffer, compute_gae
from trainer.learner import ActionBatch, BoolArray, FloatArray, Learner, TransitionBatch

__all__ = ["PolicyGradientLearner", "PolicyOptions", "RolloutLearner", "SoftmaxPolicy"]

OPTIMIZERS = ("adam", "rmsprop")
SCHEDULES = ("constant", "linear")


@dataclass
class PolicyOptions:
    """Options every policy-gradient config shares (their fields come first)."""

    normalize_observations: bool = False
    """Normalise observations by running mean and variance (saved in the exported graph)."""
    normalize_clip: float = 10.0
    """Clip normalised observations to +- this."""
    log_std_init: float = 0.0
    """Initial log standard deviation of a Gaussian policy (Box actions only)."""


def check_common(config: Any) -> None:
    """Validation shared by the policy-gradient configs."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
    if config.learning_rate_schedule not in SCHEDULES:
        raise ConfigError(f"learning_rate_schedule must be one of {', '.join(SCHEDULES)}")
    if config.learning_rate <= 0 or config.max_grad_norm <= 0:
        raise ConfigError("learning_rate and max_grad_norm must be > 0")
    if not 0 <= config.gamma <= 1:
        raise ConfigError("gamma must lie in [0, 1]")
    if config.normalize_clip <= 0:
        raise ConfigError("normalize_clip must be > 0")


class PolicyGradientLearner(Learner):
    """Acting, masks, export, optimizer and schedule shared by the policy-gradient learners.
    Served distribution: "softmax" (the "values" output holds the policy logits) for Discrete
    actions, "gaussian" for Box actions."""

    distribution = "softmax"
    action_spaces = ("discrete", "continuous")

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.obs_size = observation_space.flat_size
        normalizer = normalization.input_layer(
            self.obs_size, config.normalize_observations, config.normalize_clip
        )
        if isinstance(action_space, DiscreteSpec):
            self.net = ActorCritic(self.obs_size, config.net_arch, action_space.n, normalizer)
            self.head: PolicyHead = CategoricalHead(action_space.n)
        else:
            assert isinstance(action_space, BoxSpec)
            self.net = ActorCritic(
                self.obs_size,
                config.net_arch,
                action_space.flat_size,
                normalizer,
                config.log_std_init,
            )
            assert self.net.log_std is not None
            self.head = GaussianHead(action_space, self.net.log_std)
        self.distribution = self.head.distribution
        self.num_actions = self.head.mask_width
        self.optimizer = FlatOptimizer(
            self.net.parameters(),
            config.learning_rate,
            kind=config.optimizer,
            alpha=config.rmsprop_alpha,
            eps=config.optimizer_eps,
        )

    @classmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        if not isinstance(observation_space, BoxSpec):
            raise ConfigError(f"{cls.algorithm} needs a Box observation space")

    @property
    def serving_epsilon(self) -> float:
        return 0.0

    def _masks(self, masks: BoolArray | None, batch: int) -> BoolArray:
        if masks is None:
            return np.ones((batch, self.num_actions), dtype=np.bool_)
        return np.asarray(masks, dtype=np.bool_).reshape(batch, self.num_actions)

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        batch = len(observations)
        mask_BA = (
            None if action_masks is None else torch.from_numpy(self._masks(action_masks, batch))
        )
        with torch.no_grad():
            obs_BO = torch.as_tensor(observations, dtype=torch.float32).reshape(batch, -1)
            actions, propensities = self.head.act(
                self.net.policy(obs_BO), mask_BA, deterministic, self.rng
            )
        return ActionBatch(actions, propensities)

    def observe_normalizer(self, batch: TransitionBatch) -> None:
        """Updates the observation statistics (if normalizing) with the batch's observations."""
        normalization.update(self.net.normalizer, batch.observations)

    def current_learning_rate(self) -> float:
        c = self.config
        if c.learning_rate_schedule == "linear":
            remaining = 1.0 - min(1.0, self.num_steps / max(c.total_timesteps, 1))
            return float(c.learning_rate * max(remaining, 0.0))
        return float(c.learning_rate)

    def gradient_step(self, loss: torch.Tensor) -> None:
        """One optimizer step at the scheduled learning rate, gradients clipped by norm."""
        self.optimizer.lr = self.current_learning_rate()
        self.optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.clip_grad_norm(self.config.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1

    def acting_modules(self) -> tuple[nn.Module, ...]:
        return (self.net,)  # normalizer, actor, critic and (Gaussian) log std

    def policy_module(self) -> nn.Module:
        return self.head.policy_module(self.net.exported_actor())

    def extra_scalars(self) -> dict[str, float]:
        scalars = {"train/learning_rate": self.current_learning_rate()}
        if self.net.log_std is not None:
            scalars["train/std"] = float(self.net.log_std.detach().exp().mean())
        return scalars

    def _network_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {**module_tensors(self.net, "net."), **self.optimizer.state_tensors("optimizer.")}

    def _load_network_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        load_module_tensors(self.net, tensors, "net.")
        self.optimizer.load_state_tensors(tensors, "optimizer.")


class RolloutLearner(PolicyGradientLearner):
    """Collects `n_steps` lockstep steps, then calls `update` on the full rollout."""

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.rollout = RolloutBuffer(
            config.n_steps,
            self.obs_size,
            self.num_actions,
            self.head.action_shape,
            self.head.action_dtype,
        )

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        self.observe_normalizer(batch)
        self.rollout.add(
            batch.observations,
            batch.actions,
            batch.rewards,
            batch.next_observations,
            batch.terminated,
            batch.truncated,
            None
            if batch.action_masks is None
            else self._masks(batch.action_masks, len(batch.actions)),
            batch.log_probs,
            batch.episode_keys,
        )
        self.num_steps += len(batch.actions)
        if not self.rollout.full:
            return {}
        self.evaluate_rollout()
        advantages_TN, returns_TN = compute_gae(
            self.rollout.rewards_TN,
            self.rollout.values_TN,
            self.rollout.next_values_TN,
            self.rollout.terminated_TN,
            self.rollout.truncated_TN,
            self.config.gamma,
            self.config.gae_lambda,
            self.rollout.episode_keys(),
        )
        scalars = self.update(advantages_TN, returns_TN)
        self.rollout.reset()
        return scalars

    def evaluate_rollout(self) -> None:
        """Fills the rollout's values, next values and log-probabilities (no gradients)."""
        r = self.rollout
        total = r.pos * r.n_envs
        with torch.no_grad():
            obs_MO = torch.from_numpy(r.observations_TNO[: r.pos].reshape(total, -1))
            params_MP, values_M = self.net(obs_MO)
            next_values_M = self.net.value(
                torch.from_numpy(r.next_observations_TNO[: r.pos].reshape(total, -1))
            )
            masks = r.flat_masks()
            log_probs_M = self.head.log_prob(
                params_MP,
                torch.from_numpy(r.actions_TN[: r.pos].reshape(total, *r.action_shape)),
                None if masks is None else torch.from_numpy(masks),
            )
        shape = (r.pos, r.n_envs)
        r.values_TN[: r.pos] = values_M.numpy().reshape(shape)
        r.next_values_TN[: r.pos] = next_values_M.numpy().reshape(shape)
        r.log_probs_TN[: r.pos] = log_probs_M.numpy().reshape(shape)

    @abstractmethod
    def update(self, advantages_TN: FloatArray, returns_TN: FloatArray) -> dict[str, float]:
        """Learns from the full rollout; returns training scalars."""

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {**self._network_tensors(), **self.rollout.state_tensors("rollout.")}

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        self._load_network_tensors(tensors)
        self.rollout.load_state_tensors(tensors, "rollout.")
