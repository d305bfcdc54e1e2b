"""CPU engines start SGLang's scheduler and detokenizer from a preloaded forkserver
(``sgl_consensus/cpu/preloaded_start.py``): what ``spawn`` gave those children must still hold."""

from __future__ import annotations

import multiprocessing
import os
import signal
import threading

import psutil
import pytest

from sgl_consensus.console import engine_output_to
from sgl_consensus.cpu import preloaded_start
from sgl_consensus.engine import SchedulerDiedError
from sgl_consensus.testing.devices import device

pytestmark = pytest.mark.skipif(device() != "cpu", reason="the preloaded forkserver is CPU mode's")

PROMPT = "the answer is"
GREEDY = {"temperature": 0, "max_new_tokens": 4}


def _engine_children(forkserver_pid: int) -> list[psutil.Process]:
    return psutil.Process(forkserver_pid).children()


def test_a_child_runs_in_its_launchers_environment_and_output_as_they_were_at_its_start(tmp_path):
    """The forkserver started under other settings; the child must see the ones its launcher had."""
    preloaded_start.ensure_forkserver()
    log = tmp_path / "child.log"
    os.environ["SGC_PRELOAD_PROBE"] = "set-after-the-forkserver-started"
    try:
        with engine_output_to(log):
            child = multiprocessing.get_context("forkserver").Process(
                target=os.system, args=("echo probe=$SGC_PRELOAD_PROBE >&2",))
            child.start()
        child.join(60)
    finally:
        del os.environ["SGC_PRELOAD_PROBE"]
    assert child.exitcode == 0
    assert "probe=set-after-the-forkserver-started" in log.read_text()


def test_engine_children_are_forks_of_the_forkserver_and_a_failing_child_stops_the_engine(engines, tiny_llama):
    """SGLang's children signal a fatal error with SIGQUIT to their parent (the forkserver), which must
    reach the engine's process: the request in flight raises instead of hanging."""
    engine = engines.get(tiny_llama, "consensus")
    engine.generate(PROMPT, GREEDY)
    forkserver = preloaded_start.ensure_forkserver()
    children = _engine_children(forkserver)
    # Named as under spawn (ps, pkill and SGLang's own tools find them by these names).
    assert sorted(c.name() for c in children) == ["sglang::detokenizer", "sglang::scheduler"], \
        [c.cmdline() for c in children]
    # What a scheduler that hits an exception sends its parent, while a long request is in flight
    # (SGLang handles SIGQUIT on the engine's event loop, which runs while a request does).
    failure = threading.Timer(1.0, os.kill, (forkserver, signal.SIGQUIT))
    failure.start()
    try:
        with pytest.raises(SchedulerDiedError, match="died"):
            engine.generate(PROMPT, {"temperature": 0, "max_new_tokens": 2000, "ignore_eos": True})
    finally:
        failure.cancel()
        engines.close()
    psutil.wait_procs(children, timeout=30)
    assert not any(c.is_running() for c in children)
    # The forkserver outlives the failed engine and serves the next one.
    assert psutil.pid_exists(forkserver) and preloaded_start.ensure_forkserver() == forkserver
    engine = engines.get(tiny_llama, None)
    assert engine.generate(PROMPT, GREEDY)["output_ids"]
    assert len(_engine_children(forkserver)) >= 2


def test_spawn_stays_available(engines, tiny_llama):
    """CONSENSUS_CPU_SPAWN=1: SGLang's own start method, children of the engine's process."""
    engines.close()
    forkserver = preloaded_start.ensure_forkserver()
    before = {c.pid for c in psutil.Process().children()}
    engine = engines.get(tiny_llama, None, env={preloaded_start.SPAWN_ENV: "1"})
    assert engine.generate(PROMPT, GREEDY)["output_ids"]
    started = [c for c in psutil.Process().children() if c.pid not in before]
    forked = _engine_children(forkserver)
    engines.close()
    assert len(started) >= 2 and not forked, ([c.cmdline() for c in started], [c.cmdline() for c in forked])
