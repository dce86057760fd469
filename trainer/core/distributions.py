"""Gaussian policies over box actions, in torch: log-densities, entropies, tanh squashing, and the
exported policy modules (the continuous contract of agentserve.manifest / agentserve.continuous).

Shapes: B batch, D action dimensions. Log-densities and entropies are summed over D.
"""

from __future__ import annotations

import math

import torch
from torch import nn
from torch.nn import functional as F

from agentserve.spaces import BoxSpec

LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_prob(
    actions_BD: torch.Tensor, mean_BD: torch.Tensor, log_std_BD: torch.Tensor
) -> torch.Tensor:
    """[B] log N(a; mean, diag(std^2))."""
    z_BD = (actions_BD - mean_BD) * torch.exp(-log_std_BD)
    return (-0.5 * z_BD.pow(2) - log_std_BD - LOG_SQRT_2PI).sum(dim=-1)


def gaussian_entropy(log_std_BD: torch.Tensor) -> torch.Tensor:
    """[B] entropy of a diagonal Gaussian."""
    return (log_std_BD + 0.5 + LOG_SQRT_2PI).sum(dim=-1)


def tanh_log_det_jacobian(u_BD: torch.Tensor) -> torch.Tensor:
    """[B] sum log(1 - tanh(u)^2), in the stable form 2 (log 2 - u - softplus(-2u))."""
    return (2.0 * (math.log(2.0) - u_BD - F.softplus(-2.0 * u_BD))).sum(dim=-1)


def box_bounds(space: BoxSpec) -> tuple[torch.Tensor, torch.Tensor]:
    """The box's flat low and high bounds as float32 tensors."""
    low = torch.tensor(space.low, dtype=torch.float32)
    high = torch.tensor(space.high, dtype=torch.float32)
    return low, high


def bounded(space: BoxSpec) -> bool:
    return all(math.isfinite(v) for v in space.low + space.high)


class GaussianPolicy(nn.Module):
    """(observation [B, ...]) -> (clip(mean), mean, log_std): a state-independent log std, as
    PPO and A2C use (distribution "gaussian")."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, actor: nn.Module, log_std_D: torch.Tensor, space: BoxSpec) -> None:
        super().__init__()
        self.actor = actor
        self.log_std = nn.Parameter(log_std_D.detach().clone(), requires_grad=False)
        low, high = box_bounds(space)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean_BD = self.actor(observation.reshape(observation.shape[0], -1))
        greedy_BD = torch.maximum(torch.minimum(mean_BD, self.high), self.low)
        return greedy_BD, mean_BD, self.log_std.expand_as(mean_BD)


class SquashedGaussianPolicy(nn.Module):
    """(observation [B, ...]) -> (squash(mean), mean, log_std) for a network that outputs
    (mean, log_std) per state, as SAC's actor does (distribution "squashed_gaussian")."""

    low: torch.Tensor
    high: torch.Tensor

    def __init__(self, actor: nn.Module, space: BoxSpec) -> None:
        super().__init__()
        self.actor = actor
        low, high = box_bounds(space)
        self.register_buffer("low", low)
        self.register_buffer("high", high)

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        mean_BD, log_std_BD = self.actor(observation.reshape(observation.shape[0], -1))
        greedy_BD = self.low + (torch.tanh(mean_BD) + 1.0) * 0.5 * (self.high - self.low)
        return greedy_BD, mean_BD, log_std_BD
