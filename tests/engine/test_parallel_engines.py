"""SGLang's data and tensor parallelism on engines: every request of one sibling group meets on one
DP rank, TP ranks draft alike."""

from __future__ import annotations

import pytest

from sgl_consensus.adapter.dp_dispatch import group_key, rank_for
from sgl_consensus.testing.devices import cuda_available

pytestmark = pytest.mark.engine

PROMPT = "first we add then we subtract then we add"
# SGLang on CPU binds one core per DP rank (it refuses DP without a binding on one NUMA node)
DP2 = {"SGLANG_CPU_OMP_THREADS_BIND": "0|1"}


def test_group_keys_and_ranks_are_stable():
    assert group_key({"consensus_group": "g"}) == group_key({"consensus_group": "g"}) != group_key({"consensus_group": "h"})
    assert group_key({"consensus_group": "g", "consensus_tenant": "a"}) != group_key({"consensus_group": "g"})
    assert group_key({"consensus_origin": "abc"}) is not None and group_key({}) is None and group_key(None) is None
    ranks = [rank_for(f"'t'/'g{i}'", [0, 1]) for i in range(64)]
    assert ranks == [rank_for(f"'t'/'g{i}'", [0, 1]) for i in range(64)]  # same in every process and run
    assert 16 < sum(ranks) < 48  # groups spread over the ranks
    assert rank_for("x", [3]) == 3


def _proposed_per_rank(engine) -> list[int]:
    """Requests drafted so far, per DP rank (internal states arrive in no fixed order)."""
    states = sorted((s["consensus"] for s in engine.get_server_info()["internal_states"]), key=lambda c: c["dp_rank"])
    assert [c["dp_rank"] for c in states] == [0, 1]
    return [c["drafter_stats"]["proposed_requests"] for c in states]


@pytest.mark.skipif(cuda_available(), reason="CPU core binding for two DP ranks")
def test_dp2_keeps_every_group_on_one_rank(engines, tiny_llama):
    engine = engines.get(tiny_llama, "consensus", env=DP2, dp_size=2, max_running_requests=32)
    greedy = {"temperature": 0.0, "max_new_tokens": 24, "ignore_eos": True}
    plain = engine.generate(PROMPT, greedy)["output_ids"]
    for name, run in [("n > 1 children", lambda: engine.generate(PROMPT, {**greedy, "n": 8})),
                      ("a tagged group", lambda: engine.generate([PROMPT] * 8, [
                          {**greedy, "custom_params": {"consensus_group": "dp-g"}}] * 8))]:
        before = _proposed_per_rank(engine)
        outs = run()
        after = _proposed_per_rank(engine)
        assert all(o["output_ids"] == plain for o in outs), name  # still exact under DP
        grew = [b - a for a, b in zip(before, after)]
        assert len(grew) == 2 and sorted(grew)[0] == 0 and sorted(grew)[1] > 0, (name, grew)


PROMPTS = ["one two three one two three one two", "the answer is", "first we add then we subtract then we"]


@pytest.mark.skipif(cuda_available(), reason="CPU core binding for two TP ranks")
def test_tp2_greedy_equals_plain_decoding_and_ranks_draft_alike(engines, tiny_llama):
    """Every TP rank runs its own worker: rank 0's width is every rank's, and with CONSENSUS_CHECK_TP=1
    every step's trees are compared across ranks (a divergence stops the server)."""
    greedy = {"temperature": 0.0, "max_new_tokens": 40}
    plain = [o["output_ids"] for o in engines.get(tiny_llama, None).generate(PROMPTS, greedy)]
    engine = engines.get(tiny_llama, "consensus", env={**DP2, "CONSENSUS_CHECK_TP": "1", "CONSENSUS_ADAPTIVE": "on"},
                         tp_size=2)
    assert [o["output_ids"] for o in engine.generate(PROMPTS, greedy)] == plain
    outs = engine.generate(PROMPTS[2], {**greedy, "n": 4})  # siblings under TP
    assert all(o["output_ids"] == plain[2] for o in outs)
    state = engine.get_server_info()["internal_states"][0]["consensus"]
    assert state["tp_steps_checked"] > 0 and state["steps"] > 0
    assert state["tp_width_broadcasts"] > 0 and state["tp_broadcast_ms_per_step"] > 0  # rank 0's width, timed
