"""A quiet console for the demo: SGLang's start-up chatter goes to a log file, real errors still show.

SGLang prints warnings that do not apply on a CPU (Triton, AWQ, GGUF, CUDA architecture) and a
weight-loading progress bar from every process it starts. While an engine starts,
:func:`engine_output_to` points this process's stdout and stderr at a log file, so the processes
SGLang spawns write there for their whole life; :func:`show_engine_output` then prints every line
of that file that is not known start-up noise (a traceback, an error), so nothing real is hidden.
"""

from __future__ import annotations

import contextlib
import os
import re
import sys
import time
from collections.abc import Iterator
from pathlib import Path

# Lines SGLang 0.5.23 prints on every CPU start that say nothing about this run.
NOISE = re.compile(
    r"UserWarning: Only CUDA"
    r"|UserWarning: Triton is not supported"
    r"|CUDA architecture"
    r"|^\s*warnings\.warn\("
    r"|Multi-thread loading shards"
    r"|Using custom SIGQUIT handler"
    r"|resource_tracker: process died unexpectedly"
    r"|DeprecationWarning: builtin type Swig"
    r"|^\s*$"
)


def default_log_path(name: str) -> Path:
    folder = Path(os.environ.get("XDG_CACHE_HOME", Path.home() / ".cache")) / "sgl-consensus" / "logs"
    folder.mkdir(parents=True, exist_ok=True)
    return folder / f"{name}-{time.strftime('%Y%m%d-%H%M%S')}-{os.getpid()}.log"


@contextlib.contextmanager
def engine_output_to(log_path: Path) -> Iterator[None]:
    """Within this block, file descriptors 1 and 2 write to ``log_path`` (children keep them)."""
    sys.stdout.flush()
    sys.stderr.flush()
    saved = os.dup(1), os.dup(2)
    log = os.open(log_path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    try:
        os.dup2(log, 1)
        os.dup2(log, 2)
        yield
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        os.dup2(saved[0], 1)
        os.dup2(saved[1], 2)
        for fd in (*saved, log):
            os.close(fd)


def meaningful_lines(text: str) -> list[str]:
    """The lines of an engine log that are not known start-up noise (progress-bar redraws split)."""
    lines = text.replace("\r", "\n").splitlines()
    return [line for line in lines if not NOISE.search(line)]


def show_engine_output(log_path: Path, stream=None) -> bool:
    """Print what the engines logged beyond start-up noise; True if there was any."""
    if not log_path.exists():
        return False
    lines = meaningful_lines(log_path.read_text(errors="replace"))
    if lines:
        stream = stream or sys.stderr
        print(f"SGLang engine output (full log: {log_path}):", file=stream)
        for line in lines[-60:]:
            print("  " + line, file=stream)
    return bool(lines)
