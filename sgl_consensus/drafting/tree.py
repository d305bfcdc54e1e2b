"""Consensus scoring and the best-first draft tree.

Scoring (per draft node, over the source nodes matched for its context):
- each source s (sibling group, global generations) proposes next tokens v from its trie node u:
  q_s(v) = alpha * p(v|u) + (1 - alpha) * freq(v|u), with p the mean recorded model probability of v
  there (freq when no logprobs were recorded) and freq = count(v) / sum of u's children counts;
- sources merge into one estimate of P(accept v) by stick-breaking, deepest match first:
  source s gets share_s = e_s * prod_{t before s} (1 - e_t) of the probability mass, its confidence
  e_s = weight_s * n_s / (n_s + prior) * d_s / (d_s + depth_prior) growing with the evidence n_s and
  the matched context length d_s; P(v) = sum_s share_s * q_s(v) (the rest: "nobody knows");
- a draft node's path score is the product of its edges' estimates: its probability of being
  accepted. Expected accepted tokens = sum of path scores, so the best tree of n - 1 nodes keeps
  the n - 1 highest path scores; since scores only shrink along a path a max-heap over the frontier
  finds it, expanding only nodes that were taken: O(n log n + n * branching) per request,
  independent of sequence length and of the number of siblings.

Own n-grams in a sibling group (written only by the requesting path or the prompt) weigh
`own_weight` instead of `sibling_weight`; the source that contributed most to an edge is its label.
"""

from __future__ import annotations

import heapq
import itertools
from dataclasses import dataclass

from .trie import PROMPT, Trie

SIBLING, GLOBAL, OWN = 0, 1, 2
MODEL = 3  # a node from the target's own earlier predictions (drafting/successors.py)
SOURCE_NAMES = ("sibling", "global", "own")
_WIDE = 16  # nodes with more children than this score only their most frequent ones

# A source entry: (trie, node, its depth = matched context length, weight of other writers'
# n-grams, weight of own n-grams, owner slot of the requesting path or None for the global corpus).
Source = tuple


def score_children(
    sources: list[Source],
    alpha: float,
    prior: float,
    depth_prior: float,
    max_branch: int,
    own_enabled: bool,
    siblings_enabled: bool,
) -> list[tuple[float, int, list, int]]:
    """Top `max_branch` (score, token, [(child node, its source)], label) continuations of a node."""
    if len(sources) == 1:
        return _score_single(sources[0], alpha, prior, depth_prior, max_branch, own_enabled, siblings_enabled)
    merged: dict[int, list] = {}
    remaining = 1.0
    beta = 1.0 - alpha
    for source in sources:  # deepest match first: its estimate dominates, shallower ones back off
        source_trie, node, depth, other_weight, own_weight, owner = source
        total = source_trie.child_total[node]
        # Confidence in this source: more observations and longer matched contexts are more reliable.
        evidence = other_weight * total / (total + prior) * depth / (depth + depth_prior)
        if evidence > 1.0:
            evidence = 1.0
        share = remaining * evidence  # stick-breaking: the mass the deeper sources left over
        remaining -= share
        if share <= 0.0:
            continue
        scale = share / total
        own_scale = own_weight / other_weight if other_weight > 0.0 else 0.0
        count = source_trie.count
        prob_count = source_trie.prob_count
        prob_sum = source_trie.prob_sum
        writers = source_trie.owner
        kids = source_trie.kids[node]
        for token, child in kids.items() if len(kids) <= _WIDE else _frequent_children(source_trie, node, max_branch):
            pc = prob_count[child]
            # share * (alpha * mean recorded prob + (1 - alpha) * frequency); frequency alone without probs
            contribution = (alpha * total * prob_sum[child] / pc + beta * count[child]) * scale if pc else count[child] * scale
            if owner is None:
                label = GLOBAL
            else:
                writer = writers[child]
                if writer == owner or writer == PROMPT or writer == -3 - owner:  # trie.is_own, inlined
                    if not own_enabled:
                        continue
                    contribution *= own_scale
                    label = OWN
                else:
                    if not siblings_enabled:
                        continue
                    label = SIBLING
            entry = merged.get(token)
            if entry is None:
                merged[token] = [contribution, [(child, source)], contribution, label]
            else:
                entry[0] += contribution
                entry[1].append((child, source))
                if contribution > entry[2]:
                    entry[2] = contribution
                    entry[3] = label
    if not merged:
        return []
    items = merged.items()
    if len(merged) > max_branch:
        items = heapq.nlargest(max_branch, items, key=_merged_score)
    return [(entry[0], token, entry[1], entry[3]) for token, entry in items]


def _merged_score(item: tuple) -> float:
    return item[1][0]


def _score_single(
    source: Source,
    alpha: float,
    prior: float,
    depth_prior: float,
    max_branch: int,
    own_enabled: bool,
    siblings_enabled: bool,
) -> list[tuple[float, int, list, int]]:
    """`score_children` for one source (the common case below the first levels): no merging."""
    source_trie, node, depth, other_weight, own_weight, owner = source
    total = source_trie.child_total[node]
    evidence = other_weight * total / (total + prior) * depth / (depth + depth_prior)
    scale = (evidence if evidence < 1.0 else 1.0) / total
    beta = 1.0 - alpha
    own_scale = own_weight / other_weight if other_weight > 0.0 else 0.0
    count = source_trie.count
    prob_count = source_trie.prob_count
    prob_sum = source_trie.prob_sum
    writers = source_trie.owner
    result = []
    kids = source_trie.kids[node]
    for token, child in kids.items() if len(kids) <= _WIDE else _frequent_children(source_trie, node, max_branch):
        pc = prob_count[child]
        score = (alpha * total * prob_sum[child] / pc + beta * count[child]) * scale if pc else count[child] * scale
        if owner is None:
            label = GLOBAL
        else:
            writer = writers[child]
            if writer == owner or writer == PROMPT or writer == -3 - owner:  # trie.is_own, inlined
                if not own_enabled:
                    continue
                score *= own_scale
                label = OWN
            else:
                if not siblings_enabled:
                    continue
                label = SIBLING
        result.append((score, token, [(child, source)], label))
    if len(result) > max_branch:
        result = heapq.nlargest(max_branch, result, key=_first)
    return result


def _first(item: tuple) -> float:
    return item[0]


def _frequent_children(source_trie: Trie, node: int, max_branch: int) -> list[tuple[int, int]]:
    """The 2 * max_branch most frequent children of a wide node, cached until the node changes.

    Short contexts (one token) have hundreds of continuations; scoring them all every time would
    make `propose` cost grow with the corpus. The cache is keyed by the node's child total, which
    changes whenever a child is written.
    """
    stamp = source_trie.child_total[node]
    cached = source_trie.wide_cache.get(node)
    if cached is not None and cached[0] == stamp:
        return cached[1]
    count = source_trie.count
    items = heapq.nlargest(2 * max_branch, source_trie.kids[node].items(), key=lambda item: count[item[1]])
    source_trie.wide_cache[node] = (stamp, items)
    return items


def _expand_single(
    frontier: list,
    tick,
    source: Source,
    path_score: float,
    parent_index: int,
    alpha: float,
    prior: float,
    depth_prior: float,
    max_branch: int,
    min_score: float,
    own_enabled: bool,
    siblings_enabled: bool,
) -> None:
    """Push the children of a single-source draft node onto the frontier (the hot path of deep levels).

    Same scores as `_score_single`, without the intermediate list when no pruning is needed.
    """
    source_trie, node, depth, other_weight, own_weight, owner = source
    kids = source_trie.kids[node]
    if len(kids) > max_branch:
        for score, token, pairs, label in _score_single(
            source, alpha, prior, depth_prior, max_branch, own_enabled, siblings_enabled
        ):
            child_score = path_score * score
            if child_score > min_score:
                heapq.heappush(frontier, (-child_score, next(tick), parent_index, token, pairs, label))
        return
    total = source_trie.child_total[node]
    evidence = other_weight * total / (total + prior) * depth / (depth + depth_prior)
    scale = (evidence if evidence < 1.0 else 1.0) / total * path_score
    count = source_trie.count
    prob_count = source_trie.prob_count
    for token, child in kids.items():
        pc = prob_count[child]
        score = (alpha * total * source_trie.prob_sum[child] / pc + (1.0 - alpha) * count[child]) * scale if pc else count[child] * scale
        if owner is None:
            label = GLOBAL
        else:
            writer = source_trie.owner[child]
            if writer == owner or writer == PROMPT or writer == -3 - owner:  # trie.is_own, inlined
                if not own_enabled:
                    continue
                score *= own_weight / other_weight if other_weight > 0.0 else 0.0
                label = OWN
            else:
                if not siblings_enabled:
                    continue
                label = SIBLING
        if score > min_score:
            heapq.heappush(frontier, (-score, next(tick), parent_index, token, ((child, source),), label))


@dataclass(slots=True)
class Candidates:
    """One request's draft nodes in best-first order (the order the frontier popped them).

    Index 0 is the root (the last committed token: parent -1, label -1, score 1). A node's parent
    comes before it and path scores never increase along the order, so the first k nodes always
    form a tree: the best k-node tree. ``scores[i]`` is node i's path score, the drafter's estimate
    that it is accepted; ``labels[i]`` the source that contributed most to its last edge.
    """

    tokens: list[int]
    parents: list[int]
    depths: list[int]
    labels: list[int]
    scores: list[float]

    def __len__(self) -> int:
        return len(self.tokens)

    def bfs(self, count: int) -> tuple[list[int], list[int], list[int]]:
        """(tokens, parents, labels) of the first ``count`` nodes, reordered breadth-first (stable
        by depth), parents before children: SGLang NGRAM's tree layout."""
        count = min(count, len(self.tokens))
        depths = self.depths
        if all(depths[i] <= depths[i + 1] for i in range(count - 1)):
            return self.tokens[:count], self.parents[:count], self.labels[:count]
        order = sorted(range(count), key=depths.__getitem__)
        new_index = [0] * count
        for new, old in enumerate(order):
            new_index[old] = new
        parents = self.parents
        return ([self.tokens[old] for old in order],
                [-1 if parents[old] < 0 else new_index[parents[old]] for old in order],
                [self.labels[old] for old in order])


def build_tree(
    root_token: int,
    sources: list[Source],
    n: int,
    max_depth: int,
    alpha: float,
    prior: float,
    depth_prior: float,
    max_branch: int,
    min_score: float,
    own_enabled: bool,
    siblings_enabled: bool,
) -> Candidates:
    """The best draft nodes below ``root_token``, at most ``n`` including the root, best first."""
    tokens = [root_token]
    parents = [-1]
    depths = [0]
    labels = [-1]
    scores = [1.0]
    result = Candidates(tokens, parents, depths, labels, scores)
    if n <= 1 or not sources:
        return result
    frontier: list = []
    tick = itertools.count()
    push = heapq.heappush
    pop = heapq.heappop
    for score, token, pairs, label in score_children(
        sources, alpha, prior, depth_prior, max_branch, own_enabled, siblings_enabled
    ):
        if score > min_score:
            push(frontier, (-score, next(tick), 0, token, pairs, label))
    add_token, add_parent, add_depth, add_label = tokens.append, parents.append, depths.append, labels.append
    add_score = scores.append
    index = 0
    while frontier:
        negative_score, _, parent_index, token, pairs, label = pop(frontier)
        index += 1
        depth = depths[parent_index] + 1
        add_token(token)
        add_parent(parent_index)
        add_depth(depth)
        add_label(label)
        add_score(-negative_score)
        if index + 1 >= n:
            break
        if depth >= max_depth:
            continue
        if len(pairs) == 1:
            child, source = pairs[0]
            source_trie = source[0]
            if source_trie.child_total[child]:
                _expand_single(
                    frontier, tick, (source_trie, child, source[2] + 1, source[3], source[4], source[5]),
                    -negative_score, index, alpha, prior, depth_prior, max_branch, min_score,
                    own_enabled, siblings_enabled,
                )
            continue
        child_sources = [
            (source[0], child, source[2] + 1, source[3], source[4], source[5])
            for child, source in pairs
            if source[0].child_total[child]
        ]
        if not child_sources:
            continue
        path_score = -negative_score
        for score, child_token, child_pairs, child_label in score_children(
            child_sources, alpha, prior, depth_prior, max_branch, own_enabled, siblings_enabled
        ):
            child_score = path_score * score
            if child_score > min_score:
                push(frontier, (-child_score, next(tick), index, child_token, child_pairs, child_label))
    return result
