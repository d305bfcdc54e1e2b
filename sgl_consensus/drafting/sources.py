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
from typing import Any

from . import trie
from .trie import ROOT


class GroupIndex:
    """N-gram trie of one sibling group plus its membership (the trie lives in the draft core)."""

    __slots__ = ("key", "core", "trie", "live", "ever", "prompt", "prompt_pointers", "next_slot")

    def __init__(self, key: Hashable, core: Any) -> None:
        self.key = key
        self.core = core
        self.trie = core.new_trie()
        self.live: set[Hashable] = set()
        self.ever = 0  # members ever added: > 1 means there are siblings to learn from
        self.prompt: tuple[int, ...] | None = None
        self.prompt_pointers: list[int] | None = None
        self.next_slot = 0

    @property
    def nodes(self) -> int:
        return self.core.trie_nodes(self.trie)

    def join(self, rid: Hashable) -> int:
        """Add member `rid`; its owner slot."""
        self.live.add(rid)
        self.ever += 1
        self.core.set_members(self.trie, self.ever)
        slot = self.next_slot
        self.next_slot += 1
        return slot

    def write_prompt(self, prompt: Sequence[int]) -> list[int]:
        """Pointers at the end of `prompt`, writing it first unless the group already holds it."""
        prompt_key = tuple(prompt)
        if self.prompt == prompt_key and self.prompt_pointers is not None:
            return list(self.prompt_pointers)
        active = self.core.write(self.trie, [ROOT], list(prompt), trie.PROMPT)
        if self.prompt is None:
            self.prompt = prompt_key
            self.prompt_pointers = list(active)
        return active


class GlobalCorpus:
    """Bounded n-gram tries of finished groups (two generations), merged in incrementally."""

    def __init__(self, core: Any, max_nodes: int, max_pending: int, min_count: int, max_depth: int) -> None:
        self.core = core
        self.max_nodes = max_nodes
        self.max_depth = max_depth
        self.min_count = min_count
        self.max_pending = max_pending
        self.handle = core.new_corpus()  # what the core's requests read: the current generations
        self.reset()

    def reset(self) -> None:
        self.current = self.core.new_trie()
        self.previous: Any | None = None
        self.core.set_generations(self.handle, self.current, None)
        self.groups_absorbed = 0
        self.groups_dropped = 0
        self.merge_credit = 0  # trie visits paid for by writes, not yet spent on pending merges
        self._pending: deque[tuple[Any, int, Any]] = deque()  # (group trie, min count, merge job)

    @property
    def nodes(self) -> int:
        nodes = self.core.trie_nodes(self.current)
        return nodes + (self.core.trie_nodes(self.previous) if self.previous is not None else 0)

    @property
    def pending(self) -> int:
        return len(self._pending)

    def absorb(self, group_trie: Any, members: int) -> None:
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
        self._pending.append((group_trie, min_count, self.core.merge_start(group_trie, self.current)))

    def settle(self, group_trie: Any) -> None:
        """Finish now any queued merge reading `group_trie`, so that the trie may change again
        (a lingering group revived by a late sibling). Bounded by that group's trie size."""
        for i, (source, min_count, job) in enumerate(self._pending):
            if source is group_trie:
                while not self.core.merge_step(job, 1 << 30, min_count, self.max_depth)[1]:
                    pass
                del self._pending[i]
                self.groups_absorbed += 1
                if self.core.trie_nodes(self.current) > self.max_nodes // 2:
                    self._rotate()
                return

    def pump(self, budget: int) -> None:
        """Merge up to `budget` trie children of queued groups into the global tries."""
        pending = self._pending
        while pending and budget > 0:
            _, min_count, job = pending[0]
            visited, finished = self.core.merge_step(job, budget, min_count, self.max_depth)
            budget -= max(visited, 1)
            if finished:
                pending.popleft()
                self.groups_absorbed += 1
            if self.core.trie_nodes(self.current) > self.max_nodes // 2:
                self._rotate()

    def _rotate(self) -> None:
        # Drops the oldest generation. A merge still in flight keeps writing into the generation it
        # started in (now `previous`), which may then exceed half the cap by at most that merge.
        fresh = self.core.new_trie()
        self.core.set_generations(self.handle, fresh, self.current)
        self.previous, self.current = self.current, fresh
