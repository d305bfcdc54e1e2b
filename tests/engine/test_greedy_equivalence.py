"""Speculative decoding must not change greedy outputs: NGRAM and consensus vs plain decoding."""

from __future__ import annotations

import pytest

from sgl_consensus.testing.devices import cuda_available

pytestmark = pytest.mark.engine

PROMPTS = [
    "one two three one two three one two",
    "the answer is",
    "how many apples does each cat have after 12 and 7",
    "first we add then we subtract then we add then we",
    "five",
]
MAX_NEW_TOKENS = 40
GREEDY = {"temperature": 0.0, "max_new_tokens": MAX_NEW_TOKENS}
BATCHINGS = {"bs1": [[p] for p in PROMPTS], "bs2": [PROMPTS[:2], PROMPTS[2:4], PROMPTS[4:]], "all": [PROMPTS]}


def _generate_all(engine, batching: str) -> list[list[int]]:
    outputs = []
    for batch in BATCHINGS[batching]:
        outputs += [o["output_ids"] for o in engine.generate(batch, GREEDY)]
    return outputs


@pytest.fixture(scope="module")
def reference(engines, tiny_llama, tiny_qwen2):
    """Plain greedy outputs per model and batching, computed once."""
    ref = {}
    for name, path in (("llama", tiny_llama), ("qwen2", tiny_qwen2)):
        engine = engines.get(path, None)
        ref[name] = {b: _generate_all(engine, b) for b in BATCHINGS}
    return ref


def test_reference_is_deterministic_and_nontrivial(engines, tiny_qwen2, reference):
    engine = engines.get(tiny_qwen2, None)
    assert _generate_all(engine, "all") == reference["qwen2"]["all"]
    lengths = [len(ids) for ids in reference["qwen2"]["all"] + reference["llama"]["all"]]
    assert max(lengths) == MAX_NEW_TOKENS and min(lengths) >= 1


REPETITIVE = PROMPTS[0] + " one two three" * 4


@pytest.fixture(scope="module")
def speculative(engines, tiny_llama, tiny_qwen2):
    """``speculative(model, algorithm)``: that engine's greedy outputs per batching, and its
    meta_info on a repetitive prompt, all drawn while the engine is up (engine starts dominate the
    suite's time: each model and algorithm starts once for both tests below)."""
    paths = {"llama": tiny_llama, "qwen2": tiny_qwen2}
    drawn: dict[tuple[str, str], dict] = {}

    def get(model: str, algorithm: str) -> dict:
        if (model, algorithm) not in drawn:
            engine = engines.get(paths[model], algorithm)
            drawn[(model, algorithm)] = {
                "outputs": {batching: _generate_all(engine, batching) for batching in BATCHINGS},
                "repetitive": engine.generate(REPETITIVE, {"temperature": 0.0, "max_new_tokens": 96})["meta_info"]}
        return drawn[(model, algorithm)]

    return get


# model outermost, so each engine starts once (engine starts dominate the suite's time)
@pytest.mark.parametrize("algorithm", ["NGRAM", "consensus"])
@pytest.mark.parametrize("model", ["llama", "qwen2"])
def test_speculative_greedy_equals_plain(speculative, reference, model, algorithm):
    got_all = speculative(model, algorithm)["outputs"]
    for batching in BATCHINGS:
        want = reference[model][batching]
        for prompt, g, w in zip(PROMPTS, got_all[batching], want):
            assert g == w, f"{algorithm} on {model} ({batching}) diverged for {prompt!r}"


@pytest.mark.parametrize("algorithm", ["consensus", "NGRAM"])
def test_speculation_accepts_drafts_on_repetitive_text(speculative, algorithm):
    meta = speculative("qwen2", algorithm)["repetitive"]
    assert meta["spec_verify_ct"] > 0
    assert meta["spec_accept_length"] > 1.0, meta


@pytest.mark.parametrize("adaptive", ["cycle", "on", "cycle+model"])
def test_any_width_sequence_keeps_greedy_outputs_exact(engines, reference, tiny_llama, adaptive):
    """The verify width changes from step to step (cycle: 1, 2, 4 in turn, width 1 as a plain
    decode step on CPU; on: the policy's choice; +model: with model-informed nodes from the
    target's earlier predictions, plain steps included)."""
    env = {"CONSENSUS_ADAPTIVE": adaptive.split("+")[0]}
    if adaptive.endswith("+model"):
        env["CONSENSUS_DRAFT_MODEL_WEIGHT"] = "1.0"
    engine = engines.get(tiny_llama, "consensus", env=env)
    for batching in BATCHINGS:
        assert _generate_all(engine, batching) == reference["llama"][batching], batching
    state = engine.get_server_info()["internal_states"][0]["consensus"]
    assert sum(1 for count in state["adaptive"]["width_histogram"].values() if count) >= 2  # several widths
    # Most steps sync from the last verify's token rows; a step right after a prefill never does.
    assert 0 < state["common_sync_steps"] < state["steps"], state
    if adaptive.endswith("+model"):
        assert state["draft_nodes_model"] > 0
    if adaptive.startswith("cycle") and not cuda_available():
        assert state["plain_decode_steps"] > 0  # width-1 steps ran as plain decode forwards


def test_overlap_scheduling_keeps_greedy_outputs_exact(engines, reference, tiny_llama):
    """Overlap scheduling (on by default on CUDA): results arrive one step late, the accepted tokens
    are relayed through SGLang's FutureMap, and node 0 of every tree must still be the last
    committed token. Run here on CPU with the overlap path kept on."""
    engine = engines.get(tiny_llama, "consensus", env={"CONSENSUS_CPU_OVERLAP": "1", "CONSENSUS_ADAPTIVE": "cycle",
                                                       "CONSENSUS_DRAFT_MODEL_WEIGHT": "1.0"})
    assert not engine.get_server_info()["disable_overlap_schedule"], "overlap scheduling did not stay on"
    for batching in BATCHINGS:
        assert _generate_all(engine, batching) == reference["llama"][batching], batching
    outs = engine.generate(PROMPTS[3], {**GREEDY, "n": 3})  # n > 1 siblings under overlap
    assert all(o["output_ids"] == reference["llama"]["all"][3] for o in outs)
    state = engine.get_server_info()["internal_states"][0]["consensus"]
    assert state["root_resyncs"] == 0 and state["steps"] > 0 and state["draft_nodes_model"] > 0
    assert 0 < state["common_sync_steps"] < state["steps"], state  # the array path under overlap too
