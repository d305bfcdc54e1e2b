"""Keeps a drafter's view of requests in step with SGLang's scheduler.

SGLang has no "request added / finished" callback for speculative workers, so the tracker diffs each
decode batch against what the drafter already holds: new requests are added with their prompt, new
committed tokens are extended, and tracked requests that the scheduler has finished or aborted are
removed. A request that merely sits out a step (e.g. retracted for memory) stays tracked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from sgl_consensus.grouping import SiblingGrouper
from sgl_consensus.request_params import ConsensusParams, read_params


@dataclass
class _Tracked:
    req: Any  # sglang Req
    committed_outputs: int  # how many output tokens the drafter has seen


def consensus_params(req) -> ConsensusParams:
    """The request's consensus fields (validated at the door; never raises here)."""
    return read_params(getattr(req.sampling_params, "custom_params", None))


class RequestTracker:
    def __init__(self, drafter, grouper: SiblingGrouper) -> None:
        self.drafter = drafter
        self.grouper = grouper
        self._tracked: dict[Hashable, _Tracked] = {}

    def sync(self, reqs: Sequence[Any], pending: list[list[int]] | None = None) -> list[Hashable]:
        """Bring the drafter up to date with ``reqs``; returns their rids in batch order."""
        self._drop_finished(reqs)
        rids = []
        for i, req in enumerate(reqs):
            self._sync_one(req, pending[i] if pending is not None else [])
            rids.append(req.rid)
        return rids

    def reset(self) -> None:
        if self.drafter is not None:
            self.drafter.reset()
        for rid in list(self._tracked):
            self.grouper.release(rid)
        self._tracked.clear()

    def __len__(self) -> int:
        return len(self._tracked)

    def _sync_one(self, req, pending: list[int]) -> None:
        """Extend the drafter with the request's committed tokens it has not seen yet.

        Committed = ``req.output_ids`` followed by ``pending`` (accepted last step, not yet in
        ``output_ids`` under overlap scheduling). Only the new tail is sliced: no per-step copy of
        the whole output, so long sequences cost O(new tokens) per step.
        """
        outputs = req.output_ids
        total = len(outputs) + len(pending)
        tracked = self._tracked.get(req.rid)
        if tracked is not None and total < tracked.committed_outputs:
            # outputs rewound (retraction / re-prefill): start the request over
            self._remove(req.rid)
            tracked = None
        if tracked is None:
            prompt = list(req.origin_input_ids_unpadded)
            params = consensus_params(req)
            group = self.grouper.assign(req.rid, params, prompt)
            self.drafter.add(req.rid, group, prompt, tenant=params.tenant)
            tracked = self._tracked[req.rid] = _Tracked(req, 0)
        seen = tracked.committed_outputs
        if seen < total:
            new = list(outputs[seen:]) + list(pending) if seen <= len(outputs) else list(pending[seen - len(outputs):])
            self.drafter.extend(req.rid, new)
            tracked.committed_outputs = total

    def prune_finished(self) -> None:
        """Remove every tracked request the scheduler has finished or aborted."""
        self._drop_finished(())

    def _drop_finished(self, reqs: Sequence[Any]) -> None:
        in_batch = {req.rid for req in reqs}
        for rid, tracked in list(self._tracked.items()):
            if rid not in in_batch and tracked.req.finished():
                self._remove(rid)

    def _remove(self, rid: Hashable) -> None:
        self._tracked.pop(rid, None)
        self.grouper.release(rid)
        self.drafter.remove(rid)
