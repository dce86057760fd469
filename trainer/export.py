"""Export: a learner's policy module -> a versioned, verified artifact in a model repository.

Writes `<repo>/<name>/<version>/` (manifest.json, weights.safetensors, policy.onnx) into a temp
folder first, checks parity between torch and onnxruntime on random observations and masks, then
renames the folder into place atomically. A failed parity check leaves nothing behind.
"""

from __future__ import annotations

import json
import logging
import os
import re
import shutil
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager, redirect_stdout
from io import StringIO
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors.torch import load_file, save_file

import agentserve
from agentserve.errors import AgentserveError
from agentserve.manifest import (
    CONTINUOUS_INPUTS,
    CONTINUOUS_OUTPUTS,
    DISCRETE_INPUTS,
    DISCRETE_OUTPUTS,
    MANIFEST_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    Manifest,
    check_policy_name,
    sha256_file,
)
from agentserve.safety import parse_safety
from agentserve.spaces import BoxSpec, DiscreteSpec, SpaceSpec
from trainer.learner import Learner

OPSET = 18
PARITY_SAMPLES = 1000
PARITY_TOLERANCE = 1e-5


class ExportError(AgentserveError):
    """The artifact could not be written, or torch and ONNX disagree."""


def default_policy_name(env_id: str, algorithm: str) -> str:
    """ "CartPole-v1", "dqn" -> "cartpole-dqn"; "agentserve/GridWorld-v0" -> "gridworld-..."."""
    base = env_id.rsplit("/", 1)[-1]
    base = re.sub(r"-v\d+$", "", base).lower()
    return check_policy_name(re.sub(r"[^a-z0-9._-]", "-", f"{base}-{algorithm}"))


def next_version(policy_dir: Path) -> int:
    versions = [int(p.name) for p in policy_dir.glob("*") if p.name.isdigit()]
    return max(versions, default=0) + 1


def observation_batch_shape(space: SpaceSpec, batch: int) -> tuple[int, ...]:
    return (batch, 1) if isinstance(space, DiscreteSpec) else (batch, *space.shape)


def random_observations(space: SpaceSpec, count: int, rng: np.random.Generator) -> np.ndarray:
    """Observations spread over the space (unbounded dimensions drawn from [-10, 10])."""
    if isinstance(space, DiscreteSpec):
        return rng.integers(space.n, size=(count, 1)).astype(np.float32)
    low = np.maximum(np.asarray(space.low, dtype=np.float64), -10.0)
    high = np.minimum(np.asarray(space.high, dtype=np.float64), 10.0)
    flat = rng.uniform(low, high, size=(count, len(low))).astype(np.float32)
    return flat.reshape(count, *space.shape)


def random_masks(num_actions: int, count: int, rng: np.random.Generator) -> np.ndarray:
    """Random masks with at least one allowed action each; the first quarter allows all."""
    masks = rng.random((count, num_actions)) < 0.6
    masks[: count // 4] = True
    empty = ~masks.any(axis=1)
    masks[empty, rng.integers(num_actions, size=int(empty.sum()))] = True
    return masks


@contextmanager
def _quiet() -> Iterator[None]:
    """The torch.export-based exporter is chatty; keep the user's terminal clean."""
    onnx_logger = logging.getLogger("torch.onnx")
    level = onnx_logger.level
    onnx_logger.setLevel(logging.ERROR)
    try:
        with warnings.catch_warnings(), redirect_stdout(StringIO()):
            warnings.simplefilter("ignore")
            yield
    finally:
        onnx_logger.setLevel(level)


def export_onnx(
    module: torch.nn.Module, space: SpaceSpec, action_space: SpaceSpec, path: Path
) -> None:
    """Discrete policies take (observation, action_mask), continuous ones the observation only
    (see agentserve.manifest for the outputs)."""
    batch = torch.export.Dim("batch", min=1)
    inputs: tuple[str, ...]
    outputs: tuple[str, ...]
    observation = torch.zeros(observation_batch_shape(space, 2), dtype=torch.float32)
    if isinstance(action_space, DiscreteSpec):
        example: tuple[torch.Tensor, ...] = (
            observation,
            torch.ones((2, action_space.n), dtype=torch.bool),
        )
        inputs, outputs = DISCRETE_INPUTS, DISCRETE_OUTPUTS
    else:
        example, inputs, outputs = (observation,), CONTINUOUS_INPUTS, CONTINUOUS_OUTPUTS
    with _quiet():
        torch.onnx.export(
            module,
            example,
            str(path),
            input_names=list(inputs),
            output_names=list(outputs),
            dynamic_shapes={name: {0: batch} for name in inputs},
            opset_version=OPSET,
            dynamo=True,
            external_data=False,
        )


def _compare(names: tuple[str, ...], expected: list[np.ndarray], got: list[np.ndarray]) -> float:
    """Largest difference between torch and ONNX outputs; ExportError beyond the tolerance."""
    worst = 0.0
    for name, want, have in zip(names, expected, got, strict=True):
        if want.shape != have.shape:
            raise ExportError(f"ONNX {name} has shape {have.shape}, torch {want.shape}")
        if not np.allclose(want, have, rtol=PARITY_TOLERANCE, atol=PARITY_TOLERANCE):
            raise ExportError(
                f"parity check failed: ONNX and torch {name} differ by up to "
                f"{np.abs(want - have).max():.3g} (tolerance {PARITY_TOLERANCE})"
            )
        worst = max(worst, float(np.abs(want - have).max()))
    return worst


def check_parity(
    module: torch.nn.Module,
    onnx_path: Path,
    space: SpaceSpec,
    action_space: SpaceSpec,
    seed: int = 0,
) -> float:
    """Torch vs onnxruntime on random observations (and masks); returns the largest difference."""
    import onnxruntime as ort

    rng = np.random.default_rng(seed)
    observations = random_observations(space, PARITY_SAMPLES, rng)
    session = ort.InferenceSession(str(onnx_path), providers=["CPUExecutionProvider"])
    if not isinstance(action_space, DiscreteSpec):
        with torch.no_grad():
            expected = [t.numpy() for t in module(torch.from_numpy(observations))]
        got = session.run(list(CONTINUOUS_OUTPUTS), {CONTINUOUS_INPUTS[0]: observations})
        worst = _compare(CONTINUOUS_OUTPUTS, expected, got)
        assert isinstance(action_space, BoxSpec)
        low = np.asarray(action_space.low, dtype=np.float32)
        high = np.asarray(action_space.high, dtype=np.float32)
        if not ((got[0] >= low - 1e-6) & (got[0] <= high + 1e-6)).all():
            raise ExportError("parity check failed: the greedy action leaves the action box")
        return worst
    num_actions = action_space.n
    masks = random_masks(num_actions, PARITY_SAMPLES, rng)
    with torch.no_grad():
        expected = [
            t.numpy() for t in module(torch.from_numpy(observations), torch.from_numpy(masks))
        ]
    got = session.run(
        list(DISCRETE_OUTPUTS),
        {DISCRETE_INPUTS[0]: observations, DISCRETE_INPUTS[1]: masks},
    )
    worst = _compare(DISCRETE_OUTPUTS[1:], expected[1:], got[1:])
    values = np.where(masks, expected[2], -np.inf)
    top2 = np.sort(values, axis=1)[:, -2:] if num_actions > 1 else None
    decisive = np.ones(len(values), bool) if top2 is None else (top2[:, 1] - top2[:, 0]) > 1e-4
    if not np.array_equal(expected[0][decisive], got[0][decisive]):
        raise ExportError("parity check failed: ONNX and torch choose different greedy actions")
    if not masks[np.arange(len(masks)), got[0]].all():
        raise ExportError("parity check failed: the ONNX graph chose a masked action")
    return worst


def _fsync(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def export_artifact(
    learner: Learner,
    repo: Path,
    name: str,
    env_id: str,
    training: dict[str, Any],
    safety: object = None,
) -> Path:
    """Writes the learner's policy as the next version of `name` in `repo`; returns its folder.
    `safety`: a safety section (agentserve.safety) to carry in the manifest; validated against
    the learner's spaces before anything is written."""
    check_policy_name(name)
    rules = parse_safety(safety, learner.observation_space, learner.action_space)
    module = learner.policy_module().eval()
    policy_dir = repo / name
    policy_dir.mkdir(parents=True, exist_ok=True)
    tmp = policy_dir / f".tmp-{uuid.uuid4().hex}"
    tmp.mkdir()
    try:
        tensors = {k: v.detach().contiguous().clone() for k, v in module.state_dict().items()}
        save_file(tensors, str(tmp / WEIGHTS_FILE))
        os.chmod(tmp / WEIGHTS_FILE, 0o644)
        reloaded = load_file(str(tmp / WEIGHTS_FILE))
        if any(not torch.equal(tensors[k], reloaded[k]) for k in tensors):
            raise ExportError("weights did not survive a save/load round trip")
        spaces = (learner.observation_space, learner.action_space)
        export_onnx(module, *spaces, tmp / ONNX_FILE)
        worst = check_parity(module, tmp / ONNX_FILE, *spaces)
        for path in (tmp / WEIGHTS_FILE, tmp / ONNX_FILE):
            _fsync(path)
        for attempt in range(100):
            version = next_version(policy_dir)
            manifest = Manifest(
                name=name,
                version=version,
                algorithm=learner.algorithm,
                env_id=env_id,
                observation_space=learner.observation_space,
                action_space=learner.action_space,
                distribution=learner.distribution,
                epsilon=learner.serving_epsilon,
                runtimes=learner.runtimes,
                files={f: sha256_file(tmp / f) for f in (ONNX_FILE, WEIGHTS_FILE)},
                training={
                    **training,
                    "parity_max_abs_diff": worst,
                    "exported_by": f"agentserve {agentserve.__version__}",
                    "torch": torch.__version__,
                },
                onnx_opset=OPSET,
                safety=rules,
            )
            (tmp / MANIFEST_FILE).write_text(
                json.dumps(manifest.to_json(), indent=2) + "\n", encoding="utf-8"
            )
            _fsync(tmp / MANIFEST_FILE)
            _fsync(tmp)
            os.chmod(tmp, 0o755)
            final = policy_dir / str(version)
            try:
                os.rename(tmp, final)
            except OSError:
                if final.exists() and attempt < 99:
                    continue  # another exporter took this version number; take the next
                raise
            _fsync(policy_dir)
            return final
        raise ExportError("could not claim a version number")
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
