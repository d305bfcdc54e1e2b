#!/usr/bin/env bash
# The README's main-job command: create/refresh .venv (CPU recipe), then run the demo.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_venv.sh
export TOKENIZERS_PARALLELISM=false
exec .venv/bin/sgl-consensus demo "$@"
