"""Model-informed draft nodes: the target's own top successors of a token, seen in earlier verifies.

Every verify step computes the target's next-token distribution at every draft node. Where the
siblings have no evidence, those distributions are the best guess available for free (as token
recycling does): after token t was a verify input, t's top-k successors under the target are kept;
when t appears in a later tree, its kept successors may become its children.

Per request (a table never serves another request, so no tenant's text reaches another), bounded
to ``max_entries`` tokens (least recently written dropped). Successors are context-free: t's entry
is its last context's prediction, hence the score discount ``weight`` applied on top of the
successor's probability (``DraftConfig.model_weight``).
"""

from __future__ import annotations

import heapq
from collections import OrderedDict
from collections.abc import Sequence

from sgl_consensus.drafting.tree import MODEL, Candidates


class SuccessorTable:
    """token -> (successor tokens, their target probabilities), best first."""

    __slots__ = ("max_entries", "_table")

    def __init__(self, max_entries: int = 4096) -> None:
        self.max_entries = max_entries
        self._table: OrderedDict[int, tuple[tuple[int, ...], tuple[float, ...]]] = OrderedDict()

    def __len__(self) -> int:
        return len(self._table)

    def get(self, token: int) -> tuple[tuple[int, ...], tuple[float, ...]] | None:
        return self._table.get(token)

    def update(self, inputs: Sequence[int], successors: Sequence[Sequence[int]],
               probabilities: Sequence[Sequence[float]]) -> None:
        """One verify's rows: ``inputs[i]`` was a node's input token, ``successors[i]`` the target's
        top tokens after it, ``probabilities[i]`` their probabilities."""
        table = self._table
        for token, succ, probs in zip(inputs, successors, probabilities):
            table[int(token)] = (tuple(int(s) for s in succ), tuple(float(p) for p in probs))
            table.move_to_end(int(token))
        while len(table) > self.max_entries:
            table.popitem(last=False)


def add_model_nodes(cands: Candidates, table: SuccessorTable, size: int, weight: float,
                    min_score: float = 0.0) -> Candidates:
    """``cands`` plus up to ``size - len(cands)`` model nodes (children taken from ``table``),
    best-first by path score (parent score x successor probability x ``weight``); a node never gets
    two children with one token. Returns ``cands`` itself when nothing is added."""
    room = size - len(cands)
    if room <= 0 or weight <= 0 or not len(table):
        return cands
    tokens, parents, depths = list(cands.tokens), list(cands.parents), list(cands.depths)
    labels, scores = list(cands.labels), list(cands.scores)
    taken = {(parents[i], tokens[i]) for i in range(1, len(tokens))}
    frontier: list[tuple[float, int, int, int]] = []  # (-score, order, parent, token)
    order = 0

    def expand(node: int) -> None:
        nonlocal order
        entry = table.get(tokens[node])
        if entry is None:
            return
        for succ, prob in zip(*entry):
            score = scores[node] * prob * weight
            if score > min_score and (node, succ) not in taken:
                heapq.heappush(frontier, (-score, order, node, succ))
                order += 1

    for node in range(len(tokens)):
        expand(node)
    added = 0
    while frontier and added < room:
        negative, _, parent, token = heapq.heappop(frontier)
        if (parent, token) in taken:
            continue
        taken.add((parent, token))
        tokens.append(token)
        parents.append(parent)
        depths.append(depths[parent] + 1)
        labels.append(MODEL)
        scores.append(-negative)
        added += 1
        expand(len(tokens) - 1)
    if not added:
        return cands
    # Best first again; ties keep creation order, so a parent (created first) precedes its children.
    order_ = sorted(range(len(tokens)), key=lambda i: (i != 0, -scores[i], i))
    new_index = {old: new for new, old in enumerate(order_)}
    return Candidates(
        tokens=[tokens[i] for i in order_],
        parents=[-1 if parents[i] < 0 else new_index[parents[i]] for i in order_],
        depths=[depths[i] for i in order_],
        labels=[labels[i] for i in order_],
        scores=[scores[i] for i in order_],
    )
