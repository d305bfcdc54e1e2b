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
    d = ConsensusDrafter(DraftConfig(use_global=False))
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
