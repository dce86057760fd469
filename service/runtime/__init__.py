"""Runtimes behind one interface: a batch of observations and masks in, the policy head out.

- `onnx`: onnxruntime over `policy.onnx` (every artifact has one).
- `table`: numpy lookup of a tabular policy's Q-table (fastest for tabular policies).
- `torch`: the policy module rebuilt from the manifest's algorithm and hyperparameters and
  `weights.safetensors`, on the CPU or a CUDA device (small batches stay on the CPU).

`load_runtime` picks the first runtime of the manifest's list that is available, unless the
caller asks for a specific one. `torch` can serve any artifact whose manifest records its
hyperparameters, so it may be asked for even where the manifest does not list it.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Protocol

import numpy as np
import numpy.typing as npt

from agentserve.errors import ConfigError, ManifestError
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


RUNTIMES = ("onnx", "table", "torch")
DEVICE_RUNTIMES = ("torch",)
"""Runtimes that run on `device`; the others always run on the CPU."""
_DEVICE = re.compile(r"cpu|cuda(:\d+)?")


def resolve_device(device: str) -> str:
    """`cpu`, `cuda` or `cuda:N`, checked against this machine; ConfigError otherwise."""
    if not _DEVICE.fullmatch(device):
        raise ConfigError(f"device must be cpu, cuda or cuda:N, got {device!r}")
    if device == "cpu":
        return device
    import torch

    if not torch.cuda.is_available():
        built = torch.version.cuda
        raise ConfigError(
            f"device {device!r}: CUDA is not available here (torch {torch.__version__}, "
            + (
                f"built for CUDA {built}; no usable GPU or driver)"
                if built
                else "a CPU-only build)"
            )
        )
    index = int(device.partition(":")[2] or torch.cuda.current_device())
    if index >= torch.cuda.device_count():
        raise ConfigError(
            f"device {device!r}: this machine has {torch.cuda.device_count()} CUDA device(s)"
        )
    return device


def load_runtime(
    artifact: Artifact,
    preference: str | None = None,
    device: str = "cpu",
    threads: int | None = None,
) -> Runtime:
    """`device` ("cpu", "cuda", "cuda:N") is where the torch runtime runs; the others run on the
    CPU whatever it says. `threads`: CPU threads of one inference, onnxruntime's intra-op threads
    of this session or torch's thread count (process-wide); None keeps the defaults (onnxruntime
    1, torch its own)."""
    available = [r for r in artifact.manifest.runtimes if r in RUNTIMES]
    if preference is not None:
        if preference not in RUNTIMES:
            raise ManifestError(
                f"unknown runtime {preference!r}; this server has {', '.join(RUNTIMES)}"
            )
        if preference != "torch" and preference not in available:
            raise ManifestError(
                f"{artifact.label} cannot run on {preference!r}; it offers {', '.join(available)}"
            )
        available = [preference]
    if not available:
        raise ManifestError(f"{artifact.label} names no runtime this server has")
    if available[0] == "torch":
        import torch

        from service.runtime.torch import TorchRuntime

        if threads is not None:
            torch.set_num_threads(threads)
        return TorchRuntime(artifact, device)
    if available[0] == "table":
        from service.runtime.table import TableRuntime

        return TableRuntime(artifact)
    from service.runtime.onnx import OnnxRuntime

    return OnnxRuntime(artifact) if threads is None else OnnxRuntime(artifact, threads)
