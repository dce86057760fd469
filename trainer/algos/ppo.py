"""Proximal Policy Optimization (Schulman et al., 2017), PPO-Clip and PPO with adaptive KL penalty,
for Discrete actions (masked softmax) and Box actions (Gaussian with a learned log std).

Collects `n_steps` lockstep steps of every env (the offline loop's `n_envs`), computes GAE(lambda)
advantages (truncated episodes bootstrap from their true last observation), then makes `n_epochs`
passes of shuffled minibatches of `batch_size` over the rollout. Per minibatch, with
r = pi(a|s) / pi_old(a|s) and advantages normalised per minibatch (`normalize_advantage`):
- PPO-Clip (default): L = -mean(min(r A, clip(r, 1 - eps, 1 + eps) A));
- `kl_penalty: true` ("PPO with adaptive KL penalty", an option of this algorithm, not a separate
  one): L = -mean(r A) + beta * mean(KL[pi_old(.|s) || pi(.|s)]), no clipping; after each update
  beta is halved if the KL fell below target_kl / 1.5 and doubled if it rose above 1.5 target_kl.
Plus vf_coef times the value loss (optionally clipped around the old values, `clip_range_vf`)
minus ent_coef times the entropy, with the gradient norm clipped. Masks apply when acting, in the
log-probabilities, the KL and the entropy.

pi_old is the policy that collected the rollout, evaluated once before the update. The offline
loop picks the first action of a rollout before the previous update, so that one transition per
env was sampled by the policy one update older; the ratio treats it as on-policy.

Online, an action may have been chosen by an older policy mu (the service acts while the learner
updates); its log mu(a|s) comes with the transition. pi_old then stays the proximal policy of the
clip, and each term is weighted by min(1, pi_old(a|s) / mu(a|s)) (decoupled PPO, Hilton et al.,
2021, with the weight truncated at 1 as in V-trace): exactly PPO when mu = pi_old.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from agentserve.errors import ConfigError
from agentserve.spaces import SpaceSpec
from trainer.core.actor_critic import PolicyOptions, RolloutLearner, check_common
from trainer.learner import FloatArray
from trainer.registry import register


@dataclass
class PPOConfig(PolicyOptions):
    learning_rate: float = 3e-4
    """Adam step size (at the start, when the schedule is linear)."""
    learning_rate_schedule: str = "constant"
    """"constant", or "linear" (decays to 0 over the step budget, as rl-baselines3-zoo's lin_)."""
    optimizer: str = "adam"
    """"adam" or "rmsprop"."""
    rmsprop_alpha: float = 0.99
    """RMSprop smoothing constant (optimizer "rmsprop" only)."""
    optimizer_eps: float = 1e-5
    """Optimizer epsilon (numerical stability)."""
    n_steps: int = 2048
    """Steps per env in each rollout."""
    batch_size: int = 64
    """Transitions per minibatch."""
    n_epochs: int = 10
    """Passes over each rollout."""
    gamma: float = 0.99
    """Discount factor."""
    gae_lambda: float = 0.95
    """GAE lambda."""
    clip_range: float = 0.2
    """Clipping epsilon of the probability ratio (at the start, when its schedule is linear)."""
    clip_range_schedule: str = "constant"
    """"constant", or "linear" (decays to 0 over the step budget)."""
    clip_range_vf: float | None = None
    """Clip the value prediction to old value +- this (None = no value clipping)."""
    normalize_advantage: bool = True
    """Normalise advantages per minibatch to zero mean and unit variance."""
    vf_coef: float = 0.5
    """Weight of the value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """Gradient norm clip."""
    kl_penalty: bool = False
    """Adaptive KL penalty instead of the clipped surrogate (PPO-KL)."""
    kl_beta0: float = 1.0
    """Initial KL penalty coefficient beta (kl_penalty only)."""
    target_kl: float = 0.01
    """KL target d_targ of the adaptive beta rule (kl_penalty only)."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths of the policy and of the value network (separate tanh MLPs)."""
    total_timesteps: int = 1_000_000
    """Step budget the schedules are laid over (set by the training loop)."""

    def validate(self) -> None:
        check_common(self)
        if self.n_steps < 1 or self.batch_size < 1 or self.n_epochs < 1:
            raise ConfigError("n_steps, batch_size and n_epochs must be >= 1")
        if self.clip_range_schedule not in ("constant", "linear"):
            raise ConfigError("clip_range_schedule must be constant or linear")
        if self.clip_range <= 0 or (self.clip_range_vf is not None and self.clip_range_vf <= 0):
            raise ConfigError("clip_range and clip_range_vf must be > 0")
        if self.kl_beta0 <= 0 or self.target_kl <= 0:
            raise ConfigError("kl_beta0 and target_kl must be > 0")
        if not 0 <= self.gae_lambda <= 1:
            raise ConfigError("gae_lambda must lie in [0, 1]")


def clipped_surrogate_loss(
    ratio_M: torch.Tensor,
    advantages_M: torch.Tensor,
    clip_range: float,
    weights_M: torch.Tensor | None = None,
) -> torch.Tensor:
    """-mean(w min(r A, clip(r, 1 - clip_range, 1 + clip_range) A)), r = pi(a|s) / pi_old(a|s),
    w the behavior weights (1 when None). Computed as -mean(w min(r, 1 + eps) A) where A >= 0
    and -mean(w max(r, 1 - eps) A) where A < 0: the same values (rounding is monotonic), and
    the same gradient but where r A and clip(r) A round to one number with r outside the clip
    range; half the autograd work of min() and clamp()."""
    bounded_M = torch.where(
        advantages_M >= 0,
        ratio_M.clamp(max=1.0 + clip_range),
        ratio_M.clamp(min=1.0 - clip_range),
    )
    surrogate_M = bounded_M * advantages_M
    return -(surrogate_M if weights_M is None else surrogate_M * weights_M).mean()


def normalized(advantages: list[torch.Tensor]) -> list[torch.Tensor]:
    """Each minibatch's advantages to zero mean and unit variance (a minibatch of one as it is);
    minibatches of one size in one pass, row by row (the same numbers as one by one)."""
    if len({len(a) for a in advantages}) == 1 and len(advantages[0]) > 1:
        stacked = torch.stack(advantages)
        mean, std = stacked.mean(dim=1, keepdim=True), stacked.std(dim=1, keepdim=True)
        return list(((stacked - mean) / (std + 1e-8)).unbind(0))
    return [(a - a.mean()) / (a.std() + 1e-8) if len(a) > 1 else a for a in advantages]


def minibatch_means(values: list[torch.Tensor]) -> torch.Tensor:
    """[minibatches] the mean of each minibatch's values; minibatches of one size in one pass,
    row by row (the same numbers as one by one)."""
    if len({len(v) for v in values}) == 1:
        return torch.stack(values).mean(dim=1)
    return torch.stack([v.mean() for v in values])


def adapt_kl_beta(beta: float, kl: float, target_kl: float) -> float:
    """Schulman et al. (2017), section 4: halve beta if d < d_targ / 1.5, double it if
    d > d_targ * 1.5, else keep it."""
    if kl < target_kl / 1.5:
        return beta / 2.0
    if kl > target_kl * 1.5:
        return beta * 2.0
    return beta


@register
class PPO(RolloutLearner):
    algorithm = "ppo"
    config_class = PPOConfig
    config: PPOConfig

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.kl_beta = config.kl_beta0

    def current_clip_range(self) -> float:
        c = self.config
        if c.clip_range_schedule == "linear":
            remaining = 1.0 - min(1.0, self.num_steps / max(c.total_timesteps, 1))
            return float(c.clip_range * max(remaining, 1e-8))
        return float(c.clip_range)

    def update(self, advantages_TN: FloatArray, returns_TN: FloatArray) -> dict[str, float]:
        c = self.config
        r = self.rollout
        total = r.pos * r.n_envs
        clip_range = self.current_clip_range()
        all_obs_MO = torch.from_numpy(r.observations_TNO.reshape(total, -1))
        masks = r.flat_masks()
        all_mask_MA = None if masks is None else torch.from_numpy(masks)
        with torch.no_grad():
            old_params_MP = self.net.policy(all_obs_MO)
        batches = r.minibatches(advantages_TN, returns_TN, c.batch_size, self.rng, c.n_epochs)
        advantages = [mb.advantages for mb in batches]
        if c.normalize_advantage:
            advantages = normalized(advantages)
        # Per-minibatch statistics stay tensors until the end (one conversion, not one per step);
        # the entropies, and the fractions of clipped ratios, are computed for all at once there.
        stats: list[list[torch.Tensor]] = [[], [], []]
        seen: list[tuple[torch.Tensor, torch.Tensor, torch.Tensor | None]] = []
        for mb, advantages_M in zip(batches, advantages, strict=True):
            params_MP, values_M = self.net(mb.observations)
            if c.ent_coef != 0.0:
                log_probs_M, entropy_M = self.head.log_prob_entropy(
                    params_MP, mb.actions, mb.action_masks
                )
            else:  # (the bonus adds nothing: the entropy is only reported)
                log_probs_M = self.head.log_prob(params_MP, mb.actions, mb.action_masks)
            ratio_M = torch.exp(log_probs_M - mb.old_log_probs)
            if c.kl_penalty:
                kl_M = self.head.kl(old_params_MP[mb.rows], params_MP, mb.action_masks)
                weighted_M = ratio_M if mb.weights is None else ratio_M * mb.weights
                policy_loss = -(weighted_M * advantages_M).mean() + self.kl_beta * kl_M.mean()
            else:
                policy_loss = clipped_surrogate_loss(ratio_M, advantages_M, clip_range, mb.weights)
            if c.clip_range_vf is not None:
                values_M = mb.old_values + torch.clamp(
                    values_M - mb.old_values, -c.clip_range_vf, c.clip_range_vf
                )
            value_loss = F.mse_loss(values_M, mb.returns)
            loss = policy_loss + c.vf_coef * value_loss
            if c.ent_coef != 0.0:
                loss = loss - c.ent_coef * entropy_M.mean()
            self.gradient_step(loss)
            for column, value in zip(stats, (loss, policy_loss, value_loss), strict=True):
                column.append(value)
            seen.append((params_MP.detach(), ratio_M.detach(), mb.action_masks))
        with torch.no_grad():
            kl = float(self.head.kl(old_params_MP, self.net.policy(all_obs_MO), all_mask_MA).mean())
            params, ratios, minibatch_masks = zip(*seen, strict=True)
            entropies = self.head.entropy(
                torch.cat(params), None if masks is None else torch.cat(minibatch_masks)
            )
            table = torch.stack(
                [
                    *map(torch.stack, stats),
                    minibatch_means(list(torch.split(entropies, [len(r) for r in ratios]))),
                    minibatch_means([((r - 1.0).abs() > clip_range).float() for r in ratios]),
                ],
                dim=1,
            )
            means = table.mean(dim=0).tolist()
        scalars = {
            "train/loss": means[0],
            "train/policy_gradient_loss": means[1],
            "train/value_loss": means[2],
            "train/entropy_loss": -means[3],
            "train/clip_fraction": means[4],
            "train/approx_kl": kl,
            "train/clip_range": clip_range,
        }
        if c.kl_penalty:
            self.kl_beta = adapt_kl_beta(self.kl_beta, kl, c.target_kl)
            scalars["train/kl_beta"] = self.kl_beta
        return scalars

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {**super()._state_tensors(), "kl_beta": np.array([self.kl_beta], dtype=np.float64)}

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        super()._load_state_tensors(tensors)
        self.kl_beta = float(tensors["kl_beta"][0])
