"""One draft decision per step for every tensor-parallel rank.

Under ``--tp-size N`` every TP rank runs its own consensus worker, and the sharded verify forward
combines their inputs: if two ranks verified different trees (or widths), the outputs would be
corrupt. The drafter is deterministic (same committed tokens in, same trees out; no clocks, no
randomness), but the width policy's cost model is fitted to each rank's own wall-clock step times,
so the ranks would choose different widths. :class:`TensorParallelSync` makes rank 0's width every
rank's (one small broadcast on the TP group's CPU group per decode step) and, with
``CONSENSUS_CHECK_TP=1``, compares a hash of every rank's trees each step and stops the server
with a clear error on the first divergence (a debug guard: one all-gather per step).
"""

from __future__ import annotations

import hashlib

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

    @property
    def active(self) -> bool:
        return self.group.world_size > 1

    def agree_width(self, width: int) -> int:
        """Rank 0's width, on every rank."""
        value = torch.tensor([width], dtype=torch.int64)
        torch.distributed.broadcast(value, src=self.group.ranks[0], group=self.group.cpu_group)
        return int(value.item())

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
