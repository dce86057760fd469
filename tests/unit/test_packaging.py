"""The client install stays torch-free; generated code is current; the CLI lists its commands."""

from __future__ import annotations

import subprocess
import sys
import tomllib
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]


def test_base_dependencies_do_not_pull_torch() -> None:
    project = tomllib.loads((ROOT / "pyproject.toml").read_text())["project"]
    base = " ".join(project["dependencies"]).lower()
    assert "torch" not in base and "onnx" not in base
    assert any(d.startswith("torch") for d in project["optional-dependencies"]["train"])


def test_client_and_simulator_import_without_torch() -> None:
    code = (
        "import sys, agentserve, agentserve.client, agentserve.simulate, agentserve.cli, "
        "agentserve.manifest; "
        "assert 'torch' not in sys.modules, 'torch imported'; "
        "assert 'onnxruntime' not in sys.modules, 'onnxruntime imported'"
    )
    subprocess.run([sys.executable, "-c", code], check=True, timeout=60)


def test_torch_is_pinned_in_the_one_constraints_file() -> None:
    lines = (ROOT / "constraints.txt").read_text().splitlines()
    assert "torch==2.13.0" in lines
    install = (ROOT / "deploy" / "install.sh").read_text()
    assert "constraints.txt" in install


def test_generated_grpc_code_is_current() -> None:
    result = subprocess.run(
        [sys.executable, str(ROOT / "scripts" / "gen_protos.py"), "--check"],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_cli_offers_the_contract_subcommands() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentserve.cli", "--help"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    for command in ("train", "evaluate", "serve", "simulate", "demo", "algos"):
        assert command in result.stdout


def test_algos_lists_every_registered_algorithm() -> None:
    from trainer import registry

    result = subprocess.run(
        [sys.executable, "-m", "agentserve.cli", "algos"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    lines = result.stdout.splitlines()
    listed = {line.split()[0] for line in lines if line.strip() and not line.startswith(" ")}
    assert listed == set(registry.names())
    assert "options: double_q, dueling, prioritized_replay" in result.stdout


def test_algos_explains_one_algorithms_hyperparameters() -> None:
    result = subprocess.run(
        [sys.executable, "-m", "agentserve.cli", "algos", "dqn"],
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 0
    assert "n_step (int, default 1)" in result.stdout
    assert "Steps summed before bootstrapping." in result.stdout
