"""Thompson sampling (Thompson, 1933; Russo et al., 2018) with conjugate posteriors per arm.

- `prior: gaussian`: Gaussian rewards with known noise `reward_std`; each arm's mean reward has a
  Normal(prior_mean, prior_std^2) prior, so its posterior after N pulls summing to S is Normal
  with precision 1/prior_std^2 + N/reward_std^2 and mean
  (prior_mean/prior_std^2 + S/reward_std^2) / precision.
- `prior: beta`: rewards are successes in [0, 1] (Bernoulli); each arm's success rate has a
  Beta(prior_alpha, prior_beta) prior, so its posterior is
  Beta(prior_alpha + S, prior_beta + N - S).

Thompson sampling pulls each arm with the probability that it is the best allowed arm under the
posterior (drawing one sample per arm and taking the argmax does exactly that). This learner
computes those probabilities instead: each arm's posterior is tabulated on a common grid of
`GRID_CELLS` cells (its density at the cell midpoints, normalised), and

    P(a is best among allowed S) = sum over cells g of  mass_a(g) * prod_{b in S, b != a} F_b(g)

with F_b(g) the posterior mass of arm b below the middle of cell g (ties within a cell split
evenly); against Monte Carlo draws from the exact posteriors the error is about 1e-3. Acting
samples from these probabilities, so each propensity is the probability of the action actually
taken; the exported graph holds the grid of the snapshot and computes the same probabilities for
each request's mask (not a renormalised all-arms table). Deterministic acting pulls the allowed
arm with the highest posterior mean. Served: distribution `thompson`, `values` = posterior means.
One independent bandit per discrete observation.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agentserve.errors import ConfigError
from agentserve.spaces import SpaceSpec
from trainer.core import masking
from trainer.core.bandits import TableBandit, load_array
from trainer.learner import ActionBatch, BoolArray, FloatArray, TransitionBatch
from trainer.registry import register

GRID_CELLS = 512
"""Cells of the grid on which each arm's posterior over its mean is tabulated."""
TAIL_STDS = 6.0
"""A Gaussian grid spans every arm's posterior mean +- this many posterior standard deviations."""
TINY = 1e-30
"""Smaller masses and cumulative masses count as 0 (keeps float32 away from denormals)."""
MIN_LOG = -80.0
"""exp() arguments are clipped here (exp(-80) ~ 2e-35 is still a normal float32)."""
PRIORS = ("gaussian", "beta")


@dataclass
class ThompsonConfig:
    prior: str = "gaussian"
    """`gaussian` (Gaussian rewards, Normal prior on each mean) or `beta` (rewards in [0, 1],
    Beta prior on each success rate)."""
    prior_mean: float = 0.0
    """Gaussian prior: mean of every arm's prior."""
    prior_std: float = 1.0
    """Gaussian prior: standard deviation of every arm's prior."""
    reward_std: float = 1.0
    """Gaussian prior: known standard deviation of the reward noise."""
    prior_alpha: float = 1.0
    """Beta prior: pseudo-successes of every arm (1 and 1: uniform)."""
    prior_beta: float = 1.0
    """Beta prior: pseudo-failures of every arm."""

    def validate(self) -> None:
        if self.prior not in PRIORS:
            raise ConfigError(f"prior must be one of {', '.join(PRIORS)}; got {self.prior!r}")
        for name in ("prior_std", "reward_std", "prior_alpha", "prior_beta"):
            value = getattr(self, name)
            if not 0.0 < value < float("inf"):
                raise ConfigError(f"{name} must be a positive number, got {value}")


def best_arm_probabilities(mass_BAG: torch.Tensor, mask_BA: torch.Tensor) -> torch.Tensor:
    """[B, A] the probability that each allowed arm is the best allowed one (masked: exactly 0),
    from each arm's posterior mass on a common grid [B, A, G] (see the module docstring)."""
    below_BAG = torch.cumsum(mass_BAG, dim=-1) - 0.5 * mass_BAG
    below_BAG = torch.where(mask_BA.unsqueeze(-1), below_BAG, 1.0)  # masked arms never win
    log_below_BAG = torch.log(torch.clamp(below_BAG, min=TINY))
    log_others_BAG = log_below_BAG.sum(dim=1, keepdim=True) - log_below_BAG
    others_BAG = torch.exp(torch.clamp(log_others_BAG, min=MIN_LOG))
    wins_BA = torch.where(mask_BA, (mass_BAG * others_BAG).sum(dim=-1), 0.0)
    return wins_BA / torch.clamp(wins_BA.sum(dim=-1, keepdim=True), min=TINY)


def best_arm_probabilities_np(
    mass_BAG: npt.NDArray[np.float32], mask_BA: BoolArray
) -> npt.NDArray[np.float64]:
    """Numpy twin of `best_arm_probabilities` (float64), used when acting."""
    mass_BAG = mass_BAG.astype(np.float64)
    below_BAG = np.cumsum(mass_BAG, axis=-1) - 0.5 * mass_BAG
    below_BAG = np.where(mask_BA[..., None], below_BAG, 1.0)
    log_below_BAG = np.log(np.maximum(below_BAG, TINY))
    log_others_BAG = log_below_BAG.sum(axis=1, keepdims=True) - log_below_BAG
    others_BAG = np.exp(np.maximum(log_others_BAG, MIN_LOG))
    wins_BA = np.where(mask_BA, (mass_BAG * others_BAG).sum(axis=-1), 0.0)
    return np.asarray(wins_BA / np.maximum(wins_BA.sum(axis=-1, keepdims=True), TINY))


class ThompsonPolicy(nn.Module):
    """(state indices [B, 1], mask) -> (argmax posterior mean, P(best allowed arm), means)."""

    def __init__(self, means_SA: torch.Tensor, mass_SAG: torch.Tensor) -> None:
        super().__init__()
        self.posterior_means = nn.Parameter(means_SA.clone(), requires_grad=False)
        self.posterior_mass = nn.Parameter(mass_SAG.clone(), requires_grad=False)

    def forward(
        self, observation: torch.Tensor, action_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        states_B = observation.reshape(observation.shape[0], -1)[:, 0].to(torch.int64)
        means_BA = self.posterior_means[states_B]
        greedy_B = masking.masked_argmax_torch(means_BA, action_mask)
        probabilities_BA = best_arm_probabilities(self.posterior_mass[states_B], action_mask)
        return greedy_B, probabilities_BA, means_BA


@register
class Thompson(TableBandit):
    algorithm = "thompson"
    distribution = "thompson"
    config_class = ThompsonConfig
    max_table_size = 20_000  # the exported graph holds GRID_CELLS floats per (state, arm)
    config: ThompsonConfig

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.reward_sums = np.zeros((self.num_states, self.num_actions), dtype=np.float64)
        """[S, A] total reward (beta prior: successes) of each arm in each state."""

    @property
    def serving_epsilon(self) -> float:
        return 0.0

    def posterior_means(self, states_B: npt.NDArray[np.int64]) -> FloatArray:
        """[B, A] posterior mean of each arm's mean reward (float32, as served)."""
        c, counts_BA, sums_BA = self.config, self.counts[states_B], self.reward_sums[states_B]
        if c.prior == "beta":
            means_BA = (c.prior_alpha + sums_BA) / (c.prior_alpha + c.prior_beta + counts_BA)
        else:
            precision_BA = 1.0 / c.prior_std**2 + counts_BA / c.reward_std**2
            means_BA = (c.prior_mean / c.prior_std**2 + sums_BA / c.reward_std**2) / precision_BA
        return np.asarray(means_BA, dtype=np.float32)

    def posterior_mass(self, states_B: npt.NDArray[np.int64]) -> npt.NDArray[np.float32]:
        """[B, A, G] each arm's posterior mass per grid cell: its density at the cell midpoints,
        normalised (float32; masses below TINY are 0)."""
        c = self.config
        counts_BA1 = self.counts[states_B][..., None].astype(np.float64)
        sums_BA1 = self.reward_sums[states_B][..., None]
        fractions_G = (np.arange(GRID_CELLS) + 0.5) / GRID_CELLS
        if c.prior == "beta":  # the grid spans [0, 1]
            alpha_BA1 = c.prior_alpha + sums_BA1
            beta_BA1 = c.prior_beta + counts_BA1 - sums_BA1
            log_pdf_BAG = (alpha_BA1 - 1) * np.log(fractions_G) + (beta_BA1 - 1) * np.log1p(
                -fractions_G
            )
        else:  # the grid spans every arm's mean +- TAIL_STDS standard deviations
            precision_BA1 = 1.0 / c.prior_std**2 + counts_BA1 / c.reward_std**2
            mean_BA1 = (c.prior_mean / c.prior_std**2 + sums_BA1 / c.reward_std**2) / precision_BA1
            std_BA1 = 1.0 / np.sqrt(precision_BA1)
            low_B11 = (mean_BA1 - TAIL_STDS * std_BA1).min(axis=1, keepdims=True)
            high_B11 = (mean_BA1 + TAIL_STDS * std_BA1).max(axis=1, keepdims=True)
            midpoints_B1G = low_B11 + (high_B11 - low_B11) * fractions_G
            log_pdf_BAG = -0.5 * ((midpoints_B1G - mean_BA1) / std_BA1) ** 2
        log_pdf_BAG -= log_pdf_BAG.max(axis=-1, keepdims=True)
        pdf_BAG = np.exp(np.maximum(log_pdf_BAG, -700.0))
        mass_BAG = pdf_BAG / pdf_BAG.sum(axis=-1, keepdims=True)
        return np.where(mass_BAG < TINY, 0.0, mass_BAG).astype(np.float32)

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        states_B = self.states(observations)
        means_BA = self.posterior_means(states_B)
        if deterministic:
            actions_B = masking.masked_argmax(means_BA, action_masks)
            return ActionBatch(actions_B, np.ones(len(actions_B), dtype=np.float32), means_BA)
        masks_BA = masking.all_allowed(len(states_B), self.num_actions)
        if action_masks is not None:
            masks_BA = np.asarray(action_masks, dtype=np.bool_)
        # Rows with the same state and mask share their probabilities: compute each once.
        keys_UK, inverse_B = np.unique(
            np.column_stack([states_B, masks_BA]), axis=0, return_inverse=True
        )
        probabilities_UA = best_arm_probabilities_np(
            self.posterior_mass(keys_UK[:, 0]), keys_UK[:, 1:].astype(np.bool_)
        )
        probabilities_BA = probabilities_UA[inverse_B.reshape(-1)]
        cumulative_BA = np.cumsum(probabilities_BA, axis=1)
        thresholds_B1 = self.rng.random((len(states_B), 1)) * cumulative_BA[:, -1:]
        last_possible_B = self.num_actions - 1 - np.argmax(probabilities_BA[:, ::-1] > 0, axis=1)
        actions_B = np.minimum((cumulative_BA <= thresholds_B1).sum(axis=1), last_possible_B)
        rows_B = np.arange(len(states_B))
        propensities_B = probabilities_BA[rows_B, actions_B].astype(np.float32)
        return ActionBatch(actions_B.astype(np.int64), propensities_B, means_BA)

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        states_B = self.states(batch.observations)
        actions_B = np.asarray(batch.actions, dtype=np.int64)
        rewards_B = np.asarray(batch.rewards, dtype=np.float64)
        if self.config.prior == "beta" and not ((rewards_B >= 0) & (rewards_B <= 1)).all():
            bad = rewards_B[(rewards_B < 0) | (rewards_B > 1) | np.isnan(rewards_B)][0]
            raise ConfigError(
                f"thompson with prior=beta needs rewards in [0, 1] (Bernoulli successes), got "
                f"{bad:g}; use -p prior=gaussian for other rewards"
            )
        before_B = self.posterior_means(states_B)[np.arange(len(states_B)), actions_B]
        np.add.at(self.counts, (states_B, actions_B), 1)
        np.add.at(self.reward_sums, (states_B, actions_B), rewards_B)
        self.num_steps += len(states_B)
        self.num_updates += len(states_B)
        return {"train/prediction_error": float(np.mean(np.abs(rewards_B - before_B)))}

    def policy_module(self) -> nn.Module:
        states_S = np.arange(self.num_states)
        means_SA = torch.from_numpy(self.posterior_means(states_S))
        return ThompsonPolicy(means_SA, torch.from_numpy(self.posterior_mass(states_S)))

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {"reward_sums": self.reward_sums.copy(), "counts": self.counts.copy()}

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        load_array(tensors, "reward_sums", self.reward_sums)
        load_array(tensors, "counts", self.counts)
