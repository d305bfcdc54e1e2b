"""``rotate_input_ids_cpu``: shift each request's extend tokens left by one and append the new
draft token (multi-layer EAGLE draft input)."""

from typing import Optional

import torch

from sgl_kernel._ragged import ragged_ranges


def rotate_input_ids_cpu(
    input_ids: torch.Tensor,
    extend_start_loc: torch.Tensor,
    extend_seq_lens: torch.Tensor,
    topk_index: torch.Tensor,
    select_index: Optional[torch.Tensor] = None,
) -> None:
    """Per request i with ``s = extend_start_loc[i]``, ``L = extend_seq_lens[i]``, in place:
    ``input_ids[s:s+L-1] = input_ids[s+1:s+L]``, then, if ``L > 0``, the token
    ``topk_index[i]`` goes to ``select_index[i]`` when given, else to ``s+L-1``."""
    batch_size = extend_seq_lens.numel()
    if batch_size == 0:
        return
    starts = extend_start_loc.reshape(-1).long()
    lengths = extend_seq_lens.reshape(-1).long()
    flat_ids = input_ids.view(-1)
    _, shifted, _ = ragged_ranges(starts, starts + (lengths - 1).clamp(min=0))
    flat_ids[shifted] = flat_ids[shifted + 1]
    has_tokens = lengths > 0
    if select_index is not None:
        last = select_index.reshape(-1).long()
    else:
        last = starts + lengths - 1
    new_tokens = topk_index.reshape(-1)[:batch_size]
    flat_ids[last[has_tokens]] = new_tokens[has_tokens].to(flat_ids.dtype)
