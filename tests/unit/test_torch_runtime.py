"""service.runtime.torch: the policy module rebuilt from the manifest, served on CPU or CUDA."""

from __future__ import annotations

import json
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from learner_cases import SETUPS, env_id_of, is_continuous, make_learner, run_steps
from safetensors.torch import load_file, save_file

from agentserve import cli
from agentserve.errors import ConfigError, ManifestError
from agentserve.manifest import MANIFEST_FILE, WEIGHTS_FILE, load_manifest, sha256_file
from agentserve.spaces import BoxSpec, DiscreteSpec
from service.metrics import Metrics
from service.policy import ServedPolicy
from service.repository import PolicyRepository
from service.runtime import RUNTIMES, load_runtime, resolve_device
from service.runtime.onnx import OnnxRuntime
from service.runtime.torch import TorchRuntime, graph_sizes
from service.server import default_model_repo
from trainer.core.config import config_to_json
from trainer.export import default_policy_name, export_artifact, random_masks, random_observations
from trainer.learner import Learner

TOLERANCE = 1e-5
CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(
    not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)"
)
no_cuda = pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")


@dataclass(frozen=True)
class Exported:
    setup: str
    learner: Learner
    path: Path


def export(learner: Learner, repo: Path) -> Path:
    """Exported as `agentserve train` does: the resolved config under training.hyperparameters."""
    env_id = env_id_of(learner)
    name = default_policy_name(env_id, learner.algorithm)
    training = {"hyperparameters": config_to_json(learner.config), "seed": 0}
    return export_artifact(learner, repo, name, env_id, training)


@pytest.fixture(scope="module", params=list(SETUPS))
def exported(request: pytest.FixtureRequest, tmp_path_factory: pytest.TempPathFactory) -> Exported:
    """A briefly trained learner of each setup, exported with its hyperparameters."""
    setup: str = request.param
    learner = make_learner(setup)
    run_steps(learner, 300)
    repo = tmp_path_factory.mktemp(f"torch-{setup.replace('/', '-')}")
    return Exported(setup, learner, export(learner, repo))


def inputs(learner: Learner, count: int, seed: int) -> tuple[np.ndarray, np.ndarray | None]:
    rng = np.random.default_rng(seed)
    observations = random_observations(learner.observation_space, count, rng)
    if isinstance(learner.action_space, DiscreteSpec):
        return observations, random_masks(learner.action_space.n, count, rng)
    return observations, None


def assert_agree(got: Any, want: Any, masks: np.ndarray | None) -> None:
    """Torch vs ONNX outputs of a batch: values within 1e-5, the same greedy actions wherever
    the top two allowed values are more than 1e-4 apart (as the export's parity check)."""
    if masks is None:
        for name in ("greedy_actions", "means", "log_stds"):
            have, expected = getattr(got, name), getattr(want, name)
            assert have.dtype == expected.dtype == np.float32, name
            np.testing.assert_allclose(have, expected, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)
        return
    assert got.greedy_actions.dtype == np.int64
    for name in ("probabilities", "values"):
        have, expected = getattr(got, name), getattr(want, name)
        assert have.dtype == np.float32, name
        np.testing.assert_allclose(have, expected, rtol=TOLERANCE, atol=TOLERANCE, err_msg=name)
    allowed = np.sort(np.where(masks, want.values, -np.inf), axis=1)
    decisive = (
        np.ones(len(masks), bool) if masks.shape[1] == 1 else allowed[:, -1] - allowed[:, -2] > 1e-4
    )
    np.testing.assert_array_equal(got.greedy_actions[decisive], want.greedy_actions[decisive])


def run(runtime: Any, observations: np.ndarray, masks: np.ndarray | None) -> Any:
    if masks is None:
        return runtime.infer_continuous(observations)
    return runtime.infer(observations, masks)


# --- Agreement with ONNX, every setup -------------------------------------------------------------


def test_torch_runtime_agrees_with_onnx(exported: Exported) -> None:
    artifact = load_manifest(exported.path)
    torch_runtime = load_runtime(artifact, "torch")
    assert isinstance(torch_runtime, TorchRuntime)
    assert (torch_runtime.name, torch_runtime.device) == ("torch", "cpu")
    onnx_runtime = OnnxRuntime(artifact)
    for count, seed in ((1000, 31), (1, 32), (7, 33)):
        observations, masks = inputs(exported.learner, count, seed)
        got = run(torch_runtime, observations, masks)
        assert_agree(got, run(onnx_runtime, observations, masks), masks)


def test_torch_runtime_never_chooses_a_masked_action(exported: Exported) -> None:
    if is_continuous(exported.learner):
        runtime = TorchRuntime(load_manifest(exported.path))
        observations, _ = inputs(exported.learner, 500, 41)
        greedy = runtime.infer_continuous(observations).greedy_actions
        space = exported.learner.action_space
        assert isinstance(space, BoxSpec)
        assert (greedy >= np.asarray(space.low, np.float32)).all()
        assert (greedy <= np.asarray(space.high, np.float32)).all()
        return
    runtime = TorchRuntime(load_manifest(exported.path))
    observations, masks = inputs(exported.learner, 1000, 42)
    assert masks is not None
    masks[: len(masks) // 2] = False  # one allowed action per row in the first half
    masks[np.arange(len(masks) // 2), np.arange(len(masks) // 2) % masks.shape[1]] = True
    result = runtime.infer(observations, masks)
    assert masks[np.arange(len(masks)), result.greedy_actions].all()
    assert (result.probabilities[~masks] == 0).all()
    np.testing.assert_allclose(result.probabilities.sum(axis=1), 1.0, atol=1e-5)


def test_served_policy_uses_the_forced_torch_runtime(exported: Exported) -> None:
    policy = ServedPolicy(load_manifest(exported.path), "torch")
    assert policy.runtime.name == "torch"
    observations, masks = inputs(exported.learner, 16, 51)
    flags = [] if masks is None else masks.ravel().tolist()
    decision = policy.decide_batch(
        observations.ravel().tolist(), flags, True, np.random.default_rng(0)
    )
    assert len(decision.actions) == 16


# --- Manifests and weights that do not fit ------------------------------------------------------


@pytest.fixture(scope="module")
def dqn_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return export(make_learner("dqn"), tmp_path_factory.mktemp("torch-dqn"))


@pytest.fixture(scope="module")
def linucb_artifact(tmp_path_factory: pytest.TempPathFactory) -> Path:
    learner = make_learner("linucb")
    run_steps(learner, 200)
    return export(learner, tmp_path_factory.mktemp("torch-linucb"))


def edited_copy(source: Path, tmp_path: Path, edit: Callable[[dict[str, Any]], None]) -> Path:
    """A copy of the version folder `source` whose manifest `edit` changed."""
    target = tmp_path / source.parent.name / source.name
    shutil.copytree(source, target)
    data = json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8"))
    edit(data)
    (target / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    return target


def hyperparameters(**changes: Any) -> Callable[[dict[str, Any]], None]:
    def edit(data: dict[str, Any]) -> None:
        data["training"]["hyperparameters"].update(changes)

    return edit


@pytest.mark.parametrize(
    ("edit", "message"),
    [
        (hyperparameters(bogus_rate=0.5), "unknown hyperparameter.*bogus_rate"),
        (hyperparameters(net_arch="wide"), "do not fit dqn.*net_arch"),
        (hyperparameters(batch_size=-1), "do not fit dqn"),
        (hyperparameters(net_arch=[16, 16]), r"tensor 'q_net\.1\.0\.weight' is .*\(16, 4\)"),
        (hyperparameters(dueling=True), "does not fit the rebuilt dqn module: missing"),
        (hyperparameters(exploration_final_eps=0.3), "epsilon 0.3"),
        (lambda d: d["training"].pop("hyperparameters"), "no training.hyperparameters"),
        (lambda d: d["training"].update(hyperparameters=[1, 2]), "no training.hyperparameters"),
        (lambda d: d.update(algorithm="no-such-algo"), "unknown algorithm 'no-such-algo'"),
    ],
    ids=[
        "unknown-field",
        "wrong-type",
        "invalid-value",
        "other-net-arch",
        "other-structure",
        "other-epsilon",
        "no-hyperparameters",
        "not-a-mapping",
        "unknown-algorithm",
    ],
)
def test_hyperparameters_that_do_not_fit_are_manifest_errors(
    dqn_artifact: Path,
    tmp_path: Path,
    edit: Callable[[dict[str, Any]], None],
    message: str,
) -> None:
    artifact = load_manifest(edited_copy(dqn_artifact, tmp_path, edit))
    with pytest.raises(ManifestError, match=message):
        load_runtime(artifact, "torch")
    OnnxRuntime(artifact)  # the artifact itself still serves on onnx


def test_a_hyperparameter_outside_the_weights_is_caught_by_the_onnx_check(
    linucb_artifact: Path, tmp_path: Path
) -> None:
    """LinUCB's alpha is no tensor: only the comparison with policy.onnx can tell."""
    alpha = load_manifest(linucb_artifact).manifest.training["hyperparameters"]["alpha"]
    edited = edited_copy(linucb_artifact, tmp_path, hyperparameters(alpha=alpha * 3 + 1))
    with pytest.raises(ManifestError, match=r"does not match policy\.onnx"):
        TorchRuntime(load_manifest(edited))


def test_missing_hyperparameters_take_defaults_when_the_policy_still_matches(
    dqn_artifact: Path, tmp_path: Path
) -> None:
    """Artifacts exported before a hyperparameter existed: its default is used, and the ONNX
    check confirms it changes nothing."""

    def drop(data: dict[str, Any]) -> None:
        del data["training"]["hyperparameters"]["normalize_clip"]

    runtime = TorchRuntime(load_manifest(edited_copy(dqn_artifact, tmp_path, drop)))
    assert runtime.name == "torch"


def rewritten_weights(
    source: Path, tmp_path: Path, change: Callable[[dict[str, torch.Tensor]], None]
) -> Path:
    """A copy of `source` whose weights `change` altered (and whose sha256 is updated)."""
    target = tmp_path / source.parent.name / source.name
    shutil.copytree(source, target)
    tensors = load_file(str(target / WEIGHTS_FILE))
    change(tensors)
    save_file(tensors, str(target / WEIGHTS_FILE))
    data = json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8"))
    data["files"][WEIGHTS_FILE] = sha256_file(target / WEIGHTS_FILE)
    (target / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    return target


def rename(old: str, new: str) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[new] = tensors.pop(old)

    return change


def replace(key: str, tensor: torch.Tensor) -> Callable[[dict[str, torch.Tensor]], None]:
    def change(tensors: dict[str, torch.Tensor]) -> None:
        tensors[key] = tensor

    return change


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (
            rename("q_net.1.0.weight", "q_net.1.0.weights"),
            r"missing 'q_net\.1\.0\.weight'; unexpected 'q_net\.1\.0\.weights'",
        ),
        (
            lambda t: t.pop("q_net.1.2.bias"),
            r"does not fit the rebuilt dqn module: missing 'q_net\.1\.2\.bias'$",
        ),
        (
            replace("extra.weight", torch.zeros(3)),
            r"does not fit the rebuilt dqn module: unexpected 'extra\.weight'$",
        ),
        (
            replace("q_net.1.0.weight", torch.zeros(32, 5)),
            r"tensor 'q_net\.1\.0\.weight' is torch.float32 \(32, 5\), the rebuilt module "
            r"expects torch.float32 \(32, 4\)",
        ),
        (
            replace("q_net.1.0.bias", torch.zeros(32, dtype=torch.float64)),
            r"tensor 'q_net\.1\.0\.bias' is torch.float64 \(32,\)",
        ),
    ],
    ids=["renamed-key", "missing-key", "extra-key", "wrong-shape", "wrong-dtype"],
)
def test_weights_that_do_not_fit_are_manifest_errors(
    dqn_artifact: Path,
    tmp_path: Path,
    change: Callable[[dict[str, torch.Tensor]], None],
    message: str,
) -> None:
    artifact = load_manifest(rewritten_weights(dqn_artifact, tmp_path, change))
    with pytest.raises(ManifestError, match=message):
        TorchRuntime(artifact)


def test_changed_weight_values_are_caught_by_the_onnx_check(
    dqn_artifact: Path, tmp_path: Path
) -> None:
    def perturb(tensors: dict[str, torch.Tensor]) -> None:
        tensors["q_net.1.4.bias"] = tensors["q_net.1.4.bias"] + 1.0

    artifact = load_manifest(rewritten_weights(dqn_artifact, tmp_path, perturb))
    with pytest.raises(ManifestError, match=r"does not match policy\.onnx"):
        TorchRuntime(artifact)


def test_corrupt_weights_file_is_a_manifest_error(dqn_artifact: Path, tmp_path: Path) -> None:
    target = tmp_path / dqn_artifact.parent.name / dqn_artifact.name
    shutil.copytree(dqn_artifact, target)
    (target / WEIGHTS_FILE).write_bytes(b"not safetensors at all")
    data = json.loads((target / MANIFEST_FILE).read_text(encoding="utf-8"))
    data["files"][WEIGHTS_FILE] = sha256_file(target / WEIGHTS_FILE)
    (target / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(ManifestError, match=r"weights\.safetensors does not load"):
        TorchRuntime(load_manifest(target))


# --- The bundled repository (exported before the observation normalizer existed) --------------


@pytest.mark.parametrize("name", ["cartpole-dqn", "cartpole-dqn-safe", "gridworld-qlearning"])
def test_bundled_policies_run_on_torch(name: str) -> None:
    artifact = load_manifest(default_model_repo() / name / "1")
    runtime = load_runtime(artifact, "torch")
    space = artifact.manifest.action_space
    assert isinstance(space, DiscreteSpec)
    rng = np.random.default_rng(61)
    observations = random_observations(artifact.manifest.observation_space, 500, rng)
    masks = random_masks(space.n, 500, rng)
    reference = load_runtime(artifact, "onnx").infer(observations, masks)
    assert_agree(runtime.infer(observations, masks), reference, masks)


# --- Selection and devices -----------------------------------------------------------------------


def test_torch_is_a_known_runtime() -> None:
    assert "torch" in RUNTIMES
    with pytest.raises(ManifestError, match="unknown runtime 'jax'"):
        load_runtime(load_manifest(default_model_repo() / "cartpole-dqn" / "1"), "jax")


def test_the_manifest_preference_stays_the_default() -> None:
    artifact = load_manifest(default_model_repo() / "gridworld-qlearning" / "1")
    assert load_runtime(artifact).name == "table"
    assert load_runtime(artifact, device="cpu").name == "table"
    assert ServedPolicy(artifact, device="cpu").runtime.name == "table"


def test_malformed_devices_are_config_errors() -> None:
    assert resolve_device("cpu") == "cpu"
    for device in ("gpu", "cuda:", "cuda:x", "CPU", "cuda:0:1", ""):
        with pytest.raises(ConfigError, match="cpu, cuda or cuda:N"):
            resolve_device(device)


@no_cuda
@pytest.mark.parametrize("device", ["cuda", "cuda:0", "cuda:3"])
def test_cuda_without_a_gpu_is_a_config_error(device: str) -> None:
    with pytest.raises(ConfigError, match="CUDA is not available"):
        resolve_device(device)
    with pytest.raises(ConfigError, match="CUDA is not available"):
        PolicyRepository(default_model_repo(), Metrics(), "torch", device=device)


@no_cuda
def test_serve_with_device_cuda_without_a_gpu_stops_at_start(
    capsys: pytest.CaptureFixture[str],
) -> None:
    argv = ["serve", "--runtime", "torch", "--device", "cuda", "--port", "0"]
    assert cli.main([*argv, "--metrics-port", "-1"]) == 2
    error = capsys.readouterr().err
    assert "agentserve serve: error: device 'cuda': CUDA is not available" in error
    assert "Traceback" not in error


def test_serve_refuses_a_device_for_a_cpu_only_runtime(capsys: pytest.CaptureFixture[str]) -> None:
    argv = ["serve", "--runtime", "onnx", "--device", "cuda:0", "--port", "0"]
    assert cli.main([*argv, "--metrics-port", "-1"]) == 2
    assert "--runtime onnx runs on the CPU" in capsys.readouterr().err


def test_cli_offers_the_torch_runtime_and_a_device() -> None:
    parser = cli.build_parser()
    serve = parser.parse_args(["serve", "--runtime", "torch", "--device", "cuda:1"])
    assert (serve.runtime, serve.device) == ("torch", "cuda:1")
    assert parser.parse_args(["serve"]).device == "cpu"
    assert parser.parse_args(["evaluate", "x", "--runtime", "torch"]).runtime == "torch"


@pytest.mark.parametrize(
    ("cpu_below", "graph_batch", "sizes"),
    [
        (64, 4096, [64, 128, 256, 512, 1024, 2048, 4096]),
        (64, 512, [64, 128, 256, 512]),
        (64, 300, [64, 128, 256, 300]),
        (100, 1000, [128, 256, 512, 1000]),
        (64, 64, [64]),
        (0, 4, [1, 2, 4]),
        (1, 1, [1]),
        (64, 63, []),
        (64, 0, []),
    ],
)
def test_graph_sizes_form_a_ladder(cpu_below: int, graph_batch: int, sizes: list[int]) -> None:
    assert graph_sizes(cpu_below, graph_batch) == sizes


# --- CUDA (skipped without a GPU) -----------------------------------------------------------------


@pytest.mark.gpu
@requires_cuda
@pytest.mark.parametrize("graph_batch", [0, 512], ids=["eager", "cuda-graphs"])
def test_cuda_agrees_with_cpu(dqn_artifact: Path, graph_batch: int) -> None:
    artifact = load_manifest(dqn_artifact)
    cpu = TorchRuntime(artifact)
    gpu = TorchRuntime(artifact, "cuda", graph_batch=graph_batch)
    assert gpu.cuda_module is not None
    assert next(gpu.cuda_module.parameters()).is_cuda
    space = artifact.manifest.action_space
    assert isinstance(space, DiscreteSpec)
    rng = np.random.default_rng(71)
    # onnxruntime on the CPU under 64 rows; graphs for 64, 128, 256 and 512 rows: exact,
    # padded to 512, too large (eager), padded to 128, exact again
    for rows in (1, 63, 64, 300, 512, 4096, 100, 64):
        observations = random_observations(artifact.manifest.observation_space, rows, rng)
        masks = random_masks(space.n, rows, rng)
        assert_agree(gpu.infer(observations, masks), cpu.infer(observations, masks), masks)


@pytest.mark.gpu
@requires_cuda
def test_small_batches_stay_on_the_cpu(dqn_artifact: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    runtime = TorchRuntime(load_manifest(dqn_artifact), "cuda:0", cpu_below=64)
    assert isinstance(runtime.small, OnnxRuntime)
    paths: list[tuple[str, int]] = []
    for owner, path in ((runtime.small, "infer"), (runtime, "_run_cpu"), (runtime, "_run_cuda")):
        original = getattr(owner, path)

        def spy(observations: Any, masks: Any, _path: str = path, _run: Any = original) -> Any:
            paths.append((_path, len(observations)))
            return _run(observations, masks)

        monkeypatch.setattr(owner, path, spy)
    for rows in (1, 63, 64, 1000):
        observations = np.zeros((rows, 4), np.float32)
        result = runtime.infer(observations, np.ones((rows, 2), bool))
        assert result.greedy_actions.shape == (rows,)
    # under 64 rows: onnxruntime on the CPU (never torch's CPU copy); from 64: the device
    assert paths == [("infer", 1), ("infer", 63), ("_run_cuda", 64), ("_run_cuda", 1000)]


@pytest.mark.gpu
@requires_cuda
def test_served_batches_take_the_smallest_graph_that_holds_them(dqn_artifact: Path) -> None:
    artifact = load_manifest(dqn_artifact)
    cpu, gpu = TorchRuntime(artifact), TorchRuntime(artifact, "cuda")  # the serving defaults
    assert [graph.rows for graph in gpu._graphs] == graph_sizes(64, 4096)
    replayed: list[int] = []
    for graph in gpu._graphs:
        original = graph.graph.replay

        def spy(_rows: int = graph.rows, _replay: Any = original) -> None:
            replayed.append(_rows)
            _replay()

        graph.graph.replay = spy  # type: ignore[method-assign]
    rng = np.random.default_rng(5)
    for rows in (64, 65, 4096, 4097, 1000):
        observations = random_observations(artifact.manifest.observation_space, rows, rng)
        masks = random_masks(2, rows, rng)
        assert_agree(gpu.infer(observations, masks), cpu.infer(observations, masks), masks)
    assert replayed == [64, 128, 4096, 1024]  # 4,097 rows: no graph holds them, eager


@pytest.mark.gpu
@requires_cuda
def test_continuous_policy_on_cuda(tmp_path: Path) -> None:
    learner = make_learner("sac")
    artifact = load_manifest(export(learner, tmp_path))
    cpu, gpu = TorchRuntime(artifact), TorchRuntime(artifact, "cuda", graph_batch=256)
    for rows in (256, 5):  # on the device; onnxruntime on the CPU
        observations, _ = inputs(learner, rows, 81)
        assert_agree(gpu.infer_continuous(observations), cpu.infer_continuous(observations), None)
