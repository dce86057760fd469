"""A learner rebuilt from an artifact's manifest: the registered algorithm, the resolved
hyperparameters it was exported with (`training.hyperparameters`), its spaces and its seed.

Used to serve an artifact with the torch runtime (its policy module, weights loaded on top) and
to learn online: with the same seed a fresh learner starts from the same initial weights as an
untrained export (`agentserve train --timesteps 0`). Every mismatch is a ManifestError saying
what does not fit."""

from __future__ import annotations

import dataclasses
import logging
from typing import Any

import torch

from agentserve.errors import AgentserveError, ConfigError, ManifestError
from agentserve.manifest import Manifest
from trainer import registry
from trainer.core.config import build_config
from trainer.learner import Learner

log = logging.getLogger("agentserve.rebuild")


def learner_from_manifest(manifest: Manifest, seed: int | None = None) -> Learner:
    """`seed`: None = the seed the artifact was trained with (`training.seed`, default 0)."""
    label = f"{manifest.name}/{manifest.version}"
    try:
        learner_class = registry.get(manifest.algorithm)
    except ConfigError as error:
        raise ManifestError(f"{label}: cannot rebuild it: {error}") from None
    training: dict[str, Any] = manifest.training
    hyperparameters = training.get("hyperparameters")
    if not isinstance(hyperparameters, dict):
        raise ManifestError(
            f"{label}: the manifest records no training.hyperparameters (a JSON object) to "
            "rebuild the learner from"
        )
    config_class = learner_class.config_class
    fields = dataclasses.fields(config_class)
    required = {
        f.name
        for f in fields
        if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
    }
    lacking = sorted(required - set(hyperparameters))
    if lacking:
        raise ManifestError(
            f"{label}: training.hyperparameters lacks {', '.join(lacking)}, which "
            f"{config_class.__name__} has no default for"
        )
    defaulted = sorted({f.name for f in fields} - set(hyperparameters))
    if defaulted:
        # Older artifacts predate some hyperparameters; the trainer's own resolution starts from
        # the defaults too (the torch runtime's ONNX check catches a default that matters).
        log.info("%s: hyperparameters %s not recorded; using defaults", label, defaulted)
    try:
        config = build_config(config_class, dict(hyperparameters))
    except (ConfigError, TypeError, ValueError) as error:
        raise ManifestError(
            f"{label}: training.hyperparameters do not fit {manifest.algorithm}: {error}"
        ) from None
    if seed is None:
        seed = training.get("seed", 0)
        if not isinstance(seed, int) or isinstance(seed, bool):
            raise ManifestError(f"{label}: training.seed must be an integer, got {seed!r}")
    try:
        # A learner seeds torch's global generator; the caller's own stream stays untouched.
        with torch.random.fork_rng(devices=[]):
            learner = learner_class(manifest.observation_space, manifest.action_space, config, seed)
    except (AgentserveError, TypeError, ValueError) as error:
        raise ManifestError(
            f"{label}: cannot rebuild the {manifest.algorithm} learner for its spaces: {error}"
        ) from None
    if learner.distribution != manifest.distribution:
        raise ManifestError(
            f"{label}: the rebuilt {manifest.algorithm} policy serves {learner.distribution!r}, "
            f"the manifest says {manifest.distribution!r}"
        )
    if learner.serving_epsilon != manifest.epsilon:
        raise ManifestError(
            f"{label}: training.hyperparameters give epsilon {learner.serving_epsilon}, the "
            f"manifest says {manifest.epsilon}"
        )
    return learner
