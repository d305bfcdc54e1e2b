"""Index helpers for per-request ranges laid end to end in one flat buffer."""

from typing import Tuple

import torch


def ragged_ranges(
    starts: torch.Tensor, ends: torch.Tensor
) -> Tuple[torch.Tensor, torch.Tensor, torch.Tensor]:
    """Flatten the ranges ``[starts[i], ends[i])`` into one index list.

    Returns ``(request, column, packed)``, one entry per covered position: the request it
    belongs to, its column ``starts[i] + j`` and its slot in the packed buffer. Request i's
    block begins at ``sum(ends[:i] - starts[:i])``, as in SGLang's Triton kernels (a reversed
    range covers nothing but still shifts the blocks after it).
    """
    starts = starts.reshape(-1).long()
    lengths = ends.reshape(-1).long() - starts
    block_starts = torch.cumsum(lengths, 0) - lengths
    counts = lengths.clamp(min=0)
    request = torch.repeat_interleave(torch.arange(starts.numel(), device=starts.device), counts)
    first_of_own_block = torch.repeat_interleave(torch.cumsum(counts, 0) - counts, counts)
    offset = torch.arange(request.numel(), device=starts.device) - first_of_own_block
    return request, starts[request] + offset, block_starts[request] + offset
