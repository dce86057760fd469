#!/usr/bin/env bash
# The one install: creates a virtual environment and installs agentserve with the given extras,
# always under constraints.txt (which pins torch to the CPU wheel). Used by `make`, CI and the image.
#   scripts/install.sh [VENV_DIR] [EXTRAS]      defaults: .venv  dev
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
venv=${1:-.venv}
extras=${2:-dev}
python=${PYTHON:-$(command -v python3.11 || command -v python3)}
if [ ! -x "$venv/bin/python" ]; then
    "$python" -m venv "$venv"
fi
stamp="$venv/.agentserve-installed-$extras"
# Reinstall only when the project's dependency files changed since the last install.
if [ -f "$stamp" ] && [ "$stamp" -nt "$root/pyproject.toml" ] && [ "$stamp" -nt "$root/constraints.txt" ]; then
    exit 0
fi
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check --upgrade pip
"$venv/bin/python" -m pip install --quiet --disable-pip-version-check \
    -c "$root/constraints.txt" -e "$root[$extras]"
touch "$stamp"
