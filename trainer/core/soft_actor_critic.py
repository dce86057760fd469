"""What the two Soft Actor-Critic learners (`sac`, `sac_discrete`) share.

Soft Actor-Critic (Haarnoja et al., 2018, "Soft Actor-Critic Algorithms and Applications") learns
from replay a stochastic policy pi that maximises reward plus alpha times its entropy:
- two Q critics (the clipped double-Q trick), evaluated as ONE batched network (`EnsembleMLP`:
  weights stacked [2, in, out], one `torch.baddbmm` per layer), regressed on the soft target
  r + gamma (1 - terminated) (min_i Q_targ_i(s', a') - alpha log pi(a'|s')), a' ~ pi(s'), with
  half the sum of the critics' mean squared errors as the loss (as Stable-Baselines3);
- target critics that follow the critics by Polyak averaging, Q_targ <- (1 - tau) Q_targ + tau Q
  (one `torch._foreach_lerp_`), every `target_update_interval` updates;
- the temperature alpha, fixed (`ent_coef`) or tuned automatically towards a target entropy by
  the loss -log(alpha) (log pi + target_entropy), with log alpha a parameter of its own;
- Adam, fused, whose step size stays constant or decays linearly to 0 over the step budget;
- a torch.Generator of its own for the policy's sampling noise, saved in the learner state: a
  resumed run draws the same noise, and the global torch generator is left alone.

Per step the learner stores the transition (with its bootstrap factor: gamma, or 0 when s' is
terminal; a truncated episode still bootstraps); every `train_freq` steps after `learning_starts`
it makes `gradient_steps` updates on minibatches of `batch_size`. An update computes the critics',
the actor's and the temperature's losses from the same parameters and applies them in one
backward pass and one Adam step (as rlkit's SAC computes its losses; Stable-Baselines3 steps the
critics before evaluating the actor's loss). The losses share no parameter: the actor's loss
reaches the critics through detached weights, and the temperature's sees log pi detached.
Denormal floats are flushed to zero while learning (see `flushing_denormals`).
"""

from __future__ import annotations

import copy
import itertools
import math
from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from torch import nn
from torch.nn import functional as F

from agentserve.errors import ConfigError
from agentserve.spaces import SpaceSpec
from trainer.core import normalization
from trainer.core.checkpoint import load_module_tensors, module_tensors
from trainer.core.flat_optim import FlatOptimizer
from trainer.core.numerics import flushing_denormals
from trainer.core.replay import ReplayBuffer, ReplaySample
from trainer.learner import Learner, TransitionBatch

SCHEDULES = ("constant", "linear")
NOISE_STREAM = 0x5AC
"""Mixed into the seed of the learner's noise generator."""


@dataclass
class SoftActorCriticOptions:
    """The hyperparameters both SAC variants share (their configs add their own)."""

    learning_rate: float = 3e-4
    """Adam step size of actor, critics and temperature (at the start, if the schedule is
    linear)."""
    learning_rate_schedule: str = "constant"
    """"constant", or "linear" (decays to 0 over the step budget, as the zoo's lin_ values)."""
    buffer_size: int = 1_000_000
    """Replay capacity in transitions."""
    learning_starts: int = 100
    """Steps of uniformly random (allowed) actions collected before the first update."""
    batch_size: int = 256
    """Transitions per gradient step."""
    tau: float = 0.005
    """Polyak coefficient of the target critics (1 = hard copy)."""
    gamma: float = 0.99
    """Discount factor."""
    train_freq: int = 1
    """Steps between training phases."""
    gradient_steps: int = 1
    """Gradient steps per training phase."""
    ent_coef: float | None = None
    """Fixed temperature alpha; unset (None) tunes it automatically towards target_entropy."""
    ent_coef_init: float = 1.0
    """Initial temperature when it is tuned automatically."""
    target_entropy: float | None = None
    """Entropy the automatic temperature aims for; None = the algorithm's default."""
    target_update_interval: int = 1
    """Gradient steps between Polyak updates of the target critics."""
    net_arch: list[int] = field(default_factory=lambda: [256, 256])
    """Hidden layer widths of the actor and of each critic (ReLU MLPs)."""
    normalize_observations: bool = False
    """Normalise observations with running statistics (exported inside the policy)."""
    normalize_clip: float = 10.0
    """Clip of the normalised observations."""
    total_timesteps: int = 1_000_000
    """Step budget the learning-rate schedule is laid over (set by the training loop)."""

    def validate(self) -> None:
        if self.learning_rate_schedule not in SCHEDULES:
            raise ConfigError(f"learning_rate_schedule must be one of {', '.join(SCHEDULES)}")
        if self.learning_rate <= 0:
            raise ConfigError("learning_rate must be > 0")
        if self.batch_size < 1 or self.buffer_size < self.batch_size:
            raise ConfigError("need 1 <= batch_size <= buffer_size")
        if self.train_freq < 1 or self.gradient_steps < 0 or self.target_update_interval < 1:
            raise ConfigError(
                "train_freq and target_update_interval must be >= 1, gradient_steps >= 0"
            )
        if self.learning_starts < 0:
            raise ConfigError("learning_starts must be >= 0")
        if not 0 < self.tau <= 1 or not 0 <= self.gamma <= 1:
            raise ConfigError("tau must lie in (0, 1] and gamma in [0, 1]")
        if self.ent_coef is not None and self.ent_coef < 0:
            raise ConfigError("ent_coef must be >= 0 (or unset for automatic tuning)")
        if self.ent_coef_init <= 0:
            raise ConfigError("ent_coef_init must be > 0")


class EnsembleMLP(nn.Module):
    """`members` ReLU MLPs of one shape evaluated together: each layer's weights are stacked as
    [members, in, out] and applied with one batched matrix product, so the twin critics cost one
    forward pass. `forward(x)` takes [B, in] (shared by the members) or [members, B, in] and
    returns [members, B, out]."""

    def __init__(
        self, in_features: int, hidden: Sequence[int], out_features: int, members: int = 2
    ) -> None:
        super().__init__()
        self.members = members
        self.num_layers = len(hidden) + 1
        widths = [in_features, *hidden, out_features]
        for i, (width_in, width_out) in enumerate(itertools.pairwise(widths)):
            # nn.Linear's initialisation, member by member.
            layers = [nn.Linear(width_in, width_out) for _ in range(members)]
            weight = torch.stack([layer.weight.detach().T for layer in layers])
            bias = torch.stack([layer.bias.detach()[None] for layer in layers])
            self.register_parameter(f"weight{i}", nn.Parameter(weight))  # [members, in, out]
            self.register_parameter(f"bias{i}", nn.Parameter(bias))  # [members, 1, out]

    def layers(self) -> list[tuple[torch.Tensor, torch.Tensor]]:
        """(weight, bias) of each layer, input first."""
        return [
            (getattr(self, f"weight{i}"), getattr(self, f"bias{i}")) for i in range(self.num_layers)
        ]

    def forward(self, x: torch.Tensor, detach_weights: bool = False) -> torch.Tensor:
        """`detach_weights`: no gradient for the weights (gradients still reach `x`), as when
        the actor's loss is differentiated through the critics."""
        h = x if x.dim() == 3 else x.expand(self.members, *x.shape)
        for i, (weight, bias) in enumerate(self.layers()):
            if detach_weights:
                weight, bias = weight.detach(), bias.detach()
            h = torch.baddbmm(bias, h, weight)
            if i < self.num_layers - 1:
                h = torch.relu_(h)
        return h

    def member(self, index: int) -> nn.Sequential:
        """Member `index` as a plain `nn.Sequential` of Linear and ReLU layers (a copy)."""
        modules: list[nn.Module] = []
        for weight, bias in self.layers():
            linear = nn.Linear(weight.shape[1], weight.shape[2])
            with torch.no_grad():
                linear.weight.copy_(weight[index].T)
                linear.bias.copy_(bias[index, 0])
            modules += [linear, nn.ReLU()]
        return nn.Sequential(*modules[:-1])


def polyak_update(target: list[torch.Tensor], online: list[torch.Tensor], tau: float) -> None:
    """target <- (1 - tau) target + tau online, for every tensor in one fused call."""
    with torch.no_grad():
        torch._foreach_lerp_(target, online, tau)


def temperature_loss(log_alpha: torch.Tensor, log_prob_gap_B: torch.Tensor) -> torch.Tensor:
    """-log(alpha) * mean(log pi + target_entropy): `log_prob_gap_B` is log pi(a|s) (or its
    expectation, -H) plus the target entropy. Gradient descent raises alpha while the entropy is
    below its target and lowers it while above."""
    return log_alpha * -log_prob_gap_B.detach().mean()


class SoftActorCriticLearner(Learner):
    """Replay, update schedule, critics, temperature, optimizers and state of both SAC learners.
    Subclasses build the actor and critic (`make_networks`) and the replay (`make_replay`),
    act, map stored actions (`stored`) and define one update (`update`)."""

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        super().__init__(observation_space, action_space, config, seed)
        c = config
        self.obs_size = observation_space.flat_size
        self.normalizer = normalization.input_layer(
            self.obs_size, c.normalize_observations, c.normalize_clip
        )
        self.actor, self.critic = self.make_networks()
        self.critic_target = copy.deepcopy(self.critic).requires_grad_(False)
        self.critic_params: list[torch.Tensor] = list(self.critic.parameters())
        self.target_params: list[torch.Tensor] = list(self.critic_target.parameters())
        self.auto_temperature = c.ent_coef is None
        initial_alpha = c.ent_coef_init if c.ent_coef is None else c.ent_coef
        self.log_alpha = torch.tensor(
            math.log(initial_alpha) if initial_alpha > 0 else -math.inf,
            requires_grad=self.auto_temperature,
        )
        # One Adam over one flat buffer of critics, actor and (when learned) log alpha. Adam is
        # elementwise: each of them steps exactly as under an optimizer of its own.
        params = [*self.critic_params, *self.actor.parameters()]
        self.optimizer = FlatOptimizer(
            [*params, self.log_alpha] if self.auto_temperature else params, c.learning_rate
        )
        self.replay = self.make_replay()
        self.generator = torch.Generator()
        noise_seed = np.random.SeedSequence([seed, NOISE_STREAM]).generate_state(1, np.uint64)[0]
        self.generator.manual_seed(int(noise_seed))

    def acting_modules(self) -> tuple[nn.Module, ...]:
        return (self.actor,)  # the normalizer is its first module

    @abstractmethod
    def make_networks(self) -> tuple[nn.Module, EnsembleMLP]:
        """The actor (with `self.normalizer` as its first module) and the twin critic."""

    @abstractmethod
    def make_replay(self) -> ReplayBuffer:
        """An empty replay buffer of `config.buffer_size` transitions."""

    @abstractmethod
    def stored(self, batch: TransitionBatch) -> TransitionBatch:
        """The batch as the replay keeps it (e.g. actions mapped to the policy's range)."""

    @abstractmethod
    def update(self, sample: ReplaySample, alpha: torch.Tensor) -> torch.Tensor:
        """One gradient step of critics, actor and temperature on `sample` with the current
        temperature `alpha` (see `optimize`)."""

    @property
    def serving_epsilon(self) -> float:
        return 0.0

    def learning_rate(self) -> float:
        """The scheduled step size at the current step."""
        c = self.config
        if c.learning_rate_schedule == "linear":
            remaining = 1.0 - min(1.0, self.num_steps / max(c.total_timesteps, 1))
            return float(c.learning_rate * remaining)
        return float(c.learning_rate)

    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        c = self.config
        count = len(batch.rewards)
        # The bootstrap factor: gamma, 0 where s' is terminal (truncation still bootstraps).
        discounts = np.where(batch.terminated, 0.0, c.gamma).astype(np.float32)
        self.replay.add(self.stored(batch), discounts)
        normalization.update(self.normalizer, batch.observations)
        before, self.num_steps = self.num_steps, self.num_steps + count
        if (
            self.num_steps >= c.learning_starts
            and c.gradient_steps > 0
            and before // c.train_freq != self.num_steps // c.train_freq
        ):
            return self.train_phase(c.gradient_steps)
        return {}

    def train_phase(self, count: int) -> dict[str, float]:
        """`count` updates; returns their mean losses and the mean temperature."""
        c = self.config
        self.optimizer.lr = self.learning_rate()
        sums = torch.zeros(4)
        with flushing_denormals():
            for _ in range(count):
                alpha = self.log_alpha.detach().exp()
                sums += self.update(self.replay.sample(c.batch_size, self.rng), alpha)
                self.num_updates += 1
                if self.num_updates % c.target_update_interval == 0:
                    polyak_update(self.target_params, self.critic_params, c.tau)
        critic_loss, actor_loss, alpha_loss, alpha_mean = (sums / count).tolist()
        scalars = {
            "train/loss": critic_loss + actor_loss,
            "train/critic_loss": critic_loss,
            "train/actor_loss": actor_loss,
            "train/ent_coef": alpha_mean,
        }
        if self.auto_temperature:
            scalars["train/ent_coef_loss"] = alpha_loss
        return scalars

    def critic_loss(self, q_taken_MB: torch.Tensor, targets_B: torch.Tensor) -> torch.Tensor:
        """Both critics' Q(s, a) ([members, B]) regressed on the soft targets: half the sum of
        their mean squared errors."""
        squared = F.mse_loss(q_taken_MB, targets_B.expand_as(q_taken_MB), reduction="sum")
        return squared * (0.5 / len(targets_B))

    def optimize(
        self,
        critic_loss: torch.Tensor,
        actor_loss: torch.Tensor,
        log_prob_gap_B: torch.Tensor,
        alpha: torch.Tensor,
    ) -> torch.Tensor:
        """One backward pass and one Adam step on the critics', the actor's and (when automatic)
        the temperature's losses. Returns [critic loss, actor loss, temperature loss, alpha],
        detached."""
        alpha_loss = temperature_loss(self.log_alpha, log_prob_gap_B)
        total = critic_loss + actor_loss
        if self.auto_temperature:
            total = total + alpha_loss
        self.optimizer.zero_grad()
        total.backward()  # type: ignore[no-untyped-call]
        self.optimizer.step()
        return torch.stack([critic_loss, actor_loss, alpha_loss, alpha]).detach()

    def extra_scalars(self) -> dict[str, float]:
        return {
            "train/ent_coef": float(self.log_alpha.detach().exp()),
            "train/learning_rate": self.learning_rate(),
        }

    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]:
        return {
            **module_tensors(self.actor, "actor."),
            **module_tensors(self.critic, "critic."),
            **module_tensors(self.critic_target, "critic_target."),
            **self.optimizer.state_tensors("optimizer."),
            "log_alpha": self.log_alpha.detach().numpy().reshape(1).copy(),
            "generator": self.generator.get_state().numpy().copy(),
            **self.replay.state_tensors("replay."),
        }

    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None:
        load_module_tensors(self.actor, tensors, "actor.")
        load_module_tensors(self.critic, tensors, "critic.")
        load_module_tensors(self.critic_target, tensors, "critic_target.")
        self.optimizer.load_state_tensors(tensors, "optimizer.")
        with torch.no_grad():
            self.log_alpha.copy_(torch.from_numpy(np.array(tensors["log_alpha"])).reshape(()))
        self.generator.set_state(torch.from_numpy(np.array(tensors["generator"], dtype=np.uint8)))
        self.replay.load_state_tensors(tensors, "replay.")
