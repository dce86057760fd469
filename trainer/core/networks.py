"""Network builders."""

from __future__ import annotations

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
