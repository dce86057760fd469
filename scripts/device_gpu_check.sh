#!/usr/bin/env bash
# The GPU target of issue 5 on a lent GPU machine, in one invocation (4 to 5 minutes; allow 7):
#
#   bash scripts/device_gpu_check.sh          # carrying .whl (see below); results under $OUT
#
# 1. installs the wheels carried in .whl/ (what the serving code needs that the machine lacks or
#    has too old: grpcio, grpcio-health-checking, grpcio-reflection, protobuf, gymnasium,
#    farama-notifications) into /tmp/site and puts it and this checkout on PYTHONPATH (the
#    project is not installed there: everything runs as `python3 -m ...` from this tree);
# 2. prints the versions that matter (nvidia-smi, Python, torch and its CUDA, grpcio, protobuf,
#    onnxruntime, numpy) and stops, saying so, where torch sees no CUDA device;
# 3. runs the tests with CUDA variants (tests/unit/test_torch_runtime.py,
#    tests/unit/test_serving_gpu.py), going on to the benchmark whatever they say;
# 4. runs `agentserve bench --gpu` (docs/serving-gpu.md, docs/results/serving-gpu.json) and
#    copies both to $OUT.
#
# $OUT then holds log.txt (everything printed), tests.xml, serving-gpu.md and serving-gpu.json.
# Exit status: the benchmark's, else the tests'. Environment: OUT (default /tmp/gpucheck),
# PYTHON (default python3), WHEELS=skip to use the interpreter's own packages (a dry run on a
# machine that has them), BENCH_ARGS (default "--seconds 2 --warmup 0.5 --repeats 3").
set -uo pipefail
export PYTHONUNBUFFERED=1
REPO=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
OUT=${OUT:-/tmp/gpucheck}
PYTHON=${PYTHON:-python3}
WHEELS=${WHEELS:-install}
BENCH_ARGS=${BENCH_ARGS:---seconds 2 --warmup 0.5 --repeats 3}
mkdir -p "$OUT"

step() { printf '\n=== %s (%s)\n' "$1" "$(date -u +%H:%M:%S)"; }

install_wheels() {
    step "wheels"
    if [ "$WHEELS" = skip ]; then
        echo "WHEELS=skip: the interpreter's own packages"
        export PYTHONPATH="$REPO"
        return 0
    fi
    ls -l "$REPO"/.whl/*.whl || return 1
    "$PYTHON" -m pip install -q --no-index --no-deps --no-compile --no-cache-dir --upgrade \
        --target /tmp/site "$REPO"/.whl/*.whl || return 1
    export PYTHONPATH="/tmp/site:$REPO"
}

versions() {
    step "versions"
    nvidia-smi --query-gpu=name,driver_version,memory.total,clocks.sm,utilization.gpu \
        --format=csv || echo "nvidia-smi: not available"
    "$PYTHON" - <<'EOF'
import importlib.metadata as metadata
import platform
import sys

import torch

print(f"python {platform.python_version()} at {sys.executable}")
print(f"torch {torch.__version__}, CUDA {torch.version.cuda}, cuda available "
      f"{torch.cuda.is_available()}, threads {torch.get_num_threads()}")
if torch.cuda.is_available():
    print(f"device: {torch.cuda.get_device_name(0)}")
for name in ("grpcio", "grpcio-health-checking", "grpcio-reflection", "protobuf", "onnxruntime",
             "onnx", "numpy", "gymnasium", "safetensors", "pytest", "pytest-timeout"):
    try:
        print(f"{name} {metadata.version(name)}")
    except metadata.PackageNotFoundError:
        print(f"{name} MISSING")
import agentserve.v1.agent_pb2_grpc  # the generated code checks grpcio and protobuf here
import service.server  # noqa: F401  the server's imports (health, reflection, prometheus)
print("agentserve, service: import fine")
EOF
}

has_cuda() {
    "$PYTHON" -c "import sys, torch; sys.exit(0 if torch.cuda.is_available() else 1)"
}

main() {
    cd "$REPO" || return 1
    echo "device GPU check of $REPO into $OUT"
    install_wheels || { echo "the wheels did not install: stopping"; return 1; }
    versions || { echo "the versions step failed (an import above): stopping"; return 1; }
    if ! has_cuda; then
        step "no CUDA"
        echo "torch sees no CUDA device here: no tests or benchmark to run. bench --gpu says:"
        "$PYTHON" -m agentserve.cli bench --gpu --out "$OUT"
        return 2
    fi
    step "tests with CUDA variants"
    timeout -k 10 120 "$PYTHON" -m pytest -p no:cacheprovider -q -rs --junitxml="$OUT/tests.xml" \
        tests/unit/test_torch_runtime.py tests/unit/test_serving_gpu.py
    local tests=$?
    echo "tests: exit $tests"
    step "agentserve bench --gpu $BENCH_ARGS"
    local since=/tmp/device_gpu_check.since
    touch "$since"  # only what this run writes is copied to $OUT below
    # shellcheck disable=SC2086  # BENCH_ARGS is a list of words
    timeout -k 10 270 "$PYTHON" -m agentserve.cli bench --gpu $BENCH_ARGS
    local bench=$?
    echo "bench --gpu: exit $bench"
    for written in docs/serving-gpu.md docs/results/serving-gpu.json; do
        [ "$written" -nt "$since" ] && cp "$written" "$OUT"/
    done
    step "summary"
    sed -n '/^## Targets/,/^## Through the server/p' "$OUT/serving-gpu.md" 2>/dev/null
    echo "tests: exit $tests; bench --gpu: exit $bench; files: $(ls "$OUT" | tr '\n' ' ')"
    [ "$bench" -ne 0 ] && return "$bench"
    return "$tests"
}

main 2>&1 | tee "$OUT/log.txt"
exit "${PIPESTATUS[0]}"
