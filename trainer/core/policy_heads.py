"""The action distributions of the policy-gradient learners (REINFORCE, A2C, PPO), behind one
small interface, so each algorithm's loss reads the same for discrete and continuous actions.

The actor network outputs the distribution's parameters, `params_MP`:
- `CategoricalHead` (Discrete actions): P = A logits, masked (a masked action has probability 0,
  in acting, log-probabilities, entropies and KL divergences);
- `GaussianHead` (Box actions): P = 2D, the mean and the (state-independent, learned) log standard
  deviation side by side, as Stable-Baselines3's and CleanRL's PPO use. Masks do not apply
  (their width is 0). Actions are drawn unclipped; the driver clips them to the box.
"""

from __future__ import annotations

from typing import Any, Protocol

import numpy as np
import torch
from torch import nn

from agentserve.spaces import BoxSpec
from trainer.core import masking
from trainer.core.distributions import (
    GaussianPolicy,
    gaussian_entropy,
    gaussian_log_prob,
)
from trainer.learner import ActionArray, FloatArray


class SoftmaxPolicy(nn.Module):
    """(observation [B, obs], mask [B, A]) -> (masked argmax, masked softmax, policy logits)."""

    def __init__(self, actor: nn.Module) -> None:
        super().__init__()
        self.actor = actor

    def forward(
        self, observation: torch.Tensor, action_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        logits_BA = self.actor(observation.reshape(observation.shape[0], -1))
        return masking.categorical_head(logits_BA, action_mask)


class PolicyHead(Protocol):
    distribution: str
    """The served distribution (agentserve.manifest.DISTRIBUTIONS)."""
    mask_width: int
    """Flags per action mask (0 for continuous actions)."""
    action_shape: tuple[int, ...]
    """Shape of one action as stored: () for an index, (D,) for a vector."""
    action_dtype: Any
    """numpy dtype of a stored action: int64 or float32."""

    def log_prob(
        self, params_MP: torch.Tensor, actions: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> torch.Tensor:
        """[M] log pi(a | s). Masks None (here and below): every action allowed."""
        ...

    def entropy(self, params_MP: torch.Tensor, masks_MA: torch.Tensor | None) -> torch.Tensor:
        """[M] entropy of pi(. | s)."""
        ...

    def log_prob_entropy(
        self, params_MP: torch.Tensor, actions: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        """(log_prob, entropy) computed together (one log-softmax for discrete actions)."""
        ...

    def kl(
        self, old_params_MP: torch.Tensor, params_MP: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> torch.Tensor:
        """[M] KL[pi_old(. | s) || pi(. | s)]."""
        ...

    def act(
        self,
        params_BP: torch.Tensor,
        masks_BA: torch.Tensor | None,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> tuple[ActionArray, FloatArray]:
        """(actions, propensities): probabilities, or densities for continuous actions."""
        ...

    def policy_module(self, actor: nn.Module) -> nn.Module:
        """The exported module around `actor` (observation -> distribution parameters)."""
        ...


def categorical_kl(
    old_log_probs_MA: torch.Tensor, log_probs_MA: torch.Tensor, mask_MA: torch.Tensor | None
) -> torch.Tensor:
    """[M] KL[pi_old || pi] over the allowed actions (log-probabilities from masked_log_softmax)."""
    terms_MA = old_log_probs_MA.exp() * (old_log_probs_MA - log_probs_MA)
    if mask_MA is not None:
        terms_MA = torch.where(mask_MA, terms_MA, 0.0)
    return terms_MA.sum(dim=-1)


class CategoricalHead:
    distribution = "softmax"
    action_shape: tuple[int, ...] = ()
    action_dtype: Any = np.int64

    def __init__(self, num_actions: int) -> None:
        self.mask_width = num_actions

    def log_prob(
        self, params_MP: torch.Tensor, actions: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> torch.Tensor:
        log_probs_MA = masking.masked_log_softmax(params_MP, masks_MA)
        return log_probs_MA.gather(1, actions.long().unsqueeze(1)).squeeze(1)

    def entropy(self, params_MP: torch.Tensor, masks_MA: torch.Tensor | None) -> torch.Tensor:
        return masking.categorical_entropy(params_MP, masks_MA)

    def log_prob_entropy(
        self, params_MP: torch.Tensor, actions: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        log_probs_MA = masking.masked_log_softmax(params_MP, masks_MA)
        chosen_M = log_probs_MA.gather(1, actions.long().unsqueeze(1)).squeeze(1)
        return chosen_M, masking.entropy_of_log_probs(log_probs_MA, masks_MA)

    def kl(
        self, old_params_MP: torch.Tensor, params_MP: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> torch.Tensor:
        return categorical_kl(
            masking.masked_log_softmax(old_params_MP, masks_MA),
            masking.masked_log_softmax(params_MP, masks_MA),
            masks_MA,
        )

    def act(
        self,
        params_BP: torch.Tensor,
        masks_BA: torch.Tensor | None,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> tuple[ActionArray, FloatArray]:
        batch = len(params_BP)
        if deterministic:
            actions_B = masking.masked_argmax_torch(params_BP, masks_BA)
            return actions_B.numpy(), np.ones(batch, dtype=np.float32)
        drawn_B = masking.sample_categorical(params_BP, masks_BA, rng).numpy()
        probabilities_BA = masking.masked_probabilities(params_BP, masks_BA).numpy()
        return drawn_B, probabilities_BA[np.arange(batch), drawn_B]

    def policy_module(self, actor: nn.Module) -> nn.Module:
        return SoftmaxPolicy(actor)


class GaussianHead:
    distribution = "gaussian"
    mask_width = 0
    action_dtype: Any = np.float32

    def __init__(self, space: BoxSpec, log_std_D: nn.Parameter) -> None:
        self.space = space
        self.log_std_D = log_std_D
        self.action_shape: tuple[int, ...] = (space.flat_size,)
        self.low = np.asarray(space.low, dtype=np.float32)
        self.high = np.asarray(space.high, dtype=np.float32)

    @staticmethod
    def split(params_MP: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """(mean_MD, log_std_MD) from the side-by-side parameters."""
        mean_MD, log_std_MD = params_MP.chunk(2, dim=-1)
        return mean_MD, log_std_MD

    def log_prob(
        self, params_MP: torch.Tensor, actions: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> torch.Tensor:
        mean_MD, log_std_MD = self.split(params_MP)
        return gaussian_log_prob(actions, mean_MD, log_std_MD)

    def entropy(self, params_MP: torch.Tensor, masks_MA: torch.Tensor | None) -> torch.Tensor:
        return gaussian_entropy(self.split(params_MP)[1])

    def log_prob_entropy(
        self, params_MP: torch.Tensor, actions: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> tuple[torch.Tensor, torch.Tensor]:
        mean_MD, log_std_MD = self.split(params_MP)
        return gaussian_log_prob(actions, mean_MD, log_std_MD), gaussian_entropy(log_std_MD)

    def kl(
        self, old_params_MP: torch.Tensor, params_MP: torch.Tensor, masks_MA: torch.Tensor | None
    ) -> torch.Tensor:
        old_mean, old_log_std = self.split(old_params_MP)
        mean, log_std = self.split(params_MP)
        variance_ratio = torch.exp(2.0 * (old_log_std - log_std))
        shift = (old_mean - mean) * torch.exp(-log_std)
        return (log_std - old_log_std + 0.5 * (variance_ratio + shift.pow(2) - 1.0)).sum(dim=-1)

    def act(
        self,
        params_BP: torch.Tensor,
        masks_BA: torch.Tensor | None,
        deterministic: bool,
        rng: np.random.Generator,
    ) -> tuple[ActionArray, FloatArray]:
        mean_BD, log_std_BD = self.split(params_BP)
        batch = len(mean_BD)
        if deterministic:
            greedy = np.clip(mean_BD.numpy(), self.low, self.high).astype(np.float32)
            return greedy, np.ones(batch, dtype=np.float32)
        noise_BD = torch.from_numpy(rng.standard_normal(tuple(mean_BD.shape)).astype(np.float32))
        actions_BD = mean_BD + torch.exp(log_std_BD) * noise_BD
        densities_B = torch.exp(gaussian_log_prob(actions_BD, mean_BD, log_std_BD))
        return actions_BD.numpy(), densities_B.numpy()

    def policy_module(self, actor: nn.Module) -> nn.Module:
        return GaussianPolicy(actor, self.log_std_D, self.space)
