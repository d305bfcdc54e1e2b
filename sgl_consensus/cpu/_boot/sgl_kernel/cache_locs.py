"""Speculative-decoding KV slot look-ups: read slots out of ``req_to_token`` into a packed
buffer."""

import torch

from sgl_kernel._ragged import ragged_ranges


def assign_extend_cache_locs_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """Request i's block of ``out_cache_loc`` (blocks packed back to back, in batch order)
    ``= req_to_token[req_pool_indices[i], start[i]:end[i]]``. Other entries are left alone."""
    if req_pool_indices.numel() == 0:
        return
    ranges = ragged_ranges(start_offset, end_offset)
    rows = req_pool_indices.reshape(-1).long().take(ranges.request)
    # take/put_ index the logical row-major order; pool_len is req_to_token's row width.
    values = req_to_token.take(rows * pool_len + ranges.column)
    out_cache_loc.put_(ranges.packed, values.to(out_cache_loc.dtype))


def assign_draft_cache_locs_contiguous_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    seq_lens: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
    topk: int,
    speculative_num_steps: int,
) -> None:
    """``out_cache_loc[i*w:(i+1)*w] = req_to_token[req_pool_indices[i], seq_lens[i]:seq_lens[i]+w]``
    with ``w = topk * speculative_num_steps``."""
    batch_size = seq_lens.numel()
    width = topk * speculative_num_steps
    if batch_size == 0 or width <= 0:
        return
    rows = req_pool_indices.reshape(-1)[:batch_size].long()
    row_starts = rows * pool_len + seq_lens.reshape(-1).long()
    flat_index = row_starts[:, None] + torch.arange(width, device=seq_lens.device)
    values = req_to_token.take(flat_index.reshape(-1))
    out_cache_loc.put_(
        torch.arange(batch_size * width, device=values.device), values.to(out_cache_loc.dtype)
    )
