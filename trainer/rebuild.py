"""A learner rebuilt from an artifact's manifest: the registered algorithm, the resolved
hyperparameters it was exported with (`training.hyperparameters`), its spaces and its seed. With
the same seed a fresh learner starts from the same initial weights as an untrained export
(`agentserve train --timesteps 0`), which is how a policy learned purely online begins."""

from __future__ import annotations

from typing import Any

from agentserve.errors import AgentserveError, ManifestError
from agentserve.manifest import Manifest
from trainer import registry
from trainer.core.config import build_config
from trainer.learner import Learner


def learner_from_manifest(manifest: Manifest) -> Learner:
    label = f"{manifest.name}/{manifest.version}"
    try:
        learner_class = registry.get(manifest.algorithm)
    except AgentserveError as error:
        raise ManifestError(f"{label}: {error}") from None
    training: dict[str, Any] = manifest.training
    hyperparameters = training.get("hyperparameters")
    if not isinstance(hyperparameters, dict):
        raise ManifestError(f"{label}: the manifest records no training.hyperparameters")
    try:
        config = build_config(learner_class.config_class, dict(hyperparameters))
    except AgentserveError as error:
        raise ManifestError(f"{label}: training.hyperparameters do not fit: {error}") from None
    seed = training.get("seed", 0)
    if not isinstance(seed, int):
        raise ManifestError(f"{label}: training.seed must be an integer, got {seed!r}")
    learner_class.check_spaces(manifest.observation_space, manifest.action_space)
    return learner_class(manifest.observation_space, manifest.action_space, config, seed)
