"""A served policy version: its manifest, its runtime, and input validation."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import numpy.typing as npt

from agentserve.errors import ManifestError
from agentserve.manifest import VALUE_DISTRIBUTIONS, Artifact, Manifest
from agentserve.spaces import DiscreteSpec
from service import masking
from service.errors import InvalidArgument
from service.runtime import Runtime, load_runtime


@dataclass(frozen=True)
class Decision:
    action: int
    propensity: float
    probabilities: npt.NDArray[np.float32]
    values: npt.NDArray[np.float32] | None


class ServedPolicy:
    def __init__(self, artifact: Artifact, runtime: str | None = None) -> None:
        manifest = artifact.manifest
        if not isinstance(manifest.action_space, DiscreteSpec):
            raise ManifestError(
                f"{artifact.label}: continuous-action policies are not served by this version"
            )
        self.manifest: Manifest = manifest
        self.num_actions = manifest.action_space.n
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
        self.runtime.infer(zeros, np.ones((1, self.num_actions), dtype=np.bool_))

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
        mask = masking.request_mask(action_mask, self.num_actions)
        result = self.runtime.infer(batch, mask[None])
        probabilities = result.probabilities[0]
        action, propensity = masking.choose(
            int(result.greedy_actions[0]), probabilities, mask, deterministic, rng
        )
        values = result.values[0] if self.has_q_values else None
        return Decision(action, propensity, probabilities, values)
