"""The three evidence sources: sibling groups (with each request's own history) and the global corpus.

`GroupIndex`: one n-gram trie per sibling group (all paths of one prompt). Every member writes its
tokens into it through its own active pointers (O(trie depth) per token); the shared prompt is
written once. Node owners tell a request's own n-grams from its siblings'. A request with no group
(or with `use_siblings=False`) gets a private group: its trie is then its own history only.
The trie stops growing at `group_max_nodes` (members keep following it read-only). Finished members
keep feeding the group (their n-grams stay) until the last live member leaves; the group is then
handed to the global corpus and dropped.

`GlobalCorpus`: the n-grams of finished groups, like SuffixDecoding's global tree. Memory-capped by
generations: finished groups merge into the current generation; when it exceeds half the cap it
becomes the old one and the previous old one (the oldest requests) is dropped, so at most
`global_max_nodes` nodes are held and lookups consult two tries. From groups of three or more paths only
n-grams written at least `global_min_count` times (the group's consensus) are merged. Merging is
incremental and paid by later `extend` calls (a few trie visits per written token), so a large
group ending causes no latency spike; if merges fall behind, the oldest queued ones are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence

from . import trie
from .trie import ROOT, Trie


class GroupIndex:
    """N-gram trie of one sibling group plus its membership."""

    __slots__ = ("key", "trie", "live", "ever", "prompt", "prompt_pointers", "next_slot")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.trie = Trie()
        self.live: set[Hashable] = set()
        self.ever = 0  # members ever added: > 1 means there are siblings to learn from
        self.prompt: tuple[int, ...] | None = None
        self.prompt_pointers: list[int] | None = None
        self.next_slot = 0

    @property
    def nodes(self) -> int:
        return self.trie.nodes

    def new_slot(self) -> int:
        slot = self.next_slot
        self.next_slot += 1
        return slot

    def write_prompt(self, prompt: Sequence[int], depth: int, max_nodes: int) -> list[int]:
        """Pointers at the end of `prompt`, writing it first unless the group already holds it."""
        prompt_key = tuple(prompt)
        if self.prompt == prompt_key and self.prompt_pointers is not None:
            return list(self.prompt_pointers)
        active = self.write_many([ROOT], list(prompt), None, trie.PROMPT, depth, max_nodes)
        if self.prompt is None:
            self.prompt = prompt_key
            self.prompt_pointers = list(active)
        return active

    def write_many(
        self, active: list[int], tokens: list[int], probs: list[float] | None, owner: int, depth: int, max_nodes: int
    ) -> list[int]:
        """Write `tokens` (with their probabilities, if any) after the suffixes `active` points at.

        Past `max_nodes` the trie stops growing and the pointers only follow what exists.
        """
        group_trie = self.trie
        advance = trie.advance
        for i, token in enumerate(tokens):
            if len(group_trie.count) > max_nodes:
                for rest in tokens[i:]:
                    active = trie.follow(group_trie, active, rest, depth)
                return active
            active, _ = advance(group_trie, active, token, None if probs is None else probs[i], owner, depth)
        return active


class GlobalCorpus:
    """Bounded n-gram tries of finished groups (two generations), merged in incrementally."""

    def __init__(self, max_nodes: int, max_pending: int, min_count: int, max_depth: int) -> None:
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.min_count = min_count
        self.max_pending = max_pending
        self.reset()

    def reset(self) -> None:
        self.current = Trie()
        self.previous: Trie | None = None
        self.groups_absorbed = 0
        self.groups_dropped = 0
        self.merge_credit = 0  # trie visits paid for by writes, not yet spent on pending merges
        self._pending: deque[tuple[Trie, Trie, int, list]] = deque()

    @property
    def nodes(self) -> int:
        return self.current.nodes + (self.previous.nodes if self.previous is not None else 0)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def absorb(self, group_trie: Trie, members: int) -> None:
        """Queue a finished group's trie for merging (dropping the oldest queued one if too many).

        From groups of three or more paths only n-grams written at least `min_count` times are kept:
        the consensus of the group, a fraction of its trie, so merging stays cheap.
        """
        if self.max_pending == 0:
            self.groups_dropped += 1
            return
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.groups_dropped += 1
        # Pairs have no majority to speak of: keep all their n-grams.
        min_count = self.min_count if members > 2 else 1
        job = trie.merge_job(group_trie, self.current)
        self._pending.append((group_trie, self.current, min_count, job))

    def settle(self, group_trie: Trie) -> None:
        """Finish now any queued merge reading `group_trie`, so that the trie may change again
        (a lingering group revived by a late sibling). Bounded by that group's trie size."""
        for i, (source, destination, min_count, stack) in enumerate(self._pending):
            if source is group_trie:
                while stack:
                    trie.merge_step(source, destination, stack, 1 << 30, min_count, self.max_depth)
                del self._pending[i]
                self.groups_absorbed += 1
                if self.current.nodes > self.max_nodes // 2:
                    self._rotate()
                return

    def pump(self, budget: int) -> None:
        """Merge up to `budget` trie children of queued groups into the global tries."""
        pending = self._pending
        while pending and budget > 0:
            source, destination, min_count, stack = pending[0]
            visited, _ = trie.merge_step(source, destination, stack, budget, min_count, self.max_depth)
            budget -= max(visited, 1)
            if not stack:
                pending.popleft()
                self.groups_absorbed += 1
            if self.current.nodes > self.max_nodes // 2:
                self._rotate()

    def _rotate(self) -> None:
        # Drops the oldest generation. A merge still in flight keeps writing into the generation it
        # started in (now `previous`), which may then exceed half the cap by at most that merge.
        self.previous = self.current
        self.current = Trie()

    def match(self, tail: Sequence[int], max_len: int, min_len: int) -> list[tuple[Trie, int, int]]:
        """Longest-suffix matches (trie, node, length) of `tail` in each generation, newest first."""
        found = []
        for generation in (self.current, self.previous):
            if generation is None or generation.child_total[ROOT] == 0:
                continue
            node, length = trie.longest_match(generation, tail, max_len, min_len)
            if node is not None:
                found.append((generation, node, length))
        return found
