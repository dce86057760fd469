"""agentserve.manifest: the manifest schema, policy names and `load_manifest`'s safety checks."""

from __future__ import annotations

import json
import math
import os
import shutil
from pathlib import Path
from typing import Any

import pytest
from learner_cases import CASES, make_learner

from agentserve.errors import ManifestError
from agentserve.manifest import (
    MANIFEST_FILE,
    ONNX_FILE,
    WEIGHTS_FILE,
    Manifest,
    check_policy_name,
    load_manifest,
    sha256_file,
)
from agentserve.spaces import BoxSpec, DiscreteSpec
from trainer.export import export_artifact

POLICY = "grid-unit"


def sample_manifest() -> Manifest:
    return Manifest(
        name="cartpole-dqn",
        version=3,
        algorithm="dqn",
        env_id="CartPole-v1",
        observation_space=BoxSpec(
            (4,), (-4.8, -math.inf, -0.42, -math.inf), (4.8, math.inf, 0.42, math.inf)
        ),
        action_space=DiscreteSpec(2),
        distribution="epsilon_greedy",
        epsilon=0.04,
        runtimes=("onnx", "table"),
        files={WEIGHTS_FILE: "b" * 64, ONNX_FILE: "a" * 64},
        training={"seed": 7, "hyperparameters": {"net_arch": [64, 64]}},
        onnx_opset=17,
    )


def test_manifest_round_trip() -> None:
    manifest = sample_manifest()
    text = json.dumps(manifest.to_json(), allow_nan=False)
    assert Manifest.from_json(json.loads(text)) == manifest


def test_manifest_json_lists_files_sorted() -> None:
    data = sample_manifest().to_json()
    assert list(data["files"]) == [ONNX_FILE, WEIGHTS_FILE]
    assert data["format"] == "agentserve.policy/1"


@pytest.mark.parametrize("name", ["cartpole-dqn", "a", "0", "grid.world_v2-q", "x" * 64])
def test_check_policy_name_accepts(name: str) -> None:
    assert check_policy_name(name) == name


@pytest.mark.parametrize(
    "name",
    [
        "",
        "../x",
        "..",
        ".",
        ".hidden",
        "-dash",
        "_under",
        "UPPER",
        "Mixed-case",
        "a/b",
        "/abs",
        "a\\b",
        "with space",
        "x" * 65,
        "name\n",
        "name\x00",
    ],
)
def test_check_policy_name_rejects(name: str) -> None:
    with pytest.raises(ManifestError, match="invalid policy name"):
        check_policy_name(name)


# --- load_manifest on a real exported artifact -------------------------------------------------


@pytest.fixture(scope="module")
def exported_version(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A freshly built Q-learning learner exported once: <repo>/grid-unit/1."""
    learner = make_learner("qlearning")
    repo = tmp_path_factory.mktemp("manifest-repo")
    return export_artifact(learner, repo, POLICY, CASES["qlearning"].env_id, {"seed": 0})


@pytest.fixture
def version_dir(exported_version: Path, tmp_path: Path) -> Path:
    """A private copy of the exported artifact, free to tamper with."""
    repo = tmp_path / "repo"
    shutil.copytree(exported_version.parent, repo / POLICY, symlinks=True)
    return repo / POLICY / "1"


def read_manifest(version_dir: Path) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((version_dir / MANIFEST_FILE).read_text(encoding="utf-8"))
    return data


def write_manifest(version_dir: Path, data: Any) -> None:
    (version_dir / MANIFEST_FILE).write_text(json.dumps(data), encoding="utf-8")


def test_load_exported_artifact(version_dir: Path) -> None:
    artifact = load_manifest(version_dir)
    manifest = artifact.manifest
    assert (manifest.name, manifest.version, manifest.algorithm) == (POLICY, 1, "qlearning")
    assert manifest.env_id == CASES["qlearning"].env_id
    assert manifest.observation_space == DiscreteSpec(40)
    assert manifest.action_space == DiscreteSpec(4)
    assert set(artifact.paths) == {ONNX_FILE, WEIGHTS_FILE}
    for name, path in artifact.paths.items():
        assert path == (version_dir / name).resolve()
        assert manifest.files[name] == sha256_file(path)
    assert artifact.label == f"{POLICY}/1"
    with pytest.raises(ManifestError, match="no file"):
        artifact.path("missing.bin")


def test_changed_onnx_byte_fails_sha256(version_dir: Path) -> None:
    onnx = version_dir / ONNX_FILE
    data = bytearray(onnx.read_bytes())
    data[len(data) // 2] ^= 0x01
    onnx.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(version_dir)
    # Without verification the (tampered) artifact is read as is.
    assert load_manifest(version_dir, verify=False).manifest.version == 1


def test_changed_weights_byte_fails_sha256(version_dir: Path) -> None:
    weights = version_dir / WEIGHTS_FILE
    data = bytearray(weights.read_bytes())
    data[-1] ^= 0xFF
    weights.write_bytes(bytes(data))
    with pytest.raises(ManifestError, match="sha256"):
        load_manifest(version_dir)


def test_file_outside_the_folder_is_refused(version_dir: Path) -> None:
    outside = version_dir.parent / "outside"
    outside.write_bytes(b"secret")
    data = read_manifest(version_dir)
    data["files"]["../outside"] = sha256_file(outside)  # the digest matches: only the path is bad
    write_manifest(version_dir, data)
    with pytest.raises(ManifestError, match="outside"):
        load_manifest(version_dir)


def test_absolute_file_name_is_refused(version_dir: Path) -> None:
    outside = version_dir.parent / "outside"
    outside.write_bytes(b"secret")
    data = read_manifest(version_dir)
    data["files"][str(outside.resolve())] = sha256_file(outside)
    write_manifest(version_dir, data)
    with pytest.raises(ManifestError, match="relative"):
        load_manifest(version_dir)


def test_symlink_to_a_file_outside_is_refused(version_dir: Path) -> None:
    outside = version_dir.parent.parent / "elsewhere.bin"
    outside.write_bytes(b"not part of the artifact")
    (version_dir / "extra.bin").symlink_to(outside)
    data = read_manifest(version_dir)
    data["files"]["extra.bin"] = sha256_file(outside)
    write_manifest(version_dir, data)
    with pytest.raises(ManifestError, match="outside"):
        load_manifest(version_dir)


def test_listed_file_replaced_by_symlink_outside_is_refused(version_dir: Path) -> None:
    # Same bytes (so the sha256 matches), but policy.onnx now lives outside the version folder.
    outside = version_dir.parent.parent / "policy-copy.onnx"
    shutil.copyfile(version_dir / ONNX_FILE, outside)
    (version_dir / ONNX_FILE).unlink()
    (version_dir / ONNX_FILE).symlink_to(outside)
    with pytest.raises(ManifestError, match="outside"):
        load_manifest(version_dir)


def test_manifest_symlinked_from_outside_is_refused(version_dir: Path) -> None:
    outside = version_dir.parent.parent / "manifest-copy.json"
    shutil.copyfile(version_dir / MANIFEST_FILE, outside)
    (version_dir / MANIFEST_FILE).unlink()
    (version_dir / MANIFEST_FILE).symlink_to(outside)
    with pytest.raises(ManifestError, match="outside"):
        load_manifest(version_dir)


def test_version_must_match_folder(version_dir: Path) -> None:
    moved = version_dir.parent / "2"
    os.rename(version_dir, moved)
    with pytest.raises(ManifestError, match="version 1"):
        load_manifest(moved)


def test_name_must_match_parent_folder(version_dir: Path) -> None:
    other = version_dir.parent.parent / "other-name"
    os.rename(version_dir.parent, other)
    with pytest.raises(ManifestError, match=POLICY):
        load_manifest(other / "1")


def test_missing_manifest(version_dir: Path) -> None:
    (version_dir / MANIFEST_FILE).unlink()
    with pytest.raises(ManifestError, match=r"no manifest\.json"):
        load_manifest(version_dir)


def test_missing_listed_file(version_dir: Path) -> None:
    (version_dir / WEIGHTS_FILE).unlink()
    with pytest.raises(ManifestError, match="missing"):
        load_manifest(version_dir)


@pytest.mark.parametrize("required", [ONNX_FILE, WEIGHTS_FILE])
def test_manifest_must_list_required_files(version_dir: Path, required: str) -> None:
    data = read_manifest(version_dir)
    del data["files"][required]
    write_manifest(version_dir, data)
    with pytest.raises(ManifestError, match=required):
        load_manifest(version_dir)


@pytest.mark.parametrize(
    "content",
    [b"", b"{", b'{"format": "agentserve.policy/1",}', b"\xff\xfe\x00garbage", b"null", b"[]"],
)
def test_malformed_manifest_json(version_dir: Path, content: bytes) -> None:
    (version_dir / MANIFEST_FILE).write_bytes(content)
    with pytest.raises(ManifestError):
        load_manifest(version_dir)


@pytest.mark.parametrize(
    "field",
    ["format", "name", "version", "algorithm", "observation_space", "action_space", "distribution"],
)
def test_missing_required_field(version_dir: Path, field: str) -> None:
    data = read_manifest(version_dir)
    del data[field]
    write_manifest(version_dir, data)
    with pytest.raises(ManifestError):
        load_manifest(version_dir)


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("format", "agentserve.policy/2"),
        ("version", "1"),
        ("version", 0),
        ("version", True),
        ("version", 1.0),
        ("name", "../grid-unit"),
        ("name", ["grid-unit"]),
        ("distribution", "gaussian"),
        ("distribution", None),
        ("epsilon", 1.5),
        ("epsilon", -0.1),
        ("epsilon", "x"),
        ("epsilon", [0.1]),
        ("epsilon", None),
        ("files", ["policy.onnx"]),
        ("files", {ONNX_FILE: 5}),
        ("files", None),
        ("runtimes", []),
        ("runtimes", "onnx"),
        ("observation_space", 40),
        ("action_space", {"type": "discrete", "n": 0}),
        ("onnx", {"opset": "eighteen"}),
        ("onnx", {"opset": None}),
        ("onnx", "policy.onnx"),
        ("onnx", None),
    ],
)
def test_malformed_field_is_a_manifest_error(version_dir: Path, field: str, value: Any) -> None:
    data = read_manifest(version_dir)
    data[field] = value
    write_manifest(version_dir, data)
    with pytest.raises(ManifestError):
        load_manifest(version_dir)
