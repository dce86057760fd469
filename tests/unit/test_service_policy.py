"""service.policy and service.repository on the bundled model repository (no gRPC)."""

from __future__ import annotations

import json
import math
import shutil
from pathlib import Path

import numpy as np
import pytest

from agentserve.errors import ConfigError
from agentserve.manifest import MANIFEST_FILE, ONNX_FILE, load_manifest, sha256_file
from agentserve.spaces import DiscreteSpec
from service.errors import InvalidArgument, NotFound
from service.metrics import UNKNOWN_POLICY, Metrics
from service.policy import ServedPolicy
from service.repository import PolicyRepository
from service.server import default_model_repo
from trainer.core.masking import masked_argmax

CARTPOLE = "cartpole-dqn"
SAFE = "cartpole-dqn-safe"
GRID = "gridworld-qlearning"


@pytest.fixture(scope="module")
def bundled() -> Path:
    return default_model_repo()


@pytest.fixture(scope="module")
def policies(bundled: Path) -> dict[str, ServedPolicy]:
    return {name: ServedPolicy(load_manifest(bundled / name / "1")) for name in (CARTPOLE, GRID)}


def test_bundled_policies_load_with_their_preferred_runtime(
    policies: dict[str, ServedPolicy],
) -> None:
    assert policies[CARTPOLE].runtime.name == "onnx"
    assert policies[GRID].runtime.name == "table"
    assert (policies[CARTPOLE].num_actions, policies[CARTPOLE].flat_size) == (2, 4)
    assert (policies[GRID].num_actions, policies[GRID].flat_size) == (4, 1)
    assert policies[GRID].version == 1


@pytest.mark.parametrize(
    ("policy", "observation", "fragment"),
    [
        (CARTPOLE, [0.0, 0.0, 0.0], "3 values"),
        (CARTPOLE, [0.0] * 5, "5 values"),
        (CARTPOLE, [], "0 values"),
        (CARTPOLE, [0.0, math.nan, 0.0, 0.0], "observation[1]"),
        (CARTPOLE, [0.0, 0.0, math.inf, 0.0], "NaN or Inf"),
        (CARTPOLE, [-math.inf, 0.0, 0.0, 0.0], "NaN or Inf"),
        (GRID, [1.0, 2.0], "2 values"),
        (GRID, [math.nan], "NaN or Inf"),
        (GRID, [math.inf], "NaN or Inf"),
        (GRID, [1.5], "state index"),
        (GRID, [40.0], "state index"),
        (GRID, [-1.0], "state index"),
        (GRID, [1e12], "state index"),
    ],
)
def test_invalid_observation_is_rejected_without_paths(
    policies: dict[str, ServedPolicy],
    bundled: Path,
    policy: str,
    observation: list[float],
    fragment: str,
) -> None:
    with pytest.raises(InvalidArgument) as error:
        policies[policy].decide(observation, [], deterministic=True, rng=np.random.default_rng(0))
    message = str(error.value)
    assert fragment in message
    assert str(bundled) not in message
    assert "default_models" not in message
    assert "/" not in message


@pytest.mark.parametrize(
    ("policy", "mask", "fragment"),
    [
        (CARTPOLE, [True], "1 flags"),
        (CARTPOLE, [False, False], "allows no action"),
        (GRID, [True, False, True], "3 flags"),
    ],
)
def test_invalid_mask_is_rejected_without_paths(
    policies: dict[str, ServedPolicy], bundled: Path, policy: str, mask: list[bool], fragment: str
) -> None:
    observation = [0.0] * policies[policy].flat_size
    with pytest.raises(InvalidArgument, match=fragment) as error:
        policies[policy].decide(
            observation, mask, deterministic=False, rng=np.random.default_rng(0)
        )
    assert str(bundled) not in str(error.value)
    assert "/" not in str(error.value)


def valid_observation(policy: ServedPolicy, rng: np.random.Generator) -> list[float]:
    if isinstance(policy.observation_space, DiscreteSpec):
        return [float(rng.integers(policy.observation_space.n))]
    return rng.uniform(-0.2, 0.2, size=policy.flat_size).tolist()


def random_mask(rng: np.random.Generator, n: int) -> list[bool]:
    mask = rng.random(n) < 0.5
    mask[rng.integers(n)] = True
    return mask.tolist()


@pytest.mark.parametrize("policy", [CARTPOLE, GRID])
def test_deterministic_decide_is_masked_argmax(
    policies: dict[str, ServedPolicy], policy: str
) -> None:
    served = policies[policy]
    rng = np.random.default_rng(1)
    for _ in range(200):
        observation = valid_observation(served, rng)
        mask = random_mask(rng, served.num_actions)
        decision = served.decide(observation, mask, deterministic=True, rng=rng)
        assert decision.propensity == 1.0
        assert decision.values is not None
        expected = masked_argmax(decision.values[None], np.array([mask]))[0]
        assert decision.action == expected
        assert mask[decision.action]
        assert decision.probabilities[decision.action] == decision.probabilities.max()


@pytest.mark.parametrize("policy", [CARTPOLE, GRID])
def test_stochastic_decide_respects_the_mask(
    policies: dict[str, ServedPolicy], policy: str
) -> None:
    served = policies[policy]
    rng = np.random.default_rng(2)
    for _ in range(300):
        observation = valid_observation(served, rng)
        mask = random_mask(rng, served.num_actions)
        decision = served.decide(observation, mask, deterministic=False, rng=rng)
        assert mask[decision.action]
        assert decision.propensity == pytest.approx(float(decision.probabilities[decision.action]))
        assert 0.0 < decision.propensity <= 1.0
        assert (decision.probabilities[~np.array(mask)] == 0).all()


def test_grid_state_indices_are_accepted(policies: dict[str, ServedPolicy]) -> None:
    served = policies[GRID]
    for state in (0.0, 39.0, -0.0):
        decision = served.decide([state], [], deterministic=True, rng=np.random.default_rng(0))
        assert 0 <= decision.action < 4


# --- PolicyRepository ------------------------------------------------------------------------


@pytest.fixture
def repo(bundled: Path, tmp_path: Path) -> Path:
    root = tmp_path / "repo"
    shutil.copytree(bundled, root)
    return root


def failure_count(metrics: Metrics, label: str) -> float:
    value = metrics.registry.get_sample_value(
        "agentserve_policy_load_failures_total", {"policy": label}
    )
    return 0.0 if value is None else value


def flip_a_byte(path: Path) -> None:
    data = bytearray(path.read_bytes())
    data[len(data) // 3] ^= 0x5A
    path.write_bytes(bytes(data))


def test_bundled_repository_loads_everything(repo: Path) -> None:
    repository = PolicyRepository(repo, Metrics())
    assert repository.load() == []
    assert repository.names() == [CARTPOLE, SAFE, GRID]
    assert repository.versions(CARTPOLE) == [1]
    assert repository.get(GRID).version == 1
    assert repository.get(GRID, 1).name == GRID


def test_corrupted_policy_is_reported_and_the_other_still_serves(repo: Path) -> None:
    flip_a_byte(repo / CARTPOLE / "1" / ONNX_FILE)
    metrics = Metrics()
    repository = PolicyRepository(repo, metrics)
    failures = repository.load()
    assert [(f.policy, f.version) for f in failures] == [(CARTPOLE, "1")]
    assert "sha256" in failures[0].reason
    assert repository.names() == [SAFE, GRID]
    assert repository.get(GRID).name == GRID
    with pytest.raises(NotFound, match=CARTPOLE):
        repository.get(CARTPOLE)
    assert failure_count(metrics, UNKNOWN_POLICY) == 1


def test_onnx_that_does_not_load_is_reported(repo: Path) -> None:
    # The manifest's digest is updated, so only onnxruntime itself can notice the damage.
    version_dir = repo / CARTPOLE / "1"
    (version_dir / ONNX_FILE).write_bytes(b"definitely not an onnx model")
    manifest = json.loads((version_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["files"][ONNX_FILE] = sha256_file(version_dir / ONNX_FILE)
    (version_dir / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    repository = PolicyRepository(repo, Metrics())
    failures = repository.load()
    assert [(f.policy, f.version) for f in failures] == [(CARTPOLE, "1")]
    assert "does not load" in failures[0].reason
    assert repository.names() == [SAFE, GRID]
    with pytest.raises(NotFound):
        repository.get(CARTPOLE)


def test_unknown_version_is_not_found(repo: Path) -> None:
    repository = PolicyRepository(repo, Metrics())
    repository.load()
    with pytest.raises(NotFound, match="no version 7"):
        repository.get(GRID, 7)
    with pytest.raises(NotFound, match="no policy"):
        repository.get("nope")


def test_hidden_temp_folders_are_skipped(repo: Path) -> None:
    shutil.copytree(repo / CARTPOLE / "1", repo / CARTPOLE / ".tmp-xyz")
    shutil.copytree(repo / GRID, repo / ".tmp-abc")
    repository = PolicyRepository(repo, Metrics())
    assert repository.load() == []
    assert repository.names() == [CARTPOLE, SAFE, GRID]
    assert repository.versions(CARTPOLE) == [1]


@pytest.mark.parametrize("folder", ["latest", "0", "v2", "1.5"])
def test_non_integer_version_folders_are_reported(repo: Path, folder: str) -> None:
    shutil.copytree(repo / GRID / "1", repo / GRID / folder)
    metrics = Metrics()
    repository = PolicyRepository(repo, metrics)
    failures = repository.load()
    assert [(f.policy, f.version) for f in failures] == [(GRID, folder)]
    assert "positive integer" in failures[0].reason
    assert repository.versions(GRID) == [1]  # the good version still serves
    assert failure_count(metrics, GRID) == 1


def test_invalid_policy_folder_name_is_reported(repo: Path) -> None:
    shutil.copytree(repo / GRID, repo / "Bad Name")
    repository = PolicyRepository(repo, Metrics())
    failures = repository.load()
    assert [(f.policy, f.version) for f in failures] == [("Bad Name", "1")]
    assert repository.names() == [CARTPOLE, SAFE, GRID]


def make_valid_version_two(source: Path, target: Path) -> Path:
    """A copy of `source` (a version-1 folder) re-labelled as a valid version 2 at `target`."""
    shutil.copytree(source, target)
    manifest = json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest["version"] = 2
    (target / MANIFEST_FILE).write_text(json.dumps(manifest), encoding="utf-8")
    assert load_manifest(target).manifest.version == 2  # valid in itself
    return target


def test_symlinked_version_folder_outside_the_root_is_refused(repo: Path, tmp_path: Path) -> None:
    outside = make_valid_version_two(repo / GRID / "1", tmp_path / "outside" / GRID / "2")
    (repo / GRID / "2").symlink_to(outside, target_is_directory=True)
    repository = PolicyRepository(repo, Metrics())
    failures = repository.load()
    assert [(f.policy, f.version) for f in failures] == [(GRID, "2")]
    assert "outside" in failures[0].reason
    assert repository.versions(GRID) == [1]
    with pytest.raises(NotFound):
        repository.get(GRID, 2)


def test_symlinked_policy_folder_outside_the_root_is_refused(repo: Path, tmp_path: Path) -> None:
    outside = tmp_path / "outside" / "elsewhere"
    shutil.copytree(repo / GRID, outside)
    shutil.rmtree(repo / GRID)
    (repo / GRID).symlink_to(outside, target_is_directory=True)
    repository = PolicyRepository(repo, Metrics())
    failures = repository.load()
    assert [(f.policy, f.version) for f in failures] == [(GRID, "1")]
    assert repository.names() == [CARTPOLE, SAFE]


def test_symlink_inside_the_root_is_allowed(repo: Path) -> None:
    stored = make_valid_version_two(repo / GRID / "1", repo / ".store" / GRID / "2")
    (repo / GRID / "2").symlink_to(stored, target_is_directory=True)
    repository = PolicyRepository(repo, Metrics())
    assert repository.load() == []
    assert repository.versions(GRID) == [1, 2]
    assert repository.get(GRID).version == 2  # version 0 = the newest


def test_repository_root_must_be_a_folder(tmp_path: Path) -> None:
    with pytest.raises(ConfigError, match="not a folder"):
        PolicyRepository(tmp_path / "missing", Metrics())
