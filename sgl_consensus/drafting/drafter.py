"""`ConsensusDrafter`: the public facade (add / extend / propose / remove / stats / reset).

Per request it holds O(trie depth) state: its group, its owner slot there, its active pointers and
its last `trie_depth` tokens. Costs, per request:
- `extend`: O(new tokens x trie depth) writes into the group trie, plus a bounded share of the
  merge of finished groups into the global corpus (`merge_visits_per_token` per token, run in
  batches of `_MERGE_BATCH` visits);
- `propose`: the group match is read off the active pointers (O(max_match_len)); the global corpus
  is looked up (O(max_match_len^2)) only when that match is shorter than `global_lookup_below`;
  the tree costs O(n log n + n x branching). Nothing depends on the sequence length or on the
  number of siblings (their evidence is already aggregated in the trie counts).
Per-token and per-step work runs in a `DraftCore` (core.py): the C++ one (native/) when it is
built, the pure-Python reference otherwise or on request (`core="python"`).
Output layout is SGLang NGRAM's: node 0 is the last committed token, nodes in BFS order (parents
first), mask[i, j] iff j is i or an ancestor of i. Padding rows (a tree smaller than the width) are
token 0 with no ancestor: detached, so no verify walk reaches them. (SGLang's own NGRAM pads with
token-0 children of the root; two such siblings make its CUDA tree sampling count token 0 twice.)
"""

from __future__ import annotations

import logging
from collections import OrderedDict
from collections.abc import Hashable, Sequence
from typing import Any

import numpy as np

from . import validation
from .config import DraftConfig
from .core import BadBatch, CandidateBatch, DraftCore, PythonCore, RankWeights, Written, rank_weight_sums
from .sources import GlobalCorpus, GroupIndex
from .successors import SuccessorTable, add_model_nodes
from .tree import GLOBAL, MODEL, OWN, SIBLING, Candidates

logger = logging.getLogger(__name__)

_SOLO = object()  # group-key marker of a request drafting without siblings
_MERGE_BATCH = 256
CORES = ("auto", "native", "python")


class _Request:
    __slots__ = ("group", "corpus", "slot", "handle", "successors")

    def __init__(self, group: GroupIndex, corpus: GlobalCorpus, slot: int, handle: Any) -> None:
        self.group = group
        self.corpus = corpus  # its tenant's global corpus
        self.slot = slot
        self.handle = handle  # its writer state in the core (its last tokens included)
        self.successors: SuccessorTable | None = None  # the target's earlier predictions (model nodes)


class _BatchView:
    """The requests of a batch, looked up once and reused while the same batch comes back (the
    common decode step): their records, their handles in the form the core takes a batch in, and
    their global corpus when they share one."""

    __slots__ = ("rids", "version", "requests", "handles", "corpus")

    def __init__(self, rids: list[Hashable], version: int, requests: list[_Request], handles: Any) -> None:
        self.rids = rids
        self.version = version  # the drafter's request version when looked up (add/remove move it)
        self.requests = requests
        self.handles = handles
        corpora = {id(request.corpus): request.corpus for request in requests}
        self.corpus = next(iter(corpora.values())) if len(corpora) == 1 else None


def make_core(config: DraftConfig, core: str | DraftCore = "auto") -> DraftCore:
    """The data plane: ``native`` (C++; raises if it cannot be built or loaded), ``python`` (the
    reference), ``auto`` (native when available, else python with one warning), or a core made
    by the caller (an instrumented one, as `benchmarks/ab_core_replay.py` records calls with)."""
    if not isinstance(core, str):
        if not all(callable(getattr(core, name, None)) for name in ("new_trie", "new_request", "propose")):
            raise TypeError(f"core must be one of {list(CORES)} or a DraftCore, got {type(core).__name__}")
        return core
    if core not in CORES:
        raise ValueError(f"core must be one of {list(CORES)}, got {core!r}")
    if core == "python":
        return PythonCore(config)
    from .native import NativeCore, NativeCoreUnavailable

    try:
        return NativeCore(config)
    except NativeCoreUnavailable as exc:
        if core == "native":
            raise
        logger.warning("sgl-consensus: native draft core unavailable (%s); using the Python core", exc)
        return PythonCore(config)


class ConsensusDrafter:
    """Drafts each path's next tokens from its siblings, the global corpus and its own history."""

    def __init__(self, config: DraftConfig | None = None, core: str | DraftCore = "auto") -> None:
        if config is None:
            config = DraftConfig()
        if not isinstance(config, DraftConfig):
            raise TypeError(f"config must be a DraftConfig, got {type(config).__name__}")
        self.config = config
        self.core = make_core(config, core)
        self._requests: dict[Hashable, _Request] = {}
        self._groups: dict[Hashable, GroupIndex] = {}
        self._lingering: OrderedDict[Hashable, GroupIndex] = OrderedDict()  # emptied groups, oldest first
        # One global corpus per tenant, least recently used dropped first: finished groups feed only
        # later requests of their own tenant.
        self._corpora: OrderedDict[Hashable, GlobalCorpus] = OrderedDict()
        self._merge_due: dict[GlobalCorpus, None] = {}  # corpora whose paid-for merges `maintain` runs
        self._counters = _zero_counters()
        self._last_labels = np.zeros((0, 4), dtype=np.int64)
        self._version = 0  # moves at every add and remove: a cached batch view is then stale
        self._view: _BatchView | None = None

    # ------------------------------------------------------------------ lifecycle
    def add(
        self, rid: Hashable, group: Hashable | None, prompt_ids: Sequence[int] | np.ndarray,
        tenant: Hashable | None = None,
    ) -> None:
        """Start tracking request `rid`; `group` names its siblings (None: no siblings).

        `tenant` (None = the default tenant) bounds what the request drafts from: its group (keyed
        by tenant and group, so equal group names of two tenants never meet) and its tenant's
        global corpus.
        """
        _check_hashable(rid, "rid")
        if rid in self._requests:
            raise ValueError(f"request {rid!r} was already added; remove it first")
        if group is not None:
            _check_hashable(group, f"group of request {rid!r}")
        _check_hashable(tenant, f"tenant of request {rid!r}")
        keep = self.config.prompt_index_tokens
        prompt = validation.token_list(rid, prompt_ids if keep is None else prompt_ids[-keep:], "prompt_ids")
        if not prompt:
            raise ValueError(f"request {rid!r}: prompt_ids is empty; a request needs at least one token")
        corpus = self._corpus_of(tenant)
        key = (tenant, group) if (group is not None and self.config.use_siblings) else (_SOLO, rid)
        index = self._groups.get(key)
        if index is None:
            index = self._lingering.pop(key, None)  # a late sibling revives its finished group
            if index is None:
                index = GroupIndex(key, self.core)
            else:
                corpus.settle(index.trie)  # its merge into the global corpus must not see new writes
            self._groups[key] = index
        active = index.write_prompt(prompt)
        slot = index.join(rid)
        self._counters["requests_added"] += 1
        handle = self.core.new_request(index.trie, corpus.handle, slot, active, prompt[-self.config.trie_depth:])
        self._requests[rid] = _Request(index, corpus, slot, handle)
        self._version += 1

    def _corpus_of(self, tenant: Hashable | None) -> GlobalCorpus:
        corpus = self._corpora.get(tenant)
        if corpus is None:
            config = self.config
            corpus = self._corpora[tenant] = GlobalCorpus(
                self.core, config.global_max_nodes, config.max_pending_merges, config.global_min_count,
                config.global_trie_depth,
            )
            while len(self._corpora) > config.max_tenant_corpora:
                self._corpora.popitem(last=False)  # live requests keep theirs until they end
        else:
            self._corpora.move_to_end(tenant)
        return corpus

    def extend(self, rid: Hashable, token_ids: Sequence[int] | np.ndarray, logprobs: Any = None) -> None:
        """Record tokens committed to `rid` since the last call (with their sampling logprobs, if known)."""
        request = self._get(rid)
        tokens = validation.token_list(rid, token_ids, "token_ids")
        if not tokens:
            return
        probs = None if logprobs is None else validation.probabilities(rid, logprobs, len(tokens))
        self.core.extend(request.handle, tokens, probs)
        self._written(request, tokens)

    def extend_many(self, rids: Sequence[Hashable], token_lists: Sequence[Sequence[int]],
                    logprob_lists: Sequence[Sequence[float] | None] | None = None, *,
                    probabilities: np.ndarray | None = None) -> None:
        """`extend` for a batch, in one call to the core. ``logprob_lists[i]``
        (None: none known) covers the *last* ``len(logprob_lists[i])`` tokens of ``token_lists[i]``
        (a verify knows the target's logprobs of the tokens it committed, not of older ones).
        Or ``probabilities``: one per token, flat over the concatenated ``token_lists``, NaN where
        unknown (the worker's form: checked in one array pass)."""
        if len(token_lists) != len(rids) or (logprob_lists is not None and len(logprob_lists) != len(rids)):
            raise ValueError(f"extend_many needs one token list (and logprob list) per request: {len(rids)} rids, "
                             f"{len(token_lists)} token lists")
        if logprob_lists is not None and probabilities is not None:
            raise ValueError("extend_many takes logprob_lists or probabilities, not both")
        requests = [self._get(rid) for rid in rids]
        tokens = validation.token_rows(rids, token_lists, "token_ids")
        if probabilities is None:
            probs = validation.probability_rows(rids, tokens, logprob_lists)
        else:
            probs = validation.flat_probabilities(rids, tokens, probabilities)
        self.core.extend_many([request.handle for request in requests], tokens, probs)
        for request, row in zip(requests, tokens):
            if row:
                self._written(request, row)

    def extend_rows(self, rids: Sequence[Hashable], tokens: np.ndarray, lens: np.ndarray,
                    logprobs: np.ndarray | None = None, logprob_counts: np.ndarray | None = None) -> Written:
        """`extend` for a batch in one call to the core, in the layout a verify leaves its committed
        tokens in (the worker's common step): request ``rids[i]`` gets ``tokens[i, :lens[i]]``
        (``tokens``: integer [len(rids), width]; ``lens``: integer [len(rids)] in [0, width]; rows
        may be empty). ``logprobs`` (float [len(rids), stride]) and ``logprob_counts`` (int
        [len(rids)]): a verify's record, row i the target's logprobs of the newest
        ``logprob_counts[i]`` tokens of request i; a row with more of them than new tokens, or with a
        NaN among them, is not used (those tokens go in by frequency alone). Returns how many tokens
        went in with a probability, the sum of their probabilities, and each request's last token
        afterwards (`Written`). A bad value is a one-line ValueError naming its request, with
        nothing written."""
        view = self.batch_view(rids)
        tokens, lens, logprobs, logprob_counts = validation.row_batch(len(rids), tokens, lens, logprobs,
                                                                      logprob_counts)
        try:
            written = self.core.extend_rows(view.handles, tokens, lens, logprobs, logprob_counts)
        except BadBatch as bad:
            raise ValueError(bad.describe(rids, tokens, lens, logprobs, logprob_counts)) from None
        total = written.tokens
        self._counters["tokens_extended"] += total
        if view.corpus is not None:
            self._credit(view.corpus, total)
        else:
            for request, count in zip(view.requests, lens.tolist()):
                self._credit(request.corpus, count)
        return written

    def batch_view(self, rids: Sequence[Hashable]) -> _BatchView:
        """The requests of ``rids``, from the last lookup when it was the same batch and no request
        was added or removed since."""
        view = self._view
        if view is None or view.version != self._version or view.rids != rids:
            requests = [self._get(rid) for rid in rids]
            handles = self.core.request_batch([request.handle for request in requests])
            view = self._view = _BatchView(list(rids), self._version, requests, handles)
        return view

    def _written(self, request: _Request, tokens: list[int]) -> None:
        """Bookkeeping after `tokens` were written for `request`."""
        self._counters["tokens_extended"] += len(tokens)
        self._credit(request.corpus, len(tokens))

    def _credit(self, corpus: GlobalCorpus, tokens: int) -> None:
        if corpus.pending:
            # Finished groups merge into their tenant's global corpus at a pace set by that tenant's
            # new writes; the work itself runs in `maintain` (off the drafting path).
            corpus.merge_credit += self.config.merge_visits_per_token * tokens
            if corpus.merge_credit >= _MERGE_BATCH:
                self._merge_due[corpus] = None

    def maintain(self) -> None:
        """Background work: run the global-corpus merges paid for by recent writes, in batches of
        _MERGE_BATCH visits or more (tiny increments would cost more in call overhead than work).
        The worker calls it after launching a verify, while the device computes."""
        for corpus in self._merge_due:
            corpus.pump(corpus.merge_credit)
            corpus.merge_credit = 0
        self._merge_due.clear()

    def observe_successors(self, rid: Hashable, inputs: Sequence[int], successors: Sequence[Sequence[int]],
                           probabilities: Sequence[Sequence[float]]) -> None:
        """The target's top next tokens after each of `inputs` (the input tokens of `rid`'s last
        verified draft nodes) and their probabilities: kept for model-informed nodes
        (`DraftConfig.model_weight`; ignored when it is 0)."""
        if self.config.model_weight <= 0:
            return
        request = self._get(rid)
        if request.successors is None:
            request.successors = SuccessorTable(self.config.model_max_entries)
        request.successors.update(inputs, successors, probabilities)

    def remove(self, rid: Hashable) -> None:
        """Forget `rid`. Its n-grams keep serving its group until the group's last member leaves,
        and after that while the group lingers (`DraftConfig.linger_groups`)."""
        request = self._requests.pop(rid, None)
        if request is None:
            raise KeyError(f"request {rid!r} is not tracked (never added, or already removed)")
        self._version += 1
        self._view = None  # it may hold the freed handle
        self.core.free_request(request.handle)
        group = request.group
        group.live.discard(rid)
        if not group.live:
            del self._groups[group.key]
            if self.config.use_global:
                request.corpus.absorb(group.trie, group.ever)  # at once: later groups need it now
            solo = isinstance(group.key, tuple) and group.key[:1] == (_SOLO,)
            if not solo and self.config.linger_groups:  # a solo request's key is never reused
                self._lingering[group.key] = group
                while len(self._lingering) > self.config.linger_groups:
                    self._lingering.popitem(last=False)

    def reset(self) -> None:
        """Drop every request, group and the global corpus (e.g. on an SGLang cache flush)."""
        for request in self._requests.values():
            self.core.free_request(request.handle)
        self._requests.clear()
        self._groups.clear()
        self._lingering.clear()
        self._corpora.clear()
        self._merge_due.clear()
        self._counters = _zero_counters()
        self._version += 1
        self._view = None

    # ------------------------------------------------------------------ drafting
    def propose(
        self, rids: Sequence[Hashable], budgets: Sequence[int] | None = None, width: int | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Draft trees for `rids`: tokens int64 [bs, w] and ancestor mask bool [bs, w, w].

        `width` (default `num_draft_tokens`): tree nodes per request, root included; each request
        gets its best `width`-node tree. `budgets` (optional, one per request, each in [1, width]):
        at most that many nodes for the request, the rest of its row padding (studies of
        per-request budget splits, see benchmarks/replay_lead_lag.py; SGLang verifies one width
        per batch, so a smaller budget saves no verify work there).
        """
        width = self._check_width(width)
        return self.layout(self.propose_candidates(rids), width, budgets)

    def propose_candidates(self, rids: Sequence[Hashable], rank_weights: RankWeights | None = None
                           ) -> CandidateBatch:
        """Per request, its best draft nodes (up to `num_draft_tokens`, root included), best first,
        with their scores: any prefix is the best tree of that size (`layout` turns one into rows).
        With ``rank_weights`` (edges, intercepts, slopes: a piecewise-linear weight of a score, see
        `core.rank_weight_sums`), the batch's weighted score sum at each rank too (``rank_sums``):
        the width policy's expected accepted nodes, computed where the scores are made."""
        if rank_weights is not None:
            rank_weights = validation.rank_weights(rank_weights)
        view = self.batch_view(rids)
        requests = view.requests
        batch = self.core.propose(view.handles, rank_weights)
        weight = self.config.model_weight
        if weight > 0 and any(r.successors is not None for r in requests):
            # The target's own earlier predictions fill what the evidence left open.
            n, min_score = self.config.num_draft_tokens, self.config.min_path_score
            rows = [batch[b] if r.successors is None else add_model_nodes(batch[b], r.successors, n, weight, min_score)
                    for b, r in enumerate(requests)]
            batch = CandidateBatch.from_rows(rows, n)
            if rank_weights is not None:
                batch.rank_sums = rank_weight_sums(batch.scores[:, 1:], rank_weights)
        return batch

    def layout(
        self, candidates: CandidateBatch | Sequence[Candidates], width: int, budgets: Sequence[int] | None = None
    ) -> tuple[np.ndarray, np.ndarray]:
        """Rows of `width` nodes from each request's best candidates: BFS order, ancestor masks,
        detached padding. Also records each row's draft-node sources (`last_proposal_sources`)."""
        width = self._check_width(width)
        if not isinstance(candidates, CandidateBatch):
            candidates = CandidateBatch.from_rows(list(candidates), self.config.num_draft_tokens)
        batch = len(candidates)
        if budgets is not None:
            budgets = list(budgets)
            if len(budgets) != batch or any(not isinstance(b, (int, np.integer)) or not 1 <= b <= width
                                            for b in budgets):
                raise ValueError(f"budgets must hold {batch} integers in [1, {width}], got {budgets!r}")
        tokens, mask, labels, totals = self.core.layout(candidates, width, budgets)
        self._last_labels = labels
        counts = totals.tolist()
        counters = self._counters
        counters["propose_calls"] += 1
        counters["proposed_requests"] += batch
        counters["draft_nodes_sibling"] += counts[SIBLING]
        counters["draft_nodes_global"] += counts[GLOBAL]
        counters["draft_nodes_own"] += counts[OWN]
        counters["draft_nodes_model"] += counts[MODEL]
        counters["padding_nodes"] += batch * (width - 1) - sum(counts)  # rows minus roots minus draft nodes
        return tokens, mask

    def accepted(self, candidates: CandidateBatch, width: int, committed: Sequence[Sequence[int]]) -> np.ndarray:
        """bool [bs, n]: which of ``candidates`` (laid out at ``width``) each request's committed
        tokens walk through from the root: the nodes its verify accepted."""
        if len(committed) != len(candidates):
            raise ValueError(f"accepted needs one committed-token row per request: {len(candidates)} requests, "
                             f"{len(committed)} rows")
        return self.core.accepted(candidates, self._check_width(width), committed)

    def outcomes(self, candidates: CandidateBatch, width: int, tokens: np.ndarray, lens: np.ndarray
                 ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """What the width policy learns from a verify, in one call: for every real draft node of
        ``candidates`` laid out at ``width`` (index 1 .. min(width, length) - 1) of each request that
        committed tokens since (request i: ``tokens[i, :lens[i]]``, as `extend_rows` takes them),
        in row order, its request index, its score and whether the verify accepted it
        (`accepted`'s walk)."""
        tokens, lens, _, _ = validation.row_batch(len(candidates), tokens, lens, None, None)
        if lens.size and (lens.min() < 0 or lens.max() > tokens.shape[1]):
            raise ValueError(f"lens must be in [0, {tokens.shape[1]}] (the row width), got {lens.tolist()}")
        return self.core.outcomes(candidates, self._check_width(width), tokens, lens)

    def _check_width(self, width: int | None) -> int:
        n = self.config.num_draft_tokens
        if width is None:
            return n
        if not isinstance(width, (int, np.integer)) or isinstance(width, bool) or not 1 <= width <= n:
            raise ValueError(f"width must be an integer in [1, {n}] (num_draft_tokens), got {width!r}")
        return int(width)

    def last_proposal_sources(self) -> list[tuple[int, int, int]]:
        """Per request of the last `propose`: draft nodes from (siblings, global corpus, own history)."""
        return [tuple(row) for row in self._last_labels[:, :3].tolist()]

    def last_proposal_labels(self) -> np.ndarray:
        """Per request of the last `propose`: int64 [bs, 4] draft nodes from (siblings, global corpus,
        own history, the target's earlier predictions)."""
        return self._last_labels

    # ------------------------------------------------------------------ introspection
    def stats(self) -> dict[str, int]:
        """Plain counts for metrics and leak checks (per-request/group counts are 0 once all are removed)."""
        group_nodes = [group.nodes for group in self._groups.values()]
        result = {
            "live_requests": len(self._requests),
            "live_groups": len(self._groups),
            "group_trie_nodes": sum(group_nodes),
            "group_trie_nodes_max": max(group_nodes, default=0),
            "lingering_groups": len(self._lingering),
            "lingering_trie_nodes": sum(group.nodes for group in self._lingering.values()),
            "tenant_corpora": len(self._corpora),
            "global_trie_nodes": sum(corpus.nodes for corpus in self._corpora.values()),
            "global_pending_merges": sum(corpus.pending for corpus in self._corpora.values()),
            "global_groups_absorbed": sum(corpus.groups_absorbed for corpus in self._corpora.values()),
            "global_groups_dropped": sum(corpus.groups_dropped for corpus in self._corpora.values()),
        }
        result.update(self._counters)
        return result

    def __len__(self) -> int:
        return len(self._requests)

    def last_token(self, rid: Hashable) -> int:
        """The last token recorded for `rid` (its prompt's, if no output yet): the next tree's root."""
        return self.core.last_token(self._get(rid).handle)

    def __contains__(self, rid: object) -> bool:
        return rid in self._requests

    def _get(self, rid: Hashable) -> _Request:
        try:
            return self._requests[rid]
        except KeyError:
            raise KeyError(f"request {rid!r} is not tracked (never added, or already removed)") from None
        except TypeError:
            raise TypeError(f"rid must be hashable, got {type(rid).__name__}") from None


def _check_hashable(value: object, what: str) -> None:
    try:
        hash(value)
    except TypeError:
        raise TypeError(f"{what} must be hashable, got {type(value).__name__}") from None


def _zero_counters() -> dict[str, int]:
    return {
        "requests_added": 0,
        "tokens_extended": 0,
        "propose_calls": 0,
        "proposed_requests": 0,
        "draft_nodes_sibling": 0,
        "draft_nodes_global": 0,
        "draft_nodes_own": 0,
        "draft_nodes_model": 0,
        "padding_nodes": 0,
    }
