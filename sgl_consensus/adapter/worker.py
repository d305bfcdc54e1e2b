"""The consensus speculative worker: NGRAM's verify path with our drafters as the draft source.

Per decode step: sync each request's committed tokens into the drafter (index update), propose one
draft tree per request, and hand it to SGLang's NGRAM verify machinery (inherited from
``NGRAMWorker``: TARGET_VERIFY forward, tree verification, KV commit). Requests the scheduler has
finished or aborted are removed from the drafter on the next step.
"""

from __future__ import annotations

import logging
from typing import Hashable

import numpy as np
from sglang.srt.speculative.ngram_worker import NGRAMWorker

from sgl_consensus.adapter.request_tracker import RequestTracker

logger = logging.getLogger(__name__)


class ConsensusWorker(NGRAMWorker):
    def __init__(self, server_args, gpu_id, nccl_port, target_worker):
        super().__init__(server_args, gpu_id, nccl_port, target_worker)
        self.tracker = RequestTracker(self._make_drafter())

    def _make_drafter(self):
        from sgl_consensus.drafting.prompt_lookup import PromptLookupDrafter

        return PromptLookupDrafter(num_draft_tokens=self.draft_token_num)

    # -- NGRAMWorker hooks -------------------------------------------------------------------
    def _prepare_draft_tokens(self, batch) -> tuple[np.ndarray, np.ndarray]:
        pending = self._pending_accepted_tokens(batch)
        rids = self.tracker.sync(batch.reqs, pending)
        tokens, mask = self.tracker.drafter.propose(rids)
        return tokens.reshape(-1), mask.reshape(-1)

    def _update_ngram_corpus(self, batch) -> None:
        # Our index is updated from the requests' committed tokens at the next draft step.
        pass

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
