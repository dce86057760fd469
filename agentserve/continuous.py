"""Continuous actions, torch-free: how a served Gaussian policy turns (mean, log std) into an
action inside the action box, and the density of what it drew.

- `gaussian` (PPO, A2C, REINFORCE): u ~ N(mean, std); the caller clips u to the box (and to any
  safety bounds; see service.policy). The density reported is that of u (the clipped tail is
  what Stable-Baselines3 and CleanRL also ignore).
- `squashed_gaussian` (SAC): u ~ N(mean, std), action = low + (tanh(u) + 1) (high - low) / 2,
  with the change-of-variables density of the action itself.
The noise-free action (`greedy_action` in the ONNX graph) is the same map applied to the mean.
"""

from __future__ import annotations

import math

import numpy as np
import numpy.typing as npt

FloatArray = npt.NDArray[np.float32]
LOG_SQRT_2PI = 0.5 * math.log(2.0 * math.pi)


def gaussian_log_density(u: FloatArray, mean: FloatArray, log_std: FloatArray) -> FloatArray:
    """log N(u; mean, diag(exp(log_std)^2)), summed over the last (action) axis."""
    z = (u.astype(np.float64) - mean) / np.exp(log_std.astype(np.float64))
    return np.asarray(np.sum(-0.5 * z * z - log_std - LOG_SQRT_2PI, axis=-1))


def squash(u: FloatArray, low: FloatArray, high: FloatArray) -> FloatArray:
    """tanh(u) mapped from [-1, 1] onto [low, high]."""
    return (low + (np.tanh(u) + 1.0) * 0.5 * (high - low)).astype(np.float32)


def sample(
    distribution: str,
    mean: FloatArray,
    log_std: FloatArray,
    low: FloatArray,
    high: FloatArray,
    rng: np.random.Generator,
) -> tuple[FloatArray, FloatArray]:
    """(the policy's actions, probability densities of the draws) for `mean` / `log_std` of
    shape [..., D]: u itself for `gaussian` (possibly outside the box), the squashed action
    (inside it) otherwise. Densities have shape [...]."""
    u = (mean + np.exp(log_std) * rng.standard_normal(mean.shape)).astype(np.float32)
    log_density = gaussian_log_density(u, mean, log_std)
    if distribution == "gaussian":
        return u, np.exp(np.minimum(log_density, 80.0)).astype(np.float32)
    if distribution == "squashed_gaussian":
        tanh_u = np.tanh(u.astype(np.float64))
        half_range = 0.5 * (high.astype(np.float64) - low)
        jacobian = np.log(np.maximum(1.0 - tanh_u * tanh_u, 1e-12) * half_range)
        log_density = log_density - np.sum(jacobian, axis=-1)
        return squash(u, low, high), np.exp(np.minimum(log_density, 80.0)).astype(np.float32)
    raise ValueError(f"unknown continuous distribution {distribution!r}")
