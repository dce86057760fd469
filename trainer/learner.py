"""The one learner interface that both drivers use.

Glossary:
- *step*: one environment transition handed to `Learner.observe`.
- *update*: one gradient step (or one table update) made by the learner.
- *policy module*: the torch module that is exported to ONNX and served. Discrete actions:
  `(observation, action_mask) -> (greedy_action, probabilities, values)`; continuous actions:
  `(observation) -> (greedy_action, action_mean, action_log_std)` (see agentserve.manifest). The
  same signature for every algorithm of a kind.

The offline loop (`trainer.loop`) drives a learner with a Gymnasium env; the service drives the
very same object with transitions assembled from remote feedback. The learner alone decides when to
learn (every step for tabular methods, every `train_freq` steps from replay for DQN, ...).
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass
from typing import Any, ClassVar

import numpy as np
import numpy.typing as npt
import torch

from agentserve.errors import ConfigError
from agentserve.spaces import SpaceSpec

LEARNER_RNG_STREAM = 0x1EA4
"""Mixed into every learner's seed (see `Learner.__init__`)."""

FloatArray = npt.NDArray[np.float32]
IntArray = npt.NDArray[np.int64]
BoolArray = npt.NDArray[np.bool_]
ActionArray = npt.NDArray[Any]
"""[B] int64 discrete actions, or [B, D] float32 continuous actions."""


@dataclass(frozen=True)
class ActionBatch:
    """What `Learner.act` returns for a batch of B observations."""

    actions: ActionArray
    """[B] discrete actions, or [B, D] continuous actions. Continuous actions are what the
    policy drew (a Gaussian policy's draw may leave the box; drivers clip it before the env)."""
    propensities: FloatArray
    """[B] probability (discrete) or probability density (continuous) of each action under the
    acting (exploring) policy."""
    values: FloatArray | None = None
    """[B, A] Q-values, for value-based learners."""


@dataclass(frozen=True)
class TransitionBatch:
    """B transitions (s, a, r, s', terminated, truncated), with the masks at s and at s'."""

    observations: FloatArray
    actions: ActionArray
    """As `ActionBatch.actions` returned them (continuous: before any clipping to the box)."""
    rewards: FloatArray
    next_observations: FloatArray
    terminated: BoolArray
    truncated: BoolArray
    action_masks: BoolArray | None = None
    """[B, A] actions allowed at s (the mask `a` was chosen under); None = all allowed."""
    next_action_masks: BoolArray | None = None
    """[B, A] actions allowed at s'; None = all allowed. Targets maximise over allowed ones only."""
    next_actions: IntArray | None = None
    """[B] the action the acting policy chose at s', -1 where s' ended the episode (on-policy
    targets such as SARSA's need it); None when the driver does not know it."""
    log_probs: FloatArray | None = None
    """[B] log-probability (log density for continuous actions) of each action under the policy
    that chose it, recorded when it acted. None: the learner's own policy is taken to be that
    policy (the offline loop, which never acts with an older one). The service passes it: an
    action may have been chosen by a policy some updates older than the learner (see the
    policy-gradient learners, which importance-weight by it)."""
    episode_keys: IntArray | None = None
    """[B] which trajectory each transition continues: transitions with the same key are
    consecutive steps of one episode, in the order they arrive. None: row i continues row i of
    the previous batch (lockstep envs, the offline loop). The service interleaves the episodes
    of many simulators in one stream and passes one key per episode."""


@dataclass
class LearnerState:
    """Everything needed to resume learning, without pickle: arrays plus JSON-able metadata."""

    tensors: dict[str, npt.NDArray[Any]]
    meta: dict[str, Any]


class Learner(ABC):
    """An algorithm instance: acts, observes, learns, saves and exports its policy."""

    algorithm: ClassVar[str]
    """Registered name, e.g. "dqn"."""
    distribution: str
    """How the served policy's actions arise: one of agentserve.manifest.DISTRIBUTIONS (a
    learner that supports several action spaces sets it per instance)."""
    config_class: ClassVar[type[Any]]
    runtimes: ClassVar[tuple[str, ...]] = ("onnx",)
    """Runtimes able to serve the exported policy, preferred first."""
    action_spaces: ClassVar[tuple[str, ...]] = ("discrete",)
    """Kinds of action space it supports: "discrete", "continuous"."""

    def __init__(
        self, observation_space: SpaceSpec, action_space: SpaceSpec, config: Any, seed: int
    ) -> None:
        self.check_spaces(observation_space, action_space)
        self.observation_space = observation_space
        self.action_space = action_space
        self.config = config
        self.seed = seed
        self.num_steps = 0
        """Environment steps observed so far."""
        self.num_updates = 0
        """Learning updates made so far."""
        # A stream of its own: `default_rng(seed)` is also what Gymnasium seeds an env with, and
        # a learner drawing the env's numbers explores in lockstep with the env's noise.
        self.rng = np.random.default_rng([seed, LEARNER_RNG_STREAM])
        torch.manual_seed(seed)

    @classmethod
    @abstractmethod
    def check_spaces(cls, observation_space: SpaceSpec, action_space: SpaceSpec) -> None:
        """Raises ConfigError naming what is unsupported."""

    @abstractmethod
    def act(
        self, observations: FloatArray, action_masks: BoolArray | None, deterministic: bool
    ) -> ActionBatch:
        """Chooses actions for a batch; never a masked one."""

    @abstractmethod
    def observe(self, batch: TransitionBatch) -> dict[str, float]:
        """Hands experience in; returns training scalars ({"train/loss": ...}) if it learned."""

    def acting_modules(self) -> tuple[torch.nn.Module, ...]:
        """The torch modules whose tensors `act` reads (weights, normalizer statistics). The
        service acts with a replica of the learner and refreshes the replica's acting modules
        from these after every learning step, so that learning runs in another thread without
        holding up acting. Empty for learners that act from arrays they update in O(1) per step
        (tables, bandits): the service then acts with the learner itself."""
        return ()

    @abstractmethod
    def policy_module(self) -> torch.nn.Module:
        """The inference module that is exported and served (see the module docstring)."""

    @property
    @abstractmethod
    def serving_epsilon(self) -> float:
        """Exploration rate of the exported stochastic policy (0 for policy-gradient methods)."""

    @abstractmethod
    def _state_tensors(self) -> dict[str, npt.NDArray[Any]]: ...

    @abstractmethod
    def _load_state_tensors(self, tensors: dict[str, npt.NDArray[Any]]) -> None: ...

    def extra_scalars(self) -> dict[str, float]:
        """Scalars worth logging at any time (e.g. the exploration rate)."""
        return {}

    def state_dict(self) -> LearnerState:
        meta = {
            "algorithm": self.algorithm,
            "num_steps": self.num_steps,
            "num_updates": self.num_updates,
            "rng": self.rng.bit_generator.state,
        }
        return LearnerState(self._state_tensors(), meta)

    def load_state_dict(self, state: LearnerState) -> None:
        if state.meta.get("algorithm") != self.algorithm:
            raise ConfigError(
                f"checkpoint is for {state.meta.get('algorithm')!r}, not {self.algorithm!r}"
            )
        self.num_steps = int(state.meta["num_steps"])
        self.num_updates = int(state.meta["num_updates"])
        self.rng.bit_generator.state = state.meta["rng"]
        self._load_state_tensors(state.tensors)
