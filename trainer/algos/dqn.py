"""Deep Q-Network (Mnih et al., 2015): experience replay, a target network, epsilon-greedy decay.

Combinable options:
- `double_q`: Double DQN (van Hasselt et al., 2016) picks the next action with the online
  network and evaluates it with the target network;
- `dueling`: the dueling network (Wang et al., 2016), Q = V + A - mean(A);
- `prioritized_replay`: proportional prioritized replay (Schaul et al., 2016) with
  importance-sampling weights whose exponent anneals from `per_beta0` to 1;
- `n_step`: n-step returns, sum_k gamma^k r_{t+k} + gamma^n max_a Q(s_{t+n}, a).
Targets maximise over the actions allowed at s' only.

Per step: store the transition; every `train_freq` steps (after `learning_starts`) make
`gradient_steps` updates on minibatches of the Huber loss; every `target_update_interval` steps
copy the online network into the target network.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass, field
from typing import Any

import numpy.typing as npt
import torch
import torch.nn.functional as F
from torch import nn

from agentserve.errors import ConfigError
from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec
from trainer.core import masking, normalization, schedules
from trainer.core.checkpoint import load_module_tensors, module_tensors
from trainer.core.flat_optim import FlatOptimizer
from trainer.core.networks import forward_in_chunks, forward_layers, q_network
from trainer.core.nstep import NStepAccumulator
from trainer.core.replay import PrioritizedReplayBuffer, ReplayBuffer, ReplaySample
from trainer.learner import ActionBatch, BoolArray, FloatArray, Learner, TransitionBatch
from trainer.registry import register


@dataclass
class DQNConfig:
    learning_rate: float = 1e-4
    """Adam step size."""
    batch_size: int = 32
    """Transitions per gradient step."""
    buffer_size: int = 100_000
    """Replay capacity in transitions."""
    learning_starts: int = 1_000
    """Steps collected before the first update."""
    gamma: float = 0.99
    """Discount factor."""
    train_freq: int = 4
    """Steps between training phases."""
    gradient_steps: int = 1
    """Gradient steps per training phase."""
    target_update_interval: int = 1_000
    """Steps between copies of the online network into the target network."""
    exploration_initial_eps: float = 1.0
    """Epsilon at the first step."""
    exploration_final_eps: float = 0.05
    """Epsilon after the decay; also the epsilon of the served stochastic policy."""
    exploration_fraction: float = 0.1
    """Fraction of the step budget over which epsilon decays linearly."""
    total_timesteps: int = 100_000
    """Step budget the epsilon schedule is laid over (set by the training loop)."""
    net_arch: list[int] = field(default_factory=lambda: [64, 64])
    """Hidden layer widths of the Q-network."""
    max_grad_norm: float = 10.0
    """Gradient norm clip."""
    double_q: bool = False
    """Double DQN targets."""
    dueling: bool = False
    """Dueling network architecture."""
    prioritized_replay: bool = False
    """Proportional prioritized experience replay."""
    per_alpha: float = 0.6
    """How much prioritization is used (0 = uniform)."""
    per_beta0: float = 0.4
    """Initial importance-sampling exponent, annealed to 1 over the step budget."""
    per_eps: float = 1e-6
    """Added to |TD error| so no transition has zero priority."""
    n_step: int = 1
    """Steps summed before bootstrapping."""
    normalize_observations: bool = False
    """Normalise observations by running mean and variance (saved in the exported graph)."""
    normalize_clip: float = 10.0
    """Clip normalised observations to +- this."""

    def validate(self) -> None:
        if self.batch_size < 1 or self.buffer_size < self.batch_size:
            raise ConfigError("need 1 <= batch_size <= buffer_size")
        if self.train_freq < 1 or self.gradient_steps < 0 or self.target_update_interval < 1:
            raise ConfigError("train_freq and target_update_interval must be >= 1")
        if not 0 <= self.exploration_final_eps <= 1 or not 0 <= self.exploration_initial_eps <= 1:
            raise ConfigError("exploration rates must lie in [0, 1]")
        if self.n_step < 1:
            raise ConfigError("n_step must be >= 1")
        if not 0 <= self.per_alpha <= 1 or not 0 <= self.per_beta0 <= 1:
            raise ConfigError("per_alpha and per_beta0 must lie in [0, 1]")
        if self.normalize_clip <= 0:
            raise ConfigError("normalize_clip must be > 0")
        if self.dueling and not self.net_arch:
            raise ConfigError("a dueling network needs at least one hidden layer in net_arch")


class QPolicy(nn.Module):
    """(observation [B, obs], mask [B, A]) -> epsilon-greedy head over the Q-network."""

    def __init__(self, q_net: nn.Module, epsilon: float) -> None:
        super().__init__()
        self.q_net = q_net
        self.epsilon = epsilon

    def forward(
        self, observation: torch.Tensor, action_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        q_values = self.q_net(observation.reshape(observation.shape[0], -1))
        return masking.epsilon_greedy_head(q_values, action_mask, self.epsilon)


@register
class DQN(Learner):
    algorithm = "dqn"
    distribution = "epsilon_greedy"
    config_class = DQNConfig
    config: DQNConfig

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        assert isinstance(action_space, DiscreteSpec)
        self.num_actions = action_space.n
        obs_size = observation_space.flat_size
        # In front of the online and the target network alike (one set of statistics).
        self.normalizer = normalization.input_layer(
            obs_size, config.normalize_observations, config.normalize_clip
        )
        self.q_net = q_network(obs_size, config.net_arch, self.num_actions, config.dueling)
        self.target_net = copy.deepcopy(self.q_net).requires_grad_(False)
        self.online_parameters: list[torch.Tensor] = list(self.q_net.parameters())
        self.target_parameters: list[torch.Tensor] = list(self.target_net.parameters())
        self.optimizer = FlatOptimizer(self.q_net.parameters(), config.learning_rate)
        self.replay = (
            PrioritizedReplayBuffer(
                config.buffer_size,
                obs_size,
                self.num_actions,
                config.per_alpha,
                config.per_beta0,
                config.per_eps,
            )
            if config.prioritized_replay
            else ReplayBuffer(config.buffer_size, obs_size, self.num_actions)
        )
        self.n_step = NStepAccumulator(config.n_step, config.gamma)

    @classmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        if not isinstance(observation_space, BoxSpec):
            raise ConfigError("dqn needs a Box observation space (use qlearning for tables)")
        if not isinstance(action_space, DiscreteSpec):
            raise ConfigError("dqn needs a Discrete action space")

    @property
    def epsilon(self) -> float:
        c = self.config
        return schedules.linear(
            c.exploration_initial_eps,
            c.exploration_final_eps,
            c.exploration_fraction,
            self.num_steps,
            c.total_timesteps,
        )

    @property
    def serving_epsilon(self) -> float:
        return self.config.exploration_final_eps

    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        with torch.no_grad():
            obs = torch.as_tensor(observations, dtype=torch.float32)
            q_values = forward_layers(
                self.q_net, self.normalizer(obs.reshape(obs.shape[0], -1))
            ).numpy()
        actions, propensities = masking.epsilon_greedy_act(
            self.rng, q_values, action_masks, self.epsilon, deterministic
        )
        return ActionBatch(actions, propensities, q_values)

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        before = self.num_steps
        normalization.update(self.normalizer, batch.observations)
        ready = self.n_step.push(batch)
        if ready is not None:
            self.replay.add(*ready)
        self.num_steps += len(batch.actions)
        scalars: dict[str, float] = {}
        if (
            self.num_steps >= c.learning_starts
            and self.replay.size > 0
            and c.gradient_steps > 0
            and before // c.train_freq != self.num_steps // c.train_freq
        ):
            scalars["train/loss"] = self._train_phase(c.gradient_steps)
        if before // c.target_update_interval != self.num_steps // c.target_update_interval:
            with torch.no_grad():
                torch._foreach_copy_(self.target_parameters, self.online_parameters)
        return scalars

    def _train_phase(self, count: int) -> float:
        """`count` gradient steps; returns their mean loss. The target network is fixed during a
        phase, so with uniform replay and plain targets the minibatches are drawn and their
        targets computed in one pass; Double DQN targets and prioritized sampling depend on the
        previous step and are computed step by step."""
        c = self.config
        progress = min(1.0, self.num_steps / max(c.total_timesteps, 1))
        losses = []
        if not c.double_q and not c.prioritized_replay:
            drawn = self.replay.sample(c.batch_size * count, self.rng, progress)
            observations = self.normalizer(drawn.observations)
            actions = drawn.actions.unsqueeze(1)
            targets = self._targets(drawn)
            for k in range(count):
                rows = slice(k * c.batch_size, (k + 1) * c.batch_size)
                losses.append(self._gradient_step(observations[rows], actions[rows], targets[rows]))
        else:
            for _ in range(count):
                sample = self.replay.sample(c.batch_size, self.rng, progress)
                losses.append(
                    self._gradient_step(
                        self.normalizer(sample.observations),
                        sample.actions.unsqueeze(1),
                        self._targets(sample),
                        sample if c.prioritized_replay else None,
                    )
                )
        return float(torch.stack(losses).mean())

    def _targets(self, sample: ReplaySample) -> torch.Tensor:
        with torch.no_grad():
            next_observations = self.normalizer(sample.next_observations)
            next_target_q = forward_in_chunks(self.target_net, next_observations)
            next_actions = masking.masked_argmax_torch(
                self.q_net(next_observations) if self.config.double_q else next_target_q,
                sample.next_action_masks,
            ).unsqueeze(1)
            next_q = next_target_q.gather(1, next_actions).squeeze(1)
            bootstrap = sample.discounts * next_q * (~sample.terminated).float()
            targets: torch.Tensor = sample.rewards + bootstrap
            return targets

    def _gradient_step(
        self,
        observations: torch.Tensor,
        actions_B1: torch.Tensor,
        targets: torch.Tensor,
        prioritized: ReplaySample | None = None,
    ) -> torch.Tensor:
        """One Huber-loss step; with prioritized replay (`prioritized`: the sample) the losses
        are importance-weighted and the sample's priorities updated."""
        q_taken = forward_layers(self.q_net, observations).gather(1, actions_B1).squeeze(1)
        if prioritized is None:
            loss = F.smooth_l1_loss(q_taken, targets)
        else:
            losses = F.smooth_l1_loss(q_taken, targets, reduction="none")
            loss = (losses * prioritized.weights).mean()
            errors = (q_taken - targets).detach().numpy()
            self.replay.update_priorities(prioritized.indices, errors)
        self.optimizer.zero_grad()
        loss.backward()  # type: ignore[no-untyped-call]
        self.optimizer.clip_grad_norm(self.config.max_grad_norm)
        self.optimizer.step()
        self.num_updates += 1
        return loss.detach()

    def extra_scalars(self) -> dict[str, float]:
        return {"rollout/exploration_rate": self.epsilon}

    def acting_modules(self) -> tuple[nn.Module, ...]:
        return (self.normalizer, self.q_net)

    def policy_module(self) -> nn.Module:
        network = copy.deepcopy(nn.Sequential(self.normalizer, self.q_net))
        return QPolicy(network, self.serving_epsilon)

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {
            **module_tensors(self.normalizer, "normalizer."),
            **module_tensors(self.q_net, "q_net."),
            **module_tensors(self.target_net, "target_net."),
            **self.optimizer.state_tensors("optimizer."),
            **self.replay.state_tensors("replay."),
            **self.n_step.state_tensors("nstep."),
        }

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        load_module_tensors(self.normalizer, tensors, "normalizer.")
        load_module_tensors(self.q_net, tensors, "q_net.")
        load_module_tensors(self.target_net, tensors, "target_net.")
        self.optimizer.load_state_tensors(tensors, "optimizer.")
        self.replay.load_state_tensors(tensors, "replay.")
        self.n_step.load_state_tensors(tensors, "nstep.")
