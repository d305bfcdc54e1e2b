"""A scheduler that dies, and bad settings refused before SGLang starts (engines and the CLI; no shared server)."""

from __future__ import annotations

import os

import psutil
import pytest

from sgl_consensus.cpu import preloaded_start
from sgl_consensus.engine import SchedulerDiedError, start_engine
from sgl_consensus.testing.engines import engine_kwargs

pytestmark = pytest.mark.engine


def test_dead_scheduler_raises_readable_error(engines, tiny_llama):
    engines.close()
    if preloaded_start.enabled():  # it outlives engines: not one of this engine's processes
        preloaded_start.ensure_forkserver()
    me = psutil.Process(os.getpid())
    older = {p.pid for p in me.children(recursive=True)}  # e.g. the shared HTTP server's processes
    engine = start_engine(**engine_kwargs(tiny_llama, "consensus"))
    try:
        engine.generate("the answer is", {"temperature": 0, "max_new_tokens": 4})
        children = [c for c in me.children(recursive=True) if c.pid not in older]
        schedulers = [c for c in children if "scheduler" in " ".join(c.cmdline() + [c.name()]).lower()]
        victim = (schedulers or children)[0]
        victim.kill()
        with pytest.raises(SchedulerDiedError, match="died"):
            engine.generate("the answer is", {"temperature": 0, "max_new_tokens": 4})
    finally:
        engine.shutdown()


def test_bad_draft_width_is_a_one_line_error_before_sglang_loads(tiny_llama):
    import subprocess
    import sys
    import time

    for width in ("0", "200", "abc"):
        start = time.monotonic()
        proc = subprocess.run([sys.executable, "-m", "sgl_consensus.cli", "serve", "--device", "cpu", "--",
                               "--model-path", str(tiny_llama), "--speculative-algorithm", "consensus",
                               "--speculative-num-draft-tokens", width], capture_output=True, text=True, timeout=60)
        # Refused before SGLang loads anything (about 1-3 s here; the bound leaves room for a loaded machine).
        assert time.monotonic() - start < 15
        assert proc.returncode == 2 and "Traceback" not in proc.stderr
        assert proc.stderr.strip().splitlines() == [
            f"sgl-consensus serve: --speculative-num-draft-tokens must be an integer in [2, 64] for "
            f"--speculative-algorithm consensus, got '{width}'"]


@pytest.mark.parametrize("env, needle", [
    ({"CONSENSUS_LOG_INTERVAL": "nan"}, "CONSENSUS_LOG_INTERVAL must be a finite number"),
    ({"CONSENSUS_ISOLATION": "open"}, "CONSENSUS_ISOLATION"),
    ({"CONSENSUS_CPU_SPAWN": "yes"}, "CONSENSUS_CPU_SPAWN='yes': expected 0"),
])
def test_bad_knobs_stop_the_cli_at_once(tiny_llama, env, needle):
    import subprocess
    import sys

    proc = subprocess.run([sys.executable, "-m", "sgl_consensus.cli", "serve", "--device", "cpu", "--",
                           "--model-path", str(tiny_llama), "--speculative-algorithm", "consensus"],
                          capture_output=True, text=True, timeout=60, env={**os.environ, **env})
    assert proc.returncode == 2 and needle in proc.stderr and len(proc.stderr.strip().splitlines()) == 1


def test_engine_refuses_a_bad_draft_width(tiny_llama):
    from sgl_consensus.settings import SettingsError

    with pytest.raises(SettingsError, match=r"--speculative-num-draft-tokens must be an integer in \[2, 64\]"):
        start_engine(**engine_kwargs(tiny_llama, "consensus", speculative_num_draft_tokens=0))


@pytest.mark.parametrize("flag", ["enable_watermark"])  # deterministic inference: SGLang refuses it on CPU first
def test_unsupported_sampling_features_are_refused_at_start(tiny_llama, flag):
    """Exact verification has no per-request seeds or watermarks: refused before a request can fail."""
    from sgl_consensus.settings import SettingsError

    with pytest.raises(SettingsError, match=f"does not support --{flag.replace('_', '-')}"):
        start_engine(**engine_kwargs(tiny_llama, "consensus", **{flag: True}))
