"""The HTTP server with --speculative-algorithm consensus, and a scheduler that dies."""

from __future__ import annotations

import json
import os
import socket
import subprocess
import sys
import time
import urllib.request

import psutil
import pytest

from sgl_consensus.engine import SchedulerDiedError, start_engine

from sgl_consensus.testing.engines import engine_kwargs

pytestmark = pytest.mark.engine


def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _post(url: str, payload: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def _wait_healthy(base: str, proc: subprocess.Popen, timeout: float = 240) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if proc.poll() is not None:
            raise AssertionError(f"server exited early with code {proc.returncode}")
        try:
            with urllib.request.urlopen(base + "/health", timeout=5) as resp:
                if resp.status == 200:
                    return
        except OSError:
            time.sleep(1)
    raise AssertionError("server did not become healthy in time")


@pytest.fixture
def consensus_server(engines, tiny_llama, tmp_path):
    engines.close()  # 2 cores: one SGLang instance at a time
    port = _free_port()
    log = open(tmp_path / "server.log", "w")
    cmd = [sys.executable, "-m", "sgl_consensus.cli", "serve", "--device", "cpu", "--",
           "--model-path", str(tiny_llama), "--speculative-algorithm", "consensus",
           "--speculative-num-draft-tokens", "4", "--host", "127.0.0.1", "--port", str(port),
           "--max-running-requests", "8", "--log-level", "warning"]
    proc = subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        _wait_healthy(base, proc)
        yield base
    except AssertionError:
        log.flush()
        raise AssertionError((tmp_path / "server.log").read_text()[-4000:])
    finally:
        for p in [*psutil.Process(proc.pid).children(recursive=True), psutil.Process(proc.pid)]:
            try:
                p.kill()
            except psutil.NoSuchProcess:
                pass
        proc.wait(timeout=60)
        log.close()


def test_server_answers_generate_and_completions(consensus_server):
    out = _post(consensus_server + "/generate", {
        "text": "one two three one two three one two three one",
        "sampling_params": {"temperature": 0, "max_new_tokens": 24}})
    assert out["meta_info"]["completion_tokens"] == 24
    assert out["meta_info"]["spec_verify_ct"] > 0

    completion = _post(consensus_server + "/v1/completions", {
        "model": "default", "prompt": "the answer is", "max_tokens": 16, "temperature": 0})
    assert completion["choices"][0]["text"]
    assert completion["usage"]["completion_tokens"] == 16


def test_dead_scheduler_raises_readable_error(engines, tiny_llama):
    engines.close()
    engine = start_engine(**engine_kwargs(tiny_llama, "consensus"))
    try:
        engine.generate("the answer is", {"temperature": 0, "max_new_tokens": 4})
        children = psutil.Process(os.getpid()).children(recursive=True)
        schedulers = [c for c in children if "scheduler" in " ".join(c.cmdline() + [c.name()]).lower()]
        victim = (schedulers or children)[0]
        victim.kill()
        with pytest.raises(SchedulerDiedError, match="died"):
            engine.generate("the answer is", {"temperature": 0, "max_new_tokens": 4})
    finally:
        engine.shutdown()
