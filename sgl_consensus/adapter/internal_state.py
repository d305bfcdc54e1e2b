"""The consensus worker's report in SGLang's internal state (``Engine.get_server_info()
["internal_states"][i]["consensus"]``, HTTP ``/server_info``): an AFTER hook on the scheduler's
speculative-state method."""

from __future__ import annotations

TARGET = "sglang.srt.managers.scheduler_components.internal_state.SchedulerInternalStateController._add_speculative"


def add_consensus_state(result, controller, state, *args, **kwargs):
    """Drafter stats, draft metrics, the width policy and the lead-lag gate, when the scheduler's
    speculative worker is the consensus worker."""
    worker = getattr(controller.scheduler, "draft_worker", None)
    report = getattr(worker, "consensus_state", None)
    if callable(report):
        from sglang.srt.runtime_context import get_parallel

        from sgl_consensus.adapter.lead_lag_hook import gate_state

        state["consensus"] = {**report(), "lead_lag": gate_state(controller.scheduler),
                              "dp_rank": get_parallel().dp_rank or 0}
    return result
