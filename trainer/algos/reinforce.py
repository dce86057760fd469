"""REINFORCE (Williams, 1992): Monte-Carlo policy gradient, optionally with a learned baseline.

Each env's episode (online: each episode, by its key, however the episodes of several simulators
interleave) is kept until it ends; its returns G_t = r_t + gamma G_{t+1} are then computed
(a truncated episode with `baseline` starts the recursion from V of its true last observation, a
terminated one, or any episode without a baseline, from 0). Once `batch_episodes` episodes have
ended, one gradient step on
    -mean(log pi(a|s) * w) + vf_coef * mean((G - V(s))^2) - ent_coef * mean(H(pi(.|s)))
where w = G - V(s) with `baseline` (the value network is then trained too) and w = G without, and
`normalize_returns` scales w to zero mean and unit variance per update. Masks apply when acting
and in log pi and H. Without a baseline the value network exists but is never trained. Discrete
actions use a masked softmax policy, Box actions a Gaussian with a learned log std.

Online, a step whose action an older policy mu chose (its log mu(a|s) comes with the transition)
has w multiplied by the truncated importance weight min(1, pi(a|s) / mu(a|s)).
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
import torch.nn.functional as F

from agentserve.errors import ConfigError
from agentserve.spaces import SpaceSpec
from trainer.core.actor_critic import PolicyGradientLearner, PolicyOptions, check_common
from trainer.core.rollout import discounted_returns
from trainer.learner import TransitionBatch
from trainer.registry import register


@dataclass
class ReinforceConfig(PolicyOptions):
    learning_rate: float = 1e-3
    """Optimizer step size (at the start, when the schedule is linear)."""
    learning_rate_schedule: str = "constant"
    """"constant", or "linear" (decays to 0 over the step budget)."""
    optimizer: str = "adam"
    """"adam" or "rmsprop"."""
    rmsprop_alpha: float = 0.99
    """RMSprop smoothing constant (optimizer "rmsprop" only)."""
    optimizer_eps: float = 1e-5
    """Optimizer epsilon (numerical stability)."""
    gamma: float = 0.99
    """Discount factor."""
    baseline: bool = True
    """Subtract a learned state value V(s) from the returns."""
    normalize_returns: bool = True
    """Normalise the policy-gradient weights (returns, or advantages with a baseline) per
    update to zero mean and unit variance."""
    batch_episodes: int = 8
    """Finished episodes per update."""
    vf_coef: float = 0.5
    """Weight of the baseline's value loss."""
    ent_coef: float = 0.0
    """Weight of the entropy bonus."""
    max_grad_norm: float = 0.5
    """Gradient norm clip."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden widths of the policy and of the value network (separate tanh MLPs)."""
    total_timesteps: int = 500_000
    """Step budget the learning-rate schedule is laid over (set by the training loop)."""

    def validate(self) -> None:
        check_common(self)
        if self.batch_episodes < 1:
            raise ConfigError("batch_episodes must be >= 1")


Step = tuple[npt.NDArray[np.float32], npt.NDArray[Any], float, npt.NDArray[np.bool_], float]
"""(observation, action (a 0-d index or a [D] vector), reward, action mask, log mu(a|s) recorded
when acting or NaN) of one step of an open episode."""


@register
class Reinforce(PolicyGradientLearner):
    algorithm = "reinforce"
    config_class = ReinforceConfig
    config: ReinforceConfig

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.open: dict[int, list[Step]] = {}
        """Open episodes by key (the env index offline, the episode's key online)."""
        self.finished: list[tuple[npt.NDArray[Any], ...]] = []
        """(observations_EO, actions_E, masks_EA, returns_E, behavior_log_probs_E) of each ended
        episode."""

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        n_envs = len(batch.actions)
        self.observe_normalizer(batch)
        masks = self._masks(batch.action_masks, n_envs)
        observations = np.asarray(batch.observations, dtype=np.float32).reshape(n_envs, -1)
        actions = np.asarray(batch.actions, dtype=self.head.action_dtype).reshape(
            n_envs, *self.head.action_shape
        )
        keys = range(n_envs) if batch.episode_keys is None else batch.episode_keys.tolist()
        behavior = [math.nan] * n_envs if batch.log_probs is None else batch.log_probs.tolist()
        for i, key in enumerate(keys):
            step = (observations[i], actions[i], float(batch.rewards[i]), masks[i], behavior[i])
            self.open.setdefault(key, []).append(step)
            if batch.terminated[i] or batch.truncated[i]:
                bootstrap = 0.0
                if batch.truncated[i] and not batch.terminated[i] and self.config.baseline:
                    with torch.no_grad():
                        last_O = torch.as_tensor(batch.next_observations[i], dtype=torch.float32)
                        bootstrap = float(self.net.value(last_O.reshape(1, -1))[0])
                self._finish(key, bootstrap)
        self.num_steps += n_envs
        if len(self.finished) < self.config.batch_episodes:
            return {}
        return self._update()

    def _finish(self, key: int, bootstrap: float) -> None:
        steps = self.open.pop(key)
        rewards_E = np.array([s[2] for s in steps], dtype=np.float32)
        self.finished.append(
            (
                np.stack([s[0] for s in steps]),
                np.stack([s[1] for s in steps]),
                np.stack([s[3] for s in steps]),
                discounted_returns(rewards_E, self.config.gamma, bootstrap),
                np.array([s[4] for s in steps], dtype=np.float32),
            )
        )

    def _update(self) -> dict[str, float]:
        c = self.config
        obs_MO, actions_M, masks_MA, returns_M, behavior_M = (
            torch.from_numpy(np.concatenate(parts)) for parts in zip(*self.finished, strict=True)
        )
        self.finished = []
        params_MP, values_M = self.net(obs_MO)
        log_probs_M, entropy_M = self.head.log_prob_entropy(
            params_MP, actions_M, None if bool(masks_MA.all()) else masks_MA
        )
        weights_M = returns_M - values_M.detach() if c.baseline else returns_M
        if c.normalize_returns and len(weights_M) > 1:
            weights_M = (weights_M - weights_M.mean()) / (weights_M.std() + 1e-8)
        recorded_M = ~torch.isnan(behavior_M)
        if bool(recorded_M.any()):  # actions an older policy chose (online): truncated IS
            log_ratio_M = log_probs_M.detach() - torch.where(recorded_M, behavior_M, 0.0)
            importance_M = torch.exp(torch.clamp(log_ratio_M, max=0.0))
            weights_M = weights_M * torch.where(recorded_M, importance_M, 1.0)
        policy_loss = -(log_probs_M * weights_M).mean()
        entropy = entropy_M.mean()
        loss = policy_loss - c.ent_coef * entropy
        scalars = {"train/policy_loss": float(policy_loss.detach())}
        if c.baseline:
            value_loss = F.mse_loss(values_M, returns_M)
            loss = loss + c.vf_coef * value_loss
            scalars["train/value_loss"] = float(value_loss.detach())
        self.gradient_step(loss)
        return {
            **scalars,
            "train/loss": float(loss.detach()),
            "train/entropy_loss": -float(entropy.detach()),
        }

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        obs_size, n = self.obs_size, self.num_actions
        shape, dtype = self.head.action_shape, self.head.action_dtype
        open_steps = [(key, s) for key, steps in self.open.items() for s in steps]
        finished = list(zip(*self.finished, strict=True)) or [[], [], [], [], []]
        return {
            **self._network_tensors(),
            "open.key": np.array([key for key, _ in open_steps], dtype=np.int64),
            "open.observations": np.array([s[0] for _, s in open_steps], np.float32).reshape(
                -1, obs_size
            ),
            "open.actions": np.array([s[1] for _, s in open_steps], dtype=dtype).reshape(
                len(open_steps), *shape
            ),
            "open.rewards": np.array([s[2] for _, s in open_steps], dtype=np.float32),
            "open.masks": np.array([s[3] for _, s in open_steps], np.bool_).reshape(
                len(open_steps), n
            ),
            "open.behavior_log_probs": np.array([s[4] for _, s in open_steps], np.float32),
            "finished.lengths": np.array([len(e[1]) for e in self.finished], dtype=np.int64),
            "finished.observations": np.concatenate(
                [np.zeros((0, obs_size), np.float32), *finished[0]]
            ),
            "finished.actions": np.concatenate([np.zeros((0, *shape), dtype), *finished[1]]),
            "finished.masks": np.concatenate([np.zeros((0, n), np.bool_), *finished[2]]),
            "finished.returns": np.concatenate([np.zeros(0, np.float32), *finished[3]]),
            "finished.behavior_log_probs": np.concatenate([np.zeros(0, np.float32), *finished[4]]),
        }

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        self._load_network_tensors(tensors)
        self.open = {}
        keys = tensors.get("open.key", tensors.get("open.env", np.zeros(0, np.int64)))
        behavior = tensors.get("open.behavior_log_probs", np.full(len(keys), np.nan, np.float32))
        for k, key in enumerate(keys):
            self.open.setdefault(int(key), []).append(
                (
                    np.array(tensors["open.observations"][k], dtype=np.float32),
                    np.array(tensors["open.actions"][k], dtype=self.head.action_dtype),
                    float(tensors["open.rewards"][k]),
                    np.array(tensors["open.masks"][k], dtype=np.bool_),
                    float(behavior[k]),
                )
            )
        lengths = tensors["finished.lengths"]
        ends = np.cumsum(lengths)
        starts = ends - lengths
        finished_behavior = tensors.get(
            "finished.behavior_log_probs", np.full(int(lengths.sum()), np.nan, np.float32)
        )
        names = ("observations", "actions", "masks", "returns")
        self.finished = [
            (
                *(np.array(tensors[f"finished.{name}"][a:b]) for name in names),
                np.array(finished_behavior[a:b], dtype=np.float32),
            )
            for a, b in zip(starts, ends, strict=True)
        ]
