#!/usr/bin/env bash
# bash bench/gpu.sh [args]: bench/gpu.py (the checks for a lent GPU) with the project's venv python
# when there is one (.venv/bin/python), else python3 on PATH; VQVP_PYTHON=/path/to/python overrides.
# Arguments pass through: bash bench/gpu.sh --json gpu.json; bash bench/gpu.sh --help.
set -euo pipefail
root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
py="${VQVP_PYTHON:-}"
if [ -z "$py" ]; then
    if [ -x "$root/.venv/bin/python" ]; then py="$root/.venv/bin/python"; else py="$(command -v python3 || command -v python)"; fi
fi
exec "$py" "$root/bench/gpu.py" "$@"
