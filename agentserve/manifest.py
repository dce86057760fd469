"""The policy artifact: `<repo>/<name>/<version>/manifest.json` and the files it lists.

Layout of one artifact (see docs/artifact-format.md)::

    <repo>/<policy-name>/<version>/
        manifest.json          this schema, as JSON (never pickle)
        policy.onnx            discrete:   observation, action_mask -> greedy_action, probabilities,
                                           values
                               continuous: observation -> greedy_action, action_mean,
                                           action_log_std
        weights.safetensors    the torch module's tensors (tabular policies: the table)

`load_manifest` is the one safe way in: it resolves every path, refuses anything outside the
version folder (or a symlink out of it), and checks each file's sha256 against the manifest.
"""

from __future__ import annotations

import hashlib
import json
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from agentserve.errors import ManifestError
from agentserve.safety import SafetyPolicy, parse_safety
from agentserve.spaces import DiscreteSpec, SpaceSpec, space_from_json

FORMAT = "agentserve.policy/1"
MANIFEST_FILE = "manifest.json"
ONNX_FILE = "policy.onnx"
WEIGHTS_FILE = "weights.safetensors"

# Names of the ONNX graph's inputs and outputs: the same for every algorithm.
ONNX_INPUT_OBSERVATION = "observation"
ONNX_INPUT_ACTION_MASK = "action_mask"
ONNX_OUTPUT_ACTION = "greedy_action"
ONNX_OUTPUT_PROBABILITIES = "probabilities"
ONNX_OUTPUT_VALUES = "values"
ONNX_OUTPUT_ACTION_MEAN = "action_mean"
ONNX_OUTPUT_ACTION_LOG_STD = "action_log_std"
DISCRETE_INPUTS = (ONNX_INPUT_OBSERVATION, ONNX_INPUT_ACTION_MASK)
DISCRETE_OUTPUTS = (ONNX_OUTPUT_ACTION, ONNX_OUTPUT_PROBABILITIES, ONNX_OUTPUT_VALUES)
CONTINUOUS_INPUTS = (ONNX_INPUT_OBSERVATION,)
CONTINUOUS_OUTPUTS = (ONNX_OUTPUT_ACTION, ONNX_OUTPUT_ACTION_MEAN, ONNX_OUTPUT_ACTION_LOG_STD)

# How `probabilities` arise from the network's scores; written so readers know what they serve.
# `greedy`: one-hot on the greedy action (UCB1, LinUCB); `thompson`: the posterior probability
# that each allowed action is the best one (Thompson sampling).
DISCRETE_DISTRIBUTIONS = ("epsilon_greedy", "softmax", "greedy", "thompson")
# Continuous actions (see agentserve.continuous): `gaussian` draws mean + std * noise and clips it
# to the box (PPO, A2C, REINFORCE); `squashed_gaussian` maps mean + std * noise through tanh onto
# the box (SAC). `greedy_action` is the noise-free action, inside the box.
CONTINUOUS_DISTRIBUTIONS = ("gaussian", "squashed_gaussian")
DISTRIBUTIONS = DISCRETE_DISTRIBUTIONS + CONTINUOUS_DISTRIBUTIONS
# Distributions whose `values` output holds the algorithm's value estimates (served to clients).
VALUE_DISTRIBUTIONS = ("epsilon_greedy", "greedy", "thompson")

_NAME = re.compile(r"[a-z0-9][a-z0-9._-]{0,63}")


def check_policy_name(name: str) -> str:
    """Policy names are path components: lower-case letters, digits, '.', '_', '-' only."""
    if not _NAME.fullmatch(name):
        raise ManifestError(
            f"invalid policy name {name!r}: use 1-64 lower-case letters, digits, '.', '_' or '-', "
            "starting with a letter or digit"
        )
    return name


@dataclass(frozen=True)
class Manifest:
    """Everything a runtime needs to serve a policy, and what a reader needs to trust it."""

    name: str
    version: int
    algorithm: str
    env_id: str
    observation_space: SpaceSpec
    action_space: SpaceSpec
    distribution: str
    """`epsilon_greedy` (value-based: argmax with prob 1-eps), `softmax` (policy logits),
    `greedy` (one-hot on the greedy action) or `thompson` (P(action is the best allowed one))."""
    epsilon: float = 0.0
    """Exploration rate of the served stochastic policy (value-based algorithms only)."""
    runtimes: tuple[str, ...] = ("onnx",)
    """Runtimes able to serve this artifact, preferred first."""
    files: dict[str, str] = field(default_factory=dict)
    """File name -> sha256 hex digest, for every file of the artifact but the manifest."""
    training: dict[str, Any] = field(default_factory=dict)
    """Resolved training config, seed, steps, evaluation results (informational)."""
    onnx_opset: int = 18
    safety: SafetyPolicy = field(default_factory=SafetyPolicy)
    """Declarative safety rules and fallback (agentserve.safety); empty = none."""

    @property
    def is_discrete(self) -> bool:
        return isinstance(self.action_space, DiscreteSpec)

    @property
    def onnx_inputs(self) -> tuple[str, ...]:
        return DISCRETE_INPUTS if self.is_discrete else CONTINUOUS_INPUTS

    @property
    def onnx_outputs(self) -> tuple[str, ...]:
        return DISCRETE_OUTPUTS if self.is_discrete else CONTINUOUS_OUTPUTS

    def to_json(self) -> dict[str, Any]:
        return {
            "format": FORMAT,
            "name": self.name,
            "version": self.version,
            "algorithm": self.algorithm,
            "env_id": self.env_id,
            "observation_space": self.observation_space.to_json(),
            "action_space": self.action_space.to_json(),
            "distribution": self.distribution,
            "epsilon": self.epsilon,
            "runtimes": list(self.runtimes),
            "onnx": {
                "file": ONNX_FILE,
                "opset": self.onnx_opset,
                "inputs": list(self.onnx_inputs),
                "outputs": list(self.onnx_outputs),
            },
            "weights": {"file": WEIGHTS_FILE, "format": "safetensors"},
            "files": dict(sorted(self.files.items())),
            "training": self.training,
            **({} if self.safety.empty else {"safety": self.safety.to_json()}),
        }

    @classmethod
    def from_json(cls, data: object) -> Manifest:
        if not isinstance(data, dict):
            raise ManifestError("manifest must be a JSON object")
        if data.get("format") != FORMAT:
            raise ManifestError(f"unsupported manifest format {data.get('format')!r}")
        try:
            version = data["version"]
            if not isinstance(version, int) or isinstance(version, bool) or version < 1:
                raise ManifestError(f"version must be a positive integer, got {version!r}")
            distribution = str(data["distribution"])
            if distribution not in DISTRIBUTIONS:
                raise ManifestError(f"unknown distribution {distribution!r}")
            epsilon = float(data.get("epsilon", 0.0))
            if not 0.0 <= epsilon <= 1.0:
                raise ManifestError(f"epsilon must lie in [0, 1], got {epsilon}")
            files = data.get("files", {})
            if not isinstance(files, dict) or not all(
                isinstance(k, str) and isinstance(v, str) for k, v in files.items()
            ):
                raise ManifestError("`files` must map file names to sha256 digests")
            runtimes = data.get("runtimes", ["onnx"])
            if not isinstance(runtimes, list) or not runtimes:
                raise ManifestError("`runtimes` must be a non-empty list")
            training = data.get("training", {})
            onnx = data.get("onnx", {})
            if not isinstance(onnx, dict):
                raise ManifestError("`onnx` must be a JSON object")
            action_space = space_from_json(data["action_space"])
            expected = (
                DISCRETE_DISTRIBUTIONS
                if isinstance(action_space, DiscreteSpec)
                else CONTINUOUS_DISTRIBUTIONS
            )
            if distribution not in expected:
                kind = "discrete" if isinstance(action_space, DiscreteSpec) else "continuous"
                raise ManifestError(
                    f"distribution {distribution!r} does not fit a {kind} action space "
                    f"(expected one of {', '.join(expected)})"
                )
            observation_space = space_from_json(data["observation_space"])
            safety = parse_safety(data.get("safety"), observation_space, action_space)
            return cls(
                name=check_policy_name(str(data["name"])),
                version=version,
                algorithm=str(data["algorithm"]),
                env_id=str(data.get("env_id", "")),
                observation_space=observation_space,
                action_space=action_space,
                distribution=distribution,
                epsilon=epsilon,
                runtimes=tuple(str(r) for r in runtimes),
                files=dict(files),
                training=training if isinstance(training, dict) else {},
                onnx_opset=int(onnx.get("opset", 18)),
                safety=safety,
            )
        except KeyError as missing:
            raise ManifestError(f"manifest lacks required field {missing}") from None
        except (TypeError, ValueError) as bad:
            raise ManifestError(f"manifest has a malformed field: {bad}") from None


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for chunk in iter(lambda: handle.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


def resolve_inside(base: Path, relative: str) -> Path:
    """Resolves `relative` under `base`, refusing absolute paths, `..` and symlinks out of it."""
    if not relative or Path(relative).is_absolute():
        raise ManifestError(f"artifact file name {relative!r} must be a relative path")
    base_resolved = base.resolve()
    target = (base_resolved / relative).resolve()
    if not target.is_relative_to(base_resolved):
        raise ManifestError(f"artifact file {relative!r} lies outside its policy folder")
    return target


@dataclass(frozen=True)
class Artifact:
    """A loaded, verified manifest and the absolute paths of its files."""

    manifest: Manifest
    directory: Path
    paths: dict[str, Path]

    def path(self, name: str) -> Path:
        try:
            return self.paths[name]
        except KeyError:
            raise ManifestError(f"artifact {self.label} has no file {name!r}") from None

    @property
    def label(self) -> str:
        return f"{self.manifest.name}/{self.manifest.version}"


def load_manifest(version_dir: Path, *, verify: bool = True) -> Artifact:
    """Reads and validates `version_dir/manifest.json`; with `verify`, checks every sha256."""
    manifest_path = resolve_inside(version_dir, MANIFEST_FILE)
    try:
        data = json.loads(manifest_path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise ManifestError(f"no {MANIFEST_FILE} in {version_dir.name!r}") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as bad:
        raise ManifestError(f"{MANIFEST_FILE} is not valid JSON: {bad}") from None
    manifest = Manifest.from_json(data)
    if str(manifest.version) != version_dir.name:
        raise ManifestError(
            f"manifest says version {manifest.version} but lies in folder {version_dir.name!r}"
        )
    if manifest.name != version_dir.parent.name:
        raise ManifestError(
            f"manifest names policy {manifest.name!r} but lies under {version_dir.parent.name!r}"
        )
    for required in (ONNX_FILE, WEIGHTS_FILE):
        if required not in manifest.files:
            raise ManifestError(f"manifest of {manifest.name} does not list {required}")
    paths: dict[str, Path] = {}
    for name, expected in manifest.files.items():
        path = resolve_inside(version_dir, name)
        if not path.is_file():
            raise ManifestError(f"{manifest.name}/{manifest.version}: file {name!r} is missing")
        if verify and sha256_file(path) != expected:
            raise ManifestError(
                f"{manifest.name}/{manifest.version}: sha256 of {name!r} does not match "
                "the manifest"
            )
        paths[name] = path
    return Artifact(manifest, version_dir, paths)
