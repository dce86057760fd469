"""Runtimes behind one interface: a batch of observations and masks in, the policy head out.

- `onnx`: onnxruntime over `policy.onnx` (every artifact has one).
- `table`: numpy lookup of a tabular policy's Q-table (fastest for tabular policies).

`load_runtime` picks the first runtime of the manifest's list that is available, unless the
caller asks for a specific one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agentserve.errors import ManifestError
from agentserve.manifest import Artifact


@dataclass(frozen=True)
class Inference:
    greedy_actions: npt.NDArray[np.int64]
    """[B] argmax over allowed actions."""
    probabilities: npt.NDArray[np.float32]
    """[B, A] the served stochastic policy over allowed actions (masked ones exactly 0)."""
    values: npt.NDArray[np.float32]
    """[B, A] unmasked Q-values (value-based policies)."""


@dataclass(frozen=True)
class ContinuousInference:
    greedy_actions: npt.NDArray[np.float32]
    """[B, D] the noise-free action, inside the action box."""
    means: npt.NDArray[np.float32]
    """[B, D] mean of the Gaussian (before squashing, for squashed policies)."""
    log_stds: npt.NDArray[np.float32]
    """[B, D] log standard deviation of the Gaussian."""


class Runtime(Protocol):
    name: str

    def infer(
        self, observations: npt.NDArray[np.float32], masks: npt.NDArray[np.bool_]
    ) -> Inference:
        """Discrete policies."""
        ...

    def infer_continuous(self, observations: npt.NDArray[np.float32]) -> ContinuousInference:
        """Continuous policies."""
        ...


RUNTIMES = ("onnx", "table")


def load_runtime(artifact: Artifact, preference: str | None = None) -> Runtime:
    from service.runtime.onnx import OnnxRuntime
    from service.runtime.table import TableRuntime

    available = [r for r in artifact.manifest.runtimes if r in RUNTIMES]
    if preference is not None:
        if preference not in available:
            raise ManifestError(
                f"{artifact.label} cannot run on {preference!r}; it offers {', '.join(available)}"
            )
        available = [preference]
    if not available:
        raise ManifestError(f"{artifact.label} names no runtime this server has")
    if available[0] == "table":
        return TableRuntime(artifact)
    return OnnxRuntime(artifact)
