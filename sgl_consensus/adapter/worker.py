"""The consensus speculative worker: NGRAM's verify path with consensus drafts as the draft source.

Per step, data flows one way. A prefill step indexes the new requests' prompts right after the
prefill is launched (``RequestTracker.admit``). A decode step: the batch's newly committed tokens
go into the drafter (``RequestTracker.sync``, counted from SGLang's own sequence lengths), the
drafter proposes one tree per request, node 0 of every tree is set to SGLang's last committed token,
and SGLang's NGRAM machinery (inherited from ``NGRAMWorker``) verifies the trees in one
TARGET_VERIFY forward and commits the accepted tokens. After the verify is launched (while the
device computes), requests that left the batch are released and the drafter's background merges
run, and the width policy learns from the last step (``_update_ngram_corpus``, NGRAM's post-verify
hook: ``DraftStep.after_launch``).

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

from sgl_consensus.adaptive import TenantWidthPolicies
from sgl_consensus.adapter.draft_step import DraftStep, StepPlan, VerifyRecord
from sgl_consensus.adapter.exact_trees import detach_duplicate_siblings
from sgl_consensus.adapter.metrics import DraftMetrics
from sgl_consensus.adapter.plain_decode import can_decode_plainly, decode_plainly
from sgl_consensus.adapter.tp_sync import TensorParallelSync
from sgl_consensus.adapter.request_tracker import RelayedRows, RequestTracker
from sgl_consensus.adapter.verify import (
    exact_verification,
    needs_exact_verification,
    recording_committed_logprobs,
)
from sgl_consensus.grouping import SiblingGrouper
from sgl_consensus.settings import WorkerSettings, load_settings

logger = logging.getLogger(__name__)


def make_drafter(settings: WorkerSettings, num_draft_tokens: int):
    if settings.drafter == "prompt_lookup":
        from sgl_consensus.drafting.prompt_lookup import PromptLookupDrafter

        return PromptLookupDrafter(num_draft_tokens=num_draft_tokens)
    from sgl_consensus.drafting import ConsensusDrafter

    return ConsensusDrafter(settings.draft_config(num_draft_tokens), core=settings.core)


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
        # Width per step: drafters that rank their candidates (the consensus drafter) get a width
        # chosen every step; the comparison drafters verify at the full width.
        self._max_width = self.draft_token_num
        drafter = self.tracker.drafter
        ranked = drafter is not None and hasattr(drafter, "propose_candidates")
        self.widths = self.settings.widths(self._max_width) if ranked else (self._max_width,)
        self.policy = self._new_policy() if ranked else None
        self._staged: tuple[np.ndarray, np.ndarray] | None = None  # this step's trees, drafted up front
        # The target's probability of every committed token feeds the drafter's edge weights
        # (alpha * p + (1 - alpha) * freq): recorded at each verify, handed over at the next sync.
        self._records_probs = ranked and drafter.config.alpha > 0
        # Model-informed nodes: the target's top successors at every verified node, for the drafter.
        self._successors_k = drafter.config.model_topk if ranked and drafter.config.model_weight > 0 else 0
        self._verify_sink: list = []
        # The last verify's record, on the device until the next step: rids, committed tokens and
        # their counts, logprobs and successors (when recorded), node tokens, node counts.
        self._verified: tuple | None = None
        # Whether that verify was the last forward: only then are its token rows each request's
        # newest committed tokens (the sync's array path); after a prefill its counts and logprobs
        # still pair with the newest tokens, request by request.
        self._verified_is_last = False
        # Width-1 steps as plain decode forwards (no verify machinery) where that is cheaper.
        self._decodes_plainly = ranked and 1 in self.widths and self.settings.decodes_plainly(self._on_cpu)
        self.plain_steps = 0
        # Tensor parallel: every rank verifies rank 0's width (and, when asked, checks its trees).
        # (Nothing to agree on with one allowed width and no tree check.)
        tp = TensorParallelSync(self.settings.check_tp)
        self._tp = tp if tp.active and (len(self.widths) > 1 or tp.check_trees) else None
        self.step = DraftStep(self.tracker, self.policy, self.metrics, self._tp) if ranked else None
        logger.info("consensus worker: drafter=%s, grouping=%s, isolation=%s, %d draft tokens, widths %s",
                    self.settings.drafter, self.settings.grouping.enabled, self.settings.isolation,
                    self.draft_token_num, list(self.widths))

    def _new_policy(self) -> TenantWidthPolicies:
        return TenantWidthPolicies(self.widths, cycle=self.settings.adaptive == "cycle")

    def alloc_memory_pool(self, **kwargs):
        super().alloc_memory_pool(**kwargs)
        # Per verify width, views of NGRAM's preallocated buffers shaped for that width.
        self._width_buffers = {w: self._buffer_views(w) for w in self.widths}

    def _buffer_views(self, width: int) -> dict[str, list]:
        sizes = range(self.max_batch_size + 1)
        rows = lambda buf: [buf.view(-1)[: bs * width].view(bs, width) for bs in sizes]  # noqa: E731
        return {
            "draft_tokens_batch": [self.draft_tokens[: bs * width] for bs in sizes],
            "tree_mask_batch": [self.tree_mask[: bs * width * width] for bs in sizes],
            "positions_batch": [self.positions[: bs * width] for bs in sizes],
            "retrieve_indexes_batch": rows(self.retrieve_indexes),
            "retrieve_next_token_batch": rows(self.retrieve_next_token),
            "retrieve_next_sibling_batch": rows(self.retrieve_next_sibling),
        }

    def forward_batch_generation(self, batch, on_publish=None, pp_proxy_tensors=None, **kwargs):
        self._step_report: StepPlan | dict | None = None  # this step's meta_info entries (a plan builds them)
        exact = needs_exact_verification(batch.sampling_info, self._on_cpu)
        ranked_decode = self.policy is not None and batch.forward_mode.is_decode() and len(batch.reqs) > 0
        width = self._draft(batch) if ranked_decode else self._max_width
        if not ranked_decode and self.step is not None:
            self.step.forget_timing()  # a prefill in between: the next step's period is not a verify's cost
            self._verified_is_last = False  # a request may have been retracted and re-prefilled meanwhile
        record = (self._records_probs or self._successors_k) and ranked_decode
        recording = recording_committed_logprobs(self._verify_sink, self._successors_k) if record else \
            contextlib.nullcontext()
        plain = ranked_decode and width == 1 and self._decodes_plainly and can_decode_plainly(batch, pp_proxy_tensors)
        if plain:
            result = self._decode_plainly(batch, record, on_publish)
        else:
            with exact_verification() if exact else contextlib.nullcontext(), self._at_width(width), recording:
                result = super().forward_batch_generation(batch, on_publish, pp_proxy_tensors, **kwargs)
        if width != self._max_width and not plain:  # a plain step's rows already have the full width
            self._relay_at_max_width(result, width)
        if ranked_decode:
            self._keep_verified(result, width)
        if not batch.forward_mode.is_decode() and self.tracker.drafter is not None:
            self.tracker.admit(batch.reqs)  # the prefill is launched: index the prompts meanwhile
        self._attach_step_report(result)
        return result

    def _decode_plainly(self, batch, record: bool, on_publish):
        """A width-1 step without verify machinery (``adapter.plain_decode``)."""
        tokens = self._staged_tokens
        self._staged = None
        roots = torch.as_tensor(tokens[:, 0], device=self.device).to(self.draft_tokens.dtype)
        result, recorded = decode_plainly(self, batch, roots, self._max_width, on_publish, record,
                                          self._successors_k if record else 0)
        if recorded is not None:
            self._verify_sink.append(recorded)
        self.plain_steps += 1
        self._update_ngram_corpus(batch)
        return result

    # -- one decode step: inputs from SGLang -> adapter.draft_step ---------------------------
    def _draft(self, batch) -> int:
        start = time.perf_counter()
        seq_lens = self._seq_lens(batch)
        pending = self._pending_accepted_tokens(batch)  # waits for the last step's accepted tokens
        plan = self.step.plan(batch.reqs, seq_lens, pending, self._take_verified(), start)
        self._staged = (plan.tokens.reshape(-1), plan.mask.reshape(-1))
        self._staged_tokens = plan.tokens
        self._step_report = plan  # its `report` is built after the verify's launch
        return plan.width

    def _keep_verified(self, result, width: int) -> None:
        """This step's record for the next step's drafting (device tensors; copied when taken).
        The committed tokens are the ones SGLang relays to the next step (at the full width)."""
        logprobs = successors = None
        if self._verify_sink:
            logprobs, _, successors = self._verify_sink.pop()
            self._verify_sink.clear()
        relay = result.next_draft_input
        proposal = self.step.proposal
        committed = None
        if relay is not None:  # one flat int64 tensor, the rows and then their counts (one copy later)
            tokens = relay.accept_tokens.reshape(-1)
            committed = torch.cat([tokens, relay.accept_lens.reshape(-1).to(tokens.dtype)]).to(torch.int64)
        self._verified_is_last = True
        self._verified = (proposal.rids, committed, logprobs if self._records_probs else None, successors,
                          self._staged_tokens, np.minimum(proposal.candidates.lengths, width).tolist())

    def _take_verified(self) -> VerifyRecord | None:
        """The last verify's records on the host (small copies, after the pending-token copy has
        already waited for that step)."""
        verified, self._verified = self._verified, None
        if verified is None:
            return None
        rids, committed, logprobs, successors, node_tokens, counts = verified
        tokens = accept_lens = None
        if committed is not None:
            flat = committed.numpy() if committed.is_cpu else committed.cpu().numpy()
            bs = len(rids)
            tokens, accept_lens = flat[:-bs].reshape(bs, -1), flat[-bs:]  # contiguous views
            if not self._verified_is_last:
                tokens = None
        if logprobs is not None:
            logprobs = logprobs.numpy() if logprobs.is_cpu and logprobs.dtype == torch.float32 else \
                logprobs.float().cpu().numpy()
        if successors is not None:
            successors = (successors[0].cpu().numpy(), successors[1].float().cpu().numpy())
        return VerifyRecord(rids, logprobs, accept_lens, successors, node_tokens, counts, tokens)

    @contextlib.contextmanager
    def _at_width(self, width: int):
        """NGRAM's step code reads the width and its buffers from the worker: set them for this step."""
        if width == self._max_width:
            yield
            return
        saved = {name: getattr(self, name) for name in self._width_buffers[width]}
        for name, views in self._width_buffers[width].items():
            setattr(self, name, views)
        self.draft_token_num = self.speculative_num_draft_tokens = width
        try:
            yield
        finally:
            for name, views in saved.items():
                setattr(self, name, views)
            self.draft_token_num = self.speculative_num_draft_tokens = self._max_width

    def _relay_at_max_width(self, result, width: int) -> None:
        """The next step receives the accepted tokens through SGLang's FutureMap, whose rows have
        the full width: pad this step's rows (the scheduler's own copy keeps this step's stride)."""
        relay = result.next_draft_input
        if relay is None or relay.accept_tokens is None:
            return
        rows = relay.accept_tokens.reshape(-1, width)
        padded = rows.new_zeros((rows.shape[0], self._max_width))
        padded[:, :width] = rows
        relay.accept_tokens = padded.reshape(-1)
        relay.draft_token_num = self._max_width

    def _attach_step_report(self, result) -> None:
        """Per-request draft info into SGLang's ``customized_info``: it reaches each request's
        ``meta_info`` as one entry per verify step (``consensus_draft_nodes`` = [from siblings,
        from the global corpus, from own history], ``consensus_draft_ms`` = the step's drafting time)."""
        report, logits_output = self._step_report, getattr(result, "logits_output", None)
        if report is None or logits_output is None:
            return
        info = dict(logits_output.customized_info or {})
        info.update(report.report if isinstance(report, StepPlan) else report)
        logits_output.customized_info = info

    # -- NGRAMWorker hooks -------------------------------------------------------------------
    def _prepare_draft_tokens(self, batch) -> tuple[np.ndarray, np.ndarray]:
        if self._staged is not None:
            staged, self._staged = self._staged, None
            return staged
        start = time.perf_counter()
        if self._use_ngram_corpus:
            tokens, mask = super()._prepare_draft_tokens(batch)
            tokens, mask = detach_duplicate_siblings(tokens, mask, self.draft_token_num)
            self.metrics.record_step(len(batch.reqs), time.perf_counter() - start, None, self.draft_token_num)
            self._step_report = {"consensus_width": [self.draft_token_num] * len(batch.reqs)}
            return tokens, mask
        drafter = self.tracker.drafter
        rids, roots = self.tracker.sync(batch.reqs, self._seq_lens(batch), self._pending_accepted_tokens(batch))
        tokens, mask = drafter.propose(rids)  # a drafter without ranked candidates: the full width
        tokens[:, 0] = roots  # node 0 is the verify input: always SGLang's last committed token
        seconds = time.perf_counter() - start
        sources = drafter.last_proposal_sources()
        self.metrics.record_step(len(rids), seconds, sources, self.draft_token_num)
        self.metrics.root_resyncs = self.tracker.root_resyncs
        self._step_report = {
            "consensus_draft_ms": [round(1000 * seconds, 3)] * len(rids),
            "consensus_draft_nodes": [list(row) for row in sources],
            "consensus_width": [self.draft_token_num] * len(rids),
        }
        return tokens.reshape(-1), mask.reshape(-1)

    def _update_ngram_corpus(self, batch) -> None:
        """NGRAM's post-verify hook: runs after the verify is launched, while the device computes."""
        if self._use_ngram_corpus:
            super()._update_ngram_corpus(batch)
            return
        if self.step is not None:  # runs after decode steps only (verify or plain)
            self.step.after_launch(batch.reqs)  # the policy's learning, departures, merges
            return
        self.tracker.release_departed(batch.reqs)
        self.tracker.drafter.maintain()

    def consensus_state(self) -> dict:
        """Drafter stats and draft metrics; finished requests are pruned first so counts are current."""
        self.tracker.prune_finished()
        state = {"drafter": self.settings.drafter, "isolation": self.settings.isolation,
                 "tracked_requests": len(self.tracker),
                 "live_prefix_clusters": self.tracker.grouper.live_clusters(), "plain_decode_steps": self.plain_steps,
                 "tp_steps_checked": 0, **({} if self._tp is None else self._tp.report()),
                 **self.metrics.snapshot()}
        if self.tracker.drafter is not None:
            state["drafter_stats"] = self.tracker.drafter.stats()
            core = getattr(self.tracker.drafter, "core", None)
            if core is not None:
                state["draft_core"] = core.name
                calls = getattr(core, "calls", None)  # the native core's: fastcall or ctypes
                if calls is not None:
                    state["draft_core_calls"] = calls
                # the drafting step's time spent inside its data plane (the rest is the Python around it)
                steps = max(self.metrics.steps, 1)
                state["core_ms_per_step"] = {work: round(1000 * seconds / steps, 4)
                                             for work, (seconds, _) in core.busy().items()}
        if self.policy is not None:
            state["adaptive"] = {"mode": self.settings.adaptive, **self.policy.report()}
        return state

    def clear_cache_pool(self):
        super().clear_cache_pool()
        self.tracker.reset()
        if self.policy is not None:  # a flush forgets what was learned, as the corpora do
            self.policy = self._new_policy()
            self.step.reset(self.policy)
        self._verified = None

    # -- helpers -----------------------------------------------------------------------------
    def _uses_pending(self, batch) -> bool:
        return self.enable_overlap and not batch.grammar_needs_sync()

    @staticmethod
    def _seq_lens(batch) -> list[int]:
        lens = batch.seq_lens_cpu if batch.seq_lens_cpu is not None else batch.seq_lens
        return lens.tolist()  # one call (in the server each NumPy or torch call costs cold-cache microseconds)

    def _pending_accepted_tokens(self, batch) -> RelayedRows | None:
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
        values = host.numpy()
        bs = len(batch.reqs)
        return RelayedRows(values[: bs * stride], values[bs * stride:], stride)
