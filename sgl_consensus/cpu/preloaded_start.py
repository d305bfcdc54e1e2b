"""Start SGLang's scheduler and detokenizer from a process that has already imported SGLang.

SGLang starts its children with multiprocessing's ``spawn``: every engine start runs two fresh
interpreters that each import SGLang, torch and transformers from scratch, which on a small CPU costs
far more than loading a small model (the numbers are in ``docs/test-suite.md``). Under
:func:`sgl_consensus.cpu.activate`, engines instead start their children with multiprocessing's
``forkserver``, preloaded with those imports (:data:`PRELOAD`): the forkserver imports them once per
launching process, and each child is a fork of it.

What ``spawn`` gave the children is kept:

* **The launcher's environment and output at start.** A forkserver child inherits the forkserver's
  environment and file descriptors (the launcher's when the forkserver started), not the launcher's
  now. Every child therefore runs its target with the launcher's environment and stdout/stderr as
  they were when the child started (:class:`InLaunchersEnvironment`), so per-engine knobs
  (``CONSENSUS_*``) and a demo's per-run log still apply.
* **SIGQUIT reaching the launcher.** A failing SGLang child sends SIGQUIT to its parent, which is
  now the forkserver; :mod:`sgl_consensus.cpu.forkserver_signals` (imported first in the
  forkserver) passes it on to the launcher. Each child resets SIGQUIT to the default before its target runs.

No SGLang internals are touched here: ``adapter/cpu_hooks.py`` switches SGLang's start method after
SGLang sets ``spawn``, and ``adapter/engine_lifecycle.py`` starts the forkserver before an engine
records which of its caller's children are not the engine's.
"""

from __future__ import annotations

import multiprocessing
import multiprocessing.context
import multiprocessing.forkserver
import os
import signal
import sys
from typing import Any, Callable

# Imported once in the forkserver. The SIGQUIT relay comes first so that a child failing while the
# rest is still importing is not lost; the rest is what SGLang's scheduler and detokenizer import.
PRELOAD = (
    "sgl_consensus.cpu.forkserver_signals",
    "sglang.srt.managers.scheduler",
    "sglang.srt.managers.detokenizer_manager",
    "sgl_consensus.plugin",
)

# CONSENSUS_CPU_SPAWN=1: SGLang's own ``spawn`` (each child imports everything afresh).
SPAWN_ENV = "CONSENSUS_CPU_SPAWN"

_installed = False


def enabled() -> bool:
    """Preloaded starts apply in CPU mode unless ``CONSENSUS_CPU_SPAWN=1``; another value is refused."""
    from sgl_consensus import cpu
    from sgl_consensus.settings import SettingsError

    value = os.environ.get(SPAWN_ENV, "0")
    if value not in ("0", "1"):
        raise SettingsError(f"{SPAWN_ENV}={value!r}: expected 0 (preloaded forkserver) or 1 (SGLang's spawn)")
    return cpu.is_active() and value == "0"


class InLaunchersEnvironment:
    """A process target that first takes on its launcher's environment and output as they were when
    the launcher started it: ``os.environ``, and file descriptors 1 and 2 (``spawn`` children inherit
    both; a forkserver child would otherwise write where the forkserver's output went, e.g. the log
    of the first engine ``console.engine_output_to`` redirected).

    Picklable (it travels to the forkserver with the process object): ``target`` goes by reference
    as under ``spawn``; the two descriptors go as duplicates, sent with the process object."""

    def __init__(self, environ: dict[str, str], target: Callable[..., Any]) -> None:
        self.environ = environ
        self.target = target
        self.outputs: dict[int, Any] = {}

    def __getstate__(self) -> dict[str, Any]:
        # Runs while multiprocessing pickles the process object for the forkserver, the only time
        # DupFd can hand a descriptor to the child.
        from multiprocessing import reduction

        state = dict(self.__dict__)
        state["outputs"] = {fd: reduction.DupFd(fd) for fd in (1, 2) if _is_open(fd)}
        return state

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        _claim_process_title()
        for key in set(os.environ) - set(self.environ):
            del os.environ[key]
        for key, value in self.environ.items():
            if os.environ.get(key) != value:
                os.environ[key] = value
        signal.signal(signal.SIGQUIT, signal.SIG_DFL)
        # Processes this child starts (a data-parallel controller's schedulers) start as SGLang
        # starts them; this forkserver is its launcher's, not the child's.
        multiprocessing.set_start_method("spawn", force=True)
        sys.stdout.flush()
        sys.stderr.flush()
        for fd, duplicate in self.outputs.items():
            received = duplicate.detach()
            os.dup2(received, fd)
            os.close(received)
        return self.target(*args, **kwargs)


def _claim_process_title() -> None:
    """Let setproctitle find the memory it rewrites (after argv, where the process's environment
    started) before the environment changes: SGLang names its children (``sglang::scheduler``) with
    it, and once the environment was rebuilt it silently kept the forkserver's command line."""
    try:
        import setproctitle
    except ImportError:
        return
    setproctitle.getproctitle()


def _is_open(fd: int) -> bool:
    try:
        os.fstat(fd)
    except OSError:
        return False
    return True


_forkserver_popen = multiprocessing.context.ForkServerProcess._Popen


def _popen_in_launchers_environment(process_obj: Any) -> Any:
    target = getattr(process_obj, "_target", None)
    if target is not None and not isinstance(target, InLaunchersEnvironment):
        process_obj._target = InLaunchersEnvironment(dict(os.environ), target)
    return _forkserver_popen(process_obj)


def install() -> None:
    """Preload the forkserver and make every forkserver child start in its launcher's environment.

    Idempotent; the start method itself is switched by :func:`use_for_children`."""
    global _installed
    if _installed:
        return
    multiprocessing.set_forkserver_preload(list(PRELOAD))
    multiprocessing.context.ForkServerProcess._Popen = staticmethod(_popen_in_launchers_environment)
    _installed = True


def ensure_forkserver() -> int:
    """Start the preloaded forkserver now (it imports SGLang: seconds, once per process); its pid."""
    install()
    multiprocessing.forkserver.ensure_running()
    return multiprocessing.forkserver._forkserver._forkserver_pid  # type: ignore[attr-defined]


def use_for_children() -> None:
    """Make ``multiprocessing.Process`` start children from the preloaded forkserver."""
    install()
    multiprocessing.set_start_method("forkserver", force=True)
