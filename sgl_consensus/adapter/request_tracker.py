"""Keeps a drafter's view of requests in step with SGLang's scheduler.

SGLang has no "request added / finished" callback for speculative workers, so the tracker follows
the batches: a request's prompt is indexed when its prefill is launched (``admit``), new committed
tokens are extended at each draft step (``sync``), and requests that left the decode batch are
checked for being finished after the verify launch (``release_departed``). A request that merely
sits out a step (e.g. retracted for memory) stays tracked.

What is committed is decided by SGLang's own sequence length, never by counting tokens we were
shown: at a decode step the batch's ``seq_lens[i]`` tokens are in the KV cache and the next input
(node 0 of the tree) is the last committed token, so a request has ``seq_len + 1 - prompt length``
committed output tokens. Under overlap scheduling ``req.output_ids`` lags one step; the missing tail
is taken from the previous step's accepted tokens (``pending``, in the layout SGLang's FutureMap
relays: one row of ``stride`` tokens per request, ``accept_lens`` of them valid). A pending row that
is stale (its tokens already in ``output_ids``) is then simply not used.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import cached_property
from itertools import chain, repeat
from typing import Any, Hashable, Sequence

import numpy as np

from sgl_consensus.grouping import SiblingGrouper
from sgl_consensus.request_params import ConsensusParams, read_params


class _Tracked:
    """One tracked request."""

    __slots__ = ("req", "committed_outputs", "tenant", "prompt_length")

    def __init__(self, req: Any, tenant: Hashable | None) -> None:
        self.req = req  # sglang Req
        self.committed_outputs = 0  # how many output tokens the drafter has seen
        self.tenant = tenant  # custom_params["consensus_tenant"] (None: the default tenant)
        self.prompt_length = len(req.origin_input_ids)  # SGLang's sequence length counts these


@dataclass
class NewTokens:
    """What the last sync added, flat: request ``rids[i]`` got ``tokens[offsets[i]:offsets[i + 1]]``."""

    rids: list[Hashable]
    tokens: list[int]
    offsets: list[int]

    def rows_for(self, rids: Sequence[Hashable]) -> list[list[int]]:
        """What each of ``rids`` got (empty for a request that got nothing)."""
        tokens, offsets = self.tokens, self.offsets
        if list(rids) == self.rids:
            return [tokens[offsets[i]:offsets[i + 1]] for i in range(len(self.rids))]
        rows = self.by_request()
        return [rows.get(rid, []) for rid in rids]

    @cached_property
    def arrays(self) -> tuple[np.ndarray, np.ndarray]:
        """``tokens`` and ``offsets`` as int64 arrays, made once (the sync writes them, learning reads them)."""
        return np.array(self.tokens, dtype=np.int64), np.array(self.offsets, dtype=np.int64)

    def flat_for(self, rids: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
        """`rows_for` as flat int64 arrays (tokens, offsets), as `extend_flat` and `outcomes` take them."""
        if list(rids) == self.rids:
            return self.arrays
        rows = self.rows_for(rids)
        offsets = np.zeros(len(rows) + 1, dtype=np.int64)
        np.cumsum(np.fromiter(map(len, rows), dtype=np.int64, count=len(rows)), out=offsets[1:])
        return np.fromiter(chain.from_iterable(rows), dtype=np.int64, count=int(offsets[-1])), offsets

    def by_request(self) -> dict[Hashable, list[int]]:
        tokens, offsets = self.tokens, self.offsets
        return {rid: tokens[offsets[i]:offsets[i + 1]] for i, rid in enumerate(self.rids)
                if offsets[i + 1] > offsets[i]}


class CommittedLogprobs:
    """The last verify's target logprobs of the tokens it committed, one row per verified request
    (kept as the verify's arrays: no per-request lists on the drafting path). The drafter pairs
    them with tokens (`ConsensusDrafter.extend_flat`): a row with a NaN among its committed values
    (logits SGLang had to sanitise) goes in by frequency alone."""

    def __init__(self, rids: Sequence[Hashable], logprobs: np.ndarray, lens: np.ndarray) -> None:
        self.rids = list(rids)  # the verified requests, in row order
        self.logprobs = logprobs  # [rows, stride] float; row r's first lens[r] entries are valid
        self.lens = np.asarray(lens, dtype=np.int64)  # [rows]: committed tokens per row

    def rows_of(self, rids: list[Hashable]) -> tuple[np.ndarray, np.ndarray]:
        """The logprob rows and committed counts of ``rids``, in that order (a request the verify
        did not hold gets a count of 0): the verify's own arrays when it held this very batch."""
        if self.rids == rids:
            return self.logprobs, self.lens
        if not self.rids:
            return np.zeros((len(rids), 0)), np.zeros(len(rids), dtype=np.int64)
        index = {rid: r for r, rid in enumerate(self.rids)}
        take = np.array([index.get(rid, -1) for rid in rids], dtype=np.int64)
        held = take >= 0
        rows = np.where(held, take, 0)
        return self.logprobs[rows], np.where(held, self.lens[rows], 0)

    @classmethod
    def from_rows(cls, rows: Mapping[Hashable, Sequence[float]]) -> CommittedLogprobs:
        """From per-request lists (tests, replays)."""
        stride = max((len(row) for row in rows.values()), default=0)
        logprobs = np.zeros((len(rows), stride))
        for r, row in enumerate(rows.values()):
            logprobs[r, : len(row)] = row
        return cls(list(rows), logprobs, np.array([len(row) for row in rows.values()], dtype=np.int64))


def consensus_params(req) -> ConsensusParams:
    """The request's consensus fields (validated at the door; never raises here)."""
    return read_params(getattr(req.sampling_params, "custom_params", None))


def pending_rows(accept_tokens: Sequence[int], accept_lens: Sequence[int], stride: int) -> list[list[int]]:
    """Per request, the tokens accepted by the previous step: FutureMap's relay layout (one row of
    ``stride`` tokens per request, flattened; ``accept_lens[i]`` of row i are valid)."""
    return [list(accept_tokens[i * stride: i * stride + n]) for i, n in enumerate(accept_lens)]


class RequestTracker:
    def __init__(self, drafter, grouper: SiblingGrouper) -> None:
        self.drafter = drafter
        self.grouper = grouper
        self._tracked: dict[Hashable, _Tracked] = {}
        # Tracked, but not in the last decode batch. Ordered (dicts, not sets): the order requests
        # leave in decides the global corpus' contents, which must be the same on every TP rank
        # (a set of string rids iterates in a per-process hash order).
        self._away: dict[Hashable, None] = {}
        self._last_batch: list[Hashable] = []
        self.root_resyncs = 0  # drafter tail disagreed with SGLang's last committed token
        self.last_new = NewTokens([], [], [0])  # what the last sync added
        self._synced: tuple[list[Hashable], list[Hashable | None]] = ([], [])  # last sync's rids, tenants
        self.tokens_with_probs = 0  # committed tokens handed to the drafter with the target's probability
        self.prob_sum = 0.0  # the sum of those probabilities (their mean is a check on the gather)

    # -- lifecycle --------------------------------------------------------------------------
    def admit(self, reqs: Sequence[Any]) -> None:
        """Index new requests' prompts (called right after their prefill is launched). Requests of
        the last decode batch that have finished since are released first, so that a new request
        never joins a group whose members have all ended (e.g. a reused tag under strict isolation)."""
        self.release_departed(())
        for req in reqs:
            if req.rid not in self._tracked and decodes(req):
                self._add(req)

    def release_departed(self, batch_reqs: Sequence[Any]) -> None:
        """After a decode step: requests that left the batch are freed once SGLang says they finished.

        Only requests away from the batch are looked at (a set difference, not a poll of all)."""
        batch = [req.rid for req in batch_reqs]
        current = set(batch)
        for rid in self._last_batch:
            if rid not in current:
                self._away[rid] = None
        for rid in batch:
            self._away.pop(rid, None)
        self._last_batch = batch
        for rid in list(self._away):
            tracked = self._tracked.get(rid)
            if tracked is None:
                self._away.pop(rid, None)
            elif tracked.req.finished():
                self._remove(rid)

    @property
    def last_new_tokens(self) -> dict[Hashable, list[int]]:
        """Per request, what the last sync added (requests that got nothing are left out)."""
        return self.last_new.by_request()

    def prune_finished(self) -> None:
        """Free every tracked request the scheduler has finished or aborted (for reports)."""
        for rid, tracked in list(self._tracked.items()):
            if tracked.req.finished():
                self._remove(rid)

    def reset(self) -> None:
        if self.drafter is not None:
            self.drafter.reset()
        for rid in list(self._tracked):
            self.grouper.release(rid)
        self._tracked.clear()
        self._away.clear()
        self._last_batch.clear()

    def __len__(self) -> int:
        return len(self._tracked)

    # -- per decode step --------------------------------------------------------------------
    def sync(
        self, reqs: Sequence[Any], seq_lens: Sequence[int] | None = None, pending: list[list[int]] | None = None,
        logprobs: CommittedLogprobs | None = None,
    ) -> tuple[list[Hashable], list[int]]:
        """Bring the drafter up to date with ``reqs``: their rids and last committed tokens (the
        roots of their draft trees), in batch order.

        ``seq_lens``: SGLang's committed KV lengths of the batch (None: trust ``output_ids`` plus
        ``pending``, which is exact without overlap scheduling). ``logprobs``: the target's
        logprobs of the tokens each request's last verify committed (its newest committed tokens)."""
        common = self._sync_common(reqs, seq_lens, pending, logprobs)
        if common is not None:
            return common
        rids, roots = [], []
        batch = _Extensions()
        for i, req in enumerate(reqs):
            rids.append(req.rid)
            roots.append(self._sync_one(req, None if seq_lens is None else int(seq_lens[i]),
                                        pending[i] if pending is not None else (), batch))
        self.last_new = batch.new_tokens()
        if batch.rids:
            self._write(batch.rids, self.last_new, logprobs)
        self._synced = (rids, [self._tracked[rid].tenant for rid in rids])
        return rids, roots

    def _write(self, rids: list[Hashable], new: NewTokens, logprobs: CommittedLogprobs | None) -> None:
        """One batch write of ``new`` (which the drafter, not the tracker, pairs with the verify's
        logprobs: the newest tokens of each row get them, see `ConsensusDrafter.extend_flat`)."""
        if not hasattr(self.drafter, "extend_flat"):  # a drafter that keeps no probabilities
            self.drafter.extend_many(rids, new.rows_for(rids))
            return
        tokens, offsets = new.arrays
        rows = () if logprobs is None else logprobs.rows_of(rids)
        with_prob, prob_sum = self.drafter.extend_flat(rids, tokens, offsets, *rows)
        self.tokens_with_probs += with_prob
        self.prob_sum += prob_sum

    def _sync_common(self, reqs: Sequence[Any], seq_lens: Sequence[int] | None, pending: list[list[int]] | None,
                     logprobs: CommittedLogprobs | None) -> tuple[list[Hashable], list[int]] | None:
        """The common step, with one write to the drafter: every request already tracked, with
        new committed tokens, all of them known. None (nothing changed) otherwise: the general path
        then handles whatever is unusual, request by request. (Plain lists: at these sizes each
        NumPy call costs more than the loop it would replace.)"""
        if seq_lens is None or not hasattr(self.drafter, "extend_flat") or not reqs:
            return None
        get = self._tracked.get
        rids, tracked, upto, roots, flat, offsets = [], [], [], [], [], [0]
        relays = pending if pending is not None else repeat(None)
        for req, seq_len, relay in zip(reqs, seq_lens, relays):  # one pass (cheaper than a list per field)
            rid = req.rid
            t = get(rid)
            if t is None:
                return None  # a request to add
            seen, committed = t.committed_outputs, int(seq_len) + 1 - t.prompt_length
            if committed <= seen:
                return None  # a request without news (or rewound): its root needs checking
            row = req.output_ids[seen:committed] if relay is None else \
                _committed_slice(req.output_ids, relay, seen, committed)
            if len(row) != committed - seen:
                return None  # SGLang counts tokens we were not shown: the general path says so
            rids.append(rid)
            tracked.append(t)
            upto.append(committed)
            roots.append(row[-1])
            flat += row
            offsets.append(len(flat))
        new = NewTokens(rids, flat, offsets)
        self._write(rids, new, logprobs)
        for t, committed in zip(tracked, upto):
            t.committed_outputs = committed
        self.last_new = new
        self._synced = (rids, [t.tenant for t in tracked])
        return rids, roots

    def _sync_one(self, req, seq_len: int | None, pending: Sequence[int], batch: _Extensions) -> int:
        rid, outputs = req.rid, req.output_ids
        tracked = self._tracked.get(rid)
        known = len(outputs) + len(pending)
        committed = known if seq_len is None else seq_len + 1 - len(req.origin_input_ids)
        if committed > known:
            raise RuntimeError(f"request {rid!r}: SGLang reports {committed} committed output tokens, "
                               f"but only {len(outputs)} + {len(pending)} pending are known")
        if tracked is not None and committed < tracked.committed_outputs:
            self._remove(rid)  # outputs rewound (retraction / re-prefill): start over
            tracked = None
        if tracked is None:
            tracked = self._add(req)
        seen = tracked.committed_outputs
        if seen < committed:  # the common step
            new = list(outputs[seen:committed]) if committed <= len(outputs) else \
                _committed_slice(outputs, pending, seen, committed)
            tracked.committed_outputs = committed
            batch.add(rid, new)
            return new[-1]  # SGLang's last committed token, which the drafter's tail now ends with
        root = _committed_slice(outputs, pending, committed - 1, committed)[0] if committed else \
            int(req.origin_input_ids_unpadded[-1])
        if self.drafter.last_token(rid) != root:
            # The drafter missed or doubled a token: rebuild its view from SGLang's.
            self.root_resyncs += 1
            self._remove(rid)
            tracked = self._add(req)
            if committed:
                self.drafter.extend(rid, _committed_slice(outputs, pending, 0, committed))
            tracked.committed_outputs = committed
        return root

    def tenants(self, rids: Sequence[Hashable]) -> list[Hashable | None]:
        """The tenant of each (synced) request."""
        synced, tenants = self._synced
        if rids is synced:  # the last sync's batch
            return tenants
        return [self._tracked[rid].tenant for rid in rids]

    def _add(self, req) -> _Tracked:
        prompt = req.origin_input_ids_unpadded
        params = consensus_params(req)
        group = self.grouper.assign(req.rid, params, prompt)
        self.drafter.add(req.rid, group, list(prompt), tenant=params.tenant)
        tracked = self._tracked[req.rid] = _Tracked(req, params.tenant)
        return tracked

    def _remove(self, rid: Hashable) -> None:
        self._tracked.pop(rid, None)
        self._away.pop(rid, None)
        self.grouper.release(rid)
        self.drafter.remove(rid)


class _Extensions:
    """One sync's new tokens, handed to the drafter in one `extend_many` call."""

    __slots__ = ("rids", "tokens")

    def __init__(self) -> None:
        self.rids: list[Hashable] = []
        self.tokens: list[list[int]] = []

    def add(self, rid: Hashable, new: list[int]) -> None:
        self.rids.append(rid)
        self.tokens.append(new)

    def new_tokens(self) -> NewTokens:
        offsets = [0]
        for row in self.tokens:
            offsets.append(offsets[-1] + len(row))
        return NewTokens(self.rids, list(chain.from_iterable(self.tokens)), offsets)


def _committed_slice(outputs, pending: Sequence[int], start: int, stop: int) -> list[int]:
    """Tokens ``start:stop`` of the committed output ``outputs + pending`` (no copy of the rest)."""
    head = list(outputs[start:min(stop, len(outputs))]) if start < len(outputs) else []
    if stop > len(outputs):
        head += list(pending[max(start - len(outputs), 0): stop - len(outputs)])
    return head


def decodes(req) -> bool:
    """False for prefill-only requests (SGLang's ``n > 1`` warm-up); None = no limit."""
    limit = req.sampling_params.max_new_tokens
    return limit is None or limit > 0
