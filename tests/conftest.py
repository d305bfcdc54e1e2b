"""Shared test set-up. SGLang tests run SGLang for real on CPU (tiny models built locally)."""

from __future__ import annotations

import os
import sys
from pathlib import Path

import pytest

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

# -- scheduling the suite over xdist workers (scripts/test.sh: --dist loadfile) --------------------
# The files that use the session's consensus server (tests/engine/conftest.py) form one work unit, so
# one worker launches the server once. Work units go out slowest first (xdist's default order is by
# test count, which sent the few, long engine files last and left one worker running alone at the
# end): these, by their measured time in the full suite on the 2-core VM (2026-12-01), then the rest.
_SERVER_FILES = ("test_server_and_crash.py", "test_scale_out.py", "test_early_stop_engine.py", "test_programs.py")
_SLOWEST_FIRST = (*_SERVER_FILES, "test_gpu_check.py", "test_greedy_equivalence.py", "test_consensus_worker.py",
                  "test_sampling_distribution.py", "test_parallel_engines.py", "test_isolation.py",
                  "test_preloaded_start.py", "test_engine_failures.py", "test_lead_lag.py", "test_cli.py",
                  "test_draft_step.py")


def _unit_rank(path: Path) -> int:
    return _SLOWEST_FIRST.index(path.name) if path.name in _SLOWEST_FIRST else len(_SLOWEST_FIRST)


def pytest_collection_modifyitems(config, items) -> None:
    """Slowest files first (a stable sort: each file's tests stay together and in order)."""
    items.sort(key=lambda item: _unit_rank(item.path))


@pytest.hookimpl(optionalhook=True)  # xdist's hook: the suite also runs without xdist
def pytest_xdist_make_scheduler(config, log):
    """Whole files per worker, as ``--dist loadfile`` (module fixtures and the worker's engine pool
    stay shared), in collection order, with the server's files as one unit."""
    if config.getvalue("dist") != "loadfile":
        return None
    from xdist.scheduler import LoadFileScheduling

    class ServerFilesTogether(LoadFileScheduling):
        def _split_scope(self, nodeid: str) -> str:
            file = nodeid.split("::", 1)[0]
            return "consensus-server" if Path(file).name in _SERVER_FILES else file

    config.option.loadscopereorder = False  # keep the collection's order: slowest first
    return ServerFilesTogether(config, log)
