"""Depth-limited n-gram count trie: the one data structure every evidence source is built from.

Nodes are integer ids into parallel flat lists (struct-of-arrays), node 0 being the root:

- `count[u]`: how many times the n-gram spelled by the root->u path was written;
- `prob_sum[u]` / `prob_count[u]`: sum and number of the model probabilities recorded for u's last
  token when it was written (exp of the logprob it was sampled with); 0 / 0 if none were given;
- `owner[u]`: who wrote the n-gram (lets a request tell its own history from its siblings'): the
  slot (>= 0) of the only request that wrote it; `PROMPT` if only the group's prompt did;
  `prompt_and(slot)` (<= -3) if the prompt and one request did; `MIXED` once two requests did;
- `child_total[u]`: sum of u's children's counts (the denominator of next-token frequencies);
- `kids[u]`: dict token -> child id, or None for a leaf.

Why flat lists and not one small object per node: the dicts then map ints to ints, which CPython's
cyclic garbage collector does not track, so millions of nodes add no GC work (with one list per
node, full collections walked every node inside a process that also holds torch and SGLang; measured
in docs/drafting-step.md). It is also smaller.

Every suffix of every written sequence is inserted, down to `depth` tokens, so the node of any
n-gram of length <= depth exists iff the n-gram occurred, and its children are what followed it.
A writer keeps its *active pointers*: the nodes of its current suffixes of length 0..depth-1
(index = length). Appending one token advances each pointer to its child: O(depth) per token and
no re-scan of the sequence (the near-quadratic insert of a trie fed whole windows each step).
The longest suffix of the writer that occurred before *with a continuation* is then the deepest
active pointer with a non-zero child total: O(max_match_len), no hashing of windows.
"""

from __future__ import annotations

from collections.abc import Sequence

MIXED = -1
PROMPT = -2
ROOT = 0


def prompt_and(slot: int) -> int:
    """Owner code of an n-gram written by the prompt and by request `slot` alone."""
    return -3 - slot


def combine_owners(current: int, writer: int) -> int:
    """Owner code after `writer` (a slot or PROMPT) writes an n-gram owned by `current`."""
    if current == writer or current == MIXED:
        return current
    if writer == PROMPT:
        return prompt_and(current) if current >= 0 else current
    if current == PROMPT or current == prompt_and(writer):
        return prompt_and(writer)
    return MIXED


def is_own(writers: int, slot: int) -> bool:
    """True if only `slot` and/or the prompt wrote the n-gram (no sibling evidence in it)."""
    return writers == slot or writers == PROMPT or writers == -3 - slot


class Trie:
    """Struct-of-arrays n-gram trie (see the module docstring)."""

    __slots__ = ("count", "prob_sum", "prob_count", "owner", "child_total", "kids", "wide_cache", "members")

    def __init__(self) -> None:
        self.count: list[int] = [0]
        self.prob_sum: list[float] = [0.0]
        self.prob_count: list[int] = [0]
        self.owner: list[int] = [MIXED]
        self.child_total: list[int] = [0]
        self.kids: list[dict[int, int] | None] = [None]
        # node -> (child_total when computed, most frequent (token, child) pairs): see tree.py
        self.wide_cache: dict[int, tuple[int, list[tuple[int, int]]]] = {}
        self.members = 0  # paths ever added to the group owning this trie (> 1: sibling evidence)

    @property
    def nodes(self) -> int:
        """Nodes besides the root."""
        return len(self.count) - 1


def advance(trie: Trie, active: list[int], token: int, prob: float | None, owner: int, depth: int) -> tuple[list[int], int]:
    """Write `token` after the suffixes `active` points at; return the new pointers and nodes created.

    `active[0]` is the root; `active[i]` the node of the writer's last i tokens. This is the hottest
    loop of `extend`: one dict lookup and a few list updates per level.
    """
    count = trie.count
    owners = trie.owner
    child_total = trie.child_total
    kids_of = trie.kids
    new_active = [ROOT]
    append = new_active.append
    created = 0
    has_prob = prob is not None
    for node in active:
        kids = kids_of[node]
        child = None if kids is None else kids.get(token)
        if child is None:
            child = len(count)
            if kids is None:
                kids_of[node] = {token: child}
            else:
                kids[token] = child
            count.append(1)
            trie.prob_sum.append(prob if has_prob else 0.0)
            trie.prob_count.append(1 if has_prob else 0)
            owners.append(owner)
            child_total.append(0)
            kids_of.append(None)
            created += 1
        else:
            count[child] += 1
            if has_prob:
                trie.prob_sum[child] += prob
                trie.prob_count[child] += 1
            if owners[child] != owner:
                owners[child] = combine_owners(owners[child], owner)
        child_total[node] += 1
        append(child)
    if len(new_active) > depth:
        new_active.pop()  # a depth-`depth` node is counted but never extended
    return new_active, created


def follow(trie: Trie, active: list[int], token: int, depth: int) -> list[int]:
    """Read-only `advance`: move the pointers without writing (the trie is full)."""
    kids_of = trie.kids
    new_active = [ROOT]
    append = new_active.append
    for node in active:
        kids = kids_of[node]
        child = None if kids is None else kids.get(token)
        if child is None:
            break  # longer suffixes cannot exist if a shorter one does not
        append(child)
    if len(new_active) > depth:
        new_active.pop()
    return new_active


def walk(trie: Trie, tokens: Sequence[int], node: int = ROOT) -> int | None:
    """Node spelled by `tokens` from `node`, or None."""
    kids_of = trie.kids
    for token in tokens:
        kids = kids_of[node]
        if kids is None:
            return None
        node = kids.get(token)
        if node is None:
            return None
    return node


def longest_match(trie: Trie, tail: Sequence[int], max_len: int, min_len: int) -> tuple[int | None, int]:
    """Deepest node for a suffix of `tail` (length in [min_len, max_len]) that has continuations.

    Longest suffix first; O(max_len^2) dict lookups at worst, independent of sequence and corpus size.
    """
    n = len(tail)
    child_total = trie.child_total
    for length in range(min(max_len, n), min_len - 1, -1):
        node = walk(trie, tail[n - length:])
        if node is not None and child_total[node] > 0:
            return node, length
    return None, 0


def fuzzy_match(
    trie: Trie, tail: Sequence[int], max_len: int, min_len: int, max_edits: int, max_branch: int
) -> tuple[int | None, int]:
    """Node of an n-gram within `max_edits` edits (substitute/insert/delete) of a suffix of `tail`.

    Used only when no exact match exists: the longest suffix with a fuzzy match wins, fewest edits
    first. Bounded: at most `max_branch` most frequent children are tried per edit, edits <= 3, and
    the suffix's last token must match exactly (else the continuation would be misaligned).
    """
    n = len(tail)
    for length in range(min(max_len, n), min_len - 1, -1):
        found = _fuzzy_walk(trie, ROOT, tail[n - length:], 0, max_edits, max_branch)
        if found is not None:
            return found[0], length
    return None, 0


def _fuzzy_walk(trie: Trie, node: int, query: Sequence[int], i: int, edits: int, max_branch: int) -> tuple[int, int] | None:
    """Depth-first bounded edit-distance walk; returns (node, edits used), fewest edits first."""
    if i == len(query):
        return (node, 0) if trie.child_total[node] > 0 else None
    kids = trie.kids[node]
    best: tuple[int, int] | None = None
    exact = kids.get(query[i]) if kids else None
    if exact is not None:
        best = _fuzzy_walk(trie, exact, query, i + 1, edits, max_branch)
        if best is not None and best[1] == 0:
            return best
    if edits == 0 or i == len(query) - 1:
        return best
    count = trie.count
    candidates = sorted(kids.items(), key=lambda item: -count[item[1]])[:max_branch] if kids else []
    options: list[tuple[int, int]] = []
    for token, child in candidates:
        if token != query[i]:
            options.append((child, i + 1))  # substitution
        options.append((child, i))  # an extra token in the trie (insertion)
    options.append((node, i + 1))  # a token missing from the trie (deletion)
    for nxt, j in options:
        found = _fuzzy_walk(trie, nxt, query, j, edits - 1, max_branch)
        if found is not None:
            total = found[1] + 1
            if best is None or total < best[1]:
                best = (found[0], total)
    return best


def merge_job(source: Trie, destination: Trie) -> list:
    """A resumable merge of `source` into `destination`, for `merge_step`."""
    kids = source.kids[ROOT]
    return [(iter(kids.items()), ROOT, 1)] if kids else []


def merge_step(
    source: Trie, destination: Trie, stack: list, budget: int, min_count: int = 1, max_depth: int = 1 << 30
) -> tuple[int, int]:
    """Add the counts of `source` into `destination`, visiting at most `budget` source children.

    `stack` (from `merge_job`) holds (iterator over source children, destination node, depth of
    those children) entries and is consumed in place, so a large merge spreads over many calls with
    a strict per-call bound. `source` must no longer change (a finished group). Children seen fewer
    than `min_count` times are skipped with their subtrees (what one path wrote once is rarely worth
    keeping), so are n-grams only the prompt wrote (problem statements rarely recur; the outputs'
    phrasing does), and nothing deeper than `max_depth` is merged. Returns (children visited, nodes created).
    """
    s_count, s_psum, s_pcount, s_kids, s_owner = source.count, source.prob_sum, source.prob_count, source.kids, source.owner
    d_count, d_psum, d_pcount = destination.count, destination.prob_sum, destination.prob_count
    d_total, d_kids_of, d_owner = destination.child_total, destination.kids, destination.owner
    visited = 0
    created = 0
    while stack and visited < budget:
        items, dst, depth = stack.pop()
        dst_kids = d_kids_of[dst]
        deeper = depth < max_depth
        finished = True
        for token, s in items:
            visited += 1
            count = s_count[s]
            if count >= min_count and s_owner[s] != PROMPT:
                d = None if dst_kids is None else dst_kids.get(token)
                if d is None:
                    d = len(d_count)
                    if dst_kids is None:
                        dst_kids = d_kids_of[dst] = {}
                    dst_kids[token] = d
                    d_count.append(count)
                    d_psum.append(s_psum[s])
                    d_pcount.append(s_pcount[s])
                    d_owner.append(MIXED)
                    d_total.append(0)
                    d_kids_of.append(None)
                    created += 1
                else:
                    d_count[d] += count
                    if s_pcount[s]:
                        d_psum[d] += s_psum[s]
                        d_pcount[d] += s_pcount[s]
                d_total[dst] += count
                if deeper:
                    grandkids = s_kids[s]
                    if grandkids:
                        stack.append((iter(grandkids.items()), d, depth + 1))
            if visited >= budget:
                finished = False
                break
        if not finished:
            stack.append((items, dst, depth))
    return visited, created
