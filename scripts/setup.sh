#!/usr/bin/env bash
# Create .venv and install dermdx with what its tests need. Safe to run again.
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3.11}
command -v "$PYTHON" >/dev/null 2>&1 || PYTHON=python3
if [ ! -x .venv/bin/python ]; then
    "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
# torch 2.14.1 / torchvision 0.29.1 are pinned in pyproject.toml (a CPU-capable build).
# [serve]: the clinician service; [dev] brings playwright (the Python package only: its browser
# test drives Debian's chromium, installed by .ci/run; never run `playwright install`).
.venv/bin/python -m pip install --quiet -e ".[dev,lite12,explain,onnx,serve]"
.venv/bin/python -c "import dermdx, torch, timm; print(f'dermdx {dermdx.__version__}, torch {torch.__version__}, timm {timm.__version__}')"
