#!/usr/bin/env bash
# Sets up GEM Studio in ./.venv on a fresh machine (Python >= 3.10).
# The CPU build of torch is installed first, so that pip does not pull a multi-GB CUDA build.
#
# Usage: bash scripts/setup.sh            the library, the `gem` command and the app
#        bash scripts/setup.sh --tests    also what the whole test suite needs: Debian's
#                                         Chromium (real-browser tests) and the training
#                                         stacks' own loaders (the `clients` extra)
set -euo pipefail
cd "$(dirname "$0")/.."

TESTS=0
for arg in "$@"; do
  case "$arg" in
    --tests | --browser) TESTS=1 ;;
    *) echo "usage: bash scripts/setup.sh [--tests]" >&2; exit 2 ;;
  esac
done

PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  "$PYTHON" -m venv .venv
fi
.venv/bin/python -m pip install --quiet --upgrade pip
.venv/bin/python -m pip install --quiet "torch==2.13.0"
if [ "$TESTS" = 1 ]; then
  .venv/bin/python -m pip install --quiet -e ".[dev,scale,clients]"
  # OLMo-core's loader, to test the OLMo export through it (docs/exports.md), without its
  # dependency pins (cached-path pins huggingface-hub<2, rich<14, filelock<4); the `clients`
  # extra holds what its mixture loader imports.
  .venv/bin/python -m pip install --quiet --no-deps "ai2-olmo-core==3.0.0" "cached-path==1.8.10"
  if [ ! -x /usr/bin/chromium ]; then
    if [ "$(id -u)" = 0 ]; then SUDO=""; else SUDO="sudo"; fi
    $SUDO apt-get update -qq
    $SUDO apt-get install -y -qq chromium >/dev/null
  fi
else
  .venv/bin/python -m pip install --quiet -e ".[dev,scale]"
fi
echo "GEM Studio is set up in .venv ($(.venv/bin/python -c 'import torch; print("torch", torch.__version__)'))"
