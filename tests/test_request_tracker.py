"""RequestTracker keeps the drafter in step with scheduler requests (plain stand-in objects)."""

from __future__ import annotations

from array import array
from types import SimpleNamespace

from sgl_consensus.adapter.request_tracker import RequestTracker
from sgl_consensus.drafting import ConsensusDrafter, DraftConfig
from sgl_consensus.grouping import SiblingGrouper


class RecordingDrafter(ConsensusDrafter):
    def __init__(self):
        super().__init__(DraftConfig(num_draft_tokens=4))
        self.seen: dict[str, list[int]] = {}

    def add(self, rid, group, prompt_ids, tenant=None):
        super().add(rid, group, prompt_ids, tenant)
        self.seen[rid] = list(prompt_ids)

    def extend(self, rid, token_ids, logprobs=None):
        super().extend(rid, token_ids, logprobs)
        self.seen[rid] += list(token_ids)


def _req(rid, prompt, tag=None, n=1):
    return SimpleNamespace(rid=rid, origin_input_ids_unpadded=array("q", prompt), output_ids=array("q"),
                           finished_reason=None, finished=lambda: False,
                           sampling_params=SimpleNamespace(n=n, custom_params={"consensus_group": tag} if tag else None))


def test_sync_extends_only_new_tokens_including_pending():
    drafter = RecordingDrafter()
    tracker = RequestTracker(drafter, SiblingGrouper())
    a = _req("a", [1, 2, 3], tag="g")
    assert tracker.sync([a]) == ["a"]
    a.output_ids.extend([4, 5])
    tracker.sync([a], pending=[[6]])          # overlap: 6 accepted, not yet in output_ids
    a.output_ids.extend([6, 7])               # now output_ids caught up (6) and moved on (7)
    tracker.sync([a], pending=[[]])
    assert drafter.seen["a"] == [1, 2, 3, 4, 5, 6, 7]


def test_finished_requests_are_removed_and_rewinds_restart():
    drafter = RecordingDrafter()
    tracker = RequestTracker(drafter, SiblingGrouper())
    a, b = _req("a", [1, 2], tag="g"), _req("b", [1, 2], tag="g")
    tracker.sync([a, b])
    a.output_ids.extend([9, 9, 9])
    tracker.sync([a, b])
    a.output_ids = array("q", [9])            # retracted and re-prefilled: outputs rewound
    tracker.sync([a, b])
    assert drafter.seen["a"] == [1, 2, 9]
    b.finished = lambda: True
    tracker.sync([a])                          # b left the batch and is finished: freed
    assert len(tracker) == 1 and drafter.stats()["live_requests"] == 1
    a.finished = lambda: True
    tracker.prune_finished()
    assert len(tracker) == 0 and drafter.stats()["live_requests"] == 0 and drafter.stats()["live_groups"] == 0
