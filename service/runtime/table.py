"""Numpy lookup of a tabular policy's Q-table: no graph, a few microseconds per call.

Serves the `epsilon_greedy` distribution over the table, and `greedy` (one-hot on the masked
argmax: epsilon-greedy with epsilon 0, e.g. UCB1's estimates)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
from safetensors.numpy import load_file

from agentserve.errors import ManifestError
from agentserve.manifest import WEIGHTS_FILE, Artifact
from agentserve.spaces import DiscreteSpec
from service.runtime import ContinuousInference, Inference
from trainer.core.masking import epsilon_greedy_probabilities, masked_argmax

TABLE_TENSOR = "q_table"
TABLE_DISTRIBUTIONS = ("epsilon_greedy", "greedy")


class TableRuntime:
    name = "table"

    def __init__(self, artifact: Artifact) -> None:
        manifest = artifact.manifest
        obs, act = manifest.observation_space, manifest.action_space
        if manifest.distribution not in TABLE_DISTRIBUTIONS:
            raise ManifestError(
                f"{artifact.label}: the table runtime serves {' or '.join(TABLE_DISTRIBUTIONS)} "
                f"policies, not {manifest.distribution!r}"
            )
        if not isinstance(obs, DiscreteSpec) or not isinstance(act, DiscreteSpec):
            raise ManifestError(f"{artifact.label}: the table runtime needs discrete spaces")
        try:
            table = load_file(str(artifact.path(WEIGHTS_FILE)))[TABLE_TENSOR]
        except (KeyError, OSError, ValueError):
            raise ManifestError(f"{artifact.label}: weights hold no {TABLE_TENSOR!r}") from None
        if table.shape != (obs.n, act.n):
            raise ManifestError(
                f"{artifact.label}: table shape {table.shape} != ({obs.n}, {act.n})"
            )
        self.table = np.ascontiguousarray(table, dtype=np.float32)
        self.epsilon = manifest.epsilon if manifest.distribution == "epsilon_greedy" else 0.0

    def infer(
        self, observations: npt.NDArray[np.float32], masks: npt.NDArray[np.bool_]
    ) -> Inference:
        states = observations.reshape(len(observations), -1)[:, 0].astype(np.int64)
        values = self.table[states]
        return Inference(
            masked_argmax(values, masks),
            epsilon_greedy_probabilities(values, masks, self.epsilon),
            values,
        )

    def infer_continuous(self, observations: npt.NDArray[np.float32]) -> ContinuousInference:
        raise ManifestError("the table runtime serves discrete actions only")
