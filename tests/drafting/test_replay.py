"""Offline replay on the bundled real streams: finished siblings make drafts clearly useful."""

import pytest

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig

from .helpers import load_streams, replay_ahead

PROBLEMS = 12


@pytest.mark.parametrize("name", ["T07", "T10"])
def test_siblings_ahead_beat_own_history(name):
    problems = load_streams(name)["problems"][:PROBLEMS]
    ours = replay_ahead(ConsensusDrafter(DraftConfig(num_draft_tokens=8)), problems, 8)
    own = replay_ahead(
        ConsensusDrafter(DraftConfig(num_draft_tokens=8, use_siblings=False, use_global=False)), problems, 8
    )
    # Measured (12 problems): ~5.5 (T07) and ~4.5 (T10) with siblings, ~1.5 from own history alone.
    assert ours > 3.0, ours
    assert own < 2.0, own
    assert ours > 1.8 * own, (ours, own)
