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
from typing import Any, NamedTuple


from .trie import PROMPT, Trie

SIBLING, GLOBAL, OWN = 0, 1, 2
MODEL = 3  # a node from the target's own earlier predictions (drafting/successors.py)
WIDE = 16  # nodes with more children than this score only their 2 x max_branch most frequent ones


class Source(NamedTuple):
    """One evidence source matched for a draft node's context."""

    trie: Any  # the trie holding the evidence (a `Trie` here; the native core has its own)
    node: int  # the trie node of the matched context
    depth: int  # matched context length: longer contexts are more reliable
    other_weight: float  # weight of n-grams other writers (siblings, finished groups) wrote
    own_weight: float  # weight of n-grams only the requesting path and/or the prompt wrote
    owner: int | None  # owner slot of the requesting path in a group trie; None for the global corpus


@dataclass(frozen=True, slots=True)
class TreeParams:
    """Everything `build_tree` needs besides the sources (from `DraftConfig`, see there)."""

    max_depth: int  # draft depth below the root
    alpha: float  # weight of the recorded model probability against the observed frequency
    prior: float  # pseudo-count: evidence from n observations is trusted n / (n + prior)
    depth_prior: float  # a match of d context tokens is trusted d / (d + depth_prior)
    max_branch: int  # children kept per draft node
    min_score: float  # nodes whose path score is not above this are never proposed
    own_enabled: bool  # a path may draft from its own history
    siblings_enabled: bool  # a path may draft from its siblings

    @classmethod
    def from_config(cls, config: Any) -> TreeParams:
        return cls(config.draft_depth, config.alpha, config.prior_count, config.depth_prior, config.max_branch,
                   config.min_path_score, config.use_own_history, config.use_siblings)


class Continuation(NamedTuple):
    """A scored next token of a draft node."""

    score: float  # estimated probability that the token is accepted after the node
    token: int
    children: list[tuple[int, Source]]  # (child trie node, source it is in), one per source that knows it
    label: int  # the source that contributed most: SIBLING, GLOBAL or OWN


def score_children(sources: list[Source], params: TreeParams) -> list[Continuation]:
    """The top ``max_branch`` continuations of a draft node whose context matched ``sources``
    (deepest match first), merged by stick-breaking; in first-seen order unless pruned, then best
    first (ties in first-seen order). The one place the drafter's score is written."""
    alpha = params.alpha
    beta = 1.0 - alpha
    max_branch = params.max_branch
    merged: dict[int, list] = {}  # token -> [score, children, best contribution, its label]
    remaining = 1.0
    for source in sources:  # deepest match first: its estimate dominates, shallower ones back off
        source_trie, node, depth, other_weight, own_weight, owner = source
        total = source_trie.child_total[node]
        # Confidence in this source: more observations and longer matched contexts are more reliable.
        evidence = other_weight * total / (total + params.prior) * depth / (depth + params.depth_prior)
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
        for token, child in kids.items() if len(kids) <= WIDE else frequent_children(source_trie, node, max_branch):
            pc = prob_count[child]
            # share * (alpha * mean recorded prob + (1 - alpha) * frequency); frequency alone without probs
            contribution = (alpha * total * prob_sum[child] / pc + beta * count[child]) * scale if pc else count[child] * scale
            if owner is None:
                label = GLOBAL
            else:
                writer = writers[child]
                if writer == owner or writer == PROMPT or writer == -3 - owner:  # trie.is_own, inlined
                    if not params.own_enabled:
                        continue
                    contribution *= own_scale
                    label = OWN
                else:
                    if not params.siblings_enabled:
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
    items = merged.items()
    if len(merged) > max_branch:
        items = heapq.nlargest(max_branch, items, key=_merged_score)  # stable: ties keep first-seen order
    return [Continuation(entry[0], token, entry[1], entry[3]) for token, entry in items]


def _merged_score(item: tuple) -> float:
    return item[1][0]


def frequent_children(source_trie: Trie, node: int, max_branch: int) -> list[tuple[int, int]]:
    """The 2 * max_branch most frequent (token, child) pairs of a wide node (ties in insertion
    order), cached until the node changes.

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


def build_tree(root_token: int, sources: list[Source], n: int, params: TreeParams) -> Candidates:
    """The best draft nodes below ``root_token``, at most ``n`` including the root, best first.

    A node's path score is its parent's times its continuation score; ties pop in push order."""
    tokens = [root_token]
    parents = [-1]
    depths = [0]
    labels = [-1]
    scores = [1.0]
    result = Candidates(tokens, parents, depths, labels, scores)
    if n <= 1 or not sources:
        return result
    min_score = params.min_score
    max_depth = params.max_depth
    frontier: list = []  # (-path score, push order, parent index, token, children, label)
    tick = itertools.count()
    push = heapq.heappush
    pop = heapq.heappop
    for score, token, children, label in score_children(sources, params):
        if score > min_score:
            push(frontier, (-score, next(tick), 0, token, children, label))
    index = 0
    while frontier:
        negative_score, _, parent_index, token, children, label = pop(frontier)
        index += 1
        depth = depths[parent_index] + 1
        tokens.append(token)
        parents.append(parent_index)
        depths.append(depth)
        labels.append(label)
        scores.append(-negative_score)
        if index + 1 >= n:
            break
        if depth >= max_depth:
            continue
        child_sources = [
            Source(source.trie, child, source.depth + 1, source.other_weight, source.own_weight, source.owner)
            for child, source in children
            if source.trie.child_total[child]
        ]
        if not child_sources:
            continue
        path_score = -negative_score
        for score, child_token, grandchildren, child_label in score_children(child_sources, params):
            child_score = path_score * score
            if child_score > min_score:
                push(frontier, (-child_score, next(tick), index, child_token, grandchildren, child_label))
    return result
