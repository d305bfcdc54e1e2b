"""The drafter's data plane: tries, per-request writer state, tree building and row layout.

`ConsensusDrafter` (drafter.py) holds the policy: which group a request joins, when a group lingers
or goes to the global corpus, which corpus generation is current, when merges run. Everything it
does per token or per step goes through a `DraftCore`:

- `PythonCore` (here): the reference, built on `trie.py` and `tree.py`;
- `NativeCore` (`native/`): the same operations in C++, one call per batch on the hot path.

Both must produce identical drafts for identical call sequences (tests/drafting/test_native_core.py
feeds both the same random streams). Handles (tries, corpora, requests, merge jobs) are opaque:
the policy only passes them back to the core that made them.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import Any, NamedTuple, Protocol

import numpy as np

from . import trie
from .config import DraftConfig
from .validation import MAX_TOKEN_ID
from .tree import Candidates, Source, TreeParams, build_tree

LABELS = 4  # SIBLING, GLOBAL, OWN, MODEL (tree.py)


class _BlockPart:
    """A `CandidateBatch` int32 array that is part ``k`` of its block, viewed when first read."""

    def __init__(self, k: int) -> None:
        self.k = k

    def __set_name__(self, owner: type, name: str) -> None:
        self.slot = "_" + name

    def __get__(self, batch: CandidateBatch | None, owner: type | None = None) -> np.ndarray:
        if batch is None:
            return self  # type: ignore[return-value]
        value = getattr(batch, self.slot)
        if value is None:
            value = batch._part(self.k)
            setattr(batch, self.slot, value)
        return value


class CandidateBatch:
    """One `propose`: per request its best draft nodes, best first (see `tree.Candidates`), as
    [batch, num_draft_tokens] arrays; entries past a row's length are 0 (scores 0.0)."""

    __slots__ = ("_tokens", "_parents", "_depths", "_labels", "_lengths", "scores", "block", "rank_sums", "shape")

    def __init__(self, tokens: np.ndarray, parents: np.ndarray, depths: np.ndarray, labels: np.ndarray,
                 scores: np.ndarray, lengths: np.ndarray) -> None:
        self._tokens = tokens  # int32: node tokens, node 0 the root (the last committed token)
        self._parents = parents  # int32: parent index, -1 for the root
        self._depths = depths  # int32: depth below the root
        self._labels = labels  # int32: SIBLING / GLOBAL / OWN / MODEL (the root: -1)
        self.scores = scores  # float64: path score, the drafter's estimate that the node is accepted
        self._lengths = lengths  # int32 [batch]: nodes per row, root included
        self.block: np.ndarray | None = None  # when the int32 arrays are views of one block (see `empty`)
        self.rank_sums: np.ndarray | None = None  # float64 [n - 1] when asked for (`rank_weight_sums`)
        self.shape: tuple[int, int] = tokens.shape  # (batch, num_draft_tokens)

    @classmethod
    def empty(cls, batch: int, n: int, fill=np.empty) -> CandidateBatch:
        """Arrays for `batch` rows; the int32 ones are consecutive parts of one block (tokens,
        parents, depths, labels, lengths), so a native call needs one address for all five, and
        their views are made when first read (the worker's step reads few of them: in the server
        every NumPy call costs cold-cache microseconds)."""
        result = cls.__new__(cls)
        result.block = fill(4 * batch * n + batch, np.int32)
        result.scores = fill((batch, n), np.float64)
        result.shape = (batch, n)
        result._tokens = result._parents = result._depths = result._labels = result._lengths = None
        result.rank_sums = None
        return result

    def _part(self, k: int) -> np.ndarray:
        batch, n = self.shape
        size = batch * n
        return self.block[k * size:(k + 1) * size].reshape(batch, n) if k < 4 else self.block[4 * size:]

    tokens = _BlockPart(0)
    parents = _BlockPart(1)
    depths = _BlockPart(2)
    labels = _BlockPart(3)
    lengths = _BlockPart(4)

    @classmethod
    def from_rows(cls, rows: Sequence[Candidates], n: int) -> CandidateBatch:
        batch = cls.empty(len(rows), n, np.zeros)
        for b, row in enumerate(rows):
            k = len(row)
            batch.tokens[b, :k] = row.tokens
            batch.parents[b, :k] = row.parents
            batch.depths[b, :k] = row.depths
            batch.labels[b, :k] = row.labels
            batch.scores[b, :k] = row.scores
            batch.lengths[b] = k
        return batch

    def __len__(self) -> int:
        return self.shape[0]

    def __getitem__(self, b: int) -> Candidates:
        k = int(self.lengths[b])
        return Candidates(self.tokens[b, :k].tolist(), self.parents[b, :k].tolist(), self.depths[b, :k].tolist(),
                          self.labels[b, :k].tolist(), self.scores[b, :k].tolist())


RankWeights = tuple  # (edges, intercepts, slopes): see `rank_weight_sums`


def rank_weight_sums(ranks: np.ndarray, weights: RankWeights) -> np.ndarray:
    """Per column of ``ranks`` (a batch's scores at ranks 1, 2, ...: [batch, k], 0.0 where a row has
    no such node), the sum over rows of a piecewise-linear weight of the score: with ``weights`` =
    (edges: rising float64 [m], intercepts, slopes: float64 [m + 1]) and slot = how many edges are
    <= the score, ``intercepts[slot] + slopes[slot] * score``. The width policy's calibration is such
    a weight (its expected accepted nodes at each rank); the native core computes the same sums
    inside its proposal call."""
    edges, intercepts, slopes = weights
    slots = np.searchsorted(edges, ranks, side="right")
    return (intercepts[slots] + slopes[slots] * ranks).sum(axis=0)


def check_rank_weights(weights: RankWeights) -> None:
    """Edges rising, weights finite (the native core checks the same in its proposal call)."""
    edges, intercepts, slopes = weights
    if len(edges) > 1 and not (np.diff(edges) > 0).all():
        raise ValueError(f"rank_weights: edges must rise, got {edges.tolist()}")
    if not (np.isfinite(edges).all() and np.isfinite(intercepts).all() and np.isfinite(slopes).all()):
        raise ValueError("rank_weights must be finite")


class BadBatch(Exception):
    """A batch of rows with a bad value (`DraftCore.extend_rows`): which kind, at which index."""

    TOKEN, LENGTH, LOGPROB_COUNT = 1, 2, 3

    def __init__(self, kind: int, index: int) -> None:
        super().__init__(kind, index)
        self.kind, self.index = kind, index

    def describe(self, rids: Sequence[Any], tokens: np.ndarray, lens: np.ndarray, logprobs: np.ndarray | None,
                 counts: np.ndarray | None) -> str:
        """One line naming the bad value and its request."""
        if self.kind == self.LENGTH:
            return f"request {rids[self.index]!r}: lens must be in [0, {tokens.shape[1]}] (the row width), " \
                   f"got {int(lens[self.index])}"
        if self.kind == self.LOGPROB_COUNT:
            return f"request {rids[self.index]!r}: logprob_counts must be <= the logprobs' stride " \
                   f"({logprobs.shape[1]}), got {int(counts[self.index])}"
        row, column = divmod(self.index, tokens.shape[1])
        return f"request {rids[row]!r}: token_ids must be in [0, {MAX_TOKEN_ID}], got {int(tokens[row, column])}"


class Written(NamedTuple):
    """What `DraftCore.extend_rows` did."""

    with_prob: int  # tokens written with a probability
    prob_sum: float  # the sum of those probabilities
    last_tokens: np.ndarray  # int64 [batch]: each request's last token afterwards (its next tree's root)
    tokens: int  # tokens written in all


# The kinds of work whose time a core keeps (`DraftCore.busy`): trie writes of committed tokens
# (not a prompt's index), proposals, merges of finished groups into a global corpus.
CORE_WORK = ("writes", "proposals", "merges")


class DraftCore(Protocol):
    """The operations the drafter's policy needs from its data plane (see the module docstring)."""

    name: str

    def new_trie(self) -> Any: ...
    def trie_nodes(self, handle: Any) -> int: ...
    def set_members(self, handle: Any, members: int) -> None:
        """Paths ever added to the group owning this trie (> 1: it holds sibling evidence)."""
    def write(self, handle: Any, active: list[int], tokens: list[int], owner: int) -> list[int]:
        """Write tokens (no probabilities: prompts) after `active`; the new pointers."""
    def new_corpus(self) -> Any: ...
    def set_generations(self, corpus: Any, current: Any, previous: Any | None) -> None: ...
    def new_request(self, group_trie: Any, corpus: Any, slot: int, active: list[int], tail: list[int]) -> Any: ...
    def free_request(self, request: Any) -> None: ...
    def last_token(self, request: Any) -> int:
        """The request's last recorded token (its prompt's, before any output)."""
    def extend(self, request: Any, tokens: list[int], probs: list[float] | None) -> None: ...
    def extend_many(self, requests: Sequence[Any], token_lists: Sequence[list[int]], probs: list[float] | None) -> None:
        """`extend` for a batch; `probs`: flat over the concatenated tokens, NaN = not recorded."""
    def request_batch(self, requests: Sequence[Any]) -> Any:
        """Request handles in the form `propose` and `extend_rows` take a batch in (made once per batch)."""
    def extend_rows(self, requests: Any, tokens: np.ndarray, lens: np.ndarray, logprobs: np.ndarray | None,
                    counts: np.ndarray | None) -> Written:
        """`extend_many` in a verify's row layout, inputs checked as they are read
        (`PythonCore.extend_rows` defines it; raises `BadBatch`, having written nothing, on a bad input)."""
    def merge_start(self, source: Any, destination: Any) -> Any: ...
    def merge_step(self, job: Any, budget: int, min_count: int, max_depth: int) -> tuple[int, bool]:
        """Visit up to `budget` source children; (visited, finished)."""
    def propose(self, requests: Sequence[Any], rank_weights: RankWeights | None = None) -> CandidateBatch:
        """Candidates for a batch; with ``rank_weights``, their `rank_weight_sums` too."""
    def layout(self, batch: CandidateBatch, width: int, budgets: Sequence[int] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        """(tokens int64 [bs, w], ancestor mask bool [bs, w, w], label counts int64 [bs, 4], their
        totals int64 [4])."""
    def accepted(self, batch: CandidateBatch, width: int, committed: Sequence[Sequence[int]]) -> np.ndarray:
        """bool [bs, n]: the candidates each request's committed tokens walk through (`accepted_rows`)."""
    def outcomes(self, batch: CandidateBatch, width: int, tokens: np.ndarray, lens: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """Per real draft node of each request with committed tokens: (row, score, accepted) (`outcome_rows`)."""
    def busy(self) -> dict[str, tuple[float, int]]:
        """Per kind of work (`CORE_WORK`): wall seconds spent inside the core on it so far, and calls."""


class _PyRequest:
    __slots__ = ("trie", "corpus", "slot", "active", "tail")

    def __init__(self, group_trie: trie.Trie, corpus: _PyCorpus, slot: int, active: list[int], tail: list[int]):
        self.trie = group_trie
        self.corpus = corpus
        self.slot = slot
        self.active = active
        self.tail = tail  # last tokens: at least trie_depth of them once that many exist


class _PyCorpus:
    __slots__ = ("current", "previous")

    def __init__(self) -> None:
        self.current: trie.Trie | None = None
        self.previous: trie.Trie | None = None


class _PyMerge:
    __slots__ = ("source", "destination", "stack")

    def __init__(self, source: trie.Trie, destination: trie.Trie) -> None:
        self.source = source
        self.destination = destination
        self.stack = trie.merge_job(source, destination)


class PythonCore:
    """The reference data plane (pure Python; see the module docstring)."""

    name = "python"

    def __init__(self, config: DraftConfig) -> None:
        self.config = config
        self.params = TreeParams.from_config(config)
        self._depth = config.trie_depth
        self._max_nodes = config.group_max_nodes
        self._max_match = config.max_match_len
        self._min_match = config.min_match_len
        self._global_min_match = max(config.min_match_len, config.global_min_match_len)
        self._global_below = config.global_lookup_below
        self._busy = {work: [0.0, 0] for work in CORE_WORK}

    def busy(self) -> dict[str, tuple[float, int]]:
        return {work: (seconds, calls) for work, (seconds, calls) in self._busy.items()}

    def _spent(self, work: str, start: float) -> None:
        entry = self._busy[work]
        entry[0] += time.perf_counter() - start
        entry[1] += 1

    # -- tries and corpora
    def new_trie(self) -> trie.Trie:
        return trie.Trie()

    def trie_nodes(self, handle: trie.Trie) -> int:
        return handle.nodes

    def set_members(self, handle: trie.Trie, members: int) -> None:
        handle.members = members

    def write(self, handle: trie.Trie, active: list[int], tokens: list[int], owner: int) -> list[int]:
        return _write_many(handle, active, tokens, None, owner, self._depth, self._max_nodes)

    def new_corpus(self) -> _PyCorpus:
        return _PyCorpus()

    def set_generations(self, corpus: _PyCorpus, current: trie.Trie, previous: trie.Trie | None) -> None:
        corpus.current, corpus.previous = current, previous

    # -- requests
    def new_request(self, group_trie: trie.Trie, corpus: _PyCorpus, slot: int, active: list[int],
                    tail: list[int]) -> _PyRequest:
        return _PyRequest(group_trie, corpus, slot, list(active), list(tail))

    def free_request(self, request: _PyRequest) -> None:
        pass

    def last_token(self, request: _PyRequest) -> int:
        return request.tail[-1]

    def extend(self, request: _PyRequest, tokens: list[int], probs: list[float] | None) -> None:
        start = time.perf_counter()
        depth = self._depth
        request.active = _write_many(request.trie, request.active, tokens, probs, request.slot, depth, self._max_nodes)
        tail = request.tail
        tail.extend(tokens)
        if len(tail) > 2 * depth:
            del tail[:-depth]
        self._spent("writes", start)

    def extend_many(self, requests: Sequence[_PyRequest], token_lists: Sequence[list[int]],
                    probs: list[float] | None) -> None:
        start = 0
        for request, tokens in zip(requests, token_lists):
            row = None
            if probs is not None:
                row = [None if value != value else value for value in probs[start:start + len(tokens)]]
            start += len(tokens)
            if tokens:
                self.extend(request, tokens, row)

    def request_batch(self, requests: Sequence[_PyRequest]) -> list[_PyRequest]:
        return list(requests)

    def extend_rows(self, requests: list[_PyRequest], tokens: np.ndarray, lens: np.ndarray,
                    logprobs: np.ndarray | None, counts: np.ndarray | None) -> Written:
        """Request i (of `request_batch`) gets int64 ``tokens[i, :lens[i]]`` (a verify's layout:
        one row per request). With ``logprobs`` (float64 [batch, stride]) and ``counts`` (int64
        [batch]), the newest ``counts[i]`` of them get probabilities ``exp(min(logprob, 0))`` from
        row i, unless the row has more of them than new tokens or a NaN among them. Raises
        `BadBatch` before writing anything if a length lies outside [0, row width], a count above
        the logprobs' stride, or a token outside [0, 2^31 - 1]. Returns what it wrote (`Written`)."""
        width = tokens.shape[1]
        matrix, sizes = tokens.tolist(), lens.tolist()
        known = counts.tolist() if logprobs is not None else None
        for i, size in enumerate(sizes):
            if size < 0 or size > width:
                raise BadBatch(BadBatch.LENGTH, i)
            if known is not None and known[i] > logprobs.shape[1]:
                raise BadBatch(BadBatch.LOGPROB_COUNT, i)
            for j, token in enumerate(matrix[i][:size]):
                if token < 0 or token > MAX_TOKEN_ID:
                    raise BadBatch(BadBatch.TOKEN, i * width + j)
        rows = [row[:size] for row, size in zip(matrix, sizes)]
        with_prob, total = 0, 0.0
        probs: list[float] | None = None
        if logprobs is not None:
            probs = []
            for row, values_row, count in zip(rows, logprobs.tolist(), known):
                values_row = values_row[:count] if 0 <= count <= len(row) else []
                if any(value != value for value in values_row):  # a NaN: sanitised logits
                    values_row = []
                row_probs = [math.exp(min(value, 0.0)) for value in values_row]
                probs += [math.nan] * (len(row) - len(row_probs)) + row_probs
                with_prob += len(row_probs)
                for p in row_probs:
                    total += p
        self.extend_many(requests, rows, probs)
        last = np.fromiter((request.tail[-1] for request in requests), dtype=np.int64, count=len(requests))
        return Written(with_prob, total, last, sum(sizes))

    # -- merges of finished groups into the global corpus
    def merge_start(self, source: trie.Trie, destination: trie.Trie) -> _PyMerge:
        return _PyMerge(source, destination)

    def merge_step(self, job: _PyMerge, budget: int, min_count: int, max_depth: int) -> tuple[int, bool]:
        start = time.perf_counter()
        visited, _ = trie.merge_step(job.source, job.destination, job.stack, budget, min_count, max_depth)
        self._spent("merges", start)
        return visited, not job.stack

    # -- drafting
    def propose(self, requests: Sequence[_PyRequest], rank_weights: RankWeights | None = None) -> CandidateBatch:
        start = time.perf_counter()
        n = self.config.num_draft_tokens
        params = self.params
        if rank_weights is not None:
            check_rank_weights(rank_weights)
        rows = [build_tree(request.tail[-1], self._sources(request), n, params) for request in requests]
        batch = CandidateBatch.from_rows(rows, n)
        if rank_weights is not None:
            batch.rank_sums = rank_weight_sums(batch.scores[:, 1:], rank_weights)
        self._spent("proposals", start)
        return batch

    def _sources(self, request: _PyRequest) -> list[Source]:
        """Matched trie nodes for the request's current suffix, one per evidence source, deepest first."""
        config = self.config
        sources: list[Source] = []
        group_trie = request.trie
        own_only = group_trie.members <= 1
        if config.use_own_history or (config.use_siblings and not own_only):
            # The group match is read off the active pointers: deepest suffix with a continuation.
            child_total = group_trie.child_total
            active = request.active
            node = None
            for depth in range(min(len(active) - 1, self._max_match), self._min_match - 1, -1):
                if child_total[active[depth]]:
                    node = active[depth]
                    break
            if node is None and config.fuzzy_max_edits:
                node, depth = trie.fuzzy_match(group_trie, request.tail, self._max_match, self._min_match,
                                               config.fuzzy_max_edits, config.max_branch)
            if node is not None:
                other_weight = config.own_weight if own_only else config.sibling_weight
                sources.append(Source(group_trie, node, depth, other_weight, config.own_weight, request.slot))
        if config.use_global and (not sources or sources[0].depth < self._global_below):
            weight = config.global_weight
            corpus = request.corpus
            for generation in (corpus.current, corpus.previous):
                if generation is None or generation.child_total[trie.ROOT] == 0:
                    continue
                node, length = trie.longest_match(generation, request.tail, self._max_match, self._global_min_match)
                if node is not None:
                    sources.append(Source(generation, node, length, weight, weight, None))
            if len(sources) > 1:
                sources.sort(key=_source_rank, reverse=True)  # stable: ties keep group, newer generation first
        return sources

    def layout(self, batch: CandidateBatch, width: int, budgets: Sequence[int] | None
               ) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
        tokens, mask, labels = layout_rows(batch, width, budgets)
        return tokens, mask, labels, labels.sum(axis=0)

    def accepted(self, batch: CandidateBatch, width: int, committed: Sequence[Sequence[int]]) -> np.ndarray:
        return accepted_rows(batch, width, committed)

    def outcomes(self, batch: CandidateBatch, width: int, tokens: np.ndarray, lens: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        return outcome_rows(batch, width, tokens, lens)


def _source_rank(source: Source) -> tuple[int, float]:
    return source.depth, source.other_weight  # longer match first, then the more trusted source


def _write_many(group_trie: trie.Trie, active: list[int], tokens: list[int], probs: list[float] | None,
                owner: int, depth: int, max_nodes: int) -> list[int]:
    """Write `tokens` (with their probabilities, if any) after the suffixes `active` points at.
    Past `max_nodes` the trie stops growing and the pointers only follow what exists."""
    advance = trie.advance
    for i, token in enumerate(tokens):
        if len(group_trie.count) > max_nodes:
            for rest in tokens[i:]:
                active = trie.follow(group_trie, active, rest, depth)
            return active
        active, _ = advance(group_trie, active, token, None if probs is None else probs[i], owner, depth)
    return active


def layout_rows(batch: CandidateBatch, width: int, budgets: Sequence[int] | None = None
                ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Rows of `width` nodes from each request's best candidates: the first `budget` (default
    `width`) nodes reordered breadth-first (stable by depth), ancestor masks, padding rows of
    token 0 that are *detached* (no ancestor, so no verify walk reaches them)."""
    size = len(batch)
    tokens = np.zeros((size, width), dtype=np.int64)
    mask = np.zeros((size, width, width), dtype=np.bool_)
    label_counts = np.zeros((size, LABELS), dtype=np.int64)
    for b in range(size):
        cands = batch[b]
        count = width if budgets is None else int(budgets[b])
        row_tokens, parents, labels = cands.bfs(count)
        tokens[b, :len(row_tokens)] = row_tokens
        row_mask = mask[b]
        for i, parent in enumerate(parents):
            if parent >= 0:
                row_mask[i] = row_mask[parent]
            row_mask[i, i] = True
        for i in range(len(parents), width):
            row_mask[i, i] = True
        for label in labels[1:]:
            label_counts[b, label] += 1
    return tokens, mask, label_counts


def accepted_rows(batch: CandidateBatch, width: int, committed: Sequence[Sequence[int]]) -> np.ndarray:
    """bool [bs, n]: the nodes of each request's first ``min(width, length)`` candidates (a
    best-first tree prefix, root at 0) that its committed tokens walk through from the root. At each
    token the walk takes the first node (lowest index) whose parent is the current node and whose
    token it is, and stops at the first token with none (the verify walks the tree the same way, so
    the committed tokens retrace the accepted path)."""
    size, n = batch.tokens.shape
    mask = np.zeros((size, n), dtype=np.bool_)
    tokens, parents, lengths = batch.tokens.tolist(), batch.parents.tolist(), batch.lengths.tolist()
    for b, row in enumerate(committed):
        children: dict[tuple[int, int], int] = {}
        for i in range(1, min(width, lengths[b])):
            children.setdefault((parents[b][i], tokens[b][i]), i)
        node = 0
        for token in row:
            node = children.get((node, token), -1)
            if node < 0:
                break
            mask[b, node] = True
    return mask


def outcome_rows(batch: CandidateBatch, width: int, tokens: np.ndarray, lens: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The verify's outcome of every real draft node (index 1 .. ``min(width, length) - 1``) of each
    request with committed tokens (``tokens[b, :lens[b]]`` not empty), in row order: its request
    index (int32), its score (float64) and whether the committed tokens walk through it
    (`accepted_rows`'s walk)."""
    committed = [row[:size] for row, size in zip(tokens.tolist(), lens.tolist())]
    accepted = accepted_rows(batch, width, committed)
    nodes = np.arange(batch.tokens.shape[1])
    has_new = lens > 0
    drafted = (nodes >= 1) & (nodes < np.minimum(batch.lengths, width)[:, None]) & has_new[:, None]
    rows = np.broadcast_to(np.arange(len(batch), dtype=np.int32)[:, None], drafted.shape)
    return rows[drafted], batch.scores[drafted].astype(np.float64), accepted[drafted]
