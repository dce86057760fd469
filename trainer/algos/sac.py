"""Soft Actor-Critic for box actions (Haarnoja et al., 2018, "Soft Actor-Critic: Off-Policy
Maximum Entropy Deep Reinforcement Learning with a Stochastic Actor"; automatic temperature from
"Soft Actor-Critic Algorithms and Applications"), with Stable-Baselines3's defaults.

Actor: an MLP maps the observation to the mean and log std (clamped to [log_std_min,
log_std_max]) of a diagonal Gaussian over u; the action is a = tanh(u) in [-1, 1], rescaled to the
box for the env. Sampling is reparameterised (u = mean + std * noise), so the actor's loss is
differentiated through the sampled action. By the change of variables
    log pi(a|s) = log N(u; mean, std) - sum log(1 - tanh(u)^2),
minus sum log((high - low) / 2) more for the density of the env's action.
Critics: twin Q(s, a) on the observation concatenated with the action in [-1, 1].

Losses of one update, all from the parameters before it and applied in one Adam step
(trainer.core.soft_actor_critic has the shared machinery), a~ ~ pi(s) and a' ~ pi(s') freshly
sampled:
    critics: 0.5 sum_i mean (Q_i(s, a) - y)^2,
             y = r + gamma (1 - terminated) (min_i Q_targ_i(s', a') - alpha log pi(a'|s'))
    actor: mean(alpha log pi(a~|s) - min_i Q_i(s, a~))
    temperature: -log(alpha) mean(log pi(a~|s) + target_entropy), target_entropy = -dim(A).
Truncated episodes bootstrap (only `terminated` stops it). Until `learning_starts` steps have been
observed, exploring actions are uniform over the box (as SB3); deterministic actions, and the
served greedy action, are the squashed mean.
"""

from __future__ import annotations

import copy
import math
from dataclasses import dataclass, replace
from typing import Any

import numpy as np
import torch
from torch import nn
from torch.nn import functional as F

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, SpaceSpec
from trainer.core.distributions import LOG_SQRT_2PI, SquashedGaussianPolicy, bounded, box_bounds
from trainer.core.networks import forward_layers, mlp
from trainer.core.replay import ReplayBuffer, ReplaySample
from trainer.core.soft_actor_critic import (
    EnsembleMLP,
    SoftActorCriticLearner,
    SoftActorCriticOptions,
)
from trainer.learner import ActionBatch, BoolArray, FloatArray, TransitionBatch
from trainer.registry import register

LOG_OFFSET = LOG_SQRT_2PI + 2.0 * math.log(2.0)
"""The constant terms of the squashed Gaussian's log-density, per dimension."""


@dataclass
class SACConfig(SoftActorCriticOptions):
    target_entropy: float | None = None
    """Entropy the automatic temperature aims for; None = -(number of action dimensions)."""
    log_std_min: float = -20.0
    """Lower clamp of the actor's log standard deviation."""
    log_std_max: float = 2.0
    """Upper clamp of the actor's log standard deviation."""

    def validate(self) -> None:
        super().validate()
        if self.log_std_min >= self.log_std_max:
            raise ConfigError("log_std_min must be below log_std_max")


def squashed_sample(
    mean_BD: torch.Tensor, log_std_BD: torch.Tensor, noise_BD: torch.Tensor
) -> tuple[torch.Tensor, torch.Tensor]:
    """(tanh(u), log pi [B]) for u = mean + std * noise. By the change of variables,
        log pi = log N(u; mean, std) - sum log(1 - tanh(u)^2),
    where the Gaussian's standardised value is the noise itself and, in a stable form,
    log(1 - tanh(u)^2) = 2 (log 2 - u - softplus(-2u)). Written with few autograd nodes."""
    u_BD = torch.addcmul(mean_BD, log_std_BD.exp(), noise_BD)
    log_prob_BD = (
        2.0 * (u_BD + F.softplus(-2.0 * u_BD)) - log_std_BD - 0.5 * noise_BD.square() - LOG_OFFSET
    )
    return torch.tanh(u_BD), log_prob_BD.sum(dim=-1)


class SquashedGaussianActor(nn.Module):
    """(observation [B, obs]) -> (mean [B, D], clamped log_std [B, D]): the observation
    normalizer, then an MLP with 2D outputs."""

    def __init__(
        self, normalizer: nn.Module, obs_size: int, config: SACConfig, action_size: int
    ) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.net = mlp(obs_size, config.net_arch, 2 * action_size)
        self.log_std_min, self.log_std_max = config.log_std_min, config.log_std_max

    def forward(self, observations_BO: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        return self.heads(self.normalizer(observations_BO))

    def heads(self, normalized_BO: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """The outputs for observations already normalised."""
        mean_BD, log_std_BD = forward_layers(self.net, normalized_BO).chunk(2, dim=-1)
        return mean_BD, log_std_BD.clamp(self.log_std_min, self.log_std_max)


@register
class SAC(SoftActorCriticLearner):
    algorithm = "sac"
    distribution = "squashed_gaussian"
    config_class = SACConfig
    action_spaces = ("continuous",)
    config: SACConfig
    actor: SquashedGaussianActor
    action_space: BoxSpec

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.low, self.high = box_bounds(self.action_space)
        self.half_range = (self.high - self.low) / 2
        self.log_half_range = float(self.half_range.log().sum())
        """log of the Jacobian determinant from [-1, 1]^D to the box."""
        self.low_np, self.high_np = self.low.numpy(), self.high.numpy()
        self.half_range_np = self.half_range.numpy()
        self.uniform_density = float(np.exp(-np.log(self.high_np - self.low_np).sum()))
        self.target_entropy = (
            -float(self.action_size) if config.target_entropy is None else config.target_entropy
        )

    @classmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        if not isinstance(observation_space, BoxSpec):
            raise ConfigError("sac needs a Box observation space")
        if not isinstance(action_space, BoxSpec):
            raise ConfigError("sac needs a Box action space (use sac_discrete for Discrete)")
        if not bounded(action_space) or not all(
            lo < hi for lo, hi in zip(action_space.low, action_space.high, strict=True)
        ):
            raise ConfigError("sac needs finite action bounds with low < high in every dimension")

    @property
    def action_size(self) -> int:
        return self.action_space.flat_size

    def make_networks(self) -> tuple[nn.Module, EnsembleMLP]:
        actor = SquashedGaussianActor(self.normalizer, self.obs_size, self.config, self.action_size)
        return actor, EnsembleMLP(self.obs_size + self.action_size, self.config.net_arch, 1)

    def make_replay(self) -> ReplayBuffer:
        return ReplayBuffer(self.config.buffer_size, self.obs_size, 0, self.action_size)

    def to_box(self, squashed_BD: torch.Tensor) -> torch.Tensor:
        """[-1, 1] -> the box."""
        return torch.clamp(self.low + (squashed_BD + 1.0) * self.half_range, self.low, self.high)

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        batch = len(observations)
        if not deterministic and self.num_steps < self.config.learning_starts:
            shape = (batch, self.action_size)
            actions = self.rng.uniform(self.low_np, self.high_np, size=shape).astype(np.float32)
            actions = np.clip(actions, self.low_np, self.high_np)
            return ActionBatch(actions, np.full(batch, self.uniform_density, dtype=np.float32))
        with torch.no_grad():
            obs_BO = torch.as_tensor(observations, dtype=torch.float32).reshape(batch, -1)
            mean_BD, log_std_BD = self.actor(obs_BO)
            if deterministic:
                greedy_BD = self.to_box(torch.tanh(mean_BD))
                return ActionBatch(greedy_BD.numpy(), np.ones(batch, dtype=np.float32))
            noise_BD = torch.randn(mean_BD.shape, generator=self.generator)
            squashed_BD, log_prob_B = squashed_sample(mean_BD, log_std_BD, noise_BD)
            density_B = (log_prob_B - self.log_half_range).exp()
        return ActionBatch(self.to_box(squashed_BD).numpy(), density_B.numpy())

    def stored(self, batch: TransitionBatch) -> TransitionBatch:
        """Actions mapped from the box back to [-1, 1] (clipped); no masks."""
        actions = np.asarray(batch.actions, dtype=np.float32).reshape(len(batch.rewards), -1)
        unit = (actions - self.low_np) / self.half_range_np - 1.0
        return replace(
            batch,
            actions=np.clip(unit, -1.0, 1.0),
            action_masks=None,
            next_action_masks=None,
        )

    def update(self, sample: ReplaySample, alpha: torch.Tensor) -> torch.Tensor:
        obs_BO = self.normalizer(sample.observations)
        next_obs_BO = self.normalizer(sample.next_observations)
        noise_2BD = torch.randn((2, *sample.actions.shape), generator=self.generator)
        with torch.no_grad():
            next_actions_BD, next_log_prob_B = squashed_sample(
                *self.actor.heads(next_obs_BO), noise_2BD[1]
            )
            next_q_2B1 = self.critic_target(torch.cat([next_obs_BO, next_actions_BD], dim=1))
            soft_value_B = next_q_2B1.amin(dim=0).squeeze(-1) - alpha * next_log_prob_B
            targets_B = torch.addcmul(sample.rewards, sample.discounts, soft_value_B)
        q_taken_2B = self.critic(torch.cat([obs_BO, sample.actions], dim=1)).squeeze(-1)
        critic_loss = self.critic_loss(q_taken_2B, targets_B)

        actions_BD, log_prob_B = squashed_sample(*self.actor.heads(obs_BO), noise_2BD[0])
        q_pi_2B1 = self.critic(torch.cat([obs_BO, actions_BD], dim=1), detach_weights=True)
        actor_loss = (alpha * log_prob_B - q_pi_2B1.amin(dim=0).squeeze(-1)).mean()
        gap_B = log_prob_B.detach() + self.target_entropy
        return self.optimize(critic_loss, actor_loss, gap_B, alpha)

    def policy_module(self) -> nn.Module:
        return SquashedGaussianPolicy(copy.deepcopy(self.actor), self.action_space)
