"""The consensus worker in SGLang's real engine: n > 1, grouping, live probabilities, the width per
step, cleanup (lossless sampling: test_sampling_distribution.py)."""

from __future__ import annotations

import asyncio
import random
import numpy as np
import pytest

pytestmark = pytest.mark.engine

PROMPT = "first we add then we subtract then we add"


def _internal(engine) -> dict:
    return engine.get_server_info()["internal_states"][0]["consensus"]


# --- greedy: n > 1 ---------------------------------------------------------------------------

def test_n_gt_1_greedy_equals_plain(engines, tiny_qwen2):
    params = {"temperature": 0.0, "max_new_tokens": 32}
    plain = engines.plain_reference(tiny_qwen2, PROMPT, params)["output_ids"]
    engine = engines.get(tiny_qwen2, "consensus")
    outs = engine.generate(PROMPT, {**params, "n": 4})
    assert len(outs) == 4
    assert all(o["output_ids"] == plain for o in outs)
    # the n > 1 siblings were grouped: their drafts came (in part) from each other
    assert _internal(engine)["drafter_stats"]["draft_nodes_sibling"] > 0
    # per request and verify step, meta_info says where draft nodes came from and the drafting time
    meta = outs[0]["meta_info"]
    steps = meta["spec_verify_ct"]
    assert len(meta["consensus_draft_ms"]) == steps and len(meta["consensus_draft_nodes"]) == steps
    assert all(len(row) == 3 and min(row) >= 0 for row in meta["consensus_draft_nodes"])
    # the time inside the drafter's data plane: writes and proposals happen within the draft step
    state = _internal(engine)
    core = state["core_ms_per_step"]
    if state["draft_core"] == "native":  # how its step calls are made; ctypes says why not the extension
        assert state["draft_core_calls"] == "fastcall" or state["draft_core_calls"].startswith("ctypes (")
    assert set(core) == {"writes", "proposals", "merges"}
    assert core["writes"] > 0 and core["proposals"] > 0
    after_launch = sum(state["after_launch_ms_per_step"].values())
    assert core["writes"] + core["proposals"] <= state["draft_ms_per_step"] + after_launch, (core, state)


# --- siblings feed drafts; groups are isolated ----------------------------------------------

async def _staggered(engine, lead_tag, follower_tag, lead_tokens=64, follower_tokens=40):
    """A leader runs ahead; once it has produced tokens, a follower with the same prompt starts."""
    greedy = {"temperature": 0.0, "ignore_eos": True}
    lead = await engine.async_generate(
        PROMPT, {**greedy, "max_new_tokens": lead_tokens, "custom_params": {"consensus_group": lead_tag}},
        stream=True)
    produced = 0
    follower = None
    async for chunk in lead:
        produced = len(chunk.get("output_ids") or []) or produced + 1
        if follower is None and produced >= follower_tokens:
            follower = asyncio.ensure_future(engine.async_generate(
                PROMPT, {**greedy, "max_new_tokens": follower_tokens,
                         "custom_params": {"consensus_group": follower_tag}}))
    if follower is None:
        raise AssertionError("the leader finished before the follower could start")
    return (await follower)["meta_info"]["spec_accept_length"]


def _acceptance(engines, peaky_model, grouping: str) -> tuple[float, float]:
    """Accept lengths of a follower whose leader is in its own group, and in another group (at the
    full width every step: what is measured is the drafts, not the width policy's timing-driven choices)."""
    engine = engines.get(peaky_model, "consensus", env={"CONSENSUS_GROUPING": grouping,
                                                      "CONSENSUS_DRAFT_USE_GLOBAL": "0", "CONSENSUS_ADAPTIVE": "off"})
    return engine.run(_staggered(engine, "g", "g")), engine.run(_staggered(engine, "h1", "h2"))


def test_siblings_ahead_raise_acceptance(engines, peaky_model):
    same_group, other_group = _acceptance(engines, peaky_model, "on")
    # a sibling that is ahead drafts (almost) the whole continuation
    assert same_group > other_group + 0.5, (same_group, other_group)
    # without grouping, a shared tag changes nothing
    same_off, other_off = _acceptance(engines, peaky_model, "off")
    assert abs(same_off - other_off) < 0.5, (same_off, other_off)
    assert same_group > same_off + 0.5, (same_group, same_off, "grouping did not raise acceptance")


# --- live probabilities: the verify's committed-token probabilities reach the drafter ----------

def test_committed_token_probabilities_reach_the_drafter(engines, peaky_model):
    engine = engines.get(peaky_model, "consensus")
    before = _internal(engine)
    params = {"temperature": 1.0, "max_new_tokens": 12, "ignore_eos": True}
    outs = engine.generate([PROMPT] * 16, params, return_logprob=True)
    after = _internal(engine)
    handed = after["tokens_with_probs"] - before["tokens_with_probs"]
    produced = sum(len(o["output_ids"]) for o in outs)
    # Every token a verify committed, except each request's first (prefill) and last verify's.
    assert handed >= produced // 2, (handed, produced)
    # Their mean probability agrees with SGLang's own logprobs of the same outputs (T = 1).
    sglang_mean = np.mean([np.exp(lp) for o in outs for lp, _, _ in o["meta_info"]["output_token_logprobs"][1:]])
    recorded_mean = (after["mean_committed_prob"] * after["tokens_with_probs"]
                     - before["mean_committed_prob"] * before["tokens_with_probs"]) / handed
    assert abs(recorded_mean - sglang_mean) < 0.05, (recorded_mean, sglang_mean)


# --- the verify width per step -----------------------------------------------------------------

def test_no_evidence_drives_the_width_to_one(engines, tiny_llama):
    """A drafter that knows nothing proposes nothing: the steps verify 1 node from the first one on."""
    env = {"CONSENSUS_DRAFT_USE_SIBLINGS": "0", "CONSENSUS_DRAFT_USE_OWN_HISTORY": "0",
           "CONSENSUS_DRAFT_USE_GLOBAL": "0"}
    engine = engines.get(tiny_llama, "consensus", env=env)
    out = engine.generate(PROMPT, {"temperature": 0.0, "max_new_tokens": 40, "ignore_eos": True})
    widths = out["meta_info"]["consensus_width"]
    assert len(widths) == out["meta_info"]["spec_verify_ct"]
    assert widths[0] == 1, widths
    explored = sum(w != 1 for w in widths)
    assert explored <= len(widths) // 8 + 1, widths  # only the periodic exploration steps leave width 1
    report = _internal(engine)["adaptive"]
    assert report["mode"] == "on" and report["width_histogram"]["1"] >= 20
    assert report["cost_model_seconds"]["observations"] > 0 and len(report["calibration"]) > 0


# --- cleanup: 1,000 requests with aborts and mixed lengths leave nothing behind --------------

def test_thousand_requests_with_aborts_leave_drafter_empty(engines, tiny_llama):
    engine = engines.get(tiny_llama, "consensus", max_running_requests=64)
    rng = random.Random(0)
    words = PROMPT.split()

    async def one(i: int):
        prompt = " ".join(rng.choice(words) for _ in range(rng.randint(3, 12)))
        params = {"temperature": rng.choice([0.0, 1.0]), "max_new_tokens": rng.randint(1, 12),
                  "custom_params": {"consensus_group": f"g{i // 4}"}}
        task = asyncio.ensure_future(engine.async_generate(prompt, params, rid=f"leak-{i}"))
        if i % 7 == 0:  # abort about one in seven, at various points
            await asyncio.sleep(rng.random() * 0.05)
            engine.tokenizer_manager.abort_request(f"leak-{i}")
        try:
            await task
        except Exception:  # aborted requests may surface as errors: fine, they must still be freed
            pass

    async def all_requests():
        for start in range(0, 1000, 100):
            await asyncio.gather(*(one(i) for i in range(start, start + 100)))

    engine.run(all_requests())
    state = _internal(engine)
    drafter = state["drafter_stats"]
    assert state["tracked_requests"] == 0
    assert state["live_prefix_clusters"] == 0
    assert drafter["live_requests"] == 0 and drafter["live_groups"] == 0 and drafter["group_trie_nodes"] == 0
    assert drafter["proposed_requests"] > 0  # it really drafted along the way

    # finished groups feed the bounded global corpus; a cache flush empties it too
    assert drafter["global_trie_nodes"] + drafter["global_pending_merges"] > 0
    assert engine.flush_cache().success
    after = _internal(engine)["drafter_stats"]
    assert after["global_trie_nodes"] == 0 and after["global_pending_merges"] == 0


# --- constrained decoding and unsupported set-ups --------------------------------------------

def test_grammar_constrained_requests_follow_their_regex(engines, tiny_llama):
    import re

    engine = engines.get(tiny_llama, "consensus", max_running_requests=64)
    pattern = "(yes|no) [0-9]+"
    outs = engine.generate(["the answer is"] * 3, [
        {"temperature": 0.0, "max_new_tokens": 12, "regex": pattern},
        {"temperature": 1.0, "max_new_tokens": 12, "regex": pattern},
        {"temperature": 0.8, "max_new_tokens": 12},  # unconstrained, sampled, same batch
    ])
    assert re.fullmatch(pattern, outs[0]["text"]) and re.fullmatch(pattern, outs[1]["text"]), outs[:2]
    assert outs[0]["meta_info"]["spec_verify_ct"] > 0


def test_pipeline_parallelism_is_refused_at_start(tiny_llama):
    from sgl_consensus.engine import start_engine
    from sgl_consensus.testing.engines import engine_kwargs

    with pytest.raises(ValueError, match="pipeline parallelism"):
        start_engine(**engine_kwargs(tiny_llama, "consensus", pp_size=2))
