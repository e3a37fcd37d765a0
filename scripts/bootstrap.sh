#!/usr/bin/env bash
# Create .venv and install the project exactly once per pyproject.toml version.
# torch goes first, as the CPU build (any other spelling pulls gigabytes of CUDA).
set -euo pipefail
cd "$(dirname "$0")/.."
PYTHON=${PYTHON:-python3}
if [ ! -x .venv/bin/python ]; then
  echo "› creating .venv"
  "$PYTHON" -m venv .venv
fi
# shellcheck disable=SC1091
. .venv/bin/activate
stamp=".venv/.installed-$(sha256sum pyproject.toml | cut -c1-16)"
if [ ! -f "$stamp" ]; then
  echo "› installing (first run: llama-cpp-python compiles from source, ~15 min on 2 cores; cached after)"
  python -m pip install -q --upgrade pip
  python -m pip install -q torch==2.13.0
  CMAKE_ARGS="${CMAKE_ARGS:--DLLAVA_BUILD=OFF}" python -m pip install -q -e '.[llm,dev]'
  rm -f .venv/.installed-*
  touch "$stamp"
fi
