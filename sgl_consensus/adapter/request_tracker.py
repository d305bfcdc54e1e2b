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

The common decode step (the same requests as the last verify, each with exactly the tokens that
verify committed as news) is synced in array operations from the verify's own token matrix
(``VerifiedRows``), without reading any request's ``output_ids``; every other step goes request by
request. Both leave the drafter in the same state (``tests/test_request_tracker.py``).
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any, Hashable

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


class NewTokens:
    """What the last sync added, in a verify's row layout: request ``rids[i]`` got
    ``tokens[i, :lens[i]]`` (int64 arrays, as `ConsensusDrafter.extend_rows` and `outcomes` take them)."""

    __slots__ = ("rids", "tokens", "lens")

    def __init__(self, rids: list[Hashable], tokens: np.ndarray, lens: np.ndarray) -> None:
        self.rids = rids
        self.tokens = tokens  # int64 [rows, width]
        self.lens = lens  # int64 [rows]

    @classmethod
    def from_rows(cls, rids: list[Hashable], rows: Sequence[Sequence[int]]) -> NewTokens:
        lens = np.fromiter(map(len, rows), dtype=np.int64, count=len(rows))
        tokens = np.zeros((len(rows), max(lens.max(initial=0), 1)), dtype=np.int64)
        for i, row in enumerate(rows):
            tokens[i, :len(row)] = row
        return cls(rids, tokens, lens)

    def rows_for(self, rids: Sequence[Hashable]) -> tuple[np.ndarray, np.ndarray]:
        """What each of ``rids`` got (nothing for a request that got nothing): (tokens, lens)."""
        if rids is self.rids or list(rids) == self.rids:
            return self.tokens, self.lens
        rows = self.by_request()
        other = NewTokens.from_rows(list(rids), [rows.get(rid, []) for rid in rids])
        return other.tokens, other.lens

    def by_request(self) -> dict[Hashable, list[int]]:
        return {rid: row[:size] for rid, row, size in zip(self.rids, self.tokens.tolist(), self.lens.tolist())
                if size}


class VerifiedRows:
    """What the last verify committed, one row per verified request, kept as the verify's arrays
    (no per-request lists on the drafting path): row r's first ``lens[r]`` tokens, and when
    recorded the target's logprobs of them. The drafter pairs logprobs with tokens
    (`ConsensusDrafter.extend_rows`): a row with a NaN among its committed values (logits SGLang
    had to sanitise) goes in by frequency alone."""

    def __init__(self, rids: Sequence[Hashable], lens: np.ndarray, tokens: np.ndarray | None = None,
                 logprobs: np.ndarray | None = None) -> None:
        self.rids = list(rids)  # the verified requests, in row order
        self.lens = lens if isinstance(lens, np.ndarray) and lens.dtype == np.int64 else \
            np.asarray(lens, dtype=np.int64)  # [rows]: committed tokens per row
        self.tokens = tokens  # int64 [rows, stride] or None (not recorded)
        self.logprobs = logprobs  # float [rows, stride] or None (not recorded)

    def rows_of(self, rids: list[Hashable]) -> tuple[np.ndarray, np.ndarray | None, np.ndarray | None]:
        """Committed counts, token rows and logprob rows of ``rids``, in that order (a request the
        verify did not hold gets a count of 0): the verify's own arrays when it held this very batch."""
        if self.rids == rids:
            return self.lens, self.tokens, self.logprobs
        if not self.rids:
            return np.zeros(len(rids), dtype=np.int64), *(None if m is None else np.zeros((len(rids), 0), m.dtype)
                                                           for m in (self.tokens, self.logprobs))
        index = {rid: r for r, rid in enumerate(self.rids)}
        take = np.array([index.get(rid, -1) for rid in rids], dtype=np.int64)
        held = take >= 0
        rows = np.where(held, take, 0)
        return (np.where(held, self.lens[rows], 0), None if self.tokens is None else self.tokens[rows],
                None if self.logprobs is None else self.logprobs[rows])

    @classmethod
    def from_rows(cls, logprobs: Mapping[Hashable, Sequence[float]]) -> VerifiedRows:
        """Logprobs only, from per-request lists (tests, replays)."""
        stride = max((len(row) for row in logprobs.values()), default=0)
        matrix = np.zeros((len(logprobs), stride))
        for r, row in enumerate(logprobs.values()):
            matrix[r, : len(row)] = row
        return cls(list(logprobs), np.array([len(row) for row in logprobs.values()], dtype=np.int64), None, matrix)


class RelayedRows(Sequence):
    """SGLang's overlap relay on the host: per request of the batch, the tokens its previous step
    accepted (FutureMap's layout: one row of ``stride`` tokens per request, flattened, the first
    ``lens[i]`` of row i valid). Rows are sliced only when asked (the request-by-request path)."""

    def __init__(self, tokens: Sequence[int], lens: Sequence[int], stride: int) -> None:
        self._tokens, self._lens, self._stride = tokens, lens, stride

    def __len__(self) -> int:
        return len(self._lens)

    def __getitem__(self, i: int) -> list[int]:
        start = i * self._stride
        row = self._tokens[start: start + int(self._lens[i])]
        return row.tolist() if isinstance(row, np.ndarray) else list(row)


def consensus_params(req) -> ConsensusParams:
    """The request's consensus fields (validated at the door; never raises here)."""
    return read_params(getattr(req.sampling_params, "custom_params", None))


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
        self.common_syncs = 0  # syncs done from the verify's rows in array operations (the rest: request by request)
        self.last_new = NewTokens.from_rows([], [])  # what the last sync added
        self._view: _BatchView | None = None  # the last common step's batch (dropped when requests come or go)
        self._synced: tuple[list[Hashable], Sequence[Hashable | None]] = ([], ())  # last sync's rids, tenants
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
        self._view = None
        self._away.clear()
        self._last_batch.clear()

    def __len__(self) -> int:
        return len(self._tracked)

    # -- per decode step --------------------------------------------------------------------
    def sync(
        self, reqs: Sequence[Any], seq_lens: Sequence[int] | np.ndarray | None = None,
        pending: Sequence[Sequence[int]] | None = None, verified: VerifiedRows | None = None,
    ) -> tuple[list[Hashable], list[int]]:
        """Bring the drafter up to date with ``reqs``: their rids and last committed tokens (the
        roots of their draft trees), in batch order.

        ``seq_lens``: SGLang's committed KV lengths of the batch (None: trust ``output_ids`` plus
        ``pending``, which is exact without overlap scheduling). ``pending``: per request, the
        tokens its last step accepted that ``output_ids`` may not hold yet (overlap scheduling).
        ``verified``: what the last verify committed (tokens, and the target's logprobs of them)."""
        common = self._sync_common(reqs, seq_lens, verified)
        if common is not None:
            return common
        self._view = None  # the request-by-request path moves counts the view holds
        rids, roots = [], []
        rows: list[list[int]] = []
        for i, req in enumerate(reqs):
            rids.append(req.rid)
            roots.append(self._sync_one(req, None if seq_lens is None else int(seq_lens[i]),
                                        pending[i] if pending is not None else (), rows))
        extended = [rid for rid, row in zip(rids, rows) if row]
        self.last_new = NewTokens.from_rows(extended, [row for row in rows if row])
        if extended:
            self._write(extended, self.last_new, verified)
        self._synced = (rids, [self._tracked[rid].tenant for rid in rids])
        return rids, roots

    def _write(self, rids: list[Hashable], new: NewTokens, verified: VerifiedRows | None,
               rows: tuple | None = None) -> np.ndarray | None:
        """One batch write of ``new`` (which the drafter, not the tracker, pairs with the verify's
        logprobs: the newest tokens of each row get them, see `ConsensusDrafter.extend_rows`);
        ``rows``: ``verified.rows_of(rids)`` when already taken. Each request's last token
        afterwards (None from a drafter without `extend_rows`)."""
        if not hasattr(self.drafter, "extend_rows"):  # a drafter that keeps no probabilities
            self.drafter.extend_many(rids, [row[:size] for row, size in zip(new.tokens.tolist(), new.lens.tolist())])
            return None
        logprobs = ()
        if verified is not None and verified.logprobs is not None:
            lens, _, matrix = verified.rows_of(rids) if rows is None else rows
            logprobs = (matrix, lens)
        written = self.drafter.extend_rows(rids, new.tokens, new.lens, *logprobs)
        self.tokens_with_probs += written.with_prob
        self.prob_sum += written.prob_sum
        return written.last_tokens

    def _sync_common(self, reqs: Sequence[Any], seq_lens: Sequence[int] | np.ndarray | None,
                     verified: VerifiedRows | None) -> tuple[list[Hashable], list[int]] | None:
        """The common step in array operations, with one write to the drafter: every request already
        tracked, and the last verify's committed tokens of each are exactly what SGLang added
        since the last sync (its new committed count, from ``seq_lens``, equals the verify's
        count). No request's ``output_ids`` is read: the tokens are the verify's own rows. None
        (nothing changed) otherwise: the request-by-request path then handles whatever is unusual."""
        if seq_lens is None or verified is None or verified.tokens is None or not reqs \
                or not hasattr(self.drafter, "extend_rows"):
            return None
        view = self._batch_view(reqs)
        if view is None:
            return None  # a request to add
        rows = verified.rows_of(view.rids)
        lens, tokens, _ = rows
        # Plain lists: in the server each NumPy call costs microseconds of cold caches, a short
        # loop less (see docs/drafting-step.md).
        committed = view.committed_if_news(seq_lens.tolist() if isinstance(seq_lens, np.ndarray) else seq_lens,
                                           lens.tolist())
        if committed is None:
            return None  # no news, a rewind, or tokens the verify did not commit: checked one by one
        new = NewTokens(view.rids, tokens, lens)
        roots = self._write(view.rids, new, verified, rows)
        view.advance(committed)
        self.common_syncs += 1
        self.last_new = new
        self._synced = (view.rids, view.tenants)
        return view.rids, roots.tolist()

    def _batch_view(self, reqs: Sequence[Any]) -> _BatchView | None:
        """The batch's tracked requests as arrays, reused while the same batch comes back; None when
        a request is not tracked."""
        rids = [req.rid for req in reqs]
        view = self._view
        if view is not None and view.rids == rids:
            return view
        tracked = [self._tracked.get(rid) for rid in rids]
        if None in tracked:
            return None
        view = self._view = _BatchView(rids, tracked)
        return view

    def _sync_one(self, req, seq_len: int | None, pending: Sequence[int], rows: list[list[int]]) -> int:
        """One request's news appended to ``rows`` (empty if none); its root."""
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
            rows.append(new)
            return new[-1]  # SGLang's last committed token, which the drafter's tail now ends with
        rows.append([])
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

    def tenants(self, rids: Sequence[Hashable]) -> Sequence[Hashable | None]:
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
        self._view = None
        return tracked

    def _remove(self, rid: Hashable) -> None:
        self._view = None
        self._tracked.pop(rid, None)
        self._away.pop(rid, None)
        self.grouper.release(rid)
        self.drafter.remove(rid)


class _BatchView:
    """A batch's tracked requests, kept while the same batch comes back (the common step)."""

    __slots__ = ("rids", "tracked", "output_base", "seen", "tenants")

    def __init__(self, rids: list[Hashable], tracked: list[_Tracked]) -> None:
        self.rids = rids
        self.tracked = tracked
        # committed output tokens = seq_len + 1 - prompt length (see the module docstring)
        self.output_base = [1 - t.prompt_length for t in tracked]
        self.seen = [t.committed_outputs for t in tracked]
        self.tenants = tuple(t.tenant for t in tracked)  # immutable: the policy remembers it by identity

    def committed_if_news(self, seq_lens: Sequence[int], counts: Sequence[int]) -> list[int] | None:
        """Each request's committed output tokens by SGLang's ``seq_lens``, if every one of them
        is exactly ``counts[i]`` (> 0) more than the drafter has seen; else None."""
        committed = [s + b for s, b in zip(seq_lens, self.output_base)]
        for total, seen, count in zip(committed, self.seen, counts):
            if count <= 0 or total - seen != count:
                return None
        return committed if len(committed) == len(counts) == len(self.seen) else None

    def advance(self, committed: list[int]) -> None:
        """The drafter has seen ``committed`` output tokens of each request."""
        self.seen = committed
        for t, count in zip(self.tracked, committed):
            t.committed_outputs = count


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
