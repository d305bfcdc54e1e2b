"""``assign_req_to_token_pool_cpu``: write newly allocated KV slots into ``req_to_token``."""

import torch

from sgl_kernel._ragged import ragged_ranges


def assign_req_to_token_pool_cpu(
    req_pool_indices: torch.Tensor,
    req_to_token: torch.Tensor,
    start_offset: torch.Tensor,
    end_offset: torch.Tensor,
    out_cache_loc: torch.Tensor,
    pool_len: int,
) -> None:
    """``req_to_token[req_pool_indices[i], start[i]:end[i]] = `` request i's block of
    ``out_cache_loc`` (blocks packed back to back, in batch order). In place."""
    if req_pool_indices.numel() == 0:
        return
    ranges = ragged_ranges(start_offset, end_offset)
    rows = req_pool_indices.reshape(-1).long().take(ranges.request)
    # take/put_ index the logical row-major order; pool_len is req_to_token's row width.
    values = out_cache_loc.take(ranges.packed).to(req_to_token.dtype)
    req_to_token.put_(rows * pool_len + ranges.column, values)
