"""A width-1 step as a plain decode forward, so that choosing no drafts costs what no speculation does.

A root-only TARGET_VERIFY (one node per request) is exact but carries NGRAM's verify machinery:
tree-index reconstruction, the tree sampler, accepted-KV moves. When the width policy picks width 1
for a batch, :func:`decode_plainly` runs SGLang's own DECODE forward and sampler instead, and hands
the scheduler the result in the shape a verify step would (accept length 1, the sampled token in
column 0 of a full-width row), so the next step cannot tell the difference.

KV bookkeeping under speculation: ``seq_lens`` counts the tokens whose KV is cached; the last
committed token (the verify root) is not yet among them and goes in at position ``seq_lens``, in
the slot the scheduler reserved there. A plain decode forward expects ``seq_lens`` to include its
input token, so the forward sees ``seq_lens + 1``; the scheduler's forward isolation restores the
batch afterwards, and the step reports ``seq_lens + 1`` as the new lengths.
"""

from __future__ import annotations

import torch
from sglang.kernels.ops.speculative.cache_locs import assign_extend_cache_locs_func
from sglang.srt.managers.utils import GenerationBatchResult
from sglang.srt.model_executor.forward_batch_info import ForwardBatch, ForwardMode
from sglang.srt.runtime_context import get_exec
from sglang.srt.speculative.ngram_info import NgramVerifyInput
from sglang.srt.speculative.spec_utils import record_stream_for_v2_verify

from sgl_consensus.adapter.verify import top_successors


def can_decode_plainly(batch, pp_proxy_tensors) -> bool:
    """Batches whose width-1 step can run as a plain decode: the verify path owns logprob output,
    grammar masks, pipeline stages and hybrid (mamba) state, so those keep the root-only verify."""
    if pp_proxy_tensors is not None or batch.return_logprob or batch.has_grammar:
        return False
    return not get_exec().mamba.enable_mamba_extra_buffer


def decode_plainly(worker, batch, roots: torch.Tensor, max_width: int, on_publish=None,
                   record: bool = False, successors_k: int = 0):
    """One plain decode step for ``batch`` from its last committed tokens ``roots`` (device, int).

    Returns ``(result, recorded)``: the ``GenerationBatchResult`` a verify step would return, and
    when ``record``, ``(logprobs, accept_lens, successors)`` of the committed tokens for the drafter
    (the shapes ``adapter.verify.recording_committed_logprobs`` records), else None."""
    bs = len(batch.reqs)
    device = worker.device
    record_stream_for_v2_verify(batch, None, torch.get_device_module(device).current_stream())
    seq_lens = batch.seq_lens
    batch.out_cache_loc = assign_extend_cache_locs_func(
        req_pool_indices=batch.req_pool_indices,
        req_to_token=batch.req_to_token_pool.req_to_token,
        start_offset=seq_lens,
        end_offset=seq_lens + 1,
        batch_size=bs,
        draft_token_num=1,
        device=device,
    )
    batch.input_ids = roots
    batch.forward_mode = ForwardMode.DECODE
    batch.spec_info = None
    batch.seq_lens = seq_lens + 1
    if batch.seq_lens_cpu is not None:
        batch.seq_lens_cpu = batch.seq_lens_cpu + 1
        batch.seq_lens_sum = int(batch.seq_lens_cpu.sum())
    elif batch.seq_lens_sum is not None:
        batch.seq_lens_sum += bs

    target = worker.target_worker
    forward_batch = ForwardBatch.init_new(batch, target.model_runner, return_hidden_states_before_norm=False)
    forward = target.forward_batch_generation(None, forward_batch=forward_batch, is_verify=True)
    logits_output = forward.logits_output
    temperatures = forward_batch.sampling_info.temperatures
    if record:  # read before sampling: the sampler may adjust the logits in place
        scaled = logits_output.next_token_logits.float() / temperatures.reshape(-1, 1).float()
        log_norm = torch.logsumexp(scaled, dim=1)
        successors = top_successors(logits_output.next_token_logits, temperatures, 1, successors_k) \
            if successors_k else None
    predict = target.model_runner.sample(logits_output, forward_batch)

    new_seq_lens = seq_lens + 1
    accept_lens = torch.ones(bs, dtype=torch.int32, device=device)
    accept_tokens = torch.zeros(bs, max_width, dtype=torch.int32, device=device)
    accept_tokens[:, 0] = predict
    accept_tokens = accept_tokens.flatten()
    if on_publish is not None:
        on_publish(new_seq_lens)
    result = GenerationBatchResult(
        logits_output=logits_output,
        next_token_ids=accept_tokens,
        can_run_cuda_graph=forward.can_run_cuda_graph,
        accept_lens=accept_lens,
        new_seq_lens=new_seq_lens,
        next_draft_input=NgramVerifyInput(
            draft_token_num=max_width,
            new_seq_lens=new_seq_lens,
            accept_tokens=accept_tokens,
            accept_lens=accept_lens,
        ),
        speculative_num_draft_tokens=max_width,
    )
    batch.forward_mode = ForwardMode.DECODE
    if not record:
        return result, None
    logprobs = (scaled.gather(1, predict.long().unsqueeze(1)).squeeze(1) - log_norm).reshape(bs, 1)
    return result, (logprobs, accept_lens, successors)
