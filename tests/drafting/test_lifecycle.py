"""Memory: remove frees everything a request held; groups and the global corpus stay bounded."""

import random

from sgl_consensus.drafting import ConsensusDrafter, DraftConfig

PER_REQUEST_KEYS = ("live_requests", "live_groups", "group_trie_nodes", "group_trie_nodes_max")


def test_stats_return_to_zero_after_thousands_of_requests():
    rng = random.Random(0)
    d = ConsensusDrafter(DraftConfig(num_draft_tokens=6, global_max_nodes=20_000))
    live: list[int] = []
    for rid in range(3000):
        group = None if rid % 7 == 0 else f"g{rid // 4}"
        d.add(rid, group, [rng.randrange(50) for _ in range(rng.randint(1, 12))])
        live.append(rid)
        for other in rng.sample(live, min(len(live), 3)):
            d.extend(other, [rng.randrange(50) for _ in range(rng.randint(1, 4))])
        if rid % 5 == 0:
            d.propose(rng.sample(live, min(len(live), 8)))
        d.maintain()
        while len(live) > 16:
            d.remove(live.pop(rng.randrange(len(live))))
        stats = d.stats()
        assert stats["global_trie_nodes"] <= 20_000 + 2_000  # cap, plus at most one merge batch of slack
    for rid in live:
        d.remove(rid)
    stats = d.stats()
    assert all(stats[key] == 0 for key in PER_REQUEST_KEYS), stats
    assert stats["propose_calls"] > 0 and stats["tokens_extended"] > 0
    d.reset()
    assert all(value == 0 for value in d.stats().values()), d.stats()


def test_group_lives_while_any_member_is_live():
    d = ConsensusDrafter(DraftConfig(use_global=False, linger_groups=0))
    d.add("a", "g", [1, 2])
    d.add("b", "g", [1, 2])
    d.extend("a", [3, 4, 5])
    d.remove("a")
    assert d.stats()["live_groups"] == 1 and d.stats()["group_trie_nodes"] > 0
    d.add("c", "g", [1, 2])  # a late sibling joins the still-live group
    d.remove("b")
    assert d.stats()["live_groups"] == 1
    d.remove("c")
    assert d.stats()["live_groups"] == 0 and d.stats()["group_trie_nodes"] == 0
    # The key can be reused: a new group starts empty.
    d.add("d", "g", [1, 2])
    tokens, _ = d.propose(["d"])
    assert tokens[0].tolist() == [2, 0, 0, 0, 0, 0, 0, 0]


def test_group_trie_is_capped():
    d = ConsensusDrafter(DraftConfig(group_max_nodes=500, use_global=False))
    d.add("a", "g", [1])
    d.extend("a", list(range(2000)))
    assert d.stats()["group_trie_nodes"] <= 500 + d.config.trie_depth
    d.add("b", "g", [1])
    d.extend("b", [0, 1, 2])
    tokens, _ = d.propose(["b"])
    assert tokens[0][1] == 3  # what was written before the cap still drafts


def test_reset_empties_everything():
    d = ConsensusDrafter()
    d.add("a", "g", [1, 2, 3])
    d.extend("a", [4, 5])
    d.propose(["a"])
    d.reset()
    assert len(d) == 0 and "a" not in d
    assert all(value == 0 for value in d.stats().values())
    d.add("a", "g", [1, 2, 3])  # the rid is free again


def test_finished_group_lingers_for_late_siblings():
    d = ConsensusDrafter(DraftConfig(use_global=False, linger_groups=2))
    d.add("a", "g", [1, 2])
    d.extend("a", [3, 4, 5, 6])
    d.remove("a")  # every member gone: the group lingers instead of being dropped
    stats = d.stats()
    assert stats["live_groups"] == 0 and stats["lingering_groups"] == 1 and stats["lingering_trie_nodes"] > 0
    d.add("b", "g", [1, 2])  # a sibling arriving after the group emptied drafts from it
    tokens, _ = d.propose(["b"])
    assert tokens[0].tolist()[:5] == [2, 3, 4, 5, 6]
    assert d.stats()["lingering_groups"] == 0 and d.stats()["live_groups"] == 1


def test_lingering_groups_are_capped_oldest_first():
    d = ConsensusDrafter(DraftConfig(linger_groups=2))
    for i in range(4):
        d.add(i, f"g{i}", [1, 2])
        d.extend(i, [10 + i, 20 + i])
        d.remove(i)
    stats = d.stats()
    assert stats["lingering_groups"] == 2
    assert stats["global_groups_absorbed"] + stats["global_pending_merges"] == 4  # every emptied group feeds it
    d.add("late", "g0", [1, 2])  # g0 no longer lingers: its own group is new (global evidence only)
    d.add("late3", "g3", [1, 2])
    tokens, _ = d.propose(["late3"])
    assert tokens[0].tolist()[:3] == [2, 13, 23]


def test_solo_requests_never_linger():
    d = ConsensusDrafter(DraftConfig(linger_groups=8))
    d.add("a", None, [1, 2])
    d.extend("a", [3])
    d.remove("a")
    assert d.stats()["lingering_groups"] == 0


def test_revived_group_settles_its_pending_global_merge_first():
    d = ConsensusDrafter(DraftConfig(linger_groups=4, merge_visits_per_token=1))
    for rid in ("a", "b", "c"):
        d.add(rid, "g", [1, 2])
    for rid in ("a", "b", "c"):
        d.extend(rid, [5, 6, 7, 8])
        d.remove(rid)
    assert d.stats()["global_pending_merges"] == 1
    d.add("late", "g", [1, 2])  # revival must not write into a trie that is still being merged
    assert d.stats()["global_pending_merges"] == 0 and d.stats()["global_groups_absorbed"] == 1
    d.extend("late", [5, 6])
    tokens, _ = d.propose(["late"])
    assert tokens[0].tolist()[:3] == [6, 7, 8]
