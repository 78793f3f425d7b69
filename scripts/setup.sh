#!/usr/bin/env bash
# Sets up GEM Studio in ./.venv on a fresh machine (Python >= 3.10).
# The CPU build of torch is installed first, so that pip does not pull a multi-GB CUDA build.
# Usage: bash scripts/setup.sh [--browser]   (--browser also installs Chromium for browser tests)
set -euo pipefail
cd "$(dirname "$0")/.."

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
.venv/bin/python -m pip install --quiet -e ".[dev,scale]"

if [ "${1:-}" = "--browser" ] && [ ! -x /usr/bin/chromium ]; then
  if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq chromium >/dev/null
fi
echo "GEM Studio is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
