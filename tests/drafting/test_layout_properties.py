"""The layout contract as properties: whatever was written, every draft is a valid SGLang tree."""

import numpy as np
from hypothesis import given, settings
from hypothesis import strategies as st

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig

from .helpers import assert_valid_tree

small_tokens = st.lists(st.integers(min_value=0, max_value=6), min_size=1, max_size=30)


@st.composite
def scenarios(draw):
    config = DraftConfig(
        num_draft_tokens=draw(st.integers(1, 12)),
        max_branch=draw(st.integers(1, 4)),
        max_match_len=draw(st.integers(1, 5)),
        fuzzy_max_edits=draw(st.sampled_from([0, 0, 1, 2])),
        use_global=draw(st.booleans()),
        use_own_history=draw(st.booleans()),
        alpha=draw(st.floats(0.0, 1.0)),
        merge_visits_per_token=draw(st.sampled_from([1, 4, 10_000])),
    )
    n_requests = draw(st.integers(1, 6))
    requests = [(f"r{i}", draw(st.sampled_from(["a", "b", None])), draw(small_tokens)) for i in range(n_requests)]
    writes = draw(
        st.lists(
            st.tuples(st.integers(0, n_requests - 1), small_tokens, st.booleans()),
            max_size=25,
        )
    )
    removals = draw(st.lists(st.integers(0, n_requests - 1), max_size=3, unique=True))
    return config, requests, writes, removals


@settings(max_examples=150, deadline=None)
@given(scenarios())
def test_every_draft_is_a_valid_bfs_tree(scenario):
    config, requests, writes, removals = scenario
    drafter = ConsensusDrafter(config)
    last = {}
    for rid, group, prompt in requests:
        drafter.add(rid, group, prompt)
        last[rid] = prompt[-1]
    for index, tokens, with_logprobs in writes:
        rid = requests[index][0]
        logprobs = [-0.1 * (k % 5) for k in range(len(tokens))] if with_logprobs else None
        drafter.extend(rid, tokens, logprobs)
        last[rid] = tokens[-1]
    for index in removals:
        rid = requests[index][0]
        drafter.remove(rid)
        del last[rid]
    rids = list(last)
    if not rids:
        return
    tokens, mask = drafter.propose(rids)
    n = config.num_draft_tokens
    assert tokens.dtype == np.int64 and tokens.shape == (len(rids), n)
    assert mask.dtype == np.bool_ and mask.shape == (len(rids), n, n)
    for b, rid in enumerate(rids):
        assert_valid_tree(tokens[b], mask[b], last[rid])
    stats = drafter.stats()
    assert stats["live_requests"] == len(rids)
    assert stats["draft_nodes_sibling"] + stats["draft_nodes_global"] + stats["draft_nodes_own"] + stats[
        "padding_nodes"
    ] == len(rids) * (n - 1)


def test_nothing_to_draft_gives_root_and_padding():
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=5))
    drafter.add("x", None, [7])
    tokens, mask = drafter.propose(["x"])
    assert tokens.tolist() == [[7, 0, 0, 0, 0]]
    assert (mask[0] == np.eye(5, dtype=bool)).all()  # padding rows are detached: no ancestor


def test_single_token_budget_is_just_the_root():
    drafter = ConsensusDrafter(DraftConfig(num_draft_tokens=1))
    drafter.add("x", "g", [1, 2, 3])
    drafter.add("y", "g", [1, 2, 3])
    drafter.extend("y", [4, 5])
    tokens, mask = drafter.propose(["x", "y"])
    assert tokens.tolist() == [[3], [5]]
    assert mask.tolist() == [[[True]], [[True]]]


def test_empty_batch():
    tokens, mask = ConsensusDrafter().propose([])
    assert tokens.shape == (0, 8) and mask.shape == (0, 8, 8)
