"""Start SGLang's offline ``Engine`` so that a crashing scheduler raises instead of killing us.

By default, when one of SGLang's child processes dies, the Engine's SIGQUIT handlers kill the whole
process tree, the caller included (a test runner exits 137 with no report). :func:`start_engine`
installs handlers that kill only SGLang's children and surface the failure as
:class:`SchedulerDiedError` in the caller.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import signal
from typing import Any


class SchedulerDiedError(RuntimeError):
    """An SGLang child process (scheduler, detokenizer) died; its log explains why."""


_MESSAGE = (
    "an SGLang child process (scheduler or detokenizer) died; its traceback is in the log above. "
    "The engine is unusable: start a new one."
)


# Processes that were already our children when the latest engine started (e.g. an HTTP server this
# process launched): a dead engine's clean-up must spare them.
_spared_pids: set[int] = set()


def _child_pids() -> set[int]:
    import psutil

    return {child.pid for child in psutil.Process(os.getpid()).children(recursive=True)}


def _kill_children(wait_timeout: float | None = None, spared: set[int] | None = None) -> None:
    """Kill this process's children that the engine brought, sparing those older than it."""
    import psutil

    spared = _spared_pids if spared is None else spared
    killed = []
    for child in psutil.Process(os.getpid()).children(recursive=True):
        if child.pid in spared:
            continue
        try:
            child.kill()
            killed.append(child)
        except psutil.NoSuchProcess:
            pass
    if wait_timeout is not None:
        psutil.wait_procs(killed, timeout=wait_timeout)


@contextlib.contextmanager
def _sparing_older_children(spared: set[int]):
    """SGLang's ``Engine.shutdown`` kills every child of this process (``kill_process_tree(os.getpid(),
    include_parent=False)``), e.g. an HTTP server started before the engine; during our shutdown that
    one call kills only the engine's own children."""
    from sglang.srt.entrypoints import engine as engine_module

    original = engine_module.kill_process_tree

    def kill_tree(parent_pid, include_parent=True, skip_pid=None, wait_timeout=60):
        if parent_pid == os.getpid() and not include_parent and skip_pid is None:
            _kill_children(wait_timeout, spared)
        else:
            original(parent_pid, include_parent=include_parent, skip_pid=skip_pid, wait_timeout=wait_timeout)

    engine_module.kill_process_tree = kill_tree
    try:
        yield
    finally:
        engine_module.kill_process_tree = original


def _launch_phase_sigquit(signum, frame) -> None:
    _kill_children()
    raise SchedulerDiedError(_MESSAGE)


def _safe_signal_handler_class(base: type) -> type:
    class SafeSignalHandler(base):  # type: ignore[misc, valid-type]
        def running_phase_sigquit_handler(self, signum=None, frame=None):
            watchdog = getattr(self.tokenizer_manager, "_subprocess_watchdog", None)
            if watchdog is not None:
                watchdog.stop()
            _kill_children()
            self.tokenizer_manager.sgl_consensus_died = True
            # Wake up whoever waits on the loop: run_until_complete then raises, and
            # ConsensusEngine turns that into SchedulerDiedError.
            asyncio.get_event_loop().stop()

    return SafeSignalHandler


class _EngineProxy:
    """Forwards to an SGLang Engine; turns a dead child into :class:`SchedulerDiedError`."""

    def __init__(self, engine: Any) -> None:
        self._engine = engine
        self._spared = set(_spared_pids)  # our children older than this engine

    def _died(self) -> bool:
        return getattr(self._engine.tokenizer_manager, "sgl_consensus_died", False)

    def _guarded(self, fn):
        """``fn`` that raises :class:`SchedulerDiedError` once an SGLang child has died."""

        def call(*args, **kwargs):
            if self._died():
                raise SchedulerDiedError(_MESSAGE)
            try:
                return fn(*args, **kwargs)
            except RuntimeError as exc:
                if self._died():
                    raise SchedulerDiedError(_MESSAGE) from exc
                raise

        return call

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self._engine, name)
        return self._guarded(attr) if callable(attr) else attr

    def run(self, coroutine):
        """Run a coroutine (e.g. several ``async_generate`` calls) on the engine's event loop."""
        return self._guarded(self._engine.loop.run_until_complete)(coroutine)

    def shutdown(self) -> None:
        if self._died():
            _kill_children(spared=self._spared)
            return
        with _sparing_older_children(self._spared):
            self._engine.shutdown()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.shutdown()


def start_engine(**engine_kwargs: Any) -> Any:
    """``sglang.Engine(**engine_kwargs)`` with crash handling that spares the calling process."""
    import sglang as sgl

    from sgl_consensus.cpu import preloaded_start

    if preloaded_start.enabled():
        # Started now, it is one of the children spared when this engine shuts down, and serves
        # the next engine too.
        preloaded_start.ensure_forkserver()
    _spared_pids.clear()
    _spared_pids.update(_child_pids())
    engine_kwargs.setdefault("custom_sigquit_handler", _launch_phase_sigquit)
    engine = sgl.Engine(**engine_kwargs)
    manager = engine.tokenizer_manager
    manager.signal_handler_class = _safe_signal_handler_class(manager.signal_handler_class)
    # The launch-phase handler stays until the tokenizer manager installs its own (first request).
    signal.signal(signal.SIGQUIT, _launch_phase_sigquit)
    return _EngineProxy(engine)


@contextlib.contextmanager
def environment(values: dict[str, str]):
    """Set variables while SGLang spawns its processes (they inherit them), then restore."""
    saved = {k: os.environ.get(k) for k in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for k, v in saved.items():
            if v is None:
                os.environ.pop(k, None)
            else:
                os.environ[k] = v
