"""One decode step's drafting, in the order its data flows:

    last verify's outcome -> index update -> propose -> width choice -> layout  (the verify waits)
    -> [verify launched] -> learn, cost, departures, merges                     (while it computes)

No SGLang import: the worker reads what this needs from SGLang's batch (the requests, SGLang's
committed lengths, the tokens accepted last step under overlap scheduling) and from the last verify
(committed-token logprobs, the target's top successors) and hands them in as host arrays, so the
same step runs, and is timed phase by phase, in a benchmark with stand-in requests
(``benchmarks/bench_step_phases.py``).

Terms:

- *candidates*: per request, its best draft nodes, best first (``CandidateBatch``); any prefix of
  ``w`` of them is its best ``w``-node tree;
- *width*: tree nodes per request verified this step, root included (one width for the batch);
- *outcome*: which of the last step's draft nodes the verify accepted, found by walking each tree
  along the tokens the request committed (the verify walks the tree by token, so the committed
  tokens retrace the accepted path); outcomes calibrate the width policy's acceptance estimates.
"""

from __future__ import annotations

import time
from collections.abc import Hashable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from sgl_consensus.adapter.metrics import DraftMetrics
from sgl_consensus.adapter.request_tracker import VerifiedRows


@dataclass
class VerifyRecord:
    """What one verify step leaves for the next step's drafting (host arrays)."""

    rids: list[Hashable]  # the verified requests, in batch order
    logprobs: np.ndarray | None  # [batch, stride]: the target's logprob of each committed token
    accept_lens: np.ndarray | None  # [batch]: committed tokens per row
    successors: tuple[np.ndarray, np.ndarray] | None  # top-k tokens and probs, [batch, width, k]
    node_tokens: np.ndarray  # [batch, width]: the verified trees' tokens
    node_counts: list[int]  # real (drafted) nodes per request, root included
    tokens: np.ndarray | None = None  # int64 [batch, stride]: the committed tokens (accept_lens of each row)


@dataclass
class StepPlan:
    """The trees to verify this step."""

    rids: list[Hashable]
    width: int
    tokens: np.ndarray  # [batch, width] int64; column 0 = each request's last committed token
    mask: np.ndarray  # [batch, width, width] ancestor mask
    seconds: float  # drafting time of the step
    labels: np.ndarray  # [batch, 4] draft nodes per source (sibling, global, own, model)

    @property
    def report(self) -> dict[str, list]:
        """Per-request entries for SGLang's meta_info (built when asked: after the verify's launch)."""
        count = len(self.rids)
        return {"consensus_draft_ms": [round(1000 * self.seconds, 3)] * count,
                "consensus_draft_nodes": self.labels[:, :3].tolist(), "consensus_width": [self.width] * count}


@dataclass
class _Proposal:
    rids: list[Hashable]
    tenants: list[Hashable | None]
    candidates: Any  # CandidateBatch
    width: int


class DraftStep:
    """The per-step drafting of one worker: owns what one step hands the next (the proposal to
    learn from, the step's start time for the cost model).

    The verify waits for ``plan``; what only the policy needs (the last step's outcomes for the
    calibration, its measured seconds for the cost model) and the drafter's housekeeping run in
    ``after_launch``, which the worker calls once the verify is launched, while the device
    computes. The policy then chooses each width without the one step still in flight, as it
    would anyway under overlap scheduling. A step whose ``after_launch`` was never called (an
    error in between, a caller that does not call it) has that work done at the next ``plan``:
    nothing is lost."""

    def __init__(self, tracker, policy, metrics: DraftMetrics, tp=None) -> None:
        self.tracker = tracker  # RequestTracker (its drafter proposes)
        self.policy = policy  # TenantWidthPolicies
        self.metrics = metrics
        self.tp = tp  # TensorParallelSync or None: agrees the width, checks trees across ranks
        self._agrees_width = tp is not None and len(policy.widths) > 1  # one allowed width: nothing to agree on
        self._proposal: _Proposal | None = None  # this step's trees, learned from after the next sync
        self._to_learn: _Proposal | None = None  # the last step's, whose outcomes this step's sync revealed
        self._cost_due: tuple | None = None  # the last step's (tenants, width, keys, seconds, follows)
        self._last_step: tuple[float, list, int, int] | None = None  # start, tenants, width, keys
        self._recorded_until: float | None = None  # when the last step given to the cost model ended
        self._metrics_due: tuple | None = None  # the last plan's (batch, seconds, labels, width) for the metrics

    def forget_timing(self) -> None:
        """A non-decode step ran since the last plan: its period is not a verify's cost."""
        self._last_step = None

    def reset(self, policy) -> None:
        self.policy = policy
        self._proposal = self._to_learn = self._cost_due = self._last_step = self._recorded_until = None
        self._metrics_due = None

    @property
    def proposal(self) -> _Proposal | None:
        return self._proposal

    def plan(self, reqs: Sequence[Any], seq_lens: Sequence[int] | np.ndarray | None,
             pending: Sequence[Sequence[int]] | None,
             verified: VerifyRecord | None, start: float | None = None) -> StepPlan:
        """This step's trees. ``start``: when the step began (default now); ``verified``: the last
        verify's record (None if nothing was recorded)."""
        start = time.perf_counter() if start is None else start
        marks = [start]
        self._settle()
        if self._last_step is not None:  # the last step ran from its start to this one's
            last_start, last_tenants, last_width, last_keys = self._last_step
            follows = last_start == self._recorded_until  # no unrecorded step in between
            self._cost_due = (last_tenants, last_width, last_keys, start - last_start, follows)
            self._recorded_until = start
        rows = verified_rows(verified)
        marks.append(time.perf_counter())
        rids, roots = self.tracker.sync(reqs, seq_lens, pending, rows)
        drafter = self.tracker.drafter
        observe_successors(drafter, verified)
        self._to_learn, self._proposal = self._proposal, None
        marks.append(time.perf_counter())
        tenants = self.tracker.tenants(rids)
        candidates = drafter.propose_candidates(rids, self.policy.rank_weights(tenants))
        marks.append(time.perf_counter())
        keys = 0 if seq_lens is None else int(seq_lens.sum() if isinstance(seq_lens, np.ndarray) else sum(seq_lens))
        width = self.policy.choose(tenants, candidates.scores[:, 1:], keys, candidates.rank_sums)
        if self._agrees_width:
            width = self.tp.agree_width(width)
        marks.append(time.perf_counter())
        tokens, mask = drafter.layout(candidates, width)
        tokens[:, 0] = roots  # node 0 is the verify input: always SGLang's last committed token
        marks.append(time.perf_counter())
        self.metrics.record_phases(marks)
        if self.tp is not None:
            self.tp.check(tokens, mask)
        self._proposal = _Proposal(rids, tenants, candidates, width)
        self._last_step = (start, tenants, width, keys)
        seconds = time.perf_counter() - start
        labels = drafter.last_proposal_labels()
        self._metrics_due = (len(rids), seconds, labels, width)  # recorded after the launch
        return StepPlan(rids, width, tokens, mask, seconds, labels)

    def after_launch(self, batch_reqs: Sequence[Any]) -> None:
        """The step's work that the verify need not wait for: the last step's outcomes and cost to
        the policy, then departures (``batch_reqs``: the requests of the batch just launched) and
        the drafter's background merges."""
        marks = [time.perf_counter()]
        self._record_metrics()
        self._learn()
        marks.append(time.perf_counter())
        self._record_cost()
        marks.append(time.perf_counter())
        self.tracker.release_departed(batch_reqs)
        self.tracker.drafter.maintain()
        marks.append(time.perf_counter())
        self.metrics.record_after_launch(marks)

    def _settle(self) -> None:
        """The policy's and the metrics' share of the last ``after_launch``, if it was never called."""
        self._record_metrics()
        self._learn()
        self._record_cost()

    def _record_cost(self) -> None:
        due, self._cost_due = self._cost_due, None
        if due is not None:
            self.policy.record_cost(*due)

    def _record_metrics(self) -> None:
        """The last planned step to the metrics (after the launch: the verify need not wait for it)."""
        due, self._metrics_due = self._metrics_due, None
        if due is None:
            return
        tracker, metrics = self.tracker, self.metrics
        metrics.record_step(*due)
        metrics.root_resyncs = tracker.root_resyncs
        metrics.common_syncs = tracker.common_syncs
        metrics.tokens_with_probs = tracker.tokens_with_probs
        metrics.mean_committed_prob = tracker.prob_sum / max(tracker.tokens_with_probs, 1)

    def _learn(self) -> None:
        """The last step's outcomes to the width policy's calibration, per tenant."""
        proposal, self._to_learn = self._to_learn, None
        if proposal is None:
            return
        tokens, lens = self.tracker.last_new.rows_for(proposal.rids)
        rows, scores, accepted = self.tracker.drafter.outcomes(proposal.candidates, proposal.width, tokens, lens)
        tenants = proposal.tenants
        sole, tenant = self.policy.sole_tenant(tenants)
        if sole:
            if lens.any():  # a step where nothing was committed teaches nothing
                self.policy.record_outcome(tenant, scores, accepted)
            return
        index: dict[Hashable, int] = {}  # tenants in order of first appearance (the policies' LRU order)
        of_request = np.array([index.setdefault(t, len(index)) for t in tenants])
        has_new = lens > 0
        for tenant, i in index.items():
            if not (has_new & (of_request == i)).any():
                continue
            mine = of_request[rows] == i
            self.policy.record_outcome(tenant, scores[mine], accepted[mine])


def verified_rows(verified: VerifyRecord | None) -> VerifiedRows | None:
    """The last verify's committed tokens and their logprobs, by request (its arrays, not copied)."""
    if verified is None or verified.accept_lens is None:
        return None
    return VerifiedRows(verified.rids, verified.accept_lens, verified.tokens, verified.logprobs)


def observe_successors(drafter, verified: VerifyRecord | None) -> None:
    """The target's top successors at each real node of the last verify, to the drafter."""
    if verified is None or verified.successors is None:
        return
    top_tokens, top_probs = verified.successors
    batch, width = verified.node_tokens.shape
    top_tokens = top_tokens.reshape(batch, width, -1).tolist()
    top_probs = top_probs.reshape(batch, width, -1).tolist()
    for b, (rid, count) in enumerate(zip(verified.rids, verified.node_counts)):
        if rid in drafter:
            drafter.observe_successors(rid, verified.node_tokens[b, :count].tolist(), top_tokens[b][:count],
                                       top_probs[b][:count])
