#!/usr/bin/env bash
# The README's test command: create/refresh .venv (CPU recipe), then run the whole test suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_venv.sh
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider --timeout 900 "$@"
