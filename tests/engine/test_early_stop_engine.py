"""Early-stopping self-consistency in SGLang's real engine and server: the rule decides which paths
run, never what they say, and aborted paths leave nothing behind."""

from __future__ import annotations

import asyncio
from dataclasses import dataclass

import pytest

from sgl_consensus.early_stop import Window
from sgl_consensus.early_stop_runner import EngineBackend, run_vote

pytestmark = pytest.mark.engine

PROMPT = "first we add then we subtract then we add"


@dataclass(frozen=True)
class FirstVote:
    """Stops at the first vote: everything still running is aborted."""

    min_votes: int = 1
    name: str = "first"

    def stops(self, counts, recent, undecided) -> bool:
        return True


def _spread_params(max_new_tokens: int) -> dict:
    """Sampled paths that stop at random lengths: many stop tokens, each a few % likely per step."""
    return {"temperature": 1.0, "max_new_tokens": max_new_tokens, "stop_token_ids": list(range(3, 40))}


def _internal(engine) -> dict:
    return engine.get_server_info()["internal_states"][0]["consensus"]


def test_the_rule_aborts_the_running_paths(engines, tiny_llama):
    engine = engines.get(tiny_llama, "consensus", max_running_requests=64)
    result = engine.run(run_vote(EngineBackend(engine), PROMPT, _spread_params(96), 8, FirstVote(), len))
    voted = [p for p in result.paths if p.voted]
    assert len(voted) == 1 and result.stopped_after == 1 and result.answer == voted[0].answer
    assert any(p.aborted for p in result.paths), [(p.output_tokens, p.voted) for p in result.paths]
    assert result.output_tokens < 8 * 96
    state = _internal(engine)
    assert state["tracked_requests"] == 0 and state["drafter_stats"]["live_requests"] == 0


def test_finished_paths_say_what_they_would_have_said(engines, tiny_llama):
    """Greedy paths in waves of 2 under ESC(2): the first wave decides, the rest never start, and
    the paths that ran produced exactly the plain greedy output."""
    engine = engines.get(tiny_llama, "consensus", max_running_requests=64)
    greedy = {"temperature": 0.0, "max_new_tokens": 24}
    plain = engine.generate(PROMPT, greedy)["text"]
    result = engine.run(run_vote(EngineBackend(engine), PROMPT, greedy, 6, Window(2), len, in_flight=2))
    assert result.never_launched == 4 and result.stopped_after == 2
    assert [p.text for p in result.paths if p.voted] == [plain, plain]


def test_thousand_groups_with_early_stops_leave_nothing_behind(engines, tiny_llama):
    """1,000 votes of 2 paths, half of them lead-lag scheduled, each stopped at its first vote."""
    engine = engines.get(tiny_llama, "consensus", max_running_requests=64)
    backend = EngineBackend(engine)

    async def votes(start: int):
        return await asyncio.gather(*(
            run_vote(backend, f"{PROMPT} {i % 7}", _spread_params(12), 2, FirstVote(), len,
                     lead=2 if i % 2 else 0, group=f"es-{i}") for i in range(start, start + 100)))

    results = []
    for start in range(0, 1000, 100):
        results += engine.run(votes(start))
    assert all(sum(p.voted for p in r.paths) == 1 for r in results)
    assert sum(p.aborted for r in results for p in r.paths) > 0
    state = _internal(engine)
    drafter = state["drafter_stats"]
    assert state["tracked_requests"] == 0 and state["live_prefix_clusters"] == 0
    assert drafter["live_requests"] == 0 and drafter["live_groups"] == 0 and drafter["group_trie_nodes"] == 0
    assert state["lead_lag"]["lead_groups_tracked"] == 0 and state["lead_lag"]["lead_holds"] > 0


def test_fork_program_votes_through_the_endpoint(consensus_server):
    """``ConsensusRuntimeEndpoint(early_stop="decided")``: a fork of 4 greedy branches with one
    answer is decided after 3 votes (3 > 0 + 1 undecided); the fourth does not vote."""
    import sglang as sgl

    from sgl_consensus.frontend import ConsensusRuntimeEndpoint

    @sgl.function
    def vote(s):
        s += PROMPT
        forks = s.fork(4)
        forks += sgl.gen("out", max_tokens=16, temperature=0.0)
        forks.join()
        s.set_var("meta", [f.get_meta_info("out") for f in forks])
        s.set_var("texts", [f["out"] for f in forks])

    endpoint = ConsensusRuntimeEndpoint(consensus_server, early_stop="decided", extract=lambda text: "same")
    state = vote.run(backend=endpoint)
    marks = [m["consensus_vote"] for m in state["meta"]]
    assert sum(m["voted"] for m in marks) == 3, marks
    assert all(m["answer"] == "same" for m in marks if m["voted"])
    voted_texts = {t for t, m in zip(state["texts"], marks) if m["voted"]}
    assert len(voted_texts) == 1  # greedy branches agree

    # one branch at a time under ESC(2): two votes decide, the other two are never sent
    waves = ConsensusRuntimeEndpoint(consensus_server, early_stop="esc:2", extract=lambda text: "same", in_flight=1)
    state = vote.run(backend=waves)
    marks = [m["consensus_vote"] for m in state["meta"]]
    assert sum(m["voted"] for m in marks) == 2 and sum(not m["sent"] for m in marks if not m["voted"]) == 2, marks
    assert {t for t, m in zip(state["texts"], marks) if m["voted"]} == voted_texts


def _post_status(url: str, payload: dict) -> tuple[int, dict | str]:
    import json
    import urllib.error
    import urllib.request

    request = urllib.request.Request(url + "/generate", data=json.dumps(payload).encode(),
                                     headers={"Content-Type": "application/json"})
    try:
        with urllib.request.urlopen(request, timeout=300) as resp:
            return resp.status, json.loads(resp.read())
    except urllib.error.HTTPError as exc:
        return exc.code, exc.read().decode(errors="replace")


def test_server_stops_an_n_request_once_its_vote_is_decided(consensus_server):
    """``n = 24`` greedy children on a server with 16 running slots, ESC(2) on the whole text: the
    first finishers decide, the children still waiting or running are aborted, every child comes
    back, and the children that voted said exactly what plain greedy decoding says."""
    greedy = {"temperature": 0.0, "max_new_tokens": 32, "ignore_eos": True}
    status, plain = _post_status(consensus_server, {"text": PROMPT, "sampling_params": greedy})
    assert status == 200
    status, outs = _post_status(consensus_server, {"text": PROMPT, "sampling_params": {
        **greedy, "n": 24, "custom_params": {"consensus_early_stop": "esc:2", "consensus_answer": "text"}}})
    assert status == 200 and len(outs) == 24
    marks = [o["meta_info"]["consensus_vote"] for o in outs]
    voted = [o for o, m in zip(outs, marks) if m["voted"]]
    assert len(voted) == 2 and voted[-1]["meta_info"]["consensus_vote"]["stopped"], marks
    assert all(o["text"] == plain["text"] for o in voted)
    aborted = [o for o, m in zip(outs, marks) if m.get("aborted_by_early_stop")]
    assert aborted and all(o["meta_info"]["finish_reason"]["type"] == "abort" for o in aborted)
    assert sum(o["meta_info"]["completion_tokens"] for o in outs) < 24 * 32
    state = _server_consensus(consensus_server)
    assert state["tracked_requests"] == 0 and state["drafter_stats"]["live_requests"] == 0


@pytest.mark.parametrize("params, needle", [
    ({"n": 1, "custom_params": {"consensus_early_stop": "esc:2"}}, "needs n > 1"),
    ({"n": 4, "custom_params": {"consensus_early_stop": "esc:1"}}, "ESC window"),
])
def test_server_refuses_a_bad_early_stop_with_a_clear_400(consensus_server, params, needle):
    status, body = _post_status(consensus_server, {"text": PROMPT, "sampling_params": {"max_new_tokens": 4, **params}})
    assert status == 400 and needle in str(body), (status, body)


def _server_consensus(url: str) -> dict:
    import json
    import time
    import urllib.request

    for _ in range(50):  # finished requests leave the worker on its next step or report
        with urllib.request.urlopen(url + "/server_info", timeout=60) as resp:
            state = json.loads(resp.read())["internal_states"][0]["consensus"]
        if state["tracked_requests"] == 0:
            return state
        time.sleep(0.2)
    return state
