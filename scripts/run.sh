#!/usr/bin/env bash
# Start Second Brain on the embedded defaults: local Qdrant Edge, packaged models, Streamlit on 127.0.0.1.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/bootstrap.sh
# shellcheck disable=SC1091
. .venv/bin/activate
python -m brain models prepare
exec python -m streamlit run app/main.py \
  --server.address "${APP_HOST:-127.0.0.1}" --server.port "${APP_PORT:-8501}" \
  --server.headless true --browser.gatherUsageStats false --client.toolbarMode minimal "$@"
