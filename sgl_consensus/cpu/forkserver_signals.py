"""Imported in the preloaded forkserver only (``preloaded_start.PRELOAD``): relays SIGQUIT to its launcher.

SGLang's scheduler and detokenizer report a fatal error by sending SIGQUIT to their parent process.
Started from a forkserver, their parent is the forkserver, so it passes the signal on to the process
that started it (the engine's process, whose handlers shut the engine down). Children forked from
the forkserver inherit this handler; ``InLaunchersEnvironment`` resets it before their target runs.
"""

from __future__ import annotations

import os
import signal


_LAUNCHER = os.getppid()  # at preload: the process that started the forkserver


def _relay_to_launcher(signum: int, frame: object) -> None:
    # Only while the launcher lives: an orphaned forkserver's parent is init (or a subreaper),
    # which must never get a child's SIGQUIT.
    if os.getppid() == _LAUNCHER:
        os.kill(_LAUNCHER, signum)


signal.signal(signal.SIGQUIT, _relay_to_launcher)
