"""Shared test set-up. SGLang tests run SGLang for real on CPU (tiny models built locally)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))

# On a CPU-only machine, CPU activation must precede any SGLang import in this process and reach
# every spawned one. Where CUDA is available the suite runs SGLang as users do (no activation).
from sgl_consensus import cpu  # noqa: E402
from sgl_consensus.testing.devices import cuda_available  # noqa: E402

if not cuda_available():
    cpu.activate()
os.environ.setdefault("TOKENIZERS_PARALLELISM", "false")
