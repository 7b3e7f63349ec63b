#!/usr/bin/env bash
# The GPU benchmark in one command (benchmarks/gpu/README.md): VLSA's stage III at the paper's dimensions on one
# H100/H200, anyres beside it, the platform's step against a plain loop; stops itself within 7 minutes and
# writes one JSON file ($OUT/results-<gpu>.json when $OUT is set, else benchmarks/gpu/results-<gpu>.json).
# Without a GPU it runs the tiny CPU fallback. Extra arguments go to stage3_step.py (e.g. --llm-layers 4).
set -euo pipefail
cd "$(dirname "${BASH_SOURCE[0]}")/../.."
PYTHON="${PYTHON:-.venv/bin/python}"
if [ ! -x "$PYTHON" ]; then
    PYTHON="$(command -v python3)"
fi
exec "$PYTHON" benchmarks/gpu/stage3_step.py --all "$@"
