"""The torch runtime: the policy module rebuilt from the manifest and `weights.safetensors`.

The module is rebuilt the way the trainer built it: the registered learner class of the
manifest's `algorithm`, its config from `training.hyperparameters` (trainer.core.config
`build_config`, the same checks as `-p` overrides), the manifest's spaces, then
`policy_module()` with the artifact's tensors loaded strictly (every key, shape and dtype; read
with safetensors, never pickle). Before it serves, the rebuilt module must agree with the
artifact's own `policy.onnx` (trainer.export `check_parity`: 1,000 random observations and
masks, 1e-5), so a hyperparameter that changes no tensor but changes the policy (an epsilon, a
UCB alpha, a hyperparameter the manifest lacks and whose default differs) cannot go unnoticed.

On a CUDA device, batches smaller than `cpu_below` (default 64) stay on the CPU, where one small
batch costs a fraction of a kernel launch plus two copies: they are answered by onnxruntime over
the artifact's `policy.onnx` (one thread), which the rebuilt module has just been checked against
(measured on the H200 machine, docs/serving-gpu.md: one row in about 20 us, against about 100 us
for torch's own CPU copy of the module and 110 us for a CUDA graph). Larger batches go through
pinned host buffers with non-blocking copies and, up to `graph_batch` rows (default 4,096),
through CUDA graphs captured at load for a ladder of sizes (`graph_sizes`: powers of two from
`cpu_below`, then `graph_batch`), a batch padded up to the smallest that holds it: one graph
replay instead of a launch per operation (4,096 rows of the CartPole policy in 161 us against
516 us eager). Larger batches run eagerly.
"""

from __future__ import annotations

import copy
import logging
import threading
from collections.abc import Sequence
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors import SafetensorError
from safetensors.torch import load_file
from torch import nn

from agentserve.errors import ManifestError
from agentserve.manifest import ONNX_FILE, WEIGHTS_FILE, Artifact
from agentserve.spaces import DiscreteSpec
from service.runtime import ContinuousInference, Inference, Runtime, resolve_device

log = logging.getLogger("agentserve.runtime.torch")

CPU_BELOW = 64
"""Default: batches with fewer rows stay on the CPU, answered by onnxruntime (CUDA devices only)."""
GRAPH_BATCH = 4096
"""Default: the largest batch served through a CUDA graph (CUDA devices only; 0: none)."""
_LISTED = 5
"""Key names listed in an error message, at most."""


def build_module(artifact: Artifact) -> nn.Module:
    """The artifact's policy module on the CPU, in eval mode, with its weights loaded and checked
    against the artifact's ONNX graph. ManifestError names what does not fit."""
    from trainer.rebuild import learner_from_manifest

    learner = learner_from_manifest(artifact.manifest, seed=0)
    module = learner.policy_module()
    del learner  # replay buffers and optimizers: not needed to serve
    load_weights(module, artifact)
    module.eval().requires_grad_(False)
    _check_against_onnx(module, artifact)
    return module


def load_weights(module: nn.Module, artifact: Artifact) -> None:
    """Loads `weights.safetensors` into `module`: the same keys, shapes and dtypes, or
    ManifestError naming the first differences."""
    label = artifact.label
    try:
        tensors = load_file(str(artifact.path(WEIGHTS_FILE)), device="cpu")
    except (OSError, SafetensorError, ValueError) as error:
        raise ManifestError(f"{label}: {WEIGHTS_FILE} does not load: {error}") from None
    expected = module.state_dict()
    if set(tensors) != set(expected):
        aliases = _unwrapped_keys(module)
        if set(aliases.values()) == set(tensors) and len(aliases) == len(expected):
            # Exported before a stateless layer (the identity observation normalizer) was
            # put in front of the network inside an nn.Sequential: the same tensors, one
            # index segment shorter.
            tensors = {key: tensors[aliases[key]] for key in expected}
        else:
            missing = sorted(set(expected) - set(tensors))
            unexpected = sorted(set(tensors) - set(expected))
            problems = []
            if missing:
                problems.append(f"missing {_names(missing)}")
            if unexpected:
                problems.append(f"unexpected {_names(unexpected)}")
            raise ManifestError(
                f"{label}: {WEIGHTS_FILE} does not fit the rebuilt {artifact.manifest.algorithm} "
                f"module: {'; '.join(problems)}"
            )
    for key, want in expected.items():
        have = tensors[key]
        if have.shape != want.shape or have.dtype != want.dtype:
            raise ManifestError(
                f"{label}: {WEIGHTS_FILE} tensor {key!r} is {have.dtype} {tuple(have.shape)}, "
                f"the rebuilt module expects {want.dtype} {tuple(want.shape)}"
            )
    try:
        module.load_state_dict(tensors, strict=True)
    except RuntimeError as error:  # unreachable after the checks above; kept as a guard
        raise ManifestError(f"{label}: {WEIGHTS_FILE} does not load: {error}") from None


def _names(keys: Sequence[str]) -> str:
    shown = ", ".join(repr(k) for k in keys[:_LISTED])
    return shown + (f" and {len(keys) - _LISTED} more" if len(keys) > _LISTED else "")


def _unwrapped_keys(module: nn.Module) -> dict[str, str]:
    """State-dict key -> the key the same tensor has when every nn.Sequential with exactly one
    child holding tensors is replaced by that child (`q_net.1.0.weight` -> `q_net.0.weight`
    for `q_net = Sequential(Identity(), mlp)`)."""
    renames: list[tuple[str, str]] = []
    for prefix, sub in module.named_modules():
        if not isinstance(sub, nn.Sequential):
            continue
        holding = [name for name, child in sub.named_children() if child.state_dict()]
        if len(holding) == 1 and len(sub) > 1:
            outer = f"{prefix}." if prefix else ""
            renames.append((f"{outer}{holding[0]}.", outer))
    renames.sort(key=lambda pair: len(pair[0]), reverse=True)  # innermost first
    aliases: dict[str, str] = {}
    for key in module.state_dict():
        alias = key
        for old, new in renames:
            if alias.startswith(old):
                alias = new + alias[len(old) :]
        aliases[key] = alias
    return aliases


def _check_against_onnx(module: nn.Module, artifact: Artifact) -> None:
    from trainer.export import check_parity

    manifest = artifact.manifest
    try:
        check_parity(
            module, artifact.path(ONNX_FILE), manifest.observation_space, manifest.action_space
        )
    except ManifestError:
        raise
    except Exception as error:  # ExportError, or onnxruntime's own untyped errors
        raise ManifestError(
            f"{artifact.label}: the module rebuilt from training.hyperparameters and "
            f"{WEIGHTS_FILE} does not match {ONNX_FILE}: {error}"
        ) from None


def _tensor(array: npt.NDArray[Any], dtype: npt.DTypeLike) -> torch.Tensor:
    """A CPU tensor over `array` (no copy when it already is contiguous, writable `dtype`)."""
    contiguous = np.ascontiguousarray(array, dtype=dtype)
    if not contiguous.flags.writeable:
        contiguous = contiguous.copy()
    return torch.from_numpy(contiguous)


def _numpy(tensor: torch.Tensor, dtype: npt.DTypeLike) -> npt.NDArray[Any]:
    """A CPU tensor's values as an array the caller owns (a view of a parameter is copied)."""
    values = tensor.numpy()
    if tensor._is_view() or not values.flags.c_contiguous:
        return np.array(values, dtype=dtype, copy=True)
    return values.astype(dtype, copy=False)


class _Pinned:
    """Reusable page-locked host buffers, one per name, grown to the next power of two."""

    def __init__(self) -> None:
        self._buffers: dict[str, torch.Tensor] = {}

    def get(self, name: str, shape: Sequence[int], dtype: torch.dtype) -> torch.Tensor:
        size = int(np.prod(shape, dtype=np.int64))
        buffer = self._buffers.get(name)
        if buffer is None or buffer.dtype != dtype or buffer.numel() < size:
            capacity = 1 << max(size - 1, 1).bit_length()
            buffer = torch.empty(capacity, dtype=dtype, pin_memory=True)
            self._buffers[name] = buffer
        return buffer[:size].view(*shape)


def graph_sizes(cpu_below: int, graph_batch: int) -> list[int]:
    """The batch sizes CUDA graphs are captured for, ascending: the powers of two from
    `cpu_below` (at least 1) below `graph_batch`, then `graph_batch` itself; none when
    `graph_batch` is 0 or below `cpu_below` (no batch that large reaches the device)."""
    smallest = max(cpu_below, 1)
    if graph_batch < smallest:
        return []
    sizes = []
    size = 1 << (smallest - 1).bit_length()  # the first power of two >= smallest
    while size < graph_batch:
        sizes.append(size)
        size *= 2
    return [*sizes, graph_batch]


class _CudaGraph:
    """The module captured for `rows` rows: static device inputs and outputs, replayed."""

    def __init__(self, module: nn.Module, inputs: list[torch.Tensor]) -> None:
        self.inputs = inputs
        self.rows = inputs[0].shape[0]
        side = torch.cuda.Stream(device=inputs[0].device)  # type: ignore[no-untyped-call]
        side.wait_stream(torch.cuda.current_stream(inputs[0].device))
        with torch.cuda.stream(side):
            for _ in range(3):  # warm-up outside the capture (cuBLAS handles, allocator)
                module(*inputs)
        torch.cuda.current_stream(inputs[0].device).wait_stream(side)
        self.graph = torch.cuda.CUDAGraph()
        with torch.cuda.graph(self.graph):
            self.outputs: tuple[torch.Tensor, ...] = tuple(module(*inputs))


class TorchRuntime:
    name = "torch"

    def __init__(
        self,
        artifact: Artifact,
        device: str = "cpu",
        *,
        cpu_below: int = CPU_BELOW,
        graph_batch: int = GRAPH_BATCH,
    ) -> None:
        """`device`: "cpu", "cuda" or "cuda:N". On CUDA, batches of fewer than `cpu_below` rows
        are answered by onnxruntime on the CPU (`small`); batches of up to `graph_batch` rows run
        through CUDA graphs (captured for `graph_sizes`, a batch padded to the smallest that holds
        it; 0: no graphs)."""
        manifest = artifact.manifest
        self.device = resolve_device(device)
        self.cpu_below = cpu_below
        self.discrete = isinstance(manifest.action_space, DiscreteSpec)
        self.num_actions = (
            manifest.action_space.n if isinstance(manifest.action_space, DiscreteSpec) else 0
        )
        space = manifest.observation_space
        self.observation_shape: tuple[int, ...] = (
            (1,) if isinstance(space, DiscreteSpec) else tuple(space.shape)
        )
        self.cpu_module = build_module(artifact)
        self.cuda_module: nn.Module | None = None
        self.small: Runtime | None = None
        """On CUDA: the runtime of batches under `cpu_below` rows (onnxruntime, on the CPU)."""
        self._graphs: list[_CudaGraph] = []
        """Ascending by rows."""
        self._pinned = _Pinned()
        self._lock = threading.Lock()
        self._cuda_device: torch.device | None = None
        """The device with its index: `torch.cuda.device(...)` and `current_stream(...)` ask
        whether CUDA is available (a driver call, ~50 us) for a device without one."""
        if self.device != "cpu":
            from service.runtime.onnx import OnnxRuntime

            named = torch.device(self.device)
            self._cuda_device = (
                named
                if named.index is not None
                else torch.device("cuda", torch.cuda.current_device())
            )
            self.small = OnnxRuntime(artifact)
            self.cuda_module = copy.deepcopy(self.cpu_module).to(self._cuda_device)
            self._run_cuda(*self._example(max(cpu_below, 1)))  # warm-up: context, cuBLAS
            sizes = graph_sizes(cpu_below, graph_batch)
            if sizes:
                self._capture(sizes, artifact.label)

    def _example(self, rows: int) -> tuple[npt.NDArray[np.float32], npt.NDArray[np.bool_] | None]:
        observations = np.zeros((rows, *self.observation_shape), dtype=np.float32)
        masks = np.ones((rows, self.num_actions), dtype=np.bool_) if self.discrete else None
        return observations, masks

    def _capture(self, sizes: Sequence[int], label: str) -> None:
        assert self.cuda_module is not None
        device = self._cuda_device
        assert device is not None
        try:
            # The device as current one too: the capture stream is made on the current device.
            with torch.cuda.device(device), torch.inference_mode():
                for rows in sizes:
                    inputs = [torch.zeros((rows, *self.observation_shape), device=device)]
                    if self.discrete:
                        inputs.append(
                            torch.ones((rows, self.num_actions), dtype=torch.bool, device=device)
                        )
                    self._graphs.append(_CudaGraph(self.cuda_module, inputs))
        except RuntimeError as error:  # an operation that cannot be captured: serve eagerly
            self._graphs = []
            log.warning("%s: no CUDA graphs (%s); serving without them", label, error)
            return
        log.info("%s: CUDA graphs for batches of %s rows", label, ", ".join(map(str, sizes)))

    def _graph_for(self, rows: int) -> _CudaGraph | None:
        """The smallest captured graph that holds `rows` rows, if any."""
        return next((graph for graph in self._graphs if graph.rows >= rows), None)

    # --- Runtime protocol ---------------------------------------------------------------------

    def infer(
        self, observations: npt.NDArray[np.float32], masks: npt.NDArray[np.bool_]
    ) -> Inference:
        if self.small is not None and len(observations) < self.cpu_below:
            return self.small.infer(observations, masks)
        greedy, probabilities, values = self._run(observations, masks)
        return Inference(
            _numpy(greedy, np.int64), _numpy(probabilities, np.float32), _numpy(values, np.float32)
        )

    def infer_continuous(self, observations: npt.NDArray[np.float32]) -> ContinuousInference:
        if self.discrete:
            raise ManifestError("this policy has discrete actions: use infer")
        if self.small is not None and len(observations) < self.cpu_below:
            return self.small.infer_continuous(observations)
        greedy, means, log_stds = self._run(observations, None)
        return ContinuousInference(
            _numpy(greedy, np.float32), _numpy(means, np.float32), _numpy(log_stds, np.float32)
        )

    # --- Execution ----------------------------------------------------------------------------

    def _run(
        self, observations: npt.NDArray[np.float32], masks: npt.NDArray[np.bool_] | None
    ) -> tuple[torch.Tensor, ...]:
        """The module's three outputs as CPU tensors."""
        if self.cuda_module is None:
            return self._run_cpu(observations, masks)
        return self._run_cuda(observations, masks)

    def _run_cpu(
        self, observations: npt.NDArray[np.float32], masks: npt.NDArray[np.bool_] | None
    ) -> tuple[torch.Tensor, ...]:
        inputs = [_tensor(observations, np.float32)]
        if masks is not None:
            inputs.append(_tensor(masks, np.bool_))
        with torch.inference_mode():
            return tuple(self.cpu_module(*inputs))

    def _run_cuda(
        self, observations: npt.NDArray[np.float32], masks: npt.NDArray[np.bool_] | None
    ) -> tuple[torch.Tensor, ...]:
        """Pinned host buffers, non-blocking copies each way, one synchronisation; the buffers
        are shared, hence the lock."""
        assert self.cuda_module is not None
        rows = len(observations)
        device = self._cuda_device
        assert device is not None
        with self._lock, torch.cuda.device(device), torch.inference_mode():
            host_inputs = [self._pinned.get("observation", observations.shape, torch.float32)]
            host_inputs[0].numpy()[...] = observations
            if masks is not None:
                host_inputs.append(self._pinned.get("action_mask", masks.shape, torch.bool))
                host_inputs[1].numpy()[...] = masks
            graph = self._graph_for(rows)
            if graph is not None:
                for static, host in zip(graph.inputs, host_inputs, strict=True):
                    static[:rows].copy_(host, non_blocking=True)
                if rows < graph.rows and masks is not None:
                    graph.inputs[1][rows:].fill_(True)  # padding rows: a valid mask
                graph.graph.replay()
                outputs: Sequence[torch.Tensor] = [out[:rows] for out in graph.outputs]
            else:
                device_inputs = [h.to(device, non_blocking=True) for h in host_inputs]
                outputs = self.cuda_module(*device_inputs)
            results = []
            for index, output in enumerate(outputs):
                host = self._pinned.get(f"output{index}", output.shape, output.dtype)
                host.copy_(output, non_blocking=True)
                results.append(host)
            torch.cuda.current_stream(device).synchronize()
            # The pinned buffers are reused by the next call: hand out copies.
            return tuple(host.clone() for host in results)


__all__ = [
    "CPU_BELOW",
    "GRAPH_BATCH",
    "TorchRuntime",
    "build_module",
    "graph_sizes",
    "load_weights",
]
