#!/usr/bin/env bash
# The README's test command: create/refresh .venv (CPU recipe), then run the whole test suite.
# Three pytest workers, each taking whole files (module fixtures stay shared), the slowest first and
# the files sharing the consensus server as one unit (tests/conftest.py): SGLang engine tests
# spend much of their time waiting (process start-up, HTTP, scheduler polls), so three overlap well
# even on two cores. CONSENSUS_TEST_WORKERS=N sets the count (0: everything in this process).
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/ensure_venv.sh
export PYTHONUNBUFFERED=1 TOKENIZERS_PARALLELISM=false
workers=${CONSENSUS_TEST_WORKERS:-3}
parallel=()
[ "$workers" -gt 0 ] && parallel=(-n "$workers" --dist loadfile)
exec .venv/bin/python -m pytest tests -q -p no:cacheprovider --timeout 900 "${parallel[@]}" "$@"
