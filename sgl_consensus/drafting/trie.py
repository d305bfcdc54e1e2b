"""Depth-limited n-gram count trie: the one data structure every evidence source is built from.

A node is a plain list (fastest to read and mutate from Python):

    [count, prob_sum, prob_count, owner, child_total, children]

- `count`: how many times the n-gram spelled by the root->node path was written.
- `prob_sum` / `prob_count`: sum and number of the model probabilities recorded for the node's last
  token when it was written (exp of the logprob the writer sampled it with); 0 / 0 if none given.
- `owner`: slot of the only request that wrote this n-gram, `MIXED` once two writers did,
  `PROMPT` for n-grams of the shared prompt. Lets a request tell its own history from its siblings'.
- `child_total`: sum of the children's counts (the denominator of next-token frequencies).
- `children`: dict token -> node, or None for a leaf (most deep nodes stay leaves: saves memory).

Every suffix of every written sequence is inserted, down to `depth` tokens, so the node for any
n-gram of length <= depth exists iff the n-gram occurred, and its children are what followed it.

A writer keeps its *active pointers*: the nodes of its current suffixes of length 0..depth-1
(index = length). Appending one token advances each pointer to its child: O(depth) per token, and no
re-scan of the sequence (the near-quadratic insert of a trie fed whole windows each step).
The longest suffix of the writer that occurred before *with a continuation* is then simply the
deepest active pointer whose `child_total` is non-zero: O(max_match_len), no hashing of windows.
"""

from __future__ import annotations

from collections.abc import Sequence

COUNT, PROB_SUM, PROB_COUNT, OWNER, CHILD_TOTAL, CHILDREN = range(6)
MIXED = -1
PROMPT = -2

Node = list  # [int, float, int, int, int, dict | None]


def new_root() -> Node:
    return [0, 0.0, 0, MIXED, 0, None]


def advance(active: list[Node], token: int, prob: float | None, owner: int, depth: int) -> tuple[list[Node], int]:
    """Write `token` after the suffixes `active` points at; return the new pointers and nodes created.

    `active[0]` is the root; `active[i]` the node of the writer's last i tokens. This is the
    hottest loop of `extend`: one dict lookup and a few list updates per level.
    """
    new_active = [active[0]]
    append = new_active.append
    created = 0
    if prob is None:
        for node in active:
            kids = node[5]
            if kids is None:
                child = node[5] = {token: [1, 0.0, 0, owner, 0, None]}
                child = child[token]
                created += 1
            else:
                child = kids.get(token)
                if child is None:
                    child = kids[token] = [1, 0.0, 0, owner, 0, None]
                    created += 1
                else:
                    child[0] += 1
                    if child[3] != owner:
                        child[3] = MIXED
            node[4] += 1
            append(child)
    else:
        for node in active:
            kids = node[5]
            if kids is None:
                kids = node[5] = {}
                child = None
            else:
                child = kids.get(token)
            if child is None:
                child = kids[token] = [1, prob, 1, owner, 0, None]
                created += 1
            else:
                child[0] += 1
                child[1] += prob
                child[2] += 1
                if child[3] != owner:
                    child[3] = MIXED
            node[4] += 1
            append(child)
    if len(new_active) > depth:
        new_active.pop()  # a depth-`depth` node is counted but never extended
    return new_active, created


def follow(active: list[Node], token: int, depth: int) -> list[Node]:
    """Read-only `advance`: move the pointers without writing (the trie is full or shared)."""
    new_active = [active[0]]
    append = new_active.append
    for node in active:
        kids = node[CHILDREN]
        child = kids.get(token) if kids is not None else None
        if child is None:
            break  # longer suffixes cannot exist if a shorter one does not
        append(child)
    if len(new_active) > depth:
        new_active.pop()
    return new_active


def pointers_for(root: Node, tail: Sequence[int], depth: int) -> list[Node]:
    """Active pointers of a writer whose last tokens are `tail`, without writing: O(depth^2)."""
    active = [root]
    tail = list(tail[-(depth - 1):]) if depth > 1 else []
    for start in range(len(tail) - 1, -1, -1):  # suffix lengths 1, 2, ...
        node = root
        for token in tail[start:]:
            kids = node[CHILDREN]
            node = kids.get(token) if kids is not None else None
            if node is None:
                return active
        active.append(node)
    return active


def walk(root: Node, tokens: Sequence[int]) -> Node | None:
    """Node spelled by `tokens` from `root`, or None."""
    node = root
    for token in tokens:
        kids = node[CHILDREN]
        if kids is None:
            return None
        node = kids.get(token)
        if node is None:
            return None
    return node


def longest_match(root: Node, tail: Sequence[int], max_len: int, min_len: int) -> tuple[Node | None, int]:
    """Deepest node for a suffix of `tail` (length in [min_len, max_len]) that has continuations.

    Tries the longest suffix first; O(max_len^2) dict lookups in the worst case, independent of
    the sequence and corpus sizes.
    """
    n = len(tail)
    for length in range(min(max_len, n), min_len - 1, -1):
        node = walk(root, tail[n - length:])
        if node is not None and node[CHILD_TOTAL] > 0:
            return node, length
    return None, 0


def fuzzy_match(
    root: Node, tail: Sequence[int], max_len: int, min_len: int, max_edits: int, max_branch: int
) -> tuple[Node | None, int]:
    """Best node whose n-gram is within `max_edits` edits (substitute/insert/delete) of a suffix.

    Used only when no exact match exists. The search is bounded: at most `max_branch` most frequent
    children are tried per substitution/insertion, and the edit budget is small (<= 3).
    """
    n = len(tail)
    best: tuple[int, int, Node | None] = (-1, 0, None)  # (matched length, -edits, node)
    for length in range(min(max_len, n), min_len - 1, -1):
        query = tail[n - length:]
        found = _fuzzy_walk(root, query, 0, max_edits, max_branch)
        if found is not None:
            node, edits = found
            key = (length, -edits, node)
            if key[:2] > best[:2]:
                best = key
            break
    return best[2], best[0] if best[2] is not None else 0


def _fuzzy_walk(node: Node, query: Sequence[int], i: int, edits: int, max_branch: int) -> tuple[Node, int] | None:
    """Depth-first bounded edit-distance walk; returns (node, edits used) with most edits left."""
    if i == len(query):
        return (node, 0) if node[CHILD_TOTAL] > 0 else None
    kids = node[CHILDREN]
    best: tuple[Node, int] | None = None
    exact = kids.get(query[i]) if kids else None
    if exact is not None:
        best = _fuzzy_walk(exact, query, i + 1, edits, max_branch)
        if best is not None and best[1] == 0:
            return best
    if edits == 0 or i == len(query) - 1:
        return best  # the last token must match exactly, or the continuation would be misaligned
    candidates = []
    if kids:
        candidates = sorted(kids.items(), key=lambda item: -item[1][COUNT])[:max_branch]
    options: list[tuple[Node, int, int]] = []
    for token, child in candidates:
        if token != query[i]:
            options.append((child, i + 1, 1))  # substitution
        options.append((child, i, 1))  # extra token in the trie (insertion)
    options.append((node, i + 1, 1))  # token missing from the trie (deletion)
    for nxt, j, cost in options:
        found = _fuzzy_walk(nxt, query, j, edits - cost, max_branch)
        if found is not None:
            total = found[1] + cost
            if best is None or total < best[1]:
                best = (found[0], total)
    return best


def merge_job(source_root: Node, destination_root: Node) -> list:
    """A resumable merge of one trie into another, for `merge_step`."""
    kids = source_root[CHILDREN]
    return [(iter(kids.items()), destination_root, 1)] if kids else []


def merge_step(stack: list, budget: int, min_count: int = 1, max_depth: int = 1 << 30) -> tuple[int, int]:
    """Add the counts of a source trie into a destination trie, visiting at most `budget` children.

    `stack` (from `merge_job`) holds (iterator over source children, destination node, depth of
    those children) entries and is
    consumed in place, so a large merge is spread over many calls with a strict per-call bound.
    The source trie must no longer change (a finished group). Children seen fewer than `min_count`
    times are skipped with their subtrees (what one path wrote once is rarely worth keeping), and
    nothing deeper than `max_depth` is merged.
    Returns (children visited, nodes created).
    """
    visited = 0
    created = 0
    while stack and visited < budget:
        items, dst, depth = stack.pop()
        dst_kids = dst[5]
        deeper = depth < max_depth
        finished = True
        for token, s in items:
            visited += 1
            count = s[0]
            if count >= min_count:
                if dst_kids is None:
                    dst_kids = dst[5] = {}
                d = dst_kids.get(token)
                if d is None:
                    d = dst_kids[token] = [count, s[1], s[2], MIXED, 0, None]
                    created += 1
                else:
                    d[0] += count
                    d[1] += s[1]
                    d[2] += s[2]
                dst[4] += count
                if deeper and s[5]:
                    stack.append((iter(s[5].items()), d, depth + 1))
            if visited >= budget:
                finished = False
                break
        if not finished:
            stack.append((items, dst, depth))
    return visited, created
