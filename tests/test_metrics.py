"""DraftMetrics: per-step source counts from the drafter's per-request rows."""

from sgl_consensus.adapter.metrics import DraftMetrics
from sgl_consensus.drafting import ConsensusDrafter, DraftConfig


def test_sources_and_padding_add_up_to_the_tree_size():
    metrics = DraftMetrics(log_interval_s=0)
    metrics.record_step(2, 0.002, [(3, 1, 2), (0, 0, 0)], tree_nodes=8)
    metrics.record_step(1, 0.001)  # a step with unknown sources (NgramCorpus drafter)
    snap = metrics.snapshot()
    assert (snap["draft_nodes_sibling"], snap["draft_nodes_global"], snap["draft_nodes_own"]) == (3, 1, 2)
    assert snap["padding_nodes"] == (7 - 6) + 7
    assert snap["steps"] == 2 and snap["request_steps"] == 3
    assert abs(snap["draft_ms_per_step"] - 1.5) < 1e-9


def test_consensus_drafter_rows_match_its_counters():
    d = ConsensusDrafter(DraftConfig(num_draft_tokens=6))
    for rid in ("a", "b"):
        d.add(rid, "g", [1, 2, 3])
    d.extend("a", [4, 5, 6, 7, 4, 5])
    d.extend("b", [4, 5])
    d.propose(["a", "b"])
    rows = d.last_proposal_sources()
    stats = d.stats()
    assert len(rows) == 2
    assert sum(r[0] for r in rows) == stats["draft_nodes_sibling"]
    assert sum(r[2] for r in rows) == stats["draft_nodes_own"]
    assert rows[1][0] > 0  # b drafts from its sibling a, which is ahead
