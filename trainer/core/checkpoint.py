"""Learner checkpoints as one safetensors file: arrays plus JSON metadata, never pickle."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

import numpy as np
import numpy.typing as npt
import torch
from safetensors.numpy import load_file, save_file

from agentserve.errors import ConfigError
from trainer.learner import LearnerState

META_KEY = "agentserve.learner_state"


def module_tensors(module: torch.nn.Module, prefix: str) -> dict[str, npt.NDArray[Any]]:
    """A module's state dict as numpy arrays (copies)."""
    return {prefix + k: v.detach().cpu().numpy().copy() for k, v in module.state_dict().items()}


def load_module_tensors(
    module: torch.nn.Module, tensors: dict[str, npt.NDArray[Any]], prefix: str
) -> None:
    mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    try:
        module.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mine.items()})
    except RuntimeError as error:
        raise ConfigError(f"checkpoint does not fit the network: {error}") from None


def save_checkpoint(state: LearnerState, path: Path) -> None:
    """Writes atomically: temp file, fsync, rename."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp")
    arrays = {k: np.ascontiguousarray(v) for k, v in state.tensors.items()}
    save_file(arrays, str(tmp), metadata={META_KEY: json.dumps(state.meta)})
    with tmp.open("rb") as handle:
        os.fsync(handle.fileno())
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> LearnerState:
    from safetensors import SafetensorError, safe_open

    if not path.is_file():
        raise ConfigError(f"no checkpoint at {path}")
    try:
        with safe_open(str(path), framework="numpy") as handle:
            meta = json.loads((handle.metadata() or {})[META_KEY])
        return LearnerState(load_file(str(path)), meta)
    except (KeyError, ValueError, OSError, SafetensorError) as error:
        raise ConfigError(f"{path} is not an agentserve checkpoint: {error}") from None
