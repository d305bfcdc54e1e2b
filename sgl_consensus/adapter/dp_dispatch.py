"""Siblings stay together under data parallelism: every request of one sibling group goes to one
data-parallel rank.

SGLang's data-parallel controller (``--dp-size N``) dispatches each request on its own (round robin by
default), so the ``n`` children of one request or the branches of one tagged group land on
different ranks, and each rank's drafter sees only part of the group. An AROUND hook on
``DataParallelController.dispatching_with_trace`` gives every request that belongs to a declared
group (``custom_params["consensus_group"]``, or the server-stamped ``consensus_origin`` of ``n > 1``
children; per tenant) a ``routed_dp_rank`` chosen by a stable hash of the group among the active
ranks, which SGLang's own external-rank routing then honours. Requests outside any group, and
requests that already name a rank, keep SGLang's policy; ``CONSENSUS_DP_DISPATCH=sglang`` leaves every
request to it (a baseline for measurements).
"""

from __future__ import annotations

import functools
import hashlib
from collections.abc import Sequence

from sgl_consensus.adapter import ALGORITHM_NAME
from sgl_consensus.request_params import GROUP_TAG, ORIGIN_PARAM, TENANT_PARAM

TARGET = "sglang.srt.managers.data_parallel_controller.DataParallelController.dispatching_with_trace"


def group_key(custom_params: dict | None) -> str | None:
    """The sibling group a request belongs to (tenant-qualified), or None."""
    if not isinstance(custom_params, dict):
        return None
    group = custom_params.get(GROUP_TAG)
    if group is None:
        group = custom_params.get(ORIGIN_PARAM)
    if group is None:
        return None
    return f"{custom_params.get(TENANT_PARAM)!r}/{group!r}"


def rank_for(key: str, active_ranks: Sequence[int]) -> int:
    """A stable rank for ``key`` among the active ranks (the same in every process and run)."""
    digest = int.from_bytes(hashlib.blake2b(key.encode(), digest_size=8).digest(), "big")
    return active_ranks[digest % len(active_ranks)]


@functools.cache
def _groups_together() -> bool:
    """CONSENSUS_DP_DISPATCH, read once per controller process (validated at server start)."""
    from sgl_consensus.settings import load_settings

    return load_settings().dp_dispatch == "group"


def dispatch_groups_together(original, controller, req, *args, **kwargs):
    """AROUND hook: pin grouped requests to their group's rank, then dispatch as SGLang does."""
    algorithm = str(getattr(getattr(controller, "server_args", None), "speculative_algorithm", None) or "")
    if algorithm.upper() != ALGORITHM_NAME or not _groups_together():
        return original(controller, req, *args, **kwargs)
    sampling = getattr(req, "sampling_params", None)
    key = group_key(getattr(sampling, "custom_params", None))
    active = list(getattr(controller, "_active_workers", None) or [])
    if key is not None and active and getattr(req, "routed_dp_rank", None) is None:
        req.routed_dp_rank = rank_for(key, active)
    return original(controller, req, *args, **kwargs)
