#!/usr/bin/env bash
# The one install of agentserve: used by `make` (and so by CI), by the container image
# (Dockerfile) and by the install smoke test (tests/integration/test_container.py).
#
#   deploy/install.sh [VENV_DIR] [EXTRAS]        defaults: .venv  dev
#
# Creates VENV_DIR if needed and installs agentserve[EXTRAS] from this checkout, always under
# constraints.txt, which pins every dependency (torch to 2.13.0, the CPU build).
#
# Environment (all optional):
#   PYTHON                  interpreter that creates the venv (default: python3.11, else python3)
#   AGENTSERVE_EDITABLE     1 (default): editable install of this checkout (development, CI);
#                           0: a regular install that copies the package, with the bundled model
#                           repository, into the venv (the image, the smoke test)
#   AGENTSERVE_VARIANT      cpu (default) or cuda. How each variant chooses its wheels:
#     cpu   torch==2.13.0 from constraints.txt. Where AGENTSERVE_TORCH_INDEX is set (the image
#           sets https://download.pytorch.org/whl/cpu), torch is installed first from that index
#           alone, where 2.13.0 exists only as the CPU build 2.13.0+cpu (PyPI's Linux torch wheel
#           is the CUDA build); otherwise pip's configured indexes (these machines hold the CPU
#           wheel in /opt/wheels).
#     cuda  constraints.txt without its (CPU) torch pin. torch (AGENTSERVE_TORCH_SPEC, default
#           pyproject's range "torch>=2.13,<2.14") comes first from AGENTSERVE_TORCH_INDEX alone
#           (default https://download.pytorch.org/whl/cu128, which holds only CUDA builds), so the
#           project's install finds it satisfied; then onnxruntime is replaced by onnxruntime-gpu
#           at the version constraints.txt pins for onnxruntime-gpu.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
venv=${1:-.venv}
extras=${2:-dev}
python=${PYTHON:-$(command -v python3.11 || command -v python3 || true)}
editable=${AGENTSERVE_EDITABLE:-1}
variant=${AGENTSERVE_VARIANT:-cpu}
torch_index=${AGENTSERVE_TORCH_INDEX:-}
torch_spec=${AGENTSERVE_TORCH_SPEC:-torch>=2.13,<2.14}
constraints="$root/constraints.txt"

fail() {
    echo "deploy/install.sh: error: $*" >&2
    exit 2
}

[ -n "$python" ] || fail "no python3.11 or python3 on PATH (set PYTHON=/path/to/python3.11)"
[ -f "$constraints" ] || fail "$constraints is missing"
case "$editable" in 0 | 1) ;; *) fail "AGENTSERVE_EDITABLE must be 0 or 1, got '$editable'" ;; esac
case "$variant" in
    cpu) ;;
    cuda) torch_index=${torch_index:-https://download.pytorch.org/whl/cu128} ;;
    *) fail "AGENTSERVE_VARIANT must be cpu or cuda, got '$variant'" ;;
esac

if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.agentserve-installed-$extras-$variant-e$editable"
# Reinstall only when the project's dependency files (or this script) changed since the last one.
if [ -f "$stamp" ] && [ "$stamp" -nt "$root/pyproject.toml" ] && [ "$stamp" -nt "$constraints" ] \
    && [ "$stamp" -nt "${BASH_SOURCE[0]}" ]; then
    exit 0
fi

pip=("$venv/bin/python" -m pip install --quiet --disable-pip-version-check)
"${pip[@]}" --upgrade pip

workdir=$(mktemp -d)
trap 'rm -rf "$workdir"' EXIT
if [ "$variant" = cuda ]; then
    grep -q -E '^onnxruntime-gpu==' "$constraints" || fail "constraints.txt pins no onnxruntime-gpu"
    # The CPU pin must not apply: the CUDA build of torch comes from the CUDA index instead.
    grep -v -E '^torch==' "$constraints" >"$workdir/constraints.txt"
    constraints="$workdir/constraints.txt"
    "${pip[@]}" --index-url "$torch_index" -c "$constraints" "$torch_spec"
elif [ -n "$torch_index" ]; then
    "${pip[@]}" --index-url "$torch_index" -c "$constraints" torch
fi

if [ "$editable" = 1 ]; then
    "${pip[@]}" -c "$constraints" -e "$root[$extras]"
else
    "${pip[@]}" -c "$constraints" "$root[$extras]"
fi

if [ "$variant" = cuda ] && "$venv/bin/python" -m pip show --quiet onnxruntime 2>/dev/null; then
    # Both wheels provide the `onnxruntime` module: the CPU one must go before the GPU one lands.
    "$venv/bin/python" -m pip uninstall --quiet --yes onnxruntime
    "${pip[@]}" -c "$constraints" onnxruntime-gpu
fi
touch "$stamp"
