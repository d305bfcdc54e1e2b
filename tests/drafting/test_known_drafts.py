"""Known inputs give known drafts; consensus is proposed; other groups stay out."""

import numpy as np
import pytest

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig

from .helpers import accepted, assert_valid_tree, paths

PROMPT = [1, 2, 3]


def drafter(**kwargs) -> ConsensusDrafter:
    kwargs.setdefault("num_draft_tokens", 8)
    kwargs.setdefault("linger_groups", 0)  # finished groups go straight to the global corpus (tested here)
    return ConsensusDrafter(DraftConfig(**kwargs))


def test_sibling_ahead_is_drafted_as_a_chain():
    d = drafter()
    d.add("a", "g", PROMPT)
    d.add("b", "g", PROMPT)
    d.extend("a", [10, 11, 12, 13, 14, 15, 16, 17, 18])
    d.extend("b", [10, 11])
    tokens, mask = d.propose(["b"])
    assert tokens[0].tolist() == [11, 12, 13, 14, 15, 16, 17, 18]
    assert mask[0].tolist() == np.tril(np.ones((8, 8), dtype=bool)).tolist()
    assert d.stats()["draft_nodes_sibling"] == 7


def test_consensus_of_several_siblings_wins_the_first_slot():
    d = drafter(use_global=False)
    for rid, continuation in [("a", [20, 21, 22]), ("b", [20, 21, 22]), ("c", [20, 21, 22]), ("d", [30, 31, 32])]:
        d.add(rid, "g", PROMPT)
        d.extend(rid, [5, 6, 7] + continuation)
    d.add("me", "g", PROMPT)
    d.extend("me", [5, 6, 7])
    tokens, mask = d.propose(["me"])
    assert_valid_tree(tokens[0], mask[0], 7)
    assert tokens[0][1] == 20, "the continuation three siblings wrote must rank first"
    drafted = paths(tokens[0], mask[0])
    assert [20, 21, 22] in drafted
    assert [30, 31, 32] in drafted, "the minority continuation is kept as a branch"
    # The majority chain is ranked above the minority branch node by node.
    order = tokens[0].tolist()
    assert order.index(21) < order.index(31)


def test_recorded_probabilities_break_ties():
    d = drafter(use_global=False, alpha=1.0)
    d.add("a", "g", PROMPT)
    d.add("b", "g", PROMPT)
    d.extend("a", [5, 6, 40], logprobs=[0.0, 0.0, np.log(0.9)])
    d.extend("b", [5, 6, 50], logprobs=[0.0, 0.0, np.log(0.2)])
    d.add("me", "g", PROMPT)
    d.extend("me", [5, 6])
    tokens, _ = d.propose(["me"])
    assert tokens[0][1] == 40 and tokens[0][2] == 50


def test_a_continuation_only_another_group_wrote_is_not_proposed():
    d = drafter()
    d.add("other", "g1", PROMPT)
    d.extend("other", [5, 6, 7, 99, 98, 97])
    d.add("other2", "g1", PROMPT)
    d.extend("other2", [5, 6, 7, 99, 98, 97])
    d.add("me", "g2", PROMPT)
    d.extend("me", [5, 6, 7])
    tokens, mask = d.propose(["me"])
    assert not {99, 98, 97} & set(tokens[0].tolist())
    assert accepted(tokens[0], mask[0], [99, 98, 97]) == 0
    # The same continuation written in me's own group is proposed.
    d.add("sib", "g2", PROMPT)
    d.extend("sib", [5, 6, 7, 99, 98, 97])
    tokens, mask = d.propose(["me"])
    assert accepted(tokens[0], mask[0], [99, 98, 97]) == 3


def test_request_without_group_drafts_from_own_history_only():
    d = drafter(use_global=False)
    d.add("a", None, PROMPT)
    d.add("b", None, PROMPT)
    d.extend("a", [5, 6, 7, 8])
    d.extend("b", [9, 5, 6])
    tokens, mask = d.propose(["b"])
    assert 7 not in tokens[0].tolist(), "b has no siblings: a's continuation must not leak"
    d.extend("b", [4, 9, 5])  # b itself wrote "9 5 6 4" before
    tokens, mask = d.propose(["b"])
    assert accepted(tokens[0], mask[0], [6, 4, 9]) == 3
    assert d.stats()["draft_nodes_own"] > 0 and d.stats()["draft_nodes_sibling"] == 0


def test_finished_siblings_keep_feeding_their_group_until_it_ends():
    d = drafter(use_global=False)
    d.add("done", "g", PROMPT)
    d.add("live", "g", PROMPT)
    d.extend("done", [5, 6, 7, 8, 9])
    d.remove("done")
    tokens, mask = d.propose(["live"])
    assert accepted(tokens[0], mask[0], [5, 6, 7, 8, 9]) == 5
    d.remove("live")
    assert d.stats()["live_groups"] == 0 and d.stats()["group_trie_nodes"] == 0


def test_global_corpus_serves_later_groups_but_not_when_disabled():
    for use_global in (True, False):
        d = drafter(use_global=use_global, merge_visits_per_token=10_000)
        for rid in ("a", "b"):
            d.add(rid, "old", PROMPT)
            d.extend(rid, [5, 6, 7, 8, 9])
        d.remove("a")
        d.remove("b")
        d.add("new", "fresh", [42, 5])
        d.extend("new", [6])  # pays for the merge of the finished group
        d.maintain()  # the worker runs it after each verify launch
        tokens, mask = d.propose(["new"])
        drafted = accepted(tokens[0], mask[0], [7, 8, 9, 0])
        # The finished group's continuation 7, 8, 9 comes from the global corpus, or not at all.
        assert drafted == 3 if use_global else drafted == 0, (use_global, drafted)
        assert (d.stats()["draft_nodes_global"] > 0) == use_global


def test_fuzzy_matching_recovers_from_a_substituted_token():
    for edits, expect in [(0, 0), (1, 3)]:
        d = drafter(use_global=False, fuzzy_max_edits=edits, min_match_len=3, max_match_len=3)
        d.add("a", "g", [1])
        d.extend("a", [5, 6, 7, 8, 9, 10])
        d.add("b", "g", [1])
        d.extend("b", [5, 66, 7])  # 66 instead of 6: no exact 3-token match
        tokens, mask = d.propose(["b"])
        assert accepted(tokens[0], mask[0], [8, 9, 10]) == expect


def test_drafts_are_deterministic():
    def run():
        d = drafter()
        for i in range(4):
            d.add(i, "g", PROMPT)
            d.extend(i, [(i * 7 + k) % 5 for k in range(30)])
        return d.propose(list(range(4)))

    (t1, m1), (t2, m2) = run(), run()
    assert (t1 == t2).all() and (m1 == m2).all()


def test_global_and_sibling_evidence_merge_when_the_sibling_match_is_short():
    d = drafter(merge_visits_per_token=10_000, max_match_len=4)
    for rid in ("a", "b", "c"):
        d.add(rid, "old", PROMPT)
        d.extend(rid, [5, 6, 7, 8, 9, 10])  # a finished group: "6 7 -> 8 9 10" reaches the global corpus
        d.remove(rid)
    d.add("sib", "g", [42])
    d.extend("sib", [7, 30, 31])  # a sibling: "7 -> 30 31" (a 1-token match for "me")
    d.add("me", "g", [42])
    d.extend("me", [6, 7])  # pays for the merge; "6 7" occurred only in the old group
    d.maintain()  # the worker runs it after each verify launch
    tokens, mask = d.propose(["me"])
    drafted = paths(tokens[0], mask[0])
    assert [8, 9, 10] in drafted, "the longer global match must be used"
    assert [30] in drafted, "the sibling's shorter match still contributes a branch"
    stats = d.stats()
    assert stats["draft_nodes_global"] >= 3 and stats["draft_nodes_sibling"] >= 1
    # With a full-length sibling match the global corpus is not consulted (global_skip_depth).
    d.add("sib2", "g", [42])
    d.extend("sib2", [1, 2, 3, 4, 50])
    d.extend("me", [1, 2, 3, 4])
    before = d.stats()["draft_nodes_global"]
    tokens, mask = d.propose(["me"])
    assert [50] in paths(tokens[0], mask[0])
    assert d.stats()["draft_nodes_global"] == before


def test_prompt_only_ngrams_stay_out_of_the_global_corpus():
    d = drafter(merge_visits_per_token=10_000)
    for rid in ("a", "b"):
        d.add(rid, "old", [70, 71, 72, 73])
        d.extend(rid, [5, 6, 7, 8])
        d.remove(rid)
    d.add("new", None, [99, 70])
    d.extend("new", [71])  # pays for the merge
    d.maintain()  # the worker runs it after each verify launch
    tokens, mask = d.propose(["new"])
    assert accepted(tokens[0], mask[0], [72, 73]) == 0, "a problem statement is not a reasoning template"
    d.extend("new", [5, 6])
    tokens, mask = d.propose(["new"])
    assert accepted(tokens[0], mask[0], [7, 8]) == 2


def test_per_request_budgets_cap_tree_size_and_pad_the_rest():
    d = drafter(use_global=False)
    for rid in ("a", "b"):
        d.add(rid, "g", PROMPT)
    d.extend("a", [5, 6, 7, 8, 9, 10, 11])
    d.extend("b", [5])
    tokens, mask = d.propose(["b", "a"], budgets=[3, 8])
    assert tokens[0].tolist() == [5, 6, 7, 0, 0, 0, 0, 0]  # root + 2 draft nodes, then padding
    assert accepted(tokens[0], mask[0], [6, 7, 8]) == 2
    with pytest.raises(ValueError, match="budgets"):
        d.propose(["a"], budgets=[9])
    with pytest.raises(ValueError, match="budgets"):
        d.propose(["a", "b"], budgets=[4])
