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
`global_max_nodes` nodes are held and lookups consult two tries. From groups of several paths only
n-grams written at least `global_min_count` times (the group's consensus) are merged. Merging is
incremental and paid by later `extend` calls (a few trie visits per written token), so a large
group ending causes no latency spike; if merges fall behind, the oldest queued ones are dropped.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Sequence

from . import trie
from .trie import Node


class GroupIndex:
    """N-gram trie of one sibling group plus its membership."""

    __slots__ = ("key", "root", "nodes", "live", "ever", "prompt", "prompt_pointers", "next_slot")

    def __init__(self, key: Hashable) -> None:
        self.key = key
        self.root: Node = trie.new_root()
        self.nodes = 0
        self.live: set[Hashable] = set()
        self.ever = 0  # members ever added: > 1 means there are siblings to learn from
        self.prompt: tuple[int, ...] | None = None
        self.prompt_pointers: list[Node] | None = None
        self.next_slot = 0

    def new_slot(self) -> int:
        slot = self.next_slot
        self.next_slot += 1
        return slot

    def write_prompt(self, prompt: Sequence[int], depth: int, max_nodes: int) -> list[Node]:
        """Pointers at the end of `prompt`, writing it first unless the group already holds it."""
        prompt_key = tuple(prompt)
        if self.prompt == prompt_key and self.prompt_pointers is not None:
            return list(self.prompt_pointers)
        active = [self.root]
        for token in prompt:
            active = self.write(active, token, None, trie.PROMPT, depth, max_nodes)
        if self.prompt is None:
            self.prompt = prompt_key
            self.prompt_pointers = list(active)
        return active

    def write_many(
        self, active: list[Node], tokens: list[int], probs: list[float] | None, owner: int, depth: int, max_nodes: int
    ) -> list[Node]:
        """Write `tokens` (with their probabilities, if any) after the suffixes `active` points at."""
        advance = trie.advance
        created = 0
        for i, token in enumerate(tokens):
            if self.nodes + created >= max_nodes:
                self.nodes += created
                return self._follow_many(active, tokens[i:], depth)
            active, new = advance(active, token, None if probs is None else probs[i], owner, depth)
            created += new
        self.nodes += created
        return active

    def _follow_many(self, active: list[Node], tokens: list[int], depth: int) -> list[Node]:
        for token in tokens:
            active = trie.follow(active, token, depth)
        return active

    def write(self, active: list[Node], token: int, prob: float | None, owner: int, depth: int, max_nodes: int) -> list[Node]:
        if self.nodes >= max_nodes:
            return trie.follow(active, token, depth)
        active, created = trie.advance(active, token, prob, owner, depth)
        self.nodes += created
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
        self.current: Node = trie.new_root()
        self.previous: Node | None = None
        self.current_nodes = 0
        self.previous_nodes = 0
        self.groups_absorbed = 0
        self.groups_dropped = 0
        self._pending: deque[tuple[int, list]] = deque()

    @property
    def nodes(self) -> int:
        return self.current_nodes + self.previous_nodes

    @property
    def pending(self) -> int:
        return len(self._pending)

    def absorb(self, group_root: Node, members: int) -> None:
        """Queue a finished group's trie for merging (dropping the oldest queued one if too many).

        From groups of several paths only n-grams written at least `min_count` times are kept: the
        consensus of the group, a fraction of its trie, so merging stays cheap.
        """
        if self.max_pending == 0:
            self.groups_dropped += 1
            return
        if len(self._pending) >= self.max_pending:
            self._pending.popleft()
            self.groups_dropped += 1
        min_count = self.min_count if members > 1 else 1
        self._pending.append((min_count, trie.merge_job(group_root, self.current)))

    def pump(self, budget: int) -> None:
        """Merge up to ~`budget` trie children of queued groups into the current generation."""
        pending = self._pending
        while pending and budget > 0:
            min_count, stack = pending[0]
            visited, created = trie.merge_step(stack, budget, min_count, self.max_depth)
            budget -= max(visited, 1)
            self.current_nodes += created
            if not stack:
                pending.popleft()
                self.groups_absorbed += 1
            if self.current_nodes > self.max_nodes // 2:
                self._rotate()

    def _rotate(self) -> None:
        # Drops the oldest generation. A merge still in flight keeps writing into the generation it
        # started in (now `previous`); those nodes are counted against `current` until the next rotation.
        self.previous = self.current
        self.previous_nodes = self.current_nodes
        self.current = trie.new_root()
        self.current_nodes = 0

    def match(self, tail: Sequence[int], max_len: int, min_len: int) -> list[tuple[Node, int]]:
        """Longest-suffix matches of `tail` in each generation (newest first)."""
        found = []
        for root in (self.current, self.previous):
            if root is None or root[trie.CHILD_TOTAL] == 0:
                continue
            node, length = trie.longest_match(root, tail, max_len, min_len)
            if node is not None:
                found.append((node, length))
        return found
