"""ActBatch-sized inference on the torch CUDA runtime against the CPU runtimes, in one process.

    python scripts/gpu_check.py                       # batch 1, 64, 4,096 of the bundled CartPole
    python scripts/gpu_check.py --batches 4096 --calls 500
    python scripts/gpu_check.py --cpu                 # the CPU rows alone (no GPU needed)

Every runtime serves the same random observations and masks; the table gives the median of
`--calls` timed calls (after `--warmup` untimed ones) in microseconds per call and actions per
second, and how the torch CUDA outputs compare with the torch CPU ones. As served, batches below
the torch runtime's `cpu_below` (64) are answered by onnxruntime on the CPU even on a CUDA
device, and larger ones through CUDA graphs: the table says so and shows the eager runtime
beside it. Without CUDA (and without `--cpu`) it says so and exits 0. `agentserve bench --gpu`
is the full measurement (through the server too).
"""

from __future__ import annotations

import argparse
import functools
import os
import sys
from pathlib import Path
from typing import Any

import numpy as np

from agentserve.bench.gpu import median_seconds
from agentserve.bench.gpu_report import thread_count
from agentserve.manifest import load_manifest
from agentserve.spaces import DiscreteSpec
from service.runtime import Runtime
from service.server import default_model_repo

DEFAULT_POLICY = default_model_repo() / "cartpole-dqn" / "1"


def outputs(runtime: Runtime, observations: Any, masks: Any) -> list[Any]:
    if masks is None:
        result: Any = runtime.infer_continuous(observations)
        return [result.greedy_actions, result.means, result.log_stds]
    result = runtime.infer(observations, masks)
    return [result.greedy_actions, result.probabilities, result.values]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument(
        "--policy", type=Path, default=DEFAULT_POLICY, help="artifact version folder"
    )
    parser.add_argument("--batches", default="1,64,4096", help="comma-separated batch sizes")
    parser.add_argument("--calls", type=int, default=200, help="timed calls per row")
    parser.add_argument("--warmup", type=int, default=20, help="untimed calls before them")
    parser.add_argument("--device", default="cuda", help="the CUDA device (cuda or cuda:N)")
    parser.add_argument(
        "--cpu", action="store_true", help="measure the CPU runtimes even without CUDA"
    )
    args = parser.parse_args(argv)
    batches = [int(b) for b in args.batches.split(",") if b.strip()]

    import torch

    from service.runtime.onnx import OnnxRuntime
    from service.runtime.torch import CPU_BELOW, TorchRuntime
    from trainer.export import random_masks, random_observations

    cuda = torch.cuda.is_available()
    if not cuda and not args.cpu:
        print(
            f"no CUDA device here (torch {torch.__version__}, torch.cuda.is_available() is "
            "False): nothing to compare; --cpu measures the CPU runtimes alone"
        )
        return 0
    artifact = load_manifest(args.policy)
    manifest = artifact.manifest
    cores = os.cpu_count() or 1
    runtimes: list[tuple[str, Runtime]] = [
        (f"onnx, {thread_count(1)}", OnnxRuntime(artifact)),
        (f"onnx, {thread_count(cores)}", OnnxRuntime(artifact, threads=cores)),
        (f"torch cpu, {thread_count(torch.get_num_threads())}", TorchRuntime(artifact)),
    ]
    cpu_labels = [label for label, _ in runtimes]
    if cuda:
        runtimes.append((f"torch {args.device}, as served", TorchRuntime(artifact, args.device)))
        runtimes.append(
            (
                f"torch {args.device}, eager",
                TorchRuntime(artifact, args.device, cpu_below=1, graph_batch=0),
            )
        )
        print(f"device: {torch.cuda.get_device_name(torch.device(args.device))}")
    print(
        f"policy: {artifact.label} ({manifest.algorithm}), torch {torch.__version__}, {cores} CPUs"
    )
    print(f"median of {args.calls} calls after {args.warmup} warm-up calls\n")

    header = f"| {'batch':>6} | {'runtime':<26} | {'us/call':>10} | {'actions/s':>12} | note"
    print(header)
    print("|" + "|".join("-" * (len(part) + 0) for part in header.split("|")[1:-1]) + "|------")
    rng = np.random.default_rng(0)
    for batch in batches:
        observations = random_observations(manifest.observation_space, batch, rng)
        space = manifest.action_space
        masks = random_masks(space.n, batch, rng) if isinstance(space, DiscreteSpec) else None
        reference = outputs(runtimes[2][1], observations, masks)
        best_cpu = float("inf")
        for label, runtime in runtimes:
            call = functools.partial(outputs, runtime, observations, masks)
            seconds = median_seconds(call, args.calls, args.warmup)
            note = ""
            if label in cpu_labels:
                best_cpu = min(best_cpu, seconds)
            else:
                got = outputs(runtime, observations, masks)
                worst = max(
                    float(np.abs(np.asarray(a, np.float64) - np.asarray(b, np.float64)).max())
                    for a, b in zip(got, reference, strict=True)
                )
                served = label.endswith("as served") and batch < CPU_BELOW
                routed = " (onnxruntime on the CPU)" if served else ""
                note = f"{best_cpu / seconds:.2f}x best CPU; max |diff| vs cpu {worst:.1e}{routed}"
            print(
                f"| {batch:>6} | {label:<26} | {seconds * 1e6:>10.1f} | "
                f"{batch / seconds:>12,.0f} | {note}".rstrip()
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
