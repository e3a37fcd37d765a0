#!/usr/bin/env bash
# Run the whole test suite (installs what it needs on a fresh machine first).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
if ! command -v chromium >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  echo "› installing chromium for the browser test"
  (apt-get update -qq && apt-get install -y -qq chromium chromium-driver >/dev/null) || echo "chromium install failed"
fi
if ! command -v docker-compose >/dev/null 2>&1 && [ "$(id -u)" = "0" ] && command -v apt-get >/dev/null; then
  (apt-get update -qq && apt-get install -y -qq docker-compose >/dev/null 2>&1) || echo "docker-compose install failed"
fi
# shellcheck disable=SC1091
. .venv/bin/activate
ruff check .
exec python -m pytest "$@"
