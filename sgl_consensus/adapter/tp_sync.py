"""One draft decision per step for every tensor-parallel rank.

Under ``--tp-size N`` every TP rank runs its own consensus worker, and the sharded verify forward
combines their inputs: if two ranks verified different trees (or widths), the outputs would be
corrupt. The drafter is deterministic (same committed tokens in, same trees out; no clocks, no
randomness), but the width policy's cost model is fitted to each rank's own wall-clock step times,
so the ranks would choose different widths. :class:`TensorParallelSync` makes rank 0's width every
rank's (one small broadcast on the TP group's CPU group per decode step) and, with
``CONSENSUS_CHECK_TP=1``, compares a hash of every rank's trees each step and stops the server
with a clear error on the first divergence (a debug guard: one all-gather per step).

Drafting on every rank rather than once on rank 0 and broadcasting the trees: the ranks draft in
parallel, so a broadcast could only add its latency to every step. ``broadcast_ms_per_step`` (in
``/server_info``) is that latency, measured on the width broadcast, to compare with
``draft_ms_per_step``.
"""

from __future__ import annotations

import hashlib
import time

import numpy as np
import torch


class TensorParallelDivergence(RuntimeError):
    """Two tensor-parallel ranks drafted different trees for one step."""


class TensorParallelSync:
    def __init__(self, check_trees: bool = False) -> None:
        from sglang.srt.distributed.parallel_state import get_tp_group

        self.group = get_tp_group()
        self.check_trees = check_trees
        self.steps_checked = 0
        self.broadcasts = 0
        self.broadcast_seconds = 0.0

    @property
    def active(self) -> bool:
        return self.group.world_size > 1

    def agree_width(self, width: int) -> int:
        """Rank 0's width, on every rank."""
        start = time.perf_counter()
        value = torch.tensor([width], dtype=torch.int64)
        torch.distributed.broadcast(value, src=self.group.ranks[0], group=self.group.cpu_group)
        self.broadcasts += 1
        self.broadcast_seconds += time.perf_counter() - start
        return int(value.item())

    def report(self) -> dict[str, float]:
        return {"tp_steps_checked": self.steps_checked, "tp_width_broadcasts": self.broadcasts,
                "tp_broadcast_ms_per_step": 1000 * self.broadcast_seconds / max(self.broadcasts, 1)}

    def check(self, tokens: np.ndarray, mask: np.ndarray) -> None:
        """Debug guard: every rank's trees of this step hash the same."""
        if not self.check_trees:
            return
        digest = hashlib.blake2b(np.ascontiguousarray(tokens).tobytes() + np.ascontiguousarray(mask).tobytes(),
                                 digest_size=8).hexdigest()
        digests = self.group.all_gather_object(digest)
        self.steps_checked += 1
        if len(set(digests)) > 1:
            raise TensorParallelDivergence(
                f"tensor-parallel ranks drafted different trees at checked step {self.steps_checked}: {digests}")
