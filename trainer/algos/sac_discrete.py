"""Soft Actor-Critic for discrete actions (Christodoulou, 2019, "Soft Actor-Critic for Discrete
Action Settings"), with action masks everywhere.

The policy is a masked softmax over the actor's logits, and the critics output Q(s, .) for every
action, so the expectations that continuous SAC estimates with a sampled action are computed
exactly, over the allowed actions only:
    critics: 0.5 sum_i mean (Q_i(s, a) - y)^2, y = r + gamma (1 - terminated) V(s'),
             V(s') = sum_{a' allowed at s'} pi(a'|s') (min_i Q_targ_i(s', a') - alpha log pi(a'|s'))
    actor: mean over s of sum_{a allowed at s} pi(a|s) (alpha log pi(a|s) - min_i Q_i(s, a))
    temperature: -log(alpha) mean(target_entropy - H(pi(.|s))), with the exact entropy H.
A masked action has probability exactly 0 and its Q-values never enter a target or a loss. The
default target entropy is `target_entropy_scale` times the entropy of the uniform policy over the
actions allowed at s, log(allowed count); 0.89 is CleanRL's scale (sac_atari.py), since the
maximum entropy itself is unreachable by a policy that must also prefer good actions.
All three losses come from the parameters before the update and are applied in one Adam step;
the critics' outputs enter the actor's loss detached (its gradient flows through pi only).
Truncated episodes bootstrap (only `terminated` stops it). Until `learning_starts` steps have been
observed, exploring actions are uniform over the allowed ones. The shared machinery (twin
critics, Polyak targets, temperature, schedule, state) is trainer.core.soft_actor_critic; the
served policy is exported as the policy-gradient learners' is (distribution "softmax").
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec
from trainer.core import masking
from trainer.core.actor_critic import SoftmaxPolicy
from trainer.core.networks import mlp
from trainer.core.replay import ReplayBuffer, ReplaySample
from trainer.core.soft_actor_critic import (
    EnsembleMLP,
    SoftActorCriticLearner,
    SoftActorCriticOptions,
)
from trainer.learner import ActionBatch, BoolArray, FloatArray, TransitionBatch
from trainer.registry import register


@dataclass
class SACDiscreteConfig(SoftActorCriticOptions):
    target_entropy: float | None = None
    """Entropy the automatic temperature aims for; None = target_entropy_scale * log(number of
    actions allowed at s)."""
    target_entropy_scale: float = 0.89
    """Fraction of the uniform policy's entropy used as the default target (CleanRL's 0.89)."""

    def validate(self) -> None:
        super().validate()
        if not 0 <= self.target_entropy_scale <= 1:
            raise ConfigError("target_entropy_scale must lie in [0, 1]")


class LogitsActor(nn.Module):
    """(observation [B, obs]) -> logits [B, A]: the observation normalizer, then an MLP."""

    def __init__(self, normalizer: nn.Module, obs_size: int, hidden: list[int], n: int) -> None:
        super().__init__()
        self.normalizer = normalizer
        self.net = mlp(obs_size, hidden, n)

    def forward(self, observations_BO: torch.Tensor) -> torch.Tensor:
        logits_BA: torch.Tensor = self.net(self.normalizer(observations_BO))
        return logits_BA


@register
class SACDiscrete(SoftActorCriticLearner):
    algorithm = "sac_discrete"
    distribution = "softmax"
    config_class = SACDiscreteConfig
    config: SACDiscreteConfig
    actor: LogitsActor

    @classmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        if not isinstance(observation_space, BoxSpec):
            raise ConfigError("sac_discrete needs a Box observation space")
        if not isinstance(action_space, DiscreteSpec):
            raise ConfigError("sac_discrete needs a Discrete action space (use sac for Box)")

    @property
    def num_actions(self) -> int:
        assert isinstance(self.action_space, DiscreteSpec)
        return self.action_space.n

    def make_networks(self) -> tuple[nn.Module, EnsembleMLP]:
        hidden, n = self.config.net_arch, self.num_actions
        actor = LogitsActor(self.normalizer, self.obs_size, hidden, n)
        return actor, EnsembleMLP(self.obs_size, hidden, n)

    def make_replay(self) -> ReplayBuffer:
        return ReplayBuffer(self.config.buffer_size, self.obs_size, self.num_actions)

    def stored(self, batch: TransitionBatch) -> TransitionBatch:
        return batch

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        batch = len(observations)
        masks = (
            masking.all_allowed(batch, self.num_actions)
            if action_masks is None
            else np.asarray(action_masks, dtype=np.bool_)
        )
        mask_BA = torch.from_numpy(masks)
        if not deterministic and self.num_steps < self.config.learning_starts:
            uniform_BA = torch.zeros(mask_BA.shape)
            random_B = masking.sample_categorical(uniform_BA, mask_BA, self.rng).numpy()
            return ActionBatch(random_B, (1.0 / masks.sum(axis=1)).astype(np.float32))
        with torch.no_grad():
            obs_BO = torch.as_tensor(observations, dtype=torch.float32).reshape(batch, -1)
            logits_BA = self.actor(obs_BO)
            if deterministic:
                greedy_B = masking.masked_argmax_torch(logits_BA, mask_BA)
                return ActionBatch(greedy_B.numpy(), np.ones(batch, dtype=np.float32))
            actions_B = masking.sample_categorical(logits_BA, mask_BA, self.rng)
            probabilities_BA = masking.masked_probabilities(logits_BA, mask_BA)
            chosen_B = probabilities_BA.gather(1, actions_B.unsqueeze(1)).squeeze(1)
        return ActionBatch(actions_B.numpy(), chosen_B.numpy())

    def update(self, sample: ReplaySample, alpha: torch.Tensor) -> torch.Tensor:
        obs_BO = self.normalizer(sample.observations)
        next_obs_BO = self.normalizer(sample.next_observations)
        mask_BA, next_mask_BA = sample.action_masks, sample.next_action_masks
        with torch.no_grad():
            next_pi_BA, next_log_pi_BA = policy(self.actor.net(next_obs_BO), next_mask_BA)
            next_q_BA = allowed(self.critic_target(next_obs_BO).amin(dim=0), next_mask_BA)
            soft_value_B = (next_pi_BA * (next_q_BA - alpha * next_log_pi_BA)).sum(dim=1)
            targets_B = torch.addcmul(sample.rewards, sample.discounts, soft_value_B)
        q_2BA = self.critic(obs_BO)
        taken_2B1 = sample.actions.view(1, -1, 1).expand(self.critic.members, -1, 1)
        critic_loss = self.critic_loss(q_2BA.gather(2, taken_2B1).squeeze(-1), targets_B)

        # The actor's loss needs no gradient through Q: the same critic outputs, detached.
        q_BA = allowed(q_2BA.detach().amin(dim=0), mask_BA)
        pi_BA, log_pi_BA = policy(self.actor.net(obs_BO), mask_BA)
        actor_loss = (pi_BA * (alpha * log_pi_BA - q_BA)).sum(dim=1).mean()
        entropy_B = -(pi_BA * log_pi_BA).detach().sum(dim=1)
        gap_B = self.target_entropy(mask_BA) - entropy_B
        return self.optimize(critic_loss, actor_loss, gap_B, alpha)

    def target_entropy(self, mask_BA: torch.Tensor) -> torch.Tensor:
        """[B] the entropy the temperature aims for at each state."""
        c = self.config
        if c.target_entropy is not None:
            return torch.full((len(mask_BA),), c.target_entropy)
        return c.target_entropy_scale * mask_BA.sum(dim=1).float().log()

    def policy_module(self) -> nn.Module:
        return SoftmaxPolicy(copy.deepcopy(self.actor))


def allowed(values_BA: torch.Tensor, mask_BA: torch.Tensor) -> torch.Tensor:
    """`values_BA` with masked entries set to 0 (so a masked action's value never counts)."""
    return torch.where(mask_BA, values_BA, 0.0)


def policy(logits_BA: torch.Tensor, mask_BA: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """(pi, log pi) of the masked softmax, both exactly 0 on masked actions (finite gradients)."""
    log_pi_BA = allowed(masking.masked_log_softmax(logits_BA, mask_BA), mask_BA)
    pi_BA = allowed(log_pi_BA.exp(), mask_BA)
    return pi_BA, log_pi_BA
