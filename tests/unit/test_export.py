"""trainer.export: versioned artifacts, ONNX parity, and agreement of the served runtimes."""

from __future__ import annotations

import json
import shutil
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pytest
import torch
from learner_cases import (
    SETUPS,
    env_id_of,
    is_continuous,
    make_learner,
    module_outputs,
    num_actions,
    run_steps,
)
from safetensors.torch import load_file

import trainer.export
from agentserve.errors import ManifestError
from agentserve.manifest import (
    MANIFEST_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    Manifest,
    load_manifest,
    sha256_file,
)
from agentserve.spaces import BoxSpec, DiscreteSpec
from service.runtime import load_runtime
from service.runtime.onnx import OnnxRuntime
from service.runtime.table import TableRuntime
from trainer.core.masking import epsilon_greedy_head
from trainer.export import (
    ExportError,
    check_parity,
    default_policy_name,
    export_artifact,
    export_onnx,
    random_masks,
    random_observations,
)
from trainer.learner import Learner

TOLERANCE = 1e-5


@dataclass(frozen=True)
class Exported:
    algorithm: str
    learner: Learner
    repo: Path
    name: str
    first: Path
    second: Path


@pytest.fixture(scope="module", params=list(SETUPS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A briefly trained learner of each setup (every algorithm, and the second action-space
    kind of those that support two), exported twice into one repository."""
    setup: str = request.param
    env_id = SETUPS[setup].env_id
    learner = make_learner(setup)
    run_steps(learner, 300)
    repo = tmp_path_factory.mktemp(f"export-{setup.replace('/', '-')}")
    algorithm = learner.algorithm
    name = default_policy_name(env_id, algorithm)
    first = export_artifact(learner, repo, name, env_id, {"note": "unit test", "seed": 0})
    second = export_artifact(learner, repo, name, env_id, {})
    return Exported(algorithm, learner, repo, name, first, second)


def served_inputs(learner: Learner, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    observations = random_observations(learner.observation_space, 1000, rng)
    return observations, random_masks(num_actions(learner), 1000, rng)


def discrete_only(exported: Exported) -> None:
    if is_continuous(exported.learner):
        pytest.skip("discrete policies only (continuous ones: test_continuous_runtime_*)")


def test_export_layout_and_versions(exported: Exported) -> None:
    policy_dir = exported.repo / exported.name
    assert exported.first == policy_dir / "1"
    assert exported.second == policy_dir / "2"
    assert sorted(p.name for p in policy_dir.iterdir()) == ["1", "2"]  # no hidden leftovers
    for version_dir in (exported.first, exported.second):
        assert sorted(p.name for p in version_dir.iterdir()) == sorted(
            [MANIFEST_FILE, ONNX_FILE, WEIGHTS_FILE]
        )


def test_manifest_describes_the_learner(exported: Exported) -> None:
    learner = exported.learner
    data = json.loads((exported.first / MANIFEST_FILE).read_text(encoding="utf-8"))
    manifest = Manifest.from_json(data)
    assert (manifest.name, manifest.version) == (exported.name, 1)
    assert manifest.algorithm == exported.algorithm
    assert manifest.env_id == env_id_of(exported.learner)
    assert manifest.observation_space == learner.observation_space
    assert manifest.action_space == learner.action_space
    assert manifest.distribution == learner.distribution
    assert manifest.epsilon == pytest.approx(learner.serving_epsilon)
    assert manifest.runtimes == learner.runtimes
    assert manifest.onnx_opset == trainer.export.OPSET
    assert manifest.training["note"] == "unit test"
    assert 0.0 <= manifest.training["parity_max_abs_diff"] <= TOLERANCE
    assert load_manifest(exported.second).manifest.version == 2


def test_manifest_sha256_values_match(exported: Exported) -> None:
    for version_dir in (exported.first, exported.second):
        manifest = load_manifest(version_dir).manifest
        assert set(manifest.files) == {ONNX_FILE, WEIGHTS_FILE}
        for name, digest in manifest.files.items():
            assert digest == sha256_file(version_dir / name)


def test_check_parity_passes_on_the_exported_graph(exported: Exported) -> None:
    learner = exported.learner
    worst = check_parity(
        learner.policy_module().eval(),
        exported.first / ONNX_FILE,
        learner.observation_space,
        learner.action_space,
        seed=42,
    )
    assert 0.0 <= worst <= TOLERANCE


def test_check_parity_rejects_the_graph_of_another_module(exported: Exported) -> None:
    learner = exported.learner
    perturbed = learner.policy_module().eval()
    generator = torch.Generator().manual_seed(0)
    with torch.no_grad():
        for parameter in perturbed.parameters():
            parameter.add_(torch.randn(parameter.shape, generator=generator))
    with pytest.raises(ExportError, match="parity"):
        check_parity(
            perturbed, exported.first / ONNX_FILE, learner.observation_space, learner.action_space
        )


class ShiftedValues(torch.nn.Module):
    """The same policy, with every value moved by `shift`: same actions and probabilities."""

    def __init__(self, inner: torch.nn.Module, shift: float) -> None:
        super().__init__()
        self.inner = inner
        self.shift = shift

    def forward(
        self, observation: torch.Tensor, action_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        greedy, probabilities, values = self.inner(observation, action_mask)
        return greedy, probabilities, values + self.shift


def test_check_parity_compares_values_too(exported: Exported) -> None:
    discrete_only(exported)
    learner = exported.learner
    module = learner.policy_module().eval()
    args = (exported.first / ONNX_FILE, learner.observation_space, learner.action_space)
    assert check_parity(ShiftedValues(module, 0.0), *args) <= TOLERANCE
    with pytest.raises(ExportError, match="values differ"):
        check_parity(ShiftedValues(module, 1e-3), *args)


class IgnoresMask(torch.nn.Module):
    """A broken policy: Q-values are the observation, and the head ignores the action mask."""

    def forward(
        self, observation: torch.Tensor, action_mask: torch.Tensor
    ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
        return epsilon_greedy_head(observation * 1.0, torch.ones_like(action_mask), 0.0)


def test_check_parity_refuses_a_graph_that_picks_masked_actions(tmp_path: Path) -> None:
    space = BoxSpec((3,), (-1.0, -1.0, -1.0), (1.0, 1.0, 1.0))
    module = IgnoresMask().eval()
    export_onnx(module, space, DiscreteSpec(3), tmp_path / ONNX_FILE)
    with pytest.raises(ExportError, match="masked action"):
        check_parity(module, tmp_path / ONNX_FILE, space, DiscreteSpec(3))


def test_weights_file_equals_module_state(exported: Exported) -> None:
    expected = exported.learner.policy_module().state_dict()
    weights = load_file(str(exported.first / WEIGHTS_FILE))
    assert sorted(weights) == sorted(expected)
    for key, tensor in expected.items():
        assert torch.equal(weights[key], tensor), key


def test_served_runtimes_agree_with_the_torch_module(exported: Exported) -> None:
    discrete_only(exported)
    learner = exported.learner
    artifact = load_manifest(exported.first)
    observations, masks = served_inputs(learner, seed=11)
    greedy, probabilities, values = module_outputs(learner.policy_module(), observations, masks)
    runtimes = [load_runtime(artifact, name) for name in artifact.manifest.runtimes]
    assert any(isinstance(r, OnnxRuntime) for r in runtimes)
    # Every runtime the learner offers is built, and each agrees with the torch module.
    assert [r.name for r in runtimes] == list(learner.runtimes)
    assert any(isinstance(r, TableRuntime) for r in runtimes) == ("table" in learner.runtimes)
    for runtime in runtimes:
        result = runtime.infer(observations, masks)
        np.testing.assert_allclose(
            result.probabilities, probabilities, rtol=TOLERANCE, atol=TOLERANCE
        )
        np.testing.assert_allclose(result.values, values, rtol=TOLERANCE, atol=TOLERANCE)
        np.testing.assert_array_equal(result.greedy_actions, greedy, err_msg=runtime.name)
        assert masks[np.arange(len(masks)), result.greedy_actions].all()
        assert (result.probabilities[~masks] == 0).all()


def test_onnx_runtime_constructed_directly(exported: Exported) -> None:
    discrete_only(exported)
    learner = exported.learner
    runtime = OnnxRuntime(load_manifest(exported.second))
    observations, masks = served_inputs(learner, seed=12)
    greedy, probabilities, _ = module_outputs(learner.policy_module(), observations, masks)
    result = runtime.infer(observations, masks)
    np.testing.assert_array_equal(result.greedy_actions, greedy)
    np.testing.assert_allclose(result.probabilities, probabilities, rtol=TOLERANCE, atol=TOLERANCE)


class ShiftedMean(torch.nn.Module):
    """A continuous policy whose mean is moved by `shift` (greedy action and log std kept)."""

    def __init__(self, inner: torch.nn.Module, shift: float) -> None:
        super().__init__()
        self.inner = inner
        self.shift = shift

    def forward(self, observation: torch.Tensor) -> tuple[torch.Tensor, ...]:
        greedy, mean, log_std = self.inner(observation)
        return greedy, mean + self.shift, log_std


def continuous_only(exported: Exported) -> None:
    if not is_continuous(exported.learner):
        pytest.skip("continuous policies only")


def test_continuous_runtime_agrees_with_the_torch_module(exported: Exported) -> None:
    continuous_only(exported)
    learner = exported.learner
    artifact = load_manifest(exported.first)
    assert artifact.manifest.distribution in ("gaussian", "squashed_gaussian")
    rng = np.random.default_rng(21)
    observations = random_observations(learner.observation_space, 1000, rng)
    expected = module_outputs(learner.policy_module(), observations, None)
    result = OnnxRuntime(artifact).infer_continuous(observations)
    got = [result.greedy_actions, result.means, result.log_stds]
    for want, have in zip(expected, got, strict=True):
        np.testing.assert_allclose(have, want, rtol=TOLERANCE, atol=TOLERANCE)
    space = learner.action_space
    assert isinstance(space, BoxSpec)
    assert (result.greedy_actions >= np.asarray(space.low, np.float32)).all()
    assert (result.greedy_actions <= np.asarray(space.high, np.float32)).all()


def test_check_parity_compares_continuous_means(exported: Exported) -> None:
    continuous_only(exported)
    learner = exported.learner
    module = learner.policy_module().eval()
    args = (exported.first / ONNX_FILE, learner.observation_space, learner.action_space)
    assert check_parity(ShiftedMean(module, 0.0), *args) <= TOLERANCE
    with pytest.raises(ExportError, match="action_mean differ"):
        check_parity(ShiftedMean(module, 1e-3), *args)


def test_table_runtime_serves_tabular_policies_only(exported: Exported) -> None:
    artifact = load_manifest(exported.first)
    discrete_only(exported)
    if "table" in artifact.manifest.runtimes:
        runtime = TableRuntime(artifact)
        observations, masks = served_inputs(exported.learner, seed=13)
        greedy, _, values = module_outputs(exported.learner.policy_module(), observations, masks)
        result = runtime.infer(observations, masks)
        np.testing.assert_array_equal(result.values, values)
        np.testing.assert_array_equal(result.greedy_actions, greedy)
    else:
        with pytest.raises(ManifestError):
            load_runtime(artifact, "table")


def test_failed_export_leaves_nothing_behind(
    exported: Exported, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    def failing_parity(*args: object, **kwargs: object) -> float:
        raise ExportError("simulated parity failure")

    monkeypatch.setattr(trainer.export, "check_parity", failing_parity)
    env_id = env_id_of(exported.learner)
    with pytest.raises(ExportError, match="simulated"):
        export_artifact(exported.learner, tmp_path, "doomed", env_id, {})
    assert list((tmp_path / "doomed").iterdir()) == []
    # Into a repository that already has versions: they stay, and no third one appears.
    repo = tmp_path / "repo"
    shutil.copytree(exported.repo, repo)
    with pytest.raises(ExportError, match="simulated"):
        export_artifact(exported.learner, repo, exported.name, env_id, {})
    assert sorted(p.name for p in (repo / exported.name).iterdir()) == ["1", "2"]
    assert load_manifest(repo / exported.name / "2").manifest.version == 2


def test_invalid_policy_name_is_refused_before_writing(exported: Exported, tmp_path: Path) -> None:
    env_id = env_id_of(exported.learner)
    with pytest.raises(ManifestError, match="invalid policy name"):
        export_artifact(exported.learner, tmp_path / "repo", "../escape", env_id, {})
    assert not (tmp_path / "repo").exists()
    assert not (tmp_path / "escape").exists()


def test_default_policy_name() -> None:
    assert default_policy_name("CartPole-v1", "dqn") == "cartpole-dqn"
    assert default_policy_name("agentserve/GridWorld-v0", "qlearning") == "gridworld-qlearning"
    assert default_policy_name("ALE/Pong-v5", "dqn") == "pong-dqn"
    assert default_policy_name("FrozenLake8x8-v1", "qlearning") == "frozenlake8x8-qlearning"


def test_random_masks_allow_at_least_one_action() -> None:
    masks = random_masks(3, 400, np.random.default_rng(0))
    assert masks.shape == (400, 3)
    assert masks.any(axis=1).all()
    assert masks[:100].all()
    assert not masks.all()
