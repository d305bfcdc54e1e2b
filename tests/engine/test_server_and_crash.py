"""The HTTP server with --speculative-algorithm consensus, frontend forks, and a scheduler that dies."""

from __future__ import annotations

import json
import os
import urllib.request

import psutil
import pytest

from sgl_consensus.engine import SchedulerDiedError, start_engine
from sgl_consensus.testing.engines import engine_kwargs

pytestmark = pytest.mark.engine

PROMPT = "one two three one two three one two three one"


def _post(url: str, payload: dict, timeout: float = 120) -> dict:
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    with urllib.request.urlopen(req, timeout=timeout) as resp:
        return json.loads(resp.read())


def test_server_answers_generate_and_completions(consensus_server):
    out = _post(consensus_server + "/generate", {
        "text": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 24, "ignore_eos": True}})
    assert out["meta_info"]["completion_tokens"] == 24
    assert out["meta_info"]["spec_verify_ct"] > 0

    completion = _post(consensus_server + "/v1/completions", {
        "model": "default", "prompt": "the answer is", "max_tokens": 16, "temperature": 0, "ignore_eos": True})
    assert completion["choices"][0]["text"]
    assert completion["usage"]["completion_tokens"] == 16


def test_fork_branches_are_tagged_and_greedy_equals_plain(consensus_server):
    import sglang as sgl

    from sgl_consensus.frontend import ConsensusRuntimeEndpoint

    @sgl.function
    def forked(s):
        s += PROMPT
        branches = s.fork(3)
        branches += sgl.gen("out", max_tokens=20, temperature=0)
        branches.join()
        s.set_var("outs", [b["out"] for b in branches])

    plain = _post(consensus_server + "/generate", {
        "text": PROMPT, "sampling_params": {"temperature": 0, "max_new_tokens": 20}})["text"]
    state = forked.run(backend=ConsensusRuntimeEndpoint(consensus_server))
    assert state["outs"] == [plain] * 3
    holds_before = _server_consensus(consensus_server)["lead_lag"]["lead_holds"]
    led = forked.run(backend=ConsensusRuntimeEndpoint(consensus_server, lead=4))  # lead-lag over HTTP
    assert led["outs"] == [plain] * 3
    assert _server_consensus(consensus_server)["lead_lag"]["lead_holds"] > holds_before

    consensus = _server_consensus(consensus_server)
    assert consensus["drafter"] == "consensus" and consensus["steps"] > 0
    assert consensus["drafter_stats"]["proposed_requests"] > 0


def _server_consensus(url: str) -> dict:
    with urllib.request.urlopen(url + "/server_info", timeout=30) as resp:
        return json.loads(resp.read())["internal_states"][0]["consensus"]


def test_endpoint_rejects_a_bad_lead_before_connecting():
    from sgl_consensus.frontend import ConsensusRuntimeEndpoint

    with pytest.raises(ValueError, match=r"ConsensusRuntimeEndpoint\(lead=...\)"):
        ConsensusRuntimeEndpoint("http://127.0.0.1:9", lead="soon")


def test_dead_scheduler_raises_readable_error(engines, tiny_llama):
    engines.close()
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
