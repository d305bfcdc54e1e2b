"""Applies the lead-lag policy (``sgl_consensus.lead_lag``) to SGLang's scheduler, through the plugin.

An AROUND hook on ``Scheduler.get_new_batch_prefill`` (SGLang's plugin ``HookRegistry``; no SGLang
file is patched): before the scheduler picks new requests from its waiting queue, the followers
the gate holds are taken out of the queue; after it picked, they are put back in their places.
Held followers therefore keep their queue position and are admitted by SGLang's own policy the
first round after their leader has ``lead`` tokens (or is gone).

Which requests are gated: groups the worker can name before decoding starts: an explicit tag
(``custom_params["consensus_group"]``, what ``ConsensusRuntimeEndpoint`` sends) and ``n > 1``
requests. The lead is ``custom_params["consensus_lead"]`` of the request, else the server's
``CONSENSUS_LEAD`` (0 = off, the default).
"""

from __future__ import annotations

import math
from typing import Hashable

from sgl_consensus.adapter.request_tracker import consensus_params, decodes
from sgl_consensus.grouping import explicit_group_key
from sgl_consensus.lead_lag import LeadLagGate, RequestView

TARGET = "sglang.srt.managers.scheduler.Scheduler.get_new_batch_prefill"
_GATE_ATTR = "_consensus_lead_gate"


def _group_of(req) -> Hashable | None:
    """The worker's own group key (``grouping.explicit_group_key``), so leader and drafts agree."""
    return explicit_group_key(consensus_params(req))


def _make_lead_of(default_lead: float):
    def lead_of(req) -> float:
        lead = consensus_params(req).lead  # validated at the door
        return default_lead if lead is None else lead

    return lead_of


def make_gate(default_lead: float) -> LeadLagGate:
    return LeadLagGate(RequestView(
        group_of=_group_of,
        lead_of=_make_lead_of(default_lead),
        progress_of=lambda req: len(req.output_ids),
        is_done=lambda req: req.finished(),
        decodes=decodes,
    ))


def _requests_outside_queue(scheduler) -> list:
    reqs = list(getattr(scheduler.running_batch, "reqs", None) or [])
    last = getattr(scheduler, "last_batch", None)
    if last is not None:
        reqs.extend(last.reqs or [])
    if getattr(scheduler, "chunked_req", None) is not None:
        reqs.append(scheduler.chunked_req)
    return reqs


def _gate_of(scheduler) -> LeadLagGate:
    gate = getattr(scheduler, _GATE_ATTR, None)
    if gate is None:
        from sgl_consensus.settings import load_settings

        gate = make_gate(load_settings().lead_tokens)
        setattr(scheduler, _GATE_ATTR, gate)
    return gate


def hold_followers(original, scheduler, *args, **kwargs):
    """AROUND hook: run SGLang's admission with the held followers out of the waiting queue."""
    queue = scheduler.waiting_queue
    gate = _gate_of(scheduler)
    if not queue:
        gate.sweep(lambda: _requests_outside_queue(scheduler))
        return original(scheduler, *args, **kwargs)
    held = gate.held(queue, lambda: _requests_outside_queue(scheduler))
    if not held:
        return original(scheduler, *args, **kwargs)
    held_ids = {id(req) for req in held}
    order = {id(req): i for i, req in enumerate(queue)}
    scheduler.waiting_queue = [req for req in queue if id(req) not in held_ids]
    try:
        return original(scheduler, *args, **kwargs)
    finally:
        # Back in their old places; requests the admission re-queued (preemption) keep theirs.
        merged = scheduler.waiting_queue + held
        merged.sort(key=lambda req: order.get(id(req), math.inf))
        scheduler.waiting_queue = merged


def gate_state(scheduler) -> dict:
    gate = getattr(scheduler, _GATE_ATTR, None)
    if gate is None:
        return {"lead_groups_tracked": 0, "lead_holds": 0, "lead_groups_led": 0}
    return {"lead_groups_tracked": gate.tracked_groups(), "lead_holds": gate.held_total,
            "lead_groups_led": gate.groups_led}
