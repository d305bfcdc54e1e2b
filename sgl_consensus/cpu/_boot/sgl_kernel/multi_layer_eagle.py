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
    # Every shifted value is read (take) before any is written (put_), as the kernel's
    # block-wise read-then-write does within a request.
    shifted = ragged_ranges(starts, starts + (lengths - 1).clamp_min(0)).column
    input_ids.put_(shifted, input_ids.take(shifted + 1))
    has_tokens = lengths > 0
    last = select_index.reshape(-1).long() if select_index is not None else starts + lengths - 1
    new_tokens = topk_index.reshape(-1)[:batch_size].to(input_ids.dtype)
    input_ids.put_(last.masked_select(has_tokens), new_tokens.masked_select(has_tokens))
