"""A served policy version: its manifest, its runtime, and input validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agentserve import continuous
from agentserve.manifest import VALUE_DISTRIBUTIONS, Artifact, Manifest
from agentserve.spaces import BoxSpec, DiscreteSpec
from service import masking
from service.errors import InvalidArgument
from service.runtime import Runtime, load_runtime


@dataclass(frozen=True)
class Decision:
    action: int | npt.NDArray[np.float32]
    """An action index (discrete policies) or a float32 vector inside the action box."""
    propensity: float
    """Probability (discrete) or probability density (continuous) of the action; 1.0 when
    deterministic."""
    probabilities: npt.NDArray[np.float32]
    """Every action's probability (discrete), empty for continuous policies."""
    values: npt.NDArray[np.float32] | None


NO_PROBABILITIES = np.zeros(0, dtype=np.float32)


class ServedPolicy:
    def __init__(self, artifact: Artifact, runtime: str | None = None) -> None:
        manifest = artifact.manifest
        self.manifest: Manifest = manifest
        self.discrete = isinstance(manifest.action_space, DiscreteSpec)
        if isinstance(manifest.action_space, DiscreteSpec):
            self.num_actions = manifest.action_space.n
        else:
            box: BoxSpec = manifest.action_space
            self.num_actions = 0
            self.low = np.asarray(box.low, dtype=np.float32)
            self.high = np.asarray(box.high, dtype=np.float32)
        self.observation_space = manifest.observation_space
        self.flat_size = manifest.observation_space.flat_size
        self.batch_shape = (
            (1, 1)
            if isinstance(manifest.observation_space, DiscreteSpec)
            else (1, *manifest.observation_space.shape)
        )
        self.runtime: Runtime = load_runtime(artifact, runtime)
        self.has_q_values = manifest.distribution in VALUE_DISTRIBUTIONS
        self.warm_up()

    @property
    def name(self) -> str:
        return self.manifest.name

    @property
    def version(self) -> int:
        return self.manifest.version

    def warm_up(self) -> None:
        """One inference at load time, so the first client call pays no lazy initialisation."""
        zeros = np.zeros(self.batch_shape, dtype=np.float32)
        if self.discrete:
            self.runtime.infer(zeros, np.ones((1, self.num_actions), dtype=np.bool_))
        else:
            self.runtime.infer_continuous(zeros)

    def observation(self, values: Sequence[float]) -> npt.NDArray[np.float32]:
        """The request's observation, validated, shaped as a batch of one."""
        if len(values) != self.flat_size:
            raise InvalidArgument(
                f"observation has {len(values)} values but policy {self.name!r} expects "
                f"{self.flat_size}"
            )
        observation = np.asarray(values, dtype=np.float32)
        finite = np.isfinite(observation)
        if not finite.all():
            index = int(np.flatnonzero(~finite)[0])
            raise InvalidArgument(f"observation[{index}] is {observation[index]}: NaN or Inf")
        space = self.observation_space
        if isinstance(space, DiscreteSpec):
            state = observation[0]
            if state != int(state) or not 0 <= state < space.n:
                raise InvalidArgument(
                    f"observation must be a state index in [0, {space.n}), got {state:g}"
                )
        return observation.reshape(self.batch_shape)

    def decide(
        self,
        observation: Sequence[float],
        action_mask: Sequence[bool],
        deterministic: bool,
        rng: np.random.Generator,
    ) -> Decision:
        batch = self.observation(observation)
        if not self.discrete:
            return self._decide_continuous(batch, action_mask, deterministic, rng)
        mask = masking.request_mask(action_mask, self.num_actions)
        result = self.runtime.infer(batch, mask[None])
        probabilities = result.probabilities[0]
        action, propensity = masking.choose(
            int(result.greedy_actions[0]), probabilities, mask, deterministic, rng
        )
        values = result.values[0] if self.has_q_values else None
        return Decision(action, propensity, probabilities, values)

    def _decide_continuous(
        self,
        batch: npt.NDArray[np.float32],
        action_mask: Sequence[bool],
        deterministic: bool,
        rng: np.random.Generator,
    ) -> Decision:
        if len(action_mask) != 0:
            raise InvalidArgument(
                f"policy {self.name!r} has continuous actions: send no action_mask"
            )
        result = self.runtime.infer_continuous(batch)
        if deterministic:
            action = np.clip(result.greedy_actions[0], self.low, self.high).astype(np.float32)
            return Decision(action, 1.0, NO_PROBABILITIES, None)
        action, density = continuous.sample(
            self.manifest.distribution,
            result.means[0],
            result.log_stds[0],
            self.low,
            self.high,
            rng,
        )
        return Decision(action, density, NO_PROBABILITIES, None)
