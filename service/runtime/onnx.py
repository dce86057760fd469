"""onnxruntime over the artifact's `policy.onnx` (CPU)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agentserve.errors import ManifestError
from agentserve.manifest import (
    CONTINUOUS_OUTPUTS,
    DISCRETE_OUTPUTS,
    ONNX_FILE,
    ONNX_INPUT_ACTION_MASK,
    ONNX_INPUT_OBSERVATION,
    Artifact,
)
from service.runtime import ContinuousInference, Inference


class OnnxRuntime:
    name = "onnx"

    def __init__(self, artifact: Artifact, threads: int = 1) -> None:
        options = ort.SessionOptions()
        # Policies are small: one thread per call beats the cost of waking a pool.
        options.intra_op_num_threads = threads
        options.inter_op_num_threads = 1
        options.log_severity_level = 3
        try:
            self.session = ort.InferenceSession(
                str(artifact.path(ONNX_FILE)), options, providers=["CPUExecutionProvider"]
            )
        except Exception as error:  # onnxruntime raises its own untyped errors
            raise ManifestError(f"{artifact.label}: policy.onnx does not load: {error}") from None
        manifest = artifact.manifest
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if inputs != set(manifest.onnx_inputs) or not set(manifest.onnx_outputs) <= outputs:
            raise ManifestError(
                f"{artifact.label}: policy.onnx has inputs {sorted(inputs)} and outputs "
                f"{sorted(outputs)}; a {'discrete' if manifest.is_discrete else 'continuous'} "
                f"policy needs inputs {list(manifest.onnx_inputs)} and outputs "
                f"{list(manifest.onnx_outputs)}"
            )
        # `InferenceSession.run` checks the feed's names and the graph-capture and ownership rules
        # in Python on every call, several microseconds for a one-row policy. Our feed is always
        # the graph's own inputs as numpy arrays (checked above) on the CPU provider (no fallback
        # to retry), so the compiled session's run is called directly where it is exposed.
        compiled = getattr(self.session, "_sess", None)
        self._run: Callable[..., Any] = self.session.run if compiled is None else compiled.run
        self._discrete_outputs = list(DISCRETE_OUTPUTS)
        self._continuous_outputs = list(CONTINUOUS_OUTPUTS)

    def infer(
        self, observations: npt.NDArray[np.float32], masks: npt.NDArray[np.bool_]
    ) -> Inference:
        greedy, probabilities, values = self._run(
            self._discrete_outputs,
            {ONNX_INPUT_OBSERVATION: observations, ONNX_INPUT_ACTION_MASK: masks},
            None,
        )
        return Inference(
            np.asarray(greedy, dtype=np.int64),
            np.asarray(probabilities, dtype=np.float32),
            np.asarray(values, dtype=np.float32),
        )

    def infer_continuous(self, observations: npt.NDArray[np.float32]) -> ContinuousInference:
        greedy, means, log_stds = self._run(
            self._continuous_outputs, {ONNX_INPUT_OBSERVATION: observations}, None
        )
        return ContinuousInference(
            np.asarray(greedy, dtype=np.float32),
            np.asarray(means, dtype=np.float32),
            np.asarray(log_stds, dtype=np.float32),
        )
