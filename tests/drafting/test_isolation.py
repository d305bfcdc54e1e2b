"""Tenants: nothing a tenant's requests wrote reaches another tenant's drafts; source labels are honest."""

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig

SECRET = [31, 41, 59, 26, 53, 58, 97]


def _finish_group(d: ConsensusDrafter, tenant, group="g", members=3) -> None:
    for i in range(members):
        d.add(("v", i), group, [1, 2], tenant=tenant)
    for i in range(members):
        d.extend(("v", i), [3] + SECRET)
        d.remove(("v", i))
    # settle the queued global merges (they are paid by later writes of the same tenant)
    d.add("pump", None, [9], tenant=tenant)
    d.extend("pump", [8] * 400)
    d.maintain()  # the worker runs it after each verify launch
    d.remove("pump")


def _draft_after(d: ConsensusDrafter, rid, group, tenant, context: list[int]) -> list[int]:
    d.add(rid, group, [1, 2], tenant=tenant)
    d.extend(rid, context)
    tokens, _ = d.propose([rid])
    d.remove(rid)
    return tokens[0].tolist()


def test_global_corpus_is_per_tenant():
    d = ConsensusDrafter(DraftConfig(linger_groups=0))
    _finish_group(d, tenant="alice")
    assert d.stats()["global_groups_absorbed"] == 1
    same = _draft_after(d, "a2", None, "alice", [3] + SECRET[:2])
    other = _draft_after(d, "b1", None, "bob", [3] + SECRET[:2])
    default = _draft_after(d, "c1", None, None, [3] + SECRET[:2])
    assert same[1:4] == SECRET[2:5]  # the channel exists inside a tenant
    assert not set(other[1:]) & set(SECRET[2:]) and not set(default[1:]) & set(SECRET[2:])


def test_lingering_groups_are_revived_only_by_their_tenant():
    d = ConsensusDrafter(DraftConfig(use_global=False, linger_groups=4))
    _finish_group(d, tenant="alice", group="shared-tag")
    assert d.stats()["lingering_groups"] == 1
    other = _draft_after(d, "b", "shared-tag", "bob", [3])
    assert not set(other[1:]) & set(SECRET)
    same = _draft_after(d, "a", "shared-tag", "alice", [3])
    assert same[1:4] == SECRET[:3]


def test_tenant_corpora_are_capped_least_recently_used_first():
    d = ConsensusDrafter(DraftConfig(max_tenant_corpora=2, linger_groups=0))
    for tenant in ("t0", "t1", "t2"):
        d.add(tenant, None, [1], tenant=tenant)
        d.remove(tenant)
    assert d.stats()["tenant_corpora"] == 2


def test_a_lone_request_reports_no_sibling_nodes():
    """Its prompt and its output both wrote the repeated n-grams: that is own evidence, not a sibling's."""
    d = ConsensusDrafter(DraftConfig(num_draft_tokens=8, use_global=False))
    pattern = [5, 6, 7, 8]
    d.add("solo", "g", pattern * 3)
    for _ in range(6):
        d.extend("solo", pattern)
        d.propose(["solo"])
        sibling, global_, own = d.last_proposal_sources()[0]
        assert sibling == 0 and global_ == 0 and own > 0
    # a second member's writes are sibling evidence again
    d.add("sib", "g", pattern * 3)
    d.extend("sib", pattern + [9, 9])
    d.extend("solo", pattern)
    d.propose(["solo"])
    assert d.last_proposal_sources()[0][0] > 0
