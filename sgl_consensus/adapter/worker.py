"""The consensus speculative worker: NGRAM's verify path with consensus drafts as the draft source.

Per decode step, data flows one way: the batch's newly committed tokens go into the drafter's
indices (``RequestTracker.sync``), the drafter proposes one tree per request, and SGLang's NGRAM
machinery (inherited from ``NGRAMWorker``) verifies the trees in one TARGET_VERIFY forward and
commits the accepted tokens. On CPU the verify step samples losslessly (``adapter.verify``).

``CONSENSUS_DRAFTER=ngram_corpus`` keeps SGLang's own NgramCorpus as the draft source under this
worker's verification, so drafters can be compared under identical verification.
"""

from __future__ import annotations

import logging
import time

import numpy as np
from sglang.srt.speculative.ngram_worker import NGRAMWorker

from sgl_consensus.adapter.metrics import DraftMetrics
from sgl_consensus.adapter.request_tracker import RequestTracker
from sgl_consensus.grouping import SiblingGrouper
from sgl_consensus.settings import WorkerSettings, load_settings

logger = logging.getLogger(__name__)


def make_drafter(settings: WorkerSettings, num_draft_tokens: int):
    if settings.drafter == "prompt_lookup":
        from sgl_consensus.drafting.prompt_lookup import PromptLookupDrafter

        return PromptLookupDrafter(num_draft_tokens=num_draft_tokens)
    from sgl_consensus.drafting import ConsensusDrafter

    return ConsensusDrafter(settings.draft_config(num_draft_tokens))


class ConsensusWorker(NGRAMWorker):
    def __init__(self, server_args, gpu_id, nccl_port, target_worker):
        super().__init__(server_args, gpu_id, nccl_port, target_worker)
        self.settings = load_settings()
        self._use_ngram_corpus = self.settings.drafter == "ngram_corpus"
        self.tracker = RequestTracker(
            None if self._use_ngram_corpus else make_drafter(self.settings, self.draft_token_num),
            SiblingGrouper(self.settings.grouping),
        )
        self.metrics = DraftMetrics(self.settings.log_interval_s)
        # SGLang verifies sampled requests greedily on CPU; ours must stay lossless there.
        self._cpu_lossless = str(self.device).startswith("cpu")
        logger.info("consensus worker: drafter=%s, grouping=%s, %d draft tokens",
                    self.settings.drafter, self.settings.grouping.enabled, self.draft_token_num)

    def forward_batch_generation(self, batch, *args, **kwargs):
        self._step_report = None
        if self._cpu_lossless:
            from sgl_consensus.adapter.verify import cpu_lossless_verification

            with cpu_lossless_verification():
                result = super().forward_batch_generation(batch, *args, **kwargs)
        else:
            result = super().forward_batch_generation(batch, *args, **kwargs)
        self._attach_step_report(result)
        return result

    def _attach_step_report(self, result) -> None:
        """Per-request draft info into SGLang's ``customized_info``: it reaches each request's
        ``meta_info`` as one entry per verify step (``consensus_draft_nodes`` = [from siblings,
        from the global corpus, from own history], ``consensus_draft_ms`` = the step's drafting time)."""
        report, logits_output = self._step_report, getattr(result, "logits_output", None)
        if report is None or logits_output is None:
            return
        info = dict(logits_output.customized_info or {})
        info.update(report)
        logits_output.customized_info = info

    # -- NGRAMWorker hooks -------------------------------------------------------------------
    def _prepare_draft_tokens(self, batch) -> tuple[np.ndarray, np.ndarray]:
        start = time.perf_counter()
        if self._use_ngram_corpus:
            tokens, mask = super()._prepare_draft_tokens(batch)
            self.metrics.record_step(len(batch.reqs), time.perf_counter() - start, None)
            return tokens, mask
        drafter = self.tracker.drafter
        rids = self.tracker.sync(batch.reqs, self._pending_accepted_tokens(batch))
        tokens, mask = drafter.propose(rids)
        seconds = time.perf_counter() - start
        sources = drafter.last_proposal_sources()
        self.metrics.record_step(len(rids), seconds, sources, self.draft_token_num)
        self._step_report = {
            "consensus_draft_ms": [round(1000 * seconds, 3)] * len(rids),
            "consensus_draft_nodes": [list(row) for row in sources],
        }
        return tokens.reshape(-1), mask.reshape(-1)

    def _update_ngram_corpus(self, batch) -> None:
        if self._use_ngram_corpus:
            super()._update_ngram_corpus(batch)
        # Our indices are updated from the committed tokens at the next draft step.

    def consensus_state(self) -> dict:
        """Drafter stats and draft metrics; finished requests are pruned first so counts are current."""
        self.tracker.prune_finished()
        state = {"drafter": self.settings.drafter, "tracked_requests": len(self.tracker),
                 "live_prefix_clusters": self.tracker.grouper.live_clusters(), **self.metrics.snapshot()}
        if self.tracker.drafter is not None:
            state["drafter_stats"] = self.tracker.drafter.stats()
        return state

    def clear_cache_pool(self):
        super().clear_cache_pool()
        self.tracker.reset()

    # -- helpers -----------------------------------------------------------------------------
    def _pending_accepted_tokens(self, batch) -> list[list[int]] | None:
        """Tokens accepted last step but not yet in ``req.output_ids`` (overlap scheduling only)."""
        if not self.enable_overlap or batch.grammar_needs_sync():
            return None
        accept_tokens = batch.spec_info.accept_tokens.cpu().tolist()
        accept_lens = batch.spec_info.accept_lens.cpu().tolist()
        stride = self.draft_token_num
        return [accept_tokens[i * stride : i * stride + n] for i, n in enumerate(accept_lens)]
