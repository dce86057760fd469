"""Network builders."""

from __future__ import annotations

import copy
from collections.abc import Sequence

import torch
from torch import nn


def mlp(in_features: int, hidden: Sequence[int], out_features: int) -> nn.Sequential:
    """Linear layers with ReLU between them; no activation on the output."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [nn.Linear(width, size), nn.ReLU()]
        width = size
    layers.append(nn.Linear(width, out_features))
    return nn.Sequential(*layers)


class DuelingQNetwork(nn.Module):
    """Dueling architecture (Wang et al., 2016): a shared trunk, then a state value V(s) and
    advantages A(s, a), combined as Q = V + A - mean_a A (the mean keeps V and A identifiable)."""

    def __init__(self, in_features: int, hidden: Sequence[int], num_actions: int) -> None:
        super().__init__()
        if not hidden:
            raise ValueError("a dueling network needs at least one hidden layer")
        self.trunk = nn.Sequential(*list(mlp(in_features, hidden[:-1], hidden[-1])), nn.ReLU())
        self.value = nn.Linear(hidden[-1], 1)
        self.advantage = nn.Linear(hidden[-1], num_actions)

    def forward(self, observations_BO: torch.Tensor) -> torch.Tensor:
        features_BH = self.trunk(observations_BO)
        advantages_BA = self.advantage(features_BH)
        q_values_BA: torch.Tensor = (
            self.value(features_BH) + advantages_BA - advantages_BA.mean(dim=-1, keepdim=True)
        )
        return q_values_BA


def q_network(
    in_features: int, hidden: Sequence[int], num_actions: int, dueling: bool
) -> nn.Module:
    return (DuelingQNetwork if dueling else mlp)(in_features, hidden, num_actions)


def orthogonal_mlp(
    in_features: int, hidden: Sequence[int], out_features: int, output_gain: float
) -> nn.Sequential:
    """Tanh MLP with orthogonal weights and zero biases, as Stable-Baselines3 and CleanRL build
    actor-critic networks: gain sqrt(2) on hidden layers, `output_gain` on the output layer."""
    layers: list[nn.Module] = []
    width = in_features
    for size in hidden:
        layers += [_orthogonal(nn.Linear(width, size), 2**0.5), nn.Tanh()]
        width = size
    layers.append(_orthogonal(nn.Linear(width, out_features), output_gain))
    return nn.Sequential(*layers)


def _orthogonal(layer: nn.Linear, gain: float) -> nn.Linear:
    nn.init.orthogonal_(layer.weight, gain)
    nn.init.zeros_(layer.bias)
    return layer


class ActorCritic(nn.Module):
    """Separate policy and value MLPs (no shared trunk, as SB3's default for MlpPolicy) behind an
    optional input normalizer. The policy output layer starts near zero (gain 0.01), so the
    initial policy is close to uniform over the allowed actions (or centred on 0 for Gaussian
    policies, whose learned state-independent log std starts at `log_std_init`).

    `policy(obs)` gives the distribution parameters (trainer.core.policy_heads): the logits, or
    the mean and log std side by side; `forward(obs) -> (parameters, values_B)`."""

    def __init__(
        self,
        in_features: int,
        hidden: Sequence[int],
        num_outputs: int,
        normalizer: nn.Module | None = None,
        log_std_init: float | None = None,
    ) -> None:
        super().__init__()
        self.normalizer = normalizer if normalizer is not None else nn.Identity()
        self.actor = orthogonal_mlp(in_features, hidden, num_outputs, 0.01)
        self.critic = orthogonal_mlp(in_features, hidden, 1, 1.0)
        self.log_std: nn.Parameter | None = (
            None
            if log_std_init is None
            else nn.Parameter(torch.full((num_outputs,), float(log_std_init)))
        )

    def _parameters_of(self, actor_out: torch.Tensor) -> torch.Tensor:
        if self.log_std is None:
            return actor_out
        return torch.cat([actor_out, self.log_std.expand_as(actor_out)], dim=-1)

    def policy(self, observations_BO: torch.Tensor) -> torch.Tensor:
        return self._parameters_of(self.actor(self.normalizer(observations_BO)))

    def value(self, observations_BO: torch.Tensor) -> torch.Tensor:
        values_B: torch.Tensor = self.critic(self.normalizer(observations_BO)).squeeze(-1)
        return values_B

    def forward(self, observations_BO: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        features_BO = self.normalizer(observations_BO)
        values_B: torch.Tensor = self.critic(features_BO).squeeze(-1)
        return self._parameters_of(self.actor(features_BO)), values_B

    def exported_actor(self) -> nn.Module:
        """A copy of normalizer + actor: observation -> logits, or -> mean."""
        return copy.deepcopy(nn.Sequential(self.normalizer, self.actor))
