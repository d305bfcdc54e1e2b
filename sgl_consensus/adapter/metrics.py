"""Draft-side metrics of the consensus worker: where draft nodes came from, and drafting time.

SGLang already reports ``spec_accept_length`` / ``spec_verify_ct`` per request in ``meta_info``.
This adds what only the drafter knows, as cumulative counters and a periodic log line:
draft nodes from siblings / the global corpus / the request's own history, padding, and the
time spent drafting per step.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Sequence
from dataclasses import dataclass, field

import numpy as np

logger = logging.getLogger("sgl_consensus.metrics")

SOURCE_KEYS = ("draft_nodes_sibling", "draft_nodes_global", "draft_nodes_own", "padding_nodes")
# Where a draft step's time goes, in the order of the step (adapter/draft_step.py, `plan`): the
# verify waits for these.
DRAFT_PHASES = (
    "inputs",  # SGLang's committed lengths and tokens of the batch (host copies), the last verify's record
    "sync",  # the tracker brings the drafter up to date (extends, adds), the target's successors too
    "propose",  # the drafter's candidates for the batch
    "width",  # the width policy's choice
    "layout",  # rows and masks at that width
)
# What runs after the verify is launched, while the device computes (`DraftStep.after_launch`):
AFTER_LAUNCH_PHASES = (
    "learn",  # the last step's verify outcomes to the calibration
    "cost",  # the last step's measured seconds to the cost model (and its periodic refit)
    "maintain",  # departures, the drafter's background merges
)


@dataclass
class DraftMetrics:
    log_interval_s: float = 30.0
    steps: int = 0
    request_steps: int = 0
    draft_seconds: float = 0.0
    root_resyncs: int = 0  # drafter views rebuilt because node 0 disagreed with SGLang's last token
    common_syncs: int = 0  # steps synced from the verify's committed-token rows (the rest: request by request)
    tokens_with_probs: int = 0  # committed tokens the drafter got with the target's probability
    mean_committed_prob: float = 0.0  # their mean probability under the target
    verified_nodes: int = 0  # tree nodes verified (width x batch), root included
    model_nodes: int = 0  # model-informed draft nodes (the target's earlier predictions)
    nodes: dict[str, int] = field(default_factory=lambda: dict.fromkeys(SOURCE_KEYS, 0))
    phase_seconds: list[float] = field(default_factory=lambda: [0.0] * len(DRAFT_PHASES))
    after_launch_seconds: list[float] = field(default_factory=lambda: [0.0] * len(AFTER_LAUNCH_PHASES))
    _last_log: float = field(default_factory=time.monotonic)

    def record_step(self, batch_size: int, seconds: float,
                    sources: np.ndarray | Sequence[Sequence[int]] | None = None, tree_nodes: int = 0) -> None:
        """One draft step; ``sources``: per request its draft-node counts (sibling, global, own) and,
        as a fourth column if known, model-informed nodes (counted apart from the sources)."""
        self.steps += 1
        self.request_steps += batch_size
        self.draft_seconds += seconds
        self.verified_nodes += batch_size * tree_nodes
        if sources is not None and len(sources):
            counts = np.asarray(sources, dtype=np.int64).reshape(len(sources), -1).sum(axis=0).tolist()
            sibling, global_, own = counts[:3]
            model = counts[3] if len(counts) > 3 else 0
            nodes = self.nodes
            nodes["draft_nodes_sibling"] += sibling
            nodes["draft_nodes_global"] += global_
            nodes["draft_nodes_own"] += own
            nodes["padding_nodes"] += len(sources) * (tree_nodes - 1) - sibling - global_ - own - model
            self.model_nodes += model
        self._maybe_log()

    def record_phases(self, marks: list[float]) -> None:
        """``marks``: perf_counter at the step's start and at the end of each of DRAFT_PHASES."""
        _accumulate(self.phase_seconds, marks)

    def record_after_launch(self, marks: list[float]) -> None:
        """``marks``: perf_counter at the start of the after-launch work and at the end of each of
        AFTER_LAUNCH_PHASES."""
        _accumulate(self.after_launch_seconds, marks)

    def snapshot(self) -> dict[str, float]:
        drafted = sum(self.nodes[k] for k in SOURCE_KEYS[:3])
        return {
            "steps": self.steps,
            "request_steps": self.request_steps,
            "draft_ms_per_step": 1000 * self.draft_seconds / max(self.steps, 1),
            "draft_ms_per_request_step": 1000 * self.draft_seconds / max(self.request_steps, 1),
            "draft_phase_ms_per_step": {name: round(1000 * seconds / max(self.steps, 1), 4)
                                        for name, seconds in zip(DRAFT_PHASES, self.phase_seconds)},
            "after_launch_ms_per_step": {name: round(1000 * seconds / max(self.steps, 1), 4)
                                         for name, seconds in zip(AFTER_LAUNCH_PHASES, self.after_launch_seconds)},
            "root_resyncs": self.root_resyncs,
            "common_sync_steps": self.common_syncs,
            "tokens_with_probs": self.tokens_with_probs,
            "draft_nodes_model": self.model_nodes,
            "mean_committed_prob": self.mean_committed_prob,
            "mean_width": self.verified_nodes / max(self.request_steps, 1),
            "sibling_fraction": self.nodes["draft_nodes_sibling"] / max(drafted, 1),
            "global_fraction": self.nodes["draft_nodes_global"] / max(drafted, 1),
            "own_fraction": self.nodes["draft_nodes_own"] / max(drafted, 1),
            **self.nodes,
        }

    def _maybe_log(self) -> None:
        if self.log_interval_s <= 0 or time.monotonic() - self._last_log < self.log_interval_s:
            return
        self._last_log = time.monotonic()
        s = self.snapshot()
        logger.info(
            "consensus drafts: %d steps, %.3f ms/step; nodes from siblings %.0f%%, global %.0f%%, own %.0f%%",
            s["steps"], s["draft_ms_per_step"], 100 * s["sibling_fraction"], 100 * s["global_fraction"],
            100 * s["own_fraction"],
        )


def _accumulate(totals: list[float], marks: list[float]) -> None:
    for i in range(len(totals)):
        totals[i] += marks[i + 1] - marks[i]
