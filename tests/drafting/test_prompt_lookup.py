"""PromptLookupDrafter: own-history drafts in NGRAM's layout, and clear errors."""

from __future__ import annotations

import numpy as np
import pytest

from sgl_consensus.drafting.prompt_lookup import PromptLookupDrafter


def test_drafts_the_continuation_of_the_latest_earlier_match():
    d = PromptLookupDrafter(num_draft_tokens=5, max_match=3)
    d.add("a", None, [1, 2, 3, 4, 5, 1, 2])
    tokens, mask = d.propose(["a"])
    assert tokens.tolist() == [[2, 3, 4, 5, 1]]  # root = last token 2; "1 2" was followed by 3 4 5 1
    assert np.array_equal(mask[0], np.tril(np.ones((5, 5), dtype=bool)))


def test_no_match_pads_with_detached_rows():
    d = PromptLookupDrafter(num_draft_tokens=4)
    d.add("a", None, [7, 8, 9])
    tokens, mask = d.propose(["a"])
    assert tokens.tolist() == [[9, 0, 0, 0]]
    assert mask[0].tolist() == np.eye(4, dtype=bool).tolist()  # no walk reaches a padding row


def test_lifecycle_and_errors():
    d = PromptLookupDrafter(num_draft_tokens=4)
    d.add("a", None, [1, 2])
    with pytest.raises(ValueError, match="already"):
        d.add("a", None, [1])
    with pytest.raises(ValueError, match="empty"):
        d.add("b", None, [])
    with pytest.raises(ValueError, match="logprobs"):
        d.extend("a", [3], logprobs=[-0.1, -0.2])
    with pytest.raises(TypeError):
        d.extend("a", [1.5])
    with pytest.raises(ValueError):
        d.extend("a", [-1])
    d.remove("a")
    with pytest.raises(KeyError):
        d.remove("a")
    assert d.stats()["live_requests"] == 0


def test_last_proposal_sources_counts_own_history_nodes():
    d = PromptLookupDrafter(num_draft_tokens=5, max_match=3)
    d.add("a", None, [1, 2, 3, 4, 5, 1, 2])
    d.add("b", None, [7, 8, 9])
    d.propose(["a", "b"])
    assert d.last_proposal_sources() == [(0, 0, 4), (0, 0, 0)]
