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


def module_tensors(
    obj: torch.nn.Module | torch.optim.Optimizer, prefix: str
) -> dict[str, npt.NDArray[Any]]:
    """A module's state dict, or an optimizer's per-parameter state, as numpy arrays."""
    if isinstance(obj, torch.nn.Module):
        return {prefix + k: v.detach().cpu().numpy().copy() for k, v in obj.state_dict().items()}
    out: dict[str, npt.NDArray[Any]] = {}
    for index, values in obj.state_dict()["state"].items():
        for key, value in values.items():
            out[f"{prefix}{index}.{key}"] = torch.as_tensor(value).detach().cpu().numpy().copy()
    return out


def load_module_tensors(
    obj: torch.nn.Module | torch.optim.Optimizer, tensors: dict[str, npt.NDArray[Any]], prefix: str
) -> None:
    mine = {k[len(prefix) :]: v for k, v in tensors.items() if k.startswith(prefix)}
    if isinstance(obj, torch.nn.Module):
        try:
            obj.load_state_dict({k: torch.from_numpy(np.array(v)) for k, v in mine.items()})
        except RuntimeError as error:
            raise ConfigError(f"checkpoint does not fit the network: {error}") from None
        return
    state: dict[int, dict[str, torch.Tensor]] = {}
    for key, value in mine.items():
        index, _, name = key.partition(".")
        state.setdefault(int(index), {})[name] = torch.from_numpy(np.array(value))
    obj.load_state_dict({"state": state, "param_groups": obj.state_dict()["param_groups"]})


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
