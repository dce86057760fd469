"""onnxruntime over the artifact's `policy.onnx` (CPU)."""

from __future__ import annotations

import numpy as np
import numpy.typing as npt
import onnxruntime as ort

from agentserve.errors import ManifestError
from agentserve.manifest import (
    ONNX_FILE,
    ONNX_INPUT_ACTION_MASK,
    ONNX_INPUT_OBSERVATION,
    ONNX_OUTPUT_ACTION,
    ONNX_OUTPUT_PROBABILITIES,
    ONNX_OUTPUT_VALUES,
    Artifact,
)
from service.runtime import Inference

OUTPUTS = [ONNX_OUTPUT_ACTION, ONNX_OUTPUT_PROBABILITIES, ONNX_OUTPUT_VALUES]


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
        inputs = {i.name for i in self.session.get_inputs()}
        outputs = {o.name for o in self.session.get_outputs()}
        if (
            inputs != {ONNX_INPUT_OBSERVATION, ONNX_INPUT_ACTION_MASK}
            or not set(OUTPUTS) <= outputs
        ):
            raise ManifestError(f"{artifact.label}: policy.onnx has unexpected inputs/outputs")

    def infer(
        self, observations: npt.NDArray[np.float32], masks: npt.NDArray[np.bool_]
    ) -> Inference:
        greedy, probabilities, values = self.session.run(
            OUTPUTS, {ONNX_INPUT_OBSERVATION: observations, ONNX_INPUT_ACTION_MASK: masks}
        )
        return Inference(
            np.asarray(greedy, dtype=np.int64),
            np.asarray(probabilities, dtype=np.float32),
            np.asarray(values, dtype=np.float32),
        )
