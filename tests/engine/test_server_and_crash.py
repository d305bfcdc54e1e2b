"""The HTTP server with --speculative-algorithm consensus: frontend forks, and hostile clients it outlives."""

from __future__ import annotations

import json
import urllib.error
import urllib.request

import pytest

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
    # Lead-lag over HTTP. The branches' requests race the leader's decoding: a follower queued
    # after its leader already had `lead` tokens is not held. A lead of 16 of the 20 tokens leaves
    # 16 decode steps for the followers to arrive (lead=4 once missed all of them in a loaded suite).
    led = forked.run(backend=ConsensusRuntimeEndpoint(consensus_server, lead=16))
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


# --- hostile clients: bad requests are refused at the door, the server stays up ----------------

def _post_status(url: str, payload: dict) -> tuple[int, str]:
    """Status and body text (a JSON object, or server-sent events when streaming)."""
    req = urllib.request.Request(url, json.dumps(payload).encode(), {"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(req, timeout=120) as resp:
            return resp.status, resp.read().decode(errors="replace")
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def _greedy_ids(url: str) -> list[int]:
    return _post(url + "/generate", {"text": PROMPT, "sampling_params": {
        "temperature": 0, "max_new_tokens": 16, "ignore_eos": True}})["output_ids"]


@pytest.mark.parametrize("payload, needle", [
    ({"text": PROMPT, "sampling_params": {"custom_params": "consensus_group"}}, "custom_params must be a JSON object"),
    ({"text": PROMPT, "sampling_params": {"custom_params": [1, 2]}}, "custom_params must be a JSON object"),
    ({"text": PROMPT, "sampling_params": {"custom_params": {"consensus_group": True}}}, "consensus_group"),
    ({"text": PROMPT, "sampling_params": {"custom_params": {"consensus_lead": "soon"}}}, "consensus_lead"),
    ({"text": PROMPT, "sampling_params": {"custom_params": {"consensus_tenant": ""}}}, "consensus_tenant"),
    ({"text": PROMPT, "sampling_params": {"custom_params": {"consensus_origin": "x"}}}, "set by the server only"),
    ({"text": PROMPT, "sampling_params": {"n": 2, "custom_params": "g"}}, "custom_params must be a JSON object"),
    ({"text": "", "sampling_params": {}}, "the prompt is empty"),
    ({"input_ids": [1, 2, 10 ** 9], "sampling_params": {}}, r"input_ids\[2\] = 1000000000"),
    ({"input_ids": [1, -3], "sampling_params": {}}, r"input_ids\[1\] = -3"),
])
def test_malformed_requests_get_a_clear_400_and_the_server_stays_up(consensus_server, payload, needle):
    import re

    before = _greedy_ids(consensus_server)
    payload["sampling_params"] = {"max_new_tokens": 4, **payload["sampling_params"]}
    status, body = _post_status(consensus_server + "/generate", payload)
    assert status == 400 and re.search(needle, body), (status, body)
    assert _greedy_ids(consensus_server) == before


def test_fuzzed_requests_never_take_the_server_down(consensus_server):
    """Random JSON in custom_params and in sampling parameters (hypothesis, fixed seed): every
    request is answered, the server stays healthy, and greedy output does not change."""
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st

    before = _greedy_ids(consensus_server)
    leaf = st.none() | st.booleans() | st.integers(-2 ** 70, 2 ** 70) | st.floats(allow_nan=False) | st.text(max_size=12)
    value = st.recursive(leaf, lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=8), inner,
                                                                                         max_size=3), max_leaves=6)
    custom_keys = st.sampled_from(["consensus_group", "consensus_tenant", "consensus_lead", "consensus_origin",
                                   "consensus_other", "logit_processor_arg"])
    custom = value | st.dictionaries(custom_keys, value | st.text(min_size=1, max_size=8), max_size=3)
    sampling_keys = ["temperature", "top_p", "top_k", "min_p", "n", "stop", "stop_token_ids", "ignore_eos",
                     "frequency_penalty", "presence_penalty", "repetition_penalty", "logit_bias", "regex",
                     "min_new_tokens", "no_stop_trim", "skip_special_tokens"]
    optional = {key: st.integers(-2, 3) if key == "n" else value for key in sampling_keys}
    optional["custom_params"] = custom
    sampling = st.fixed_dictionaries({"max_new_tokens": st.integers(0, 6)}, optional=optional)
    answered: list[int] = []

    @settings(max_examples=80, deadline=None, derandomize=True, suppress_health_check=list(HealthCheck))
    @given(sampling=sampling, stream=st.booleans())
    def probe(sampling, stream):
        status, _ = _post_status(consensus_server + "/generate", {"text": PROMPT, "sampling_params": sampling,
                                                                  "stream": stream})
        answered.append(status)
        assert status in (200, 400), (status, sampling)
        with urllib.request.urlopen(consensus_server + "/health", timeout=30) as resp:
            assert resp.status == 200, sampling

    probe()
    assert answered.count(200) >= 5 and answered.count(400) >= 5  # both paths were exercised
    assert _greedy_ids(consensus_server) == before
