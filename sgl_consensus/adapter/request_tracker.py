"""Keeps a drafter's view of requests in step with SGLang's scheduler.

SGLang has no "request added / finished" callback for speculative workers, so the tracker diffs each
decode batch against what the drafter already holds: new requests are added with their prompt, new
committed tokens are extended, and tracked requests that the scheduler has finished or aborted are
removed. A request that merely sits out a step (e.g. retracted for memory) stays tracked.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Hashable, Sequence

from sgl_consensus.grouping import GROUP_TAG, SiblingGrouper


@dataclass
class _Tracked:
    req: Any  # sglang Req
    committed_outputs: int  # how many output tokens the drafter has seen


def group_tag(req) -> Hashable | None:
    """The explicit group tag of a request, ``sampling_params.custom_params['consensus_group']``."""
    params = getattr(req.sampling_params, "custom_params", None) or {}
    tag = params.get(GROUP_TAG)
    return tag if tag is None or isinstance(tag, (str, int)) else str(tag)


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
            group = self.grouper.assign(req.rid, group_tag(req), int(req.sampling_params.n or 1), prompt)
            self.drafter.add(req.rid, group, prompt)
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
