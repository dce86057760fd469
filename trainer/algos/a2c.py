"""Advantage Actor-Critic (A2C; Mnih et al., 2016, synchronous variant as in Stable-Baselines3).

Collects `n_steps` lockstep steps of every env (the offline loop's `n_envs`), computes GAE(lambda)
advantages (lambda = 1: plain n-step returns) with truncated episodes bootstrapping from their true
last observation, then makes one gradient step on
    -mean(log pi(a|s) * A) + vf_coef * mean((R - V(s))^2) - ent_coef * mean(H(pi(.|s)))
with the gradient norm clipped. Masks apply when acting and in log pi and H. Discrete actions use
a masked softmax policy, Box actions a Gaussian with a learned log std.

Online, an action chosen by an older policy mu (the service acts while the learner updates; its
log mu(a|s) comes with the transition) has its policy-gradient term weighted by the truncated
importance weight min(1, pi(a|s) / mu(a|s)); advantages follow each episode's own steps when the
episodes of several simulators arrive interleaved (trainer.core.rollout).
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from agentserve.errors import ConfigError
from trainer.core.actor_critic import PolicyOptions, RolloutLearner, check_common
from trainer.learner import FloatArray
from trainer.registry import register


@dataclass
class A2CConfig(PolicyOptions):
    learning_rate: float = 7e-4
    """Optimizer step size (at the start, when the schedule is linear)."""
    learning_rate_schedule: str = "constant"
    """"constant", or "linear" (decays to 0 over the step budget)."""
    optimizer: str = "rmsprop"
    """"rmsprop" (as the A2C paper and SB3) or "adam"."""
    rmsprop_alpha: float = 0.99
    """RMSprop smoothing constant."""
    optimizer_eps: float = 1e-5
    """Optimizer epsilon (numerical stability)."""
    n_steps: int = 5
    """Steps per env in each rollout (one update per rollout)."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 1.0
    """GAE lambda (1 = n-step returns)."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """Gradient norm clip."""
    normalize_advantage: bool = False
    """Normalise the advantages of each rollout to zero mean and unit variance."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths of the policy and of the value network (separate tanh MLPs)."""
    total_timesteps: int = 500_000
    """Step budget the learning-rate schedule is laid over (set by the training loop)."""

    def validate(self) -> None:
        check_common(self)
        if self.n_steps < 1:
            raise ConfigError("n_steps must be >= 1")
        if not 0 <= self.gae_lambda <= 1:
            raise ConfigError("gae_lambda must lie in [0, 1]")


@register
class A2C(RolloutLearner):
    algorithm = "a2c"
    config_class = A2CConfig
    config: A2CConfig

    def update(self, advantages_TN: FloatArray, returns_TN: FloatArray) -> dict[str, float]:
        r = self.rollout
        total = r.pos * r.n_envs
        obs_MO = torch.from_numpy(r.observations_TNO.reshape(total, -1))
        masks = r.flat_masks()
        mask_MA = None if masks is None else torch.from_numpy(masks)
        actions_M = torch.from_numpy(r.actions_TN.reshape(total, *r.action_shape))
        advantages_M = torch.from_numpy(advantages_TN.reshape(total))
        if self.config.normalize_advantage and total > 1:
            advantages_M = (advantages_M - advantages_M.mean()) / (advantages_M.std() + 1e-8)
        returns_M = torch.from_numpy(returns_TN.reshape(total))
        params_MP, values_M = self.net(obs_MO)
        log_probs_M, entropy_M = self.head.log_prob_entropy(params_MP, actions_M, mask_MA)
        weights = r.behavior_weights()  # actions chosen by an older policy (online)
        if weights is not None:
            advantages_M = advantages_M * torch.from_numpy(weights)
        policy_loss = -(log_probs_M * advantages_M).mean()
        value_loss = F.mse_loss(values_M, returns_M)
        entropy = entropy_M.mean()
        loss = policy_loss + self.config.vf_coef * value_loss - self.config.ent_coef * entropy
        self.gradient_step(loss)
        return {
            "train/loss": float(loss.detach()),
            "train/policy_loss": float(policy_loss.detach()),
            "train/value_loss": float(value_loss.detach()),
            "train/entropy_loss": -float(entropy.detach()),
        }
