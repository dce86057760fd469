"""Observation normalization that travels with the policy: a module with running mean and
variance buffers, placed in front of the networks, so its statistics are saved in checkpoints and
exported inside the ONNX graph (the service can never forget to apply them).

obs' = clip((obs - mean) / sqrt(var + eps), -clip, clip), the statistics updated from every batch
of observations the learner is handed (parallel Welford update, as Stable-Baselines3's
VecNormalize does). Learners update it in `observe` only; acting and evaluation never change it.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from agentserve.errors import ConfigError

EPSILON = 1e-8


class ObservationNormalizer(nn.Module):
    mean: torch.Tensor
    var: torch.Tensor
    count: torch.Tensor

    def __init__(self, size: int, clip: float = 10.0) -> None:
        super().__init__()
        if clip <= 0:
            raise ConfigError("normalize_clip must be > 0")
        self.clip = float(clip)
        self.register_buffer("mean", torch.zeros(size, dtype=torch.float64))
        self.register_buffer("var", torch.ones(size, dtype=torch.float64))
        self.register_buffer("count", torch.tensor(EPSILON, dtype=torch.float64))

    def update(self, observations: np.ndarray) -> None:
        batch = torch.as_tensor(np.asarray(observations, dtype=np.float64)).reshape(
            len(observations), -1
        )
        batch_mean = batch.mean(dim=0)
        batch_var = batch.var(dim=0, unbiased=False)
        n = float(len(batch))
        total = self.count + n
        delta = batch_mean - self.mean
        self.mean.add_(delta * n / total)
        m2 = self.var * self.count + batch_var * n + delta.pow(2) * self.count * n / total
        self.var.copy_(m2 / total)
        self.count.copy_(total)

    def forward(self, observations_BO: torch.Tensor) -> torch.Tensor:
        scale = torch.rsqrt(self.var + EPSILON).to(observations_BO.dtype)
        centred = observations_BO - self.mean.to(observations_BO.dtype)
        return torch.clamp(centred * scale, -self.clip, self.clip)


def input_layer(size: int, normalize: bool, clip: float) -> nn.Module:
    """The first layer of a learner's networks: a normalizer when asked for, else identity."""
    return ObservationNormalizer(size, clip) if normalize else nn.Identity()


def update(layer: nn.Module, observations: np.ndarray) -> None:
    """Updates `layer`'s statistics if it is a normalizer."""
    if isinstance(layer, ObservationNormalizer):
        layer.update(observations)
