"""RequestTracker keeps the drafter in step with scheduler requests (plain stand-in objects).

The overlap cases use the layout SGLang's FutureMap relays to the next step: the previous step's
accepted tokens as one row of ``stride`` tokens per request (flattened) plus ``accept_lens``; and
SGLang's KV length ``seq_len`` (committed tokens minus the one the next step feeds in).
"""

from __future__ import annotations

import math
import random
from array import array
from types import SimpleNamespace

import pytest

from sgl_consensus.adapter.request_tracker import RelayedRows, RequestTracker, VerifiedRows
from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.grouping import SiblingGrouper


class RecordingDrafter(ConsensusDrafter):
    def __init__(self):
        super().__init__(DraftConfig(num_draft_tokens=4))
        self.seen: dict[str, list[int]] = {}
        self.logprobs: dict[str, list] = {}

    def add(self, rid, group, prompt_ids, tenant=None):
        super().add(rid, group, prompt_ids, tenant)
        self.seen[rid] = list(prompt_ids)

    def extend(self, rid, token_ids, logprobs=None):
        super().extend(rid, token_ids, logprobs)
        self.seen[rid] += list(token_ids)
        self.logprobs.setdefault(rid, []).extend(logprobs if logprobs is not None else [None] * len(token_ids))

    def extend_many(self, rids, token_lists, logprob_lists=None, *, probabilities=None):
        super().extend_many(rids, token_lists, logprob_lists, probabilities=probabilities)
        flat = iter([] if probabilities is None else probabilities.tolist())
        for i, (rid, tokens) in enumerate(zip(rids, token_lists)):
            self.seen[rid] += list(tokens)
            if probabilities is not None:  # as logprobs, None where unknown
                row = [next(flat) for _ in tokens]
                self.logprobs.setdefault(rid, []).extend(None if p != p else math.log(p) for p in row)
                continue
            known = list((logprob_lists[i] if logprob_lists is not None else None) or [])
            self.logprobs.setdefault(rid, []).extend([None] * (len(tokens) - len(known)) + known)


    def extend_rows(self, rids, tokens, lens, logprobs=None, logprob_counts=None):
        """The common step's batch write: recorded as `extend_many` records its rows."""
        result = super().extend_rows(rids, tokens, lens, logprobs, logprob_counts)
        for i, rid in enumerate(rids):
            row = tokens[i, :lens[i]].tolist()
            self.seen[rid] += row
            known = int(logprob_counts[i]) if logprobs is not None else 0
            values = logprobs[i, :known].tolist() if 0 < known <= len(row) else []
            if any(v != v for v in values):
                values = []
            self.logprobs.setdefault(rid, []).extend([None] * (len(row) - len(values)) + [min(v, 0.0) for v in values])
        return result


def _req(rid, prompt, tag=None, n=1, max_new_tokens=16):
    ids = array("q", prompt)
    return SimpleNamespace(rid=rid, origin_input_ids_unpadded=ids, origin_input_ids=ids, output_ids=array("q"),
                           finished_reason=None, finished=lambda: False,
                           sampling_params=SimpleNamespace(n=n, max_new_tokens=max_new_tokens,
                                                           custom_params={"consensus_group": tag} if tag else None))


def test_sync_extends_only_new_tokens_including_pending():
    drafter = RecordingDrafter()
    tracker = RequestTracker(drafter, SiblingGrouper())
    a = _req("a", [1, 2, 3], tag="g")
    assert tracker.sync([a]) == (["a"], [3])
    a.output_ids.extend([4, 5])
    assert tracker.sync([a], pending=[[6]])[1] == [6]      # overlap: 6 accepted, not yet in output_ids
    a.output_ids.extend([6, 7])                            # now output_ids caught up (6) and moved on (7)
    tracker.sync([a], pending=[[]])
    assert drafter.seen["a"] == [1, 2, 3, 4, 5, 6, 7]


def test_verify_logprobs_go_with_the_newest_tokens():
    """The last verify's logprobs cover the tokens it committed: the newest ones. Older new tokens
    (the prefill's first token) go in by frequency alone; a mismatch drops the probabilities."""
    drafter = RecordingDrafter()
    tracker = RequestTracker(drafter, SiblingGrouper())
    a = _req("a", [1, 2, 3], tag="g")
    tracker.sync([a])
    a.output_ids.extend([4, 5, 6])
    tracker.sync([a], verified=VerifiedRows.from_rows({"a": [-0.1, -0.2]}))  # 4 from the prefill, 5, 6 a verify
    assert drafter.logprobs["a"] == [None, pytest.approx(-0.1), pytest.approx(-0.2)]
    a.output_ids.extend([7])
    tracker.sync([a], verified=VerifiedRows.from_rows({"a": [-0.1, -0.2]}))  # more logprobs than tokens: not trusted
    assert drafter.logprobs["a"][-1] is None
    assert tracker.tokens_with_probs == 2
    assert abs(tracker.prob_sum - (2.718281828 ** -0.1 + 2.718281828 ** -0.2)) < 1e-6


def test_overlap_splice_in_future_map_layout():
    """Committed = SGLang's seq_len + 1 - prompt length; pending fills only what output_ids lacks."""
    drafter = RecordingDrafter()
    tracker = RequestTracker(drafter, SiblingGrouper())
    a, b = _req("a", [1, 2, 3], tag="g"), _req("b", [1, 2, 3], tag="g")
    stride = 4
    tracker.admit([a, b])  # prompts indexed at prefill
    # first decode step after the prefill: output_ids still empty, the prefill's token is relayed
    relay = RelayedRows([10, 0, 0, 0, 20, 0, 0, 0], [1, 1], stride)
    assert tracker.sync([a, b], seq_lens=[3, 3], pending=relay) == (["a", "b"], [10, 20])
    # a accepted 3 tokens, b 1; output_ids now holds the first step's tokens only
    a.output_ids.extend([10])
    b.output_ids.extend([20])
    relay = RelayedRows([11, 12, 13, 0, 21, 0, 0, 0], [3, 1], stride)
    assert tracker.sync([a, b], seq_lens=[6, 4], pending=relay)[1] == [13, 21]
    # a batch after a prefill step: output_ids caught up, the relayed row is stale (already there)
    a.output_ids.extend([11, 12, 13])
    b.output_ids.extend([21])
    assert tracker.sync([a, b], seq_lens=[6, 4], pending=relay)[1] == [13, 21]
    assert drafter.seen["a"] == [1, 2, 3, 10, 11, 12, 13] and drafter.seen["b"] == [1, 2, 3, 20, 21]
    assert tracker.root_resyncs == 0


def test_a_drafter_that_lost_a_token_is_resynced():
    drafter = RecordingDrafter()
    tracker = RequestTracker(drafter, SiblingGrouper())
    a = _req("a", [1, 2, 3])
    tracker.sync([a])
    a.output_ids.extend([4, 5])
    tracker._tracked["a"].committed_outputs = 2  # pretend the drafter saw 4, 5 (it did not)
    assert tracker.sync([a])[1] == [5]
    assert tracker.root_resyncs == 1 and drafter.last_token("a") == 5
    assert drafter.seen["a"] == [1, 2, 3, 4, 5]


def test_finished_requests_are_released_after_they_leave_and_rewinds_restart():
    drafter = RecordingDrafter()
    tracker = RequestTracker(drafter, SiblingGrouper())
    a, b = _req("a", [1, 2], tag="g"), _req("b", [1, 2], tag="g")
    tracker.sync([a, b])
    tracker.release_departed([a, b])
    a.output_ids.extend([9, 9, 9])
    tracker.sync([a, b])
    a.output_ids = array("q", [9])            # retracted and re-prefilled: outputs rewound
    tracker.sync([a, b])
    assert drafter.seen["a"] == [1, 2, 9]
    tracker.release_departed([a])              # b left the batch but is not finished: kept
    assert len(tracker) == 2
    b.finished = lambda: True
    tracker.release_departed([a])              # now it is: freed
    assert len(tracker) == 1 and drafter.stats()["live_requests"] == 1
    a.finished = lambda: True
    tracker.prune_finished()
    assert len(tracker) == 0 and drafter.stats()["live_requests"] == 0 and drafter.stats()["live_groups"] == 0


def test_prefill_only_requests_are_never_indexed():
    tracker = RequestTracker(RecordingDrafter(), SiblingGrouper())
    tracker.admit([_req("warm-up", [1, 2], max_new_tokens=0), _req("real", [1, 2], max_new_tokens=None)])
    assert len(tracker) == 1


_SCRIPT = """
import hashlib, random
from array import array
from types import SimpleNamespace
from sgl_consensus.adapter.request_tracker import RequestTracker
from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.grouping import SiblingGrouper

rng = random.Random(7)
tracker = RequestTracker(ConsensusDrafter(DraftConfig(num_draft_tokens=8)), SiblingGrouper())
def req(rid, tag):
    ids = array("q", [1, 2, 3, rng.randrange(4, 9)])
    return SimpleNamespace(rid=rid, origin_input_ids_unpadded=ids, origin_input_ids=ids, output_ids=array("q"),
                           done=False, finished=lambda: False, sampling_params=SimpleNamespace(
                               n=1, max_new_tokens=64, custom_params={"consensus_group": tag}))
reqs = [req(f"r{i}-{rng.getrandbits(64):x}", f"g{i % 5}") for i in range(30)]
for r in reqs:
    r.finished = (lambda r=r: r.done)
tracker.admit(reqs)
tracker.sync(reqs)
for r in reqs:
    r.output_ids.extend(rng.randrange(10, 16) for _ in range(12))
tracker.sync(reqs)
tracker.release_departed(reqs)  # a decode step's batch
for r in reqs:
    r.done = True
tracker.release_departed([])  # every request leaves at once: the order they go in is the question
late = req("late", "fresh")
tracker.admit([late])
digest = hashlib.sha256()
for step in range(40):  # the late request's writes pay for merging the departed groups, in order
    late.output_ids.append(rng.randrange(10, 16))
    rids, _ = tracker.sync([late])
    tracker.drafter.maintain()
    tokens, mask = tracker.drafter.propose(rids)
    digest.update(tokens.tobytes() + mask.tobytes())
assert tracker.drafter.stats()["draft_nodes_global"] > 0  # the departed groups drafted
print(digest.hexdigest())
"""


def test_drafts_do_not_depend_on_the_process_hash_seed():
    """Tensor-parallel ranks are separate processes with their own string-hash seeds: the order
    departed requests leave in (and so the global corpus they fill) must not follow set order."""
    import os
    import subprocess
    import sys

    digests = {subprocess.run([sys.executable, "-c", _SCRIPT], capture_output=True, text=True, check=True,
                              env={**os.environ, "PYTHONHASHSEED": str(seed)}).stdout.strip()
               for seed in (1, 2, 3, 4)}
    assert len(digests) == 1, digests


@pytest.mark.parametrize("seed", range(8))
def test_each_request_gets_its_own_verify_row_on_its_newest_tokens(seed):
    """Request by request (new requests in the batch), each request's verify logprobs reach the
    drafter on its newest tokens, whatever the verify's row order; requests without a row, with
    more logprobs than new tokens or with a NaN among them get none: checked against that rule."""
    import random

    rng = random.Random(seed)
    drafter = RecordingDrafter()
    tracker = RequestTracker(drafter, SiblingGrouper())
    reqs = [_req(f"r{i}", [1, 2, 3], tag="g") for i in range(rng.randint(2, 10))]
    tracker.sync(reqs[:1])
    rows, expected = {}, {}
    for req in reqs:
        new = [rng.randrange(100) for _ in range(rng.randint(1, 4))]
        req.output_ids.extend(new)
        if rng.random() < 0.8:
            rows[req.rid] = [-rng.random() for _ in range(rng.randint(0, 5))]
            if rows[req.rid] and rng.random() < 0.2:
                rows[req.rid][rng.randrange(len(rows[req.rid]))] = math.nan
        known = rows.get(req.rid, [])
        if len(known) > len(new) or any(v != v for v in known):
            known = []
        expected[req.rid] = [None] * (len(new) - len(known)) + known
    order = list(rows)
    rng.shuffle(order)  # the verify held them in another order
    tracker.sync(reqs, verified=VerifiedRows.from_rows({rid: rows[rid] for rid in order}))
    for req in reqs:
        got = drafter.logprobs.get(req.rid, [])[-len(expected[req.rid]):]
        assert got == [None if v is None else pytest.approx(v) for v in expected[req.rid]], req.rid
    known = [v for row in expected.values() for v in row if v is not None]
    assert tracker.tokens_with_probs == len(known)
    assert tracker.prob_sum == pytest.approx(sum(math.exp(v) for v in known))


class GeneralOnlyTracker(RequestTracker):
    """The tracker with its common-step path turned off: every step request by request."""

    def _sync_common(self, *args, **kwargs):
        return None


@pytest.mark.parametrize("seed", range(4))
def test_the_common_step_writes_what_the_general_path_writes(seed):
    """The array path for the common step (the batch of the last sync, each request with news)
    and the request-by-request path leave the drafter in the same state and return the same
    roots, through departures, joins, steps without news, overlap relays, verify logprobs with
    NaN rows, verify records of another batch, without tokens, or with a count SGLang disagrees with."""
    import numpy as np

    rng = random.Random(seed)
    fast, slow = (cls(ConsensusDrafter(DraftConfig(num_draft_tokens=6)), SiblingGrouper())
                  for cls in (RequestTracker, GeneralOnlyTracker))
    streams = {f"r{i}": [rng.randrange(5, 12) for _ in range(200)] for i in range(6)}
    reqs = {tracker: {rid: _req(rid, [1, 2, 3], tag="g", max_new_tokens=200) for rid in streams}
            for tracker in (fast, slow)}
    for tracker in (fast, slow):
        for r in reqs[tracker].values():
            r.output_ids.append(streams[r.rid][0])
        tracker.admit(list(reqs[tracker].values()))
    batch = list(streams)
    common = []  # the steps the common path took

    def sync_common(*args, original=fast._sync_common):
        result = original(*args)
        if result is not None:
            common.append(1)
        return result
    fast._sync_common = sync_common
    last_verify = None
    for step in range(60):
        if rng.random() < 0.1 and len(batch) > 2:
            batch.remove(rng.choice(batch))  # sits out (retracted) or left
        elif rng.random() < 0.1:
            batch = list(streams)  # back, in another order
            rng.shuffle(batch)
        overlap = rng.random() < 0.3
        counts = {rid: (0 if rng.random() < 0.05 else rng.randint(1, 3)) for rid in batch}
        pending, seq_lens = [], []
        for rid in batch:
            for tracker in (fast, slow):
                r = reqs[tracker][rid]
                r.output_ids.extend(streams[rid][len(r.output_ids): len(r.output_ids) + counts[rid]])
            r = reqs[fast][rid]
            committed = len(r.output_ids)
            lag = min(counts[rid], committed - 1) if overlap else 0  # output_ids one step behind
            pending.append(list(r.output_ids[committed - lag:committed]))
            seq_lens.append(3 + committed - 1)
        if overlap:
            for tracker in (fast, slow):
                for rid, row in zip(batch, pending):
                    del reqs[tracker][rid].output_ids[len(reqs[tracker][rid].output_ids) - len(row):]
        pending_of = dict(zip(batch, pending)) if overlap else {}
        verified = None
        if last_verify is not None and rng.random() < 0.8:
            # the verify of this batch, or of the last one (rows of departed requests, none for joiners)
            rows = list(batch) if rng.random() < 0.6 else list(last_verify)
            logprobs = np.array([[-rng.random() for _ in range(4)] for _ in rows])
            if rng.random() < 0.2:
                logprobs[rng.randrange(len(rows)), 0] = np.nan
            # each row: the tokens its request committed this step (one that sat out: its last two)
            committed = []
            for rid in rows:
                so_far = streams[rid][:len(reqs[fast][rid].output_ids) + len(pending_of.get(rid, ()))]
                take = counts.get(rid, 2)
                committed.append(so_far[len(so_far) - take:] if take else [])
            lens = np.array([len(row) for row in committed])
            if rng.random() < 0.1:
                lens[rng.randrange(len(rows))] += 1  # a count SGLang disagrees with: checked one by one
            tokens = np.array([row + [0] * (4 - len(row)) for row in committed], dtype=np.int64)
            verified = VerifiedRows(rows, lens, tokens if rng.random() < 0.9 else None, logprobs)
        results = [t.sync([reqs[t][rid] for rid in batch], seq_lens, pending if overlap else None, verified)
                   for t in (fast, slow)]
        assert results[0] == results[1]
        if overlap:  # the scheduler catches up: the relayed tokens reach output_ids
            for tracker in (fast, slow):
                for rid, row in zip(batch, pending):
                    reqs[tracker][rid].output_ids.extend(row)
        last_verify = batch
        a, b = fast.drafter.propose_candidates(batch), slow.drafter.propose_candidates(batch)
        for field in ("lengths", "tokens", "parents", "scores"):
            np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
        assert fast.last_new_tokens == slow.last_new_tokens
    assert fast.tokens_with_probs == slow.tokens_with_probs and fast.root_resyncs == slow.root_resyncs
    assert fast.prob_sum == pytest.approx(slow.prob_sum)
    assert fast.drafter.stats() == slow.drafter.stats()
    assert 20 < len(common) < 60, f"the common path ran {len(common)} of 60 steps: the comparison would be weak"
