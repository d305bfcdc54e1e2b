"""The consensus speculative worker: NGRAM's verify path with consensus drafts as the draft source.

Per step, data flows one way. A prefill step indexes the new requests' prompts right after the
prefill is launched (``RequestTracker.admit``). A decode step: the batch's newly committed tokens
go into the drafter (``RequestTracker.sync``, counted from SGLang's own sequence lengths), the
drafter proposes one tree per request, node 0 of every tree is set to SGLang's last committed token,
and SGLang's NGRAM machinery (inherited from ``NGRAMWorker``) verifies the trees in one
TARGET_VERIFY forward and commits the accepted tokens. After the verify is launched (while the
device computes), requests that left the batch are released and the drafter's background merges
run (``_update_ngram_corpus``, NGRAM's post-verify hook).

Verification is exact on every device (``adapter.verify``): sampled requests on CPU, and on CUDA the
batches whose sampling parameters SGLang's CUDA verify gets wrong (top-k with top-p, min_p), go
through the project's exact sampler; trees never hold two reachable siblings with one token.

``CONSENSUS_DRAFTER=ngram_corpus`` keeps SGLang's own NgramCorpus as the draft source under this
worker's verification, so drafters can be compared under identical verification.
"""

from __future__ import annotations

import contextlib
import logging
import time

import numpy as np
import torch
from sglang.srt.speculative import ngram_worker
from sglang.srt.speculative.ngram_worker import NGRAMWorker

from sgl_consensus.adapter.exact_trees import detach_duplicate_siblings
from sgl_consensus.adapter.metrics import DraftMetrics
from sgl_consensus.adapter.request_tracker import RequestTracker, pending_rows
from sgl_consensus.adapter.verify import exact_verification, needs_exact_verification
from sgl_consensus.grouping import SiblingGrouper
from sgl_consensus.settings import WorkerSettings, load_settings

logger = logging.getLogger(__name__)


def make_drafter(settings: WorkerSettings, num_draft_tokens: int):
    if settings.drafter == "prompt_lookup":
        from sgl_consensus.drafting.prompt_lookup import PromptLookupDrafter

        return PromptLookupDrafter(num_draft_tokens=num_draft_tokens)
    from sgl_consensus.drafting import ConsensusDrafter

    return ConsensusDrafter(settings.draft_config(num_draft_tokens))


class _NoCorpus:
    """Stands in for the NgramCorpus NGRAMWorker builds (a large C++ trie we would never use): every
    method NGRAMWorker calls on it (reset, erase_match_state, ...) does nothing."""

    def __init__(self, *args, **kwargs) -> None:
        pass

    def __getattr__(self, name: str):
        return _nothing


def _nothing(*args, **kwargs) -> None:
    return None


@contextlib.contextmanager
def _without_ngram_corpus(skip: bool):
    if not skip:
        yield
        return
    original = ngram_worker.NgramCorpus
    ngram_worker.NgramCorpus = _NoCorpus
    try:
        yield
    finally:
        ngram_worker.NgramCorpus = original


class ConsensusWorker(NGRAMWorker):
    def __init__(self, server_args, gpu_id, nccl_port, target_worker):
        settings = load_settings()
        with _without_ngram_corpus(settings.drafter != "ngram_corpus"):
            super().__init__(server_args, gpu_id, nccl_port, target_worker)
        self.settings = settings
        self._use_ngram_corpus = self.settings.drafter == "ngram_corpus"
        self.tracker = RequestTracker(
            None if self._use_ngram_corpus else make_drafter(self.settings, self.draft_token_num),
            SiblingGrouper(self.settings.grouping),
        )
        self.metrics = DraftMetrics(self.settings.log_interval_s)
        self._on_cpu = str(self.device).startswith("cpu")
        logger.info("consensus worker: drafter=%s, grouping=%s, isolation=%s, %d draft tokens",
                    self.settings.drafter, self.settings.grouping.enabled, self.settings.isolation,
                    self.draft_token_num)

    def forward_batch_generation(self, batch, *args, **kwargs):
        self._step_report = None
        exact = needs_exact_verification(batch.sampling_info, self._on_cpu)
        with exact_verification() if exact else contextlib.nullcontext():
            result = super().forward_batch_generation(batch, *args, **kwargs)
        if not batch.forward_mode.is_decode() and self.tracker.drafter is not None:
            self.tracker.admit(batch.reqs)  # the prefill is launched: index the prompts meanwhile
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
            tokens, mask = detach_duplicate_siblings(tokens, mask, self.draft_token_num)
            self.metrics.record_step(len(batch.reqs), time.perf_counter() - start, None)
            return tokens, mask
        drafter = self.tracker.drafter
        rids, roots = self.tracker.sync(batch.reqs, self._seq_lens(batch), self._pending_accepted_tokens(batch))
        tokens, mask = drafter.propose(rids)
        tokens[:, 0] = roots  # node 0 is the verify input: always SGLang's last committed token
        seconds = time.perf_counter() - start
        sources = drafter.last_proposal_sources()
        self.metrics.record_step(len(rids), seconds, sources, self.draft_token_num)
        self.metrics.root_resyncs = self.tracker.root_resyncs
        self._step_report = {
            "consensus_draft_ms": [round(1000 * seconds, 3)] * len(rids),
            "consensus_draft_nodes": [list(row) for row in sources],
        }
        return tokens.reshape(-1), mask.reshape(-1)

    def _update_ngram_corpus(self, batch) -> None:
        """NGRAM's post-verify hook: runs after the verify is launched, while the device computes."""
        if self._use_ngram_corpus:
            super()._update_ngram_corpus(batch)
            return
        self.tracker.release_departed(batch.reqs)
        self.tracker.drafter.maintain()

    def consensus_state(self) -> dict:
        """Drafter stats and draft metrics; finished requests are pruned first so counts are current."""
        self.tracker.prune_finished()
        state = {"drafter": self.settings.drafter, "isolation": self.settings.isolation,
                 "tracked_requests": len(self.tracker),
                 "live_prefix_clusters": self.tracker.grouper.live_clusters(), **self.metrics.snapshot()}
        if self.tracker.drafter is not None:
            state["drafter_stats"] = self.tracker.drafter.stats()
        return state

    def clear_cache_pool(self):
        super().clear_cache_pool()
        self.tracker.reset()

    # -- helpers -----------------------------------------------------------------------------
    def _uses_pending(self, batch) -> bool:
        return self.enable_overlap and not batch.grammar_needs_sync()

    @staticmethod
    def _seq_lens(batch) -> list[int]:
        lens = batch.seq_lens_cpu if batch.seq_lens_cpu is not None else batch.seq_lens
        return lens.tolist()

    def _pending_accepted_tokens(self, batch) -> list[list[int]] | None:
        """Tokens accepted last step but not yet in ``req.output_ids`` (overlap scheduling only):
        one device-to-host copy of the relayed tokens and lengths together."""
        if not self._uses_pending(batch):
            return None
        info = batch.spec_info
        stride = info.accept_tokens.numel() // max(len(batch.reqs), 1)
        both = torch.cat([info.accept_tokens.reshape(-1).to(torch.int64), info.accept_lens.reshape(-1).to(torch.int64)])
        host = both.to("cpu", non_blocking=True)
        if host.device != both.device:
            torch.get_device_module(both.device).current_stream().synchronize()
        values = host.tolist()
        bs = len(batch.reqs)
        return pending_rows(values[: bs * stride], values[bs * stride:], stride)
