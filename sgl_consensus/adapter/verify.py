"""Verification glue: exact sampled verification wherever SGLang's own would not be.

``NGRAMWorker.forward_batch_generation`` calls SGLang's ``eagle_sample``. It is not exact for
sampled requests in two cases: on CPU it verifies every request greedily, and on CUDA its tree
sampling renormalises top-k, then top-p separately and ignores min_p, unlike plain decoding (which
applies top-k, top-p and min_p to the original distribution at once). For those batches
(:func:`needs_exact_verification`) the worker runs the step inside :func:`exact_verification`,
where :func:`lossless_verify` stands in: all-greedy batches still go to SGLang's own function;
batches with sampled requests get SGLang's logit adjustments (penalties, logit bias, grammar
mask), one target sample per draft node from the exact plain-decoding distribution (plain torch,
any device), and SGLang's own tree walk (``verify_tree_greedy_func``) over those samples. Greedy
requests in a mixed batch have ``top_k = 1`` and so are walked on their argmax.
"""

from __future__ import annotations

import contextlib

import torch
from sglang.kernels.ops.speculative.spec_tree import verify_tree_greedy_func
from sglang.srt.sampling.penaltylib.repetition_penalty import apply_scaling_penalties
from sglang.srt.speculative import ngram_worker

from sgl_consensus.cpu.sampling_verify import sample_tree_targets

_sglang_eagle_sample = ngram_worker.eagle_sample


def _adjust_logits(logits: torch.Tensor, info, num_draft: int, grammar_mask) -> None:
    """The same in-place adjustments SGLang applies before verification, per draft node."""
    if info.acc_additive_penalties is not None:
        logits.add_(torch.repeat_interleave(info.acc_additive_penalties, num_draft, dim=0))
    if info.acc_scaling_penalties is not None:
        apply_scaling_penalties(logits, torch.repeat_interleave(info.acc_scaling_penalties, num_draft, dim=0))
    if info.logit_bias is not None:
        logits.add_(torch.repeat_interleave(info.logit_bias, num_draft, dim=0))
    if grammar_mask is not None:
        grammar_mask.apply(logits)


def lossless_verify(verify_input, batch, logits_output, grammar_mask=None, **kwargs):
    info = batch.sampling_info
    if batch.forward_mode.is_idle() or info.is_all_greedy:
        return _sglang_eagle_sample(verify_input, batch, logits_output, grammar_mask, **kwargs)
    watermark = kwargs.get("watermark_state")
    # Refused at start (spec_algo.handle_server_args): --enable-watermark, --enable-deterministic-inference.
    assert not (watermark is not None and info.has_watermark_candidates) and info.sampling_seed is None

    bs, n = len(batch.seq_lens), verify_input.draft_token_num
    logits = logits_output.next_token_logits
    _adjust_logits(logits, info, n, grammar_mask)
    filters = info.need_top_k_sampling or info.need_top_p_sampling or info.need_min_p_sampling
    targets = sample_tree_targets(
        logits, info.temperatures, info.top_ks if filters else None, info.top_ps,
        info.min_ps if info.need_min_p_sampling else None, n,
    )
    predict = torch.zeros(bs * n, dtype=torch.int32, device=logits.device)
    accept_index = torch.full((bs, verify_input.max_tree_depth), -1, dtype=torch.int32, device=logits.device)
    num_correct = torch.empty((bs,), dtype=torch.int32, device=logits.device)
    predict, accept_index, num_correct = verify_tree_greedy_func(
        predicts=predict,
        accept_index=accept_index,
        accept_token_num=num_correct,
        candidates=verify_input.draft_token.reshape(bs, n),
        retrieve_index=verify_input.retrieve_index,
        retrieve_next_token=verify_input.retrieve_next_token,
        retrieve_next_sibling=verify_input.retrieve_next_sibling,
        target_predict=targets,
        topk=verify_input.tree_topk,
    )
    return predict, num_correct + 1, accept_index


def committed_logprobs(logits: torch.Tensor, predict: torch.Tensor, accept_index: torch.Tensor,
                       temperatures: torch.Tensor) -> torch.Tensor:
    """Log-probability of each token a verify step committed, under the temperature-scaled target
    distribution it was drawn from (the logits SGLang's sampler saw, divided by the request's
    temperature; top-k/top-p truncation left out): a gather over the verify's own logits, no
    forward. ``accept_index`` is ``(bs, depth)`` with -1 past each request's accepted path; the
    result has the same shape, NaN there. Device-side only: no host sync."""
    bs = accept_index.shape[0]
    nodes = accept_index.long().clamp(min=0).reshape(-1)
    rows = logits.index_select(0, nodes).float()
    rows = rows / temperatures.reshape(bs, 1).float().repeat_interleave(accept_index.shape[1], dim=0)
    tokens = predict.long().index_select(0, nodes).unsqueeze(1)
    logprobs = (rows.gather(1, tokens).squeeze(1) - torch.logsumexp(rows, dim=1)).reshape(accept_index.shape)
    return logprobs.masked_fill(accept_index < 0, float("nan"))


def top_successors(logits: torch.Tensor, temperatures: torch.Tensor, width: int, k: int
                   ) -> tuple[torch.Tensor, torch.Tensor]:
    """Per verified node, the target's ``k`` most likely next tokens and their probabilities under
    the temperature-scaled distribution: ``(bs * width, k)`` each (device-side, no sync)."""
    rows = logits.float() / temperatures.reshape(-1, 1).float().repeat_interleave(width, dim=0)
    top, tokens = torch.topk(rows, k, dim=1)
    return tokens, torch.exp(top - torch.logsumexp(rows, dim=1, keepdim=True))


@contextlib.contextmanager
def recording_committed_logprobs(sink: list, successors_k: int = 0):
    """Within this block, every verify step NGRAM runs (stock or exact) also appends
    ``(logprobs, accept_lens, successors)`` of its committed tokens to ``sink`` (device tensors);
    ``successors``: :func:`top_successors` of every node when ``successors_k`` > 0, else None."""
    sample = ngram_worker.eagle_sample

    def recorded(verify_input, batch, logits_output, grammar_mask=None, **kwargs):
        logits = logits_output.next_token_logits
        temperatures = batch.sampling_info.temperatures
        # Before sampling: SGLang's sampler may adjust the logits in place (penalties, bias, grammar).
        successors = (top_successors(logits, temperatures, verify_input.draft_token_num, successors_k)
                      if successors_k else None)
        predict, accept_lens, accept_index = sample(verify_input, batch, logits_output, grammar_mask, **kwargs)
        if accept_index.numel():
            logprobs = committed_logprobs(logits_output.next_token_logits, predict, accept_index, temperatures)
            sink.append((logprobs, accept_lens, successors))
        return predict, accept_lens, accept_index

    ngram_worker.eagle_sample = recorded
    try:
        yield
    finally:
        ngram_worker.eagle_sample = sample


def needs_exact_verification(info, on_cpu: bool) -> bool:
    """Whether SGLang's verify would not be exact for this batch (host-side flags only: no sync)."""
    if info is None or info.is_all_greedy:
        return False
    return on_cpu or info.need_min_p_sampling or (info.need_top_k_sampling and info.need_top_p_sampling)


@contextlib.contextmanager
def exact_verification():
    """Within this block, NGRAM's verify step (as inherited by our worker) samples exactly."""
    ngram_worker.eagle_sample = lossless_verify
    try:
        yield
    finally:
        ngram_worker.eagle_sample = _sglang_eagle_sample
