"""The GPU target of `agentserve bench --gpu`: the servers compared, the verdict and the page
from synthetic results, --report-only's errors, the one-line error without CUDA, the serving
benchmark's GPU row, `--runtime-threads` reaching the runtimes, and the in-process measurement
with the CPU standing in for the device (the CUDA path itself where there is a GPU)."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import torch

from agentserve.bench import gpu, gpu_report, report, stats
from agentserve.bench.runner import Settings
from agentserve.cli import build_parser, main
from service.runtime import load_runtime

CUDA = torch.cuda.is_available()
requires_cuda = pytest.mark.skipif(
    not CUDA, reason="needs CUDA (torch.cuda.is_available() is False)"
)
no_cuda = pytest.mark.skipif(CUDA, reason="checks the error on a machine without CUDA")

RATES = {"onnx-t1": 2e6, "onnx-t8": 3e6, "torch-cpu-t8": 2.5e6, "torch-cuda": 16e6}
"""Synthetic actions/s at concurrency 4 (concurrency 1: half)."""


def _run(scenario: str, target: str, repeat: int, actions_rate: float) -> dict[str, Any]:
    rate = actions_rate / gpu_report.BATCH
    return {
        "scenario": scenario,
        "target": target,
        "repeat": repeat,
        "rate": rate,
        "actions_rate": actions_rate,
        "p50_ms": 1e3 / rate,
        "p90_ms": 1e3 / rate,
        "p99_ms": 2e3 / rate,
        "mean_ms": 1e3 / rate,
        "server_cores": 1.0,
        "server_cpu_per_call_us": 1e6 / rate,
        "client_cpu_per_call_us": 50.0,
    }


def _row(batch: int, variant: str, us: float, is_gpu: bool) -> dict[str, Any]:
    return {
        "batch": batch,
        "variant": variant,
        "label": variant,
        "gpu": is_gpu,
        "ran_on": "cuda" if is_gpu and batch >= 64 else "cpu",
        "us_per_call": us,
        "actions_rate": batch / us * 1e6,
        "max_abs_diff": 1e-7,
    }


def _data(rates: dict[str, float] = RATES) -> dict[str, Any]:
    runs = [
        _run(scenario.name, name, repeat, rate * (1.0 if scenario.callers > 1 else 0.5))
        for repeat in range(3)
        for scenario in gpu.SCENARIOS
        for name, rate in rates.items()
    ]
    cpu_us = {1: 20.0, 64: 80.0, gpu_report.BATCH: 2000.0}
    gpu_us = {1: 90.0, 64: 95.0, gpu_report.BATCH: 115.0}
    served_us = {1: 25.0, 64: 60.0, gpu_report.BATCH: 58.0}
    data: dict[str, Any] = {
        "format": gpu_report.FORMAT,
        "date": "2026-01-01T00:00:00+00:00",
        "command": "agentserve bench --gpu",
        "wall_seconds": 120.0,
        "machine": {
            "cpu": "test CPU",
            "logical_cpus": 16,
            "usable_cpus": 16,
            "platform": "Linux",
            "python": "CPython 3.12",
            "grpc_runtime": "1.0",
            "packages": {"grpcio": "1.0"},
            "load_average_before": [0.5, 0.5, 0.5],
            "gpu": {
                "device": "cuda",
                "name": "NVIDIA H200",
                "torch": "2.11.0",
                "cuda": "13.0",
                "torch_default_threads": 16,
                "capability": "9.0",
                "multiprocessors": 132,
                "memory_gib": 140.0,
                "driver": "580.159.03",
            },
        },
        "settings": {
            "seconds": 3.0,
            "warmup": 1.0,
            "repeats": 3,
            "policy": "cartpole-dqn",
            "device": "cuda",
            "threads": [8],
            "batches": list(gpu.BATCHES),
            "calls": 300,
            "warmup_calls": 30,
            "cpu_below": 64,
        },
        "servers": [vars(s) for s in gpu.servers("cuda", (8,))],
        "scenarios": [{"name": s.name, "title": s.title} for s in gpu.SCENARIOS],
        "in_process": [
            row
            for batch in gpu.BATCHES
            for row in (
                _row(batch, "onnx-t1", cpu_us[batch], False),
                _row(batch, "torch-cuda", gpu_us[batch], True),
                _row(batch, "torch-cuda-served", served_us[batch], True),
            )
        ],
        "runs": runs,
        "summary": gpu.summarize(runs),
    }
    gpu_report.judge(data)
    return data


# --- The servers, the settings ------------------------------------------------------------------


def test_the_servers_compared_and_the_command_line() -> None:
    chosen = gpu.servers("cuda", (8, 16))
    assert [s.name for s in chosen] == [
        "onnx-t1",
        "onnx-t8",
        "onnx-t16",
        "torch-cpu-t8",
        "torch-cpu-t16",
        "torch-cuda",
    ]
    assert [s.gpu for s in chosen] == [False] * 5 + [True]
    assert chosen[-1].args() == (
        "--runtime",
        "torch",
        "--device",
        "cuda",
        "--runtime-threads",
        "16",
    )
    assert [s.name for s in gpu.servers("cpu", (1,))] == ["onnx-t1", "torch-cpu-t1", "torch-cpu"]
    assert gpu.default_threads(16) == (8, 16) and gpu.default_threads(1) == (1,)
    assert [s.batch_size for s in gpu.SCENARIOS] == [4096, 4096]
    assert [(s.callers, s.processes) for s in gpu.SCENARIOS] == [(1, 1), (4, 2)]
    settings = Settings(seconds=2, repeats=2, only=gpu.BASE_SCENARIOS)
    assert (
        gpu.command(settings, Path("docs"), None)
        == "agentserve bench --gpu --seconds 2 --repeats 2"
    )
    assert gpu.command(settings, Path("x"), (4, 8)).endswith("--out x --threads 4 8")


def test_runtime_threads_reach_the_runtimes(bundled_repo: Path) -> None:
    args = build_parser().parse_args(["serve", "--runtime", "onnx", "--runtime-threads", "3"])
    assert args.runtime_threads == 3
    assert build_parser().parse_args(["serve"]).runtime_threads is None
    artifact = gpu.bundled_artifact()
    onnx: Any = load_runtime(artifact, "onnx", threads=3)
    assert onnx.session.get_session_options().intra_op_num_threads == 3
    default: Any = load_runtime(artifact, "onnx")
    assert default.session.get_session_options().intra_op_num_threads == 1
    before = torch.get_num_threads()
    try:
        load_runtime(artifact, "torch", threads=1)
        assert torch.get_num_threads() == 1
    finally:
        torch.set_num_threads(before)


# --- The verdict and the page -------------------------------------------------------------------


def test_the_verdict_takes_the_best_scenario_of_the_device_and_of_the_cpu_runtimes() -> None:
    data = _data()
    found = data["verdict"]
    assert found["gpu"]["server"] == "torch-cuda" and found["gpu"]["scenario"] == "batch4096-c4"
    assert found["cpu"]["server"] == "onnx-t8" and found["cpu"]["actions_rate"] == 3e6
    assert found["measured"] == pytest.approx(16 / 3) and found["passed"] is True
    assert found["label"] == stats.GPU_TARGET.label and found["device_name"] == "NVIDIA H200"
    inside = data["in_process_verdict"]
    # the runtime as served (graphs), not the eager one
    assert inside["gpu"]["server"] == "torch-cuda-served"
    assert inside["measured"] == pytest.approx(2000 / 58) and inside["passed"] is True

    slow = _data({**RATES, "torch-cuda": 4e6})
    assert slow["verdict"]["measured"] == pytest.approx(4 / 3)
    assert slow["verdict"]["passed"] is False
    unmeasured = gpu_report.verdict(None, found["cpu"], None)
    assert unmeasured["passed"] is None and unmeasured["measured"] is None


def test_the_page_shows_the_target_both_figures_and_why_small_batches_stay_on_the_cpu(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    data = _data({**RATES, "torch-cuda": 4e6})
    page = gpu_report.render(data)
    target = next(line for line in page.splitlines() if line.startswith("| ActBatch of 4,096"))
    assert "4,000,000 actions/s (torch on cuda (--runtime-threads 8), batch4096-c4)" in target
    assert "against 3,000,000 (onnxruntime on the CPU, 8 threads, batch4096-c4): 1.33x" in target
    assert target.endswith("| **no** |")
    assert "| 4,096 rows inside one process" in page and "34.48x | yes |" in page
    assert "### `batch4096-c1`: ActBatch of 4096 observations, concurrency 1" in page
    assert "| `torch-cuda`: torch on cuda (--runtime-threads 8) | 4,000,000 | 1.33 |" in page
    assert "| 1 | `torch-cuda`: torch-cuda | 90.0 | 11,111 | 0.22 | cpu |" in page
    assert "- GPU: NVIDIA H200 (`cuda`, compute capability 9.0, 132 multiprocessors" in page

    gpu_report.write(tmp_path, data)
    (tmp_path / gpu_report.RESULTS_FILE).parent.mkdir(parents=True)
    (tmp_path / gpu_report.RESULTS_FILE).write_text(json.dumps(data), encoding="utf-8")
    (tmp_path / gpu_report.PAGE).unlink()
    assert main(["bench", "--gpu", "--report-only", "--out", str(tmp_path)]) == 0
    assert (tmp_path / gpu_report.PAGE).read_text(encoding="utf-8") == page
    assert "wrote" in capsys.readouterr().out


def test_a_page_without_the_serving_part_says_it_was_not_measured() -> None:
    data = _data()
    data["runs"], data["summary"] = [], {}
    gpu_report.judge(data)
    page = gpu_report.render(data)
    assert data["verdict"]["passed"] is None
    assert "| not measured | not measured |" in page
    assert "Not measured (the run stopped before this part)." in page


def test_the_serving_benchmark_page_shows_the_gpu_verdict(tmp_path: Path) -> None:
    serving = {
        "format": "agentserve.serving-benchmark/1",
        "date": "2026-01-01T00:00:00+00:00",
        "command": "agentserve bench",
        "wall_seconds": 60.0,
        "machine": _data()["machine"],
        "settings": {"seconds": 4.0, "warmup": 1.0, "repeats": 1, "policy": "cartpole-dqn"},
        "client_processes": 2,
        "scenarios": [],
        "runs": [],
        "summary": {},
        "verdicts": [],
    }
    label = f"| {stats.GPU_TARGET.label} |"
    row = next(line for line in report.render(serving).splitlines() if line.startswith(label))
    assert row.endswith("| not measured | — | not measured |")
    assert "`agentserve bench --gpu` ([serving-gpu.md](serving-gpu.md))" in report.render(serving)

    stored = tmp_path / gpu_report.RESULTS_FILE
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps(_data()), encoding="utf-8")
    page = report.write(tmp_path, serving).read_text(encoding="utf-8")
    row = next(line for line in page.splitlines() if line.startswith(label))
    assert "5.33x: 16,000,000 actions/s (torch on cuda (--runtime-threads 8)) against " in row
    assert "on a machine with NVIDIA H200 ([serving-gpu.md](serving-gpu.md))" in row
    assert row.endswith("| `batch4096-c4` | yes |")


def test_stored_results_are_judged_again_by_todays_rules(tmp_path: Path) -> None:
    data = _data()
    data["in_process_verdict"] = {**data["in_process_verdict"], "measured": 1.0, "passed": False}
    stored = tmp_path / gpu_report.RESULTS_FILE
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps(data), encoding="utf-8")
    again = gpu_report.load_results(tmp_path)["in_process_verdict"]
    assert again["measured"] == pytest.approx(2000 / 58) and again["passed"] is True


# --- The command ----------------------------------------------------------------------------------


def test_report_only_names_a_missing_or_foreign_results_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["bench", "--gpu", "--report-only", "--out", str(tmp_path)]
    assert main(argv) == 2
    assert "cannot read" in capsys.readouterr().err
    stored = tmp_path / gpu_report.RESULTS_FILE
    stored.parent.mkdir(parents=True)
    stored.write_text(json.dumps({"format": "agentserve.serving-breakdown/1"}), encoding="utf-8")
    assert main(argv) == 2
    assert "is not a agentserve.serving-gpu/1 file" in capsys.readouterr().err
    assert not (tmp_path / gpu_report.PAGE).exists()


@pytest.mark.parametrize(
    ("argv", "message"),
    [
        (["--gpu", "--breakdown"], "two benchmarks"),
        (["--threads", "4"], "add --gpu"),
        (["--gpu", "--only", "act-c1"], "--gpu measures its own scenarios"),
    ],
)
def test_options_that_do_not_go_together(
    argv: list[str], message: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", *argv, "--out", str(tmp_path)]) == 2
    assert message in capsys.readouterr().err


@no_cuda
def test_without_cuda_bench_gpu_is_a_one_line_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["bench", "--gpu", "--out", str(tmp_path)]) == 2
    error = capsys.readouterr().err
    assert error.startswith("agentserve bench: error: --gpu measures the torch runtime on a CUDA")
    assert "CUDA is not available here" in error and error.count("\n") == 1
    assert list(tmp_path.iterdir()) == []


# --- Measuring ----------------------------------------------------------------------------------


def test_in_process_rows_with_the_cpu_standing_in_for_the_device() -> None:
    said: list[str] = []
    rows = gpu.measure_in_process("cpu", (1,), batches=(1, 64), calls=2, warmup=1, say=said.append)
    names = ["onnx-t1", "torch-cpu-t1", "torch-cpu", "torch-cpu-graph", "torch-cpu-served"]
    assert [(r["batch"], r["variant"]) for r in rows] == [(b, n) for b in (1, 64) for n in names]
    assert all(r["ran_on"] == "cpu" and r["max_abs_diff"] < 1e-5 for r in rows)
    assert all(r["us_per_call"] > 0 and r["actions_rate"] > 0 for r in rows)
    assert [r["gpu"] for r in rows[:5]] == [False, False, True, True, True]
    assert len(said) == len(rows)


@pytest.mark.slow
def test_a_short_run_with_the_cpu_standing_in_writes_the_results_and_the_page(
    tmp_path: Path,
) -> None:
    settings = Settings(seconds=0.5, warmup=0.2, repeats=1, only=gpu.BASE_SCENARIOS)
    data = gpu.run_gpu(settings, tmp_path, "test", "cpu", (1,), calls=3, warmup_calls=1)
    assert {r["target"] for r in data["runs"]} == {"onnx-t1", "torch-cpu-t1", "torch-cpu"}
    assert data["verdict"]["measured"] is not None
    assert gpu_report.load_results(tmp_path) == json.loads(json.dumps(data))
    assert (tmp_path / gpu_report.PAGE).read_text(encoding="utf-8") == gpu_report.render(data)


@pytest.mark.gpu
@requires_cuda
def test_the_cuda_path_in_one_process() -> None:
    assert gpu.require_cuda() == "cuda"
    rows = gpu.measure_in_process("cuda", (2,), batches=(1, 4096), calls=5, warmup=2, say=print)
    where = {(r["batch"], r["variant"]): r["ran_on"] for r in rows}
    assert where[(1, "torch-cuda")] == "cuda" and where[(1, "torch-cuda-graph")] == "cuda"
    assert where[(1, "torch-cuda-served")] == "cpu"
    assert where[(4096, "torch-cuda-served")] == "cuda"
    assert all(r["max_abs_diff"] < 1e-4 for r in rows)
    info = gpu.device_info("cuda")
    assert info["name"] and info["cuda"]
