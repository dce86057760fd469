"""What the policy-gradient learners (reinforce, a2c, ppo) share: a masked softmax policy over an
actor-critic network, acting with the learner's generator, the exported policy module, optimizers,
learning-rate schedules, and (for a2c and ppo) rollout collection with GAE.

Action masks: a `TransitionBatch` carries the masks at s' but not at s, so the learner remembers
the masks of its last two exploring `act` calls and looks up the batch's observations there (the
offline loop chooses the action at s' before handing over (s, a), hence two). Observations that
were not acted on here (e.g. transitions replayed from elsewhere) count as all actions allowed.
"""

from __future__ import annotations

import copy
from abc import abstractmethod
from collections import deque
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec
from trainer.core import masking
from trainer.core.checkpoint import load_module_tensors, module_tensors
from trainer.core.networks import ActorCritic
from trainer.core.rollout import RolloutBuffer, compute_gae
from trainer.learner import ActionBatch, BoolArray, FloatArray, Learner, TransitionBatch

OPTIMIZERS = ("adam", "rmsprop")
SCHEDULES = ("constant", "linear")


def check_common(config: Any) -> None:
    """Validation shared by the policy-gradient configs."""
    if config.optimizer not in OPTIMIZERS:
        raise ConfigError(f"optimizer must be one of {', '.join(OPTIMIZERS)}")
    if config.learning_rate_schedule not in SCHEDULES:
        raise ConfigError(f"learning_rate_schedule must be one of {', '.join(SCHEDULES)}")
    if config.learning_rate <= 0 or config.max_grad_norm <= 0:
        raise ConfigError("learning_rate and max_grad_norm must be > 0")
    if not 0 <= config.gamma <= 1:
        raise ConfigError("gamma must lie in [0, 1]")


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


class PolicyGradientLearner(Learner):
    """Acting, masks, export, optimizer and schedule shared by the policy-gradient learners.
    Served distribution: "softmax" (the "values" output holds the policy logits)."""

    distribution = "softmax"

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        assert isinstance(action_space, DiscreteSpec)
        self.num_actions = action_space.n
        self.obs_size = observation_space.flat_size
        self.net = ActorCritic(self.obs_size, config.net_arch, self.num_actions)
        params = self.net.parameters()
        self.optimizer: torch.optim.Optimizer = (
            torch.optim.Adam(params, lr=config.learning_rate, eps=config.optimizer_eps)
            if config.optimizer == "adam"
            else torch.optim.RMSprop(
                params,
                lr=config.learning_rate,
                alpha=config.rmsprop_alpha,
                eps=config.optimizer_eps,
            )
        )
        self._acted: deque[tuple[FloatArray, BoolArray]] = deque(maxlen=2)

    @classmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        if not isinstance(observation_space, BoxSpec):
            raise ConfigError(f"{cls.algorithm} needs a Box observation space")
        if not isinstance(action_space, DiscreteSpec):
            raise ConfigError(
                f"{cls.algorithm} needs a Discrete action space (continuous actions are not "
                "supported yet)"
            )

    @property
    def serving_epsilon(self) -> float:
        return 0.0

    def _masks(self, masks: BoolArray | None, batch: int) -> BoolArray:
        return masking.all_allowed(batch, self.num_actions) if masks is None else masks

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        batch = len(observations)
        masks = self._masks(action_masks, batch)
        mask_BA = torch.from_numpy(np.asarray(masks, dtype=np.bool_))
        with torch.no_grad():
            obs_BO = torch.as_tensor(observations, dtype=torch.float32).reshape(batch, -1)
            logits_BA = self.net.actor(obs_BO)
            if deterministic:
                actions_B = masking.masked_argmax_torch(logits_BA, mask_BA)
                return ActionBatch(actions_B.numpy(), np.ones(batch, dtype=np.float32))
            actions_B = masking.sample_categorical(logits_BA, mask_BA, self.rng)
            probabilities_BA = masking.masked_probabilities(logits_BA, mask_BA)
            chosen_B = probabilities_BA.gather(1, actions_B.unsqueeze(1)).squeeze(1)
        self._acted.append((np.array(observations, dtype=np.float32).reshape(batch, -1), masks))
        return ActionBatch(actions_B.numpy(), chosen_B.numpy())

    def masks_at(self, observations: FloatArray) -> BoolArray:
        """The masks the observations were acted on under (see the module docstring)."""
        flat = np.asarray(observations, dtype=np.float32).reshape(len(observations), -1)
        for acted, masks in reversed(self._acted):
            if acted.shape == flat.shape and np.array_equal(acted, flat):
                return masks.copy()
        return masking.all_allowed(len(flat), self.num_actions)

    def current_learning_rate(self) -> float:
        c = self.config
        if c.learning_rate_schedule == "linear":
            remaining = 1.0 - min(1.0, self.num_steps / max(c.total_timesteps, 1))
            return float(c.learning_rate * max(remaining, 0.0))
        return float(c.learning_rate)

    def gradient_step(self, loss: torch.Tensor) -> None:
        """One optimizer step at the scheduled learning rate, gradients clipped by norm."""
        for group in self.optimizer.param_groups:
            group["lr"] = self.current_learning_rate()
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()  # type: ignore[no-untyped-call]
        nn.utils.clip_grad_norm_(self.net.parameters(), self.config.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1

    def policy_module(self) -> nn.Module:
        return SoftmaxPolicy(copy.deepcopy(self.net.actor))

    def extra_scalars(self) -> dict[str, float]:
        return {"train/learning_rate": self.current_learning_rate()}

    def _network_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {**module_tensors(self.net, "net."), **module_tensors(self.optimizer, "optimizer.")}

    def _load_network_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        load_module_tensors(self.net, tensors, "net.")
        load_module_tensors(self.optimizer, tensors, "optimizer.")


class RolloutLearner(PolicyGradientLearner):
    """Collects `n_steps` lockstep steps, then calls `update` on the full rollout."""

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        self.rollout = RolloutBuffer(config.n_steps, self.obs_size, self.num_actions)

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        self.rollout.add(
            batch.observations,
            batch.actions,
            batch.rewards,
            batch.next_observations,
            batch.terminated,
            batch.truncated,
            self.masks_at(batch.observations),
        )
        self.num_steps += len(batch.actions)
        if not self.rollout.full:
            return {}
        self.evaluate_rollout()
        advantages_TN, returns_TN = compute_gae(
            self.rollout.rewards_TN,
            self.rollout.values_TN,
            self.rollout.next_values_TN,
            self.rollout.terminated_TN,
            self.rollout.truncated_TN,
            self.config.gamma,
            self.config.gae_lambda,
        )
        scalars = self.update(advantages_TN, returns_TN)
        self.rollout.reset()
        return scalars

    def evaluate_rollout(self) -> None:
        """Fills the rollout's values, next values and log-probabilities (no gradients)."""
        r = self.rollout
        total = r.pos * r.n_envs
        with torch.no_grad():
            obs_MO = torch.from_numpy(r.observations_TNO[: r.pos].reshape(total, -1))
            logits_MA, values_M = self.net(obs_MO)
            next_values_M = self.net.critic(
                torch.from_numpy(r.next_observations_TNO[: r.pos].reshape(total, -1))
            ).squeeze(-1)
            log_probs_M = masking.masked_log_softmax(
                logits_MA, torch.from_numpy(r.action_masks_TNA[: r.pos].reshape(total, -1))
            ).gather(1, torch.from_numpy(r.actions_TN[: r.pos].reshape(total, 1)))
        shape = (r.pos, r.n_envs)
        r.values_TN[: r.pos] = values_M.numpy().reshape(shape)
        r.next_values_TN[: r.pos] = next_values_M.numpy().reshape(shape)
        r.log_probs_TN[: r.pos] = log_probs_M.numpy().reshape(shape)

    @abstractmethod
    def update(self, advantages_TN: FloatArray, returns_TN: FloatArray) -> dict[str, float]:
        """Learns from the full rollout; returns training scalars."""

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {**self._network_tensors(), **self.rollout.state_tensors("rollout.")}

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        self._load_network_tensors(tensors)
        self.rollout.load_state_tensors(tensors, "rollout.")
